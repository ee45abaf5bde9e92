//! Cluster-level settings (`PUT /_cluster/settings`), persisted in the bucket
//! (`metastore/cluster_settings.json`) so that every node and every restart sees them.
//! Kept flat (`plugins.index_state_management.job_interval`); `null` removes a setting.

use floe_storage::Storage;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{read_record, update_record, MetastoreError};

const KEY: &str = "metastore/cluster_settings.json";

/// `persistent` and `transient` settings (both persisted: Floe nodes keep no other state).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterSettings {
    #[serde(default)]
    pub persistent: Map<String, Value>,
    #[serde(default)]
    pub transient: Map<String, Value>,
}

impl ClusterSettings {
    /// A setting's value: transient over persistent.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.transient.get(key).or_else(|| self.persistent.get(key))
    }

    /// Reads the record (defaults when none was ever written).
    pub async fn load(storage: &Storage) -> Result<ClusterSettings, MetastoreError> {
        Ok(read_record::<ClusterSettings>(storage, KEY)
            .await?
            .map(|(s, _)| s)
            .unwrap_or_default())
    }

    /// Applies a `PUT /_cluster/settings` body with compare-and-swap. Returns the new
    /// settings.
    pub async fn update(
        storage: &Storage,
        body: &Value,
    ) -> Result<ClusterSettings, MetastoreError> {
        let part = |k: &str| -> Result<Map<String, Value>, MetastoreError> {
            let mut out = Map::new();
            match body.get(k) {
                None | Some(Value::Null) => {}
                Some(v @ Value::Object(_)) => out = crate::names::flatten_keys(v),
                Some(_) => {
                    return Err(MetastoreError::Rejected(format!("[{k}] must be an object")))
                }
            }
            Ok(out)
        };
        let (persistent, transient) = (part("persistent")?, part("transient")?);
        if persistent.is_empty() && transient.is_empty() {
            return Err(MetastoreError::Rejected(
                "Validation Failed: 1: no settings to update;".into(),
            ));
        }
        let current = read_record::<ClusterSettings>(storage, KEY).await?;
        let (next, _) = update_record(storage, KEY, current, |next: &mut ClusterSettings| {
            for (target, changes) in [
                (&mut next.persistent, &persistent),
                (&mut next.transient, &transient),
            ] {
                for (k, v) in changes {
                    if v.is_null() {
                        target.remove(k);
                    } else {
                        target.insert(k.clone(), v.clone());
                    }
                }
            }
            Ok(next.clone())
        })
        .await?;
        Ok(next)
    }
}
