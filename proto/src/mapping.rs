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
    /// Other multi-fields (`fields: {raw: {type: keyword}}`): the same value indexed again
    /// under `<path>.<name>` with that mapping.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldMapping>,
    /// Date `format`, when not the default (`epoch_second` reads numbers as seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `null_value`: indexed in place of an explicit `null` (the `_source` keeps `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_value: Option<Value>,
    /// `index: false`: no inverted index. Other types are still searched through their
    /// column (as OpenSearch does with doc values); a `text` field is not searchable.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub index: bool,
    /// `doc_values: false`: no column, so no sorting or aggregations on the field.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub doc_values: bool,
    /// `fielddata: true` on a `text` field: its tokens also go into a column, so the field
    /// can be aggregated and sorted on (by token), as OpenSearch's field data allows.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fielddata: bool,
    /// `scaled_float`'s `scaling_factor`: values are rounded to a multiple of its inverse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_factor: Option<serde_json::Number>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
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
            fields: BTreeMap::new(),
            format: None,
            null_value: None,
            index: true,
            doc_values: true,
            fielddata: false,
            scaling_factor: None,
        }
    }

    /// Why `new` cannot replace this mapping of the same field (`PUT _mapping`), if it
    /// cannot: the parameters that decide how values were indexed are fixed.
    pub fn conflict(&self, path: &str, new: &FieldMapping) -> Option<String> {
        if self.kind != new.kind {
            return Some(format!(
                "mapper [{path}] cannot be changed from type [{}] to [{}]",
                self.type_name, new.type_name
            ));
        }
        let fixed = [
            ("index", json!(self.index), json!(new.index)),
            ("doc_values", json!(self.doc_values), json!(new.doc_values)),
            ("fielddata", json!(self.fielddata), json!(new.fielddata)),
            (
                "scaling_factor",
                json!(self.scaling_factor),
                json!(new.scaling_factor),
            ),
        ];
        fixed.into_iter().find(|(_, a, b)| a != b).map(|(name, a, b)| {
            format!("Mapper for [{path}] conflicts with existing mapper:\n\tCannot update parameter [{name}] from [{a}] to [{b}]")
        })
    }

    /// `scaled_float`: the value as indexed (rounded to the scaling factor).
    pub fn scaled(&self, v: f64) -> f64 {
        match self
            .scaling_factor
            .as_ref()
            .and_then(serde_json::Number::as_f64)
        {
            Some(f) if f > 0.0 => (v * f).round() / f,
            _ => v,
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
    /// New fields only where a dynamic template maps them; others are refused.
    StrictAllowTemplates,
}

/// One of `dynamic_templates`: how new fields that match it are mapped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DynamicTemplate {
    pub name: String,
    /// Glob on the field's own name (`*_ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmatch: Option<String>,
    /// Glob on the full dotted path (`user.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_unmatch: Option<String>,
    /// `string`, `long`, `double`, `boolean`, `date` or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_mapping_type: Option<String>,
    /// The mapping given, as sent (`{name}` and `{dynamic_type}` are filled in when applied).
    pub mapping: Value,
}

/// `*` wildcards.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl DynamicTemplate {
    fn parse(entry: &Value) -> Result<DynamicTemplate, MappingError> {
        let (name, body) = entry
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
            .ok_or_else(|| {
                MappingError::Invalid(
                    "each dynamic template must be an object with one name".into(),
                )
            })?;
        let s = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
        if body.get("match_pattern").and_then(Value::as_str) == Some("regex") {
            return Err(MappingError::Invalid(format!(
                "dynamic template [{name}]: match_pattern [regex] is not supported by Floe; use * wildcards"
            )));
        }
        let mapping = body.get("mapping").cloned().ok_or_else(|| {
            MappingError::Invalid(format!("dynamic template [{name}] has no mapping"))
        })?;
        Ok(DynamicTemplate {
            name: name.clone(),
            r#match: s("match"),
            unmatch: s("unmatch"),
            path_match: s("path_match"),
            path_unmatch: s("path_unmatch"),
            match_mapping_type: s("match_mapping_type"),
            mapping,
        })
    }

    fn to_opensearch(&self) -> Value {
        let mut body = Map::new();
        for (k, v) in [
            ("match", &self.r#match),
            ("unmatch", &self.unmatch),
            ("path_match", &self.path_match),
            ("path_unmatch", &self.path_unmatch),
            ("match_mapping_type", &self.match_mapping_type),
        ] {
            if let Some(v) = v {
                body.insert(k.into(), json!(v));
            }
        }
        body.insert("mapping".into(), self.mapping.clone());
        json!({ self.name.clone(): body })
    }

    /// The mapping of a new field at `path` whose detected type is `detected`, if this
    /// template applies to it.
    fn apply(
        &self,
        path: &str,
        detected: &FieldMapping,
    ) -> Option<Result<FieldMapping, MappingError>> {
        let leaf = path.rsplit('.').next().unwrap_or(path);
        let dynamic_type = match detected.kind {
            FieldType::Text | FieldType::Keyword => "string",
            FieldType::Long => "long",
            FieldType::Double => "double",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
        };
        let ok = self
            .r#match
            .as_deref()
            .is_none_or(|p| glob_matches(p, leaf))
            && self
                .unmatch
                .as_deref()
                .is_none_or(|p| !glob_matches(p, leaf))
            && self
                .path_match
                .as_deref()
                .is_none_or(|p| glob_matches(p, path))
            && self
                .path_unmatch
                .as_deref()
                .is_none_or(|p| !glob_matches(p, path))
            && self
                .match_mapping_type
                .as_deref()
                .is_none_or(|t| t == "*" || t == dynamic_type);
        if !ok {
            return None;
        }
        let filled = serde_json::to_string(&self.mapping)
            .unwrap_or_default()
            .replace("{name}", leaf)
            .replace("{dynamic_type}", dynamic_type);
        let mut def: Value = serde_json::from_str(&filled).unwrap_or(Value::Null);
        if def.get("type").is_none() {
            def["type"] = json!(detected.type_name);
        }
        Some(parse_field(path, &def).map(|fm| fm.unwrap_or_else(|| detected.clone())))
    }
}

/// All leaf fields of an index, by dotted path (`request.method`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Mappings {
    #[serde(default)]
    pub dynamic: Dynamic,
    pub fields: BTreeMap<String, FieldMapping>,
    /// `dynamic_templates`, in order: the first that matches a new field maps it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dynamic_templates: Vec<DynamicTemplate>,
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
                Value::String(s) if s == "strict_allow_templates" => Dynamic::StrictAllowTemplates,
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
        match obj.get("dynamic_templates") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                out.dynamic_templates = list
                    .iter()
                    .map(DynamicTemplate::parse)
                    .collect::<Result<_, _>>()?
            }
            Some(_) => {
                return Err(MappingError::Invalid(
                    "dynamic_templates must be an array".into(),
                ))
            }
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
            node.insert(parts[parts.len() - 1].to_string(), leaf_json(fm));
        }
        let mut out = json!({ "properties": root });
        if self.dynamic != Dynamic::True {
            out["dynamic"] = json!(match self.dynamic {
                Dynamic::False => "false",
                Dynamic::Strict => "strict",
                Dynamic::StrictAllowTemplates => "strict_allow_templates",
                Dynamic::True => "true",
            });
        }
        if !self.dynamic_templates.is_empty() {
            out["dynamic_templates"] = self
                .dynamic_templates
                .iter()
                .map(DynamicTemplate::to_opensearch)
                .collect();
        }
        out
    }

    /// Paths of the `date` fields kept in the keyword field's columns (every date field but
    /// the `@timestamp` of the typed column): the writer records their bounds per commit.
    pub fn date_fields(&self) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(path, fm)| {
                fm.kind == FieldType::Date && !crate::layout::is_timestamp(path, fm.kind)
            })
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// The mapping of `path`: a field, or a multi-field of one (`title.raw`).
    pub fn get(&self, path: &str) -> Option<&FieldMapping> {
        if let Some(fm) = self.fields.get(path) {
            return Some(fm);
        }
        let (parent, name) = path.rsplit_once('.')?;
        self.fields.get(parent)?.fields.get(name)
    }

    /// `PUT _mapping`: new fields are added, existing ones gain new multi-fields, dynamic
    /// templates replace those of the same name (others are appended), and `dynamic`
    /// changes when `sets_dynamic`. Type changes are refused before this is called.
    pub fn put(&mut self, new: &Mappings, sets_dynamic: bool) {
        for (path, fm) in &new.fields {
            match self.fields.get_mut(path) {
                Some(old) => {
                    for (name, sub) in &fm.fields {
                        old.fields
                            .entry(name.clone())
                            .or_insert_with(|| sub.clone());
                    }
                    if old.keyword_subfield.is_none() {
                        old.keyword_subfield = fm.keyword_subfield;
                    }
                }
                None => {
                    self.fields.insert(path.clone(), fm.clone());
                }
            }
        }
        for t in &new.dynamic_templates {
            match self.dynamic_templates.iter_mut().find(|o| o.name == t.name) {
                Some(old) => *old = t.clone(),
                None => self.dynamic_templates.push(t.clone()),
            }
        }
        if sets_dynamic {
            self.dynamic = new.dynamic;
        }
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
            let Some(detected) = infer_for(path, value) else {
                return;
            };
            let templated = match self
                .dynamic_templates
                .iter()
                .find_map(|t| t.apply(path, &detected))
            {
                Some(Ok(fm)) => Some(fm),
                Some(Err(e)) => {
                    err = Some(e);
                    return;
                }
                None => None,
            };
            match (self.dynamic, templated) {
                (Dynamic::True | Dynamic::StrictAllowTemplates, Some(fm)) => {
                    found.insert(path.to_string(), fm);
                }
                (Dynamic::True, None) => {
                    found.insert(path.to_string(), detected);
                }
                (Dynamic::False, _) => {}
                (Dynamic::Strict | Dynamic::StrictAllowTemplates, _) => {
                    err = Some(MappingError::StrictDynamic(path.to_string()))
                }
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
        if let Some(fm) = parse_field(&path, def)? {
            out.insert(path, fm);
        }
    }
    Ok(())
}

/// One field's definition (`{"type": .., "fields": {..}, "format": ..}`); `None` for an
/// object without properties.
fn parse_field(path: &str, def: &Value) -> Result<Option<FieldMapping>, MappingError> {
    let type_name = def.get("type").and_then(Value::as_str).unwrap_or("object");
    let kind = match type_name {
        "text" | "match_only_text" => FieldType::Text,
        "keyword" | "constant_keyword" | "wildcard" | "ip" => FieldType::Keyword,
        "long" | "integer" | "short" | "byte" | "unsigned_long" => FieldType::Long,
        "double" | "float" | "half_float" | "scaled_float" => FieldType::Double,
        "boolean" => FieldType::Boolean,
        "date" | "date_nanos" => FieldType::Date,
        "object" | "nested" | "flat_object" => return Ok(None),
        other => {
            return Err(MappingError::UnknownType {
                field: path.to_string(),
                type_name: other.to_string(),
            })
        }
    };
    let mut fm = FieldMapping {
        type_name: type_name.to_string(),
        format: def
            .get("format")
            .and_then(Value::as_str)
            .map(str::to_string),
        null_value: def.get("null_value").filter(|v| !v.is_null()).cloned(),
        index: flag(path, def, "index", true)?,
        doc_values: flag(path, def, "doc_values", true)?,
        fielddata: flag(path, def, "fielddata", false)?,
        scaling_factor: match def.get("scaling_factor") {
            Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f > 0.0) => Some(n.clone()),
            Some(other) => {
                return Err(MappingError::Invalid(format!(
                    "[scaling_factor] of field [{path}] must be a positive number, got [{other}]"
                )))
            }
            None if type_name == "scaled_float" => {
                return Err(MappingError::Invalid(format!(
                    "Field [scaling_factor] is required for field [{path}] of type [scaled_float]"
                )))
            }
            None => None,
        },
        ..FieldMapping::of(kind)
    };
    if let (Some(spec), FieldType::Date) = (&fm.format, kind) {
        crate::date_format::DateFormat::parse(spec).map_err(|e| {
            MappingError::Invalid(format!("Error parsing [format] on field [{path}]: {e}"))
        })?;
    }
    if fm.fielddata && kind != FieldType::Text {
        return Err(MappingError::Invalid(format!(
            "unknown parameter [fielddata] on mapper [{path}] of type [{type_name}]"
        )));
    }
    if let Some(v) = &fm.null_value {
        if matches!(v, Value::Object(_) | Value::Array(_)) {
            return Err(MappingError::Invalid(format!(
                "[null_value] of field [{path}] must be a single value"
            )));
        }
    }
    if let Some(Value::Object(subs)) = def.get("fields") {
        for (name, sub) in subs {
            let sub_path = format!("{path}.{name}");
            let is_keyword = sub.get("type").and_then(Value::as_str) == Some("keyword");
            if kind == FieldType::Text && name == "keyword" && is_keyword {
                fm.keyword_subfield = Some(
                    sub.get("ignore_above")
                        .and_then(Value::as_u64)
                        .unwrap_or(u32::MAX as u64) as u32,
                );
            } else if let Some(sub_fm) = parse_field(&sub_path, sub)? {
                fm.fields.insert(name.clone(), sub_fm);
            }
        }
    }
    Ok(Some(fm))
}

/// A boolean mapping parameter (`true`/`false`, or their strings, as OpenSearch takes).
fn flag(path: &str, def: &Value, name: &str, default: bool) -> Result<bool, MappingError> {
    match def.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(other) => Err(MappingError::Invalid(format!(
            "Failed to parse value [{other}] as only [true] or [false] are allowed for [{name}] of field [{path}]"
        ))),
    }
}

/// The `properties` entry of one field, as `GET _mapping` shows it.
fn leaf_json(fm: &FieldMapping) -> Value {
    let mut leaf = json!({"type": fm.type_name});
    if !fm.index {
        leaf["index"] = json!(false);
    }
    if !fm.doc_values {
        leaf["doc_values"] = json!(false);
    }
    if fm.fielddata {
        leaf["fielddata"] = json!(true);
    }
    if let Some(f) = &fm.scaling_factor {
        leaf["scaling_factor"] = json!(f);
    }
    if let Some(f) = &fm.format {
        leaf["format"] = json!(f);
    }
    if let Some(n) = &fm.null_value {
        leaf["null_value"] = n.clone();
    }
    let mut subs = Map::new();
    if let Some(ignore_above) = fm.keyword_subfield {
        subs.insert(
            "keyword".into(),
            json!({"type": "keyword", "ignore_above": ignore_above}),
        );
    }
    for (name, sub) in &fm.fields {
        subs.insert(name.clone(), leaf_json(sub));
    }
    if !subs.is_empty() {
        leaf["fields"] = Value::Object(subs);
    }
    leaf
}

/// What dynamic mapping gives a new leaf at `path` (`@timestamp` numbers are dates).
fn infer_for(path: &str, value: &Value) -> Option<FieldMapping> {
    match value {
        Value::Number(n) if path == crate::layout::TIMESTAMP_PATH && n.is_i64() => {
            Some(FieldMapping::of(FieldType::Date))
        }
        _ => infer(value),
    }
}

/// Calls `f(path, value)` for each leaf of a JSON object, flattening nested objects into
/// dotted paths. Array elements are visited one by one under the array's path.
pub fn for_each_leaf(obj: &Map<String, Value>, f: &mut impl FnMut(&str, &Value)) {
    walk_leaves(obj, false, f)
}

/// [`for_each_leaf`], visiting explicit `null`s too (for `null_value`).
pub fn for_each_leaf_or_null(obj: &Map<String, Value>, f: &mut impl FnMut(&str, &Value)) {
    walk_leaves(obj, true, f)
}

fn walk_leaves(obj: &Map<String, Value>, nulls: bool, f: &mut impl FnMut(&str, &Value)) {
    fn walk(prefix: &mut String, value: &Value, nulls: bool, f: &mut impl FnMut(&str, &Value)) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let len = prefix.len();
                    if !prefix.is_empty() {
                        prefix.push('.');
                    }
                    prefix.push_str(k);
                    walk(prefix, v, nulls, f);
                    prefix.truncate(len);
                }
            }
            Value::Array(items) => {
                for item in items {
                    walk(prefix, item, nulls, f);
                }
            }
            Value::Null if !nulls => {}
            leaf => f(prefix, leaf),
        }
    }
    let mut prefix = String::new();
    for (k, v) in obj {
        prefix.clear();
        prefix.push_str(k);
        walk(&mut prefix, v, nulls, f);
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
    fn dynamic_templates_and_multi_fields() {
        let m = Mappings::from_opensearch(&json!({
            "dynamic_templates": [
                {"named": {"match": "*_id", "unmatch": "skip_*", "mapping": {"type": "keyword", "fields": {"{name}_txt": {"type": "text"}}}}},
                {"deep": {"path_match": "a.*.c", "match_mapping_type": "long", "mapping": {"type": "{dynamic_type}"}}}
            ],
            "properties": {"t": {"type": "text", "fields": {"keyword": {"type": "keyword"}, "raw": {"type": "keyword", "ignore_above": 5}}}}
        }))
        .unwrap();
        assert_eq!(m.get("t.raw").unwrap().kind, FieldType::Keyword);
        assert!(m.get("t").unwrap().keyword_subfield.is_some());
        assert!(m.get("t.nope").is_none());
        let found = m
            .discover(
                json!({"user_id": "x", "skip_id": "y", "a": {"b": {"c": 5}}, "z": 1.5})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        let user = &found["user_id"];
        assert_eq!(
            (user.kind, user.fields["user_id_txt"].kind),
            (FieldType::Keyword, FieldType::Text)
        );
        assert_eq!(
            found["skip_id"].kind,
            FieldType::Text,
            "unmatch: default string mapping"
        );
        assert_eq!(found["a.b.c"].type_name, "long");
        assert_eq!(found["z"].type_name, "float");
        let back = Mappings::from_opensearch(&m.to_opensearch()).unwrap();
        assert_eq!(back, m, "round trip");
        assert!(glob_matches("a*c*e", "abcde") && !glob_matches("a*x", "abc"));
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
