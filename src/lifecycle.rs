//! The ISM runner: every `plugins.index_state_management.job_interval`, each managed index
//! moves through its policy — the actions of its state in order, then the first transition
//! whose conditions hold. Progress is saved in the bucket after every step, so a restart
//! (or another node's runner) carries on from there; a step is claimed before it runs, so
//! no action runs twice at once.

use std::sync::Arc;
use std::time::Duration;

use floe_metastore::cluster_settings::ClusterSettings;
use floe_metastore::ism::{Action, IndexFacts, IsmStore, ManagedIndex, Policy, CLAIM_TIMEOUT_MS};
use floe_metastore::{Metastore, MetastoreError};
use floe_proto::IndexMeta;
use floe_searcher::SearchService;
use floe_storage::Storage;
use floe_writer::rollover::{Conditions, RolloverRequest};
use floe_writer::{Writer, WriterError};
use serde_json::{json, Value};
use tracing::{debug, info, instrument, warn};

/// OpenSearch's default job interval: 5 minutes.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// Steps one index may take in one run (actions and transitions).
const STEPS_PER_RUN: usize = 8;
pub const JOB_INTERVAL: &str = "plugins.index_state_management.job_interval";

/// `job_interval`: OpenSearch's integer minutes, or a time value such as `2s`.
pub fn parse_job_interval(v: &Value) -> Option<Duration> {
    match v {
        Value::Number(n) => n.as_u64().map(|m| Duration::from_secs(m * 60)),
        Value::String(s) => match s.parse::<u64>() {
            Ok(m) => Some(Duration::from_secs(m * 60)),
            Err(_) => floe_proto::model::parse_time_value(s),
        },
        _ => None,
    }
    .filter(|d| !d.is_zero())
}

/// What one action did.
enum Outcome {
    Done(String),
    /// Not yet (conditions not met): the same action is tried next run.
    Waiting(String),
    /// The index is gone (the `delete` action).
    Deleted,
}

pub struct IsmRunner {
    storage: Storage,
    metastore: Arc<Metastore>,
    writer: Arc<Writer>,
    searcher: Arc<SearchService>,
    store: IsmStore,
    /// Names this runner in claims.
    id: String,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl IsmRunner {
    pub fn new(
        storage: Storage,
        metastore: Arc<Metastore>,
        writer: Arc<Writer>,
        searcher: Arc<SearchService>,
        node_id: &str,
    ) -> IsmRunner {
        IsmRunner {
            store: IsmStore::new(storage.clone()),
            storage,
            metastore,
            writer,
            searcher,
            id: format!("{node_id}/{}", uuid::Uuid::new_v4().simple()),
        }
    }

    async fn interval(&self) -> Duration {
        match ClusterSettings::load(&self.storage).await {
            Ok(s) => s
                .get(JOB_INTERVAL)
                .and_then(parse_job_interval)
                .unwrap_or(DEFAULT_INTERVAL),
            Err(e) => {
                warn!("reading cluster settings failed: {e}");
                DEFAULT_INTERVAL
            }
        }
    }

    /// Runs until the process ends. The interval is re-read every round (and at most a
    /// second passes between checks of it, so a shorter interval applies at once).
    pub async fn run(self) {
        let mut last = tokio::time::Instant::now();
        loop {
            let interval = self.interval().await;
            if last.elapsed() >= interval {
                last = tokio::time::Instant::now();
                if let Err(e) = self.run_once().await {
                    warn!("ISM run failed (retried next interval): {e}");
                }
            }
            tokio::time::sleep(interval.min(Duration::from_secs(1))).await;
        }
    }

    /// One round over every managed index. Returns how many steps were taken.
    #[instrument(skip(self))]
    pub async fn run_once(&self) -> Result<usize, MetastoreError> {
        let mut steps = 0;
        for (m, etag) in self.store.all_managed().await? {
            match self.advance(m, etag).await {
                Ok(n) => steps += n,
                Err(e) => warn!("ISM step failed: {e}"),
            }
        }
        Ok(steps)
    }

    /// Moves one index along its policy (claimed first). Returns the steps taken.
    async fn advance(&self, mut m: ManagedIndex, etag: String) -> Result<usize, MetastoreError> {
        let now = now_ms();
        if m.failed || now < m.retry_after_ms {
            return Ok(0);
        }
        if let Some((who, since)) = &m.claim {
            if *who != self.id && now - since < CLAIM_TIMEOUT_MS {
                return Ok(0); // another runner is on it
            }
        }
        let Some(meta) = self
            .metastore
            .get_index(&m.index)
            .filter(|i| i.uuid == m.index_uuid)
        else {
            // The index was deleted (by a user or an earlier run): nothing to manage.
            self.store.remove(&m.index_uuid).await?;
            return Ok(0);
        };
        let policy = match self.store.policy(&m.policy_id).await? {
            Some(r) => Policy::parse(&r.policy),
            None => Err(MetastoreError::Rejected(format!(
                "policy [{}] not found",
                m.policy_id
            ))),
        };
        m.claim = Some((self.id.clone(), now));
        let Some(mut etag) = self.store.save(&m, &etag).await? else {
            return Ok(0); // changed meanwhile: next round
        };
        let policy = match policy {
            Ok(p) => p,
            Err(e) => {
                m.failed = true;
                m.info = e.to_string();
                m.claim = None;
                self.store.save(&m, &etag).await?;
                return Ok(0);
            }
        };
        let mut steps = 0;
        while steps < STEPS_PER_RUN {
            if let Some(next) = m.next_state.take() {
                enter(&mut m, next);
            }
            let state_name = match &m.state {
                Some(s) => s.clone(),
                None => {
                    enter(&mut m, policy.default_state.clone());
                    policy.default_state.clone()
                }
            };
            let Some(state) = policy.state(&state_name) else {
                m.failed = true;
                m.info = format!("state [{state_name}] is not in policy [{}]", m.policy_id);
                break;
            };
            if let Some(step) = state.actions.get(m.action_index) {
                let action = &step.action;
                if m.action_started_ms == 0 {
                    m.action_started_ms = now_ms();
                }
                // Timed out (a rollover whose conditions never came true, say): failed,
                // without retries.
                if let Some(t) = step.timeout {
                    if now_ms() - m.action_started_ms > t.as_millis() as i64 {
                        m.failed = true;
                        m.info = format!("Action [{}] timed out after {t:?}", action.name());
                        break;
                    }
                }
                match self.act(&mut m, &meta, action).await {
                    Ok(Outcome::Done(info)) => {
                        info!(index = %m.index, action = action.name(), "ISM action done");
                        m.action_index += 1;
                        m.action_started_ms = 0;
                        m.consumed_retries = 0;
                        m.retry_after_ms = 0;
                        m.info = info;
                        steps += 1;
                    }
                    Ok(Outcome::Waiting(info)) => {
                        m.info = info;
                        break;
                    }
                    Ok(Outcome::Deleted) => {
                        info!(index = %m.index, "ISM deleted the index");
                        self.store.remove(&m.index_uuid).await?;
                        return Ok(steps + 1);
                    }
                    Err(e) if m.consumed_retries < step.retry.count => {
                        let wait = step.retry.delay_before(m.consumed_retries);
                        warn!(index = %m.index, action = action.name(), retry_in = ?wait, "ISM action failed, will retry: {e}");
                        m.consumed_retries += 1;
                        m.retry_after_ms = now_ms() + wait.as_millis() as i64;
                        m.info = format!(
                            "Failed to run [{}] (try {} of {}): {e}",
                            action.name(),
                            m.consumed_retries,
                            step.retry.count + 1
                        );
                        break;
                    }
                    Err(e) => {
                        warn!(index = %m.index, action = action.name(), "ISM action failed: {e}");
                        m.failed = true;
                        m.retry_after_ms = 0;
                        m.info = format!("Failed to run [{}]: {e}", action.name());
                        break;
                    }
                }
            } else {
                let meta = self.metastore.get_index(&m.index).unwrap_or(meta.clone());
                let facts = facts(&meta, &m);
                match state.transitions.iter().find(|t| t.holds(&facts)) {
                    Some(t) => {
                        info!(index = %m.index, from = %state_name, to = %t.state_name, "ISM transition");
                        m.info = format!("Transitioning to [{}]", t.state_name);
                        enter(&mut m, t.state_name.clone());
                        steps += 1;
                    }
                    None => {
                        m.info = if state.transitions.is_empty() {
                            format!("Policy [{}] completed in state [{state_name}]", m.policy_id)
                        } else {
                            "Waiting for a transition condition".into()
                        };
                        break;
                    }
                }
            }
            // Progress is durable after every step.
            etag = match self.store.save(&m, &etag).await? {
                Some(e) => e,
                None => return Ok(steps),
            };
        }
        m.claim = None;
        m.last_run_ms = now_ms();
        self.store.save(&m, &etag).await?;
        debug!(index = %m.index, steps, "ISM run");
        Ok(steps)
    }

    /// Runs one action on the managed index.
    async fn act(
        &self,
        m: &mut ManagedIndex,
        meta: &IndexMeta,
        action: &Action,
    ) -> Result<Outcome, WriterError> {
        let name = meta.name.as_str();
        match action {
            Action::Rollover {
                min_doc_count,
                min_size,
                min_index_age,
                min_primary_shard_size,
            } => {
                if m.rolled_over {
                    return Ok(Outcome::Done("Index was already rolled over".into()));
                }
                let Some(alias) = meta.settings.rollover_alias.clone() else {
                    return Err(WriterError::BadRequest(format!(
                        "index [{name}] has no setting [plugins.index_state_management.rollover_alias]"
                    )));
                };
                // Rolled over by someone else (a user, say): done.
                if self
                    .metastore
                    .write_target(&alias)?
                    .is_some_and(|t| t.index != name)
                {
                    m.rolled_over = true;
                    m.rolled_over_ms = Some(now_ms());
                    return Ok(Outcome::Done("Index is no longer the write index".into()));
                }
                let mut conditions = serde_json::Map::new();
                if let Some(n) = min_doc_count {
                    conditions.insert("max_docs".into(), json!(n));
                }
                if let Some(s) = min_size {
                    conditions.insert("max_size".into(), json!(s));
                }
                if let Some(a) = min_index_age {
                    conditions.insert("max_age".into(), json!(a));
                }
                if let Some(s) = min_primary_shard_size {
                    conditions.insert("max_primary_shard_size".into(), json!(s));
                }
                let req = RolloverRequest {
                    new_index: None,
                    conditions: Conditions::parse(Some(&Value::Object(conditions)))?,
                    create_body: json!({}),
                    dry_run: false,
                };
                let answer = self.writer.rollover(&alias, &req).await?;
                if answer["rolled_over"] == true {
                    m.rolled_over = true;
                    m.rolled_over_ms = Some(now_ms());
                    Ok(Outcome::Done(format!(
                        "Rolled over [{name}] to [{}]",
                        answer["new_index"].as_str().unwrap_or_default()
                    )))
                } else {
                    Ok(Outcome::Waiting("Pending rollover of index".into()))
                }
            }
            Action::Delete => {
                match self.writer.delete_index(name).await {
                    Ok(deleted) => self.searcher.forget_index(&deleted.uuid),
                    Err(WriterError::Metastore(MetastoreError::IndexNotFound(_))) => {}
                    Err(e) => return Err(e),
                }
                Ok(Outcome::Deleted)
            }
            Action::ForceMerge { max_num_segments } => {
                self.writer
                    .force_merge(&[name.to_string()], *max_num_segments as usize)
                    .await?;
                Ok(Outcome::Done(format!("Force merged [{name}]")))
            }
            Action::ReadOnly
            | Action::ReadWrite
            | Action::ReplicaCount { .. }
            | Action::IndexPriority { .. } => {
                let action = action.clone();
                self.metastore
                    .update_index(name, |meta| {
                        match &action {
                            Action::ReadOnly => meta.settings.blocks_write = true,
                            Action::ReadWrite => meta.settings.blocks_write = false,
                            Action::ReplicaCount { number_of_replicas } => {
                                meta.settings.number_of_replicas = *number_of_replicas
                            }
                            Action::IndexPriority { priority } => {
                                meta.settings.priority = Some(*priority)
                            }
                            _ => {}
                        }
                        Ok(())
                    })
                    .await?;
                Ok(Outcome::Done(format!(
                    "Set [{}] on [{name}]",
                    action.name()
                )))
            }
        }
    }
}

fn enter(m: &mut ManagedIndex, state: String) {
    m.state = Some(state);
    m.state_started_ms = now_ms();
    m.action_index = 0;
    m.action_started_ms = 0;
}

fn facts(meta: &IndexMeta, m: &ManagedIndex) -> IndexFacts {
    let now = now_ms();
    let since = |t: i64| Duration::from_millis(now.saturating_sub(t).max(0) as u64);
    IndexFacts {
        age: since(meta.creation_date),
        doc_count: meta.doc_count(),
        size_bytes: meta.size_bytes(),
        since_rollover: m.rolled_over_ms.map(since),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_interval_in_minutes_or_time_value() {
        assert_eq!(
            parse_job_interval(&json!(5)),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_job_interval(&json!("1")),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_job_interval(&json!("2s")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(parse_job_interval(&json!("0")), None);
        assert_eq!(parse_job_interval(&json!("soon")), None);
    }
}
