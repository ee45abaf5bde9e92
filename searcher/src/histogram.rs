//! A fast path for the most common log aggregation: `date_histogram` on `@timestamp` (the
//! typed `_ts` column) with a fixed interval and no sub-aggregations. tantivy's generic
//! aggregation pays several nanoseconds per document for its bucket machinery; counting
//! straight from the column in blocks costs about a third of that. Anything else (other
//! fields, sub-aggregations, offsets, bounds) goes through tantivy unchanged; calendar
//! units and time zones are rewritten first (`calendar.rs`).

use floe_proto::mapping::format_date;
use serde_json::{json, Map, Value};
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::{DateTime, DocId, Score, SegmentOrdinal, SegmentReader};

/// One `date_histogram` the fast path answers.
#[derive(Clone, Debug, PartialEq)]
pub struct TsHistogram {
    pub name: String,
    pub interval_ms: i64,
    pub min_doc_count: u64,
}

/// Splits an aggregation request into the histograms the fast path answers and the rest
/// (`None` if nothing is left). `is_ts(field)` tells whether a field is `@timestamp` in
/// the `_ts` column for every index searched.
pub fn split(aggs: &Value, is_ts: impl Fn(&str) -> bool) -> (Vec<TsHistogram>, Option<Value>) {
    let Some(obj) = aggs.as_object() else {
        return (Vec::new(), Some(aggs.clone()));
    };
    let mut fast = Vec::new();
    let mut rest = Map::new();
    for (name, agg) in obj {
        match fast_histogram(name, agg, &is_ts) {
            Some(h) => fast.push(h),
            None => {
                rest.insert(name.clone(), agg.clone());
            }
        }
    }
    (fast, (!rest.is_empty()).then_some(Value::Object(rest)))
}

fn fast_histogram(name: &str, agg: &Value, is_ts: &impl Fn(&str) -> bool) -> Option<TsHistogram> {
    let agg = agg.as_object()?;
    if agg.len() != 1 {
        return None; // sub-aggregations or meta
    }
    let dh = agg.get("date_histogram")?.as_object()?;
    if dh.keys().any(|k| {
        ![
            "field",
            "fixed_interval",
            "calendar_interval",
            "interval",
            "min_doc_count",
        ]
        .contains(&k.as_str())
    }) {
        return None;
    }
    if !is_ts(dh.get("field")?.as_str()?) {
        return None;
    }
    let interval = ["fixed_interval", "calendar_interval", "interval"]
        .iter()
        .find_map(|k| dh.get(*k))?
        .as_str()?;
    let interval_ms = match interval {
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        other if other.ends_with(['s', 'm', 'h', 'd']) && !other.ends_with("ms") => {
            floe_proto::model::parse_time_value(other)?.as_millis() as i64
        }
        _ => return None, // weeks, months, years: calendar-aware, left to tantivy
    };
    if interval_ms <= 0 {
        return None;
    }
    let min_doc_count = dh.get("min_doc_count").map_or(Some(0), Value::as_u64)?;
    Some(TsHistogram {
        name: name.to_string(),
        interval_ms,
        min_doc_count,
    })
}

/// One histogram's counts: `counts[i]` documents in bucket number `first + i` (bucket
/// number × interval = bucket start in epoch ms). Dense: no map entry per bucket.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dense {
    pub first: i64,
    pub counts: Vec<u64>,
}

impl Dense {
    /// Without empty buckets at either end.
    fn trimmed(first: i64, counts: Vec<u64>) -> Dense {
        let Some(lo) = counts.iter().position(|c| *c > 0) else {
            return Dense::default();
        };
        let hi = counts
            .iter()
            .rposition(|c| *c > 0)
            .expect("a non-zero count exists");
        Dense {
            first: first + lo as i64,
            counts: counts[lo..=hi].to_vec(),
        }
    }
}

/// Per histogram of the request, its counts.
pub type Counts = Vec<Dense>;

/// Counts `_ts` values of the matching documents into each histogram's buckets.
pub struct TsHistogramCollector {
    pub column: String,
    pub intervals: Vec<i64>,
}

pub struct TsHistogramSegment {
    column: Option<Column<DateTime>>,
    /// Every document has exactly one value: row id = doc id, contiguous blocks can be
    /// decoded as a range.
    dense_column: bool,
    intervals: Vec<i64>,
    /// Per histogram: first bucket of the segment and dense counters from there.
    dense: Vec<(i64, Vec<u64>)>,
    buffer: Vec<Option<DateTime>>,
    values: Vec<DateTime>,
}

impl Collector for TsHistogramCollector {
    type Fruit = Counts;
    type Child = TsHistogramSegment;

    fn for_segment(
        &self,
        _ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<TsHistogramSegment> {
        let column = reader.fast_fields().date(&self.column).ok();
        let dense = self
            .intervals
            .iter()
            .map(|&iv| match &column {
                Some(c) => {
                    let (lo, hi) = (
                        c.min_value().into_timestamp_millis(),
                        c.max_value().into_timestamp_millis(),
                    );
                    let first = lo.div_euclid(iv);
                    let n = (hi.div_euclid(iv) - first + 1).clamp(0, 10_000_000) as usize;
                    (first, vec![0u64; n])
                }
                None => (0, Vec::new()),
            })
            .collect();
        let dense_column = column
            .as_ref()
            .is_some_and(|c| c.get_cardinality() == tantivy::columnar::Cardinality::Full);
        Ok(TsHistogramSegment {
            column,
            dense_column,
            intervals: self.intervals.clone(),
            dense,
            buffer: Vec::new(),
            values: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Counts>) -> tantivy::Result<Counts> {
        Ok(merge(fruits, self.intervals.len()))
    }
}

/// Sums per-segment (or per-shard) counts.
pub fn merge(fruits: Vec<Counts>, n: usize) -> Counts {
    (0..n)
        .map(|i| {
            let parts: Vec<&Dense> = fruits
                .iter()
                .filter_map(|f| f.get(i))
                .filter(|d| !d.counts.is_empty())
                .collect();
            let (Some(lo), Some(hi)) = (
                parts.iter().map(|d| d.first).min(),
                parts.iter().map(|d| d.first + d.counts.len() as i64).max(),
            ) else {
                return Dense::default();
            };
            let mut counts = vec![0u64; (hi - lo) as usize];
            for d in parts {
                let offset = (d.first - lo) as usize;
                for (slot, c) in counts[offset..].iter_mut().zip(&d.counts) {
                    *slot += c;
                }
            }
            Dense { first: lo, counts }
        })
        .collect()
}

impl TsHistogramSegment {
    /// Adds `values` to every histogram. Log documents arrive roughly in time order, so a
    /// value usually falls in the same bucket as the previous one: that bucket's bounds are
    /// kept and checked first; otherwise bucket = (ms - origin) / interval, computed with a
    /// reciprocal multiply (exact after the one-step correction) instead of a division.
    fn count(
        intervals: &[i64],
        dense: &mut [(i64, Vec<u64>)],
        values: impl Iterator<Item = DateTime> + Clone,
    ) {
        for (iv, (first, counts)) in intervals.iter().zip(dense.iter_mut()) {
            let origin = *first * iv;
            let inv = 1.0 / *iv as f64;
            let (mut lo, mut hi, mut slot) = (i64::MAX, i64::MIN, usize::MAX);
            for ts in values.clone() {
                let x = ts.into_timestamp_millis() - origin;
                if x < lo || x >= hi {
                    let mut b = (x as f64 * inv) as i64;
                    if b * iv > x {
                        b -= 1;
                    } else if (b + 1) * iv <= x {
                        b += 1;
                    }
                    (lo, hi, slot) = (b * iv, (b + 1) * iv, b as usize);
                }
                if let Some(c) = counts.get_mut(slot) {
                    *c += 1;
                }
            }
        }
    }
}

impl SegmentCollector for TsHistogramSegment {
    type Fruit = Counts;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if let Some(ts) = self.column.as_ref().and_then(|c| c.first(doc)) {
            Self::count(&self.intervals, &mut self.dense, std::iter::once(ts));
        }
    }

    fn collect_block(&mut self, docs: &[DocId]) {
        let Some(column) = &self.column else { return };
        let (Some(&lo), Some(&hi)) = (docs.first(), docs.last()) else {
            return;
        };
        if self.dense_column && (hi - lo) as usize + 1 == docs.len() {
            // A run of consecutive documents (match_all, wide ranges): decode it in one go.
            self.values.resize(docs.len(), DateTime::MIN);
            column.values.get_range(lo as u64, &mut self.values);
            Self::count(
                &self.intervals,
                &mut self.dense,
                self.values.iter().copied(),
            );
            return;
        }
        self.buffer.clear();
        self.buffer.resize(docs.len(), None);
        column.first_vals(docs, &mut self.buffer);
        Self::count(
            &self.intervals,
            &mut self.dense,
            self.buffer.iter().flatten().copied(),
        );
    }

    fn harvest(self) -> Counts {
        self.dense
            .into_iter()
            .map(|(first, counts)| Dense::trimmed(first, counts))
            .collect()
    }
}

/// `match_all` with only fast-path histograms: reads each segment's column straight through,
/// in big chunks, segments in parallel, without running a query at all. `None` when a
/// segment has deleted documents or no dense column (then the collector path applies).
pub fn scan_all(
    searcher: &tantivy::Searcher,
    collector: &TsHistogramCollector,
) -> Option<(usize, Counts)> {
    let segments = searcher.segment_readers();
    if segments.iter().any(|s| s.has_deletes()) {
        return None;
    }
    // On the searcher's thread pool (one thread per core), a segment per task.
    let scan = |(ord, seg): (usize, &SegmentReader)| -> tantivy::Result<Option<Counts>> {
        let mut child = collector.for_segment(ord as SegmentOrdinal, seg)?;
        let Some(column) = child.column.clone().filter(|_| child.dense_column) else {
            return Ok(None);
        };
        let mut values = vec![DateTime::MIN; 4096];
        let max_doc = seg.max_doc();
        let mut start = 0u32;
        while start < max_doc {
            let len = (max_doc - start).min(4096) as usize;
            column.values.get_range(start as u64, &mut values[..len]);
            TsHistogramSegment::count(
                &child.intervals,
                &mut child.dense,
                values[..len].iter().copied(),
            );
            start += len as u32;
        }
        Ok(Some(child.harvest()))
    };
    let parts: Vec<Option<Counts>> = searcher
        .index()
        .search_executor()
        .map(scan, segments.iter().enumerate())
        .ok()?;
    let parts: Option<Vec<Counts>> = parts.into_iter().collect();
    let docs = segments.iter().map(|s| s.num_docs() as usize).sum();
    Some((docs, merge(parts?, collector.intervals.len())))
}

/// The OpenSearch response of one histogram: buckets in key order; with `min_doc_count` 0
/// the empty buckets between the first and the last non-empty one are filled in.
pub fn render(h: &TsHistogram, counts: &Dense) -> Value {
    let buckets: Vec<Value> = counts
        .counts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n >= h.min_doc_count)
        .map(|(i, n)| {
            let key = (counts.first + i as i64) * h.interval_ms;
            json!({"key_as_string": format_date_secs(key), "key": key, "doc_count": n})
        })
        .collect();
    json!({ "buckets": buckets })
}

/// `2024-05-01T10:00:00.000Z`, as OpenSearch renders histogram keys. Written by hand: with
/// thousands of buckets, format descriptions cost more than counting the documents.
fn format_date_secs(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        Ok(t) => {
            let (y, m, d) = t.to_calendar_date();
            let (h, mi, s) = t.to_hms();
            let millis = ms.rem_euclid(1000);
            format!(
                "{y:04}-{:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{millis:03}Z",
                m as u8
            )
        }
        Err(_) => format_date(ms * 1_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fast_and_generic() {
        let aggs = json!({
            "a": {"date_histogram": {"field": "@timestamp", "fixed_interval": "1m"}},
            "b": {"date_histogram": {"field": "@timestamp", "calendar_interval": "month"}},
            "c": {"date_histogram": {"field": "@timestamp", "fixed_interval": "1h"}, "aggs": {"x": {"max": {"field": "n"}}}},
            "d": {"terms": {"field": "status"}},
            "e": {"date_histogram": {"field": "other", "fixed_interval": "1m"}},
        });
        let (fast, rest) = split(&aggs, |f| f == "@timestamp");
        assert_eq!(
            fast,
            vec![TsHistogram {
                name: "a".into(),
                interval_ms: 60_000,
                min_doc_count: 0
            }]
        );
        let rest = rest.unwrap();
        assert_eq!(rest.as_object().unwrap().len(), 4);
    }

    #[test]
    fn renders_with_gaps_filled() {
        let h = TsHistogram {
            name: "h".into(),
            interval_ms: 60_000,
            min_doc_count: 0,
        };
        let counts = merge(
            vec![
                vec![Dense {
                    first: 2,
                    counts: vec![1],
                }],
                vec![Dense {
                    first: 0,
                    counts: vec![2],
                }],
            ],
            1,
        )
        .remove(0);
        assert_eq!(
            counts,
            Dense {
                first: 0,
                counts: vec![2, 0, 1]
            }
        );
        let v = render(&h, &counts);
        let b = v["buckets"].as_array().unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(b[1]["doc_count"], 0);
        assert_eq!(b[2]["key"], 120_000);
        assert_eq!(b[0]["key_as_string"], "1970-01-01T00:00:00.000Z");
        let h1 = TsHistogram {
            min_doc_count: 1,
            ..h
        };
        assert_eq!(render(&h1, &counts)["buckets"].as_array().unwrap().len(), 2);
    }
}
