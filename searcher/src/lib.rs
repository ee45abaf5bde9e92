//! The searcher role: answers `_search`, `_count` and `GET _doc` from the segments of each
//! shard's latest published commit, fetched from the bucket into a local cache.
//!
//! Request path: [`SearchService::search`] → `resolve` (index names, lists, wildcards) →
//! `dsl`/`query_string` → [`ast::QueryAst`] → `translate` (tantivy query, per index mapping) →
//! `shards::ShardReaders` (open the commit, fetching files) → per-shard top-k, count and
//! aggregations (`leaf_search`, here or on the searchers the shards belong to: `leaf`) →
//! merged into one OpenSearch response (`merge`).

pub mod ast;
pub mod dsl;
mod error;
mod histogram;
pub mod leaf;
pub mod query_string;
mod resolve;
mod search;
pub mod shards;
mod sort;
pub mod translate;

pub use error::SearchError;
pub use leaf::{Fanout, LeafRequest, Partial, ShardFailure, ShardTarget};
pub use search::{SearchParams, SearchService, StoredDoc};
