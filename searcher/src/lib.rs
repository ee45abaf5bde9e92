//! The searcher role: answers `_search`, `_count` and `GET _doc` from the segments of each
//! shard's latest published commit, read from the bucket by byte range through the segment
//! cache (`floe-cache`).
//!
//! Request path: [`SearchService::search`] → `resolve` (index names, lists, wildcards) →
//! `dsl`/`query_string` → [`ast::QueryAst`] → `translate` (tantivy query, per index mapping) →
//! `shards::ShardReaders` (open the commit: hot caches first) → `warm` (fetch what the query
//! reads, concurrently) → per-shard top-k, count and aggregations (`leaf_search`, here or on
//! the searchers the shards belong to: `leaf`) → merged into one OpenSearch response
//! (`merge`). In the background, `prefetch` opens newly published commits.

mod after;
mod agg_filters;
mod agg_path;
pub mod analyze;
pub mod ast;
mod calendar;
mod date_math;
pub mod dsl;
mod error;
pub mod field_caps;
mod fields;
mod highlight;
mod histogram;
mod ip;
pub mod leaf;
pub mod limits;
mod pipeline;
mod pit;
mod prefetch;
mod prune;
pub mod query_string;
mod resolve;
mod search;
pub mod shards;
mod sort;
mod time_blocks;
mod top_hits;
pub mod translate;
mod warm;

pub use error::SearchError;
pub use leaf::{Fanout, LeafRequest, Partial, ShardFailure, ShardTarget};
pub use prefetch::Serves;
pub use resolve::expression_parts;
pub use search::{SearchParams, SearchService, StoredDoc};
