//! Running a search on one shard: top-k by score or sort keys (with the `@timestamp`
//! window fast path), count and aggregations in one pass.

use super::*;

/// Top-k by `@timestamp` without sorting every match: the best `limit` documents lie in the
/// newest (or oldest) slice of the shard's time range if that slice holds at least `limit`
/// matches, since every document outside it is older (newer) than all of them. The slice
/// starts at about 8x the expected share of `limit` documents and widens until it holds
/// enough; the count and aggregations still cover the whole query.
#[derive(Clone, Debug)]
pub(super) struct TimeWindow {
    field: tantivy::schema::Field,
    order: Order,
    min_ms: i64,
    max_ms: i64,
    first_span_ms: i64,
}

impl TimeWindow {
    pub(super) fn for_shard(
        sort: &[SortBy],
        commit: &floe_proto::ShardCommit,
        limit: usize,
        ts: tantivy::schema::Field,
    ) -> Option<TimeWindow> {
        let Some(SortBy::Field { column, order, .. }) = sort.first() else {
            return None;
        };
        if column != floe_proto::layout::TIMESTAMP_FIELD || limit == 0 || limit > 1000 {
            return None;
        }
        let (min_ms, max_ms) = (commit.min_timestamp?, commit.max_timestamp?);
        if commit.num_docs < 50 * limit as u64 || max_ms <= min_ms {
            return None;
        }
        let span = max_ms - min_ms;
        let first_span_ms =
            ((span as f64 * limit as f64 * 8.0 / commit.num_docs as f64) as i64).max(1000);
        Some(TimeWindow {
            field: ts,
            order: *order,
            min_ms,
            max_ms,
            first_span_ms,
        })
    }

    /// `query` restricted to the slice `span_ms` wide at the sort's end of the time range
    /// (found through per-block bounds of the column, [`crate::time_blocks`]).
    pub(super) fn restrict(&self, query: &dyn Query, span_ms: i64) -> Box<dyn Query> {
        let (from, to) = match self.order {
            Order::Desc => (self.max_ms - span_ms, i64::MAX),
            Order::Asc => (i64::MIN, self.min_ms + span_ms),
        };
        let range = crate::time_blocks::TimeSliceQuery {
            field: self.field,
            from,
            to,
        };
        Box::new(BooleanQuery::new(vec![
            (Occur::Must, query.box_clone()),
            (
                Occur::Must,
                Box::new(ConstScoreQuery::new(Box::new(range), 0.0)),
            ),
        ]))
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run_shard_windowed(
    shard: &OpenShard,
    skip: &HashSet<String>,
    query: &dyn Query,
    sort: &[SortBy],
    limit: usize,
    aggs: ShardAggs,
    window: &TimeWindow,
    limits: Limits,
) -> Result<ShardResult, SearchError> {
    let mut totals = run_shard(shard, skip, query, sort, 0, aggs, limits)?;
    let mut span = window.first_span_ms;
    while span < window.max_ms - window.min_ms {
        let found = run_shard(
            shard,
            skip,
            window.restrict(query, span).as_ref(),
            sort,
            limit,
            ShardAggs::default(),
            limits,
        )?;
        totals.stopped.merge(found.stopped);
        if found.hits.len() >= limit {
            return Ok(ShardResult {
                hits: found.hits,
                ..totals
            });
        }
        span = span.saturating_mul(16);
    }
    let all = run_shard(
        shard,
        skip,
        query,
        sort,
        limit,
        ShardAggs::default(),
        limits,
    )?;
    totals.stopped.merge(all.stopped);
    Ok(ShardResult {
        hits: all.hits,
        ..totals
    })
}

/// One shard's top-k, count and aggregations; segments in `skip` (pruned) are not read.
/// `limits` (`terminate_after`, `timeout`) may end it early, over everything it collects.
pub(super) fn run_shard(
    shard: &OpenShard,
    skip: &HashSet<String>,
    query: &dyn Query,
    sort: &[SortBy],
    limit: usize,
    aggs: ShardAggs,
    limits: Limits,
) -> Result<ShardResult, SearchError> {
    let limited = (!limits.is_none()).then(|| LimitQuery::new(query.box_clone(), limits));
    let query: &dyn Query = match &limited {
        Some(l) => l,
        None => query,
    };
    let key = |k: Option<&SortBy>| match k {
        Some(SortBy::Score) => (LenientSort::score(), ComparatorEnum::from(Order::Desc)),
        Some(SortBy::Field { column, order, .. }) => {
            (LenientSort::field(column), ComparatorEnum::from(*order))
        }
        None => (
            LenientSort::field(NO_COLUMN),
            ComparatorEnum::from(Order::Asc),
        ),
    };
    let first = if sort.is_empty() {
        key(Some(&SortBy::Score))
    } else {
        key(sort.first())
    };
    let hist = (!aggs.ts_intervals.is_empty()).then(|| TsHistogramCollector {
        column: floe_proto::layout::TIMESTAMP_FIELD.to_string(),
        intervals: aggs.ts_intervals.clone(),
    });
    let counting = (Count, hist);
    let agg_collector = aggs.tantivy.map(|a| {
        DistributedAggregationCollector::from_aggs(
            a,
            AggContextParams::new(AggregationLimitsGuard::default(), Default::default()),
        )
    });
    // As many sort keys as asked for (each costs a column read per matching document);
    // `size: 0` (aggregations, counts): no top-k at all, so nothing is scored.
    let top = TopDocs::with_limit(limit.max(1));
    let wanted = limit > 0;
    type Hits = Vec<(Vec<OwnedValue>, DocAddress)>;
    let (hits, (count, hist), aggs): (Hits, (usize, Option<Counts>), _) = match sort.len() {
        0 | 1 => {
            let c = wanted.then(|| top.order_by(first));
            let (h, (n, hc), a) = prune::search(shard, query, &(c, counting, agg_collector), skip)?;
            (
                h.unwrap_or_default()
                    .into_iter()
                    .map(|(k, d)| (vec![k], d))
                    .collect(),
                (n, hc),
                a,
            )
        }
        2 => {
            let c = wanted.then(|| top.order_by((first, key(sort.get(1)))));
            let (h, (n, hc), a) = prune::search(shard, query, &(c, counting, agg_collector), skip)?;
            (
                h.unwrap_or_default()
                    .into_iter()
                    .map(|((k1, k2), d)| (vec![k1, k2], d))
                    .collect(),
                (n, hc),
                a,
            )
        }
        _ => {
            let c = wanted.then(|| top.order_by((first, key(sort.get(1)), key(sort.get(2)))));
            let (h, (n, hc), a) = prune::search(shard, query, &(c, counting, agg_collector), skip)?;
            (
                h.unwrap_or_default()
                    .into_iter()
                    .map(|((k1, k2, k3), d)| (vec![k1, k2, k3], d))
                    .collect(),
                (n, hc),
                a,
            )
        }
    };
    Ok(ShardResult {
        hits,
        count,
        aggs,
        hist,
        stopped: limited.map(|l| l.stopped()).unwrap_or_default(),
    })
}

/// The keys of `search_after` that can decide an order: every sort key but those all
/// documents share (`_doc`, unmapped fields).
pub(super) fn after_keys(sort: &[SortBy], values: Option<&[Value]>) -> Vec<AfterKey> {
    let Some(values) = values else {
        return Vec::new();
    };
    sort.iter()
        .zip(values)
        .filter_map(|(s, v)| match s {
            SortBy::Field {
                name,
                column,
                order,
            } if column != NO_COLUMN => Some(AfterKey {
                field: name.clone(),
                ascending: *order == Order::Asc,
                value: v.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// The column that sorting and aggregations on `name` read (`None`: unmapped), or why the
/// field has none: a text field without `fielddata`, or a field without doc values.
pub(super) fn column_for(
    layout: &ShardLayout,
    mappings: &floe_proto::mapping::Mappings,
    name: &str,
) -> Result<Option<String>, SearchError> {
    match layout.resolve(mappings, name) {
        Some(r) if r.kind == FieldType::Text => layout
            .fielddata_column(mappings, name)
            .map(Some)
            .ok_or_else(|| SearchError::IllegalArgument(fielddata_error(name))),
        Some(r) if r.index_only || !r.searchable => {
            let type_name = mappings
                .get(name)
                .map(|fm| fm.type_name.as_str())
                .unwrap_or("keyword");
            Err(SearchError::IllegalArgument(format!(
                "Can't load fielddata on [{name}] because fielddata is unsupported on fields of type [{type_name}]. Use doc values instead."
            )))
        }
        Some(r) => Ok(Some(r.column_name())),
        None => Ok(None),
    }
}

fn fielddata_error(name: &str) -> String {
    format!(
        "Text fields are not optimised for operations that require per-document field data like aggregations and sorting, so these operations are disabled by default. Please use a keyword field instead. Alternatively, set fielddata=true on [{name}] in order to load field data by uninverting the inverted index."
    )
}

/// The direction of each sort key (by score: one key, descending).
pub(super) fn sort_orders(sort: &[SortBy]) -> Vec<Order> {
    if sort.is_empty() {
        return vec![Order::Desc];
    }
    sort.iter()
        .map(|k| match k {
            SortBy::Field { order, .. } => *order,
            SortBy::Score => Order::Desc,
        })
        .collect()
}

/// Compares two hits' sort keys, key by key.
pub(super) fn compare_all(orders: &[Order], a: &[OwnedValue], b: &[OwnedValue]) -> Ordering {
    orders
        .iter()
        .enumerate()
        .map(|(i, order)| compare_keys(&a[i], &b[i], *order))
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal)
}

/// Orders field sort keys; missing values last in both directions, as OpenSearch.
pub(super) fn compare_keys(a: &OwnedValue, b: &OwnedValue, order: Order) -> Ordering {
    let rank = |v: &OwnedValue| -> Option<f64> {
        match v {
            OwnedValue::I64(n) => Some(*n as f64),
            OwnedValue::U64(n) => Some(*n as f64),
            OwnedValue::F64(n) => Some(*n),
            OwnedValue::Bool(b) => Some(*b as u8 as f64),
            OwnedValue::Date(d) => Some(d.into_timestamp_nanos() as f64),
            _ => None,
        }
    };
    let is_missing = |v: &OwnedValue| matches!(v, OwnedValue::Null);
    match (is_missing(a), is_missing(b)) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    let natural = match (rank(a), rank(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => match (a, b) {
            (OwnedValue::Str(x), OwnedValue::Str(y)) => x.cmp(y),
            _ => Ordering::Equal,
        },
    };
    if order == Order::Desc {
        natural.reverse()
    } else {
        natural
    }
}
