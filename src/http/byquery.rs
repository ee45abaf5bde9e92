//! `_delete_by_query`, `_update_by_query`, `_reindex` (see `crate::byquery`) and
//! `GET /_tasks/{id}`. With `wait_for_completion=false` a job runs in the background and its
//! progress and result are kept in the bucket (`tasks/<id>.json`), so any node answers
//! `_tasks` and the result outlives the node that ran it.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use serde_json::{json, Value};
use tracing::{instrument, warn};

use super::security::{authz, Caller};
use super::{json_body, json_response, ApiError, AppState, Params, State};
use crate::byquery::{Action, Job, JobError, Source, Summary};

/// Documents per scroll page (and bulk batch) unless `scroll_size` says otherwise.
const DEFAULT_BATCH: usize = 1000;

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::BadRequest(reason) => ApiError::bad_request(reason),
            JobError::Search(e) => e.into(),
            JobError::Writer(e) => e.into(),
            JobError::Remote(reason) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "remote_transport_exception",
                reason,
            ),
        }
    }
}

fn task_key(id: &str) -> String {
    format!("tasks/{}.json", id.replace(':', "_"))
}

fn body_or_param(body: &Option<Value>, params: &Params, key: &str) -> Option<String> {
    params
        .get(key)
        .cloned()
        .or_else(|| match body.as_ref()?.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

/// The settings every job takes from the parameters and the body.
fn job_of(
    params: &Params,
    body: &Option<Value>,
    source: Source,
    query: Value,
    action: Action,
) -> Result<Job, ApiError> {
    let max_docs = body_or_param(body, params, "max_docs")
        .map(|v| v.parse::<u64>())
        .transpose()
        .map_err(|_| ApiError::bad_request("[max_docs] must be a positive number"))?;
    let batch_size = params
        .get("scroll_size")
        .map(|v| v.parse::<usize>())
        .transpose()
        .map_err(|_| ApiError::bad_request("[scroll_size] must be a positive number"))?
        .unwrap_or(DEFAULT_BATCH)
        .clamp(1, 10_000);
    let proceed = match body_or_param(body, params, "conflicts").as_deref() {
        None | Some("abort") => false,
        Some("proceed") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "conflicts may only be \"proceed\" or \"abort\" but was [{other}]"
            )))
        }
    };
    Ok(Job {
        source,
        query,
        action,
        max_docs,
        proceed,
        batch_size,
        refresh: params
            .get("refresh")
            .is_some_and(|v| v.is_empty() || v == "true"),
    })
}

fn query_of(body: &Option<Value>) -> Value {
    body.as_ref()
        .and_then(|b| b.get("query"))
        .cloned()
        .unwrap_or_else(|| json!({"match_all": {}}))
}

#[instrument(skip(state, params, body))]
pub async fn delete_by_query(
    state: State,
    Path(index): Path<String>,
    params: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let source = Source::Local {
        index,
        routing: params.get("routing").cloned(),
    };
    let job = job_of(&params, &body, source, query_of(&body), Action::Delete)?;
    run(state.0, job, "delete_by_query", &params).await
}

#[instrument(skip(state, params, body))]
pub async fn update_by_query(
    state: State,
    Path(index): Path<String>,
    params: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let script = body.as_ref().and_then(|b| b.get("script")).cloned();
    let source = Source::Local {
        index,
        routing: params.get("routing").cloned(),
    };
    let job = job_of(
        &params,
        &body,
        source,
        query_of(&body),
        Action::Update { script },
    )?;
    run(state.0, job, "update_by_query", &params).await
}

#[instrument(skip_all)]
pub async fn reindex(
    state: State,
    Extension(caller): Extension<Caller>,
    params: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let b = body
        .as_ref()
        .ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let src = &b["source"];
    let index = match &src["index"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => return Err(ApiError::bad_request("[source.index] is required")),
    };
    let dest = b["dest"]["index"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("[dest.index] is required"))?
        .to_string();
    // The caller reads the source (a local one) and writes (maybe creates) the destination.
    if let Some(p) = caller.principal() {
        if src.get("remote").is_none() {
            const SEARCH: &str = "indices:data/read/search";
            authz::check_expression(&state.metastore, p, SEARCH, &index, false)
                .map_err(|name| authz::denial(p, SEARCH, Some(&name)))?;
        }
        const INDEX: &str = "indices:data/write/index";
        let aliases = state.metastore.aliases();
        if !authz::may_use(p, INDEX, &dest, &aliases) {
            return Err(authz::denial(p, INDEX, Some(&dest)));
        }
        if let Some(create) = authz::creation_denied(&state.metastore, p, &dest, &aliases) {
            return Err(authz::denial(p, create, Some(&dest)));
        }
    }
    let create = match b["dest"]["op_type"].as_str() {
        None | Some("index") => false,
        Some("create") => true,
        Some(other) => return Err(ApiError::bad_request(format!("unknown op_type [{other}]"))),
    };
    let source = match src.get("remote") {
        Some(remote) => {
            let host = remote["host"]
                .as_str()
                .filter(|h| h.starts_with("http://") || h.starts_with("https://"))
                .ok_or_else(|| {
                    ApiError::bad_request("[source.remote.host] must be an http(s) URL")
                })?;
            let authority = host
                .split_once("://")
                .map_or(host, |(_, rest)| rest)
                .split('/')
                .next()
                .unwrap_or_default();
            if !state
                .reindex_allowlist
                .iter()
                .any(|p| floe_metastore::matches_pattern(p, authority))
            {
                return Err(ApiError::bad_request(format!(
                    "[{authority}] not allowlisted in reindex.remote.allowlist (Floe: [reindex] remote_allowlist)"
                )));
            }
            Source::Remote {
                host: host.to_string(),
                index,
                username: remote["username"].as_str().map(str::to_string),
                password: remote["password"].as_str().map(str::to_string),
            }
        }
        None => Source::Local {
            index,
            routing: None,
        },
    };
    let action = Action::Copy {
        index: dest,
        create,
        script: b.get("script").cloned(),
    };
    let query = src
        .get("query")
        .cloned()
        .unwrap_or_else(|| json!({"match_all": {}}));
    let mut job = job_of(&params, &body, source, query, action)?;
    if let Some(size) = src["size"].as_u64() {
        job.batch_size = size.clamp(1, 10_000) as usize;
    }
    run(state.0, job, "reindex", &params).await
}

/// Runs the job here and answers, or (`wait_for_completion=false`) starts it as a task.
async fn run(
    state: Arc<AppState>,
    job: Job,
    kind: &'static str,
    params: &Params,
) -> Result<Response, ApiError> {
    let writer = state.writer()?.clone();
    let searcher = state.searcher.clone();
    if params.get("wait_for_completion").map(String::as_str) == Some("false") {
        let task = Task {
            node: state.node_id.clone(),
            number: uuid::Uuid::new_v4().as_u128() as u32,
            kind,
            started_ms: now_ms(),
        };
        let id = task.id();
        put_task(&state, &id, task.record(&Summary::default(), None)).await?;
        let background = state.clone();
        let cancel = watch_cancel(state.clone(), id.clone());
        tokio::spawn(async move {
            let outcome = job.run_cancellable(searcher, writer, &cancel).await;
            // Ends the watcher.
            cancel.store(true, std::sync::atomic::Ordering::Release);
            let record = match outcome {
                Ok(summary) => task.record(&summary, Some(Ok(summary.to_json(kind)))),
                Err(e) => task.record(
                    &Summary::default(),
                    Some(Err(json!({"type": "exception", "reason": e.to_string()}))),
                ),
            };
            if let Err(e) = put_task(&background, &task.id(), record).await {
                warn!(task = %task.id(), "could not record the task's result: {e:?}");
            }
        });
        return Ok(json_response(StatusCode::OK, json!({ "task": id })));
    }
    let summary = job.run(searcher, writer).await?;
    let status = if summary.conflicted() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, summary.to_json(kind)))
}

/// A job running in the background.
struct Task {
    node: String,
    number: u32,
    kind: &'static str,
    started_ms: i64,
}

impl Task {
    fn id(&self) -> String {
        format!("{}:{}", self.node, self.number)
    }

    /// What `GET /_tasks/{id}` answers: running, or done with a response or an error.
    fn record(&self, status: &Summary, done: Option<Result<Value, Value>>) -> Value {
        let mut v = json!({
            "completed": done.is_some(),
            "task": {"node": self.node, "id": self.number, "type": "transport",
                "action": format!("indices:data/write/{}", self.kind),
                "status": status.to_json(self.kind), "description": self.kind,
                "start_time_in_millis": self.started_ms,
                "running_time_in_nanos": (now_ms() - self.started_ms).max(0) * 1_000_000,
                "cancellable": true},
        });
        match done {
            Some(Ok(response)) => v["response"] = response,
            Some(Err(error)) => v["error"] = error,
            None => {}
        }
        v
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn put_task(state: &AppState, id: &str, record: Value) -> Result<(), ApiError> {
    state
        .storage
        .put(&task_key(id), Bytes::from(record.to_string()))
        .await
        .map_err(|e| ApiError::from(floe_metastore::MetastoreError::from(e)))
}

fn cancel_key(id: &str) -> String {
    format!("tasks/{}.cancel", id.replace(':', "_"))
}

/// A flag set once `POST /_tasks/{id}/_cancel` (on any node) left its marker in the bucket;
/// checked every 250 ms until the job ends (which sets the flag itself).
fn watch_cancel(state: Arc<AppState>, id: String) -> Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::Ordering;
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watched = flag.clone();
    tokio::spawn(async move {
        while !watched.load(Ordering::Acquire) {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            if state.storage.get(&cancel_key(&id)).await.is_ok() {
                watched.store(true, Ordering::Release);
            }
        }
    });
    flag
}

/// `POST /_tasks/{id}/_cancel`: the running job stops after its current batch.
#[instrument(skip(state))]
pub async fn cancel_task(state: State, Path(id): Path<String>) -> Result<Response, ApiError> {
    let record: Value = match state.storage.get(&task_key(&id)).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(floe_storage::StorageError::NotFound(_)) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "resource_not_found_exception",
                format!("task [{id}] is not found"),
            ))
        }
        Err(e) => return Err(ApiError::from(floe_metastore::MetastoreError::from(e))),
    };
    let node = record["task"]["node"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if record["completed"] == json!(true) {
        return Ok(json_response(
            StatusCode::OK,
            json!({"nodes": {}, "node_failures": []}),
        ));
    }
    state
        .storage
        .put(&cancel_key(&id), Bytes::from_static(b"{}"))
        .await
        .map_err(|e| ApiError::from(floe_metastore::MetastoreError::from(e)))?;
    let mut task = record["task"].clone();
    task["cancelled"] = json!(true);
    Ok(json_response(
        StatusCode::OK,
        json!({"nodes": {node.clone(): {"name": node, "tasks": {id: task}}}}),
    ))
}

/// `GET /_tasks/{id}`.
#[instrument(skip(state))]
pub async fn get_task(state: State, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.storage.get(&task_key(&id)).await {
        Ok(bytes) => {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok(json_response(StatusCode::OK, v))
        }
        Err(floe_storage::StorageError::NotFound(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "resource_not_found_exception",
            format!("task [{id}] isn't running and hasn't stored its results"),
        )),
        Err(e) => Err(ApiError::from(floe_metastore::MetastoreError::from(e))),
    }
}
