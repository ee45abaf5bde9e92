//! Node sessions: one record per node (`metastore/sessions/<node_id>.json`) that the node
//! renews once per interval for all the shards it owns. A shard's owner is a node
//! incarnation; the owner may act on the shard while its session is live.
//!
//! Safety assumes bounded clock skew between nodes (`clock_skew_margin`): the owner stops
//! acknowledging `margin` before its session expires (measured on its monotonic clock from
//! the start of the renewal), and other nodes treat the session as live until `margin` after
//! the expiry written in the record (on their wall clock). A new process with the same node
//! id waits for the old incarnation's session to expire before taking it over.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use floe_proto::{NodeSessionRecord, ShardOwner};
use floe_storage::{Storage, StorageError};
use tracing::{info, warn};

use crate::error::{now_millis, parse, read_record, MetastoreError};

pub(crate) const SESSIONS_PREFIX: &str = "metastore/sessions";

pub(crate) fn key_of(node_id: &str) -> String {
    format!("{SESSIONS_PREFIX}/{node_id}.json")
}

/// The session record of `owner`, expiring at `expires_at_ms`, serialized.
fn record_body(owner: &ShardOwner, expires_at_ms: i64) -> Bytes {
    let record = NodeSessionRecord {
        node_id: owner.node_id.clone(),
        incarnation: owner.incarnation.clone(),
        expires_at_ms,
    };
    Bytes::from(serde_json::to_vec(&record).expect("serializable"))
}

/// This process's session as a node.
pub struct NodeSession {
    storage: Storage,
    owner: ShardOwner,
    ttl: Duration,
    margin: Duration,
    etag: Mutex<String>,
    /// Until when (monotonic) this incarnation may act; `None` once another incarnation took
    /// the session over.
    deadline: Mutex<Option<Instant>>,
}

impl NodeSession {
    /// Registers a new incarnation of `node_id`. If a previous incarnation's session is still
    /// live, waits until it expires (it may only be paused, and must be fenced first).
    pub async fn register(
        storage: Storage,
        node_id: &str,
        ttl: Duration,
        margin: Duration,
    ) -> Result<NodeSession, MetastoreError> {
        let owner = ShardOwner {
            node_id: node_id.to_string(),
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
        };
        let key = key_of(node_id);
        let mut announced = false;
        loop {
            let asked_at = Instant::now();
            let body = record_body(&owner, now_millis() + ttl.as_millis() as i64);
            let written = match storage.get_with_etag(&key).await {
                Err(StorageError::NotFound(_)) => storage.put_if_absent(&key, body).await,
                Ok((bytes, etag)) => {
                    let old: NodeSessionRecord = parse(&key, &bytes)?;
                    let live_until = old.expires_at_ms + margin.as_millis() as i64;
                    let wait = live_until - now_millis();
                    if wait > 0 {
                        if !announced {
                            info!(node = node_id, old_incarnation = %old.incarnation, wait_ms = wait,
                                "waiting for the previous incarnation's session to expire");
                            announced = true;
                        }
                        tokio::time::sleep(Duration::from_millis(wait.min(500) as u64)).await;
                        continue;
                    }
                    storage.put_if_match(&key, body, &etag).await
                }
                Err(e) => Err(e),
            };
            match written {
                Ok(etag) => {
                    info!(node = node_id, incarnation = %owner.incarnation, "node session registered");
                    return Ok(NodeSession {
                        storage,
                        owner,
                        ttl,
                        margin,
                        etag: Mutex::new(etag),
                        deadline: Mutex::new(Some(asked_at + ttl.saturating_sub(margin))),
                    });
                }
                // Raced another starter: look again.
                Err(StorageError::AlreadyExists(_)) | Err(StorageError::PreconditionFailed(_)) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// This incarnation as a shard owner.
    pub fn owner(&self) -> &ShardOwner {
        &self.owner
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether this incarnation may still acknowledge writes (its session is live by its
    /// own clock, with the skew margin).
    pub fn valid(&self) -> bool {
        self.deadline
            .lock()
            .expect("session lock")
            .is_some_and(|d| Instant::now() < d)
    }

    /// Whether another incarnation took the session over (permanent).
    pub fn lost(&self) -> bool {
        self.deadline.lock().expect("session lock").is_none()
    }

    /// Extends the session by one TTL (one conditional write for all shards). A session
    /// that already lapsed on this incarnation's clock is never revived: another node may
    /// have taken its shards meanwhile, so the incarnation is over (`SessionLost`) and the
    /// caller starts a new one.
    pub async fn renew(&self) -> Result<(), MetastoreError> {
        if self.lost() {
            return Err(MetastoreError::SessionLost("session ended".into()));
        }
        if !self.valid() {
            return Err(self.end("lapsed before it could be renewed"));
        }
        let key = key_of(&self.owner.node_id);
        let asked_at = Instant::now();
        let body = record_body(&self.owner, now_millis() + self.ttl.as_millis() as i64);
        let etag = self.etag.lock().expect("session lock").clone();
        let written = match self.storage.put_if_match(&key, body.clone(), &etag).await {
            // A retried conditional write whose first attempt landed answers 412: if the
            // record still names this incarnation, adopt its ETag and write once more.
            Err(StorageError::PreconditionFailed(_)) => {
                match self.storage.get_with_etag(&key).await {
                    Ok((bytes, current)) => {
                        let rec: NodeSessionRecord = parse(&key, &bytes)?;
                        if rec.incarnation == self.owner.incarnation {
                            self.storage.put_if_match(&key, body, &current).await
                        } else {
                            Err(StorageError::PreconditionFailed(key.clone()))
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        match written {
            Ok(new_etag) => {
                *self.etag.lock().expect("session lock") = new_etag;
                let mut d = self.deadline.lock().expect("session lock");
                if d.is_some() {
                    *d = Some(asked_at + self.ttl.saturating_sub(self.margin));
                }
                Ok(())
            }
            Err(StorageError::PreconditionFailed(_)) => {
                Err(self.end("taken over by a newer incarnation"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Marks this incarnation as over.
    fn end(&self, why: &str) -> MetastoreError {
        warn!(node = %self.owner.node_id, incarnation = %self.owner.incarnation, "node session {why}: fenced");
        *self.deadline.lock().expect("session lock") = None;
        MetastoreError::SessionLost(why.to_string())
    }
}

impl NodeSession {
    /// Ends the session at once (clean shutdown, after every shard was published): a
    /// restarted incarnation then takes over without waiting for the TTL.
    pub async fn release(&self) -> Result<(), MetastoreError> {
        let key = key_of(&self.owner.node_id);
        *self.deadline.lock().expect("session lock") = None;
        let body = record_body(&self.owner, 0);
        let etag = self.etag.lock().expect("session lock").clone();
        match self.storage.put_if_match(&key, body, &etag).await {
            Ok(_) | Err(StorageError::PreconditionFailed(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether `owner`'s session is live as seen from here (its record names that incarnation
/// and has not expired, plus the skew margin).
pub(crate) async fn owner_alive(
    storage: &Storage,
    owner: &ShardOwner,
    margin: Duration,
) -> Result<bool, MetastoreError> {
    let record = read_record::<NodeSessionRecord>(storage, &key_of(&owner.node_id)).await?;
    Ok(record.is_some_and(|(rec, _)| {
        rec.incarnation == owner.incarnation
            && rec.expires_at_ms + margin.as_millis() as i64 > now_millis()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_incarnation_waits_for_the_old_session_and_fences_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let ttl = Duration::from_millis(600);
        let margin = Duration::from_millis(100);
        let old = NodeSession::register(storage.clone(), "n", ttl, margin)
            .await
            .unwrap();
        assert!(old.valid());
        assert!(owner_alive(&storage, old.owner(), margin).await.unwrap());
        let started = Instant::now();
        let new = NodeSession::register(storage.clone(), "n", ttl, margin)
            .await
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "waited for the old session to expire ({:?})",
            started.elapsed()
        );
        assert!(
            !old.valid(),
            "the old incarnation's own clock ran out first"
        );
        assert!(matches!(
            old.renew().await,
            Err(MetastoreError::SessionLost(_))
        ));
        assert!(old.lost());
        assert!(!owner_alive(&storage, old.owner(), margin).await.unwrap());
        new.renew().await.unwrap();
        assert!(new.valid());
        // A clean shutdown releases the session: the next incarnation need not wait.
        new.release().await.unwrap();
        assert!(!new.valid());
        let started = Instant::now();
        NodeSession::register(storage.clone(), "n", Duration::from_secs(30), margin)
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(300));
    }
}
