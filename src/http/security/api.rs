//! The security management API in the shape of OpenSearch's security plugin
//! (`/_plugins/_security/api/{internalusers,roles,rolesmapping}`, `authinfo`, `health`;
//! API keys are in `api_keys.rs`). Every change is one compare-and-swap of the security
//! record; every node applies it within a poll interval of the metastore's change log.

use std::collections::BTreeMap;

use axum::extract::{ConnectInfo, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use floe_metastore::MetastoreError;
use floe_security::model::{reserved_role, RESERVED_ROLES};
use floe_security::{password, Role, RoleMapping, SecurityTable, User};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::{info, instrument};

use super::Caller;
use crate::http::{ApiError, State};

/// The plugin's own reply shape: `{"status": "...", "message": "..."}`.
fn reply(status: StatusCode, message: impl Into<String>) -> Response {
    let word = match status {
        StatusCode::OK => "OK",
        StatusCode::CREATED => "CREATED",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        _ => "BAD_REQUEST",
    };
    (
        status,
        Json(json!({"status": word, "message": message.into()})),
    )
        .into_response()
}

fn bad(message: impl Into<String>) -> Response {
    reply(StatusCode::BAD_REQUEST, message)
}

/// The three kinds of records the API manages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Users,
    Roles,
    Mappings,
}

impl Kind {
    fn of(resource: &str) -> Option<Kind> {
        match resource {
            "internalusers" => Some(Kind::Users),
            "roles" => Some(Kind::Roles),
            "rolesmapping" => Some(Kind::Mappings),
            _ => None,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Users => "User",
            Kind::Roles => "Role",
            Kind::Mappings => "Role mapping",
        }
    }
}

/// A user as the API shows it: never its hash.
fn user_view(u: &User) -> Value {
    let mut v = json!({
        "hash": "", "reserved": false, "hidden": false, "static": false,
        "backend_roles": u.backend_roles, "attributes": u.attributes,
        "opendistro_security_roles": u.opendistro_security_roles,
    });
    if let Some(d) = &u.description {
        v["description"] = json!(d);
    }
    v
}

fn role_view(r: &Role, reserved: bool) -> Value {
    let mut v = serde_json::to_value(r).expect("serializable");
    v["reserved"] = json!(reserved);
    v["hidden"] = json!(false);
    v["static"] = json!(reserved);
    v
}

fn mapping_view(m: &RoleMapping) -> Value {
    let mut v = serde_json::to_value(m).expect("serializable");
    v["reserved"] = json!(false);
    v["hidden"] = json!(false);
    v
}

/// Every record of a kind, as the API shows them.
fn views(table: &SecurityTable, kind: Kind) -> Map<String, Value> {
    match kind {
        Kind::Users => table
            .users
            .iter()
            .map(|(n, u)| (n.clone(), user_view(u)))
            .collect(),
        Kind::Roles => {
            let mut out: Map<String, Value> = RESERVED_ROLES
                .iter()
                .filter_map(|n| reserved_role(n).map(|r| (n.to_string(), role_view(&r, true))))
                .collect();
            out.extend(
                table
                    .roles
                    .iter()
                    .map(|(n, r)| (n.clone(), role_view(r, false))),
            );
            out
        }
        Kind::Mappings => table
            .mappings
            .iter()
            .map(|(n, m)| (n.clone(), mapping_view(m)))
            .collect(),
    }
}

/// `GET /_plugins/_security/api/{resource}`.
pub async fn list(state: State, Path(resource): Path<String>) -> Response {
    let Some(kind) = Kind::of(&resource) else {
        return bad(format!("unknown resource [{resource}]"));
    };
    Json(Value::Object(views(&state.metastore.security().0, kind))).into_response()
}

/// `GET /_plugins/_security/api/{resource}/{name}`.
pub async fn get(state: State, Path((resource, name)): Path<(String, String)>) -> Response {
    let Some(kind) = Kind::of(&resource) else {
        return bad(format!("unknown resource [{resource}]"));
    };
    match views(&state.metastore.security().0, kind).remove(&name) {
        Some(v) => Json(json!({ name: v })).into_response(),
        None => reply(
            StatusCode::NOT_FOUND,
            format!("{} {name} not found.", kind.noun()),
        ),
    }
}

/// The body of `PUT internalusers/{name}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    hash: Option<String>,
    #[serde(default)]
    backend_roles: Vec<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    opendistro_security_roles: Vec<String>,
    #[serde(default)]
    description: Option<String>,
    // Shown by GET; accepted back (PATCH round trips) and ignored.
    #[serde(default, rename = "reserved")]
    _reserved: Option<Value>,
    #[serde(default, rename = "hidden")]
    _hidden: Option<Value>,
    #[serde(default, rename = "static")]
    _static: Option<Value>,
}

/// A record to store, checked and (for users) with its password hashed, built before the
/// compare-and-swap so that a retried swap does not hash again.
enum Record {
    /// A user; `None` hash keeps the current one.
    User(Option<String>, User),
    Role(Role),
    Mapping(RoleMapping),
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.chars().any(|c| c.is_control() || c == '/' || c == ':')
}

/// Parses and checks a record body of `kind` named `name`.
fn record(kind: Kind, name: &str, body: Value, exists: bool) -> Result<Record, String> {
    if !is_valid_name(name) {
        return Err(format!("Invalid name [{name}]"));
    }
    match kind {
        Kind::Users => {
            let b: UserBody = serde_json::from_value(body).map_err(|e| e.to_string())?;
            // GET shows `"hash": ""`: a record sent back unchanged keeps its password.
            let given_hash = b.hash.filter(|h| !h.is_empty());
            let hash = match (b.password, given_hash) {
                (Some(p), _) => {
                    if let Some(why) = password::weakness(name, &p) {
                        return Err(format!("Weak password: {why}"));
                    }
                    Some(password::hash(&p))
                }
                (None, Some(h)) if h.starts_with("$argon2") => Some(h),
                (None, Some(_)) => {
                    return Err("only argon2 password hashes are accepted in [hash]".into())
                }
                (None, None) if !exists => return Err(
                    "Please specify either 'hash' or 'password' when creating a new internal user."
                        .into(),
                ),
                (None, None) => None,
            };
            Ok(Record::User(
                hash,
                User {
                    hash: String::new(),
                    backend_roles: b.backend_roles,
                    attributes: b.attributes,
                    opendistro_security_roles: b.opendistro_security_roles,
                    description: b.description,
                },
            ))
        }
        Kind::Roles => {
            let mut body = body;
            strip_flags(&mut body);
            let role: Role = serde_json::from_value(body).map_err(|e| e.to_string())?;
            Ok(Record::Role(role))
        }
        Kind::Mappings => {
            let mut body = body;
            strip_flags(&mut body);
            let m: RoleMapping = serde_json::from_value(body).map_err(|e| e.to_string())?;
            Ok(Record::Mapping(m))
        }
    }
}

/// [`record`] off the async workers (hashing a password takes tens of milliseconds); a
/// refusal is the 400 to answer.
async fn build(kind: Kind, name: &str, body: Value, exists: bool) -> Result<Record, Response> {
    let name = name.to_string();
    match tokio::task::spawn_blocking(move || record(kind, &name, body, exists)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(why)) => Err(bad(why)),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            e.to_string(),
        )
        .into_response()),
    }
}

/// Drops the read-only flags GET shows, so a GET body can be PUT back.
fn strip_flags(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        for k in ["reserved", "hidden", "static"] {
            o.remove(k);
        }
    }
}

fn reserved_refusal(kind: Kind, name: &str) -> Option<Response> {
    (kind == Kind::Roles && reserved_role(name).is_some()).then(|| {
        reply(
            StatusCode::FORBIDDEN,
            format!("Resource '{name}' is reserved."),
        )
    })
}

fn exists(table: &SecurityTable, kind: Kind, name: &str) -> bool {
    match kind {
        Kind::Users => table.users.contains_key(name),
        Kind::Roles => table.roles.contains_key(name),
        Kind::Mappings => table.mappings.contains_key(name),
    }
}

/// Stores `records` (name → record) in one compare-and-swap. Returns which were created.
async fn store(
    state: &State,
    kind: Kind,
    records: Vec<(String, Record)>,
) -> Result<Vec<bool>, Response> {
    let result = state
        .metastore
        .update_security(|t| {
            let mut created = Vec::new();
            for (name, rec) in &records {
                created.push(!exists(t, kind, name));
                match rec {
                    Record::User(hash, user) => {
                        let hash = hash
                            .clone()
                            .or_else(|| t.users.get(name).map(|u| u.hash.clone()))
                            .unwrap_or_default();
                        t.users.insert(
                            name.clone(),
                            User {
                                hash,
                                ..user.clone()
                            },
                        );
                    }
                    Record::Role(r) => {
                        t.roles.insert(name.clone(), r.clone());
                    }
                    Record::Mapping(m) => {
                        if t.role(name).is_none() {
                            return Err(MetastoreError::Rejected(format!(
                                "Role '{name}' is not available for role-mapping."
                            )));
                        }
                        t.mappings.insert(name.clone(), m.clone());
                    }
                }
            }
            Ok(created)
        })
        .await;
    result.map_err(|e| match e {
        MetastoreError::Rejected(m) => reply(StatusCode::NOT_FOUND, m),
        e => ApiError::from(e).into_response(),
    })
}

/// `PUT /_plugins/_security/api/{resource}/{name}`.
#[instrument(skip(state, body))]
pub async fn put(
    state: State,
    Path((resource, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let Some(kind) = Kind::of(&resource) else {
        return bad(format!("unknown resource [{resource}]"));
    };
    if let Some(r) = reserved_refusal(kind, &name) {
        return r;
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return bad("Request body required and must be a JSON object"),
    };
    let known = exists(&state.metastore.security().0, kind, &name);
    let rec = match build(kind, &name, body, known).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match store(&state, kind, vec![(name.clone(), rec)]).await {
        Ok(created) if created[0] => {
            info!(resource, name, "security record created");
            reply(StatusCode::CREATED, format!("'{name}' created."))
        }
        Ok(_) => {
            info!(resource, name, "security record updated");
            reply(StatusCode::OK, format!("'{name}' updated."))
        }
        Err(resp) => resp,
    }
}

/// `DELETE /_plugins/_security/api/{resource}/{name}`.
#[instrument(skip(state))]
pub async fn delete(state: State, Path((resource, name)): Path<(String, String)>) -> Response {
    let Some(kind) = Kind::of(&resource) else {
        return bad(format!("unknown resource [{resource}]"));
    };
    if let Some(r) = reserved_refusal(kind, &name) {
        return r;
    }
    let removed = state
        .metastore
        .update_security(|t| {
            Ok(match kind {
                Kind::Users => {
                    // The user's API keys stop working with it.
                    t.api_keys.retain(|_, k| k.owner != name);
                    t.users.remove(&name).is_some()
                }
                Kind::Roles => t.roles.remove(&name).is_some(),
                Kind::Mappings => t.mappings.remove(&name).is_some(),
            })
        })
        .await;
    match removed {
        Ok(true) => reply(StatusCode::OK, format!("'{name}' deleted.")),
        Ok(false) => reply(
            StatusCode::NOT_FOUND,
            format!("{} {name} not found.", kind.noun()),
        ),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `PATCH /_plugins/_security/api/{resource}/{name}`: a JSON patch on one record.
pub async fn patch_one(
    state: State,
    Path((resource, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    patch(state, resource, Some(name), body).await
}

/// `PATCH /_plugins/_security/api/{resource}`: a JSON patch on the whole collection
/// (paths start with the record's name).
pub async fn patch_all(
    state: State,
    Path(resource): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    patch(state, resource, None, body).await
}

async fn patch(
    state: State,
    resource: String,
    name: Option<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(kind) = Kind::of(&resource) else {
        return bad(format!("unknown resource [{resource}]"));
    };
    let ops: json_patch::Patch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return bad(format!("Invalid JSON patch: {e}")),
    };
    let table = state.metastore.security().0;
    let all = views(&table, kind);
    let mut doc = match &name {
        Some(n) => match all.get(n) {
            Some(v) => v.clone(),
            None => {
                return reply(
                    StatusCode::NOT_FOUND,
                    format!("{} {n} not found.", kind.noun()),
                )
            }
        },
        None => Value::Object(all.clone()),
    };
    if let Err(e) = json_patch::patch(&mut doc, &ops) {
        return bad(format!("Invalid JSON patch: {e}"));
    }
    let changed: Vec<(String, Value)> = match (&name, doc) {
        (Some(n), v) => vec![(n.clone(), v)],
        (None, Value::Object(m)) => {
            // Records the patch removed are deleted; the rest are stored as patched.
            let removed: Vec<String> = all
                .keys()
                .filter(|k| !m.contains_key(*k))
                .cloned()
                .collect();
            if !removed.is_empty() {
                return bad(format!(
                    "removing records with PATCH is not supported; DELETE them: {removed:?}"
                ));
            }
            m.into_iter()
                .filter(|(k, v)| all.get(k) != Some(v))
                .collect()
        }
        _ => return bad("the patched collection must stay an object"),
    };
    let mut records = Vec::new();
    for (n, v) in changed {
        if let Some(r) = reserved_refusal(kind, &n) {
            return r;
        }
        let known = exists(&table, kind, &n);
        match build(kind, &n, v, known).await {
            Ok(r) => records.push((n, r)),
            Err(resp) => return resp,
        }
    }
    match store(&state, kind, records).await {
        Ok(_) => reply(StatusCode::OK, "Resource updated."),
        Err(resp) => resp,
    }
}

/// `GET /_plugins/_security/authinfo`: who the caller is.
pub async fn authinfo(
    Extension(caller): Extension<Caller>,
    parts: axum::http::request::Parts,
) -> Response {
    let connect = parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .cloned();
    let Some(p) = caller.principal() else {
        return Json(json!({"user_name": null, "security_enabled": false})).into_response();
    };
    Json(json!({
        "user": p.describe(),
        "user_name": p.user,
        "user_requested_tenant": null,
        "remote_address": connect.map(|c| c.0.to_string()),
        "backend_roles": p.backend_roles,
        "custom_attribute_names": p.attributes,
        "roles": p.roles,
        "tenants": {},
        "principal": null,
        "peer_certificates": "0",
        "sso_logout_url": null,
        "api_key": p.api_key,
    }))
    .into_response()
}

/// `GET /_plugins/_security/health` (no credentials needed).
pub async fn health(state: State) -> Response {
    let status = if state.security.enabled {
        "UP"
    } else {
        "DISABLED"
    };
    Json(json!({"message": null, "mode": "strict", "status": status})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// JSON of any shape, biased towards the keys the security API reads.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            let key = prop_oneof![
                Just("password".to_string()),
                Just("hash".to_string()),
                Just("backend_roles".to_string()),
                Just("attributes".to_string()),
                Just("opendistro_security_roles".to_string()),
                Just("cluster_permissions".to_string()),
                Just("index_permissions".to_string()),
                Just("index_patterns".to_string()),
                Just("allowed_actions".to_string()),
                Just("users".to_string()),
                "[a-z_]{1,8}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any body, for any kind and name: a record or a reason, never a panic; a new
        /// user is never stored without a password hash, and never with a weak password.
        #[test]
        fn arbitrary_bodies_never_panic_or_store_a_user_without_a_hash(
            body in arb_json(),
            name in prop_oneof![Just("bob".to_string()), ".{0,10}"],
            exists in any::<bool>(),
        ) {
            for kind in [Kind::Users, Kind::Roles, Kind::Mappings] {
                let outcome = record(kind, &name, body.clone(), exists);
                if let (Kind::Users, Ok(Record::User(hash, _))) = (kind, &outcome) {
                    if !exists {
                        prop_assert!(hash.as_deref().is_some_and(|h| h.starts_with("$argon2")));
                    }
                    if let Some(p) = body.get("password").and_then(Value::as_str) {
                        prop_assert!(password::weakness(&name, p).is_none());
                    }
                }
                if outcome.is_ok() {
                    prop_assert!(is_valid_name(&name));
                }
            }
        }
    }

    #[test]
    fn a_get_body_put_back_keeps_the_password() {
        let user = User {
            hash: password::hash("original-password"),
            backend_roles: vec!["a".into()],
            ..User::default()
        };
        match record(Kind::Users, "bob", user_view(&user), true) {
            Ok(Record::User(None, u)) => assert_eq!(u.backend_roles, vec!["a".to_string()]),
            _ => panic!("a shown user must be accepted back unchanged"),
        }
        assert!(record(Kind::Users, "bob", user_view(&user), false).is_err());
        assert!(record(Kind::Roles, "r", json!({"cluster_permissions": "x"}), false).is_err());
        assert!(record(
            Kind::Users,
            "a/b",
            json!({"password": "long enough"}),
            false
        )
        .is_err());
    }
}
