//! `_delete_by_query`, `_update_by_query` and `_reindex`, as one pipeline: scroll over the
//! source (this cluster's indexes, or a remote OpenSearch or Elasticsearch cluster's) →
//! turn each page into bulk operations → write them through the writer like any bulk item
//! (forwarded to the shards' owners) → count outcomes in OpenSearch's shape.
//!
//! Deletes and updates carry the `_seq_no`/`_primary_term` the scroll read, so a document
//! changed meanwhile is a version conflict (counted and skipped with `conflicts=proceed`,
//! otherwise the job stops), never a lost write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use floe_searcher::{SearchParams, SearchService};
use floe_writer::bulk::Condition;
use floe_writer::update::{Resolution, UpdateRequest};
use floe_writer::{BulkOp, OpKind, Writer};
use serde_json::{json, Map, Value};
use tracing::{info, instrument};

/// How long a job's scroll stays open between pages.
const SCROLL_KEEP_ALIVE: &str = "5m";

/// What a job does with each document the scroll returns.
#[derive(Clone, Debug)]
pub enum Action {
    Delete,
    /// Update in place: the script (if any) decides; without one the document is written
    /// again as it is.
    Update {
        script: Option<Value>,
    },
    /// Copy into `index` (`op_type` `index` or `create`), through the script if any.
    Copy {
        index: String,
        create: bool,
        script: Option<Value>,
    },
}

/// Where the documents come from.
#[derive(Clone, Debug)]
pub enum Source {
    Local {
        index: String,
        routing: Option<String>,
    },
    /// `source.remote` of `_reindex`.
    Remote {
        host: String,
        index: String,
        username: Option<String>,
        password: Option<String>,
    },
}

/// A by-query or reindex job.
#[derive(Clone, Debug)]
pub struct Job {
    pub source: Source,
    pub query: Value,
    pub action: Action,
    pub max_docs: Option<u64>,
    /// `conflicts=proceed`: count version conflicts and go on.
    pub proceed: bool,
    pub batch_size: usize,
    pub refresh: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Search(#[from] floe_searcher::SearchError),
    #[error(transparent)]
    Writer(#[from] floe_writer::WriterError),
    #[error("remote cluster: {0}")]
    Remote(String),
}

/// The counters OpenSearch reports.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub total: u64,
    pub created: u64,
    pub updated: u64,
    pub deleted: u64,
    pub noops: u64,
    pub version_conflicts: u64,
    pub batches: u64,
    pub failures: Vec<Value>,
    pub took_ms: u64,
    /// Stopped by `POST /_tasks/{id}/_cancel` before the end.
    pub canceled: bool,
}

impl Summary {
    /// The response body of `kind` (`delete_by_query`, `update_by_query`, `reindex`).
    pub fn to_json(&self, kind: &str) -> Value {
        let mut v = json!({
            "took": self.took_ms,
            "timed_out": false,
            "total": self.total,
            "deleted": self.deleted,
            "batches": self.batches,
            "version_conflicts": self.version_conflicts,
            "noops": self.noops,
            "retries": {"bulk": 0, "search": 0},
            "throttled_millis": 0,
            "requests_per_second": -1.0,
            "throttled_until_millis": 0,
            "failures": self.failures,
        });
        if kind != "delete_by_query" {
            v["updated"] = json!(self.updated);
        }
        if kind == "reindex" {
            v["created"] = json!(self.created);
        }
        if self.canceled {
            v["canceled"] = json!("by user request");
        }
        v
    }

    /// A version conflict stopped the job (answered with 409).
    pub fn conflicted(&self) -> bool {
        self.failures.iter().any(|f| f["status"] == json!(409))
    }
}

/// One hit of a page of the source.
struct Hit {
    index: String,
    id: String,
    seq: Option<(u64, u64)>,
    source: Map<String, Value>,
    /// The custom routing it was written with: its writes go to the same shard (and a
    /// copy keeps it, as `dest.routing: keep` does).
    routing: Option<String>,
}

/// The scroll over the source.
enum Scan {
    Local {
        searcher: Arc<SearchService>,
        scroll_id: Option<String>,
    },
    Remote {
        client: reqwest::Client,
        host: String,
        auth: Option<(String, Option<String>)>,
        scroll_id: Option<String>,
    },
}

impl Job {
    /// Runs the job to the end (or the first failure that stops it).
    #[instrument(skip_all, fields(source = ?self.source))]
    pub async fn run(
        &self,
        searcher: Arc<SearchService>,
        writer: Arc<Writer>,
    ) -> Result<Summary, JobError> {
        self.run_cancellable(searcher, writer, &AtomicBool::new(false))
            .await
    }

    /// [`Job::run`], stopping between batches once `cancel` is set (what was written
    /// stays; the summary says `canceled`).
    pub async fn run_cancellable(
        &self,
        searcher: Arc<SearchService>,
        writer: Arc<Writer>,
        cancel: &AtomicBool,
    ) -> Result<Summary, JobError> {
        let started = Instant::now();
        let mut summary = Summary::default();
        let (mut scan, mut page, total) = self.open(searcher).await?;
        summary.total = self.max_docs.map_or(total, |m| m.min(total));
        let mut done = 0u64;
        let mut touched: Vec<String> = Vec::new();
        while !page.is_empty() {
            if cancel.load(Ordering::Acquire) {
                summary.canceled = true;
                break;
            }
            if let Some(max) = self.max_docs {
                page.truncate((max - done).min(page.len() as u64) as usize);
            }
            done += page.len() as u64;
            let ops = self.operations(&page, &mut summary)?;
            if !ops.is_empty() {
                for op in &ops {
                    if let Some(ix) = &op.index {
                        if !touched.contains(ix) {
                            touched.push(ix.clone());
                        }
                    }
                }
                let outcomes = writer.write_ops(ops).await?;
                let stop = tally(&mut summary, &outcomes, self.proceed);
                summary.batches += 1;
                if stop {
                    break;
                }
            }
            if self.max_docs.is_some_and(|m| done >= m) {
                break;
            }
            page = scan.next().await?;
        }
        scan.close().await;
        if self.refresh && !touched.is_empty() {
            writer.refresh_everywhere(&touched).await?;
        }
        summary.took_ms = started.elapsed().as_millis() as u64;
        info!(
            total = summary.total,
            batches = summary.batches,
            "by-query job finished"
        );
        Ok(summary)
    }

    /// Opens the scroll: the first page and the total.
    async fn open(&self, searcher: Arc<SearchService>) -> Result<(Scan, Vec<Hit>, u64), JobError> {
        let mut body = json!({
            "size": self.batch_size,
            "query": self.query,
            "sort": ["_doc"],
        });
        // Deletes and updates write on the condition that the document is still the one
        // read (copies do not need it; older remote clusters do not know the flag).
        if !matches!(self.action, Action::Copy { .. }) {
            body["seq_no_primary_term"] = json!(true);
        }
        match &self.source {
            Source::Local { index, routing } => {
                let params = SearchParams {
                    track_total_hits: Some("true".into()),
                    routing: routing.clone(),
                    ..Default::default()
                };
                let r = searcher
                    .scroll_start(index, Some(&body), &params, SCROLL_KEEP_ALIVE)
                    .await?;
                let (hits, total, id) = parse_page(&r)?;
                Ok((
                    Scan::Local {
                        searcher,
                        scroll_id: id,
                    },
                    hits,
                    total,
                ))
            }
            Source::Remote {
                host,
                index,
                username,
                password,
            } => {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .map_err(|e| JobError::Remote(e.to_string()))?;
                let auth = username.clone().map(|u| (u, password.clone()));
                let url = format!(
                    "{}/{index}/_search?scroll={SCROLL_KEEP_ALIVE}",
                    host.trim_end_matches('/')
                );
                let r = remote_call(&client, &auth, reqwest::Method::POST, &url, &body).await?;
                let (hits, total, id) = parse_page(&r)?;
                Ok((
                    Scan::Remote {
                        client,
                        host: host.trim_end_matches('/').to_string(),
                        auth,
                        scroll_id: id,
                    },
                    hits,
                    total,
                ))
            }
        }
    }

    /// The bulk operations of a page (a script's noops are counted here).
    fn operations(&self, page: &[Hit], summary: &mut Summary) -> Result<Vec<BulkOp>, JobError> {
        let mut ops = Vec::with_capacity(page.len());
        for hit in page {
            let cond = hit.seq.map(|(seq_no, primary_term)| Condition::SeqNo {
                seq_no,
                primary_term,
            });
            let op = |kind: OpKind, index: &str, source: Option<Bytes>, cond| BulkOp {
                kind,
                index: Some(index.to_string()),
                id: Some(hit.id.clone()),
                generated_id: false,
                routing: hit.routing.clone(),
                source,
                cond,
                retry_on_conflict: 0,
                invalid: None,
                denied: None,
            };
            match &self.action {
                Action::Delete => ops.push(op(OpKind::Delete, &hit.index, None, cond)),
                Action::Update { script } => {
                    let request = match script {
                        Some(s) => json!({"script": s}),
                        None => json!({"doc": {}, "detect_noop": false}),
                    };
                    let body = Bytes::from(request.to_string());
                    ops.push(op(OpKind::Update, &hit.index, Some(body), cond));
                }
                Action::Copy {
                    index,
                    create,
                    script,
                } => {
                    let source = match script {
                        None => hit.source.clone(),
                        Some(s) => {
                            let req =
                                UpdateRequest::parse(json!({"script": s}).to_string().as_bytes())
                                    .map_err(|(_, _, reason)| JobError::BadRequest(reason))?;
                            match req
                                .resolve(&hit.id, Some(hit.source.clone()))
                                .map_err(|(_, _, reason)| JobError::BadRequest(reason))?
                            {
                                Resolution::Write { source, .. } => source,
                                Resolution::Noop | Resolution::Delete => {
                                    summary.noops += 1;
                                    continue;
                                }
                            }
                        }
                    };
                    let kind = if *create {
                        OpKind::Create
                    } else {
                        OpKind::Index
                    };
                    let bytes = Bytes::from(serde_json::to_vec(&source).unwrap_or_default());
                    ops.push(op(kind, index, Some(bytes), None));
                }
            }
        }
        Ok(ops)
    }
}

/// Adds a batch's outcomes to the counters; true if the job must stop.
fn tally(
    summary: &mut Summary,
    outcomes: &[floe_writer::response::ItemOutcome],
    proceed: bool,
) -> bool {
    let mut stop = false;
    for o in outcomes {
        match &o.result {
            Ok(("deleted", ..)) => summary.deleted += 1,
            Ok(("created", ..)) => summary.created += 1,
            Ok(("updated", ..)) => summary.updated += 1,
            Ok(("noop", ..)) => summary.noops += 1,
            // Deleted meanwhile: nothing left to do.
            Ok(("not_found", ..)) => summary.version_conflicts += 1,
            Ok(_) => {}
            Err((409, typ, reason)) => {
                summary.version_conflicts += 1;
                if !proceed {
                    summary.failures.push(failure(o, 409, typ, reason));
                    stop = true;
                }
            }
            Err((status, typ, reason)) => {
                summary.failures.push(failure(o, *status, typ, reason));
                stop = true;
            }
        }
    }
    stop
}

fn failure(o: &floe_writer::response::ItemOutcome, status: u16, typ: &str, reason: &str) -> Value {
    json!({"index": o.index, "id": o.id, "status": status,
        "cause": {"type": typ, "reason": reason, "index": o.index}})
}

impl Scan {
    async fn next(&mut self) -> Result<Vec<Hit>, JobError> {
        let (r, slot) = match self {
            Scan::Local {
                searcher,
                scroll_id,
            } => {
                let Some(id) = scroll_id.clone() else {
                    return Ok(Vec::new());
                };
                (
                    searcher.scroll_next(&id, Some(SCROLL_KEEP_ALIVE)).await?,
                    scroll_id,
                )
            }
            Scan::Remote {
                client,
                host,
                auth,
                scroll_id,
            } => {
                let Some(id) = scroll_id.clone() else {
                    return Ok(Vec::new());
                };
                let body = json!({"scroll": SCROLL_KEEP_ALIVE, "scroll_id": id});
                let url = format!("{host}/_search/scroll");
                (
                    remote_call(client, auth, reqwest::Method::POST, &url, &body).await?,
                    scroll_id,
                )
            }
        };
        let (hits, _, id) = parse_page(&r)?;
        *slot = id;
        Ok(hits)
    }

    /// Closes the scroll (best effort: it expires anyway).
    async fn close(&mut self) {
        match self {
            Scan::Local {
                searcher,
                scroll_id: Some(id),
            } => {
                let _ = searcher.clear_scrolls(std::slice::from_ref(id)).await;
            }
            Scan::Remote {
                client,
                host,
                auth,
                scroll_id: Some(id),
            } => {
                let url = format!("{host}/_search/scroll");
                let body = json!({"scroll_id": [id.clone()]});
                let _ = remote_call(client, auth, reqwest::Method::DELETE, &url, &body).await;
            }
            _ => {}
        }
    }
}

async fn remote_call(
    client: &reqwest::Client,
    auth: &Option<(String, Option<String>)>,
    method: reqwest::Method,
    url: &str,
    body: &Value,
) -> Result<Value, JobError> {
    let mut req = client.request(method, url).json(body);
    if let Some((user, password)) = auth {
        req = req.basic_auth(user, password.as_ref());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| JobError::Remote(format!("{url}: {e}")))?;
    let status = resp.status();
    let value: Value = resp
        .json()
        .await
        .map_err(|e| JobError::Remote(format!("{url}: {e}")))?;
    if !status.is_success() {
        return Err(JobError::Remote(format!(
            "{url} answered {status}: {value}"
        )));
    }
    Ok(value)
}

/// Hits, total and next scroll id of a search response (ours or a remote cluster's;
/// `hits.total` as an object or, from older clusters, a number).
fn parse_page(r: &Value) -> Result<(Vec<Hit>, u64, Option<String>), JobError> {
    let total = match &r["hits"]["total"] {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        t => t["value"].as_u64().unwrap_or(0),
    };
    let hits = r["hits"]["hits"]
        .as_array()
        .ok_or_else(|| JobError::Remote(format!("not a search response: {r}")))?
        .iter()
        .map(|h| Hit {
            index: h["_index"].as_str().unwrap_or_default().to_string(),
            id: h["_id"].as_str().unwrap_or_default().to_string(),
            seq: h["_seq_no"].as_u64().zip(h["_primary_term"].as_u64()),
            source: h["_source"].as_object().cloned().unwrap_or_default(),
            routing: h["_routing"].as_str().map(str::to_string),
        })
        .collect();
    Ok((hits, total, r["_scroll_id"].as_str().map(str::to_string)))
}
