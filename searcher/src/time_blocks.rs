//! The `@timestamp` slice of a segment without scanning its whole column. A top-k by time
//! restricts its query to the newest (or oldest) slice of the shard's time range
//! (`search::shard_run::TimeWindow`); a range on a column has no index, so tantivy reads every
//! value of the segment to find the slice — measured as 45% of a warm top-10 by time. Log
//! documents arrive roughly in time order, so their timestamps are clustered by document id:
//! this keeps each segment's min/max per block of documents (computed once per segment —
//! segments are immutable — and kept in a bounded cache) and reads only the blocks whose
//! bounds meet the slice.

use std::sync::{Arc, LazyLock};

use tantivy::query::{
    BitSetDocSet, ConstScorer, EnableScoring, Explanation, Query, Scorer, Weight,
};
use tantivy::schema::Field;
use tantivy::{DocId, Score, SegmentReader, TantivyError};

/// Documents per block: small enough that a slice reads few values beyond it, large enough
/// that the bounds of a 1M-document segment are 16 KiB.
const BLOCK: u32 = 1024;

/// (segment, field) → (min, max) ms per block (`i64::MAX, i64::MIN` for a block without
/// values).
type Bounds = Arc<Vec<(i64, i64)>>;

static BLOCKS: LazyLock<moka::sync::Cache<(u128, u32), Bounds>> = LazyLock::new(|| {
    moka::sync::Cache::builder()
        // Entries weigh their block count: 4M blocks = 4G documents, 64 MiB of bounds.
        .weigher(|_, v: &Bounds| v.len().try_into().unwrap_or(u32::MAX))
        .max_capacity(4 << 20)
        .build()
});

/// Documents whose `field` (a millisecond date column) lies in `[from, to]` (ms, inclusive).
#[derive(Clone, Debug)]
pub struct TimeSliceQuery {
    pub field: Field,
    pub from: i64,
    pub to: i64,
}

impl Query for TimeSliceQuery {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        let name = scoring.schema().get_field_name(self.field).to_string();
        Ok(Box::new(TimeSliceWeight {
            query: self.clone(),
            name,
        }))
    }
}

struct TimeSliceWeight {
    query: TimeSliceQuery,
    name: String,
}

impl TimeSliceWeight {
    /// The matching documents of one segment.
    fn docs(&self, reader: &SegmentReader) -> tantivy::Result<tantivy::BitSet> {
        let column = reader.fast_fields().date(&self.name)?;
        let ms = |doc: DocId| column.first(doc).map(|d| d.into_timestamp_millis());
        let segment = u128::from_str_radix(&reader.segment_id().uuid_string(), 16)
            .map_err(|e| TantivyError::InvalidArgument(format!("segment id: {e}")))?;
        let key = (segment, self.query.field.field_id());
        let bounds = BLOCKS.get_with(key, || {
            // Every document has one value: read each block's values in one call.
            let dense = column.get_cardinality() == tantivy::columnar::Cardinality::Full;
            let mut values = vec![tantivy::DateTime::MIN; BLOCK as usize];
            Arc::new(
                (0..reader.max_doc().div_ceil(BLOCK))
                    .map(|b| {
                        let end = ((b + 1) * BLOCK).min(reader.max_doc());
                        let fold = |(lo, hi): (i64, i64), v: i64| (lo.min(v), hi.max(v));
                        if dense {
                            let block = &mut values[..(end - b * BLOCK) as usize];
                            column.values.get_range(u64::from(b * BLOCK), block);
                            block
                                .iter()
                                .map(|d| d.into_timestamp_millis())
                                .fold((i64::MAX, i64::MIN), fold)
                        } else {
                            (b * BLOCK..end)
                                .filter_map(ms)
                                .fold((i64::MAX, i64::MIN), fold)
                        }
                    })
                    .collect(),
            )
        });
        let (from, to) = (self.query.from, self.query.to);
        let mut out = tantivy::BitSet::with_max_value(reader.max_doc());
        for (b, &(lo, hi)) in bounds.iter().enumerate() {
            if hi < from || lo > to {
                continue;
            }
            let start = b as u32 * BLOCK;
            let end = (start + BLOCK).min(reader.max_doc());
            for doc in start..end {
                if ms(doc).is_some_and(|v| v >= from && v <= to) {
                    out.insert(doc);
                }
            }
        }
        Ok(out)
    }
}

impl Weight for TimeSliceWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(ConstScorer::new(
            BitSetDocSet::from(self.docs(reader)?),
            boost,
        )))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        if self.docs(reader)?.contains(doc) {
            Ok(Explanation::new("time slice", 1.0))
        } else {
            Err(TantivyError::InvalidArgument(format!(
                "document {doc} is outside the time slice"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::collector::DocSetCollector;
    use tantivy::query::RangeQuery;
    use tantivy::schema::{DateOptions, DateTimePrecision, Schema};
    use tantivy::{doc, DateTime, Index, Term};

    #[test]
    fn slices_match_a_range_on_the_column() {
        // Optional (some documents without a timestamp) and full columns.
        for gaps in [13, i64::MAX] {
            slices_match(gaps);
        }
    }

    fn slices_match(gaps: i64) {
        let mut b = Schema::builder();
        let ts = b.add_date_field(
            "_ts",
            DateOptions::default()
                .set_fast()
                .set_precision(DateTimePrecision::Milliseconds),
        );
        let index = Index::create_in_ram(b.build());
        let mut w = index.writer_with_num_threads(1, 20_000_000).unwrap();
        // Mostly in time order, with stragglers and documents without a timestamp.
        for i in 0..5_000i64 {
            let ms = if i % 97 == 0 {
                1_000 * (5_000 - i)
            } else {
                1_000 * i
            };
            if i % gaps == 0 && i > 0 {
                w.add_document(doc!()).unwrap();
            } else {
                w.add_document(doc!(ts => DateTime::from_timestamp_millis(ms)))
                    .unwrap();
            }
        }
        w.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let term = |ms: i64| Term::from_field_date(ts, DateTime::from_timestamp_millis(ms));
        for (from, to) in [
            (4_900_000, i64::MAX),
            (i64::MIN, 100_000),
            (2_000_000, 2_003_000),
            (9_000_000, i64::MAX),
        ] {
            let slice = searcher
                .search(
                    &TimeSliceQuery {
                        field: ts,
                        from,
                        to,
                    },
                    &DocSetCollector,
                )
                .unwrap();
            let lower = if from == i64::MIN {
                std::ops::Bound::Unbounded
            } else {
                std::ops::Bound::Included(term(from))
            };
            let upper = if to == i64::MAX {
                std::ops::Bound::Unbounded
            } else {
                std::ops::Bound::Included(term(to))
            };
            let range = searcher
                .search(&RangeQuery::new(lower, upper), &DocSetCollector)
                .unwrap();
            assert_eq!(slice, range, "[{from}, {to}]");
        }
    }
}
