//! The `Storage` handle every role uses.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig, UpdateVersion,
};

use crate::config::StorageConfig;
use crate::counting::{Counters, Op, StorageStats};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found: {0}")]
    NotFound(String),
    /// A create-only write found the object already there.
    #[error("object already exists: {0}")]
    AlreadyExists(String),
    /// A compare-and-swap lost: the object changed since it was read.
    #[error("precondition failed (object changed): {0}")]
    PreconditionFailed(String),
    #[error("invalid storage configuration: {0}")]
    Config(String),
    #[error("object storage error: {0}")]
    Backend(String),
    #[error("local i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl StorageError {
    fn from_store(key: &str, e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound(key.to_string()),
            object_store::Error::AlreadyExists { .. } => {
                StorageError::AlreadyExists(key.to_string())
            }
            object_store::Error::Precondition { .. } => {
                StorageError::PreconditionFailed(key.to_string())
            }
            other => StorageError::Backend(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// A bucket plus key prefix. Cheap to clone; keys are `/`-separated and relative to the prefix.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Set for the local backend, where compare-and-swap needs a file lock.
    local_root: Option<PathBuf>,
    counters: Arc<Counters>,
}

impl Storage {
    /// Opens the bucket the configuration names. The local directory is created if missing.
    pub fn open(config: &StorageConfig) -> Result<Storage> {
        let prefix = config.prefix.trim_matches('/').to_string();
        if let Some(s3) = &config.s3 {
            if s3.bucket.is_empty() {
                return Err(StorageError::Config("s3 bucket name is empty".into()));
            }
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&s3.bucket)
                .with_virtual_hosted_style_request(s3.virtual_hosted_style)
                .with_retry(RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(50),
                        max_backoff: Duration::from_secs(2),
                        base: 2.0,
                    },
                    max_retries: config.max_retries,
                    retry_timeout: Duration::from_millis(config.retry_timeout_ms),
                })
                .with_client_options(
                    ClientOptions::new()
                        .with_timeout(Duration::from_millis(config.request_timeout_ms))
                        .with_connect_timeout(Duration::from_secs(5)),
                );
            if let Some(endpoint) = &s3.endpoint {
                b = b
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"));
            }
            b = b.with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()));
            if let Some(k) = &s3.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(s) = &s3.secret_access_key {
                b = b.with_secret_access_key(s);
            }
            let store = b.build().map_err(|e| StorageError::Config(e.to_string()))?;
            return Ok(Storage {
                store: Arc::new(store),
                prefix,
                local_root: None,
                counters: Arc::default(),
            });
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let root = std::fs::canonicalize(&config.data_dir)?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| StorageError::Config(e.to_string()))?;
        Ok(Storage {
            store: Arc::new(store),
            prefix,
            local_root: Some(root),
            counters: Arc::default(),
        })
    }

    /// A local-directory bucket rooted at `dir` (tests and tools).
    pub fn local(dir: impl Into<PathBuf>) -> Result<Storage> {
        Storage::open(&StorageConfig {
            data_dir: dir.into(),
            ..StorageConfig::default()
        })
    }

    /// Requests and bytes this handle (and its clones) sent to the bucket.
    pub fn stats(&self) -> StorageStats {
        self.counters.snapshot()
    }

    /// The error of a failed request, counted unless it is an expected answer (missing
    /// object, lost compare-and-swap, key already taken).
    fn failed(&self, op: Op, key: &str, e: object_store::Error) -> StorageError {
        let err = StorageError::from_store(key, e);
        if !matches!(
            err,
            StorageError::NotFound(_)
                | StorageError::AlreadyExists(_)
                | StorageError::PreconditionFailed(_)
        ) {
            self.counters.failed(op);
        }
        err
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{}", self.prefix, key))
        }
    }

    fn strip(&self, path: &Path) -> String {
        let s = path.as_ref();
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(&self.prefix)
                .unwrap_or(s)
                .trim_start_matches('/')
                .to_string()
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self.get_with_etag(key).await?.0)
    }

    /// The object and its ETag, for a later [`Storage::put_if_match`].
    pub async fn get_with_etag(&self, key: &str) -> Result<(Bytes, String)> {
        let res = self
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| self.failed(Op::Get, key, e))?;
        let etag = res.meta.e_tag.clone().unwrap_or_default();
        let bytes = res
            .bytes()
            .await
            .map_err(|e| self.failed(Op::Get, key, e))?;
        self.counters.read(bytes.len());
        Ok((bytes, etag))
    }

    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let bytes = self
            .store
            .get_range(&self.path(key), range)
            .await
            .map_err(|e| self.failed(Op::Get, key, e))?;
        self.counters.read(bytes.len());
        Ok(bytes)
    }

    /// Size of an object, or `NotFound`.
    pub async fn size(&self, key: &str) -> Result<u64> {
        let meta = self
            .store
            .head(&self.path(key))
            .await
            .map_err(|e| self.failed(Op::Get, key, e))?;
        Ok(meta.size)
    }

    /// Unconditional write (whole object replaced atomically).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_mode(key, data, PutMode::Overwrite)
            .await
            .map(|_| ())
    }

    /// Create-only write (`If-None-Match: *`): `AlreadyExists` if the key exists. Returns the ETag.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<String> {
        self.put_mode(key, data, PutMode::Create).await
    }

    /// Compare-and-swap (`If-Match: etag`): `PreconditionFailed` if the object changed since
    /// `etag` was read (or vanished). Returns the new ETag.
    pub async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<String> {
        let Some(root) = &self.local_root else {
            let mode = PutMode::Update(UpdateVersion {
                e_tag: Some(etag.to_string()),
                version: None,
            });
            return self.put_mode(key, data, mode).await;
        };
        // Local directory: object_store has no compare-and-swap there; serialize writers of
        // this key with an exclusive file lock (shared by all processes on this machine).
        let lock_path = root
            .join(".locks")
            .join(format!("{}.lock", key.replace('/', "%")));
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            std::fs::create_dir_all(lock_path.parent().expect("lock dir"))?;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            fs4::fs_std::FileExt::lock_exclusive(&f)?;
            Ok(f)
        })
        .await
        .map_err(|e| StorageError::Backend(e.to_string()))??;
        let current = match self.store.head(&self.path(key)).await {
            Ok(meta) => meta.e_tag.unwrap_or_default(),
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StorageError::PreconditionFailed(key.into()))
            }
            Err(e) => return Err(self.failed(Op::Put, key, e)),
        };
        if current != etag {
            return Err(StorageError::PreconditionFailed(key.into()));
        }
        let result = self.put_mode(key, data, PutMode::Overwrite).await;
        drop(lock);
        result
    }

    async fn put_mode(&self, key: &str, data: Bytes, mode: PutMode) -> Result<String> {
        let len = data.len();
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let res = self
            .store
            .put_opts(&self.path(key), PutPayload::from_bytes(data), opts)
            .await
            .map_err(|e| self.failed(Op::Put, key, e))?;
        self.counters.wrote(len);
        match res.e_tag {
            Some(etag) => Ok(etag),
            // Some servers omit the ETag on PUT; read it back so CAS can continue.
            None => Ok(self
                .store
                .head(&self.path(key))
                .await
                .ok()
                .and_then(|m| m.e_tag)
                .unwrap_or_default()),
        }
    }

    /// Deletes one object; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.counters
            .deletes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(Op::Delete, key, e)),
        }
    }

    /// All objects under `prefix` (a folder: `indexes/abc`), as (key, size), keys relative
    /// to the storage prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.counters
            .lists
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = self.path(prefix.trim_end_matches('/'));
        let metas: Vec<_> = self
            .store
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(|e| self.failed(Op::List, prefix, e))?;
        Ok(metas
            .into_iter()
            .map(|m| (self.strip(&m.location), m.size))
            .collect())
    }

    /// Objects under `prefix` whose key sorts after `after` (a full key), in key order: one
    /// request on S3 (`start-after`), so tailing a numbered log costs one LIST per poll.
    pub async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<(String, u64)>> {
        self.counters
            .lists
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = self.path(prefix.trim_end_matches('/'));
        let offset = self.path(after);
        let metas: Vec<_> = self
            .store
            .list_with_offset(Some(&p), &offset)
            .try_collect()
            .await
            .map_err(|e| self.failed(Op::List, prefix, e))?;
        let mut out: Vec<(String, u64)> = metas
            .into_iter()
            .map(|m| (self.strip(&m.location), m.size))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes every object under `prefix`, a few at a time.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let keys = self.list(prefix).await?;
        let n = keys.len();
        futures::stream::iter(
            keys.into_iter()
                .map(|(k, _)| async move { self.delete(&k).await }),
        )
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_conditional_writes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::local(dir.path()).unwrap();
        let e1 = s
            .put_if_absent("m/state", Bytes::from_static(b"1"))
            .await
            .unwrap();
        assert!(matches!(
            s.put_if_absent("m/state", Bytes::from_static(b"x")).await,
            Err(StorageError::AlreadyExists(_))
        ));
        let e2 = s
            .put_if_match("m/state", Bytes::from_static(b"2"), &e1)
            .await
            .unwrap();
        assert!(matches!(
            s.put_if_match("m/state", Bytes::from_static(b"3"), &e1)
                .await,
            Err(StorageError::PreconditionFailed(_))
        ));
        let (bytes, etag) = s.get_with_etag("m/state").await.unwrap();
        assert_eq!((&bytes[..], etag), (&b"2"[..], e2));
        assert!(matches!(
            s.get("nope").await,
            Err(StorageError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn racing_cas_loses_no_update() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::local(dir.path()).unwrap();
        s.put_if_absent("counter", Bytes::from_static(b"0"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    loop {
                        let (b, etag) = s.get_with_etag("counter").await.unwrap();
                        let n: u64 = std::str::from_utf8(&b).unwrap().parse().unwrap();
                        match s
                            .put_if_match("counter", Bytes::from((n + 1).to_string()), &etag)
                            .await
                        {
                            Ok(_) => break,
                            Err(StorageError::PreconditionFailed(_)) => continue,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(&s.get("counter").await.unwrap()[..], b"80");
    }

    #[tokio::test]
    async fn list_range_and_delete_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(&StorageConfig {
            data_dir: dir.path().into(),
            prefix: "pfx".into(),
            ..StorageConfig::default()
        })
        .unwrap();
        s.put("a/1", Bytes::from_static(b"hello")).await.unwrap();
        s.put("a/2", Bytes::from_static(b"world")).await.unwrap();
        s.put("b/1", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(&s.get_range("a/1", 1..3).await.unwrap()[..], b"el");
        let mut keys: Vec<_> = s
            .list("a")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        assert_eq!(keys, vec!["a/1", "a/2"]);
        assert_eq!(s.delete_prefix("a").await.unwrap(), 2);
        assert!(s.list("a").await.unwrap().is_empty());
        assert_eq!(s.list("b").await.unwrap().len(), 1);
        assert!(dir.path().join("pfx/b/1").exists());
    }
}
