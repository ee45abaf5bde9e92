//! Membership: which nodes are alive (the metastore role's registry of heartbeats) and the
//! view every other node keeps of it, from which shard placement follows.
//!
//! Placement is a pure function of the live node set (rendezvous hashing), so every node
//! computes the same answer from the same view without the metastore storing or sending an
//! assignment table: a shard moves only when its best-ranked writer joins or leaves. Views
//! can disagree for a heartbeat interval; shard leases in the bucket keep that safe (a
//! writer cannot take a shard whose owner is still live until the owner gives it up).

use floe_proto::secret::ClusterSecret;
use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;

use floe_proto::rpc::metastore_client::MetastoreClient;
use floe_proto::rpc::metastore_server::Metastore as MetastoreRpc;
use floe_proto::rpc::{
    HeartbeatRequest, HeartbeatResponse, LeaveRequest, LeaveResponse, NodeInfo, PlacementRules,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Role names as they travel in [`NodeInfo::role`].
pub mod role {
    pub const METASTORE: &str = "metastore";
    pub const WRITER: &str = "writer";
    pub const SEARCHER: &str = "searcher";
}

/// The metastore role's registry: every node's last heartbeat.
pub struct Membership {
    me: NodeInfo,
    rules: PlacementRules,
    timeout: Duration,
    started: Instant,
    nodes: Mutex<Registry>,
}

/// How often the node details (load, memory, shard counts) a view shows are refreshed when
/// nothing else changed: each refresh sends every node the whole list once.
const DETAILS_EVERY: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Registry {
    nodes: HashMap<String, (NodeInfo, Instant)>,
    /// Bumped when a node joins, leaves or changes address, role or zone (and every
    /// [`DETAILS_EVERY`] for the details): nodes that hold it get no list.
    version: u64,
    bumped: Option<Instant>,
    details_changed: bool,
    /// A join or leave not yet published under a new version.
    pending: bool,
    pruned: Option<Instant>,
}

impl Registry {
    /// A new membership version: nodes holding an older one get the whole list.
    fn publish(&mut self, now: Instant) {
        self.version += 1;
        self.bumped = Some(now);
        self.details_changed = false;
        self.pending = false;
    }
}

/// Joins and leaves within this window share one new version (a cluster starting up does
/// not send every node a fresh list for every other node that joins).
const COALESCE: Duration = Duration::from_millis(200);

impl Membership {
    /// `timeout`: how long a node may stay silent before it counts as gone (its shards
    /// move). A restarted metastore answers "not settled" for that long, so nodes do not
    /// mistake its empty registry for a cluster that shrank.
    pub fn new(me: NodeInfo, timeout: Duration, rules: PlacementRules) -> Arc<Membership> {
        Arc::new(Membership {
            me,
            rules,
            timeout,
            started: Instant::now(),
            nodes: Mutex::new(Registry::default()),
        })
    }

    /// Records a heartbeat and answers with every live node (or "unchanged" when the node
    /// holds the current membership version).
    pub fn heartbeat(&self, node: NodeInfo, known_version: u64) -> HeartbeatResponse {
        let now = Instant::now();
        let mut reg = self.nodes.lock().expect("membership lock");
        let mut changed = false;
        match reg.nodes.get(&node.node_id) {
            None => {
                info!(node = %node.node_id, role = %node.role, zone = %node.zone, "node joined");
                changed = true;
            }
            Some((old, _)) => {
                let same_identity = old.role == node.role
                    && old.zone == node.zone
                    && old.grpc_addr == node.grpc_addr
                    && old.http_addr == node.http_addr
                    && old.started_ms == node.started_ms;
                if !same_identity {
                    changed = true;
                } else if *old != node {
                    reg.details_changed = true;
                }
            }
        }
        reg.nodes.insert(node.node_id.clone(), (node, now));
        let timeout = self.timeout;
        if reg
            .pruned
            .is_none_or(|p| now.duration_since(p) >= Duration::from_millis(100))
        {
            reg.pruned = Some(now);
            reg.nodes.retain(|id, (n, seen)| {
                let live = now.duration_since(*seen) <= timeout;
                if !live {
                    info!(node = %id, role = %n.role, "node left (no heartbeat)");
                    changed = true;
                }
                live
            });
        }
        reg.pending |= changed;
        let since_bump = reg.bumped.map(|b| now.duration_since(b));
        let membership_due = reg.pending && since_bump.is_none_or(|d| d >= COALESCE);
        let details_due = reg.details_changed && since_bump.is_none_or(|d| d >= DETAILS_EVERY);
        if membership_due || details_due || reg.version == 0 {
            reg.publish(now);
        }
        let settled = now.duration_since(self.started) > timeout;
        let base = HeartbeatResponse {
            settled,
            node_timeout_ms: timeout.as_millis() as u64,
            rules: Some(self.rules.clone()),
            version: reg.version,
            ..Default::default()
        };
        if known_version == reg.version {
            return HeartbeatResponse {
                unchanged: true,
                ..base
            };
        }
        let mut live: Vec<NodeInfo> = reg.nodes.values().map(|(n, _)| n.clone()).collect();
        drop(reg);
        live.push(self.me.clone());
        live.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        HeartbeatResponse {
            nodes: live,
            ..base
        }
    }
}

impl Membership {
    /// A node leaving cleanly: gone from the next membership version on.
    pub fn leave(&self, node_id: &str) {
        let mut reg = self.nodes.lock().expect("membership lock");
        if reg.nodes.remove(node_id).is_some() {
            info!(node = %node_id, "node left (shutting down)");
            // Published at once: the leaving node's shards must move now.
            reg.publish(Instant::now());
        }
    }
}

/// The gRPC face of [`Membership`].
pub struct MembershipService(pub Arc<Membership>);

#[tonic::async_trait]
impl MetastoreRpc for MembershipService {
    async fn heartbeat(
        &self,
        request: tonic::Request<HeartbeatRequest>,
    ) -> Result<tonic::Response<HeartbeatResponse>, tonic::Status> {
        let request = request.into_inner();
        let request_version = request.known_version;
        let node = request
            .node
            .ok_or_else(|| tonic::Status::invalid_argument("heartbeat without node"))?;
        let known = request_version;
        Ok(tonic::Response::new(self.0.heartbeat(node, known)))
    }

    async fn leave(
        &self,
        request: tonic::Request<LeaveRequest>,
    ) -> Result<tonic::Response<LeaveResponse>, tonic::Status> {
        self.0.leave(&request.into_inner().node_id);
        Ok(tonic::Response::new(LeaveResponse {}))
    }
}

/// A node's view of the cluster: the live nodes as the metastore last answered, plus
/// itself. Placement is computed from it.
pub struct ClusterView {
    me: RwLock<NodeInfo>,
    /// The metastore's address, once heartbeating started.
    metastore_url: Mutex<Option<String>>,
    /// Set when this node leaves: heartbeats stop.
    leaving: std::sync::atomic::AtomicBool,
    rules: RwLock<PlacementRules>,
    nodes: RwLock<Arc<Vec<NodeInfo>>>,
    /// Bumped whenever the set of writers changes (shards may have moved).
    changed: watch::Sender<u64>,
    /// Bumped whenever the set of nodes changes (searcher copies may have moved).
    generation: std::sync::atomic::AtomicU64,
    last_heard: Mutex<Option<Instant>>,
    /// Presented on every call to the metastore (see `floe_proto::secret`).
    secret: std::sync::OnceLock<ClusterSecret>,
    /// TLS for calls to other nodes, when the cluster runs gRPC over TLS.
    tls: std::sync::OnceLock<tonic::transport::ClientTlsConfig>,
}

impl ClusterView {
    pub fn new(me: NodeInfo) -> Arc<ClusterView> {
        Arc::new(ClusterView {
            nodes: RwLock::new(Arc::new(vec![me.clone()])),
            me: RwLock::new(me),
            rules: RwLock::new(PlacementRules::default()),
            changed: watch::channel(0).0,
            generation: Default::default(),
            metastore_url: Mutex::new(None),
            leaving: Default::default(),
            last_heard: Mutex::new(None),
            secret: std::sync::OnceLock::new(),
            tls: std::sync::OnceLock::new(),
        })
    }

    /// Calls to other nodes go over TLS with this configuration (set once, at start).
    pub fn set_tls(&self, tls: tonic::transport::ClientTlsConfig) {
        let _ = self.tls.set(tls);
    }

    /// The scheme and endpoint settings for a call to `addr` (`host:port`).
    pub fn endpoint(&self, addr: &str) -> Result<tonic::transport::Endpoint, String> {
        let url = match self.tls.get() {
            Some(_) => format!("https://{addr}"),
            None => format!("http://{addr}"),
        };
        self.endpoint_of(url)
    }

    /// An endpoint for a full URL (the metastore's, as configured), with TLS when on.
    pub fn endpoint_of(&self, url: String) -> Result<tonic::transport::Endpoint, String> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| format!("{url}: {e}"))?;
        match self.tls.get() {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| format!("TLS for {url}: {e}")),
            None => Ok(endpoint),
        }
    }

    /// The cluster secret this node presents to the metastore and to other nodes (set once,
    /// before heartbeats start).
    pub fn set_secret(&self, secret: ClusterSecret) {
        let _ = self.secret.set(secret);
    }

    /// The cluster secret (an empty one, which no server accepts, if never set).
    pub fn secret(&self) -> ClusterSecret {
        self.secret
            .get()
            .cloned()
            .unwrap_or_else(|| ClusterSecret::new("").expect("empty metadata is valid"))
    }

    pub fn me(&self) -> NodeInfo {
        self.me.read().expect("view lock").clone()
    }

    pub fn node_id(&self) -> String {
        self.me.read().expect("view lock").node_id.clone()
    }

    /// Every live node (this one included).
    pub fn nodes(&self) -> Arc<Vec<NodeInfo>> {
        self.nodes.read().expect("view lock").clone()
    }

    pub fn with_role(&self, role: &str) -> Vec<NodeInfo> {
        self.nodes()
            .iter()
            .filter(|n| n.role == role)
            .cloned()
            .collect()
    }

    /// Changes whenever the set of nodes does.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A receiver that sees a new value whenever the writer set changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How long ago the metastore last answered (None: never).
    pub fn since_heard(&self) -> Option<Duration> {
        self.last_heard
            .lock()
            .expect("view lock")
            .map(|t| t.elapsed())
    }

    /// The writer that owns `shard` of index `uuid` ([`place_writer`]).
    pub fn writer_for(&self, uuid: &str, shard: u32) -> Option<NodeInfo> {
        let zones = self
            .rules
            .read()
            .expect("view lock")
            .awareness_zones
            .clone();
        place_writer(&self.with_role(role::WRITER), &zones, uuid, shard)
    }

    /// Live searchers in the order they should serve `key` (same key, same order on every
    /// node: the first one's cache holds it; the next takes over if it fails).
    pub fn searchers_for(&self, key: &str) -> Vec<NodeInfo> {
        rank(&self.with_role(role::SEARCHER), key)
    }

    /// Which searchers serve which shard copies: see [`plan_copies`].
    pub fn plan_copies(&self, shards: &[(String, u32)]) -> CopyPlan {
        let rules = self.rules.read().expect("view lock").clone();
        plan_copies(&self.with_role(role::SEARCHER), shards, &rules)
    }

    /// Replaces the view with the metastore's answer.
    pub fn update(&self, nodes: Vec<NodeInfo>) {
        let me = self.me();
        let mut nodes = nodes;
        if !nodes.iter().any(|n| n.node_id == me.node_id) {
            nodes.push(me);
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let writers = |ns: &[NodeInfo]| -> Vec<String> {
            ns.iter()
                .filter(|n| n.role == role::WRITER)
                .map(|n| n.node_id.clone())
                .collect()
        };
        let ids =
            |ns: &[NodeInfo]| -> Vec<String> { ns.iter().map(|n| n.node_id.clone()).collect() };
        let mut current = self.nodes.write().expect("view lock");
        let moved = writers(&current) != writers(&nodes);
        if ids(&current) != ids(&nodes) {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        *current = Arc::new(nodes);
        drop(current);
        if moved {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// Heartbeats to the metastore at `url` every `interval` forever, refreshing `me` with
    /// `describe` first (load, memory, shard count) and the view with each answer. While
    /// the metastore is unreachable the last view stays.
    pub async fn run_heartbeat(
        self: Arc<Self>,
        url: String,
        interval: Duration,
        describe: impl Fn(&mut NodeInfo) + Send + 'static,
    ) {
        *self.metastore_url.lock().expect("view lock") = Some(url.clone());
        let mut client: Option<
            MetastoreClient<InterceptedService<tonic::transport::Channel, ClusterSecret>>,
        > = None;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        let mut known_version = 0u64;
        loop {
            tick.tick().await;
            if self.leaving.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let node = {
                let mut me = self.me.write().expect("view lock");
                describe(&mut me);
                me.clone()
            };
            if client.is_none() {
                match self.endpoint_of(url.clone()) {
                    Ok(e) => {
                        let e = e.connect_timeout(interval).timeout(interval * 2);
                        client = Some(MetastoreClient::with_interceptor(
                            e.connect_lazy(),
                            self.secret(),
                        ));
                    }
                    Err(e) => {
                        warn!("bad metastore address {url}: {e}");
                        return;
                    }
                }
            }
            let c = client.as_mut().expect("client set above");
            let request = HeartbeatRequest {
                node: Some(node),
                known_version,
            };
            match c.heartbeat(request).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    if failures > 0 {
                        info!("metastore reachable again");
                    }
                    failures = 0;
                    *self.last_heard.lock().expect("view lock") = Some(Instant::now());
                    if answer.settled && !answer.unchanged {
                        if let Some(rules) = answer.rules {
                            *self.rules.write().expect("view lock") = rules;
                        }
                        self.update(answer.nodes);
                        known_version = answer.version;
                    } else {
                        debug!("metastore not settled yet: keeping the previous view");
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(30) {
                        warn!("metastore heartbeat failed ({failures} in a row): {e}");
                    }
                }
            }
        }
    }
}

/// Where each shard's searcher copies are: `copies[key]` lists the searchers serving it (in
/// the order queries try them), `wanted[key]` how many it should have.
#[derive(Clone, Debug, Default)]
pub struct CopyPlan {
    pub copies: HashMap<String, Vec<String>>,
    pub wanted: HashMap<String, usize>,
    /// The most copies one searcher takes.
    pub cap: usize,
    /// For each shard key, why each live searcher does not serve it (if it does not).
    pub refusals: HashMap<String, Vec<(String, String)>>,
}

impl CopyPlan {
    /// Copies wanted but not placed, over all shards.
    pub fn unassigned(&self) -> usize {
        self.wanted
            .iter()
            .map(|(k, w)| w.saturating_sub(self.copies.get(k).map_or(0, Vec::len)))
            .sum()
    }

    /// How many copies each searcher serves.
    pub fn load(&self) -> HashMap<String, usize> {
        let mut load = HashMap::new();
        for nodes in self.copies.values() {
            for n in nodes {
                *load.entry(n.clone()).or_insert(0) += 1;
            }
        }
        load
    }
}

/// Places the searcher copies of `shards` (key, copies wanted) on `searchers`: each shard
/// walks its rendezvous order and takes a searcher unless (a) its zone already holds the
/// zone's share of the shard's copies (forced awareness over `awareness_zones`, or the
/// searchers' zones when none are configured), or (b) the searcher is at the cap,
/// `ceil(copies / provisioned × (1 + skew)) + flat_skew`, so losing a zone leaves copies
/// unassigned instead of piling them onto the survivors. Deterministic: every node
/// computes the same plan from the same view.
pub fn plan_copies(
    searchers: &[NodeInfo],
    shards: &[(String, u32)],
    rules: &PlacementRules,
) -> CopyPlan {
    let mut plan = CopyPlan::default();
    if searchers.is_empty() {
        for (key, copies) in shards {
            plan.wanted.insert(key.clone(), (*copies).max(1) as usize);
        }
        return plan;
    }
    let mut zones: Vec<String> = if rules.awareness_zones.is_empty() {
        searchers.iter().map(|n| n.zone.clone()).collect()
    } else {
        rules.awareness_zones.clone()
    };
    zones.sort();
    zones.dedup();
    let total: usize = shards.iter().map(|(_, c)| (*c).max(1) as usize).sum();
    let provisioned = if rules.provisioned_searchers > 0 {
        rules.provisioned_searchers as usize
    } else {
        searchers.len()
    };
    let skew = 1.0 + rules.skew_factor_percent as f64 / 100.0;
    plan.cap =
        (total as f64 / provisioned as f64 * skew).ceil() as usize + rules.flat_skew as usize;
    let mut load: HashMap<String, usize> = HashMap::new();
    let mut sorted: Vec<&(String, u32)> = shards.iter().collect();
    sorted.sort();
    for (key, copies) in sorted {
        let wanted = (*copies).max(1) as usize;
        plan.wanted.insert(key.clone(), wanted);
        // Each zone's share of this shard's copies (forced awareness).
        let per_zone = wanted.div_ceil(zones.len().max(1));
        let mut in_zone: HashMap<String, usize> = HashMap::new();
        let mut chosen: Vec<String> = Vec::new();
        let mut refused: Vec<(String, String)> = Vec::new();
        for node in rank(searchers, key) {
            let (id, zone) = (node.node_id, node.zone);
            let zone_count = in_zone.get(&zone).copied().unwrap_or(0);
            let node_load = load.get(&id).copied().unwrap_or(0);
            if chosen.len() == wanted {
                refused.push((id, format!("the shard has its {wanted} copies")));
            } else if zones.len() > 1 && zone_count >= per_zone {
                refused.push((id, format!("forced awareness: zone [{zone}] already holds {zone_count} of the shard's copies (its share of {wanted} over zones {zones:?})")));
            } else if node_load >= plan.cap {
                refused.push((
                    id,
                    format!(
                        "load awareness: the searcher serves {node_load} copies, the cap is {}",
                        plan.cap
                    ),
                ));
            } else {
                *in_zone.entry(zone).or_insert(0) += 1;
                *load.entry(id.clone()).or_insert(0) += 1;
                chosen.push(id);
            }
        }
        plan.copies.insert(key.clone(), chosen);
        plan.refusals.insert(key.clone(), refused);
    }
    plan
}

impl ClusterView {
    /// Tells the metastore this node is shutting down (its shards move at once) and stops
    /// heartbeating. Best effort, bounded: a metastore that cannot be reached finds out by
    /// the node timeout.
    pub async fn leave(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Release);
        let Some(url) = self.metastore_url.lock().expect("view lock").clone() else {
            return;
        };
        let Ok(endpoint) = self.endpoint_of(url) else {
            return;
        };
        let call = async {
            let channel = endpoint.connect().await.ok()?;
            MetastoreClient::with_interceptor(channel, self.secret())
                .leave(LeaveRequest {
                    node_id: self.node_id(),
                })
                .await
                .ok()
        };
        match tokio::time::timeout(Duration::from_secs(2), call).await {
            Ok(Some(_)) => info!("left the cluster"),
            _ => warn!("could not tell the metastore this node is leaving"),
        }
    }
}

/// Nodes ordered by their rendezvous score for `key` (highest first).
/// The writer of `shard` of index `uuid`, zone-aware: with writers in several zones, an
/// index's shards go round the zones in turn (from a per-index starting zone, so one-shard
/// indexes spread too), so each zone holds an equal share of every index, as OpenSearch's
/// forced awareness spreads copies; within its zone a shard goes to the writer ranking
/// first for it (rendezvous hashing: a writer joining or leaving moves only shards it gains
/// or held). The zones are `awareness_zones` when configured — then a zone losing all its
/// writers moves only its own shards, to the live writers ranking first for them — else
/// the zones of the live writers. One zone (or none set): plain rendezvous hashing.
pub fn place_writer(
    writers: &[NodeInfo],
    awareness_zones: &[String],
    uuid: &str,
    shard: u32,
) -> Option<NodeInfo> {
    let key = format!("{uuid}/{shard}");
    let mut zones: Vec<&str> = if awareness_zones.is_empty() {
        writers.iter().map(|w| w.zone.as_str()).collect()
    } else {
        awareness_zones.iter().map(String::as_str).collect()
    };
    zones.sort_unstable();
    zones.dedup();
    if zones.len() > 1 {
        let start = murmur3::murmur3_32(&mut Cursor::new(uuid.as_bytes()), 0x5eed)
            .expect("hashing from memory cannot fail") as usize;
        let zone = zones[(start + shard as usize) % zones.len()];
        let in_zone: Vec<NodeInfo> = writers.iter().filter(|w| w.zone == zone).cloned().collect();
        if let Some(w) = rank(&in_zone, &key).into_iter().next() {
            return Some(w);
        }
    }
    rank(writers, &key).into_iter().next()
}

fn rank(nodes: &[NodeInfo], key: &str) -> Vec<NodeInfo> {
    let mut scored: Vec<(u128, &NodeInfo)> = nodes
        .iter()
        .map(|n| {
            let text = format!("{key}\u{0}{}", n.node_id);
            let score = murmur3::murmur3_x64_128(&mut Cursor::new(text.as_bytes()), 0x5eed)
                .expect("hashing from memory cannot fail");
            (score, n)
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.node_id.cmp(&b.1.node_id)));
    scored.into_iter().map(|(_, n)| n.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, role: &str) -> NodeInfo {
        NodeInfo {
            node_id: id.into(),
            role: role.into(),
            ..Default::default()
        }
    }

    #[test]
    fn placement_is_balanced_and_moves_little() {
        let view = ClusterView::new(node("s1", role::SEARCHER));
        view.update(vec![
            node("w1", role::WRITER),
            node("w2", role::WRITER),
            node("w3", role::WRITER),
        ]);
        let owners: Vec<String> = (0..3000)
            .map(|s| view.writer_for("u", s).unwrap().node_id)
            .collect();
        for w in ["w1", "w2", "w3"] {
            let n = owners.iter().filter(|o| *o == w).count();
            assert!((850..1150).contains(&n), "{w} owns {n} of 3000 shards");
        }
        // w3 leaves: only its shards move.
        let mut rx = view.subscribe();
        view.update(vec![node("w1", role::WRITER), node("w2", role::WRITER)]);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        for (s, before) in owners.iter().enumerate() {
            let after = view.writer_for("u", s as u32).unwrap().node_id;
            if before != "w3" {
                assert_eq!(&after, before, "shard {s} moved without reason");
            }
        }
        // A searcher joining does not move writer shards.
        view.update(vec![
            node("w1", role::WRITER),
            node("w2", role::WRITER),
            node("s2", role::SEARCHER),
        ]);
        assert!(!rx.has_changed().unwrap());
        assert_eq!(view.searchers_for("k").len(), 2);
    }

    #[test]
    fn writers_take_an_equal_share_of_each_index_per_zone() {
        let w = |id: &str, zone: &str| NodeInfo {
            zone: zone.into(),
            ..node(id, role::WRITER)
        };
        let writers = vec![w("a1", "a"), w("a2", "a"), w("b1", "b")];
        let owners = |writers: &[NodeInfo], zones: &[String], uuid: &str, n: u32| -> Vec<String> {
            (0..n)
                .map(|s| place_writer(writers, zones, uuid, s).unwrap().node_id)
                .collect()
        };
        for uuid in ["idx-1", "idx-2", "idx-3"] {
            let placed = owners(&writers, &[], uuid, 10);
            let in_b = placed.iter().filter(|o| *o == "b1").count();
            assert_eq!(in_b, 5, "{uuid}: {placed:?}");
            // Zone b lost: only its shards move, to zone a.
            let after = owners(&writers[..2], &[], uuid, 10);
            for (before, now) in placed.iter().zip(&after) {
                if before != "b1" {
                    assert_eq!(before, now, "{uuid}");
                }
            }
        }
        // One-shard indexes spread over the zones too.
        let single: Vec<String> = (0..200)
            .map(|i| {
                place_writer(&writers, &[], &format!("i{i}"), 0)
                    .unwrap()
                    .node_id
            })
            .collect();
        let in_b = single.iter().filter(|o| *o == "b1").count();
        assert!((70..130).contains(&in_b), "{in_b} of 200 in zone b");
        // Configured zones: zone c's writer gets a third; when it is gone only its shards
        // move (with the live zones only, a and b would split everything anew).
        let zones = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let mut with_c = writers.clone();
        with_c.push(w("c1", "c"));
        let full = owners(&with_c, &zones, "idx-1", 9);
        assert_eq!(full.iter().filter(|o| *o == "c1").count(), 3, "{full:?}");
        let without_c = owners(&writers, &zones, "idx-1", 9);
        for (before, now) in full.iter().zip(&without_c) {
            if before != "c1" {
                assert_eq!(before, now, "{full:?} → {without_c:?}");
            }
        }
        // Writers without zones: plain rendezvous, as before.
        let plain = vec![node("w1", role::WRITER), node("w2", role::WRITER)];
        assert_eq!(
            place_writer(&plain, &[], "u", 3).unwrap().node_id,
            rank(&plain, "u/3")[0].node_id
        );
    }

    fn searcher(id: &str, zone: &str) -> NodeInfo {
        NodeInfo {
            node_id: id.into(),
            role: role::SEARCHER.into(),
            zone: zone.into(),
            ..Default::default()
        }
    }

    #[test]
    fn copies_spread_over_zones_and_respect_the_cap() {
        let rules = PlacementRules {
            awareness_zones: vec!["a".into(), "b".into()],
            provisioned_searchers: 4,
            skew_factor_percent: 50,
            flat_skew: 0,
        };
        let shards: Vec<(String, u32)> = (0..40).map(|i| (format!("u/{i}"), 2)).collect();
        let all = [
            searcher("a1", "a"),
            searcher("a2", "a"),
            searcher("b1", "b"),
            searcher("b2", "b"),
        ];
        let plan = plan_copies(&all, &shards, &rules);
        assert_eq!(plan.unassigned(), 0);
        for nodes in plan.copies.values() {
            let zones: Vec<&str> = nodes.iter().map(|n| &n[..1]).collect();
            assert!(zones.contains(&"a") && zones.contains(&"b"), "{nodes:?}");
        }
        // Zone b lost: its copies stay unassigned (not piled onto zone a), within the cap.
        let plan = plan_copies(&all[..2], &shards, &rules);
        assert_eq!(plan.unassigned(), 40);
        assert!(
            plan.load().values().all(|l| *l <= plan.cap),
            "{:?} cap {}",
            plan.load(),
            plan.cap
        );
        let why = &plan.refusals["u/0"];
        assert!(
            why.iter().any(|(_, r)| r.contains("forced awareness")),
            "{why:?}"
        );
    }

    #[test]
    fn restarted_metastore_is_unsettled_then_prunes_silent_nodes() {
        let m = Membership::new(
            node("m1", role::METASTORE),
            Duration::from_millis(50),
            PlacementRules::default(),
        );
        let a = m.heartbeat(node("w1", role::WRITER), 0);
        assert!(!a.settled);
        assert_eq!(a.nodes.len(), 2);
        // Nothing changed: no list.
        let again = m.heartbeat(node("w1", role::WRITER), a.version);
        assert!(again.unchanged && again.nodes.is_empty());
        std::thread::sleep(COALESCE + Duration::from_millis(20));
        let b = m.heartbeat(node("w2", role::WRITER), a.version);
        assert!(b.settled && !b.unchanged);
        assert!(b.version > a.version);
        let ids: Vec<&str> = b.nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, vec!["m1", "w2"]);
    }
}
