//! Index expressions (`logs`, `a,b`, `logs-*`, `_all`) → concrete indexes.

use floe_proto::IndexMeta;

use crate::SearchError;

fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(p) => rest = &rest[p + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Resolves an index expression as OpenSearch does by default: a concrete name must exist
/// (404 otherwise), a wildcard may match nothing, `-pattern` excludes.
pub fn resolve(
    expr: &str,
    all: &[IndexMeta],
    ignore_unavailable: bool,
) -> Result<Vec<IndexMeta>, SearchError> {
    let mut out: Vec<IndexMeta> = Vec::new();
    let expr = expr.trim();
    if expr.is_empty() || expr == "_all" || expr == "*" {
        return Ok(all
            .iter()
            .filter(|m| !m.name.starts_with('.'))
            .cloned()
            .collect());
    }
    for part in expr.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(excluded) = part.strip_prefix('-') {
            out.retain(|m| !matches(excluded, &m.name));
            continue;
        }
        if part.contains('*') {
            for m in all.iter().filter(|m| matches(part, &m.name)) {
                if !out.iter().any(|o| o.uuid == m.uuid) {
                    out.push(m.clone());
                }
            }
            continue;
        }
        match all.iter().find(|m| m.name == part) {
            Some(m) => {
                if !out.iter().any(|o| o.uuid == m.uuid) {
                    out.push(m.clone());
                }
            }
            None if ignore_unavailable => {}
            None => return Err(SearchError::IndexNotFound(part.to_string())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn expressions() {
        let all = vec![idx("logs-a"), idx("logs-b"), idx("metrics")];
        let names = |v: Vec<IndexMeta>| v.into_iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(
            names(resolve("logs-*", &all, false).unwrap()),
            vec!["logs-a", "logs-b"]
        );
        assert_eq!(
            names(resolve("metrics,logs-a", &all, false).unwrap()),
            vec!["metrics", "logs-a"]
        );
        assert_eq!(names(resolve("_all", &all, false).unwrap()).len(), 3);
        assert_eq!(names(resolve("*,-logs-b", &all, false).unwrap()).len(), 2);
        assert!(resolve("nope*", &all, false).unwrap().is_empty());
        assert!(matches!(
            resolve("nope", &all, false),
            Err(SearchError::IndexNotFound(_))
        ));
        assert!(resolve("nope", &all, true).unwrap().is_empty());
    }
}
