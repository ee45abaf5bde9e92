//! The searcher's view of segment objects: byte ranges read from the bucket through a
//! bounded cache, never whole files.
//!
//! - [`blocks`]: aligned blocks of immutable objects in foyer's hybrid cache (a memory tier
//!   and a local-disk tier, each within its own byte budget).
//! - [`hot`]: per-segment hot caches (what opening a segment reads), written by the writer
//!   and kept parsed in memory (moka), so opening a cold segment costs one small GET.
//! - [`directory`]: a read-only tantivy `Directory` over one commit that reads through both.

pub mod blocks;
pub mod directory;
pub mod hot;

use std::sync::Arc;

use floe_storage::{Storage, StorageError};

pub use blocks::{BlockCache, CacheConfig, CacheStats, BLOCK_SIZE};
pub use directory::{
    remote_handle, without_fetching, CommitView, FileSource, RangeDirectory, RemoteFile,
};
pub use hot::{hot_cache_name, hot_cache_segment, HotCache, HotRanges};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cache i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("cache disk tier: {0}")]
    Disk(String),
    #[error("fetching {0}")]
    Fetch(String),
    #[error("read past the end of {key} ({end} > {len})")]
    OutOfRange { key: String, end: u64, len: u64 },
    #[error("corrupt object: {0}")]
    Corrupt(String),
}

/// Blocks plus parsed hot caches: everything a searcher reads segments through.
#[derive(Clone, Debug)]
pub struct SegmentCache {
    blocks: BlockCache,
    /// Parsed hot caches by object key, weighed by their bytes.
    hot: moka::sync::Cache<String, Arc<HotCache>>,
}

impl SegmentCache {
    /// Opens the block cache; a quarter of the memory budget more holds parsed hot caches.
    pub async fn open(storage: Storage, config: &CacheConfig) -> Result<SegmentCache, CacheError> {
        let hot = moka::sync::Cache::builder()
            .max_capacity((config.memory_bytes / 4).max(1 << 20))
            .weigher(|k: &String, v: &Arc<HotCache>| {
                (k.len() + v.size() + 256).min(u32::MAX as usize) as u32
            })
            .build();
        Ok(SegmentCache {
            blocks: BlockCache::open(storage, config).await?,
            hot,
        })
    }

    pub fn blocks(&self) -> &BlockCache {
        &self.blocks
    }

    /// The parsed hot cache stored at `key` (`len` bytes).
    pub async fn hot_cache(&self, key: &str, len: u64) -> Result<Arc<HotCache>, CacheError> {
        if let Some(h) = self.hot.get(key) {
            return Ok(h);
        }
        let bytes = self.blocks.read(key, len, 0..len).await?;
        let parsed = Arc::new(HotCache::parse(bytes)?);
        self.hot.insert(key.to_string(), parsed.clone());
        Ok(parsed)
    }
}
