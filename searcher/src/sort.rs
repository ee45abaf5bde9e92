//! A sort key that tolerates segments without the column: tantivy's type-erased sort key
//! errors when a segment has no values for a field (a field added after that segment was
//! written, or a padding key); OpenSearch treats those documents as missing the value.

use tantivy::collector::sort_key::{NaturalComparator, SortByErasedType};
use tantivy::collector::{SegmentSortKeyComputer, SortKeyComputer};
use tantivy::schema::OwnedValue;
use tantivy::{DocId, Score, SegmentReader};

/// Sort by a fast-field column (or the score); documents without a value get `Null`.
#[derive(Clone, Debug)]
pub struct LenientSort {
    inner: SortByErasedType,
    column: Option<String>,
}

impl LenientSort {
    pub fn field(column: &str) -> Self {
        LenientSort {
            inner: SortByErasedType::for_field(column),
            column: Some(column.to_string()),
        }
    }

    pub fn score() -> Self {
        LenientSort {
            inner: SortByErasedType::for_score(),
            column: None,
        }
    }
}

pub enum LenientSegment {
    Present(<SortByErasedType as SortKeyComputer>::Child),
    Missing,
}

impl SegmentSortKeyComputer for LenientSegment {
    type SortKey = OwnedValue;
    type SegmentSortKey = Option<u64>;
    type SegmentComparator = NaturalComparator;

    #[inline(always)]
    fn segment_sort_key(&mut self, doc: DocId, score: Score) -> Option<u64> {
        match self {
            LenientSegment::Present(c) => c.segment_sort_key(doc, score),
            LenientSegment::Missing => None,
        }
    }

    fn convert_segment_sort_key(&self, key: Option<u64>) -> OwnedValue {
        match self {
            LenientSegment::Present(c) => c.convert_segment_sort_key(key),
            LenientSegment::Missing => OwnedValue::Null,
        }
    }
}

impl SortKeyComputer for LenientSort {
    type SortKey = OwnedValue;
    type Child = LenientSegment;
    type Comparator = NaturalComparator;

    fn requires_scoring(&self) -> bool {
        self.inner.requires_scoring()
    }

    fn segment_sort_key_computer(&self, reader: &SegmentReader) -> tantivy::Result<LenientSegment> {
        if let Some(column) = &self.column {
            if reader.fast_fields().u64_lenient(column)?.is_none() {
                return Ok(LenientSegment::Missing);
            }
        }
        Ok(LenientSegment::Present(
            self.inner.segment_sort_key_computer(reader)?,
        ))
    }
}
