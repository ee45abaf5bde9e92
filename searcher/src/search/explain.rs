//! `GET|POST /{index}/_explain/{id}`: how a query scores one document (tantivy's
//! explanation of the query on that document's shard), or that it does not match.

use super::*;
use tantivy::collector::TopDocs;
use tantivy::query::TermQuery;
use tantivy::schema::IndexRecordOption;

impl SearchService {
    pub async fn explain(
        &self,
        index: &str,
        id: &str,
        body: Option<&Value>,
        params: &SearchParams,
    ) -> Result<Value, SearchError> {
        let meta = self
            .metastore
            .get_index(index)
            .ok_or_else(|| SearchError::IndexNotFound(index.to_string()))?;
        let req = self.parse_request(body, params)?;
        let shard_no = floe_metastore::shard_for(
            params.routing.as_deref().unwrap_or(id),
            meta.settings.number_of_shards,
        );
        let mut only = meta.clone();
        only.shards.retain(|s, _| *s == shard_no);
        let (only, shards) = self.open_shards(only, None, &Default::default()).await?;
        let layout = ShardLayout::of(&only.settings);
        let query = Translator::new(layout, &only.mappings).translate(&req.query)?;
        let id_term = Term::from_field_text(layout.id, id);
        let id = id.to_string();
        let name = only.name.clone();
        tokio::task::spawn_blocking(move || -> Result<Value, SearchError> {
            let Some(shard) = shards.first() else {
                return Ok(json!({"_index": name, "_id": id, "matched": false}));
            };
            let found = shard.searcher.search(
                &TermQuery::new(id_term, IndexRecordOption::Basic),
                &TopDocs::with_limit(1).order_by_score(),
            )?;
            let Some((_, addr)) = found.first() else {
                return Ok(json!({"_index": name, "_id": id, "matched": false}));
            };
            match query.explain(&shard.searcher, *addr) {
                Ok(e) => Ok(json!({"_index": name, "_id": id, "matched": true,
                    "explanation": serde_json::to_value(&e).unwrap_or(Value::Null)})),
                Err(_) => Ok(json!({"_index": name, "_id": id, "matched": false,
                    "explanation": {"value": 0.0, "description": "no matching term", "details": []}})),
            }
        })
        .await
        .map_err(|e| SearchError::Internal(e.to_string()))?
    }
}
