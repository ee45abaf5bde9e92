//! Refresh: committing, uploading and publishing shards (explicit `_refresh`, the refresh
//! loop, `_forcemerge`).

use super::*;

impl Writer {
    /// `POST /{index}/_refresh`: commits, uploads and publishes every dirty shard of the
    /// named indexes, so what was written before is searchable when this returns. If this
    /// node's session was lost meanwhile (a new incarnation of this node owns its shards
    /// now), a second round reopens and replays them; a shard another node took over stays
    /// refused.
    #[instrument(skip(self))]
    pub async fn refresh(&self, index_names: &[String]) -> Result<(), WriterError> {
        match self.refresh_round(index_names).await {
            Err(WriterError::LeaseLost(reason)) => {
                debug!("{reason}: one more round");
                self.refresh_round(index_names).await
            }
            other => other,
        }
    }

    async fn refresh_round(&self, index_names: &[String]) -> Result<(), WriterError> {
        let uuids: Vec<(String, String)> = index_names
            .iter()
            .filter_map(|n| self.metastore.get_index(n).map(|m| (m.name, m.uuid)))
            .collect();
        // Shards of these indexes still holding a gone writer's operations are recovered
        // first, so what was acknowledged before a crash is searchable when this returns.
        // Until this node's session is registered (a previous incarnation may still be
        // live), they cannot be: the refresh answers 503 and the client retries.
        self.session().await?;
        self.recover_where(|u| uuids.iter().any(|(_, x)| x == u), true)
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
        let results: Vec<(ShardKey, Result<bool, WriterError>)> =
            futures::stream::iter(targets.into_iter().map(|(name, shard, writer)| async move {
                let key = (writer.spec.index_uuid.clone(), shard);
                (key, self.refresh_shard(&name, shard, &writer).await)
            }))
            .buffer_unordered(8)
            .collect()
            .await;
        let mut published = Vec::new();
        // Shards whose latest commit holds everything acknowledged before this call,
        // whether this call or the refresh loop (a moment ago) published it.
        let mut current = Vec::new();
        let mut first_error = None;
        for (key, r) in results {
            match r {
                Ok(now) => {
                    if now {
                        published.push(key.clone());
                    }
                    current.push(key);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.metastore.announce_commits(published).await;
        if let Some(peers) = self.peers() {
            peers.commits_published(&current).await;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// `POST /{index}/_refresh` in a cluster: this writer's shards and every other
    /// writer's, each telling the searchers before it answers.
    pub async fn refresh_everywhere(&self, index_names: &[String]) -> Result<(), WriterError> {
        let others = async {
            match self.peers() {
                Some(p) => p
                    .refresh_others(index_names)
                    .await
                    .map_err(WriterError::Unavailable),
                None => Ok(()),
            }
        };
        let (mine, others) = futures::join!(self.refresh(index_names), others);
        mine.and(others)
    }

    /// Commits, uploads and publishes one shard. Returns whether a commit was published. A
    /// publish refused because the shard moved to a newer owner fences and closes it here.
    pub(super) async fn refresh_shard(
        &self,
        name: &str,
        shard: u32,
        writer: &Arc<ShardWriter>,
    ) -> Result<bool, WriterError> {
        let _guard = writer.refresh_lock.lock().await;
        // Read only when there is something to commit: an idle shard's refresh costs nothing.
        let date_fields = || {
            self.metastore
                .get_index(name)
                .map(|m| m.mappings.date_fields())
                .unwrap_or_default()
        };
        let Some(prepared) = writer
            .prepare_commit(date_fields)
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
        // Opened by an earlier incarnation of this node (its session was lost): that
        // incarnation may publish nothing; the shard is reopened (and replayed) under this one.
        if session.owner() != writer.owner() {
            writer.mark_dirty();
            writer.fence();
            self.forget_shard(&(writer.spec.index_uuid.clone(), shard), writer)
                .await;
            return Err(WriterError::LeaseLost(format!(
                "[{name}][{shard}] was opened by an earlier incarnation of this node"
            )));
        }
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
            let indexes: HashMap<String, (String, IndexSettings)> = self
                .metastore
                .index_settings()
                .into_iter()
                .map(|(uuid, name, settings)| (uuid, (name, settings)))
                .collect();
            let mut due = Vec::new();
            for (key, writer) in open {
                let Some((name, settings)) = indexes.get(&key.0) else {
                    continue;
                };
                writer.collect_garbage(self.config.gc_grace).await;
                let idle_ms = self.pool.now().saturating_sub(writer.last_used());
                if idle_ms >= self.config.idle_close.as_millis() as u64
                    && writer.is_quiet()
                    && !writer.has_garbage()
                    && self.close_if_unused(&key, &writer, 1).await
                {
                    last.remove(&key);
                    continue;
                }
                let Some(interval) = settings.refresh() else {
                    continue;
                };
                let is_due = last.get(&key).is_none_or(|t| t.elapsed() >= interval);
                if is_due && writer.is_dirty() {
                    last.insert(key.clone(), Instant::now());
                    due.push((name.clone(), key.1, writer));
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
