//! The writer role: takes OpenSearch writes (`_bulk`, `_doc`), routes documents to shards,
//! indexes them with tantivy, and on every refresh uploads new segments to the bucket and
//! publishes the shard's commit point to the metastore.
//!
//! Request path: [`Writer::bulk`] → `bulk::parse_bulk` → per index: auto-create, dynamic
//! mapping merged into the metastore → `document::DocBuilder` → `shard::ShardWriter::write`
//! (flusher → `grouplog::GroupLog::append`, the writer-wide translog → apply → answer).
//! Refresh path: [`Writer::run_refresh_loop`] / [`Writer::refresh`] →
//! `ShardWriter::prepare_commit` (tantivy commit + upload) → `Metastore::publish_commit`.

pub mod bulk;
pub mod document;
mod error;
pub mod grouplog;
pub mod ids;
pub mod peers;
pub mod pool;
pub mod pressure;
mod recent;
pub mod response;
mod scratch;
mod service;
pub mod shard;
pub mod translog;
pub mod update;

pub use bulk::{BulkOp, OpKind};
pub use error::WriterError;
pub use peers::Peers;
pub use service::rollover;
pub use service::{
    parse_bool_setting, parse_create_body, shard_for, RefreshPolicy, Writer, WriterConfig,
};
