//! One shard on its owning writer: a tantivy index in local scratch space, fed through the
//! shard's remote translog, whose committed segments are uploaded to the bucket on refresh.
//!
//! Write path: [`ShardWriter::write`] hands a request's operations to the shard's flusher
//! task, which numbers everything queued meanwhile and hands it to the process's writer-wide
//! translog ([`crate::grouplog`], one object per flush for all shards), then applies the
//! batch to tantivy in sequence order and answers each request. Nothing is acknowledged
//! before its translog object is in the bucket.
//!
//! The local copy is disposable: [`ShardWriter::open`] rebuilds it from the last published
//! commit and replays the translog above its checkpoint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::Bytes;
use floe_metastore::{Metastore, NodeSession};
use floe_proto::layout::{ShardLayout, SEQ_NO_FIELD, VERSION_FIELD};
use floe_proto::{DateBounds, IndexMeta, SegmentFile, ShardCommit};
use floe_storage::{Storage, StorageError};
use futures::{StreamExt, TryStreamExt};
use tantivy::directory::Directory;
use tantivy::index::{SegmentComponent, SegmentId};
use tantivy::indexer::IndexWriterOptions;
use tantivy::{DateTime, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::bulk::{Condition, OpKind};
use crate::document::{BuiltDoc, DocBuilder};
use crate::grouplog::{self, GroupLog};
use crate::pool::{LastUse, WriterPool};
use crate::recent::RecentWrites;
use crate::scratch::ScratchDirectory;
use crate::translog::{self, LoggedOp, Translog};
use floe_cache::{BlockCache, RemoteFile};

/// `index.translog.durability`: when a write is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// After its translog object is in the bucket (the default).
    Request,
    /// At once; the translog is written every interval (`index.translog.sync_interval`):
    /// a crash loses up to one interval of acknowledged writes.
    Async(std::time::Duration),
}

impl Durability {
    pub fn of(settings: &floe_proto::IndexSettings) -> Self {
        match settings.translog_durability.as_str() {
            "async" => Durability::Async(
                floe_proto::model::parse_time_value(&settings.translog_sync_interval)
                    .unwrap_or(std::time::Duration::from_secs(5)),
            ),
            _ => Durability::Request,
        }
    }

    fn interval(&self) -> std::time::Duration {
        match self {
            Durability::Async(d) => *d,
            Durability::Request => std::time::Duration::ZERO,
        }
    }
}
use crate::WriterError;

/// Where a shard lives and how much it may use to index.
#[derive(Clone, Debug)]
pub struct ShardSpec {
    pub index_uuid: String,
    pub shard: u32,
    /// `indexes/<uuid>/<shard>` in the bucket.
    pub prefix: String,
    pub scratch_dir: PathBuf,
    pub threads: usize,
}

/// What a shard shares with the rest of its process.
#[derive(Clone)]
pub struct ShardContext {
    pub storage: Storage,
    pub metastore: Arc<Metastore>,
    pub session: Arc<NodeSession>,
    /// This incarnation's writer-wide translog.
    pub group_log: Arc<GroupLog>,
    /// Earlier incarnations' writer-wide translog objects, read once per process.
    pub sections: Arc<grouplog::SectionCache>,
    pub pool: Arc<WriterPool>,
    /// Reads committed segment files from the bucket by range until they are hydrated.
    pub blocks: BlockCache,
}

/// An operation ready for the translog: validated, its document already built.
pub struct PreparedOp {
    pub kind: OpKind,
    pub id: String,
    pub source: Option<Bytes>,
    pub doc: Option<BuiltDoc>,
    /// False for generated ids, which cannot exist yet (skips the lookup).
    pub check_existing: bool,
    /// Applied only if the live version of `id` meets it (409 otherwise).
    pub cond: Option<Condition>,
    /// Custom routing it was written with: stored (`_routing` in answers) and logged.
    pub routing: Option<String>,
}

/// Why one operation failed: (HTTP status, OpenSearch error type, reason).
pub type ItemError = (u16, &'static str, String);

/// Per-operation outcome: Ok((result, version, seq_no, status)) or the item's error.
pub type OpResult = Result<(&'static str, u64, u64, u16), ItemError>;

struct Batch {
    ops: Vec<PreparedOp>,
    reply: oneshot::Sender<Result<Vec<OpResult>, WriterError>>,
}

/// An acknowledged write of one `_id` that the published commit may not hold yet: what a
/// realtime `GET` answers, and the live version an overwrite builds on.
#[derive(Clone, Debug, PartialEq)]
pub struct RecentWrite {
    pub version: u64,
    pub seq_no: u64,
    pub primary_term: u64,
    /// `None` once deleted.
    pub source: Option<Bytes>,
    /// Custom routing the document was written with.
    pub routing: Option<String>,
}

/// The live version of a document: what a [`Condition`] is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Live {
    version: u64,
    seq_no: u64,
    primary_term: u64,
}

/// Why `cond` does not hold for the live version `live` of `id` (`None`: it holds).
fn conflict(id: &str, cond: &Condition, live: Option<Live>) -> Option<ItemError> {
    let reason = match (cond, live) {
        (Condition::SeqNo { seq_no, primary_term }, None) => format!(
            "[{id}]: version conflict, required seqNo [{seq_no}], primary term [{primary_term}] but no document was found"
        ),
        (Condition::SeqNo { seq_no, primary_term }, Some(l))
            if (l.seq_no, l.primary_term) != (*seq_no, *primary_term) =>
        {
            format!(
                "[{id}]: version conflict, required seqNo [{seq_no}], primary term [{primary_term}]. current document has seqNo [{}] and primary term [{}]",
                l.seq_no, l.primary_term
            )
        }
        (Condition::External { version, gte }, Some(l))
            if (*gte && *version < l.version) || (!*gte && *version <= l.version) =>
        {
            format!(
                "[{id}]: version conflict, current version [{}] is higher{} than the one provided [{version}]",
                l.version,
                if *gte { "" } else { " or equal to" }
            )
        }
        _ => return None,
    };
    Some((409, "version_conflict_engine_exception", reason))
}

/// A tantivy operation waiting for the shard's writer to open.
enum Deferred {
    Delete(Term),
    Add(TantivyDocument),
}

struct State {
    /// Open only while the shard is being written ([`WriterPool`] bounds how many are).
    writer: Option<IndexWriter>,
    /// Operations applied (outcomes decided, `recent` updated) while no writer slot was
    /// free: fed to the writer, in order, when it opens (at the latest on refresh). So a
    /// request touching thousands of shards costs no writer churn.
    backlog: Vec<Deferred>,
    /// Writes not yet in a published commit, by `_id` (kept until a publish covers them, so
    /// a realtime `GET` sees every acknowledged write wherever the read is served from).
    recent: RecentWrites,
    dirty: bool,
    /// A refresh has taken the writer out to commit it without holding this state: writes
    /// meanwhile go to the backlog, and nothing opens a second writer.
    committing: bool,
    /// Every operation below this sequence number is applied to the tantivy index.
    applied_below: u64,
    min_ts: Option<i64>,
    max_ts: Option<i64>,
}

impl State {
    /// Hands one operation to the open writer, or to the backlog.
    fn tantivy(&mut self, op: Deferred) -> tantivy::Result<()> {
        match (&self.writer, op) {
            (Some(w), Deferred::Delete(term)) => {
                w.delete_term(term);
            }
            (Some(w), Deferred::Add(doc)) => {
                w.add_document(doc)?;
            }
            (None, op) => self.backlog.push(op),
        }
        Ok(())
    }

    /// Feeds the backlog, in order, to the writer (which must be open).
    fn drain_backlog(&mut self) -> tantivy::Result<()> {
        for op in std::mem::take(&mut self.backlog) {
            self.tantivy(op)?;
        }
        Ok(())
    }
}

/// Segment files uploaded at once by one refresh.
const PARALLEL_UPLOADS: usize = 4;

/// Committed files copied at once by a shard's hydration.
const HYDRATE_PARALLEL: usize = 4;

/// New segment files larger than this are streamed to the bucket in parts from the local
/// file (never held in memory whole: a merge may write files of gigabytes); smaller ones are
/// read and sent with one create-only PUT.
const STREAM_ABOVE: u64 = 64 << 20;

/// Part size of a streamed upload.
const UPLOAD_PART: usize = 16 << 20;

/// What of a snapshot's file is still to be uploaded.
enum Upload {
    Bytes(Bytes),
    /// An open handle (it still reads the file if a merge deletes it meanwhile).
    File(std::fs::File),
}

/// One file of a commit snapshot: its content only when it is not in the bucket yet.
struct SnapshotFile {
    name: String,
    len: u64,
    upload: Option<Upload>,
}

/// What a refresh produced, ready to publish.
pub struct PreparedCommit {
    pub commit: ShardCommit,
}

/// How a translog batch that landed after the lease ran out locally was settled.
#[derive(Debug, PartialEq, Eq)]
enum LateBatch {
    /// Still this epoch's shard: apply and acknowledge (any later owner replays it too).
    Ours,
    /// A newer owner's takeover point lies above it: it replays (replayed) this batch.
    ReplayedByNext,
    /// A newer owner's takeover point lies at or below it: it is never replayed.
    Superseded,
}

/// A shard's writable tantivy index and its translog.
pub struct ShardWriter {
    /// The shard's files: local, or remote until hydrated.
    scratch: ScratchDirectory,
    pub spec: ShardSpec,
    layout: ShardLayout,
    index: Index,
    reader: IndexReader,
    state: Mutex<State>,
    /// Signalled when a commit that took the writer out of `state` gives it back.
    committed: std::sync::Condvar,
    /// Segment files in the bucket, by file name: (object key below `segments/`, length).
    uploaded: Mutex<HashMap<String, (String, u64)>>,
    /// Objects of the last published commit.
    published: Mutex<HashSet<String>>,
    /// Segment objects no longer in the published commit, since when: deleted once older
    /// than the grace period, so searches that started on an older commit can finish.
    retired: Mutex<Vec<(Instant, String)>>,
    generation: Mutex<u64>,
    ctx: ShardContext,
    translog: Translog,
    /// Translog objects not yet covered by a published commit.
    live_translog: Mutex<Vec<translog::Segment>>,
    to_flusher: mpsc::UnboundedSender<Batch>,
    /// Serializes refreshes of this shard (loop and explicit `_refresh`).
    pub refresh_lock: tokio::sync::Mutex<()>,
    /// The epoch this writer owns the shard under (`_primary_term`).
    epoch: u64,
    /// Set when the shard went to another owner: nothing is acknowledged after it.
    fenced: std::sync::atomic::AtomicBool,
    last_used: LastUse,
    /// Translog operations that failed to re-apply at open: kept in the translog (never
    /// dropped), reported in health and logs.
    replay_failures: std::sync::atomic::AtomicU64,
}

impl ShardWriter {
    /// Opens the shard from its last published commit (or empty), replacing any local copy,
    /// replays the translog above the commit's checkpoint (its own objects and `earlier`:
    /// its sections in earlier owners' writer-wide logs), and starts its flusher. After a
    /// takeover (`taken_over`), marks the new epoch's starting point in the translog.
    pub async fn open(
        spec: ShardSpec,
        ctx: ShardContext,
        meta: &IndexMeta,
        epoch: u64,
        taken_over: bool,
        earlier: Vec<translog::Segment>,
    ) -> Result<Arc<ShardWriter>, WriterError> {
        let storage = ctx.storage.clone();
        let last = meta.shards.get(&spec.shard);
        let dir = spec.scratch_dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let layout = ShardLayout::of(&meta.settings).clone();
        let segments_prefix = format!("{}/segments", spec.prefix);
        let mut uploaded = HashMap::new();
        // Nothing is downloaded before the shard opens: committed files are read by range
        // until hydration (in the background) has copied them here.
        let (index, scratch) = match last {
            Some(commit) => {
                let mut remote = HashMap::new();
                for f in &commit.files {
                    uploaded.insert(f.name.clone(), (f.object_key().to_string(), f.len));
                    if floe_cache::hot_cache_segment(&f.name).is_none() {
                        let file = RemoteFile {
                            key: format!("{segments_prefix}/{}", f.object_key()),
                            len: f.len,
                            hot: None,
                        };
                        remote.insert(PathBuf::from(&f.name), file);
                    }
                }
                write_atomic(&dir.join("meta.json"), commit.tantivy_meta.as_bytes())?;
                let scratch = ScratchDirectory::with_remote(&dir, remote, ctx.blocks.clone())?;
                (Index::open(scratch.clone())?, scratch)
            }
            None => {
                let scratch = ScratchDirectory::open(&dir)?;
                let index = Index::create(
                    scratch.clone(),
                    layout.schema.clone(),
                    ShardLayout::index_settings(),
                )?;
                (index, scratch)
            }
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        // Segment objects no commit references (uploaded by a writer that died or was fenced
        // before publishing): retired now, deleted after the grace period.
        let published: HashSet<String> = last
            .map(|c| c.files.iter().map(|f| f.object_key().to_string()).collect())
            .unwrap_or_default();
        let orphans: Vec<(Instant, String)> = storage
            .list(&segments_prefix)
            .await?
            .into_iter()
            .filter_map(|(key, _)| {
                key.strip_prefix(&format!("{segments_prefix}/"))
                    .map(String::from)
            })
            .filter(|name| !published.contains(name))
            .map(|name| (Instant::now(), name))
            .collect();
        let checkpoint = last.map_or(0, |c| c.translog_checkpoint);
        let translog = Translog::new(storage.clone(), format!("{}/translog", spec.prefix), epoch);
        let (tx, rx) = mpsc::unbounded_channel();
        let shard = Arc::new(ShardWriter {
            layout,
            reader,
            state: Mutex::new(State {
                writer: None,
                backlog: Vec::new(),
                recent: RecentWrites::default(),
                dirty: false,
                committing: false,
                applied_below: checkpoint,
                min_ts: last.and_then(|c| c.min_timestamp.map(|ms| ms * 1_000_000)),
                max_ts: last.and_then(|c| c.max_timestamp.map(|ms| ms * 1_000_000)),
            }),
            committed: std::sync::Condvar::new(),
            uploaded: Mutex::new(uploaded),
            published: Mutex::new(published),
            retired: Mutex::new(orphans),
            generation: Mutex::new(last.map_or(0, |c| c.generation)),
            index,
            scratch,
            ctx,
            translog,
            live_translog: Mutex::new(Vec::new()),
            to_flusher: tx,
            refresh_lock: tokio::sync::Mutex::new(()),
            epoch,
            fenced: Default::default(),
            last_used: LastUse::default(),
            replay_failures: Default::default(),
            spec,
        });
        // Committed files come to local disk in the background; until then (and for
        // replay, gets and merges meanwhile) they are read by range.
        let (scratch, name, number) = (shard.scratch.clone(), meta.name.clone(), shard.spec.shard);
        tokio::spawn(async move {
            match scratch.hydrate(HYDRATE_PARALLEL).await {
                Ok(0) => {}
                Ok(files) => debug!(index = %name, shard = number, files, "shard hydrated"),
                Err(e) => {
                    warn!(index = %name, shard = number, "hydration stopped (files stay read by range): {e}")
                }
            }
        });
        let replayed = shard.replay(meta, checkpoint, earlier).await?;
        if taken_over {
            let next = shard.state.lock().expect("shard lock").applied_below;
            let fence = shard.translog.fence(next).await?;
            shard
                .live_translog
                .lock()
                .expect("translog lock")
                .push(fence);
        }
        info!(index = %meta.name, shard = shard.spec.shard, epoch, docs = last.map_or(0, |c| c.num_docs), checkpoint, replayed, "shard opened");
        tokio::spawn(flusher(
            Arc::downgrade(&shard),
            rx,
            Durability::of(&meta.settings),
        ));
        Ok(shard)
    }

    /// Applies the translog above `checkpoint`, in sequence order. Returns ops replayed. An
    /// operation that fails to re-apply stays in the translog (it is never dropped) and is
    /// reported; the rest of the shard still opens.
    async fn replay(
        self: &Arc<Self>,
        meta: &IndexMeta,
        checkpoint: u64,
        earlier: Vec<translog::Segment>,
    ) -> Result<usize, WriterError> {
        let mut all = self.translog.list().await?;
        all.extend(earlier);
        all.sort_by_key(|s| (s.first, s.epoch));
        let segments = Translog::replayable(all);
        let mut replayed = 0;
        let builder = DocBuilder::new(&self.layout, &meta.mappings);
        for seg in &segments {
            if seg.last < checkpoint && !seg.fence {
                // Covered by the commit; left over from a crash between publish and delete.
                self.translog.delete(seg).await?;
                continue;
            }
            let mut next_seq = seg.last + 1;
            let read = match &seg.section {
                // Another incarnation's writer-wide log: through the process's cache.
                Some(_) if !seg.key.starts_with(self.ctx.group_log.prefix()) => {
                    self.ctx.sections.read(&self.ctx.storage, seg).await
                }
                _ => self.translog.read(seg).await,
            };
            let ops = match read {
                Ok(ops) => ops,
                Err(WriterError::Internal(reason)) => {
                    // Unreadable object: set aside whole, reported, and the shard opens.
                    self.quarantine(&seg.key, None).await?;
                    self.replay_failed(seg.first, "", &reason);
                    let mut st = self.state.lock().expect("shard lock");
                    st.applied_below = st.applied_below.max(next_seq);
                    continue;
                }
                Err(e) => return Err(e),
            };
            for op in ops {
                if op.seq < checkpoint {
                    continue;
                }
                next_seq = op.seq + 1;
                let doc = match &op.source {
                    Some(src) => {
                        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(src)
                            .map_err(|e| format!("translog source: {e}"))
                            .and_then(|parsed| builder.build(&op.id, src, &parsed).map_err(|e| e.0))
                            .map(Some)
                    }
                    None => Ok(None),
                };
                let doc = match doc {
                    Ok(doc) => doc,
                    Err(reason) => {
                        self.quarantine(&seg.key, Some(&op)).await?;
                        self.replay_failed(op.seq, &op.id, &reason);
                        continue;
                    }
                };
                let logged = op.clone();
                let prepared = PreparedOp {
                    kind: op.kind,
                    id: op.id,
                    source: op.source,
                    doc,
                    check_existing: true,
                    cond: op.cond,
                    routing: op.routing,
                };
                let shard = self.clone();
                let seq = op.seq;
                // The primary term the operation was written under (its writer's epoch), so
                // its seq_no/primary_term pair, and the conditions on it, replay the same.
                let term = seg.epoch;
                let result = tokio::task::spawn_blocking(move || shard.apply(seq, term, prepared))
                    .await
                    .map_err(|e| WriterError::Internal(format!("replay panicked: {e}")))?;
                match result {
                    // A document that fails again the way it failed when first written (the
                    // client was told then) is a normal outcome, not a replay failure.
                    Ok(_) | Err((400 | 404 | 409, _, _)) => replayed += 1,
                    Err((_, _, reason)) => {
                        self.quarantine(&seg.key, Some(&logged)).await?;
                        self.replay_failed(seq, &logged.id, &reason)
                    }
                }
            }
            if !seg.fence {
                let mut st = self.state.lock().expect("shard lock");
                st.applied_below = st.applied_below.max(next_seq);
            }
            self.live_translog
                .lock()
                .expect("translog lock")
                .push(seg.clone());
            // Recovering many shards at once stays within the shared memory budget.
            let pool = self.ctx.pool.clone();
            let _ = tokio::task::spawn_blocking(move || pool.enforce_budget()).await;
        }
        Ok(replayed)
    }

    /// Keeps a translog operation (or a whole unreadable object) that failed to re-apply
    /// under `translog-failed/`, out of replay's way but never dropped.
    async fn quarantine(&self, key: &str, op: Option<&LoggedOp>) -> Result<(), WriterError> {
        let name = key.replace('/', "_");
        let (target, bytes) = match op {
            Some(op) => (
                format!("{}/translog-failed/{name}-op{}", self.spec.prefix, op.seq),
                translog::encode(std::slice::from_ref(op)),
            ),
            None => (
                format!("{}/translog-failed/{name}", self.spec.prefix),
                self.ctx.storage.get(key).await?,
            ),
        };
        match self.ctx.storage.put_if_absent(&target, bytes).await {
            Ok(_) | Err(StorageError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn replay_failed(&self, seq: u64, id: &str, reason: &str) {
        self.replay_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        error!(shard = self.spec.shard, index_uuid = %self.spec.index_uuid, seq, id, "translog operation failed to re-apply; kept in the translog: {reason}");
    }

    /// Translog operations that failed to re-apply when the shard opened.
    pub fn replay_failures(&self) -> u64 {
        self.replay_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The node incarnation that opened this shard (and alone may publish it).
    pub fn owner(&self) -> &floe_proto::ShardOwner {
        self.ctx.session.owner()
    }

    /// Whether this writer may still acknowledge writes for the shard: its node session is
    /// live and no newer owner fenced it.
    pub fn lease_valid(&self) -> bool {
        !self.is_fenced() && self.ctx.session.valid()
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The shard went to another owner: refuse everything from now on.
    pub fn fence(&self) {
        self.fenced
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// When the shard was last used ([`WriterPool`]'s clock).
    pub fn last_used(&self) -> u64 {
        self.last_used.get()
    }

    /// Marks the shard as in use now.
    pub fn touch(&self) {
        self.last_used.set(self.ctx.pool.now());
    }

    /// Makes `ops` durable in the translog (group-committed with concurrent requests), then
    /// applies them. Returns one outcome per op, in order.
    pub async fn write(&self, ops: Vec<PreparedOp>) -> Result<Vec<OpResult>, WriterError> {
        self.last_used.set(self.ctx.pool.now());
        let (reply, answer) = oneshot::channel();
        self.to_flusher
            .send(Batch { ops, reply })
            .map_err(|_| WriterError::Internal("shard is closing".into()))?;
        answer
            .await
            .map_err(|_| WriterError::Internal("shard flusher stopped".into()))?
    }

    fn id_term(&self, id: &str) -> Term {
        Term::from_field_text(self.layout.id, id)
    }

    /// The live version of `_id` (version, seq_no, primary_term), if it exists, counting
    /// unpublished writes.
    fn live_locked(&self, state: &State, id: &str) -> Result<Option<Live>, WriterError> {
        if let Some(entry) = state.recent.get(id) {
            return Ok(entry.source.is_some().then_some(Live {
                version: entry.version,
                seq_no: entry.seq_no,
                primary_term: entry.primary_term,
            }));
        }
        Ok(self
            .committed_live(&self.reader.searcher(), id)?
            .map(|(_, live)| live))
    }

    /// Where the live copy of `id` is in the committed segments of `searcher`, and its
    /// version, seq_no and primary term.
    fn committed_live(
        &self,
        searcher: &tantivy::Searcher,
        id: &str,
    ) -> Result<Option<(tantivy::DocAddress, Live)>, WriterError> {
        let Some(addr) = self.committed_doc(searcher, id)? else {
            return Ok(None);
        };
        let seg = searcher.segment_reader(addr.segment_ord);
        let version = seg.fast_fields().u64(VERSION_FIELD)?.first(addr.doc_id);
        let packed = seg.fast_fields().u64(SEQ_NO_FIELD)?.first(addr.doc_id);
        let (seq_no, primary_term) = packed.map_or((0, 1), floe_proto::layout::unpack_seq_no);
        Ok(Some((
            addr,
            Live {
                version: version.unwrap_or(1),
                seq_no,
                primary_term,
            },
        )))
    }

    /// Where the live copy of `id` is in the committed segments.
    fn committed_doc(
        &self,
        searcher: &tantivy::Searcher,
        id: &str,
    ) -> Result<Option<tantivy::DocAddress>, WriterError> {
        let term = self.id_term(id);
        for (ord, seg) in searcher.segment_readers().iter().enumerate() {
            let inv = seg.inverted_index(self.layout.id)?;
            if let Some(mut postings) =
                inv.read_postings(&term, tantivy::schema::IndexRecordOption::Basic)?
            {
                use tantivy::DocSet;
                let mut doc = postings.doc();
                while doc != tantivy::TERMINATED {
                    if seg.alive_bitset().is_none_or(|a| a.is_alive(doc)) {
                        return Ok(Some(tantivy::DocAddress::new(ord as u32, doc)));
                    }
                    doc = postings.advance();
                }
            }
        }
        Ok(None)
    }

    /// The live document `id` with its source (unpublished writes first, then the
    /// committed segments): what an update builds on. `None` if it does not exist.
    pub fn current(&self, id: &str) -> Result<Option<RecentWrite>, WriterError> {
        let st = self.state.lock().expect("shard lock");
        if let Some(entry) = st.recent.get(id) {
            return Ok(entry.source.is_some().then(|| entry.clone()));
        }
        // One searcher for the lookup and the read: the version and the source are of the
        // same committed copy.
        let searcher = self.reader.searcher();
        drop(st);
        let Some((addr, live)) = self.committed_live(&searcher, id)? else {
            return Ok(None);
        };
        let doc: TantivyDocument = searcher.doc(addr)?;
        use tantivy::schema::Value as _;
        let source = doc
            .get_first(self.layout.source)
            .and_then(|v| v.as_bytes().map(Bytes::copy_from_slice))
            .unwrap_or_default();
        let routing = self
            .layout
            .routing
            .and_then(|f| doc.get_first(f))
            .and_then(|v| v.as_str().map(str::to_string));
        Ok(Some(RecentWrite {
            version: live.version,
            seq_no: live.seq_no,
            primary_term: live.primary_term,
            source: Some(source),
            routing,
        }))
    }

    /// Opens the tantivy writer if it is closed, within the process's writer budget.
    /// Blocking (may close another shard's writer).
    fn ensure_writer<'a>(
        self: &'a Arc<Self>,
        mut st: std::sync::MutexGuard<'a, State>,
    ) -> Result<std::sync::MutexGuard<'a, State>, WriterError> {
        // A commit in flight holds the writer (and tantivy's directory lock): wait for it.
        st = self
            .committed
            .wait_while(st, |s| s.committing)
            .expect("shard lock");
        if st.writer.is_some() {
            return Ok(st);
        }
        drop(st);
        let key = self.key();
        self.ctx.pool.reserve(key, Arc::downgrade(self));
        st = self.state.lock().expect("shard lock");
        if st.writer.is_none() {
            let threads = self.spec.threads.max(1);
            let options = IndexWriterOptions::builder()
                .num_worker_threads(threads)
                .num_merge_threads(threads)
                .memory_budget_per_thread(
                    (self.ctx.pool.memory_per_writer() / threads).max(15_000_000),
                )
                .build();
            match self.index.writer_with_options(options) {
                Ok(w) => st.writer = Some(w),
                Err(e) => {
                    self.ctx.pool.release(key);
                    return Err(e.into());
                }
            }
        }
        st.drain_backlog()?;
        Ok(st)
    }

    /// Commits locally and closes the tantivy writer (threads and buffer freed), unless the
    /// shard is busy right now. Returns whether it is closed. The next refresh still
    /// publishes what was committed here.
    pub fn close_writer(&self) -> bool {
        let Ok(mut st) = self.state.try_lock() else {
            return false;
        };
        // No writer (yet): nothing to close here; a slot it holds is about to be used.
        let Some(mut writer) = st.writer.take() else {
            return false;
        };
        if st.dirty {
            if let Err(e) = writer.commit().and_then(|_| self.reader.reload()) {
                warn!(
                    shard = self.spec.shard,
                    "local commit before closing the writer failed: {e}"
                );
                st.writer = Some(writer);
                return false;
            }
        }
        drop(writer);
        self.ctx.pool.clear_buffered(self.key());
        self.ctx.pool.release(self.key());
        true
    }

    /// This shard's key in the [`WriterPool`].
    fn key(&self) -> usize {
        self as *const ShardWriter as usize
    }

    /// Commits locally what this shard holds in memory (its tantivy buffer, or its backlog
    /// through a writer opened for it), for the shared memory budget. The commit is not
    /// published here: the shard stays dirty for its next refresh. Returns false when the
    /// shard is busy (another thread holds it) or the commit failed. Blocking.
    pub fn flush_buffer(self: &Arc<Self>) -> bool {
        let Ok(st) = self.state.try_lock() else {
            return false;
        };
        if st.committing {
            return false; // a refresh is committing it right now
        }
        let mut st = if st.backlog.is_empty() {
            st
        } else {
            match self.ensure_writer(st) {
                Ok(st) => st,
                Err(e) => {
                    warn!(
                        shard = self.spec.shard,
                        "opening a writer to flush failed: {e}"
                    );
                    return false;
                }
            }
        };
        if let Some(writer) = st.writer.as_mut() {
            if let Err(e) = writer.commit().and_then(|_| self.reader.reload()) {
                warn!(
                    shard = self.spec.shard,
                    "flushing the indexing buffer failed: {e}"
                );
                return false;
            }
        }
        self.ctx.pool.clear_buffered(self.key());
        debug!(
            shard = self.spec.shard,
            "flushed the largest indexing buffer"
        );
        true
    }

    /// Applies one logged operation to the tantivy writer; `term`: the epoch of the writer
    /// that logged it.
    fn apply(self: &Arc<Self>, seq: u64, term: u64, op: PreparedOp) -> OpResult {
        let internal = |e: WriterError| (500u16, "exception", e.to_string());
        let st = self.state.lock().expect("shard lock");
        // A shard without an open writer takes one only if a slot is free; otherwise its
        // operations wait in the backlog (outcomes are decided now, from `recent` and the
        // committed segments).
        let mut st = if st.writer.is_some() || (!st.committing && self.ctx.pool.has_free_slot()) {
            self.ensure_writer(st).map_err(internal)?
        } else {
            st
        };
        st.applied_below = st.applied_below.max(seq + 1);
        let live = if op.check_existing || op.cond.is_some() {
            self.live_locked(&st, &op.id).map_err(internal)?
        } else {
            None
        };
        if let Some(err) = op.cond.as_ref().and_then(|c| conflict(&op.id, c, live)) {
            return Err(err);
        }
        let previous = live.map(|l| l.version);
        // An external version becomes the document's; otherwise versions count writes.
        let next_version = |prev: Option<u64>| match op.cond {
            Some(Condition::External { version, .. }) => version,
            _ => prev.map_or(1, |v| v + 1),
        };
        match op.kind {
            OpKind::Update => Err((
                500,
                "exception",
                "an update reached the shard unresolved".into(),
            )),
            OpKind::Delete => {
                let Some(prev) = previous else {
                    return Ok(("not_found", next_version(None), seq, 404));
                };
                let version = next_version(Some(prev));
                st.tantivy(Deferred::Delete(self.id_term(&op.id)))
                    .map_err(|e| internal(e.into()))?;
                st.recent.put(
                    op.id,
                    RecentWrite {
                        version,
                        seq_no: seq,
                        primary_term: term,
                        source: None,
                        routing: None,
                    },
                );
                st.dirty = true;
                Ok(("deleted", version, seq, 200))
            }
            OpKind::Create if previous.is_some() => Err((
                409,
                "version_conflict_engine_exception",
                format!(
                    "[{}]: version conflict, document already exists (current version [{}])",
                    op.id,
                    previous.unwrap_or(1)
                ),
            )),
            OpKind::Index | OpKind::Create => {
                let Some(built) = op.doc else {
                    return Err((
                        400,
                        "action_request_validation_exception",
                        "source is missing".into(),
                    ));
                };
                if op.check_existing {
                    st.tantivy(Deferred::Delete(self.id_term(&op.id)))
                        .map_err(|e| internal(e.into()))?;
                }
                let version = next_version(previous);
                let mut doc: TantivyDocument = built.doc;
                doc.add_u64(self.layout.version, version);
                if let (Some(field), Some(routing)) = (self.layout.routing, &op.routing) {
                    doc.add_text(field, routing);
                }
                doc.add_u64(
                    self.layout.seq_no,
                    floe_proto::layout::pack_seq_no(seq, term),
                );
                st.tantivy(Deferred::Add(doc))
                    .map_err(|e| internal(e.into()))?;
                let held = crate::pool::estimated_bytes(op.source.as_ref().map_or(0, |s| s.len()));
                self.ctx
                    .pool
                    .add_buffered(self.key(), Arc::downgrade(self), held);
                let write = RecentWrite {
                    version,
                    seq_no: seq,
                    primary_term: term,
                    source: Some(op.source.unwrap_or_default()),
                    routing: op.routing,
                };
                if op.check_existing || op.cond.is_some() {
                    st.recent.put(op.id, write);
                } else {
                    st.recent.put_generated(op.id, write);
                }
                if let Some(ts) = built.timestamp {
                    st.min_ts = Some(st.min_ts.map_or(ts, |m| m.min(ts)));
                    st.max_ts = Some(st.max_ts.map_or(ts, |m| m.max(ts)));
                }
                st.dirty = true;
                Ok(if previous.is_some() {
                    ("updated", version, seq, 200)
                } else {
                    ("created", version, seq, 201)
                })
            }
        }
    }

    /// Merges the committed segments into at most `max_segments` (`_forcemerge`), waiting
    /// for the merges; the next refresh publishes the result. Blocking.
    pub fn merge_all(self: &Arc<Self>, max_segments: usize) -> Result<(), WriterError> {
        // A background merge may hold some of the segments (tantivy then refuses the merge):
        // read the current segments again and retry, for a bounded time.
        const ATTEMPTS: usize = 100;
        for attempt in 1..=ATTEMPTS {
            let segments: Vec<(SegmentId, u32)> = self
                .index
                .searchable_segment_metas()?
                .iter()
                .map(|m| (m.id(), m.num_docs()))
                .collect();
            if segments.len() <= max_segments.max(1) {
                return Ok(());
            }
            let merges: Vec<_> = {
                let st = self.state.lock().expect("shard lock");
                let mut st = self.ensure_writer(st)?;
                st.dirty = true;
                let writer = st.writer.as_mut().expect("writer open");
                merge_groups(segments, max_segments)
                    .iter()
                    .map(|ids| writer.merge(ids))
                    .collect()
            };
            let mut refused = None;
            for merge in merges {
                if let Err(e) = merge.wait() {
                    refused = Some(e);
                }
            }
            // A refresh that ran while the merge did may have committed (and cleared the
            // dirty flag) before the merged segment existed: mark it again, so the caller's
            // next refresh publishes the merge.
            self.state.lock().expect("shard lock").dirty = true;
            match refused {
                None => continue, // merged: check the count again
                Some(e) if attempt == ATTEMPTS => return Err(e.into()),
                Some(e) => {
                    debug!("force merge raced a background merge, retrying: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
        Ok(())
    }

    /// An acknowledged write of `id` that no published commit holds yet, if any.
    pub fn realtime_get(&self, id: &str) -> Option<RecentWrite> {
        self.state
            .lock()
            .expect("shard lock")
            .recent
            .get(id)
            .cloned()
    }

    /// Whether the shard has nothing unpublished and no open writer work, so it can close.
    pub fn is_quiet(&self) -> bool {
        let st = self.state.lock().expect("shard lock");
        !st.dirty && st.recent.is_empty()
    }

    /// Whether retired segment objects wait here to be deleted (a shard closed with some
    /// would leave them in the bucket until it is opened again).
    pub fn has_garbage(&self) -> bool {
        !self.retired.lock().expect("retired lock").is_empty()
    }

    pub fn is_dirty(&self) -> bool {
        self.state.lock().expect("shard lock").dirty
    }

    /// Commits applied operations locally and uploads new segment files to the bucket.
    /// Returns `None` when there was nothing to commit.
    /// `date_fields` gives the paths of the index's date fields, whose bounds go into the
    /// commit (asked only when there is something to commit).
    pub async fn prepare_commit(
        self: &Arc<Self>,
        date_fields: impl FnOnce() -> Vec<String>,
    ) -> Result<Option<PreparedCommit>, WriterError> {
        let epoch = self.epoch;
        let (min_ts, max_ts, checkpoint, writer) = {
            let st = self.state.lock().expect("shard lock");
            if !st.dirty {
                return Ok(None);
            }
            // Operations waiting for a writer get one now (possibly closing another shard's).
            let mut st = if st.backlog.is_empty() {
                st
            } else {
                tokio::task::block_in_place(|| self.ensure_writer(st))?
            };
            // Everything below the checkpoint is in the writer; what is applied while it
            // commits waits in the backlog for the next refresh.
            let writer = st.writer.take();
            st.committing = writer.is_some();
            st.dirty = false;
            self.ctx.pool.clear_buffered(self.key());
            (st.min_ts, st.max_ts, st.applied_below, writer)
        };
        // A closed writer committed locally when it closed.
        if let Some(mut writer) = writer {
            let committed = tokio::task::block_in_place(|| writer.commit());
            let mut st = self.state.lock().expect("shard lock");
            st.committing = false;
            if committed.is_err() {
                st.dirty = true; // nothing was lost: the next refresh tries again
            }
            st.writer = Some(writer);
            self.committed.notify_all();
            st.drain_backlog()?;
            committed?;
        }
        self.reader.reload()?;
        // A background merge may replace segments (and delete their files) at any time:
        // snapshot the segment list and open every file it names; an open file survives
        // deletion. Retry if a file vanished before we opened it.
        let mut attempt = 0;
        let (meta_json, files) = loop {
            attempt += 1;
            match self.snapshot_files() {
                Ok(x) => break x,
                Err(e) if attempt < 5 => debug!("snapshot raced a merge, retrying: {e}"),
                Err(e) => return Err(e),
            }
        };
        // New files go up a few at a time; the list keeps the snapshot's order.
        let listed: Vec<SegmentFile> = futures::stream::iter(files)
            .map(|f| async move {
                let object = match f.upload {
                    Some(content) => self.upload(&f.name, f.len, content).await?,
                    None => self.uploaded_object(&f.name)?,
                };
                Ok::<_, WriterError>(SegmentFile {
                    name: f.name,
                    len: f.len,
                    object,
                })
            })
            .buffered(PARALLEL_UPLOADS)
            .try_collect()
            .await?;
        let size = listed.iter().map(|f| f.len).sum();
        let num_docs = self.reader.searcher().num_docs();
        let generation = {
            let mut g = self.generation.lock().expect("generation lock");
            *g += 1;
            *g
        };
        Ok(Some(PreparedCommit {
            commit: ShardCommit {
                generation,
                tantivy_meta: meta_json,
                files: listed,
                num_docs,
                size_bytes: size,
                min_timestamp: min_ts.map(|ns| ns / 1_000_000),
                max_timestamp: max_ts.map(|ns| ns / 1_000_000),
                epoch,
                translog_checkpoint: checkpoint,
                segment_times: self.segment_times(),
                date_bounds: self.date_bounds(&date_fields()),
            },
        }))
    }

    /// Bounds of `@timestamp` (ms) of each segment the reader sees, from the column stats
    /// (bounds, maybe a little wider than the values): what lets searchers skip segments
    /// outside a query's time range. Segments without the column are left out.
    fn segment_times(&self) -> BTreeMap<String, (i64, i64)> {
        self.reader
            .searcher()
            .segment_readers()
            .iter()
            .filter_map(|segment| {
                let (min, max) = date_column_bounds(segment, floe_proto::layout::TIMESTAMP_FIELD)?;
                Some((
                    segment.segment_id().uuid_string(),
                    (min.into_timestamp_millis(), max.into_timestamp_millis()),
                ))
            })
            .collect()
    }

    /// Bounds (ms) of the other date fields (columns of dates in the keyword field), per
    /// field path and per segment, from the column stats: searchers skip shards and
    /// segments whose bounds miss a query's required range on such a field.
    fn date_bounds(&self, date_fields: &[String]) -> BTreeMap<String, DateBounds> {
        let mut out: BTreeMap<String, DateBounds> = BTreeMap::new();
        let searcher = self.reader.searcher();
        for path in date_fields {
            let column_name = format!("{}.{path}", floe_proto::layout::KEYWORD_FIELD);
            for segment in searcher.segment_readers() {
                let Some((min, max)) = date_column_bounds(segment, &column_name) else {
                    continue;
                };
                // Whole milliseconds around the values (kept in nanoseconds here): never
                // narrower than they are.
                let (min, max) = (
                    min.into_timestamp_millis() - 1,
                    max.into_timestamp_millis() + 1,
                );
                let bounds = out.entry(path.clone()).or_insert(DateBounds {
                    min,
                    max,
                    segments: BTreeMap::new(),
                });
                bounds.min = bounds.min.min(min);
                bounds.max = bounds.max.max(max);
                bounds
                    .segments
                    .insert(segment.segment_id().uuid_string(), (min, max));
            }
        }
        out
    }

    /// The object key of a file already uploaded (by this writer or an earlier commit).
    fn uploaded_object(&self, name: &str) -> Result<String, WriterError> {
        self.uploaded
            .lock()
            .expect("uploaded lock")
            .get(name)
            .map(|(object, _)| object.clone())
            .ok_or_else(|| WriterError::Internal(format!("segment file {name} was never uploaded")))
    }

    /// Uploads one segment file (unless already in the bucket) create-only under a key of
    /// this epoch, which no other owner writes. Returns its object key.
    async fn upload(&self, name: &str, len: u64, content: Upload) -> Result<String, WriterError> {
        if let Some((object, l)) = self.uploaded.lock().expect("uploaded lock").get(name) {
            if *l == len {
                return Ok(object.clone());
            }
        }
        let object = format!("{:010}/{name}", self.epoch);
        let key = format!("{}/segments/{object}", self.spec.prefix);
        let put = match content {
            Upload::Bytes(bytes) => self
                .ctx
                .storage
                .put_if_absent(&key, bytes)
                .await
                .map(|_| ()),
            Upload::File(file) => {
                self.ctx
                    .storage
                    .put_file_if_absent(&key, file, len, UPLOAD_PART)
                    .await
            }
        };
        match put {
            Ok(()) => {}
            // This epoch's own earlier upload of the same file (a retry or a re-commit of
            // the same bytes): reuse it. Different bytes under the same name: refuse.
            Err(StorageError::AlreadyExists(_)) => {
                let existing = self.ctx.storage.size(&key).await?;
                if existing != len {
                    return Err(WriterError::Internal(format!(
                        "segment object {key} exists with {existing} bytes, not {len}"
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
        self.uploaded
            .lock()
            .expect("uploaded lock")
            .insert(name.to_string(), (object.clone(), len));
        Ok(object)
    }

    /// Records a published commit: objects of the previous one that it dropped (merged
    /// away) are retired, and recent writes it covers are forgotten (searchers see them).
    pub fn published(&self, files: &[SegmentFile], checkpoint: u64) {
        self.state
            .lock()
            .expect("shard lock")
            .recent
            .covered(checkpoint);
        let now_live: HashSet<String> = files.iter().map(|f| f.object_key().to_string()).collect();
        let mut published = self.published.lock().expect("published lock");
        let dropped: Vec<String> = published.difference(&now_live).cloned().collect();
        *published = now_live;
        let now = Instant::now();
        self.retired
            .lock()
            .expect("retired lock")
            .extend(dropped.into_iter().map(|f| (now, f)));
    }

    /// Deletes retired segment objects older than `grace`. Returns how many.
    pub async fn collect_garbage(&self, grace: std::time::Duration) -> usize {
        let due: Vec<String> = {
            let mut retired = self.retired.lock().expect("retired lock");
            let (due, keep): (Vec<_>, Vec<_>) =
                retired.drain(..).partition(|(at, _)| at.elapsed() >= grace);
            *retired = keep;
            due.into_iter().map(|(_, f)| f).collect()
        };
        if due.is_empty() {
            return 0;
        }
        // Objects a live point in time (or scroll) holds stay until it expires.
        let held = match floe_metastore::pits::pinned_objects(&self.ctx.storage, &self.spec.prefix)
            .await
        {
            Ok(held) => held,
            Err(e) => {
                warn!("could not read the shard's pins, collecting later: {e}");
                self.requeue_retired(due);
                return 0;
            }
        };
        let (due, kept): (Vec<String>, Vec<String>) =
            due.into_iter().partition(|name| !held.contains(name));
        self.requeue_retired(kept);
        let mut deleted = 0;
        for name in due {
            match self
                .ctx
                .storage
                .delete(&format!("{}/segments/{name}", self.spec.prefix))
                .await
            {
                Ok(()) => {
                    self.uploaded
                        .lock()
                        .expect("uploaded lock")
                        .retain(|_, (object, _)| *object != name);
                    deleted += 1;
                }
                Err(e) => {
                    warn!(file = %name, "could not delete a retired segment object, will retry: {e}");
                    self.retired
                        .lock()
                        .expect("retired lock")
                        .push((Instant::now(), name));
                }
            }
        }
        deleted
    }

    /// Retired objects to look at again after another grace period.
    fn requeue_retired(&self, names: Vec<String>) {
        let now = Instant::now();
        self.retired
            .lock()
            .expect("retired lock")
            .extend(names.into_iter().map(|n| (now, n)));
    }

    /// Writes a batch to this incarnation's writer-wide translog (group-committed with other
    /// shards' batches; unknown outcomes are settled there) and remembers its section until
    /// a commit covers it.
    async fn append_translog(&self, ops: Vec<LoggedOp>) -> Result<(), WriterError> {
        let section = grouplog::section_of(&self.spec.index_uuid, self.spec.shard);
        let segment = self.ctx.group_log.append(section, self.epoch, ops).await?;
        self.live_translog
            .lock()
            .expect("translog lock")
            .push(segment);
        Ok(())
    }

    /// Deletes translog objects entirely below a published checkpoint.
    pub async fn truncate_translog(&self, checkpoint: u64) {
        let covered: Vec<translog::Segment> = {
            let mut live = self.live_translog.lock().expect("translog lock");
            // Takeover markers stay: they keep a fenced writer's late batches unreplayable.
            let (covered, keep): (Vec<_>, Vec<_>) = live
                .drain(..)
                .partition(|s| s.last < checkpoint && !s.fence);
            *live = keep;
            covered
        };
        // This shard's sections of the writer-wide log are covered below the checkpoint.
        self.ctx
            .group_log
            .covered(
                &grouplog::section_of(&self.spec.index_uuid, self.spec.shard),
                checkpoint,
            )
            .await;
        for seg in covered {
            if let Err(e) = self.translog.delete(&seg).await {
                // Harmless: recovery skips (and deletes) objects below the checkpoint.
                warn!(key = %seg.key, "could not delete translog object: {e}");
            }
        }
    }

    fn snapshot_files(&self) -> Result<(String, Vec<SnapshotFile>), WriterError> {
        let dir = self.index.directory();
        let metas = self.index.load_metas()?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for seg in &metas.segments {
            let mut components = vec![
                SegmentComponent::Postings,
                SegmentComponent::Positions,
                SegmentComponent::Terms,
                SegmentComponent::Store,
                SegmentComponent::FastFields,
                SegmentComponent::FieldNorms,
            ];
            if seg.has_deletes() {
                components.push(SegmentComponent::Delete);
            }
            for path in components.into_iter().map(|c| seg.relative_path(c)) {
                if !dir.exists(&path).unwrap_or(false) {
                    continue;
                }
                let name = path.to_string_lossy().to_string();
                if !seen.insert(name.clone()) {
                    continue;
                }
                let known = self
                    .uploaded
                    .lock()
                    .expect("uploaded lock")
                    .get(&name)
                    .map(|(_, l)| *l);
                // Raw bytes straight from the file (the tantivy directory would strip the
                // footer); an open handle still reads a file a merge deletes meanwhile. A
                // file not local yet (being hydrated) is one of the last commit's.
                let local = self.spec.scratch_dir.join(&path);
                let mut file = match (std::fs::File::open(&local), known) {
                    (Ok(file), _) => file,
                    (Err(_), Some(len)) => {
                        out.push(SnapshotFile {
                            name,
                            len,
                            upload: None,
                        });
                        continue;
                    }
                    (Err(e), None) => {
                        return Err(WriterError::Internal(format!("open {name}: {e}")))
                    }
                };
                let len = file.metadata()?.len();
                // Segment files never change once written: one already in the bucket is not
                // read again (a refresh costs the new bytes, not the shard's size).
                let upload = if known == Some(len) {
                    None
                } else if len > STREAM_ABOVE {
                    Some(Upload::File(file))
                } else {
                    let mut buf = Vec::with_capacity(len as usize);
                    std::io::Read::read_to_end(&mut file, &mut buf)?;
                    Some(Upload::Bytes(Bytes::from(buf)))
                };
                out.push(SnapshotFile { name, len, upload });
            }
        }
        // The meta we publish describes exactly the files we took.
        let meta_json =
            serde_json::to_string(&metas).map_err(|e| WriterError::Internal(e.to_string()))?;
        out.extend(self.hot_cache_files(&metas, &meta_json)?);
        Ok((meta_json, out))
    }

    /// Hot caches (`<segment>.hot`) of the segments of `metas`: those in the bucket already
    /// as they are, the others built now (what opening each segment reads, so a cold
    /// searcher opens it with one GET).
    fn hot_cache_files(
        &self,
        metas: &tantivy::IndexMeta,
        meta_json: &str,
    ) -> Result<Vec<SnapshotFile>, WriterError> {
        let mut out = Vec::new();
        let mut missing = HashSet::new();
        {
            let uploaded = self.uploaded.lock().expect("uploaded lock");
            for uuid in metas.segments.iter().map(|s| s.id().uuid_string()) {
                let name = floe_cache::hot_cache_name(&uuid);
                match uploaded.get(&name) {
                    Some((_, len)) => out.push(SnapshotFile {
                        name,
                        len: *len,
                        upload: None,
                    }),
                    None => {
                        missing.insert(uuid);
                    }
                }
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        // The raw files, local or remote (tantivy's managed directory would hide footers).
        let built = floe_cache::hot::build(Box::new(self.scratch.clone()), meta_json, &missing)?;
        out.extend(built.into_iter().map(|(uuid, bytes)| SnapshotFile {
            name: floe_cache::hot_cache_name(&uuid),
            len: bytes.len() as u64,
            upload: Some(Upload::Bytes(bytes)),
        }));
        Ok(out)
    }

    /// Settles a translog batch that landed after this writer's lease ran out locally: will
    /// the shard's history contain it or not? Decided by the shard record and the newer
    /// owner's takeover marker, the same way recovery decides it. `None` if still unknown
    /// after a bounded wait.
    async fn settle_late_batch(&self, batch: &translog::Segment) -> Option<LateBatch> {
        // Up to a minute: a new owner between its grant and its marker is replaying.
        for _ in 0..600 {
            if let Ok(Some(record)) = self
                .ctx
                .metastore
                .read_shard(&self.spec.index_uuid, self.spec.shard)
                .await
            {
                if record.epoch == self.epoch
                    && record.owner.as_ref() == Some(self.ctx.session.owner())
                {
                    return Some(LateBatch::Ours);
                }
            }
            if let Ok(all) = self.translog.list().await {
                let newer: Vec<_> = all.iter().filter(|o| o.epoch > self.epoch).collect();
                if newer.iter().any(|o| o.first <= batch.first) {
                    return Some(LateBatch::Superseded);
                }
                if newer.iter().any(|o| o.first > batch.last) {
                    return Some(LateBatch::ReplayedByNext);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        None
    }

    /// Makes the next refresh publish again, after an upload or publish failed.
    pub fn mark_dirty(&self) {
        self.state.lock().expect("shard lock").dirty = true;
    }
}

/// The shard's group commit: takes every batch queued while the previous translog write
/// was in flight, writes them as one object, applies them in order, answers each request.
/// With `async` durability it answers first and writes the translog every sync interval.
async fn flusher(
    shard: Weak<ShardWriter>,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    durability: Durability,
) {
    let mut next_seq: Option<u64> = None;
    // `async` durability: applied and acknowledged, not yet in the bucket.
    let mut unsynced: Vec<LoggedOp> = Vec::new();
    let mut sync_due: Option<tokio::time::Instant> = None;
    loop {
        let received = match (&durability, sync_due) {
            (Durability::Async(_), Some(due)) => {
                match tokio::time::timeout_at(due, rx.recv()).await {
                    Ok(r) => r,
                    Err(_) => {
                        // Sync interval elapsed: write what was acknowledged meanwhile.
                        let Some(shard) = shard.upgrade() else { return };
                        sync_unsynced(&shard, &mut unsynced).await;
                        sync_due = (!unsynced.is_empty()).then(|| due + durability.interval());
                        continue;
                    }
                }
            }
            _ => rx.recv().await,
        };
        let Some(first) = received else {
            if let Some(shard) = shard.upgrade() {
                sync_unsynced(&shard, &mut unsynced).await;
            }
            return;
        };
        let batches = gather(first, &mut rx);
        let Some(shard) = shard.upgrade() else { return };
        let seq0 =
            *next_seq.get_or_insert_with(|| shard.state.lock().expect("shard lock").applied_below);
        let logged = log_entries(&batches, seq0);
        // Sequence numbers are never reused, even when a write fails (it may have landed).
        next_seq = Some(seq0 + logged.len() as u64);
        if !shard.lease_valid() {
            reply_err(
                batches,
                WriterError::LeaseLost(format!(
                    "shard [{}] lease (epoch {}) is not held by this writer",
                    shard.spec.shard, shard.epoch
                )),
            );
            continue;
        }
        if let Durability::Async(interval) = durability {
            apply_and_reply(&shard, batches, seq0).await;
            unsynced.extend(logged);
            if unsynced.len() > 100_000 {
                sync_unsynced(&shard, &mut unsynced).await;
            }
            if sync_due.is_none() && !unsynced.is_empty() {
                sync_due = Some(tokio::time::Instant::now() + interval);
            }
            continue;
        }
        if logged.is_empty() {
            apply_and_reply(&shard, batches, seq0).await;
            continue;
        }
        match shard.append_translog(logged).await {
            Ok(()) if shard.lease_valid() => apply_and_reply(&shard, batches, seq0).await,
            // The lease ran out locally while the write was in flight: another owner may have
            // taken the shard. Settle whether the shard's history holds this batch before
            // answering, so a refusal is never replayed later and an acknowledgement is.
            Ok(()) => {
                let batch = shard
                    .live_translog
                    .lock()
                    .expect("translog lock")
                    .last()
                    .cloned();
                let settled = match &batch {
                    Some(b) => shard.settle_late_batch(b).await,
                    None => None,
                };
                let lost = |why: &str| {
                    WriterError::LeaseLost(format!(
                        "shard [{}] lease (epoch {}) expired during the translog write; {why}",
                        shard.spec.shard, shard.epoch
                    ))
                };
                match settled {
                    Some(LateBatch::Ours) => apply_and_reply(&shard, batches, seq0).await,
                    // The new owner replayed it onto the same history this writer holds
                    // locally: applying it here gives the very outcomes it got there (this
                    // copy is fenced and never published).
                    Some(LateBatch::ReplayedByNext) => {
                        shard.fence();
                        apply_and_reply(&shard, batches, seq0).await;
                    }
                    Some(LateBatch::Superseded) => {
                        shard.fence();
                        reply_err(batches, lost("the new owner will not replay it"));
                    }
                    None => {
                        shard.fence();
                        reply_err(batches, lost("its outcome could not be settled"))
                    }
                }
            }
            Err(e) => {
                warn!(
                    shard = shard.spec.shard,
                    "translog write failed, nothing acknowledged: {e}"
                );
                reply_err(batches, WriterError::Unavailable(e.to_string()));
            }
        }
    }
}

/// The first batch plus everything else already queued, up to a size bound (so a burst does
/// not build one huge PUT).
fn gather(first: Batch, rx: &mut mpsc::UnboundedReceiver<Batch>) -> Vec<Batch> {
    const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;
    let size = |b: &Batch| {
        b.ops
            .iter()
            .map(|o| o.source.as_ref().map_or(16, |s| s.len()))
            .sum::<usize>()
    };
    let mut bytes = size(&first);
    let mut batches = vec![first];
    while bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(b) => {
                bytes += size(&b);
                batches.push(b);
            }
            Err(_) => break,
        }
    }
    batches
}

fn log_entries(batches: &[Batch], seq0: u64) -> Vec<LoggedOp> {
    let ops = batches.iter().flat_map(|b| b.ops.iter());
    ops.zip(seq0..)
        .map(|(op, seq)| LoggedOp {
            seq,
            kind: op.kind,
            id: op.id.clone(),
            source: op.source.clone(),
            cond: op.cond,
            routing: op.routing.clone(),
        })
        .collect()
}

fn reply_err(batches: Vec<Batch>, e: WriterError) {
    let reason = e.to_string();
    for b in batches {
        let err = match &e {
            WriterError::LeaseLost(_) => WriterError::LeaseLost(reason.clone()),
            _ => WriterError::Unavailable(reason.clone()),
        };
        let _ = b.reply.send(Err(err));
    }
}

impl Drop for ShardWriter {
    /// What a closed, fenced or deleted shard still held no longer counts against the
    /// process's memory budget (and its key may be reused by the next allocation).
    fn drop(&mut self) {
        self.ctx.pool.clear_buffered(self.key());
        self.scratch.close();
    }
}

/// The smallest and largest value of the date column `name` in `segment`, from the column's
/// stats; `None` when the segment holds no such value.
fn date_column_bounds(
    segment: &tantivy::SegmentReader,
    name: &str,
) -> Option<(DateTime, DateTime)> {
    let column = segment.fast_fields().column_opt::<DateTime>(name).ok()??;
    (column.values.num_vals() > 0).then(|| (column.min_value(), column.max_value()))
}

/// Applies the batches to tantivy in sequence order (off the async threads) and answers.
async fn apply_and_reply(shard: &Arc<ShardWriter>, batches: Vec<Batch>, seq0: u64) {
    // A request touching thousands of shards applies a few at a time, on few threads.
    let permit = shard.ctx.pool.apply_permit().await;
    let shard = shard.clone();
    let applied = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut seq = seq0;
        let mut all = Vec::with_capacity(batches.len());
        for b in batches {
            let mut results = Vec::with_capacity(b.ops.len());
            for op in b.ops {
                results.push(shard.apply(seq, shard.epoch, op));
                seq += 1;
            }
            all.push((b.reply, results));
        }
        shard.ctx.pool.enforce_budget();
        all
    })
    .await;
    match applied {
        Ok(all) => {
            for (reply, results) in all {
                let _ = reply.send(Ok(results));
            }
        }
        Err(e) => warn!("applying a translog batch panicked: {e}"),
    }
}

/// `async` durability: writes the acknowledged-but-unsynced operations. On failure they stay
/// queued for the next interval (the documented data-loss window grows meanwhile).
async fn sync_unsynced(shard: &Arc<ShardWriter>, unsynced: &mut Vec<LoggedOp>) {
    if unsynced.is_empty() {
        return;
    }
    match shard.append_translog(unsynced.clone()).await {
        Ok(()) => unsynced.clear(),
        Err(e) => warn!(
            shard = shard.spec.shard,
            pending = unsynced.len(),
            "async translog sync failed, will retry: {e}"
        ),
    }
}

/// Splits segments (id, live docs) into at most `n` merges of similar size: largest first
/// into the currently smallest group, so the merged segments can be searched in parallel
/// with even work. Groups of one segment need no merge and are left out.
pub fn merge_groups(mut segments: Vec<(SegmentId, u32)>, n: usize) -> Vec<Vec<SegmentId>> {
    segments.sort_by_key(|(_, docs)| std::cmp::Reverse(*docs));
    let mut groups: Vec<(u64, Vec<SegmentId>)> = vec![(0, Vec::new()); n.max(1)];
    for (id, docs) in segments {
        let smallest = groups
            .iter_mut()
            .min_by_key(|(total, _)| *total)
            .expect("at least one group");
        smallest.0 += docs as u64;
        smallest.1.push(id);
    }
    groups
        .into_iter()
        .map(|(_, ids)| ids)
        .filter(|ids| ids.len() > 1)
        .collect()
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-download");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
