//! A node's handle on the rest of the cluster: gRPC channels to the other nodes, the
//! membership view, and the writer's [`Peers`] (forwarding, refresh propagation).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use floe_metastore::membership::role;
use floe_metastore::membership::CopyPlan;
use floe_metastore::{ClusterView, Metastore};
use floe_proto::rpc::node_client::NodeClient;
use floe_proto::secret::ClusterSecret;
use tonic::service::interceptor::InterceptedService;

/// A client of another node's `Node` service, presenting the cluster secret.
pub type NodeRpc = NodeClient<InterceptedService<Channel, ClusterSecret>>;
use floe_proto::rpc::{
    CommitsRequest, ForwardOp, ForwardRequest, ItemResult, NodeInfo, RefreshRequest, RestRequest,
    RestResponse, ShardRef,
};
use floe_writer::Peers;
use tonic::transport::Channel;
use tracing::warn;

/// Largest gRPC message between nodes (a forwarded `_bulk` is as large as the request).
pub const MAX_MESSAGE: usize = 512 << 20;

pub struct ClusterPeers {
    pub view: Arc<ClusterView>,
    channels: Mutex<HashMap<String, Channel>>,
    /// The last searcher copy plan: when it was made, for which view generation.
    plan: Mutex<Option<(Instant, u64, Arc<CopyPlan>)>>,
}

impl ClusterPeers {
    pub fn new(view: Arc<ClusterView>) -> Arc<ClusterPeers> {
        Arc::new(ClusterPeers {
            view,
            channels: Mutex::new(HashMap::new()),
            plan: Mutex::new(None),
        })
    }

    /// Which searchers serve which shard copies, for every shard the metastore knows
    /// (recomputed when the nodes change, and at least every half second for new indexes).
    pub fn copy_plan(&self, metastore: &Metastore) -> Arc<CopyPlan> {
        let generation = self.view.generation();
        let mut cached = self.plan.lock().expect("plan lock");
        if let Some((at, made_for, plan)) = cached.as_ref() {
            if *made_for == generation && at.elapsed() < Duration::from_millis(500) {
                return plan.clone();
            }
        }
        let shards: Vec<(String, u32)> = metastore
            .list_indexes()
            .iter()
            .flat_map(|m| {
                (0..m.settings.number_of_shards)
                    .map(move |s| (format!("{}/{s}", m.uuid), m.settings.number_of_replicas))
            })
            .collect();
        let plan = Arc::new(self.view.plan_copies(&shards));
        *cached = Some((Instant::now(), generation, plan.clone()));
        plan
    }

    /// The node ids of the live writers.
    pub fn live_writers(&self) -> Vec<String> {
        self.view
            .with_role(role::WRITER)
            .into_iter()
            .map(|n| n.node_id)
            .collect()
    }

    /// A client for `node` (one lazily connected channel per address, reused).
    pub fn client(&self, node: &NodeInfo) -> Result<NodeRpc, String> {
        let addr = node.grpc_addr.clone();
        let mut channels = self.channels.lock().expect("channels lock");
        let channel = match channels.get(&addr) {
            Some(c) => c.clone(),
            None => {
                let c = self
                    .view
                    .endpoint(&addr)
                    .map_err(|e| format!("bad gRPC address of [{}]: {e}", node.node_id))?
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(Duration::from_secs(120))
                    .connect_lazy();
                channels.insert(addr, c.clone());
                c
            }
        };
        Ok(NodeClient::with_interceptor(channel, self.view.secret())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    fn node(&self, id: &str) -> Option<NodeInfo> {
        self.view.nodes().iter().find(|n| n.node_id == id).cloned()
    }

    fn others(&self, role: &str) -> Vec<NodeInfo> {
        let me = self.view.node_id();
        self.view
            .with_role(role)
            .into_iter()
            .filter(|n| n.node_id != me)
            .collect()
    }

    /// Live nodes of `role` in the order a request keyed by `key` should try them: same
    /// zone first, then rendezvous order (so the same key lands on the same node).
    pub fn candidates(&self, role: &str, key: &str) -> Vec<NodeInfo> {
        let zone = self.view.me().zone;
        let mut ranked: Vec<NodeInfo> = if role == role::SEARCHER {
            self.view.searchers_for(key)
        } else {
            self.view.with_role(role)
        };
        ranked.retain(|n| n.node_id != self.view.node_id());
        ranked.sort_by_key(|n| n.zone != zone);
        ranked
    }

    /// Sends a REST call to `node`, which answers it as if it had received it.
    pub async fn rest(&self, node: &NodeInfo, req: RestRequest) -> Result<RestResponse, String> {
        let mut client = self.client(node)?;
        client
            .rest(crate::trace::request(req))
            .await
            .map(|r| r.into_inner())
            .map_err(|e| format!("[{}]: {}", node.node_id, e.message()))
    }
}

#[async_trait]
impl Peers for ClusterPeers {
    fn remote_owner(&self, uuid: &str, shard: u32) -> Option<String> {
        let owner = self.view.writer_for(uuid, shard)?;
        (owner.node_id != self.view.node_id()).then_some(owner.node_id)
    }

    async fn forward(
        &self,
        node: &str,
        ops: Vec<ForwardOp>,
        refresh: bool,
    ) -> Result<Vec<ItemResult>, String> {
        let target = self
            .node(node)
            .ok_or_else(|| format!("writer [{node}] is not in the cluster"))?;
        let mut client = self.client(&target)?;
        client
            .forward(crate::trace::request(ForwardRequest { ops, refresh }))
            .await
            .map(|r| r.into_inner().items)
            .map_err(|e| e.message().to_string())
    }

    async fn refresh_others(&self, indexes: &[String]) -> Result<(), String> {
        let calls = self.others(role::WRITER).into_iter().map(|w| async move {
            let mut client = self.client(&w)?;
            client
                .refresh(crate::trace::request(RefreshRequest {
                    indexes: indexes.to_vec(),
                }))
                .await
                .map(|_| ())
                .map_err(|e| format!("refresh on writer [{}] failed: {}", w.node_id, e.message()))
        });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, String>>()
            .map(|_| ())
    }

    async fn commits_published(&self, shards: &[(String, u32)]) {
        if shards.is_empty() {
            return;
        }
        tracing::debug!(shards = shards.len(), "telling searchers about new commits");
        let request = CommitsRequest {
            shards: shards
                .iter()
                .map(|(uuid, shard)| ShardRef {
                    index_uuid: uuid.clone(),
                    shard: *shard,
                })
                .collect(),
        };
        let calls = self.others(role::SEARCHER).into_iter().map(|s| {
            let request = request.clone();
            async move {
                let Ok(mut client) = self.client(&s) else { return };
                let call = client.commits_published(crate::trace::request(request));
                match tokio::time::timeout(Duration::from_secs(5), call).await {
                    Ok(Ok(_)) => {}
                    // A searcher that misses this still sees the commits through the
                    // change log within a poll interval.
                    Ok(Err(e)) => warn!(searcher = %s.node_id, "telling a searcher about new commits failed: {}", e.message()),
                    Err(_) => warn!(searcher = %s.node_id, "telling a searcher about new commits timed out"),
                }
            }
        });
        futures::future::join_all(calls).await;
    }
}

/// Where a shard's primary (its writer) stands, as health, `_cat/shards` and allocation
/// explain report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Primary {
    /// Held by this live writer.
    Owned(String),
    /// Held by a writer that is gone (not taken over yet).
    Gone(String),
    /// Nobody holds it and a writer is live: the next write opens it.
    Unowned,
    /// Nobody holds it and no writer is live.
    NoWriter,
}

impl Primary {
    /// `writers`: the live writers ([`ClusterPeers::live_writers`]).
    pub fn of(metastore: &Metastore, writers: &[String], uuid: &str, shard: u32) -> Primary {
        match metastore.shard_owner(uuid, shard) {
            Some(o) if writers.contains(&o.node_id) => Primary::Owned(o.node_id),
            Some(o) => Primary::Gone(o.node_id),
            None if writers.is_empty() => Primary::NoWriter,
            None => Primary::Unowned,
        }
    }

    pub fn active(&self) -> bool {
        matches!(self, Primary::Owned(_) | Primary::Unowned)
    }
}
