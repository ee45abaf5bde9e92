//! The `filter`, `filters` and `missing` aggregations, with OpenSearch's query DSL, and
//! `percentile_ranks` (computed exactly from range filters).
//!
//! tantivy's `filter` aggregation builds its query through a registered [`QueryBuilder`];
//! Floe's ([`DslFilter`]) carries the DSL and the index's mappings and translates them like
//! a search query. The receiving node rewrites `missing` into a `filter` (documents without
//! the field) and `filters` into one sibling `filter` per named filter, then gathers those
//! back into `filters`' bucket shape after the merge.

use floe_proto::layout::ShardLayout;
use floe_proto::{IndexSettings, Mappings};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tantivy::aggregation::bucket::QueryBuilder;
use tantivy::query::Query;
use tantivy::schema::Schema;
use tantivy::tokenizer::TokenizerManager;

use crate::agg_path::for_each_level;
use crate::dsl::parse_query;
use crate::translate::Translator;
use crate::SearchError;

/// Prefix of the sibling aggregations one `filters` becomes.
const FILTERS_PREFIX: &str = "__floe_filters";
/// Prefix of the sibling aggregations one `percentile_ranks` becomes.
const RANKS_PREFIX: &str = "__floe_ranks";

/// A filter in OpenSearch's DSL, translated against the index it runs on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DslFilter {
    dsl: Value,
    layout_version: u32,
    mappings: Mappings,
}

#[typetag::serde(name = "floe_dsl")]
impl QueryBuilder for DslFilter {
    fn build_query(
        &self,
        _schema: &Schema,
        _tokenizers: &TokenizerManager,
    ) -> tantivy::Result<Box<dyn Query>> {
        let settings = IndexSettings {
            layout_version: self.layout_version,
            ..Default::default()
        };
        let invalid = |e: SearchError| tantivy::TantivyError::InvalidArgument(e.to_string());
        let ast = parse_query(&self.dsl).map_err(invalid)?;
        Translator::new(ShardLayout::of(&settings), &self.mappings)
            .translate(&ast)
            .map_err(invalid)
    }

    fn box_clone(&self) -> Box<dyn QueryBuilder> {
        Box::new(self.clone())
    }
}

/// One `filters` aggregation that became siblings: where, its name, its keys (in order),
/// and whether its filters were named (keyed buckets) or a list.
#[derive(Clone, Debug)]
struct Split {
    path: Vec<String>,
    name: String,
    keys: Vec<String>,
    keyed: bool,
}

/// One `percentile_ranks`: a `value_count` of the field and one `filter` (`lte` value) per
/// value, as siblings; the rank of a value is the share of values at or below it.
#[derive(Clone, Debug)]
struct Ranks {
    path: Vec<String>,
    name: String,
    field: String,
    values: Vec<f64>,
    keyed: bool,
}

/// The `filters` and `percentile_ranks` aggregations a request had split.
#[derive(Clone, Debug, Default)]
pub struct Splits(Vec<Split>, Vec<Ranks>);

/// At the receiving node: `missing` → `filter`, `filters` → sibling `filter`s.
pub fn rewrite(aggs: &mut Value) -> Result<Splits, SearchError> {
    let mut out = Splits::default();
    walk(aggs, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn walk(aggs: &mut Value, path: &mut Vec<String>, out: &mut Splits) -> Result<(), SearchError> {
    let Some(obj) = aggs.as_object_mut() else {
        return Ok(());
    };
    let names: Vec<String> = obj.keys().cloned().collect();
    for name in names {
        let agg = obj.get_mut(&name).expect("listed");
        if let Some(field) = agg.pointer("/missing/field").and_then(Value::as_str) {
            let filter = json!({"bool": {"must_not": [{"exists": {"field": field}}]}});
            if let Some(o) = agg.as_object_mut() {
                o.remove("missing");
                o.insert("filter".into(), filter);
            }
        }
        path.push(name.clone());
        for sub in ["aggs", "aggregations"] {
            if let Some(s) = agg.get_mut(sub) {
                walk(s, path, out)?;
            }
        }
        path.pop();
        if let Some(ranks) = agg.get("percentile_ranks").cloned() {
            let ranks = split_ranks(&ranks, path, &name)?;
            obj.remove(&name);
            obj.insert(
                format!("{RANKS_PREFIX}.{name}.count"),
                json!({"value_count": {"field": ranks.field}}),
            );
            for (i, v) in ranks.values.iter().enumerate() {
                obj.insert(
                    format!("{RANKS_PREFIX}.{name}.{i}"),
                    json!({"filter": {"range": {ranks.field.clone(): {"lte": v}}}}),
                );
            }
            out.1.push(ranks);
            continue;
        }
        let Some(filters) = agg.get("filters").cloned() else {
            continue;
        };
        let subs = agg.get("aggs").or(agg.get("aggregations")).cloned();
        let (entries, keyed): (Vec<(String, Value)>, bool) = match filters.get("filters") {
            Some(Value::Object(named)) => (
                named.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                true,
            ),
            Some(Value::Array(list)) => (
                list.iter()
                    .enumerate()
                    .map(|(i, v)| (i.to_string(), v.clone()))
                    .collect(),
                false,
            ),
            _ => return Err(SearchError::Parsing("[filters] requires [filters]".into())),
        };
        obj.remove(&name);
        let mut keys = Vec::new();
        for (key, filter) in entries {
            let mut sibling = json!({ "filter": filter });
            if let Some(s) = &subs {
                sibling["aggs"] = s.clone();
            }
            obj.insert(format!("{FILTERS_PREFIX}.{name}.{key}"), sibling);
            keys.push(key);
        }
        out.0.push(Split {
            path: path.clone(),
            name,
            keys,
            keyed,
        });
    }
    Ok(())
}

/// Checks a `percentile_ranks` body: `field`, and `values` (numbers).
fn split_ranks(body: &Value, path: &[String], name: &str) -> Result<Ranks, SearchError> {
    let field = body.get("field").and_then(Value::as_str).ok_or_else(|| {
        SearchError::Parsing(format!("[percentile_ranks] [{name}] requires [field]"))
    })?;
    let values: Vec<f64> = body
        .get("values")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    if values.is_empty() {
        return Err(SearchError::Parsing(format!(
            "[percentile_ranks] [{name}] requires [values]: a list of numbers"
        )));
    }
    Ok(Ranks {
        path: path.to_vec(),
        name: name.to_string(),
        field: field.to_string(),
        values,
        keyed: body.get("keyed").and_then(Value::as_bool).unwrap_or(true),
    })
}

/// Before tantivy parses aggregations: every `filter` body (DSL) becomes a [`DslFilter`]
/// for `mappings` (at the merging node any mappings do: the query is never built there).
/// Returns the aggregations with those bodies taken out of reach of field renaming.
pub fn to_builders(aggs: &mut Value, layout_version: u32, mappings: &Mappings) {
    let Some(obj) = aggs.as_object_mut() else {
        return;
    };
    for agg in obj.values_mut() {
        if let Some(dsl) = agg.get("filter").cloned() {
            if !dsl.get("type").is_some_and(|t| t == "floe_dsl") {
                agg["filter"] = json!({
                    "type": "floe_dsl",
                    "dsl": dsl,
                    "layout_version": layout_version,
                    "mappings": mappings,
                });
            }
        }
        for sub in ["aggs", "aggregations"] {
            if let Some(s) = agg.get_mut(sub) {
                to_builders(s, layout_version, mappings);
            }
        }
    }
}

/// After the merge: each split `filters` gathered back into its buckets, each split
/// `percentile_ranks` into its values.
pub fn restore(result: &mut Value, splits: &Splits) {
    for s in &splits.0 {
        for_each_level(result, &s.path, &mut |level| gather(level, s));
    }
    for r in &splits.1 {
        for_each_level(result, &r.path, &mut |level| gather_ranks(level, r));
    }
}

/// The siblings of one split `percentile_ranks` in `level`, as its `values`.
fn gather_ranks(node: &mut Value, r: &Ranks) {
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    let total = obj
        .remove(&format!("{RANKS_PREFIX}.{}.count", r.name))
        .and_then(|c| c["value"].as_f64())
        .unwrap_or(0.0);
    let mut keyed = Map::new();
    let mut list = Vec::new();
    for (i, v) in r.values.iter().enumerate() {
        let below = obj
            .remove(&format!("{RANKS_PREFIX}.{}.{i}", r.name))
            .and_then(|b| b["doc_count"].as_f64())
            .unwrap_or(0.0);
        let rank = if total > 0.0 {
            json!((100.0 * below / total).min(100.0))
        } else {
            Value::Null
        };
        let key = format!("{v:?}");
        if r.keyed {
            keyed.insert(key, rank);
        } else {
            list.push(json!({"key": v, "value": rank}));
        }
    }
    let values = if r.keyed {
        Value::Object(keyed)
    } else {
        Value::Array(list)
    };
    obj.insert(r.name.clone(), json!({ "values": values }));
}

/// The sibling `filter`s of one split `filters`, in `level` (an object holding them),
/// gathered back into its buckets.
fn gather(node: &mut Value, s: &Split) {
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    let mut keyed = Map::new();
    let mut list = Vec::new();
    for key in &s.keys {
        let bucket = obj
            .remove(&format!("{FILTERS_PREFIX}.{}.{key}", s.name))
            .unwrap_or_else(|| json!({"doc_count": 0}));
        if s.keyed {
            keyed.insert(key.clone(), bucket);
        } else {
            list.push(bucket);
        }
    }
    let buckets = if s.keyed {
        Value::Object(keyed)
    } else {
        Value::Array(list)
    };
    obj.insert(s.name.clone(), json!({ "buckets": buckets }));
}
