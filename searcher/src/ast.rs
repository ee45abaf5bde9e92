//! The query tree Floe executes, independent of both the OpenSearch JSON it comes from and
//! the tantivy queries it becomes. `dsl` builds it from JSON, `query_string` from Lucene
//! syntax, and `translate` turns it into tantivy queries against a shard's layout.

use serde_json::Value;

/// Field name meaning "every searchable field" (`query_string` without a field).
pub const ALL_FIELDS: &str = "*";

#[derive(Clone, Debug, PartialEq)]
pub enum QueryAst {
    MatchAll,
    MatchNone,
    /// Full-text match: the text is analyzed for `text` fields, taken as one exact value otherwise.
    Match {
        field: String,
        query: String,
        /// `operator: and` — every token must match (default: any).
        and: bool,
    },
    /// Tokens in order, adjacent, or within `slop` moves of it.
    MatchPhrase {
        field: String,
        query: String,
        slop: u32,
    },
    /// Exact value (not analyzed).
    Term {
        field: String,
        value: Value,
    },
    Terms {
        field: String,
        values: Vec<Value>,
    },
    Range {
        field: String,
        gt: Option<Value>,
        gte: Option<Value>,
        lt: Option<Value>,
        lte: Option<Value>,
    },
    Exists {
        field: String,
    },
    Prefix {
        field: String,
        value: String,
    },
    /// `*` and `?` wildcards.
    Wildcard {
        field: String,
        value: String,
    },
    /// Terms within an edit distance of `value` (`fuzziness`: `None` = AUTO by length).
    Fuzzy {
        field: String,
        value: String,
        distance: Option<u8>,
        transpositions: bool,
    },
    /// Terms matching a regular expression (whole term).
    Regexp {
        field: String,
        value: String,
    },
    /// Tokens in order, the last one a prefix.
    MatchPhrasePrefix {
        field: String,
        query: String,
    },
    /// The best score of several queries, plus `tie_breaker` times the others'.
    DisMax {
        queries: Vec<QueryAst>,
        tie_breaker: f32,
    },
    /// `positive`; documents also matching `negative` get their score times `negative_boost`.
    Boosting {
        positive: Box<QueryAst>,
        negative: Box<QueryAst>,
        negative_boost: f32,
    },
    /// A query whose score is multiplied by `boost`.
    Boost {
        query: Box<QueryAst>,
        boost: f32,
    },
    Bool {
        must: Vec<QueryAst>,
        should: Vec<QueryAst>,
        filter: Vec<QueryAst>,
        must_not: Vec<QueryAst>,
        /// Defaults as OpenSearch: 1 if there are only `should` clauses, else 0.
        minimum_should_match: Option<usize>,
    },
}

impl QueryAst {
    /// A `bool` with only the given parts; the others empty.
    pub fn bool_of(
        must: Vec<QueryAst>,
        should: Vec<QueryAst>,
        must_not: Vec<QueryAst>,
    ) -> QueryAst {
        QueryAst::Bool {
            must,
            should,
            filter: Vec::new(),
            must_not,
            minimum_should_match: None,
        }
    }
}
