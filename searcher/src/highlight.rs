//! `highlight`: the parts of a hit's text fields that the query matched, wrapped in tags.
//!
//! The field's text (from `_source`) is analyzed as it was indexed and the tokens the query
//! names (terms, phrase terms, prefixes, wildcards, fuzzy terms) are wrapped in
//! `pre_tags`/`post_tags`. How the text is cut into fragments follows the highlighter
//! `type` (`number_of_fragments: 0`: the whole field, for both):
//! - `unified` (OpenSearch's default): passages of whole sentences, as many as fit in
//!   `fragment_size` characters from a sentence holding a match (a longer sentence is cut
//!   at a token boundary); the `number_of_fragments` passages with the most matches, in
//!   text order (`order: score`: best first);
//! - `plain`: consecutive pieces of about `fragment_size` characters cut at token
//!   boundaries, the first `number_of_fragments` that hold a match.

use floe_proto::mapping::{FieldType, Mappings};
use serde_json::{Map, Value};
use tantivy::tokenizer::TextAnalyzer;

use crate::ast::{QueryAst, ALL_FIELDS};
use crate::SearchError;

/// What a highlighted token must be.
#[derive(Clone, Debug)]
enum Pattern {
    Exact(String),
    Prefix(String),
    /// `*` and `?` wildcards.
    Glob(String),
    /// Within this many edits.
    Fuzzy(String, u8),
}

/// A token pattern of the query, for one field or (`None`) any field.
#[derive(Clone, Debug)]
struct Matcher {
    field: Option<String>,
    pattern: Pattern,
}

/// One requested field (a name or a `*` pattern) with its options.
#[derive(Clone, Debug)]
struct FieldSpec {
    pattern: String,
    fragment_size: usize,
    number_of_fragments: usize,
    pre: String,
    post: String,
    /// `type: unified` (sentence passages) rather than `plain`.
    unified: bool,
    /// `order: score`: passages with the most matches first.
    by_score: bool,
}

/// A request's `highlight`, ready to apply to hits.
#[derive(Clone, Debug)]
pub struct Highlighter {
    fields: Vec<FieldSpec>,
    matchers: Vec<Matcher>,
    require_field_match: bool,
}

fn parsing(reason: impl Into<String>) -> SearchError {
    SearchError::Parsing(reason.into())
}

fn analyzer() -> TextAnalyzer {
    tantivy::tokenizer::TokenizerManager::default()
        .get("default")
        .expect("default tokenizer exists")
}

fn tag(v: Option<&Value>, default: &str) -> String {
    match v {
        Some(Value::Array(a)) => a
            .first()
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => default.to_string(),
    }
}

impl Highlighter {
    /// Parses `highlight` against the query whose terms it shows.
    pub fn new(spec: &Value, query: &QueryAst) -> Result<Highlighter, SearchError> {
        let o = spec
            .as_object()
            .ok_or_else(|| parsing("[highlight] must be an object"))?;
        let pre = tag(o.get("pre_tags"), "<em>");
        let post = tag(o.get("post_tags"), "</em>");
        let num = |v: Option<&Value>, default: usize| {
            v.and_then(Value::as_u64).map_or(default, |n| n as usize)
        };
        let fragment_size = num(o.get("fragment_size"), 100);
        let number_of_fragments = num(o.get("number_of_fragments"), 5);
        let unified = |v: Option<&Value>, default: bool| match v.and_then(Value::as_str) {
            None => Ok(default),
            Some("unified") => Ok(true),
            Some("plain") => Ok(false),
            Some(other) => Err(SearchError::IllegalArgument(format!(
                "highlighter type [{other}] is not supported by Floe (use unified or plain)"
            ))),
        };
        let top_unified = unified(o.get("type"), true)?;
        let score = |v: Option<&Value>, default: bool| {
            v.and_then(Value::as_str).map_or(default, |o| o == "score")
        };
        let top_score = score(o.get("order"), false);
        let entries: Vec<(String, Value)> = match o.get("fields") {
            Some(Value::Object(f)) => f.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect(),
            _ => return Err(parsing("[highlight] requires [fields]")),
        };
        let fields = entries
            .into_iter()
            .map(|(pattern, opts)| {
                Ok(FieldSpec {
                    unified: unified(opts.get("type"), top_unified)?,
                    by_score: score(opts.get("order"), top_score),
                    pattern,
                    fragment_size: num(opts.get("fragment_size"), fragment_size),
                    number_of_fragments: num(opts.get("number_of_fragments"), number_of_fragments),
                    pre: opts
                        .get("pre_tags")
                        .map_or_else(|| pre.clone(), |v| tag(Some(v), &pre)),
                    post: opts
                        .get("post_tags")
                        .map_or_else(|| post.clone(), |v| tag(Some(v), &post)),
                })
            })
            .collect::<Result<Vec<_>, SearchError>>()?;
        let mut matchers = Vec::new();
        collect(query, &mut analyzer(), &mut matchers);
        Ok(Highlighter {
            fields,
            matchers,
            require_field_match: o
                .get("require_field_match")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        })
    }

    /// The `highlight` section of a hit (`None`: nothing matched).
    pub fn highlight(&self, source: &Value, mappings: &Mappings) -> Option<Value> {
        let mut leaves = Vec::new();
        if let Some(obj) = source.as_object() {
            flatten("", obj, &mut leaves);
        }
        let mut out = Map::new();
        for spec in &self.fields {
            for (path, texts) in &leaves {
                if out.contains_key(path) || !floe_metastore::matches_pattern(&spec.pattern, path) {
                    continue;
                }
                let kind = mappings.get(path).map(|m| m.kind);
                if !matches!(kind, Some(FieldType::Text | FieldType::Keyword)) {
                    continue;
                }
                let matchers: Vec<&Matcher> = self
                    .matchers
                    .iter()
                    .filter(|m| {
                        !self.require_field_match || m.field.as_deref().is_none_or(|f| f == path)
                    })
                    .collect();
                let fragments: Vec<Value> = texts
                    .iter()
                    .flat_map(|t| fragments(t, kind == Some(FieldType::Text), &matchers, spec))
                    .take(if spec.number_of_fragments == 0 {
                        usize::MAX
                    } else {
                        spec.number_of_fragments
                    })
                    .map(Value::String)
                    .collect();
                if !fragments.is_empty() {
                    out.insert(path.clone(), Value::Array(fragments));
                }
            }
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }
}

/// String leaves of a source document, by dotted path (arrays: every string).
fn flatten(prefix: &str, obj: &Map<String, Value>, out: &mut Vec<(String, Vec<String>)>) {
    for (k, v) in obj {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::String(s) => out.push((path, vec![s.clone()])),
            Value::Array(a) => {
                let texts: Vec<String> = a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                if !texts.is_empty() {
                    out.push((path.clone(), texts));
                }
                for item in a {
                    if let Value::Object(o) = item {
                        flatten(&path, o, out);
                    }
                }
            }
            Value::Object(o) => flatten(&path, o, out),
            _ => {}
        }
    }
}

/// The token patterns a query matches on (not under `must_not`).
fn collect(q: &QueryAst, analyzer: &mut TextAnalyzer, out: &mut Vec<Matcher>) {
    let field_of = |f: &str| (f != ALL_FIELDS && !f.contains('*')).then(|| f.to_string());
    let mut tokens = |field: &str, text: &str, last_prefix: bool, out: &mut Vec<Matcher>| {
        let mut toks = Vec::new();
        let mut stream = analyzer.token_stream(text);
        while let Some(t) = stream.next() {
            toks.push(t.text.clone());
        }
        let n = toks.len();
        for (i, t) in toks.into_iter().enumerate() {
            let pattern = if last_prefix && i + 1 == n {
                Pattern::Prefix(t)
            } else {
                Pattern::Exact(t)
            };
            out.push(Matcher {
                field: field_of(field),
                pattern,
            });
        }
        // Keyword fields match the whole value.
        out.push(Matcher {
            field: field_of(field),
            pattern: Pattern::Exact(text.to_string()),
        });
    };
    match q {
        QueryAst::Match { field, query, .. } | QueryAst::MatchPhrase { field, query, .. } => {
            tokens(field, query, false, out)
        }
        QueryAst::MatchPhrasePrefix { field, query } => tokens(field, query, true, out),
        QueryAst::Term { field, value } => {
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            tokens(field, &text, false, out);
        }
        QueryAst::Terms { field, values } => {
            for v in values {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                tokens(field, &text, false, out);
            }
        }
        QueryAst::Prefix { field, value } => out.push(Matcher {
            field: field_of(field),
            pattern: Pattern::Prefix(value.clone()),
        }),
        QueryAst::Wildcard { field, value } => out.push(Matcher {
            field: field_of(field),
            pattern: Pattern::Glob(value.clone()),
        }),
        QueryAst::Fuzzy {
            field,
            value,
            distance,
            ..
        } => out.push(Matcher {
            field: field_of(field),
            pattern: Pattern::Fuzzy(
                value.to_lowercase(),
                distance.unwrap_or(match value.chars().count() {
                    0..=2 => 0,
                    3..=5 => 1,
                    _ => 2,
                }),
            ),
        }),
        QueryAst::Bool {
            must,
            should,
            filter,
            ..
        } => {
            for c in must.iter().chain(should).chain(filter) {
                collect(c, analyzer, out);
            }
        }
        QueryAst::DisMax { queries, .. } => {
            for c in queries {
                collect(c, analyzer, out);
            }
        }
        QueryAst::Boosting { positive, .. } => collect(positive, analyzer, out),
        QueryAst::Boost { query, .. } => collect(query, analyzer, out),
        _ => {}
    }
}

fn matches(token: &str, pattern: &Pattern, fold: bool) -> bool {
    let fold_ = |s: &str| {
        if fold {
            s.to_lowercase()
        } else {
            s.to_string()
        }
    };
    match pattern {
        Pattern::Exact(t) => token == t,
        Pattern::Prefix(p) => token.starts_with(&fold_(p)),
        Pattern::Glob(g) => glob(&fold_(g), token),
        Pattern::Fuzzy(t, d) => edits(token, t) <= usize::from(*d),
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer wildcard matching with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// Levenshtein distance with adjacent transpositions.
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The highlighted fragments of one text value.
fn fragments(text: &str, analyzed: bool, matchers: &[&Matcher], spec: &FieldSpec) -> Vec<String> {
    // (start, end, matched) byte offsets of each token.
    let tokens: Vec<(usize, usize, bool)> = if analyzed {
        let mut a = analyzer();
        let mut stream = a.token_stream(text);
        let mut out = Vec::new();
        while let Some(t) = stream.next() {
            let hit = matchers.iter().any(|m| matches(&t.text, &m.pattern, true));
            out.push((t.offset_from, t.offset_to, hit));
        }
        out
    } else {
        let hit = matchers.iter().any(|m| matches(text, &m.pattern, false));
        vec![(0, text.len(), hit)]
    };
    if !tokens.iter().any(|t| t.2) {
        return Vec::new();
    }
    let render = |from: usize, to: usize| {
        let mut s = String::new();
        let mut at = from;
        for &(a, b, hit) in tokens.iter().filter(|t| t.0 >= from && t.1 <= to) {
            if hit {
                s.push_str(&text[at..a]);
                s.push_str(&spec.pre);
                s.push_str(&text[a..b]);
                s.push_str(&spec.post);
                at = b;
            }
        }
        s.push_str(&text[at..to]);
        s
    };
    if spec.number_of_fragments == 0 {
        return vec![render(0, text.len())];
    }
    if spec.unified && analyzed {
        return passages(text, &tokens, spec)
            .into_iter()
            .map(|(from, to)| render(from, to).trim().to_string())
            .collect();
    }
    // Consecutive pieces of about `fragment_size` characters, cut between tokens.
    let mut out = Vec::new();
    let mut start = 0;
    while start < tokens.len() {
        let from = if start == 0 { 0 } else { tokens[start].0 };
        let mut end = start;
        while end + 1 < tokens.len() && tokens[end + 1].1 - from <= spec.fragment_size {
            end += 1;
        }
        if tokens[start..=end].iter().any(|t| t.2) {
            let to = if end + 1 == tokens.len() {
                text.len()
            } else {
                tokens[end].1
            };
            out.push(render(from, to));
            if out.len() == spec.number_of_fragments {
                break;
            }
        }
        start = end + 1;
    }
    out
}

/// The unified highlighter's passages (byte ranges): from each sentence holding a match not
/// yet shown, whole sentences while they fit in `fragment_size`; the best
/// `number_of_fragments` by matches.
fn passages(text: &str, tokens: &[(usize, usize, bool)], spec: &FieldSpec) -> Vec<(usize, usize)> {
    // Sentence ends: after `.`, `!` or `?` followed by whitespace, and at line breaks.
    let mut ends = Vec::new();
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let next_space = bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace());
        if b == b'\n' || (matches!(b, b'.' | b'!' | b'?') && next_space) {
            ends.push(i + 1);
        }
    }
    if ends.last() != Some(&text.len()) {
        ends.push(text.len());
    }
    let mut sentences = Vec::with_capacity(ends.len());
    let mut start = 0;
    for end in ends {
        if end > start {
            sentences.push((start, end));
        }
        start = end;
    }
    let hits_in = |from: usize, to: usize| {
        tokens
            .iter()
            .filter(|t| t.2 && t.0 >= from && t.1 <= to)
            .count()
    };
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < sentences.len() {
        let (from, first_end) = sentences[i];
        if hits_in(from, first_end) == 0 {
            i += 1;
            continue;
        }
        let mut to = first_end;
        if to - from > spec.fragment_size {
            // One long sentence: from its first match, cut after the token that reaches
            // `fragment_size`.
            let from = tokens
                .iter()
                .find(|t| t.2 && t.0 >= from && t.1 <= first_end)
                .map_or(from, |t| t.0);
            let cut = tokens
                .iter()
                .find(|t| t.0 >= from && t.1 - from >= spec.fragment_size)
                .map_or(first_end, |t| t.1.min(first_end));
            out.push((from, cut, hits_in(from, cut)));
            i += 1;
            continue;
        }
        i += 1;
        while i < sentences.len() && sentences[i].1 - from <= spec.fragment_size {
            to = sentences[i].1;
            i += 1;
        }
        out.push((from, to, hits_in(from, to)));
    }
    // The best passages (most matches; earlier first among equals), then in text order
    // unless `order: score`.
    let mut best: Vec<usize> = (0..out.len()).collect();
    best.sort_by_key(|&k| (std::cmp::Reverse(out[k].2), k));
    best.truncate(spec.number_of_fragments);
    if !spec.by_score {
        best.sort();
    }
    best.into_iter().map(|k| (out[k].0, out[k].1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsl::parse_query;
    use serde_json::json;

    fn mappings() -> Mappings {
        Mappings::from_opensearch(
            &json!({"properties": {"msg": {"type": "text"}, "tag": {"type": "keyword"}}}),
        )
        .unwrap()
    }

    #[test]
    fn wraps_matched_tokens_in_fragments() {
        let q = parse_query(&json!({"bool": {"must": [{"match": {"msg": "Fox"}}], "filter": [{"term": {"tag": "a-b"}}], "must_not": [{"match": {"msg": "dog"}}]}})).unwrap();
        let h = Highlighter::new(&json!({"fields": {"*": {}}}), &q).unwrap();
        let src =
            json!({"msg": "The quick brown FOX jumps over the lazy dog", "tag": "a-b", "n": 1});
        assert_eq!(
            h.highlight(&src, &mappings()).unwrap(),
            json!({"msg": ["The quick brown <em>FOX</em> jumps over the lazy dog"], "tag": ["<em>a-b</em>"]})
        );
        let h = Highlighter::new(
            &json!({"pre_tags": ["["], "post_tags": ["]"], "type": "plain", "fields": {"msg": {"fragment_size": 12, "number_of_fragments": 2}}}),
            &parse_query(&json!({"bool": {"should": [
                {"query_string": {"query": "msg:(qu* OR d?g)"}},
                {"fuzzy": {"msg": "lazzy"}}
            ]}}))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            h.highlight(&src, &mappings()).unwrap(),
            json!({"msg": ["The [quick]", "the [lazy] [dog]"]})
        );
        // Nothing matched in this field: no highlight at all.
        let none = Highlighter::new(
            &json!({"fields": {"msg": {}}}),
            &parse_query(&json!({"term": {"tag": "a-b"}})).unwrap(),
        )
        .unwrap();
        assert_eq!(none.highlight(&src, &mappings()), None);
    }

    #[test]
    fn unified_passages_are_whole_sentences() {
        let text = "The quick brown fox. It jumps over the lazy dog! Nothing here. A fox again? \
                    And a very long sentence about nothing much at all that ends with a fox.";
        let src = json!({"msg": text});
        let q = parse_query(&json!({"match": {"msg": "fox"}})).unwrap();
        let h = |spec: Value| {
            Highlighter::new(&spec, &q)
                .unwrap()
                .highlight(&src, &mappings())
        };
        assert_eq!(
            h(json!({"fields": {"msg": {"fragment_size": 30}}})).unwrap(),
            json!({"msg": [
                "The quick brown <em>fox</em>.",
                "A <em>fox</em> again?",
                "<em>fox</em>."
            ]})
        );
        // Sentences are joined while they fit.
        assert_eq!(
            h(json!({"fields": {"msg": {"fragment_size": 50, "number_of_fragments": 1}}})).unwrap(),
            json!({"msg": ["The quick brown <em>fox</em>. It jumps over the lazy dog!"]})
        );
        // The passage with the most matches, first when ordered by score.
        let q2 = parse_query(&json!({"match": {"msg": "fox lazy dog"}})).unwrap();
        let h2 = Highlighter::new(
            &json!({"order": "score", "fields": {"msg": {"fragment_size": 30, "number_of_fragments": 2}}}),
            &q2,
        )
        .unwrap();
        assert_eq!(
            h2.highlight(&src, &mappings()).unwrap(),
            json!({"msg": [
                "It jumps over the <em>lazy</em> <em>dog</em>!",
                "The quick brown <em>fox</em>."
            ]})
        );
        assert!(Highlighter::new(&json!({"type": "fvh", "fields": {"msg": {}}}), &q).is_err());
    }

    #[test]
    fn whole_field_with_zero_fragments() {
        let q = parse_query(&json!({"match_phrase_prefix": {"msg": "lazy do"}})).unwrap();
        let h =
            Highlighter::new(&json!({"fields": {"msg": {"number_of_fragments": 0}}}), &q).unwrap();
        let src = json!({"msg": ["first line", "a lazy dog and a lazy donkey"]});
        assert_eq!(
            h.highlight(&src, &mappings()).unwrap(),
            json!({"msg": ["a <em>lazy</em> <em>dog</em> and a <em>lazy</em> <em>donkey</em>"]})
        );
        assert!(glob("d*k?y", "donkey") && !glob("d*x", "donkey"));
        assert_eq!(edits("lazzy", "lazy"), 1);
        assert_eq!(edits("ab", "ba"), 1);
    }
}
