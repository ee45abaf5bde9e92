//! `_field_caps`: what each field is across a set of indexes (its type, whether it can be
//! searched and aggregated), from their mappings. Dashboards builds index patterns from it.

use std::collections::BTreeMap;

use floe_metastore::matches_pattern;
use floe_proto::layout::{Home, ShardLayout};
use floe_proto::mapping::FieldMapping;
use floe_proto::IndexMeta;
use serde_json::{json, Map, Value};

/// (type, searchable, aggregatable) of one field in one index.
type Caps = (String, bool, bool);

/// (searchable, aggregatable, indices) of one type of a field across indexes.
type Merged = (bool, bool, Vec<String>);

/// Meta fields every index has, as OpenSearch lists them.
const META_FIELDS: &[(&str, bool, bool)] = &[
    ("_id", true, true),
    ("_index", true, true),
    ("_source", false, false),
    ("_seq_no", true, true),
    ("_version", false, false),
    ("_routing", true, true),
    ("_ignored", true, false),
    ("_field_names", true, false),
];

/// The fields of one index: leaves, `.keyword` sub-fields, parent objects, meta fields.
fn fields_of(meta: &IndexMeta) -> BTreeMap<String, Caps> {
    let mut out = BTreeMap::new();
    for (name, searchable, aggregatable) in META_FIELDS {
        out.insert(
            name.to_string(),
            (name.to_string(), *searchable, *aggregatable),
        );
    }
    let layout = ShardLayout::of(&meta.settings);
    // As the layout keeps the field: searchable unless in `_source` only, aggregatable with
    // a column (text: only with `fielddata`).
    let caps = |path: &str, fm: &FieldMapping| -> Caps {
        let (searchable, aggregatable) = match layout.home(fm) {
            Home::SourceOnly => (false, false),
            Home::IndexOnly => (true, false),
            Home::Text => (
                true,
                layout.fielddata_column(&meta.mappings, path).is_some(),
            ),
            Home::Keyword | Home::ColumnOnly => (true, true),
        };
        (fm.type_name.clone(), searchable, aggregatable)
    };
    for (path, fm) in &meta.mappings.fields {
        out.insert(path.clone(), caps(path, fm));
        if fm.keyword_subfield.is_some() {
            out.insert(format!("{path}.keyword"), ("keyword".into(), true, true));
        }
        for (name, sub) in &fm.fields {
            let sub_path = format!("{path}.{name}");
            out.insert(sub_path.clone(), caps(&sub_path, sub));
        }
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('.') {
            out.entry(p.to_string())
                .or_insert_with(|| ("object".into(), false, false));
            parent = p;
        }
    }
    out
}

/// The `_field_caps` response for `indexes` and the `fields` patterns (`*` wildcards).
pub fn field_caps(indexes: &[IndexMeta], patterns: &[String], include_unmapped: bool) -> Value {
    let wanted = |f: &str| patterns.iter().any(|p| matches_pattern(p, f));
    // field → type → (searchable, aggregatable, indices)
    let mut by_field: BTreeMap<String, BTreeMap<String, Merged>> = BTreeMap::new();
    let per_index: Vec<(&str, BTreeMap<String, Caps>)> = indexes
        .iter()
        .map(|m| (m.name.as_str(), fields_of(m)))
        .collect();
    for (index, fields) in &per_index {
        for (field, (typ, searchable, aggregatable)) in fields {
            if !wanted(field) {
                continue;
            }
            let entry = by_field
                .entry(field.clone())
                .or_default()
                .entry(typ.clone())
                .or_insert((true, true, Vec::new()));
            entry.0 &= *searchable;
            entry.1 &= *aggregatable;
            entry.2.push(index.to_string());
        }
    }
    if include_unmapped {
        for (field, types) in by_field.iter_mut() {
            let missing: Vec<String> = per_index
                .iter()
                .filter(|(_, fields)| !fields.contains_key(field))
                .map(|(i, _)| i.to_string())
                .collect();
            if !missing.is_empty() {
                types.insert("unmapped".into(), (false, false, missing));
            }
        }
    }
    let fields: Map<String, Value> = by_field
        .into_iter()
        .map(|(field, types)| {
            let several = types.len() > 1;
            let rendered: Map<String, Value> = types
                .into_iter()
                .map(|(typ, (searchable, aggregatable, indices))| {
                    let mut caps = json!({"type": typ, "searchable": searchable,
                        "aggregatable": aggregatable});
                    if several {
                        caps["indices"] = json!(indices);
                    }
                    (typ, caps)
                })
                .collect();
            (field, Value::Object(rendered))
        })
        .collect();
    let names: Vec<&str> = indexes.iter().map(|m| m.name.as_str()).collect();
    json!({"indices": names, "fields": fields})
}
