//! The security state in the bucket: one record, `metastore/security.json` (users with
//! argon2id hashes, roles, role mappings, API keys), changed with compare-and-swap and
//! announced in the change log, so every process applies a change within a poll interval
//! and no node failure can lose it. Also the cluster secret that nodes present to each
//! other over gRPC.

use std::sync::Arc;

use bytes::Bytes;
use floe_security::{password, SecurityTable};
use floe_storage::{Storage, StorageError};
use tracing::{info, instrument};

use crate::changelog::Change;
use crate::error::{read_record, update_record, MetastoreError};
use crate::store::Metastore;

const SECURITY_KEY: &str = "metastore/security.json";
const CLUSTER_SECRET_KEY: &str = "metastore/cluster_secret";

pub(crate) async fn read(
    storage: &Storage,
) -> Result<Option<(SecurityTable, String)>, MetastoreError> {
    read_record::<SecurityTable>(storage, SECURITY_KEY).await
}

/// What bootstrapping did.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// The bucket already had a security state: the initial password was ignored.
    Existing,
    /// `admin` was created with the given password.
    Created,
    /// `admin` was created with this generated password (to be shown once).
    Generated(String),
}

impl Metastore {
    /// The security state as known here, and a version that changes with it (its ETag).
    pub fn security(&self) -> (Arc<SecurityTable>, Option<String>) {
        self.security_state()
    }

    /// Changes the security record with compare-and-swap (retried from a fresh copy on
    /// conflict; `change` may run several times and must be a pure function of the table).
    #[instrument(skip(self, change))]
    pub async fn update_security<R, F>(&self, change: F) -> Result<R, MetastoreError>
    where
        F: FnMut(&mut SecurityTable) -> Result<R, MetastoreError>,
    {
        let (table, etag) = self.security_state();
        let current = etag.map(|e| ((*table).clone(), e));
        let (out, written) = update_record(self.storage(), SECURITY_KEY, current, change).await?;
        if let Some((table, etag)) = written {
            self.set_security_state(table, Some(etag));
            self.announce(vec![Change::SecurityUpdated]).await;
        }
        Ok(out)
    }

    /// Re-reads the security record (change log, start-up).
    pub(crate) async fn reload_security(&self) -> Result<(), MetastoreError> {
        match read(self.storage()).await? {
            Some((table, etag)) => self.set_security_state(table, Some(etag)),
            None => self.set_security_state(SecurityTable::default(), None),
        }
        Ok(())
    }

    /// On an empty bucket, creates `admin` (mapped to `all_access`) with `initial_password`,
    /// or a generated one. Any later start finds the record and changes nothing. Processes
    /// starting together race on a create-only write: exactly one admin is created.
    pub async fn bootstrap_security(
        &self,
        initial_password: Option<&str>,
    ) -> Result<Bootstrap, MetastoreError> {
        self.reload_security().await?;
        if self.security_state().1.is_some() {
            return Ok(Bootstrap::Existing);
        }
        if let Some(p) = initial_password {
            if let Some(why) = password::weakness("admin", p) {
                return Err(MetastoreError::Rejected(format!(
                    "FLOE_INITIAL_ADMIN_PASSWORD is too weak: {why}"
                )));
            }
        }
        let (chosen, outcome) = match initial_password {
            Some(p) => (p.to_string(), Bootstrap::Created),
            None => {
                let p = password::generate();
                (p.clone(), Bootstrap::Generated(p))
            }
        };
        let table = SecurityTable::bootstrap(password::hash(&chosen));
        let body = Bytes::from(serde_json::to_vec(&table).expect("serializable"));
        match self.storage().put_if_absent(SECURITY_KEY, body).await {
            Ok(etag) => {
                self.set_security_state(table, Some(etag));
                self.announce(vec![Change::SecurityUpdated]).await;
                info!("security bootstrapped: user [admin] created");
                Ok(outcome)
            }
            Err(StorageError::AlreadyExists(_) | StorageError::PreconditionFailed(_)) => {
                self.reload_security().await?;
                Ok(Bootstrap::Existing)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The secret nodes of this cluster present to each other: created (random, 256 bits)
    /// by the first process that asks, the same for every process on the bucket.
    pub async fn cluster_secret(&self) -> Result<String, MetastoreError> {
        match self.storage().get(CLUSTER_SECRET_KEY).await {
            Ok(bytes) => return Ok(String::from_utf8_lossy(&bytes).trim().to_string()),
            Err(StorageError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let fresh = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        match self
            .storage()
            .put_if_absent(CLUSTER_SECRET_KEY, Bytes::from(fresh.clone()))
            .await
        {
            Ok(_) => Ok(fresh),
            Err(StorageError::AlreadyExists(_) | StorageError::PreconditionFailed(_)) => {
                let bytes = self.storage().get(CLUSTER_SECRET_KEY).await?;
                Ok(String::from_utf8_lossy(&bytes).trim().to_string())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_security::authn::authenticate;
    use floe_security::Credentials;

    #[tokio::test]
    async fn bootstrap_once_then_changes_reach_other_processes() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path()).unwrap();
        let a = Metastore::open(storage.clone()).await.unwrap();
        let b = Metastore::open(storage.clone()).await.unwrap();
        assert_eq!(
            a.bootstrap_security(Some("first-password")).await.unwrap(),
            Bootstrap::Created
        );
        // A later start ignores its variable; the first password stays.
        assert_eq!(
            b.bootstrap_security(Some("second-password")).await.unwrap(),
            Bootstrap::Existing
        );
        let login = |p: &str| Credentials::Basic {
            user: "admin".into(),
            password: p.into(),
        };
        assert!(authenticate(&b.security().0, &login("first-password"), 0).is_ok());
        assert!(authenticate(&b.security().0, &login("second-password"), 0).is_err());
        let before = b.security().1;
        a.update_security(|t| {
            t.users.get_mut("admin").unwrap().hash = password::hash("third-password");
            Ok(())
        })
        .await
        .unwrap();
        b.catch_up().await.unwrap();
        assert_ne!(b.security().1, before);
        assert!(authenticate(&b.security().0, &login("third-password"), 0).is_ok());
        assert_eq!(
            a.cluster_secret().await.unwrap(),
            b.cluster_secret().await.unwrap()
        );
    }
}
