//! Aliases: `POST /_aliases`, `PUT|POST|DELETE /{index}/_alias(es)/{name}`,
//! `GET|HEAD [/{index}]/_alias(es)[/{name}]`, `GET /_cat/aliases`. The metastore applies
//! every change (one compare-and-swap per request); this module only reads requests and
//! shapes answers.

use std::collections::BTreeMap;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use bytes::Bytes;
use floe_metastore::{matches_pattern, AliasAction, AliasSpec, MetastoreError};
use serde_json::{json, Map, Value};
use tracing::instrument;

use super::cat::table;
use super::security::{authz, Caller};
use super::{empty, json_body, ApiError, Params, State};

fn list(expr: &str) -> Vec<String> {
    expr.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Applies actions; indexes a `remove_index` named are deleted through the writer (which
/// closes their shards).
async fn apply(state: &State, actions: &[AliasAction]) -> Result<Json<Value>, ApiError> {
    let deleted = state.metastore.update_aliases(actions).await?;
    for index in deleted {
        let meta = state.writer()?.delete_index(&index).await?;
        state.searcher.forget_index(&meta.uuid);
    }
    Ok(Json(json!({"acknowledged": true})))
}

/// `POST /_aliases`.
#[instrument(skip(state, body))]
pub async fn update(
    state: State,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body =
        json_body(&body)?.ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let actions = AliasAction::parse_request(&body)?;
    if let Some(p) = caller.principal() {
        authorize_actions(&state, p, &actions)?;
    }
    apply(&state, &actions).await
}

/// Each action needs its permission on every index it names (wildcards: every index they
/// match) and on the alias names: `indices:admin/aliases`, or `indices:admin/delete` for
/// `remove_index`.
fn authorize_actions(
    state: &State,
    p: &floe_security::Principal,
    actions: &[AliasAction],
) -> Result<(), ApiError> {
    const ALIASES: &str = "indices:admin/aliases";
    const DELETE: &str = "indices:admin/delete";
    let check = |action: &'static str, names: &[String]| -> Result<(), ApiError> {
        for name in names {
            authz::check_expression(&state.metastore, p, action, name, false)
                .map_err(|n| authz::denial(p, action, Some(&n)))?;
        }
        Ok(())
    };
    for action in actions {
        match action {
            AliasAction::Add {
                indexes, aliases, ..
            }
            | AliasAction::Remove {
                indexes, aliases, ..
            } => {
                check(ALIASES, indexes)?;
                for alias in aliases {
                    if !p.permissions.index_allows(ALIASES, alias) {
                        return Err(authz::denial(p, ALIASES, Some(alias)));
                    }
                }
            }
            AliasAction::RemoveIndex { indexes } => check(DELETE, indexes)?,
        }
    }
    Ok(())
}

/// `PUT|POST /{index}/_alias/{name}`: the body (optional) holds filter, routing, ....
#[instrument(skip(state, body))]
pub async fn put(
    state: State,
    Path((index, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let spec = match json_body(&body)? {
        Some(b) => AliasSpec::from_opensearch(&b)?,
        None => AliasSpec::default(),
    };
    let action = AliasAction::Add {
        indexes: list(&index),
        aliases: list(&name),
        spec,
    };
    apply(&state, &[action]).await
}

/// `DELETE /{index}/_alias/{name}`.
#[instrument(skip(state))]
pub async fn delete(
    state: State,
    Path((index, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let action = AliasAction::Remove {
        indexes: list(&index),
        aliases: list(&name),
        must_exist: true,
    };
    apply(&state, &[action]).await
}

/// Index → (alias → spec) for the indexes `index` names (all when `None`) and the aliases
/// matching `name` (all when `None`). With a `name`, indexes without a match are left out;
/// a name that is no wildcard and matches nothing is an error.
fn select(
    state: &State,
    index: Option<&str>,
    name: Option<&str>,
) -> Result<BTreeMap<String, BTreeMap<String, AliasSpec>>, ApiError> {
    let table = state.metastore.aliases();
    let indexes: Vec<String> = match index {
        Some(expr) => state
            .searcher
            .resolve(expr, false)?
            .into_iter()
            .map(|m| m.name)
            .collect(),
        None => state
            .metastore
            .list_indexes()
            .into_iter()
            .map(|m| m.name)
            .collect(),
    };
    let patterns = name.map(list);
    let wanted = |alias: &str| {
        patterns
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p == "_all" || matches_pattern(p, alias)))
    };
    let mut out = BTreeMap::new();
    for i in indexes {
        let of: BTreeMap<String, AliasSpec> = table
            .of_index(&i)
            .into_iter()
            .filter(|(a, _)| wanted(a))
            .collect();
        if patterns.is_none() || !of.is_empty() {
            out.insert(i, of);
        }
    }
    if let Some(ps) = &patterns {
        let missing: Vec<&String> = ps
            .iter()
            .filter(|p| !p.contains('*') && *p != "_all")
            .filter(|p| !out.values().any(|of| of.contains_key(p.as_str())))
            .collect();
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            return Err(MetastoreError::AliasNotFound(names.join(",")).into());
        }
    }
    Ok(out)
}

fn render(selected: BTreeMap<String, BTreeMap<String, AliasSpec>>) -> Json<Value> {
    let out: Map<String, Value> = selected
        .into_iter()
        .map(|(index, of)| {
            let aliases: Map<String, Value> = of
                .into_iter()
                .map(|(a, spec)| (a, spec.to_opensearch()))
                .collect();
            (index, json!({"aliases": aliases}))
        })
        .collect();
    Json(Value::Object(out))
}

/// `GET /_alias`, `GET /_aliases`.
pub async fn get_all(state: State) -> Result<Json<Value>, ApiError> {
    Ok(render(select(&state, None, None)?))
}

/// `GET /_alias/{name}`.
pub async fn get_named(state: State, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(render(select(&state, None, Some(&name))?))
}

/// `GET /{index}/_alias`.
pub async fn get_of_index(
    state: State,
    Path(index): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(render(select(&state, Some(&index), None)?))
}

/// `GET /{index}/_alias/{name}`.
pub async fn get_of_index_named(
    state: State,
    Path((index, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(render(select(&state, Some(&index), Some(&name))?))
}

/// `HEAD /_alias/{name}`.
pub async fn exists(state: State, Path(name): Path<String>) -> Response {
    empty(match select(&state, None, Some(&name)) {
        Ok(found) if !found.is_empty() => StatusCode::OK,
        _ => StatusCode::NOT_FOUND,
    })
}

/// `HEAD /{index}/_alias/{name}`.
pub async fn exists_of_index(
    state: State,
    Path((index, name)): Path<(String, String)>,
) -> Response {
    empty(match select(&state, Some(&index), Some(&name)) {
        Ok(found) if !found.is_empty() => StatusCode::OK,
        _ => StatusCode::NOT_FOUND,
    })
}

/// `GET /_cat/aliases`.
pub async fn cat_all(state: State, params: Params) -> Response {
    cat_table(&state, None, &params)
}

/// `GET /_cat/aliases/{name}`.
pub async fn cat_named(state: State, Path(name): Path<String>, params: Params) -> Response {
    cat_table(&state, Some(&name), &params)
}

fn cat_table(state: &State, name: Option<&str>, params: &Params) -> Response {
    const COLS: [&str; 6] = [
        "alias",
        "index",
        "filter",
        "routing.index",
        "routing.search",
        "is_write_index",
    ];
    let patterns = name.map(list);
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut rows = Vec::new();
    for (alias, of) in state.metastore.aliases().aliases {
        if patterns
            .as_ref()
            .is_some_and(|ps| !ps.iter().any(|p| matches_pattern(p, &alias)))
        {
            continue;
        }
        for (index, spec) in of {
            rows.push(vec![
                alias.clone(),
                index,
                if spec.filter.is_some() { "*" } else { "-" }.to_string(),
                dash(&spec.index_routing),
                dash(&spec.search_routing),
                spec.is_write_index
                    .map_or_else(|| "-".to_string(), |w| w.to_string()),
            ]);
        }
    }
    table(&COLS, rows, params)
}
