//! ISM under `/_plugins/_ism/` (policies, add, remove, change_policy, retry, explain) and
//! cluster settings (`/_cluster/settings`). The records live in the bucket
//! ([`floe_metastore::ism`]); the runner ([`crate::lifecycle`]) does the work.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use floe_metastore::cluster_settings::ClusterSettings;
use floe_metastore::ism::{IsmStore, Policy, PolicyRecord};
use serde_json::{json, Map, Value};
use tracing::instrument;

use super::{json_body, ApiError, State};

fn store(state: &State) -> IsmStore {
    IsmStore::new(state.storage.clone())
}

fn policy_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "status_exception",
        "Policy not found",
    )
}

fn policy_json(r: &PolicyRecord) -> Value {
    json!({"_id": r.id, "_version": r.seq_no + 1, "_seq_no": r.seq_no, "_primary_term": 1,
        "policy": r.policy})
}

/// `PUT /_plugins/_ism/policies/{id}`: 201 when created, 200 when replaced.
#[instrument(skip(state, body))]
pub async fn put_policy(
    state: State,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body =
        json_body(&body)?.ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let record = store(&state).put_policy(&id, &body).await?;
    let status = if record.seq_no == 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut out = policy_json(&record);
    out["policy"] = json!({"policy": record.policy});
    Ok((status, Json(out)).into_response())
}

pub async fn get_policy(state: State, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let record = store(&state)
        .policy(&id)
        .await?
        .ok_or_else(policy_not_found)?;
    Ok(Json(policy_json(&record)))
}

pub async fn get_policies(state: State) -> Result<Json<Value>, ApiError> {
    let all = store(&state).policies().await?;
    Ok(Json(json!({
        "policies": all.iter().map(policy_json).collect::<Vec<_>>(),
        "total_policies": all.len(),
    })))
}

#[instrument(skip(state))]
pub async fn delete_policy(state: State, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if !store(&state).delete_policy(&id).await? {
        return Err(policy_not_found());
    }
    Ok(Json(
        json!({"_index": ".opendistro-ism-config", "_id": id, "result": "deleted"}),
    ))
}

/// The `{"updated_indices", "failures", "failed_indices"}` answer of add/remove/....
fn updated(n: usize, failed: Vec<(String, String, String)>) -> Json<Value> {
    Json(json!({
        "updated_indices": n,
        "failures": !failed.is_empty(),
        "failed_indices": failed.into_iter().map(|(name, uuid, reason)| json!({
            "index_name": name, "index_uuid": uuid, "reason": reason})).collect::<Vec<_>>(),
    }))
}

/// A string field of an optional body.
fn field(body: &Option<Value>, key: &str) -> Option<String> {
    body.as_ref()
        .and_then(|b| b.get(key))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn policy_id_of(body: &Option<Value>) -> Result<String, ApiError> {
    field(body, "policy_id").ok_or_else(|| ApiError::bad_request("[policy_id] is required"))
}

/// `POST /_plugins/_ism/add/{index}` `{"policy_id"}`.
#[instrument(skip(state, body))]
pub async fn add(
    state: State,
    Path(index): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(&body)?;
    let policy_id = policy_id_of(&body)?;
    let ism = store(&state);
    if ism.policy(&policy_id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "status_exception",
            format!("Could not find policy with id [{policy_id}]"),
        ));
    }
    let (mut n, mut failed) = (0, Vec::new());
    for m in state.searcher.resolve_indexes_only(&index)? {
        if ism.add(&m.name, &m.uuid, &policy_id).await? {
            n += 1;
        } else {
            failed.push((m.name, m.uuid, "This index already has a policy, use the update policy API to update index policies".into()));
        }
    }
    Ok(updated(n, failed))
}

/// `POST /_plugins/_ism/remove/{index}`.
#[instrument(skip(state))]
pub async fn remove(state: State, Path(index): Path<String>) -> Result<Json<Value>, ApiError> {
    let ism = store(&state);
    let (mut n, mut failed) = (0, Vec::new());
    for m in state.searcher.resolve_indexes_only(&index)? {
        if ism.remove(&m.uuid).await? {
            n += 1;
        } else {
            failed.push((
                m.name,
                m.uuid,
                "This index does not have a policy to remove".into(),
            ));
        }
    }
    Ok(updated(n, failed))
}

/// Changes managed records of the indexes `index` names with `change` (compare-and-swap,
/// re-read on conflict); unmanaged indexes are reported as failed.
async fn change_managed(
    state: &State,
    index: &str,
    change: impl Fn(&mut floe_metastore::ism::ManagedIndex) -> Result<(), String>,
) -> Result<Json<Value>, ApiError> {
    let ism = store(state);
    let (mut n, mut failed) = (0, Vec::new());
    for m in state.searcher.resolve_indexes_only(index)? {
        let mut done = false;
        for _ in 0..16 {
            let Some((mut managed, etag)) = ism.managed(&m.uuid).await? else {
                failed.push((
                    m.name.clone(),
                    m.uuid.clone(),
                    "This index is not being managed".into(),
                ));
                done = true;
                break;
            };
            if let Err(reason) = change(&mut managed) {
                failed.push((m.name.clone(), m.uuid.clone(), reason));
                done = true;
                break;
            }
            if ism.save(&managed, &etag).await?.is_some() {
                n += 1;
                done = true;
                break;
            }
        }
        if !done {
            failed.push((m.name, m.uuid, "the managed index kept changing".into()));
        }
    }
    Ok(updated(n, failed))
}

/// `POST /_plugins/_ism/change_policy/{index}` `{"policy_id", "state"}`.
#[instrument(skip(state, body))]
pub async fn change_policy(
    state: State,
    Path(index): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(&body)?;
    let policy_id = policy_id_of(&body)?;
    let record = store(&state)
        .policy(&policy_id)
        .await?
        .ok_or_else(policy_not_found)?;
    let policy = Policy::parse(&record.policy)?;
    let target = field(&body, "state");
    if let Some(s) = &target {
        if policy.state(s).is_none() {
            return Err(ApiError::bad_request(format!(
                "state [{s}] is not in policy [{policy_id}]"
            )));
        }
    }
    change_managed(&state, &index, |m| {
        m.policy_id = policy_id.clone();
        // Without a state, the index restarts from the new policy's default state.
        m.next_state = Some(
            target
                .clone()
                .unwrap_or_else(|| policy.default_state.clone()),
        );
        m.failed = false;
        Ok(())
    })
    .await
}

/// `POST /_plugins/_ism/retry/{index}` (`{"state"}` optional): runs the failed step again.
#[instrument(skip(state, body))]
pub async fn retry(
    state: State,
    Path(index): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let target = field(&json_body(&body)?, "state");
    change_managed(&state, &index, |m| {
        if !m.failed {
            return Err("This index is not in failed state".into());
        }
        m.failed = false;
        m.consumed_retries = 0;
        m.retry_after_ms = 0;
        m.claim = None;
        if let Some(s) = &target {
            m.next_state = Some(s.clone());
        }
        Ok(())
    })
    .await
}

/// `GET /_plugins/_ism/explain[/{index}]`.
pub async fn explain(state: State, index: Option<Path<String>>) -> Result<Json<Value>, ApiError> {
    let ism = store(&state);
    let indexes = match &index {
        Some(Path(expr)) => state.searcher.resolve_indexes_only(expr)?,
        None => state.metastore.list_indexes(),
    };
    let mut out = Map::new();
    let mut total = 0;
    for m in indexes {
        match ism.managed(&m.uuid).await? {
            Some((managed, _)) => {
                total += 1;
                let seq = ism.policy(&managed.policy_id).await?.map(|p| p.seq_no);
                out.insert(m.name.clone(), managed.explain(seq));
            }
            None if index.is_some() => {
                out.insert(
                    m.name.clone(),
                    json!({"index.plugins.index_state_management.policy_id": null,
                        "index.opendistro.index_state_management.policy_id": null, "enabled": null}),
                );
            }
            None => {}
        }
    }
    out.insert("total_managed_indices".into(), json!(total));
    Ok(Json(Value::Object(out)))
}

pub async fn explain_all(state: State) -> Result<Json<Value>, ApiError> {
    explain(state, None).await
}

pub async fn explain_index(state: State, index: Path<String>) -> Result<Json<Value>, ApiError> {
    explain(state, Some(index)).await
}

/// `PUT /_cluster/settings`.
#[instrument(skip(state, body))]
pub async fn put_cluster_settings(state: State, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body =
        json_body(&body)?.ok_or_else(|| ApiError::bad_request("request body is required"))?;
    if let Some(v) = ["persistent", "transient"].iter().find_map(|k| {
        body.get(k)
            .and_then(|p| p.get(crate::lifecycle::JOB_INTERVAL))
            .filter(|v| !v.is_null())
    }) {
        if crate::lifecycle::parse_job_interval(v).is_none() {
            return Err(ApiError::bad_request(format!(
                "failed to parse setting [{}] with value [{v}]: minutes or a time value such as 2s",
                crate::lifecycle::JOB_INTERVAL
            )));
        }
    }
    let s = ClusterSettings::update(&state.storage, &body).await?;
    Ok(Json(
        json!({"acknowledged": true, "persistent": s.persistent, "transient": s.transient}),
    ))
}

/// `GET /_cluster/settings` (flat keys).
pub async fn get_cluster_settings(state: State) -> Result<Json<Value>, ApiError> {
    let s = ClusterSettings::load(&state.storage).await?;
    Ok(Json(
        json!({"persistent": s.persistent, "transient": s.transient}),
    ))
}
