//! Rendering hits as OpenSearch shows them (`_source` filtering, `sort`, `highlight`,
//! `fields`) and the `profile` section.

use super::*;

/// `"profile": true`: what this search cost the segment cache here (the counters are
/// process-wide: searches running at the same time are counted too; leaves on other
/// searchers are not).
pub(super) fn profile_section(before: CacheStats, after: CacheStats) -> Value {
    json!({
        "shards": [],
        "floe": {"cache": {
            "block_reads": after.block_reads - before.block_reads,
            "block_fetches": after.block_fetches - before.block_fetches,
            "bytes_fetched": after.bytes_fetched - before.bytes_fetched,
        }},
    })
}

/// A hit as the response shows it (without `_score`'s merge-time decisions).
pub(super) fn render_hit(
    shape: &HitShape,
    searcher: &tantivy::Searcher,
    c: &Candidate,
    doc: TantivyDocument,
) -> Result<Value, SearchError> {
    let layout = ShardLayout::of(&c.index.settings);
    let id = doc
        .get_first(layout.id)
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let mut hit = json!({"_index": c.index.name, "_id": id, "_score": if shape.by_score { json!(c.score) } else { Value::Null }});
    if !matches!(shape.source, SourceFilter::None)
        || shape.highlight.is_some()
        || !shape.fields.is_empty()
    {
        let raw = doc
            .get_first(layout.source)
            .and_then(|v| v.as_bytes().map(|b| b.to_vec()))
            .unwrap_or_default();
        let source: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        if let Some(h) = shape
            .highlight
            .as_ref()
            .and_then(|h| h.highlight(&source, &c.index.mappings))
        {
            hit["highlight"] = h;
        }
        if !shape.fields.is_empty() {
            let fields = crate::fields::collect(&source, &c.index.mappings, &shape.fields);
            if !fields.is_empty() {
                hit["fields"] = Value::Object(fields);
            }
        }
        if !matches!(shape.source, SourceFilter::None) {
            hit["_source"] = filter_source(source, &shape.source);
        }
    }
    let fast_u64 = |field: &str| {
        searcher
            .segment_reader(c.addr.segment_ord)
            .fast_fields()
            .u64(field)
            .ok()
            .and_then(|col| col.first(c.addr.doc_id))
    };
    if shape.version {
        hit["_version"] = json!(fast_u64(floe_proto::layout::VERSION_FIELD).unwrap_or(1));
    }
    if shape.seq_no_primary_term {
        let packed = fast_u64(floe_proto::layout::SEQ_NO_FIELD);
        let (seq_no, term) = packed.map_or((0, 1), floe_proto::layout::unpack_seq_no);
        hit["_seq_no"] = json!(seq_no);
        hit["_primary_term"] = json!(term);
    }
    if !shape.by_score {
        hit["sort"] = Value::Array(
            c.keys
                .iter()
                .take(shape.sort_keys)
                .map(sort_value)
                .collect(),
        );
    }
    Ok(hit)
}

/// The `sort` value OpenSearch shows in a hit: dates as epoch millis.
pub(super) fn sort_value(v: &OwnedValue) -> Value {
    match v {
        OwnedValue::I64(n) => json!(n),
        OwnedValue::U64(n) => json!(n),
        OwnedValue::F64(n) => json!(n),
        OwnedValue::Bool(b) => json!(b),
        OwnedValue::Str(s) => json!(s),
        OwnedValue::Date(d) => json!(d.into_timestamp_millis()),
        _ => Value::Null,
    }
}

pub(super) fn filter_source(source: Value, filter: &SourceFilter) -> Value {
    let SourceFilter::Include(patterns) = filter else {
        return source;
    };
    let Value::Object(map) = source else {
        return source;
    };
    let keep = |k: &str| {
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => k.starts_with(prefix),
            None => k == p || p.starts_with(&format!("{k}.")),
        })
    };
    Value::Object(map.into_iter().filter(|(k, _)| keep(k)).collect())
}
