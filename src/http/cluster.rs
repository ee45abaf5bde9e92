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

/// A byte count as `_cat` shows it: `bytes=b|kb|mb|gb|tb|pb` gives whole units (as
/// OpenSearch), otherwise a human-readable size.
pub(super) fn cat_bytes(n: u64, params: &Params) -> String {
    let shift = match params.get("bytes").map(String::as_str) {
        Some("b") => 0,
        Some("kb") => 10,
        Some("mb") => 20,
        Some("gb") => 30,
        Some("tb") => 40,
        Some("pb") => 50,
        _ => return human_bytes(n),
    };
    (n >> shift).to_string()
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
            let size = cat_bytes(m.size_bytes(), &params);
            vec![
                "green".into(),
                if m.settings.closed { "close" } else { "open" }.into(),
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

/// Document and store figures of one index (its last published commits), in `_stats` shape.
fn index_stats(m: &floe_proto::IndexMeta) -> Value {
    let part = json!({
        "docs": {"count": m.doc_count(), "deleted": 0},
        "store": {"size_in_bytes": m.size_bytes()},
        "segments": {"count": m.shards.values().map(|c| c.files.iter().filter(|f| f.name.ends_with(".idx")).count()).sum::<usize>()},
    });
    json!({"uuid": m.uuid, "primaries": part, "total": part})
}

/// `GET [/{index}]/_stats[/{metric}]`: documents, store size and segments per index and
/// in all, from the published commits.
pub async fn stats(state: State, index: Option<Path<String>>) -> Result<Json<Value>, ApiError> {
    let indexes = match index {
        Some(Path(expr)) => state.searcher.resolve(&expr, false)?,
        None => state.metastore.list_indexes(),
    };
    let shards: u32 = indexes.iter().map(|m| m.settings.number_of_shards).sum();
    let docs: u64 = indexes.iter().map(|m| m.doc_count()).sum();
    let bytes: u64 = indexes.iter().map(|m| m.size_bytes()).sum();
    let all = json!({"docs": {"count": docs, "deleted": 0}, "store": {"size_in_bytes": bytes}});
    let per: serde_json::Map<String, Value> = indexes
        .iter()
        .map(|m| (m.name.clone(), index_stats(m)))
        .collect();
    Ok(Json(json!({
        "_shards": {"total": shards, "successful": shards, "failed": 0},
        "_all": {"primaries": all, "total": all},
        "indices": per,
    })))
}

/// `GET /_nodes[/{node}][/{metric}]`: the live nodes and their roles.
pub async fn nodes_info(state: State) -> Json<Value> {
    let nodes = super::cat::live_nodes(&state);
    let map: serde_json::Map<String, Value> = nodes
        .iter()
        .map(|n| {
            (
                n.node_id.clone(),
                json!({"name": n.node_id, "version": COMPAT_VERSION, "build_type": "floe",
                    "roles": [n.role], "http": {"publish_address": n.http_addr},
                    "attributes": {"zone": n.zone}}),
            )
        })
        .collect();
    Json(json!({
        "_nodes": {"total": map.len(), "successful": map.len(), "failed": 0},
        "cluster_name": "floe",
        "nodes": map,
    }))
}

/// `GET /_cluster/stats`: indexes, shards, documents and store of the whole cluster.
pub async fn cluster_stats(state: State) -> Json<Value> {
    let indexes = state.metastore.list_indexes();
    let nodes = super::cat::live_nodes(&state);
    let shards: u32 = indexes.iter().map(|m| m.settings.number_of_shards).sum();
    Json(json!({
        "_nodes": {"total": nodes.len(), "successful": nodes.len(), "failed": 0},
        "cluster_name": "floe",
        "cluster_uuid": "floe",
        "status": "green",
        "indices": {
            "count": indexes.len(),
            "shards": {"total": shards, "primaries": shards},
            "docs": {"count": indexes.iter().map(|m| m.doc_count()).sum::<u64>(), "deleted": 0},
            "store": {"size_in_bytes": indexes.iter().map(|m| m.size_bytes()).sum::<u64>()},
        },
        "nodes": {"count": {"total": nodes.len()}, "versions": [COMPAT_VERSION]},
    }))
}

/// `GET /_stats/{metric}`: the same figures (the metric filter is not applied).
pub async fn stats_all_metric(state: State) -> Result<Json<Value>, ApiError> {
    stats(state, None).await
}

/// `GET /{index}/_stats/{metric}`.
pub async fn stats_metric(
    state: State,
    Path((index, _metric)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    stats(state, Some(Path(index))).await
}
