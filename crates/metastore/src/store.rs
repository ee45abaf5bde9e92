//! Index records in the bucket, with an in-memory copy for reads.

use std::collections::BTreeMap;
use std::sync::RwLock;

use bytes::Bytes;
use floe_proto::{IndexMeta, IndexSettings, Mappings, ShardCommit, ShardLease};
use floe_storage::{Storage, StorageError};
use tracing::{info, instrument};

use crate::names::validate_index_name;

const INDEXES_PREFIX: &str = "metastore/indexes";
/// Compare-and-swap attempts before giving up on a contended update.
const MAX_CAS_ATTEMPTS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum MetastoreError {
    #[error("no such index [{0}]")]
    IndexNotFound(String),
    #[error("index [{0}] already exists")]
    IndexAlreadyExists(String),
    #[error("Invalid index name [{name}], {reason}")]
    InvalidIndexName { name: String, reason: String },
    #[error("shard [{shard}] of index [{index}] has no such shard")]
    NoSuchShard { index: String, shard: u32 },
    /// A commit from an older lease epoch or an older generation: refused (fencing).
    #[error("stale commit for [{index}][{shard}]: {reason}")]
    StaleCommit {
        index: String,
        shard: u32,
        reason: String,
    },
    #[error("shard [{index}][{shard}] is owned by writer [{owner}] until {expires_at_ms} (epoch millis)")]
    LeaseHeld {
        index: String,
        shard: u32,
        owner: String,
        expires_at_ms: i64,
    },
    #[error("update of [{0}] kept conflicting with concurrent writers")]
    Contended(String),
    #[error("metastore record [{key}] is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A change rejected by the caller's update function.
    #[error("{0}")]
    Rejected(String),
}

struct Entry {
    meta: IndexMeta,
    etag: String,
}

/// The metastore. All reads come from memory; every write goes to the bucket first.
pub struct Metastore {
    storage: Storage,
    indexes: RwLock<BTreeMap<String, Entry>>,
}

fn key_of(name: &str) -> String {
    format!("{INDEXES_PREFIX}/{name}.json")
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Metastore {
    /// Opens the metastore and loads every index record from the bucket.
    pub async fn open(storage: Storage) -> Result<Metastore, MetastoreError> {
        let ms = Metastore {
            storage,
            indexes: RwLock::new(BTreeMap::new()),
        };
        ms.reload().await?;
        Ok(ms)
    }

    /// Re-reads every index record from the bucket.
    pub async fn reload(&self) -> Result<(), MetastoreError> {
        let mut fresh = BTreeMap::new();
        for (key, _) in self.storage.list(INDEXES_PREFIX).await? {
            let Some(name) = key
                .strip_prefix(&format!("{INDEXES_PREFIX}/"))
                .and_then(|k| k.strip_suffix(".json"))
            else {
                continue;
            };
            match self.fetch(name).await {
                Ok(entry) => {
                    fresh.insert(name.to_string(), entry);
                }
                Err(MetastoreError::IndexNotFound(_)) => {} // deleted meanwhile
                Err(e) => return Err(e),
            }
        }
        info!(indexes = fresh.len(), "metastore loaded");
        *self.indexes.write().expect("metastore lock") = fresh;
        Ok(())
    }

    async fn fetch(&self, name: &str) -> Result<Entry, MetastoreError> {
        let key = key_of(name);
        let (bytes, etag) = match self.storage.get_with_etag(&key).await {
            Ok(x) => x,
            Err(StorageError::NotFound(_)) => {
                return Err(MetastoreError::IndexNotFound(name.into()))
            }
            Err(e) => return Err(e.into()),
        };
        let meta: IndexMeta =
            serde_json::from_slice(&bytes).map_err(|e| MetastoreError::Corrupt {
                key,
                reason: e.to_string(),
            })?;
        Ok(Entry { meta, etag })
    }

    fn cache(&self, name: &str, entry: Option<Entry>) {
        let mut map = self.indexes.write().expect("metastore lock");
        match entry {
            Some(e) => map.insert(name.to_string(), e),
            None => map.remove(name),
        };
    }

    pub fn get_index(&self, name: &str) -> Option<IndexMeta> {
        self.indexes
            .read()
            .expect("metastore lock")
            .get(name)
            .map(|e| e.meta.clone())
    }

    /// All indexes, ordered by name.
    pub fn list_indexes(&self) -> Vec<IndexMeta> {
        self.indexes
            .read()
            .expect("metastore lock")
            .values()
            .map(|e| e.meta.clone())
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
            leases: BTreeMap::new(),
        };
        let body = Bytes::from(serde_json::to_vec(&meta).expect("serializable"));
        match self.storage.put_if_absent(&key_of(name), body).await {
            Ok(etag) => {
                info!(index = name, uuid = %meta.uuid, "index created");
                self.cache(
                    name,
                    Some(Entry {
                        meta: meta.clone(),
                        etag,
                    }),
                );
                Ok(meta)
            }
            Err(StorageError::AlreadyExists(_)) => {
                if let Ok(entry) = self.fetch(name).await {
                    self.cache(name, Some(entry));
                }
                Err(MetastoreError::IndexAlreadyExists(name.into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the index record, then every object of the index's data.
    #[instrument(skip(self))]
    pub async fn delete_index(&self, name: &str) -> Result<IndexMeta, MetastoreError> {
        let entry = match self.fetch(name).await {
            Ok(e) => e,
            Err(e) => {
                self.cache(name, None);
                return Err(e);
            }
        };
        self.storage.delete(&key_of(name)).await?;
        self.cache(name, None);
        let removed = self
            .storage
            .delete_prefix(&entry.meta.data_prefix())
            .await?;
        info!(index = name, objects = removed, "index deleted");
        Ok(entry.meta)
    }

    /// Applies `change` to the index record with compare-and-swap, retrying on conflict with a
    /// fresh copy. `change` may run several times; it must be a pure function of its input.
    pub async fn update_index<F>(
        &self,
        name: &str,
        mut change: F,
    ) -> Result<IndexMeta, MetastoreError>
    where
        F: FnMut(&mut IndexMeta) -> Result<(), MetastoreError>,
    {
        let cached = {
            let map = self.indexes.read().expect("metastore lock");
            map.get(name).map(|e| (e.meta.clone(), e.etag.clone()))
        };
        let (mut meta, mut etag) = match cached {
            Some(x) => x,
            None => {
                let e = self.fetch(name).await?;
                (e.meta, e.etag)
            }
        };
        for _ in 0..MAX_CAS_ATTEMPTS {
            let mut next = meta.clone();
            change(&mut next)?;
            if next == meta {
                return Ok(next);
            }
            let body = Bytes::from(serde_json::to_vec(&next).expect("serializable"));
            match self.storage.put_if_match(&key_of(name), body, &etag).await {
                Ok(new_etag) => {
                    self.cache(
                        name,
                        Some(Entry {
                            meta: next.clone(),
                            etag: new_etag,
                        }),
                    );
                    return Ok(next);
                }
                Err(StorageError::PreconditionFailed(_)) => {
                    let fresh = match self.fetch(name).await {
                        Ok(f) => f,
                        Err(e) => {
                            self.cache(name, None);
                            return Err(e);
                        }
                    };
                    if fresh.meta.uuid != meta.uuid {
                        // Deleted and re-created under us: the change was for the old index.
                        self.cache(name, Some(fresh));
                        return Err(MetastoreError::IndexNotFound(name.into()));
                    }
                    meta = fresh.meta;
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

    /// Publishes a shard's new commit point. Refused when it comes from an older lease epoch
    /// or does not advance the generation, so a stale writer cannot overwrite newer work.
    #[instrument(skip(self, commit), fields(generation = commit.generation, epoch = commit.epoch))]
    pub async fn publish_commit(
        &self,
        name: &str,
        uuid: &str,
        shard: u32,
        commit: ShardCommit,
    ) -> Result<IndexMeta, MetastoreError> {
        self.update_index(name, |m| {
            if m.uuid != uuid {
                return Err(MetastoreError::IndexNotFound(name.into()));
            }
            if shard >= m.settings.number_of_shards {
                return Err(MetastoreError::NoSuchShard {
                    index: name.into(),
                    shard,
                });
            }
            if let Some(lease) = m.leases.get(&shard) {
                if lease.epoch != commit.epoch {
                    return Err(MetastoreError::StaleCommit {
                        index: name.into(),
                        shard,
                        reason: format!(
                            "commit from epoch {} but the shard's lease is at epoch {}",
                            commit.epoch, lease.epoch
                        ),
                    });
                }
            }
            if let Some(prev) = m.shards.get(&shard) {
                if commit.epoch < prev.epoch {
                    return Err(MetastoreError::StaleCommit {
                        index: name.into(),
                        shard,
                        reason: format!("epoch {} < published epoch {}", commit.epoch, prev.epoch),
                    });
                }
                if commit.epoch == prev.epoch && commit.generation <= prev.generation {
                    return Err(MetastoreError::StaleCommit {
                        index: name.into(),
                        shard,
                        reason: format!(
                            "generation {} <= published generation {}",
                            commit.generation, prev.generation
                        ),
                    });
                }
            }
            m.shards.insert(shard, commit.clone());
            Ok(())
        })
        .await
    }
}

impl Metastore {
    /// Grants `shard` to `owner` (a writer's stable node name) for `ttl_ms` under a new,
    /// higher epoch, unless another owner holds an unexpired lease (`LeaseHeld`). Returns the lease and the index as of the grant
    /// (the new owner must load the shard from this state or later, never earlier).
    #[instrument(skip(self))]
    pub async fn acquire_lease(
        &self,
        name: &str,
        uuid: &str,
        shard: u32,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<(ShardLease, IndexMeta), MetastoreError> {
        let meta = self
            .update_index(name, |m| {
                if m.uuid != uuid {
                    return Err(MetastoreError::IndexNotFound(name.into()));
                }
                let now = now_millis();
                let current = m.leases.get(&shard);
                if let Some(l) = current {
                    if l.owner != owner && l.expires_at_ms > now {
                        return Err(MetastoreError::LeaseHeld {
                            index: name.into(),
                            shard,
                            owner: l.owner.clone(),
                            expires_at_ms: l.expires_at_ms,
                        });
                    }
                }
                // Every grant is a new epoch, also to the same owner name: a restarted process
                // takes its shards back at once and fences its previous incarnation.
                let published = m.shards.get(&shard).map_or(0, |c| c.epoch);
                let epoch = current.map_or(0, |l| l.epoch).max(published) + 1;
                m.leases.insert(
                    shard,
                    ShardLease {
                        owner: owner.to_string(),
                        epoch,
                        expires_at_ms: now + ttl_ms,
                    },
                );
                Ok(())
            })
            .await?;
        let lease = meta.leases.get(&shard).cloned().expect("just granted");
        Ok((lease, meta))
    }

    /// Extends the leases `owner` holds on `shards` (shard, epoch) of one index, in one write.
    /// Returns the shards whose lease was lost (taken by another owner or epoch).
    pub async fn renew_leases(
        &self,
        name: &str,
        uuid: &str,
        owner: &str,
        shards: &[(u32, u64)],
        ttl_ms: i64,
    ) -> Result<Vec<u32>, MetastoreError> {
        let mut lost = Vec::new();
        self.update_index(name, |m| {
            if m.uuid != uuid {
                return Err(MetastoreError::IndexNotFound(name.into()));
            }
            lost.clear();
            let now = now_millis();
            for &(shard, epoch) in shards {
                match m.leases.get_mut(&shard) {
                    Some(l) if l.owner == owner && l.epoch == epoch => {
                        l.expires_at_ms = now + ttl_ms
                    }
                    _ => lost.push(shard),
                }
            }
            Ok(())
        })
        .await?;
        Ok(lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
        }
    }

    #[tokio::test]
    async fn survives_restart_and_rejects_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let ms = Metastore::open(Storage::local(dir.path()).unwrap())
            .await
            .unwrap();
        let meta = ms
            .create_index("logs", IndexSettings::default(), Mappings::default())
            .await
            .unwrap();
        assert!(matches!(
            ms.create_index("logs", IndexSettings::default(), Mappings::default())
                .await,
            Err(MetastoreError::IndexAlreadyExists(_))
        ));
        ms.publish_commit("logs", &meta.uuid, 0, commit(1, 1))
            .await
            .unwrap();
        let reopened = Metastore::open(Storage::local(dir.path()).unwrap())
            .await
            .unwrap();
        let got = reopened.get_index("logs").unwrap();
        assert_eq!(got.shards[&0].generation, 1);
        assert!(matches!(
            ms.create_index("Bad", IndexSettings::default(), Mappings::default())
                .await,
            Err(MetastoreError::InvalidIndexName { .. })
        ));
    }

    #[tokio::test]
    async fn stale_commits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ms = Metastore::open(Storage::local(dir.path()).unwrap())
            .await
            .unwrap();
        let meta = ms
            .create_index("x", IndexSettings::default(), Mappings::default())
            .await
            .unwrap();
        ms.publish_commit("x", &meta.uuid, 0, commit(5, 2))
            .await
            .unwrap();
        assert!(matches!(
            ms.publish_commit("x", &meta.uuid, 0, commit(9, 1)).await,
            Err(MetastoreError::StaleCommit { .. })
        ));
        assert!(matches!(
            ms.publish_commit("x", &meta.uuid, 0, commit(5, 2)).await,
            Err(MetastoreError::StaleCommit { .. })
        ));
        ms.publish_commit("x", &meta.uuid, 0, commit(1, 3))
            .await
            .unwrap();
    }

    /// Two metastores (as two processes would) racing on the same index lose no update.
    #[tokio::test]
    async fn racing_metastores_lose_no_update() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(
            Metastore::open(Storage::local(dir.path()).unwrap())
                .await
                .unwrap(),
        );
        a.create_index("race", IndexSettings::default(), Mappings::default())
            .await
            .unwrap();
        let b = Arc::new(
            Metastore::open(Storage::local(dir.path()).unwrap())
                .await
                .unwrap(),
        );
        let mut tasks = Vec::new();
        for (i, ms) in [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            tasks.push(tokio::spawn(async move {
                for j in 0..10 {
                    let field = format!("f{i}_{j}");
                    let mut add = BTreeMap::new();
                    add.insert(
                        field,
                        floe_proto::mapping::FieldMapping::of(floe_proto::FieldType::Long),
                    );
                    ms.merge_mappings("race", &add).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let c = Metastore::open(Storage::local(dir.path()).unwrap())
            .await
            .unwrap();
        assert_eq!(c.get_index("race").unwrap().mappings.fields.len(), 40);
    }

    #[tokio::test]
    async fn leases_fence_older_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let ms = Metastore::open(Storage::local(dir.path()).unwrap())
            .await
            .unwrap();
        let meta = ms
            .create_index("l", IndexSettings::default(), Mappings::default())
            .await
            .unwrap();
        let (a, _) = ms
            .acquire_lease("l", &meta.uuid, 0, "A", 60_000)
            .await
            .unwrap();
        assert_eq!(a.epoch, 1);
        assert!(matches!(
            ms.acquire_lease("l", &meta.uuid, 0, "B", 60_000).await,
            Err(MetastoreError::LeaseHeld { .. })
        ));
        ms.publish_commit("l", &meta.uuid, 0, commit(1, 1))
            .await
            .unwrap();
        // A's lease runs out; B takes over with a higher epoch.
        ms.renew_leases("l", &meta.uuid, "A", &[(0, 1)], -1)
            .await
            .unwrap();
        let (b, _) = ms
            .acquire_lease("l", &meta.uuid, 0, "B", 60_000)
            .await
            .unwrap();
        assert_eq!(b.epoch, 2);
        assert_eq!(
            ms.renew_leases("l", &meta.uuid, "A", &[(0, 1)], 60_000)
                .await
                .unwrap(),
            vec![0]
        );
        assert!(matches!(
            ms.publish_commit("l", &meta.uuid, 0, commit(2, 1)).await,
            Err(MetastoreError::StaleCommit { .. })
        ));
        ms.publish_commit("l", &meta.uuid, 0, commit(2, 2))
            .await
            .unwrap();
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
        assert!(matches!(
            ms.delete_index("gone").await,
            Err(MetastoreError::IndexNotFound(_))
        ));
    }
}
