//! Distributed search: a search runs as leaf searches over groups of shards (on the
//! searchers the shards belong to, or all here) whose [`Partial`] results the node that
//! received the request merges. A [`Partial`] travels between searchers as JSON.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tantivy::aggregation::intermediate_agg_result::IntermediateAggregationResults;
use tantivy::schema::OwnedValue;

use crate::histogram::Counts;
use crate::search::SearchParams;
use crate::SearchError;

/// One shard of one index.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardTarget {
    pub index: String,
    pub uuid: String,
    pub shard: u32,
}

/// What a leaf is asked: the client's request as it came, plus decisions the merging node
/// made once for all leaves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeafRequest {
    pub body: Option<Value>,
    pub params: SearchParams,
    /// Index uuid → the filter (query DSL) of the aliases it was named through.
    #[serde(default)]
    pub filters: std::collections::BTreeMap<String, Value>,
    /// Every searched index keeps `@timestamp` in the typed column (fast histograms).
    pub ts_fast: bool,
    /// The window of this leaf's ordered hits to render: `skip..skip+take`.
    pub skip: usize,
    pub take: usize,
    /// Search the commits this point in time pinned, not the latest.
    #[serde(default)]
    pub pit: Option<String>,
    /// Only hits after this position on equal sort keys (a scroll's cursor).
    #[serde(default)]
    pub after_position: Option<crate::after::Position>,
}

/// A sort key as it travels: numbers (and dates, bools) compare as numbers, strings as
/// strings, missing values last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WireKey {
    Missing,
    Num(f64),
    Str(String),
}

impl From<&OwnedValue> for WireKey {
    fn from(v: &OwnedValue) -> WireKey {
        match v {
            OwnedValue::I64(n) => WireKey::Num(*n as f64),
            OwnedValue::U64(n) => WireKey::Num(*n as f64),
            OwnedValue::F64(n) => WireKey::Num(*n),
            OwnedValue::Bool(b) => WireKey::Num(*b as u8 as f64),
            OwnedValue::Date(d) => WireKey::Num(d.into_timestamp_nanos() as f64),
            OwnedValue::Str(s) => WireKey::Str(s.clone()),
            _ => WireKey::Missing,
        }
    }
}

impl WireKey {
    /// The key as the merge compares it (same order as the shard-level comparison).
    pub fn to_owned_value(&self) -> OwnedValue {
        match self {
            WireKey::Missing => OwnedValue::Null,
            WireKey::Num(n) => OwnedValue::F64(*n),
            WireKey::Str(s) => OwnedValue::Str(s.clone()),
        }
    }
}

/// One rendered hit with what orders it among other leaves' hits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartialHit {
    pub keys: Vec<WireKey>,
    /// Equal keys: by index name, shard, segment and document (the same order everywhere).
    pub tiebreak: (String, u32, u32, u32),
    pub hit: Value,
}

/// A leaf's answer: its best hits, its count and its unfinished aggregations.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Partial {
    pub hits: Vec<PartialHit>,
    pub count: u64,
    pub max_score: Option<f32>,
    pub aggs: Option<IntermediateAggregationResults>,
    /// Fast `@timestamp` histograms, one entry per shard.
    pub hist: Vec<Counts>,
    /// Whether a shard stopped at `terminate_after` or `timeout`.
    #[serde(default, flatten)]
    pub stopped: crate::limits::Stopped,
}

/// Shards no searcher could answer for (the response is partial).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardFailure {
    pub shards: Vec<ShardTarget>,
    pub node: String,
    pub reason: String,
}

/// How a searcher in a cluster spreads a search over the searchers.
#[async_trait]
pub trait Fanout: Send + Sync {
    /// Runs `request` over `targets`, each shard on the searcher it belongs to (the next
    /// one in its order if that one fails). Returns the leaves' results and the shards no
    /// searcher could serve; an error only when the request itself is wrong (every
    /// searcher would refuse it).
    async fn leaf_searches(
        &self,
        request: &LeafRequest,
        targets: Vec<ShardTarget>,
    ) -> Result<(Vec<Partial>, Vec<ShardFailure>), SearchError>;
}

impl SearchError {
    /// Whether the request itself is at fault (a client error, the same on any searcher),
    /// rather than the searcher that ran it.
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            SearchError::Parsing(_)
                | SearchError::QueryShard(_)
                | SearchError::IllegalArgument(_)
                | SearchError::IndexNotFound(_)
        )
    }

    /// A request error as it crosses between searchers: `kind` and message.
    pub fn to_wire(&self) -> (String, String) {
        let kind = match self {
            SearchError::Parsing(_) => "parsing",
            SearchError::QueryShard(_) => "query_shard",
            SearchError::IllegalArgument(_) => "illegal_argument",
            SearchError::IndexNotFound(_) => "index_not_found",
            _ => "internal",
        };
        let message = match self {
            SearchError::IndexNotFound(name) => name.clone(),
            other => other.to_string(),
        };
        (kind.to_string(), message)
    }

    pub fn from_wire(kind: &str, message: String) -> SearchError {
        match kind {
            "parsing" => SearchError::Parsing(message),
            "query_shard" => SearchError::QueryShard(message),
            "illegal_argument" => SearchError::IllegalArgument(message),
            "index_not_found" => SearchError::IndexNotFound(message),
            _ => SearchError::Internal(message),
        }
    }
}
