//! Any node answers the whole REST API: a request this node's role does not serve goes to
//! a node that does, over gRPC (`Node.Rest`), and its answer comes back unchanged. Writes
//! and admin calls go to writers, searches to searchers, a realtime `GET _doc` to the
//! writer that owns the document's shard. A forwarded request is never forwarded again.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use floe_metastore::membership::role;
use floe_proto::rpc::RestRequest;
use tracing::debug;

use super::{ApiError, AppState};

/// Marks a request that another node forwarded here.
pub const FORWARDED_HEADER: &str = "x-floe-forwarded";

/// Which role answers a request.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// Any node answers from its own view (health, cat, mappings, root).
    Any,
    Writer,
    Searcher,
    /// The writer owning the shard of (index, id).
    Owner(String, String),
}

fn target(method: &Method, path: &str) -> Target {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let endpoint = parts
        .iter()
        .rev()
        .find(|p| p.starts_with('_'))
        .copied()
        .unwrap_or("");
    match endpoint {
        "_search" | "_count" | "_msearch" => Target::Searcher,
        "_bulk" | "_create" | "_update" | "_refresh" | "_forcemerge" | "_rollover" | "_flush"
        | "_delete_by_query" | "_update_by_query" | "_reindex" => Target::Writer,
        "_doc" if matches!(*method, Method::GET | Method::HEAD) && parts.len() == 3 => {
            Target::Owner(parts[0].to_string(), parts[2].to_string())
        }
        "_doc" => Target::Writer,
        "_mapping" | "_settings" if *method != Method::GET => Target::Writer,
        // Alias changes may delete indexes (`remove_index`): a writer closes their shards.
        "_alias" | "_aliases" if !matches!(*method, Method::GET | Method::HEAD) => Target::Writer,
        // `PUT /{index}`, `DELETE /{index}`.
        "" if parts.len() == 1
            && !parts[0].is_empty()
            && matches!(*method, Method::PUT | Method::DELETE | Method::POST) =>
        {
            Target::Writer
        }
        _ => Target::Any,
    }
}

/// The middleware: serves the request here or forwards it.
pub async fn by_role(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(cluster) = state.cluster.clone() else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED_HEADER) {
        return next.run(req).await;
    }
    let path = req.uri().path().to_string();
    let candidates = match target(req.method(), &path) {
        Target::Any => return next.run(req).await,
        Target::Writer if state.writer.is_some() => return next.run(req).await,
        Target::Writer => cluster.candidates(role::WRITER, &path),
        Target::Searcher if state.role == role::SEARCHER => return next.run(req).await,
        Target::Searcher => {
            let searchers = cluster.candidates(role::SEARCHER, &path);
            if searchers.is_empty() {
                // No searcher is up: this writer answers from the bucket itself.
                return next.run(req).await;
            }
            searchers
        }
        Target::Owner(index, id) => {
            let routing = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("routing=").map(str::to_string))
            });
            let meta = state.metastore.get_index_caught_up(&index, None).await;
            let owner = meta.ok().flatten().and_then(|meta| {
                let shard = floe_writer::shard_for(
                    routing.as_deref().unwrap_or(&id),
                    meta.settings.number_of_shards,
                );
                cluster.view.writer_for(&meta.uuid, shard)
            });
            match owner {
                Some(w) if w.node_id == cluster.view.node_id() => return next.run(req).await,
                Some(w) => vec![w],
                // Unknown index or no writer: answered here (404 or from the bucket).
                None => return next.run(req).await,
            }
        }
    };
    forward(&state, candidates, req).await
}

async fn forward(
    state: &AppState,
    candidates: Vec<floe_proto::rpc::NodeInfo>,
    req: Request,
) -> Response {
    let cluster = state.cluster.as_ref().expect("checked by the caller");
    if candidates.is_empty() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_node_available_exception",
            "no node of the role that serves this request is live".to_string(),
        )
        .into_response();
    }
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = match axum::body::to_bytes(req.into_body(), state.max_content_length).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "content_too_long_exception",
                "request body is larger than http.max_content_length".to_string(),
            )
            .into_response()
        }
    };
    let mut last_error = String::new();
    // A node that cannot be reached is skipped: the next candidate answers.
    for node in candidates.iter().take(3) {
        let request = RestRequest {
            method: method.clone(),
            path_and_query: path_and_query.clone(),
            body: body.to_vec(),
            content_type: content_type.clone(),
            authorization: authorization.clone(),
        };
        match cluster.rest(node, request).await {
            Ok(answer) => {
                debug!(node = %node.node_id, status = answer.status, "forwarded");
                let mut response = Response::new(Body::from(answer.body));
                *response.status_mut() =
                    StatusCode::from_u16(answer.status as u16).unwrap_or(StatusCode::BAD_GATEWAY);
                if let Ok(v) = header::HeaderValue::from_str(&answer.content_type) {
                    if !answer.content_type.is_empty() {
                        response.headers_mut().insert(header::CONTENT_TYPE, v);
                    }
                }
                return response;
            }
            Err(e) => last_error = e,
        }
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_node_available_exception",
        format!("forwarding failed: {last_error}"),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_to_the_role_that_serves_them() {
        assert_eq!(target(&Method::POST, "/_bulk"), Target::Writer);
        assert_eq!(target(&Method::POST, "/logs/_bulk"), Target::Writer);
        assert_eq!(target(&Method::GET, "/logs/_search"), Target::Searcher);
        assert_eq!(target(&Method::POST, "/_count"), Target::Searcher);
        assert_eq!(target(&Method::PUT, "/logs"), Target::Writer);
        assert_eq!(target(&Method::DELETE, "/logs"), Target::Writer);
        assert_eq!(target(&Method::GET, "/logs"), Target::Any);
        assert_eq!(target(&Method::PUT, "/logs/_doc/1"), Target::Writer);
        assert_eq!(target(&Method::POST, "/logs/_doc"), Target::Writer);
        assert_eq!(target(&Method::POST, "/logs/_update/1"), Target::Writer);
        assert_eq!(
            target(&Method::GET, "/logs/_doc/1"),
            Target::Owner("logs".into(), "1".into())
        );
        assert_eq!(target(&Method::GET, "/logs/_mapping"), Target::Any);
        assert_eq!(target(&Method::PUT, "/logs/_mapping"), Target::Writer);
        assert_eq!(target(&Method::GET, "/_cluster/health"), Target::Any);
        assert_eq!(target(&Method::GET, "/_cat/indices"), Target::Any);
        assert_eq!(target(&Method::POST, "/logs/_refresh"), Target::Writer);
        assert_eq!(target(&Method::POST, "/_aliases"), Target::Writer);
        assert_eq!(target(&Method::POST, "/_forcemerge"), Target::Writer);
        assert_eq!(target(&Method::POST, "/logs/_rollover"), Target::Writer);
        assert_eq!(
            target(&Method::POST, "/logs/_rollover/logs-9"),
            Target::Writer
        );
        assert_eq!(target(&Method::PUT, "/logs-1/_alias/logs"), Target::Writer);
        assert_eq!(target(&Method::GET, "/_alias/logs"), Target::Any);
        assert_eq!(target(&Method::GET, "/logs-1/_alias/logs"), Target::Any);
    }
}
