//! Membership: which nodes are alive (the metastore role's registry of heartbeats) and the
//! view every other node keeps of it, from which shard placement follows.
//!
//! Placement is a pure function of the live node set (rendezvous hashing), so every node
//! computes the same answer from the same view without the metastore storing or sending an
//! assignment table: a shard moves only when its best-ranked writer joins or leaves. Views
//! can disagree for a heartbeat interval; shard leases in the bucket keep that safe (a
//! writer cannot take a shard whose owner is still live until the owner gives it up).

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use floe_proto::rpc::metastore_client::MetastoreClient;
use floe_proto::rpc::metastore_server::Metastore as MetastoreRpc;
use floe_proto::rpc::{HeartbeatRequest, HeartbeatResponse, NodeInfo};
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
    timeout: Duration,
    started: Instant,
    nodes: Mutex<HashMap<String, (NodeInfo, Instant)>>,
}

impl Membership {
    /// `timeout`: how long a node may stay silent before it counts as gone (its shards
    /// move). A restarted metastore answers "not settled" for that long, so nodes do not
    /// mistake its empty registry for a cluster that shrank.
    pub fn new(me: NodeInfo, timeout: Duration) -> Arc<Membership> {
        Arc::new(Membership {
            me,
            timeout,
            started: Instant::now(),
            nodes: Mutex::new(HashMap::new()),
        })
    }

    /// Records a heartbeat and answers with every live node.
    pub fn heartbeat(&self, node: NodeInfo) -> HeartbeatResponse {
        let now = Instant::now();
        let mut nodes = self.nodes.lock().expect("membership lock");
        if !nodes.contains_key(&node.node_id) {
            info!(node = %node.node_id, role = %node.role, zone = %node.zone, "node joined");
        }
        nodes.insert(node.node_id.clone(), (node, now));
        let timeout = self.timeout;
        nodes.retain(|id, (n, seen)| {
            let live = now.duration_since(*seen) <= timeout;
            if !live {
                info!(node = %id, role = %n.role, "node left (no heartbeat)");
            }
            live
        });
        let mut live: Vec<NodeInfo> = nodes.values().map(|(n, _)| n.clone()).collect();
        drop(nodes);
        live.push(self.me.clone());
        live.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        HeartbeatResponse {
            nodes: live,
            settled: now.duration_since(self.started) > timeout,
            node_timeout_ms: timeout.as_millis() as u64,
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
        let node = request
            .into_inner()
            .node
            .ok_or_else(|| tonic::Status::invalid_argument("heartbeat without node"))?;
        Ok(tonic::Response::new(self.0.heartbeat(node)))
    }
}

/// A node's view of the cluster: the live nodes as the metastore last answered, plus
/// itself. Placement is computed from it.
pub struct ClusterView {
    me: RwLock<NodeInfo>,
    nodes: RwLock<Arc<Vec<NodeInfo>>>,
    /// Bumped whenever the set of writers changes (shards may have moved).
    changed: watch::Sender<u64>,
    last_heard: Mutex<Option<Instant>>,
}

impl ClusterView {
    pub fn new(me: NodeInfo) -> Arc<ClusterView> {
        Arc::new(ClusterView {
            nodes: RwLock::new(Arc::new(vec![me.clone()])),
            me: RwLock::new(me),
            changed: watch::channel(0).0,
            last_heard: Mutex::new(None),
        })
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

    /// The writer that owns `shard` of index `uuid`: the live writer ranking first for it.
    pub fn writer_for(&self, uuid: &str, shard: u32) -> Option<NodeInfo> {
        let key = format!("{uuid}/{shard}");
        rank(&self.with_role(role::WRITER), &key).into_iter().next()
    }

    /// Live searchers in the order they should serve `key` (same key, same order on every
    /// node: the first one's cache holds it; the next takes over if it fails).
    pub fn searchers_for(&self, key: &str) -> Vec<NodeInfo> {
        rank(&self.with_role(role::SEARCHER), key)
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
        let mut current = self.nodes.write().expect("view lock");
        let moved = writers(&current) != writers(&nodes);
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
        let mut client: Option<MetastoreClient<tonic::transport::Channel>> = None;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        loop {
            tick.tick().await;
            let node = {
                let mut me = self.me.write().expect("view lock");
                describe(&mut me);
                me.clone()
            };
            if client.is_none() {
                match tonic::transport::Endpoint::from_shared(url.clone()) {
                    Ok(e) => {
                        let e = e.connect_timeout(interval).timeout(interval * 2);
                        client = Some(MetastoreClient::new(e.connect_lazy()));
                    }
                    Err(e) => {
                        warn!("bad metastore address {url}: {e}");
                        return;
                    }
                }
            }
            let c = client.as_mut().expect("client set above");
            match c.heartbeat(HeartbeatRequest { node: Some(node) }).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    if failures > 0 {
                        info!("metastore reachable again");
                    }
                    failures = 0;
                    *self.last_heard.lock().expect("view lock") = Some(Instant::now());
                    if answer.settled {
                        self.update(answer.nodes);
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

/// Nodes ordered by their rendezvous score for `key` (highest first).
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
    fn restarted_metastore_is_unsettled_then_prunes_silent_nodes() {
        let m = Membership::new(node("m1", role::METASTORE), Duration::from_millis(50));
        let a = m.heartbeat(node("w1", role::WRITER));
        assert!(!a.settled);
        assert_eq!(a.nodes.len(), 2);
        std::thread::sleep(Duration::from_millis(80));
        let b = m.heartbeat(node("w2", role::WRITER));
        assert!(b.settled);
        let ids: Vec<&str> = b.nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, vec!["m1", "w2"]);
    }
}
