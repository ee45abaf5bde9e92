//! A thin OpenSearch HTTP client for the scenarios: errors are `anyhow` errors carrying the
//! method, path and response, because a benchmark that silently measures failures is wrong.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::Value;

/// One request's timeout: generous, since a 5,000-document `_bulk` on a slow debug build can
/// take seconds, but bounded so a hung server fails the run instead of stalling it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The password of `admin` in the Floe the bench starts (`FLOE_INITIAL_ADMIN_PASSWORD`):
/// the bench measures with security on, as users run Floe.
pub const ADMIN_PASSWORD: &str = "floe-bench-admin-1";

/// Client of one Floe (or OpenSearch) endpoint, logged in as `admin`.
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    authorization: String,
}

/// A response: HTTP status and JSON body (`Null` if not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub json: Value,
    pub text: String,
}

impl Client {
    pub fn new(base: &str) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .no_proxy()
            .build()?;
        use base64::Engine;
        let authorization = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PASSWORD}"))
        );
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
            authorization,
        })
    }

    /// Sends a request; only transport errors are `Err`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> anyhow::Result<Resp> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("authorization", &self.authorization);
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {}{path}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp { status, json, text })
    }

    /// Sends a JSON body and fails unless the status is 2xx.
    pub async fn json_ok(&self, method: Method, path: &str, body: &Value) -> anyhow::Result<Value> {
        let r = self
            .send(
                method.clone(),
                path,
                Some(("application/json", serde_json::to_vec(body)?)),
            )
            .await?;
        ok(method, path, r)
    }

    /// `GET path` answered with JSON; fails unless 2xx.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let r = self.send(Method::GET, path, None).await?;
        ok(Method::GET, path, r)
    }

    /// `POST /{index}/_search`; fails unless 200.
    pub async fn search(&self, index: &str, body: &Value) -> anyhow::Result<Value> {
        self.json_ok(Method::POST, &format!("/{index}/_search"), body)
            .await
    }

    /// `POST /{index}/_refresh`; fails unless 200.
    pub async fn refresh(&self, index: &str) -> anyhow::Result<()> {
        let path = format!("/{index}/_refresh");
        let r = self.send(Method::POST, &path, None).await?;
        ok(Method::POST, &path, r).map(drop)
    }

    /// `POST /{index}/_forcemerge`; fails unless 200.
    pub async fn force_merge(&self, index: &str, max_segments: usize) -> anyhow::Result<()> {
        let path = format!("/{index}/_forcemerge?max_num_segments={max_segments}");
        let r = self.send(Method::POST, &path, None).await?;
        ok(Method::POST, &path, r).map(drop)
    }

    /// `GET /{index}/_count`.
    pub async fn count(&self, index: &str) -> anyhow::Result<u64> {
        let path = format!("/{index}/_count");
        let r = self.send(Method::GET, &path, None).await?;
        let v = ok(Method::GET, &path, r)?;
        v["count"].as_u64().context("no count in _count response")
    }

    /// `DELETE /{index}`; fails unless 200.
    pub async fn delete_index(&self, index: &str) -> anyhow::Result<()> {
        let path = format!("/{index}");
        let r = self.send(Method::DELETE, &path, None).await?;
        ok(Method::DELETE, &path, r).map(drop)
    }

    /// Deletes `index` if it exists, then creates it with `body` (settings, mappings).
    pub async fn recreate_index(&self, index: &str, body: &Value) -> anyhow::Result<()> {
        let path = format!("/{index}");
        let r = self.send(Method::DELETE, &path, None).await?;
        if r.status != 200 && r.status != 404 {
            bail!("DELETE {path}: HTTP {}: {}", r.status, r.text);
        }
        self.json_ok(Method::PUT, &path, body).await.map(drop)
    }

    /// `POST /{index}/_bulk` with an NDJSON body. Returns the response as is: the caller
    /// decides about 429s and item errors.
    pub async fn bulk(&self, index: &str, ndjson: Vec<u8>) -> anyhow::Result<Resp> {
        self.send(
            Method::POST,
            &format!("/{index}/_bulk"),
            Some(("application/x-ndjson", ndjson)),
        )
        .await
    }

    /// Bytes of `index`'s published commits (`_cat/indices` `store.size`).
    pub async fn index_bytes(&self, index: &str) -> anyhow::Result<u64> {
        let cat = self
            .get_json(&format!("/_cat/indices/{index}?format=json&bytes=b"))
            .await?;
        Ok(cat[0]["store.size"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    /// Waits until `GET /` answers 200, for at most `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        loop {
            match self.send(Method::GET, "/", None).await {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) if started.elapsed() > timeout => {
                    bail!("{} answered HTTP {}: {}", self.base, r.status, r.text)
                }
                Err(e) if started.elapsed() > timeout => return Err(e),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

fn ok(method: Method, path: &str, r: Resp) -> anyhow::Result<Value> {
    if !(200..300).contains(&r.status) {
        let mut text = r.text;
        text.truncate(2_000);
        bail!("{method} {path}: HTTP {}: {text}", r.status);
    }
    Ok(r.json)
}
