//! Aligned blocks of immutable bucket objects, cached in memory and on local disk.
//!
//! Segment objects are written once under keys unique to their writer and never change, so
//! `(object key, block number)` names the same bytes forever: nothing is ever invalidated,
//! and eviction only costs a later re-fetch. foyer's hybrid cache keeps the hot blocks in
//! memory and the rest on disk, each tier within its own byte budget; concurrent readers of
//! one missing block share one GET.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use floe_storage::{Storage, StorageError};
use foyer::{
    BlockEngineConfig, Code, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, LruConfig, PsyncIoEngineConfig,
};
use tracing::debug;

use crate::CacheError;

/// Bytes per cached block: small enough that a selective query reads a small share of a
/// segment, large enough that a posting list or a doc-store block is usually one GET.
pub const BLOCK_SIZE: u64 = 64 * 1024;

/// Budgets and place of the block cache (`--cache-memory`, `--cache-disk`, `--cache-dir`).
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Bytes of blocks kept in memory.
    pub memory_bytes: u64,
    /// Bytes of blocks kept on local disk (0: memory only).
    pub disk_bytes: u64,
    /// Where the disk tier lives.
    pub dir: PathBuf,
}

/// One block's cache key: the object key and the block number within it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct BlockKey {
    object: String,
    block: u64,
}

/// One block's bytes.
#[derive(Clone, Debug)]
struct Block(Bytes);

fn write_bytes(w: &mut impl std::io::Write, b: &[u8]) -> foyer::Result<()> {
    w.write_all(&(b.len() as u64).to_le_bytes())
        .and_then(|_| w.write_all(b))
        .map_err(foyer::Error::io_error)
}

fn read_bytes(r: &mut impl std::io::Read) -> foyer::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len).map_err(foyer::Error::io_error)?;
    let mut buf = vec![0u8; u64::from_le_bytes(len) as usize];
    r.read_exact(&mut buf).map_err(foyer::Error::io_error)?;
    Ok(buf)
}

impl Code for BlockKey {
    fn encode(&self, w: &mut impl std::io::Write) -> foyer::Result<()> {
        write_bytes(w, self.object.as_bytes())?;
        w.write_all(&self.block.to_le_bytes())
            .map_err(foyer::Error::io_error)
    }

    fn decode(r: &mut impl std::io::Read) -> foyer::Result<Self> {
        let object = String::from_utf8(read_bytes(r)?)
            .map_err(|e| foyer::Error::io_error(std::io::Error::other(e)))?;
        let mut block = [0u8; 8];
        r.read_exact(&mut block).map_err(foyer::Error::io_error)?;
        Ok(BlockKey {
            object,
            block: u64::from_le_bytes(block),
        })
    }

    fn estimated_size(&self) -> usize {
        16 + self.object.len()
    }
}

impl Code for Block {
    fn encode(&self, w: &mut impl std::io::Write) -> foyer::Result<()> {
        write_bytes(w, &self.0)
    }

    fn decode(r: &mut impl std::io::Read) -> foyer::Result<Self> {
        Ok(Block(Bytes::from(read_bytes(r)?)))
    }

    fn estimated_size(&self) -> usize {
        8 + self.0.len()
    }
}

/// What the cache did since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Blocks asked for.
    pub block_reads: u64,
    /// Blocks that had to be fetched from the bucket (one ranged GET each).
    pub block_fetches: u64,
    /// Bytes fetched from the bucket.
    pub bytes_fetched: u64,
}

impl CacheStats {
    /// Share of block reads answered from memory or local disk.
    pub fn hit_ratio(&self) -> f64 {
        if self.block_reads == 0 {
            return 1.0;
        }
        1.0 - self.block_fetches as f64 / self.block_reads as f64
    }
}

#[derive(Default)]
struct Counters {
    block_reads: AtomicU64,
    block_fetches: AtomicU64,
    bytes_fetched: AtomicU64,
}

/// A range read across several blocks: (object key, start, end).
type RangeKey = (Arc<str>, u64, u64);

/// Byte ranges of bucket objects, read through cached aligned blocks.
#[derive(Clone)]
pub struct BlockCache {
    blocks: HybridCache<BlockKey, Block>,
    /// Ranges spanning several blocks, as assembled: tantivy reads the same column or
    /// field-norm slices again on every query, and copying them block by block each time
    /// costs more than the query. Bounded by bytes (a quarter of the memory budget more).
    ranges: moka::sync::Cache<RangeKey, Bytes>,
    storage: Storage,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache").finish_non_exhaustive()
    }
}

impl BlockCache {
    /// Opens the cache; the disk tier (if any) reuses what an earlier start left in `dir`.
    pub async fn open(storage: Storage, config: &CacheConfig) -> Result<BlockCache, CacheError> {
        std::fs::create_dir_all(&config.dir)?;
        let memory = HybridCacheBuilder::new()
            .with_name("floe-blocks")
            // Blocks go to disk when memory evicts them, not on every insertion (which also
            // rewrote blocks reloaded from disk on each access).
            .with_policy(HybridCachePolicy::WriteOnInsertion)
            .memory(config.memory_bytes.max(BLOCK_SIZE) as usize)
            .with_eviction_config(LruConfig::default())
            // Each shard evicts within its share: keep shards large against a block.
            .with_shards((config.memory_bytes / (64 * BLOCK_SIZE)).clamp(1, 16) as usize)
            .with_weighter(|k: &BlockKey, v: &Block| k.object.len() + v.0.len() + 64)
            .storage();
        let blocks = if config.disk_bytes == 0 {
            memory.build().await
        } else {
            // foyer's own region size: a few regions must fit in the budget.
            let region = (config.disk_bytes / 8).clamp(256 * 1024, 16 * 1024 * 1024) as usize;
            let region = region / 4096 * 4096;
            let device = FsDeviceBuilder::new(&config.dir)
                .with_capacity(config.disk_bytes as usize)
                .build()
                .map_err(|e| CacheError::Disk(e.to_string()))?;
            memory
                .with_io_engine_config(PsyncIoEngineConfig::new())
                .with_engine_config(BlockEngineConfig::new(device).with_block_size(region))
                .build()
                .await
        }
        .map_err(|e| CacheError::Disk(e.to_string()))?;
        let ranges = moka::sync::Cache::builder()
            .max_capacity((config.memory_bytes / 4).max(BLOCK_SIZE * 4))
            .weigher(|k: &RangeKey, v: &Bytes| {
                (k.0.len() + v.len() + 64).min(u32::MAX as usize) as u32
            })
            .build();
        Ok(BlockCache {
            blocks,
            ranges,
            storage,
            counters: Arc::default(),
        })
    }

    /// What the cache did since start.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            block_reads: self.counters.block_reads.load(Ordering::Relaxed),
            block_fetches: self.counters.block_fetches.load(Ordering::Relaxed),
            bytes_fetched: self.counters.bytes_fetched.load(Ordering::Relaxed),
        }
    }

    /// Bytes `range` of object `key` if memory holds them (no I/O, no waiting): the fast
    /// path of synchronous reads, which otherwise enter the runtime for every read.
    pub fn read_cached(&self, key: &str, range: Range<u64>) -> Option<Bytes> {
        if range.start >= range.end {
            return Some(Bytes::new());
        }
        let first = range.start / BLOCK_SIZE;
        let last = (range.end - 1) / BLOCK_SIZE;
        let bytes = if first == last {
            let block = self.blocks.memory().get(&BlockKey {
                object: key.to_string(),
                block: first,
            })?;
            let offset = (range.start - first * BLOCK_SIZE) as usize;
            let end = offset + (range.end - range.start) as usize;
            if end > block.value().0.len() {
                return None;
            }
            block.value().0.slice(offset..end)
        } else {
            self.ranges.get(&(Arc::from(key), range.start, range.end))?
        };
        self.counters
            .block_reads
            .fetch_add(last - first + 1, Ordering::Relaxed);
        Some(bytes)
    }

    /// Bytes `range` of object `key`, whose length is `len`. Missing blocks are fetched
    /// concurrently, one ranged GET each.
    pub async fn read(&self, key: &str, len: u64, range: Range<u64>) -> Result<Bytes, CacheError> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        if range.end > len {
            return Err(CacheError::OutOfRange {
                key: key.to_string(),
                end: range.end,
                len,
            });
        }
        let first = range.start / BLOCK_SIZE;
        let last = (range.end - 1) / BLOCK_SIZE;
        let offset = (range.start - first * BLOCK_SIZE) as usize;
        let want = (range.end - range.start) as usize;
        if first == last {
            let block = self.block(key, len, first).await?;
            return Ok(block.slice(offset..offset + want));
        }
        let range_key: RangeKey = (Arc::from(key), range.start, range.end);
        if let Some(bytes) = self.ranges.get(&range_key) {
            self.counters
                .block_reads
                .fetch_add(last - first + 1, Ordering::Relaxed);
            return Ok(bytes);
        }
        let blocks =
            futures::future::try_join_all((first..=last).map(|b| self.block(key, len, b))).await?;
        let mut out = BytesMut::with_capacity(want);
        for (i, block) in blocks.iter().enumerate() {
            let from = if i == 0 { offset } else { 0 };
            let to = block.len().min(from + want - out.len());
            out.extend_from_slice(&block[from..to]);
        }
        let bytes = out.freeze();
        self.ranges.insert(range_key, bytes.clone());
        Ok(bytes)
    }

    /// All of object `key` (`len` bytes) in one GET, without caching it: for copying whole
    /// files (a writer hydrating a shard), which would only evict what searches need.
    pub async fn fetch_whole(&self, key: &str, len: u64) -> Result<Bytes, CacheError> {
        let bytes = self.storage.get(key).await?;
        if bytes.len() as u64 != len {
            return Err(CacheError::Corrupt(format!(
                "{key} has {} bytes, not {len}",
                bytes.len()
            )));
        }
        self.counters
            .bytes_fetched
            .fetch_add(len, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Block `block` of object `key` (the last block of an object may be short).
    async fn block(&self, key: &str, len: u64, block: u64) -> Result<Bytes, CacheError> {
        self.counters.block_reads.fetch_add(1, Ordering::Relaxed);
        let cache_key = BlockKey {
            object: key.to_string(),
            block,
        };
        let (storage, counters, object) =
            (self.storage.clone(), self.counters.clone(), key.to_string());
        let entry = self
            .blocks
            .get_or_fetch(&cache_key, move || async move {
                let start = block * BLOCK_SIZE;
                let end = (start + BLOCK_SIZE).min(len);
                let bytes = storage.get_range(&object, start..end).await?;
                counters.block_fetches.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes_fetched
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                debug!(key = %object, block, bytes = bytes.len(), "block fetched");
                Ok::<_, anyhow::Error>(Block(bytes))
            })
            .await
            .map_err(|e| match e.downcast_ref::<StorageError>() {
                // Kept typed: a searcher re-reads the shard's commit when an object is gone.
                Some(StorageError::NotFound(k)) => StorageError::NotFound(k.clone()).into(),
                _ => CacheError::Fetch(format!("{key} block {block}: {e}")),
            })?;
        Ok(entry.value().0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn cache_with(disk_bytes: u64, memory_bytes: u64) -> (tempfile::TempDir, BlockCache) {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().join("bucket")).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        storage.put("obj", Bytes::from(data)).await.unwrap();
        let config = CacheConfig {
            memory_bytes,
            disk_bytes,
            dir: dir.path().join("cache"),
        };
        (dir, BlockCache::open(storage, &config).await.unwrap())
    }

    fn expected(range: Range<u64>) -> Vec<u8> {
        range.map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn ranges_read_through_blocks_equal_the_object() {
        let (_dir, cache) = cache_with(0, 8 << 20).await;
        for range in [
            0..10,
            65_530..65_540,
            100..200_000,
            299_990..300_000,
            0..300_000,
        ] {
            let got = cache.read("obj", 300_000, range.clone()).await.unwrap();
            assert_eq!(
                got.as_ref(),
                expected(range.clone()).as_slice(),
                "{range:?}"
            );
        }
        // Five blocks in all, each fetched once.
        assert_eq!(cache.stats().block_fetches, 5);
        assert_eq!(cache.stats().bytes_fetched, 300_000);
        assert!(cache.read("obj", 300_000, 299_999..300_001).await.is_err());
        let missing = cache.read("gone", 10, 0..10).await.unwrap_err();
        assert!(
            matches!(missing, CacheError::Storage(StorageError::NotFound(_))),
            "{missing:?}"
        );
    }

    #[tokio::test]
    async fn evicted_blocks_are_fetched_again_and_stay_correct() {
        // Room for about two blocks in memory, none on disk.
        let (_dir, cache) = cache_with(0, 2 * BLOCK_SIZE + 1024).await;
        // Different ranges each time, so assembled ranges are never reused.
        for i in 0..3 {
            let got = cache.read("obj", 300_000, i..300_000 - i).await.unwrap();
            assert_eq!(got.as_ref(), expected(i..300_000 - i).as_slice());
        }
        assert!(cache.stats().block_fetches > 5, "{:?}", cache.stats());
    }

    #[tokio::test]
    async fn disk_tier_serves_what_memory_dropped() {
        let (_dir, cache) = cache_with(8 << 20, 2 * BLOCK_SIZE + 1024).await;
        let got = cache.read("obj", 300_000, 0..300_000).await.unwrap();
        assert_eq!(got.as_ref(), expected(0..300_000).as_slice());
        // Let the disk tier's writers finish, then read again: nothing new is fetched.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let fetched = cache.stats().block_fetches;
        let got = cache.read("obj", 300_000, 0..300_000).await.unwrap();
        assert_eq!(got.as_ref(), expected(0..300_000).as_slice());
        assert_eq!(cache.stats().block_fetches, fetched, "{:?}", cache.stats());
    }
}
