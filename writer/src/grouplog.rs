//! The writer-wide translog: one object per group commit carries the operations of every
//! shard that wrote meanwhile (a section per shard, with its epoch and sequence range), so a
//! trickle into thousands of shards costs one PUT per flush, not one per shard. Nothing is
//! acknowledged before the object is in the bucket.
//!
//! Objects live under `nodes/<node_id>/<incarnation>/translog/<seq>`, written create-only.
//! A shard's record lists the incarnations whose logs may still hold its operations above
//! its checkpoint (`ShardRecord::log_owners`): a new owner replays their sections. An object
//! is deleted once every section in it is below its shard's published checkpoint: by its
//! writer while alive, by [`collect_dead`] once the incarnation is gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use floe_proto::ShardOwner;
use floe_storage::{Storage, StorageError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::translog::{self, LoggedOp, Segment};
use crate::WriterError;

/// Most bytes of operations gathered into one object.
const MAX_OBJECT_BYTES: usize = 32 * 1024 * 1024;

/// The header line before one shard's operations in an object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SectionHeader {
    /// `<index uuid>/<shard>`.
    pub section: String,
    pub epoch: u64,
    pub first: u64,
    pub last: u64,
    pub count: usize,
}

/// The prefix of an incarnation's log.
pub fn prefix_of(owner: &ShardOwner) -> String {
    format!("nodes/{}/{}/translog", owner.node_id, owner.incarnation)
}

/// The section name of a shard.
pub fn section_of(index_uuid: &str, shard: u32) -> String {
    format!("{index_uuid}/{shard}")
}

/// The index uuid of a [`section_of`] name.
pub fn index_of_section(section: &str) -> &str {
    section.split('/').next().unwrap_or_default()
}

fn encode(sections: &[(SectionHeader, &[LoggedOp])]) -> Bytes {
    let mut out = Vec::new();
    for (header, ops) in sections {
        out.extend_from_slice(&serde_json::to_vec(header).expect("serializable"));
        out.push(b'\n');
        out.extend_from_slice(&translog::encode(ops));
    }
    Bytes::from(out)
}

/// Every section of an object, with its operations.
pub fn decode(bytes: &[u8]) -> Result<Vec<(SectionHeader, Vec<LoggedOp>)>, WriterError> {
    let mut lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let mut out = Vec::new();
    while let Some(line) = lines.next() {
        let header: SectionHeader = serde_json::from_slice(line)
            .map_err(|e| WriterError::Internal(format!("corrupt translog section header: {e}")))?;
        let mut body = Vec::new();
        for _ in 0..header.count {
            let op = lines.next().ok_or_else(|| {
                WriterError::Internal("translog section shorter than its header says".into())
            })?;
            body.extend_from_slice(op);
            body.push(b'\n');
        }
        out.push((header, translog::decode(&body)?));
    }
    Ok(out)
}

struct Append {
    header: SectionHeader,
    ops: Vec<LoggedOp>,
    reply: oneshot::Sender<Result<Segment, WriterError>>,
}

#[derive(Default)]
struct Live {
    /// Objects not yet deleted: sequence → (key, sections as (section, last)).
    objects: BTreeMap<u64, (String, Vec<(String, u64)>)>,
    /// Per section, every operation below this is in a published commit.
    covered: HashMap<String, u64>,
}

/// This incarnation's writer-wide translog.
pub struct GroupLog {
    storage: Storage,
    prefix: String,
    to_writer: mpsc::UnboundedSender<Append>,
    live: Mutex<Live>,
    next: AtomicU64,
}

impl GroupLog {
    /// Starts the log of `owner` (a new incarnation: its log starts empty).
    pub fn start(storage: Storage, owner: &ShardOwner) -> Arc<GroupLog> {
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Arc::new(GroupLog {
            storage,
            prefix: prefix_of(owner),
            to_writer: tx,
            live: Mutex::default(),
            next: AtomicU64::new(1),
        });
        tokio::spawn(write_loop(Arc::downgrade(&log), rx));
        log
    }

    /// Makes `ops` (one shard's batch, ascending sequence numbers) durable, group-committed
    /// with every other shard's batch queued meanwhile. Returns the shard's section.
    pub async fn append(
        &self,
        section: String,
        epoch: u64,
        ops: Vec<LoggedOp>,
    ) -> Result<Segment, WriterError> {
        let (first, last) = match (ops.first(), ops.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => return Err(WriterError::Internal("empty translog batch".into())),
        };
        let (reply, answer) = oneshot::channel();
        let header = SectionHeader {
            section,
            epoch,
            first,
            last,
            count: ops.len(),
        };
        self.to_writer
            .send(Append { header, ops, reply })
            .map_err(|_| WriterError::Internal("translog writer stopped".into()))?;
        answer
            .await
            .map_err(|_| WriterError::Internal("translog writer stopped".into()))?
    }

    /// A published commit covers `section` below `checkpoint`: objects whose every section is
    /// covered are deleted.
    pub async fn covered(&self, section: &str, checkpoint: u64) {
        let doomed: Vec<(u64, String)> = {
            let mut live = self.live.lock().expect("group log lock");
            let c = live.covered.entry(section.to_string()).or_insert(0);
            *c = (*c).max(checkpoint);
            let live = &*live;
            live.objects
                .iter()
                .filter(|(_, (_, sections))| {
                    sections
                        .iter()
                        .all(|(s, last)| live.covered.get(s).is_some_and(|c| last < c))
                })
                .map(|(seq, (key, _))| (*seq, key.clone()))
                .collect()
        };
        for (seq, key) in doomed {
            match self.storage.delete(&key).await {
                Ok(()) => {
                    self.live
                        .lock()
                        .expect("group log lock")
                        .objects
                        .remove(&seq);
                }
                Err(e) => warn!(%key, "could not delete a covered translog object: {e}"),
            }
        }
    }

    /// The key prefix of this log's objects.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Objects of this log not yet deleted.
    pub fn live_objects(&self) -> usize {
        self.live.lock().expect("group log lock").objects.len()
    }
}

/// Takes every batch queued while the previous object was being written, writes them as one
/// object (create-only; retried on the same key while the outcome is unknown), answers each.
async fn write_loop(log: std::sync::Weak<GroupLog>, mut rx: mpsc::UnboundedReceiver<Append>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut bytes: usize = batch[0].ops.iter().map(op_size).sum();
        while bytes < MAX_OBJECT_BYTES {
            match rx.try_recv() {
                Ok(a) => {
                    bytes += a.ops.iter().map(op_size).sum::<usize>();
                    batch.push(a);
                }
                Err(_) => break,
            }
        }
        let Some(log) = log.upgrade() else { return };
        let seq = log.next.fetch_add(1, Ordering::Relaxed);
        let key = format!("{}/{seq:020}", log.prefix);
        let sections: Vec<(SectionHeader, &[LoggedOp])> = batch
            .iter()
            .map(|a| (a.header.clone(), a.ops.as_slice()))
            .collect();
        let body = encode(&sections);
        let mut result = Err(WriterError::Internal("not written".into()));
        for attempt in 0..5u32 {
            match log.storage.put_if_absent(&key, body.clone()).await {
                // "Already exists" on this incarnation's own key: an earlier attempt landed.
                Ok(_) | Err(StorageError::AlreadyExists(_)) => {
                    result = Ok(());
                    break;
                }
                Err(e) => {
                    debug!(%key, attempt, "translog object write unsettled, retrying: {e}");
                    result = Err(WriterError::Storage(e));
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
            }
        }
        if result.is_err() {
            // Settle before refusing: claim the key with an empty object (no operations), so
            // a write still in flight can never land later. "Already exists" means it did.
            match log.storage.put_if_absent(&key, Bytes::new()).await {
                Err(StorageError::AlreadyExists(_)) => result = Ok(()),
                Ok(_) => {
                    log.live
                        .lock()
                        .expect("group log lock")
                        .objects
                        .insert(seq, (key.clone(), Vec::new()));
                }
                Err(e) => warn!(%key, "translog write refused with an unsettled outcome: {e}"),
            }
        }
        if result.is_ok() {
            log.live.lock().expect("group log lock").objects.insert(
                seq,
                (
                    key.clone(),
                    batch
                        .iter()
                        .map(|a| (a.header.section.clone(), a.header.last))
                        .collect(),
                ),
            );
        }
        for a in batch {
            let answer = match &result {
                Ok(()) => Ok(Segment {
                    key: key.clone(),
                    epoch: a.header.epoch,
                    first: a.header.first,
                    last: a.header.last,
                    fence: false,
                    section: Some(a.header.section.clone()),
                }),
                Err(e) => Err(WriterError::Unavailable(e.to_string())),
            };
            let _ = a.reply.send(answer);
        }
    }
}

fn op_size(op: &LoggedOp) -> usize {
    op.source.as_ref().map_or(16, |s| s.len()) + op.id.len() + 32
}

/// Section headers of writer-wide translog objects, by object key. Objects are immutable,
/// so each is fetched once however many shards need it; which objects exist is always
/// listed afresh, after the caller's grant of the shard (a stale listing could miss a batch
/// that the previous owner settled as still its own, see `ShardWriter::settle_late_batch`).
/// An object's section headers, by section.
type Headers = Arc<HashMap<String, Vec<SectionHeader>>>;

#[derive(Default)]
pub struct SectionCache {
    objects: Mutex<HashMap<String, Headers>>,
    /// The objects' bytes, while they fit in [`SECTION_CACHE_BYTES`]: replaying many shards
    /// of a gone writer then reads each object once.
    bytes: Mutex<(usize, HashMap<String, Bytes>)>,
}

/// Bytes of gone writers' translog objects kept in memory for replay.
const SECTION_CACHE_BYTES: usize = 256 * 1024 * 1024;

impl SectionCache {
    /// `section`'s parts in `owner`'s log, listed now. Unreadable objects are kept in the
    /// bucket and reported, never skipped silently.
    pub async fn sections(
        &self,
        storage: &Storage,
        owner: &ShardOwner,
        section: &str,
    ) -> Result<Vec<Segment>, WriterError> {
        let keys: Vec<String> = storage
            .list(&prefix_of(owner))
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let mut out = Vec::new();
        for key in keys {
            let cached = self.objects.lock().expect("cache lock").get(&key).cloned();
            let headers = match cached {
                Some(h) => h,
                None => {
                    let bytes = match storage.get(&key).await {
                        Ok(b) => b,
                        Err(StorageError::NotFound(_)) => continue, // collected meanwhile
                        Err(e) => return Err(e.into()),
                    };
                    {
                        let mut cached = self.bytes.lock().expect("cache lock");
                        if cached.0 + bytes.len() <= SECTION_CACHE_BYTES {
                            cached.0 += bytes.len();
                            cached.1.insert(key.clone(), bytes.clone());
                        }
                    }
                    let decoded = decode(&bytes).map_err(|e| {
                        WriterError::Internal(format!(
                            "unreadable translog object {key} (kept in the bucket): {e}"
                        ))
                    })?;
                    let mut by_section: HashMap<String, Vec<SectionHeader>> = HashMap::new();
                    for (h, _) in decoded {
                        by_section.entry(h.section.clone()).or_default().push(h);
                    }
                    let headers = Arc::new(by_section);
                    self.objects
                        .lock()
                        .expect("cache lock")
                        .insert(key.clone(), headers.clone());
                    headers
                }
            };
            for h in headers.get(section).into_iter().flatten() {
                out.push(Segment {
                    key: key.clone(),
                    epoch: h.epoch,
                    first: h.first,
                    last: h.last,
                    fence: false,
                    section: Some(h.section.clone()),
                });
            }
        }
        Ok(out)
    }

    /// The operations of one section, from memory when the object is cached.
    pub async fn read(
        &self,
        storage: &Storage,
        segment: &Segment,
    ) -> Result<Vec<LoggedOp>, WriterError> {
        let cached = self
            .bytes
            .lock()
            .expect("cache lock")
            .1
            .get(&segment.key)
            .cloned();
        let bytes = match cached {
            Some(b) => b,
            None => storage.get(&segment.key).await?,
        };
        let section = segment.section.as_deref().unwrap_or_default();
        Ok(decode(&bytes)?
            .into_iter()
            .find(|(h, _)| h.section == section && h.epoch == segment.epoch)
            .map(|(_, ops)| ops)
            .unwrap_or_default())
    }
}

/// Deletes objects of gone incarnations whose every section is below its shard's
/// checkpoint (`checkpoint_of` answers `None` for a shard whose index is gone: covered).
/// Returns how many objects were deleted.
pub async fn collect_dead(
    storage: &Storage,
    dead: &[ShardOwner],
    checkpoint_of: impl Fn(&str) -> Option<u64>,
) -> Result<usize, WriterError> {
    let mut deleted = 0;
    for owner in dead {
        for (key, _) in storage.list(&prefix_of(owner)).await? {
            let Ok(bytes) = storage.get(&key).await else {
                continue;
            };
            let Ok(sections) = decode(&bytes) else {
                continue; // never delete what cannot be read
            };
            let covered = sections
                .iter()
                .all(|(h, _)| checkpoint_of(&h.section).is_none_or(|c| h.last < c));
            if covered {
                storage.delete(&key).await?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bulk::OpKind;

    fn op(seq: u64) -> LoggedOp {
        LoggedOp {
            seq,
            kind: OpKind::Index,
            id: format!("id{seq}"),
            source: Some(Bytes::from_static(b"{\"a\":1}")),
            cond: None,
            routing: None,
        }
    }

    #[tokio::test]
    async fn many_shards_share_objects_and_each_reads_its_own_section() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let owner = ShardOwner {
            node_id: "n".into(),
            incarnation: "i1".into(),
        };
        let log = GroupLog::start(storage.clone(), &owner);
        let appends = (0..50u32).map(|shard| {
            let log = log.clone();
            async move {
                log.append(section_of("u", shard), 3, vec![op(10), op(11)])
                    .await
                    .unwrap()
            }
        });
        let segments = futures::future::join_all(appends).await;
        let objects = storage.list(&prefix_of(&owner)).await.unwrap().len();
        assert!(
            objects < 50,
            "group-committed: {objects} objects for 50 shards"
        );
        let t = translog::Translog::new(storage.clone(), "unused".into(), 3);
        let ops = t.read(&segments[7]).await.unwrap();
        assert_eq!(ops.iter().map(|o| o.seq).collect::<Vec<_>>(), vec![10, 11]);
        let cache = SectionCache::default();
        let found = cache
            .sections(&storage, &owner, &section_of("u", 7))
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].first, found[0].last), (10, 11));
        // Covered sections free their objects once every section in them is covered.
        for shard in 0..49u32 {
            log.covered(&section_of("u", shard), 12).await;
        }
        assert!(log.live_objects() >= 1, "shard 49 still needs its object");
        log.covered(&section_of("u", 49), 12).await;
        assert_eq!(log.live_objects(), 0);
        assert!(storage.list(&prefix_of(&owner)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn dead_logs_are_collected_once_covered() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let owner = ShardOwner {
            node_id: "n".into(),
            incarnation: "dead".into(),
        };
        let log = GroupLog::start(storage.clone(), &owner);
        log.append(section_of("u", 0), 1, vec![op(0)])
            .await
            .unwrap();
        log.append(section_of("u", 1), 1, vec![op(5)])
            .await
            .unwrap();
        let n = collect_dead(&storage, std::slice::from_ref(&owner), |s| {
            Some(if s == "u/0" { 1 } else { 0 })
        })
        .await
        .unwrap();
        assert_eq!(n, 1, "u/0 is covered, u/1 (seq 5, checkpoint 0) is not");
    }
}
