//! `top_hits`: the best documents of each bucket, with their `_source`, as OpenSearch
//! returns them. The receiving node takes `top_hits` out of the request and, after the
//! merge, runs one small search per bucket: the request's query AND the bucket's own
//! condition (its `terms` key, histogram interval, `range`, `filter` or `filters` entry),
//! with the `size`, `sort` and `_source` the `top_hits` asks for.

use serde_json::{json, Value};

use crate::SearchError;

/// What selects a parent bucket's documents.
#[derive(Clone, Debug)]
enum Parent {
    Terms(String),
    Histogram(String),
    Range(String),
    Filter(Value),
    Filters(Value),
}

/// One `top_hits` taken out of a request.
#[derive(Clone, Debug)]
pub struct TopHits {
    /// Names from the root to the parent bucket aggregation (empty: top level).
    path: Vec<String>,
    parent: Option<Parent>,
    name: String,
    spec: Value,
}

/// Takes every `top_hits` out of `aggs`; those under a parent it cannot select buckets of
/// are refused.
pub fn extract(aggs: &mut Value) -> Result<Vec<TopHits>, SearchError> {
    let mut out = Vec::new();
    walk(aggs, &mut Vec::new(), None, &mut out)?;
    Ok(out)
}

fn parent_of(agg: &Value) -> Option<Parent> {
    let field = |k: &str| agg.get(k)?.get("field")?.as_str().map(str::to_string);
    if let Some(f) = field("terms") {
        return Some(Parent::Terms(f));
    }
    if let Some(f) = field("date_histogram").or_else(|| field("histogram")) {
        return Some(Parent::Histogram(f));
    }
    if let Some(f) = field("range").or_else(|| field("date_range")) {
        return Some(Parent::Range(f));
    }
    if let Some(f) = agg.get("filter") {
        return Some(Parent::Filter(f.clone()));
    }
    agg.get("filters")
        .and_then(|f| f.get("filters"))
        .map(|f| Parent::Filters(f.clone()))
}

fn walk(
    aggs: &mut Value,
    path: &mut Vec<String>,
    parent: Option<Parent>,
    out: &mut Vec<TopHits>,
) -> Result<(), SearchError> {
    let Some(obj) = aggs.as_object_mut() else {
        return Ok(());
    };
    let names: Vec<String> = obj
        .iter()
        .filter(|(_, v)| v.get("top_hits").is_some())
        .map(|(k, _)| k.clone())
        .collect();
    for name in names {
        let spec = obj.remove(&name).and_then(|v| v.get("top_hits").cloned());
        if !path.is_empty() && parent.is_none() {
            return Err(SearchError::IllegalArgument(format!(
                "[top_hits] [{name}] is supported at the top level and under terms, histogram, date_histogram, range, filter and filters"
            )));
        }
        out.push(TopHits {
            path: path.clone(),
            parent: parent.clone(),
            name,
            spec: spec.unwrap_or_else(|| json!({})),
        });
    }
    for (name, agg) in obj.iter_mut() {
        let this = parent_of(agg);
        path.push(name.clone());
        for key in ["aggs", "aggregations"] {
            if let Some(sub) = agg.get_mut(key) {
                walk(sub, path, this.clone(), out)?;
            }
        }
        // An aggregation left without sub-aggregations loses the empty `aggs`.
        if let Some(o) = agg.as_object_mut() {
            for key in ["aggs", "aggregations"] {
                if o.get(key)
                    .and_then(Value::as_object)
                    .is_some_and(|m| m.is_empty())
                {
                    o.remove(key);
                }
            }
        }
        path.pop();
    }
    Ok(())
}

impl TopHits {
    /// Names from the root to the parent aggregation.
    pub fn path(&self) -> &[String] {
        &self.path
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The search body for one bucket (`bucket_filter` ANDed with the request's query).
    pub fn body(&self, query: Option<&Value>, bucket_filter: Option<Value>) -> Value {
        let mut filter = Vec::new();
        filter.extend(bucket_filter);
        let mut body = json!({
            "query": {"bool": {"must": [query.cloned().unwrap_or(json!({"match_all": {}}))], "filter": filter}},
            "size": self.spec.get("size").cloned().unwrap_or(json!(3)),
        });
        for key in [
            "sort",
            "_source",
            "from",
            "version",
            "seq_no_primary_term",
            "highlight",
        ] {
            if let Some(v) = self.spec.get(key) {
                body[key] = v.clone();
            }
        }
        body
    }

    /// The condition of each bucket of the parent result `agg`, in bucket order (with
    /// the bucket's key for keyed buckets).
    pub fn bucket_filters(&self, agg: &Value) -> Vec<(Option<String>, Value)> {
        if let Some(Parent::Filter(dsl)) = &self.parent {
            return vec![(None, dsl.clone())]; // one bucket: the aggregation itself
        }
        let list: Vec<(Option<String>, &Value)> = match agg.get("buckets") {
            Some(Value::Array(b)) => b.iter().map(|b| (None, b)).collect(),
            Some(Value::Object(b)) => b.iter().map(|(k, b)| (Some(k.clone()), b)).collect(),
            _ => return Vec::new(),
        };
        let keys: Vec<Option<&Value>> = list.iter().map(|(_, b)| b.get("key")).collect();
        list.iter()
            .enumerate()
            .map(|(i, (slot, b))| {
                let filter = match &self.parent {
                    Some(Parent::Terms(f)) => {
                        json!({"term": {f: b.get("key").cloned().unwrap_or(Value::Null)}})
                    }
                    Some(Parent::Histogram(f)) => {
                        let mut r = json!({"gte": keys[i]});
                        if let Some(Some(next)) = keys.get(i + 1) {
                            r["lt"] = (*next).clone();
                        }
                        json!({"range": {f: r}})
                    }
                    Some(Parent::Range(f)) => {
                        let mut r = json!({});
                        if let Some(from) = b.get("from").filter(|v| !v.is_null()) {
                            r["gte"] = from.clone();
                        }
                        if let Some(to) = b.get("to").filter(|v| !v.is_null()) {
                            r["lt"] = to.clone();
                        }
                        json!({"range": {f: r}})
                    }
                    Some(Parent::Filter(dsl)) => dsl.clone(),
                    Some(Parent::Filters(named)) => match (slot, named) {
                        (Some(k), Value::Object(m)) => {
                            m.get(k).cloned().unwrap_or(json!({"match_none": {}}))
                        }
                        (None, Value::Array(l)) => {
                            l.get(i).cloned().unwrap_or(json!({"match_none": {}}))
                        }
                        _ => json!({"match_none": {}}),
                    },
                    None => json!({"match_all": {}}),
                };
                (slot.clone(), filter)
            })
            .collect()
    }
}

/// Puts `hits` (one per bucket, in [`TopHits::bucket_filters`] order) into the buckets of
/// the parent result `agg` under `name`.
pub fn place(agg: &mut Value, name: &str, single: bool, hits: &mut std::vec::IntoIter<Value>) {
    if single {
        if let (Some(o), Some(h)) = (agg.as_object_mut(), hits.next()) {
            o.insert(name.to_string(), h);
        }
        return;
    }
    let buckets: Vec<&mut Value> = match agg.get_mut("buckets") {
        Some(Value::Array(b)) => b.iter_mut().collect(),
        Some(Value::Object(b)) => b.values_mut().collect(),
        _ => return,
    };
    for b in buckets {
        if let (Some(o), Some(h)) = (b.as_object_mut(), hits.next()) {
            o.insert(name.to_string(), h);
        }
    }
}

impl TopHits {
    /// Whether the parent is a single-bucket aggregation (`filter`).
    pub fn single(&self) -> bool {
        matches!(self.parent, Some(Parent::Filter(_)))
    }
}
