//! Aliases: names that stand for one or more indexes, each with an optional filter and
//! routing, and at most one write index. All aliases live in one record
//! (`metastore/aliases.json`), so the actions of one `POST /_aliases` request — and a
//! rollover's move of the write alias — apply together with a single compare-and-swap.
//!
//! [`AliasTable`] is the pure part (applying actions, resolving a write); the
//! [`Metastore`] methods at the end read and write the record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, instrument};

use crate::changelog::Change;
use crate::error::{read_record, update_record, MetastoreError};
use crate::names::{matches_pattern, validate_index_name};
use crate::store::Metastore;

pub(crate) const ALIASES_KEY: &str = "metastore/aliases.json";

/// How an alias points at one index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AliasSpec {
    /// Query (OpenSearch DSL) that searches through the alias are restricted by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// Routing of writes through the alias (when the write names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_routing: Option<String>,
    /// Routing values limiting the shards a search through the alias reads (comma list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_routing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_write_index: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_hidden: Option<bool>,
}

fn rejected(reason: String) -> MetastoreError {
    MetastoreError::Rejected(reason)
}

/// A string or a list of strings (`"index": "a"`, `"indices": ["a", "b"]`).
fn names_of(v: &Value, key: &str) -> Result<Vec<String>, MetastoreError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| rejected(format!("[{key}] must hold strings")))
            })
            .collect(),
        _ => Err(rejected(format!(
            "[{key}] must be a string or an array of strings"
        ))),
    }
}

fn routing_value(v: &Value, key: &str) -> Result<String, MetastoreError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(rejected(format!("[{key}] must be a string"))),
    }
}

impl AliasSpec {
    /// Parses an alias body as OpenSearch takes it (`filter`, `routing`, `index_routing`,
    /// `search_routing`, `is_write_index`, `is_hidden`). Other keys are refused, except
    /// those naming the alias and its indexes, which the caller reads.
    pub fn from_opensearch(body: &Value) -> Result<AliasSpec, MetastoreError> {
        let Some(o) = body.as_object() else {
            return Err(rejected("an alias definition must be an object".into()));
        };
        let mut spec = AliasSpec::default();
        for (k, v) in o {
            match k.as_str() {
                "filter" => {
                    if !v.is_object() {
                        return Err(rejected("[filter] must be a query object".into()));
                    }
                    spec.filter = Some(v.clone());
                }
                "routing" => {
                    let r = routing_value(v, k)?;
                    spec.index_routing = Some(r.clone());
                    spec.search_routing = Some(r);
                }
                "index_routing" => spec.index_routing = Some(routing_value(v, k)?),
                "search_routing" => spec.search_routing = Some(routing_value(v, k)?),
                "is_write_index" | "is_hidden" => {
                    let b = v
                        .as_bool()
                        .ok_or_else(|| rejected(format!("[{k}] must be a boolean")))?;
                    if k == "is_write_index" {
                        spec.is_write_index = Some(b);
                    } else {
                        spec.is_hidden = Some(b);
                    }
                }
                "index" | "indices" | "alias" | "aliases" | "must_exist" => {}
                other => return Err(rejected(format!("[aliases] unknown field [{other}]"))),
            }
        }
        Ok(spec)
    }

    /// The spec as `GET /_alias` shows it (OpenSearch names, `routing` unsplit).
    pub fn to_opensearch(&self) -> Value {
        let mut out = serde_json::Map::new();
        if let Some(f) = &self.filter {
            out.insert("filter".into(), f.clone());
        }
        if let Some(r) = &self.index_routing {
            out.insert("index_routing".into(), Value::from(r.clone()));
        }
        if let Some(r) = &self.search_routing {
            out.insert("search_routing".into(), Value::from(r.clone()));
        }
        if let Some(w) = self.is_write_index {
            out.insert("is_write_index".into(), Value::from(w));
        }
        if let Some(h) = self.is_hidden {
            out.insert("is_hidden".into(), Value::from(h));
        }
        Value::Object(out)
    }
}

/// One action of `POST /_aliases`. Index names may be wildcards (matched against the
/// indexes that exist); alias names in `remove` may be wildcards too.
#[derive(Clone, Debug, PartialEq)]
pub enum AliasAction {
    Add {
        indexes: Vec<String>,
        aliases: Vec<String>,
        spec: AliasSpec,
    },
    Remove {
        indexes: Vec<String>,
        aliases: Vec<String>,
        /// Fail when nothing matches (OpenSearch's `must_exist`; default: fail).
        must_exist: bool,
    },
    /// Deletes the indexes (their aliases go with them).
    RemoveIndex { indexes: Vec<String> },
}

impl AliasAction {
    /// The actions of a `POST /_aliases` body: `{"actions": [{"add": {...}}, ...]}`.
    pub fn parse_request(body: &Value) -> Result<Vec<AliasAction>, MetastoreError> {
        let actions = body
            .get("actions")
            .and_then(Value::as_array)
            .ok_or_else(|| rejected("[actions] is required and must be an array".into()))?;
        if actions.is_empty() {
            return Err(rejected(
                "Validation Failed: 1: No action specified;".into(),
            ));
        }
        actions.iter().map(Self::parse_one).collect()
    }

    fn parse_one(action: &Value) -> Result<AliasAction, MetastoreError> {
        let Some((kind, body)) = action
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
        else {
            return Err(rejected(
                "each action must be an object with exactly one of [add, remove, remove_index]"
                    .into(),
            ));
        };
        let list = |one: &str, many: &str| -> Result<Vec<String>, MetastoreError> {
            let mut out = Vec::new();
            for key in [one, many] {
                if let Some(v) = body.get(key) {
                    out.extend(names_of(v, key)?);
                }
            }
            Ok(out)
        };
        let indexes = list("index", "indices")?;
        if indexes.is_empty() {
            return Err(rejected(format!(
                "Validation Failed: 1: One of [index] or [indices] is required for [{kind}];"
            )));
        }
        let aliases = list("alias", "aliases")?;
        match kind.as_str() {
            "add" | "remove" if aliases.is_empty() => Err(rejected(format!(
                "Validation Failed: 1: One of [alias] or [aliases] is required for [{kind}];"
            ))),
            "add" => Ok(AliasAction::Add {
                indexes,
                aliases,
                spec: AliasSpec::from_opensearch(body)?,
            }),
            "remove" => Ok(AliasAction::Remove {
                indexes,
                aliases,
                must_exist: body
                    .get("must_exist")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            }),
            "remove_index" => Ok(AliasAction::RemoveIndex { indexes }),
            other => Err(rejected(format!(
                "unknown alias action [{other}]: expected add, remove or remove_index"
            ))),
        }
    }
}

/// Every alias: alias name → index name → how the alias points at it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AliasTable {
    pub aliases: BTreeMap<String, BTreeMap<String, AliasSpec>>,
}

/// Where a write through an alias goes.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteTarget {
    pub index: String,
    pub routing: Option<String>,
}

/// The names among `names` that `patterns` (names, wildcards, `_all`) select. With
/// `indexes`, every pattern must select an existing index (`IndexNotFound` otherwise);
/// alias names are taken as given.
fn expand(
    patterns: &[String],
    names: &[String],
    indexes: bool,
) -> Result<Vec<String>, MetastoreError> {
    let mut out = Vec::new();
    for p in patterns {
        if p.contains('*') || p == "_all" {
            let p = if p == "_all" { "*" } else { p.as_str() };
            let found: Vec<&String> = names.iter().filter(|n| matches_pattern(p, n)).collect();
            if found.is_empty() && indexes {
                return Err(MetastoreError::IndexNotFound(p.to_string()));
            }
            out.extend(found.into_iter().cloned());
        } else if names.contains(p) || !indexes {
            out.push(p.clone());
        } else {
            return Err(MetastoreError::IndexNotFound(p.clone()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

impl AliasTable {
    /// Applies `actions` in order against the indexes named `indexes`; either all apply or
    /// none (the caller writes the result once). Returns the indexes `remove_index` asked
    /// to delete.
    pub fn apply(
        &mut self,
        actions: &[AliasAction],
        indexes: &[String],
    ) -> Result<Vec<String>, MetastoreError> {
        let mut existing: Vec<String> = indexes.to_vec();
        let mut deleted = Vec::new();
        for action in actions {
            match action {
                AliasAction::Add {
                    indexes: targets,
                    aliases,
                    spec,
                } => {
                    let targets = expand(targets, &existing, true)?;
                    for alias in aliases {
                        validate_alias_name(alias, &existing)?;
                        for index in &targets {
                            self.aliases
                                .entry(alias.clone())
                                .or_default()
                                .insert(index.clone(), spec.clone());
                        }
                    }
                }
                AliasAction::Remove {
                    indexes: targets,
                    aliases,
                    must_exist,
                } => {
                    let targets = expand(targets, &existing, true)?;
                    let names: Vec<String> = self.aliases.keys().cloned().collect();
                    let mut removed = 0;
                    for alias in expand(aliases, &names, false)? {
                        if let Some(of) = self.aliases.get_mut(&alias) {
                            for index in &targets {
                                removed += usize::from(of.remove(index).is_some());
                            }
                        }
                    }
                    if removed == 0 && *must_exist {
                        return Err(MetastoreError::AliasNotFound(aliases.join(",")));
                    }
                }
                AliasAction::RemoveIndex { indexes: targets } => {
                    for index in expand(targets, &existing, true)? {
                        self.remove_index(&index);
                        existing.retain(|n| *n != index);
                        deleted.push(index);
                    }
                }
            }
        }
        self.aliases.retain(|_, of| !of.is_empty());
        for (alias, of) in &self.aliases {
            let writers: Vec<&String> = of
                .iter()
                .filter(|(_, s)| s.is_write_index == Some(true))
                .map(|(i, _)| i)
                .collect();
            if writers.len() > 1 {
                return Err(MetastoreError::Rejected(format!(
                    "alias [{alias}] has more than one write index [{}]",
                    writers
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                )));
            }
        }
        Ok(deleted)
    }

    /// Drops `index` from every alias (the index was deleted).
    pub fn remove_index(&mut self, index: &str) {
        for of in self.aliases.values_mut() {
            of.remove(index);
        }
        self.aliases.retain(|_, of| !of.is_empty());
    }

    /// The aliases of `index`, by alias name.
    pub fn of_index(&self, index: &str) -> BTreeMap<String, AliasSpec> {
        self.aliases
            .iter()
            .filter_map(|(a, of)| of.get(index).map(|s| (a.clone(), s.clone())))
            .collect()
    }

    /// Where a write to `name` goes: `None` if `name` is not an alias; an error if it is
    /// one with several indexes and none of them its write index.
    pub fn write_target(&self, name: &str) -> Result<Option<WriteTarget>, MetastoreError> {
        let Some(of) = self.aliases.get(name) else {
            return Ok(None);
        };
        let chosen = match of.iter().find(|(_, s)| s.is_write_index == Some(true)) {
            Some(x) => Some(x),
            None if of.len() == 1 => of.iter().find(|(_, s)| s.is_write_index != Some(false)),
            None => None,
        };
        match chosen {
            Some((index, spec)) => Ok(Some(WriteTarget {
                index: index.clone(),
                routing: spec.index_routing.clone(),
            })),
            None => Err(MetastoreError::NoWriteIndex(name.to_string())),
        }
    }
}

/// An alias name must be a valid index name and must not name an existing index.
fn validate_alias_name(alias: &str, indexes: &[String]) -> Result<(), MetastoreError> {
    let invalid = |reason: String| MetastoreError::InvalidAliasName {
        name: alias.to_string(),
        reason,
    };
    if alias.contains('*') || alias.contains(',') {
        return Err(invalid("must not contain '*' or ','".into()));
    }
    validate_index_name(alias).map_err(|e| match e {
        MetastoreError::InvalidIndexName { reason, .. } => invalid(reason),
        other => other,
    })?;
    if indexes.iter().any(|i| i == alias) {
        return Err(invalid(
            "an index or data stream exists with the same name as the alias".into(),
        ));
    }
    Ok(())
}

impl Metastore {
    /// Every alias, as known here.
    pub fn aliases(&self) -> AliasTable {
        self.alias_state().0
    }

    /// Where a write to `name` goes when `name` is an alias (see [`AliasTable::write_target`]).
    pub fn write_target(&self, name: &str) -> Result<Option<WriteTarget>, MetastoreError> {
        self.with_aliases(|t| t.write_target(name))
    }

    /// Applies alias actions atomically (one compare-and-swap of the alias record, retried
    /// on conflict from a fresh copy). Returns the indexes `remove_index` named: their
    /// aliases are gone, and the caller deletes them (a writer also closes their shards).
    #[instrument(skip(self, actions), fields(actions = actions.len()))]
    pub async fn update_aliases(
        &self,
        actions: &[AliasAction],
    ) -> Result<Vec<String>, MetastoreError> {
        let (deleted, written) = update_record(
            self.storage(),
            ALIASES_KEY,
            self.alias_record(),
            |t: &mut AliasTable| {
                let indexes: Vec<String> =
                    self.list_indexes().into_iter().map(|m| m.name).collect();
                t.apply(actions, &indexes)
            },
        )
        .await?;
        if let Some(written) = written {
            self.aliases_written(written).await;
            info!(
                aliases = self.with_aliases(|t| t.aliases.len()),
                "aliases updated"
            );
        }
        Ok(deleted)
    }

    /// The alias record as known here, with its ETag (`None` while none exists).
    fn alias_record(&self) -> Option<(AliasTable, String)> {
        let (table, etag) = self.alias_state();
        etag.map(|e| (table, e))
    }

    /// Takes a record this process wrote and tells the others.
    async fn aliases_written(&self, (table, etag): (AliasTable, String)) {
        self.set_alias_state(table, Some(etag));
        self.announce(vec![Change::AliasesUpdated]).await;
    }

    /// Re-reads the alias record (start-up, change log, lost compare-and-swap).
    pub(crate) async fn reload_aliases(&self) -> Result<(), MetastoreError> {
        match read_record::<AliasTable>(self.storage(), ALIASES_KEY).await? {
            Some((table, etag)) => self.set_alias_state(table, Some(etag)),
            None => self.set_alias_state(AliasTable::default(), None),
        }
        Ok(())
    }

    /// Drops a deleted index from every alias (best effort: aliases of indexes that do not
    /// exist are ignored when resolving, and dropped by the next alias update).
    pub(crate) async fn forget_index_aliases(&self, index: &str) -> Result<(), MetastoreError> {
        let (_, written) = update_record(
            self.storage(),
            ALIASES_KEY,
            self.alias_record(),
            |t: &mut AliasTable| {
                t.remove_index(index);
                Ok(())
            },
        )
        .await?;
        if let Some(written) = written {
            self.aliases_written(written).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn add(indexes: &[&str], alias: &str, write: Option<bool>) -> AliasAction {
        AliasAction::Add {
            indexes: names(indexes),
            aliases: names(&[alias]),
            spec: AliasSpec {
                is_write_index: write,
                ..Default::default()
            },
        }
    }

    #[test]
    fn actions_apply_together_or_not_at_all() {
        let indexes = names(&["logs-1", "logs-2", "other"]);
        let mut t = AliasTable::default();
        t.apply(&[add(&["logs-*"], "logs", None)], &indexes)
            .unwrap();
        assert_eq!(t.aliases["logs"].len(), 2);
        // Several indexes, no write index: writes are refused.
        assert!(matches!(
            t.write_target("logs"),
            Err(MetastoreError::NoWriteIndex(_))
        ));
        // Move the write index in one request.
        t.apply(
            &[
                add(&["logs-1"], "logs", Some(false)),
                add(&["logs-2"], "logs", Some(true)),
            ],
            &indexes,
        )
        .unwrap();
        assert_eq!(t.write_target("logs").unwrap().unwrap().index, "logs-2");
        // A failing action leaves the table as it was.
        let before = t.clone();
        let err = t
            .clone()
            .apply(
                &[
                    AliasAction::Remove {
                        indexes: names(&["logs-1"]),
                        aliases: names(&["logs"]),
                        must_exist: true,
                    },
                    add(&["missing"], "x", None),
                ],
                &indexes,
            )
            .unwrap_err();
        assert!(matches!(err, MetastoreError::IndexNotFound(_)), "{err}");
        assert_eq!(t, before);
        // Two write indexes are refused; an alias may not shadow an index.
        assert!(t
            .clone()
            .apply(&[add(&["logs-1"], "logs", Some(true))], &indexes)
            .is_err());
        assert!(matches!(
            t.clone()
                .apply(&[add(&["logs-1"], "other", None)], &indexes),
            Err(MetastoreError::InvalidAliasName { .. })
        ));
        // One index: it is the write index unless marked otherwise.
        t.apply(&[add(&["other"], "solo", None)], &indexes).unwrap();
        assert_eq!(t.write_target("solo").unwrap().unwrap().index, "other");
        assert_eq!(t.write_target("not-an-alias").unwrap(), None);
        // remove_index drops the index from every alias and reports it.
        let deleted = t
            .apply(
                &[AliasAction::RemoveIndex {
                    indexes: names(&["other"]),
                }],
                &indexes,
            )
            .unwrap();
        assert_eq!(deleted, names(&["other"]));
        assert!(!t.aliases.contains_key("solo"));
        // Removing what is not there fails unless must_exist is false.
        let remove = |must_exist| AliasAction::Remove {
            indexes: names(&["logs-1"]),
            aliases: names(&["nope*"]),
            must_exist,
        };
        assert!(matches!(
            t.clone().apply(&[remove(true)], &indexes),
            Err(MetastoreError::AliasNotFound(_))
        ));
        t.apply(&[remove(false)], &indexes).unwrap();
    }
}
