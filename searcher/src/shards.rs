//! Opening a shard's published commit for search: its segment objects are fetched into the
//! local cache (`<uuid>/<shard>/objects/<epoch>/<file>`, immutable), each commit generation
//! gets a directory of hard links to them named as tantivy expects, and a reader is kept
//! per shard at its latest generation. All shards search on one shared thread pool.

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
    /// One search thread pool for every shard (segments are searched in parallel on it).
    executor: tantivy::Executor,
    open: Mutex<HashMap<ShardKey, OpenShard>>,
    /// One opener per shard at a time, so files are fetched once.
    openers: Mutex<HashMap<ShardKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl ShardReaders {
    /// The local file cache (for its hit and miss counts).
    pub fn cache(&self) -> &FileCache {
        &self.cache
    }

    pub fn new(cache: FileCache) -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let executor = tantivy::Executor::multi_thread(threads, "floe-search-")
            .unwrap_or(tantivy::Executor::SingleThread);
        ShardReaders {
            cache,
            executor,
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
        // Owned: the guard moves into the blocking step below, so a search cancelled
        // meanwhile cannot let another open start before this one's cleanup has finished.
        let guard = opener.lock_owned().await;
        if let Some(s) = self.current(&key, commit.generation) {
            return Ok(s);
        }
        let root = self.cache.dir(format!("{}/{}", meta.uuid, shard));
        let objects = root.join("objects");
        let prefix = meta.segments_prefix(shard);
        // Fetch missing objects concurrently: a cold shard costs one round of parallel GETs.
        let mut fetches = Vec::with_capacity(commit.files.len());
        for f in &commit.files {
            let cache = self.cache.clone();
            let object = f.object_key().to_string();
            let (key, local) = (format!("{prefix}/{object}"), objects.join(&object));
            fetches.push(async move { cache.ensure(&key, &local).await });
        }
        futures::stream::iter(fetches)
            .buffer_unordered(16)
            .try_collect::<Vec<bool>>()
            .await?;
        let meta_json = commit.tantivy_meta.clone();
        let files: Vec<(String, String)> = commit
            .files
            .iter()
            .map(|f| (f.name.clone(), f.object_key().to_string()))
            .collect();
        let generation = commit.generation;
        let executor = self.executor.clone();
        let searcher = tokio::task::spawn_blocking(move || -> Result<Searcher, SearchError> {
            let _guard = guard;
            let dir = root.join(format!("g{generation}"));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
            for (name, object) in &files {
                std::fs::hard_link(objects.join(object), dir.join(name))?;
            }
            std::fs::write(dir.join("meta.json"), meta_json.as_bytes())?;
            let mut index = Index::open(
                MmapDirectory::open(&dir).map_err(|e| SearchError::Internal(e.to_string()))?,
            )?;
            index.set_executor(executor);
            let reader = index
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .try_into()?;
            let searcher = reader.searcher();
            // Older generations and objects this one does not use are no longer needed;
            // readers still using them keep their mappings after the unlink.
            let keep: std::collections::HashSet<&str> =
                files.iter().map(|(_, o)| o.as_str()).collect();
            for entry in std::fs::read_dir(&root)?.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let older = name
                    .strip_prefix('g')
                    .and_then(|g| g.parse::<u64>().ok())
                    .is_some_and(|g| g < generation);
                if older {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
            for epoch_dir in std::fs::read_dir(&objects)?.flatten() {
                if !epoch_dir.path().is_dir() {
                    // An object stored under its bare name (older layout).
                    let name = epoch_dir.file_name().to_string_lossy().to_string();
                    if !keep.contains(name.as_str()) && !name.contains(".part-") {
                        let _ = std::fs::remove_file(epoch_dir.path());
                    }
                    continue;
                }
                for entry in std::fs::read_dir(epoch_dir.path())?.flatten() {
                    let rel = format!(
                        "{}/{}",
                        epoch_dir.file_name().to_string_lossy(),
                        entry.file_name().to_string_lossy()
                    );
                    if !keep.contains(rel.as_str()) && !rel.contains(".part-") {
                        let _ = std::fs::remove_file(entry.path());
                    }
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
        let mut open = self.open.lock().expect("open lock");
        match open.get(&key) {
            Some(newer) if newer.generation > opened.generation => Ok(newer.clone()),
            _ => {
                open.insert(key, opened.clone());
                Ok(opened)
            }
        }
    }

    fn current(&self, key: &ShardKey, generation: u64) -> Option<OpenShard> {
        self.open
            .lock()
            .expect("open lock")
            .get(key)
            // A newer generation already open serves too: never step back to an older one.
            .filter(|s| s.generation >= generation)
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
