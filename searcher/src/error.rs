use floe_cache::CacheError;
use floe_metastore::MetastoreError;
use floe_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("no such index [{0}]")]
    IndexNotFound(String),
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
    #[error("{0}")]
    Internal(String),
}
