//! Forwarding between writers: items of shards another writer owns go to it, and items
//! forwarded here are applied here.

use super::*;

impl Writer {
    /// Items another writer forwarded (their shards are ours in its view): applied here,
    /// never passed on again. With `refresh`, published before answering.
    #[instrument(skip(self, ops), fields(items = ops.len()))]
    pub async fn apply_forwarded(
        &self,
        ops: Vec<rpc::ForwardOp>,
        refresh: bool,
    ) -> Result<Vec<rpc::ItemResult>, WriterError> {
        let ops = ops
            .into_iter()
            .map(BulkOp::from_rpc)
            .collect::<Result<Vec<_>, _>>()
            .map_err(WriterError::BadRequest)?;
        let outcomes = self.apply(None, ops, MAX_HOPS, false).await?;
        if refresh {
            self.refresh(&touched_indexes(&outcomes)).await?;
        }
        Ok(outcomes.iter().map(ItemOutcome::to_rpc).collect())
    }

    /// Takes out of `by_index` the positions of items whose shard another writer owns,
    /// grouped by that writer. An index that cannot be resolved stays local (its items fail
    /// there with the right error).
    pub(super) async fn split_remote(
        &self,
        peers: &Arc<dyn Peers>,
        ops: &[BulkOp],
        by_index: &mut BTreeMap<String, Vec<usize>>,
    ) -> BTreeMap<String, Vec<usize>> {
        let mut remote: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (name, positions) in by_index.iter_mut() {
            let Ok(meta) = self.index_or_create(name).await else {
                continue;
            };
            positions.retain(|&i| {
                let op = &ops[i];
                let key = op.routing.as_deref().or(op.id.as_deref()).unwrap_or("");
                let shard = shard_for(key, meta.settings.number_of_shards);
                match peers.remote_owner(&meta.uuid, shard) {
                    Some(node) => {
                        remote.entry(node).or_default().push(i);
                        false
                    }
                    None => true,
                }
            });
        }
        by_index.retain(|_, positions| !positions.is_empty());
        remote
    }

    /// Hands items to the writer that owns their shards; its per-item answers are ours. If
    /// it cannot be reached, the items fail with 503 (nothing was acknowledged).
    #[instrument(skip(self, ops, positions), fields(items = positions.len()))]
    pub(super) async fn forward(
        &self,
        node: String,
        ops: Arc<Vec<BulkOp>>,
        positions: Vec<usize>,
        refresh: bool,
    ) -> (Vec<usize>, Vec<ItemOutcome>) {
        let peers = self.peers().expect("forwarding needs peers");
        let batch: Vec<rpc::ForwardOp> = positions
            .iter()
            .map(|&i| ops[i].to_rpc(ops[i].index.as_deref().unwrap_or_default()))
            .collect();
        let results = match peers.forward(&node, batch, refresh).await {
            Ok(r) if r.len() == positions.len() => positions
                .iter()
                .zip(r)
                .map(|(&i, r)| ItemOutcome::from_rpc(ops[i].kind, r))
                .collect(),
            Ok(_) => self.fail_forwarded(
                &ops,
                &positions,
                format!("writer [{node}] answered a different number of items"),
            ),
            Err(e) => self.fail_forwarded(
                &ops,
                &positions,
                format!("writer [{node}] owning the shard is unreachable: {e}"),
            ),
        };
        (positions, results)
    }

    fn fail_forwarded(
        &self,
        ops: &[BulkOp],
        positions: &[usize],
        reason: String,
    ) -> Vec<ItemOutcome> {
        warn!("{reason}");
        super::apply::fail_items(ops, positions, 503, "unavailable_shards_exception", reason)
    }
}
