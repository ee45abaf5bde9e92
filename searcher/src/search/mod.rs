//! Executing a search over every shard of the resolved indexes and merging the results.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use floe_cache::{CacheStats, SegmentCache};
use floe_metastore::Metastore;
use floe_proto::layout::ShardLayout;
use floe_proto::mapping::FieldType;
use floe_proto::IndexMeta;
use serde_json::{json, Map, Value};
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::intermediate_agg_result::IntermediateAggregationResults;
use tantivy::aggregation::{
    AggContextParams, AggregationLimitsGuard, DistributedAggregationCollector,
};
use tantivy::collector::sort_key::ComparatorEnum;
use tantivy::collector::{Count, TopDocs};

use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query};
use tantivy::schema::{OwnedValue, Value as _};
use tantivy::Term;
use tantivy::{DocAddress, Order, TantivyDocument};
use tracing::instrument;

use crate::after::{after_query, AfterKey, Position};
use crate::agg_filters;
use crate::ast::{QueryAst, ALL_FIELDS};
use crate::calendar;
use crate::dsl::parse_query;
use crate::highlight::Highlighter;
use crate::histogram::{
    merge as merge_histograms, render as render_histogram, scan_all as scan_histograms,
    split as split_histograms, Counts, TsHistogramCollector,
};
use crate::leaf::{Fanout, LeafRequest, Partial, PartialHit, ShardFailure, ShardTarget, WireKey};
use crate::limits::{LimitQuery, Limits, Stopped};
use crate::pipeline;
use crate::prune;
use crate::query_string::parse_query_string;
use crate::resolve::{resolve, routing_values, Resolved};
use crate::shards::{OpenShard, ShardReaders};
use crate::sort::LenientSort;
use crate::top_hits;
use crate::translate::Translator;
use crate::warm::{warm_up, WarmNeeds, WarmedTerms};
use crate::SearchError;

/// URL parameters of `_search` / `_count`.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SearchParams {
    pub q: Option<String>,
    pub df: Option<String>,
    pub default_operator: Option<String>,
    pub from: Option<usize>,
    pub size: Option<usize>,
    /// `field:asc,other:desc`
    pub sort: Option<String>,
    pub track_total_hits: Option<String>,
    pub ignore_unavailable: bool,
    /// `routing=a,b`: only the shards these routing values map to are searched.
    #[serde(default)]
    pub routing: Option<String>,
    /// `expand_wildcards`: `open` (default), `hidden`, `all`, `none` (comma list).
    #[serde(default)]
    pub expand_wildcards: Option<String>,
    /// `allow_no_indices=false`: a wildcard that matches nothing is a 404.
    #[serde(default)]
    pub allow_no_indices: Option<bool>,
    /// `terminate_after`: documents collected per shard at most.
    #[serde(default)]
    pub terminate_after: Option<u64>,
    /// `timeout` (`50ms`, `2s`): shards stop collecting when it has passed.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// One sort criterion. Up to [`MAX_SORT_KEYS`] are applied, in order.
#[derive(Clone, Debug)]
enum SortBy {
    Score,
    Field {
        name: String,
        column: String,
        order: Order,
    },
}

const MAX_SORT_KEYS: usize = 3;
/// A column no document has: pads unused sort keys.
const NO_COLUMN: &str = "k.__floe_no_column";

/// Everything a search request asks for, parsed.
struct Request {
    query: QueryAst,
    from: usize,
    size: usize,
    /// Empty means by score.
    sort: Vec<SortBy>,
    source: SourceFilter,
    aggs: Option<Value>,
    track_total_hits: Option<u64>,
    /// `version: true`: hits carry `_version`.
    version: bool,
    /// `seq_no_primary_term: true`: hits carry `_seq_no` and `_primary_term`.
    seq_no_primary_term: bool,
    /// `search_after`: the sort values of the last hit of the previous page.
    search_after: Option<Vec<Value>>,
    /// `highlight`, as given.
    highlight: Option<Value>,
    /// `fields` and `docvalue_fields`.
    fields: Vec<crate::fields::FieldRequest>,
    /// `terminate_after`.
    terminate_after: Option<u64>,
    /// `timeout`.
    timeout: Option<std::time::Duration>,
}

#[derive(Clone, Debug)]
enum SourceFilter {
    All,
    None,
    Include(Vec<String>),
}

/// One candidate hit from one shard.
struct Candidate {
    keys: Vec<OwnedValue>,
    score: f32,
    index: Arc<IndexMeta>,
    shard: usize,
    addr: DocAddress,
}

/// What one shard returns.
#[derive(Default)]
struct ShardResult {
    hits: Vec<(Vec<OwnedValue>, DocAddress)>,
    count: usize,
    aggs: Option<IntermediateAggregationResults>,
    /// Fast `@timestamp` histograms, in the order of the request's.
    hist: Option<Counts>,
    /// Whether `terminate_after` or `timeout` cut it short.
    stopped: Stopped,
}

/// Shard searches running at once (each holds a blocking thread that may wait on a read).
const SHARD_SEARCHES: usize = 64;

pub struct SearchService {
    pub(crate) metastore: Arc<Metastore>,
    pub(crate) readers: ShardReaders,
    shard_searches: Arc<tokio::sync::Semaphore>,
    /// Terms warm-up fetched a moment ago (not looked up again).
    warmed: WarmedTerms,
    /// The other searchers of a cluster (none in standalone).
    fanout: std::sync::OnceLock<Arc<dyn Fanout>>,
    /// Points in time (and scrolls), kept in the bucket.
    pub(crate) pits: floe_metastore::pits::PitStore,
}

/// The shards to search: every shard of each index, or only those that the request's
/// routing values (or, failing those, its aliases' search routing) map to.
pub(crate) fn shard_targets(resolved: &[Resolved], routing: Option<&str>) -> Vec<ShardTarget> {
    let request_routing: Option<Vec<String>> = routing.map(routing_values);
    let mut targets = Vec::new();
    for r in resolved {
        let n = r.meta.settings.number_of_shards;
        let values = request_routing.as_ref().or(r.routing.as_ref());
        let mut shards: Vec<u32> = match values {
            Some(v) if !v.is_empty() => v.iter().map(|k| floe_metastore::shard_for(k, n)).collect(),
            _ => (0..n).collect(),
        };
        shards.sort_unstable();
        shards.dedup();
        targets.extend(shards.into_iter().map(|shard| ShardTarget {
            index: r.meta.name.clone(),
            uuid: r.meta.uuid.clone(),
            shard,
        }));
    }
    targets
}

fn parsing(reason: impl Into<String>) -> SearchError {
    SearchError::Parsing(reason.into())
}

impl SearchService {
    pub fn new(metastore: Arc<Metastore>, cache: SegmentCache) -> Self {
        SearchService {
            pits: floe_metastore::pits::PitStore::new(metastore.storage().clone()),
            metastore,
            readers: ShardReaders::new(cache),
            shard_searches: Arc::new(tokio::sync::Semaphore::new(SHARD_SEARCHES)),
            warmed: WarmedTerms::default(),
            fanout: Default::default(),
        }
    }

    /// Indexes matching an expression (index names, aliases, wildcards).
    pub fn resolve(
        &self,
        expr: &str,
        ignore_unavailable: bool,
    ) -> Result<Vec<IndexMeta>, SearchError> {
        Ok(self
            .resolve_with_aliases(expr, ignore_unavailable)?
            .into_iter()
            .map(|r| r.meta)
            .collect())
    }

    /// Indexes matching an expression of index names and wildcards only (aliases are not
    /// expanded): what a destructive call such as `DELETE /{index}` may act on.
    pub fn resolve_indexes_only(&self, expr: &str) -> Result<Vec<IndexMeta>, SearchError> {
        let none = floe_metastore::AliasTable::default();
        Ok(resolve(expr, &self.metastore.list_indexes(), &none, false)?
            .into_iter()
            .map(|r| r.meta)
            .collect())
    }

    /// Indexes matching an expression, with the filters and routing of the aliases
    /// through which they were named.
    pub fn resolve_with_aliases(
        &self,
        expr: &str,
        ignore_unavailable: bool,
    ) -> Result<Vec<Resolved>, SearchError> {
        resolve(
            expr,
            &self.metastore.list_indexes(),
            &self.metastore.aliases(),
            ignore_unavailable,
        )
    }

    /// Indexes a search covers: closed ones are skipped when a wildcard (or `_all`) named
    /// them, and refused (`index_closed_exception`) when named explicitly.
    pub fn resolve_open(
        &self,
        expr: &str,
        params: &SearchParams,
    ) -> Result<Vec<Resolved>, SearchError> {
        let ignore_unavailable = params.ignore_unavailable;
        let expand = params.expand_wildcards.as_deref().unwrap_or("open");
        let wildcard = expr.trim().is_empty() || expr.trim() == "_all" || expr.contains('*');
        let mut resolved = if wildcard && expand.split(',').any(|w| w.trim() == "none") {
            Vec::new()
        } else {
            crate::resolve::resolve_expanding(
                expr,
                &self.metastore.list_indexes(),
                &self.metastore.aliases(),
                ignore_unavailable,
                expand
                    .split(',')
                    .any(|w| matches!(w.trim(), "hidden" | "all")),
            )?
        };
        if wildcard && resolved.is_empty() && params.allow_no_indices == Some(false) {
            return Err(SearchError::IndexNotFound(expr.to_string()));
        }
        if let Some(closed) = resolved.iter().find(|r| r.meta.settings.closed) {
            if !wildcard && !ignore_unavailable {
                return Err(SearchError::IndexClosed(closed.meta.name.clone()));
            }
        }
        resolved.retain(|r| !r.meta.settings.closed);
        Ok(resolved)
    }

    /// What the segment cache did since start (block reads, fetches, bytes fetched).
    pub fn cache_stats(&self) -> CacheStats {
        self.readers.cache().blocks().stats()
    }

    pub fn forget_index(&self, uuid: &str) {
        self.readers.forget(uuid);
    }

    /// Joins a cluster: searches run as leaf searches on the searchers each shard belongs
    /// to, merged here. Set once, before serving.
    pub fn set_fanout(&self, fanout: Arc<dyn Fanout>) {
        let _ = self.fanout.set(fanout);
    }

    /// `GET|POST /{index}/_search`. `expr` is the index expression (empty for `/_search`).
    /// Pipeline: parse → resolve → leaf searches (here, or fanned out) → merge.
    #[instrument(skip(self, body, params))]
    pub async fn search(
        &self,
        expr: &str,
        body: Option<&Value>,
        params: &SearchParams,
    ) -> Result<Value, SearchError> {
        Ok(self.search_page(expr, body, params, None).await?.0)
    }

    /// A search, and the position of its last hit (a scroll's next cursor). With
    /// `after_position`, only hits after it on equal sort keys.
    pub(crate) async fn search_page(
        &self,
        expr: &str,
        body: Option<&Value>,
        params: &SearchParams,
        after_position: Option<Position>,
    ) -> Result<(Value, Option<Position>), SearchError> {
        let started = Instant::now();
        let req = self.parse_request(body, params)?;
        let profile = body
            .and_then(|b| b.get("profile"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .then(|| self.cache_stats());
        let pit = match body.and_then(|b| b.get("pit")) {
            Some(p) => Some(self.pit_of_request(expr, p).await?),
            None => None,
        };
        let (targets, filters, indexes) = match &pit {
            Some(pit) => self.pit_targets(pit)?,
            None => {
                let resolved = self.resolve_open(expr, params)?;
                let targets = shard_targets(&resolved, params.routing.as_deref());
                let filters: BTreeMap<String, Value> = resolved
                    .iter()
                    .filter_map(|r| Some((r.meta.uuid.clone(), r.filter.clone()?)))
                    .collect();
                let indexes: Vec<IndexMeta> = resolved.into_iter().map(|r| r.meta).collect();
                (targets, filters, indexes)
            }
        };
        let total_shards = targets.len();
        // `index.max_result_window` (10,000 unless set) bounds from + size.
        let window = indexes
            .iter()
            .map(|m| m.settings.max_result_window.unwrap_or(10_000))
            .min()
            .unwrap_or(10_000);
        if req.from.saturating_add(req.size) as u64 > window {
            return Err(SearchError::IllegalArgument(format!(
                "Result window is too large, from + size must be less than or equal to: [{window}] but was [{}]. See the scroll api for a more efficient way to request large data sets. This limit can be set by changing the [index.max_result_window] index level setting.",
                req.from.saturating_add(req.size)
            )));
        }
        let ts_fast = !indexes.is_empty() && indexes.iter().all(|m| self.ts_is_typed(m));
        // Calendar intervals and time zones: exact bucket boundaries, decided once here.
        let mut body = body.cloned();
        let rewrites = match body.as_mut().and_then(|b| {
            let o = b.as_object_mut()?;
            if o.contains_key("aggs") {
                o.get_mut("aggs")
            } else {
                o.get_mut("aggregations")
            }
        }) {
            Some(aggs) => {
                // `meta` first: the rewrites below may replace the aggregations carrying it.
                let meta = (
                    extract_meta(aggs),
                    Presentation::extract(aggs),
                    top_hits::extract(aggs)?,
                );
                let bounds = |field: &str| time_bounds(field, &req.query, &indexes, &targets);
                (
                    calendar::rewrite(aggs, &bounds)?,
                    agg_filters::rewrite(aggs)?,
                    pipeline::extract(aggs)?,
                    meta,
                )
            }
            None => Default::default(),
        };
        // The merge reads the aggregations as the leaves get them (rewritten).
        let req = if req.aggs.is_some() {
            self.parse_request(body.as_ref(), params)?
        } else {
            req
        };
        let mut leaf = LeafRequest {
            body: body.clone(),
            params: params.clone(),
            filters,
            ts_fast,
            skip: req.from,
            take: req.size,
            pit: pit.as_ref().map(|p| p.id.clone()),
            after_position,
        };
        // One local leaf cuts the from/size window itself; fanned-out leaves each return
        // their best from+size and the window is cut after merging.
        let cut_here = self.fanout.get().is_some() && !targets.is_empty();
        let (partials, failures) = match self.fanout.get() {
            Some(fanout) if cut_here => {
                leaf.skip = 0;
                leaf.take = req.from + req.size;
                fanout.leaf_searches(&leaf, targets).await?
            }
            _ => (vec![self.leaf_search(&leaf, targets).await?], Vec::new()),
        };
        let (mut response, last) = self.merge(
            &req,
            ts_fast,
            partials,
            failures,
            total_shards,
            cut_here,
            started,
        )?;
        if let Some(before) = profile {
            response["profile"] = profile_section(before, self.cache_stats());
        }
        if let Some(aggs) = response.get_mut("aggregations") {
            agg_filters::restore(aggs, &rewrites.1);
            calendar::restore(aggs, &rewrites.0);
            pipeline::apply(aggs, &rewrites.2)?;
            restore_meta(aggs, &rewrites.3 .0);
            rewrites.3 .1.restore(aggs);
        }
        if !rewrites.3 .2.is_empty() {
            self.top_hits(expr, body.as_ref(), params, &mut response, &rewrites.3 .2)
                .await?;
        }
        if let Some(pit) = &pit {
            response["pit_id"] = json!(pit.id);
        }
        Ok((response, last))
    }

    /// Runs each `top_hits`: one search per bucket of its parent (see `top_hits.rs`).
    async fn top_hits(
        &self,
        expr: &str,
        body: Option<&Value>,
        params: &SearchParams,
        response: &mut Value,
        all: &[top_hits::TopHits],
    ) -> Result<(), SearchError> {
        let mut query = body.and_then(|b| b.get("query")).cloned();
        let mut sub_params = params.clone();
        if let Some(q) = sub_params.q.take() {
            query = Some(json!({"query_string": {"query": q,
                "default_field": params.df.clone().unwrap_or_else(|| "*".into())}}));
        }
        sub_params.from = None;
        sub_params.size = None;
        sub_params.sort = None;
        let aggs = response
            .get_mut("aggregations")
            .ok_or_else(|| SearchError::Internal("no aggregations to place top_hits".into()))?;
        for th in all {
            let mut filters: Vec<Value> = Vec::new();
            if th.path().is_empty() {
                filters.push(json!({"match_all": {}}));
            } else {
                for_each_at(aggs, th.path(), &mut |agg| {
                    filters.extend(th.bucket_filters(agg).into_iter().map(|(_, f)| f))
                });
            }
            let mut hits = Vec::with_capacity(filters.len());
            for f in filters {
                let sub = th.body(query.as_ref(), Some(f));
                let res = Box::pin(self.search(expr, Some(&sub), &sub_params)).await?;
                hits.push(json!({ "hits": res["hits"] }));
            }
            let mut hits = hits.into_iter();
            if th.path().is_empty() {
                if let (Some(o), Some(h)) = (aggs.as_object_mut(), hits.next()) {
                    o.insert(th.name().to_string(), h);
                }
            } else {
                for_each_at(aggs, th.path(), &mut |agg| {
                    top_hits::place(agg, th.name(), th.single(), &mut hits)
                });
            }
        }
        Ok(())
    }

    /// Whether `@timestamp` is a typed column of this index (fast histogram path).
    fn ts_is_typed(&self, meta: &IndexMeta) -> bool {
        ShardLayout::of(&meta.settings)
            .resolve(&meta.mappings, floe_proto::layout::TIMESTAMP_PATH)
            .is_some_and(|r| !r.is_json())
    }

    /// Searches `targets` (shards of any indexes) here: per shard top-k, count and
    /// aggregations, merged into one [`Partial`] holding the rendered hits of the window
    /// `skip..skip+take` of this leaf's order.
    #[instrument(skip_all, fields(shards = targets.len()))]
    pub async fn leaf_search(
        &self,
        leaf: &LeafRequest,
        targets: Vec<ShardTarget>,
    ) -> Result<Partial, SearchError> {
        let req = self.parse_request(leaf.body.as_ref(), &leaf.params)?;
        let limits = Limits {
            max_docs: req.terminate_after,
            deadline: req.timeout.map(|t| Instant::now() + t),
        };
        let limit = leaf.skip + leaf.take;
        let (ts_hists, generic_aggs) = split_aggs(&req, leaf.ts_fast);
        let ts_intervals: Vec<i64> = ts_hists.iter().map(|h| h.interval_ms).collect();
        // Required date ranges: `@timestamp`'s against the commits' time bounds, the
        // others against their date bounds.
        let mut dates = prune::required_ranges(&req.query);
        let time = dates.remove(floe_proto::layout::TIMESTAMP_PATH);
        let pit = match &leaf.pit {
            Some(id) => Some(
                self.pits
                    .get(id)
                    .await?
                    .ok_or_else(|| SearchError::ContextMissing(id.clone()))?,
            ),
            None => None,
        };
        let paging = req.search_after.is_some() || leaf.after_position.is_some();
        let mut tasks = Vec::new();
        for meta in self.target_indexes(&targets).await? {
            // Open the shards first: when a file of the commit known here was already
            // collected (a newer commit replaced it), re-read the shard records and retry.
            let (meta, opened_shards) = match &pit {
                Some(pit) => self.open_pinned(meta, pit).await?,
                None => self.open_shards(meta, time, &dates).await?,
            };
            let meta = Arc::new(meta);
            // Named through filtered aliases: only documents their filters match.
            let filtered;
            let ast = match leaf.filters.get(&meta.uuid) {
                Some(filter) => {
                    filtered = QueryAst::Bool {
                        must: vec![req.query.clone()],
                        should: Vec::new(),
                        filter: vec![parse_query(filter)?],
                        must_not: Vec::new(),
                        minimum_should_match: None,
                    };
                    &filtered
                }
                None => &req.query,
            };
            let query: Arc<dyn Query> = Arc::from(
                Translator::new(ShardLayout::of(&meta.settings), &meta.mappings).translate(ast)?,
            );
            let sort = self.sort_columns(&req.sort, &meta)?;
            let after_keys = after_keys(&sort, req.search_after.as_deref());
            let aggs = ShardAggs {
                tantivy: match &generic_aggs {
                    Some(a) => Some(rewrite_aggs(a, ShardLayout::of(&meta.settings), &meta)?),
                    None => None,
                },
                ts_intervals: ts_intervals.clone(),
            };
            for shard in opened_shards {
                let commit = meta.shards.get(&shard.shard);
                let window = commit.and_then(|c| {
                    TimeWindow::for_shard(&sort, c, limit, ShardLayout::of(&meta.settings).ts)
                });
                // Segments outside the time range (or another required date range) match
                // nothing and are not read.
                let mut skip = match (time, commit) {
                    (Some(range), Some(c)) => prune::segments_outside(c, range),
                    _ => Default::default(),
                };
                if let Some(c) = commit {
                    skip.extend(prune::segments_outside_dates(c, &dates));
                }
                // Paging: hits only after the cursor; counts and aggregations over all.
                let hits_query: Option<Arc<dyn Query>> = if paging {
                    let mut translator =
                        Translator::new(ShardLayout::of(&meta.settings), &meta.mappings);
                    let after = after_query(
                        &mut translator,
                        &after_keys,
                        leaf.after_position.as_ref(),
                        &meta.name,
                        shard.shard,
                        &shard.searcher,
                    )?;
                    Some(Arc::new(BooleanQuery::new(vec![
                        (Occur::Must, query.box_clone()),
                        (Occur::Must, after),
                    ])))
                } else {
                    None
                };
                let counting = req.track_total_hits != Some(0) || aggs.tantivy.is_some();
                let (query, sort, aggs, meta) =
                    (query.clone(), sort.clone(), aggs.clone(), meta.clone());
                let scan_all = limit == 0
                    && limits.is_none()
                    && matches!(ast, QueryAst::MatchAll)
                    && aggs.tantivy.is_none()
                    && !aggs.ts_intervals.is_empty();
                let mut needs = WarmNeeds {
                    skip: skip.clone(),
                    scoring: sort.is_empty() && limit > 0,
                    columns: sort
                        .iter()
                        .filter_map(|s| match s {
                            SortBy::Field { column, .. } if limit > 0 => Some(column.clone()),
                            _ => None,
                        })
                        .collect(),
                };
                if window.is_some() || !aggs.ts_intervals.is_empty() {
                    needs
                        .columns
                        .push(floe_proto::layout::TIMESTAMP_FIELD.to_string());
                }
                // A shard search may wait on the bucket from its blocking thread: at most
                // SHARD_SEARCHES at once, so the blocking pool keeps threads for I/O.
                let permit = self
                    .shard_searches
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| SearchError::Internal(e.to_string()))?;
                let warmed = self.warmed.clone();
                tasks.push(tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let run = || -> Result<ShardResult, SearchError> {
                        if scan_all {
                            let collector = TsHistogramCollector {
                                column: floe_proto::layout::TIMESTAMP_FIELD.to_string(),
                                intervals: aggs.ts_intervals.clone(),
                            };
                            if let Some((count, counts)) =
                                scan_histograms(&shard.searcher, &collector)
                            {
                                return Ok(ShardResult {
                                    hits: Vec::new(),
                                    count,
                                    aggs: None,
                                    hist: Some(counts),
                                    stopped: Stopped::default(),
                                });
                            }
                        }
                        let (q, aggs) = (query.as_ref(), aggs.clone());
                        match (&hits_query, &window) {
                            (Some(hq), _) => {
                                let mut all = if counting {
                                    run_shard(&shard, &skip, q, &sort, 0, aggs, limits)?
                                } else {
                                    ShardResult::default()
                                };
                                let after = run_shard(
                                    &shard,
                                    &skip,
                                    hq.as_ref(),
                                    &sort,
                                    limit,
                                    ShardAggs::default(),
                                    limits,
                                )?;
                                all.hits = after.hits;
                                all.stopped.merge(after.stopped);
                                Ok(all)
                            }
                            (None, Some(w)) => {
                                run_shard_windowed(&shard, &skip, q, &sort, limit, aggs, w, limits)
                            }
                            (None, None) => run_shard(&shard, &skip, q, &sort, limit, aggs, limits),
                        }
                    };
                    // What it will read is fetched concurrently first, then it runs. (Not
                    // tried from memory first: some paths read a failed column open as "no
                    // column", which would answer wrongly instead of failing.)
                    let res = warm_up(&shard.searcher, query.as_ref(), &needs, &warmed)
                        .and_then(|_| run());
                    (meta, shard, res)
                }));
            }
        }
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut opened: Vec<OpenShard> = Vec::new();
        let mut partial = Partial::default();
        for task in tasks {
            let (meta, shard, res) = task
                .await
                .map_err(|e| SearchError::Internal(e.to_string()))?;
            let res = res?;
            partial.count += res.count as u64;
            partial.stopped.merge(res.stopped);
            partial.hist.extend(res.hist);
            if let Some(a) = res.aggs {
                match &mut partial.aggs {
                    None => partial.aggs = Some(a),
                    Some(m) => m.merge_fruits(a)?,
                }
            }
            let shard_pos = opened.len();
            opened.push(shard);
            for (keys, addr) in res.hits {
                let score = match (req.sort.is_empty(), keys.first()) {
                    (true, Some(OwnedValue::F64(s))) => *s as f32,
                    _ => f32::NAN,
                };
                candidates.push(Candidate {
                    keys,
                    score,
                    index: meta.clone(),
                    shard: shard_pos,
                    addr,
                });
            }
        }
        let orders = sort_orders(&req.sort);
        let by_score = req.sort.is_empty();
        candidates.sort_by(|a, b| {
            compare_all(&orders, &a.keys, &b.keys).then_with(|| {
                let ta = (&a.index.name, opened[a.shard].shard, a.addr);
                let tb = (&b.index.name, opened[b.shard].shard, b.addr);
                ta.cmp(&tb)
            })
        });
        partial.max_score = if by_score {
            candidates.first().map(|c| c.score)
        } else {
            None
        };
        let page: Vec<Candidate> = candidates
            .into_iter()
            .skip(leaf.skip)
            .take(leaf.take)
            .collect();
        let shape = HitShape {
            fields: req.fields.clone(),
            highlight: req
                .highlight
                .as_ref()
                .map(|h| Highlighter::new(h, &req.query))
                .transpose()?,
            source: req.source.clone(),
            version: req.version,
            seq_no_primary_term: req.seq_no_primary_term,
            by_score,
            sort_keys: orders.len(),
        };
        partial.hits = page_hits(page, opened, shape).await?;
        Ok(partial)
    }

    /// The indexes of `targets` as known here, each holding only the targeted shards. An
    /// index this searcher does not know yet (created a moment ago) is read first.
    async fn target_indexes(&self, targets: &[ShardTarget]) -> Result<Vec<IndexMeta>, SearchError> {
        let mut out: Vec<IndexMeta> = Vec::new();
        for t in targets {
            if let Some(m) = out.iter_mut().find(|m| m.uuid == t.uuid) {
                m.settings.number_of_shards = m.settings.number_of_shards.max(t.shard + 1);
                continue;
            }
            let meta = self
                .metastore
                .get_index_caught_up(&t.index, Some(&t.uuid))
                .await?;
            out.push(meta.ok_or_else(|| SearchError::IndexNotFound(t.index.clone()))?);
        }
        for m in out.iter_mut() {
            let wanted: Vec<u32> = targets
                .iter()
                .filter(|t| t.uuid == m.uuid)
                .map(|t| t.shard)
                .collect();
            m.shards.retain(|s, _| wanted.contains(s));
        }
        Ok(out)
    }

    /// The request's sort keys resolved to this index's columns.
    fn sort_columns(
        &self,
        wanted: &[SortBy],
        meta: &IndexMeta,
    ) -> Result<Vec<SortBy>, SearchError> {
        let mut sort = Vec::with_capacity(wanted.len());
        for key in wanted {
            sort.push(match key {
                SortBy::Score => SortBy::Score,
                SortBy::Field { name, order, .. } => {
                    let layout = ShardLayout::of(&meta.settings);
                    SortBy::Field {
                        name: name.clone(),
                        column: column_for(layout, &meta.mappings, name)?
                            .unwrap_or_else(|| NO_COLUMN.to_string()),
                        order: *order,
                    }
                }
            });
        }
        Ok(sort)
    }

    /// Merges leaf results into the OpenSearch response. `cut_here`: the leaves returned
    /// their best from+size each, and the window is cut here.
    #[allow(clippy::too_many_arguments)]
    fn merge(
        &self,
        req: &Request,
        ts_fast: bool,
        partials: Vec<Partial>,
        failures: Vec<ShardFailure>,
        total_shards: usize,
        cut_here: bool,
        started: Instant,
    ) -> Result<(Value, Option<Position>), SearchError> {
        let (ts_hists, generic_aggs) = split_aggs(req, ts_fast);
        let orders = sort_orders(&req.sort);
        let by_score = req.sort.is_empty();
        let mut total = 0u64;
        let mut merged_aggs: Option<IntermediateAggregationResults> = None;
        let mut hist_parts: Vec<Counts> = Vec::new();
        let mut hits: Vec<(Vec<OwnedValue>, PartialHit)> = Vec::new();
        let mut max_score: Option<f32> = None;
        let mut stopped = Stopped::default();
        for p in partials {
            total += p.count;
            stopped.merge(p.stopped);
            hist_parts.extend(p.hist);
            if let Some(a) = p.aggs {
                match &mut merged_aggs {
                    None => merged_aggs = Some(a),
                    Some(m) => m.merge_fruits(a)?,
                }
            }
            if let Some(s) = p.max_score {
                max_score = Some(max_score.map_or(s, |m: f32| m.max(s)));
            }
            hits.extend(p.hits.into_iter().map(|h| {
                let keys = h.keys.iter().map(WireKey::to_owned_value).collect();
                (keys, h)
            }));
        }
        hits.sort_by(|a, b| {
            compare_all(&orders, &a.0, &b.0).then_with(|| a.1.tiebreak.cmp(&b.1.tiebreak))
        });
        let (skip, take) = if cut_here {
            (req.from, req.size)
        } else {
            (0, req.size)
        };
        let page: Vec<PartialHit> = hits
            .into_iter()
            .skip(skip)
            .take(take)
            .map(|(_, h)| h)
            .collect();
        let last = page.last().map(|h| h.tiebreak.clone());
        let hits: Vec<Value> = page.into_iter().map(|h| h.hit).collect();
        let (value, relation) = match req.track_total_hits {
            Some(limit) if total > limit => (limit, "gte"),
            _ => (total, "eq"),
        };
        let failed: usize = failures.iter().map(|f| f.shards.len()).sum();
        let max_score = match (by_score, max_score) {
            (true, Some(s)) => json!(s),
            _ => Value::Null,
        };
        let mut response = json!({
            "took": started.elapsed().as_millis() as u64,
            "timed_out": stopped.timed_out,
            "_shards": {"total": total_shards, "successful": total_shards - failed, "skipped": 0, "failed": failed},
            "hits": {"total": {"value": value, "relation": relation}, "max_score": max_score, "hits": hits},
        });
        if req.terminate_after.is_some() {
            response["terminated_early"] = json!(stopped.terminated_early);
        }
        if !failures.is_empty() {
            response["_shards"]["failures"] = failures
                .iter()
                .flat_map(|f| {
                    f.shards.iter().map(move |t| {
                        json!({"shard": t.shard, "index": t.index, "node": f.node,
                            "reason": {"type": "no_shard_available_action_exception", "reason": f.reason}})
                    })
                })
                .collect();
        }
        if req.aggs.is_some() {
            response["aggregations"] = json!({});
        }
        if let Some(aggs_req) = &generic_aggs {
            let mut aggs_req = aggs_req.clone();
            agg_filters::to_builders(
                &mut aggs_req,
                floe_proto::layout::CURRENT_LAYOUT,
                &Default::default(),
            );
            let parsed: Aggregations = serde_json::from_value(aggs_req)
                .map_err(|e| parsing(format!("invalid aggregations: {e}")))?;
            let merged = merged_aggs.unwrap_or_default();
            let final_res = merged.into_final_result(parsed, AggregationLimitsGuard::default())?;
            let mut rendered = serde_json::to_value(final_res)
                .map_err(|e| SearchError::Internal(e.to_string()))?;
            restore_agg_shapes(&mut rendered);
            response["aggregations"] = rendered;
        }
        if !ts_hists.is_empty() {
            let counts = merge_histograms(hist_parts, ts_hists.len());
            for (h, c) in ts_hists.iter().zip(&counts) {
                response["aggregations"][&h.name] = render_histogram(h, c);
            }
        }
        Ok((response, last))
    }

    /// The index's shards as of its latest commits known here; one retry with freshly read
    /// shard records if a file is gone from the bucket.
    async fn open_shards(
        &self,
        meta: IndexMeta,
        time: Option<(i64, i64)>,
        dates: &prune::DateRanges,
    ) -> Result<(IndexMeta, Vec<crate::shards::OpenShard>), SearchError> {
        // Shards whose documents all lie outside the query's time range (or another
        // required date range) are never opened.
        let targeted: Vec<u32> = meta.shards.keys().copied().collect();
        let keep = |mut m: IndexMeta| {
            m.shards.retain(|s, c| {
                targeted.contains(s)
                    && time.is_none_or(|(from, to)| c.may_hold_times(from, to))
                    && prune::may_hold(c, dates)
            });
            m
        };
        let meta = keep(meta);
        match self.readers.shards(&meta).await {
            Ok(opened) => Ok((meta, opened)),
            Err(SearchError::Cache(floe_cache::CacheError::Storage(
                floe_storage::StorageError::NotFound(key),
            ))) => {
                tracing::debug!(%key, index = %meta.name, "segment object gone: re-reading shard records");
                for shard in meta.shards.keys() {
                    self.metastore.refresh_shard(&meta.uuid, *shard).await?;
                }
                let fresh = self
                    .metastore
                    .get_index(&meta.name)
                    .filter(|m| m.uuid == meta.uuid)
                    .ok_or_else(|| SearchError::IndexNotFound(meta.name.clone()))?;
                let fresh = keep(fresh);
                let opened = self.readers.shards(&fresh).await?;
                Ok((fresh, opened))
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /{index}/_count`.
    pub async fn count(
        &self,
        expr: &str,
        body: Option<&Value>,
        params: &SearchParams,
    ) -> Result<Value, SearchError> {
        let mut body = body.cloned().unwrap_or(json!({}));
        if let Some(o) = body.as_object_mut() {
            o.insert("size".into(), json!(0));
            o.insert("track_total_hits".into(), json!(true));
        }
        let mut params = params.clone();
        params.size = Some(0);
        params.track_total_hits = Some("true".into());
        let res = self.search(expr, Some(&body), &params).await?;
        let mut out = json!({"count": res["hits"]["total"]["value"], "_shards": res["_shards"]});
        if let Some(terminated) = res.get("terminated_early") {
            out["terminated_early"] = terminated.clone();
        }
        Ok(out)
    }

    /// `GET /{index}/_doc/{id}` as of the last refresh, or `None`.
    pub async fn get_doc(&self, index: &str, id: &str) -> Result<Option<StoredDoc>, SearchError> {
        let body = json!({"query": {"ids": {"values": [id]}}, "size": 1, "version": true,
            "seq_no_primary_term": true});
        let res = self
            .search(index, Some(&body), &SearchParams::default())
            .await?;
        Ok(res["hits"]["hits"].get(0).map(|h| StoredDoc {
            version: h["_version"].as_u64().unwrap_or(1),
            seq_no: h["_seq_no"].as_u64().unwrap_or(0),
            primary_term: h["_primary_term"].as_u64().unwrap_or(1),
            source: h["_source"].clone(),
            routing: h["_routing"].as_str().map(str::to_string),
        }))
    }
}

/// A document as `GET _doc` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredDoc {
    pub version: u64,
    pub seq_no: u64,
    pub primary_term: u64,
    pub source: Value,
    /// The custom routing it was written with.
    pub routing: Option<String>,
}

/// What each rendered hit carries besides `_index`, `_id` and `_score`.
struct HitShape {
    source: SourceFilter,
    fields: Vec<crate::fields::FieldRequest>,
    highlight: Option<Highlighter>,
    version: bool,
    seq_no_primary_term: bool,
    by_score: bool,
    sort_keys: usize,
}

/// The aggregations one shard computes: tantivy's, and the fast `@timestamp` histograms.
#[derive(Clone, Default)]
struct ShardAggs {
    tantivy: Option<Aggregations>,
    ts_intervals: Vec<i64>,
}

mod aggs;
mod explain;
mod render;
mod request;
mod shard_run;
mod validate;

use aggs::*;
use render::*;
use shard_run::*;
