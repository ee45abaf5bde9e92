//! OpenSearch query DSL (JSON) → [`QueryAst`].

use serde_json::{Map, Value};

use crate::ast::{QueryAst, ALL_FIELDS};
use crate::query_string::parse_query_string;
use crate::SearchError;

fn parsing(reason: impl Into<String>) -> SearchError {
    SearchError::Parsing(reason.into())
}

/// The single `{"field": body}` entry of leaf queries such as `match` and `term`.
fn single_field<'a>(kind: &str, v: &'a Value) -> Result<(&'a String, &'a Value), SearchError> {
    let obj = v.as_object().ok_or_else(|| {
        parsing(format!(
            "[{kind}] query malformed, no start_object after query name"
        ))
    })?;
    let mut fields = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "boost" && k.as_str() != "_name");
    let first = fields
        .next()
        .ok_or_else(|| parsing(format!("[{kind}] query does not have a field")))?;
    if fields.next().is_some() {
        return Err(parsing(format!(
            "[{kind}] query doesn't support multiple fields, found [{}]",
            obj.len()
        )));
    }
    Ok(first)
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn clauses(v: Option<&Value>) -> Result<Vec<QueryAst>, SearchError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(parse_query).collect(),
        Some(one) => Ok(vec![parse_query(one)?]),
    }
}

fn default_and(operator: Option<&Value>) -> Result<bool, SearchError> {
    match operator
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("or") => Ok(false),
        Some("and") => Ok(true),
        Some(other) => Err(parsing(format!("Unknown operator [{other}]"))),
    }
}

/// Parses one query object (`{"match": {...}}`).
pub fn parse_query(q: &Value) -> Result<QueryAst, SearchError> {
    let obj: &Map<String, Value> = q
        .as_object()
        .ok_or_else(|| parsing("query malformed, must start with start_object"))?;
    if obj.len() != 1 {
        return Err(parsing(format!(
            "[_na] query malformed, expected one query, found {}",
            obj.len()
        )));
    }
    let (kind, body) = obj.iter().next().expect("one entry");
    let ast = parse_kind(kind, body)?;
    Ok(match boost_of(body) {
        Some(boost) if boost != 1.0 => QueryAst::Boost {
            query: Box::new(ast),
            boost,
        },
        _ => ast,
    })
}

/// `boost` of a query: in its body (`bool`, `dis_max`, ...) or in its one field's options
/// (`{"term": {"f": {"value": 1, "boost": 2}}}`).
fn boost_of(body: &Value) -> Option<f32> {
    let o = body.as_object()?;
    if let Some(b) = o.get("boost") {
        return b.as_f64().map(|b| b as f32);
    }
    if o.len() == 1 {
        return o.values().next()?.get("boost")?.as_f64().map(|b| b as f32);
    }
    None
}

/// `fuzziness`: `AUTO` (`None`: by term length), or 0, 1, 2.
fn fuzziness(v: Option<&Value>) -> Result<Option<u8>, SearchError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) if s.to_ascii_uppercase().starts_with("AUTO") => Ok(None),
        Some(v) => match v.as_u64().or_else(|| v.as_str()?.parse().ok()) {
            Some(d @ 0..=2) => Ok(Some(d as u8)),
            _ => Err(parsing(format!(
                "[fuzziness] must be AUTO, 0, 1 or 2, found {v}"
            ))),
        },
    }
}

/// `minimum_should_match` of `should` clauses: a count, a percentage, or negative forms
/// (that many, or that share, may be missing).
fn minimum_should(v: Option<&Value>, should: usize) -> Result<Option<usize>, SearchError> {
    let spec = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(other) => return Err(parsing(format!("invalid minimum_should_match [{other}]"))),
    };
    let bad = || parsing(format!("invalid minimum_should_match [{spec}]"));
    let n = should as i64;
    let count = match spec.strip_suffix('%') {
        Some(p) => {
            let p: i64 = p.parse().map_err(|_| bad())?;
            if p < 0 {
                n - (n * -p) / 100
            } else {
                (n * p) / 100
            }
        }
        None => {
            let c: i64 = spec.parse().map_err(|_| bad())?;
            if c < 0 {
                n + c
            } else {
                c
            }
        }
    };
    Ok(Some(count.clamp(0, n) as usize))
}

fn parse_kind(kind: &str, body: &Value) -> Result<QueryAst, SearchError> {
    match kind {
        "match_all" => Ok(QueryAst::MatchAll),
        "match_none" => Ok(QueryAst::MatchNone),
        "match" | "match_phrase" | "match_bool_prefix" | "match_phrase_prefix" => {
            let (field, v) = single_field(kind, body)?;
            let (query, and) = match v {
                Value::Object(o) => (
                    o.get("query")
                        .and_then(text_of)
                        .ok_or_else(|| parsing(format!("[{kind}] requires query value")))?,
                    default_and(o.get("operator"))?,
                ),
                other => (
                    text_of(other).ok_or_else(|| parsing(format!("[{kind}] unknown token")))?,
                    false,
                ),
            };
            let slop = match v {
                Value::Object(o) => match o.get("slop") {
                    None => 0,
                    Some(s) => s
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            parsing(format!("[{kind}] [slop] must be a non-negative integer"))
                        })?,
                },
                _ => 0,
            };
            let field = field.clone();
            Ok(match kind {
                "match_phrase" => QueryAst::MatchPhrase { field, query, slop },
                "match_phrase_prefix" => QueryAst::MatchPhrasePrefix { field, query },
                _ => QueryAst::Match { field, query, and },
            })
        }
        "multi_match" => {
            let query = body
                .get("query")
                .and_then(text_of)
                .ok_or_else(|| parsing("[multi_match] requires query value"))?;
            let and = default_and(body.get("operator"))?;
            let fields: Vec<String> = match body.get("fields") {
                Some(Value::Array(f)) => f
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.split('^').next().unwrap_or(s).to_string())
                    .collect(),
                _ => vec![ALL_FIELDS.to_string()],
            };
            let should = fields
                .into_iter()
                .map(|field| QueryAst::Match {
                    field,
                    query: query.clone(),
                    and,
                })
                .collect();
            Ok(QueryAst::bool_of(Vec::new(), should, Vec::new()))
        }
        "term" | "prefix" | "wildcard" => {
            let (field, v) = single_field(kind, body)?;
            let value = match v {
                Value::Object(o) => o
                    .get("value")
                    .cloned()
                    .ok_or_else(|| parsing(format!("[{kind}] query requires a value")))?,
                other => other.clone(),
            };
            let field = field.clone();
            Ok(match kind {
                "term" => QueryAst::Term { field, value },
                "prefix" => QueryAst::Prefix {
                    field,
                    value: text_of(&value).unwrap_or_default(),
                },
                _ => QueryAst::Wildcard {
                    field,
                    value: text_of(&value).unwrap_or_default(),
                },
            })
        }
        "terms" => {
            let (field, v) = single_field(kind, body)?;
            let values = v
                .as_array()
                .ok_or_else(|| parsing("[terms] query requires an array of values"))?
                .clone();
            Ok(QueryAst::Terms {
                field: field.clone(),
                values,
            })
        }
        "ids" => {
            let values = body
                .get("values")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            Ok(QueryAst::Terms {
                field: "_id".into(),
                values,
            })
        }
        "range" => {
            let (field, v) = single_field(kind, body)?;
            let o = v
                .as_object()
                .ok_or_else(|| parsing("[range] query malformed"))?;
            // `format`: string bounds in that date format are read here (date math, which
            // it does not read, is left as it is).
            let format = o.get("format").and_then(Value::as_str);
            if let Some(spec) = format {
                floe_proto::date_format::DateFormat::parse(spec).map_err(parsing)?;
            }
            let get = |k: &str| {
                let v = o.get(k).filter(|v| !v.is_null())?;
                let read = format
                    .zip(v.as_str())
                    .and_then(|(spec, s)| {
                        floe_proto::date_format::with_format(spec, |f| f.read_str(s))
                    })
                    .flatten();
                Some(match read {
                    Some(ns) => Value::String(floe_proto::mapping::format_date(ns)),
                    None => v.clone(),
                })
            };
            // Legacy `from`/`to` with include_lower/include_upper.
            let (mut gte, mut lte) = (get("gte"), get("lte"));
            if let Some(from) = get("from") {
                if o.get("include_lower")
                    .and_then(Value::as_bool)
                    .unwrap_or(true)
                {
                    gte = Some(from)
                } else {
                    return Ok(range_gt_from(field, from, get("to"), o));
                }
            }
            if let Some(to) = get("to") {
                lte = Some(to);
            }
            Ok(QueryAst::Range {
                field: field.clone(),
                gt: get("gt"),
                gte,
                lt: get("lt"),
                lte,
            })
        }
        "exists" => {
            let field = body
                .get("field")
                .and_then(Value::as_str)
                .ok_or_else(|| parsing("[exists] must be provided with a [field]"))?;
            Ok(QueryAst::Exists {
                field: field.to_string(),
            })
        }
        "bool" => {
            let o = body
                .as_object()
                .ok_or_else(|| parsing("[bool] query malformed"))?;
            for key in o.keys() {
                if ![
                    "must",
                    "should",
                    "filter",
                    "must_not",
                    "minimum_should_match",
                    "boost",
                    "_name",
                    "adjust_pure_negative",
                ]
                .contains(&key.as_str())
                {
                    return Err(parsing(format!("[bool] query does not support [{key}]")));
                }
            }
            let should = clauses(o.get("should"))?;
            let minimum_should_match = minimum_should(o.get("minimum_should_match"), should.len())?;
            Ok(QueryAst::Bool {
                must: clauses(o.get("must"))?,
                should,
                filter: clauses(o.get("filter"))?,
                must_not: clauses(o.get("must_not"))?,
                minimum_should_match,
            })
        }
        "constant_score" => {
            let filter = body
                .get("filter")
                .ok_or_else(|| parsing("[constant_score] requires a 'filter' element"))?;
            Ok(QueryAst::Bool {
                must: Vec::new(),
                should: Vec::new(),
                filter: vec![parse_query(filter)?],
                must_not: Vec::new(),
                minimum_should_match: None,
            })
        }
        "query_string" | "simple_query_string" => {
            let query = body
                .get("query")
                .and_then(text_of)
                .ok_or_else(|| parsing(format!("[{kind}] must be provided with a [query]")))?;
            let default_field = body
                .get("default_field")
                .and_then(Value::as_str)
                .or_else(|| {
                    body.get("fields")
                        .and_then(Value::as_array)
                        .filter(|f| f.len() == 1)
                        .and_then(|f| f[0].as_str())
                })
                .unwrap_or(ALL_FIELDS);
            let and = default_and(body.get("default_operator"))?;
            parse_query_string(&query, default_field, and)
                .map_err(|e| parsing(format!("Failed to parse query [{query}]: {e}")))
        }
        "fuzzy" | "regexp" => {
            let (field, v) = single_field(kind, body)?;
            let (value, opts) = match v {
                Value::Object(o) => (o.get("value").and_then(text_of), Some(o)),
                other => (text_of(other), None),
            };
            let value = value.ok_or_else(|| parsing(format!("[{kind}] requires a value")))?;
            let field = field.clone();
            Ok(if kind == "fuzzy" {
                QueryAst::Fuzzy {
                    field,
                    value,
                    distance: fuzziness(opts.and_then(|o| o.get("fuzziness")))?,
                    transpositions: opts
                        .and_then(|o| o.get("transpositions"))
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                }
            } else {
                QueryAst::Regexp { field, value }
            })
        }
        "dis_max" => {
            let queries = clauses(body.get("queries"))?;
            if queries.is_empty() {
                return Err(parsing(
                    "[dis_max] requires 'queries' field with at least one clause",
                ));
            }
            Ok(QueryAst::DisMax {
                queries,
                tie_breaker: body
                    .get("tie_breaker")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0) as f32,
            })
        }
        "boosting" => {
            let part = |k: &str| -> Result<QueryAst, SearchError> {
                parse_query(
                    body.get(k)
                        .ok_or_else(|| parsing(format!("[boosting] query requires '{k}' query")))?,
                )
            };
            let negative_boost = body
                .get("negative_boost")
                .and_then(Value::as_f64)
                .ok_or_else(|| parsing("[boosting] query requires 'negative_boost'"))?;
            Ok(QueryAst::Boosting {
                positive: Box::new(part("positive")?),
                negative: Box::new(part("negative")?),
                negative_boost: negative_boost as f32,
            })
        }
        other => Err(parsing(format!("unknown query [{other}]"))),
    }
}

fn range_gt_from(field: &str, from: Value, to: Option<Value>, o: &Map<String, Value>) -> QueryAst {
    let upper_inclusive = o
        .get("include_upper")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let (lt, lte) = if upper_inclusive {
        (None, to)
    } else {
        (to, None)
    };
    QueryAst::Range {
        field: field.to_string(),
        gt: Some(from),
        gte: None,
        lt,
        lte,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_common_queries() {
        assert_eq!(
            parse_query(&json!({"match_all": {}})).unwrap(),
            QueryAst::MatchAll
        );
        assert_eq!(
            parse_query(&json!({"match": {"message": {"query": "a b", "operator": "and"}}}))
                .unwrap(),
            QueryAst::Match {
                field: "message".into(),
                query: "a b".into(),
                and: true
            }
        );
        assert_eq!(
            parse_query(&json!({"term": {"status": 200}})).unwrap(),
            QueryAst::Term {
                field: "status".into(),
                value: json!(200)
            }
        );
        assert_eq!(
            parse_query(&json!({"term": {"status": {"value": "x"}}})).unwrap(),
            QueryAst::Term {
                field: "status".into(),
                value: json!("x")
            }
        );
        match parse_query(&json!({"bool": {"must": {"match_all": {}}, "filter": [{"range": {"n": {"gte": 1, "lt": 5}}}]}})).unwrap() {
            QueryAst::Bool { must, filter, .. } => {
                assert_eq!(must, vec![QueryAst::MatchAll]);
                assert_eq!(filter, vec![QueryAst::Range { field: "n".into(), gt: None, gte: Some(json!(1)), lt: Some(json!(5)), lte: None }]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        assert!(matches!(
            parse_query(&json!({"nope": {}})),
            Err(SearchError::Parsing(_))
        ));
        assert!(parse_query(&json!({"term": {"a": 1, "b": 2}})).is_err());
        assert!(parse_query(&json!({"bool": {"must": [], "bogus": 1}})).is_err());
        assert!(parse_query(&json!({"query_string": {"query": "(a"}})).is_err());
    }
}
