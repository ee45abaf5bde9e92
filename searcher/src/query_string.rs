//! Parser for the Lucene "classic" query syntax that OpenSearch accepts in `query_string`
//! queries and in the `q=` URL parameter. It produces a [`QueryAst`].
//!
//! Two small steps: a lexer turns the text into tokens (words, phrases, ranges, operators),
//! then a recursive-descent parser groups them. One deliberate difference from Lucene's
//! classic parser: `AND` binds tighter than `OR` (`a AND b OR c` is `(a AND b) OR c`), which
//! is what people reading a query expect.

use crate::ast::{QueryAst, ALL_FIELDS};
use serde_json::Value;

/// Why a query string could not be parsed. Offsets are byte offsets into the query.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryStringError {
    #[error("unbalanced parenthesis at offset {0}")]
    UnbalancedParenthesis(usize),
    #[error("unterminated quote starting at offset {0}")]
    UnterminatedQuote(usize),
    #[error("range starting at offset {0} is missing its closing `]` or `}}`")]
    UnterminatedRange(usize),
    #[error("malformed range at offset {0}: expected `[lower TO upper]`")]
    MalformedRange(usize),
    #[error("expected {expected} at offset {offset}")]
    Expected {
        expected: &'static str,
        offset: usize,
    },
    #[error("dangling backslash at offset {0}")]
    DanglingEscape(usize),
}

type Result<T> = std::result::Result<T, QueryStringError>;

fn expected(expected: &'static str, offset: usize) -> QueryStringError {
    QueryStringError::Expected { expected, offset }
}

/// Parses Lucene query syntax. `default_field` is used for terms without `field:`; pass
/// [`ALL_FIELDS`] for OpenSearch's default. `default_and` = `default_operator: AND`.
pub fn parse_query_string(q: &str, default_field: &str, default_and: bool) -> Result<QueryAst> {
    if q.trim().is_empty() {
        return Ok(QueryAst::MatchAll);
    }
    let mut parser = Parser {
        toks: lex(q)?.into_iter().peekable(),
        end: q.len(),
        default_field,
        default_and,
    };
    parser.parse_seq(None, None)
}

/// A lexical token. Words and `:` are kept apart so the parser can tell `field:value` from
/// a bare term; ranges and comparisons arrive already parsed.
#[derive(Debug)]
enum Tok {
    LParen,
    RParen,
    And,
    Or,
    Not,
    Plus,
    Minus,
    Colon,
    /// A phrase, and its slop (`"a b"~2`: up to 2 moves between the words).
    Quoted(String, u32),
    Word(Word),
    Range(RangeTok),
}

/// A bare term. Escapes matter differently for literal and wildcard use, so both spellings
/// are kept: `text` has escapes removed; `pattern` keeps them only where they protect a
/// wildcard character (`*`, `?`) or a backslash, as the wildcard query expects.
#[derive(Debug, Default)]
struct Word {
    text: String,
    pattern: String,
    /// Number of unescaped `*` and `?`.
    wildcards: usize,
    /// Whether the last character is an unescaped `*` (a prefix query candidate).
    trailing_star: bool,
    /// Whether any character was escaped: `\AND` is a term, not an operator.
    escaped: bool,
}

/// The bounds of a range or comparison, already sorted into OpenSearch's four keys.
#[derive(Debug, Default)]
struct RangeTok {
    gt: Option<Value>,
    gte: Option<Value>,
    lt: Option<Value>,
    lte: Option<Value>,
}

/// Splits the query into tokens, each with its byte offset for error messages.
fn lex(q: &str) -> Result<Vec<(usize, Tok)>> {
    let chars: Vec<(usize, char)> = q.char_indices().collect();
    let mut toks: Vec<(usize, Tok)> = Vec::new();
    let mut i = 0;
    while let Some(&(off, c)) = chars.get(i) {
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        // Right after `field:`, operator characters belong to the value, so
        // `price:-5`, `time:12:30` and `op:AND` mean what they look like.
        let value_pos = matches!(toks.last(), Some((_, Tok::Colon)));
        let next = chars.get(i + 1).map(|&(_, c)| c);
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '"' => quoted(&chars, i)?,
            '[' | '{' => range(&chars, i)?,
            '>' | '<' => comparison(&chars, i)?,
            ':' if !value_pos => (Tok::Colon, 1),
            '&' if !value_pos && next == Some('&') => (Tok::And, 2),
            '|' if !value_pos && next == Some('|') => (Tok::Or, 2),
            '!' if !value_pos => (Tok::Not, 1),
            '+' if !value_pos => (Tok::Plus, 1),
            '-' if !value_pos => (Tok::Minus, 1),
            _ => word(&chars, i, value_pos)?,
        };
        toks.push((off, tok));
        i += len;
    }
    Ok(toks)
}

/// Lexes a word starting at `start`; returns the token and how many chars it used.
fn word(chars: &[(usize, char)], start: usize, value_pos: bool) -> Result<(Tok, usize)> {
    let mut w = Word::default();
    let mut i = start;
    while let Some(&(off, c)) = chars.get(i) {
        if c.is_whitespace() || c == '(' || c == ')' || (c == ':' && !value_pos) {
            break;
        }
        w.trailing_star = false;
        if c == '\\' {
            let &(_, e) = chars
                .get(i + 1)
                .ok_or(QueryStringError::DanglingEscape(off))?;
            w.escaped = true;
            w.text.push(e);
            if matches!(e, '*' | '?' | '\\') {
                w.pattern.push('\\');
            }
            w.pattern.push(e);
            i += 2;
            continue;
        }
        if c == '*' || c == '?' {
            w.wildcards += 1;
            w.trailing_star = c == '*';
        }
        w.text.push(c);
        w.pattern.push(c);
        i += 1;
    }
    let tok = match w.text.as_str() {
        "AND" if !value_pos && !w.escaped => Tok::And,
        "OR" if !value_pos && !w.escaped => Tok::Or,
        "NOT" if !value_pos && !w.escaped => Tok::Not,
        _ => Tok::Word(w),
    };
    Ok((tok, i - start))
}

/// Lexes a `"quoted phrase"`; backslash escapes any character, including `"`.
fn quoted(chars: &[(usize, char)], start: usize) -> Result<(Tok, usize)> {
    let unterminated = QueryStringError::UnterminatedQuote(chars[start].0);
    let mut text = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i).map(|&(_, c)| c) {
            None => return Err(unterminated),
            Some('"') => {
                // `"…"~N`: a proximity search (slop N).
                let mut end = i + 1;
                let mut slop = 0u32;
                if chars.get(end).map(|&(_, c)| c) == Some('~') {
                    let digits: String = chars[end + 1..]
                        .iter()
                        .map(|&(_, c)| c)
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(n) = digits.parse::<u32>() {
                        slop = n;
                        end += 1 + digits.len();
                    }
                }
                return Ok((Tok::Quoted(text, slop), end - start));
            }
            Some('\\') => {
                let Some(&(_, e)) = chars.get(i + 1) else {
                    return Err(unterminated);
                };
                text.push(e);
                i += 2;
            }
            Some(c) => {
                text.push(c);
                i += 1;
            }
        }
    }
}

/// Lexes `[lower TO upper]` (`{`/`}` for exclusive ends, mixable). Bounds may be quoted;
/// an unquoted `*` leaves that side open.
fn range(chars: &[(usize, char)], start: usize) -> Result<(Tok, usize)> {
    let offset = chars[start].0;
    let unterminated = QueryStringError::UnterminatedRange(offset);
    // Each part is (text, literal): literal parts were quoted or escaped, so `*` is a value.
    let mut parts: Vec<(String, bool)> = Vec::new();
    let mut cur: Option<(String, bool)> = None;
    let mut in_quote = false;
    let mut i = start + 1;
    let close = loop {
        let Some(&(_, c)) = chars.get(i) else {
            return Err(unterminated);
        };
        i += 1;
        match c {
            '\\' => {
                let Some(&(_, e)) = chars.get(i) else {
                    return Err(unterminated);
                };
                i += 1;
                let part = cur.get_or_insert_with(|| (String::new(), true));
                part.0.push(e);
                part.1 = true;
            }
            '"' => {
                in_quote = !in_quote;
                cur.get_or_insert_with(|| (String::new(), true)).1 = true;
            }
            ']' | '}' if !in_quote => break c,
            c if c.is_whitespace() && !in_quote => parts.extend(cur.take()),
            c => cur.get_or_insert_with(|| (String::new(), false)).0.push(c),
        }
    };
    parts.extend(cur.take());
    let [(lower, lower_lit), (to, false), (upper, upper_lit)] = parts.as_slice() else {
        return Err(QueryStringError::MalformedRange(offset));
    };
    if to != "TO" {
        return Err(QueryStringError::MalformedRange(offset));
    }
    let bound = |s: &str, literal: bool| (literal || s != "*").then(|| json_value(s));
    let (lower, upper) = (bound(lower, *lower_lit), bound(upper, *upper_lit));
    let (gte, gt) = if chars[start].1 == '[' {
        (lower, None)
    } else {
        (None, lower)
    };
    let (lte, lt) = if close == ']' {
        (upper, None)
    } else {
        (None, upper)
    };
    Ok((Tok::Range(RangeTok { gt, gte, lt, lte }), i - start))
}

/// Lexes `>10`, `>=10`, `<10` or `<=10` (the value may be quoted) as a half-open range.
fn comparison(chars: &[(usize, char)], start: usize) -> Result<(Tok, usize)> {
    let inclusive = chars.get(start + 1).map(|&(_, c)| c) == Some('=');
    let at = start + 1 + inclusive as usize;
    let (tok, len) = match chars.get(at) {
        Some((_, '"')) => quoted(chars, at)?,
        _ => word(chars, at, true)?,
    };
    let value = match tok {
        Tok::Quoted(s, _) => s,
        Tok::Word(w) if len > 0 => w.text,
        _ => return Err(expected("a value after the comparison", chars[start].0)),
    };
    let mut r = RangeTok::default();
    let slot = match (chars[start].1, inclusive) {
        ('>', false) => &mut r.gt,
        ('>', true) => &mut r.gte,
        (_, false) => &mut r.lt,
        (_, true) => &mut r.lte,
    };
    *slot = Some(json_value(&value));
    Ok((Tok::Range(r), at + len - start))
}

/// Range bounds become JSON numbers when they look like numbers, so numeric fields compare
/// numerically; anything else (dates, keywords, date math) stays a string.
fn json_value(s: &str) -> Value {
    if let Ok(i) = s.parse::<i64>() {
        return Value::from(i);
    }
    match s.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
        Some(n) => Value::Number(n),
        None => Value::String(s.to_string()),
    }
}

/// How a clause was prefixed: nothing, `+`, or `-`/`!`/`NOT`.
#[derive(Clone, Copy, PartialEq)]
enum Occur {
    Default,
    Must,
    MustNot,
}

/// What joins a clause to the one before it.
enum Conj {
    Implicit,
    And,
    Or,
}

struct Parser<'a> {
    toks: std::iter::Peekable<std::vec::IntoIter<(usize, Tok)>>,
    end: usize,
    default_field: &'a str,
    default_and: bool,
}

impl Parser<'_> {
    fn offset(&mut self) -> usize {
        self.toks.peek().map_or(self.end, |(off, _)| *off)
    }

    fn eat(&mut self, pred: impl Fn(&Tok) -> bool) -> bool {
        self.toks.next_if(|(_, t)| pred(t)).is_some()
    }

    /// Parses clauses up to the end of input, or up to the `)` matching the `(` at `open`.
    /// `field` is set inside `field:( ... )`, where it replaces the default field.
    fn parse_seq(&mut self, field: Option<&str>, open: Option<usize>) -> Result<QueryAst> {
        let mut clauses = Vec::new();
        loop {
            match (self.toks.peek(), open) {
                (None, Some(open)) => return Err(QueryStringError::UnbalancedParenthesis(open)),
                (None, None) => break,
                (Some((off, Tok::RParen)), None) => {
                    return Err(QueryStringError::UnbalancedParenthesis(*off))
                }
                (Some((_, Tok::RParen)), Some(_)) => {
                    self.toks.next();
                    break;
                }
                _ => {}
            }
            let offset = self.offset();
            let conj = if self.eat(|t| matches!(t, Tok::And)) {
                Conj::And
            } else if self.eat(|t| matches!(t, Tok::Or)) {
                Conj::Or
            } else {
                Conj::Implicit
            };
            if clauses.is_empty() && !matches!(conj, Conj::Implicit) {
                return Err(expected("a term before AND/OR", offset));
            }
            let occur = if self.eat(|t| matches!(t, Tok::Plus)) {
                Occur::Must
            } else if self.eat(|t| matches!(t, Tok::Minus | Tok::Not)) {
                Occur::MustNot
            } else {
                Occur::Default
            };
            clauses.push((conj, occur, self.parse_clause(field)?));
        }
        if clauses.is_empty() {
            return Err(expected(
                "a query inside the parentheses",
                open.unwrap_or(0),
            ));
        }
        Ok(self.combine(clauses))
    }

    fn parse_clause(&mut self, field: Option<&str>) -> Result<QueryAst> {
        let Some((off, tok)) = self.toks.next() else {
            return Err(expected("a term", self.end));
        };
        match tok {
            Tok::LParen => self.parse_seq(field, Some(off)),
            Tok::Word(w) if self.eat(|t| matches!(t, Tok::Colon)) => self.parse_field_value(w.text),
            tok => self.value(field, off, tok),
        }
    }

    /// What follows `name:`: a value, a `( ... )` group, or for `_exists_` a field name.
    fn parse_field_value(&mut self, name: String) -> Result<QueryAst> {
        let offset = self.offset();
        match self.toks.next() {
            Some((_, Tok::Word(w))) if name == "_exists_" => Ok(QueryAst::Exists { field: w.text }),
            _ if name == "_exists_" => Err(expected("a field name after `_exists_:`", offset)),
            Some((open, Tok::LParen)) => self.parse_seq(Some(&name), Some(open)),
            Some((off, tok)) => self.value(Some(&name), off, tok),
            None => Err(expected("a value after `:`", offset)),
        }
    }

    /// Turns a single value token into a query on `field` (or the default field).
    fn value(&self, field: Option<&str>, off: usize, tok: Tok) -> Result<QueryAst> {
        let name = field.unwrap_or(self.default_field).to_string();
        Ok(match tok {
            Tok::Quoted(query, slop) => QueryAst::MatchPhrase {
                field: name,
                query,
                slop,
            },
            Tok::Word(w) => word_query(field, name, w),
            Tok::Range(RangeTok { gt, gte, lt, lte }) => QueryAst::Range {
                field: name,
                gt,
                gte,
                lt,
                lte,
            },
            _ => return Err(expected("a term", off)),
        })
    }

    /// Groups clauses: runs joined by AND (or by juxtaposition under `default_and`) form a
    /// conjunction; those runs, or single clauses, are then OR-ed together.
    fn combine(&self, clauses: Vec<(Conj, Occur, QueryAst)>) -> QueryAst {
        let mut groups: Vec<Vec<(Occur, QueryAst)>> = Vec::new();
        for (conj, occur, query) in clauses {
            let and = match conj {
                Conj::And => true,
                Conj::Or => false,
                Conj::Implicit => self.default_and,
            };
            match groups.last_mut() {
                Some(group) if and => group.push((occur, query)),
                _ => groups.push(vec![(occur, query)]),
            }
        }
        if groups.len() == 1 {
            return conjunction(groups.pop().unwrap_or_default());
        }
        // A lone `+a` / `-a` among OR-ed clauses keeps its own meaning, as in Lucene.
        let (mut must, mut should, mut must_not) = (Vec::new(), Vec::new(), Vec::new());
        for mut group in groups {
            if group.len() > 1 {
                should.push(conjunction(group));
                continue;
            }
            match group.pop() {
                Some((Occur::Must, q)) => must.push(q),
                Some((Occur::MustNot, q)) => must_not.push(q),
                Some((Occur::Default, q)) => should.push(q),
                None => {}
            }
        }
        QueryAst::bool_of(must, should, must_not)
    }
}

/// A conjunction of clauses; a single positive clause is returned as itself.
fn conjunction(mut group: Vec<(Occur, QueryAst)>) -> QueryAst {
    if group.len() == 1 && group[0].0 != Occur::MustNot {
        return group.pop().map(|(_, q)| q).unwrap_or(QueryAst::MatchAll);
    }
    let (mut must, mut must_not) = (Vec::new(), Vec::new());
    for (occur, query) in group {
        match occur {
            Occur::MustNot => must_not.push(query),
            _ => must.push(query),
        }
    }
    QueryAst::bool_of(must, Vec::new(), must_not)
}

/// A bare word: `*` matches everything (or, on a named field, documents having it), a single
/// trailing `*` is a prefix, other wildcards make a wildcard query, and the rest is a match.
fn word_query(field: Option<&str>, name: String, mut w: Word) -> QueryAst {
    // `term^2`: a boost on the term's query.
    if let Some((base, boost)) = w.text.rsplit_once('^') {
        if let (Ok(boost), false) = (boost.parse::<f32>(), base.is_empty() || w.escaped) {
            let base = base.to_string();
            w.pattern
                .truncate(w.pattern.len() - (w.text.len() - base.len()));
            w.text = base;
            w.trailing_star = w.pattern.ends_with('*') && !w.pattern.ends_with("\\*");
            return QueryAst::Boost {
                query: Box::new(word_query(field, name, w)),
                boost,
            };
        }
    }
    // `term~` / `term~1`: fuzzy (AUTO edits, or that many).
    if let (0, Some((base, edits))) = (w.wildcards, w.text.rsplit_once('~')) {
        let distance = match edits {
            "" => Some(None),
            e => e.parse::<u8>().ok().filter(|d| *d <= 2).map(Some),
        };
        if let (Some(distance), false) = (distance, base.is_empty() || w.escaped) {
            return QueryAst::Fuzzy {
                field: name,
                value: base.to_string(),
                distance,
                transpositions: true,
            };
        }
    }
    match w.wildcards {
        0 => QueryAst::Match {
            field: name,
            query: w.text,
            and: false,
        },
        1 if w.text == "*" && (field.is_none() || name == ALL_FIELDS) => QueryAst::MatchAll,
        1 if w.text == "*" => QueryAst::Exists { field: name },
        1 if w.trailing_star => {
            let value = w.text[..w.text.len() - 1].to_string();
            QueryAst::Prefix { field: name, value }
        }
        _ => QueryAst::Wildcard {
            field: name,
            value: w.pattern,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> QueryAst {
        parse_query_string(s, ALL_FIELDS, false).unwrap()
    }
    fn err(s: &str) -> QueryStringError {
        parse_query_string(s, ALL_FIELDS, false).unwrap_err()
    }
    fn m(field: &str, query: &str) -> QueryAst {
        QueryAst::Match {
            field: field.into(),
            query: query.into(),
            and: false,
        }
    }
    /// A match on the default field.
    fn t(query: &str) -> QueryAst {
        m(ALL_FIELDS, query)
    }
    fn phrase(field: &str, query: &str) -> QueryAst {
        QueryAst::MatchPhrase {
            field: field.into(),
            query: query.into(),
            slop: 0,
        }
    }
    fn all(must: Vec<QueryAst>) -> QueryAst {
        QueryAst::bool_of(must, vec![], vec![])
    }
    fn any(should: Vec<QueryAst>) -> QueryAst {
        QueryAst::bool_of(vec![], should, vec![])
    }
    fn none(must_not: Vec<QueryAst>) -> QueryAst {
        QueryAst::bool_of(vec![], vec![], must_not)
    }
    /// A range from `(kind, bound)` pairs, kind being "gt", "gte", "lt" or "lte".
    fn range(field: &str, bounds: &[(&str, Value)]) -> QueryAst {
        let get = |k: &str| bounds.iter().find(|(b, _)| *b == k).map(|(_, v)| v.clone());
        let (gt, gte, lt, lte) = (get("gt"), get("gte"), get("lt"), get("lte"));
        QueryAst::Range {
            field: field.into(),
            gt,
            gte,
            lt,
            lte,
        }
    }
    fn exists(field: &str) -> QueryAst {
        QueryAst::Exists {
            field: field.into(),
        }
    }
    fn prefix(field: &str, value: &str) -> QueryAst {
        QueryAst::Prefix {
            field: field.into(),
            value: value.into(),
        }
    }
    fn wild(field: &str, value: &str) -> QueryAst {
        QueryAst::Wildcard {
            field: field.into(),
            value: value.into(),
        }
    }

    #[test]
    fn empty_query_matches_all() {
        assert_eq!(q(""), QueryAst::MatchAll);
        assert_eq!(q("  \t\n "), QueryAst::MatchAll);
    }

    #[test]
    fn bare_terms_use_the_default_field() {
        assert_eq!(q("foo"), t("foo"));
        assert_eq!(
            parse_query_string("foo", "title", false).unwrap(),
            m("title", "foo")
        );
        assert_eq!(q("  (foo)  "), t("foo"));
        assert_eq!(q("+foo"), t("foo"));
        assert_eq!(q("héllo wörld-x"), any(vec![t("héllo"), t("wörld-x")]));
    }

    #[test]
    fn field_values() {
        assert_eq!(q("title:foo"), m("title", "foo"));
        assert_eq!(q("request.method:GET"), m("request.method", "GET"));
        assert_eq!(q("@timestamp:2024"), m("@timestamp", "2024"));
        assert_eq!(q("title: foo"), m("title", "foo"));
        assert_eq!(q("*:foo"), m("*", "foo"));
        assert_eq!(q("title:foo bar"), any(vec![m("title", "foo"), t("bar")]));
        // Right after `field:`, operator characters are literal.
        assert_eq!(q("time:12:30"), m("time", "12:30"));
        assert_eq!(q("price:-5"), m("price", "-5"));
        assert_eq!(q("op:AND"), m("op", "AND"));
    }

    #[test]
    fn fuzzy_and_boosted_terms() {
        assert_eq!(
            q("msg:quikc~"),
            QueryAst::Fuzzy {
                field: "msg".into(),
                value: "quikc".into(),
                distance: None,
                transpositions: true
            }
        );
        assert!(matches!(
            q("quikc~1"),
            QueryAst::Fuzzy {
                distance: Some(1),
                ..
            }
        ));
        assert!(matches!(q("a^2"), QueryAst::Boost { boost, .. } if boost == 2.0));
        assert!(
            matches!(q("te*^3"), QueryAst::Boost { ref query, .. } if matches!(**query, QueryAst::Prefix { .. }))
        );
        // Escaped, or not a number: plain terms.
        assert!(matches!(q("a\\~"), QueryAst::Match { .. }));
        assert!(matches!(q("a~x"), QueryAst::Match { .. }));
    }

    #[test]
    fn phrases() {
        assert_eq!(
            q("\"quick brown  fox\""),
            phrase(ALL_FIELDS, "quick brown  fox")
        );
        assert_eq!(q("title:\"a phrase\""), phrase("title", "a phrase"));
        assert_eq!(q(r#"title:"say \"hi\"""#), phrase("title", "say \"hi\""));
        assert_eq!(q("\"a AND (b\""), phrase(ALL_FIELDS, "a AND (b"));
        assert_eq!(q("a \"b c\""), any(vec![t("a"), phrase(ALL_FIELDS, "b c")]));
    }

    #[test]
    fn default_operator() {
        assert_eq!(q("a b"), any(vec![t("a"), t("b")]));
        let and = |s| parse_query_string(s, ALL_FIELDS, true).unwrap();
        assert_eq!(and("a b"), all(vec![t("a"), t("b")]));
        assert_eq!(and("a OR b"), any(vec![t("a"), t("b")]));
        assert_eq!(
            and("a b OR c"),
            any(vec![all(vec![t("a"), t("b")]), t("c")])
        );
        assert_eq!(
            and("a -b"),
            QueryAst::bool_of(vec![t("a")], vec![], vec![t("b")])
        );
        // Lowercase keywords are ordinary terms.
        assert_eq!(q("a and b"), any(vec![t("a"), t("and"), t("b")]));
    }

    #[test]
    fn boolean_operators() {
        for s in ["a AND b", "a && b", "+a +b"] {
            assert_eq!(q(s), all(vec![t("a"), t("b")]), "{s}");
        }
        assert_eq!(q("a&&b"), t("a&&b"));
        for s in ["a OR b", "a || b"] {
            assert_eq!(q(s), any(vec![t("a"), t("b")]), "{s}");
        }
        for s in ["NOT a", "!a", "! a", "-a"] {
            assert_eq!(q(s), none(vec![t("a")]), "{s}");
        }
        assert_eq!(q("-a -b"), none(vec![t("a"), t("b")]));
    }

    #[test]
    fn modifiers_mix_with_optional_clauses() {
        let b = QueryAst::bool_of;
        assert_eq!(q("+a b"), b(vec![t("a")], vec![t("b")], vec![]));
        assert_eq!(q("a -b"), b(vec![], vec![t("a")], vec![t("b")]));
        assert_eq!(q("a NOT b"), b(vec![], vec![t("a")], vec![t("b")]));
        assert_eq!(q("a AND NOT b"), b(vec![t("a")], vec![], vec![t("b")]));
        assert_eq!(q("a AND -b"), b(vec![t("a")], vec![], vec![t("b")]));
        assert_eq!(q("a AND +b"), all(vec![t("a"), t("b")]));
        let expected = b(vec![m("title", "x")], vec![], vec![m("body", "y")]);
        assert_eq!(q("+title:x -body:y"), expected);
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let ab = all(vec![t("a"), t("b")]);
        let bc = all(vec![t("b"), t("c")]);
        assert_eq!(q("a AND b OR c"), any(vec![ab, t("c")]));
        assert_eq!(q("a OR b AND c"), any(vec![t("a"), bc.clone()]));
        assert_eq!(q("a b AND c"), any(vec![t("a"), bc]));
        let a_not_b = QueryAst::bool_of(vec![t("a")], vec![], vec![t("b")]);
        assert_eq!(q("a AND NOT b OR c"), any(vec![a_not_b, t("c")]));
    }

    #[test]
    fn parentheses() {
        let or = any(vec![t("a"), t("b")]);
        assert_eq!(q("(a OR b) AND c"), all(vec![or.clone(), t("c")]));
        assert_eq!(q("-(a OR b)"), none(vec![or.clone()]));
        assert_eq!(q("((a OR b))"), or);
        assert_eq!(
            q("a AND (b AND (c))"),
            all(vec![t("a"), all(vec![t("b"), t("c")])])
        );
    }

    #[test]
    fn field_groups_apply_to_inner_terms() {
        assert_eq!(
            q("title:(a OR b)"),
            any(vec![m("title", "a"), m("title", "b")])
        );
        let mixed = any(vec![
            m("title", "a"),
            m("body", "b"),
            phrase("title", "c d"),
        ]);
        assert_eq!(q("title:(a body:b \"c d\")"), mixed);
        let nested = all(vec![m("t", "x"), any(vec![m("t", "y"), m("t", "z*")])]);
        assert_eq!(q("t:(x AND (y OR z\\*))"), nested);
        let negated = QueryAst::bool_of(vec![], vec![prefix("t", "ab")], vec![m("t", "c")]);
        assert_eq!(q("t:(ab* -c)"), negated);
        assert_eq!(
            q("t:([1 TO 2] OR >5)"),
            any(vec![
                range("t", &[("gte", json!(1)), ("lte", json!(2))]),
                range("t", &[("gt", json!(5))]),
            ])
        );
    }

    #[test]
    fn ranges() {
        let (ten, twenty) = (json!(10), json!(20));
        let r = |lo: &str, hi: &str| range("age", &[(lo, ten.clone()), (hi, twenty.clone())]);
        assert_eq!(q("age:[10 TO 20]"), r("gte", "lte"));
        assert_eq!(q("age:{10 TO 20}"), r("gt", "lt"));
        assert_eq!(q("age:[10 TO 20}"), r("gte", "lt"));
        assert_eq!(q("age:{10 TO 20]"), r("gt", "lte"));
        assert_eq!(q("age:[* TO 20]"), range("age", &[("lte", json!(20))]));
        assert_eq!(q("age:{10 TO *]"), range("age", &[("gt", json!(10))]));
        assert_eq!(q("age:[* TO *]"), range("age", &[]));
        let floats = range("p", &[("gte", json!(-1.5)), ("lte", json!(2.25))]);
        assert_eq!(q("p:[-1.5 TO 2.25]"), floats);
        let dates = range(
            "d",
            &[("gte", json!("2020-01-01")), ("lt", json!("now-1d/d"))],
        );
        assert_eq!(q("d:[2020-01-01 TO now-1d/d}"), dates);
        let quoted = range("n", &[("gte", json!("a b")), ("lte", json!("*"))]);
        assert_eq!(q("n:[\"a b\" TO \"*\"]"), quoted);
        assert_eq!(
            q("[1 TO 2]"),
            range(ALL_FIELDS, &[("gte", json!(1)), ("lte", json!(2))])
        );
        assert_eq!(
            q("s:[ a  TO  b ]"),
            range("s", &[("gte", json!("a")), ("lte", json!("b"))])
        );
        let not_finite = range("s", &[("gte", json!("inf")), ("lte", json!("NaN"))]);
        assert_eq!(q("s:[inf TO NaN]"), not_finite);
    }

    #[test]
    fn comparisons() {
        assert_eq!(q("age:>10"), range("age", &[("gt", json!(10))]));
        assert_eq!(q("age:>=10"), range("age", &[("gte", json!(10))]));
        assert_eq!(q("age:<10"), range("age", &[("lt", json!(10))]));
        assert_eq!(q("age:<=10.5"), range("age", &[("lte", json!(10.5))]));
        assert_eq!(q("t:>-5"), range("t", &[("gt", json!(-5))]));
        assert_eq!(
            q("d:>=2024-01-01"),
            range("d", &[("gte", json!("2024-01-01"))])
        );
        assert_eq!(q("d:<\"2024 x\""), range("d", &[("lt", json!("2024 x"))]));
        let both = all(vec![
            range("a", &[("gt", json!(1))]),
            range("a", &[("lt", json!(5))]),
        ]);
        assert_eq!(q("a:>1 AND a:<5"), both);
    }

    #[test]
    fn prefixes_and_wildcards() {
        assert_eq!(q("foo*"), prefix(ALL_FIELDS, "foo"));
        assert_eq!(q("title:foo*"), prefix("title", "foo"));
        assert_eq!(q("f?o"), wild(ALL_FIELDS, "f?o"));
        assert_eq!(q("title:fo*o"), wild("title", "fo*o"));
        assert_eq!(q("*foo"), wild(ALL_FIELDS, "*foo"));
        assert_eq!(q("fo*o*"), wild(ALL_FIELDS, "fo*o*"));
        assert_eq!(q("foo?*"), wild(ALL_FIELDS, "foo?*"));
        // Escaped wildcard characters are literal: kept escaped in patterns, plain elsewhere.
        assert_eq!(q(r"a\*b*"), prefix(ALL_FIELDS, "a*b"));
        assert_eq!(q(r"a\*b?"), wild(ALL_FIELDS, r"a\*b?"));
        assert_eq!(q(r"a\\b?"), wild(ALL_FIELDS, r"a\\b?"));
        assert_eq!(q(r"foo\*"), t("foo*"));
    }

    #[test]
    fn exists_and_match_all() {
        assert_eq!(q("_exists_:title"), exists("title"));
        assert_eq!(q("_exists_:@timestamp"), exists("@timestamp"));
        assert_eq!(q("-_exists_:a.b"), none(vec![exists("a.b")]));
        assert_eq!(q("title:*"), exists("title"));
        assert_eq!(q("*"), QueryAst::MatchAll);
        assert_eq!(q("*:*"), QueryAst::MatchAll);
        assert_eq!(
            parse_query_string("*", "title", false).unwrap(),
            QueryAst::MatchAll
        );
        let negated = QueryAst::bool_of(vec![], vec![QueryAst::MatchAll], vec![t("a")]);
        assert_eq!(q("*:* -a"), negated);
    }

    #[test]
    fn escapes() {
        assert_eq!(q(r"a\:b"), t("a:b"));
        assert_eq!(q(r"url:http\://x/y"), m("url", "http://x/y"));
        assert_eq!(q(r"first\ name:bob"), m("first name", "bob"));
        assert_eq!(q(r"\(x\)"), t("(x)"));
        assert_eq!(q(r"\-a"), t("-a"));
        assert_eq!(q(r"a \AND b"), any(vec![t("a"), t("AND"), t("b")]));
        assert_eq!(q(r"a\\b"), t(r"a\b"));
        assert_eq!(
            q(r"x:[a\] TO b]"),
            range("x", &[("gte", json!("a]")), ("lte", json!("b"))])
        );
        assert_eq!(
            q(r"x:[\* TO b]"),
            range("x", &[("gte", json!("*")), ("lte", json!("b"))])
        );
    }

    #[test]
    fn syntax_errors() {
        use QueryStringError::*;
        assert_eq!(err("(a OR b"), UnbalancedParenthesis(0));
        assert_eq!(err("a OR (b AND (c)"), UnbalancedParenthesis(5));
        assert_eq!(err("a OR b) c"), UnbalancedParenthesis(6));
        assert_eq!(err("title:(a"), UnbalancedParenthesis(6));
        assert_eq!(err("a \"bc"), UnterminatedQuote(2));
        assert_eq!(err("\"abc\\"), UnterminatedQuote(0));
        assert_eq!(err("age:[1 TO 5"), UnterminatedRange(4));
        assert_eq!(err("age:{1 TO \"5}"), UnterminatedRange(4));
        assert_eq!(err("age:[1 5]"), MalformedRange(4));
        assert_eq!(err("age:[1 to 5]"), MalformedRange(4));
        assert_eq!(err("age:[1 TO]"), MalformedRange(4));
        assert_eq!(err("a\\"), DanglingEscape(1));
        assert_eq!(err("a AND"), expected("a term", 5));
        assert_eq!(err("AND a"), expected("a term before AND/OR", 0));
        assert_eq!(err("a AND OR b"), expected("a term", 6));
        assert_eq!(err("a OR -"), expected("a term", 6));
        assert_eq!(err("title:"), expected("a value after `:`", 6));
        assert_eq!(err("title: )"), expected("a term", 7));
        assert_eq!(err("()"), expected("a query inside the parentheses", 0));
        assert_eq!(
            err("_exists_:"),
            expected("a field name after `_exists_:`", 9)
        );
        assert_eq!(err("age:>"), expected("a value after the comparison", 4));
        assert_eq!(err(":a"), expected("a term", 0));
    }

    #[test]
    fn error_messages_name_the_offset() {
        assert_eq!(
            err("foo AND (bar").to_string(),
            "unbalanced parenthesis at offset 8"
        );
        assert_eq!(
            err("a \"b").to_string(),
            "unterminated quote starting at offset 2"
        );
        let msg = err("x:[1 TO 2").to_string();
        assert_eq!(
            msg,
            "range starting at offset 2 is missing its closing `]` or `}`"
        );
        assert_eq!(err("a OR").to_string(), "expected a term at offset 4");
    }
}

#[cfg(test)]
mod robustness {
    use super::*;

    /// Arbitrary user input never panics: it parses or gives an error.
    #[test]
    fn never_panics_on_odd_input() {
        let pieces = [
            "é",
            "ü:",
            "\\",
            "*",
            "?",
            "\"",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            " TO ",
            " AND ",
            "OR",
            "NOT",
            "-",
            "+",
            ":",
            ">=",
            "<",
            "日本",
            "a",
            "_exists_:",
            " ",
            "\\é",
            "||",
            "&&",
            "!",
            "^2",
            "~",
        ];
        let mut seed = 0x2545F4914F6CDD1Du64;
        for _ in 0..20_000 {
            let mut q = String::new();
            for _ in 0..(seed % 7 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                q.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let _ = parse_query_string(&q, "*", seed.is_multiple_of(2));
        }
    }
}
