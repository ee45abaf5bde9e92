//! `terminate_after` and `timeout`: a shard stops collecting once it has collected the
//! number of documents asked for, or once the search's time is up, and answers with what it
//! has (`terminated_early`, `timed_out`), as OpenSearch does.
//!
//! Both are one query wrapper ([`LimitQuery`]) whose scorer ends its document stream early:
//! every collector (top-k, count, aggregations) then sees the same documents. Only searches
//! that ask for a limit are wrapped (a wrapped query loses tantivy's block-max pruning).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::{DocId, DocSet, Score, SegmentReader, Term, TERMINATED};

/// The time is checked once per this many documents.
const CHECK_EVERY: u32 = 64;

/// What a search asks to stop at.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// `terminate_after`: documents collected per shard at most.
    pub max_docs: Option<u64>,
    /// `timeout`, as a point in time.
    pub deadline: Option<Instant>,
}

impl Limits {
    pub fn is_none(&self) -> bool {
        self.max_docs.is_none() && self.deadline.is_none()
    }
}

/// Which limit ended a shard's search early (also what a leaf answers, in its JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Stopped {
    pub terminated_early: bool,
    pub timed_out: bool,
}

impl Stopped {
    pub fn merge(&mut self, other: Stopped) {
        self.terminated_early |= other.terminated_early;
        self.timed_out |= other.timed_out;
    }
}

/// One shard search's budget and what ended it.
#[derive(Debug)]
struct Budget {
    limits: Limits,
    /// Documents taken so far, over all segments (searched in parallel).
    taken: AtomicU64,
    terminated: AtomicBool,
    timed_out: AtomicBool,
}

impl Budget {
    /// Takes one document; false when a limit says stop.
    fn take(&self, check_time: bool) -> bool {
        if let Some(max) = self.limits.max_docs {
            if self.taken.fetch_add(1, Ordering::Relaxed) >= max {
                self.terminated.store(true, Ordering::Relaxed);
                return false;
            }
        }
        if check_time {
            if let Some(deadline) = self.limits.deadline {
                if Instant::now() >= deadline {
                    self.timed_out.store(true, Ordering::Relaxed);
                    return false;
                }
            }
        }
        true
    }
}

/// `inner`, cut short by [`Limits`]. Use one per shard search: the budget is shared by the
/// shard's segments (and by clones).
#[derive(Debug)]
pub struct LimitQuery {
    inner: Box<dyn Query>,
    budget: Arc<Budget>,
}

impl Clone for LimitQuery {
    fn clone(&self) -> Self {
        LimitQuery {
            inner: self.inner.box_clone(),
            budget: self.budget.clone(),
        }
    }
}

impl LimitQuery {
    pub fn new(inner: Box<dyn Query>, limits: Limits) -> LimitQuery {
        LimitQuery {
            inner,
            budget: Arc::new(Budget {
                limits,
                taken: AtomicU64::new(0),
                terminated: AtomicBool::new(false),
                timed_out: AtomicBool::new(false),
            }),
        }
    }

    /// What ended the search early, once it ran.
    pub fn stopped(&self) -> Stopped {
        Stopped {
            terminated_early: self.budget.terminated.load(Ordering::Relaxed),
            timed_out: self.budget.timed_out.load(Ordering::Relaxed),
        }
    }
}

impl Query for LimitQuery {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(LimitWeight {
            inner: self.inner.weight(scoring)?,
            budget: self.budget.clone(),
        }))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        self.inner.query_terms(visitor)
    }
}

struct LimitWeight {
    inner: Box<dyn Weight>,
    budget: Arc<Budget>,
}

impl Weight for LimitWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let inner = self.inner.scorer(reader, boost)?;
        let mut scorer = LimitScorer {
            inner,
            budget: self.budget.clone(),
            seen: 0,
            done: false,
        };
        // A scorer starts on its first document: that one is taken too.
        if scorer.inner.doc() != TERMINATED && !scorer.budget.take(true) {
            scorer.done = true;
        }
        Ok(Box::new(scorer))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.inner.explain(reader, doc)
    }
}

struct LimitScorer {
    inner: Box<dyn Scorer>,
    budget: Arc<Budget>,
    seen: u32,
    done: bool,
}

impl LimitScorer {
    fn admit(&mut self, doc: DocId) -> DocId {
        if doc == TERMINATED {
            return doc;
        }
        self.seen = self.seen.wrapping_add(1);
        if self.budget.take(self.seen.is_multiple_of(CHECK_EVERY)) {
            doc
        } else {
            self.done = true;
            TERMINATED
        }
    }
}

impl DocSet for LimitScorer {
    fn advance(&mut self) -> DocId {
        if self.done {
            return TERMINATED;
        }
        let doc = self.inner.advance();
        self.admit(doc)
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.done {
            return TERMINATED;
        }
        let doc = self.inner.seek(target);
        self.admit(doc)
    }

    fn doc(&self) -> DocId {
        if self.done {
            TERMINATED
        } else {
            self.inner.doc()
        }
    }

    fn size_hint(&self) -> u32 {
        self.inner.size_hint()
    }
}

impl Scorer for LimitScorer {
    fn score(&mut self) -> Score {
        self.inner.score()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::collector::Count;
    use tantivy::query::AllQuery;
    use tantivy::schema::{Schema, STORED};
    use tantivy::{doc, Index};

    fn index(docs: u64) -> Index {
        let mut b = Schema::builder();
        let n = b.add_u64_field("n", STORED);
        let index = Index::create_in_ram(b.build());
        let mut w = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for i in 0..docs {
            w.add_document(doc!(n => i)).unwrap();
        }
        w.commit().unwrap();
        index
    }

    #[test]
    fn stops_after_the_documents_asked_for() {
        let searcher = index(1_000).reader().unwrap().searcher();
        let limits = Limits {
            max_docs: Some(10),
            deadline: None,
        };
        let q = LimitQuery::new(Box::new(AllQuery), limits);
        assert_eq!(searcher.search(&q, &Count).unwrap(), 10);
        assert_eq!(
            q.stopped(),
            Stopped {
                terminated_early: true,
                timed_out: false
            }
        );
        // More than there are: all of them, not terminated early.
        let q = LimitQuery::new(
            Box::new(AllQuery),
            Limits {
                max_docs: Some(5_000),
                deadline: None,
            },
        );
        assert_eq!(searcher.search(&q, &Count).unwrap(), 1_000);
        assert_eq!(q.stopped(), Stopped::default());
    }

    #[test]
    fn a_leaf_answer_carries_what_stopped_it() {
        let mut partial = crate::leaf::Partial::default();
        partial.stopped.timed_out = true;
        let json = serde_json::to_value(&partial).unwrap();
        assert_eq!(json["timed_out"], serde_json::json!(true), "{json}");
        assert_eq!(json["terminated_early"], serde_json::json!(false), "{json}");
        let back: crate::leaf::Partial = serde_json::from_value(json).unwrap();
        assert_eq!(back.stopped, partial.stopped);
        // A leaf that says nothing about it (an older node) stopped at nothing.
        let old = serde_json::json!({"hits": [], "count": 3, "max_score": null, "aggs": null, "hist": []});
        let back: crate::leaf::Partial = serde_json::from_value(old).unwrap();
        assert_eq!(back.stopped, Stopped::default());
    }

    #[test]
    fn stops_when_the_time_is_up() {
        let searcher = index(1_000).reader().unwrap().searcher();
        let q = LimitQuery::new(
            Box::new(AllQuery),
            Limits {
                max_docs: None,
                deadline: Some(Instant::now()),
            },
        );
        let n = searcher.search(&q, &Count).unwrap();
        assert!(n < 1_000, "{n}");
        assert!(q.stopped().timed_out);
    }
}
