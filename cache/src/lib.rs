//! The searcher's local copy of segment files: a directory that mirrors objects of the
//! bucket, filled on demand. Segment files are immutable, so a file present locally is
//! always valid; the directory can be deleted at any time while Floe is stopped.
//!
//! This is the simple version (whole files). Byte-range reads through a foyer hybrid cache
//! replace it when cold reads of large segments matter.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use floe_storage::{Storage, StorageError};
use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cache i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Files of the bucket mirrored under a local root.
#[derive(Clone, Debug)]
pub struct FileCache {
    root: PathBuf,
    storage: Storage,
    hits: std::sync::Arc<AtomicU64>,
    misses: std::sync::Arc<AtomicU64>,
}

impl FileCache {
    pub fn new(root: impl Into<PathBuf>, storage: Storage) -> Result<FileCache, CacheError> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(FileCache {
            root,
            storage,
            hits: Default::default(),
            misses: Default::default(),
        })
    }

    /// (files found here, files fetched from the bucket) since start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Local directory for a group of files (e.g. one shard).
    pub fn dir(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Makes sure object `key` is present at `local` (under this cache), downloading it once.
    /// Concurrent callers may both download; the rename makes the result whole either way.
    pub async fn ensure(&self, key: &str, local: &Path) -> Result<bool, CacheError> {
        if tokio::fs::try_exists(local).await? {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let bytes = self.storage.get(key).await?;
        if let Some(parent) = local.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // A name unique to this download: concurrent fetches (of this or sibling files that
        // share a stem) never write the same temporary file.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut tmp_name = local.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(
            ".part-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = local.with_file_name(tmp_name);
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, local).await?;
        debug!(key, bytes = bytes.len(), "cached");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn downloads_once() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().join("bucket")).unwrap();
        storage
            .put("a/b", bytes::Bytes::from_static(b"data"))
            .await
            .unwrap();
        let cache = FileCache::new(dir.path().join("cache"), storage.clone()).unwrap();
        let local = cache.dir("x").join("b");
        assert!(cache.ensure("a/b", &local).await.unwrap());
        assert!(!cache.ensure("a/b", &local).await.unwrap());
        assert_eq!(std::fs::read(&local).unwrap(), b"data");
        assert_eq!(storage.stats().gets, 1);
    }
}
