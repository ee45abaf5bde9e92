//! `_cat` tables: `_cat/nodes` and `_cat/shards` (`_cat/indices` is in `cluster.rs`), and
//! the text/JSON table every `_cat` endpoint answers with (`v`, `format=json`).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use floe_metastore::membership::role;
use serde_json::{json, Value};

use super::cluster::cat_bytes;
use super::{ApiError, Params, State};
use crate::cluster::peers::Primary;

/// A `_cat` answer: aligned text (with a header line on `v`) or, on `format=json`, an array
/// of objects keyed by column; `h` picks columns (wildcards allowed), `s` sorts rows
/// (`col`, `col:desc`; numbers and sizes by value), `help` lists the columns.
pub fn table(cols: &[&str], rows: Vec<Vec<String>>, params: &Params) -> Response {
    if params.contains_key("help") {
        let text: String = cols.iter().map(|c| format!("{c:<20} | {c}\n")).collect();
        return ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], text).into_response();
    }
    let (cols, mut rows) = select_columns(cols, rows, params.get("h").map(String::as_str));
    if let Some(spec) = params.get("s") {
        sort_rows(&cols, &mut rows, spec);
    }
    if params.get("format").map(String::as_str) == Some("json") {
        let arr: Vec<Value> = rows
            .iter()
            .map(|r| {
                Value::Object(
                    cols.iter()
                        .zip(r)
                        .map(|(c, v)| (c.to_string(), json!(v)))
                        .collect(),
                )
            })
            .collect();
        return Json(Value::Array(arr)).into_response();
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    if params.contains_key("v") {
        table.push(cols.iter().map(|c| c.to_string()).collect());
    }
    table.extend(rows);
    let widths: Vec<usize> = (0..cols.len())
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
    ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], text).into_response()
}

/// The columns `h` names (in its order), and the rows cut to them.
fn select_columns(
    cols: &[&str],
    rows: Vec<Vec<String>>,
    h: Option<&str>,
) -> (Vec<String>, Vec<Vec<String>>) {
    let Some(h) = h else {
        return (cols.iter().map(|c| c.to_string()).collect(), rows);
    };
    let picked: Vec<usize> = h
        .split(',')
        .map(str::trim)
        .flat_map(|want| {
            cols.iter()
                .enumerate()
                .filter(move |(_, c)| floe_metastore::matches_pattern(want, c))
                .map(|(i, _)| i)
        })
        .collect();
    let names = picked.iter().map(|&i| cols[i].to_string()).collect();
    let rows = rows
        .into_iter()
        .map(|r| picked.iter().map(|&i| r[i].clone()).collect())
        .collect();
    (names, rows)
}

/// Sorts by `s` (`col[:asc|desc],...`): numbers and byte sizes by value, else as text.
fn sort_rows(cols: &[String], rows: &mut [Vec<String>], spec: &str) {
    let keys: Vec<(usize, bool)> = spec
        .split(',')
        .filter_map(|part| {
            let (name, order) = part.trim().split_once(':').unwrap_or((part.trim(), "asc"));
            let i = cols.iter().position(|c| c == name)?;
            Some((i, order == "desc"))
        })
        .collect();
    let value = |s: &str| -> Option<f64> {
        let s = s.trim();
        if let Ok(n) = s.parse::<f64>() {
            return Some(n);
        }
        s.parse::<bytesize::ByteSize>()
            .ok()
            .map(|b| b.as_u64() as f64)
    };
    rows.sort_by(|a, b| {
        for &(i, desc) in &keys {
            let ord = match (value(&a[i]), value(&b[i])) {
                (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                _ => a[i].cmp(&b[i]),
            };
            let ord = if desc { ord.reverse() } else { ord };
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        std::cmp::Ordering::Equal
    });
}

/// Every live node (standalone: this one).
pub(super) fn live_nodes(state: &State) -> Vec<floe_proto::rpc::NodeInfo> {
    match &state.cluster {
        Some(c) => c.view.nodes().to_vec(),
        None => vec![floe_proto::rpc::NodeInfo {
            node_id: state.node_id.clone(),
            role: state.role.to_string(),
            ..Default::default()
        }],
    }
}

/// `GET /_cat`: the `_cat` endpoints.
pub async fn cat_help() -> Response {
    let text = [
        "=^.^=",
        "/_cat/aliases",
        "/_cat/aliases/{alias}",
        "/_cat/allocation",
        "/_cat/count",
        "/_cat/count/{index}",
        "/_cat/health",
        "/_cat/indices",
        "/_cat/indices/{index}",
        "/_cat/nodes",
        "/_cat/plugins",
        "/_cat/segments",
        "/_cat/segments/{index}",
        "/_cat/shards",
    ]
    .join("\n");
    (
        [(header::CONTENT_TYPE, "text/plain; charset=UTF-8")],
        text + "\n",
    )
        .into_response()
}

/// `GET /_cat/plugins`: Floe has no plugins (what plugins add, it builds in).
pub async fn cat_plugins(params: Params) -> Response {
    table(&["name", "component", "version"], Vec::new(), &params)
}

/// `GET /_cat/nodes`: every live node (standalone: this one).
pub async fn cat_nodes(state: State, params: Params) -> Result<Response, ApiError> {
    const COLS: [&str; 7] = [
        "name",
        "node.role",
        "zone",
        "ip",
        "ram.current",
        "load_1m",
        "uptime",
    ];
    let nodes = live_nodes(&state);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let rows = nodes
        .iter()
        .map(|n| {
            let uptime = if n.started_ms == 0 {
                "-".to_string()
            } else {
                format!("{}s", now_ms.saturating_sub(n.started_ms) / 1000)
            };
            vec![
                n.node_id.clone(),
                n.role.clone(),
                n.zone.clone(),
                n.http_addr.clone(),
                cat_bytes(n.rss_bytes, &params),
                format!("{:.2}", n.load_1m),
                uptime,
            ]
        })
        .collect();
    Ok(table(&COLS, rows, &params))
}

/// `GET /_cat/shards`: each shard's primary (`p`: the writer that owns it, or
/// `UNASSIGNED` while its owner is gone) and, in a cluster, a replica row (`r`) per
/// searcher serving it, with documents and size of its last commit.
pub async fn cat_shards(state: State, params: Params) -> Result<Response, ApiError> {
    const COLS: [&str; 7] = ["index", "shard", "prirep", "state", "docs", "store", "node"];
    let placement = Placement::of(&state);
    let mut rows = Vec::new();
    for meta in &state.metastore.list_indexes() {
        for shard in 0..meta.settings.number_of_shards {
            let commit = meta.shards.get(&shard);
            let docs = commit.map_or(0, |c| c.num_docs).to_string();
            let store = cat_bytes(commit.map_or(0, |c| c.size_bytes), &params);
            for (primary, state_name, node) in placement.copies(&state, meta, shard) {
                rows.push(vec![
                    meta.name.clone(),
                    shard.to_string(),
                    if primary { "p" } else { "r" }.to_string(),
                    state_name.to_string(),
                    docs.clone(),
                    store.clone(),
                    node,
                ]);
            }
        }
    }
    Ok(table(&COLS, rows, &params))
}

/// Where each shard's copies are: its writer (the primary) and, in a cluster, the searchers
/// serving it (replicas; missing ones unassigned).
struct Placement {
    writers: Option<Vec<String>>,
    plan: Option<std::sync::Arc<floe_metastore::membership::CopyPlan>>,
}

impl Placement {
    fn of(state: &State) -> Placement {
        Placement {
            writers: state.cluster.as_ref().map(|c| c.live_writers()),
            plan: state
                .cluster
                .as_ref()
                .map(|c| c.copy_plan(&state.metastore)),
        }
    }

    /// (primary, state, node) of each copy of one shard.
    fn copies(
        &self,
        state: &State,
        meta: &floe_proto::IndexMeta,
        shard: u32,
    ) -> Vec<(bool, &'static str, String)> {
        let (state_name, node) = match &self.writers {
            Some(live) => match Primary::of(&state.metastore, live, &meta.uuid, shard) {
                Primary::Owned(o) => ("STARTED", o),
                // Not opened for writing since it was created or handed over.
                Primary::Unowned => ("STARTED", "-".to_string()),
                Primary::Gone(_) | Primary::NoWriter => ("UNASSIGNED", String::new()),
            },
            // Standalone: every shard is this node's (`-` until first written).
            None => match state.metastore.shard_owner(&meta.uuid, shard) {
                Some(o) => ("STARTED", o.node_id),
                None => ("STARTED", "-".to_string()),
            },
        };
        let mut out = vec![(true, state_name, node)];
        if let Some(plan) = &self.plan {
            let key = format!("{}/{shard}", meta.uuid);
            let copies = plan.copies.get(&key).cloned().unwrap_or_default();
            let wanted = plan.wanted.get(&key).copied().unwrap_or(1);
            out.extend(copies.iter().map(|n| (false, "STARTED", n.clone())));
            out.extend((copies.len()..wanted).map(|_| (false, "UNASSIGNED", String::new())));
        }
        out
    }
}

/// `GET [/{index}]/_search_shards`: the copies a search of these indexes would use.
pub async fn search_shards(
    state: State,
    index: Option<axum::extract::Path<String>>,
) -> Result<Json<Value>, ApiError> {
    let indexes = match index {
        Some(axum::extract::Path(expr)) => state.searcher.resolve(&expr, false)?,
        None => state.metastore.list_indexes(),
    };
    let placement = Placement::of(&state);
    let mut shards = Vec::new();
    let mut nodes = serde_json::Map::new();
    for meta in &indexes {
        for shard in 0..meta.settings.number_of_shards {
            let copies: Vec<Value> = placement
                .copies(&state, meta, shard)
                .into_iter()
                .map(|(primary, state_name, node)| {
                    if !node.is_empty() && node != "-" {
                        nodes.insert(node.clone(), json!({"name": node, "attributes": {}}));
                    }
                    let node = (!node.is_empty() && node != "-").then_some(node);
                    json!({"state": state_name, "primary": primary, "node": node,
                        "relocating_node": null, "shard": shard, "index": meta.name})
                })
                .collect();
            shards.push(Value::Array(copies));
        }
    }
    let indices: serde_json::Map<String, Value> = indexes
        .iter()
        .map(|m| (m.name.clone(), json!({})))
        .collect();
    Ok(Json(
        json!({"nodes": nodes, "indices": indices, "shards": shards}),
    ))
}

/// `GET|POST /_cluster/allocation/explain` with `{"index", "shard", "primary"}`: where the
/// copy is, or why it is unassigned, decided by each live node.
pub async fn allocation_explain(state: State, body: bytes::Bytes) -> Result<Response, ApiError> {
    let body = super::json_body(&body)?.unwrap_or(json!({}));
    let bad = |m: &str| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            m.to_string(),
        )
    };
    let index = body["index"]
        .as_str()
        .ok_or_else(|| bad("allocation explain needs [index], [shard] and [primary]"))?;
    let shard = body["shard"].as_u64().unwrap_or(0) as u32;
    let primary = body["primary"].as_bool().unwrap_or(false);
    let meta = state
        .metastore
        .get_index(index)
        .ok_or_else(|| ApiError::index_not_found(index))?;
    if shard >= meta.settings.number_of_shards {
        return Err(bad(&format!(
            "shard [{shard}] of index [{index}] does not exist"
        )));
    }
    let Some(cluster) = &state.cluster else {
        return Ok(
            Json(json!({"index": index, "shard": shard, "primary": primary,
            "current_state": "started", "current_node": {"name": state.node_id},
            "can_remain_on_current_node": "yes",
            "explanation": "standalone: this node holds every shard"}))
            .into_response(),
        );
    };
    let key = format!("{}/{shard}", meta.uuid);
    if primary {
        let writers = cluster.live_writers();
        let primary = Primary::of(&state.metastore, &writers, &meta.uuid, shard);
        let placed = cluster
            .view
            .writer_for(&meta.uuid, shard)
            .map(|n| n.node_id)
            .unwrap_or_default();
        let (current_state, explanation) = match &primary {
            _ if writers.is_empty() => ("unassigned", "no writer is live".to_string()),
            Primary::Gone(o) => ("unassigned", format!("its writer [{o}] is gone; [{placed}] takes it over once that writer's session lapses")),
            Primary::Owned(o) if *o != placed => ("started", format!("owned by [{o}], moving to [{placed}] (the writer ranking first for it)")),
            _ => ("started", format!("placed on [{placed}], the live writer ranking first for it in its zone (zone share, then rendezvous hashing)")),
        };
        let owner = match primary {
            Primary::Owned(o) | Primary::Gone(o) => Some(o),
            Primary::Unowned | Primary::NoWriter => (!placed.is_empty()).then_some(placed),
        };
        return Ok(Json(json!({"index": index, "shard": shard, "primary": true,
            "current_state": current_state, "current_node": {"name": owner},
            "explanation": explanation}))
        .into_response());
    }
    let plan = cluster.copy_plan(&state.metastore);
    let copies = plan.copies.get(&key).cloned().unwrap_or_default();
    let wanted = plan.wanted.get(&key).copied().unwrap_or(1);
    let mut decisions: Vec<Value> = copies
        .iter()
        .map(|n| json!({"node_name": n, "node_decision": "yes", "explanation": "serves a copy of the shard"}))
        .collect();
    for (n, why) in plan.refusals.get(&key).cloned().unwrap_or_default() {
        decisions.push(json!({"node_name": n, "node_decision": "no", "explanation": why}));
    }
    let unassigned = copies.len() < wanted;
    let explanation = if unassigned {
        format!("{} of {wanted} copies cannot be allocated: no live searcher may take them (see node_allocation_decisions)", wanted - copies.len())
    } else {
        format!("all {wanted} copies are allocated")
    };
    Ok(
        Json(json!({"index": index, "shard": shard, "primary": false,
        "current_state": if unassigned { "unassigned" } else { "started" },
        "can_allocate": if unassigned { "no" } else { "yes" },
        "copies": copies, "copies_wanted": wanted, "searcher_cap": plan.cap,
        "allocate_explanation": explanation,
        "node_allocation_decisions": decisions}))
        .into_response(),
    )
}

/// `GET /_cat/allocation`: how many shard copies each data node holds (writers: the
/// primaries they own; searchers: the copies they serve) and where it is.
pub async fn cat_allocation(state: State, params: Params) -> Result<Response, ApiError> {
    const COLS: [&str; 5] = ["shards", "host", "ip", "node", "node.role"];
    let Some(cluster) = &state.cluster else {
        let shards: u32 = state
            .metastore
            .list_indexes()
            .iter()
            .map(|m| m.settings.number_of_shards)
            .sum();
        let row = vec![
            shards.to_string(),
            "127.0.0.1".into(),
            "127.0.0.1".into(),
            state.node_id.clone(),
            state.role.to_string(),
        ];
        return Ok(table(&COLS, vec![row], &params));
    };
    let plan = cluster.copy_plan(&state.metastore);
    let copies = plan.load();
    let mut owned: std::collections::HashMap<String, usize> = Default::default();
    for (_, _, r) in state.metastore.shard_records(|_| true) {
        if let Some(o) = r.owner {
            *owned.entry(o.node_id).or_default() += 1;
        }
    }
    let rows = cluster
        .view
        .nodes()
        .iter()
        .filter(|n| n.role != role::METASTORE)
        .map(|n| {
            let count = if n.role == role::WRITER {
                owned.get(&n.node_id).copied().unwrap_or(0)
            } else {
                copies.get(&n.node_id).copied().unwrap_or(0)
            };
            let host = n
                .http_addr
                .rsplit_once(':')
                .map_or("", |(h, _)| h)
                .to_string();
            vec![
                count.to_string(),
                host.clone(),
                host,
                n.node_id.clone(),
                n.role.clone(),
            ]
        })
        .collect();
    Ok(table(&COLS, rows, &params))
}

/// `GET /_cat/segments[/{index}]`: the segments of each shard's published commit (from
/// tantivy's `meta.json` in the commit record and the sizes of the segment's files).
pub async fn cat_segments(state: State, params: Params) -> Result<Response, ApiError> {
    segments_table(&state, "_all", &params)
}

pub async fn cat_segments_of(
    state: State,
    axum::extract::Path(index): axum::extract::Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    segments_table(&state, &index, &params)
}

fn segments_table(state: &State, expr: &str, params: &Params) -> Result<Response, ApiError> {
    const COLS: [&str; 9] = [
        "index",
        "shard",
        "prirep",
        "segment",
        "generation",
        "docs.count",
        "docs.deleted",
        "size",
        "searchable",
    ];
    let mut rows = Vec::new();
    for meta in state.searcher.resolve(expr, false)? {
        for (shard, commit) in &meta.shards {
            let parsed: Value = serde_json::from_str(&commit.tantivy_meta).unwrap_or(Value::Null);
            for seg in parsed["segments"].as_array().into_iter().flatten() {
                let id = seg["segment_id"]
                    .as_str()
                    .unwrap_or_default()
                    .replace('-', "");
                let max_doc = seg["max_doc"].as_u64().unwrap_or(0);
                let deleted = seg["deletes"]["num_deleted_docs"].as_u64().unwrap_or(0);
                let size: u64 = commit
                    .files
                    .iter()
                    .filter(|f| f.name.starts_with(&id))
                    .map(|f| f.len)
                    .sum();
                rows.push(vec![
                    meta.name.clone(),
                    shard.to_string(),
                    "p".to_string(),
                    id,
                    commit.generation.to_string(),
                    (max_doc - deleted.min(max_doc)).to_string(),
                    deleted.to_string(),
                    cat_bytes(size, params),
                    "true".to_string(),
                ]);
            }
        }
    }
    Ok(table(&COLS, rows, params))
}

/// `GET /_cat/count[/{index}]`: searchable documents (as of the last refresh).
pub async fn cat_count(state: State, params: Params) -> Result<Response, ApiError> {
    count_table(&state, "_all", &params)
}

pub async fn cat_count_of(
    state: State,
    axum::extract::Path(index): axum::extract::Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    count_table(&state, &index, &params)
}

fn count_table(state: &State, expr: &str, params: &Params) -> Result<Response, ApiError> {
    let count: u64 = state
        .searcher
        .resolve(expr, false)?
        .iter()
        .map(|m| m.doc_count())
        .sum();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let clock = format!(
        "{:02}:{:02}:{:02}",
        now / 3600 % 24,
        now / 60 % 60,
        now % 60
    );
    Ok(table(
        &["epoch", "timestamp", "count"],
        vec![vec![now.to_string(), clock, count.to_string()]],
        params,
    ))
}
