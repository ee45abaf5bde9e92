//! `GET /_cluster/health` and `GET /_cat/health`: what is assigned where, by the same
//! rules everyone computes. A shard's primary is its writer: unassigned (red) while its
//! recorded owner is a writer that is gone, or while no writer is live. Its replicas are
//! the searchers serving it (`number_of_replicas`, at least one): missing ones make it
//! yellow. Standalone: one node serves everything (green unless recovery failed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use floe_metastore::membership::role;

use crate::cluster::peers::Primary;
use floe_proto::IndexMeta;
use serde_json::{json, Value};

use super::{ApiError, Params, State};

/// One shard's assignment.
struct ShardHealth {
    index: String,
    shard: u32,
    primary_active: bool,
    replicas_wanted: usize,
    replicas_assigned: usize,
}

impl ShardHealth {
    fn status(&self) -> u8 {
        if !self.primary_active {
            RED
        } else if self.replicas_assigned < self.replicas_wanted {
            YELLOW
        } else {
            GREEN
        }
    }
}

const GREEN: u8 = 0;
const YELLOW: u8 = 1;
const RED: u8 = 2;

fn status_name(s: u8) -> &'static str {
    ["green", "yellow", "red"][s as usize]
}

fn status_rank(name: &str) -> Option<u8> {
    match name {
        "green" => Some(GREEN),
        "yellow" => Some(YELLOW),
        "red" => Some(RED),
        _ => None,
    }
}

/// Every shard of `indexes` as assigned now, and (nodes, data nodes).
fn assess(state: &State, indexes: &[IndexMeta]) -> (Vec<ShardHealth>, usize, usize) {
    let Some(cluster) = &state.cluster else {
        let shards = indexes
            .iter()
            .flat_map(|m| {
                (0..m.settings.number_of_shards).map(|shard| ShardHealth {
                    index: m.name.clone(),
                    shard,
                    primary_active: true,
                    replicas_wanted: 0,
                    replicas_assigned: 0,
                })
            })
            .collect();
        return (shards, 1, 1);
    };
    let live = cluster.view.nodes();
    let writers = cluster.live_writers();
    let plan = cluster.copy_plan(&state.metastore);
    let mut shards = Vec::new();
    for m in indexes {
        for shard in 0..m.settings.number_of_shards {
            let primary = Primary::of(&state.metastore, &writers, &m.uuid, shard);
            let key = format!("{}/{shard}", m.uuid);
            shards.push(ShardHealth {
                index: m.name.clone(),
                shard,
                primary_active: primary.active(),
                replicas_wanted: plan.wanted.get(&key).copied().unwrap_or(1),
                replicas_assigned: plan.copies.get(&key).map_or(0, Vec::len),
            });
        }
    }
    let data = live.iter().filter(|n| n.role != role::METASTORE).count();
    (shards, live.len(), data)
}

/// Counters of a set of shards, in OpenSearch's names.
fn counts(shards: &[&ShardHealth]) -> (u8, Value) {
    let status = shards.iter().map(|s| s.status()).max().unwrap_or(GREEN);
    let primaries = shards.iter().filter(|s| s.primary_active).count();
    let replicas: usize = shards.iter().map(|s| s.replicas_assigned).sum();
    let wanted = shards.len() + shards.iter().map(|s| s.replicas_wanted).sum::<usize>();
    let active = primaries + replicas;
    let percent = if wanted == 0 {
        100.0
    } else {
        100.0 * active as f64 / wanted as f64
    };
    (
        status,
        json!({
            "status": status_name(status),
            "active_primary_shards": primaries,
            "active_shards": active,
            "relocating_shards": 0,
            "initializing_shards": 0,
            "unassigned_shards": wanted - active,
            "active_shards_percent_as_number": percent,
        }),
    )
}

/// The health body; `level` adds per-index (and per-shard) detail.
async fn report(state: &State, indexes: &[IndexMeta], level: &str) -> (u8, Value) {
    let (shards, nodes, data_nodes) = assess(state, indexes);
    let all: Vec<&ShardHealth> = shards.iter().collect();
    let (mut status, mut body) = counts(&all);
    // Translog operations that failed to re-apply (kept in the bucket) make it yellow.
    let replay_failures = match &state.writer {
        Some(w) => w.replay_failures().await,
        None => 0,
    };
    if replay_failures > 0 && status == GREEN {
        status = YELLOW;
        body["status"] = json!("yellow");
    }
    let extra = json!({
        "cluster_name": "floe", "timed_out": false,
        "number_of_nodes": nodes, "number_of_data_nodes": data_nodes,
        "discovered_master": true, "discovered_cluster_manager": true,
        "delayed_unassigned_shards": 0, "number_of_pending_tasks": 0,
        "number_of_in_flight_fetch": 0, "task_max_waiting_in_queue_millis": 0,
    });
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    if replay_failures > 0 {
        body["floe_reason"] = json!(format!(
            "{replay_failures} translog operation(s) failed to re-apply on recovery; they are kept in the translog (see the log)"
        ));
    }
    if level == "indices" || level == "shards" {
        let mut per_index: BTreeMap<&str, Vec<&ShardHealth>> = BTreeMap::new();
        for s in &shards {
            per_index.entry(s.index.as_str()).or_default().push(s);
        }
        let mut out = serde_json::Map::new();
        for m in indexes {
            let list = per_index.remove(m.name.as_str()).unwrap_or_default();
            let (_, mut c) = counts(&list);
            c["number_of_shards"] = json!(m.settings.number_of_shards);
            c["number_of_replicas"] = json!(m.settings.number_of_replicas);
            if level == "shards" {
                let detail: serde_json::Map<String, Value> = list
                    .iter()
                    .map(|s| {
                        let (_, sc) = counts(std::slice::from_ref(s));
                        let mut sc = sc;
                        sc["primary_active"] = json!(s.primary_active);
                        (s.shard.to_string(), sc)
                    })
                    .collect();
                c["shards"] = Value::Object(detail);
            }
            out.insert(m.name.clone(), c);
        }
        body["indices"] = Value::Object(out);
    }
    (status, body)
}

fn parse_timeout(s: &str) -> Option<Duration> {
    floe_proto::model::parse_time_value(s)
}

/// `GET /_cluster/health[/{index}]` with `wait_for_status`, `timeout`, `level`.
pub async fn health(
    state: State,
    index: Option<Path<String>>,
    params: Params,
) -> Result<Response, ApiError> {
    let level = params
        .get("level")
        .map_or("cluster", String::as_str)
        .to_string();
    let wanted = match params.get("wait_for_status") {
        None => None,
        Some(w) => Some(status_rank(w).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                format!("unknown health status [{w}]"),
            )
        })?),
    };
    let timeout = match params.get("timeout") {
        None => Duration::from_secs(30),
        Some(t) => parse_timeout(t).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                format!("failed to parse setting [timeout] with value [{t}] as a time value"),
            )
        })?,
    };
    let deadline = Instant::now() + timeout;
    loop {
        // A cluster node that has not heard from the metastore yet knows no cluster.
        let joined = state
            .cluster
            .as_ref()
            .is_none_or(|c| c.view.since_heard().is_some());
        if !joined {
            if wanted.is_some() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "master_not_discovered_exception",
                "this node has not reached the metastore yet".to_string(),
            ));
        }
        let indexes = match &index {
            Some(Path(expr)) => state.searcher.resolve(expr, false)?,
            None => state.metastore.list_indexes(),
        };
        let (status, mut body) = report(&state, &indexes, &level).await;
        let reached = wanted.is_none_or(|w| status <= w);
        if reached {
            return Ok(Json(body).into_response());
        }
        if Instant::now() >= deadline {
            body["timed_out"] = json!(true);
            return Ok((StatusCode::REQUEST_TIMEOUT, Json(body)).into_response());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /_cat/health`.
pub async fn cat_health(state: State, params: Params) -> Result<Response, ApiError> {
    const COLS: [&str; 14] = [
        "epoch",
        "timestamp",
        "cluster",
        "status",
        "node.total",
        "node.data",
        "shards",
        "pri",
        "relo",
        "init",
        "unassign",
        "pending_tasks",
        "max_task_wait_time",
        "active_shards_percent",
    ];
    let (_, body) = report(&state, &state.metastore.list_indexes(), "cluster").await;
    let now = time::OffsetDateTime::now_utc();
    let row = vec![
        now.unix_timestamp().to_string(),
        format!("{:02}:{:02}:{:02}", now.hour(), now.minute(), now.second()),
        "floe".to_string(),
        body["status"].as_str().unwrap_or("red").to_string(),
        body["number_of_nodes"].to_string(),
        body["number_of_data_nodes"].to_string(),
        body["active_shards"].to_string(),
        body["active_primary_shards"].to_string(),
        "0".into(),
        "0".into(),
        body["unassigned_shards"].to_string(),
        "0".into(),
        "-".into(),
        format!(
            "{:.1}%",
            body["active_shards_percent_as_number"]
                .as_f64()
                .unwrap_or(0.0)
        ),
    ];
    Ok(super::cat::table(&COLS, vec![row], &params))
}
