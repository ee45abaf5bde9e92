//! Paging past a point in the sort order: `search_after`, and the cursor of a scroll.
//!
//! Hits after a cursor are those whose sort keys come after its keys, or — on equal keys —
//! whose position (index, shard, segment, document: the merge's tiebreak) comes after the
//! cursor's. Both parts become one tantivy query that restricts the hits; counts and
//! aggregations still cover every match, as OpenSearch's do. Positions are stable only on a
//! pinned commit, so the position part is used with a point in time (scrolls are one).

use std::collections::HashMap;

use serde_json::{json, Value};
use tantivy::index::SegmentId;
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScorer, EmptyQuery, EnableScoring, Explanation, Occur, Query,
    Scorer, Weight,
};
use tantivy::{DocId, DocSet, Score, Searcher, SegmentReader, TERMINATED};

use crate::dsl::parse_query;
use crate::translate::Translator;
use crate::SearchError;

/// A hit's position in the merge order: (index name, shard, segment ordinal, document).
pub type Position = (String, u32, u32, u32);

/// One sort key of the request: the field and whether it sorts ascending. Keys that every
/// document shares (`_doc`, `_shard_doc`, unmapped fields) are left out: they never decide.
#[derive(Clone, Debug)]
pub struct AfterKey {
    pub field: String,
    pub ascending: bool,
    pub value: Value,
}

/// The query selecting the documents of one shard that come after the cursor.
pub fn after_query(
    translator: &mut Translator,
    keys: &[AfterKey],
    position: Option<&Position>,
    index: &str,
    shard: u32,
    searcher: &Searcher,
) -> Result<Box<dyn Query>, SearchError> {
    // Strictly after on the keys: (k1 > v1) or (k1 = v1 and k2 > v2) or ...
    let mut clauses: Vec<Value> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if key.value.is_null() {
            // Nothing sorts after a missing value on this key (missing values sort last).
            continue;
        }
        let mut filter: Vec<Value> = keys[..i].iter().map(equal).collect();
        let op = if key.ascending { "gt" } else { "lt" };
        filter.push(json!({"bool": {
            "should": [{"range": {&key.field: {op: key.value}}}, missing(&key.field)],
            "minimum_should_match": 1
        }}));
        clauses.push(json!({"bool": {"filter": filter}}));
    }
    let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    if !clauses.is_empty() {
        let dsl = json!({"bool": {"should": clauses, "minimum_should_match": 1}});
        should.push((Occur::Should, translator.translate(&parse_query(&dsl)?)?));
    }
    if let Some(pos) = position {
        // Equal keys: after the cursor's position.
        let equal_keys: Box<dyn Query> = if keys.is_empty() {
            Box::new(AllQuery)
        } else {
            let dsl = json!({"bool": {"filter": keys.iter().map(equal).collect::<Vec<_>>()}});
            translator.translate(&parse_query(&dsl)?)?
        };
        let after = position_after(pos, index, shard, searcher);
        should.push((
            Occur::Should,
            Box::new(BooleanQuery::new(vec![
                (Occur::Must, equal_keys),
                (Occur::Must, after),
            ])),
        ));
    }
    Ok(match should.len() {
        0 => Box::new(EmptyQuery),
        _ => Box::new(BooleanQuery::new(should)),
    })
}

fn missing(field: &str) -> Value {
    json!({"bool": {"must_not": [{"exists": {"field": field}}]}})
}

fn equal(key: &AfterKey) -> Value {
    if key.value.is_null() {
        missing(&key.field)
    } else {
        json!({"term": {&key.field: key.value}})
    }
}

/// Documents of this shard after `pos` in (index, shard, segment, document) order.
fn position_after(pos: &Position, index: &str, shard: u32, searcher: &Searcher) -> Box<dyn Query> {
    let here = (index, shard);
    let cut = (pos.0.as_str(), pos.1);
    if here < cut {
        return Box::new(EmptyQuery);
    }
    if here > cut {
        return Box::new(AllQuery);
    }
    let first = searcher
        .segment_readers()
        .iter()
        .enumerate()
        .map(|(ord, seg)| {
            let start = match (ord as u32).cmp(&pos.2) {
                std::cmp::Ordering::Less => seg.max_doc(),
                std::cmp::Ordering::Equal => pos.3.saturating_add(1).min(seg.max_doc()),
                std::cmp::Ordering::Greater => 0,
            };
            (seg.segment_id(), start)
        })
        .collect();
    Box::new(FromDoc { first })
}

/// Every document of each segment from a given document on.
#[derive(Clone, Debug)]
struct FromDoc {
    first: HashMap<SegmentId, DocId>,
}

impl Query for FromDoc {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for FromDoc {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let start = self.first.get(&reader.segment_id()).copied().unwrap_or(0);
        Ok(Box::new(ConstScorer::new(
            DocRange::new(start, reader.max_doc()),
            boost,
        )))
    }

    fn explain(&self, _: &SegmentReader, _: DocId) -> tantivy::Result<Explanation> {
        Ok(Explanation::new("after the cursor", 1.0))
    }
}

/// Documents `start..end`.
struct DocRange {
    doc: DocId,
    end: DocId,
}

impl DocRange {
    fn new(start: DocId, end: DocId) -> Self {
        DocRange {
            doc: if start < end { start } else { TERMINATED },
            end,
        }
    }
}

impl DocSet for DocRange {
    fn advance(&mut self) -> DocId {
        if self.doc != TERMINATED {
            self.doc += 1;
            if self.doc >= self.end {
                self.doc = TERMINATED;
            }
        }
        self.doc
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.doc != TERMINATED && target > self.doc {
            self.doc = if target >= self.end {
                TERMINATED
            } else {
                target
            };
        }
        self.doc
    }

    fn doc(&self) -> DocId {
        self.doc
    }

    fn size_hint(&self) -> u32 {
        if self.doc == TERMINATED {
            0
        } else {
            self.end - self.doc
        }
    }
}
