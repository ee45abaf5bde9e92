use floe_metastore::MetastoreError;
use floe_storage::StorageError;

use crate::bulk::BulkParseError;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    BulkParse(#[from] BulkParseError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    MapperParsing(String),
    /// A single-document write failed the way a `_bulk` item does: (status, OpenSearch
    /// error type, reason).
    #[error("{2}")]
    Item(u16, &'static str, String),
    #[error(transparent)]
    Metastore(#[from] MetastoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// This writer no longer owns the shard (lease expired or taken over): nothing was
    /// acknowledged.
    #[error("lost the lease of the shard, the write was not acknowledged: {0}")]
    LeaseLost(String),
    /// The translog could not be written: nothing was acknowledged.
    #[error("object storage unavailable, the write was not acknowledged: {0}")]
    Unavailable(String),
    #[error("indexing error: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("local i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The index refuses writes (`index.blocks.write`).
    #[error("{0}")]
    Blocked(String),
    #[error("{0}")]
    Internal(String),
}

impl From<tantivy::directory::error::OpenDirectoryError> for WriterError {
    fn from(e: tantivy::directory::error::OpenDirectoryError) -> Self {
        WriterError::Internal(e.to_string())
    }
}

impl From<tantivy::directory::error::OpenReadError> for WriterError {
    fn from(e: tantivy::directory::error::OpenReadError) -> Self {
        WriterError::Internal(e.to_string())
    }
}

impl WriterError {
    /// Status and OpenSearch error type of a `_bulk` item that failed with this error.
    /// Anything caused by the bucket or by shard ownership is a retryable 503: the write
    /// was not acknowledged and the client should send it again.
    pub fn item_status(&self) -> (u16, &'static str) {
        match self {
            WriterError::Unavailable(_) | WriterError::LeaseLost(_) | WriterError::Storage(_) => {
                (503, "unavailable_shards_exception")
            }
            WriterError::Metastore(
                MetastoreError::Storage(_)
                | MetastoreError::LeaseHeld { .. }
                | MetastoreError::Contended(_),
            ) => (503, "unavailable_shards_exception"),
            WriterError::Metastore(MetastoreError::InvalidIndexName { .. }) => {
                (400, "invalid_index_name_exception")
            }
            WriterError::MapperParsing(_) => (400, "mapper_parsing_exception"),
            WriterError::Blocked(_) => (403, "cluster_block_exception"),
            WriterError::Item(status, typ, _) => (*status, typ),
            WriterError::BadRequest(_) | WriterError::BulkParse(_) => {
                (400, "illegal_argument_exception")
            }
            _ => (500, "exception"),
        }
    }
}
