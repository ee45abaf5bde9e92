//! [`QueryAst`] → tantivy queries, resolved against an index mapping and the shard layout.

use std::ops::Bound;

use floe_proto::layout::{ResolvedField, ShardLayout};
use floe_proto::mapping::{FieldType, Mappings};
use serde_json::{json, Value};
use tantivy::query::{
    AllQuery, AutomatonWeight, BooleanQuery, BoostQuery, ConstScoreQuery, DisjunctionMaxQuery,
    EmptyQuery, EnableScoring, ExistsQuery, FuzzyTermQuery, InvertedIndexRangeQuery, Occur,
    PhrasePrefixQuery, PhraseQuery, Query, RangeQuery, TermQuery, Weight,
};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{DateTime, Term};

use crate::ast::{QueryAst, ALL_FIELDS};
use crate::date_math::is_date_math;
pub use crate::date_math::{date_value, date_value_rounding_up};
use crate::SearchError;

/// Translates queries for one index.
pub struct Translator<'a> {
    layout: &'a ShardLayout,
    mappings: &'a Mappings,
    analyzer: TextAnalyzer,
}

fn shard_error(reason: impl Into<String>) -> SearchError {
    SearchError::QueryShard(reason.into())
}

impl<'a> Translator<'a> {
    pub fn new(layout: &'a ShardLayout, mappings: &'a Mappings) -> Self {
        let analyzer = tantivy::tokenizer::TokenizerManager::default()
            .get("default")
            .expect("default tokenizer exists");
        Translator {
            layout,
            mappings,
            analyzer,
        }
    }

    pub fn translate(&mut self, ast: &QueryAst) -> Result<Box<dyn Query>, SearchError> {
        Ok(match ast {
            QueryAst::MatchAll => Box::new(AllQuery),
            QueryAst::MatchNone => Box::new(EmptyQuery),
            QueryAst::Match { field, query, and } => {
                self.on_fields(field, |t, f| t.match_query(f, query, *and))?
            }
            QueryAst::MatchPhrase { field, query, slop } => {
                self.on_fields(field, |t, f| t.phrase_query(f, query, *slop))?
            }
            QueryAst::Term { field, value } => {
                self.term_values(field, std::slice::from_ref(value))?
            }
            // Constant score, as OpenSearch's `terms`.
            QueryAst::Terms { field, values } => {
                Box::new(ConstScoreQuery::new(self.term_values(field, values)?, 1.0))
            }
            QueryAst::Range {
                field,
                gt,
                gte,
                lt,
                lte,
            } => self.range(field, gt, gte, lt, lte)?,
            QueryAst::Exists { field } => match self.resolve(field)? {
                None => Box::new(EmptyQuery),
                // No column: any term of the field.
                Some(r) if r.index_only => {
                    let (lo, hi) = self.extremes(&r)?;
                    Box::new(InvertedIndexRangeQuery::new(
                        Bound::Included(lo),
                        Bound::Included(hi),
                    ))
                }
                Some(r) => {
                    // Text fields have no column; their `.keyword` sub-field does.
                    let column = if r.kind == FieldType::Text {
                        match self.resolve(&format!("{field}.keyword"))? {
                            Some(sub) => sub.column_name(),
                            None => format!("k.{field}.keyword"),
                        }
                    } else {
                        r.column_name()
                    };
                    Box::new(ExistsQuery::new(column, false))
                }
            },
            QueryAst::Prefix { field, value } => {
                self.on_fields(field, |t, f| Ok(t.prefix(f, value)))?
            }
            QueryAst::Wildcard { field, value } => {
                let star = value.find(['*', '?']);
                match star {
                    Some(pos) if pos == value.len() - 1 && value.ends_with('*') => {
                        let prefix = &value[..pos];
                        self.on_fields(field, |t, f| Ok(t.prefix(f, prefix)))?
                    }
                    None => {
                        self.on_fields(field, |t, f| t.exact(f, &Value::String(value.clone())))?
                    }
                    Some(_) => {
                        let regex = glob_to_regex(value);
                        self.on_fields(field, |t, f| t.regexp(f, &regex))?
                    }
                }
            }
            QueryAst::Regexp { field, value } => {
                self.on_fields(field, |t, f| t.regexp(f, value))?
            }
            QueryAst::Fuzzy {
                field,
                value,
                distance,
                transpositions,
            } => self.on_fields(field, |t, f| t.fuzzy(f, value, *distance, *transpositions))?,
            QueryAst::MatchPhrasePrefix { field, query } => {
                self.on_fields(field, |t, f| t.phrase_prefix(f, query))?
            }
            QueryAst::DisMax {
                queries,
                tie_breaker,
            } => {
                let disjuncts = queries
                    .iter()
                    .map(|q| self.translate(q))
                    .collect::<Result<Vec<_>, _>>()?;
                Box::new(DisjunctionMaxQuery::with_tie_breaker(
                    disjuncts,
                    *tie_breaker,
                ))
            }
            QueryAst::Boosting {
                positive,
                negative,
                negative_boost,
            } => {
                // A document matches exactly one branch; the second scales its score.
                let plain = BooleanQuery::new(vec![
                    (Occur::Must, self.translate(positive)?),
                    (Occur::MustNot, self.translate(negative)?),
                ]);
                let demoted = BooleanQuery::new(vec![
                    (Occur::Must, self.translate(positive)?),
                    (
                        Occur::Must,
                        Box::new(ConstScoreQuery::new(self.translate(negative)?, 0.0)),
                    ),
                ]);
                Box::new(BooleanQuery::new(vec![
                    (Occur::Should, Box::new(plain) as Box<dyn Query>),
                    (
                        Occur::Should,
                        Box::new(BoostQuery::new(Box::new(demoted), *negative_boost)),
                    ),
                ]))
            }
            QueryAst::Boost { query, boost } => {
                Box::new(BoostQuery::new(self.translate(query)?, *boost))
            }
            QueryAst::Bool {
                must,
                should,
                filter,
                must_not,
                minimum_should_match,
            } => {
                let mut parts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for q in must {
                    parts.push((Occur::Must, self.translate(q)?));
                }
                for q in filter {
                    // Filters do not score: wrap in a constant-score query.
                    let inner = self.translate(q)?;
                    parts.push((
                        Occur::Must,
                        Box::new(tantivy::query::ConstScoreQuery::new(inner, 0.0)),
                    ));
                }
                for q in must_not {
                    parts.push((Occur::MustNot, self.translate(q)?));
                }
                let positive = !must.is_empty() || !filter.is_empty();
                let msm = minimum_should_match.unwrap_or(if positive { 0 } else { 1 });
                if !should.is_empty() {
                    let shoulds: Vec<(Occur, Box<dyn Query>)> = should
                        .iter()
                        .map(|q| Ok((Occur::Should, self.translate(q)?)))
                        .collect::<Result<_, SearchError>>()?;
                    if msm == 0 {
                        parts.extend(shoulds);
                    } else {
                        let inner = BooleanQuery::with_minimum_required_clauses(shoulds, msm);
                        parts.push((Occur::Must, Box::new(inner)));
                    }
                }
                if parts.iter().all(|(o, _)| *o == Occur::MustNot) {
                    parts.push((Occur::Must, Box::new(AllQuery)));
                }
                Box::new(BooleanQuery::new(parts))
            }
        })
    }

    /// The field's place in the layout (`None`: unmapped, matches nothing); an error for a
    /// field kept in `_source` only (`index: false`), as OpenSearch answers.
    fn resolve(&self, field: &str) -> Result<Option<ResolvedField>, SearchError> {
        match self.layout.resolve(self.mappings, field) {
            Some(r) if !r.searchable => Err(shard_error(format!(
                "failed to create query: Cannot search on field [{field}] since it is not indexed."
            ))),
            r => Ok(r),
        }
    }

    /// Applies `f` to one field, or to every searchable field for `*` (OR-ed).
    fn on_fields(
        &mut self,
        field: &str,
        f: impl Fn(&mut Self, &ResolvedField) -> Result<Box<dyn Query>, SearchError>,
    ) -> Result<Box<dyn Query>, SearchError> {
        if field == ALL_FIELDS || field.contains('*') {
            let names: Vec<String> = self
                .mappings
                .fields
                .keys()
                .filter(|n| glob(field, n))
                .cloned()
                .collect();
            let mut should = Vec::new();
            for name in names {
                let Ok(Some(r)) = self.resolve(&name) else {
                    continue; // not searchable
                };
                // Lenient, as query_string on `*`: skip fields the text cannot be a value of.
                if let Ok(q) = f(self, &r) {
                    should.push((Occur::Should, q));
                }
            }
            return Ok(if should.is_empty() {
                Box::new(EmptyQuery)
            } else {
                Box::new(BooleanQuery::new(should))
            });
        }
        match self.resolve(field)? {
            Some(r) => f(self, &r),
            None if field == "_id" => Err(shard_error("use a term or ids query on [_id]")),
            None => Ok(Box::new(EmptyQuery)),
        }
    }

    fn tokens(&mut self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stream = self.analyzer.token_stream(text);
        while let Some(tok) = stream.next() {
            out.push(tok.text.clone());
        }
        out
    }

    fn text_term(&self, r: &ResolvedField, token: &str) -> Term {
        let mut term = Term::from_field_json_path(r.field, &r.path, true);
        term.append_type_and_str(token);
        term
    }

    /// The analyzed terms of `text` in a text field, or `Err` with the query for the
    /// cases that need no combining (a non-text field: exact value; zero or one token).
    fn analyzed(
        &mut self,
        r: &ResolvedField,
        text: &str,
    ) -> Result<Vec<Term>, Result<Box<dyn Query>, SearchError>> {
        if r.kind != FieldType::Text {
            return Err(self.exact(r, &Value::String(text.to_string())));
        }
        let mut terms: Vec<Term> = self
            .tokens(text)
            .iter()
            .map(|t| self.text_term(r, t))
            .collect();
        match terms.len() {
            0 => Err(Ok(Box::new(EmptyQuery))),
            1 => Err(Ok(Box::new(TermQuery::new(
                terms.remove(0),
                IndexRecordOption::WithFreqs,
            )))),
            _ => Ok(terms),
        }
    }

    fn match_query(
        &mut self,
        r: &ResolvedField,
        text: &str,
        and: bool,
    ) -> Result<Box<dyn Query>, SearchError> {
        let terms = match self.analyzed(r, text) {
            Ok(terms) => terms,
            Err(done) => return done,
        };
        let occur = if and { Occur::Must } else { Occur::Should };
        let clauses = terms
            .into_iter()
            .map(|t| {
                (
                    occur,
                    Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs)) as Box<dyn Query>,
                )
            })
            .collect();
        Ok(Box::new(BooleanQuery::new(clauses)))
    }

    fn phrase_query(
        &mut self,
        r: &ResolvedField,
        text: &str,
        slop: u32,
    ) -> Result<Box<dyn Query>, SearchError> {
        match self.analyzed(r, text) {
            Ok(terms) => {
                let mut phrase = PhraseQuery::new(terms);
                phrase.set_slop(slop);
                Ok(Box::new(phrase))
            }
            Err(done) => done,
        }
    }

    /// Terms of the field matching `pattern` (whole term; text fields: their tokens).
    fn regexp(&mut self, r: &ResolvedField, pattern: &str) -> Result<Box<dyn Query>, SearchError> {
        if !r.is_json() || r.column_only {
            return Err(shard_error(format!(
                "regexp and wildcard queries are not supported on field [{}]",
                r.path
            )));
        }
        let pattern = if r.kind == FieldType::Text {
            pattern.to_lowercase()
        } else {
            pattern.to_string()
        };
        // JSON terms start with the field's path and type: the expression matches after them.
        let prefix = self.text_term(r, "");
        let path_and_type = std::str::from_utf8(prefix.serialized_value_bytes())
            .map_err(|_| shard_error("field path is not UTF-8"))?;
        let escaped: String = path_and_type
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_string()
                } else {
                    format!("\\x{{{:x}}}", c as u32)
                }
            })
            .collect();
        let regex = tantivy_fst::Regex::new(&format!("{escaped}(?:{pattern})")).map_err(|e| {
            SearchError::Parsing(format!("invalid regular expression [{pattern}]: {e}"))
        })?;
        // The path up to and including its end marker (a 0 byte): the dictionary range.
        let bytes = prefix.serialized_value_bytes();
        let path = match bytes.iter().position(|b| *b == 0) {
            Some(end) => bytes[..=end].to_vec(),
            None => bytes.to_vec(),
        };
        Ok(Box::new(JsonRegexQuery {
            field: r.field,
            regex: std::sync::Arc::new(regex),
            path,
        }))
    }

    fn fuzzy(
        &mut self,
        r: &ResolvedField,
        value: &str,
        distance: Option<u8>,
        transpositions: bool,
    ) -> Result<Box<dyn Query>, SearchError> {
        if !r.is_json() || r.column_only || !matches!(r.kind, FieldType::Text | FieldType::Keyword)
        {
            return self.exact(r, &Value::String(value.to_string()));
        }
        let value = if r.kind == FieldType::Text {
            value.to_lowercase()
        } else {
            value.to_string()
        };
        // AUTO: exact up to 2 characters, one edit up to 5, else two.
        let distance = distance.unwrap_or(match value.chars().count() {
            0..=2 => 0,
            3..=5 => 1,
            _ => 2,
        });
        Ok(Box::new(FuzzyTermQuery::new(
            self.text_term(r, &value),
            distance,
            transpositions,
        )))
    }

    /// A phrase whose last token is a prefix (`match_phrase_prefix`).
    fn phrase_prefix(
        &mut self,
        r: &ResolvedField,
        text: &str,
    ) -> Result<Box<dyn Query>, SearchError> {
        if r.kind != FieldType::Text {
            return Ok(self.prefix(r, text));
        }
        let tokens = self.tokens(text);
        match tokens.len() {
            0 => Ok(Box::new(EmptyQuery)),
            1 => Ok(self.prefix(r, &tokens[0])),
            _ => {
                let terms = tokens.iter().map(|t| self.text_term(r, t)).collect();
                let mut q = PhrasePrefixQuery::new(terms);
                q.set_max_expansions(50);
                Ok(Box::new(q))
            }
        }
    }

    fn prefix(&mut self, r: &ResolvedField, prefix: &str) -> Box<dyn Query> {
        if !r.is_json() {
            return Box::new(EmptyQuery); // no string prefix of a date column
        }
        let value = if r.kind == FieldType::Text {
            prefix.to_lowercase()
        } else {
            prefix.to_string()
        };
        if r.column_only {
            // Every value starting with `prefix` sorts between it and it followed by the
            // highest code point.
            return Box::new(RangeQuery::new(
                Bound::Included(self.text_term(r, &value)),
                Bound::Excluded(self.text_term(r, &format!("{value}\u{10FFFF}"))),
            ));
        }
        let mut q = PhrasePrefixQuery::new(vec![self.text_term(r, &value)]);
        q.set_max_expansions(10_000);
        Box::new(q)
    }

    /// An exact (unanalyzed) value of a field, typed by its mapping.
    fn exact(&mut self, r: &ResolvedField, value: &Value) -> Result<Box<dyn Query>, SearchError> {
        if self.is_ip(r) {
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            return match crate::ip::term(&text)? {
                crate::ip::IpTerm::Exact(ip) => self.exact_term(r, &Value::String(ip)),
                crate::ip::IpTerm::Pattern(p) => self.regexp(r, &p),
            };
        }
        self.exact_term(r, value)
    }

    /// Whether `r` is an `ip` field (addresses as canonical keywords, see [`crate::ip`]).
    fn is_ip(&self, r: &ResolvedField) -> bool {
        self.mappings
            .get(&r.path)
            .is_some_and(|fm| fm.type_name == "ip")
    }

    fn exact_term(
        &mut self,
        r: &ResolvedField,
        value: &Value,
    ) -> Result<Box<dyn Query>, SearchError> {
        // `scaled_float`: the value as it was indexed (rounded).
        let scaled = match (r.kind, self.mappings.get(&r.path), value.as_f64()) {
            (FieldType::Double, Some(fm), Some(v)) if fm.scaling_factor.is_some() => {
                Some(json!(fm.scaled(v)))
            }
            _ => None,
        };
        let term = self.typed_term(r, scaled.as_ref().unwrap_or(value))?;
        if r.column_only {
            // `_ts` and `kc` are columns without an inverted index: an exact value is a
            // one-value range on the column.
            return Ok(Box::new(RangeQuery::new(
                Bound::Included(term.clone()),
                Bound::Included(term),
            )));
        }
        Ok(Box::new(TermQuery::new(term, IndexRecordOption::Basic)))
    }

    /// A date value for field `r`: in the mapping's `format` first (`dd/MM/yyyy`), else as
    /// ISO 8601, epoch millis or date math (`now-1h`).
    fn date_ns(&self, r: &ResolvedField, value: &Value) -> Option<i64> {
        let path = if r.is_json() {
            r.path.as_str()
        } else {
            floe_proto::layout::TIMESTAMP_PATH
        };
        let spec = self.mappings.get(path).and_then(|fm| fm.format.as_deref());
        floe_proto::date_format::read_date(spec, value).or_else(|| date_value(value))
    }

    fn typed_term(&self, r: &ResolvedField, value: &Value) -> Result<Term, SearchError> {
        let bad = || {
            shard_error(format!("failed to create query: [{value}] is not a valid value for field [{}] of type [{:?}]", r.path, r.kind).to_lowercase())
        };
        if !r.is_json() {
            let ns = self.date_ns(r, value).ok_or_else(bad)?;
            let date = DateTime::from_timestamp_nanos(ns)
                .truncate(tantivy::schema::DateTimePrecision::Milliseconds);
            return Ok(Term::from_field_date(r.field, date));
        }
        let mut term = Term::from_field_json_path(r.field, &r.path, true);
        match r.kind {
            FieldType::Text | FieldType::Keyword => {
                let s = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => value.to_string(),
                    _ => return Err(bad()),
                };
                term.append_type_and_str(&s);
            }
            FieldType::Long => {
                let n = match value {
                    Value::Number(n) => n
                        .as_i64()
                        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                }
                .ok_or_else(bad)?;
                term.append_type_and_fast_value(n);
            }
            FieldType::Double => {
                let n = match value {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                }
                .ok_or_else(bad)?;
                term.append_type_and_fast_value(n);
            }
            FieldType::Boolean => {
                let b = match value {
                    Value::Bool(b) => Some(*b),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                }
                .ok_or_else(bad)?;
                term.append_type_and_fast_value(b);
            }
            FieldType::Date => {
                let ns = self.date_ns(r, value).ok_or_else(bad)?;
                term.append_type_and_fast_value(DateTime::from_timestamp_nanos(ns));
            }
        }
        Ok(term)
    }

    fn term_values(
        &mut self,
        field: &str,
        values: &[Value],
    ) -> Result<Box<dyn Query>, SearchError> {
        let mut queries: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for v in values {
            let q: Box<dyn Query> = if field == "_id" {
                let id = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Box::new(TermQuery::new(
                    Term::from_field_text(self.layout.id, &id),
                    IndexRecordOption::Basic,
                ))
            } else {
                match self.resolve(field)? {
                    None => Box::new(EmptyQuery),
                    Some(r) => self.exact(&r, v)?,
                }
            };
            queries.push((Occur::Should, q));
        }
        Ok(if queries.len() == 1 {
            queries.pop().expect("one").1
        } else {
            Box::new(BooleanQuery::new(queries))
        })
    }

    fn range(
        &mut self,
        field: &str,
        gt: &Option<Value>,
        gte: &Option<Value>,
        lt: &Option<Value>,
        lte: &Option<Value>,
    ) -> Result<Box<dyn Query>, SearchError> {
        let Some(r) = self.resolve(field)? else {
            return Ok(Box::new(EmptyQuery));
        };
        if r.kind == FieldType::Text {
            return Err(shard_error(format!(
                "range queries on text field [{field}] are not supported; use [{field}.keyword]"
            )));
        }
        if self.is_ip(&r) {
            return self.ip_range(&r, gt, gte, lt, lte);
        }
        // Date math rounding goes up for `gt` and `lte` (`lte: now/d` is all of today).
        let rounded_up = |v: &Option<Value>| -> Option<Value> {
            let v = v.as_ref()?;
            match date_value_rounding_up(v) {
                Some(ns) if is_date_math(v) && r.kind == FieldType::Date => {
                    Some(Value::String(floe_proto::mapping::format_date(ns)))
                }
                _ => Some(v.clone()),
            }
        };
        let (gt, lte) = (&rounded_up(gt), &rounded_up(lte));
        // On integer fields a fractional bound is rounded inwards, as OpenSearch does
        // (`lte: 14.5` → `lte: 14`, `gt: 14.5` → `gte: 15`).
        let fraction = |v: &Value| {
            v.as_f64()
                .filter(|f| r.kind == FieldType::Long && f.fract() != 0.0 && f.is_finite())
        };
        let lower = match (gt, gte) {
            (Some(v), _) | (None, Some(v)) if fraction(v).is_some() => {
                let up = json!(fraction(v).unwrap_or_default().ceil() as i64);
                Bound::Included(self.typed_term(&r, &up)?)
            }
            (Some(v), _) => Bound::Excluded(self.typed_term(&r, v)?),
            (None, Some(v)) => Bound::Included(self.typed_term(&r, v)?),
            _ => Bound::Unbounded,
        };
        let upper = match (lt, lte) {
            (Some(v), _) | (None, Some(v)) if fraction(v).is_some() => {
                let down = json!(fraction(v).unwrap_or_default().floor() as i64);
                Bound::Included(self.typed_term(&r, &down)?)
            }
            (Some(v), _) => Bound::Excluded(self.typed_term(&r, v)?),
            (None, Some(v)) => Bound::Included(self.typed_term(&r, v)?),
            _ => Bound::Unbounded,
        };
        if r.index_only {
            // No column (`doc_values: false`): a range of terms, bounded on both sides so
            // that it stays within the field's path and type.
            let (lo, hi) = self.extremes(&r)?;
            let lower = match lower {
                Bound::Unbounded => Bound::Included(lo),
                b => b,
            };
            let upper = match upper {
                Bound::Unbounded => Bound::Included(hi),
                b => b,
            };
            return Ok(Box::new(InvertedIndexRangeQuery::new(lower, upper)));
        }
        if matches!((&lower, &upper), (Bound::Unbounded, Bound::Unbounded)) {
            return Ok(Box::new(ExistsQuery::new(r.column_name(), false)));
        }
        Ok(Box::new(RangeQuery::new(lower, upper)))
    }

    /// A range on an `ip` field (IPv4): exclusive bounds become the next (previous) address.
    fn ip_range(
        &mut self,
        r: &ResolvedField,
        gt: &Option<Value>,
        gte: &Option<Value>,
        lt: &Option<Value>,
        lte: &Option<Value>,
    ) -> Result<Box<dyn Query>, SearchError> {
        let v4 =
            |v: &Value| crate::ip::v4(&v.as_str().map_or_else(|| v.to_string(), str::to_string));
        let lo = match (gt, gte) {
            (Some(v), _) => v4(v)?.checked_add(1),
            (None, Some(v)) => Some(v4(v)?),
            _ => Some(0),
        };
        let hi = match (lt, lte) {
            (Some(v), _) => v4(v)?.checked_sub(1),
            (None, Some(v)) => Some(v4(v)?),
            _ => Some(u32::MAX),
        };
        match lo.zip(hi).and_then(|(lo, hi)| crate::ip::range(lo, hi)) {
            Some(pattern) => self.regexp(r, &pattern),
            None => Ok(Box::new(EmptyQuery)),
        }
    }

    /// The lowest and highest terms a field's values can have (by its type).
    fn extremes(&self, r: &ResolvedField) -> Result<(Term, Term), SearchError> {
        let (lo, hi) = match r.kind {
            FieldType::Text | FieldType::Keyword => (json!(""), json!("\u{10FFFF}\u{10FFFF}")),
            FieldType::Long => (json!(i64::MIN), json!(i64::MAX)),
            FieldType::Double => (json!(f64::MIN), json!(f64::MAX)),
            FieldType::Boolean => (json!(false), json!(true)),
            // Years 1 and 9999.
            FieldType::Date => (json!(-62_135_596_800_000i64), json!(253_402_300_799_999i64)),
        };
        Ok((self.typed_term(r, &lo)?, self.typed_term(r, &hi)?))
    }
}

/// A wildcard pattern (`*`, `?`) as a regular expression.
fn glob_to_regex(pattern: &str) -> String {
    let mut out = String::new();
    for c in pattern.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            c if c.is_alphanumeric() => out.push(c),
            c => out.push_str(&format!("\\x{{{:x}}}", c as u32)),
        }
    }
    out
}

/// A regular expression over the terms of one path of a JSON field.
#[derive(Clone, Debug)]
struct JsonRegexQuery {
    field: tantivy::schema::Field,
    regex: std::sync::Arc<tantivy_fst::Regex>,
    path: Vec<u8>,
}

impl Query for JsonRegexQuery {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(
            AutomatonWeight::<tantivy_fst::Regex>::new_for_json_path(
                self.field,
                self.regex.clone(),
                &self.path,
            ),
        ))
    }
}

fn glob(pattern: &str, name: &str) -> bool {
    if pattern == ALL_FIELDS {
        return true;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(pos) = rest.find(part) else {
                return false;
            };
            rest = &rest[pos + part.len()..];
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("req*", "request.method"));
        assert!(glob("*.method", "request.method"));
        assert!(!glob("req*", "status"));
    }
}
