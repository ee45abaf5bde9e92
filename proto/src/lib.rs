//! Types every Floe role shares: index metadata, mappings, shard commit points, and the
//! fixed tantivy layout a shard uses. Kept dependency-light so `metastore`, `writer` and
//! `searcher` can all depend on it without cycles. The gRPC services roles use to talk to
//! each other are generated from `protos/floe.proto` into [`rpc`].

pub mod date_format;
pub mod layout;
pub mod mapping;
pub mod model;
pub mod secret;

/// Generated gRPC messages, clients and servers (`protos/floe.proto`).
#[allow(clippy::all)]
pub mod rpc {
    tonic::include_proto!("floe");
}

pub use layout::ShardLayout;
pub use mapping::{FieldType, Mappings};
pub use model::{
    DateBounds, IndexMeta, IndexSettings, NodeSessionRecord, SegmentFile, ShardCommit, ShardOwner,
    ShardRecord,
};
