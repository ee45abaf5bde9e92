//! `GET /`, `_cluster/health`, `_cat/indices`.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use floe_metastore::membership::role;

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

pub async fn health(state: State, index: Option<Path<String>>) -> Result<Json<Value>, ApiError> {
    let indexes = match index {
        Some(Path(expr)) => state.searcher.resolve(&expr, false)?,
        None => state.metastore.list_indexes(),
    };
    let shards: u64 = indexes
        .iter()
        .map(|m| m.settings.number_of_shards as u64)
        .sum();
    // Standalone: every shard is readable from the bucket and has no replicas to wait for.
    // A cluster: a shard is unassigned while no live writer holds it (its owner died and
    // no writer has taken it over yet, or there is no writer).
    let (nodes, data_nodes, unassigned) = match &state.cluster {
        None => (1, 1, 0),
        Some(c) => {
            let live = c.view.nodes();
            let writers: Vec<&str> = live
                .iter()
                .filter(|n| n.role == role::WRITER)
                .map(|n| n.node_id.as_str())
                .collect();
            let wanted: std::collections::HashSet<&str> =
                indexes.iter().map(|m| m.uuid.as_str()).collect();
            let unassigned = if writers.is_empty() {
                shards
            } else {
                state
                    .metastore
                    .shard_records(|u| wanted.contains(u))
                    .iter()
                    .filter(|(_, _, r)| {
                        r.owner
                            .as_ref()
                            .is_some_and(|o| !writers.contains(&o.node_id.as_str()))
                    })
                    .count() as u64
            };
            let data = live.iter().filter(|n| n.role != role::METASTORE).count();
            (live.len(), data, unassigned)
        }
    };
    // Translog operations that failed to re-apply (kept in the bucket) make it yellow.
    let replay_failures = match &state.writer {
        Some(w) => w.replay_failures().await,
        None => 0,
    };
    let status = if unassigned > 0 {
        "red"
    } else if replay_failures > 0 {
        "yellow"
    } else {
        "green"
    };
    let active = shards - unassigned;
    let percent = if shards == 0 {
        100.0
    } else {
        100.0 * active as f64 / shards as f64
    };
    let mut body = json!({
        "cluster_name": "floe", "status": status, "timed_out": false,
        "number_of_nodes": nodes, "number_of_data_nodes": data_nodes, "discovered_master": true, "discovered_cluster_manager": true,
        "active_primary_shards": active, "active_shards": active, "relocating_shards": 0, "initializing_shards": 0,
        "unassigned_shards": unassigned, "delayed_unassigned_shards": 0, "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0, "task_max_waiting_in_queue_millis": 0, "active_shards_percent_as_number": percent,
    });
    if replay_failures > 0 {
        body["floe_reason"] = json!(format!(
            "{replay_failures} translog operation(s) failed to re-apply on recovery; they are kept in the translog (see the log)"
        ));
    }
    Ok(Json(body))
}

fn human_bytes(n: u64) -> String {
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
                "0".into(),
                m.doc_count().to_string(),
                "0".into(),
                size.clone(),
                size,
            ]
        })
        .collect();
    if params.get("format").map(String::as_str) == Some("json") {
        let arr: Vec<Value> = rows
            .iter()
            .map(|r| {
                Value::Object(
                    COLS.iter()
                        .zip(r)
                        .map(|(c, v)| (c.to_string(), json!(v)))
                        .collect(),
                )
            })
            .collect();
        return Ok(Json(Value::Array(arr)).into_response());
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    if params.contains_key("v") {
        table.push(COLS.iter().map(|c| c.to_string()).collect());
    }
    table.extend(rows);
    let widths: Vec<usize> = (0..COLS.len())
        .map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        text.push_str(line.join(" ").trim_end());
        text.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], text).into_response())
}

/// `GET /_floe/stats`: what this process sent to the bucket (requests and bytes, since
/// start) and its indexing pressure — the figures the bench reads.
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
        "node": {"id": state.node_id, "role": state.role},
        "writer": writer,
        "indexing_pressure": {"in_flight_bytes": state.pressure.in_flight(), "limit_bytes": state.pressure.limit()},
    }))
}
