//! `highlight`: the parts of a hit's text fields that the query matched, wrapped in tags.
//!
//! Like OpenSearch's plain highlighter: the field's text (from `_source`) is analyzed as
//! it was indexed, the tokens the query names (terms, phrase terms, prefixes, wildcards,
//! fuzzy terms) are wrapped in `pre_tags`/`post_tags`, and the text is cut into fragments of
//! about `fragment_size` characters at token boundaries, of which the first
//! `number_of_fragments` that hold a match are returned (`0`: the whole field).

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
            .map(|(pattern, opts)| FieldSpec {
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
            .collect();
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
            &json!({"pre_tags": ["["], "post_tags": ["]"], "fields": {"msg": {"fragment_size": 12, "number_of_fragments": 2}}}),
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
