//! Reads: `_search`, `_count`, `GET _doc`.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use bytes::Bytes;
use floe_searcher::{SearchParams, StoredDoc};
use serde_json::{json, Value};
use tracing::instrument;

use super::{empty, json_body, json_response, ApiError, Params, State};

fn params_of(p: &Params) -> Result<SearchParams, ApiError> {
    let num = |k: &str| -> Result<Option<usize>, ApiError> {
        p.get(k)
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "Failed to parse int parameter [{k}] with value [{v}]"
                    ))
                })
            })
            .transpose()
    };
    Ok(SearchParams {
        q: p.get("q").cloned(),
        df: p.get("df").cloned(),
        default_operator: p.get("default_operator").cloned(),
        from: num("from")?,
        size: num("size")?,
        sort: p.get("sort").cloned(),
        track_total_hits: p.get("track_total_hits").cloned(),
        ignore_unavailable: p.get("ignore_unavailable").is_some_and(|v| v == "true"),
        routing: p.get("routing").cloned(),
    })
}

/// `_search` and `_count`, on an index expression (empty: every index).
async fn run(
    state: &State,
    expr: &str,
    params: &Params,
    body: &Bytes,
    count: bool,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?;
    let params = params_of(params)?;
    let searcher = &state.searcher;
    let mut caught_up = false;
    loop {
        let answer = if count {
            searcher.count(expr, body.as_ref(), &params).await
        } else {
            searcher.search(expr, body.as_ref(), &params).await
        };
        match answer {
            // Created on another node a moment ago: read the change log now, once.
            Err(floe_searcher::SearchError::IndexNotFound(_))
                if state.cluster.is_some() && !caught_up =>
            {
                caught_up = true;
                state.metastore.catch_up().await.map_err(ApiError::from)?;
            }
            other => return Ok(Json(other?)),
        }
    }
}

#[instrument(skip(state, params, body))]
pub async fn search(
    state: State,
    Path(index): Path<String>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    run(&state, &index, &params, &body, false).await
}

#[instrument(skip_all)]
pub async fn search_all(
    state: State,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    run(&state, "", &params, &body, false).await
}

#[instrument(skip(state, params, body))]
pub async fn count(
    state: State,
    Path(index): Path<String>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    run(&state, &index, &params, &body, true).await
}

#[instrument(skip_all)]
pub async fn count_all(state: State, params: Params, body: Bytes) -> Result<Json<Value>, ApiError> {
    run(&state, "", &params, &body, true).await
}

/// The index a single-document read names — an index, or an alias of exactly one index —
/// and the alias's index routing.
fn concrete_index(state: &State, name: &str) -> Result<(String, Option<String>), ApiError> {
    if state.metastore.get_index(name).is_some() {
        return Ok((name.to_string(), None));
    }
    let table = state.metastore.aliases();
    match table.aliases.get(name).map(|of| of.iter().collect::<Vec<_>>()) {
        Some(of) if of.len() == 1 => Ok((of[0].0.clone(), of[0].1.index_routing.clone())),
        Some(_) => Err(ApiError::bad_request(format!(
            "alias [{name}] has more than one index associated with it, can't execute a single index op"
        ))),
        None => Err(ApiError::index_not_found(name)),
    }
}

/// The document as of now: a write not yet refreshed (realtime, from the writer), else
/// the searcher's last refreshed view. `None` if absent.
async fn lookup(
    state: &State,
    (index, alias_routing): (&str, Option<&str>),
    id: &str,
    params: &Params,
) -> Result<Option<StoredDoc>, ApiError> {
    let realtime = params.get("realtime").is_none_or(|v| v != "false");
    let routing = params.get("routing").map(String::as_str).or(alias_routing);
    if let (true, Some(writer)) = (realtime, &state.writer) {
        if let Some(pending) = writer.realtime_get(index, id, routing).await {
            return Ok(pending.source.map(|source| StoredDoc {
                version: pending.version,
                seq_no: pending.seq_no,
                primary_term: pending.primary_term,
                source: serde_json::from_slice(&source).unwrap_or(Value::Null),
            }));
        }
    }
    Ok(state.searcher.get_doc(index, id).await?)
}

#[instrument(skip(state, params))]
pub async fn get_doc(
    state: State,
    Path((index, id)): Path<(String, String)>,
    params: Params,
) -> Result<Response, ApiError> {
    let (index, routing) = concrete_index(&state, &index)?;
    Ok(
        match lookup(&state, (&index, routing.as_deref()), &id, &params).await? {
            Some(doc) => json_response(
                StatusCode::OK,
                json!({"_index": index, "_id": id, "_version": doc.version, "_seq_no": doc.seq_no,
                "_primary_term": doc.primary_term, "found": true, "_source": doc.source}),
            ),
            None => json_response(
                StatusCode::NOT_FOUND,
                json!({"_index": index, "_id": id, "found": false}),
            ),
        },
    )
}

pub async fn head_doc(
    state: State,
    Path((index, id)): Path<(String, String)>,
    params: Params,
) -> Response {
    let Ok((index, routing)) = concrete_index(&state, &index) else {
        return empty(StatusCode::NOT_FOUND);
    };
    match lookup(&state, (&index, routing.as_deref()), &id, &params).await {
        Ok(Some(_)) => empty(StatusCode::OK),
        _ => empty(StatusCode::NOT_FOUND),
    }
}
