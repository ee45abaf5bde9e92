//! Pruning before reading: a query that requires `@timestamp` to lie in a range skips the
//! shards (commit bounds) and segments (per-segment bounds in the commit) that cannot hold
//! such documents, without fetching anything of them.

use std::collections::HashSet;

use floe_proto::layout::TIMESTAMP_PATH;
use floe_proto::ShardCommit;
use tantivy::collector::Collector;
use tantivy::query::{EnableScoring, Query};
use tantivy::Searcher;

use crate::ast::QueryAst;
use crate::translate::date_value;

/// The `@timestamp` interval (ms, inclusive) every match must lie in, when the query says:
/// ranges on `@timestamp` in required places (the top, `must`, `filter`) are intersected.
/// Bounds are widened to whole milliseconds, so nothing that matches is ever left out.
pub fn time_range(ast: &QueryAst) -> Option<(i64, i64)> {
    let (mut from, mut to) = (i64::MIN, i64::MAX);
    let mut found = false;
    let mut visit = vec![ast];
    while let Some(q) = visit.pop() {
        match q {
            QueryAst::Range {
                field,
                gt,
                gte,
                lt,
                lte,
            } if field == TIMESTAMP_PATH => {
                let ms = |v: &Option<serde_json::Value>| -> Option<Option<i64>> {
                    match v {
                        None => Some(None),
                        Some(v) => date_value(v).map(|ns| Some(ns.div_euclid(1_000_000))),
                    }
                };
                // A bound that does not parse: no pruning (the query reports the error).
                let lower = ms(gt)?.or(ms(gte)?);
                let upper = ms(lt)?.or(ms(lte)?);
                found = true;
                from = from.max(lower.unwrap_or(i64::MIN));
                to = to.min(upper.unwrap_or(i64::MAX));
            }
            QueryAst::Bool { must, filter, .. } => visit.extend(must.iter().chain(filter)),
            _ => {}
        }
    }
    found.then_some((from, to))
}

/// Uuids of the segments of `commit` whose `@timestamp` bounds miss `[from, to]`.
pub fn segments_outside(commit: &ShardCommit, (from, to): (i64, i64)) -> HashSet<String> {
    commit
        .segment_times
        .iter()
        .filter(|(_, (min, max))| *max < from || to < *min)
        .map(|(uuid, _)| uuid.clone())
        .collect()
}

/// `searcher.search(query, collector)` over the segments not in `skip`. Skipped segments
/// are neither scored nor collected (a sort column, say, is never opened on them), so
/// nothing of them is read. Scores use the statistics of the whole shard, as unpruned.
pub fn search<C: Collector>(
    searcher: &Searcher,
    query: &dyn Query,
    collector: &C,
    skip: &HashSet<String>,
) -> tantivy::Result<C::Fruit> {
    if skip.is_empty() {
        return searcher.search(query, collector);
    }
    let scoring = if collector.requires_scoring() {
        EnableScoring::enabled_from_searcher(searcher)
    } else {
        EnableScoring::disabled_from_searcher(searcher)
    };
    let weight = query.weight(scoring)?;
    let segments = searcher
        .segment_readers()
        .iter()
        .enumerate()
        .filter(|(_, r)| !skip.contains(&r.segment_id().uuid_string()));
    let fruits = searcher.index().search_executor().map(
        |(ord, reader)| collector.collect_segment(weight.as_ref(), ord as u32, reader),
        segments,
    )?;
    collector.merge_fruits(fruits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn range(gte: Option<&str>, lt: Option<&str>) -> QueryAst {
        QueryAst::Range {
            field: TIMESTAMP_PATH.into(),
            gt: None,
            gte: gte.map(|s| json!(s)),
            lt: lt.map(|s| json!(s)),
            lte: None,
        }
    }

    #[test]
    fn required_ranges_intersect_and_optional_ones_do_not_count() {
        let a = range(Some("2024-05-01T00:00:00Z"), None);
        let b = range(None, Some("2024-05-01T01:00:00Z"));
        let from = 1_714_521_600_000;
        assert_eq!(time_range(&a), Some((from, i64::MAX)));
        let both = QueryAst::Bool {
            must: vec![a.clone()],
            should: vec![],
            filter: vec![b.clone()],
            must_not: vec![],
            minimum_should_match: None,
        };
        assert_eq!(time_range(&both), Some((from, from + 3_600_000)));
        let optional = QueryAst::bool_of(vec![], vec![a, b], vec![]);
        assert_eq!(time_range(&optional), None);
        let other = QueryAst::Range {
            field: "size".into(),
            gt: None,
            gte: Some(json!(1)),
            lt: None,
            lte: None,
        };
        assert_eq!(time_range(&other), None);
        assert_eq!(time_range(&range(Some("not a date"), None)), None);
    }

    #[test]
    fn segments_outside_the_range_are_listed() {
        let mut commit: ShardCommit = serde_json::from_value(json!({
            "generation": 1, "tantivy_meta": "{}", "files": [], "num_docs": 3, "size_bytes": 0,
            "min_timestamp": 0, "max_timestamp": 300,
        }))
        .unwrap();
        commit.segment_times.insert("old".into(), (0, 99));
        commit.segment_times.insert("mid".into(), (100, 199));
        commit.segment_times.insert("new".into(), (200, 300));
        let out = segments_outside(&commit, (150, 250));
        assert_eq!(out, HashSet::from(["old".to_string()]));
        let out = segments_outside(&commit, (250, i64::MAX));
        assert_eq!(out, HashSet::from(["old".to_string(), "mid".to_string()]));
        assert!(commit.may_hold_times(250, 400));
        assert!(!commit.may_hold_times(301, 400));
    }
}
