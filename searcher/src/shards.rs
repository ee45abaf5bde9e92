//! Opening a shard's published commit for search: tantivy reads its segment objects by
//! byte range through the segment cache (nothing is downloaded whole), after the hot caches
//! and delete bitsets that opening needs were fetched in one concurrent round. A reader is
//! kept per shard at its latest generation; segments a newer generation keeps are reopened
//! from memory (their hot caches and blocks stay cached). All shards search on one shared
//! thread pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe_cache::{hot_cache_segment, HotCache, RangeDirectory, RemoteFile, SegmentCache};
use floe_proto::{IndexMeta, SegmentFile, ShardCommit};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use tantivy::query::Bm25StatisticsProvider;
use tantivy::schema::Field;
use tantivy::{Index, ReloadPolicy, Searcher, Term};
use tracing::{debug, instrument};

use crate::SearchError;

/// An opened shard at one commit generation.
#[derive(Clone)]
pub struct OpenShard {
    pub shard: u32,
    pub generation: u64,
    pub searcher: Searcher,
    /// Its BM25 statistics as already looked up.
    pub stats: ShardStats,
}

/// (index uuid, shard, generation, term): one shard generation's document frequency.
type DocFreqKey = (Arc<str>, u32, u64, Term);

/// Document frequencies of terms, by shard generation, for every shard of this searcher
/// (one bounded cache). A scored query otherwise looks each term up in each segment's
/// dictionary twice (statistics, then postings), and a lookup decompresses a block: on a
/// warm term query that was a tenth of the CPU.
#[derive(Clone)]
pub struct DocFreqs(moka::sync::Cache<DocFreqKey, u64>);

impl Default for DocFreqs {
    fn default() -> Self {
        DocFreqs(moka::sync::Cache::new(100_000))
    }
}

/// One opened shard's view of [`DocFreqs`].
#[derive(Clone)]
pub struct ShardStats {
    freqs: DocFreqs,
    uuid: Arc<str>,
    shard: u32,
    generation: u64,
}

impl ShardStats {
    /// BM25 statistics of `searcher` (this shard at this generation), document frequencies
    /// remembered.
    pub fn provider<'a>(&'a self, searcher: &'a Searcher) -> StatsProvider<'a> {
        StatsProvider {
            stats: self,
            searcher,
        }
    }
}

/// [`ShardStats`] as tantivy asks for them.
pub struct StatsProvider<'a> {
    stats: &'a ShardStats,
    searcher: &'a Searcher,
}

impl Bm25StatisticsProvider for StatsProvider<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        self.searcher.total_num_tokens(field)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        self.searcher.total_num_docs()
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let s = self.stats;
        let key = (s.uuid.clone(), s.shard, s.generation, term.clone());
        if let Some(n) = s.freqs.0.get(&key) {
            return Ok(n);
        }
        let n = self.searcher.doc_freq(term)?;
        s.freqs.0.insert(key, n);
        Ok(n)
    }
}

/// A pinned reader unused for this long is dropped (the next page opens it again).
const PINNED_IDLE: Duration = Duration::from_secs(600);

/// Opens a tantivy searcher over a commit's directory. Blocking.
fn open_searcher(
    dir: RangeDirectory,
    executor: tantivy::Executor,
) -> Result<Searcher, SearchError> {
    let mut index = Index::open(dir)?;
    index.set_executor(executor);
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    Ok(reader.searcher())
}

/// A segment (uuid) and its parsed hot cache.
type SegmentHot = (String, Arc<HotCache>);

/// (index uuid, shard number).
type ShardKey = (String, u32);

/// (index uuid, shard number, commit generation).
type PinnedKey = (String, u32, u64);

/// Readers of every shard this searcher has opened, by (index uuid, shard).
pub struct ShardReaders {
    cache: SegmentCache,
    /// One search thread pool for every shard (segments are searched in parallel on it).
    executor: tantivy::Executor,
    open: Mutex<HashMap<ShardKey, OpenShard>>,
    /// Readers of older commits that points in time pinned, by (uuid, shard, generation),
    /// with when they were last used.
    pinned: Mutex<HashMap<PinnedKey, (Instant, OpenShard)>>,
    /// One opener per shard at a time, so files are fetched once.
    openers: Mutex<HashMap<ShardKey, Arc<tokio::sync::Mutex<()>>>>,
    /// BM25 document frequencies of every opened shard generation.
    doc_freqs: DocFreqs,
}

impl ShardReaders {
    /// The segment cache (for its counters).
    pub fn cache(&self) -> &SegmentCache {
        &self.cache
    }

    pub fn new(cache: SegmentCache) -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let executor = tantivy::Executor::multi_thread(threads, "floe-search-")
            .unwrap_or(tantivy::Executor::SingleThread);
        ShardReaders {
            cache,
            executor,
            open: Mutex::new(HashMap::new()),
            pinned: Mutex::new(HashMap::new()),
            openers: Mutex::new(HashMap::new()),
            doc_freqs: DocFreqs::default(),
        }
    }

    fn stats_of(&self, uuid: &str, shard: u32, generation: u64) -> ShardStats {
        ShardStats {
            freqs: self.doc_freqs.clone(),
            uuid: Arc::from(uuid),
            shard,
            generation,
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
    pub(crate) async fn shard(
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
        let dir = self.directory(&meta.segments_prefix(shard), commit).await?;
        let generation = commit.generation;
        let executor = self.executor.clone();
        let searcher = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            open_searcher(dir, executor)
        })
        .await
        .map_err(|e| SearchError::Internal(e.to_string()))??;
        debug!(shard, generation, "shard opened");
        let opened = OpenShard {
            shard,
            generation,
            searcher,
            stats: self.stats_of(&meta.uuid, shard, generation),
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

    /// The shard at exactly `commit` (a point in time's), not a newer one: the open reader
    /// if it is at that generation, else one opened for it and kept while pages use it.
    pub(crate) async fn pinned(
        &self,
        meta: &IndexMeta,
        shard: u32,
        commit: &ShardCommit,
    ) -> Result<OpenShard, SearchError> {
        let key = (meta.uuid.clone(), shard);
        let open_now = self.open.lock().expect("open lock").get(&key).cloned();
        if let Some(s) = open_now.filter(|s| s.generation == commit.generation) {
            return Ok(s);
        }
        let pinned_key = (meta.uuid.clone(), shard, commit.generation);
        {
            let mut pinned = self.pinned.lock().expect("pinned lock");
            if let Some((used, s)) = pinned.get_mut(&pinned_key) {
                *used = Instant::now();
                return Ok(s.clone());
            }
        }
        let dir = self.directory(&meta.segments_prefix(shard), commit).await?;
        let executor = self.executor.clone();
        let searcher = tokio::task::spawn_blocking(move || open_searcher(dir, executor))
            .await
            .map_err(|e| SearchError::Internal(e.to_string()))??;
        let opened = OpenShard {
            shard,
            generation: commit.generation,
            searcher,
            stats: self.stats_of(&meta.uuid, shard, commit.generation),
        };
        let mut pinned = self.pinned.lock().expect("pinned lock");
        pinned.retain(|_, (used, _)| used.elapsed() < PINNED_IDLE);
        pinned.insert(pinned_key, (Instant::now(), opened.clone()));
        Ok(opened)
    }

    /// The commit's files as a range directory. Segment hot caches and delete bitsets,
    /// which opening reads, are fetched first and concurrently: a cold shard opens after
    /// one round of parallel GETs.
    async fn directory(
        &self,
        prefix: &str,
        commit: &ShardCommit,
    ) -> Result<RangeDirectory, SearchError> {
        let key_of = |f: &SegmentFile| format!("{prefix}/{}", f.object_key());
        // Owned futures (no borrows of `commit`), so the opening future stays `Send`.
        let mut fetches: Vec<BoxFuture<'static, Result<Option<SegmentHot>, SearchError>>> =
            Vec::new();
        for f in &commit.files {
            let (cache, key, len) = (self.cache.clone(), key_of(f), f.len);
            if let Some(segment) = hot_cache_segment(&f.name) {
                let segment = segment.to_string();
                fetches.push(Box::pin(async move {
                    Ok(Some((segment, cache.hot_cache(&key, len).await?)))
                }));
            } else if f.name.ends_with(".del") {
                fetches.push(Box::pin(async move {
                    cache.blocks().read(&key, len, 0..len).await?;
                    Ok(None)
                }));
            }
        }
        let hot: HashMap<String, Arc<HotCache>> = futures::stream::iter(fetches)
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        let files = commit
            .files
            .iter()
            .map(|f| {
                let segment = f.name.split('.').next().unwrap_or_default();
                let file = RemoteFile {
                    key: key_of(f),
                    len: f.len,
                    hot: hot.get(segment).and_then(|h| h.file(&f.name)),
                };
                (f.name.clone(), file)
            })
            .collect();
        Ok(RangeDirectory::remote(
            files,
            commit.tantivy_meta.clone(),
            self.cache.blocks().clone(),
        ))
    }

    /// Whether the shard is open at `generation` or newer.
    pub(crate) fn is_open_at(&self, uuid: &str, shard: u32, generation: u64) -> bool {
        self.current(&(uuid.to_string(), shard), generation)
            .is_some()
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
