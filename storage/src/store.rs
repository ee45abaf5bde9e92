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
    RetryConfig, UpdateVersion, WriteMultipart,
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

/// Parts of one multipart upload sent at once.
pub const PARALLEL_PARTS: usize = 4;

/// A bucket plus key prefix. Cheap to clone; keys are `/`-separated and relative to the prefix.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Set for the local backend, where compare-and-swap needs a file lock.
    local: Option<(Arc<LocalFileSystem>, PathBuf)>,
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
                local: None,
                counters: Arc::default(),
            });
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let root = std::fs::canonicalize(&config.data_dir)?;
        let store = Arc::new(
            LocalFileSystem::new_with_prefix(&root)
                .map_err(|e| StorageError::Config(e.to_string()))?,
        );
        Ok(Storage {
            store: store.clone(),
            prefix,
            local: Some((store, root)),
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

    /// Create-only upload of a local file, streamed in parts of `part_size` bytes (a
    /// multipart upload, [`PARALLEL_PARTS`] parts in flight): the file is never held in memory
    /// whole, and objects over S3's 5 GiB limit for one PUT can be written. `AlreadyExists`
    /// if the key exists, checked first: completing a multipart upload is not create-only on
    /// every backend, so this is for keys that only the caller writes (a writer
    /// incarnation's own segment keys). The file is read by offset: a handle opened before
    /// its file was deleted still reads it.
    pub async fn put_file_if_absent(
        &self,
        key: &str,
        file: std::fs::File,
        len: u64,
        part_size: usize,
    ) -> Result<()> {
        let path = self.path(key);
        match self.store.head(&path).await {
            Ok(_) => return Err(StorageError::AlreadyExists(key.to_string())),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.failed(Op::Put, key, e)),
        }
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.failed(Op::Put, key, e))?;
        let mut write = WriteMultipart::new_with_chunk_size(upload, part_size);
        let file = Arc::new(file);
        let mut offset = 0;
        while offset < len {
            let n = part_size.min((len - offset) as usize);
            let f = file.clone();
            let read = tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
                let mut buf = vec![0u8; n];
                std::os::unix::fs::FileExt::read_exact_at(&*f, &mut buf, offset)?;
                Ok(Bytes::from(buf))
            })
            .await
            .map_err(|e| StorageError::Backend(e.to_string()))
            .and_then(|read| read.map_err(StorageError::from));
            let part = match read {
                Ok(part) => part,
                Err(e) => {
                    let _ = write.abort().await;
                    return Err(e);
                }
            };
            if let Err(e) = write.wait_for_capacity(PARALLEL_PARTS).await {
                let _ = write.abort().await;
                return Err(self.failed(Op::Put, key, e));
            }
            write.put(part);
            self.counters.wrote(n);
            offset += n as u64;
        }
        write
            .finish()
            .await
            .map(|_| ())
            .map_err(|e| self.failed(Op::Put, key, e))
    }

    /// Compare-and-swap (`If-Match: etag`): `PreconditionFailed` if the object changed since
    /// `etag` was read (or vanished). Returns the new ETag.
    pub async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<String> {
        let Some((local, root)) = &self.local else {
            let mode = PutMode::Update(UpdateVersion {
                e_tag: Some(etag.to_string()),
                version: None,
            });
            return self.put_mode(key, data, mode).await;
        };
        // Local directory: object_store has no compare-and-swap there. Writers of this key
        // are serialized by an exclusive file lock (shared by all processes on this machine),
        // held only for a few synchronous file operations.
        let file = local
            .path_to_filesystem(&self.path(key))
            .map_err(|e| self.failed(Op::Put, key, e))?;
        let lock = root
            .join(".locks")
            .join(format!("{}.lock", key.replace('/', "%")));
        let (len, etag, owned_key) = (data.len(), etag.to_string(), key.to_string());
        let result = tokio::task::spawn_blocking(move || {
            local_compare_and_swap(&lock, &file, &data, &etag, &owned_key)
        })
        .await
        .map_err(|e| StorageError::Backend(e.to_string()))?;
        match &result {
            Ok(_) => self.counters.wrote(len),
            Err(StorageError::PreconditionFailed(_)) => {}
            Err(_) => self.counters.failed(Op::Put),
        }
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

/// How long a local compare-and-swap waits for another process's lock on the same key.
/// The lock is held for microseconds; waiting longer means its holder is frozen (stopped
/// or hung) inside that window, and the caller gets an error to retry instead of a hang.
const LOCAL_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Compare-and-swap of the local file `file`: under an exclusive lock on `lock`, the file's
/// current ETag (as object_store computes it) must be `etag`; the new contents are staged
/// beside it (hidden from listings) and renamed over it. Returns the new ETag. Everything
/// between taking and releasing the lock is synchronous, so a process paused at any point
/// holds it only if paused inside that short window.
fn local_compare_and_swap(
    lock: &std::path::Path,
    file: &std::path::Path,
    data: &[u8],
    etag: &str,
    key: &str,
) -> Result<String> {
    use std::io::Write;
    std::fs::create_dir_all(lock.parent().expect("lock dir"))?;
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)?;
    let deadline = std::time::Instant::now() + LOCAL_LOCK_WAIT;
    loop {
        match fs4::fs_std::FileExt::try_lock_exclusive(&lock_file) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        if std::time::Instant::now() >= deadline {
            return Err(StorageError::Backend(format!(
                "{key}: another process has held its compare-and-swap lock for over {LOCAL_LOCK_WAIT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let current = match std::fs::metadata(file) {
        Ok(meta) => local_etag(&meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StorageError::PreconditionFailed(key.into()))
        }
        Err(e) => return Err(e.into()),
    };
    if current != etag {
        return Err(StorageError::PreconditionFailed(key.into()));
    }
    // `<name>#<digits>` is how object_store stages uploads: never listed as an object.
    let mut staged = file.as_os_str().to_owned();
    staged.push(format!(
        "#{}",
        u64::from(std::process::id()) << 20 | rand_suffix()
    ));
    let staged = PathBuf::from(staged);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staged)?;
        f.write_all(data)?;
        drop(f);
        std::fs::rename(&staged, file)?;
        std::fs::metadata(file)
    })();
    match written {
        Ok(meta) => Ok(local_etag(&meta)),
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            Err(e.into())
        }
    }
}

/// A per-call number for staged file names (unique within this process).
fn rand_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xF_FFFF
}

/// The ETag object_store's local backend reports for a file: inode, modification time
/// (microseconds) and size. Compare-and-swap must compute the same value its reads return.
fn local_etag(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{:x}-{mtime:x}-{:x}\"", meta.ino(), meta.len())
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

    /// A process frozen while holding a key's lock (SIGSTOP) must not hang other writers of
    /// that key: they get an error after a bounded wait, and nothing is written.
    #[tokio::test]
    async fn held_local_lock_fails_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::local(dir.path()).unwrap();
        let e1 = s
            .put_if_absent("m/x", Bytes::from_static(b"1"))
            .await
            .unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let held = std::fs::File::open(root.join(".locks").join("m%x.lock"))
            .or_else(|_| {
                std::fs::create_dir_all(root.join(".locks"))?;
                std::fs::File::create(root.join(".locks").join("m%x.lock"))
            })
            .unwrap();
        fs4::fs_std::FileExt::lock_exclusive(&held).unwrap();
        let started = std::time::Instant::now();
        let r = s.put_if_match("m/x", Bytes::from_static(b"2"), &e1).await;
        assert!(matches!(r, Err(StorageError::Backend(_))), "{r:?}");
        assert!(started.elapsed() < LOCAL_LOCK_WAIT * 2);
        drop(held);
        s.put_if_match("m/x", Bytes::from_static(b"3"), &e1)
            .await
            .unwrap();
        assert_eq!(&s.get("m/x").await.unwrap()[..], b"3");
        // Staged files never show as objects.
        let keys: Vec<String> = s
            .list("m")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec!["m/x".to_string()]);
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
