//! `_validate/query`.

use super::*;

impl SearchService {
    /// `GET|POST [/{index}]/_validate/query`: whether the query parses and translates
    /// against every targeted index's mapping (`explain`: per index, with the reason).
    pub fn validate_query(
        &self,
        expr: &str,
        body: Option<&Value>,
        params: &SearchParams,
        explain: bool,
    ) -> Result<Value, SearchError> {
        let indexes = self.resolve(expr, params.ignore_unavailable)?;
        let query = body.and_then(|b| b.get("query")).cloned();
        let probe = json!({ "query": query.unwrap_or(json!({"match_all": {}})) });
        let parsed = self.parse_request(Some(&probe), params);
        let mut explanations = Vec::new();
        let mut valid = true;
        for meta in &indexes {
            let outcome = parsed.as_ref().map_err(|e| e.to_string()).and_then(|req| {
                Translator::new(ShardLayout::of(&meta.settings), &meta.mappings)
                    .translate(&req.query)
                    .map(|q| format!("{q:?}"))
                    .map_err(|e| e.to_string())
            });
            valid &= outcome.is_ok();
            explanations.push(match outcome {
                Ok(q) => json!({"index": meta.name, "valid": true, "explanation": q}),
                Err(e) => json!({"index": meta.name, "valid": false, "error": e}),
            });
        }
        if let (Err(e), true) = (&parsed, indexes.is_empty()) {
            valid = false;
            explanations.push(json!({"valid": false, "error": e.to_string()}));
        }
        let n = indexes.len();
        let mut out =
            json!({"_shards": {"total": n, "successful": n, "failed": 0}, "valid": valid});
        if explain {
            out["explanations"] = Value::Array(explanations);
        } else if !valid {
            if let Some(e) = explanations.iter().find_map(|x| x.get("error")) {
                out["error"] = e.clone();
            }
        }
        Ok(out)
    }
}
