//! Process-wide limits on shard writers. Each open tantivy `IndexWriter` holds threads (an
//! indexing worker, a merge thread, a segment updater) and an indexing buffer, so a process
//! with thousands of shards keeps only `max_open` of them open: opening one more closes the
//! least recently used (a local commit, then its threads and buffer are gone). A closed
//! shard loses nothing: its operations are in the translog, its segments committed locally.

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
}

impl WriterPool {
    /// `memory` is the indexing memory of the whole process, shared by the open writers.
    pub fn new(max_open: usize, memory: usize) -> WriterPool {
        let max_open = max_open.max(1);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        WriterPool {
            max_open,
            applying: Arc::new(tokio::sync::Semaphore::new(4 * cores)),
            // tantivy refuses less than 15 MB per indexing thread.
            memory_per_writer: (memory / max_open).max(15_000_000),
            open: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    pub fn memory_per_writer(&self) -> usize {
        self.memory_per_writer
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
