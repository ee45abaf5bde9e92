//! Index templates: composable (`/_index_template`), component (`/_component_template`)
//! and legacy (`/_template`). The metastore keeps and applies them; this module reads
//! requests, checks that a template's settings, mappings and aliases would create a valid
//! index, and shapes answers.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use bytes::Bytes;
use floe_metastore::templates::TemplateBody;
use floe_metastore::{
    matches_pattern, AliasSpec, ComponentTemplate, IndexTemplate, LegacyTemplate, MetastoreError,
    TemplateTable,
};
use serde_json::{json, Map, Value};
use tracing::instrument;

use super::{empty, json_body, ApiError, Params, State};

/// The three kinds, for the handlers they share.
#[derive(Clone, Copy)]
enum Kind {
    Composable,
    Component,
    Legacy,
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.starts_with('_')
        || name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, ',' | '*' | '"' | '\\' | '/' | '?'))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_index_template_exception",
            format!("invalid template name [{name}]: must not be empty, start with '_', or contain whitespace, ',', '*', '\"', '\\', '/' or '?'"),
        ));
    }
    Ok(())
}

/// Would these settings, mappings and aliases create a valid index?
fn validate_body(body: &TemplateBody) -> Result<(), ApiError> {
    floe_writer::parse_create_body(&body.to_opensearch())?;
    for spec in body.aliases.values() {
        AliasSpec::from_opensearch(spec)?;
    }
    Ok(())
}

fn names(table: &TemplateTable, kind: Kind) -> Vec<String> {
    match kind {
        Kind::Composable => table.index_templates.keys().cloned().collect(),
        Kind::Component => table.component_templates.keys().cloned().collect(),
        Kind::Legacy => table.legacy.keys().cloned().collect(),
    }
}

/// The names `expr` selects (all when `None`); a name that is no wildcard and does not
/// exist is a 404.
fn select(table: &TemplateTable, kind: Kind, expr: Option<&str>) -> Result<Vec<String>, ApiError> {
    let all = names(table, kind);
    let Some(expr) = expr else { return Ok(all) };
    let mut out = Vec::new();
    for p in expr.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let found: Vec<&String> = all.iter().filter(|n| matches_pattern(p, n)).collect();
        if found.is_empty() && !p.contains('*') {
            return Err(not_found(p));
        }
        out.extend(found.into_iter().cloned());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "resource_not_found_exception",
        MetastoreError::TemplateNotFound(name.to_string()).to_string(),
    )
}

fn render(table: &TemplateTable, kind: Kind, selected: Vec<String>) -> Value {
    match kind {
        Kind::Composable => json!({"index_templates": selected.iter().map(|n| json!({
            "name": n, "index_template": table.index_templates[n].to_opensearch()})).collect::<Vec<_>>()}),
        Kind::Component => json!({"component_templates": selected.iter().map(|n| json!({
            "name": n, "component_template": table.component_templates[n].to_opensearch()})).collect::<Vec<_>>()}),
        Kind::Legacy => Value::Object(
            selected
                .iter()
                .map(|n| (n.clone(), table.legacy[n].to_opensearch()))
                .collect::<Map<String, Value>>(),
        ),
    }
}

async fn put(
    state: &State,
    kind: Kind,
    name: &str,
    params: &Params,
    body: &Bytes,
) -> Result<Json<Value>, ApiError> {
    validate_name(name)?;
    let body = json_body(body)?.ok_or_else(|| ApiError::bad_request("request body is required"))?;
    let create_only = params.get("create").is_some_and(|v| v == "true");
    let exists = |t: &TemplateTable| names(t, kind).iter().any(|n| n == name);
    let already = |t: &TemplateTable| -> Result<(), MetastoreError> {
        if create_only && exists(t) {
            return Err(MetastoreError::Rejected(format!(
                "index template [{name}] already exists"
            )));
        }
        Ok(())
    };
    match kind {
        Kind::Composable => {
            let t = IndexTemplate::from_opensearch(&body)?;
            validate_body(&t.template)?;
            state
                .metastore
                .update_templates(|table| {
                    already(table)?;
                    table.put_index_template(name, t.clone())
                })
                .await?;
        }
        Kind::Component => {
            let t = ComponentTemplate::from_opensearch(&body)?;
            validate_body(&t.template)?;
            state
                .metastore
                .update_templates(|table| {
                    already(table)?;
                    table
                        .component_templates
                        .insert(name.to_string(), t.clone());
                    Ok(())
                })
                .await?;
        }
        Kind::Legacy => {
            let t = LegacyTemplate::from_opensearch(&body)?;
            validate_body(&t.template)?;
            state
                .metastore
                .update_templates(|table| {
                    already(table)?;
                    table.legacy.insert(name.to_string(), t.clone());
                    Ok(())
                })
                .await?;
        }
    }
    Ok(Json(json!({"acknowledged": true})))
}

async fn delete(state: &State, kind: Kind, name: &str) -> Result<Json<Value>, ApiError> {
    let table = state.metastore.templates();
    let selected = select(&table, kind, Some(name))?;
    if selected.is_empty() {
        return Err(not_found(name));
    }
    state
        .metastore
        .update_templates(|t| {
            for n in &selected {
                match kind {
                    Kind::Composable => {
                        t.index_templates.remove(n);
                    }
                    Kind::Component => t.delete_component_template(n)?,
                    Kind::Legacy => {
                        t.legacy.remove(n);
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| match e {
            MetastoreError::TemplateNotFound(n) => not_found(&n),
            other => other.into(),
        })?;
    Ok(Json(json!({"acknowledged": true})))
}

fn get(state: &State, kind: Kind, name: Option<&str>) -> Result<Json<Value>, ApiError> {
    let table = state.metastore.templates();
    let selected = select(&table, kind, name)?;
    Ok(Json(render(&table, kind, selected)))
}

fn head(state: &State, kind: Kind, name: &str) -> Response {
    let table = state.metastore.templates();
    empty(match select(&table, kind, Some(name)) {
        Ok(found) if !found.is_empty() => StatusCode::OK,
        _ => StatusCode::NOT_FOUND,
    })
}

/// Handlers of one kind, as axum routes take them.
macro_rules! template_handlers {
    ($kind:expr, $put:ident, $get_all:ident, $get:ident, $head:ident, $delete:ident) => {
        #[instrument(skip(state, params, body))]
        pub async fn $put(
            state: State,
            Path(name): Path<String>,
            params: Params,
            body: Bytes,
        ) -> Result<Json<Value>, ApiError> {
            put(&state, $kind, &name, &params, &body).await
        }

        pub async fn $get_all(state: State) -> Result<Json<Value>, ApiError> {
            get(&state, $kind, None)
        }

        pub async fn $get(state: State, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
            get(&state, $kind, Some(&name))
        }

        pub async fn $head(state: State, Path(name): Path<String>) -> Response {
            head(&state, $kind, &name)
        }

        #[instrument(skip(state))]
        pub async fn $delete(
            state: State,
            Path(name): Path<String>,
        ) -> Result<Json<Value>, ApiError> {
            delete(&state, $kind, &name).await
        }
    };
}

template_handlers!(
    Kind::Composable,
    put_index_template,
    get_index_templates,
    get_index_template,
    head_index_template,
    delete_index_template
);
template_handlers!(
    Kind::Component,
    put_component_template,
    get_component_templates,
    get_component_template,
    head_component_template,
    delete_component_template
);
template_handlers!(
    Kind::Legacy,
    put_legacy_template,
    get_legacy_templates,
    get_legacy_template,
    head_legacy_template,
    delete_legacy_template
);
