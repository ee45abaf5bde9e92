//! `GET /`, `_cluster/health`, `_cat/indices`.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};

use super::{empty, ApiError, Params, State};

/// The OpenSearch version Floe answers as, so official clients accept it.
pub const COMPAT_VERSION: &str = "2.11.0";

pub async fn root() -> Json<Value> {
    Json(json!({
        "name": "floe",
        "cluster_name": "floe",
        "cluster_uuid": "floe",
        "version": {
            "distribution": "opensearch",
            "number": COMPAT_VERSION,
            "build_type": "floe",
            "build_hash": env!("CARGO_PKG_VERSION"),
            "build_date": "2026-01-01T00:00:00Z",
            "build_snapshot": false,
            "lucene_version": "9.7.0",
            "minimum_wire_compatibility_version": "7.10.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "The OpenSearch Project: https://opensearch.org/",
    }))
}

pub async fn root_head() -> Response {
    empty(StatusCode::OK)
}

pub(super) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["b", "kb", "mb", "gb", "tb"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}b")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

pub async fn cat_indices(
    state: State,
    index: Option<Path<String>>,
    params: Params,
) -> Result<Response, ApiError> {
    let indexes = match index {
        Some(Path(expr)) => state.searcher.resolve(&expr, false)?,
        None => state.metastore.list_indexes(),
    };
    const COLS: [&str; 10] = [
        "health",
        "status",
        "index",
        "uuid",
        "pri",
        "rep",
        "docs.count",
        "docs.deleted",
        "store.size",
        "pri.store.size",
    ];
    let rows: Vec<Vec<String>> = indexes
        .iter()
        .map(|m| {
            // `bytes=b`: plain byte counts, as OpenSearch.
            let size = if params.get("bytes").map(String::as_str) == Some("b") {
                m.size_bytes().to_string()
            } else {
                human_bytes(m.size_bytes())
            };
            vec![
                "green".into(),
                "open".into(),
                m.name.clone(),
                m.uuid.clone(),
                m.settings.number_of_shards.to_string(),
                m.settings.number_of_replicas.to_string(),
                m.doc_count().to_string(),
                "0".into(),
                size.clone(),
                size,
            ]
        })
        .collect();
    Ok(super::cat::table(&COLS, rows, &params))
}

/// `GET /_floe/stats`: what this process sent to the bucket (requests and bytes, since
/// start), what its segment cache read and fetched, and its indexing pressure — the
/// figures the bench reads.
pub async fn floe_stats(state: State) -> Json<Value> {
    let storage = state.storage.stats();
    let writer = match &state.writer {
        Some(w) => {
            let (open_shards, open_writers) = w.open_counts().await;
            json!({"open_shards": open_shards, "open_index_writers": open_writers,
                "replay_failures": w.replay_failures().await})
        }
        None => Value::Null,
    };
    Json(json!({
        "storage": storage,
        "cache": cache_json(state.searcher.cache_stats()),
        "node": {"id": state.node_id, "role": state.role},
        "writer": writer,
        "indexing_pressure": {"in_flight_bytes": state.pressure.in_flight(), "limit_bytes": state.pressure.limit()},
    }))
}

/// The segment cache's counters as the stats APIs show them.
pub fn cache_json(cache: floe_cache::CacheStats) -> Value {
    json!({
        "block_reads": cache.block_reads,
        "block_fetches": cache.block_fetches,
        "bytes_fetched": cache.bytes_fetched,
        "hit_ratio": cache.hit_ratio(),
    })
}

/// `GET /_nodes/stats` (and `/_nodes/_local/stats`): this node's figures in the shape of
/// OpenSearch's answer: documents and bytes of the indexes it knows, and under `floe` its
/// segment cache (hit ratio, bytes and GETs from the bucket) and its bucket traffic. In a
/// cluster each node answers for itself.
pub async fn nodes_stats(state: State) -> Json<Value> {
    let indexes = state.metastore.list_indexes();
    let docs: u64 = indexes.iter().map(|m| m.doc_count()).sum();
    let bytes: u64 = indexes.iter().map(|m| m.size_bytes()).sum();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let node = json!({
        "name": state.node_id,
        "roles": [state.role],
        "timestamp": now_ms,
        "indices": {
            "docs": {"count": docs},
            "store": {"size_in_bytes": bytes},
        },
        "floe": {
            "cache": cache_json(state.searcher.cache_stats()),
            "storage": state.storage.stats(),
        },
    });
    Json(json!({
        "_nodes": {"total": 1, "successful": 1, "failed": 0},
        "cluster_name": "floe",
        "nodes": {state.node_id.clone(): node},
    }))
}
