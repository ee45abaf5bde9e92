//! Pruning before reading: a query that requires `@timestamp` (or any other date field) to
//! lie in a range skips the shards (commit bounds) and segments (per-segment bounds in the
//! commit) that cannot hold such documents, without fetching anything of them.

use std::collections::{BTreeMap, HashSet};

use floe_proto::ShardCommit;
use tantivy::collector::Collector;
use tantivy::query::{EnableScoring, Query};

use crate::ast::QueryAst;
use crate::shards::OpenShard;
use crate::translate::{date_value, date_value_rounding_up};

/// Required intervals (ms, inclusive) by field.
pub type DateRanges = BTreeMap<String, (i64, i64)>;

/// Every field's interval (ms, inclusive) that every match must lie in: ranges in required
/// places (the top, `must`, `filter`) intersected per field. A field with a bound that does
/// not read as a date is left out (the query reports the error, or it is not a date).
/// `@timestamp`'s entry is checked against the commit's time bounds; the others against
/// the date bounds of commits and segments ([`floe_proto::DateBounds`]), which only date
/// fields have, so a numeric field's range here never prunes anything.
pub fn required_ranges(ast: &QueryAst) -> DateRanges {
    let mut out = DateRanges::new();
    let mut unreadable = HashSet::new();
    let mut visit = vec![ast];
    while let Some(q) = visit.pop() {
        match q {
            QueryAst::Range {
                field,
                gt,
                gte,
                lt,
                lte,
            } => {
                // Rounded as the query rounds them: up for `gt` and `lte`.
                let ms = |v: &Option<serde_json::Value>, up: bool| -> Option<Option<i64>> {
                    match v {
                        None => Some(None),
                        Some(v) if up => {
                            date_value_rounding_up(v).map(|ns| Some(ns.div_euclid(1_000_000)))
                        }
                        Some(v) => date_value(v).map(|ns| Some(ns.div_euclid(1_000_000))),
                    }
                };
                let bounds = (|| {
                    Some((
                        ms(gt, true)?.or(ms(gte, false)?),
                        ms(lt, false)?.or(ms(lte, true)?),
                    ))
                })();
                let Some((lower, upper)) = bounds else {
                    unreadable.insert(field.clone());
                    continue;
                };
                let (from, to) = out.entry(field.clone()).or_insert((i64::MIN, i64::MAX));
                *from = (*from).max(lower.unwrap_or(i64::MIN));
                *to = (*to).min(upper.unwrap_or(i64::MAX));
            }
            QueryAst::Bool { must, filter, .. } => visit.extend(must.iter().chain(filter)),
            _ => {}
        }
    }
    out.retain(|field, _| !unreadable.contains(field));
    out
}

/// Whether `commit` may hold documents matching every range of `dates`.
pub fn may_hold(commit: &ShardCommit, dates: &DateRanges) -> bool {
    dates
        .iter()
        .all(|(field, (from, to))| commit.may_hold_dates(field, *from, *to))
}

/// Uuids of the segments of `commit` whose bounds of a field in `dates` miss its range.
pub fn segments_outside_dates(commit: &ShardCommit, dates: &DateRanges) -> HashSet<String> {
    let mut out = HashSet::new();
    for (field, range) in dates {
        if let Some(bounds) = commit.date_bounds.get(field) {
            out.extend(outside(&bounds.segments, *range));
        }
    }
    out
}

/// Uuids of the segments of `commit` whose `@timestamp` bounds miss `[from, to]`.
pub fn segments_outside(commit: &ShardCommit, range: (i64, i64)) -> HashSet<String> {
    outside(&commit.segment_times, range).collect()
}

/// The segments whose bounds (ms, by uuid) miss `[from, to]`.
fn outside(
    segments: &BTreeMap<String, (i64, i64)>,
    (from, to): (i64, i64),
) -> impl Iterator<Item = String> + '_ {
    segments
        .iter()
        .filter(move |(_, (min, max))| *max < from || to < *min)
        .map(|(uuid, _)| uuid.clone())
}

/// `searcher.search(query, collector)` on `shard` over the segments not in `skip`. Skipped
/// segments are neither scored nor collected (a sort column, say, is never opened on them),
/// so nothing of them is read. Scores use the statistics of the whole shard, as unpruned
/// (document frequencies remembered per shard generation).
pub fn search<C: Collector>(
    shard: &OpenShard,
    query: &dyn Query,
    collector: &C,
    skip: &HashSet<String>,
) -> tantivy::Result<C::Fruit> {
    let searcher = &shard.searcher;
    let stats = shard.stats.provider(searcher);
    if skip.is_empty() {
        return searcher.search_with_statistics_provider(query, collector, &stats);
    }
    let scoring = if collector.requires_scoring() {
        EnableScoring::enabled_from_statistics_provider(&stats, searcher)
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
    use floe_proto::layout::TIMESTAMP_PATH;

    /// The `@timestamp` interval every match must lie in.
    fn time_range(ast: &QueryAst) -> Option<(i64, i64)> {
        required_ranges(ast).remove(TIMESTAMP_PATH)
    }
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
    fn other_date_fields_get_their_own_ranges() {
        let on = |field: &str, gte: serde_json::Value| QueryAst::Range {
            field: field.into(),
            gt: None,
            gte: Some(gte),
            lt: None,
            lte: None,
        };
        let q = QueryAst::Bool {
            must: vec![on("created", json!("2021-01-01"))],
            should: vec![on("updated", json!("2021-01-01"))],
            filter: vec![
                on("@timestamp", json!(0)),
                on("created", json!("2022-01-01")),
            ],
            must_not: vec![],
            minimum_should_match: None,
        };
        let dates = required_ranges(&q);
        // Two required ranges on `created` intersect; `updated` is optional.
        assert_eq!(dates.len(), 2, "{dates:?}");
        assert_eq!(dates["created"], (1_640_995_200_000, i64::MAX));
        assert_eq!(dates[TIMESTAMP_PATH], (0, i64::MAX));
        assert_eq!(time_range(&q), Some((0, i64::MAX)));
        // A bound that is not a date leaves the field out.
        assert!(required_ranges(&on("name", json!("abc"))).is_empty());

        let mut commit: ShardCommit = serde_json::from_value(json!({
            "generation": 1, "tantivy_meta": "{}", "files": [], "num_docs": 3, "size_bytes": 0,
            "min_timestamp": null, "max_timestamp": null,
            "date_bounds": {"created": {"min": 0, "max": 300, "segments": {"old": [0, 99], "new": [200, 300]}}},
        }))
        .unwrap();
        let want = |from, to| DateRanges::from([("created".to_string(), (from, to))]);
        assert!(may_hold(&commit, &want(250, 400)));
        assert!(!may_hold(&commit, &want(301, 400)));
        assert_eq!(
            segments_outside_dates(&commit, &want(100, 250)),
            HashSet::from(["old".to_string()])
        );
        // Fields without bounds (older commits, or no document has them) are searched.
        assert!(may_hold(
            &commit,
            &DateRanges::from([("other".to_string(), (0, 1))])
        ));
        commit.date_bounds.clear();
        assert!(may_hold(&commit, &want(301, 400)));
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
