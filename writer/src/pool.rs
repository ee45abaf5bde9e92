//! Process-wide limits on shard writers. Each open tantivy `IndexWriter` holds threads (an
//! indexing worker, a merge thread, a segment updater) and an indexing buffer, so a process
//! with thousands of shards keeps only `max_open` of them open: opening one more closes the
//! least recently used (a local commit, then its threads and buffer are gone). A closed
//! shard loses nothing: its operations are in the translog, its segments committed locally.
//!
//! The process also has one indexing memory budget (`[indexing] memory`) shared by every
//! shard: what each shard holds in memory since its last local commit (tantivy's buffer, or
//! the backlog of a shard waiting for a writer slot) is counted here, and when the sum
//! passes the budget the shard holding the most is committed locally first (OpenSearch's
//! "flush the largest shard" rule), so many small shards never pin memory a busy one needs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::shard::ShardWriter;

/// How long a shard may wait for a free writer slot before it opens one over the limit.
const MAX_WAIT: Duration = Duration::from_secs(10);

pub struct WriterPool {
    max_open: usize,
    /// Shard batches being applied at once (each on a blocking thread).
    applying: Arc<tokio::sync::Semaphore>,
    memory_per_writer: usize,
    open: Mutex<HashMap<usize, Weak<ShardWriter>>>,
    started: Instant,
    /// The process's indexing memory budget, in bytes.
    budget: usize,
    /// Estimated bytes each shard holds since its last local commit, and their sum.
    buffered: Mutex<Buffered>,
}

#[derive(Default)]
struct Buffered {
    total: usize,
    by_shard: HashMap<usize, (Weak<ShardWriter>, usize)>,
}

/// Estimated indexing memory of one document: tantivy's postings, columns and term hash
/// for a log line take about twice its JSON bytes, plus per-document bookkeeping.
pub fn estimated_bytes(source_len: usize) -> usize {
    2 * source_len + 128
}

impl WriterPool {
    /// `memory` is the indexing memory of the whole process, shared by the open writers.
    pub fn new(max_open: usize, memory: usize) -> WriterPool {
        let max_open = max_open.max(1);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        WriterPool {
            max_open,
            applying: Arc::new(tokio::sync::Semaphore::new(4 * cores)),
            // The shared budget decides when a shard flushes; tantivy's own limit per
            // writer (half the budget: one hot shard may use much of it) is only a backstop.
            // tantivy refuses less than 15 MB per indexing thread, and more than 4 GiB.
            memory_per_writer: (memory / 2).clamp(15_000_000, 3 << 30),
            open: Mutex::new(HashMap::new()),
            started: Instant::now(),
            budget: memory,
            buffered: Mutex::new(Buffered::default()),
        }
    }

    /// tantivy's memory limit for one shard writer (all its threads together).
    pub fn memory_per_writer(&self) -> usize {
        self.memory_per_writer
    }

    /// Counts `bytes` more held in memory by the shard `key`.
    pub fn add_buffered(&self, key: usize, shard: Weak<ShardWriter>, bytes: usize) {
        let mut b = self.buffered.lock().expect("pool lock");
        b.total += bytes;
        b.by_shard.entry(key).or_insert((shard, 0)).1 += bytes;
    }

    /// The shard `key` committed locally: what it held is on disk now.
    pub fn clear_buffered(&self, key: usize) {
        let mut b = self.buffered.lock().expect("pool lock");
        if let Some((_, bytes)) = b.by_shard.remove(&key) {
            b.total -= bytes;
        }
    }

    /// Estimated indexing memory held by all shards now.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered.lock().expect("pool lock").total
    }

    /// Estimated memory the shard `key` holds now.
    pub fn buffered_by(&self, key: usize) -> usize {
        let b = self.buffered.lock().expect("pool lock");
        b.by_shard.get(&key).map_or(0, |(_, bytes)| *bytes)
    }

    /// While the shards hold more than the budget, commits the one holding the most (then
    /// the next, when it is busy). Bounded: a few shards per call. Blocking. (A dropped
    /// shard clears its entry itself: every entry here is a live shard.)
    pub fn enforce_budget(&self) {
        for _ in 0..4 {
            let candidates: Vec<Weak<ShardWriter>> = {
                let b = self.buffered.lock().expect("pool lock");
                if b.total <= self.budget {
                    return;
                }
                let mut by_size: Vec<(usize, Weak<ShardWriter>)> = b
                    .by_shard
                    .values()
                    .map(|(w, bytes)| (*bytes, w.clone()))
                    .collect();
                by_size.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
                by_size.into_iter().map(|(_, w)| w).collect()
            };
            let flushed = candidates
                .iter()
                .filter_map(Weak::upgrade)
                .any(|shard| shard.flush_buffer());
            if !flushed {
                return;
            }
        }
    }

    /// Open writers now.
    pub fn open_count(&self) -> usize {
        self.open.lock().expect("pool lock").len()
    }

    /// Waits for a turn to apply a batch to a shard.
    pub async fn apply_permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.applying
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed")
    }

    /// Whether a writer can open now without closing another.
    pub fn has_free_slot(&self) -> bool {
        self.open_count() < self.max_open
    }

    /// A clock for least-recently-used decisions (milliseconds since the pool started).
    pub fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Takes a slot for `shard` (about to open its writer), closing least recently used
    /// writers of other shards while the pool is full. Blocking.
    pub fn reserve(&self, key: usize, shard: Weak<ShardWriter>) {
        let deadline = Instant::now() + MAX_WAIT;
        loop {
            let victims: Vec<Weak<ShardWriter>> = {
                let mut open = self.open.lock().expect("pool lock");
                open.retain(|_, w| w.strong_count() > 0);
                if open.len() < self.max_open || Instant::now() >= deadline {
                    open.insert(key, shard);
                    return;
                }
                let mut by_age: Vec<(u64, Weak<ShardWriter>)> = open
                    .iter()
                    .filter(|(k, _)| **k != key)
                    .filter_map(|(_, w)| w.upgrade().map(|s| (s.last_used(), w.clone())))
                    .collect();
                by_age.sort_by_key(|(t, _)| *t);
                by_age.into_iter().map(|(_, w)| w).collect()
            };
            let closed = victims
                .iter()
                .filter_map(Weak::upgrade)
                .any(|victim| victim.close_writer());
            if !closed {
                std::thread::sleep(Duration::from_millis(5));
            } else {
                debug!("closed a shard writer to make room");
            }
        }
    }

    pub fn release(&self, key: usize) {
        self.open.lock().expect("pool lock").remove(&key);
    }
}

/// Last-use stamp of a shard, for [`WriterPool`]'s choice of what to close.
#[derive(Default)]
pub struct LastUse(AtomicU64);

impl LastUse {
    pub fn set(&self, t: u64) {
        self.0.store(t, Ordering::Relaxed)
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
