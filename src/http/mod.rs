//! The OpenSearch-compatible REST front end: routes, shared state, body limits and the
//! JSON shape of errors. Handlers are thin: they parse HTTP and call the role crates.

mod aliases;
mod byquery;
mod cat;
mod cluster;
mod documents;
pub mod error;
mod health;
mod indices;
mod ism;
pub mod metrics;
mod route;
mod scroll;
mod search;
pub mod security;
mod templates;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use bytes::Bytes;
use floe_metastore::Metastore;
use floe_searcher::SearchService;
use floe_writer::pressure::IndexingPressure;
use floe_writer::Writer;
use futures::StreamExt;
use serde_json::Value;

pub use error::ApiError;
pub use route::FORWARDED_HEADER;

/// What every handler can reach.
pub struct AppState {
    pub storage: floe_storage::Storage,
    pub metastore: Arc<Metastore>,
    pub pressure: Arc<IndexingPressure>,
    /// This node's writer (standalone and writer roles).
    pub writer: Option<Arc<Writer>>,
    pub searcher: Arc<SearchService>,
    pub max_content_length: usize,
    /// `standalone`, `writer` or `searcher`.
    pub role: &'static str,
    pub node_id: String,
    /// The other nodes (cluster roles; `None` in standalone).
    pub cluster: Option<Arc<crate::cluster::peers::ClusterPeers>>,
    pub metrics: metrics::Metrics,
    /// `[reindex] remote_allowlist`: the remote clusters `_reindex` may read from.
    pub reindex_allowlist: Vec<String>,
    /// Authentication (credentials cache, brute-force throttle).
    pub security: Arc<security::Security>,
}

impl AppState {
    /// This node's writer, or 503 when it has none (a searcher whose request could not be
    /// forwarded to a writer).
    pub fn writer(&self) -> Result<&Arc<Writer>, ApiError> {
        self.writer.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_node_available_exception",
                "this node is not a writer and no writer is live".to_string(),
            )
        })
    }
}

pub type State = axum::extract::State<Arc<AppState>>;
pub type Params = axum::extract::Query<HashMap<String, String>>;

/// Builds the router of `floe standalone`.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.max_content_length;
    let routes = Router::new()
        .route("/", get(cluster::root).head(cluster::root_head))
        .route("/_cluster/health", get(health::health))
        .route("/_cluster/health/{index}", get(health::health))
        .route("/_cat/health", get(health::cat_health))
        .route("/_cat", get(cat::cat_help))
        .route("/_cat/plugins", get(cat::cat_plugins))
        .route(
            "/_search_shards",
            get(cat::search_shards).post(cat::search_shards),
        )
        .route(
            "/{index}/_search_shards",
            get(cat::search_shards).post(cat::search_shards),
        )
        .route("/_stats", get(cluster::stats))
        .route("/_stats/{metric}", get(cluster::stats_all_metric))
        .route("/{index}/_stats", get(cluster::stats))
        .route("/{index}/_stats/{metric}", get(cluster::stats_metric))
        .route("/_nodes", get(cluster::nodes_info))
        .route("/_cluster/stats", get(cluster::cluster_stats))
        .route("/_cat/indices", get(cluster::cat_indices))
        .route("/_cat/nodes", get(cat::cat_nodes))
        .route("/_cat/shards", get(cat::cat_shards))
        .route("/_cat/allocation", get(cat::cat_allocation))
        .route(
            "/_cluster/allocation/explain",
            get(cat::allocation_explain).post(cat::allocation_explain),
        )
        .route("/_floe/stats", get(cluster::floe_stats))
        .route("/_nodes/stats", get(cluster::nodes_stats))
        .route("/_nodes/_local/stats", get(cluster::nodes_stats))
        .route("/metrics", get(metrics::metrics))
        .route("/_cat/indices/{index}", get(cluster::cat_indices))
        .route("/_cat/aliases", get(aliases::cat_all))
        .route("/_cat/segments", get(cat::cat_segments))
        .route("/_cat/count", get(cat::cat_count))
        .route("/_cat/count/{index}", get(cat::cat_count_of))
        .route("/_cat/segments/{index}", get(cat::cat_segments_of))
        .route("/_forcemerge", post(indices::force_merge_all))
        .route("/_cat/aliases/{name}", get(aliases::cat_named))
        .route("/_aliases", post(aliases::update).get(aliases::get_all))
        .route("/_alias", get(aliases::get_all))
        .route(
            "/_cluster/settings",
            get(ism::get_cluster_settings).put(ism::put_cluster_settings),
        )
        .route("/_plugins/_ism/policies", get(ism::get_policies))
        .route(
            "/_plugins/_ism/policies/{id}",
            put(ism::put_policy)
                .get(ism::get_policy)
                .delete(ism::delete_policy),
        )
        .route("/_plugins/_ism/add/{index}", post(ism::add))
        .route("/_plugins/_ism/remove/{index}", post(ism::remove))
        .route(
            "/_plugins/_ism/change_policy/{index}",
            post(ism::change_policy),
        )
        .route("/_plugins/_ism/retry/{index}", post(ism::retry))
        .route("/_plugins/_ism/explain", get(ism::explain_all))
        .route("/_plugins/_ism/explain/{index}", get(ism::explain_index))
        .route("/_index_template", get(templates::get_index_templates))
        .route(
            "/_index_template/{name}",
            put(templates::put_index_template)
                .post(templates::put_index_template)
                .get(templates::get_index_template)
                .head(templates::head_index_template)
                .delete(templates::delete_index_template),
        )
        .route(
            "/_component_template",
            get(templates::get_component_templates),
        )
        .route(
            "/_component_template/{name}",
            put(templates::put_component_template)
                .post(templates::put_component_template)
                .get(templates::get_component_template)
                .head(templates::head_component_template)
                .delete(templates::delete_component_template),
        )
        .route("/_template", get(templates::get_legacy_templates))
        .route(
            "/_template/{name}",
            put(templates::put_legacy_template)
                .post(templates::put_legacy_template)
                .get(templates::get_legacy_template)
                .head(templates::head_legacy_template)
                .delete(templates::delete_legacy_template),
        )
        .route(
            "/_alias/{name}",
            get(aliases::get_named).head(aliases::exists),
        )
        .route("/_aliases/{name}", get(aliases::get_named))
        .route("/{index}/_alias", get(aliases::get_of_index))
        .route("/{index}/_aliases", get(aliases::get_of_index))
        .route(
            "/{index}/_alias/{name}",
            put(aliases::put)
                .post(aliases::put)
                .delete(aliases::delete)
                .get(aliases::get_of_index_named)
                .head(aliases::exists_of_index),
        )
        .route(
            "/{index}/_aliases/{name}",
            put(aliases::put)
                .post(aliases::put)
                .delete(aliases::delete)
                .get(aliases::get_of_index_named)
                .head(aliases::exists_of_index),
        )
        .route("/_bulk", post(documents::bulk).put(documents::bulk))
        .route("/{index}/_delete_by_query", post(byquery::delete_by_query))
        .route("/{index}/_update_by_query", post(byquery::update_by_query))
        .route("/_reindex", post(byquery::reindex))
        .route("/_tasks/{id}", get(byquery::get_task))
        .route("/_tasks/{id}/_cancel", post(byquery::cancel_task))
        .route(
            "/{index}/_bulk",
            post(documents::bulk_index).put(documents::bulk_index),
        )
        .route("/_search", get(search::search_all).post(search::search_all))
        .route(
            "/_search/scroll",
            get(scroll::next).post(scroll::next).delete(scroll::clear),
        )
        .route(
            "/_search/scroll/{id}",
            get(scroll::next_by_path)
                .post(scroll::next_by_path)
                .delete(scroll::clear_by_path),
        )
        .route("/_search/point_in_time", delete(scroll::close_pits))
        .route(
            "/_search/point_in_time/_all",
            get(scroll::list_pits).delete(scroll::close_all_pits),
        )
        .route("/{index}/_search/point_in_time", post(scroll::open_pit))
        .route("/{index}/_search", get(search::search).post(search::search))
        .route("/_count", get(search::count_all).post(search::count_all))
        .route(
            "/_msearch",
            get(search::msearch_all).post(search::msearch_all),
        )
        .route(
            "/{index}/_msearch",
            get(search::msearch).post(search::msearch),
        )
        .route("/_mget", get(search::mget_all).post(search::mget_all))
        .route("/{index}/_mget", get(search::mget).post(search::mget))
        .route(
            "/{index}/_source/{id}",
            get(search::get_source).head(search::head_source),
        )
        .route("/{index}/_count", get(search::count).post(search::count))
        .route(
            "/_refresh",
            get(indices::refresh_all).post(indices::refresh_all),
        )
        .route(
            "/{index}/_refresh",
            get(indices::refresh).post(indices::refresh),
        )
        .route("/_mapping", get(indices::get_mapping_all))
        .route(
            "/_validate/query",
            get(search::validate_query).post(search::validate_query),
        )
        .route(
            "/{index}/_validate/query",
            get(search::validate_query).post(search::validate_query),
        )
        .route("/_analyze", get(search::analyze).post(search::analyze))
        .route(
            "/{index}/_explain/{id}",
            get(search::explain).post(search::explain),
        )
        .route(
            "/{index}/_analyze",
            get(search::analyze).post(search::analyze),
        )
        .route(
            "/_field_caps",
            get(search::field_caps).post(search::field_caps),
        )
        .route(
            "/{index}/_field_caps",
            get(search::field_caps).post(search::field_caps),
        )
        .route("/{index}/_forcemerge", post(indices::force_merge))
        .route("/{index}/_block/{block}", put(indices::add_block))
        .route("/{index}/_flush", post(indices::flush).get(indices::flush))
        .route("/{index}/_close", post(indices::close))
        .route("/{index}/_open", post(indices::open))
        .route("/_resolve/index/{name}", get(indices::resolve_index))
        .route("/{index}/_rollover", post(indices::rollover))
        .route(
            "/{index}/_rollover/{new_index}",
            post(indices::rollover_named),
        )
        .route(
            "/{index}/_mapping",
            get(indices::get_mapping)
                .put(indices::put_mapping)
                .post(indices::put_mapping),
        )
        .route(
            "/{index}/_settings",
            get(indices::get_settings).put(indices::put_settings),
        )
        .route(
            "/{index}/_settings/{name}",
            get(indices::get_settings_named),
        )
        .route("/{index}/_doc", post(documents::index_auto_id))
        .route(
            "/{index}/_doc/{id}",
            put(documents::index_with_id)
                .post(documents::index_with_id)
                .get(search::get_doc)
                .head(search::head_doc)
                .delete(documents::delete_doc),
        )
        .route("/{index}/_update/{id}", post(documents::update_doc))
        .route("/_plugins/_security/health", get(security::api::health))
        .route("/_plugins/_security/authinfo", get(security::api::authinfo))
        .route(
            "/_plugins/_security/api/{resource}",
            get(security::api::list).patch(security::api::patch_all),
        )
        .route(
            "/_plugins/_security/api/{resource}/{name}",
            get(security::api::get)
                .put(security::api::put)
                .delete(security::api::delete)
                .patch(security::api::patch_one),
        )
        .route(
            "/_security/api_key",
            post(security::api_keys::create)
                .put(security::api_keys::create)
                .get(security::api_keys::list)
                .delete(security::api_keys::revoke),
        )
        .route(
            "/{index}/_create/{id}",
            put(documents::create_with_id).post(documents::create_with_id),
        )
        .route(
            "/{index}",
            put(indices::create)
                .get(indices::get)
                .head(indices::exists)
                .delete(indices::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            indexing_pressure,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            route::by_role,
        ))
        .with_state(state.clone());
    // Security runs before routing: authorization may narrow a path's index expression,
    // which the routes above then extract.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::authz::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_body,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(crate::trace::http))
        .with_state(state)
}

/// Rejects bodies over `http.max_content_length` with a 413 before reading them, and gives
/// the limit's own rejections (chunked bodies) the OpenSearch error shape.
async fn limit_body(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_content_length) {
        return too_large(state.max_content_length);
    }
    let resp = next.run(req).await;
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE
        && resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_none_or(|v| v != "application/json")
    {
        return too_large(state.max_content_length);
    }
    resp
}

/// Admits a write only if its bytes fit the indexing-pressure budget; otherwise 429 with
/// `es_rejected_execution_exception` and `Retry-After`, before the body is read.
async fn indexing_pressure(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let is_write = matches!(*req.method(), Method::POST | Method::PUT)
        && ["/_bulk", "/_doc", "/_create"]
            .iter()
            .any(|p| req.uri().path().ends_with(p) || req.uri().path().contains(&format!("{p}/")));
    if !is_write {
        return next.run(req).await;
    }
    let bytes = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        // Chunked bodies count as the largest allowed body.
        .unwrap_or(state.max_content_length);
    match state.pressure.try_acquire(bytes) {
        Ok(guard) => {
            let resp = next.run(req).await;
            drop(guard);
            resp
        }
        Err(rejected) => {
            state.metrics.rejections.inc();
            // Read the body off the wire without keeping it (nothing is buffered), so the
            // client, still sending, gets the 429 instead of a broken connection.
            let mut body = req.into_body().into_data_stream();
            let mut seen = 0usize;
            while let Some(Ok(chunk)) = body.next().await {
                seen += chunk.len();
                if seen > state.max_content_length {
                    break;
                }
            }
            let mut resp = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "es_rejected_execution_exception",
                rejected.to_string(),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            resp
        }
    }
}

fn too_large(limit: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "content_too_long_exception",
        format!("request body is larger than http.max_content_length [{limit}] bytes"),
    )
    .into_response()
}

async fn unknown_endpoint(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_exception",
        format!(
            "no handler found for uri [{}] and method [{method}]",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed_exception",
        format!(
            "Incorrect HTTP method for uri [{}] and method [{method}]",
            uri.path()
        ),
    )
}

/// Parses an optional JSON body (empty → `None`).
pub fn json_body(body: &Bytes) -> Result<Option<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "parsing_exception",
            format!("request body is not valid JSON: {e}"),
        )
    })
}

/// A JSON response with an explicit status.
pub fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

pub fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}
