//! Read-only tantivy `Directory`s at one commit ([`CommitView`]), and the one searchers use
//! ([`RangeDirectory`]): every file is an object in the bucket, read by byte range through
//! the [`BlockCache`]; the ranges a segment's hot cache holds (footers, term-dictionary
//! indexes, offset tables) are answered from memory without any read.
//!
//! tantivy reads synchronously: a read that misses the cache blocks the calling thread on
//! the fetch, so searches run on blocking threads (a read on an async worker hands the
//! worker off first). The async reads (`read_bytes_async`) are what warm-up uses to fetch
//! what a query needs concurrently first.

use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    DirectoryLock, FileHandle, Lock, OwnedBytes, WatchCallback, WatchHandle, WritePtr,
};
use tantivy::{Directory, HasLen};
use tokio::runtime::Handle;

use crate::blocks::BlockCache;
use crate::hot::HotRanges;

/// One file of the commit: where it lives and what of it is held in memory.
#[derive(Clone, Debug)]
pub struct RemoteFile {
    /// Object key in the bucket.
    pub key: String,
    pub len: u64,
    /// Ranges of the file known from its segment's hot cache.
    pub hot: Option<Arc<HotRanges>>,
}

/// Where a [`CommitView`] gets its files' handles.
pub trait FileSource: Send + Sync + std::fmt::Debug + 'static {
    fn handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError>;
    fn contains(&self, path: &Path) -> bool;
}

/// A read-only tantivy `Directory` at one commit: `meta.json` is the commit's, every other
/// file comes from `S`; nothing is ever written, deleted or locked.
#[derive(Debug)]
pub struct CommitView<S> {
    source: Arc<S>,
    meta_json: Arc<Vec<u8>>,
}

impl<S> Clone for CommitView<S> {
    fn clone(&self) -> Self {
        CommitView {
            source: self.source.clone(),
            meta_json: self.meta_json.clone(),
        }
    }
}

impl<S: FileSource> CommitView<S> {
    pub fn new(source: S, meta_json: String) -> CommitView<S> {
        CommitView {
            source: Arc::new(source),
            meta_json: Arc::new(meta_json.into_bytes()),
        }
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    fn read_only(path: &Path) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("{} is read-only (a commit)", path.display()),
        )
    }
}

impl<S: FileSource> Directory for CommitView<S> {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.source.handle(path)
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        Err(DeleteError::IoError {
            io_error: Arc::new(Self::read_only(path)),
            filepath: path.to_path_buf(),
        })
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        Ok(path == Path::new("meta.json") || self.source.contains(path))
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        Err(OpenWriteError::IoError {
            io_error: Arc::new(Self::read_only(path)),
            filepath: path.to_path_buf(),
        })
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        if path == Path::new("meta.json") {
            return Ok(self.meta_json.to_vec());
        }
        Err(OpenReadError::FileDoesNotExist(path.to_path_buf()))
    }

    fn atomic_write(&self, path: &Path, _data: &[u8]) -> std::io::Result<()> {
        Err(Self::read_only(path))
    }

    fn sync_directory(&self) -> std::io::Result<()> {
        Ok(())
    }

    /// Nothing here ever changes, so there is nothing to lock against.
    fn acquire_lock(&self, _lock: &Lock) -> Result<DirectoryLock, LockError> {
        Ok(DirectoryLock::from(Box::new(())))
    }

    fn watch(&self, _callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        Ok(WatchHandle::empty())
    }
}

/// The files of one published commit, in the bucket.
pub struct RemoteFiles {
    files: HashMap<PathBuf, RemoteFile>,
    cache: BlockCache,
    runtime: Handle,
}

impl std::fmt::Debug for RemoteFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteFiles({} files)", self.files.len())
    }
}

impl FileSource for RemoteFiles {
    fn handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        let file = self
            .files
            .get(path)
            .ok_or_else(|| OpenReadError::FileDoesNotExist(path.to_path_buf()))?;
        Ok(remote_handle(
            file.clone(),
            self.cache.clone(),
            self.runtime.clone(),
        ))
    }

    fn contains(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }
}

/// A commit read from the bucket by range.
pub type RangeDirectory = CommitView<RemoteFiles>;

impl RangeDirectory {
    /// `files` by name as tantivy knows them; `meta_json` is the commit's `meta.json`.
    /// Must be created inside the tokio runtime that will serve its reads.
    pub fn remote(
        files: HashMap<String, RemoteFile>,
        meta_json: String,
        cache: BlockCache,
    ) -> RangeDirectory {
        let files = files
            .into_iter()
            .map(|(n, f)| (PathBuf::from(n), f))
            .collect();
        CommitView::new(
            RemoteFiles {
                files,
                cache,
                runtime: Handle::current(),
            },
            meta_json,
        )
    }
}

/// `Bytes` as tantivy's `OwnedBytes` without a copy (a `Bytes` never moves its data).
pub(crate) struct StableBytes(pub Bytes);

impl Deref for StableBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

// SAFETY: the slice a `Bytes` derefs to lives in a shared, reference-counted buffer that
// does not move or change while the `Bytes` exists.
unsafe impl stable_deref_trait::StableDeref for StableBytes {}

pub(crate) fn owned(bytes: Bytes) -> OwnedBytes {
    OwnedBytes::new(StableBytes(bytes))
}

/// A tantivy file handle reading `file` from the bucket by range through `cache`, its
/// fetches run on `runtime` (for directories that mix local and remote files, like a
/// writer's scratch directory).
pub fn remote_handle(file: RemoteFile, cache: BlockCache, runtime: Handle) -> Arc<dyn FileHandle> {
    Arc::new(RangeFile {
        file,
        cache,
        runtime,
    })
}

/// Runs `fut` to completion from synchronous code: on a runtime worker thread the worker
/// is handed off first (`block_in_place`); elsewhere (blocking pool, tantivy's threads) it
/// just blocks.
fn block_on<F: std::future::Future>(runtime: &Handle, fut: F) -> F::Output {
    match Handle::try_current() {
        Ok(current)
            if matches!(
                current.runtime_flavor(),
                tokio::runtime::RuntimeFlavor::MultiThread
            ) =>
        {
            tokio::task::block_in_place(|| runtime.block_on(fut))
        }
        _ => runtime.block_on(fut),
    }
}

thread_local! {
    /// Set by [`without_fetching`]: reads that would wait for the bucket fail instead.
    static NO_FETCH: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with reads limited to what memory holds: a read that would have to fetch fails
/// with `WouldBlock` at once. Lets a caller try the cheap synchronous path first and fetch
/// what is missing concurrently afterwards.
pub fn without_fetching<R>(f: impl FnOnce() -> R) -> R {
    let before = NO_FETCH.with(|n| n.replace(true));
    let out = f();
    NO_FETCH.with(|n| n.set(before));
    out
}

/// One file of a [`RangeDirectory`].
struct RangeFile {
    file: RemoteFile,
    cache: BlockCache,
    runtime: Handle,
}

impl std::fmt::Debug for RangeFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RangeFile({}, {} bytes)", self.file.key, self.file.len)
    }
}

impl HasLen for RangeFile {
    fn len(&self) -> usize {
        self.file.len as usize
    }
}

impl RangeFile {
    /// From the hot cache or the block cache's memory, without any waiting.
    fn in_memory(&self, range: &Range<usize>) -> Option<OwnedBytes> {
        let (start, end) = (range.start as u64, range.end as u64);
        if let Some(bytes) = self.file.hot.as_ref().and_then(|h| h.get(start..end)) {
            return Some(owned(bytes));
        }
        self.cache
            .read_cached(&self.file.key, start..end)
            .map(owned)
    }

    fn io_error(&self, e: crate::CacheError) -> std::io::Error {
        std::io::Error::other(format!("reading {}: {e}", self.file.key))
    }
}

#[async_trait::async_trait]
impl FileHandle for RangeFile {
    fn read_bytes(&self, range: Range<usize>) -> std::io::Result<OwnedBytes> {
        if let Some(b) = self.in_memory(&range) {
            return Ok(b);
        }
        if NO_FETCH.with(|n| n.get()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("{} is not cached", self.file.key),
            ));
        }
        let (start, end) = (range.start as u64, range.end as u64);
        block_on(
            &self.runtime,
            self.cache.read(&self.file.key, self.file.len, start..end),
        )
        .map(owned)
        .map_err(|e| self.io_error(e))
    }

    async fn read_bytes_async(&self, range: Range<usize>) -> std::io::Result<OwnedBytes> {
        if let Some(b) = self.in_memory(&range) {
            return Ok(b);
        }
        let (start, end) = (range.start as u64, range.end as u64);
        self.cache
            .read(&self.file.key, self.file.len, start..end)
            .await
            .map(owned)
            .map_err(|e| self.io_error(e))
    }
}
