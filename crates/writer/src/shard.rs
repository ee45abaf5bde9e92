//! One shard on its owning writer: a tantivy index in local scratch space, fed through the
//! shard's remote translog, whose committed segments are uploaded to the bucket on refresh.
//!
//! Write path: [`ShardWriter::write`] hands a request's operations to the shard's flusher
//! task, which group-commits everything queued meanwhile into one translog object, then
//! applies the batch to tantivy in sequence order and answers each request. Nothing is
//! acknowledged before its translog object is in the bucket.
//!
//! The local copy is disposable: [`ShardWriter::open`] rebuilds it from the last published
//! commit and replays the translog above its checkpoint.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::Bytes;
use floe_proto::layout::{ShardLayout, VERSION_FIELD};
use floe_proto::{IndexMeta, SegmentFile, ShardCommit};
use floe_storage::Storage;
use tantivy::directory::{Directory, MmapDirectory};
use tantivy::index::{SegmentComponent, SegmentId};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::bulk::OpKind;
use crate::document::{BuiltDoc, DocBuilder};
use crate::translog::{self, LoggedOp, Translog};

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
    pub memory_budget: usize,
}

/// An operation ready for the translog: validated, its document already built.
pub struct PreparedOp {
    pub kind: OpKind,
    pub id: String,
    pub source: Option<Bytes>,
    pub doc: Option<BuiltDoc>,
    /// False for generated ids, which cannot exist yet (skips the lookup).
    pub check_existing: bool,
}

/// Why one operation failed: (HTTP status, OpenSearch error type, reason).
pub type ItemError = (u16, &'static str, String);

/// Per-operation outcome: Ok((result, version, seq_no, status)) or the item's error.
pub type OpResult = Result<(&'static str, u64, u64, u16), ItemError>;

struct Batch {
    ops: Vec<PreparedOp>,
    reply: oneshot::Sender<Result<Vec<OpResult>, WriterError>>,
}

struct State {
    writer: IndexWriter,
    /// Documents written since the last commit, by `_id`: the version now live, if any.
    /// With the source, so `GET _doc` sees a write before the next refresh (realtime get).
    pending: HashMap<String, Option<(u64, Bytes)>>,
    dirty: bool,
    /// Every operation below this sequence number is applied to the tantivy writer.
    applied_below: u64,
    min_ts: Option<i64>,
    max_ts: Option<i64>,
}

/// What a refresh produced, ready to publish.
pub struct PreparedCommit {
    pub commit: ShardCommit,
}

/// A shard's writable tantivy index and its translog.
pub struct ShardWriter {
    pub spec: ShardSpec,
    layout: ShardLayout,
    index: Index,
    reader: IndexReader,
    state: Mutex<State>,
    /// Files already in the bucket (segment files are immutable).
    uploaded: Mutex<HashSet<String>>,
    /// Files of the last published commit.
    published: Mutex<HashSet<String>>,
    /// Segment objects no longer in the published commit, since when: deleted once older
    /// than the grace period, so searches that started on an older commit can finish.
    retired: Mutex<Vec<(Instant, String)>>,
    generation: Mutex<u64>,
    storage: Storage,
    translog: Translog,
    /// Translog objects not yet covered by a published commit.
    live_translog: Mutex<Vec<translog::Segment>>,
    to_flusher: mpsc::UnboundedSender<Batch>,
    /// Serializes refreshes of this shard (loop and explicit `_refresh`).
    pub refresh_lock: tokio::sync::Mutex<()>,
    /// The lease epoch this writer holds the shard under (`_primary_term`).
    epoch: u64,
    /// Until when (local clock, with a safety margin) the lease is known to hold; `None`
    /// once fenced. Nothing is acknowledged after it.
    lease_deadline: Mutex<Option<Instant>>,
}

impl ShardWriter {
    /// Opens the shard from its last published commit (or empty), replacing any local copy,
    /// replays the translog above the commit's checkpoint, and starts its flusher.
    pub async fn open(
        spec: ShardSpec,
        storage: Storage,
        meta: &IndexMeta,
        epoch: u64,
        lease_deadline: Instant,
    ) -> Result<Arc<ShardWriter>, WriterError> {
        let last = meta.shards.get(&spec.shard);
        let dir = spec.scratch_dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let layout = ShardLayout::new();
        let segments_prefix = format!("{}/segments", spec.prefix);
        let mut uploaded = HashSet::new();
        let index = match last {
            Some(commit) => {
                for f in &commit.files {
                    let bytes = storage
                        .get(&format!("{segments_prefix}/{}", f.name))
                        .await?;
                    write_atomic(&dir.join(&f.name), &bytes)?;
                    uploaded.insert(f.name.clone());
                }
                write_atomic(&dir.join("meta.json"), commit.tantivy_meta.as_bytes())?;
                Index::open(MmapDirectory::open(&dir)?)?
            }
            None => Index::create(
                MmapDirectory::open(&dir)?,
                layout.schema.clone(),
                ShardLayout::index_settings(),
            )?,
        };
        let writer: IndexWriter =
            index.writer_with_num_threads(spec.threads.max(1), spec.memory_budget)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        // Segment objects no commit references (uploaded by a writer that died or was fenced
        // before publishing): retired now, deleted after the grace period.
        let published: HashSet<String> = last
            .map(|c| c.files.iter().map(|f| f.name.clone()).collect())
            .unwrap_or_default();
        let orphans: Vec<(Instant, String)> = storage
            .list(&segments_prefix)
            .await?
            .into_iter()
            .filter_map(|(key, _)| key.rsplit('/').next().map(String::from))
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
                writer,
                pending: HashMap::new(),
                dirty: false,
                applied_below: checkpoint,
                min_ts: last.and_then(|c| c.min_timestamp.map(|ms| ms * 1_000_000)),
                max_ts: last.and_then(|c| c.max_timestamp.map(|ms| ms * 1_000_000)),
            }),
            uploaded: Mutex::new(uploaded),
            published: Mutex::new(published),
            retired: Mutex::new(orphans),
            generation: Mutex::new(last.map_or(0, |c| c.generation)),
            index,
            storage,
            translog,
            live_translog: Mutex::new(Vec::new()),
            to_flusher: tx,
            refresh_lock: tokio::sync::Mutex::new(()),
            epoch,
            lease_deadline: Mutex::new(Some(lease_deadline)),
            spec,
        });
        let replayed = shard.replay(meta, checkpoint).await?;
        info!(index = %meta.name, shard = shard.spec.shard, docs = last.map_or(0, |c| c.num_docs), checkpoint, replayed, "shard opened");
        tokio::spawn(flusher(
            Arc::downgrade(&shard),
            rx,
            Durability::of(&meta.settings),
        ));
        Ok(shard)
    }

    /// Applies the translog above `checkpoint`, in sequence order. Returns ops replayed.
    async fn replay(&self, meta: &IndexMeta, checkpoint: u64) -> Result<usize, WriterError> {
        let segments = Translog::replayable(self.translog.list().await?);
        let mut replayed = 0;
        let builder = DocBuilder::new(&self.layout, &meta.mappings);
        for seg in &segments {
            if seg.last < checkpoint {
                // Covered by the commit; left over from a crash between publish and delete.
                self.translog.delete(seg).await?;
                continue;
            }
            for op in self.translog.read(seg).await? {
                if op.seq < checkpoint {
                    continue;
                }
                let doc =
                    match &op.source {
                        Some(src) => {
                            let parsed: serde_json::Map<String, serde_json::Value> =
                                serde_json::from_slice(src).map_err(|e| {
                                    WriterError::Internal(format!("translog source: {e}"))
                                })?;
                            Some(builder.build(&op.id, src, &parsed).map_err(|e| {
                                WriterError::Internal(format!("translog replay: {e}"))
                            })?)
                        }
                        None => None,
                    };
                let prepared = PreparedOp {
                    kind: op.kind,
                    id: op.id,
                    source: op.source,
                    doc,
                    check_existing: true,
                };
                let _ = tokio::task::block_in_place(|| self.apply(op.seq, prepared));
                replayed += 1;
            }
            self.live_translog
                .lock()
                .expect("translog lock")
                .push(seg.clone());
        }
        Ok(replayed)
    }

    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether this writer may still acknowledge writes for the shard.
    pub fn lease_valid(&self) -> bool {
        self.lease_deadline
            .lock()
            .expect("lease lock")
            .is_some_and(|d| Instant::now() < d)
    }

    /// Records a successful lease renewal.
    pub fn extend_lease(&self, deadline: Instant) {
        let mut d = self.lease_deadline.lock().expect("lease lock");
        if d.is_some() {
            *d = Some(deadline);
        }
    }

    /// The lease went to another writer: refuse everything from now on.
    pub fn fence(&self) {
        *self.lease_deadline.lock().expect("lease lock") = None;
    }

    /// Makes `ops` durable in the translog (group-committed with concurrent requests), then
    /// applies them. Returns one outcome per op, in order.
    pub async fn write(&self, ops: Vec<PreparedOp>) -> Result<Vec<OpResult>, WriterError> {
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

    /// The live version of `_id`, if it exists, counting uncommitted writes.
    fn version_locked(&self, state: &State, id: &str) -> Result<Option<u64>, WriterError> {
        if let Some(entry) = state.pending.get(id) {
            return Ok(entry.as_ref().map(|(version, _)| *version));
        }
        let searcher = self.reader.searcher();
        let term = self.id_term(id);
        for seg in searcher.segment_readers() {
            let inv = seg.inverted_index(self.layout.id)?;
            if let Some(mut postings) =
                inv.read_postings(&term, tantivy::schema::IndexRecordOption::Basic)?
            {
                use tantivy::DocSet;
                let mut doc = postings.doc();
                while doc != tantivy::TERMINATED {
                    if seg.alive_bitset().is_none_or(|a| a.is_alive(doc)) {
                        let column = seg.fast_fields().u64(VERSION_FIELD)?;
                        return Ok(Some(column.first(doc).unwrap_or(1)));
                    }
                    doc = postings.advance();
                }
            }
        }
        Ok(None)
    }

    /// Applies one logged operation to the tantivy writer.
    fn apply(&self, seq: u64, op: PreparedOp) -> OpResult {
        let mut st = self.state.lock().expect("shard lock");
        st.applied_below = st.applied_below.max(seq + 1);
        let internal = |e: WriterError| (500u16, "exception", e.to_string());
        let previous = if op.check_existing {
            self.version_locked(&st, &op.id).map_err(internal)?
        } else {
            None
        };
        match op.kind {
            OpKind::Delete => {
                let Some(prev) = previous else {
                    return Ok(("not_found", 1, seq, 404));
                };
                st.writer.delete_term(self.id_term(&op.id));
                st.pending.insert(op.id, None);
                st.dirty = true;
                Ok(("deleted", prev + 1, seq, 200))
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
                    st.writer.delete_term(self.id_term(&op.id));
                }
                let version = previous.map_or(1, |v| v + 1);
                let mut doc: TantivyDocument = built.doc;
                doc.add_u64(self.layout.version, version);
                st.writer
                    .add_document(doc)
                    .map_err(|e| internal(e.into()))?;
                if op.check_existing {
                    st.pending
                        .insert(op.id, Some((version, op.source.unwrap_or_default())));
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
    pub fn merge_all(&self, max_segments: usize) -> Result<(), WriterError> {
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
                let mut st = self.state.lock().expect("shard lock");
                st.dirty = true;
                merge_groups(segments, max_segments)
                    .iter()
                    .map(|ids| st.writer.merge(ids))
                    .collect()
            };
            let mut refused = None;
            for merge in merges {
                if let Err(e) = merge.wait() {
                    refused = Some(e);
                }
            }
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

    /// A write of `id` not yet refreshed: `Some(Some((version, source)))` if it now exists,
    /// `Some(None)` if it was deleted, `None` if this shard has no pending write of it.
    pub fn realtime_get(&self, id: &str) -> Option<Option<(u64, Bytes)>> {
        self.state
            .lock()
            .expect("shard lock")
            .pending
            .get(id)
            .cloned()
    }

    pub fn is_dirty(&self) -> bool {
        self.state.lock().expect("shard lock").dirty
    }

    /// Commits applied operations locally and uploads new segment files to the bucket.
    /// Returns `None` when there was nothing to commit.
    pub async fn prepare_commit(&self) -> Result<Option<PreparedCommit>, WriterError> {
        let epoch = self.epoch;
        let (min_ts, max_ts, checkpoint) = {
            let mut st = self.state.lock().expect("shard lock");
            if !st.dirty {
                return Ok(None);
            }
            tokio::task::block_in_place(|| st.writer.commit())?;
            // The reader must see the commit before `pending` forgets what it holds: in
            // between, an id lookup would find the document nowhere.
            self.reader.reload()?;
            st.dirty = false;
            st.pending.clear();
            (st.min_ts, st.max_ts, st.applied_below)
        };
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
        let mut listed = Vec::new();
        let mut size = 0u64;
        for (name, bytes) in &files {
            size += bytes.len() as u64;
            listed.push(SegmentFile {
                name: name.clone(),
                len: bytes.len() as u64,
            });
            if self.uploaded.lock().expect("uploaded lock").contains(name) {
                continue;
            }
            self.storage
                .put(
                    &format!("{}/segments/{}", self.spec.prefix, name),
                    bytes.clone(),
                )
                .await?;
            self.uploaded
                .lock()
                .expect("uploaded lock")
                .insert(name.clone());
        }
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
            },
        }))
    }

    /// Records a published commit: files of the previous one that it dropped (merged away)
    /// are retired.
    pub fn published(&self, files: &[SegmentFile]) {
        let now_live: HashSet<String> = files.iter().map(|f| f.name.clone()).collect();
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
        let mut deleted = 0;
        for name in due {
            match self
                .storage
                .delete(&format!("{}/segments/{name}", self.spec.prefix))
                .await
            {
                Ok(()) => {
                    self.uploaded.lock().expect("uploaded lock").remove(&name);
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

    /// Writes a batch to the translog and remembers the object until a commit covers it.
    async fn append_translog(&self, ops: &[LoggedOp]) -> Result<(), WriterError> {
        let segment = self.translog.append(ops).await?;
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
            let (covered, keep): (Vec<_>, Vec<_>) =
                live.drain(..).partition(|s| s.last < checkpoint);
            *live = keep;
            covered
        };
        for seg in covered {
            if let Err(e) = self.translog.delete(&seg).await {
                // Harmless: recovery skips (and deletes) objects below the checkpoint.
                warn!(key = %seg.key, "could not delete translog object: {e}");
            }
        }
    }

    fn snapshot_files(&self) -> Result<(String, Vec<(String, Bytes)>), WriterError> {
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
                // Raw bytes straight from the file (the tantivy directory would strip the
                // footer); an open handle still reads a file a merge deletes meanwhile.
                let mut file = std::fs::File::open(self.spec.scratch_dir.join(&path))
                    .map_err(|e| WriterError::Internal(format!("open {name}: {e}")))?;
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut buf)?;
                out.push((name, Bytes::from(buf)));
            }
        }
        // The meta we publish describes exactly the files we took.
        let meta_json =
            serde_json::to_string(&metas).map_err(|e| WriterError::Internal(e.to_string()))?;
        Ok((meta_json, out))
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
        match shard.append_translog(&logged).await {
            // The lease may have run out while the write was in flight: then another writer
            // may already own the shard, and this batch must not be acknowledged or applied.
            Ok(_) if !shard.lease_valid() => {
                let reason = format!(
                    "shard [{}] lease (epoch {}) expired during the translog write",
                    shard.spec.shard, shard.epoch
                );
                reply_err(batches, WriterError::LeaseLost(reason));
            }
            Ok(()) => apply_and_reply(&shard, batches, seq0).await,
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

/// Applies the batches to tantivy in sequence order (off the async threads) and answers.
async fn apply_and_reply(shard: &Arc<ShardWriter>, batches: Vec<Batch>, seq0: u64) {
    let shard = shard.clone();
    let applied = tokio::task::spawn_blocking(move || {
        let mut seq = seq0;
        let mut all = Vec::with_capacity(batches.len());
        for b in batches {
            let mut results = Vec::with_capacity(b.ops.len());
            for op in b.ops {
                results.push(shard.apply(seq, op));
                seq += 1;
            }
            all.push((b.reply, results));
        }
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
    match shard.append_translog(unsynced).await {
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
