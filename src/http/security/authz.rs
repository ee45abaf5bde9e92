//! Authorization: each REST request is one OpenSearch action (`cluster:monitor/health`,
//! `indices:data/read/search`, …), at cluster level or on the index expression of its path.
//! [`classify`] names it from the method and path; [`authorize`] checks it against the
//! caller's permissions before the request is routed or forwarded. Reads over wildcards
//! (`_search` over `*`, `_cat/indices`) are narrowed to what the caller may read instead of
//! refused: the path's index expression gets exclusions for the other indexes.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use floe_metastore::{AliasTable, Metastore};
use floe_security::permissions::glob;
use floe_security::Principal;

use super::Caller;
use crate::http::{ApiError, AppState};

/// Where the index expression sits in a path, and how to put a narrowed one back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The first segment (`/{index}/_search`).
    First,
    /// None in the path: the request covers every index; the narrowed expression goes in
    /// front (`/_search` → `/{expr}/_search`).
    Prefix,
    /// After a two-segment endpoint (`/_cat/indices/{index}`), or to be appended there.
    Third,
}

/// What a request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Being authenticated (the handler may check more: bulk items, API keys).
    Anyone,
    Cluster(&'static str),
    /// An index action on every index the expression names or matches. With `narrow`,
    /// wildcard matches the caller may not read are left out instead of refused.
    Index {
        action: &'static str,
        expr: String,
        place: Place,
        narrow: bool,
    },
}

fn index(action: &'static str, expr: &str, place: Place, narrow: bool) -> Need {
    Need::Index {
        action,
        expr: expr.to_string(),
        place,
        narrow,
    }
}

/// The action a request performs, from its method and path.
pub fn classify(method: &Method, path: &str) -> Need {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let parts: Vec<&str> = decoded.trim_matches('/').split('/').collect();
    let first = parts[0];
    let get = matches!(*method, Method::GET | Method::HEAD);
    if first.is_empty() {
        return Need::Cluster("cluster:monitor/main");
    }
    if !first.starts_with('_') || (first == "_all" && parts.len() > 1) {
        return index_endpoint(method, first, &parts[1..]);
    }
    let second = parts.get(1).copied().unwrap_or("");
    let third = parts.get(2).copied();
    let all = |action| index(action, "", Place::Prefix, true);
    match first {
        "_search" if second == "scroll" => Need::Anyone,
        "_search" if second == "point_in_time" => match third {
            Some("_all") if get => Need::Cluster("cluster:monitor/point_in_time"),
            Some("_all") => Need::Cluster("cluster:admin/point_in_time/delete_all"),
            _ => Need::Anyone, // closing by id: the id is the secret
        },
        "_search" | "_count" => all("indices:data/read/search"),
        // Each search, each document, each bulk item is checked by the handler.
        "_msearch" | "_mget" => Need::Anyone,
        "_field_caps" => all("indices:admin/mappings/fields/get"),
        "_validate" => all("indices:admin/validate/query"),
        "_mapping" => index("indices:admin/mappings/get", "*", Place::Prefix, true),
        // Each bulk item is checked on its own index by the handler.
        "_bulk" | "_analyze" | "_security" => Need::Anyone,
        "_refresh" => index("indices:admin/refresh", "*", Place::Prefix, false),
        "_forcemerge" => index("indices:admin/forcemerge", "*", Place::Prefix, false),
        "_cat" => match second {
            // Lists what the caller may read, as a search over the same expression would.
            "indices" => index(
                "indices:data/read/search",
                third.unwrap_or(""),
                Place::Third,
                true,
            ),
            "count" => index(
                "indices:data/read/search",
                third.unwrap_or(""),
                Place::Third,
                true,
            ),
            "aliases" => Need::Cluster("indices:admin/aliases/get"),
            _ => Need::Cluster("cluster:monitor/cat"),
        },
        "_cluster" => match second {
            "settings" if !get => Need::Cluster("cluster:admin/settings/update"),
            "settings" => Need::Cluster("cluster:monitor/settings"),
            "health" => Need::Cluster("cluster:monitor/health"),
            "stats" => Need::Cluster("cluster:monitor/stats"),
            _ => Need::Cluster("cluster:monitor/allocation/explain"),
        },
        "_tasks" if !get => Need::Cluster("cluster:admin/tasks/cancel"),
        "_nodes" | "_stats" | "_floe" | "metrics" | "_search_shards" | "_tasks" => {
            Need::Cluster("cluster:monitor/stats")
        }
        "_alias" | "_aliases" if get => Need::Cluster("indices:admin/aliases/get"),
        // Each action is checked on its indexes and aliases by the handler.
        "_aliases" => Need::Anyone,
        "_index_template" | "_template" | "_component_template" => Need::Cluster(if get {
            "indices:admin/index_template/get"
        } else {
            "indices:admin/index_template/put"
        }),
        // Reads one index and writes another, named in the body: the handler checks both.
        "_reindex" => Need::Anyone,
        "_resolve" => Need::Cluster("indices:admin/resolve/index"),
        "_plugins" if second == "_ism" => Need::Cluster(if get {
            "cluster:admin/opendistro/ism/get"
        } else {
            "cluster:admin/opendistro/ism/write"
        }),
        "_plugins" if second == "_security" => match third {
            Some("api") => security_api(method, parts.get(3).copied().unwrap_or("")),
            _ => Need::Anyone, // authinfo, health
        },
        _ => Need::Anyone, // unknown endpoints answer 404/405 on their own
    }
}

/// `/_plugins/_security/api/{resource}`: cluster actions of the security plugin.
fn security_api(method: &Method, resource: &str) -> Need {
    let verb = match *method {
        Method::GET | Method::HEAD => "get",
        Method::DELETE => "delete",
        Method::PATCH => "patch",
        _ => "put",
    };
    let action = match (resource, verb) {
        ("internalusers", "get") => "cluster:admin/opendistro_security/internalusers/get",
        ("internalusers", "delete") => "cluster:admin/opendistro_security/internalusers/delete",
        ("internalusers", _) => "cluster:admin/opendistro_security/internalusers/put",
        ("roles", "get") => "cluster:admin/opendistro_security/roles/get",
        ("roles", "delete") => "cluster:admin/opendistro_security/roles/delete",
        ("roles", _) => "cluster:admin/opendistro_security/roles/put",
        ("rolesmapping", "get") => "cluster:admin/opendistro_security/rolesmapping/get",
        ("rolesmapping", "delete") => "cluster:admin/opendistro_security/rolesmapping/delete",
        ("rolesmapping", _) => "cluster:admin/opendistro_security/rolesmapping/put",
        _ => "cluster:admin/opendistro_security/other",
    };
    Need::Cluster(action)
}

/// `/{index}/...`: the action of the endpoint on the index expression.
fn index_endpoint(method: &Method, expr: &str, rest: &[&str]) -> Need {
    let get = matches!(*method, Method::GET | Method::HEAD);
    let endpoint = rest.first().copied().unwrap_or("");
    let on = |action| index(action, expr, Place::First, false);
    let read = |action| index(action, expr, Place::First, true);
    match endpoint {
        "" if get => read("indices:admin/get"),
        "" if *method == Method::DELETE => on("indices:admin/delete"),
        "" => on("indices:admin/create"),
        "_search" if rest.get(1) == Some(&"point_in_time") => {
            read("indices:data/read/point_in_time/create")
        }
        "_search" | "_count" => read("indices:data/read/search"),
        // Body lines may name other indexes than the path: the handler checks each.
        "_msearch" | "_mget" => Need::Anyone,
        "_search_shards" => read("indices:admin/shards/search_shards"),
        "_doc" | "_source" if get => on("indices:data/read/get"),
        "_doc" if *method == Method::DELETE => on("indices:data/write/delete"),
        "_doc" | "_create" => on("indices:data/write/index"),
        "_update" => on("indices:data/write/update"),
        "_bulk" => on("indices:data/write/bulk"),
        "_explain" => on("indices:data/read/explain"),
        "_refresh" => on("indices:admin/refresh"),
        "_flush" => on("indices:admin/flush"),
        "_forcemerge" => on("indices:admin/forcemerge"),
        "_mapping" if get => read("indices:admin/mappings/get"),
        "_mapping" => on("indices:admin/mapping/put"),
        "_settings" if get => read("indices:monitor/settings/get"),
        "_settings" => on("indices:admin/settings/update"),
        "_alias" | "_aliases" if get => read("indices:admin/aliases/get"),
        "_alias" | "_aliases" => on("indices:admin/aliases"),
        "_stats" => read("indices:monitor/stats"),
        "_field_caps" => read("indices:admin/mappings/fields/get"),
        "_validate" => read("indices:admin/validate/query"),
        "_analyze" => on("indices:admin/analyze"),
        "_delete_by_query" => on("indices:data/write/delete/byquery"),
        "_update_by_query" => on("indices:data/write/update/byquery"),
        "_rollover" => on("indices:admin/rollover"),
        "_close" => on("indices:admin/close"),
        "_open" => on("indices:admin/open"),
        "_block" => on("indices:admin/block/add"),
        _ => on("indices:admin/other"),
    }
}

/// Whether `p` may perform `action` on index `name`: named by a pattern, or through an
/// alias of it that a pattern names.
fn may(p: &Principal, action: &str, name: &str, aliases: &AliasTable) -> bool {
    p.permissions.index_allows(action, name)
        || aliases
            .aliases
            .iter()
            .any(|(alias, of)| of.contains_key(name) && p.permissions.index_allows(action, alias))
}

/// Whether `p` may perform `action` on the index or alias `name`: an alias is allowed
/// when named by a pattern or when all its indexes are. `aliases` is the alias table,
/// read once by the caller for all the names it checks.
pub fn may_use(p: &Principal, action: &str, name: &str, aliases: &AliasTable) -> bool {
    match aliases.aliases.get(name) {
        Some(of) => {
            p.permissions.index_allows(action, name)
                || of.keys().all(|i| may(p, action, i, aliases))
        }
        None => may(p, action, name, aliases),
    }
}

/// Writing into an index that does not exist creates it, which needs `indices:admin/create`
/// on it as well (as in OpenSearch). Returns the action missing, if one is.
pub fn creation_denied(
    metastore: &Metastore,
    p: &Principal,
    name: &str,
    aliases: &AliasTable,
) -> Option<&'static str> {
    const CREATE: &str = "indices:admin/create";
    let exists = aliases.aliases.contains_key(name) || metastore.get_index(name).is_some();
    (!exists && !p.permissions.index_allows(CREATE, name)).then_some(CREATE)
}

/// Checks an index expression. `Ok(None)`: allowed as is; `Ok(Some(expr))`: allowed once
/// narrowed to `expr`; `Err(name)`: refused, `name` being an index the caller may not use.
pub fn check_expression(
    metastore: &Metastore,
    p: &Principal,
    action: &str,
    expr: &str,
    narrow: bool,
) -> Result<Option<String>, String> {
    let aliases = metastore.aliases();
    let indexes = metastore.list_indexes();
    let parts = floe_searcher::expression_parts(expr);
    let mut matched: BTreeSet<String> = BTreeSet::new();
    for part in &parts {
        if let Some(excluded) = part.strip_prefix('-') {
            matched.retain(|n| !glob(excluded, n));
        } else if part.contains('*') || *part == "_all" {
            let part = if *part == "_all" { "*" } else { part };
            matched.extend(
                indexes
                    .iter()
                    .filter(|m| glob(part, &m.name))
                    .map(|m| m.name.clone()),
            );
            for (_, of) in aliases.aliases.iter().filter(|(a, _)| glob(part, a)) {
                matched.extend(of.keys().cloned());
            }
        } else if !may_use(p, action, part, &aliases) {
            return Err(part.to_string());
        }
    }
    let forbidden: Vec<&String> = matched
        .iter()
        .filter(|n| !may(p, action, n, &aliases))
        .collect();
    match forbidden.first() {
        None => Ok(None),
        Some(name) if !narrow => Err(name.to_string()),
        Some(_) => {
            let base = if expr.is_empty() || expr == "_all" {
                "*"
            } else {
                expr
            };
            let exclusions: Vec<String> = forbidden.iter().map(|f| format!("-{f}")).collect();
            Ok(Some(format!("{base},{}", exclusions.join(","))))
        }
    }
}

/// The path with its index expression replaced by `expr`.
fn with_expression(path: &str, place: Place, expr: &str) -> String {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match place {
        Place::First => format!("/{expr}/{}", parts[1..].join("/")),
        Place::Prefix => format!("/{expr}/{}", parts.join("/")),
        Place::Third => format!("/{}/{}/{expr}", parts[0], parts.get(1).unwrap_or(&"")),
    }
}

/// The middleware (after authentication, before routing and forwarding).
pub async fn authorize(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let principal = match req.extensions().get::<Caller>() {
        Some(Caller(Some(p))) => p.clone(),
        _ => return next.run(req).await,
    };
    match classify(req.method(), req.uri().path()) {
        Need::Anyone => next.run(req).await,
        Need::Cluster(action) if principal.permissions.cluster_allows(action) => {
            next.run(req).await
        }
        Need::Cluster(action) => forbidden(&principal, action, None),
        Need::Index {
            action,
            expr,
            place,
            narrow,
        } => match check_expression(&state.metastore, &principal, action, &expr, narrow) {
            Ok(None)
                if matches!(
                    action,
                    "indices:data/write/index" | "indices:data/write/update"
                ) =>
            {
                let aliases = state.metastore.aliases();
                match creation_denied(&state.metastore, &principal, &expr, &aliases) {
                    Some(create) => forbidden(&principal, create, Some(&expr)),
                    None => next.run(req).await,
                }
            }
            Ok(None) => next.run(req).await,
            Ok(Some(narrowed)) => {
                let path = with_expression(req.uri().path(), place, &narrowed);
                let uri = match req.uri().query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path,
                };
                match uri.parse::<Uri>() {
                    Ok(uri) => {
                        *req.uri_mut() = uri;
                        next.run(req).await
                    }
                    Err(_) => forbidden(&principal, action, None),
                }
            }
            Err(name) => forbidden(&principal, action, Some(&name)),
        },
    }
}

/// 403 naming the action, the index (if any) and the caller.
pub fn forbidden(p: &Principal, action: &str, index: Option<&str>) -> Response {
    denial(p, action, index).into_response()
}

pub fn denial(p: &Principal, action: &str, index: Option<&str>) -> ApiError {
    let on = index.map(|i| format!(" on [{i}]")).unwrap_or_default();
    ApiError::new(
        StatusCode::FORBIDDEN,
        "security_exception",
        format!("no permissions for [{action}]{on} and {}", p.describe()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_actions() {
        let c = |m: Method, p: &str| classify(&m, p);
        assert_eq!(c(Method::GET, "/"), Need::Cluster("cluster:monitor/main"));
        assert_eq!(
            c(Method::GET, "/_cluster/health"),
            Need::Cluster("cluster:monitor/health")
        );
        assert_eq!(
            c(Method::POST, "/logs-*/_search"),
            index("indices:data/read/search", "logs-*", Place::First, true)
        );
        assert_eq!(
            c(Method::GET, "/_search"),
            index("indices:data/read/search", "", Place::Prefix, true)
        );
        assert_eq!(
            c(Method::PUT, "/logs-1"),
            index("indices:admin/create", "logs-1", Place::First, false)
        );
        assert_eq!(
            c(Method::DELETE, "/logs-1/_doc/7"),
            index("indices:data/write/delete", "logs-1", Place::First, false)
        );
        assert_eq!(
            c(Method::GET, "/_cat/indices"),
            index("indices:data/read/search", "", Place::Third, true)
        );
        assert_eq!(
            c(Method::PUT, "/_plugins/_security/api/internalusers/bob"),
            Need::Cluster("cluster:admin/opendistro_security/internalusers/put")
        );
        assert_eq!(c(Method::POST, "/_bulk"), Need::Anyone);
        assert_eq!(
            c(Method::GET, "/%2A/_search"),
            index("indices:data/read/search", "*", Place::First, true)
        );
    }

    #[test]
    fn narrowed_paths() {
        assert_eq!(
            with_expression("/_search", Place::Prefix, "*,-b"),
            "/*,-b/_search"
        );
        assert_eq!(
            with_expression("/a*/_count", Place::First, "a*,-ab"),
            "/a*,-ab/_count"
        );
        assert_eq!(
            with_expression("/_cat/indices", Place::Third, "*,-x"),
            "/_cat/indices/*,-x"
        );
        assert_eq!(
            with_expression("/_cat/indices/l*", Place::Third, "l*,-lx"),
            "/_cat/indices/l*,-lx"
        );
    }
}
