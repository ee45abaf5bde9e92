//! The limit Floe is measured against: the same documents indexed in-process with raw
//! tantivy, and the same queries run on that local index — no HTTP, no object storage, no
//! cache, no metastore.
//!
//! To make the comparison about Floe's overhead and not about a different index, everything
//! that decides what the index holds is Floe's own code: the shard schema and index settings
//! ([`ShardLayout`]), dynamic mapping ([`Mappings::discover`]), document conversion
//! ([`DocBuilder`]), and query translation ([`parse_query`] + [`Translator`]).

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use floe_proto::{Mappings, ShardLayout};
use floe_searcher::ast::QueryAst;
use floe_searcher::dsl::parse_query;
use floe_searcher::translate::Translator;
use floe_writer::document::DocBuilder;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::{AggContextParams, AggregationCollector, AggregationLimitsGuard};
use tantivy::collector::sort_key::SortByErasedType;
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::Query;
use tantivy::schema::Value as _;
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Searcher, TantivyDocument,
};

use crate::generator::DataSource;
use crate::queries::{BenchQuery, Outcome};

/// What indexing a data set with raw tantivy took.
#[derive(Clone, Debug)]
pub struct IndexStats {
    pub docs: u64,
    /// Bytes of the documents' JSON (without newlines), the unit of every MB/s figure.
    pub raw_bytes: u64,
    /// From the first document to the end of the final commit.
    pub elapsed: Duration,
    /// Files in the index directory once merges have finished.
    pub size_on_disk: u64,
    /// Documents that failed to parse or convert (skipped, as Floe would reject them).
    pub rejected: u64,
    /// Smallest and largest `@timestamp` seen, epoch milliseconds.
    pub time_range: Option<(i64, i64)>,
}

/// A raw tantivy index of the benchmark data, ready to query.
pub struct BaselineIndex {
    pub dir: PathBuf,
    pub layout: ShardLayout,
    pub mappings: Mappings,
    pub reader: IndexReader,
    pub stats: IndexStats,
}

/// Indexes `source` into a new index under `dir` with `threads` tantivy indexing threads and
/// as many threads converting JSON into documents (Floe converts each `_bulk` request on its
/// own task, so a single converter would make the baseline slower than Floe, not a limit).
/// `memory_budget` is split between indexing threads, as in Floe's shard writer. Like Floe,
/// documents get a random 32-hex-digit `_id` and `_version` 1.
pub fn build(
    source: &DataSource,
    dir: &Path,
    threads: usize,
    memory_budget: usize,
    initial: Mappings,
    segments: usize,
    progress: &ProgressBar,
) -> anyhow::Result<BaselineIndex> {
    std::fs::create_dir_all(dir)?;
    let layout = ShardLayout::new();
    let mut index = Index::create(
        MmapDirectory::open(dir)?,
        layout.schema.clone(),
        ShardLayout::index_settings(),
    )?;
    let mut writer = index.writer_with_num_threads::<TantivyDocument>(threads, memory_budget)?;
    let mappings = RwLock::new(initial);
    let started = Instant::now();
    let (tx, rx) = mpsc::sync_channel::<Vec<String>>(threads * 4);
    // Only the converters hold the receiver: if they all stop, feeding fails instead of
    // blocking forever.
    let rx = Arc::new(Mutex::new(rx));
    let (fed, converted) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (rx, writer, layout, mappings) = (rx.clone(), &writer, &layout, &mappings);
                scope.spawn(move || convert(&rx, writer, layout, mappings, progress))
            })
            .collect();
        drop(rx);
        let mut raw_bytes = 0u64;
        let mut batch = Vec::with_capacity(FEED_BATCH);
        let fed = source
            .for_each(|doc| {
                raw_bytes += doc.len() as u64;
                batch.push(doc.to_string());
                if batch.len() == FEED_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(FEED_BATCH));
                    tx.send(full).context("baseline converters stopped")?;
                }
                Ok(())
            })
            .and_then(|()| Ok(tx.send(batch)?));
        drop(tx);
        let converted: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().expect("converter thread panicked"))
            .collect();
        (fed.map(|()| raw_bytes), converted)
    });
    let mut total = Converted::default();
    for c in converted {
        total.merge(c?);
    }
    let raw_bytes = fed?;
    writer.commit()?;
    let elapsed = started.elapsed();
    // As many segments as Floe's index has after `_forcemerge`, grouped the same way (not
    // part of the indexing time), searched with one thread per core, as Floe's.
    let reader_now: IndexReader = index.reader()?;
    let live: Vec<_> = reader_now
        .searcher()
        .segment_readers()
        .iter()
        .map(|s| (s.segment_id(), s.num_docs()))
        .collect();
    if live.len() > segments {
        for group in floe_writer::shard::merge_groups(live, segments) {
            writer.merge(&group).wait()?;
        }
    }
    index.set_default_multithread_executor()?;
    writer.wait_merging_threads()?;
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    Ok(BaselineIndex {
        dir: dir.to_path_buf(),
        layout,
        mappings: mappings.into_inner().expect("mappings lock"),
        reader,
        stats: IndexStats {
            docs: total.docs,
            raw_bytes,
            elapsed,
            size_on_disk: live_size(&index, dir)?,
            rejected: total.rejected,
            time_range: total.time_range,
        },
    })
}

/// Documents handed to converter threads at a time.
const FEED_BATCH: usize = 1_000;

/// What one converter thread did.
#[derive(Default)]
struct Converted {
    docs: u64,
    rejected: u64,
    time_range: Option<(i64, i64)>,
}

impl Converted {
    fn merge(&mut self, o: Converted) {
        self.docs += o.docs;
        self.rejected += o.rejected;
        if let Some((a, b)) = o.time_range {
            self.time_range = Some(
                self.time_range
                    .map_or((a, b), |(x, y)| (x.min(a), y.max(b))),
            );
        }
    }
}

/// A converter thread: parses each document, extends the mapping with new fields (as Floe's
/// dynamic mapping does), builds it with Floe's `DocBuilder` and hands it to tantivy.
fn convert(
    rx: &Mutex<mpsc::Receiver<Vec<String>>>,
    writer: &IndexWriter,
    layout: &ShardLayout,
    mappings: &RwLock<Mappings>,
    progress: &ProgressBar,
) -> anyhow::Result<Converted> {
    let mut out = Converted::default();
    loop {
        let next = rx.lock().expect("feed lock").recv();
        let Ok(batch) = next else {
            return Ok(out);
        };
        for raw in &batch {
            let Ok(Value::Object(parsed)) = serde_json::from_str::<Value>(raw) else {
                out.rejected += 1;
                continue;
            };
            let found = mappings.read().expect("mappings lock").discover(&parsed)?;
            if !found.is_empty() {
                mappings.write().expect("mappings lock").merge(&found);
            }
            let id = floe_writer::ids::generate_id();
            let built = {
                let m = mappings.read().expect("mappings lock");
                DocBuilder::new(layout, &m).build(&id, raw.as_bytes(), &parsed)
            };
            let Ok(built) = built else {
                out.rejected += 1;
                continue;
            };
            if let Some(ns) = built.timestamp {
                let ms = ns / 1_000_000;
                out.time_range = Some(
                    out.time_range
                        .map_or((ms, ms), |(a, b)| (a.min(ms), b.max(ms))),
                );
            }
            let mut doc = built.doc;
            doc.add_u64(layout.version, 1);
            writer.add_document(doc)?;
            out.docs += 1;
        }
        progress.inc(batch.len() as u64);
    }
}

/// Bytes of the files of the index's live segments plus `meta.json`: files of segments
/// merged away may linger until tantivy's next garbage collection, and Floe never uploads
/// them either.
pub(crate) fn live_size(index: &Index, dir: &Path) -> anyhow::Result<u64> {
    let live: Vec<String> = index
        .searchable_segment_metas()?
        .iter()
        .map(|m| m.id().uuid_string())
        .collect();
    let mut size = 0;
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name == "meta.json" || live.iter().any(|id| name.starts_with(id.as_str())) {
            size += e.metadata()?.len();
        }
    }
    Ok(size)
}

impl BaselineIndex {
    /// Runs `q` on the open (warm) index.
    pub fn run(&self, q: &BenchQuery) -> anyhow::Result<Outcome> {
        execute(
            &self.reader.searcher(),
            &self.layout,
            &self.mappings,
            &q.body,
        )
        .with_context(|| format!("baseline query {}", q.name))
    }

    /// Opens the index from disk again and runs `q` once: the baseline's "cold" query. The
    /// OS page cache is still warm, so this is the cost of opening an index, not of disk
    /// reads.
    pub fn run_cold(&self, q: &BenchQuery) -> anyhow::Result<(Duration, Outcome)> {
        let started = Instant::now();
        let index = Index::open(MmapDirectory::open(&self.dir)?)?;
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let outcome = execute(&reader.searcher(), &self.layout, &self.mappings, &q.body)?;
        Ok((started.elapsed(), outcome))
    }
}

/// Runs an OpenSearch `_search` body the way Floe's searcher does for one shard: the query
/// through Floe's translator, top hits (by score or by one sort field), the total count, the
/// aggregations, and the `_source` of the returned hits loaded and parsed.
fn execute(
    searcher: &Searcher,
    layout: &ShardLayout,
    mappings: &Mappings,
    body: &Value,
) -> anyhow::Result<Outcome> {
    let ast = match body.get("query") {
        Some(q) => parse_query(q)?,
        None => QueryAst::MatchAll,
    };
    let query: Box<dyn Query> = Translator::new(layout, mappings).translate(&ast)?;
    let size = body["size"].as_u64().unwrap_or(10) as usize;
    let aggs = match body.get("aggs") {
        Some(a) => Some(agg_request(a, layout, mappings)?),
        None => None,
    };
    let agg_collector = aggs.map(|a| {
        AggregationCollector::from_aggs(
            a,
            AggContextParams::new(AggregationLimitsGuard::default(), Default::default()),
        )
    });
    let top = TopDocs::with_limit(size.max(1));
    // A sort on an unmapped field leaves every document tied (all values missing), as in
    // Floe; tantivy's sort would fail on the missing column, so rank by score instead.
    let sort = sort_field(body).and_then(|(field, order)| {
        let column = layout.resolve(mappings, &field)?.column_name();
        Some((column, order))
    });
    let (addrs, total, agg_result): (Vec<DocAddress>, usize, _) = match sort {
        Some((column, order)) => {
            let top = top.order_by((SortByErasedType::for_field(column), order));
            let (hits, count, aggs) = searcher.search(&query, &(top, Count, agg_collector))?;
            (hits.into_iter().map(|(_, a)| a).collect(), count, aggs)
        }
        None => {
            let top = top.order_by_score();
            let (hits, count, aggs) = searcher.search(&query, &(top, Count, agg_collector))?;
            (hits.into_iter().map(|(_, a)| a).collect(), count, aggs)
        }
    };
    let mut hits = Vec::new();
    for addr in addrs.into_iter().take(size) {
        let doc: TantivyDocument = searcher.doc(addr)?;
        let raw = doc
            .get_first(layout.source)
            .and_then(|v| v.as_bytes())
            .unwrap_or_default();
        hits.push(serde_json::from_slice::<Value>(raw).unwrap_or(Value::Null));
    }
    let aggregations = match agg_result {
        Some(r) => serde_json::to_value(r)?,
        None => Value::Null,
    };
    Ok(Outcome::from_response(&json!({
        "hits": {"total": {"value": total}, "hits": hits},
        "aggregations": aggregations,
    })))
}

/// The first `sort` criterion of a body, if it sorts on a field: `[{"f": {"order": "desc"}}]`,
/// `[{"f": "desc"}]` or `["f"]`.
fn sort_field(body: &Value) -> Option<(String, Order)> {
    let first = match body.get("sort")? {
        Value::Array(a) => a.first()?.clone(),
        other => other.clone(),
    };
    let (field, spec) = match &first {
        Value::String(f) => (f.clone(), Value::Null),
        Value::Object(o) => {
            let (f, s) = o.iter().next()?;
            (f.clone(), s.clone())
        }
        _ => return None,
    };
    if field == "_score" {
        return None;
    }
    let order = spec.get("order").or(Some(&spec)).and_then(Value::as_str);
    let order = if order == Some("desc") {
        Order::Desc
    } else {
        Order::Asc
    };
    Some((field, order))
}

/// An aggregation request with user field names replaced by the layout's columns
/// (`status` → `k.status`), as Floe's searcher rewrites them.
fn agg_request(
    aggs: &Value,
    layout: &ShardLayout,
    mappings: &Mappings,
) -> anyhow::Result<Aggregations> {
    fn walk(v: &mut Value, layout: &ShardLayout, mappings: &Mappings) {
        if let Value::Object(o) = v {
            for (key, child) in o.iter_mut() {
                match (key.as_str(), child.as_str()) {
                    ("field", Some(name)) => {
                        let column = layout
                            .resolve(mappings, name)
                            .map(|r| r.column_name())
                            .unwrap_or_else(|| format!("k.{name}"));
                        *child = Value::String(column);
                    }
                    _ => walk(child, layout, mappings),
                }
            }
        }
    }
    let mut v = aggs.clone();
    walk(&mut v, layout, mappings);
    Ok(serde_json::from_value(v)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::{GenSpec, DEFAULT_START_MS};
    use crate::queries::bench_queries;

    /// Two converter and indexing threads: the parallel path, and the answers it gives.
    #[test]
    fn indexes_and_answers_every_bench_query() {
        let dir = tempfile::tempdir().unwrap();
        let source = DataSource::Generated(GenSpec {
            seed: 1,
            docs: 3_000,
            start_ms: DEFAULT_START_MS,
            window_ms: 3_600_000,
        });
        let idx = build(
            &source,
            dir.path(),
            2,
            40_000_000,
            Mappings::default(),
            1,
            &ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(idx.stats.docs, 3_000);
        assert_eq!(idx.stats.rejected, 0);
        assert!(idx.stats.size_on_disk > 0);
        let (min, max) = idx.stats.time_range.unwrap();
        assert!(min >= DEFAULT_START_MS - 2_000 && max <= DEFAULT_START_MS + 3_600_000);
        for q in bench_queries((min, max)) {
            let out = idx.run(&q).unwrap();
            let (_, cold) = idx.run_cold(&q).unwrap();
            assert_eq!(out, cold, "{}", q.name);
            match q.name {
                "sort_ts_desc_top10" => assert_eq!((out.total_hits, out.hits), (3_000, 10)),
                "date_histogram_1m" => assert_eq!(out.buckets.unwrap().1, 3_000),
                "terms_status" => assert_eq!(out.buckets.unwrap(), (4, 3_000)),
                _ => assert!(out.total_hits > 0 && out.total_hits < 3_000, "{}", q.name),
            }
        }
    }
}
