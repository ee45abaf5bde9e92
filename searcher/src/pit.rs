//! Points in time and scrolls: searches of the commits a set of shards had at one moment.
//!
//! A point in time pins each shard's commit in the bucket
//! ([`floe_metastore::pits::PitStore`]), so any searcher can serve its next page and the
//! writers keep the segment objects it reads until it expires. A scroll is a point in time
//! plus a cursor: its id carries the request and the position of the last hit returned, so
//! the next page is a search after that position (no per-scroll state on any node).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use floe_metastore::pits::{PinnedIndex, Pit};
use floe_proto::model::parse_time_value;
use floe_proto::IndexMeta;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::after::Position;
use crate::leaf::ShardTarget;
use crate::search::{shard_targets, SearchParams, SearchService};
use crate::shards::OpenShard;
use crate::SearchError;

/// The shards a search covers, the alias filters per index uuid, the indexes.
pub(crate) type SearchTargets = (Vec<ShardTarget>, BTreeMap<String, Value>, Vec<IndexMeta>);

/// What a scroll id carries.
#[derive(Serialize, Deserialize)]
struct ScrollState {
    pit: String,
    body: Value,
    params: SearchParams,
    /// Sort values and position of the last hit returned (none yet: the scroll is empty).
    after: Option<(Value, Position)>,
    total: Value,
}

fn keep_alive_of(s: &str) -> Result<Duration, SearchError> {
    parse_time_value(s).ok_or_else(|| {
        SearchError::IllegalArgument(format!("failed to parse [{s}] as a time value"))
    })
}

fn encode_scroll(state: &ScrollState) -> String {
    let json = serde_json::to_vec(state).expect("serializable");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_scroll(id: &str) -> Result<ScrollState, SearchError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id.trim())
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| SearchError::IllegalArgument(format!("Cannot parse scroll id [{id}]")))
}

impl SearchService {
    /// `POST /{index}/_search/point_in_time?keep_alive=`: pins the latest commit of every
    /// shard the expression names.
    pub async fn open_pit(
        &self,
        expr: &str,
        keep_alive: &str,
        routing: Option<&str>,
    ) -> Result<Value, SearchError> {
        let pit = self
            .create_pit(expr, keep_alive_of(keep_alive)?, routing, false)
            .await?;
        let shards: usize = pit.indexes.iter().map(|i| i.shards.len()).sum();
        Ok(json!({
            "pit_id": pit.id,
            "_shards": {"total": shards, "successful": shards, "skipped": 0, "failed": 0},
            "creation_time": pit.created_ms,
        }))
    }

    async fn create_pit(
        &self,
        expr: &str,
        keep_alive: Duration,
        routing: Option<&str>,
        ignore_unavailable: bool,
    ) -> Result<Arc<Pit>, SearchError> {
        let params = SearchParams {
            ignore_unavailable,
            ..Default::default()
        };
        let resolved = self.resolve_open(expr, &params)?;
        let targets = shard_targets(&resolved, routing);
        let mut indexes = Vec::new();
        for r in resolved {
            // The latest commits (not a view that may lag by a poll).
            let meta = self
                .metastore
                .get_index_caught_up(&r.meta.name, Some(&r.meta.uuid))
                .await?
                .unwrap_or(r.meta);
            let shards = meta
                .shards
                .iter()
                .filter(|(s, _)| {
                    targets
                        .iter()
                        .any(|t| t.uuid == meta.uuid && t.shard == **s)
                })
                .map(|(s, c)| (*s, c.clone()))
                .collect();
            indexes.push(PinnedIndex {
                name: meta.name.clone(),
                uuid: meta.uuid.clone(),
                filter: r.filter,
                shards,
            });
        }
        Ok(self.pits.create(indexes, keep_alive).await?)
    }

    /// `DELETE /_search/point_in_time` (`pit_id`: one or a list) and `.../_all`.
    pub async fn close_pits(&self, ids: Option<Vec<String>>) -> Result<Value, SearchError> {
        let ids = match ids {
            Some(ids) => ids,
            None => self
                .pits
                .list()
                .await?
                .iter()
                .map(|p| p.id.clone())
                .collect(),
        };
        let mut out = Vec::new();
        for id in ids {
            let closed = self.pits.delete(&id).await?;
            out.push(json!({"pit_id": id, "successful": closed}));
        }
        Ok(json!({ "pits": out }))
    }

    /// `GET /_search/point_in_time/_all`.
    pub async fn list_pits(&self) -> Result<Value, SearchError> {
        let pits: Vec<Value> = self
            .pits
            .list()
            .await?
            .iter()
            .map(|p| {
                json!({"pit_id": p.id, "creation_time": p.created_ms,
                    "keep_alive": (p.expires_ms - p.created_ms).max(0)})
            })
            .collect();
        Ok(json!({ "pits": pits }))
    }

    /// The point in time a search body names (`pit: {id, keep_alive}`), kept alive longer
    /// if it asks.
    pub(crate) async fn pit_of_request(
        &self,
        expr: &str,
        pit: &Value,
    ) -> Result<Arc<Pit>, SearchError> {
        if !(expr.is_empty() || expr == "_all") {
            return Err(SearchError::IllegalArgument(
                "[indices] cannot be used with point in time. Do not specify any index with point in time.".into(),
            ));
        }
        let id = pit
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| SearchError::Parsing("[pit] requires an [id]".into()))?;
        let found = self
            .pits
            .get(id)
            .await?
            .ok_or_else(|| SearchError::ContextMissing(id.to_string()))?;
        if let Some(keep_alive) = pit.get("keep_alive").and_then(Value::as_str) {
            self.pits.extend(&found, keep_alive_of(keep_alive)?).await?;
        }
        Ok(found)
    }

    /// The shards of a point in time, the filters of the aliases it was opened through,
    /// and the indexes as known now.
    pub(crate) fn pit_targets(&self, pit: &Pit) -> Result<SearchTargets, SearchError> {
        let mut targets = Vec::new();
        let mut filters = BTreeMap::new();
        let mut indexes = Vec::new();
        for ix in &pit.indexes {
            let meta = self
                .metastore
                .get_index(&ix.name)
                .filter(|m| m.uuid == ix.uuid)
                .ok_or_else(|| SearchError::IndexNotFound(ix.name.clone()))?;
            targets.extend(ix.shards.keys().map(|&shard| ShardTarget {
                index: ix.name.clone(),
                uuid: ix.uuid.clone(),
                shard,
            }));
            if let Some(f) = &ix.filter {
                filters.insert(ix.uuid.clone(), f.clone());
            }
            indexes.push(meta);
        }
        Ok((targets, filters, indexes))
    }

    /// The targeted shards of `meta` at the commits `pit` pinned.
    pub(crate) async fn open_pinned(
        &self,
        mut meta: IndexMeta,
        pit: &Pit,
    ) -> Result<(IndexMeta, Vec<OpenShard>), SearchError> {
        let pinned = pit
            .indexes
            .iter()
            .find(|p| p.uuid == meta.uuid)
            .ok_or_else(|| SearchError::ContextMissing(pit.id.clone()))?;
        let wanted: Vec<u32> = meta.shards.keys().copied().collect();
        meta.shards = pinned
            .shards
            .iter()
            .filter(|(s, _)| wanted.contains(s))
            .map(|(s, c)| (*s, c.clone()))
            .collect();
        let mut opened = Vec::with_capacity(meta.shards.len());
        for (&shard, commit) in &meta.shards {
            opened.push(self.readers.pinned(&meta, shard, commit).await?);
        }
        Ok((meta, opened))
    }

    /// `GET|POST /{index}/_search?scroll=`: the first page, and a scroll id for the next.
    /// Without a sort, a scroll goes in index order (`_doc`).
    pub async fn scroll_start(
        &self,
        expr: &str,
        body: Option<&Value>,
        params: &SearchParams,
        keep_alive: &str,
    ) -> Result<Value, SearchError> {
        let keep_alive = keep_alive_of(keep_alive)?;
        let mut body = body.cloned().unwrap_or_else(|| json!({}));
        let Some(obj) = body.as_object_mut() else {
            return Err(SearchError::Parsing(
                "request body must be a JSON object".into(),
            ));
        };
        if obj.contains_key("pit") {
            return Err(SearchError::IllegalArgument(
                "using [point in time] is not allowed in a scroll context".into(),
            ));
        }
        if params.from.unwrap_or(0) > 0 || obj.get("from").and_then(Value::as_u64).unwrap_or(0) > 0
        {
            return Err(SearchError::IllegalArgument(
                "using [from] is not allowed in a scroll context".into(),
            ));
        }
        if params.sort.is_none() && !obj.contains_key("sort") {
            obj.insert("sort".into(), json!(["_doc"]));
        }
        let pit = self
            .create_pit(
                expr,
                keep_alive,
                params.routing.as_deref(),
                params.ignore_unavailable,
            )
            .await?;
        obj.insert("pit".into(), json!({"id": pit.id}));
        let mut params = params.clone();
        params.routing = None;
        let (mut response, last) = self.search_page("", Some(&body), &params, None).await?;
        // Later pages: no aggregations, and the total of the first.
        if let Some(obj) = body.as_object_mut() {
            obj.remove("aggs");
            obj.remove("aggregations");
            obj.insert("track_total_hits".into(), json!(false));
        }
        params.track_total_hits = None;
        let state = ScrollState {
            pit: pit.id.clone(),
            body,
            params,
            after: last_cursor(&response, last),
            total: response["hits"]["total"].clone(),
        };
        finish_page(&mut response, &state);
        Ok(response)
    }

    /// `POST /_search/scroll`: the next page of a scroll.
    pub async fn scroll_next(
        &self,
        scroll_id: &str,
        keep_alive: Option<&str>,
    ) -> Result<Value, SearchError> {
        let mut state = decode_scroll(scroll_id)?;
        let pit = self
            .pits
            .get(&state.pit)
            .await?
            .ok_or_else(|| SearchError::ContextMissing(scroll_id.to_string()))?;
        if let Some(k) = keep_alive {
            self.pits.extend(&pit, keep_alive_of(k)?).await?;
        }
        let Some((values, position)) = state.after.clone() else {
            // Nothing was returned yet: the scroll was empty from the start.
            let mut response = json!({"took": 0, "timed_out": false,
                "_shards": {"total": 0, "successful": 0, "skipped": 0, "failed": 0},
                "hits": {"total": state.total, "max_score": null, "hits": []}});
            finish_page(&mut response, &state);
            return Ok(response);
        };
        let mut body = state.body.clone();
        body["search_after"] = values;
        let (mut response, last) = self
            .search_page("", Some(&body), &state.params, Some(position))
            .await?;
        response["hits"]["total"] = state.total.clone();
        if let Some(next) = last_cursor(&response, last) {
            state.after = Some(next);
        }
        finish_page(&mut response, &state);
        Ok(response)
    }

    /// `DELETE /_search/scroll`: closes the scrolls (their points in time).
    pub async fn clear_scrolls(&self, ids: &[String]) -> Result<Value, SearchError> {
        let mut freed = 0;
        for id in ids {
            let state = decode_scroll(id)?;
            if self.pits.delete(&state.pit).await? {
                freed += 1;
            }
        }
        Ok(json!({"succeeded": true, "num_freed": freed}))
    }
}

/// The cursor after a page: the last hit's sort values and position.
fn last_cursor(response: &Value, last: Option<Position>) -> Option<(Value, Position)> {
    let hits = response["hits"]["hits"].as_array()?;
    let values = hits.last()?.get("sort")?.clone();
    Some((values, last?))
}

/// A scroll page answers with the scroll id of the next, not the point in time.
fn finish_page(response: &mut Value, state: &ScrollState) {
    if let Some(obj) = response.as_object_mut() {
        obj.remove("pit_id");
        obj.insert("_scroll_id".into(), json!(encode_scroll(state)));
    }
}
