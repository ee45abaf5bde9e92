//! Partial updates (`_update`, `update` in `_bulk`): what the new document is, given the
//! request and the live document. Pure functions; the writer reads the live document,
//! resolves the update here and writes the result with a condition on the version it read
//! ([`crate::bulk::Condition::SeqNo`]), so a write that came between is a conflict (retried
//! up to `retry_on_conflict` times), never a lost update.
//!
//! Scripts: the forms log pipelines and clients use are interpreted, one statement per `;`:
//! `ctx._source.f = <value>`, `ctx._source.f += <value>`, `ctx._source.f.add(<value>)`,
//! `ctx._source.remove('f')` (also on a nested object), `ctx.op = 'delete' | 'none'`, where a
//! value is `params.x`, a string, number, boolean or null. Anything else is a 400 that says
//! so: Floe does not run Painless.

use serde_json::{Map, Value};

/// A parsed update request body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateRequest {
    pub doc: Option<Map<String, Value>>,
    pub upsert: Option<Map<String, Value>>,
    pub doc_as_upsert: bool,
    pub scripted_upsert: bool,
    pub detect_noop: bool,
    pub script: Option<Script>,
    /// Return the updated `_source` in the answer (`get`).
    pub return_source: bool,
}

/// A script in one of the forms Floe interprets.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    statements: Vec<Statement>,
    params: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
enum Statement {
    Set(Vec<String>, Expr),
    Add(Vec<String>, Expr),
    Append(Vec<String>, Expr),
    Remove(Vec<String>, String),
    Op(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Param(Vec<String>),
    Literal(Value),
}

/// What an update turns into.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Write this document: `created` if there was none (an upsert), else an overwrite.
    Write {
        source: Map<String, Value>,
        created: bool,
    },
    /// Delete the document (`ctx.op = 'delete'`).
    Delete,
    /// Nothing changes (`detect_noop`, or `ctx.op = 'none'`).
    Noop,
}

/// Why an update cannot be applied: (status, OpenSearch error type, reason).
pub type UpdateError = (u16, &'static str, String);

fn bad(reason: impl Into<String>) -> UpdateError {
    (400, "illegal_argument_exception", reason.into())
}

impl UpdateRequest {
    /// Parses an update body (`{"doc": .., "upsert": .., "script": .., ..}`).
    pub fn parse(body: &[u8]) -> Result<UpdateRequest, UpdateError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            (
                400,
                "parse_exception",
                format!("failed to parse the update: {e}"),
            )
        })?;
        let Value::Object(m) = v else {
            return Err((
                400,
                "parse_exception",
                "the update must be an object".into(),
            ));
        };
        let mut req = UpdateRequest {
            detect_noop: true,
            ..Default::default()
        };
        for (key, value) in m {
            match (key.as_str(), value) {
                ("doc", Value::Object(d)) => req.doc = Some(d),
                ("upsert", Value::Object(u)) => req.upsert = Some(u),
                ("doc_as_upsert", Value::Bool(b)) => req.doc_as_upsert = b,
                ("scripted_upsert", Value::Bool(b)) => req.scripted_upsert = b,
                ("detect_noop", Value::Bool(b)) => req.detect_noop = b,
                ("_source", Value::Bool(b)) => req.return_source = b,
                ("_source", Value::String(_) | Value::Array(_) | Value::Object(_)) => {
                    req.return_source = true
                }
                ("script", s) => req.script = Some(Script::parse(&s)?),
                ("lang" | "if_seq_no" | "if_primary_term", _) => {}
                (other, _) => {
                    return Err(bad(format!(
                        "[UpdateRequest] unknown field [{other}] or it has the wrong type"
                    )))
                }
            }
        }
        if req.doc.is_some() && req.script.is_some() {
            return Err(bad(
                "Validation Failed: 1: can't provide both script and doc;",
            ));
        }
        if req.doc.is_none() && req.script.is_none() {
            return Err(bad("Validation Failed: 1: script or doc is missing;"));
        }
        Ok(req)
    }

    /// The new document, given the live one (`None`: it does not exist).
    pub fn resolve(
        &self,
        id: &str,
        live: Option<Map<String, Value>>,
    ) -> Result<Resolution, UpdateError> {
        let Some(mut source) = live else {
            return self.upsert(id);
        };
        let before = source.clone();
        if let Some(doc) = &self.doc {
            merge(&mut source, doc);
            if self.detect_noop && source == before {
                return Ok(Resolution::Noop);
            }
            return Ok(Resolution::Write {
                source,
                created: false,
            });
        }
        let script = self.script.as_ref().expect("doc or script");
        match script.run(&mut source)?.as_deref() {
            Some("delete") => Ok(Resolution::Delete),
            Some("none" | "noop") => Ok(Resolution::Noop),
            _ => Ok(Resolution::Write {
                source,
                created: false,
            }),
        }
    }

    fn upsert(&self, id: &str) -> Result<Resolution, UpdateError> {
        let missing = || {
            (
                404,
                "document_missing_exception",
                format!("[{id}]: document missing"),
            )
        };
        if let Some(script) = self.script.as_ref().filter(|_| self.scripted_upsert) {
            let mut source = self.upsert.clone().unwrap_or_default();
            return match script.run(&mut source)?.as_deref() {
                Some("none" | "noop") => Ok(Resolution::Noop),
                Some("delete") => Err(missing()),
                _ => Ok(Resolution::Write {
                    source,
                    created: true,
                }),
            };
        }
        match (&self.upsert, &self.doc) {
            (Some(u), _) => Ok(Resolution::Write {
                source: u.clone(),
                created: true,
            }),
            (None, Some(d)) if self.doc_as_upsert => Ok(Resolution::Write {
                source: d.clone(),
                created: true,
            }),
            _ => Err(missing()),
        }
    }
}

/// Merges `doc` into `target` the way OpenSearch does: objects recursively, anything else
/// (arrays included) replaced.
pub fn merge(target: &mut Map<String, Value>, doc: &Map<String, Value>) {
    for (k, v) in doc {
        match (target.get_mut(k), v) {
            (Some(Value::Object(t)), Value::Object(d)) => merge(t, d),
            _ => {
                target.insert(k.clone(), v.clone());
            }
        }
    }
}

const SCRIPT_FORMS: &str = "Floe runs only these script forms: ctx._source.<field> = <value>, \
ctx._source.<field> += <value>, ctx._source.<field>.add(<value>), ctx._source.remove('<field>'), \
ctx.op = 'delete'|'none', where <value> is params.<name> or a literal";

impl Script {
    /// Parses `"script": "..."` or `{"source": "...", "params": {..}, "lang": ..}`.
    pub fn parse(v: &Value) -> Result<Script, UpdateError> {
        let (source, params) = match v {
            Value::String(s) => (s.as_str(), Map::new()),
            Value::Object(o) => {
                if let Some(lang) = o.get("lang").and_then(Value::as_str) {
                    if lang != "painless" {
                        return Err(bad(format!("script_lang not supported [{lang}]")));
                    }
                }
                if o.contains_key("id") {
                    return Err(bad("stored scripts are not supported by Floe"));
                }
                let source = o
                    .get("source")
                    .or_else(|| o.get("inline"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("[script] must have a [source]"))?;
                let params = match o.get("params") {
                    Some(Value::Object(p)) => p.clone(),
                    None | Some(Value::Null) => Map::new(),
                    Some(_) => return Err(bad("[script.params] must be an object")),
                };
                (source, params)
            }
            _ => return Err(bad("[script] must be a string or an object")),
        };
        let statements = split_statements(source)
            .into_iter()
            .map(|s| {
                parse_statement(&s).ok_or_else(|| bad(format!("cannot run [{s}]: {SCRIPT_FORMS}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Script { statements, params })
    }

    /// Runs the script on `source`; returns the `ctx.op` it set, if any.
    fn run(&self, source: &mut Map<String, Value>) -> Result<Option<String>, UpdateError> {
        let mut op = None;
        for st in &self.statements {
            match st {
                Statement::Set(path, e) => *slot(source, path)? = self.eval(e)?,
                Statement::Add(path, e) => {
                    let value = self.eval(e)?;
                    let target = slot(source, path)?;
                    *target = add(target, &value).ok_or_else(|| {
                        bad(format!(
                            "cannot add [{value}] to [{target}] at [{}]",
                            path.join(".")
                        ))
                    })?;
                }
                Statement::Append(path, e) => {
                    let value = self.eval(e)?;
                    match slot(source, path)? {
                        Value::Array(items) => items.push(value),
                        other => {
                            return Err(bad(format!(
                                "[{}] is not a list: [{other}]",
                                path.join(".")
                            )))
                        }
                    }
                }
                Statement::Remove(path, key) => {
                    let target = if path.is_empty() {
                        Some(&mut *source)
                    } else {
                        slot(source, path)?.as_object_mut()
                    };
                    if let Some(obj) = target {
                        obj.remove(key);
                    }
                }
                Statement::Op(o) => op = Some(o.clone()),
            }
        }
        Ok(op)
    }

    fn eval(&self, e: &Expr) -> Result<Value, UpdateError> {
        match e {
            Expr::Literal(v) => Ok(v.clone()),
            Expr::Param(path) => {
                let mut cur = self.params.get(&path[0]);
                for key in &path[1..] {
                    cur = cur.and_then(|v| v.get(key));
                }
                cur.cloned()
                    .ok_or_else(|| bad(format!("params.{} is not set", path.join("."))))
            }
        }
    }
}

/// The value at `path` in `source` (created as null, with objects on the way, if absent).
fn slot<'a>(
    source: &'a mut Map<String, Value>,
    path: &[String],
) -> Result<&'a mut Value, UpdateError> {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut obj = source;
    for key in parents {
        let next = obj
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        obj = next
            .as_object_mut()
            .ok_or_else(|| bad(format!("[{key}] is not an object")))?;
    }
    Ok(obj.entry(last.clone()).or_insert(Value::Null))
}

/// `a += b`: numbers add, strings (or anything onto a string) concatenate.
fn add(a: &Value, b: &Value) -> Option<Value> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.checked_add(y).map(Value::from),
            _ => serde_json::Number::from_f64(x.as_f64()? + y.as_f64()?).map(Value::Number),
        },
        (Value::String(x), Value::String(y)) => Some(Value::String(format!("{x}{y}"))),
        (Value::String(x), other) => Some(Value::String(format!("{x}{other}"))),
        (Value::Null, other) => Some(other.clone()),
        _ => None,
    }
}

/// Statements separated by `;` (outside quotes).
fn split_statements(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in src.chars() {
        match (quote, c) {
            (None, ';') => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse_statement(s: &str) -> Option<Statement> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("ctx.op") {
        let v = rest.trim().strip_prefix('=')?.trim();
        let Expr::Literal(Value::String(op)) = parse_expr(v)? else {
            return None;
        };
        return matches!(op.as_str(), "delete" | "none" | "noop" | "index")
            .then_some(Statement::Op(op));
    }
    let rest = s.strip_prefix("ctx._source")?;
    if let Some(arg) = rest.strip_suffix(')') {
        // ctx._source[.path].remove('f') or ctx._source.path.add(v)
        let open = arg.find('(')?;
        let (target, method) = arg[..open].rsplit_once('.')?;
        let argument = &arg[open + 1..];
        let path = parse_path(target)?;
        return match method {
            "remove" => match parse_expr(argument)? {
                Expr::Literal(Value::String(key)) => Some(Statement::Remove(path, key)),
                _ => None,
            },
            "add" if !path.is_empty() => Some(Statement::Append(path, parse_expr(argument)?)),
            _ => None,
        };
    }
    let (lhs, rhs, adding) = match rest.split_once("+=") {
        Some((l, r)) => (l, r, true),
        None => {
            let (l, r) = rest.split_once('=')?;
            (l, r, false)
        }
    };
    let path = parse_path(lhs.trim())?;
    if path.is_empty() {
        return None;
    }
    let expr = parse_expr(rhs.trim())?;
    Some(if adding {
        Statement::Add(path, expr)
    } else {
        Statement::Set(path, expr)
    })
}

/// `.a.b['c']` → ["a", "b", "c"] (empty: the source itself).
fn parse_path(mut s: &str) -> Option<Vec<String>> {
    let mut path = Vec::new();
    while !s.is_empty() {
        if let Some(rest) = s.strip_prefix('.') {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let key = &rest[..end];
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '@')
            {
                return None;
            }
            path.push(key.to_string());
            s = &rest[end..];
        } else if let Some(rest) = s.strip_prefix('[') {
            let (inner, after) = rest.split_once(']')?;
            let Expr::Literal(Value::String(key)) = parse_expr(inner)? else {
                return None;
            };
            path.push(key);
            s = after;
        } else {
            return None;
        }
    }
    Some(path)
}

fn parse_expr(s: &str) -> Option<Expr> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("params") {
        let path = parse_path(rest)?;
        return (!path.is_empty()).then_some(Expr::Param(path));
    }
    for q in ['\'', '"'] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            if !inner.contains(q) {
                return Some(Expr::Literal(Value::String(inner.to_string())));
            }
        }
    }
    match serde_json::from_str::<Value>(s).ok()? {
        v @ (Value::Number(_) | Value::Bool(_) | Value::Null) => Some(Expr::Literal(v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn req(v: Value) -> UpdateRequest {
        UpdateRequest::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn doc_merges_objects_and_replaces_the_rest() {
        let r = req(json!({"doc": {"a": {"y": 2}, "list": [3], "n": 1}}));
        let live = obj(json!({"a": {"x": 1}, "list": [1, 2], "keep": true}));
        assert_eq!(
            r.resolve("1", Some(live)).unwrap(),
            Resolution::Write {
                source: obj(json!({"a": {"x": 1, "y": 2}, "list": [3], "keep": true, "n": 1})),
                created: false
            }
        );
    }

    #[test]
    fn same_values_are_a_noop_unless_detect_noop_is_off() {
        let live = obj(json!({"a": 1}));
        assert_eq!(
            req(json!({"doc": {"a": 1}}))
                .resolve("1", Some(live.clone()))
                .unwrap(),
            Resolution::Noop
        );
        assert!(matches!(
            req(json!({"doc": {"a": 1}, "detect_noop": false}))
                .resolve("1", Some(live))
                .unwrap(),
            Resolution::Write { .. }
        ));
    }

    #[test]
    fn missing_documents_upsert_or_fail() {
        let missing = req(json!({"doc": {"a": 1}}))
            .resolve("7", None)
            .unwrap_err();
        assert_eq!(missing.0, 404);
        assert_eq!(missing.1, "document_missing_exception");
        assert_eq!(
            req(json!({"doc": {"a": 1}, "doc_as_upsert": true}))
                .resolve("7", None)
                .unwrap(),
            Resolution::Write {
                source: obj(json!({"a": 1})),
                created: true
            }
        );
        assert_eq!(
            req(json!({"doc": {"a": 1}, "upsert": {"b": 2}}))
                .resolve("7", None)
                .unwrap(),
            Resolution::Write {
                source: obj(json!({"b": 2})),
                created: true
            }
        );
        // The script runs on the upsert document only with scripted_upsert.
        let scripted = json!({"script": {"source": "ctx._source.n += 1"}, "upsert": {"n": 0}});
        assert_eq!(
            req(scripted.clone()).resolve("7", None).unwrap(),
            Resolution::Write {
                source: obj(json!({"n": 0})),
                created: true
            }
        );
        let mut s = scripted;
        s["scripted_upsert"] = json!(true);
        assert_eq!(
            req(s).resolve("7", None).unwrap(),
            Resolution::Write {
                source: obj(json!({"n": 1})),
                created: true
            }
        );
    }

    #[test]
    fn scripts_in_the_common_forms() {
        let r = req(json!({"script": {
            "source": "ctx._source.count += params.n; ctx._source.user.name = params.who; ctx._source['tag'] = 'x;y'; ctx._source.tags.add(params.t); ctx._source.remove('gone'); ctx._source.msg += '!'",
            "params": {"n": 2, "who": {"first": "ann"}, "t": "new"}
        }}));
        let live = obj(json!({"count": 3, "gone": 1, "tags": ["old"], "msg": "hi"}));
        assert_eq!(
            r.resolve("1", Some(live)).unwrap(),
            Resolution::Write {
                source: obj(
                    json!({"count": 5, "user": {"name": {"first": "ann"}}, "tag": "x;y", "tags": ["old", "new"], "msg": "hi!"})
                ),
                created: false
            }
        );
        let live = obj(json!({"a": 1}));
        assert_eq!(
            req(json!({"script": "ctx.op = 'delete'"}))
                .resolve("1", Some(live.clone()))
                .unwrap(),
            Resolution::Delete
        );
        assert_eq!(
            req(json!({"script": {"source": "ctx.op = \"none\""}}))
                .resolve("1", Some(live))
                .unwrap(),
            Resolution::Noop
        );
        assert_eq!(
            req(json!({"script": "ctx._source.f = 1.5"}))
                .resolve("1", Some(Map::new()))
                .unwrap(),
            Resolution::Write {
                source: obj(json!({"f": 1.5})),
                created: false
            }
        );
    }

    #[test]
    fn other_scripts_and_bad_bodies_are_400s() {
        for body in [
            json!({"script": "if (ctx._source.a > 1) { ctx._source.b = 2 }"}),
            json!({"script": "ctx._source.a = ctx._source.b * 2"}),
            json!({"script": {"source": "ctx._source.a = 1", "lang": "expression"}}),
            json!({"script": {"id": "stored"}}),
            json!({"doc": {"a": 1}, "script": "ctx._source.a = 1"}),
            json!({}),
            json!({"doc": {"a": 1}, "unknown": 1}),
        ] {
            let e = UpdateRequest::parse(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.0, 400, "{body}: {e:?}");
        }
        let e = req(json!({"script": {"source": "ctx._source.a = params.missing"}}))
            .resolve("1", Some(Map::new()))
            .unwrap_err();
        assert_eq!(e.0, 400);
        assert!(UpdateRequest::parse(b"not json").is_err());
    }
}
