//! Prefetch of newly published segments: a searcher keeps the shards it serves open at their
//! newest commits in the background, which fetches each new segment's hot cache (and delete
//! bitsets) before any query needs them. Fresh data then costs a query no cold round trip.
//! Per index with `index.floe.prefetch` (on by default).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tracing::debug;

use crate::SearchService;

/// Whether this process serves searches of a shard: (index uuid, shard number).
pub type Serves = Arc<dyn Fn(&str, u32) -> bool + Send + Sync>;

/// Shards opened at once by one prefetch round.
const PARALLEL_OPENS: usize = 16;

impl SearchService {
    /// Every `interval`, opens the served shards whose newest known commit is not open yet.
    pub async fn run_prefetch_loop(self: Arc<Self>, serves: Serves, interval: Duration) {
        loop {
            self.prefetch_round(&serves).await;
            tokio::time::sleep(interval).await;
        }
    }

    /// One pass over the known indexes; returns how many shards it opened.
    pub async fn prefetch_round(&self, serves: &Serves) -> usize {
        let mut due = Vec::new();
        for meta in self.metastore.list_indexes() {
            if !meta.settings.prefetch {
                continue;
            }
            for (&shard, commit) in &meta.shards {
                if serves(&meta.uuid, shard)
                    && !self
                        .readers
                        .is_open_at(&meta.uuid, shard, commit.generation)
                {
                    due.push((meta.clone(), shard, commit.clone()));
                }
            }
        }
        futures::stream::iter(due)
            .map(|(meta, shard, commit)| async move {
                match self.readers.shard(&meta, shard, &commit).await {
                    Ok(_) => 1,
                    Err(e) => {
                        debug!(index = %meta.name, shard, "prefetch failed (a query retries): {e}");
                        0
                    }
                }
            })
            .buffer_unordered(PARALLEL_OPENS)
            .fold(0, |n, opened| async move { n + opened })
            .await
    }
}
