//! Turns a JSON document into a tantivy document of the shard layout, checking each value
//! against the index mapping (a string in a `long` field fails with `mapper_parsing_exception`).

use floe_proto::layout::{is_timestamp, Home, ShardLayout};
use floe_proto::mapping::{for_each_leaf_or_null, FieldMapping, FieldType, Mappings};
use serde_json::{Map, Value};
use tantivy::schema::OwnedValue;
use tantivy::{DateTime, TantivyDocument};

/// Why a document does not fit its mapping (OpenSearch's `mapper_parsing_exception`).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct MapperParsingError(pub String);

/// Builds tantivy documents for one index mapping.
pub struct DocBuilder<'a> {
    layout: &'a ShardLayout,
    mappings: &'a Mappings,
}

/// A built document plus what the writer tracks about it.
pub struct BuiltDoc {
    pub doc: TantivyDocument,
    /// `@timestamp` in nanoseconds, when the document has a date there.
    pub timestamp: Option<i64>,
}

impl<'a> DocBuilder<'a> {
    pub fn new(layout: &'a ShardLayout, mappings: &'a Mappings) -> Self {
        DocBuilder { layout, mappings }
    }

    /// `raw_source` is stored verbatim as `_source`; `source` is its parsed form.
    /// The `_version` is set later by the shard, which knows the previous version.
    pub fn build(
        &self,
        id: &str,
        raw_source: &[u8],
        source: &Map<String, Value>,
    ) -> Result<BuiltDoc, MapperParsingError> {
        let mut out = Homes::default();
        let mut timestamp = None;
        let mut timestamps = Vec::new();
        let mut err = None;
        for_each_leaf_or_null(source, &mut |path, value| {
            if err.is_some() {
                return;
            }
            // Unmapped fields (dynamic: false) stay in _source only.
            let Some(fm) = self.mappings.get(path) else {
                return;
            };
            // An explicit null is indexed as the field's `null_value`, if it has one.
            let value = match (value, &fm.null_value) {
                (Value::Null, Some(substitute)) => substitute,
                (Value::Null, None) => return,
                (v, _) => v,
            };
            // Multi-fields: the same value again under `<path>.<name>`, with their mapping.
            for (name, sub) in &fm.fields {
                if let Ok(v) = convert(sub, value) {
                    let home = self.layout.home(sub);
                    out.push(home, format!("{path}.{name}"), v);
                }
            }
            match convert(fm, value) {
                Ok(OwnedValue::Date(d)) if is_timestamp(path, fm.kind) => {
                    timestamp = Some(d.into_timestamp_nanos());
                    timestamps.push(d);
                }
                Ok(v) => {
                    if let OwnedValue::Str(s) = &v {
                        if let Some(limit) = fm.keyword_subfield {
                            if s.chars().count() <= limit as usize {
                                let home = self.layout.keyword_subfield_home();
                                out.push(home, format!("{path}.keyword"), v.clone());
                            }
                        }
                        if fm.fielddata && fm.kind == FieldType::Text {
                            out.fielddata.push((path.to_string(), v.clone()));
                        }
                    }
                    out.push(self.layout.home(fm), path.to_string(), v);
                }
                Err(reason) => {
                    err = Some(MapperParsingError(format!(
                        "failed to parse field [{path}] of type [{}] in document with id '{id}'. Preview of field's value: '{}'",
                        fm.type_name,
                        preview(value)
                    ) + &reason))
                }
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        let mut doc = TantivyDocument::default();
        doc.add_text(self.layout.id, id);
        doc.add_bytes(self.layout.source, raw_source);
        let homes = [
            (Some(self.layout.text), out.text),
            (Some(self.layout.kw), out.kw),
            (self.layout.kc, out.kc),
            (self.layout.kn, out.kn),
            (self.layout.tf, out.fielddata),
        ];
        for (field, values) in homes {
            if let (Some(field), false) = (field, values.is_empty()) {
                doc.add_field_value(field, &OwnedValue::Object(values));
            }
        }
        for d in timestamps {
            doc.add_date(self.layout.ts, d);
        }
        Ok(BuiltDoc { doc, timestamp })
    }
}

/// A document's values by the JSON field that keeps them ([`Home`]).
#[derive(Default)]
struct Homes {
    text: Vec<(String, OwnedValue)>,
    kw: Vec<(String, OwnedValue)>,
    kc: Vec<(String, OwnedValue)>,
    kn: Vec<(String, OwnedValue)>,
    fielddata: Vec<(String, OwnedValue)>,
}

impl Homes {
    fn push(&mut self, home: Home, path: String, value: OwnedValue) {
        match home {
            Home::Text => self.text.push((path, value)),
            Home::Keyword => self.kw.push((path, value)),
            Home::ColumnOnly => self.kc.push((path, value)),
            Home::IndexOnly => self.kn.push((path, value)),
            Home::SourceOnly => {}
        }
    }
}

fn preview(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    s.chars().take(40).collect()
}

fn convert(fm: &FieldMapping, value: &Value) -> Result<OwnedValue, String> {
    let as_text = || match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match fm.kind {
        // Addresses in canonical text (`::ffff:1.2.3.4` → `1.2.3.4`): what queries look for.
        FieldType::Keyword if fm.type_name == "ip" => value
            .as_str()
            .and_then(|s| s.trim().parse::<std::net::IpAddr>().ok())
            .map(|ip| OwnedValue::Str(ip.to_canonical().to_string()))
            .ok_or_else(|| format!(" ('{}' is not an IP string literal.)", preview(value))),
        FieldType::Text | FieldType::Keyword => as_text().map(OwnedValue::Str).ok_or_default(),
        // Floe keeps `unsigned_long` in a signed column: values past 2^63 - 1 are refused
        // rather than wrapped or clamped.
        FieldType::Long if fm.type_name == "unsigned_long" => {
            let n = match value {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse::<u64>().ok(),
                _ => None,
            }
            .ok_or_else(|| " (not an unsigned long)".to_string())?;
            i64::try_from(n).map(OwnedValue::I64).map_err(|_| {
                " (Floe keeps unsigned_long values up to 9223372036854775807)".to_string()
            })
        }
        FieldType::Long => {
            let n = match value {
                // Whole floats in range only: `1e30` is out of range, not `i64::MAX`.
                Value::Number(n) => n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                        .map(|f| f as i64)
                }),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            n.map(OwnedValue::I64).ok_or_default()
        }
        FieldType::Double => {
            let n = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
                _ => None,
            };
            n.map(|n| OwnedValue::F64(fm.scaled(n))).ok_or_default()
        }
        FieldType::Boolean => {
            let b = match value {
                Value::Bool(b) => Some(*b),
                Value::String(s) if s == "true" => Some(true),
                Value::String(s) if s == "false" || s.is_empty() => Some(false),
                _ => None,
            };
            b.map(OwnedValue::Bool).ok_or_default()
        }
        FieldType::Date => {
            // Read with the mapping's `format` (custom patterns, `epoch_second`, ...).
            let ns = floe_proto::date_format::read_date(fm.format.as_deref(), value);
            ns.map(|ns| OwnedValue::Date(DateTime::from_timestamp_nanos(ns)))
                .ok_or_default()
        }
    }
}

trait OrDefault<T> {
    fn ok_or_default(self) -> Result<T, String>;
}

impl<T> OrDefault<T> for Option<T> {
    fn ok_or_default(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tantivy::Document;

    fn mappings_for(doc: &Value) -> Mappings {
        let mut m = Mappings::default();
        let found = m.discover(doc.as_object().unwrap()).unwrap();
        m.merge(&found);
        m
    }

    #[test]
    fn builds_typed_document() {
        let layout = ShardLayout::new();
        let src = json!({"@timestamp": "2024-01-01T00:00:00Z", "status": 200, "message": "GET /index.html", "ok": true});
        let m = mappings_for(&src);
        let raw = serde_json::to_vec(&src).unwrap();
        let built = DocBuilder::new(&layout, &m)
            .build("1", &raw, src.as_object().unwrap())
            .unwrap();
        assert_eq!(built.timestamp, Some(1_704_067_200_000_000_000));
        let json = built.doc.to_json(&layout.schema);
        assert!(json.contains("\"k\""), "{json}");
        assert!(
            json.contains("message.keyword") || json.contains("\"keyword\""),
            "{json}"
        );
    }

    #[test]
    fn wrong_type_is_a_mapper_parsing_error() {
        let layout = ShardLayout::new();
        let m = mappings_for(&json!({"status": 200}));
        let bad = json!({"status": "abc"});
        let err = DocBuilder::new(&layout, &m)
            .build("7", b"{}", bad.as_object().unwrap())
            .err()
            .unwrap();
        assert!(
            err.0
                .contains("failed to parse field [status] of type [long]"),
            "{}",
            err.0
        );
        // Out of range: refused, never clamped.
        let mut m = Mappings::from_opensearch(
            &json!({"properties": {"n": {"type": "long"}, "u": {"type": "unsigned_long"}}}),
        )
        .unwrap();
        m.dynamic = floe_proto::mapping::Dynamic::Strict;
        for bad in [
            json!({"n": 1e30}),
            json!({"u": -1}),
            json!({"u": 18_446_744_073_709_551_615u64}),
        ] {
            assert!(
                DocBuilder::new(&layout, &m)
                    .build("9", b"{}", bad.as_object().unwrap())
                    .is_err(),
                "{bad}"
            );
        }
        let ok = json!({"n": 4e18, "u": "9223372036854775807"});
        assert!(DocBuilder::new(&layout, &m)
            .build("9", b"{}", ok.as_object().unwrap())
            .is_ok());
        // Numeric strings are coerced, as OpenSearch does.
        let ok = json!({"status": "404"});
        assert!(DocBuilder::new(&layout, &m)
            .build("8", b"{}", ok.as_object().unwrap())
            .is_ok());
    }
}
