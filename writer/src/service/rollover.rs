//! Rollover: `POST /{alias}/_rollover[/{new_index}]`. When the alias's write index meets
//! one of the conditions (or unconditionally), a new index is created (with what matching
//! templates and the request give it) and the write alias moves to it in one atomic alias
//! change — a write through the alias goes to the old index or to the new one, never to
//! nowhere. Pipeline: resolve the alias → name the new index → check the conditions →
//! create the new index → move the alias.

use super::*;
use floe_metastore::{AliasAction, AliasSpec};
use floe_proto::model::{parse_byte_value, parse_time_value};
use serde_json::json;

/// Rollover conditions; any one met is enough.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conditions {
    pub max_age: Option<(String, Duration)>,
    pub max_docs: Option<u64>,
    pub max_size: Option<(String, u64)>,
    pub max_primary_shard_size: Option<(String, u64)>,
}

impl Conditions {
    /// Parses `{"max_age": "7d", "max_docs": 1000, "max_size": "5gb", ...}`.
    pub fn parse(v: Option<&Value>) -> Result<Conditions, WriterError> {
        let mut c = Conditions::default();
        let Some(v) = v else { return Ok(c) };
        let o = v
            .as_object()
            .ok_or_else(|| WriterError::BadRequest("[conditions] must be an object".into()))?;
        let text = |x: &Value| match x {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for (k, x) in o {
            let bad = || {
                WriterError::BadRequest(format!("failed to parse rollover condition [{k}]: [{x}]"))
            };
            match k.as_str() {
                "max_age" => {
                    let s = text(x);
                    c.max_age = Some((s.clone(), parse_time_value(&s).ok_or_else(bad)?));
                }
                "max_docs" => {
                    c.max_docs = Some(
                        x.as_u64()
                            .or_else(|| text(x).parse().ok())
                            .ok_or_else(bad)?,
                    )
                }
                "max_size" | "max_primary_shard_size" => {
                    let s = text(x);
                    let bytes = parse_byte_value(&s).ok_or_else(bad)?;
                    if k == "max_size" {
                        c.max_size = Some((s, bytes));
                    } else {
                        c.max_primary_shard_size = Some((s, bytes));
                    }
                }
                other => {
                    return Err(WriterError::BadRequest(format!(
                        "unknown rollover condition [{other}]"
                    )))
                }
            }
        }
        Ok(c)
    }

    fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }

    /// Each condition as OpenSearch names it (`[max_docs: 1000]`) and whether `meta` meets it.
    pub fn evaluate(&self, meta: &IndexMeta, now_ms: i64) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        if let Some((text, age)) = &self.max_age {
            let lived = now_ms.saturating_sub(meta.creation_date).max(0) as u128;
            out.push((format!("[max_age: {text}]"), lived >= age.as_millis()));
        }
        if let Some(n) = self.max_docs {
            out.push((format!("[max_docs: {n}]"), meta.doc_count() >= n));
        }
        if let Some((text, bytes)) = &self.max_size {
            out.push((format!("[max_size: {text}]"), meta.size_bytes() >= *bytes));
        }
        if let Some((text, bytes)) = &self.max_primary_shard_size {
            let largest = meta
                .shards
                .values()
                .map(|c| c.size_bytes)
                .max()
                .unwrap_or(0);
            out.push((
                format!("[max_primary_shard_size: {text}]"),
                largest >= *bytes,
            ));
        }
        out
    }
}

/// The next index name: `logs-000001` → `logs-000002` (the number's width is kept).
pub fn next_index_name(old: &str) -> Result<String, WriterError> {
    let digits = old.len() - old.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, num) = old.split_at(old.len() - digits);
    if digits == 0 || !stem.ends_with('-') {
        return Err(WriterError::BadRequest(format!(
            "index name [{old}] does not match pattern '^.*-\\d+$'"
        )));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| WriterError::BadRequest(format!("index name [{old}]: number too large")))?;
    Ok(format!("{stem}{:0width$}", n + 1, width = digits))
}

/// What a rollover request asked for.
#[derive(Debug, Default)]
pub struct RolloverRequest {
    pub new_index: Option<String>,
    pub conditions: Conditions,
    /// The new index's create body (`settings`, `mappings`, `aliases`).
    pub create_body: Value,
    pub dry_run: bool,
}

impl RolloverRequest {
    /// From the request body (`conditions`, `settings`, `mappings`, `aliases`).
    pub fn parse(
        new_index: Option<String>,
        body: Option<&Value>,
        dry_run: bool,
    ) -> Result<RolloverRequest, WriterError> {
        let empty = Value::Object(Map::new());
        let body = body.unwrap_or(&empty);
        let o = body
            .as_object()
            .ok_or_else(|| WriterError::BadRequest("request body must be an object".into()))?;
        if let Some(k) = o.keys().find(|k| {
            !matches!(
                k.as_str(),
                "conditions" | "settings" | "mappings" | "aliases"
            )
        }) {
            return Err(WriterError::BadRequest(format!(
                "[rollover] unknown field [{k}]"
            )));
        }
        let mut create_body = body.clone();
        if let Some(c) = create_body.as_object_mut() {
            c.remove("conditions");
        }
        Ok(RolloverRequest {
            new_index,
            conditions: Conditions::parse(body.get("conditions"))?,
            create_body,
            dry_run,
        })
    }
}

impl Writer {
    /// Rolls `alias` over. Returns OpenSearch's answer (`old_index`, `new_index`,
    /// `rolled_over`, `conditions`, ...).
    #[instrument(skip(self, req), fields(dry_run = req.dry_run))]
    pub async fn rollover(&self, alias: &str, req: &RolloverRequest) -> Result<Value, WriterError> {
        // Resolve the alias.
        let table = self.metastore.aliases();
        let Some(members) = table.aliases.get(alias) else {
            if self.metastore.get_index(alias).is_some() {
                return Err(WriterError::BadRequest(format!(
                    "rollover target [{alias}] is a [concrete index] but one of [alias] was expected"
                )));
            }
            return Err(MetastoreError::AliasNotFound(alias.to_string()).into());
        };
        let target = self
            .metastore
            .write_target(alias)?
            .ok_or_else(|| MetastoreError::AliasNotFound(alias.to_string()))?;
        let old_spec = members.get(&target.index).cloned().unwrap_or_default();
        let old = self
            .metastore
            .get_index(&target.index)
            .ok_or_else(|| MetastoreError::IndexNotFound(target.index.clone()))?;
        // Name the new index.
        let new_name = match &req.new_index {
            Some(n) => n.clone(),
            None => next_index_name(&old.name)?,
        };
        // Check the conditions.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let results = req.conditions.evaluate(&old, now_ms);
        let met = req.conditions.is_empty() || results.iter().any(|(_, ok)| *ok);
        let answer = |rolled: bool| {
            json!({
                "acknowledged": rolled,
                "shards_acknowledged": rolled,
                "old_index": old.name,
                "new_index": new_name,
                "rolled_over": rolled,
                "dry_run": req.dry_run,
                "conditions": results.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<String, Value>>(),
            })
        };
        if req.dry_run || !met {
            return Ok(answer(false));
        }
        // Create the new index. One left by an interrupted rollover (empty, not yet in the
        // alias) is taken as it is, so the rollover can be retried.
        match self.create_index(&new_name, &req.create_body).await {
            Ok(_) => {}
            Err(WriterError::Metastore(MetastoreError::IndexAlreadyExists(_)))
                if self.is_unused_rollover_target(&new_name, alias) => {}
            Err(e) => return Err(e),
        }
        // Move the alias: one atomic change of the alias record.
        let actions = if old_spec.is_write_index == Some(true) {
            vec![
                AliasAction::Add {
                    indexes: vec![old.name.clone()],
                    aliases: vec![alias.to_string()],
                    spec: AliasSpec {
                        is_write_index: Some(false),
                        ..old_spec.clone()
                    },
                },
                AliasAction::Add {
                    indexes: vec![new_name.clone()],
                    aliases: vec![alias.to_string()],
                    spec: AliasSpec {
                        is_write_index: Some(true),
                        ..old_spec
                    },
                },
            ]
        } else {
            vec![
                AliasAction::Remove {
                    indexes: vec![old.name.clone()],
                    aliases: vec![alias.to_string()],
                    must_exist: true,
                },
                AliasAction::Add {
                    indexes: vec![new_name.clone()],
                    aliases: vec![alias.to_string()],
                    spec: old_spec,
                },
            ]
        };
        self.metastore.update_aliases(&actions).await?;
        info!(alias, old = %old.name, new = %new_name, "rolled over");
        Ok(answer(true))
    }

    /// An existing index a rollover may adopt: no documents published and not yet a member
    /// of the alias.
    fn is_unused_rollover_target(&self, index: &str, alias: &str) -> bool {
        let in_alias = self
            .metastore
            .aliases()
            .aliases
            .get(alias)
            .is_some_and(|m| m.contains_key(index));
        self.metastore
            .get_index(index)
            .is_some_and(|m| m.doc_count() == 0 && !in_alias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_conditions() {
        assert_eq!(next_index_name("logs-000001").unwrap(), "logs-000002");
        assert_eq!(next_index_name("logs-9").unwrap(), "logs-10");
        assert_eq!(next_index_name("a-b-000999").unwrap(), "a-b-001000");
        assert!(next_index_name("logs").is_err());
        assert!(next_index_name("logs1").is_err());
        let c = Conditions::parse(Some(
            &json!({"max_docs": 10, "max_age": "1h", "max_size": "1kb"}),
        ))
        .unwrap();
        assert_eq!(c.max_docs, Some(10));
        assert_eq!(c.max_size.as_ref().map(|s| s.1), Some(1024));
        assert!(Conditions::parse(Some(&json!({"max_age": "soon"}))).is_err());
        assert!(Conditions::parse(Some(&json!({"max_bananas": 1}))).is_err());
    }
}
