//! Index expressions (`logs`, `a,b`, `logs-*`, `_all`, aliases) → concrete indexes, each
//! with the filter and shard routing its aliases impose.

use floe_metastore::matches_pattern as matches;
use floe_metastore::{AliasSpec, AliasTable};
use floe_proto::IndexMeta;
use serde_json::{json, Value};

use crate::SearchError;

/// One index an expression names, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub meta: IndexMeta,
    /// Reached only through filtered aliases: their filters, any of which a document must
    /// match. `None`: reached directly or through an unfiltered alias.
    pub filter: Option<Value>,
    /// Reached only through aliases with `search_routing`: the routing values whose shards
    /// are searched. `None`: every shard.
    pub routing: Option<Vec<String>>,
}

/// Routing values of a comma list (`a,b`), as `?routing=` and `search_routing` give them.
pub fn routing_values(list: &str) -> Vec<String> {
    list.split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Per index: `None` once any path to it is unrestricted.
struct Reach {
    meta: IndexMeta,
    filters: Option<Vec<Value>>,
    routing: Option<Vec<String>>,
}

fn reach(out: &mut Vec<Reach>, meta: &IndexMeta, spec: Option<&AliasSpec>) {
    let filter = spec.and_then(|s| s.filter.clone());
    let routing = spec
        .and_then(|s| s.search_routing.as_deref())
        .map(routing_values);
    match out.iter_mut().find(|r| r.meta.uuid == meta.uuid) {
        Some(r) => {
            r.filters = match (r.filters.take(), filter) {
                (Some(mut v), Some(f)) => {
                    v.push(f);
                    Some(v)
                }
                _ => None,
            };
            r.routing = match (r.routing.take(), routing) {
                (Some(mut v), Some(more)) => {
                    v.extend(more);
                    Some(v)
                }
                _ => None,
            };
        }
        None => out.push(Reach {
            meta: meta.clone(),
            filters: filter.map(|f| vec![f]),
            routing,
        }),
    }
}

/// Resolves an index expression as OpenSearch does by default: a concrete name (index or
/// alias) must exist (404 otherwise), a wildcard matches index and alias names and may
/// match nothing, `-pattern` excludes.
pub fn resolve(
    expr: &str,
    all: &[IndexMeta],
    aliases: &AliasTable,
    ignore_unavailable: bool,
) -> Result<Vec<Resolved>, SearchError> {
    resolve_expanding(expr, all, aliases, ignore_unavailable, false)
}

/// Whether an index is hidden from wildcards: a dot name, or `index.hidden`.
fn is_hidden(m: &IndexMeta) -> bool {
    m.name.starts_with('.') || m.settings.hidden
}

/// The parts of an index expression (`a,b*,-c`); an empty one or `_all` is `*`.
pub fn expression_parts(expr: &str) -> Vec<&str> {
    let expr = expr.trim();
    if expr.is_empty() || expr == "_all" {
        vec!["*"]
    } else {
        expr.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect()
    }
}

/// [`resolve`], with wildcards also matching hidden indexes when `hidden`
/// (`expand_wildcards=hidden|all`); a pattern starting with `.` always does.
pub fn resolve_expanding(
    expr: &str,
    all: &[IndexMeta],
    aliases: &AliasTable,
    ignore_unavailable: bool,
    hidden: bool,
) -> Result<Vec<Resolved>, SearchError> {
    let mut out: Vec<Reach> = Vec::new();
    let parts = expression_parts(expr);
    let index = |name: &str| all.iter().find(|m| m.name == name);
    for part in parts {
        if let Some(excluded) = part.strip_prefix('-') {
            out.retain(|r| !matches(excluded, &r.meta.name));
            continue;
        }
        if part.contains('*') {
            // Hidden indexes only when the pattern or `expand_wildcards` asks for them.
            for m in all.iter().filter(|m| {
                matches(part, &m.name) && (hidden || part.starts_with('.') || !is_hidden(m))
            }) {
                reach(&mut out, m, None);
            }
            for (_, of) in aliases.aliases.iter().filter(|(a, _)| matches(part, a)) {
                // Hidden aliases are named, never matched by a wildcard.
                for (name, spec) in of.iter().filter(|(_, s)| s.is_hidden != Some(true)) {
                    if let Some(m) = index(name) {
                        reach(&mut out, m, Some(spec));
                    }
                }
            }
            continue;
        }
        if let Some(m) = index(part) {
            reach(&mut out, m, None);
            continue;
        }
        match aliases.aliases.get(part) {
            Some(of) => {
                for (name, spec) in of {
                    if let Some(m) = index(name) {
                        reach(&mut out, m, Some(spec));
                    }
                }
            }
            None if ignore_unavailable => {}
            None => return Err(SearchError::IndexNotFound(part.to_string())),
        }
    }
    Ok(out
        .into_iter()
        .map(|r| Resolved {
            meta: r.meta,
            filter: r.filters.map(|mut v| {
                if v.len() == 1 {
                    v.remove(0)
                } else {
                    json!({"bool": {"should": v, "minimum_should_match": 1}})
                }
            }),
            routing: r.routing,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_metastore::AliasAction;
    use floe_proto::{IndexSettings, Mappings};

    fn idx(name: &str) -> IndexMeta {
        IndexMeta {
            uuid: name.to_string(),
            name: name.to_string(),
            settings: IndexSettings::default(),
            mappings: Mappings::default(),
            creation_date: 0,
            shards: Default::default(),
        }
    }

    fn names(v: Vec<Resolved>) -> Vec<String> {
        v.into_iter().map(|r| r.meta.name).collect()
    }

    #[test]
    fn expressions() {
        let all = vec![idx("logs-a"), idx("logs-b"), idx("metrics")];
        let none = AliasTable::default();
        let r = |e: &str| resolve(e, &all, &none, false);
        assert_eq!(names(r("logs-*").unwrap()), vec!["logs-a", "logs-b"]);
        assert_eq!(
            names(r("metrics,logs-a").unwrap()),
            vec!["metrics", "logs-a"]
        );
        assert_eq!(names(r("_all").unwrap()).len(), 3);
        assert_eq!(names(r("*,-logs-b").unwrap()).len(), 2);
        assert!(r("nope*").unwrap().is_empty());
        assert!(matches!(r("nope"), Err(SearchError::IndexNotFound(_))));
        assert!(resolve("nope", &all, &none, true).unwrap().is_empty());
    }

    #[test]
    fn aliases_carry_their_filters_and_routing() {
        let all = vec![idx("logs-a"), idx("logs-b"), idx("metrics")];
        let mut t = AliasTable::default();
        let spec = |filter: Option<Value>, routing: Option<&str>| AliasSpec {
            filter,
            search_routing: routing.map(str::to_string),
            ..Default::default()
        };
        let add = |index: &str, alias: &str, spec: AliasSpec| AliasAction::Add {
            indexes: vec![index.into()],
            aliases: vec![alias.into()],
            spec,
        };
        let names_of = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let errors = json!({"term": {"level": "error"}});
        let warns = json!({"term": {"level": "warn"}});
        t.apply(
            &[
                add("logs-*", "logs", spec(None, None)),
                add("logs-a", "errors", spec(Some(errors.clone()), Some("1,2"))),
                add("logs-a", "warns", spec(Some(warns.clone()), Some("3"))),
            ],
            &names_of(&["logs-a", "logs-b", "metrics"]),
        )
        .unwrap();
        let r = |e: &str| resolve(e, &all, &t, false).unwrap();
        assert_eq!(names(r("logs")), vec!["logs-a", "logs-b"]);
        assert!(r("logs")
            .iter()
            .all(|x| x.filter.is_none() && x.routing.is_none()));
        let e = &r("errors")[0];
        assert_eq!(
            (e.filter.clone(), e.routing.clone()),
            (Some(errors.clone()), Some(vec!["1".into(), "2".into()]))
        );
        // Two filtered aliases of one index: either filter; routing values together.
        let both = &r("errors,warns")[0];
        assert_eq!(
            both.filter,
            Some(json!({"bool": {"should": [errors, warns], "minimum_should_match": 1}}))
        );
        assert_eq!(both.routing.as_ref().map(Vec::len), Some(3));
        // Also reached directly (or through an unfiltered alias): no filter at all.
        assert_eq!(r("errors,logs-a")[0].filter, None);
        assert_eq!(r("errors,logs")[0].filter, None);
        // Wildcards match alias names too.
        assert_eq!(names(r("err*")), vec!["logs-a"]);
        assert!(matches!(
            resolve("nope", &all, &t, false),
            Err(SearchError::IndexNotFound(_))
        ));
    }
}
