//! Index templates: settings, mappings and aliases that a new index whose name matches a
//! pattern starts with — composable templates (`_index_template`, built from component
//! templates), and legacy ones (`_template`) when no composable template matches. All live
//! in one record (`metastore/templates.json`), changed with compare-and-swap.
//!
//! [`TemplateTable`] is the pure part (validation, choosing and merging templates for an
//! index name); the [`Metastore`] methods at the end read and write the record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::{info, instrument};

use crate::changelog::Change;
use crate::error::{read_record, update_record, MetastoreError};
use crate::names::matches_pattern;
use crate::store::Metastore;

pub(crate) const TEMPLATES_KEY: &str = "metastore/templates.json";

/// What a template gives a new index. Settings are kept flat (`index.number_of_shards`),
/// mappings and aliases as OpenSearch JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateBody {
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub settings: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mappings: Option<Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub aliases: Map<String, Value>,
}

/// A composable index template (`PUT /_index_template/{name}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IndexTemplate {
    pub index_patterns: Vec<String>,
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub composed_of: Vec<String>,
    #[serde(default)]
    pub template: TemplateBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, rename = "_meta", skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

/// A component template (`PUT /_component_template/{name}`): a reusable part.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentTemplate {
    #[serde(default)]
    pub template: TemplateBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, rename = "_meta", skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

/// A legacy template (`PUT /_template/{name}`): every matching one applies, by `order`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyTemplate {
    pub index_patterns: Vec<String>,
    #[serde(default)]
    pub order: i64,
    #[serde(default)]
    pub template: TemplateBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

/// Every template.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TemplateTable {
    #[serde(default)]
    pub index_templates: BTreeMap<String, IndexTemplate>,
    #[serde(default)]
    pub component_templates: BTreeMap<String, ComponentTemplate>,
    #[serde(default)]
    pub legacy: BTreeMap<String, LegacyTemplate>,
}

fn rejected(reason: impl Into<String>) -> MetastoreError {
    MetastoreError::Rejected(reason.into())
}

/// Settings in any of OpenSearch's spellings (`{"index": {"a": {"b": 1}}}`, `{"a.b": 1}`,
/// `{"index.a.b": "1"}`) as flat `index.`-prefixed keys.
pub fn flatten_settings(settings: &Value) -> Result<Map<String, Value>, MetastoreError> {
    if !settings.is_object() {
        return Err(rejected("[settings] must be an object"));
    }
    Ok(crate::names::flatten_keys(settings)
        .into_iter()
        .map(|(k, v)| match k.starts_with("index.") {
            true => (k, v),
            false => (format!("index.{k}"), v),
        })
        .collect())
}

/// Merges `over` into `base`: objects key by key (recursively), anything else replaced.
fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

impl TemplateBody {
    /// Parses `{"settings", "mappings", "aliases"}` (each optional).
    pub fn from_opensearch(body: Option<&Value>) -> Result<TemplateBody, MetastoreError> {
        let Some(body) = body else {
            return Ok(TemplateBody::default());
        };
        let o = body
            .as_object()
            .ok_or_else(|| rejected("[template] must be an object"))?;
        let mut out = TemplateBody::default();
        for (k, v) in o {
            match k.as_str() {
                "settings" => out.settings = flatten_settings(v)?,
                "mappings" => {
                    if !v.is_object() {
                        return Err(rejected("[mappings] must be an object"));
                    }
                    out.mappings = Some(v.clone());
                }
                "aliases" => {
                    out.aliases = v
                        .as_object()
                        .cloned()
                        .ok_or_else(|| rejected("[aliases] must be an object"))?;
                }
                other => return Err(rejected(format!("[template] unknown field [{other}]"))),
            }
        }
        Ok(out)
    }

    /// As a create-index body (`{"settings", "mappings", "aliases"}`).
    pub fn to_opensearch(&self) -> Value {
        let mut out = Map::new();
        if !self.settings.is_empty() {
            out.insert("settings".into(), Value::Object(self.settings.clone()));
        }
        if let Some(m) = &self.mappings {
            out.insert("mappings".into(), m.clone());
        }
        if !self.aliases.is_empty() {
            out.insert("aliases".into(), Value::Object(self.aliases.clone()));
        }
        Value::Object(out)
    }

    /// Applies this body over `acc` (later templates win).
    fn merge_into(&self, acc: &mut TemplateBody) {
        for (k, v) in &self.settings {
            acc.settings.insert(k.clone(), v.clone());
        }
        if let Some(m) = &self.mappings {
            match &mut acc.mappings {
                Some(existing) => deep_merge(existing, m),
                None => acc.mappings = Some(m.clone()),
            }
        }
        for (k, v) in &self.aliases {
            acc.aliases.insert(k.clone(), v.clone());
        }
    }
}

fn patterns_of(body: &Value) -> Result<Vec<String>, MetastoreError> {
    let patterns: Vec<String> = match body.get("index_patterns") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| p.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| rejected("[index_patterns] must hold strings"))?,
        _ => {
            return Err(rejected(
                "Validation Failed: 1: index patterns are missing;",
            ))
        }
    };
    if patterns.is_empty() {
        return Err(rejected(
            "Validation Failed: 1: index patterns are missing;",
        ));
    }
    Ok(patterns)
}

fn int_of(body: &Value, key: &str) -> Result<Option<i64>, MetastoreError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map(Some)
            .ok_or_else(|| rejected(format!("[{key}] must be an integer"))),
    }
}

fn only_keys(body: &Value, allowed: &[&str], what: &str) -> Result<(), MetastoreError> {
    let o = body
        .as_object()
        .ok_or_else(|| rejected(format!("{what} must be an object")))?;
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(rejected(format!("[{what}] unknown field [{k}]"))),
        None => Ok(()),
    }
}

impl IndexTemplate {
    pub fn from_opensearch(body: &Value) -> Result<IndexTemplate, MetastoreError> {
        only_keys(
            body,
            &[
                "index_patterns",
                "priority",
                "composed_of",
                "template",
                "version",
                "_meta",
                "data_stream",
            ],
            "index_template",
        )?;
        if body.get("data_stream").is_some() {
            return Err(rejected(
                "data streams are not supported; use an alias with rollover",
            ));
        }
        let composed_of = match body.get("composed_of") {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
                .ok_or_else(|| rejected("[composed_of] must be an array of names"))?,
        };
        Ok(IndexTemplate {
            index_patterns: patterns_of(body)?,
            priority: int_of(body, "priority")?.unwrap_or(0),
            composed_of,
            template: TemplateBody::from_opensearch(body.get("template"))?,
            version: int_of(body, "version")?,
            meta: body.get("_meta").cloned(),
        })
    }

    pub fn to_opensearch(&self) -> Value {
        let mut v = json!({
            "index_patterns": self.index_patterns,
            "priority": self.priority,
            "composed_of": self.composed_of,
            "template": self.template.to_opensearch(),
        });
        if let Some(version) = self.version {
            v["version"] = json!(version);
        }
        if let Some(m) = &self.meta {
            v["_meta"] = m.clone();
        }
        v
    }
}

impl ComponentTemplate {
    pub fn from_opensearch(body: &Value) -> Result<ComponentTemplate, MetastoreError> {
        only_keys(
            body,
            &["template", "version", "_meta"],
            "component_template",
        )?;
        let template = body
            .get("template")
            .ok_or_else(|| rejected("Validation Failed: 1: [template] is required;"))?;
        Ok(ComponentTemplate {
            template: TemplateBody::from_opensearch(Some(template))?,
            version: int_of(body, "version")?,
            meta: body.get("_meta").cloned(),
        })
    }

    pub fn to_opensearch(&self) -> Value {
        let mut v = json!({"template": self.template.to_opensearch()});
        if let Some(version) = self.version {
            v["version"] = json!(version);
        }
        if let Some(m) = &self.meta {
            v["_meta"] = m.clone();
        }
        v
    }
}

impl LegacyTemplate {
    pub fn from_opensearch(body: &Value) -> Result<LegacyTemplate, MetastoreError> {
        only_keys(
            body,
            &[
                "index_patterns",
                "order",
                "settings",
                "mappings",
                "aliases",
                "version",
            ],
            "template",
        )?;
        let mut parts = body.clone();
        if let Some(o) = parts.as_object_mut() {
            o.retain(|k, _| matches!(k.as_str(), "settings" | "mappings" | "aliases"));
        }
        Ok(LegacyTemplate {
            index_patterns: patterns_of(body)?,
            order: int_of(body, "order")?.unwrap_or(0),
            template: TemplateBody::from_opensearch(Some(&parts))?,
            version: int_of(body, "version")?,
        })
    }

    pub fn to_opensearch(&self) -> Value {
        let t = &self.template;
        let mut v = json!({
            "order": self.order,
            "index_patterns": self.index_patterns,
            "settings": Value::Object(t.settings.clone()),
            "mappings": t.mappings.clone().unwrap_or_else(|| json!({})),
            "aliases": Value::Object(t.aliases.clone()),
        });
        if let Some(version) = self.version {
            v["version"] = json!(version);
        }
        v
    }
}

/// Whether two index patterns can match one name (close enough: equal, one matching the
/// other, or literal prefixes where one extends the other).
fn overlap(a: &str, b: &str) -> bool {
    let prefix = |p: &str| p.split('*').next().unwrap_or_default().to_string();
    let (pa, pb) = (prefix(a), prefix(b));
    matches_pattern(a, b)
        || matches_pattern(b, a)
        || (a.contains('*') && b.contains('*') && (pa.starts_with(&pb) || pb.starts_with(&pa)))
}

impl TemplateTable {
    /// Adds or replaces a composable template. Refused if it names missing component
    /// templates, or shares the priority of another template its patterns overlap.
    pub fn put_index_template(
        &mut self,
        name: &str,
        t: IndexTemplate,
    ) -> Result<(), MetastoreError> {
        let missing: Vec<&String> = t
            .composed_of
            .iter()
            .filter(|c| !self.component_templates.contains_key(*c))
            .collect();
        if !missing.is_empty() {
            return Err(rejected(format!(
                "index template [{name}] specifies component templates {missing:?} that do not exist"
            )));
        }
        for (other, o) in &self.index_templates {
            if other == name || o.priority != t.priority {
                continue;
            }
            let clash = t
                .index_patterns
                .iter()
                .any(|p| o.index_patterns.iter().any(|q| overlap(p, q)));
            if clash {
                return Err(rejected(format!(
                    "index template [{name}] has index patterns {:?} matching patterns from existing templates [{other}] with patterns ({other} => {:?}) that have the same priority [{}], multiple index templates may not match during index creation, please use a different priority",
                    t.index_patterns, o.index_patterns, t.priority
                )));
            }
        }
        self.index_templates.insert(name.to_string(), t);
        Ok(())
    }

    /// Removes a component template unless a composable template uses it.
    pub fn delete_component_template(&mut self, name: &str) -> Result<(), MetastoreError> {
        let users: Vec<&String> = self
            .index_templates
            .iter()
            .filter(|(_, t)| t.composed_of.iter().any(|c| c == name))
            .map(|(n, _)| n)
            .collect();
        if !users.is_empty() {
            return Err(rejected(format!(
                "component templates [{name}] cannot be removed as they are still in use by index templates {users:?}"
            )));
        }
        self.component_templates
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| MetastoreError::TemplateNotFound(name.to_string()))
    }

    /// What the templates give an index named `index`: the composable template of highest
    /// priority that matches (its components first, then itself); if none matches, every
    /// matching legacy template by ascending `order`. Hidden (dot) indexes only match
    /// patterns that start with a dot.
    pub fn for_index(&self, index: &str) -> TemplateBody {
        let hits = |patterns: &[String]| {
            patterns.iter().any(|p| {
                matches_pattern(p, index)
                    && (!index.starts_with('.') || p.starts_with('.') || p == index)
            })
        };
        let mut out = TemplateBody::default();
        let composable = self
            .index_templates
            .iter()
            .filter(|(_, t)| hits(&t.index_patterns))
            .max_by(|a, b| a.1.priority.cmp(&b.1.priority).then_with(|| b.0.cmp(a.0)));
        if let Some((_, t)) = composable {
            for c in &t.composed_of {
                if let Some(component) = self.component_templates.get(c) {
                    component.template.merge_into(&mut out);
                }
            }
            t.template.merge_into(&mut out);
            return out;
        }
        let mut legacy: Vec<&LegacyTemplate> = self
            .legacy
            .values()
            .filter(|t| hits(&t.index_patterns))
            .collect();
        legacy.sort_by_key(|t| t.order);
        for t in legacy {
            t.template.merge_into(&mut out);
        }
        out
    }

    /// A create-index body: what the templates give `index`, with `request` (the client's
    /// own settings, mappings and aliases) applied over it.
    pub fn create_body(&self, index: &str, request: &Value) -> Result<Value, MetastoreError> {
        let mut acc = self.for_index(index);
        if acc == TemplateBody::default() {
            return Ok(request.clone());
        }
        let mut own = request.clone();
        if let Some(o) = own.as_object_mut() {
            o.retain(|k, _| matches!(k.as_str(), "settings" | "mappings" | "aliases"));
        }
        TemplateBody::from_opensearch(Some(&own))?.merge_into(&mut acc);
        let mut body = request.clone();
        let merged = acc.to_opensearch();
        if let (Some(b), Some(m)) = (body.as_object_mut(), merged.as_object()) {
            for (k, v) in m {
                b.insert(k.clone(), v.clone());
            }
        }
        Ok(body)
    }
}

impl Metastore {
    /// Every template, as known here.
    pub fn templates(&self) -> TemplateTable {
        self.template_state().0
    }

    /// Changes the template record with compare-and-swap (retried from a fresh copy on
    /// conflict; `change` may run several times).
    #[instrument(skip(self, change))]
    pub async fn update_templates<F>(&self, change: F) -> Result<(), MetastoreError>
    where
        F: FnMut(&mut TemplateTable) -> Result<(), MetastoreError>,
    {
        let (table, etag) = self.template_state();
        let current = etag.map(|e| (table, e));
        let ((), written) = update_record(self.storage(), TEMPLATES_KEY, current, change).await?;
        if let Some((table, etag)) = written {
            self.set_template_state(table, Some(etag));
            self.announce(vec![Change::TemplatesUpdated]).await;
            info!("templates updated");
        }
        Ok(())
    }

    /// Re-reads the template record (start-up, change log, lost compare-and-swap).
    pub(crate) async fn reload_templates(&self) -> Result<(), MetastoreError> {
        match read_record::<TemplateTable>(self.storage(), TEMPLATES_KEY).await? {
            Some((table, etag)) => self.set_template_state(table, Some(etag)),
            None => self.set_template_state(TemplateTable::default(), None),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(
        patterns: &[&str],
        priority: i64,
        composed_of: &[&str],
        body: Value,
    ) -> IndexTemplate {
        IndexTemplate {
            index_patterns: patterns.iter().map(|s| s.to_string()).collect(),
            priority,
            composed_of: composed_of.iter().map(|s| s.to_string()).collect(),
            template: TemplateBody::from_opensearch(Some(&body)).unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn settings_in_every_spelling_flatten_alike() {
        for s in [
            json!({"index": {"number_of_shards": 2, "translog": {"durability": "async"}}}),
            json!({"number_of_shards": 2, "translog.durability": "async"}),
            json!({"index.number_of_shards": 2, "index.translog.durability": "async"}),
        ] {
            let flat = flatten_settings(&s).unwrap();
            assert_eq!(flat["index.number_of_shards"], json!(2), "{s}");
            assert_eq!(flat["index.translog.durability"], json!("async"), "{s}");
        }
    }

    #[test]
    fn composable_templates_merge_components_then_request() {
        let mut t = TemplateTable::default();
        t.component_templates.insert(
            "base".into(),
            ComponentTemplate {
                template: TemplateBody::from_opensearch(Some(&json!({
                    "settings": {"number_of_shards": 3, "refresh_interval": "5s"},
                    "mappings": {"properties": {"host": {"type": "keyword"}}}
                })))
                .unwrap(),
                ..Default::default()
            },
        );
        t.put_index_template(
            "logs",
            template(
                &["logs-*"],
                10,
                &["base"],
                json!({
                    "settings": {"index": {"number_of_shards": 2}},
                    "mappings": {"properties": {"msg": {"type": "text"}}},
                    "aliases": {"all-logs": {}}
                }),
            ),
        )
        .unwrap();
        t.put_index_template(
            "other",
            template(
                &["logs-*"],
                5,
                &[],
                json!({"settings": {"number_of_shards": 7}}),
            ),
        )
        .unwrap();
        let body = t
            .create_body("logs-1", &json!({"settings": {"refresh_interval": "1s"}}))
            .unwrap();
        assert_eq!(body["settings"]["index.number_of_shards"], json!(2));
        assert_eq!(body["settings"]["index.refresh_interval"], json!("1s"));
        assert_eq!(body["mappings"]["properties"]["host"]["type"], "keyword");
        assert_eq!(body["mappings"]["properties"]["msg"]["type"], "text");
        assert!(body["aliases"]["all-logs"].is_object());
        // No match: the request as it came.
        assert_eq!(t.create_body("metrics", &json!({})).unwrap(), json!({}));
        // Same priority and overlapping patterns: refused; missing component: refused.
        assert!(t
            .put_index_template("clash", template(&["logs-a*"], 10, &[], json!({})))
            .is_err());
        assert!(t
            .put_index_template("x", template(&["x-*"], 0, &["nope"], json!({})))
            .is_err());
        // A used component cannot be deleted.
        assert!(t.delete_component_template("base").is_err());
    }

    #[test]
    fn legacy_templates_apply_by_order_when_no_composable_matches() {
        let mut t = TemplateTable::default();
        let legacy = |order, shards| LegacyTemplate {
            index_patterns: vec!["old-*".into()],
            order,
            template: TemplateBody::from_opensearch(Some(
                &json!({"settings": {"number_of_shards": shards}}),
            ))
            .unwrap(),
            version: None,
        };
        t.legacy.insert("b".into(), legacy(2, 4));
        t.legacy.insert("a".into(), legacy(1, 3));
        let body = t.create_body("old-1", &json!({})).unwrap();
        assert_eq!(body["settings"]["index.number_of_shards"], json!(4));
        t.put_index_template(
            "new",
            template(
                &["old-*"],
                0,
                &[],
                json!({"settings": {"number_of_shards": 1}}),
            ),
        )
        .unwrap();
        let body = t.create_body("old-1", &json!({})).unwrap();
        assert_eq!(body["settings"]["index.number_of_shards"], json!(1));
    }
}
