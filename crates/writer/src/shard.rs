//! One shard on its owning writer: a tantivy index in local scratch space whose committed
//! segments are uploaded to the bucket and published to the metastore on every refresh.
//! The local copy is disposable: `open` rebuilds it from the last published commit.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use floe_proto::layout::{ShardLayout, VERSION_FIELD};
use floe_proto::{SegmentFile, ShardCommit};
use floe_storage::Storage;
use tantivy::directory::{Directory, MmapDirectory};
use tantivy::index::SegmentComponent;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use tracing::{debug, info};

use crate::WriterError;

/// Where a shard lives and how much it may use to index.
#[derive(Clone, Debug)]
pub struct ShardSpec {
    pub index_uuid: String,
    pub shard: u32,
    /// `indexes/<uuid>/<shard>/segments` in the bucket.
    pub segments_prefix: String,
    pub scratch_dir: PathBuf,
    pub threads: usize,
    pub memory_budget: usize,
}

/// What a refresh produced, ready to publish.
pub struct PreparedCommit {
    pub commit: ShardCommit,
}

struct State {
    writer: IndexWriter,
    /// Documents written since the last commit, by `_id`: the version now live, if any.
    pending: HashMap<String, Option<u64>>,
    dirty: bool,
    next_seq_no: u64,
    min_ts: Option<i64>,
    max_ts: Option<i64>,
}

/// A shard's writable tantivy index.
pub struct ShardWriter {
    pub spec: ShardSpec,
    layout: ShardLayout,
    index: Index,
    reader: IndexReader,
    state: Mutex<State>,
    /// Files already in the bucket (segment files are immutable).
    uploaded: Mutex<HashSet<String>>,
    generation: Mutex<u64>,
    storage: Storage,
    /// Serializes refreshes of this shard (loop and explicit `_refresh`).
    pub refresh_lock: tokio::sync::Mutex<()>,
}

impl ShardWriter {
    /// Opens the shard from its last published commit (or empty), replacing any local copy.
    pub async fn open(
        spec: ShardSpec,
        storage: Storage,
        last: Option<&ShardCommit>,
    ) -> Result<ShardWriter, WriterError> {
        let dir = spec.scratch_dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let layout = ShardLayout::new();
        let mut uploaded = HashSet::new();
        let index = match last {
            Some(commit) => {
                for f in &commit.files {
                    let bytes = storage
                        .get(&format!("{}/{}", spec.segments_prefix, f.name))
                        .await?;
                    write_atomic(&dir.join(&f.name), &bytes)?;
                    uploaded.insert(f.name.clone());
                }
                write_atomic(&dir.join("meta.json"), commit.tantivy_meta.as_bytes())?;
                info!(
                    shard = spec.shard,
                    files = commit.files.len(),
                    docs = commit.num_docs,
                    "shard restored from bucket"
                );
                Index::open(MmapDirectory::open(&dir)?)?
            }
            None => Index::create(
                MmapDirectory::open(&dir)?,
                layout.schema.clone(),
                Default::default(),
            )?,
        };
        let writer: IndexWriter =
            index.writer_with_num_threads(spec.threads.max(1), spec.memory_budget)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(ShardWriter {
            layout,
            reader,
            state: Mutex::new(State {
                writer,
                pending: HashMap::new(),
                dirty: false,
                next_seq_no: last.map(|c| c.num_docs).unwrap_or(0),
                min_ts: last.and_then(|c| c.min_timestamp),
                max_ts: last.and_then(|c| c.max_timestamp),
            }),
            uploaded: Mutex::new(uploaded),
            generation: Mutex::new(last.map(|c| c.generation).unwrap_or(0)),
            index,
            storage,
            spec,
            refresh_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    fn id_term(&self, id: &str) -> Term {
        Term::from_field_text(self.layout.id, id)
    }

    /// The live version of `_id`, if it exists, counting uncommitted writes.
    fn version_locked(&self, state: &State, id: &str) -> Result<Option<u64>, WriterError> {
        if let Some(&version) = state.pending.get(id) {
            return Ok(version);
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

    /// Adds or replaces a document. Returns (previous version if it existed, new version,
    /// seq_no). `check_existing` is false for generated ids, which cannot exist yet.
    pub fn index(
        &self,
        id: &str,
        mut doc: TantivyDocument,
        timestamp: Option<i64>,
        check_existing: bool,
        create_only: bool,
    ) -> Result<(Option<u64>, u64, u64), WriterError> {
        let mut st = self.state.lock().expect("shard lock");
        let previous = if check_existing {
            self.version_locked(&st, id)?
        } else {
            None
        };
        if previous.is_some() && create_only {
            return Err(WriterError::VersionConflict(id.to_string()));
        }
        if check_existing {
            st.writer.delete_term(self.id_term(id));
        }
        let version = previous.map_or(1, |v| v + 1);
        doc.add_u64(self.layout.version, version);
        st.writer.add_document(doc)?;
        if check_existing {
            st.pending.insert(id.to_string(), Some(version));
        }
        if let Some(ts) = timestamp {
            st.min_ts = Some(st.min_ts.map_or(ts, |m| m.min(ts)));
            st.max_ts = Some(st.max_ts.map_or(ts, |m| m.max(ts)));
        }
        st.dirty = true;
        st.next_seq_no += 1;
        Ok((previous, version, st.next_seq_no - 1))
    }

    /// Deletes a document by `_id`. Returns (deleted version if it existed, seq_no).
    pub fn delete(&self, id: &str) -> Result<(Option<u64>, u64), WriterError> {
        let mut st = self.state.lock().expect("shard lock");
        let previous = self.version_locked(&st, id)?;
        if previous.is_some() {
            st.writer.delete_term(self.id_term(id));
            st.pending.insert(id.to_string(), None);
            st.dirty = true;
        }
        st.next_seq_no += 1;
        Ok((previous, st.next_seq_no - 1))
    }

    pub fn is_dirty(&self) -> bool {
        self.state.lock().expect("shard lock").dirty
    }

    /// Commits pending documents locally and uploads new segment files to the bucket.
    /// Returns `None` when there was nothing to commit. Blocking (tantivy commit): call
    /// from a blocking-capable context for the commit part.
    pub async fn prepare_commit(&self, epoch: u64) -> Result<Option<PreparedCommit>, WriterError> {
        let (min_ts, max_ts) = {
            let mut st = self.state.lock().expect("shard lock");
            if !st.dirty {
                return Ok(None);
            }
            tokio::task::block_in_place(|| st.writer.commit())?;
            st.dirty = false;
            st.pending.clear();
            (st.min_ts, st.max_ts)
        };
        self.reader.reload()?;
        // A background merge may replace segments (and delete their files) at any time:
        // snapshot meta.json and open every file it names; an open mmap survives deletion.
        let (meta_json, files) = {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.snapshot_files() {
                    Ok(x) => break x,
                    Err(e) if attempt < 5 => debug!("snapshot raced a merge, retrying: {e}"),
                    Err(e) => return Err(e),
                }
            }
        };
        let mut uploaded_now = Vec::new();
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
                    &format!("{}/{}", self.spec.segments_prefix, name),
                    bytes.clone(),
                )
                .await?;
            uploaded_now.push(name.clone());
        }
        self.uploaded
            .lock()
            .expect("uploaded lock")
            .extend(uploaded_now.iter().cloned());
        let num_docs = self.reader.searcher().num_docs();
        let generation = {
            let mut g = self.generation.lock().expect("generation lock");
            *g += 1;
            *g
        };
        debug!(
            shard = self.spec.shard,
            generation,
            uploaded = uploaded_now.len(),
            "segments uploaded"
        );
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
            },
        }))
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

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-download");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
