//! Field mappings with OpenSearch's semantics: explicit types, dynamic inference, and the
//! nested `properties` JSON form users send and read back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

/// How a field is indexed. Several OpenSearch types share one kind (`integer` → `Long`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Text,
    Keyword,
    Long,
    Double,
    Boolean,
    Date,
}

/// The mapping of one leaf field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMapping {
    pub kind: FieldType,
    /// The OpenSearch type name as declared (`integer`, `float`, `date`, ...).
    pub type_name: String,
    /// For `text` fields: the `ignore_above` of the `.keyword` sub-field, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword_subfield: Option<u32>,
}

impl FieldMapping {
    pub fn of(kind: FieldType) -> Self {
        let type_name = match kind {
            FieldType::Text => "text",
            FieldType::Keyword => "keyword",
            FieldType::Long => "long",
            FieldType::Double => "double",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
        };
        FieldMapping {
            kind,
            type_name: type_name.to_string(),
            keyword_subfield: None,
        }
    }

    /// The mapping OpenSearch's dynamic mapping gives a string: `text` + `.keyword`.
    pub fn dynamic_text() -> Self {
        FieldMapping {
            keyword_subfield: Some(256),
            ..FieldMapping::of(FieldType::Text)
        }
    }
}

/// `dynamic` mapping parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dynamic {
    #[default]
    True,
    False,
    Strict,
}

/// All leaf fields of an index, by dotted path (`request.method`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Mappings {
    #[serde(default)]
    pub dynamic: Dynamic,
    pub fields: BTreeMap<String, FieldMapping>,
}

/// A mapping that cannot be parsed or a value that does not fit its mapping.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MappingError {
    #[error("No handler for type [{type_name}] declared on field [{field}]")]
    UnknownType { field: String, type_name: String },
    #[error("invalid mapping: {0}")]
    Invalid(String),
    #[error("mapping set to strict, dynamic introduction of [{0}] within [_doc] is not allowed")]
    StrictDynamic(String),
}

impl Mappings {
    /// Parses OpenSearch's `{"properties": {...}}` form.
    pub fn from_opensearch(value: &Value) -> Result<Self, MappingError> {
        let mut out = Mappings::default();
        let Some(obj) = value.as_object() else {
            return Err(MappingError::Invalid("mappings must be an object".into()));
        };
        if let Some(d) = obj.get("dynamic") {
            out.dynamic = match d {
                Value::Bool(true) => Dynamic::True,
                Value::Bool(false) => Dynamic::False,
                Value::String(s) if s == "true" => Dynamic::True,
                Value::String(s) if s == "false" => Dynamic::False,
                Value::String(s) if s == "strict" => Dynamic::Strict,
                other => {
                    return Err(MappingError::Invalid(format!(
                        "unknown dynamic value {other}"
                    )))
                }
            };
        }
        if let Some(props) = obj.get("properties") {
            parse_properties("", props, &mut out.fields)?;
        }
        Ok(out)
    }

    /// Renders the nested `{"properties": {...}}` form that `GET /{index}/_mapping` returns.
    pub fn to_opensearch(&self) -> Value {
        let mut root = Map::new();
        for (path, fm) in &self.fields {
            let mut node = &mut root;
            let parts: Vec<&str> = path.split('.').collect();
            for part in &parts[..parts.len() - 1] {
                let entry = node
                    .entry(part.to_string())
                    .or_insert_with(|| json!({"properties": {}}));
                node = entry
                    .get_mut("properties")
                    .and_then(Value::as_object_mut)
                    .expect("object node has properties");
            }
            let mut leaf = json!({"type": fm.type_name});
            if let Some(ignore_above) = fm.keyword_subfield {
                leaf["fields"] =
                    json!({"keyword": {"type": "keyword", "ignore_above": ignore_above}});
            }
            node.insert(parts[parts.len() - 1].to_string(), leaf);
        }
        let mut out = json!({ "properties": root });
        if self.dynamic != Dynamic::True {
            out["dynamic"] = json!(match self.dynamic {
                Dynamic::False => "false",
                Dynamic::Strict => "strict",
                Dynamic::True => "true",
            });
        }
        out
    }

    pub fn get(&self, path: &str) -> Option<&FieldMapping> {
        self.fields.get(path)
    }

    /// Adds fields discovered in a document. Fields already mapped keep their mapping.
    pub fn merge(&mut self, new_fields: &BTreeMap<String, FieldMapping>) {
        for (path, fm) in new_fields {
            self.fields
                .entry(path.clone())
                .or_insert_with(|| fm.clone());
        }
    }

    /// The fields of `source` that are not mapped yet, with the types dynamic mapping gives
    /// them. With `dynamic: false` unknown fields stay unmapped (kept in `_source` only).
    pub fn discover(
        &self,
        source: &Map<String, Value>,
    ) -> Result<BTreeMap<String, FieldMapping>, MappingError> {
        let mut found = BTreeMap::new();
        let mut err = None;
        for_each_leaf(source, &mut |path, value| {
            if err.is_some() || self.fields.contains_key(path) || found.contains_key(path) {
                return;
            }
            // Log shippers often send `@timestamp` as epoch milliseconds: a date, not a long.
            let fm = match value {
                Value::Number(n) if path == crate::layout::TIMESTAMP_PATH && n.is_i64() => {
                    FieldMapping::of(FieldType::Date)
                }
                _ => match infer(value) {
                    Some(fm) => fm,
                    None => return,
                },
            };
            match self.dynamic {
                Dynamic::True => {
                    found.insert(path.to_string(), fm);
                }
                Dynamic::False => {}
                Dynamic::Strict => err = Some(MappingError::StrictDynamic(path.to_string())),
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }
}

fn parse_properties(
    prefix: &str,
    props: &Value,
    out: &mut BTreeMap<String, FieldMapping>,
) -> Result<(), MappingError> {
    let Some(props) = props.as_object() else {
        return Err(MappingError::Invalid("properties must be an object".into()));
    };
    for (name, def) in props {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if let Some(sub) = def.get("properties") {
            parse_properties(&path, sub, out)?;
            continue;
        }
        let type_name = def.get("type").and_then(Value::as_str).unwrap_or("object");
        let kind = match type_name {
            "text" | "match_only_text" => FieldType::Text,
            "keyword" | "constant_keyword" | "wildcard" | "ip" => FieldType::Keyword,
            "long" | "integer" | "short" | "byte" | "unsigned_long" => FieldType::Long,
            "double" | "float" | "half_float" | "scaled_float" => FieldType::Double,
            "boolean" => FieldType::Boolean,
            "date" | "date_nanos" => FieldType::Date,
            "object" => continue,
            other => {
                return Err(MappingError::UnknownType {
                    field: path,
                    type_name: other.to_string(),
                })
            }
        };
        let keyword_subfield = if kind == FieldType::Text {
            def.get("fields").and_then(|f| f.get("keyword")).map(|k| {
                k.get("ignore_above")
                    .and_then(Value::as_u64)
                    .unwrap_or(u32::MAX as u64) as u32
            })
        } else {
            None
        };
        out.insert(
            path,
            FieldMapping {
                kind,
                type_name: type_name.to_string(),
                keyword_subfield,
            },
        );
    }
    Ok(())
}

/// Calls `f(path, value)` for each leaf of a JSON object, flattening nested objects into
/// dotted paths. Array elements are visited one by one under the array's path.
pub fn for_each_leaf(obj: &Map<String, Value>, f: &mut impl FnMut(&str, &Value)) {
    fn walk(prefix: &mut String, value: &Value, f: &mut impl FnMut(&str, &Value)) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let len = prefix.len();
                    if !prefix.is_empty() {
                        prefix.push('.');
                    }
                    prefix.push_str(k);
                    walk(prefix, v, f);
                    prefix.truncate(len);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(prefix, item, f);
                }
            }
            Value::Null => {}
            leaf => f(prefix, leaf),
        }
    }
    let mut prefix = String::new();
    for (k, v) in obj {
        prefix.clear();
        prefix.push_str(k);
        walk(&mut prefix, v, f);
    }
}

/// OpenSearch's dynamic mapping for a JSON leaf.
pub fn infer(value: &Value) -> Option<FieldMapping> {
    match value {
        Value::Bool(_) => Some(FieldMapping::of(FieldType::Boolean)),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(FieldMapping::of(FieldType::Long)),
        Value::Number(_) => Some(FieldMapping {
            type_name: "float".into(),
            ..FieldMapping::of(FieldType::Double)
        }),
        Value::String(s) if looks_like_date(s) => Some(FieldMapping::of(FieldType::Date)),
        Value::String(_) => Some(FieldMapping::dynamic_text()),
        _ => None,
    }
}

fn looks_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b[..4].iter().all(u8::is_ascii_digit)
        && parse_date_str(s).is_some()
}

/// Parses a date as OpenSearch's `strict_date_optional_time||epoch_millis` would: RFC 3339,
/// `yyyy-MM-dd`, `yyyy-MM-ddTHH:mm:ss[.fff]` (UTC), or an integer of epoch milliseconds.
/// Returns nanoseconds since the epoch.
pub fn parse_date(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().map(|ms| ms.saturating_mul(1_000_000)),
        Value::String(s) => parse_date_str(s),
        _ => None,
    }
}

/// See [`parse_date`]; for strings only.
pub fn parse_date_str(s: &str) -> Option<i64> {
    if let Ok(dt) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(dt.unix_timestamp_nanos() as i64);
    }
    // A trailing `Z` or offset with a space, or no zone at all: try the common local forms.
    let fmt_t = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let fmt_t_frac =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]");
    let fmt_space = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    for fmt in [fmt_t, fmt_t_frac, fmt_space] {
        if let Ok(p) = PrimitiveDateTime::parse(s, fmt) {
            return Some(p.assume_utc().unix_timestamp_nanos() as i64);
        }
    }
    if let Ok(d) = Date::parse(s, format_description!("[year]-[month]-[day]")) {
        return Some(d.midnight().assume_utc().unix_timestamp_nanos() as i64);
    }
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        return s.parse::<i64>().ok().map(|ms| ms.saturating_mul(1_000_000));
    }
    None
}

/// Formats nanoseconds since the epoch as RFC 3339 with millisecond precision.
pub fn format_date(nanos: i64) -> String {
    let dt = OffsetDateTime::from_unix_timestamp_nanos(nanos as i128)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    dt.format(fmt).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_inference_matches_opensearch() {
        let doc = json!({"a": 1, "b": 1.5, "c": true, "d": "2024-01-02T03:04:05Z", "e": "hello",
                         "o": {"x": "2024-01-02"}, "arr": [1, 2], "n": null});
        let found = Mappings::default()
            .discover(doc.as_object().unwrap())
            .unwrap();
        assert_eq!(found["a"].kind, FieldType::Long);
        assert_eq!(found["b"].kind, FieldType::Double);
        assert_eq!(found["c"].kind, FieldType::Boolean);
        assert_eq!(found["d"].kind, FieldType::Date);
        assert_eq!(found["e"], FieldMapping::dynamic_text());
        assert_eq!(found["o.x"].kind, FieldType::Date);
        assert_eq!(found["arr"].kind, FieldType::Long);
        assert!(!found.contains_key("n"));
        // `@timestamp` in epoch milliseconds is a date; other numbers stay numbers.
        let doc = json!({"@timestamp": 1_700_000_000_000i64, "ts": 1_700_000_000_000i64});
        let found = Mappings::default()
            .discover(doc.as_object().unwrap())
            .unwrap();
        assert_eq!(found["@timestamp"].kind, FieldType::Date);
        assert_eq!(found["ts"].kind, FieldType::Long);
    }

    #[test]
    fn explicit_mapping_round_trips() {
        let m = json!({"properties": {"status": {"type": "integer"},
            "msg": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
            "req": {"properties": {"method": {"type": "keyword"}}}}});
        let parsed = Mappings::from_opensearch(&m).unwrap();
        assert_eq!(parsed.get("status").unwrap().kind, FieldType::Long);
        assert_eq!(parsed.get("req.method").unwrap().kind, FieldType::Keyword);
        assert_eq!(parsed.to_opensearch(), m);
        let bad = json!({"properties": {"x": {"type": "geo_shape_nope"}}});
        assert!(matches!(
            Mappings::from_opensearch(&bad),
            Err(MappingError::UnknownType { .. })
        ));
    }

    #[test]
    fn strict_rejects_new_fields() {
        let m = Mappings::from_opensearch(
            &json!({"dynamic": "strict", "properties": {"a": {"type": "long"}}}),
        )
        .unwrap();
        assert!(m
            .discover(json!({"a": 1}).as_object().unwrap())
            .unwrap()
            .is_empty());
        assert!(m.discover(json!({"b": 1}).as_object().unwrap()).is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date_str("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(parse_date_str("1970-01-02"), Some(86_400_000_000_000));
        assert_eq!(parse_date(&json!(1000)), Some(1_000_000_000));
        assert_eq!(parse_date_str("not a date"), None);
        assert_eq!(format_date(1_500_000_000), "1970-01-01T00:00:01.500Z");
        assert!(!looks_like_date("2024"));
    }
}
