//! Opening a shard's published commit for search: its segment files are fetched into the
//! local cache directory, and a tantivy reader is kept per commit generation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use floe_cache::FileCache;
use floe_proto::{IndexMeta, ShardCommit};
use futures::{StreamExt, TryStreamExt};
use tantivy::directory::MmapDirectory;
use tantivy::{Index, ReloadPolicy, Searcher};
use tracing::{debug, instrument};

use crate::SearchError;

/// An opened shard at one commit generation.
#[derive(Clone)]
pub struct OpenShard {
    pub shard: u32,
    pub generation: u64,
    pub searcher: Searcher,
}

/// (index uuid, shard number).
type ShardKey = (String, u32);

/// Readers of every shard this searcher has opened, by (index uuid, shard).
pub struct ShardReaders {
    cache: FileCache,
    open: Mutex<HashMap<ShardKey, OpenShard>>,
    /// One opener per shard at a time, so files are fetched once.
    openers: Mutex<HashMap<ShardKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl ShardReaders {
    pub fn new(cache: FileCache) -> Self {
        ShardReaders {
            cache,
            open: Mutex::new(HashMap::new()),
            openers: Mutex::new(HashMap::new()),
        }
    }

    /// Searchers for every shard of `meta` that has a published commit.
    pub async fn shards(&self, meta: &IndexMeta) -> Result<Vec<OpenShard>, SearchError> {
        let mut out = Vec::with_capacity(meta.shards.len());
        for (&shard, commit) in &meta.shards {
            out.push(self.shard(meta, shard, commit).await?);
        }
        Ok(out)
    }

    #[instrument(skip(self, meta, commit), fields(index = %meta.name, generation = commit.generation))]
    async fn shard(
        &self,
        meta: &IndexMeta,
        shard: u32,
        commit: &ShardCommit,
    ) -> Result<OpenShard, SearchError> {
        let key = (meta.uuid.clone(), shard);
        if let Some(s) = self.current(&key, commit.generation) {
            return Ok(s);
        }
        let opener = self
            .openers
            .lock()
            .expect("openers lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let _guard = opener.lock().await;
        if let Some(s) = self.current(&key, commit.generation) {
            return Ok(s);
        }
        let dir = self.cache.dir(format!("{}/{}", meta.uuid, shard));
        let prefix = meta.segments_prefix(shard);
        // Fetch missing files concurrently: a cold shard costs one round of parallel GETs.
        let mut fetches = Vec::with_capacity(commit.files.len());
        for f in &commit.files {
            let cache = self.cache.clone();
            let (key, local) = (format!("{prefix}/{}", f.name), dir.join(&f.name));
            fetches.push(async move { cache.ensure(&key, &local).await });
        }
        futures::stream::iter(fetches)
            .buffer_unordered(16)
            .try_collect::<Vec<bool>>()
            .await?;
        let meta_json = commit.tantivy_meta.clone();
        let keep: std::collections::HashSet<String> =
            commit.files.iter().map(|f| f.name.clone()).collect();
        let generation = commit.generation;
        let searcher = tokio::task::spawn_blocking(move || -> Result<Searcher, SearchError> {
            let tmp = dir.join("meta.json.tmp");
            std::fs::write(&tmp, meta_json.as_bytes())?;
            std::fs::rename(&tmp, dir.join("meta.json"))?;
            let mut index = Index::open(
                MmapDirectory::open(&dir).map_err(|e| SearchError::Internal(e.to_string()))?,
            )?;
            // Segments of a shard are searched in parallel, one thread per core.
            index.set_default_multithread_executor()?;
            let reader = index
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .try_into()?;
            let searcher = reader.searcher();
            // Files of older generations (merged-away segments) are no longer needed; readers
            // still using them keep their mappings after the unlink.
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name != "meta.json" && !name.starts_with('.') && !keep.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            Ok(searcher)
        })
        .await
        .map_err(|e| SearchError::Internal(e.to_string()))??;
        debug!(shard, generation, "shard opened");
        let opened = OpenShard {
            shard,
            generation,
            searcher,
        };
        self.open
            .lock()
            .expect("open lock")
            .insert(key, opened.clone());
        Ok(opened)
    }

    fn current(&self, key: &ShardKey, generation: u64) -> Option<OpenShard> {
        self.open
            .lock()
            .expect("open lock")
            .get(key)
            .filter(|s| s.generation == generation)
            .cloned()
    }

    /// Forgets the readers of a deleted index.
    pub fn forget(&self, uuid: &str) {
        self.open
            .lock()
            .expect("open lock")
            .retain(|(u, _), _| u != uuid);
    }
}
