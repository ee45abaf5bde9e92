//! The writer service: owns the open shards of this process and the refresh loop.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use floe_metastore::{Metastore, MetastoreError, NodeSession};
use floe_proto::layout::ShardLayout;
use floe_proto::mapping::FieldMapping;
use floe_proto::ShardOwner;
use floe_proto::{IndexMeta, IndexSettings, Mappings};
use floe_storage::Storage;
use futures::StreamExt;
use serde_json::{Map, Value};
use tracing::{debug, info, instrument, warn};

use crate::bulk::{parse_bulk, BulkOp, OpKind};
use crate::document::DocBuilder;
use crate::grouplog::{self, GroupLog};
use crate::pool::WriterPool;
use crate::response::{BulkResponse, ItemOutcome};
use crate::shard::{
    ItemError, OpResult, PreparedOp, RecentWrite, ShardContext, ShardSpec, ShardWriter,
};
use crate::translog::{Segment, Translog};
use crate::WriterError;

/// Writer settings (the `[writer]` part of Floe's configuration).
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Local scratch space for shards being written; disposable.
    pub scratch_dir: PathBuf,
    /// tantivy indexing memory of the whole process, shared by the open shard writers.
    pub memory: usize,
    /// Shard writers open at once (each holds ~3 threads and a share of `memory`); more
    /// shards being written take turns.
    pub max_open_writers: usize,
    /// tantivy indexing threads of a single-shard index's writer (multi-shard: one).
    pub threads_per_shard: usize,
    /// How long the node session lasts without renewal; a dead writer's shards move to
    /// another writer after this.
    pub lease_ttl: Duration,
    /// Assumed bound on clock skew between nodes (lease safety margin).
    pub clock_skew_margin: Duration,
    /// Stable name of this node. A restart under the same name takes the shards over once
    /// the previous incarnation's session has expired.
    pub node_id: String,
    /// Shards not written for this long, with everything published, are closed (no
    /// threads, no buffers); the next write reopens them.
    pub idle_close: Duration,
    /// How long segment objects dropped from a shard's commit (merged away) stay in the
    /// bucket, so searches that started on the older commit can still fetch them.
    pub gc_grace: Duration,
}

/// The `refresh` parameter of write requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RefreshPolicy {
    #[default]
    False,
    True,
    WaitFor,
}

impl RefreshPolicy {
    pub fn parse(s: Option<&str>) -> Result<Self, WriterError> {
        match s {
            None | Some("false") => Ok(RefreshPolicy::False),
            Some("") | Some("true") => Ok(RefreshPolicy::True),
            Some("wait_for") => Ok(RefreshPolicy::WaitFor),
            Some(other) => Err(WriterError::BadRequest(format!(
                "Unknown value for refresh: [{other}]."
            ))),
        }
    }
}

type ShardKey = (String, u32);

/// The writer role of one process.
pub struct Writer {
    metastore: Arc<Metastore>,
    storage: Storage,
    config: WriterConfig,
    shards: tokio::sync::Mutex<HashMap<ShardKey, Arc<ShardWriter>>>,
    /// Shard opens in flight at once, process-wide.
    opening: tokio::sync::Semaphore,
    /// One opener per shard at a time (others wait for it, other shards open in parallel).
    openers: std::sync::Mutex<HashMap<ShardKey, Arc<tokio::sync::Mutex<()>>>>,
    /// This incarnation's node session and writer-wide translog, once registered
    /// ([`Writer::start_session`]); replaced by a new incarnation's if it is ever lost.
    session: std::sync::RwLock<Option<(Arc<NodeSession>, Arc<GroupLog>)>>,
    /// Earlier incarnations' translog objects, each read once for the many shards that need
    /// it (a takeover of a node's shards reads each object of its log once).
    earlier_logs: Arc<grouplog::SectionCache>,
    pool: Arc<WriterPool>,
}

/// Parses the body of `PUT /{index}` into settings and mappings.
pub fn parse_create_body(body: &Value) -> Result<(IndexSettings, Mappings), WriterError> {
    let mut settings = IndexSettings::default();
    if let Some(s) = body.get("settings") {
        let root = s;
        let s = s.get("index").unwrap_or(s);
        // `{"index": {"k": v}}`, `{"k": v}` and `{"index.k": v}` all name the same setting.
        let get = |k: &str| {
            s.get(k)
                .or_else(|| root.get(k))
                .or_else(|| root.get(format!("index.{k}")))
        };
        if let Some(n) = get("number_of_shards") {
            settings.number_of_shards = match n {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .filter(|n| *n >= 1 && *n <= 1024)
            .ok_or_else(|| {
                WriterError::BadRequest(format!(
                    "Failed to parse value [{n}] for setting [index.number_of_shards] must be >= 1"
                ))
            })? as u32;
        }
        if let Some(r) = get("refresh_interval") {
            let r = match r {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if r != "-1" && floe_proto::model::parse_time_value(&r).is_none() {
                return Err(WriterError::BadRequest(format!(
                    "failed to parse setting [index.refresh_interval] with value [{r}] as a time value: unit is missing or unrecognized"
                )));
            }
            settings.refresh_interval = r;
        }
        // `translog.durability` nested, or `translog.durability` / `index.translog.durability` flat.
        let translog = |k: &str| {
            s.get("translog")
                .and_then(|t| t.get(k))
                .or_else(|| get(&format!("translog.{k}")))
                .and_then(Value::as_str)
                .map(String::from)
        };
        if let Some(d) = translog("durability") {
            let d = d.to_ascii_lowercase();
            if d != "request" && d != "async" {
                return Err(WriterError::BadRequest(format!("unknown value for [index.translog.durability]: [{d}], must be [request] or [async]")));
            }
            settings.translog_durability = d;
        }
        if let Some(i) = translog("sync_interval") {
            if floe_proto::model::parse_time_value(&i).is_none() {
                return Err(WriterError::BadRequest(format!("failed to parse setting [index.translog.sync_interval] with value [{i}] as a time value")));
            }
            settings.translog_sync_interval = i;
        }
    }
    let mappings = match body.get("mappings") {
        Some(m) => Mappings::from_opensearch(m).map_err(|e| {
            WriterError::MapperParsing(format!("Failed to parse mapping [_doc]: {e}"))
        })?,
        None => Mappings::default(),
    };
    Ok((settings, mappings))
}

fn shard_for(key: &str, num_shards: u32) -> u32 {
    let hash = murmur3::murmur3_32(&mut std::io::Cursor::new(key.as_bytes()), 0).unwrap_or(0);
    hash % num_shards.max(1)
}

impl Writer {
    pub fn new(metastore: Arc<Metastore>, storage: Storage, config: WriterConfig) -> Writer {
        Writer {
            metastore,
            storage,
            pool: Arc::new(WriterPool::new(config.max_open_writers, config.memory)),
            config,
            shards: tokio::sync::Mutex::new(HashMap::new()),
            openers: Default::default(),
            opening: tokio::sync::Semaphore::new(
                4 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            session: std::sync::RwLock::new(None),
            earlier_logs: Default::default(),
        }
    }

    /// Registers this incarnation's node session, waiting for a previous incarnation of the
    /// same node id to expire first. Writes are refused (503) until it is done.
    pub async fn start_session(&self) -> Result<(), WriterError> {
        let session = NodeSession::register(
            self.storage.clone(),
            &self.config.node_id,
            self.config.lease_ttl,
            self.config.clock_skew_margin,
        )
        .await?;
        let log = GroupLog::start(self.storage.clone(), session.owner());
        *self.session.write().expect("session lock") = Some((Arc::new(session), log));
        Ok(())
    }

    fn current_session(&self) -> Option<Arc<NodeSession>> {
        self.current().map(|(s, _)| s)
    }

    fn current(&self) -> Option<(Arc<NodeSession>, Arc<GroupLog>)> {
        self.session.read().expect("session lock").clone()
    }

    /// `shard`'s sections in an earlier incarnation's writer-wide log, listed now.
    async fn earlier_sections(
        &self,
        owner: &ShardOwner,
        section: &str,
    ) -> Result<Vec<Segment>, WriterError> {
        self.earlier_logs
            .sections(&self.storage, owner, section)
            .await
    }

    /// The node session and its translog, waiting briefly for them at start-up.
    async fn session(&self) -> Result<(Arc<NodeSession>, Arc<GroupLog>), WriterError> {
        for _ in 0..40 {
            if let Some((s, log)) = self.current() {
                if !s.lost() {
                    return Ok((s, log));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(WriterError::Unavailable(format!(
            "node [{}] is waiting for its previous incarnation's session to expire",
            self.config.node_id
        )))
    }

    /// Clean shutdown: publishes every shard, then ends the node session so a restarted
    /// process takes the shards over at once. Writes arriving meanwhile are refused (503).
    pub async fn shutdown(&self) {
        let open: Vec<(ShardKey, Arc<ShardWriter>)> = {
            let shards = self.shards.lock().await;
            shards.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let names: Vec<String> = self
            .metastore
            .list_indexes()
            .into_iter()
            .filter(|m| open.iter().any(|((u, _), _)| *u == m.uuid))
            .map(|m| m.name)
            .collect();
        if let Err(e) = self.refresh(&names).await {
            warn!("publishing before shutdown failed; the next owner replays the translog: {e}");
            return;
        }
        for (_, w) in &open {
            w.fence();
        }
        if let Some(session) = self.current_session() {
            match session.release().await {
                Ok(()) => info!("node session released"),
                Err(e) => warn!("could not release the node session: {e}"),
            }
        }
    }

    /// Shard writers open now, and tantivy writers among them (threads held).
    pub async fn open_counts(&self) -> (usize, usize) {
        (self.shards.lock().await.len(), self.pool.open_count())
    }

    /// Translog operations that failed to re-apply in the open shards (kept, not dropped).
    pub async fn replay_failures(&self) -> u64 {
        self.shards
            .lock()
            .await
            .values()
            .map(|s| s.replay_failures())
            .sum()
    }

    /// `PUT /{index}`.
    #[instrument(skip(self, body))]
    pub async fn create_index(&self, name: &str, body: &Value) -> Result<IndexMeta, WriterError> {
        let (settings, mappings) = parse_create_body(body)?;
        Ok(self
            .metastore
            .create_index(name, settings, mappings)
            .await?)
    }

    /// The index, created with defaults when missing (OpenSearch's `action.auto_create_index`).
    async fn index_or_create(&self, name: &str) -> Result<IndexMeta, MetastoreError> {
        if let Some(meta) = self.metastore.get_index(name) {
            return Ok(meta);
        }
        match self
            .metastore
            .create_index(name, IndexSettings::default(), Mappings::default())
            .await
        {
            Ok(meta) => Ok(meta),
            Err(MetastoreError::IndexAlreadyExists(_)) => self
                .metastore
                .get_index(name)
                .ok_or(MetastoreError::IndexNotFound(name.into())),
            Err(e) => Err(e),
        }
    }

    async fn shard(&self, meta: &IndexMeta, shard: u32) -> Result<Arc<ShardWriter>, WriterError> {
        let key = (meta.uuid.clone(), shard);
        if let Some(s) = self.open_shard(&key).await {
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
        if let Some(s) = self.open_shard(&key).await {
            return Ok(s);
        }
        // A few opens at a time (each is several bucket and disk operations on blocking
        // threads): a request touching thousands of shards does not need thousands of threads.
        let _turn = self
            .opening
            .acquire()
            .await
            .expect("semaphore never closed");
        let (session, group_log) = self.session().await?;
        let threads = if meta.settings.number_of_shards == 1 {
            self.config.threads_per_shard
        } else {
            1
        };
        let spec = ShardSpec {
            index_uuid: meta.uuid.clone(),
            shard,
            prefix: format!("{}/{}", meta.data_prefix(), shard),
            scratch_dir: self
                .config
                .scratch_dir
                .join(&meta.uuid)
                .join(shard.to_string()),
            threads,
        };
        // Own the shard first, then load it from the state as of the grant: anything an older
        // owner publishes later is refused, anything it published before is seen here.
        let grant = self
            .metastore
            .acquire_shard(&meta.name, &meta.uuid, shard, session.owner())
            .await?;
        let checkpoint = grant
            .meta
            .shards
            .get(&shard)
            .map_or(0, |c| c.translog_checkpoint);
        let section = grouplog::section_of(&meta.uuid, shard);
        let mut earlier = Vec::new();
        for owner in &grant.earlier_logs {
            let found = self.earlier_sections(owner, &section).await?;
            earlier.extend(found.into_iter().filter(|s| s.last >= checkpoint));
        }
        let ctx = ShardContext {
            storage: self.storage.clone(),
            metastore: self.metastore.clone(),
            session,
            group_log,
            sections: self.earlier_logs.clone(),
            pool: self.pool.clone(),
        };
        let writer = ShardWriter::open(
            spec,
            ctx,
            &grant.meta,
            grant.epoch,
            grant.taken_over,
            earlier,
        )
        .await?;
        writer.touch();
        self.shards.lock().await.insert(key, writer.clone());
        Ok(writer)
    }

    async fn open_shard(&self, key: &ShardKey) -> Option<Arc<ShardWriter>> {
        let shard = self
            .shards
            .lock()
            .await
            .get(key)
            .filter(|s| !s.is_fenced())
            .cloned()?;
        // In use from now: the idle check must not close it under this request.
        shard.touch();
        Some(shard)
    }

    /// `POST /_bulk` and `POST /{index}/_bulk`. Returns the OpenSearch response body.
    #[instrument(skip(self, body), fields(bytes = body.len()))]
    pub async fn bulk(
        &self,
        default_index: Option<&str>,
        body: Bytes,
        refresh: RefreshPolicy,
    ) -> Result<BulkResponse, WriterError> {
        let started = Instant::now();
        let ops = parse_bulk(&body)?;
        let outcomes = self.apply(default_index, ops).await?;
        let touched: Vec<String> = {
            let mut v: Vec<String> = outcomes
                .iter()
                .filter(|o| o.result.is_ok())
                .map(|o| o.index.clone())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        if refresh != RefreshPolicy::False {
            self.refresh(&touched).await?;
        }
        let errors = outcomes.iter().any(|o| o.result.is_err());
        Ok(BulkResponse {
            took: started.elapsed().as_millis() as u64,
            errors,
            items: outcomes,
        })
    }

    /// A single-document write (`PUT /{index}/_doc/{id}`, `POST /{index}/_doc`,
    /// `PUT /{index}/_create/{id}`, `DELETE /{index}/_doc/{id}`). Returns (status, body).
    pub async fn single(
        &self,
        op: BulkOp,
        refresh: RefreshPolicy,
    ) -> Result<(u16, Value), WriterError> {
        let index = op.index.clone().unwrap_or_default();
        let mut outcomes = self.apply(None, vec![op]).await?;
        let outcome = outcomes
            .pop()
            .ok_or_else(|| WriterError::Internal("no outcome".into()))?;
        if refresh != RefreshPolicy::False && outcome.result.is_ok() {
            self.refresh(std::slice::from_ref(&index)).await?;
        }
        match outcome.result {
            Ok((_, _, _, status)) => {
                let mut body = serde_json::to_value(outcome.body())
                    .map_err(|e| WriterError::Internal(e.to_string()))?;
                if let Some(o) = body.as_object_mut() {
                    o.remove("status");
                }
                Ok((status, body))
            }
            Err((400, "mapper_parsing_exception", reason)) => {
                Err(WriterError::MapperParsing(reason))
            }
            Err((409, _, _)) => Err(WriterError::VersionConflict(outcome.id)),
            Err((503, _, reason)) => Err(WriterError::Unavailable(reason)),
            Err((_, _, reason)) => Err(WriterError::BadRequest(reason)),
        }
    }

    /// Applies operations, grouped by index; per-item failures are outcomes, not errors.
    async fn apply(
        &self,
        default_index: Option<&str>,
        ops: Vec<BulkOp>,
    ) -> Result<Vec<ItemOutcome>, WriterError> {
        let mut outcomes: Vec<Option<ItemOutcome>> = (0..ops.len()).map(|_| None).collect();
        // Group op positions by index name.
        let mut by_index: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            match op.index.as_deref().or(default_index) {
                Some(name) => by_index.entry(name.to_string()).or_default().push(i),
                None => {
                    outcomes[i] = Some(ItemOutcome::failed(
                        op.kind,
                        "",
                        op.id.as_deref().unwrap_or(""),
                        400,
                        "action_request_validation_exception",
                        "Validation Failed: 1: index is missing;".into(),
                    ))
                }
            }
        }
        let ops = Arc::new(ops);
        // Indexes are independent: a batch spanning many of them handles several at once.
        let per_index: Vec<(Vec<usize>, Vec<ItemOutcome>)> =
            futures::stream::iter(by_index.into_iter().map(|(name, positions)| {
                let ops = ops.clone();
                async move {
                    let results = self.apply_to_index(&name, ops, positions.clone()).await;
                    (positions, results)
                }
            }))
            .buffer_unordered(8)
            .collect()
            .await;
        for (positions, results) in per_index {
            for (pos, outcome) in positions.into_iter().zip(results) {
                outcomes[pos] = Some(outcome);
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every op has an outcome"))
            .collect())
    }

    async fn apply_to_index(
        &self,
        name: &str,
        ops: Arc<Vec<BulkOp>>,
        positions: Vec<usize>,
    ) -> Vec<ItemOutcome> {
        let fail_all = |status: u16, typ: &'static str, reason: String| {
            positions
                .iter()
                .map(|&i| {
                    ItemOutcome::failed(
                        ops[i].kind,
                        name,
                        ops[i].id.as_deref().unwrap_or(""),
                        status,
                        typ,
                        reason.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let fail_with = |e: WriterError| {
            let (status, typ) = e.item_status();
            fail_all(status, typ, e.to_string())
        };
        let mut meta = match self.index_or_create(name).await {
            Ok(m) => m,
            Err(e) => return fail_with(e.into()),
        };
        // Parse documents and discover new fields (CPU work, off the async threads). The
        // first document to show a field decides its dynamic type; a later document that
        // does not fit fails alone when it is built.
        type Parsed = Vec<Option<Result<Map<String, Value>, String>>>;
        let discovered = {
            let ops = ops.clone();
            let positions = positions.clone();
            let mappings = meta.mappings.clone();
            tokio::task::spawn_blocking(move || {
                let parsed: Parsed = positions
                    .iter()
                    .map(|&i| {
                        ops[i].source.as_ref().map(|src| {
                            match serde_json::from_slice::<Value>(src) {
                                Ok(Value::Object(m)) => Ok(m),
                                Ok(_) => Err("failed to parse, document is empty or not an object"
                                    .to_string()),
                                Err(e) => Err(format!("failed to parse: {e}")),
                            }
                        })
                    })
                    .collect();
                let mut new_fields: BTreeMap<String, FieldMapping> = BTreeMap::new();
                let mut strict_errors: HashMap<usize, String> = HashMap::new();
                for (j, doc) in parsed.iter().enumerate() {
                    if let Some(Ok(doc)) = doc {
                        match mappings.discover(doc) {
                            Ok(found) => {
                                for (path, fm) in found {
                                    new_fields.entry(path).or_insert(fm);
                                }
                            }
                            Err(e) => {
                                strict_errors.insert(j, e.to_string());
                            }
                        }
                    }
                }
                (parsed, new_fields, strict_errors)
            })
            .await
        };
        let Ok((parsed, new_fields, strict_errors)) = discovered else {
            return fail_all(500, "exception", "document parsing panicked".into());
        };
        if !new_fields.is_empty() {
            match self.metastore.merge_mappings(name, &new_fields).await {
                Ok(m) => meta = m,
                Err(e) => return fail_with(e.into()),
            }
        }
        // Route, then open the shards this batch needs (in parallel: a batch may touch
        // thousands of shards).
        let mut routes = Vec::with_capacity(positions.len());
        let mut generated_ids = Vec::with_capacity(positions.len());
        for &i in &positions {
            let op = &ops[i];
            let id = op.id.clone().unwrap_or_else(crate::ids::generate_id);
            generated_ids.push(op.id.is_none());
            let shard = shard_for(
                op.routing.as_deref().unwrap_or(&id),
                meta.settings.number_of_shards,
            );
            routes.push((id, shard));
        }
        let mut needed: Vec<u32> = routes.iter().map(|(_, s)| *s).collect();
        needed.sort_unstable();
        needed.dedup();
        let opened: Vec<Result<(u32, Arc<ShardWriter>), WriterError>> =
            futures::stream::iter(needed.into_iter().map(|shard| {
                let meta = &meta;
                async move { self.shard(meta, shard).await.map(|w| (shard, w)) }
            }))
            .buffer_unordered(32)
            .collect()
            .await;
        let mut shard_writers: HashMap<u32, Arc<ShardWriter>> = HashMap::new();
        for r in opened {
            match r {
                Ok((shard, w)) => {
                    shard_writers.insert(shard, w);
                }
                Err(err) => return fail_with(err),
            }
        }
        // Build documents (CPU work, off the async threads); failures are item outcomes.
        let name = name.to_string();
        let built = {
            let ops = ops.clone();
            let positions = positions.clone();
            tokio::task::spawn_blocking(move || {
                let layout = ShardLayout::new();
                let builder = DocBuilder::new(&layout, &meta.mappings);
                let mut out: Vec<Result<PreparedOp, ItemError>> =
                    Vec::with_capacity(positions.len());
                for (j, &i) in positions.iter().enumerate() {
                    let op = &ops[i];
                    let id = routes[j].0.clone();
                    let prepared = match (op.kind, &parsed[j]) {
                        (OpKind::Delete, _) => Ok(PreparedOp {
                            kind: op.kind,
                            id,
                            source: None,
                            doc: None,
                            check_existing: true,
                        }),
                        (_, Some(Err(reason))) => {
                            Err((400, "mapper_parsing_exception", reason.clone()))
                        }
                        (_, Some(Ok(_))) if strict_errors.contains_key(&j) => Err((
                            400,
                            "strict_dynamic_mapping_exception",
                            strict_errors[&j].clone(),
                        )),
                        (kind, Some(Ok(doc))) => {
                            let raw = op.source.clone().unwrap_or_default();
                            match builder.build(&id, &raw, doc) {
                                Err(e) => Err((400, "mapper_parsing_exception", e.0)),
                                Ok(built) => Ok(PreparedOp {
                                    kind,
                                    id,
                                    source: Some(raw),
                                    doc: Some(built),
                                    check_existing: !generated_ids[j],
                                }),
                            }
                        }
                        (_, None) => Err((
                            400,
                            "action_request_validation_exception",
                            "Validation Failed: 1: source is missing;".into(),
                        )),
                    };
                    out.push(prepared);
                }
                (out, routes)
            })
            .await
        };
        let Ok((built, routes)) = built else {
            return fail_all(500, "exception", "document building panicked".into());
        };
        // Hand each shard its operations; they are durable (translog) when the shard answers.
        let mut results: Vec<Option<OpResult>> = (0..positions.len()).map(|_| None).collect();
        let mut per_shard: BTreeMap<u32, (Vec<usize>, Vec<PreparedOp>)> = BTreeMap::new();
        for (j, prepared) in built.into_iter().enumerate() {
            match prepared {
                Ok(op) => {
                    let entry = per_shard.entry(routes[j].1).or_default();
                    entry.0.push(j);
                    entry.1.push(op);
                }
                Err(e) => results[j] = Some(Err(e)),
            }
        }
        let writes = per_shard.into_iter().map(|(shard, (slots, ops))| {
            let writer = shard_writers[&shard].clone();
            async move { (slots, writer.write(ops).await) }
        });
        for (slots, outcome) in futures::future::join_all(writes).await {
            match outcome {
                Ok(res) => {
                    for (slot, r) in slots.into_iter().zip(res) {
                        results[slot] = Some(r);
                    }
                }
                Err(e) => {
                    let (status, typ) = e.item_status();
                    for slot in slots {
                        results[slot] = Some(Err((status, typ, e.to_string())));
                    }
                }
            }
        }
        positions
            .iter()
            .zip(results)
            .enumerate()
            .map(|(j, (&i, r))| ItemOutcome {
                kind: ops[i].kind,
                index: name.clone(),
                id: routes[j].0.clone(),
                primary_term: shard_writers[&routes[j].1].epoch(),
                result: r.unwrap_or(Err((500, "exception", "no result".into()))),
            })
            .collect()
    }

    /// `POST /{index}/_refresh`: commits, uploads and publishes every dirty shard of the
    /// named indexes, so what was written before is searchable when this returns.
    #[instrument(skip(self))]
    pub async fn refresh(&self, index_names: &[String]) -> Result<(), WriterError> {
        let uuids: Vec<(String, String)> = index_names
            .iter()
            .filter_map(|n| self.metastore.get_index(n).map(|m| (m.name, m.uuid)))
            .collect();
        // Shards of these indexes still holding a gone writer's operations are recovered
        // first, so what was acknowledged before a crash is searchable when this returns.
        // Until this node's session is registered (a previous incarnation may still be
        // live), they cannot be: the refresh answers 503 and the client retries.
        self.session().await?;
        self.recover_where(|u| uuids.iter().any(|(_, x)| x == u))
            .await?;
        // Shards being opened right now (replaying) are waited for.
        let opening: Vec<Arc<tokio::sync::Mutex<()>>> = self
            .openers
            .lock()
            .expect("openers lock")
            .iter()
            .filter(|((u, _), _)| uuids.iter().any(|(_, x)| x == u))
            .map(|(_, lock)| lock.clone())
            .collect();
        for lock in opening {
            drop(lock.lock().await);
        }
        let targets: Vec<(String, u32, Arc<ShardWriter>)> = {
            let shards = self.shards.lock().await;
            shards
                .iter()
                .filter_map(|((uuid, shard), w)| {
                    uuids
                        .iter()
                        .find(|(_, u)| u == uuid)
                        .map(|(n, _)| (n.clone(), *shard, w.clone()))
                })
                .collect()
        };
        let results: Vec<Result<Option<(String, u32)>, WriterError>> =
            futures::stream::iter(targets.into_iter().map(|(name, shard, writer)| async move {
                self.refresh_shard(&name, shard, &writer)
                    .await
                    .map(|published| published.then(|| (writer.spec.index_uuid.clone(), shard)))
            }))
            .buffer_unordered(8)
            .collect()
            .await;
        let mut published = Vec::new();
        let mut first_error = None;
        for r in results {
            match r {
                Ok(Some(p)) => published.push(p),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.metastore.announce_commits(published).await;
        first_error.map_or(Ok(()), Err)
    }

    /// Commits, uploads and publishes one shard. Returns whether a commit was published. A
    /// publish refused because the shard moved to a newer owner fences and closes it here.
    async fn refresh_shard(
        &self,
        name: &str,
        shard: u32,
        writer: &Arc<ShardWriter>,
    ) -> Result<bool, WriterError> {
        let _guard = writer.refresh_lock.lock().await;
        let Some(prepared) = writer
            .prepare_commit()
            .await
            .inspect_err(|_| writer.mark_dirty())?
        else {
            return Ok(false);
        };
        let docs = prepared.commit.num_docs;
        let generation = prepared.commit.generation;
        let checkpoint = prepared.commit.translog_checkpoint;
        let files = prepared.commit.files.clone();
        let (session, _) = self.session().await?;
        if let Err(e) = self
            .metastore
            .publish_commit(
                name,
                &writer.spec.index_uuid,
                shard,
                session.owner(),
                prepared.commit,
            )
            .await
        {
            writer.mark_dirty();
            if matches!(e, MetastoreError::StaleCommit { .. }) {
                warn!(
                    index = name,
                    shard, "shard moved to a newer owner: closing it here"
                );
                writer.fence();
                self.forget_shard(&(writer.spec.index_uuid.clone(), shard), writer)
                    .await;
            }
            return Err(e.into());
        }
        writer.published(&files, checkpoint);
        writer.truncate_translog(checkpoint).await;
        debug!(
            index = name,
            shard, generation, docs, checkpoint, "commit published"
        );
        Ok(true)
    }

    /// Drops a shard from this writer (if it is still the one registered under `key`).
    async fn forget_shard(&self, key: &ShardKey, writer: &Arc<ShardWriter>) {
        let mut shards = self.shards.lock().await;
        if shards.get(key).is_some_and(|w| Arc::ptr_eq(w, writer)) {
            shards.remove(key);
        }
        drop(shards);
        writer.fence();
        writer.close_writer();
    }

    /// Closes a shard that is idle, unless a request holds it: checked under the map lock,
    /// through which every request obtains its shards, so none can pick it up meanwhile.
    /// `holders` is how many references the caller itself holds. Returns whether it closed.
    async fn close_if_unused(
        &self,
        key: &ShardKey,
        writer: &Arc<ShardWriter>,
        holders: usize,
    ) -> bool {
        let mut shards = self.shards.lock().await;
        let registered = shards.get(key).is_some_and(|w| Arc::ptr_eq(w, writer));
        // The map's reference plus the caller's.
        if !registered || Arc::strong_count(writer) > holders + 1 || !writer.is_quiet() {
            return false;
        }
        shards.remove(key);
        drop(shards);
        writer.fence();
        writer.close_writer();
        true
    }

    /// `POST /{index}/_forcemerge`: merges each shard's segments into at most `max_segments`
    /// and publishes the result (fewer segments: faster searches, smaller bucket). Returns shards merged.
    #[instrument(skip(self))]
    pub async fn force_merge(
        &self,
        index_names: &[String],
        max_segments: usize,
    ) -> Result<usize, WriterError> {
        let mut merged = 0;
        for name in index_names {
            let Some(meta) = self.metastore.get_index(name) else {
                continue;
            };
            for shard in 0..meta.settings.number_of_shards {
                if !meta.shards.contains_key(&shard)
                    && !self
                        .shards
                        .lock()
                        .await
                        .contains_key(&(meta.uuid.clone(), shard))
                {
                    continue; // never written
                }
                let writer = self.shard(&meta, shard).await?;
                // Commit what is pending first, so the merge covers every document.
                self.refresh_shard(name, shard, &writer).await?;
                let w = writer.clone();
                tokio::task::spawn_blocking(move || w.merge_all(max_segments))
                    .await
                    .map_err(|e| WriterError::Internal(e.to_string()))??;
                if self.refresh_shard(name, shard, &writer).await? {
                    self.metastore
                        .announce_commits(vec![(meta.uuid.clone(), shard)])
                        .await;
                }
                merged += 1;
            }
        }
        Ok(merged)
    }

    /// Opens the shards whose translog may hold operations above their last commit and
    /// whose owner is gone: this node's previous incarnations, or nodes whose session
    /// lapsed. Replaying them makes acknowledged writes of a crashed writer searchable
    /// without new traffic. Returns how many were opened.
    pub async fn recover(&self) -> Result<usize, WriterError> {
        self.recover_where(|_| true).await
    }

    /// [`Writer::recover`] for the indexes (by uuid) `include` selects.
    async fn recover_where(&self, include: impl Fn(&str) -> bool) -> Result<usize, WriterError> {
        let (session, _) = self.session().await?;
        let me = session.owner().clone();
        let mut candidates = Vec::new();
        let mut alive: HashMap<ShardOwner, bool> = HashMap::new();
        for (uuid, shard, record) in self.metastore.shard_records() {
            if !include(&uuid) {
                continue;
            }
            let Some(owner) = record.owner else { continue };
            if owner == me {
                continue;
            }
            let gone = if owner.node_id == me.node_id {
                true // our node id, an older incarnation: we hold its session now
            } else {
                match alive.get(&owner) {
                    Some(a) => !a,
                    None => {
                        let a = self.metastore.owner_alive(&owner).await?;
                        alive.insert(owner.clone(), a);
                        !a
                    }
                }
            };
            if gone {
                let mut logs = record.log_owners.clone();
                if !logs.contains(&owner) {
                    logs.push(owner);
                }
                logs.retain(|o| *o != me);
                candidates.push((uuid, shard, logs));
            }
        }
        let indexes = self.metastore.list_indexes();
        let opened: Vec<Result<bool, WriterError>> =
            futures::stream::iter(candidates.into_iter().map(|(uuid, shard, logs)| {
                let meta = indexes.iter().find(|m| m.uuid == uuid).cloned();
                async move {
                    let Some(meta) = meta else { return Ok(false) };
                    if !self.has_unpublished(&meta, shard, &logs).await? {
                        return Ok(false);
                    }
                    match self.shard(&meta, shard).await {
                        Ok(_) => Ok(true),
                        // Taken by another live writer meanwhile: it replays.
                        Err(WriterError::Metastore(MetastoreError::LeaseHeld { .. })) => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            }))
            .buffer_unordered(16)
            .collect()
            .await;
        let mut n = 0;
        for r in opened {
            if r? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether a shard has translog operations above its checkpoint: in its own translog
    /// prefix, or in a section of one of `logs` (incarnations' writer-wide logs).
    async fn has_unpublished(
        &self,
        meta: &IndexMeta,
        shard: u32,
        logs: &[ShardOwner],
    ) -> Result<bool, WriterError> {
        let checkpoint = meta.shards.get(&shard).map_or(0, |c| c.translog_checkpoint);
        let section = grouplog::section_of(&meta.uuid, shard);
        for owner in logs {
            let found = self.earlier_sections(owner, &section).await?;
            if found.iter().any(|s| s.last >= checkpoint) {
                return Ok(true);
            }
        }
        let prefix = format!("{}/{}/translog", meta.data_prefix(), shard);
        let own = Translog::replayable(
            Translog::new(self.storage.clone(), prefix, 0)
                .list()
                .await?,
        );
        Ok(own.iter().any(|s| !s.fence && s.last >= checkpoint))
    }

    /// Deletes objects of gone incarnations' writer-wide logs once every section in them is
    /// below its shard's published checkpoint. Returns how many were deleted.
    pub async fn collect_dead_logs(&self) -> Result<usize, WriterError> {
        let me = self.current_session().map(|s| s.owner().clone());
        let mut owners: Vec<ShardOwner> = Vec::new();
        for (key, _) in self.storage.list("nodes").await? {
            let parts: Vec<&str> = key.split('/').collect();
            if let ["nodes", node, inc, "translog", _] = parts[..] {
                let owner = ShardOwner {
                    node_id: node.to_string(),
                    incarnation: inc.to_string(),
                };
                if Some(&owner) != me.as_ref() && !owners.contains(&owner) {
                    owners.push(owner);
                }
            }
        }
        let mut dead = Vec::new();
        for owner in owners {
            if !self.metastore.owner_alive(&owner).await? {
                dead.push(owner);
            }
        }
        if dead.is_empty() {
            return Ok(0);
        }
        let checkpoints: HashMap<String, u64> = self
            .metastore
            .list_indexes()
            .iter()
            .flat_map(|m| {
                (0..m.settings.number_of_shards).map(move |s| {
                    (
                        grouplog::section_of(&m.uuid, s),
                        m.shards.get(&s).map_or(0, |c| c.translog_checkpoint),
                    )
                })
            })
            .collect();
        // A section of an index this process does not know is kept (it may be new).
        grouplog::collect_dead(&self.storage, &dead, |section| {
            Some(checkpoints.get(section).copied().unwrap_or(0))
        })
        .await
    }

    /// Realtime `GET _doc`: an acknowledged write of `id` that no published commit holds yet.
    /// `None` if not known here (then the searcher's view is current).
    pub async fn realtime_get(
        &self,
        index: &str,
        id: &str,
        routing: Option<&str>,
    ) -> Option<RecentWrite> {
        let meta = self.metastore.get_index(index)?;
        let shard = shard_for(routing.unwrap_or(id), meta.settings.number_of_shards);
        let writer = self
            .shards
            .lock()
            .await
            .get(&(meta.uuid.clone(), shard))
            .cloned()?;
        writer.realtime_get(id)
    }

    /// Forgets the shards of a deleted index and removes their scratch space.
    pub async fn delete_index(&self, name: &str) -> Result<IndexMeta, WriterError> {
        let meta = self.metastore.delete_index(name).await?;
        let removed: Vec<Arc<ShardWriter>> = {
            let mut shards = self.shards.lock().await;
            let keys: Vec<ShardKey> = shards
                .keys()
                .filter(|(u, _)| *u == meta.uuid)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| shards.remove(k)).collect()
        };
        for w in &removed {
            w.fence();
            w.close_writer();
        }
        drop(removed);
        let dir = self.config.scratch_dir.join(&meta.uuid);
        if dir.exists() {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(meta)
    }

    /// Renews the node session (one conditional write for all shards) every third of its
    /// TTL, and every TTL takes over shards whose owner's session lapsed. If the session is
    /// lost (lapsed before a renewal got through, or taken over), every shard is fenced and
    /// closed, and a new incarnation registers and recovers them.
    pub async fn run_lease_loop(self: Arc<Self>) {
        let ttl = self.config.lease_ttl;
        let mut tick = tokio::time::interval(ttl / 3);
        let mut rounds = 0u64;
        loop {
            tick.tick().await;
            let Some(session) = self.current_session() else {
                continue;
            };
            match session.renew().await {
                Ok(()) => {}
                Err(MetastoreError::SessionLost(reason)) => {
                    let open: Vec<(ShardKey, Arc<ShardWriter>)> =
                        self.shards.lock().await.drain().collect();
                    warn!(shards = open.len(), "node session lost ({reason}): fencing every shard, starting a new incarnation");
                    for (_, w) in open {
                        w.fence();
                        w.close_writer();
                    }
                    if let Err(e) = self.start_session().await {
                        warn!("could not register a new node session: {e}");
                        continue;
                    }
                    rounds = 2; // recover at once below
                }
                // Unreachable bucket: shards stop acknowledging once the session runs out
                // locally; if a renewal gets through later, the session is over (above).
                Err(e) => warn!("node session renewal failed: {e}"),
            }
            rounds += 1;
            if rounds.is_multiple_of(3) {
                match self.recover().await {
                    Ok(0) => {}
                    Ok(n) => info!(shards = n, "took over shards of a writer that is gone"),
                    Err(e) => warn!("taking over orphaned shards failed: {e}"),
                }
            }
            if rounds.is_multiple_of(18) {
                match self.collect_dead_logs().await {
                    Ok(0) => {}
                    Ok(n) => info!(
                        objects = n,
                        "deleted covered translog objects of gone writers"
                    ),
                    Err(e) => warn!("collecting gone writers' translogs failed: {e}"),
                }
            }
        }
    }

    /// Refreshes each shard whose index `refresh_interval` has elapsed since its last
    /// refresh, collects garbage, and closes shards idle for `idle_close`. Runs until the
    /// process ends.
    pub async fn run_refresh_loop(self: Arc<Self>) {
        let mut last: HashMap<ShardKey, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let open: Vec<(ShardKey, Arc<ShardWriter>)> = {
                let shards = self.shards.lock().await;
                shards.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
            };
            let indexes: HashMap<String, IndexMeta> = self
                .metastore
                .list_indexes()
                .into_iter()
                .map(|m| (m.uuid.clone(), m))
                .collect();
            let mut due = Vec::new();
            for (key, writer) in open {
                let Some(meta) = indexes.get(&key.0) else {
                    continue;
                };
                writer.collect_garbage(self.config.gc_grace).await;
                let idle_ms = self.pool.now().saturating_sub(writer.last_used());
                if idle_ms >= self.config.idle_close.as_millis() as u64
                    && writer.is_quiet()
                    && self.close_if_unused(&key, &writer, 1).await
                {
                    last.remove(&key);
                    continue;
                }
                let Some(interval) = meta.settings.refresh() else {
                    continue;
                };
                let is_due = last.get(&key).is_none_or(|t| t.elapsed() >= interval);
                if is_due && writer.is_dirty() {
                    last.insert(key.clone(), Instant::now());
                    due.push((meta.name.clone(), key.1, writer));
                }
            }
            // Refresh due shards a few at a time; announce the round's commits at once.
            let this = &self;
            let published: Vec<Option<(String, u32)>> =
                futures::stream::iter(due.into_iter().map(|(name, shard, writer)| async move {
                    match this.refresh_shard(&name, shard, &writer).await {
                        Ok(true) => Some((writer.spec.index_uuid.clone(), shard)),
                        Ok(false) => None,
                        Err(e) => {
                            warn!(index = %name, shard, "refresh failed, will retry: {e}");
                            None
                        }
                    }
                }))
                .buffer_unordered(8)
                .collect()
                .await;
            self.metastore
                .announce_commits(published.into_iter().flatten().collect())
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A writer configuration for tests: small memory, one thread, no GC grace.
    fn test_config(
        scratch_dir: std::path::PathBuf,
        lease_ttl: Duration,
        node_id: impl Into<String>,
    ) -> WriterConfig {
        WriterConfig {
            scratch_dir,
            memory: 40_000_000,
            max_open_writers: 2,
            threads_per_shard: 1,
            lease_ttl,
            clock_skew_margin: Duration::from_millis(100),
            node_id: node_id.into(),
            idle_close: Duration::from_secs(60),
            gc_grace: Duration::ZERO,
        }
    }

    async fn metastore(storage: &Storage) -> Arc<Metastore> {
        Arc::new(
            Metastore::open_with(
                storage.clone(),
                floe_metastore::MetastoreOptions {
                    clock_skew_margin: Duration::from_millis(100),
                },
            )
            .await
            .unwrap(),
        )
    }

    async fn started(ms: Arc<Metastore>, storage: &Storage, config: WriterConfig) -> Writer {
        let w = Writer::new(ms, storage.clone(), config);
        w.start_session().await.unwrap();
        w
    }

    #[test]
    fn routing_is_stable_and_spread() {
        let mut counts = [0u32; 3];
        for i in 0..300 {
            counts[shard_for(&i.to_string(), 3) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
        assert_eq!(shard_for("abc", 5), shard_for("abc", 5));
    }

    #[test]
    fn create_body() {
        let (s, m) = parse_create_body(
            &json!({"settings": {"index": {"number_of_shards": "3", "refresh_interval": "500ms"}},
            "mappings": {"properties": {"n": {"type": "long"}}}}),
        )
        .unwrap();
        assert_eq!(s.number_of_shards, 3);
        assert_eq!(s.refresh(), Some(Duration::from_millis(500)));
        assert!(m.get("n").is_some());
        assert!(parse_create_body(&json!({"settings": {"number_of_shards": 0}})).is_err());
        assert!(parse_create_body(&json!({"settings": {"refresh_interval": "abc"}})).is_err());
        let (s, _) = parse_create_body(&json!({"settings": {"index.translog.durability": "async", "index": {"translog": {"sync_interval": "200ms"}}}})).unwrap();
        assert_eq!(
            (
                s.translog_durability.as_str(),
                s.translog_sync_interval.as_str()
            ),
            ("async", "200ms")
        );
        assert!(
            parse_create_body(&json!({"settings": {"translog": {"durability": "never"}}})).is_err()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_refresh_publishes_segments_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().join("bucket")).unwrap();
        let ms = metastore(&storage).await;
        // Short sessions: the second writer (same node id) waits for the first to expire.
        let config = test_config(
            dir.path().join("scratch"),
            Duration::from_millis(600),
            "test-node",
        );
        let w = started(ms.clone(), &storage, config.clone()).await;
        let body = Bytes::from_static(b"{\"index\":{\"_index\":\"t\",\"_id\":\"1\"}}\n{\"n\":1,\"m\":\"hello world\"}\n{\"index\":{\"_index\":\"t\"}}\n{\"n\":\"bad\"}\n{\"index\":{\"_index\":\"t\",\"_id\":\"1\"}}\n{\"n\":2}\n");
        let resp = w
            .bulk(None, body, RefreshPolicy::True)
            .await
            .unwrap()
            .to_json();
        assert_eq!(resp["errors"], true);
        assert_eq!(resp["items"][0]["index"]["result"], "created");
        assert_eq!(
            resp["items"][1]["index"]["error"]["type"],
            "mapper_parsing_exception"
        );
        assert_eq!(resp["items"][2]["index"]["result"], "updated");
        let meta = ms.get_index("t").unwrap();
        assert_eq!(meta.shards[&0].num_docs, 1);
        assert!(!storage
            .list(&meta.segments_prefix(0))
            .await
            .unwrap()
            .is_empty());
        // A fresh writer (empty scratch) continues from the bucket.
        std::fs::remove_dir_all(dir.path().join("scratch")).unwrap();
        let w2 = started(ms.clone(), &storage, config).await;
        let body = Bytes::from_static(b"{\"index\":{\"_index\":\"t\",\"_id\":\"2\"}}\n{\"n\":3}\n{\"delete\":{\"_index\":\"t\",\"_id\":\"1\"}}\n");
        let resp = w2
            .bulk(None, body, RefreshPolicy::True)
            .await
            .unwrap()
            .to_json();
        assert_eq!(resp["items"][1]["delete"]["result"], "deleted", "{resp}");
        assert_eq!(ms.get_index("t").unwrap().shards[&0].num_docs, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unrefreshed_writes_are_replayed_from_the_translog() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().join("bucket")).unwrap();
        let ms = metastore(&storage).await;
        // Short sessions: the second writer (same node id) waits for the first to expire.
        let config = test_config(
            dir.path().join("scratch"),
            Duration::from_millis(600),
            "test-node",
        );
        let w = started(ms.clone(), &storage, config.clone()).await;
        let body = Bytes::from_static(b"{\"index\":{\"_index\":\"r\",\"_id\":\"a\"}}\n{\"n\":1}\n{\"index\":{\"_index\":\"r\",\"_id\":\"b\"}}\n{\"n\":2}\n");
        w.bulk(None, body, RefreshPolicy::True)
            .await
            .unwrap()
            .to_json();
        // Acknowledged but never refreshed: only the translog has these.
        let body = Bytes::from_static(b"{\"index\":{\"_index\":\"r\",\"_id\":\"c\"}}\n{\"n\":3}\n{\"delete\":{\"_index\":\"r\",\"_id\":\"a\"}}\n{\"index\":{\"_index\":\"r\",\"_id\":\"b\"}}\n{\"n\":22}\n");
        let resp = w
            .bulk(None, body, RefreshPolicy::False)
            .await
            .unwrap()
            .to_json();
        assert_eq!(resp["errors"], false, "{resp}");
        let uuid = ms.get_index("r").unwrap().uuid;
        assert_eq!(
            storage.list("nodes").await.unwrap().len(),
            1,
            "covered batches were deleted (one writer-wide translog object left)"
        );
        drop(w); // the "crash": local state is thrown away below
        std::fs::remove_dir_all(dir.path().join("scratch")).unwrap();
        let ms2 = metastore(&storage).await;
        let w2 = started(ms2.clone(), &storage, config).await;
        assert_eq!(w2.recover().await.unwrap(), 1);
        w2.refresh(&["r".to_string()]).await.unwrap();
        let meta = ms2.get_index("r").unwrap();
        assert_eq!(meta.shards[&0].num_docs, 2, "b and c live, a deleted");
        assert_eq!(meta.shards[&0].translog_checkpoint, 5);
        let left: Vec<String> = storage
            .list(&format!("indexes/{uuid}/0/translog"))
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(
            left.iter().all(|k| k.ends_with("-fence")),
            "only the takeover marker remains: {left:?}"
        );
        // The crashed incarnation's log is covered by the new commit: collected.
        assert_eq!(w2.collect_dead_logs().await.unwrap(), 1);
        assert!(storage.list("nodes").await.unwrap().is_empty());
        // Sequence numbers continue after the replayed ones.
        let resp = w2
            .bulk(
                None,
                Bytes::from_static(b"{\"index\":{\"_index\":\"r\",\"_id\":\"b\"}}\n{\"n\":3}\n"),
                RefreshPolicy::False,
            )
            .await
            .unwrap()
            .to_json();
        assert_eq!(resp["items"][0]["index"]["_seq_no"], 5);
        assert_eq!(resp["items"][0]["index"]["_version"], 3);
    }

    /// Two writers believe they own a shard: the old owner paused past its lease while a new
    /// one took over. Only the new epoch's view survives; the old owner can neither
    /// acknowledge nor publish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paused_owner_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().join("bucket")).unwrap();
        let writer = |name: &str, ttl_ms: u64, ms: Arc<Metastore>| {
            started(
                ms,
                &storage,
                test_config(
                    dir.path().join(name),
                    Duration::from_millis(ttl_ms),
                    name.to_string(),
                ),
            )
        };
        let ms_a = metastore(&storage).await;
        let a = writer("a", 800, ms_a.clone()).await;
        let doc = |id: &str| {
            Bytes::from(format!(
                "{{\"index\":{{\"_index\":\"f\",\"_id\":\"{id}\"}}}}\n{{\"v\":1}}\n"
            ))
        };
        let r = a
            .bulk(None, doc("a1"), RefreshPolicy::True)
            .await
            .unwrap()
            .to_json();
        assert_eq!(r["items"][0]["index"]["_primary_term"], 1);
        assert_eq!(
            a.bulk(None, doc("a2"), RefreshPolicy::False)
                .await
                .unwrap()
                .to_json()["errors"],
            false
        );
        // A pauses (no lease renewal) past its lease.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let ms_b = metastore(&storage).await;
        let b = writer("b", 10_000, ms_b.clone()).await;
        let r = b
            .bulk(None, doc("b1"), RefreshPolicy::False)
            .await
            .unwrap()
            .to_json();
        assert_eq!(r["items"][0]["index"]["_primary_term"], 2, "{r}");
        // B publishes; every object its commit references is recorded byte for byte.
        b.refresh(&["f".to_string()]).await.unwrap();
        let fresh = metastore(&storage).await;
        let meta = fresh.get_index("f").unwrap();
        assert_eq!(meta.shards[&0].epoch, 2);
        assert_eq!(
            meta.shards[&0].num_docs, 3,
            "a1, a2 (acknowledged by A, replayed by B) and b1; not a3"
        );
        let prefix = meta.segments_prefix(0);
        let mut referenced = Vec::new();
        for f in &meta.shards[&0].files {
            let key = format!("{prefix}/{}", f.object_key());
            referenced.push((key.clone(), storage.get(&key).await.unwrap()));
        }
        let before: Vec<String> = storage
            .list(&prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        // ... nor publish what it still holds (a2, applied locally before the pause), and
        // what it uploads trying to (create-only, under its own epoch's keys) replaces no
        // object of the published commit.
        match a.refresh(&["f".to_string()]).await {
            Err(WriterError::Metastore(MetastoreError::StaleCommit { .. })) => {}
            other => panic!("stale publish must be refused, got {other:?}"),
        }
        for (key, bytes) in &referenced {
            assert_eq!(&storage.get(key).await.unwrap(), bytes, "{key} unchanged");
        }
        let zombie_uploads: Vec<String> = storage
            .list(&prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !before.contains(k))
            .collect();
        assert!(!zombie_uploads.is_empty(), "A did upload its segment");
        assert!(
            zombie_uploads
                .iter()
                .all(|k| k.starts_with(&format!("{prefix}/0000000001/"))),
            "{zombie_uploads:?}"
        );
        assert_eq!(fresh.get_index("f").unwrap().shards[&0].epoch, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_durability_acknowledges_first_and_syncs_on_interval() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().join("bucket")).unwrap();
        let ms = metastore(&storage).await;
        let w = started(
            ms.clone(),
            &storage,
            test_config(dir.path().join("scratch"), Duration::from_secs(10), "n"),
        )
        .await;
        w.create_index("as", &json!({"settings": {"index.translog.durability": "async", "index.translog.sync_interval": "300ms"}})).await.unwrap();
        let translog = "nodes".to_string();
        let r = w
            .bulk(
                Some("as"),
                Bytes::from_static(b"{\"index\":{\"_id\":\"1\"}}\n{\"v\":1}\n"),
                RefreshPolicy::False,
            )
            .await
            .unwrap()
            .to_json();
        assert_eq!(r["errors"], false);
        assert!(
            storage.list(&translog).await.unwrap().is_empty(),
            "acknowledged before the sync"
        );
        let mut synced = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !storage.list(&translog).await.unwrap().is_empty() {
                synced = true;
                break;
            }
        }
        assert!(synced, "the translog is written within the sync interval");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn force_merge_publishes_one_segment_and_gc_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().join("bucket")).unwrap();
        let ms = metastore(&storage).await;
        let w = started(
            ms.clone(),
            &storage,
            test_config(dir.path().join("scratch"), Duration::from_secs(10), "n"),
        )
        .await;
        for i in 0..3 {
            let body =
                format!("{{\"index\":{{\"_index\":\"m\",\"_id\":\"{i}\"}}}}\n{{\"v\":{i}}}\n");
            w.bulk(None, Bytes::from(body), RefreshPolicy::True)
                .await
                .unwrap()
                .to_json();
        }
        let segments = |m: &IndexMeta| {
            m.shards[&0]
                .files
                .iter()
                .filter(|f| f.name.ends_with(".idx"))
                .count()
        };
        assert!(segments(&ms.get_index("m").unwrap()) >= 2);
        assert_eq!(w.force_merge(&["m".to_string()], 1).await.unwrap(), 1);
        let meta = ms.get_index("m").unwrap();
        assert_eq!(segments(&meta), 1);
        assert_eq!(meta.shards[&0].num_docs, 3);
        let writer = w.shards.lock().await.values().next().unwrap().clone();
        assert!(writer.collect_garbage(Duration::ZERO).await > 0);
        let mut in_bucket: Vec<String> = storage
            .list(&meta.segments_prefix(0))
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k.rsplit('/').next().unwrap().to_string())
            .collect();
        let mut live: Vec<String> = meta.shards[&0]
            .files
            .iter()
            .map(|f| f.name.clone())
            .collect();
        in_bucket.sort();
        live.sort();
        assert_eq!(in_bucket, live, "only the published commit's files remain");
    }

    /// A translog object that cannot be re-applied does not wedge the shard: it is set aside
    /// (kept, never dropped), counted, and everything else is replayed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreadable_translog_is_kept_and_the_shard_opens() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().join("bucket")).unwrap();
        let ms = metastore(&storage).await;
        let config = test_config(dir.path().join("scratch"), Duration::from_millis(600), "n");
        let w = started(ms.clone(), &storage, config.clone()).await;
        let body = Bytes::from_static(b"{\"index\":{\"_index\":\"q\",\"_id\":\"a\"}}\n{\"n\":1}\n");
        w.bulk(None, body.clone(), RefreshPolicy::False)
            .await
            .unwrap();
        let uuid = ms.get_index("q").unwrap().uuid;
        // A damaged object sorting after the good one.
        let bad = format!(
            "indexes/{uuid}/0/translog/0000000001-00000000000000000005-00000000000000000006"
        );
        storage
            .put(&bad, Bytes::from_static(b"not json\n"))
            .await
            .unwrap();
        drop(w);
        std::fs::remove_dir_all(dir.path().join("scratch")).unwrap();
        let w2 = started(metastore(&storage).await, &storage, config).await;
        assert_eq!(w2.recover().await.unwrap(), 1);
        assert_eq!(w2.replay_failures().await, 1);
        let kept = storage
            .list(&format!("indexes/{uuid}/0/translog-failed"))
            .await
            .unwrap();
        assert_eq!(kept.len(), 1, "{kept:?}");
        w2.refresh(&["q".to_string()]).await.unwrap();
        assert_eq!(w2.metastore.get_index("q").unwrap().shards[&0].num_docs, 1);
    }

    /// More shards written at once than writer slots: operations wait in shard backlogs,
    /// with outcomes (versions, realtime reads) decided at once, and every document reaches
    /// the published commits; threads stay bounded by the slots.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_shards_than_writer_slots() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path().join("bucket")).unwrap();
        let ms = metastore(&storage).await;
        let config = test_config(dir.path().join("scratch"), Duration::from_secs(10), "n");
        let w = started(ms.clone(), &storage, config).await;
        w.create_index("many", &json!({"settings": {"number_of_shards": 12}}))
            .await
            .unwrap();
        let body = |v: u32| {
            let mut b = String::new();
            for i in 0..60 {
                b.push_str(&format!(
                    "{{\"index\":{{\"_index\":\"many\",\"_id\":\"d{i}\"}}}}\n{{\"v\":{v}}}\n"
                ));
            }
            Bytes::from(b)
        };
        let r = w
            .bulk(None, body(1), RefreshPolicy::False)
            .await
            .unwrap()
            .to_json();
        assert_eq!(r["errors"], false, "{r}");
        assert!(w.pool.open_count() <= 2, "writer slots respected");
        let r = w
            .bulk(None, body(2), RefreshPolicy::False)
            .await
            .unwrap()
            .to_json();
        assert!(
            r["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["index"]["_version"] == 2),
            "overwrites see the backlogged first versions: {r}"
        );
        let got = w.realtime_get("many", "d7", None).await.unwrap();
        assert_eq!(
            (got.version, &got.source.unwrap()[..]),
            (2, &b"{\"v\":2}"[..])
        );
        w.refresh(&["many".to_string()]).await.unwrap();
        let meta = ms.get_index("many").unwrap();
        assert_eq!(meta.doc_count(), 60);
    }
}
