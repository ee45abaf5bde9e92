//! The metastore's error type, and the record helpers every module shares (reading a JSON
//! record with its ETag, changing it with compare-and-swap, backing off when contended).

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
pub fn now_millis() -> i64 {
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

/// Read-modify-write of the JSON record at `key` with compare-and-swap. `current` is the
/// record as the caller knows it (`None`: absent — `change` then starts from the default);
/// when another process wrote it meanwhile, the record is read again and `change` runs
/// again, so it must be a pure function of its input. Returns `change`'s output and the
/// record written with its new ETag, or `None` when `change` left the record as it was
/// (nothing is written then).
pub(crate) async fn update_record<T, R, F>(
    storage: &floe_storage::Storage,
    key: &str,
    mut current: Option<(T, String)>,
    mut change: F,
) -> Result<(R, Option<(T, String)>), MetastoreError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Default + Clone + PartialEq,
    F: FnMut(&mut T) -> Result<R, MetastoreError>,
{
    const MAX_ATTEMPTS: usize = 32;
    for attempt in 0..MAX_ATTEMPTS {
        let base = current.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
        let mut next = base.clone();
        let out = change(&mut next)?;
        if next == base {
            return Ok((out, None));
        }
        let body = bytes::Bytes::from(serde_json::to_vec(&next).expect("serializable"));
        let written = match &current {
            Some((_, etag)) => storage.put_if_match(key, body, etag).await,
            None => storage.put_if_absent(key, body).await,
        };
        match written {
            Ok(etag) => return Ok((out, Some((next, etag)))),
            Err(StorageError::PreconditionFailed(_) | StorageError::AlreadyExists(_)) => {
                backoff(attempt).await;
                current = read_record(storage, key).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(MetastoreError::Contended(key.to_string()))
}
