//! Writes: `_bulk`, `_doc`, `_create`, `_update`.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use floe_writer::bulk::{invalid_id, Condition};
use floe_writer::{BulkOp, OpKind, RefreshPolicy};
use tracing::instrument;

use super::security::{authz, Caller};
use super::{json_response, ApiError, Params, State};

fn refresh_of(params: &Params) -> Result<RefreshPolicy, ApiError> {
    Ok(RefreshPolicy::parse(
        params.get("refresh").map(String::as_str),
    )?)
}

#[instrument(skip_all)]
pub async fn bulk(
    state: State,
    Extension(caller): Extension<Caller>,
    params: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let refresh = refresh_of(&params)?;
    let deny = item_check(&state, &caller);
    let resp = state
        .writer()?
        .bulk_checked(None, body, refresh, &deny)
        .await?;
    count_items(&state, &resp);
    Ok((StatusCode::OK, axum::Json(resp)).into_response())
}

#[instrument(skip(state, params, body))]
pub async fn bulk_index(
    state: State,
    Extension(caller): Extension<Caller>,
    Path(index): Path<String>,
    params: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let refresh = refresh_of(&params)?;
    let deny = item_check(&state, &caller);
    let resp = state
        .writer()?
        .bulk_checked(Some(&index), body, refresh, &deny)
        .await?;
    count_items(&state, &resp);
    Ok((StatusCode::OK, axum::Json(resp)).into_response())
}

/// Refuses bulk items on indexes the caller may not write (each fails alone with 403).
/// The alias table is read once per request and each (index, action) decided once: a
/// bulk of thousands of items names a handful of indexes.
fn item_check(
    state: &State,
    caller: &Caller,
) -> impl Fn(&str, OpKind) -> Option<String> + Send + Sync {
    let metastore = state.metastore.clone();
    let principal = caller.0.clone();
    let aliases = principal.as_ref().map(|_| metastore.aliases());
    let decided: Mutex<HashMap<(String, &'static str), Option<String>>> = Mutex::default();
    move |index: &str, kind: OpKind| {
        let (p, aliases) = (principal.as_deref()?, aliases.as_ref()?);
        let action = match kind {
            OpKind::Index | OpKind::Create => "indices:data/write/index",
            OpKind::Delete => "indices:data/write/delete",
            OpKind::Update => "indices:data/write/update",
        };
        let key = (index.to_string(), action);
        if let Some(known) = decided.lock().expect("decisions lock").get(&key) {
            return known.clone();
        }
        let missing = if !authz::may_use(p, action, index, aliases) {
            Some(action)
        } else if kind != OpKind::Delete {
            authz::creation_denied(&metastore, p, index, aliases)
        } else {
            None
        };
        let reason = missing.map(|action| authz::denial(p, action, Some(index)).reason);
        decided
            .lock()
            .expect("decisions lock")
            .insert(key, reason.clone());
        reason
    }
}

fn count_items(state: &State, resp: &floe_writer::response::BulkResponse) {
    let failed = resp.items.iter().filter(|i| i.result.is_err()).count() as u64;
    let items = &state.metrics.bulk_items;
    items
        .with_label_values(&["ok"])
        .inc_by(resp.items.len() as u64 - failed);
    items.with_label_values(&["failed"]).inc_by(failed);
}

async fn single(
    state: State,
    params: Params,
    kind: OpKind,
    index: String,
    id: Option<String>,
    body: Option<Bytes>,
) -> Result<Response, ApiError> {
    let refresh = refresh_of(&params)?;
    let kind = match (kind, params.get("op_type").map(String::as_str)) {
        (OpKind::Index, Some("create")) => OpKind::Create,
        (k, _) => k,
    };
    if let Some(b) = &body {
        if b.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "parse_exception",
                "request body is required",
            ));
        }
    }
    // A single document may span several lines; the bulk path wants it on one.
    let source = body.map(|b| match serde_json::from_slice::<serde_json::Value>(&b) {
        Ok(v) => Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
        Err(_) => b,
    });
    let op = BulkOp {
        generated_id: false,
        kind,
        index: Some(index),
        id,
        routing: params.get("routing").cloned(),
        source,
        cond: condition_of(&params, kind)?,
        retry_on_conflict: 0,
        invalid: None,
        denied: None,
    };
    check_id(op.id.as_deref())?;
    let (status, body) = state.writer()?.single(op, refresh).await?;
    Ok(json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        body,
    ))
}

/// The optimistic-concurrency condition of a single-document request's parameters.
fn condition_of(params: &Params, kind: OpKind) -> Result<Option<Condition>, ApiError> {
    let p = |k: &str| params.get(k).map(String::as_str);
    Condition::parse(
        kind,
        p("if_seq_no"),
        p("if_primary_term"),
        p("version"),
        p("version_type"),
    )
    .map_err(|reason| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "action_request_validation_exception",
            reason,
        )
    })
}

fn check_id(id: Option<&str>) -> Result<(), ApiError> {
    match id.and_then(invalid_id) {
        Some(reason) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "action_request_validation_exception",
            reason,
        )),
        None => Ok(()),
    }
}

/// `POST /{index}/_update/{id}`: a partial update (`doc`, `upsert`, `script`); see
/// `floe_writer::update`.
#[instrument(skip(state, params, body))]
pub async fn update_doc(
    state: State,
    Path((index, id)): Path<(String, String)>,
    params: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let refresh = refresh_of(&params)?;
    check_id(Some(&id))?;
    let mut request: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "parse_exception",
            format!("request body is required and must be JSON: {e}"),
        )
    })?;
    if let (Some(src), Some(obj)) = (params.get("_source"), request.as_object_mut()) {
        if src != "false" {
            obj.insert("_source".into(), serde_json::Value::Bool(true));
        }
    }
    let retry_on_conflict = match params.get("retry_on_conflict") {
        None => 0,
        Some(r) => r.parse::<u32>().map_err(|_| {
            ApiError::bad_request(format!(
                "[retry_on_conflict] must be a non-negative number, found [{r}]"
            ))
        })?,
    };
    let op = BulkOp {
        generated_id: false,
        kind: OpKind::Update,
        index: Some(index),
        id: Some(id),
        routing: params.get("routing").cloned(),
        source: Some(Bytes::from(
            serde_json::to_vec(&request).unwrap_or_default(),
        )),
        cond: condition_of(&params, OpKind::Update)?,
        retry_on_conflict,
        invalid: None,
        denied: None,
    };
    let (status, body) = state.writer()?.single(op, refresh).await?;
    Ok(json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        body,
    ))
}

#[instrument(skip(state, params, body))]
pub async fn index_auto_id(
    state: State,
    Path(index): Path<String>,
    params: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    single(state, params, OpKind::Index, index, None, Some(body)).await
}

#[instrument(skip(state, params, body))]
pub async fn index_with_id(
    state: State,
    Path((index, id)): Path<(String, String)>,
    params: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    single(state, params, OpKind::Index, index, Some(id), Some(body)).await
}

#[instrument(skip(state, params, body))]
pub async fn create_with_id(
    state: State,
    Path((index, id)): Path<(String, String)>,
    params: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    single(state, params, OpKind::Create, index, Some(id), Some(body)).await
}

#[instrument(skip(state, params))]
pub async fn delete_doc(
    state: State,
    Path((index, id)): Path<(String, String)>,
    params: Params,
) -> Result<Response, ApiError> {
    if state.metastore.get_index(&index).is_none() {
        return Err(ApiError::index_not_found(&index));
    }
    single(state, params, OpKind::Delete, index, Some(id), None).await
}
