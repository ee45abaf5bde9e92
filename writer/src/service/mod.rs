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
use crate::peers::{Peers, MAX_HOPS};
use crate::pool::WriterPool;
use crate::response::{BulkResponse, ItemOutcome};
use crate::shard::{
    ItemError, OpResult, PreparedOp, RecentWrite, ShardContext, ShardSpec, ShardWriter,
};
use crate::translog::{Segment, Translog};
use crate::WriterError;
use floe_cache::BlockCache;
use floe_proto::rpc;

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
    blocks: BlockCache,
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
    /// The other writers and searchers of a cluster (none in `floe standalone`).
    peers: std::sync::OnceLock<Arc<dyn Peers>>,
    /// Node session renewals that got through, since start.
    renewals: std::sync::atomic::AtomicU64,
}

/// The `aliases` of a create-index body (`{"aliases": {"name": {...}}}`) as actions.
fn create_body_aliases(
    index: &str,
    body: &Value,
) -> Result<Vec<floe_metastore::AliasAction>, WriterError> {
    let Some(aliases) = body.get("aliases") else {
        return Ok(Vec::new());
    };
    let aliases = aliases
        .as_object()
        .ok_or_else(|| WriterError::BadRequest("[aliases] must be an object".into()))?;
    aliases
        .iter()
        .map(|(alias, spec)| {
            Ok(floe_metastore::AliasAction::Add {
                indexes: vec![index.to_string()],
                aliases: vec![alias.clone()],
                spec: floe_metastore::AliasSpec::from_opensearch(spec)?,
            })
        })
        .collect()
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
        if let Some(n) = get("number_of_replicas") {
            settings.number_of_replicas = match n {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .filter(|n| *n <= 64)
            .ok_or_else(|| {
                WriterError::BadRequest(format!(
                    "Failed to parse value [{n}] for setting [index.number_of_replicas] must be between 0 and 64"
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
        let floe = s.get("floe").and_then(|f| f.get("prefetch"));
        if let Some(p) = floe.or_else(|| get("floe.prefetch")) {
            settings.prefetch = parse_bool_setting(p).ok_or_else(|| {
                WriterError::BadRequest(format!(
                    "Failed to parse value [{p}] as only [true] or [false] are allowed for setting [index.floe.prefetch]"
                ))
            })?;
        }
        if let Some(a) = s
            .get("plugins")
            .and_then(|p| p.get("index_state_management"))
            .and_then(|p| p.get("rollover_alias"))
            .or_else(|| get("plugins.index_state_management.rollover_alias"))
        {
            let a = a.as_str().ok_or_else(|| {
                WriterError::BadRequest(
                    "[plugins.index_state_management.rollover_alias] must be a string".into(),
                )
            })?;
            settings.rollover_alias = Some(a.to_string());
        }
        if let Some(b) = s
            .get("blocks")
            .and_then(|b| b.get("write"))
            .or_else(|| get("blocks.write"))
        {
            settings.blocks_write = parse_bool_setting(b).ok_or_else(|| {
                WriterError::BadRequest(format!(
                    "Failed to parse value [{b}] as only [true] or [false] are allowed for setting [index.blocks.write]"
                ))
            })?;
        }
        if let Some(h) = get("hidden") {
            settings.hidden = parse_bool_setting(h).ok_or_else(|| {
                WriterError::BadRequest(format!(
                    "Failed to parse value [{h}] as only [true] or [false] are allowed for setting [index.hidden]"
                ))
            })?;
        }
        if let Some(w) = get("max_result_window") {
            settings.max_result_window = Some(
                w.as_u64()
                    .or_else(|| w.as_str().and_then(|s| s.parse().ok()))
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        WriterError::BadRequest(format!(
                            "Failed to parse value [{w}] for setting [index.max_result_window] must be >= 1"
                        ))
                    })?,
            );
        }
        if let Some(p) = get("priority") {
            settings.priority = Some(
                p.as_i64()
                    .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| {
                        WriterError::BadRequest(format!(
                            "Failed to parse value [{p}] for setting [index.priority]"
                        ))
                    })?,
            );
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

/// `true`/`false`, as a JSON boolean or string (OpenSearch accepts both).
pub fn parse_bool_setting(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// The indexes (sorted, once each) that at least one successful item wrote to.
fn touched_indexes(outcomes: &[ItemOutcome]) -> Vec<String> {
    let mut v: Vec<String> = outcomes
        .iter()
        .filter(|o| o.result.is_ok())
        .map(|o| o.index.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}

pub use floe_metastore::shard_for;

impl Writer {
    /// `blocks`: the process's block cache, through which shards taken over from the bucket
    /// read their committed files until hydrated.
    pub fn new(
        metastore: Arc<Metastore>,
        storage: Storage,
        blocks: BlockCache,
        config: WriterConfig,
    ) -> Writer {
        Writer {
            metastore,
            storage,
            blocks,
            pool: Arc::new(WriterPool::new(config.max_open_writers, config.memory)),
            config,
            shards: tokio::sync::Mutex::new(HashMap::new()),
            openers: Default::default(),
            opening: tokio::sync::Semaphore::new(
                4 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            session: std::sync::RwLock::new(None),
            earlier_logs: Default::default(),
            peers: Default::default(),
            renewals: Default::default(),
        }
    }

    /// Node session renewals that got through, since start.
    pub fn session_renewals(&self) -> u64 {
        self.renewals.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Joins a cluster: items of shards that another writer owns go to it, and refreshes
    /// reach every writer and searcher. Set once, before serving.
    pub fn set_peers(&self, peers: Arc<dyn Peers>) {
        let _ = self.peers.set(peers);
    }

    pub(crate) fn peers(&self) -> Option<&Arc<dyn Peers>> {
        self.peers.get()
    }

    /// Whether another writer of the cluster owns this shard.
    pub(crate) fn is_remote(&self, uuid: &str, shard: u32) -> bool {
        self.peers()
            .is_some_and(|p| p.remote_owner(uuid, shard).is_some())
    }

    /// The writer that owns the shard holding `id` of `index` when it is not this one (a
    /// realtime read must be answered there).
    pub fn remote_owner_of(&self, index: &str, id: &str, routing: Option<&str>) -> Option<String> {
        let peers = self.peers()?;
        let meta = self.metastore.get_index(index)?;
        let shard = shard_for(routing.unwrap_or(id), meta.settings.number_of_shards);
        peers.remote_owner(&meta.uuid, shard)
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

    pub(super) fn current_session(&self) -> Option<Arc<NodeSession>> {
        self.current().map(|(s, _)| s)
    }

    pub(super) fn current(&self) -> Option<(Arc<NodeSession>, Arc<GroupLog>)> {
        self.session.read().expect("session lock").clone()
    }

    /// The node session and its translog, waiting briefly for them at start-up.
    pub(super) async fn session(&self) -> Result<(Arc<NodeSession>, Arc<GroupLog>), WriterError> {
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
        // Matching templates first, the request's own settings, mappings and aliases over them.
        let body = &self.metastore.templates().create_body(name, body)?;
        let (settings, mappings) = parse_create_body(body)?;
        let aliases = create_body_aliases(name, body)?;
        let meta = self
            .metastore
            .create_index(name, settings, mappings)
            .await?;
        if !aliases.is_empty() {
            self.metastore.update_aliases(&aliases).await?;
        }
        // A policy whose `ism_template` matches the new index starts managing it.
        let ism = floe_metastore::ism::IsmStore::new(self.storage.clone());
        if let Some(policy) = ism.policy_for_new_index(name).await? {
            ism.add(name, &meta.uuid, &policy).await?;
            info!(index = name, policy = %policy, "index managed by an ISM policy");
        }
        Ok(meta)
    }

    /// The index, created when missing (OpenSearch's `action.auto_create_index`): with what
    /// matching templates give it, else defaults.
    pub(super) async fn index_or_create(&self, name: &str) -> Result<IndexMeta, WriterError> {
        if let Some(meta) = self.metastore.get_index(name) {
            return Ok(meta);
        }
        match self.create_index(name, &Value::Object(Map::new())).await {
            Ok(meta) => Ok(meta),
            Err(WriterError::Metastore(MetastoreError::IndexAlreadyExists(_))) => self
                .metastore
                .get_index(name)
                .ok_or(MetastoreError::IndexNotFound(name.into()).into()),
            Err(e) => Err(e),
        }
    }

    /// `POST /_bulk` and `POST /{index}/_bulk`. Returns the OpenSearch response body.
    pub async fn bulk(
        &self,
        default_index: Option<&str>,
        body: Bytes,
        refresh: RefreshPolicy,
    ) -> Result<BulkResponse, WriterError> {
        self.bulk_checked(default_index, body, refresh, &|_, _| None)
            .await
    }

    /// [`Writer::bulk`] where `deny(index, kind)` may refuse items: they fail alone with a
    /// 403 and the reason it gives (authorization of each item's index).
    #[instrument(skip(self, body, deny), fields(bytes = body.len()))]
    pub async fn bulk_checked(
        &self,
        default_index: Option<&str>,
        body: Bytes,
        refresh: RefreshPolicy,
        deny: &(dyn Fn(&str, OpKind) -> Option<String> + Send + Sync),
    ) -> Result<BulkResponse, WriterError> {
        let started = Instant::now();
        let mut ops = parse_bulk(&body)?;
        for op in ops.iter_mut() {
            let index = op.index.as_deref().or(default_index).unwrap_or_default();
            op.denied = deny(index, op.kind);
        }
        let outcomes = self
            .apply(default_index, ops, 0, refresh != RefreshPolicy::False)
            .await?;
        if refresh != RefreshPolicy::False {
            self.refresh(&touched_indexes(&outcomes)).await?;
        }
        let errors = outcomes.iter().any(|o| o.result.is_err());
        Ok(BulkResponse {
            took: started.elapsed().as_millis() as u64,
            errors,
            items: outcomes,
        })
    }

    /// Operations built by Floe itself (by-query and reindex jobs), one outcome each, in
    /// order; forwarded to the writers that own their shards like any bulk item.
    pub async fn write_ops(&self, ops: Vec<BulkOp>) -> Result<Vec<ItemOutcome>, WriterError> {
        self.apply(None, ops, 0, false).await
    }

    /// A single-document write (`PUT /{index}/_doc/{id}`, `POST /{index}/_doc`,
    /// `PUT /{index}/_create/{id}`, `DELETE /{index}/_doc/{id}`). Returns (status, body).
    pub async fn single(
        &self,
        op: BulkOp,
        refresh: RefreshPolicy,
    ) -> Result<(u16, Value), WriterError> {
        let mut outcomes = self
            .apply(None, vec![op], 0, refresh != RefreshPolicy::False)
            .await?;
        let outcome = outcomes
            .pop()
            .ok_or_else(|| WriterError::Internal("no outcome".into()))?;
        if refresh != RefreshPolicy::False && outcome.result.is_ok() {
            // The index written (an alias's write index, not the alias).
            self.refresh(std::slice::from_ref(&outcome.index)).await?;
        }
        match outcome.result {
            Ok((_, _, _, status)) => {
                let mut body = serde_json::to_value(outcome.body())
                    .map_err(|e| WriterError::Internal(e.to_string()))?;
                if let Some(o) = body.as_object_mut() {
                    o.remove("status");
                    if refresh == RefreshPolicy::True {
                        o.insert("forced_refresh".into(), Value::Bool(true));
                    }
                }
                Ok((status, body))
            }
            Err((503, _, reason)) => Err(WriterError::Unavailable(reason)),
            Err((status, typ, reason)) => Err(WriterError::Item(status, typ, reason)),
        }
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
}

mod apply;
mod forward;
mod ownership;
mod refresh;
pub mod rollover;
#[cfg(test)]
mod tests;
mod update;
