//! API keys (`/_security/api_key`): a key acts as the user who created it, optionally
//! limited further by its own role descriptors. Only a hash of the secret is stored.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use floe_metastore::now_millis;
use floe_security::{credentials, ApiKey, Role};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, instrument};

use super::Caller;
use crate::http::{ApiError, Params, State};

/// The body of `POST /_security/api_key`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    #[serde(default)]
    expiration: Option<String>,
    #[serde(default)]
    role_descriptors: Option<BTreeMap<String, Role>>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// Whether the caller may see and revoke every user's keys (not only their own).
fn manages_all_keys(caller: &Caller) -> bool {
    caller.principal().is_none_or(|p| {
        p.permissions
            .cluster_allows("cluster:admin/opendistro_security/apikey/manage")
    })
}

/// `POST /_security/api_key`: a key acting as the caller, optionally limited further.
#[instrument(skip(state, caller, body))]
pub async fn create(
    state: State,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Some(p) = caller.principal() else {
        return Err(ApiError::bad_request(
            "API keys need security to be turned on",
        ));
    };
    if p.api_key.is_some() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "security_exception",
            "an API key cannot create API keys",
        ));
    }
    let req: NewKey = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid API key request: {e}")))?;
    let _ = req.metadata;
    if req.name.is_empty() || req.name.len() > 256 {
        return Err(ApiError::bad_request("[name] must be 1 to 256 characters"));
    }
    let now = now_millis();
    let expires_ms = match &req.expiration {
        None => None,
        Some(e) => Some(
            now + floe_proto::model::parse_time_value(e)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("failed to parse [{e}] as a time value"))
                })?
                .as_millis() as i64,
        ),
    };
    let (id, secret, encoded) = credentials::new_api_key();
    let key = ApiKey {
        name: req.name.clone(),
        hash: credentials::secret_hash(&secret),
        owner: p.user.clone(),
        created_ms: now,
        expires_ms,
        invalidated: false,
        role_descriptors: req.role_descriptors,
    };
    state
        .metastore
        .update_security(|t| {
            t.api_keys.insert(id.clone(), key.clone());
            Ok(())
        })
        .await?;
    info!(id, owner = p.user, "API key created");
    let mut out = json!({"id": id, "name": req.name, "api_key": secret, "encoded": encoded});
    if let Some(e) = expires_ms {
        out["expiration"] = json!(e);
    }
    Ok(Json(out).into_response())
}

/// `GET /_security/api_key?id=&name=&username=`: keys (the caller's own, unless they
/// manage every key).
pub async fn list(state: State, Extension(caller): Extension<Caller>, params: Params) -> Response {
    let all = manages_all_keys(&caller);
    let me = caller.principal().map(|p| p.user.clone());
    let table = state.metastore.security().0;
    let keys: Vec<Value> = table
        .api_keys
        .iter()
        .filter(|(_, k)| all || Some(&k.owner) == me.as_ref())
        .filter(|(id, _)| params.get("id").is_none_or(|want| want == *id))
        .filter(|(_, k)| params.get("name").is_none_or(|want| *want == k.name))
        .filter(|(_, k)| params.get("username").is_none_or(|want| *want == k.owner))
        .map(|(id, k)| {
            json!({"id": id, "name": k.name, "creation": k.created_ms,
                "expiration": k.expires_ms, "invalidated": k.invalidated,
                "username": k.owner, "realm": "internal"})
        })
        .collect();
    Json(json!({ "api_keys": keys })).into_response()
}

#[derive(Deserialize)]
struct Revoke {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// `DELETE /_security/api_key` with `{"ids": [...]}` or `{"name": ...}`: revokes keys.
pub async fn revoke(
    state: State,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: Revoke = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))?;
    let mut ids = req.ids;
    ids.extend(req.id);
    if ids.is_empty() && req.name.is_none() {
        return Err(ApiError::bad_request(
            "one of [ids], [id] or [name] is required",
        ));
    }
    let all = manages_all_keys(&caller);
    let me = caller.principal().map(|p| p.user.clone());
    let (revoked, before) = state
        .metastore
        .update_security(|t| {
            let mut revoked = Vec::new();
            let mut before = Vec::new();
            for (id, k) in t.api_keys.iter_mut() {
                let named = ids.contains(id) || req.name.as_ref() == Some(&k.name);
                if !named || !(all || Some(&k.owner) == me.as_ref()) {
                    continue;
                }
                if k.invalidated {
                    before.push(id.clone());
                } else {
                    k.invalidated = true;
                    revoked.push(id.clone());
                }
            }
            Ok((revoked, before))
        })
        .await?;
    Ok(Json(json!({"invalidated_api_keys": revoked,
        "previously_invalidated_api_keys": before, "error_count": 0}))
    .into_response())
}
