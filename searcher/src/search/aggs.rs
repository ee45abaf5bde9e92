//! Aggregation requests for tantivy (field names to columns, calendar units, filters)
//! and tantivy's results back into OpenSearch's shape.

use super::*;
pub(super) use crate::agg_path::{for_each_at, visit};

/// The time range (ms) of a date `field`'s values in the targeted shards, narrowed by the
/// query: from the commits' `@timestamp` range or their bounds of other date fields.
pub(super) fn time_bounds(
    field: &str,
    query: &QueryAst,
    indexes: &[IndexMeta],
    targets: &[ShardTarget],
) -> Option<(i64, i64)> {
    let is_ts = field == floe_proto::layout::TIMESTAMP_PATH;
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    let mut known = true;
    for t in targets {
        let commit = indexes
            .iter()
            .find(|m| m.uuid == t.uuid)
            .and_then(|m| m.shards.get(&t.shard));
        let bounds = match commit {
            None => continue,
            Some(c) if c.num_docs == 0 => continue,
            Some(c) if is_ts => c.min_timestamp.zip(c.max_timestamp),
            // No entry beside others: no values of the field here. No entries at all:
            // a commit from before date bounds were recorded, so unknown.
            Some(c) if c.date_bounds.is_empty() => None,
            Some(c) => match c.date_bounds.get(field) {
                Some(b) => Some((b.min, b.max)),
                None => continue,
            },
        };
        match bounds {
            Some((min, max)) => {
                lo = lo.min(min);
                hi = hi.max(max);
            }
            None => known = false,
        }
    }
    let query_range = prune::required_ranges(query)
        .remove(field)
        .filter(|(f, t)| *f > i64::MIN && *t < i64::MAX);
    match (known && lo <= hi, query_range) {
        (true, Some((f, t))) => Some((lo.max(f), hi.min(t))).filter(|(a, b)| a <= b),
        (true, None) => Some((lo, hi)),
        (false, q) => q,
    }
}

/// `date_histogram`s on `@timestamp` go through the fast path when every index keeps
/// `@timestamp` in the typed column (`ts_fast`, decided once for the whole request); the
/// rest through tantivy's aggregations.
pub(super) fn split_aggs(
    req: &Request,
    ts_fast: bool,
) -> (Vec<crate::histogram::TsHistogram>, Option<Value>) {
    match &req.aggs {
        Some(a) => split_histograms(&rewrite_for_parse(a), |f| {
            ts_fast && f == floe_proto::layout::TIMESTAMP_PATH
        }),
        None => (Vec::new(), None),
    }
}

/// Rewrites user field names in an aggregation request to the shard layout's columns
/// (`status` → `k.status`) and OpenSearch interval forms to the ones tantivy takes.
pub(super) fn rewrite_aggs(
    aggs: &Value,
    layout: &ShardLayout,
    meta: &IndexMeta,
) -> Result<Aggregations, SearchError> {
    let mut v = rewrite_for_parse(aggs);
    agg_filters::to_builders(&mut v, meta.settings.layout_version, &meta.mappings);
    pub(super) fn walk(
        v: &mut Value,
        layout: &ShardLayout,
        meta: &IndexMeta,
    ) -> Result<(), SearchError> {
        if let Value::Object(o) = v {
            for (key, child) in o.iter_mut() {
                if key == "filter" {
                    // A query (translated by `agg_filters::DslFilter`), not field names.
                    continue;
                }
                if key == "field" {
                    if let Some(name) = child.as_str() {
                        let column = column_for(layout, &meta.mappings, name)?
                            .unwrap_or_else(|| format!("k.{name}"));
                        *child = Value::String(column);
                    }
                } else {
                    walk(child, layout, meta)?;
                }
            }
        }
        Ok(())
    }
    walk(&mut v, layout, meta)?;
    serde_json::from_value(v).map_err(|e| parsing(format!("invalid aggregations: {e}")))
}

/// OpenSearch accepts `calendar_interval`/`interval` on date histograms; tantivy takes
/// `fixed_interval`. Calendar units map to their fixed length (months as 30 days).
pub(super) fn rewrite_for_parse(aggs: &Value) -> Value {
    let mut v = aggs.clone();
    pub(super) fn walk(v: &mut Value) {
        if let Value::Object(o) = v {
            if let Some(Value::Object(dh)) = o.get_mut("date_histogram") {
                for legacy in ["calendar_interval", "interval"] {
                    if let Some(Value::String(iv)) = dh.remove(legacy) {
                        let fixed = match iv.as_str() {
                            "minute" | "1m" => "1m".to_string(),
                            "hour" | "1h" => "1h".to_string(),
                            "day" | "1d" => "1d".to_string(),
                            "week" | "1w" => "7d".to_string(),
                            "month" | "1M" => "30d".to_string(),
                            "quarter" | "1q" => "90d".to_string(),
                            "year" | "1y" => "365d".to_string(),
                            other => other.to_string(),
                        };
                        dh.insert("fixed_interval".into(), Value::String(fixed));
                    }
                }
            }
            for (_, child) in o.iter_mut() {
                walk(child);
            }
        }
    }
    walk(&mut v);
    v
}

/// tantivy renders aggregations almost as OpenSearch does; close the gaps: histogram keys
/// are integers (epoch millis) with dates shown to the millisecond
/// (`2024-05-01T10:00:00.000Z`), and `terms` results carry `doc_count_error_upper_bound`.
pub(super) fn restore_agg_shapes(v: &mut Value) {
    if let Value::Object(o) = v {
        if o.contains_key("key_as_string") {
            if let Some(k) = o
                .get("key")
                .and_then(Value::as_f64)
                .filter(|k| k.fract() == 0.0)
            {
                o.insert("key".into(), json!(k as i64));
                // tantivy's `…:00Z` (seconds) for a date key.
                let seconds_only = o
                    .get("key_as_string")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.len() == 20 && s.ends_with('Z') && s.as_bytes()[10] == b'T');
                if seconds_only {
                    o.insert(
                        "key_as_string".into(),
                        json!(floe_proto::mapping::format_date(k as i64 * 1_000_000)),
                    );
                }
            }
        }
        if o.contains_key("buckets")
            && o.get("buckets").is_some_and(Value::is_array)
            && o.contains_key("sum_other_doc_count")
        {
            o.entry("doc_count_error_upper_bound").or_insert(json!(0));
        }
        for (_, child) in o.iter_mut() {
            restore_agg_shapes(child);
        }
    } else if let Value::Array(items) = v {
        // Buckets are array elements.
        for item in items {
            restore_agg_shapes(item);
        }
    }
}

/// `meta` of aggregations (any depth), taken out of the request (tantivy does not take it)
/// to be put back on the result: (path of names, meta).
pub(super) fn extract_meta(aggs: &mut Value) -> Vec<(Vec<String>, Value)> {
    let mut out = Vec::new();
    let _ = visit::<()>(aggs, &mut |path, agg| {
        if let Some(meta) = agg.as_object_mut().and_then(|o| o.remove("meta")) {
            out.push((path.to_vec(), meta));
        }
        Ok(())
    });
    out
}

/// Puts each `meta` back on its aggregation's result (in every bucket of its parents).
pub(super) fn restore_meta(result: &mut Value, metas: &[(Vec<String>, Value)]) {
    for (path, meta) in metas {
        for_each_at(result, path, &mut |agg| {
            if let Some(o) = agg.as_object_mut() {
                o.insert("meta".into(), meta.clone());
            }
        });
    }
}

/// `format` of a date histogram (tantivy takes none), taken out of the request: where the
/// histogram is, the format, and its `time_zone`.
pub(super) type HistogramFormat = (Vec<String>, String, Option<String>);

/// How results are shown beyond what tantivy renders, read from the request: date
/// histograms' `format`, and the `terms` that asked for `show_term_doc_count_error`
/// (tantivy gives the aggregation's error; OpenSearch shows it on every bucket too).
#[derive(Clone, Debug, Default)]
pub(super) struct Presentation {
    formats: Vec<HistogramFormat>,
    term_errors: Vec<Vec<String>>,
}

impl Presentation {
    /// Reads (and takes the `format`s out of) the request's aggregations.
    pub(super) fn extract(aggs: &mut Value) -> Presentation {
        let mut out = Presentation::default();
        let _ = visit::<()>(aggs, &mut |path, agg| {
            if let Some(dh) = agg.get_mut("date_histogram").and_then(Value::as_object_mut) {
                if let Some(Value::String(f)) = dh.remove("format") {
                    let tz = dh
                        .get("time_zone")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    out.formats.push((path.to_vec(), f, tz));
                }
            }
            if agg["terms"]["show_term_doc_count_error"] == json!(true) {
                out.term_errors.push(path.to_vec());
            }
            Ok(())
        });
        out
    }

    /// Applies it to the merged result.
    pub(super) fn restore(&self, result: &mut Value) {
        self.restore_formats(result);
        for path in &self.term_errors {
            for_each_at(result, path, &mut |agg| {
                // The aggregation's bound holds for each of its buckets.
                let error = agg
                    .get("doc_count_error_upper_bound")
                    .cloned()
                    .unwrap_or(json!(0));
                if let Some(Value::Array(buckets)) = agg.get_mut("buckets") {
                    for b in buckets {
                        b["doc_count_error_upper_bound"] = error.clone();
                    }
                }
            });
        }
    }

    /// `key_as_string` of each histogram's buckets in its `format` (`epoch_millis`,
    /// `yyyy-MM-dd`, …), in its time zone.
    fn restore_formats(&self, result: &mut Value) {
        for (path, spec, tz) in &self.formats {
            let Ok(format) = floe_proto::date_format::DateFormat::parse(spec) else {
                continue;
            };
            let tz = tz
                .as_deref()
                .and_then(|z| crate::calendar::zone_of(z).ok())
                .unwrap_or(jiff::tz::TimeZone::UTC);
            for_each_at(result, path, &mut |agg| {
                let Some(Value::Array(buckets)) = agg.get_mut("buckets") else {
                    return;
                };
                for b in buckets {
                    let Some(key) = b.get("key").and_then(Value::as_i64) else {
                        continue;
                    };
                    b["key_as_string"] = Value::String(format.write(key, &tz));
                }
            });
        }
    }
}
