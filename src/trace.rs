//! One trace id per client request, carried across every node it touches: taken from the
//! request's `x-floe-trace` (or `x-request-id`) header or made up, set on the request's
//! span (so every log line of it, on every node, names it), sent along with every gRPC
//! call the request makes (metadata `x-floe-trace`), and answered in the response header.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Header (HTTP) and metadata key (gRPC) of the trace id.
pub const KEY: &str = "x-floe-trace";

tokio::task_local! {
    static TRACE: String;
}

/// The trace id of the request this task works for, if any.
pub fn current() -> Option<String> {
    TRACE.try_with(|t| t.clone()).ok()
}

/// A fresh id: this process's start time and a counter, in hex (unique enough to find a
/// request's lines in the logs; no randomness needed).
fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    format!(
        "{:x}{:06x}",
        start & 0xffff_ffff_ffff,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// HTTP middleware: runs the request inside its trace.
pub async fn http(req: Request, next: Next) -> Response {
    let id = [KEY, "x-request-id"]
        .iter()
        .find_map(|h| req.headers().get(*h)?.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(new_id);
    let span = tracing::info_span!("request", trace = %id, method = %req.method(), path = %req.uri().path());
    let mut response = TRACE
        .scope(id.clone(), next.run(req).instrument(span))
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(KEY, v);
    }
    response
}

/// A gRPC request carrying the current trace id.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(id) = current() {
        if let Ok(v) = id.parse() {
            request.metadata_mut().insert(KEY, v);
        }
    }
    request
}

/// The trace id a gRPC request arrived with (empty if none).
pub fn of<T>(request: &tonic::Request<T>) -> String {
    request
        .metadata()
        .get(KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Runs the handling of a gRPC request inside the trace it arrived with, so calls it makes
/// carry the trace on.
pub async fn serve<F: Future>(trace: String, work: F) -> F::Output {
    if trace.is_empty() {
        work.await
    } else {
        TRACE.scope(trace, work).await
    }
}
