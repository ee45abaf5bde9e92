//! Rendering hits as OpenSearch shows them (`_source` filtering, `sort`, `highlight`,
//! `fields`) and the `profile` section.

use super::*;

/// What the first, memory-only step of [`page_hits`] ended with.
enum PageStep {
    Rendered(Result<Vec<PartialHit>, SearchError>),
    /// Some stored documents are not in memory: the page and the documents that were.
    Missing(
        Vec<Candidate>,
        Vec<OpenShard>,
        HitShape,
        Vec<Option<TantivyDocument>>,
    ),
}

/// The rendered hits of a page. Warm, one blocking step reads the stored documents from
/// memory (tantivy's cache of decompressed blocks) and renders them. Otherwise the missing
/// documents are fetched concurrently with async reads (a cold doc store costs one round;
/// no blocking thread waits on the bucket) and the page is rendered in a second blocking
/// step (rendering reads `_version`/`_seq_no` columns, which may block on the bucket).
pub(super) async fn page_hits(
    page: Vec<Candidate>,
    opened: Vec<OpenShard>,
    shape: HitShape,
) -> Result<Vec<PartialHit>, SearchError> {
    if page.is_empty() {
        return Ok(Vec::new());
    }
    let joined = |e: tokio::task::JoinError| SearchError::Internal(e.to_string());
    let first = tokio::task::spawn_blocking(move || {
        let docs: Vec<Option<TantivyDocument>> = floe_cache::without_fetching(|| {
            page.iter()
                .map(|c| opened[c.shard].searcher.doc::<TantivyDocument>(c.addr).ok())
                .collect()
        });
        if docs.iter().all(Option::is_some) {
            let docs = docs.into_iter().flatten().collect();
            PageStep::Rendered(render_page(&shape, &opened, page, docs))
        } else {
            PageStep::Missing(page, opened, shape, docs)
        }
    })
    .await
    .map_err(joined)?;
    let (page, opened, shape, docs) = match first {
        PageStep::Rendered(hits) => return hits,
        PageStep::Missing(page, opened, shape, docs) => (page, opened, shape, docs),
    };
    let docs = futures::future::try_join_all(page.iter().zip(docs).map(|(c, doc)| {
        let searcher = opened[c.shard].searcher.clone();
        let addr = c.addr;
        async move {
            match doc {
                Some(doc) => Ok::<_, SearchError>(doc),
                None => Ok(searcher.doc_async::<TantivyDocument>(addr).await?),
            }
        }
    }))
    .await?;
    tokio::task::spawn_blocking(move || render_page(&shape, &opened, page, docs))
        .await
        .map_err(joined)?
}

/// The page's hits with their stored documents, as the leaf answers them.
fn render_page(
    shape: &HitShape,
    opened: &[OpenShard],
    page: Vec<Candidate>,
    docs: Vec<TantivyDocument>,
) -> Result<Vec<PartialHit>, SearchError> {
    page.into_iter()
        .zip(docs)
        .map(|(c, doc)| {
            let shard = &opened[c.shard];
            let hit = render_hit(shape, &shard.searcher, &c, doc)?;
            Ok(PartialHit {
                keys: c.keys.iter().map(WireKey::from).collect(),
                tiebreak: (
                    c.index.name.clone(),
                    shard.shard,
                    c.addr.segment_ord,
                    c.addr.doc_id,
                ),
                hit,
            })
        })
        .collect()
}

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
    if let Some(routing) = layout
        .routing
        .and_then(|f| doc.get_first(f))
        .and_then(|v| v.as_str())
    {
        hit["_routing"] = json!(routing);
    }
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
