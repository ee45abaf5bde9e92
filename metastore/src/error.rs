//! The metastore's error type.

use floe_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum MetastoreError {
    #[error("no such index [{0}]")]
    IndexNotFound(String),
    #[error("index [{0}] already exists")]
    IndexAlreadyExists(String),
    #[error("Invalid index name [{name}], {reason}")]
    InvalidIndexName { name: String, reason: String },
    #[error("index template matching [{0}] not found")]
    TemplateNotFound(String),
    #[error("aliases [{0}] missing")]
    AliasNotFound(String),
    #[error("Invalid alias name [{name}], {reason}")]
    InvalidAliasName { name: String, reason: String },
    /// A write to an alias of several indexes, none of them its write index.
    #[error("no write index is defined for alias [{0}]. The write index may be explicitly disabled using is_write_index=false or the alias points to multiple indices without one being designated as a write index")]
    NoWriteIndex(String),
    #[error("shard [{shard}] of index [{index}] has no such shard")]
    NoSuchShard { index: String, shard: u32 },
    /// A commit from an older lease epoch or an older generation: refused (fencing).
    #[error("stale commit for [{index}][{shard}]: {reason}")]
    StaleCommit {
        index: String,
        shard: u32,
        reason: String,
    },
    /// Another live node incarnation owns the shard.
    #[error("shard [{index}][{shard}] is owned by node [{owner}] whose session is live")]
    LeaseHeld {
        index: String,
        shard: u32,
        owner: String,
    },
    /// This node's session was taken over by a newer incarnation, or has not been
    /// established yet: nothing may be acknowledged.
    #[error("node session unavailable: {0}")]
    SessionLost(String),
    #[error("update of [{0}] kept conflicting with concurrent writers")]
    Contended(String),
    #[error("metastore record [{key}] is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A change rejected by the caller's update function.
    #[error("{0}")]
    Rejected(String),
}

/// Milliseconds since the Unix epoch (wall clock).
pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Sleeps before retry `attempt` of a contended conditional write: exponential from 2 ms to
/// 200 ms, with full jitter so racing processes spread out.
pub(crate) async fn backoff(attempt: usize) {
    let cap_ms = (2u64 << attempt.min(7)).min(200);
    let jitter = (uuid::Uuid::new_v4().as_u128() % (cap_ms as u128 + 1)) as u64;
    tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    key: &str,
    bytes: &[u8],
) -> Result<T, MetastoreError> {
    serde_json::from_slice(bytes).map_err(|e| MetastoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// A JSON record and its ETag; `None` if the object does not exist.
pub(crate) async fn read_record<T: serde::de::DeserializeOwned>(
    storage: &floe_storage::Storage,
    key: &str,
) -> Result<Option<(T, String)>, MetastoreError> {
    match storage.get_with_etag(key).await {
        Ok((bytes, etag)) => Ok(Some((parse(key, &bytes)?, etag))),
        Err(StorageError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
