//! The change log: a numbered, create-only sequence of objects (`metastore/log/<seq>`) that
//! says what changed (an index created, updated or deleted; commits published). Every
//! process tails it with one LIST per poll (`start-after` its cursor) and re-reads only the
//! records an entry names, so a change reaches every process within a poll interval without
//! re-reading the whole metastore. The records stay the truth; the log only says where to
//! look. Appending needs no compare-and-swap: a writer that finds its number taken moves on
//! to the next one.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use floe_storage::{Storage, StorageError};
use serde::{Deserialize, Serialize};

use crate::error::{backoff, now_millis, parse, MetastoreError};

pub(crate) const LOG_PREFIX: &str = "metastore/log";
const MAX_APPEND_ATTEMPTS: usize = 256;

/// One change, naming the record to re-read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    IndexCreated {
        name: String,
        uuid: String,
    },
    /// Settings or mappings changed.
    IndexUpdated {
        name: String,
        uuid: String,
    },
    IndexDeleted {
        name: String,
        uuid: String,
    },
    /// The alias record changed.
    AliasesUpdated,
    /// The template record changed.
    TemplatesUpdated,
    /// The security record (users, roles, mappings, API keys) changed.
    SecurityUpdated,
    /// New commits of these (index uuid, shard) pairs were published.
    CommitsPublished {
        shards: Vec<(String, u32)>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LogEntry {
    pub seq: u64,
    /// The process that wrote it (its own entries need no re-read).
    pub origin: String,
    pub at_ms: i64,
    pub changes: Vec<Change>,
}

pub(crate) fn key_of(seq: u64) -> String {
    format!("{LOG_PREFIX}/{seq:020}")
}

fn seq_of(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.parse().ok()
}

/// What a poll found.
pub(crate) enum Polled {
    Entries(Vec<LogEntry>),
    /// Entries after the cursor were trimmed away: the caller must reload everything.
    Gap,
}

pub(crate) struct ChangeLog {
    storage: Storage,
    /// Highest sequence number known to exist (where the next append starts looking).
    append_hint: AtomicU64,
    /// Highest sequence number applied by this process.
    cursor: AtomicU64,
}

impl ChangeLog {
    /// Opens the log positioned at its current end: everything before is already reflected
    /// in the records the caller is about to load.
    pub async fn open(storage: Storage) -> Result<ChangeLog, MetastoreError> {
        let head = storage
            .list(LOG_PREFIX)
            .await?
            .iter()
            .filter_map(|(k, _)| seq_of(k))
            .max()
            .unwrap_or(0);
        Ok(ChangeLog {
            storage,
            append_hint: AtomicU64::new(head),
            cursor: AtomicU64::new(head),
        })
    }

    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Acquire)
    }

    /// Moves the cursor to `seq` (after a full reload that covered it).
    pub fn set_cursor(&self, seq: u64) {
        self.cursor.fetch_max(seq, Ordering::AcqRel);
        self.append_hint.fetch_max(seq, Ordering::AcqRel);
    }

    /// Appends one entry under the next free number. Returns its number.
    pub async fn append(&self, origin: &str, changes: Vec<Change>) -> Result<u64, MetastoreError> {
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            let seq = self.append_hint.load(Ordering::Acquire) + 1;
            let entry = LogEntry {
                seq,
                origin: origin.to_string(),
                at_ms: now_millis(),
                changes: changes.clone(),
            };
            let body = Bytes::from(serde_json::to_vec(&entry).expect("serializable"));
            match self.storage.put_if_absent(&key_of(seq), body).await {
                Ok(_) => {
                    self.append_hint.fetch_max(seq, Ordering::AcqRel);
                    return Ok(seq);
                }
                Err(StorageError::AlreadyExists(_)) => {
                    self.append_hint.fetch_max(seq, Ordering::AcqRel);
                    if attempt > 4 {
                        backoff(attempt - 4).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(MetastoreError::Contended("metastore change log".into()))
    }

    /// The entries after the cursor, in order (one LIST, then one GET per new entry). The
    /// cursor moves once the caller has applied them ([`ChangeLog::set_cursor`]).
    pub async fn poll(&self) -> Result<Polled, MetastoreError> {
        let cursor = self.cursor();
        let listed = self.storage.list_after(LOG_PREFIX, &key_of(cursor)).await?;
        let seqs: Vec<u64> = listed.iter().filter_map(|(k, _)| seq_of(k)).collect();
        if let Some(&first) = seqs.first() {
            if first != cursor + 1 {
                return Ok(Polled::Gap);
            }
        }
        let mut out = Vec::with_capacity(seqs.len());
        for (expected, seq) in (cursor + 1..).zip(seqs) {
            if seq != expected {
                break; // a hole being filled right now: read the rest next poll
            }
            match self.storage.get(&key_of(seq)).await {
                Ok(bytes) => out.push(parse::<LogEntry>(&key_of(seq), &bytes)?),
                Err(StorageError::NotFound(_)) => return Ok(Polled::Gap),
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(last) = out.last() {
            self.append_hint.fetch_max(last.seq, Ordering::AcqRel);
        }
        Ok(Polled::Entries(out))
    }

    /// Deletes the oldest entries, keeping the newest `keep` (a process further behind than
    /// that reloads everything). Returns how many were deleted.
    pub async fn trim(&self, keep: usize) -> Result<usize, MetastoreError> {
        let mut seqs: Vec<u64> = self
            .storage
            .list(LOG_PREFIX)
            .await?
            .iter()
            .filter_map(|(k, _)| seq_of(k))
            .collect();
        if seqs.len() <= keep * 2 {
            return Ok(0);
        }
        seqs.sort_unstable();
        let doomed = &seqs[..seqs.len() - keep];
        for seq in doomed {
            self.storage.delete(&key_of(*seq)).await?;
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn racing_appenders_get_distinct_numbers_and_tailers_see_all() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let a = std::sync::Arc::new(ChangeLog::open(storage.clone()).await.unwrap());
        let b = std::sync::Arc::new(ChangeLog::open(storage.clone()).await.unwrap());
        let tail = ChangeLog::open(storage.clone()).await.unwrap();
        let mut tasks = Vec::new();
        for (i, log) in [a.clone(), b.clone(), a, b].into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                for j in 0..10 {
                    let change = Change::IndexCreated {
                        name: format!("i{i}-{j}"),
                        uuid: String::new(),
                    };
                    log.append("t", vec![change]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let Polled::Entries(entries) = tail.poll().await.unwrap() else {
            panic!("no gap expected");
        };
        assert_eq!(entries.len(), 40);
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
        tail.set_cursor(40);
        assert_eq!(tail.trim(10).await.unwrap(), 30);
        let late = ChangeLog::open(storage.clone()).await.unwrap();
        late.cursor.store(5, Ordering::Release);
        assert!(matches!(late.poll().await.unwrap(), Polled::Gap));
    }
}
