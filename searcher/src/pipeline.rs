//! Pipeline aggregations over the buckets of a parent `date_histogram`, `histogram` or
//! `terms`: `cumulative_sum`, `derivative`, `serial_diff`, `moving_fn` (the
//! `MovingFunctions` dashboards use) and `bucket_script` (arithmetic on `params`).
//!
//! They need the merged buckets, so the receiving node takes them out of the request
//! before the leaves run and computes them on the final result, in the order they were
//! declared (one may read another's value).

use serde_json::{json, Map, Value};

use crate::agg_path::for_each_at;
use crate::SearchError;

const KINDS: &[&str] = &[
    "cumulative_sum",
    "derivative",
    "serial_diff",
    "moving_fn",
    "bucket_script",
];

/// One pipeline aggregation: where its parent's buckets are, its name and spec.
#[derive(Clone, Debug)]
struct Pipeline {
    /// Names from the root to the parent bucket aggregation.
    path: Vec<String>,
    name: String,
    kind: String,
    spec: Value,
}

/// The pipelines a request had taken out.
#[derive(Clone, Debug, Default)]
pub struct Pipelines(Vec<Pipeline>);

fn bad(reason: impl Into<String>) -> SearchError {
    SearchError::IllegalArgument(reason.into())
}

/// Takes the pipeline aggregations out of `aggs` (at any depth).
pub fn extract(aggs: &mut Value) -> Result<Pipelines, SearchError> {
    let mut out = Pipelines::default();
    walk(aggs, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn walk(aggs: &mut Value, path: &mut Vec<String>, out: &mut Pipelines) -> Result<(), SearchError> {
    let Some(obj) = aggs.as_object_mut() else {
        return Ok(());
    };
    for (name, agg) in obj.iter_mut() {
        path.push(name.clone());
        for key in ["aggs", "aggregations"] {
            let Some(Value::Object(subs)) = agg.get_mut(key) else {
                continue;
            };
            let pipelines: Vec<String> = subs
                .iter()
                .filter(|(_, v)| KINDS.iter().any(|k| v.get(*k).is_some()))
                .map(|(k, _)| k.clone())
                .collect();
            for p in pipelines {
                let v = subs.remove(&p).expect("listed");
                let (kind, spec) = v
                    .as_object()
                    .and_then(|o| o.iter().find(|(k, _)| KINDS.contains(&k.as_str())))
                    .map(|(k, s)| (k.clone(), s.clone()))
                    .expect("a pipeline kind");
                out.0.push(Pipeline {
                    path: path.clone(),
                    name: p,
                    kind,
                    spec,
                });
            }
            if subs.is_empty() {
                if let Some(o) = agg.as_object_mut() {
                    o.remove(key);
                }
            } else if let Some(s) = agg.get_mut(key) {
                walk(s, path, out)?;
            }
        }
        path.pop();
    }
    Ok(())
}

/// Computes the pipelines on the final aggregations.
pub fn apply(result: &mut Value, pipelines: &Pipelines) -> Result<(), SearchError> {
    for p in &pipelines.0 {
        let mut failed = None;
        for_each_at(result, &p.path, &mut |agg| {
            if failed.is_none() {
                failed = compute_in(agg, p).err();
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
    }
    Ok(())
}

/// One pipeline over the buckets of one parent result (list or keyed).
fn compute_in(agg: &mut Value, p: &Pipeline) -> Result<(), SearchError> {
    match agg.get_mut("buckets") {
        Some(Value::Array(buckets)) => compute(buckets, p),
        Some(Value::Object(buckets)) => {
            let mut list: Vec<Value> = buckets.values().cloned().collect();
            compute(&mut list, p)?;
            for (slot, b) in buckets.values_mut().zip(list) {
                *slot = b;
            }
            Ok(())
        }
        _ => Err(bad(format!(
            "[{}] must be inside a multi-bucket aggregation",
            p.name
        ))),
    }
}

/// The value `path` names in a bucket: `_count`, `agg` (its `value`), `agg.metric`,
/// `agg>metric`.
fn lookup(bucket: &Value, path: &str) -> Option<f64> {
    if path == "_count" {
        return bucket.get("doc_count")?.as_f64();
    }
    let (agg, metric) = match path.split_once(['.', '>']) {
        Some((a, m)) => (a, m),
        None => (path, "value"),
    };
    let v = bucket.get(agg)?;
    v.get(metric)
        .or_else(|| v.get("values").and_then(|vs| vs.get(metric)))?
        .as_f64()
}

fn single_path(p: &Pipeline) -> Result<String, SearchError> {
    p.spec
        .get("buckets_path")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| bad(format!("[{}] requires a [buckets_path]", p.name)))
}

fn compute(buckets: &mut [Value], p: &Pipeline) -> Result<(), SearchError> {
    let set = |b: &mut Value, v: Option<f64>| {
        if let Some(o) = b.as_object_mut() {
            o.insert(p.name.clone(), json!({ "value": v }));
        }
    };
    match p.kind.as_str() {
        "cumulative_sum" => {
            let path = single_path(p)?;
            let mut sum = 0.0;
            for b in buckets.iter_mut() {
                sum += lookup(b, &path).unwrap_or(0.0);
                set(b, Some(sum));
            }
        }
        "derivative" | "serial_diff" => {
            let path = single_path(p)?;
            let lag = if p.kind == "serial_diff" {
                p.spec.get("lag").and_then(Value::as_u64).unwrap_or(1) as usize
            } else {
                1
            };
            let values: Vec<Option<f64>> = buckets.iter().map(|b| lookup(b, &path)).collect();
            for (i, b) in buckets.iter_mut().enumerate() {
                if i < lag {
                    continue; // no earlier bucket: no value, as OpenSearch
                }
                let d = match (values[i], values[i - lag]) {
                    (Some(now), Some(before)) => Some(now - before),
                    _ => None,
                };
                set(b, d);
            }
        }
        "moving_fn" => {
            let path = single_path(p)?;
            let window = p
                .spec
                .get("window")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad(format!("[{}] requires a [window]", p.name)))?
                as usize;
            let shift = p.spec.get("shift").and_then(Value::as_i64).unwrap_or(0);
            let script = script_source(&p.spec)?;
            let f = moving_function(&script)?;
            let values: Vec<Option<f64>> = buckets.iter().map(|b| lookup(b, &path)).collect();
            for (i, b) in buckets.iter_mut().enumerate() {
                let end = (i as i64 + shift).clamp(0, values.len() as i64) as usize;
                let start = end.saturating_sub(window);
                let window: Vec<f64> = values[start..end].iter().flatten().copied().collect();
                set(b, f(&window));
            }
        }
        "bucket_script" => {
            let paths = p
                .spec
                .get("buckets_path")
                .and_then(Value::as_object)
                .ok_or_else(|| bad(format!("[{}] requires a [buckets_path] map", p.name)))?
                .clone();
            let script = script_source(&p.spec)?;
            let expr = Expr::parse(&script)?;
            for b in buckets.iter_mut() {
                let mut params = Map::new();
                let mut missing = false;
                for (var, path) in &paths {
                    match path.as_str().and_then(|path| lookup(b, path)) {
                        Some(v) => {
                            params.insert(var.clone(), json!(v));
                        }
                        None => missing = true,
                    }
                }
                // gap_policy skip: a bucket without every value gets none.
                if !missing {
                    set(b, expr.eval(&params));
                }
            }
        }
        other => return Err(bad(format!("unsupported pipeline aggregation [{other}]"))),
    }
    Ok(())
}

fn script_source(spec: &Value) -> Result<String, SearchError> {
    match spec.get("script") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Object(o)) => o
            .get("source")
            .or(o.get("inline"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad("[script] requires a [source]")),
        _ => Err(bad("a [script] is required")),
    }
}

type WindowFn = fn(&[f64]) -> Option<f64>;

/// `MovingFunctions.<f>(values)`.
fn moving_function(script: &str) -> Result<WindowFn, SearchError> {
    let name = script
        .trim()
        .trim_end_matches(';')
        .strip_prefix("MovingFunctions.")
        .and_then(|s| s.strip_suffix("(values)"))
        .unwrap_or_default();
    Ok(match name {
        "max" => |w| w.iter().copied().reduce(f64::max),
        "min" => |w| w.iter().copied().reduce(f64::min),
        "sum" => |w| Some(w.iter().sum()),
        "unweightedAvg" => |w| (!w.is_empty()).then(|| w.iter().sum::<f64>() / w.len() as f64),
        "stdDev" => |w| {
            if w.is_empty() {
                return None;
            }
            let mean = w.iter().sum::<f64>() / w.len() as f64;
            Some((w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / w.len() as f64).sqrt())
        },
        _ => {
            return Err(bad(format!(
                "moving_fn script [{script}] is not supported: Floe runs MovingFunctions.max, min, sum, unweightedAvg and stdDev on values"
            )))
        }
    })
}

/// Arithmetic on `params.x` and numbers: `+ - * /`, parentheses, unary minus.
#[derive(Debug)]
enum Expr {
    Num(f64),
    Param(String),
    Neg(Box<Expr>),
    Bin(char, Box<Expr>, Box<Expr>),
}

impl Expr {
    fn parse(src: &str) -> Result<Expr, SearchError> {
        let tokens = tokenize(src.trim().trim_end_matches(';'))?;
        let mut pos = 0;
        let e = parse_sum(&tokens, &mut pos)?;
        if pos != tokens.len() {
            return Err(bad(format!(
                "bucket_script [{src}]: unexpected [{}]",
                tokens[pos]
            )));
        }
        Ok(e)
    }

    fn eval(&self, params: &Map<String, Value>) -> Option<f64> {
        Some(match self {
            Expr::Num(n) => *n,
            Expr::Param(p) => params.get(p)?.as_f64()?,
            Expr::Neg(e) => -e.eval(params)?,
            Expr::Bin(op, a, b) => {
                let (a, b) = (a.eval(params)?, b.eval(params)?);
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ if b == 0.0 => return None,
                    _ => a / b,
                }
            }
        })
    }
}

fn tokenize(src: &str) -> Result<Vec<String>, SearchError> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if "+-*/()".contains(c) {
            out.push(c.to_string());
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
            {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else {
            return Err(bad(format!(
                "bucket_script [{src}]: Floe evaluates + - * / ( ), numbers and params.<name>"
            )));
        }
    }
    Ok(out)
}

fn parse_sum(t: &[String], pos: &mut usize) -> Result<Expr, SearchError> {
    let mut e = parse_product(t, pos)?;
    while let Some(op) = t.get(*pos).filter(|s| *s == "+" || *s == "-") {
        let op = op.chars().next().expect("one char");
        *pos += 1;
        e = Expr::Bin(op, Box::new(e), Box::new(parse_product(t, pos)?));
    }
    Ok(e)
}

fn parse_product(t: &[String], pos: &mut usize) -> Result<Expr, SearchError> {
    let mut e = parse_atom(t, pos)?;
    while let Some(op) = t.get(*pos).filter(|s| *s == "*" || *s == "/") {
        let op = op.chars().next().expect("one char");
        *pos += 1;
        e = Expr::Bin(op, Box::new(e), Box::new(parse_atom(t, pos)?));
    }
    Ok(e)
}

fn parse_atom(t: &[String], pos: &mut usize) -> Result<Expr, SearchError> {
    let tok = t
        .get(*pos)
        .ok_or_else(|| bad("bucket_script: unexpected end of script"))?;
    *pos += 1;
    match tok.as_str() {
        "-" => Ok(Expr::Neg(Box::new(parse_atom(t, pos)?))),
        "(" => {
            let e = parse_sum(t, pos)?;
            if t.get(*pos).map(String::as_str) != Some(")") {
                return Err(bad("bucket_script: missing )"));
            }
            *pos += 1;
            Ok(e)
        }
        s => {
            if let Some(p) = s.strip_prefix("params.") {
                return Ok(Expr::Param(p.to_string()));
            }
            s.parse::<f64>()
                .map(Expr::Num)
                .map_err(|_| bad(format!("bucket_script: cannot evaluate [{s}]")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_on_histogram_buckets() {
        let mut aggs = json!({"h": {"date_histogram": {"field": "t", "fixed_interval": "1d"}, "aggs": {
            "total": {"sum": {"field": "n"}},
            "running": {"cumulative_sum": {"buckets_path": "total"}},
            "change": {"derivative": {"buckets_path": "_count"}},
            "avg2": {"moving_fn": {"buckets_path": "total", "window": 2, "script": "MovingFunctions.unweightedAvg(values)"}},
            "ratio": {"bucket_script": {"buckets_path": {"s": "total", "c": "_count"}, "script": "params.s / params.c * (1 + 1)"}}
        }}});
        let p = extract(&mut aggs).unwrap();
        assert_eq!(
            aggs,
            json!({"h": {"date_histogram": {"field": "t", "fixed_interval": "1d"}, "aggs": {"total": {"sum": {"field": "n"}}}}})
        );
        let mut result = json!({"h": {"buckets": [
            {"key": 1, "doc_count": 2, "total": {"value": 10.0}},
            {"key": 2, "doc_count": 5, "total": {"value": 4.0}},
            {"key": 3, "doc_count": 1, "total": {"value": 6.0}}
        ]}});
        apply(&mut result, &p).unwrap();
        let b = &result["h"]["buckets"];
        let col = |name: &str| -> Vec<Value> {
            b.as_array()
                .unwrap()
                .iter()
                .map(|x| x.get(name).map_or(Value::Null, |v| v["value"].clone()))
                .collect()
        };
        assert_eq!(col("running"), vec![json!(10.0), json!(14.0), json!(20.0)]);
        assert_eq!(col("change"), vec![Value::Null, json!(3.0), json!(-4.0)]);
        assert!(
            b[0].get("change").is_none(),
            "no derivative for the first bucket"
        );
        assert_eq!(col("avg2"), vec![Value::Null, json!(10.0), json!(7.0)]);
        assert_eq!(col("ratio"), vec![json!(10.0), json!(1.6), json!(12.0)]);
        assert!(Expr::parse("params.a ^ 2").is_err());
        assert!(moving_function("MovingFunctions.linearWeightedAvg(values)").is_err());
    }
}
