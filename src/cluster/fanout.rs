//! Search fan-out on a searcher: each shard goes to the searcher ranking first for it
//! (rendezvous hashing over live searchers, so the same shard lands in the same cache), a
//! failed leaf's shards to the next one in their order.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use floe_metastore::Metastore;
use floe_proto::rpc::{LeafSearchRequest, NodeInfo};
use floe_searcher::{
    Fanout, LeafRequest, Partial, SearchError, SearchService, ShardFailure, ShardTarget,
};
use tracing::{debug, warn};

use super::peers::ClusterPeers;

/// How many searchers a shard is tried on before the search reports it failed.
const TRIES: usize = 3;

pub struct SearchFanout {
    pub peers: Arc<ClusterPeers>,
    pub metastore: Arc<Metastore>,
    /// This node's searcher (leaves placed here run without a network hop).
    pub local: Weak<SearchService>,
}

enum LeafError {
    /// The request is wrong: every searcher would say so.
    Request(SearchError),
    /// This searcher could not answer: try the next.
    Node(String),
}

impl SearchFanout {
    async fn run_leaf(
        &self,
        node: &NodeInfo,
        request: &LeafRequest,
        targets: Vec<ShardTarget>,
    ) -> Result<Partial, LeafError> {
        if node.node_id == self.peers.view.node_id() {
            let local = self
                .local
                .upgrade()
                .ok_or_else(|| LeafError::Node("searcher shutting down".into()))?;
            return local.leaf_search(request, targets).await.map_err(|e| {
                if e.is_request_error() {
                    LeafError::Request(e)
                } else {
                    LeafError::Node(e.to_string())
                }
            });
        }
        let wire = LeafSearchRequest {
            request_json: serde_json::to_vec(request).expect("serializable"),
            targets_json: serde_json::to_vec(&targets).expect("serializable"),
        };
        let mut client = self.peers.client(node).map_err(LeafError::Node)?;
        let answer = client
            .leaf_search(crate::trace::request(wire))
            .await
            .map_err(|e| LeafError::Node(format!("[{}]: {}", node.node_id, e.message())))?
            .into_inner();
        if !answer.error_kind.is_empty() {
            return Err(LeafError::Request(SearchError::from_wire(
                &answer.error_kind,
                answer.error_message,
            )));
        }
        serde_json::from_slice(&answer.partial_json)
            .map_err(|e| LeafError::Node(format!("[{}] answered garbage: {e}", node.node_id)))
    }
}

#[async_trait]
impl Fanout for SearchFanout {
    async fn leaf_searches(
        &self,
        request: &LeafRequest,
        targets: Vec<ShardTarget>,
    ) -> Result<(Vec<Partial>, Vec<ShardFailure>), SearchError> {
        // Each shard with the searchers it may run on: the ones serving its copies first
        // (their caches hold it), then any other (every searcher can read any shard).
        let plan = self.peers.copy_plan(&self.metastore);
        let mut pending: Vec<(ShardTarget, Vec<NodeInfo>)> = targets
            .into_iter()
            .map(|t| {
                let key = format!("{}/{}", t.uuid, t.shard);
                let mut order = self.peers.view.searchers_for(&key);
                if let Some(copies) = plan.copies.get(&key) {
                    // A copy held here runs here (no hop); other copies in plan order.
                    let me = self.peers.view.node_id();
                    order.sort_by_key(|n| {
                        let at = copies.iter().position(|c| *c == n.node_id);
                        match at {
                            Some(_) if n.node_id == me => 0,
                            Some(i) => 1 + i,
                            None => usize::MAX,
                        }
                    });
                }
                (t, order.into_iter().take(TRIES).collect())
            })
            .collect();
        let mut partials = Vec::new();
        let mut failures = Vec::new();
        while !pending.is_empty() {
            let mut groups: HashMap<String, (NodeInfo, Vec<(ShardTarget, Vec<NodeInfo>)>)> =
                HashMap::new();
            for (t, mut order) in pending.drain(..) {
                if order.is_empty() {
                    failures.push(ShardFailure {
                        shards: vec![t],
                        node: String::new(),
                        reason: "no searcher is live".into(),
                    });
                    continue;
                }
                let node = order.remove(0);
                groups
                    .entry(node.node_id.clone())
                    .or_insert_with(|| (node, Vec::new()))
                    .1
                    .push((t, order));
            }
            let runs = groups.into_values().map(|(node, shards)| async move {
                let targets: Vec<ShardTarget> = shards.iter().map(|(t, _)| t.clone()).collect();
                let result = self.run_leaf(&node, request, targets).await;
                (node, shards, result)
            });
            for (node, shards, result) in futures::future::join_all(runs).await {
                match result {
                    Ok(p) => partials.push(p),
                    Err(LeafError::Request(e)) => return Err(e),
                    Err(LeafError::Node(reason)) => {
                        let (retry, give_up): (Vec<_>, Vec<_>) =
                            shards.into_iter().partition(|(_, rest)| !rest.is_empty());
                        if retry.is_empty() {
                            warn!(node = %node.node_id, "leaf search failed, no searcher left: {reason}");
                        } else {
                            debug!(node = %node.node_id, shards = retry.len(), "leaf search failed, trying the next searcher: {reason}");
                        }
                        if !give_up.is_empty() {
                            failures.push(ShardFailure {
                                shards: give_up.into_iter().map(|(t, _)| t).collect(),
                                node: node.node_id.clone(),
                                reason,
                            });
                        }
                        pending.extend(retry);
                    }
                }
            }
        }
        Ok((partials, failures))
    }
}
