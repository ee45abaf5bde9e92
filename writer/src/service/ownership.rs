//! Shard ownership on this writer: opening a shard (grant, replay of earlier owners' logs),
//! taking over shards of writers that are gone, closing idle shards, the node session's
//! renewal, and collecting gone writers' translogs.

use super::*;
use std::collections::HashSet;
use std::sync::Mutex;

impl Writer {
    /// `shard`'s sections in an earlier incarnation's writer-wide log, listed now.
    pub(super) async fn earlier_sections(
        &self,
        owner: &ShardOwner,
        section: &str,
    ) -> Result<Vec<Segment>, WriterError> {
        self.earlier_logs
            .sections(&self.storage, owner, section)
            .await
    }

    pub(super) async fn shard(
        &self,
        meta: &IndexMeta,
        shard: u32,
    ) -> Result<Arc<ShardWriter>, WriterError> {
        let key = (meta.uuid.clone(), shard);
        if let Some(s) = self.open_shard(&key).await {
            return Ok(s);
        }
        let opener = self.opener(&key);
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
        let grant = self.acquire(meta, shard, session.owner()).await?;
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
            blocks: self.blocks.clone(),
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

    /// The shard's grant. In a cluster, a shard placed here may still be held by the writer
    /// that is handing it over (or by one that died, until its session lapses): wait for it,
    /// bounded by a lease's lifetime.
    async fn acquire(
        &self,
        meta: &IndexMeta,
        shard: u32,
        owner: &ShardOwner,
    ) -> Result<floe_metastore::Grant, WriterError> {
        let patience =
            self.config.lease_ttl + self.config.clock_skew_margin + Duration::from_secs(1);
        let deadline = Instant::now() + patience;
        loop {
            match self
                .metastore
                .acquire_shard(&meta.name, &meta.uuid, shard, owner)
                .await
            {
                Err(MetastoreError::LeaseHeld { .. })
                    if self.peers().is_some()
                        && !self.is_remote(&meta.uuid, shard)
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return Ok(other?),
            }
        }
    }

    /// Gives up every open shard that the cluster now places on another writer: each is
    /// published, fenced and released (the next owner takes it without waiting for a lease
    /// and has nothing to replay). Returns how many were handed over.
    pub async fn hand_over_moved(&self) -> usize {
        let moved: Vec<(ShardKey, Arc<ShardWriter>)> = self
            .shards
            .lock()
            .await
            .iter()
            .filter(|((uuid, shard), _)| self.is_remote(uuid, *shard))
            .map(|(k, w)| (k.clone(), w.clone()))
            .collect();
        let mut n = 0;
        for (key, writer) in moved {
            match self.hand_over(&key, writer).await {
                Ok(true) => n += 1,
                Ok(false) => {}
                Err(e) => {
                    warn!(index = %key.0, shard = key.1, "handing the shard over failed: {e}")
                }
            }
        }
        n
    }

    async fn hand_over(
        &self,
        key: &ShardKey,
        writer: Arc<ShardWriter>,
    ) -> Result<bool, WriterError> {
        let opener = self.opener(key);
        let _guard = opener.lock().await;
        {
            let mut shards = self.shards.lock().await;
            if !shards.get(key).is_some_and(|w| Arc::ptr_eq(w, &writer)) {
                return Ok(false);
            }
            shards.remove(key);
        }
        // Requests that took the shard before it left the map finish first (bounded).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&writer) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let Some(meta) = self
            .metastore
            .list_indexes()
            .into_iter()
            .find(|m| m.uuid == key.0)
        else {
            writer.fence();
            writer.close_writer();
            return Ok(false);
        };
        // Publish what it holds; if that fails, the next owner replays our log instead.
        let published = self.refresh_shard(&meta.name, key.1, &writer).await;
        // Clean: the published commit holds everything this writer acknowledged.
        let clean = published.is_ok() && writer.is_quiet();
        writer.fence();
        writer.close_writer();
        let (session, _) = self.session().await?;
        self.metastore
            .release_shard(&meta.name, &key.0, key.1, session.owner(), clean)
            .await?;
        info!(index = %meta.name, shard = key.1, published = ?published.map_err(|e| e.to_string()), "shard handed over");
        Ok(true)
    }

    /// The lock that serializes opening (and handing over) one shard.
    fn opener(&self, key: &ShardKey) -> Arc<tokio::sync::Mutex<()>> {
        self.openers
            .lock()
            .expect("openers lock")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// In a cluster: hands over moved shards and takes over shards placed here whose owner
    /// is gone, every `interval` and whenever the set of writers changes.
    pub async fn run_cluster_loop(
        self: Arc<Self>,
        mut changed: tokio::sync::watch::Receiver<u64>,
        interval: Duration,
    ) {
        loop {
            let _ = tokio::time::timeout(interval, changed.changed()).await;
            let handed = self.hand_over_moved().await;
            if handed > 0 {
                info!(
                    shards = handed,
                    "handed shards over to the writers that own them now"
                );
            }
            if self.current_session().is_none() {
                continue;
            }
            match self.recover().await {
                Ok(0) => {}
                Ok(n) => info!(shards = n, "took over shards placed here"),
                Err(e) => debug!("taking over shards placed here failed (retried): {e}"),
            }
        }
    }

    pub(super) async fn open_shard(&self, key: &ShardKey) -> Option<Arc<ShardWriter>> {
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

    /// Drops a shard from this writer (if it is still the one registered under `key`).
    pub(super) async fn forget_shard(&self, key: &ShardKey, writer: &Arc<ShardWriter>) {
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
    pub(super) async fn close_if_unused(
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

    /// Opens the shards whose translog may hold operations above their last commit and
    /// whose owner is gone: this node's previous incarnations, or nodes whose session
    /// lapsed. Replaying them makes acknowledged writes of a crashed writer searchable
    /// without new traffic. Returns how many were opened.
    pub async fn recover(&self) -> Result<usize, WriterError> {
        self.recover_where(|_| true, false).await
    }

    /// [`Writer::recover`] for the indexes (by uuid) `include` selects; with `own_closed`,
    /// also this incarnation's shards that are not open here (closed while idle, or an open
    /// interrupted after its grant).
    pub(super) async fn recover_where(
        &self,
        include: impl Fn(&str) -> bool,
        own_closed: bool,
    ) -> Result<usize, WriterError> {
        let (session, _) = self.session().await?;
        let me = session.owner().clone();
        let mut candidates = Vec::new();
        let mut alive: HashMap<ShardOwner, bool> = HashMap::new();
        for (uuid, shard, record) in self.metastore.shard_records(&include) {
            // In a cluster, only shards placed on this writer.
            if self.is_remote(&uuid, shard) {
                continue;
            }
            let Some(owner) = record.owner else {
                // Released by a writer that handed it over: it may have left operations
                // above the checkpoint if its last publish failed.
                if self.peers().is_some() && !record.log_owners.is_empty() {
                    candidates.push((uuid, shard, record.log_owners.clone(), None));
                }
                continue;
            };
            // Ours but not open here (an open was interrupted after the grant, say): it
            // may hold acknowledged operations too.
            let ours_closed = own_closed && owner == me && {
                let key = (uuid.clone(), shard);
                !self.shards.lock().await.contains_key(&key)
            };
            if owner == me && !ours_closed {
                continue;
            }
            let gone = if ours_closed || owner.node_id == me.node_id {
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
                    logs.push(owner.clone());
                }
                candidates.push((uuid, shard, logs, Some(owner)));
            }
        }
        let indexes = self.metastore.list_indexes();
        let opened: Vec<Result<bool, WriterError>> =
            futures::stream::iter(candidates.into_iter().map(|(uuid, shard, logs, owner)| {
                let meta = indexes.iter().find(|m| m.uuid == uuid).cloned();
                async move {
                    let Some(meta) = meta else { return Ok(false) };
                    let pending = self.has_unpublished(&meta, shard, &logs).await?;
                    info!(index = %meta.name, shard, pending, logs = logs.len(), "shard of a gone writer checked");
                    if !pending {
                        // In a cluster the shard must not stay assigned to a dead writer
                        // (health counts it unassigned): clear the owner; the next write
                        // opens it here without replaying anything.
                        if self.peers().is_some() {
                            match owner {
                                Some(dead) => {
                                    self.metastore
                                        .release_shard(&meta.name, &uuid, shard, &dead, true)
                                        .await?
                                }
                                None => self.metastore.clear_logs(&meta.name, &uuid, shard).await?,
                            }
                        }
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
    pub(super) async fn has_unpublished(
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
        // A section of an index not known here is kept until the bucket shows that index is
        // gone (deleted after the log was written): then a second pass drops it too.
        let unknown = Mutex::new(HashSet::new());
        let deleted = grouplog::collect_dead(&self.storage, &dead, |section| {
            let checkpoint = checkpoints.get(section).copied();
            if checkpoint.is_none() {
                let uuid = grouplog::index_of_section(section).to_string();
                unknown.lock().expect("unknown lock").insert(uuid);
            }
            Some(checkpoint.unwrap_or(0))
        })
        .await?;
        let mut gone = HashSet::new();
        for uuid in unknown.into_inner().expect("unknown lock") {
            if !self.metastore.index_uuid_exists(&uuid).await? {
                gone.insert(uuid);
            }
        }
        if gone.is_empty() {
            return Ok(deleted);
        }
        let of_gone = grouplog::collect_dead(&self.storage, &dead, |section| {
            if gone.contains(grouplog::index_of_section(section)) {
                return None;
            }
            Some(checkpoints.get(section).copied().unwrap_or(0))
        })
        .await?;
        Ok(deleted + of_gone)
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
                Ok(()) => {
                    self.renewals
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
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
}
