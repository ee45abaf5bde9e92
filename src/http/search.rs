//! Reads: `_search`, `_count`, `GET _doc`.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use bytes::Bytes;
use floe_searcher::{SearchParams, StoredDoc};
use serde_json::{json, Value};
use tracing::instrument;

use super::security::{authz, Caller};
use super::{empty, json_body, json_response, ApiError, Params, State};

pub(super) fn params_of(p: &Params) -> Result<SearchParams, ApiError> {
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
        expand_wildcards: p.get("expand_wildcards").cloned(),
        allow_no_indices: p.get("allow_no_indices").map(|v| v != "false"),
        terminate_after: p
            .get("terminate_after")
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "Failed to parse int parameter [terminate_after] with value [{v}]"
                    ))
                })
            })
            .transpose()?,
        timeout: p.get("timeout").cloned(),
    })
}

/// `_search` and `_count`, on an index expression (empty: every index).
/// A search over a point in time names no index; authorization may have narrowed the
/// empty expression of `/_search` to `*,-a,-b` for a caller who may not read some indexes.
/// The point in time was authorized when it was opened, so that expression is dropped.
fn unnarrowed_for_pit<'a>(expr: &'a str, body: Option<&Value>) -> &'a str {
    let has_pit = body.is_some_and(|b| b.get("pit").is_some());
    let narrowed = expr
        .strip_prefix("*,")
        .is_some_and(|rest| rest.split(',').all(|p| p.starts_with('-')));
    if has_pit && narrowed {
        ""
    } else {
        expr
    }
}

async fn run(
    state: &State,
    expr: &str,
    params: &Params,
    body: &Bytes,
    count: bool,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?;
    let expr = unnarrowed_for_pit(expr, body.as_ref());
    let scroll = params.get("scroll").filter(|_| !count).cloned();
    let params_raw = params;
    let params = params_of(params)?;
    let searcher = &state.searcher;
    let mut caught_up = false;
    loop {
        let answer = if count {
            searcher.count(expr, body.as_ref(), &params).await
        } else if let Some(keep_alive) = &scroll {
            searcher
                .scroll_start(expr, body.as_ref(), &params, keep_alive)
                .await
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
            other => {
                let mut answer = other?;
                total_as_int(&mut answer, params_raw);
                return Ok(Json(answer));
            }
        }
    }
}

/// `rest_total_hits_as_int=true`: `hits.total` as a number, as older clients expect.
pub(super) fn total_as_int(answer: &mut Value, params: &Params) {
    if params.get("rest_total_hits_as_int").map(String::as_str) == Some("true") {
        if let Some(v) = answer.pointer("/hits/total/value").cloned() {
            answer["hits"]["total"] = v;
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
                routing: pending.routing,
            }));
        }
    }
    Ok(state.searcher.get_doc(index, id).await?)
}

/// A found document as `GET _doc` and `_mget` render it.
fn found_doc(index: &str, id: &str, doc: StoredDoc) -> Value {
    let mut out = json!({"_index": index, "_id": id, "_version": doc.version,
        "_seq_no": doc.seq_no, "_primary_term": doc.primary_term, "found": true});
    if let Some(routing) = doc.routing {
        out["_routing"] = json!(routing);
    }
    out["_source"] = doc.source;
    out
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
            Some(doc) => json_response(StatusCode::OK, found_doc(&index, &id, doc)),
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

/// One document of a `_mget` answer, as `GET _doc` renders it (`found: false` when absent,
/// `error` when its index is unknown).
async fn mget_one(state: &State, index: &str, id: &str, params: &Params) -> Value {
    let (index, routing) = match concrete_index(state, index) {
        Ok(x) => x,
        Err(e) => return json!({"_index": index, "_id": id, "error": e.body()["error"]}),
    };
    match lookup(state, (&index, routing.as_deref()), id, params).await {
        Ok(Some(doc)) => found_doc(&index, id, doc),
        Ok(None) => json!({"_index": index, "_id": id, "found": false}),
        Err(e) => json!({"_index": index, "_id": id, "error": e.body()["error"]}),
    }
}

/// `GET|POST /_mget` and `/{index}/_mget`: `{"docs": [{"_index", "_id"}]}` or, with an
/// index in the path, `{"ids": [...]}`.
async fn mget_run(
    state: &State,
    caller: &Caller,
    default: Option<&str>,
    params: &Params,
    body: &Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?
        .ok_or_else(|| ApiError::bad_request("Validation Failed: 1: no documents to get;"))?;
    let mut wanted: Vec<(String, String)> = Vec::new();
    if let Some(docs) = body.get("docs").and_then(Value::as_array) {
        for d in docs {
            let id = d.get("_id").and_then(Value::as_str).ok_or_else(|| {
                ApiError::bad_request("Validation Failed: 1: id is missing for doc;")
            })?;
            let index = d
                .get("_index")
                .and_then(Value::as_str)
                .or(default)
                .ok_or_else(|| {
                    ApiError::bad_request("Validation Failed: 1: index is missing for doc;")
                })?;
            wanted.push((index.to_string(), id.to_string()));
        }
    } else if let Some(ids) = body.get("ids").and_then(Value::as_array) {
        let index = default.ok_or_else(|| {
            ApiError::bad_request("Validation Failed: 1: index is missing for doc;")
        })?;
        for id in ids {
            let id = match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            wanted.push((index.to_string(), id));
        }
    } else {
        return Err(ApiError::bad_request(
            "unknown key: expected [docs] or [ids]",
        ));
    }
    if wanted.is_empty() {
        return Err(ApiError::bad_request(
            "Validation Failed: 1: no documents to get;",
        ));
    }
    // Each document is authorized on its own index: a forbidden one is an error entry.
    let aliases = caller.principal().map(|_| state.metastore.aliases());
    let aliases = &aliases;
    let docs = futures::future::join_all(wanted.iter().map(|(i, id)| async move {
        if let (Some(p), Some(aliases)) = (caller.principal(), aliases) {
            const GET: &str = "indices:data/read/get";
            if !authz::may_use(p, GET, i, aliases) {
                let e = authz::denial(p, GET, Some(i));
                return json!({"_index": i, "_id": id, "error": e.body()["error"]});
            }
        }
        mget_one(state, i, id, params).await
    }))
    .await;
    Ok(Json(json!({"docs": docs})))
}

#[instrument(skip_all)]
pub async fn mget_all(
    state: State,
    Extension(caller): Extension<Caller>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    mget_run(&state, &caller, None, &params, &body).await
}

#[instrument(skip(state, params, body))]
pub async fn mget(
    state: State,
    Extension(caller): Extension<Caller>,
    Path(index): Path<String>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    mget_run(&state, &caller, Some(&index), &params, &body).await
}

/// `GET /{index}/_source/{id}`: the document's source alone.
pub async fn get_source(
    state: State,
    Path((index, id)): Path<(String, String)>,
    params: Params,
) -> Result<Response, ApiError> {
    let (index, routing) = concrete_index(&state, &index)?;
    match lookup(&state, (&index, routing.as_deref()), &id, &params).await? {
        Some(doc) => Ok(json_response(StatusCode::OK, doc.source)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "resource_not_found_exception",
            format!("Document not found [{index}]/[{id}]"),
        )),
    }
}

pub async fn head_source(state: State, path: Path<(String, String)>, params: Params) -> Response {
    match get_source(state, path, params).await {
        Ok(_) => empty(StatusCode::OK),
        Err(e) => empty(e.status),
    }
}

/// `POST /_msearch` and `/{index}/_msearch`: NDJSON pairs of a header (`index`,
/// `ignore_unavailable`, `routing`, ...) and a search body; searches run concurrently and
/// each answers on its own (a failed one is an `error` entry with its `status`).
async fn msearch_run(
    state: &State,
    caller: &Caller,
    default: Option<&str>,
    params: &Params,
    body: &Bytes,
) -> Result<Json<Value>, ApiError> {
    let started = std::time::Instant::now();
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("request body is not UTF-8"))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return Err(ApiError::bad_request(
            "Validation Failed: 1: no requests added;",
        ));
    }
    if !lines.len().is_multiple_of(2) {
        return Err(ApiError::bad_request("The msearch request must be terminated by a newline [\\n] and hold header and body pairs"));
    }
    let mut searches = Vec::new();
    for (n, pair) in lines.chunks(2).enumerate() {
        let parse = |l: &str, what: &str| -> Result<Value, ApiError> {
            serde_json::from_str(l).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "parsing_exception",
                    format!("msearch {what} of request {n}: {e}"),
                )
            })
        };
        let header = parse(pair[0], "header")?;
        let body = parse(pair[1], "body")?;
        let index = match header.get("index") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            _ => default.unwrap_or("").to_string(),
        };
        let mut p = params.0.clone();
        for key in ["ignore_unavailable", "routing", "search_type", "preference"] {
            if let Some(v) = header.get(key) {
                p.insert(
                    key.to_string(),
                    match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    },
                );
            }
        }
        // Each search is authorized on its own indexes (narrowed like a `_search`).
        let index = match caller.principal() {
            Some(principal) => {
                const SEARCH: &str = "indices:data/read/search";
                match authz::check_expression(&state.metastore, principal, SEARCH, &index, true) {
                    Ok(None) => Ok(index),
                    Ok(Some(narrowed)) => Ok(narrowed),
                    Err(name) => Err(authz::denial(principal, SEARCH, Some(&name))),
                }
            }
            None => Ok(index),
        };
        searches.push((index, p, body));
    }
    let responses =
        futures::future::join_all(searches.into_iter().map(|(index, p, body)| async move {
            let index = match index {
                Ok(i) => i,
                Err(e) => {
                    let mut v = e.body();
                    v["status"] = json!(e.status.as_u16());
                    return v;
                }
            };
            let params = axum::extract::Query(p);
            let bytes = Bytes::from(body.to_string());
            match run(state, &index, &params, &bytes, false).await {
                Ok(Json(mut v)) => {
                    v["status"] = json!(200);
                    v
                }
                Err(e) => {
                    let mut v = e.body();
                    v["status"] = json!(e.status.as_u16());
                    v
                }
            }
        }))
        .await;
    Ok(Json(
        json!({"took": started.elapsed().as_millis() as u64, "responses": responses}),
    ))
}

#[instrument(skip_all)]
pub async fn msearch_all(
    state: State,
    Extension(caller): Extension<Caller>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    msearch_run(&state, &caller, None, &params, &body).await
}

#[instrument(skip(state, params, body))]
pub async fn msearch(
    state: State,
    Extension(caller): Extension<Caller>,
    Path(index): Path<String>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    msearch_run(&state, &caller, Some(&index), &params, &body).await
}

/// `GET|POST [/{index}]/_field_caps?fields=`: each field's type across the indexes.
#[instrument(skip(state, params, body))]
pub async fn field_caps(
    state: State,
    index: Option<Path<String>>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let expr = index.map(|Path(i)| i).unwrap_or_default();
    let body = json_body(&body)?;
    let fields = params
        .get("fields")
        .cloned()
        .or_else(|| {
            body.as_ref()?.get("fields").map(|f| match f {
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.as_str().unwrap_or_default().to_string(),
            })
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "action_request_validation_exception",
                "Validation Failed: 1: specified fields can't be null or empty;",
            )
        })?;
    let patterns: Vec<String> = fields
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    let ignore = params
        .get("ignore_unavailable")
        .is_some_and(|v| v == "true");
    let indexes = state.searcher.resolve(&expr, ignore)?;
    let include_unmapped = params.get("include_unmapped").is_some_and(|v| v == "true");
    Ok(Json(floe_searcher::field_caps::field_caps(
        &indexes,
        &patterns,
        include_unmapped,
    )))
}

/// `GET|POST [/{index}]/_validate/query[?explain=true]`.
#[instrument(skip(state, params, body))]
pub async fn validate_query(
    state: State,
    index: Option<Path<String>>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let expr = index.map(|Path(i)| i).unwrap_or_default();
    let body = json_body(&body)?;
    let explain = params
        .get("explain")
        .is_some_and(|v| v.is_empty() || v == "true");
    let search_params = params_of(&params)?;
    Ok(Json(state.searcher.validate_query(
        &expr,
        body.as_ref(),
        &search_params,
        explain,
    )?))
}

/// `GET|POST [/{index}]/_analyze`.
#[instrument(skip(state, body))]
pub async fn analyze(
    state: State,
    index: Option<Path<String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body =
        json_body(&body)?.ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let meta = match index {
        Some(Path(name)) => Some(
            state
                .metastore
                .get_index(&name)
                .ok_or_else(|| ApiError::index_not_found(&name))?,
        ),
        None => None,
    };
    Ok(Json(floe_searcher::analyze::analyze(&body, meta.as_ref())?))
}

/// `GET|POST /{index}/_explain/{id}`: 404 when the document does not exist.
#[instrument(skip(state, params, body))]
pub async fn explain(
    state: State,
    Path((index, id)): Path<(String, String)>,
    params: Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let search_params = params_of(&params)?;
    let answer = state
        .searcher
        .explain(&index, &id, body.as_ref(), &search_params)
        .await?;
    let status = if answer.get("explanation").is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    Ok(json_response(status, answer))
}
