//! Types every Floe role shares: index metadata, mappings, shard commit points, and the
//! fixed tantivy layout a shard uses. Kept dependency-light so `metastore`, `writer` and
//! `searcher` can all depend on it without cycles. gRPC definitions join here when roles
//! run as separate processes.

pub mod layout;
pub mod mapping;
pub mod model;

pub use layout::ShardLayout;
pub use mapping::{FieldType, Mappings};
pub use model::{
    IndexMeta, IndexSettings, NodeSessionRecord, SegmentFile, ShardCommit, ShardOwner, ShardRecord,
};
