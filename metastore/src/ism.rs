//! Index State Management: policies (states of actions, joined by transitions) and each
//! managed index's progress through its policy, both in the bucket so that any node — or the
//! same node after a restart — carries on where the last run stopped.
//!
//! - `metastore/ism/policies/<id>.json`: a policy ([`PolicyRecord`]);
//! - `metastore/ism/managed/<index uuid>.json`: a managed index ([`ManagedIndex`]).
//!
//! Changes are compare-and-swap. A runner *claims* a step before running it (a CAS that
//! records who runs it since when), so two runners never run one action at once.

use std::time::Duration;

use bytes::Bytes;
use floe_proto::model::{parse_byte_value, parse_time_value};
use floe_storage::{Storage, StorageError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{now_millis, read_record, update_record, MetastoreError};
use crate::names::matches_pattern;

const POLICIES: &str = "metastore/ism/policies";
const MANAGED: &str = "metastore/ism/managed";
/// A claim older than this is taken to be abandoned (its runner died mid-step).
pub const CLAIM_TIMEOUT_MS: i64 = 60_000;

fn rejected(reason: impl Into<String>) -> MetastoreError {
    MetastoreError::Rejected(reason.into())
}

/// A stored policy: the body as the client gave it (normalized), and its version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub id: String,
    pub seq_no: u64,
    pub policy: Value,
}

/// One action of a state.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Rollover {
        min_doc_count: Option<u64>,
        min_size: Option<String>,
        min_index_age: Option<String>,
        min_primary_shard_size: Option<String>,
    },
    Delete,
    ReadOnly,
    ReadWrite,
    ForceMerge {
        max_num_segments: u32,
    },
    ReplicaCount {
        number_of_replicas: u32,
    },
    IndexPriority {
        priority: i64,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Rollover { .. } => "rollover",
            Action::Delete => "delete",
            Action::ReadOnly => "read_only",
            Action::ReadWrite => "read_write",
            Action::ForceMerge { .. } => "force_merge",
            Action::ReplicaCount { .. } => "replica_count",
            Action::IndexPriority { .. } => "index_priority",
        }
    }
}

/// How a failed action is retried (OpenSearch's `retry`: 3 tries, exponential from 1 min).
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    pub count: u32,
    pub delay: Duration,
    /// `exponential` (delay × 2^attempt), `linear` (delay × (attempt + 1)) or `constant`.
    pub backoff: String,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            count: 3,
            delay: Duration::from_secs(60),
            backoff: "exponential".into(),
        }
    }
}

impl Retry {
    /// Wait before retry number `attempt` (0-based).
    pub fn delay_before(&self, attempt: u32) -> Duration {
        match self.backoff.as_str() {
            "constant" => self.delay,
            "linear" => self.delay * (attempt + 1),
            _ => self.delay * 2u32.saturating_pow(attempt.min(16)),
        }
    }
}

/// One action of a state, with its retry policy and timeout.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub action: Action,
    pub retry: Retry,
    /// Fails the action when it has not completed this long after it started.
    pub timeout: Option<Duration>,
}

/// Conditions of a transition (all given must hold; none: at once).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transition {
    pub state_name: String,
    pub min_index_age: Option<Duration>,
    pub min_doc_count: Option<u64>,
    pub min_size: Option<u64>,
    pub min_rollover_age: Option<Duration>,
}

/// What a transition's conditions are checked against.
#[derive(Clone, Debug, Default)]
pub struct IndexFacts {
    pub age: Duration,
    pub doc_count: u64,
    pub size_bytes: u64,
    /// Time since the index rolled over, if it did.
    pub since_rollover: Option<Duration>,
}

impl Transition {
    pub fn holds(&self, f: &IndexFacts) -> bool {
        self.min_index_age.is_none_or(|d| f.age >= d)
            && self.min_doc_count.is_none_or(|n| f.doc_count >= n)
            && self.min_size.is_none_or(|b| f.size_bytes >= b)
            && self
                .min_rollover_age
                .is_none_or(|d| f.since_rollover.is_some_and(|s| s >= d))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PolicyState {
    pub name: String,
    pub actions: Vec<Step>,
    pub transitions: Vec<Transition>,
}

/// A policy, parsed and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub default_state: String,
    pub states: Vec<PolicyState>,
    /// `ism_template`: (index patterns, priority) that attach this policy to new indexes.
    pub templates: Vec<(Vec<String>, i64)>,
}

fn duration(v: &Value, key: &str) -> Result<Duration, MetastoreError> {
    v.as_str().and_then(parse_time_value).ok_or_else(|| {
        rejected(format!(
            "failed to parse [{key}]: [{v}] is not a time value"
        ))
    })
}

fn count(v: &Value, key: &str) -> Result<u64, MetastoreError> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| rejected(format!("failed to parse [{key}]: [{v}] is not a number")))
}

fn bytes(v: &Value, key: &str) -> Result<String, MetastoreError> {
    let s = v
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string());
    parse_byte_value(&s)
        .map(|_| s.clone())
        .ok_or_else(|| rejected(format!("failed to parse [{key}]: [{v}] is not a byte size")))
}

fn parse_step(v: &Value) -> Result<Step, MetastoreError> {
    let mut retry = Retry::default();
    if let Some(r) = v.get("retry").filter(|r| !r.is_null()) {
        if let Some(n) = r.get("count") {
            retry.count = count(n, "retry.count")? as u32;
        }
        if let Some(d) = r.get("delay") {
            retry.delay = duration(d, "retry.delay")?;
        }
        if let Some(b) = r.get("backoff") {
            let b = b.as_str().unwrap_or_default();
            if !matches!(b, "exponential" | "linear" | "constant") {
                return Err(rejected(format!(
                    "[retry.backoff] must be exponential, linear or constant, not [{b}]"
                )));
            }
            retry.backoff = b.to_string();
        }
    }
    let timeout = v
        .get("timeout")
        .filter(|t| !t.is_null())
        .map(|t| duration(t, "timeout"))
        .transpose()?;
    Ok(Step {
        action: parse_action(v)?,
        retry,
        timeout,
    })
}

fn parse_action(v: &Value) -> Result<Action, MetastoreError> {
    let o = v
        .as_object()
        .ok_or_else(|| rejected("an action must be an object"))?;
    // Besides its one action key, an action may carry `retry` and `timeout`.
    let Some((kind, body)) = o
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), "retry" | "timeout"))
    else {
        return Err(rejected("an action must name what it does"));
    };
    let get = |k: &str| body.get(k).filter(|v| !v.is_null());
    Ok(match kind.as_str() {
        "rollover" => Action::Rollover {
            min_doc_count: get("min_doc_count")
                .map(|v| count(v, "min_doc_count"))
                .transpose()?,
            min_size: get("min_size").map(|v| bytes(v, "min_size")).transpose()?,
            min_index_age: get("min_index_age")
                .map(|v| {
                    duration(v, "min_index_age").map(|_| v.as_str().unwrap_or_default().to_string())
                })
                .transpose()?,
            min_primary_shard_size: get("min_primary_shard_size")
                .map(|v| bytes(v, "min_primary_shard_size"))
                .transpose()?,
        },
        "delete" => Action::Delete,
        "read_only" => Action::ReadOnly,
        "read_write" => Action::ReadWrite,
        "force_merge" => Action::ForceMerge {
            max_num_segments: get("max_num_segments")
                .map(|v| count(v, "max_num_segments"))
                .transpose()?
                .ok_or_else(|| rejected("[force_merge] requires [max_num_segments]"))?
                .max(1) as u32,
        },
        "replica_count" => Action::ReplicaCount {
            number_of_replicas: get("number_of_replicas")
                .map(|v| count(v, "number_of_replicas"))
                .transpose()?
                .ok_or_else(|| rejected("[replica_count] requires [number_of_replicas]"))?
                as u32,
        },
        "index_priority" => Action::IndexPriority {
            priority: get("priority")
                .and_then(Value::as_i64)
                .ok_or_else(|| rejected("[index_priority] requires [priority]"))?,
        },
        other => return Err(rejected(format!("unsupported ISM action [{other}]"))),
    })
}

fn parse_transition(v: &Value) -> Result<Transition, MetastoreError> {
    let state_name = v
        .get("state_name")
        .and_then(Value::as_str)
        .ok_or_else(|| rejected("a transition requires [state_name]"))?
        .to_string();
    let mut t = Transition {
        state_name,
        ..Default::default()
    };
    if let Some(c) = v.get("conditions").filter(|c| !c.is_null()) {
        let o = c
            .as_object()
            .ok_or_else(|| rejected("[conditions] must be an object"))?;
        for (k, x) in o {
            match k.as_str() {
                "min_index_age" => t.min_index_age = Some(duration(x, k)?),
                "min_doc_count" => t.min_doc_count = Some(count(x, k)?),
                "min_size" => t.min_size = parse_byte_value(&bytes(x, k)?),
                "min_rollover_age" => t.min_rollover_age = Some(duration(x, k)?),
                other => {
                    return Err(rejected(format!(
                        "unsupported transition condition [{other}]"
                    )))
                }
            }
        }
    }
    Ok(t)
}

impl Policy {
    /// Parses and checks a policy body (`{"policy": {...}}` or the inner object).
    pub fn parse(body: &Value) -> Result<Policy, MetastoreError> {
        let p = body.get("policy").unwrap_or(body);
        let default_state = p
            .get("default_state")
            .and_then(Value::as_str)
            .ok_or_else(|| rejected("a policy requires [default_state]"))?
            .to_string();
        let states_json = p
            .get("states")
            .and_then(Value::as_array)
            .ok_or_else(|| rejected("a policy requires [states]"))?;
        let mut states = Vec::new();
        for s in states_json {
            let name = s
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| rejected("a state requires [name]"))?
                .to_string();
            let actions = s
                .get("actions")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(parse_step).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default();
            let transitions = s
                .get("transitions")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(parse_transition)
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default();
            states.push(PolicyState {
                name,
                actions,
                transitions,
            });
        }
        let names: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
        if !names.contains(&default_state.as_str()) {
            return Err(rejected(format!(
                "the default state [{default_state}] is not one of the policy's states"
            )));
        }
        for s in &states {
            if let Some(t) = s
                .transitions
                .iter()
                .find(|t| !names.contains(&t.state_name.as_str()))
            {
                return Err(rejected(format!(
                    "state [{}] transitions to [{}], which is not one of the policy's states",
                    s.name, t.state_name
                )));
            }
        }
        let templates = match p.get("ism_template") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().map(parse_ism_template).collect::<Result<_, _>>()?,
            Some(one) => vec![parse_ism_template(one)?],
        };
        Ok(Policy {
            default_state,
            states,
            templates,
        })
    }

    pub fn state(&self, name: &str) -> Option<&PolicyState> {
        self.states.iter().find(|s| s.name == name)
    }

    /// The priority with which this policy claims a new index named `index`, if it does.
    pub fn claims(&self, index: &str) -> Option<i64> {
        self.templates
            .iter()
            .filter(|(patterns, _)| patterns.iter().any(|p| matches_pattern(p, index)))
            .map(|(_, priority)| *priority)
            .max()
    }
}

fn parse_ism_template(v: &Value) -> Result<(Vec<String>, i64), MetastoreError> {
    let patterns = v
        .get("index_patterns")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .filter(|p| !p.is_empty())
        .ok_or_else(|| rejected("[ism_template] requires [index_patterns]"))?;
    Ok((
        patterns,
        v.get("priority").and_then(Value::as_i64).unwrap_or(0),
    ))
}

/// A managed index's progress through its policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ManagedIndex {
    pub index: String,
    pub index_uuid: String,
    pub policy_id: String,
    /// Current state; `None` until the first run enters the default state.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub state_started_ms: i64,
    /// Next action to run in the state (all done: transitions are checked).
    #[serde(default)]
    pub action_index: usize,
    #[serde(default)]
    pub action_started_ms: i64,
    #[serde(default)]
    pub rolled_over: bool,
    #[serde(default)]
    pub rolled_over_ms: Option<i64>,
    /// The last step failed; nothing runs until `retry`.
    #[serde(default)]
    pub failed: bool,
    /// Retries of the current action used up (reset when it succeeds).
    #[serde(default)]
    pub consumed_retries: u32,
    /// A failed action is tried again only from then on (ms since the epoch).
    #[serde(default)]
    pub retry_after_ms: i64,
    #[serde(default)]
    pub info: String,
    /// Who runs a step now, and since when (see [`CLAIM_TIMEOUT_MS`]).
    #[serde(default)]
    pub claim: Option<(String, i64)>,
    /// A state to move to at the next run (`change_policy` with `state`, `retry` with `state`).
    #[serde(default)]
    pub next_state: Option<String>,
    #[serde(default)]
    pub last_run_ms: i64,
}

impl ManagedIndex {
    /// `GET /_plugins/_ism/explain` for this index.
    pub fn explain(&self, policy_seq_no: Option<u64>) -> Value {
        let mut v = json!({
            "index.plugins.index_state_management.policy_id": self.policy_id,
            "index.opendistro.index_state_management.policy_id": self.policy_id,
            "index": self.index,
            "index_uuid": self.index_uuid,
            "policy_id": self.policy_id,
            "policy_seq_no": policy_seq_no,
            "policy_primary_term": 1,
            "rolled_over": self.rolled_over,
            "enabled": !self.failed,
            "retry_info": {"failed": self.failed, "consumed_retries": self.consumed_retries,
                "retry_after": (self.retry_after_ms > 0).then_some(self.retry_after_ms)},
            "info": {"message": self.info},
        });
        if let Some(state) = &self.state {
            v["state"] = json!({"name": state, "start_time": self.state_started_ms});
        }
        v
    }
}

fn policy_key(id: &str) -> String {
    format!("{POLICIES}/{id}.json")
}

fn managed_key(uuid: &str) -> String {
    format!("{MANAGED}/{uuid}.json")
}

/// ISM records in the bucket.
#[derive(Clone)]
pub struct IsmStore {
    storage: Storage,
}

impl IsmStore {
    pub fn new(storage: Storage) -> IsmStore {
        IsmStore { storage }
    }

    /// Creates or replaces a policy (checked first). Returns the stored record.
    pub async fn put_policy(&self, id: &str, body: &Value) -> Result<PolicyRecord, MetastoreError> {
        if id.is_empty() || id.contains(['/', '*', ',', ' ']) {
            return Err(rejected(format!("invalid policy id [{id}]")));
        }
        Policy::parse(body)?;
        let mut policy = body.get("policy").unwrap_or(body).clone();
        policy["policy_id"] = json!(id);
        policy["last_updated_time"] = json!(now_millis());
        let key = policy_key(id);
        let current = read_record::<PolicyRecord>(&self.storage, &key).await?;
        let (record, _) = update_record(&self.storage, &key, current, |r: &mut PolicyRecord| {
            // A new policy starts at 0 (an absent record is the default, with no id).
            r.seq_no = if r.id.is_empty() { 0 } else { r.seq_no + 1 };
            r.id = id.to_string();
            r.policy = policy.clone();
            Ok(r.clone())
        })
        .await?;
        Ok(record)
    }

    pub async fn policy(&self, id: &str) -> Result<Option<PolicyRecord>, MetastoreError> {
        Ok(read_record::<PolicyRecord>(&self.storage, &policy_key(id))
            .await?
            .map(|(r, _)| r))
    }

    pub async fn policies(&self) -> Result<Vec<PolicyRecord>, MetastoreError> {
        let mut out = Vec::new();
        for (key, _) in self.storage.list(POLICIES).await? {
            if let Some((r, _)) = read_record::<PolicyRecord>(&self.storage, &key).await? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Deletes a policy; `false` if there was none.
    pub async fn delete_policy(&self, id: &str) -> Result<bool, MetastoreError> {
        if self.policy(id).await?.is_none() {
            return Ok(false);
        }
        self.storage.delete(&policy_key(id)).await?;
        Ok(true)
    }

    /// The policy whose `ism_template` claims a new index named `index` (highest priority).
    pub async fn policy_for_new_index(
        &self,
        index: &str,
    ) -> Result<Option<String>, MetastoreError> {
        let mut best: Option<(i64, String)> = None;
        for r in self.policies().await? {
            let Ok(p) = Policy::parse(&r.policy) else {
                continue;
            };
            if let Some(priority) = p.claims(index) {
                if best.as_ref().is_none_or(|(b, _)| priority > *b) {
                    best = Some((priority, r.id));
                }
            }
        }
        Ok(best.map(|(_, id)| id))
    }

    pub async fn managed(
        &self,
        uuid: &str,
    ) -> Result<Option<(ManagedIndex, String)>, MetastoreError> {
        read_record(&self.storage, &managed_key(uuid)).await
    }

    /// Every managed index.
    pub async fn all_managed(&self) -> Result<Vec<(ManagedIndex, String)>, MetastoreError> {
        let mut out = Vec::new();
        for (key, _) in self.storage.list(MANAGED).await? {
            if let Some(m) = read_record::<ManagedIndex>(&self.storage, &key).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Starts managing an index; `false` if it already is.
    pub async fn add(
        &self,
        index: &str,
        uuid: &str,
        policy_id: &str,
    ) -> Result<bool, MetastoreError> {
        let m = ManagedIndex {
            index: index.to_string(),
            index_uuid: uuid.to_string(),
            policy_id: policy_id.to_string(),
            ..Default::default()
        };
        let data = Bytes::from(serde_json::to_vec(&m).expect("serializable"));
        match self.storage.put_if_absent(&managed_key(uuid), data).await {
            Ok(_) => Ok(true),
            Err(StorageError::AlreadyExists(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn remove(&self, uuid: &str) -> Result<bool, MetastoreError> {
        if self.managed(uuid).await?.is_none() {
            return Ok(false);
        }
        self.storage.delete(&managed_key(uuid)).await?;
        Ok(true)
    }

    /// Writes `m` if the record is still at `etag`. Returns the new ETag, or `None` if
    /// someone else changed it meanwhile (the caller re-reads).
    pub async fn save(
        &self,
        m: &ManagedIndex,
        etag: &str,
    ) -> Result<Option<String>, MetastoreError> {
        let data = Bytes::from(serde_json::to_vec(m).expect("serializable"));
        match self
            .storage
            .put_if_match(&managed_key(&m.index_uuid), data, etag)
            .await
        {
            Ok(e) => Ok(Some(e)),
            Err(StorageError::PreconditionFailed(_)) | Err(StorageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_check() {
        let body = json!({"policy": {
            "description": "hot then delete",
            "default_state": "hot",
            "states": [
                {"name": "hot", "actions": [{"rollover": {"min_doc_count": 5}}],
                 "transitions": [{"state_name": "delete", "conditions": {"min_rollover_age": "2s"}}]},
                {"name": "delete", "actions": [{"delete": {}}], "transitions": []}
            ],
            "ism_template": {"index_patterns": ["logs-*"], "priority": 5}
        }});
        let p = Policy::parse(&body).unwrap();
        assert_eq!(p.states.len(), 2);
        assert_eq!(p.claims("logs-000001"), Some(5));
        assert_eq!(p.claims("metrics"), None);
        let t = &p.state("hot").unwrap().transitions[0];
        assert!(!t.holds(&IndexFacts::default()));
        assert!(t.holds(&IndexFacts {
            since_rollover: Some(Duration::from_secs(3)),
            ..Default::default()
        }));
        let mut bad = body.clone();
        bad["policy"]["default_state"] = json!("nope");
        assert!(Policy::parse(&bad).is_err());
        let step = &p.state("hot").unwrap().actions[0];
        assert_eq!((step.retry.count, step.timeout), (3, None));
        let mut custom = body.clone();
        custom["policy"]["states"][0]["actions"][0]["retry"] =
            json!({"count": 2, "delay": "1s", "backoff": "linear"});
        custom["policy"]["states"][0]["actions"][0]["timeout"] = json!("1h");
        let step = Policy::parse(&custom)
            .unwrap()
            .state("hot")
            .unwrap()
            .actions[0]
            .clone();
        assert_eq!(step.retry.count, 2);
        assert_eq!(step.retry.delay_before(2), Duration::from_secs(3));
        assert_eq!(step.timeout, Some(Duration::from_secs(3600)));
        let mut bad = body.clone();
        bad["policy"]["states"][0]["actions"][0] = json!({"shrink": {}});
        assert!(Policy::parse(&bad).is_err());
        let mut bad = body;
        bad["policy"]["states"][0]["transitions"][0]["state_name"] = json!("warm");
        assert!(Policy::parse(&bad).is_err());
    }
}
