//! Points in time: a search context pinned to the commits its shards had when it was
//! opened (`_search/point_in_time`, and every scroll). Segment objects are immutable, so a
//! pin costs two small kinds of records, never a copy:
//!
//! - `pits/<id>.json`: the point in time ([`Pit`]: each shard's commit, the expiry), read by
//!   whichever searcher the next page lands on;
//! - `indexes/<uuid>/<shard>/pins/<id>`: the segment objects it holds in that shard
//!   ([`pinned_objects`]). A writer about to delete segment objects that merges replaced
//!   keeps the ones a live pin names; an expired pin is deleted then.
//!
//! Nothing lives only in a process: a point in time survives the searcher that opened it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use floe_proto::ShardCommit;
use floe_storage::{Storage, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{now_millis, MetastoreError};

const PITS: &str = "pits";
/// The longest keep-alive OpenSearch allows by default (`point_in_time.max_keep_alive`).
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(24 * 3600);

/// One index of a point in time: the commits of its shards when it was opened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PinnedIndex {
    pub name: String,
    pub uuid: String,
    /// The filter of the alias it was named through, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    pub shards: BTreeMap<u32, ShardCommit>,
}

/// A point in time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pit {
    pub id: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub indexes: Vec<PinnedIndex>,
}

/// What a shard's pin holds.
#[derive(Serialize, Deserialize)]
struct Pin {
    expires_ms: i64,
    /// Object keys below the shard's `segments/` prefix.
    objects: Vec<String>,
}

fn pit_key(id: &str) -> String {
    format!("{PITS}/{id}.json")
}

fn pin_key(uuid: &str, shard: u32, id: &str) -> String {
    format!("indexes/{uuid}/{shard}/pins/{id}")
}

/// Points in time in the bucket, with a cache of the ones read here (they never change
/// except for their expiry).
pub struct PitStore {
    storage: Storage,
    cache: Mutex<HashMap<String, Arc<Pit>>>,
}

impl PitStore {
    pub fn new(storage: Storage) -> PitStore {
        PitStore {
            storage,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a point in time over these commits: the pins first, so no object they name
    /// can be collected once the id is handed out.
    pub async fn create(
        &self,
        indexes: Vec<PinnedIndex>,
        keep_alive: Duration,
    ) -> Result<Arc<Pit>, MetastoreError> {
        let keep_alive = checked_keep_alive(keep_alive)?;
        let now = now_millis();
        let pit = Pit {
            id: uuid::Uuid::new_v4().simple().to_string(),
            created_ms: now,
            expires_ms: now + keep_alive.as_millis() as i64,
            indexes,
        };
        self.write(&pit).await?;
        let pit = Arc::new(pit);
        let mut cache = self.cache.lock().expect("pit cache");
        // Expired ones are dropped here, so every scroll does not stay in memory forever.
        cache.retain(|_, p| p.expires_ms > now);
        cache.insert(pit.id.clone(), pit.clone());
        Ok(pit)
    }

    async fn write(&self, pit: &Pit) -> Result<(), MetastoreError> {
        let pins = pit.indexes.iter().flat_map(|ix| {
            ix.shards.iter().map(move |(shard, commit)| {
                let pin = Pin {
                    expires_ms: pit.expires_ms,
                    objects: commit
                        .files
                        .iter()
                        .map(|f| f.object_key().to_string())
                        .collect(),
                };
                (pin_key(&ix.uuid, *shard, &pit.id), pin)
            })
        });
        let writes = pins.map(|(key, pin)| {
            let storage = self.storage.clone();
            async move {
                let bytes = serde_json::to_vec(&pin).expect("serializable");
                storage.put(&key, Bytes::from(bytes)).await
            }
        });
        futures::future::try_join_all(writes).await?;
        let bytes = serde_json::to_vec(pit).expect("serializable");
        self.storage
            .put(&pit_key(&pit.id), Bytes::from(bytes))
            .await?;
        Ok(())
    }

    /// The point in time `id`, if it exists and has not expired.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<Pit>>, MetastoreError> {
        if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let cached = self.cache.lock().expect("pit cache").get(id).cloned();
        let pit = match cached {
            Some(p) if p.expires_ms > now_millis() => p,
            _ => match self.storage.get(&pit_key(id)).await {
                Ok(bytes) => {
                    let pit: Pit =
                        serde_json::from_slice(&bytes).map_err(|e| MetastoreError::Corrupt {
                            key: pit_key(id),
                            reason: e.to_string(),
                        })?;
                    let pit = Arc::new(pit);
                    self.cache
                        .lock()
                        .expect("pit cache")
                        .insert(id.to_string(), pit.clone());
                    pit
                }
                Err(StorageError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        Ok((pit.expires_ms > now_millis()).then_some(pit))
    }

    /// Keeps `pit` alive for `keep_alive` from now (rewrites its records only when that
    /// moves the expiry by more than a tenth of the keep-alive, so paging costs no writes).
    pub async fn extend(&self, pit: &Pit, keep_alive: Duration) -> Result<(), MetastoreError> {
        let keep_alive = checked_keep_alive(keep_alive)?;
        let expires_ms = now_millis() + keep_alive.as_millis() as i64;
        if expires_ms <= pit.expires_ms + keep_alive.as_millis() as i64 / 10 {
            return Ok(());
        }
        let extended = Pit {
            expires_ms,
            ..pit.clone()
        };
        self.write(&extended).await?;
        self.cache
            .lock()
            .expect("pit cache")
            .insert(pit.id.clone(), Arc::new(extended));
        Ok(())
    }

    /// Closes `id`; false if there was no such (live) point in time.
    pub async fn delete(&self, id: &str) -> Result<bool, MetastoreError> {
        let Some(pit) = self.get(id).await? else {
            return Ok(false);
        };
        self.cache.lock().expect("pit cache").remove(id);
        self.storage.delete(&pit_key(id)).await?;
        for ix in &pit.indexes {
            for shard in ix.shards.keys() {
                self.storage.delete(&pin_key(&ix.uuid, *shard, id)).await?;
            }
        }
        Ok(true)
    }

    /// Every live point in time (`GET /_search/point_in_time/_all`).
    pub async fn list(&self) -> Result<Vec<Arc<Pit>>, MetastoreError> {
        let mut out = Vec::new();
        for (key, _) in self.storage.list(PITS).await? {
            let id = key
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".json"))
                .unwrap_or_default();
            if let Some(pit) = self.get(id).await? {
                out.push(pit);
            }
        }
        Ok(out)
    }
}

fn checked_keep_alive(keep_alive: Duration) -> Result<Duration, MetastoreError> {
    if keep_alive > MAX_KEEP_ALIVE {
        return Err(MetastoreError::Rejected(format!(
            "Keep alive for request ({}s) is too large. It must be less than (86400s). This limit can be set by changing the [point_in_time.max_keep_alive] cluster level setting.",
            keep_alive.as_secs()
        )));
    }
    Ok(keep_alive)
}

/// The segment objects (keys below `segments/`) of the shard at `shard_prefix`
/// (`indexes/<uuid>/<shard>`) that live points in time hold. Expired pins are deleted.
pub async fn pinned_objects(
    storage: &Storage,
    shard_prefix: &str,
) -> Result<HashSet<String>, StorageError> {
    let now = now_millis();
    let mut held = HashSet::new();
    for (key, _) in storage.list(&format!("{shard_prefix}/pins")).await? {
        let pin: Option<Pin> = match storage.get(&key).await {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            Err(StorageError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        match pin {
            Some(p) if p.expires_ms > now => held.extend(p.objects),
            // Expired, or unreadable (a pin is written whole): nothing to keep for it.
            _ => storage.delete(&key).await?,
        }
    }
    Ok(held)
}
