//! Index administration: create, get, exists, delete, mappings, settings, refresh.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use bytes::Bytes;
use floe_proto::mapping::Mappings;
use floe_proto::IndexMeta;
use serde_json::{json, Map, Value};
use tracing::instrument;

use super::cluster::COMPAT_VERSION;
use super::{empty, json_body, ApiError, Params, State};

fn settings_json(m: &IndexMeta) -> Value {
    let mut out = json!({"index": {
        "number_of_shards": m.settings.number_of_shards.to_string(),
        "number_of_replicas": m.settings.number_of_replicas.to_string(),
        "refresh_interval": m.settings.refresh_interval,
        "translog": {"durability": m.settings.translog_durability, "sync_interval": m.settings.translog_sync_interval},
        "floe": {"prefetch": m.settings.prefetch.to_string()},
        "uuid": m.uuid,
        "creation_date": m.creation_date.to_string(),
        "provided_name": m.name,
        "version": {"created": COMPAT_VERSION},
    }});
    if let Some(a) = &m.settings.rollover_alias {
        out["index"]["plugins"] = json!({"index_state_management": {"rollover_alias": a}});
    }
    if m.settings.blocks_write {
        out["index"]["blocks"] = json!({"write": "true"});
    }
    if let Some(p) = m.settings.priority {
        out["index"]["priority"] = json!(p.to_string());
    }
    if m.settings.hidden {
        out["index"]["hidden"] = json!("true");
    }
    if let Some(w) = m.settings.max_result_window {
        out["index"]["max_result_window"] = json!(w.to_string());
    }
    out
}

fn existing(state: &State, expr: &str) -> Result<Vec<IndexMeta>, ApiError> {
    Ok(state.searcher.resolve(expr, false)?)
}

fn existing_names(state: &State, expr: &str) -> Result<Vec<String>, ApiError> {
    Ok(existing(state, expr)?.into_iter().map(|m| m.name).collect())
}

async fn refresh_names(state: &State, names: &[String]) -> Result<Json<Value>, ApiError> {
    state.writer()?.refresh_everywhere(names).await?;
    Ok(Json(
        json!({"_shards": {"total": names.len(), "successful": names.len(), "failed": 0}}),
    ))
}

#[instrument(skip(state, body))]
pub async fn create(
    state: State,
    Path(index): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(&body)?.unwrap_or(json!({}));
    let meta = state.writer()?.create_index(&index, &body).await?;
    Ok(Json(
        json!({"acknowledged": true, "shards_acknowledged": true, "index": meta.name}),
    ))
}

pub async fn get(state: State, Path(index): Path<String>) -> Result<Json<Value>, ApiError> {
    let mut out = Map::new();
    let aliases = state.metastore.aliases();
    for m in existing(&state, &index)? {
        let of: Map<String, Value> = aliases
            .of_index(&m.name)
            .into_iter()
            .map(|(a, spec)| (a, spec.to_opensearch()))
            .collect();
        out.insert(m.name.clone(), json!({"aliases": of, "mappings": m.mappings.to_opensearch(), "settings": settings_json(&m)}));
    }
    Ok(Json(Value::Object(out)))
}

pub async fn exists(state: State, Path(index): Path<String>) -> Response {
    let found = state
        .searcher
        .resolve(&index, false)
        .is_ok_and(|v| !v.is_empty());
    empty(if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    })
}

#[instrument(skip(state))]
pub async fn delete(state: State, Path(index): Path<String>) -> Result<Json<Value>, ApiError> {
    // Deleting goes by index names only: an alias would delete whatever it points at.
    let aliases = state.metastore.aliases();
    for part in index.split(',').map(str::trim) {
        if aliases.aliases.contains_key(part) && state.metastore.get_index(part).is_none() {
            return Err(ApiError::bad_request(format!(
                "The provided expression [{part}] matches an alias, specify the corresponding concrete indices instead."
            )));
        }
    }
    for m in state.searcher.resolve_indexes_only(&index)? {
        state.writer()?.delete_index(&m.name).await?;
        state.searcher.forget_index(&m.uuid);
    }
    Ok(Json(json!({"acknowledged": true})))
}

pub async fn get_mapping(state: State, Path(index): Path<String>) -> Result<Json<Value>, ApiError> {
    let mut out = Map::new();
    for m in existing(&state, &index)? {
        out.insert(
            m.name.clone(),
            json!({"mappings": m.mappings.to_opensearch()}),
        );
    }
    Ok(Json(Value::Object(out)))
}

pub async fn get_mapping_all(state: State) -> Json<Value> {
    let out: Map<String, Value> = state
        .metastore
        .list_indexes()
        .into_iter()
        .map(|m| {
            (
                m.name.clone(),
                json!({"mappings": m.mappings.to_opensearch()}),
            )
        })
        .collect();
    Json(Value::Object(out))
}

/// `PUT /{index}/_mapping`: adds fields; changing the type of an existing field is refused.
#[instrument(skip(state, body))]
pub async fn put_mapping(
    state: State,
    Path(index): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body =
        json_body(&body)?.ok_or_else(|| ApiError::bad_request("mapping source is required"))?;
    let new = Mappings::from_opensearch(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "mapper_parsing_exception",
            e.to_string(),
        )
    })?;
    for m in existing(&state, &index)? {
        for (path, fm) in &new.fields {
            if let Some(reason) = m.mappings.get(path).and_then(|old| old.conflict(path, fm)) {
                return Err(ApiError::bad_request(reason));
            }
        }
        let sets_dynamic = body.get("dynamic").is_some();
        state
            .metastore
            .update_index(&m.name, |meta| {
                meta.mappings.put(&new, sets_dynamic);
                Ok(())
            })
            .await?;
    }
    Ok(Json(json!({"acknowledged": true})))
}

pub async fn get_settings(
    state: State,
    Path(index): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    settings_answer(&state, &index, None, &params)
}

/// `GET /{index}/_settings/{name}`: only the settings `name` (comma-separated, wildcards,
/// with or without `index.`) names.
pub async fn get_settings_named(
    state: State,
    Path((index, name)): Path<(String, String)>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    settings_answer(&state, &index, Some(&name), &params)
}

/// The `_settings` answer: nested, or `flat_settings=true` as dotted keys; with
/// `include_defaults=true` the defaults Floe applies are listed too.
fn settings_answer(
    state: &State,
    index: &str,
    names: Option<&str>,
    params: &Params,
) -> Result<Json<Value>, ApiError> {
    let flat_out = params.get("flat_settings").is_some_and(|v| v == "true");
    let wanted = |key: &str| {
        names.is_none_or(|n| {
            n.split(',').any(|p| {
                let p = p.trim();
                floe_metastore::matches_pattern(p, key)
                    || floe_metastore::matches_pattern(&format!("index.{p}"), key)
            })
        })
    };
    let shape = |v: &Value| -> Value {
        let flat: Map<String, Value> = floe_metastore::flatten_keys(v)
            .into_iter()
            .filter(|(k, _)| wanted(k))
            .collect();
        if flat_out {
            Value::Object(flat)
        } else {
            unflatten(&flat)
        }
    };
    let mut out = Map::new();
    for m in existing(state, index)? {
        let settings = shape(&settings_json(&m));
        if names.is_some() && settings.as_object().is_some_and(Map::is_empty) {
            continue;
        }
        let mut entry = json!({ "settings": settings });
        if params.get("include_defaults").is_some_and(|v| v == "true") {
            entry["defaults"] = shape(&json!({"index": {"max_result_window": "10000",
                "hidden": "false", "blocks": {"write": "false"}}}));
        }
        out.insert(m.name.clone(), entry);
    }
    Ok(Json(Value::Object(out)))
}

/// Dotted keys back into nested objects.
fn unflatten(flat: &Map<String, Value>) -> Value {
    let mut root = Map::new();
    for (key, v) in flat {
        let parts: Vec<&str> = key.split('.').collect();
        let mut node = &mut root;
        for p in &parts[..parts.len() - 1] {
            node = node
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("objects on the way");
        }
        node.insert(parts[parts.len() - 1].to_string(), v.clone());
    }
    Value::Object(root)
}

/// `PUT /{index}/_settings`: the dynamic settings (`number_of_replicas`,
/// `refresh_interval`, `floe.prefetch`); `number_of_shards` is fixed at creation.
#[instrument(skip(state, body))]
pub async fn put_settings(
    state: State,
    Path(index): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(&body)?.unwrap_or(json!({}));
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "illegal_argument_exception", m);
    let root = body.get("settings").unwrap_or(&body);
    // `{"index": {"floe": {"prefetch": v}}}`, `{"index.floe.prefetch": v}`: one key each.
    let flat = floe_metastore::flatten_keys(root);
    let mut replicas: Option<u32> = None;
    let mut refresh: Option<String> = None;
    let mut prefetch: Option<bool> = None;
    let mut rollover_alias: Option<Option<String>> = None;
    let mut blocks_write: Option<bool> = None;
    let mut priority: Option<Option<i64>> = None;
    let mut max_window: Option<Option<u64>> = None;
    let mut hidden: Option<bool> = None;
    for (key, value) in flat {
        let key = key.strip_prefix("index.").unwrap_or(&key).to_string();
        let text = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match key.as_str() {
            "number_of_replicas" => {
                replicas = Some(
                    text.parse()
                        .ok()
                        .filter(|n: &u32| *n <= 64)
                        .ok_or_else(|| {
                            bad(format!(
                            "Failed to parse value [{text}] for setting [index.number_of_replicas]"
                        ))
                        })?,
                )
            }
            "refresh_interval" => {
                if text != "-1" && floe_proto::model::parse_time_value(&text).is_none() {
                    return Err(bad(format!(
                        "failed to parse setting [index.refresh_interval] with value [{text}] as a time value"
                    )));
                }
                refresh = Some(text);
            }
            "floe.prefetch" => {
                prefetch = Some(floe_writer::parse_bool_setting(&value).ok_or_else(|| {
                    bad(format!(
                        "Failed to parse value [{text}] as only [true] or [false] are allowed for setting [index.floe.prefetch]"
                    ))
                })?)
            }
            "plugins.index_state_management.rollover_alias" => {
                rollover_alias = Some(value.as_str().map(str::to_string))
            }
            "blocks.write" => {
                blocks_write = Some(if value.is_null() {
                    false
                } else {
                    floe_writer::parse_bool_setting(&value).ok_or_else(|| {
                        bad(format!(
                            "Failed to parse value [{text}] as only [true] or [false] are allowed for setting [index.blocks.write]"
                        ))
                    })?
                })
            }
            "priority" => {
                priority = Some(match &value {
                    Value::Null => None,
                    _ => Some(text.parse().map_err(|_| {
                        bad(format!("Failed to parse value [{text}] for setting [index.priority]"))
                    })?),
                })
            }
            "hidden" => {
                hidden = Some(floe_writer::parse_bool_setting(&value).ok_or_else(|| {
                    bad(format!(
                        "Failed to parse value [{text}] as only [true] or [false] are allowed for setting [index.hidden]"
                    ))
                })?)
            }
            "max_result_window" => {
                max_window = Some(match &value {
                    Value::Null => None,
                    _ => Some(text.parse().ok().filter(|n: &u64| *n >= 1).ok_or_else(|| {
                        bad(format!(
                            "Failed to parse value [{text}] for setting [index.max_result_window] must be >= 1"
                        ))
                    })?),
                })
            }
            "number_of_shards" => {
                return Err(bad(format!(
                    "final index setting [index.number_of_shards], not updateable on [{index}]"
                )))
            }
            other => {
                return Err(bad(format!(
                    "unknown setting [index.{other}] or not updateable"
                )))
            }
        }
    }
    for m in existing(&state, &index)? {
        state
            .metastore
            .update_index(&m.name, |meta| {
                if let Some(r) = replicas {
                    meta.settings.number_of_replicas = r;
                }
                if let Some(r) = &refresh {
                    meta.settings.refresh_interval = r.clone();
                }
                if let Some(p) = prefetch {
                    meta.settings.prefetch = p;
                }
                if let Some(a) = &rollover_alias {
                    meta.settings.rollover_alias = a.clone();
                }
                if let Some(b) = blocks_write {
                    meta.settings.blocks_write = b;
                }
                if let Some(p) = priority {
                    meta.settings.priority = p;
                }
                if let Some(w) = max_window {
                    meta.settings.max_result_window = w;
                }
                if let Some(h) = hidden {
                    meta.settings.hidden = h;
                }
                Ok(())
            })
            .await?;
    }
    Ok(Json(json!({"acknowledged": true})))
}

#[instrument(skip(state))]
pub async fn refresh(state: State, Path(index): Path<String>) -> Result<Json<Value>, ApiError> {
    refresh_names(&state, &existing_names(&state, &index)?).await
}

/// `POST /_forcemerge`: every index.
pub async fn force_merge_all(state: State, params: Params) -> Result<Json<Value>, ApiError> {
    force_merge(state, Path("_all".to_string()), params).await
}

/// `POST /{index}/_forcemerge[?max_num_segments=N]` (default 1 segment per shard).
#[instrument(skip(state, params))]
pub async fn force_merge(
    state: State,
    Path(index): Path<String>,
    params: super::Params,
) -> Result<Json<Value>, ApiError> {
    let max_segments = match params.get("max_num_segments") {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| ApiError::bad_request(format!("invalid max_num_segments [{v}]")))?,
        None => 1,
    };
    let names = existing_names(&state, &index)?;
    let shards = state.writer()?.force_merge(&names, max_segments).await?;
    Ok(Json(
        json!({"_shards": {"total": shards, "successful": shards, "failed": 0}}),
    ))
}

pub async fn refresh_all(state: State) -> Result<Json<Value>, ApiError> {
    let names: Vec<String> = state
        .metastore
        .list_indexes()
        .into_iter()
        .map(|m| m.name)
        .collect();
    refresh_names(&state, &names).await
}

/// `POST /{alias}/_rollover[/{new_index}]` (`?dry_run=true` only checks the conditions).
#[instrument(skip(state, params, body))]
pub async fn rollover(
    state: State,
    Path(alias): Path<String>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    rollover_to(state, alias, None, params, body).await
}

/// `POST /{alias}/_rollover/{new_index}`.
#[instrument(skip(state, params, body))]
pub async fn rollover_named(
    state: State,
    Path((alias, new_index)): Path<(String, String)>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    rollover_to(state, alias, Some(new_index), params, body).await
}

async fn rollover_to(
    state: State,
    alias: String,
    new_index: Option<String>,
    params: Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(&body)?;
    let dry_run = params.get("dry_run").is_some_and(|v| v != "false");
    let req = floe_writer::rollover::RolloverRequest::parse(new_index, body.as_ref(), dry_run)?;
    Ok(Json(state.writer()?.rollover(&alias, &req).await?))
}

/// `PUT /{index}/_block/{block}`: `write` (and `read_only`, which implies it) sets
/// `index.blocks.write`; `read`/`metadata` blocks are not supported (400).
#[instrument(skip(state))]
pub async fn add_block(
    state: State,
    Path((index, block)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if !matches!(block.as_str(), "write" | "read_only") {
        return Err(ApiError::bad_request(format!(
            "block [{block}] is not supported: Floe supports [write] and [read_only]"
        )));
    }
    let indices: Vec<Value> = set_on_indexes(&state, &index, |s| s.blocks_write = true)
        .await?
        .into_iter()
        .map(|name| json!({"name": name, "blocked": true}))
        .collect();
    Ok(Json(
        json!({"acknowledged": true, "shards_acknowledged": true, "indices": indices}),
    ))
}

/// `POST /{index}/_close` and `/_open`: a closed index refuses searches and writes
/// (`index_closed_exception`) and wildcards skip it; its data stays in the bucket as it is.
async fn set_closed(state: &State, expr: &str, closed: bool) -> Result<Vec<String>, ApiError> {
    set_on_indexes(state, expr, |s| s.closed = closed).await
}

/// Changes one setting of every index `expr` names (names and wildcards, not aliases);
/// returns their names.
async fn set_on_indexes(
    state: &State,
    expr: &str,
    change: impl Fn(&mut floe_proto::IndexSettings),
) -> Result<Vec<String>, ApiError> {
    let mut names = Vec::new();
    for m in state.searcher.resolve_indexes_only(expr)? {
        state
            .metastore
            .update_index(&m.name, |meta| {
                change(&mut meta.settings);
                Ok(())
            })
            .await?;
        names.push(m.name);
    }
    Ok(names)
}

#[instrument(skip(state))]
pub async fn close(state: State, Path(index): Path<String>) -> Result<Json<Value>, ApiError> {
    let names = set_closed(&state, &index, true).await?;
    let indices: serde_json::Map<String, Value> = names
        .into_iter()
        .map(|n| (n, json!({"closed": true})))
        .collect();
    Ok(Json(
        json!({"acknowledged": true, "shards_acknowledged": true, "indices": indices}),
    ))
}

#[instrument(skip(state))]
pub async fn open(state: State, Path(index): Path<String>) -> Result<Json<Value>, ApiError> {
    set_closed(&state, &index, false).await?;
    Ok(Json(
        json!({"acknowledged": true, "shards_acknowledged": true}),
    ))
}

/// `POST /{index}/_flush`: everything acknowledged is in the bucket already; a flush
/// publishes what is not searchable yet (as a refresh does).
#[instrument(skip(state))]
pub async fn flush(state: State, Path(index): Path<String>) -> Result<Json<Value>, ApiError> {
    refresh_names(&state, &existing_names(&state, &index)?).await
}

/// `GET /_resolve/index/{name}`: what an expression names — indexes (with their aliases)
/// and aliases (with their indexes).
pub async fn resolve_index(
    state: State,
    Path(expr): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let table = state.metastore.aliases();
    let indexes = state.searcher.resolve(&expr, true)?;
    let mut alias_names: Vec<String> = Vec::new();
    for part in expr.split(',').map(str::trim) {
        for a in table.aliases.keys() {
            if floe_metastore::matches_pattern(part, a) && !alias_names.contains(a) {
                alias_names.push(a.clone());
            }
        }
    }
    let direct: Vec<Value> = indexes
        .iter()
        .filter(|m| {
            expr.split(',')
                .map(str::trim)
                .any(|p| floe_metastore::matches_pattern(p, &m.name) || p == "_all")
        })
        .map(|m| {
            let aliases: Vec<String> = table.of_index(&m.name).into_keys().collect();
            let mut v = json!({"name": m.name, "attributes": ["open"]});
            if !aliases.is_empty() {
                v["aliases"] = json!(aliases);
            }
            v
        })
        .collect();
    let aliases: Vec<Value> = alias_names
        .iter()
        .map(|a| {
            let of: Vec<&String> = table.aliases[a].keys().collect();
            json!({"name": a, "indices": of})
        })
        .collect();
    Ok(Json(
        json!({"indices": direct, "aliases": aliases, "data_streams": []}),
    ))
}
