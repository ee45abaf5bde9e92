//! The metastore's records in the bucket, with an in-memory copy for reads that the change
//! log keeps current.
//!
//! - `metastore/indexes/<name>.json`: what changes rarely (uuid, settings, mappings);
//! - `metastore/shards/<uuid>/<shard>.json`: the shard's owner, epoch and latest commit
//!   (a publish rewrites only this object);
//! - `metastore/aliases.json`: every alias ([`crate::aliases`]);
//! - `metastore/templates.json`: every index template ([`crate::templates`]);
//! - `metastore/sessions/<node>.json`: node liveness ([`crate::NodeSession`]);
//! - `metastore/log/<seq>`: what changed, for other processes ([`crate::changelog`]).
//!
//! Every write is create-only or compare-and-swap on the ETag, retried with backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use floe_proto::{IndexMeta, IndexSettings, Mappings, ShardCommit, ShardOwner, ShardRecord};
use floe_storage::{Storage, StorageError};
use futures::{StreamExt, TryStreamExt};
use tracing::{debug, info, instrument, warn};

use crate::aliases::{AliasTable, ALIASES_KEY};
use crate::changelog::{Change, ChangeLog, Polled};
use crate::error::{backoff, now_millis, read_record, MetastoreError};
use crate::names::validate_index_name;
use crate::session::owner_alive;
use crate::templates::{TemplateTable, TEMPLATES_KEY};

const INDEXES_PREFIX: &str = "metastore/indexes";
const SHARDS_PREFIX: &str = "metastore/shards";
/// Compare-and-swap attempts before giving up on a contended update.
const MAX_CAS_ATTEMPTS: usize = 32;
/// Concurrent GETs when loading records.
const LOAD_CONCURRENCY: usize = 64;
/// Change-log entries kept for processes that fall behind (older ones are trimmed).
const LOG_KEEP: usize = 2000;

fn index_key(name: &str) -> String {
    format!("{INDEXES_PREFIX}/{name}.json")
}

fn shard_key(uuid: &str, shard: u32) -> String {
    format!("{SHARDS_PREFIX}/{uuid}/{shard}.json")
}

/// A shard granted to a new owner ([`Metastore::acquire_shard`]).
#[derive(Clone, Debug)]
pub struct Grant {
    /// The new epoch (higher than any before).
    pub epoch: u64,
    /// Whether an earlier epoch exists (its late writes must be fenced off).
    pub taken_over: bool,
    /// Other incarnations whose writer-wide translogs may hold operations above the
    /// checkpoint.
    pub earlier_logs: Vec<ShardOwner>,
    /// The index as of the grant, freshly read.
    pub meta: IndexMeta,
}

/// Metastore settings.
#[derive(Clone, Debug)]
pub struct MetastoreOptions {
    /// Assumed bound on clock skew between nodes (see [`crate::NodeSession`]).
    pub clock_skew_margin: Duration,
}

impl Default for MetastoreOptions {
    fn default() -> Self {
        MetastoreOptions {
            clock_skew_margin: Duration::from_millis(1000),
        }
    }
}

struct IndexEntry {
    meta: IndexMeta,
    etag: String,
}

#[derive(Default)]
struct State {
    indexes: BTreeMap<String, IndexEntry>,
    /// Index uuid → name.
    names: HashMap<String, String>,
    /// (uuid, shard) → record and its ETag.
    shards: HashMap<(String, u32), (ShardRecord, String)>,
    /// Every alias, and the record's ETag (`None` while no alias record exists).
    aliases: (AliasTable, Option<String>),
    /// Every template, and the record's ETag.
    templates: (TemplateTable, Option<String>),
    /// Users, roles, mappings and API keys, and the record's ETag.
    security: (std::sync::Arc<floe_security::SecurityTable>, Option<String>),
}

impl State {
    fn put_index(&mut self, entry: IndexEntry) {
        let name = entry.meta.name.clone();
        if let Some(old) = self.indexes.get(&name) {
            if old.meta.uuid != entry.meta.uuid {
                let old_uuid = old.meta.uuid.clone();
                self.drop_uuid(&old_uuid);
            }
        }
        self.names.insert(entry.meta.uuid.clone(), name.clone());
        let mut entry = entry;
        entry.meta.shards = self
            .shards
            .iter()
            .filter(|((u, _), _)| *u == entry.meta.uuid)
            .filter_map(|((_, s), (r, _))| r.commit.clone().map(|c| (*s, c)))
            .collect();
        self.indexes.insert(name, entry);
    }

    fn drop_uuid(&mut self, uuid: &str) {
        self.names.remove(uuid);
        self.shards.retain(|(u, _), _| u != uuid);
    }

    fn remove_index(&mut self, name: &str, uuid: Option<&str>) {
        if let Some(e) = self.indexes.get(name) {
            if uuid.is_none_or(|u| u == e.meta.uuid) {
                let uuid = e.meta.uuid.clone();
                self.indexes.remove(name);
                self.drop_uuid(&uuid);
            }
        }
    }

    fn put_shard(&mut self, uuid: &str, shard: u32, record: ShardRecord, etag: String) {
        if let Some(entry) = self.names.get(uuid).and_then(|n| self.indexes.get_mut(n)) {
            match &record.commit {
                // Never step back to an older commit (a slow read racing a newer one).
                Some(c) => {
                    let newer =
                        entry.meta.shards.get(&shard).is_none_or(|old| {
                            (c.epoch, c.generation) >= (old.epoch, old.generation)
                        });
                    if newer {
                        entry.meta.shards.insert(shard, c.clone());
                    }
                }
                None => {
                    entry.meta.shards.remove(&shard);
                }
            }
        }
        self.shards
            .insert((uuid.to_string(), shard), (record, etag));
    }
}

/// The metastore. Reads come from memory; every write goes to the bucket first; changes by
/// other processes arrive through the change log ([`Metastore::run_tail`]).
pub struct Metastore {
    storage: Storage,
    options: MetastoreOptions,
    /// Names this process in the change log.
    origin: String,
    state: RwLock<State>,
    log: ChangeLog,
    /// Changes made here whose log entry could not be written yet (retried by the tail).
    unannounced: std::sync::Mutex<Vec<Change>>,
}

impl Metastore {
    /// Opens the metastore with default options and loads every record from the bucket.
    pub async fn open(storage: Storage) -> Result<Metastore, MetastoreError> {
        Self::open_with(storage, MetastoreOptions::default()).await
    }

    pub async fn open_with(
        storage: Storage,
        options: MetastoreOptions,
    ) -> Result<Metastore, MetastoreError> {
        // Position the log first: changes after this point are tailed, changes before it are
        // in the records loaded next (a change seen twice is harmless).
        let log = ChangeLog::open(storage.clone()).await?;
        let ms = Metastore {
            storage,
            options,
            origin: uuid::Uuid::new_v4().simple().to_string(),
            state: RwLock::new(State::default()),
            log,
            unannounced: Default::default(),
        };
        ms.reload().await?;
        Ok(ms)
    }

    pub fn options(&self) -> &MetastoreOptions {
        &self.options
    }

    /// Re-reads every record from the bucket (start-up, or after falling behind the log).
    pub async fn reload(&self) -> Result<(), MetastoreError> {
        let cursor = self.log.cursor();
        let indexes = self.read_all::<IndexMeta>(INDEXES_PREFIX).await?;
        let shards = self.read_all::<ShardRecord>(SHARDS_PREFIX).await?;
        let aliases = read_record::<AliasTable>(&self.storage, ALIASES_KEY).await?;
        let templates = read_record::<TemplateTable>(&self.storage, TEMPLATES_KEY).await?;
        let security = crate::security::read(&self.storage).await?;
        let mut fresh = State::default();
        if let Some((table, etag)) = security {
            fresh.security = (std::sync::Arc::new(table), Some(etag));
        }
        if let Some((table, etag)) = aliases {
            fresh.aliases = (table, Some(etag));
        }
        if let Some((table, etag)) = templates {
            fresh.templates = (table, Some(etag));
        }
        for (key, record, etag) in shards {
            if let Some(at) = parse_shard_key(&key) {
                fresh.shards.insert(at, (record, etag));
            }
        }
        for (_, meta, etag) in indexes {
            fresh.put_index(IndexEntry { meta, etag });
        }
        // Shard records of indexes that no longer exist (deleted meanwhile).
        let live: std::collections::HashSet<String> = fresh.names.keys().cloned().collect();
        fresh.shards.retain(|(u, _), _| live.contains(u));
        info!(
            indexes = fresh.indexes.len(),
            shards = fresh.shards.len(),
            log = cursor,
            "metastore loaded"
        );
        *self.state.write().expect("metastore lock") = fresh;
        Ok(())
    }

    /// Applies other processes' changes every `interval`, and trims the change log now and
    /// then. Runs until the process ends.
    pub async fn run_tail(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let trim_every = (60_000 / interval.as_millis().max(1)) as u64;
        let mut ticks = 0u64;
        loop {
            tick.tick().await;
            ticks += 1;
            self.announce_pending().await;
            if let Err(e) = self.catch_up().await {
                warn!("metastore change log: {e}");
            }
            if ticks.is_multiple_of(trim_every.max(1)) {
                match self.log.trim(LOG_KEEP).await {
                    Ok(0) => {}
                    Ok(n) => debug!(deleted = n, "change log trimmed"),
                    Err(e) => warn!("change log trim failed: {e}"),
                }
            }
        }
    }

    /// Applies every change-log entry written since the last call. Returns how many came
    /// from other processes.
    pub async fn catch_up(&self) -> Result<usize, MetastoreError> {
        match self.log.poll().await? {
            Polled::Gap => {
                warn!("fell behind the metastore change log: reloading everything");
                let head = ChangeLog::open(self.storage.clone()).await?.cursor();
                self.reload().await?;
                self.log.set_cursor(head);
                Ok(0)
            }
            Polled::Entries(entries) => {
                let mut n = 0;
                for entry in entries {
                    if entry.origin != self.origin {
                        n += 1;
                        for change in &entry.changes {
                            self.apply_change(change).await?;
                        }
                    }
                    self.log.set_cursor(entry.seq);
                }
                Ok(n)
            }
        }
    }

    async fn apply_change(&self, change: &Change) -> Result<(), MetastoreError> {
        match change {
            Change::IndexCreated { name, .. } | Change::IndexUpdated { name, .. } => {
                match self.fetch_index(name).await {
                    Ok(entry) => self.state.write().expect("lock").put_index(entry),
                    Err(MetastoreError::IndexNotFound(_)) => {
                        self.state.write().expect("lock").remove_index(name, None)
                    }
                    Err(e) => return Err(e),
                }
            }
            Change::IndexDeleted { name, uuid } => self
                .state
                .write()
                .expect("lock")
                .remove_index(name, Some(uuid)),
            Change::AliasesUpdated => self.reload_aliases().await?,
            Change::TemplatesUpdated => self.reload_templates().await?,
            Change::SecurityUpdated => self.reload_security().await?,
            Change::CommitsPublished { shards } => {
                let known: Vec<(String, u32)> = {
                    let st = self.state.read().expect("lock");
                    shards
                        .iter()
                        .filter(|(u, _)| st.names.contains_key(u))
                        .cloned()
                        .collect()
                };
                futures::stream::iter(
                    known
                        .into_iter()
                        .map(|(uuid, shard)| async move { self.refresh_shard(&uuid, shard).await }),
                )
                .buffer_unordered(LOAD_CONCURRENCY)
                .try_collect::<Vec<()>>()
                .await?;
            }
        }
        Ok(())
    }

    /// Re-reads one shard's record (after a change-log entry, or when a searcher finds a
    /// file of the commit it knows already collected).
    pub async fn refresh_shard(&self, uuid: &str, shard: u32) -> Result<(), MetastoreError> {
        if let Some((record, etag)) = self.fetch_shard(uuid, shard).await? {
            self.state
                .write()
                .expect("lock")
                .put_shard(uuid, shard, record, etag);
        }
        Ok(())
    }

    /// Every record under `prefix`, read concurrently: (key, record, ETag).
    async fn read_all<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, T, String)>, MetastoreError> {
        let keys = self.storage.list(prefix).await?;
        let read: Vec<Option<(String, T, String)>> =
            futures::stream::iter(keys.into_iter().map(|(key, _)| async move {
                // Deleted between the listing and the read: skipped.
                let record = read_record::<T>(&self.storage, &key).await?;
                Ok::<_, MetastoreError>(record.map(|(r, etag)| (key, r, etag)))
            }))
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(read.into_iter().flatten().collect())
    }

    async fn fetch_index(&self, name: &str) -> Result<IndexEntry, MetastoreError> {
        match read_record(&self.storage, &index_key(name)).await? {
            Some((meta, etag)) => Ok(IndexEntry { meta, etag }),
            None => Err(MetastoreError::IndexNotFound(name.into())),
        }
    }

    async fn fetch_shard(
        &self,
        uuid: &str,
        shard: u32,
    ) -> Result<Option<(ShardRecord, String)>, MetastoreError> {
        read_record(&self.storage, &shard_key(uuid, shard)).await
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The alias table and its record's ETag, as known here.
    pub(crate) fn alias_state(&self) -> (AliasTable, Option<String>) {
        self.state.read().expect("lock").aliases.clone()
    }

    /// `f` over the alias table as known here, without copying it (per-item lookups on the
    /// write path).
    pub(crate) fn with_aliases<R>(&self, f: impl FnOnce(&AliasTable) -> R) -> R {
        f(&self.state.read().expect("lock").aliases.0)
    }

    /// The template table and its record's ETag, as known here.
    pub(crate) fn template_state(&self) -> (TemplateTable, Option<String>) {
        self.state.read().expect("lock").templates.clone()
    }

    pub(crate) fn set_template_state(&self, table: TemplateTable, etag: Option<String>) {
        self.state.write().expect("lock").templates = (table, etag);
    }

    pub(crate) fn security_state(
        &self,
    ) -> (std::sync::Arc<floe_security::SecurityTable>, Option<String>) {
        self.state.read().expect("lock").security.clone()
    }

    pub(crate) fn set_security_state(
        &self,
        table: floe_security::SecurityTable,
        etag: Option<String>,
    ) {
        self.state.write().expect("lock").security = (std::sync::Arc::new(table), etag);
    }

    pub(crate) fn set_alias_state(&self, table: AliasTable, etag: Option<String>) {
        self.state.write().expect("lock").aliases = (table, etag);
    }

    pub(crate) async fn announce(&self, changes: Vec<Change>) {
        if let Err(e) = self.log.append(&self.origin, changes.clone()).await {
            // The change itself is durable; its announcement is retried by the tail loop.
            warn!("could not append to the metastore change log, will retry: {e}");
            self.unannounced
                .lock()
                .expect("unannounced lock")
                .extend(changes);
        }
    }

    /// Retries announcements that failed earlier.
    async fn announce_pending(&self) {
        let pending = std::mem::take(&mut *self.unannounced.lock().expect("unannounced lock"));
        if !pending.is_empty() {
            self.announce(pending).await;
        }
    }

    /// Tells other processes that these shards published new commits (one log entry for a
    /// whole refresh round).
    pub async fn announce_commits(&self, shards: Vec<(String, u32)>) {
        if !shards.is_empty() {
            self.announce(vec![Change::CommitsPublished { shards }])
                .await;
        }
    }

    pub fn get_index(&self, name: &str) -> Option<IndexMeta> {
        self.state
            .read()
            .expect("metastore lock")
            .indexes
            .get(name)
            .map(|e| e.meta.clone())
    }

    /// All indexes, ordered by name.
    /// The index `name` (with `uuid`, if given) as known here; if it is not, the change log
    /// is read once first: it may have been created on another node a moment ago.
    pub async fn get_index_caught_up(
        &self,
        name: &str,
        uuid: Option<&str>,
    ) -> Result<Option<IndexMeta>, MetastoreError> {
        let find = || {
            self.get_index(name)
                .filter(|m| uuid.is_none_or(|u| m.uuid == u))
        };
        if let Some(meta) = find() {
            return Ok(Some(meta));
        }
        self.catch_up().await?;
        Ok(find())
    }

    /// Whether an index with this uuid is known here.
    pub fn knows_uuid(&self, uuid: &str) -> bool {
        self.list_indexes().iter().any(|m| m.uuid == uuid)
    }

    /// Whether an index with this uuid exists in the bucket: known here or, for one not seen
    /// here, found among the index records. Reads every index record when the uuid is
    /// unknown, so it is for rare questions (log sections of indexes deleted meanwhile).
    pub async fn index_uuid_exists(&self, uuid: &str) -> Result<bool, MetastoreError> {
        if self.knows_uuid(uuid) {
            return Ok(true);
        }
        let records = self.read_all::<IndexMeta>(INDEXES_PREFIX).await?;
        Ok(records.iter().any(|(_, meta, _)| meta.uuid == uuid))
    }

    pub fn list_indexes(&self) -> Vec<IndexMeta> {
        self.state
            .read()
            .expect("metastore lock")
            .indexes
            .values()
            .map(|e| e.meta.clone())
            .collect()
    }

    /// The owner of one shard as last seen here (`None`: nobody holds it).
    pub fn shard_owner(&self, uuid: &str, shard: u32) -> Option<ShardOwner> {
        self.state
            .read()
            .expect("metastore lock")
            .shards
            .get(&(uuid.to_string(), shard))
            .and_then(|(r, _)| r.owner.clone())
    }

    /// Shard records as last seen here, of the indexes (by uuid) `include` selects:
    /// (uuid, shard, record).
    pub fn shard_records(&self, include: impl Fn(&str) -> bool) -> Vec<(String, u32, ShardRecord)> {
        self.state
            .read()
            .expect("metastore lock")
            .shards
            .iter()
            .filter(|((u, _), _)| include(u))
            .map(|((u, s), (r, _))| (u.clone(), *s, r.clone()))
            .collect()
    }

    /// (uuid, name, settings) of every index: what periodic loops need, without cloning
    /// mappings and commit points.
    pub fn index_settings(&self) -> Vec<(String, String, IndexSettings)> {
        self.state
            .read()
            .expect("metastore lock")
            .indexes
            .values()
            .map(|e| {
                (
                    e.meta.uuid.clone(),
                    e.meta.name.clone(),
                    e.meta.settings.clone(),
                )
            })
            .collect()
    }

    /// Creates an index; `IndexAlreadyExists` if the name is taken (also by another process).
    #[instrument(skip(self, settings, mappings))]
    pub async fn create_index(
        &self,
        name: &str,
        settings: IndexSettings,
        mappings: Mappings,
    ) -> Result<IndexMeta, MetastoreError> {
        validate_index_name(name)?;
        if self.with_aliases(|t| t.aliases.contains_key(name)) {
            return Err(MetastoreError::InvalidIndexName {
                name: name.to_string(),
                reason: "already exists as alias".into(),
            });
        }
        if settings.number_of_shards == 0 || settings.number_of_shards > 1024 {
            return Err(MetastoreError::Rejected(format!(
                "Failed to parse value [{}] for setting [index.number_of_shards] must be >= 1 and <= 1024",
                settings.number_of_shards
            )));
        }
        let meta = IndexMeta {
            uuid: uuid::Uuid::new_v4().simple().to_string(),
            name: name.to_string(),
            settings,
            mappings,
            creation_date: now_millis(),
            shards: BTreeMap::new(),
        };
        let body = Bytes::from(serde_json::to_vec(&meta).expect("serializable"));
        match self.storage.put_if_absent(&index_key(name), body).await {
            Ok(etag) => {
                info!(index = name, uuid = %meta.uuid, "index created");
                self.state.write().expect("lock").put_index(IndexEntry {
                    meta: meta.clone(),
                    etag,
                });
                self.announce(vec![Change::IndexCreated {
                    name: name.into(),
                    uuid: meta.uuid.clone(),
                }])
                .await;
                Ok(meta)
            }
            Err(StorageError::AlreadyExists(_)) => {
                if let Ok(entry) = self.fetch_index(name).await {
                    self.state.write().expect("lock").put_index(entry);
                }
                Err(MetastoreError::IndexAlreadyExists(name.into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the index record, then every object of the index's data and its shard records.
    #[instrument(skip(self))]
    pub async fn delete_index(&self, name: &str) -> Result<IndexMeta, MetastoreError> {
        let entry = match self.fetch_index(name).await {
            Ok(e) => e,
            Err(e) => {
                self.state.write().expect("lock").remove_index(name, None);
                return Err(e);
            }
        };
        self.storage.delete(&index_key(name)).await?;
        self.state
            .write()
            .expect("lock")
            .remove_index(name, Some(&entry.meta.uuid));
        self.announce(vec![Change::IndexDeleted {
            name: name.into(),
            uuid: entry.meta.uuid.clone(),
        }])
        .await;
        if let Err(e) = self.forget_index_aliases(name).await {
            warn!(
                index = name,
                "could not drop the deleted index from its aliases: {e}"
            );
        }
        let removed = self
            .storage
            .delete_prefix(&entry.meta.data_prefix())
            .await?;
        self.storage
            .delete_prefix(&format!("{SHARDS_PREFIX}/{}", entry.meta.uuid))
            .await?;
        info!(index = name, objects = removed, "index deleted");
        Ok(entry.meta)
    }

    /// Applies `change` to the index record with compare-and-swap, retrying on conflict with a
    /// fresh copy and backing off. `change` may run several times; it must be a pure function
    /// of its input.
    pub async fn update_index<F>(
        &self,
        name: &str,
        mut change: F,
    ) -> Result<IndexMeta, MetastoreError>
    where
        F: FnMut(&mut IndexMeta) -> Result<(), MetastoreError>,
    {
        let cached = {
            let st = self.state.read().expect("lock");
            st.indexes
                .get(name)
                .map(|e| (e.meta.clone(), e.etag.clone()))
        };
        let (mut meta, mut etag) = match cached {
            Some(x) => x,
            None => {
                let e = self.fetch_index(name).await?;
                (e.meta, e.etag)
            }
        };
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let mut next = meta.clone();
            change(&mut next)?;
            if next == meta {
                return Ok(next);
            }
            let body = Bytes::from(serde_json::to_vec(&next).expect("serializable"));
            match self
                .storage
                .put_if_match(&index_key(name), body, &etag)
                .await
            {
                Ok(new_etag) => {
                    self.state.write().expect("lock").put_index(IndexEntry {
                        meta: next.clone(),
                        etag: new_etag,
                    });
                    self.announce(vec![Change::IndexUpdated {
                        name: name.into(),
                        uuid: next.uuid.clone(),
                    }])
                    .await;
                    return Ok(self.get_index(name).unwrap_or(next));
                }
                Err(StorageError::PreconditionFailed(_)) => {
                    backoff(attempt).await;
                    let fresh = match self.fetch_index(name).await {
                        Ok(f) => f,
                        Err(e) => {
                            self.state.write().expect("lock").remove_index(name, None);
                            return Err(e);
                        }
                    };
                    if fresh.meta.uuid != meta.uuid {
                        // Deleted and re-created under us: the change was for the old index.
                        self.state.write().expect("lock").put_index(fresh);
                        return Err(MetastoreError::IndexNotFound(name.into()));
                    }
                    meta = fresh.meta;
                    meta.shards = self.get_index(name).map(|m| m.shards).unwrap_or_default();
                    etag = fresh.etag;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(MetastoreError::Contended(name.into()))
    }

    /// Adds newly discovered fields to the mapping (fields already mapped are kept).
    pub async fn merge_mappings(
        &self,
        name: &str,
        new_fields: &BTreeMap<String, floe_proto::mapping::FieldMapping>,
    ) -> Result<IndexMeta, MetastoreError> {
        self.update_index(name, |m| {
            m.mappings.merge(new_fields);
            Ok(())
        })
        .await
    }

    /// Compare-and-swap on one shard's record, from the cached copy, re-reading on conflict.
    async fn update_shard<F>(
        &self,
        name: &str,
        uuid: &str,
        shard: u32,
        mut change: F,
    ) -> Result<ShardRecord, MetastoreError>
    where
        F: FnMut(&mut ShardRecord) -> Result<(), MetastoreError>,
    {
        let key = shard_key(uuid, shard);
        let cached = self
            .state
            .read()
            .expect("lock")
            .shards
            .get(&(uuid.to_string(), shard))
            .cloned();
        let mut current = match cached {
            Some(x) => Some(x),
            None => self.fetch_shard(uuid, shard).await?,
        };
        for attempt in 0..MAX_CAS_ATTEMPTS {
            let mut next = current.as_ref().map(|(r, _)| r.clone()).unwrap_or_default();
            change(&mut next)?;
            if current.as_ref().is_some_and(|(r, _)| *r == next) {
                return Ok(next);
            }
            let body = Bytes::from(serde_json::to_vec(&next).expect("serializable"));
            let written = match &current {
                Some((_, etag)) => self.storage.put_if_match(&key, body, etag).await,
                None => self.storage.put_if_absent(&key, body).await,
            };
            match written {
                Ok(etag) => {
                    self.state
                        .write()
                        .expect("lock")
                        .put_shard(uuid, shard, next.clone(), etag);
                    return Ok(next);
                }
                Err(StorageError::PreconditionFailed(_)) | Err(StorageError::AlreadyExists(_)) => {
                    if attempt > 0 {
                        backoff(attempt).await;
                    }
                    current = self.fetch_shard(uuid, shard).await?;
                    if self.get_index(name).is_some_and(|m| m.uuid != uuid) {
                        return Err(MetastoreError::IndexNotFound(name.into()));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(MetastoreError::Contended(format!("{name}/{shard}")))
    }

    /// Publishes a shard's new commit point (one conditional write of the shard's record).
    /// Refused unless `owner` still owns the shard at the commit's epoch and the generation
    /// advances, so a stale writer cannot overwrite newer work.
    #[instrument(skip(self, commit, owner), fields(generation = commit.generation, epoch = commit.epoch))]
    pub async fn publish_commit(
        &self,
        name: &str,
        uuid: &str,
        shard: u32,
        owner: &ShardOwner,
        commit: ShardCommit,
    ) -> Result<(), MetastoreError> {
        let meta = self
            .get_index(name)
            .filter(|m| m.uuid == uuid)
            .ok_or_else(|| MetastoreError::IndexNotFound(name.into()))?;
        if shard >= meta.settings.number_of_shards {
            return Err(MetastoreError::NoSuchShard {
                index: name.into(),
                shard,
            });
        }
        let stale = |reason: String| MetastoreError::StaleCommit {
            index: name.into(),
            shard,
            reason,
        };
        self.update_shard(name, uuid, shard, |r| {
            if r.owner.as_ref() != Some(owner) || r.epoch != commit.epoch {
                return Err(stale(format!(
                    "commit from epoch {} but the shard is at epoch {} (owner {:?})",
                    commit.epoch, r.epoch, r.owner
                )));
            }
            if let Some(prev) = &r.commit {
                // Already published (a retried write whose first attempt landed): done.
                if *prev == commit {
                    return Ok(());
                }
                if prev.epoch == commit.epoch && commit.generation <= prev.generation {
                    return Err(stale(format!(
                        "generation {} <= published generation {}",
                        commit.generation, prev.generation
                    )));
                }
            }
            r.commit = Some(commit.clone());
            // Everything earlier owners logged is below this checkpoint now.
            r.log_owners = vec![owner.clone()];
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Gives a shard up (graceful hand-over to another writer, or a dead writer's shard
    /// with nothing to replay): clears the owner if it is still `owner`. `clean`: the
    /// published commit holds everything `owner` acknowledged, so no log needs replaying;
    /// otherwise `owner`'s log stays listed and the next owner replays what is above the
    /// checkpoint. The next owner needs no lease expiry. Idempotent; announced in the
    /// change log (health elsewhere reads the owner).
    #[instrument(skip(self, owner))]
    pub async fn release_shard(
        &self,
        name: &str,
        uuid: &str,
        shard: u32,
        owner: &ShardOwner,
        clean: bool,
    ) -> Result<(), MetastoreError> {
        self.update_shard(name, uuid, shard, |r| {
            if r.owner.as_ref() == Some(owner) {
                r.owner = None;
                if clean {
                    r.log_owners.clear();
                } else if !r.log_owners.contains(owner) {
                    r.log_owners.push(owner.clone());
                }
            }
            Ok(())
        })
        .await?;
        self.announce_commits(vec![(uuid.to_string(), shard)]).await;
        Ok(())
    }

    /// A shard nobody owns whose listed logs hold nothing above its checkpoint (checked by
    /// the caller): the list is cleared, so nobody checks them again.
    pub async fn clear_logs(
        &self,
        name: &str,
        uuid: &str,
        shard: u32,
    ) -> Result<(), MetastoreError> {
        self.update_shard(name, uuid, shard, |r| {
            if r.owner.is_none() {
                r.log_owners.clear();
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Makes `owner` the owner of `shard` under a new, higher epoch (every open is a new
    /// epoch, so keys written under an epoch come from one open of one incarnation). If
    /// another incarnation owns it and its session is live, `LeaseHeld`. Returns the epoch,
    /// whether an earlier epoch exists (the caller must mark its takeover point in the
    /// translog), and the index as of the grant, freshly read (the owner must load the shard
    /// from this state, never an earlier one).
    #[instrument(skip(self, owner))]
    pub async fn acquire_shard(
        &self,
        name: &str,
        uuid: &str,
        shard: u32,
        owner: &ShardOwner,
    ) -> Result<Grant, MetastoreError> {
        let held = |o: &ShardOwner| MetastoreError::LeaseHeld {
            index: name.into(),
            shard,
            owner: o.node_id.clone(),
        };
        // The liveness of the current owner is checked against the freshest record, and
        // only that owner (found gone) may be replaced: if the record changed meanwhile, the
        // compare-and-swap fails and the check runs again.
        for _ in 0..MAX_CAS_ATTEMPTS {
            let fresh = self.fetch_shard(uuid, shard).await?;
            let mut previous_epoch = false;
            let (mut next, etag) = match &fresh {
                Some((record, etag)) => {
                    if let Some(current) = &record.owner {
                        if current != owner
                            && owner_alive(&self.storage, current, self.options.clock_skew_margin)
                                .await?
                        {
                            return Err(held(current));
                        }
                    }
                    previous_epoch = record.epoch > 0;
                    (record.clone(), Some(etag.clone()))
                }
                None => (ShardRecord::default(), None),
            };
            next.epoch = next.epoch.max(next.commit.as_ref().map_or(0, |c| c.epoch)) + 1;
            if let Some(previous) = next.owner.take() {
                if !next.log_owners.contains(&previous) {
                    next.log_owners.push(previous);
                }
            }
            // Including this incarnation's own log: a shard it reopens (after a refused
            // publish, say) may have acknowledged operations there above the checkpoint.
            let earlier_logs: Vec<ShardOwner> = next.log_owners.clone();
            if !next.log_owners.contains(owner) {
                next.log_owners.push(owner.clone());
            }
            next.owner = Some(owner.clone());
            let body = Bytes::from(serde_json::to_vec(&next).expect("serializable"));
            let key = shard_key(uuid, shard);
            let written = match &etag {
                Some(etag) => self.storage.put_if_match(&key, body, etag).await,
                None => self.storage.put_if_absent(&key, body).await,
            };
            match written {
                Ok(new_etag) => {
                    self.state.write().expect("lock").put_shard(
                        uuid,
                        shard,
                        next.clone(),
                        new_etag,
                    );
                    // Fresh mappings when there may be operations to replay: a replay must
                    // build documents with every field known. (A first grant has none.)
                    if previous_epoch {
                        let entry = self.fetch_index(name).await?;
                        if entry.meta.uuid != uuid {
                            return Err(MetastoreError::IndexNotFound(name.into()));
                        }
                        self.state.write().expect("lock").put_index(entry);
                    }
                    let meta = self
                        .get_index(name)
                        .filter(|m| m.uuid == uuid)
                        .ok_or_else(|| MetastoreError::IndexNotFound(name.into()))?;
                    return Ok(Grant {
                        epoch: next.epoch,
                        taken_over: previous_epoch,
                        earlier_logs,
                        meta,
                    });
                }
                Err(StorageError::PreconditionFailed(_)) | Err(StorageError::AlreadyExists(_)) => {
                    backoff(1).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(MetastoreError::Contended(format!("{name}/{shard}")))
    }

    /// The shard's record as stored now (one GET), for settling an ambiguous write.
    pub async fn read_shard(
        &self,
        uuid: &str,
        shard: u32,
    ) -> Result<Option<ShardRecord>, MetastoreError> {
        Ok(self.fetch_shard(uuid, shard).await?.map(|(r, _)| r))
    }

    /// Whether `owner`'s session is live as seen from here.
    pub async fn owner_alive(&self, owner: &ShardOwner) -> Result<bool, MetastoreError> {
        owner_alive(&self.storage, owner, self.options.clock_skew_margin).await
    }
}

fn parse_shard_key(key: &str) -> Option<(String, u32)> {
    let rest = key.strip_prefix(&format!("{SHARDS_PREFIX}/"))?;
    let (uuid, file) = rest.split_once('/')?;
    let shard = file.strip_suffix(".json")?.parse().ok()?;
    Some((uuid.to_string(), shard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeSession;

    fn commit(generation: u64, epoch: u64) -> ShardCommit {
        ShardCommit {
            generation,
            tantivy_meta: "{}".into(),
            files: vec![],
            num_docs: generation,
            size_bytes: 0,
            min_timestamp: None,
            max_timestamp: None,
            epoch,
            translog_checkpoint: 0,
            segment_times: Default::default(),
            date_bounds: Default::default(),
        }
    }

    fn owner(node: &str, inc: &str) -> ShardOwner {
        ShardOwner {
            node_id: node.into(),
            incarnation: inc.into(),
        }
    }

    async fn open(dir: &std::path::Path) -> Metastore {
        Metastore::open(Storage::local(dir).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn survives_restart_and_rejects_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let ms = open(dir.path()).await;
        let meta = ms
            .create_index("logs", IndexSettings::default(), Mappings::default())
            .await
            .unwrap();
        assert!(matches!(
            ms.create_index("logs", IndexSettings::default(), Mappings::default())
                .await,
            Err(MetastoreError::IndexAlreadyExists(_))
        ));
        let me = owner("n", "1");
        let g = ms.acquire_shard("logs", &meta.uuid, 0, &me).await.unwrap();
        assert_eq!(
            (g.epoch, g.taken_over),
            (1, false),
            "a first grant is no takeover"
        );
        ms.publish_commit("logs", &meta.uuid, 0, &me, commit(1, 1))
            .await
            .unwrap();
        let reopened = open(dir.path()).await;
        let got = reopened.get_index("logs").unwrap();
        assert_eq!(got.shards[&0].generation, 1);
        assert!(matches!(
            ms.create_index("Bad", IndexSettings::default(), Mappings::default())
                .await,
            Err(MetastoreError::InvalidIndexName { .. })
        ));
        // The index record holds no shard state: a publish never rewrites it.
        let raw = Storage::local(dir.path())
            .unwrap()
            .get(&index_key("logs"))
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("tantivy_meta"));
    }

    #[tokio::test]
    async fn stale_commits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ms = open(dir.path()).await;
        let meta = ms
            .create_index("x", IndexSettings::default(), Mappings::default())
            .await
            .unwrap();
        let a = owner("a", "1");
        ms.acquire_shard("x", &meta.uuid, 0, &a).await.unwrap();
        ms.publish_commit("x", &meta.uuid, 0, &a, commit(5, 1))
            .await
            .unwrap();
        // The same commit again (a retried write whose first attempt landed) is success...
        ms.publish_commit("x", &meta.uuid, 0, &a, commit(5, 1))
            .await
            .unwrap();
        // ... a different one at the same generation is not.
        let mut other = commit(5, 1);
        other.num_docs = 99;
        assert!(matches!(
            ms.publish_commit("x", &meta.uuid, 0, &a, other).await,
            Err(MetastoreError::StaleCommit { .. })
        ));
        assert!(matches!(
            ms.publish_commit("x", &meta.uuid, 0, &owner("b", "1"), commit(9, 1))
                .await,
            Err(MetastoreError::StaleCommit { .. })
        ));
        ms.publish_commit("x", &meta.uuid, 0, &a, commit(6, 1))
            .await
            .unwrap();
    }

    /// Two metastores (as two processes would) racing on the same index lose no update.
    #[tokio::test]
    async fn racing_metastores_lose_no_update() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(open(dir.path()).await);
        a.create_index("race", IndexSettings::default(), Mappings::default())
            .await
            .unwrap();
        let b = Arc::new(open(dir.path()).await);
        let mut tasks = Vec::new();
        for (i, ms) in [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            tasks.push(tokio::spawn(async move {
                for j in 0..10 {
                    let mut add = BTreeMap::new();
                    add.insert(
                        format!("f{i}_{j}"),
                        floe_proto::mapping::FieldMapping::of(floe_proto::FieldType::Long),
                    );
                    ms.merge_mappings("race", &add).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let c = open(dir.path()).await;
        assert_eq!(c.get_index("race").unwrap().mappings.fields.len(), 40);
    }

    /// A shard owned by a live session cannot be taken; once the session lapses it moves to
    /// the next incarnation under a higher epoch, and the old one can no longer publish.
    #[tokio::test]
    async fn ownership_follows_sessions_and_fences_older_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let ttl = Duration::from_millis(300);
        let margin = Duration::from_millis(50);
        let ms = Metastore::open_with(
            storage.clone(),
            MetastoreOptions {
                clock_skew_margin: margin,
            },
        )
        .await
        .unwrap();
        let meta = ms
            .create_index("l", IndexSettings::default(), Mappings::default())
            .await
            .unwrap();
        let a = NodeSession::register(storage.clone(), "a", ttl, margin)
            .await
            .unwrap();
        let e1 = ms
            .acquire_shard("l", &meta.uuid, 0, a.owner())
            .await
            .unwrap()
            .epoch;
        assert_eq!(e1, 1);
        // Every open is a new epoch, also by the same incarnation (a shard closed while idle
        // reopens under a fresh key space).
        let again = ms
            .acquire_shard("l", &meta.uuid, 0, a.owner())
            .await
            .unwrap();
        assert_eq!((again.epoch, again.taken_over), (2, true));
        assert_eq!(again.earlier_logs, vec![a.owner().clone()], "its own log");
        let b = NodeSession::register(storage.clone(), "b", ttl, margin)
            .await
            .unwrap();
        assert!(matches!(
            ms.acquire_shard("l", &meta.uuid, 0, b.owner()).await,
            Err(MetastoreError::LeaseHeld { .. })
        ));
        ms.publish_commit("l", &meta.uuid, 0, a.owner(), commit(1, 2))
            .await
            .unwrap();
        tokio::time::sleep(ttl + margin * 2).await; // a stops renewing
        let g = ms
            .acquire_shard("l", &meta.uuid, 0, b.owner())
            .await
            .unwrap();
        assert_eq!((g.epoch, g.taken_over), (3, true));
        assert_eq!(
            g.meta.shards[&0].generation, 1,
            "granted with the latest commit"
        );
        assert_eq!(
            g.earlier_logs,
            vec![a.owner().clone()],
            "a's log may hold ops"
        );
        assert!(matches!(
            ms.publish_commit("l", &meta.uuid, 0, a.owner(), commit(2, 2))
                .await,
            Err(MetastoreError::StaleCommit { .. })
        ));
        ms.publish_commit("l", &meta.uuid, 0, b.owner(), commit(1, 3))
            .await
            .unwrap();
    }

    /// Two live nodes racing for a new shard: exactly one owns it, the other is told so.
    #[tokio::test]
    async fn racing_first_grants_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let ttl = Duration::from_secs(30);
        let margin = Duration::from_millis(50);
        let a = Arc::new(open(dir.path()).await);
        let meta = a
            .create_index("r", IndexSettings::default(), Mappings::default())
            .await
            .unwrap();
        let b = Arc::new(open(dir.path()).await);
        for shard in 0..8u32 {
            let sa = NodeSession::register(storage.clone(), &format!("a{shard}"), ttl, margin)
                .await
                .unwrap();
            let sb = NodeSession::register(storage.clone(), &format!("b{shard}"), ttl, margin)
                .await
                .unwrap();
            let (ra, rb) = tokio::join!(
                a.acquire_shard("r", &meta.uuid, shard, sa.owner()),
                b.acquire_shard("r", &meta.uuid, shard, sb.owner())
            );
            let wins = [ra.is_ok(), rb.is_ok()];
            assert_eq!(
                wins.iter().filter(|w| **w).count(),
                1,
                "shard {shard}: {ra:?} {rb:?}"
            );
            let loser = if ra.is_ok() { rb } else { ra };
            assert!(matches!(loser, Err(MetastoreError::LeaseHeld { .. })));
        }
    }

    /// Changes made through one metastore reach another through the change log.
    #[tokio::test]
    async fn changes_reach_other_processes_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path()).await;
        let b = open(dir.path()).await;
        let meta = a
            .create_index("seen", IndexSettings::default(), Mappings::default())
            .await
            .unwrap();
        assert!(b.get_index("seen").is_none());
        b.catch_up().await.unwrap();
        assert_eq!(b.get_index("seen").unwrap().uuid, meta.uuid);
        let me = owner("a", "1");
        a.acquire_shard("seen", &meta.uuid, 0, &me).await.unwrap();
        a.publish_commit("seen", &meta.uuid, 0, &me, commit(3, 1))
            .await
            .unwrap();
        a.announce_commits(vec![(meta.uuid.clone(), 0)]).await;
        let mut add = BTreeMap::new();
        add.insert(
            "n".to_string(),
            floe_proto::mapping::FieldMapping::of(floe_proto::FieldType::Long),
        );
        a.merge_mappings("seen", &add).await.unwrap();
        assert_eq!(b.catch_up().await.unwrap(), 2);
        let got = b.get_index("seen").unwrap();
        assert_eq!(got.shards[&0].generation, 3);
        assert!(got.mappings.get("n").is_some());
        a.delete_index("seen").await.unwrap();
        b.catch_up().await.unwrap();
        assert!(b.get_index("seen").is_none());
        assert_eq!(
            a.catch_up().await.unwrap(),
            0,
            "nothing new for the writer itself"
        );
    }

    #[tokio::test]
    async fn delete_removes_data() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let ms = Metastore::open(storage.clone()).await.unwrap();
        let meta = ms
            .create_index("gone", IndexSettings::default(), Mappings::default())
            .await
            .unwrap();
        ms.acquire_shard("gone", &meta.uuid, 0, &owner("a", "1"))
            .await
            .unwrap();
        storage
            .put(
                &format!("{}/0/segments/a", meta.data_prefix()),
                Bytes::from_static(b"x"),
            )
            .await
            .unwrap();
        ms.delete_index("gone").await.unwrap();
        assert!(ms.get_index("gone").is_none());
        assert!(storage.list(&meta.data_prefix()).await.unwrap().is_empty());
        assert!(storage
            .list(&format!("{SHARDS_PREFIX}/{}", meta.uuid))
            .await
            .unwrap()
            .is_empty());
        assert!(matches!(
            ms.delete_index("gone").await,
            Err(MetastoreError::IndexNotFound(_))
        ));
    }
}
