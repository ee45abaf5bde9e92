//! Scrolls and points in time: `_search/scroll`, `_search/point_in_time`. Both are kept in
//! the bucket (`floe_searcher::pit`), so any searcher answers the next page.

use axum::extract::Path;
use axum::Json;
use bytes::Bytes;
use serde_json::Value;
use tracing::instrument;

use super::{json_body, ApiError, Params, State};

/// One id or a list of ids under `key` in the body (or none).
fn ids_of(body: &Option<Value>, key: &str) -> Vec<String> {
    match body.as_ref().and_then(|b| b.get(key)) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// `GET|POST /_search/scroll` (`scroll_id` and `scroll` in the body or the parameters).
#[instrument(skip_all)]
pub async fn next(state: State, params: Params, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body = json_body(&body)?;
    let id = ids_of(&body, "scroll_id")
        .pop()
        .or_else(|| params.get("scroll_id").cloned())
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "action_request_validation_exception",
                "Validation Failed: 1: scrollId is missing;",
            )
        })?;
    let keep_alive = body
        .as_ref()
        .and_then(|b| b.get("scroll"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| params.get("scroll").cloned());
    let mut answer = state
        .searcher
        .scroll_next(&id, keep_alive.as_deref())
        .await?;
    super::search::total_as_int(&mut answer, &params);
    Ok(Json(answer))
}

/// `GET|POST /_search/scroll/{id}`.
#[instrument(skip_all)]
pub async fn next_by_path(
    state: State,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let keep_alive = params.get("scroll").cloned();
    Ok(Json(
        state
            .searcher
            .scroll_next(&id, keep_alive.as_deref())
            .await?,
    ))
}

/// `DELETE /_search/scroll` (`scroll_id`: one or a list).
#[instrument(skip_all)]
pub async fn clear(state: State, body: Bytes) -> Result<Json<Value>, ApiError> {
    let ids = ids_of(&json_body(&body)?, "scroll_id");
    Ok(Json(state.searcher.clear_scrolls(&ids).await?))
}

/// `DELETE /_search/scroll/{id}` (ids separated by commas).
#[instrument(skip_all)]
pub async fn clear_by_path(state: State, Path(ids): Path<String>) -> Result<Json<Value>, ApiError> {
    let ids: Vec<String> = ids.split(',').map(str::to_string).collect();
    Ok(Json(state.searcher.clear_scrolls(&ids).await?))
}

/// `POST /{index}/_search/point_in_time?keep_alive=`.
#[instrument(skip(state, params))]
pub async fn open_pit(
    state: State,
    Path(index): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let keep_alive = params.get("keep_alive").ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "action_request_validation_exception",
            "Validation Failed: 1: keep_alive is missing;",
        )
    })?;
    Ok(Json(
        state
            .searcher
            .open_pit(
                &index,
                keep_alive,
                params.get("routing").map(String::as_str),
            )
            .await?,
    ))
}

/// `DELETE /_search/point_in_time` (`pit_id`: one or a list).
#[instrument(skip_all)]
pub async fn close_pits(state: State, body: Bytes) -> Result<Json<Value>, ApiError> {
    let ids = ids_of(&json_body(&body)?, "pit_id");
    Ok(Json(state.searcher.close_pits(Some(ids)).await?))
}

/// `DELETE /_search/point_in_time/_all`.
#[instrument(skip_all)]
pub async fn close_all_pits(state: State) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.searcher.close_pits(None).await?))
}

/// `GET /_search/point_in_time/_all`.
#[instrument(skip_all)]
pub async fn list_pits(state: State) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.searcher.list_pits().await?))
}
