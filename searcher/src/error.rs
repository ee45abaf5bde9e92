use floe_cache::CacheError;
use floe_metastore::MetastoreError;
use floe_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("no such index [{0}]")]
    IndexNotFound(String),
    /// The index is closed (`index_closed_exception`).
    #[error("closed")]
    IndexClosed(String),
    /// Malformed request (OpenSearch's `parsing_exception`).
    #[error("{0}")]
    Parsing(String),
    /// A query that cannot run against the mapping (`query_shard_exception`).
    #[error("{0}")]
    QueryShard(String),
    #[error("{0}")]
    IllegalArgument(String),
    #[error(transparent)]
    Metastore(#[from] MetastoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("search error: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("local i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A point in time or scroll that expired or was closed (`search_context_missing_exception`).
    #[error("No search context found for id [{0}]")]
    ContextMissing(String),
    /// Aggregations asked for more buckets than allowed (`too_many_buckets_exception`).
    #[error("Trying to create too many buckets. Must be less than or equal to: [{0}]. This limit can be set by changing the [search.max_buckets] cluster level setting.")]
    TooManyBuckets(usize),
    #[error("{0}")]
    Internal(String),
}
