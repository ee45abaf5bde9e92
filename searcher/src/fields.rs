//! `fields` and `docvalue_fields` of a search: values of mapped fields per hit, as lists,
//! read from the document's source (one copy of the data: the bucket holds no separate
//! doc values to fetch for a page of hits). Dates are rendered in the requested `format`
//! (`epoch_millis`, `epoch_second`, or ISO-8601 with milliseconds by default); multi-fields
//! (`title.raw`) answer with their parent's values.

use floe_proto::date_format::with_format;
use floe_proto::mapping::{format_date, FieldMapping, FieldType, Mappings};
use serde_json::{Map, Value};

use crate::SearchError;

/// One requested field: a name or `*` pattern, and a date format.
#[derive(Clone, Debug)]
pub struct FieldRequest {
    pattern: String,
    format: Option<String>,
}

/// Parses `fields` / `docvalue_fields` (strings or `{"field": .., "format": ..}`).
pub fn parse(v: Option<&Value>) -> Result<Vec<FieldRequest>, SearchError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let items = match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => Ok(FieldRequest {
                pattern: s.clone(),
                format: None,
            }),
            Value::Object(o) => Ok(FieldRequest {
                pattern: o
                    .get("field")
                    .and_then(Value::as_str)
                    .ok_or_else(|| SearchError::Parsing("[fields] entries need a [field]".into()))?
                    .to_string(),
                format: o.get("format").and_then(Value::as_str).map(str::to_string),
            }),
            other => Err(SearchError::Parsing(format!(
                "[fields] malformed entry {other}"
            ))),
        })
        .collect()
}

/// Every leaf value of `source` by dotted path (arrays flattened).
fn leaves(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, child, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|item| leaves(prefix, item, out)),
        Value::Null => {}
        leaf => out.push((prefix.to_string(), leaf.clone())),
    }
}

/// A date from `_source` (read in the mapping's `format`) written in the requested format,
/// else in the mapping's, else as ISO 8601.
fn render_date(v: &Value, mapped: Option<&str>, requested: Option<&str>) -> Value {
    let Some(ns) = floe_proto::date_format::read_date(mapped, v) else {
        return v.clone();
    };
    let ms = ns.div_euclid(1_000_000);
    requested
        .or(mapped)
        .and_then(|spec| with_format(spec, |f| f.write(ms, &jiff::tz::TimeZone::UTC)))
        .map(Value::String)
        .unwrap_or_else(|| Value::String(format_date(ns)))
}

/// The mapping of `.keyword` sub-fields.
static KEYWORD: std::sync::LazyLock<FieldMapping> =
    std::sync::LazyLock::new(|| FieldMapping::of(FieldType::Keyword));

/// The `fields` section of a hit (empty when nothing matched).
pub fn collect(
    source: &Value,
    mappings: &Mappings,
    requests: &[FieldRequest],
) -> Map<String, Value> {
    let mut values = Vec::new();
    leaves("", source, &mut values);
    // Each mapped path with its values; multi-fields take their parent's.
    let mut by_path: Vec<(String, &FieldMapping, Vec<Value>)> = Vec::new();
    for (path, fm) in &mappings.fields {
        let vals: Vec<Value> = values
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .collect();
        if vals.is_empty() {
            continue;
        }
        if fm.keyword_subfield.is_some() {
            by_path.push((format!("{path}.keyword"), &KEYWORD, vals.clone()));
        }
        for (name, sub) in &fm.fields {
            by_path.push((format!("{path}.{name}"), sub, vals.clone()));
        }
        by_path.push((path.clone(), fm, vals));
    }
    let mut out = Map::new();
    for req in requests {
        for (path, fm, vals) in &by_path {
            if out.contains_key(path) || !floe_metastore::matches_pattern(&req.pattern, path) {
                continue;
            }
            let rendered: Vec<Value> = vals
                .iter()
                .map(|v| match fm.kind {
                    FieldType::Date => render_date(v, fm.format.as_deref(), req.format.as_deref()),
                    _ => v.clone(),
                })
                .collect();
            out.insert(path.clone(), Value::Array(rendered));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_by_pattern_with_date_formats() {
        let m = Mappings::from_opensearch(&json!({"properties": {
            "@timestamp": {"type": "date"},
            "msg": {"type": "text", "fields": {"keyword": {"type": "keyword"}}},
            "tags": {"type": "keyword"},
            "user": {"properties": {"name": {"type": "keyword"}}}
        }}))
        .unwrap();
        let src = json!({"@timestamp": "2024-05-01T00:00:00Z", "msg": "hi", "tags": ["a", "b"],
            "user": {"name": "ann"}, "unmapped": 1});
        let reqs = parse(Some(
            &json!(["*", {"field": "@timestamp", "format": "epoch_millis"}]),
        ))
        .unwrap();
        let f = collect(&src, &m, &reqs);
        assert_eq!(f["@timestamp"], json!(["2024-05-01T00:00:00.000Z"]));
        assert_eq!(f["msg"], json!(["hi"]));
        assert_eq!(f["msg.keyword"], json!(["hi"]));
        assert_eq!(f["tags"], json!(["a", "b"]));
        assert_eq!(f["user.name"], json!(["ann"]));
        assert!(!f.contains_key("unmapped"));
        let only = collect(
            &src,
            &m,
            &parse(Some(
                &json!([{"field": "@timestamp", "format": "epoch_millis"}]),
            ))
            .unwrap(),
        );
        assert_eq!(
            Value::Object(only),
            json!({"@timestamp": ["1714521600000"]})
        );
    }
}
