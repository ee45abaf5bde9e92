//! Parsing a search request (body and URL parameters) into a [`Request`].

use super::*;

pub(super) const KNOWN_BODY_KEYS: &[&str] = &[
    "query",
    "from",
    "size",
    "sort",
    "_source",
    "aggs",
    "aggregations",
    "track_total_hits",
    "timeout",
    "min_score",
    "highlight",
    "stored_fields",
    "docvalue_fields",
    "version",
    "seq_no_primary_term",
    "explain",
    "track_scores",
    "terminate_after",
    "profile",
    "search_after",
    "pit",
    "fields",
];

pub(super) fn parse_sort(v: &Value) -> Result<Vec<(String, Option<String>)>, SearchError> {
    let items = match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => Ok((s.clone(), None)),
            Value::Object(o) if o.len() == 1 => {
                let (f, spec) = o.iter().next().expect("one");
                let order = match spec {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(so) => so.get("order").and_then(Value::as_str).map(String::from),
                    _ => None,
                };
                Ok((f.clone(), order))
            }
            other => Err(parsing(format!("[sort] malformed: {other}"))),
        })
        .collect()
}

impl SearchService {
    pub(super) fn parse_request(
        &self,
        body: Option<&Value>,
        params: &SearchParams,
    ) -> Result<Request, SearchError> {
        let empty = Map::new();
        let body = match body {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(o)) => o,
            Some(_) => return Err(parsing("request body must be a JSON object")),
        };
        // Scripts do not run here; an empty `script_fields` (as Grafana sends) asks nothing.
        if body
            .get("script_fields")
            .is_some_and(|f| f.as_object().is_none_or(|o| !o.is_empty()))
        {
            return Err(SearchError::IllegalArgument(
                "[script_fields] is not supported by Floe: scripts do not run at search time"
                    .into(),
            ));
        }
        for key in body.keys().filter(|k| *k != "script_fields") {
            if !KNOWN_BODY_KEYS.contains(&key.as_str()) {
                return Err(parsing(format!(
                    "Unknown key for a START_OBJECT in [{key}]."
                )));
            }
        }
        let query = match (&params.q, body.get("query")) {
            (Some(q), _) => {
                let df = params.df.as_deref().unwrap_or(ALL_FIELDS);
                let and = params
                    .default_operator
                    .as_deref()
                    .is_some_and(|o| o.eq_ignore_ascii_case("and"));
                parse_query_string(q, df, and)
                    .map_err(|e| parsing(format!("Failed to parse query [{q}]: {e}")))?
            }
            (None, Some(q)) => parse_query(q)?,
            (None, None) => QueryAst::MatchAll,
        };
        let num = |key: &str| -> Result<Option<usize>, SearchError> {
            match body.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n
                    .as_u64()
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| parsing(format!("[{key}] must be a non-negative integer"))),
                Some(Value::String(s)) => s
                    .parse()
                    .map(Some)
                    .map_err(|_| parsing(format!("[{key}] must be a number"))),
                Some(other) => Err(parsing(format!("[{key}] must be a number, found {other}"))),
            }
        };
        let from = params.from.or(num("from")?).unwrap_or(0);
        let size = params.size.or(num("size")?).unwrap_or(10);
        let sort_spec: Vec<(String, Option<String>)> = match (&params.sort, body.get("sort")) {
            (Some(s), _) => s
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once(':') {
                    Some((f, o)) => (f.to_string(), Some(o.to_string())),
                    None => (p.to_string(), None),
                })
                .collect(),
            (None, Some(v)) => parse_sort(v)?,
            (None, None) => Vec::new(),
        };
        if sort_spec.len() > MAX_SORT_KEYS {
            return Err(parsing(format!(
                "[sort] at most {MAX_SORT_KEYS} sort keys are supported"
            )));
        }
        let mut sort = Vec::new();
        for (f, order) in &sort_spec {
            if f == "_score" {
                sort.push(SortBy::Score);
                continue;
            }
            let order = match order.as_deref() {
                None | Some("asc") => Order::Asc,
                Some("desc") => Order::Desc,
                Some(o) => return Err(parsing(format!("[sort] unknown order [{o}]"))),
            };
            sort.push(SortBy::Field {
                name: f.clone(),
                column: String::new(),
                order,
            });
        }
        if matches!(sort.as_slice(), [SortBy::Score]) {
            sort.clear();
        }
        let source = match body.get("_source") {
            None | Some(Value::Bool(true)) => SourceFilter::All,
            Some(Value::Bool(false)) => SourceFilter::None,
            Some(Value::String(s)) => SourceFilter::Include(vec![s.clone()]),
            Some(Value::Array(a)) => SourceFilter::Include(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
            ),
            Some(Value::Object(o)) => match o.get("includes").or(o.get("include")) {
                Some(Value::Array(a)) => SourceFilter::Include(
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect(),
                ),
                Some(Value::String(s)) => SourceFilter::Include(vec![s.clone()]),
                _ => SourceFilter::All,
            },
            Some(other) => return Err(parsing(format!("[_source] unsupported value {other}"))),
        };
        let aggs = body.get("aggs").or(body.get("aggregations")).cloned();
        let tth = params
            .track_total_hits
            .clone()
            .map(Value::String)
            .or(body.get("track_total_hits").cloned());
        let track_total_hits = match tth {
            None => Some(10_000),
            Some(Value::Bool(true)) => None,
            Some(Value::String(s)) if s == "true" => None,
            Some(Value::Bool(false)) => Some(0),
            Some(Value::String(s)) if s == "false" => Some(0),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => Some(
                s.parse()
                    .map_err(|_| parsing(format!("[track_total_hits] invalid value [{s}]")))?,
            ),
            Some(other) => {
                return Err(parsing(format!("[track_total_hits] invalid value {other}")))
            }
        };
        let search_after = match body.get("search_after") {
            None | Some(Value::Null) => None,
            Some(Value::Array(values)) => {
                if from > 0 {
                    return Err(SearchError::IllegalArgument(
                        "`from` parameter must be set to 0 when `search_after` is used.".into(),
                    ));
                }
                if sort.is_empty() {
                    return Err(SearchError::IllegalArgument(
                        "Sort must contain at least one field.".into(),
                    ));
                }
                if values.len() != sort.len() {
                    return Err(SearchError::IllegalArgument(format!(
                        "search_after has {} value(s) but sort has {}.",
                        values.len(),
                        sort.len()
                    )));
                }
                if sort.iter().any(|s| matches!(s, SortBy::Score)) {
                    return Err(SearchError::IllegalArgument(
                        "search_after on [_score] is not supported by Floe: sort on fields (with a unique tiebreaker, or in a point in time)".into(),
                    ));
                }
                Some(values.clone())
            }
            Some(other) => {
                return Err(parsing(format!(
                    "[search_after] must be an array, found {other}"
                )))
            }
        };
        let terminate_after = match params
            .terminate_after
            .map(|n| json!(n))
            .or(body.get("terminate_after").cloned())
        {
            None | Some(Value::Null) => None,
            Some(v) => match v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            {
                Some(0) | None => {
                    return Err(SearchError::IllegalArgument(format!(
                        "terminateAfter must be > 0, got [{v}]"
                    )))
                }
                n => n,
            },
        };
        let timeout = match params
            .timeout
            .clone()
            .map(Value::String)
            .or(body.get("timeout").cloned())
        {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(floe_proto::model::parse_time_value(&s).ok_or_else(|| {
                    parsing(format!(
                        "failed to parse setting [timeout] with value [{s}] as a time value"
                    ))
                })?)
            }
            Some(other) => {
                return Err(parsing(format!(
                    "failed to parse setting [timeout] with value [{other}] as a time value"
                )))
            }
        };
        let mut fields = crate::fields::parse(body.get("fields"))?;
        fields.extend(crate::fields::parse(body.get("docvalue_fields"))?);
        // `stored_fields` without `_source`: no source (Floe stores no other fields).
        let source = if body.contains_key("stored_fields") && !body.contains_key("_source") {
            SourceFilter::None
        } else {
            source
        };
        Ok(Request {
            terminate_after,
            timeout,
            fields,
            highlight: body.get("highlight").cloned(),
            search_after,
            query,
            from,
            size,
            sort,
            source,
            aggs,
            track_total_hits,
            version: body
                .get("version")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            seq_no_primary_term: body
                .get("seq_no_primary_term")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}
