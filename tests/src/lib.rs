//! End-to-end test harness for Floe.
//!
//! The tests in `tests/` start real processes: the `floe standalone` binary and, for the S3
//! backend, moto's S3 server (`moto_server`, from PyPI `moto[server]`). Everything binds to
//! 127.0.0.1 on free ports, every wait is bounded, and every process is killed when its handle
//! is dropped (also when a test panics, in which case Floe's log is printed).
//!
//! A typical test:
//!
//! ```ignore
//! use floe_tests::*;
//!
//! async fn root_info(backend: Backend) {
//!     let env = TestEnv::start(backend).await;
//!     let r = env.client().get("/").await;
//!     assert_eq!(r.status, 200, "{r}");
//! }
//!
//! e2e!(root_info); // generates `root_info::local` and `root_info::s3`
//! ```
//!
//! Environment: `FLOE_BIN` overrides the binary (default `<target>/debug/floe`), `MOTO_SERVER`
//! overrides the moto command (default `moto_server` on `PATH`), `RUST_LOG` is passed to Floe
//! (default `info`), `FLOE_KEEP_LOGS=DIR` keeps a copy of every Floe log in `DIR`.

pub mod proxy;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use reqwest::Method;
pub use serde_json::{json, Value};
use tempfile::TempDir;

/// How long to wait for a process to start answering.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of every single HTTP request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Generates two `#[tokio::test]`s per scenario, one per storage backend:
/// `e2e!(foo, bar)` turns `async fn foo(backend: Backend)` into tests `foo::local` and `foo::s3`.
/// Filter with e.g. `cargo nextest run -p floe-tests -E 'test(/::s3$/)'`.
#[macro_export]
macro_rules! e2e {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn local() {
                super::$name($crate::Backend::Local).await
            }
            #[tokio::test]
            async fn s3() {
                super::$name($crate::Backend::S3).await
            }
        }
    )+};
}

/// Which object storage a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `--data-dir` on a temporary directory.
    Local,
    /// moto's S3 server on 127.0.0.1, with a key prefix.
    S3,
}

/// Picks a free TCP port on 127.0.0.1 (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The last `max_lines` lines of a text file (for failure reports).
fn tail(path: &Path, max_lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..].join("\n")
}

// ------------------------------------------------------------------------------------------
// HTTP client
// ------------------------------------------------------------------------------------------

/// An HTTP response: status, raw text, and the body parsed as JSON (`Value::Null` if it is not
/// JSON). `Display` prints all of it, for assertion messages.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub text: String,
    pub json: Value,
    pub content_type: Option<String>,
    /// All response headers (e.g. `Retry-After`).
    pub headers: reqwest::header::HeaderMap,
}

impl fmt::Display for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 3000;
        let mut body = self.text.as_str();
        let mut cut = "";
        if body.len() > MAX {
            let mut end = MAX;
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body = &body[..end];
            cut = " ...(truncated)";
        }
        write!(f, "HTTP {}: {body}{cut}", self.status)
    }
}

/// A small HTTP client bound to one base URL. Every request has a timeout; transport errors
/// panic with the method and path (tests want a loud failure, not a `Result`).
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// The `Authorization` header sent with every request (`None`: anonymous).
    auth: Option<String>,
}

/// The password of `admin` in every Floe the harness starts (`FLOE_INITIAL_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD: &str = "floe-test-admin-1";

/// `Basic …` for a user and password.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:9200`) logged in as `admin`; ignores
    /// proxy settings.
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_timeout(base, REQUEST_TIMEOUT)
    }

    /// A client of an HTTPS server whose certificate `ca_pem` (PEM) signed.
    pub fn trusting(base: impl Into<String>, ca_pem: &[u8]) -> Self {
        let ca = reqwest::Certificate::from_pem(ca_pem).expect("a PEM certificate");
        Self::built(base, REQUEST_TIMEOUT, Some(ca))
    }

    /// A client sending no credentials (moto, or testing refusals).
    pub fn anonymous(base: impl Into<String>) -> Self {
        Self::new(base).with_auth(None)
    }

    /// The same client sending `authorization` instead (`None`: nothing).
    pub fn with_auth(mut self, authorization: Option<String>) -> Self {
        self.auth = authorization;
        self
    }

    /// The same client logged in as `user`.
    pub fn as_user(&self, user: &str, password: &str) -> Self {
        self.clone().with_auth(Some(basic_auth(user, password)))
    }

    /// Like [`Client::new`] with another per-request timeout (fault tests want requests to a
    /// killed process to give up sooner).
    pub fn with_timeout(base: impl Into<String>, timeout: Duration) -> Self {
        Self::built(base, timeout, None)
    }

    fn built(base: impl Into<String>, timeout: Duration, ca: Option<reqwest::Certificate>) -> Self {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .no_proxy();
        if let Some(ca) = ca {
            builder = builder.add_root_certificate(ca);
        }
        Client {
            base: base.into(),
            http: builder.build().expect("build reqwest client"),
            auth: Some(basic_auth("admin", ADMIN_PASSWORD)),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends a request; `body` is `(content type, bytes)`. Returns `Err` only for transport
    /// errors (connection refused, timeout).
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Resp, reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(auth) = &self.auth {
            req = req.header("authorization", auth);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            text,
            json,
            content_type,
            headers,
        })
    }

    /// Like [`Client::try_send`], panicking on transport errors.
    pub async fn send(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Resp {
        let m = method.clone();
        match self.try_send(method, path, body).await {
            Ok(r) => r,
            Err(e) => panic!("{m} {}{path} failed: {e:?}", self.base),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    /// GET with a JSON body (as curl users send `_search`).
    pub async fn get_json(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::GET, path, Some(json_body(body))).await
    }

    /// HEAD; the response has an empty body.
    pub async fn head(&self, path: &str) -> Resp {
        self.send(Method::HEAD, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::PUT, path, Some(json_body(body))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::POST, path, Some(json_body(body))).await
    }

    /// POST without a body (e.g. `_refresh`).
    pub async fn post_empty(&self, path: &str) -> Resp {
        self.send(Method::POST, path, None).await
    }

    /// POST an NDJSON body with `Content-Type: application/x-ndjson`.
    pub async fn post_ndjson(&self, path: &str, body: impl Into<String>) -> Resp {
        let bytes = body.into().into_bytes();
        self.send(Method::POST, path, Some(("application/x-ndjson", bytes)))
            .await
    }

    // --- conveniences that assert success --------------------------------------------------

    /// `POST {path}` with an NDJSON bulk body; asserts HTTP 200 and `errors: false`.
    pub async fn bulk_ok(&self, path: &str, body: impl Into<String>) -> Resp {
        let r = self.post_ndjson(path, body).await;
        assert_eq!(r.status, 200, "bulk: {r}");
        assert_eq!(
            r.json["errors"],
            json!(false),
            "bulk reported item errors: {r}"
        );
        r
    }

    /// [`Client::bulk_ok`], resent while items are refused with 503 — a node restarted
    /// after SIGKILL takes writes only once its previous incarnation's session has expired
    /// (lease TTL + clock-skew margin). Use only with explicit ids (resending is then
    /// idempotent).
    pub async fn bulk_ok_retrying(
        &self,
        path: &str,
        body: impl Into<String>,
        timeout: Duration,
    ) -> Resp {
        let body = body.into();
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.post_ndjson(path, body.clone()).await;
            let only_503 = r.json["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_object()?.values().next()?.get("status"))
                    .any(|s| s == 503)
            });
            if r.status == 200 && only_503 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert_eq!(r.status, 200, "bulk: {r}");
            assert_eq!(
                r.json["errors"],
                json!(false),
                "bulk reported item errors: {r}"
            );
            return r;
        }
    }

    /// `POST /{index}/_refresh`; asserts 200.
    pub async fn refresh(&self, index: &str) {
        let r = self.post_empty(&format!("/{index}/_refresh")).await;
        assert_eq!(r.status, 200, "refresh {index}: {r}");
    }

    /// Polls `POST /{index}/_refresh` until it answers 200 (Floe may still be recovering, or
    /// its bucket may just have come back); panics after `timeout`.
    pub async fn refresh_within(&self, index: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self
                .try_send(Method::POST, &format!("/{index}/_refresh"), None)
                .await
            {
                Ok(r) if r.status == 200 => return,
                Ok(r) => last = r.to_string(),
                Err(e) => last = error_chain(&e),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("refresh of {index} did not succeed within {timeout:?}; last: {last}");
    }

    /// `POST /{target}/_search` (target may be empty for `/_search`); asserts 200.
    pub async fn search(&self, target: &str, body: &Value) -> Resp {
        let path = if target.is_empty() {
            "/_search".to_string()
        } else {
            format!("/{target}/_search")
        };
        let r = self.post(&path, body).await;
        assert_eq!(r.status, 200, "search {path} {body}: {r}");
        r
    }

    /// `GET /{index}/_count`; asserts 200 and returns `count`.
    pub async fn count(&self, index: &str) -> u64 {
        let r = self.get(&format!("/{index}/_count")).await;
        assert_eq!(r.status, 200, "count {index}: {r}");
        r.json["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("no count in {r}"))
    }

    /// Polls `GET /{index}/_count` until it equals `expected` (or the timeout passes); returns
    /// the last count seen, or `None` if every attempt failed.
    pub async fn wait_for_count(
        &self,
        index: &str,
        expected: u64,
        timeout: Duration,
    ) -> Option<u64> {
        let path = format!("/{index}/_count");
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(r) = self.try_send(Method::GET, &path, None).await {
                if let Some(n) = r.json["count"].as_u64() {
                    last = Some(n);
                    if n == expected {
                        return last;
                    }
                }
            }
            if Instant::now() >= deadline {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A JSON request body for [`Client::send`].
pub fn json_body(v: &Value) -> (&'static str, Vec<u8>) {
    (
        "application/json",
        serde_json::to_vec(v).expect("serialize JSON"),
    )
}

// --- response helpers -------------------------------------------------------------------------

/// An error and its sources, `: `-separated (reqwest's own text hides the cause, e.g. a
/// broken pipe).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `hits.total.value` of a search response.
pub fn total_hits(r: &Resp) -> u64 {
    r.json["hits"]["total"]["value"]
        .as_u64()
        .unwrap_or_else(|| panic!("no hits.total.value: {r}"))
}

/// The hits array of a search response.
pub fn hits(r: &Resp) -> &Vec<Value> {
    r.json["hits"]["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits.hits: {r}"))
}

/// (`key_field` as text, `doc_count`) of each bucket of the top-level aggregation `agg`
/// (`key_field`: `key` or `key_as_string`).
pub fn buckets(r: &Resp, agg: &str, key_field: &str) -> Vec<(String, u64)> {
    r.json["aggregations"][agg]["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("no buckets in aggregation {agg}: {r}"))
        .iter()
        .map(|b| {
            let key = &b[key_field];
            (
                key.as_str().map_or_else(|| key.to_string(), str::to_string),
                b["doc_count"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no doc_count: {r}")),
            )
        })
        .collect()
}

/// The `_id`s of the hits, in order.
pub fn hit_ids(r: &Resp) -> Vec<String> {
    hits(r)
        .iter()
        .map(|h| {
            h["_id"]
                .as_str()
                .unwrap_or_else(|| panic!("hit without _id: {h}"))
                .to_string()
        })
        .collect()
}

/// Asserts an OpenSearch-shaped error: HTTP `status`, body
/// `{"error":{"root_cause":[{"type":..}],"type":ty,"reason":".."},"status":status}`.
pub fn assert_error(r: &Resp, status: u16, ty: &str) {
    assert_eq!(r.status, status, "expected HTTP {status} {ty}: {r}");
    assert_eq!(r.json["status"], json!(status), "error body `status`: {r}");
    assert_eq!(r.json["error"]["type"], json!(ty), "error.type: {r}");
    assert!(
        r.json["error"]["reason"].is_string(),
        "error.reason must be a string: {r}"
    );
    let root = &r.json["error"]["root_cause"];
    assert!(
        root.as_array()
            .is_some_and(|a| !a.is_empty() && a[0]["type"].is_string()),
        "error.root_cause must be a non-empty array of {{type, reason}}: {r}"
    );
}

// ------------------------------------------------------------------------------------------
// Test data
// ------------------------------------------------------------------------------------------

/// Status codes of the log documents: doc `i` has `STATUSES[i % 10]`
/// (60% 200, 10% 301, 20% 404, 10% 500).
pub const STATUSES: [i64; 10] = [200, 200, 200, 200, 200, 200, 301, 404, 404, 500];

/// Seconds after 2024-05-01T00:00:00Z of doc `i`'s `@timestamp`: a permutation of doc order
/// (distinct for i < 10007), spread over ~2.8 h, so timestamp order differs from id order.
pub fn log_seconds(i: usize) -> u64 {
    (i as u64 * 7919) % 10007
}

/// RFC 3339 time `secs` after 2024-05-01T00:00:00Z (must stay within that day).
pub fn ts(secs: u64) -> String {
    assert!(secs < 86_400);
    format!(
        "2024-05-01T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `_id` of log doc `i`.
pub fn log_id(i: usize) -> String {
    format!("log-{i:04}")
}

/// Log document `i`: `@timestamp`, `status` (integer), `message` (text), `size` (integer),
/// `bytes` (float), `ok` (bool). Messages: 200 → "... completed ok", 301 → "... moved
/// permanently", 404 → "... not found error", 500 → "... internal server error timeout".
pub fn log_doc(i: usize) -> Value {
    let status = STATUSES[i % 10];
    let method = ["GET", "POST", "PUT", "DELETE"][i % 4];
    let resource = ["users", "orders", "items"][i % 3];
    let tail = match status {
        200 => "completed ok",
        301 => "moved permanently",
        404 => "not found error",
        _ => "internal server error timeout",
    };
    json!({
        "@timestamp": ts(log_seconds(i)),
        "status": status,
        "message": format!("{method} /api/{resource} {tail}"),
        "size": i as i64 * 10,
        "bytes": i as f64 + 0.5,
        "ok": status < 400,
    })
}

/// NDJSON `_bulk` body indexing log docs `range` into `index`, with ids from [`log_id`].
pub fn logs_bulk(index: &str, range: std::ops::Range<usize>) -> String {
    bulk_body(index, range.map(|i| (log_id(i), log_doc(i))))
}

/// NDJSON `_bulk` body of `index` actions (each line followed by `\n`).
pub fn bulk_body(index: &str, docs: impl IntoIterator<Item = (String, Value)>) -> String {
    let mut out = String::new();
    for (id, doc) in docs {
        out.push_str(&json!({"index": {"_index": index, "_id": id}}).to_string());
        out.push('\n');
        out.push_str(&doc.to_string());
        out.push('\n');
    }
    out
}

// ------------------------------------------------------------------------------------------
// moto S3 server
// ------------------------------------------------------------------------------------------

/// moto's S3 server on 127.0.0.1 with one bucket. Data lives in its memory; killed on drop.
pub struct MotoServer {
    child: Child,
    pub port: u16,
    pub bucket: String,
    _dir: TempDir,
    log_path: PathBuf,
}

impl MotoServer {
    /// Starts `moto_server` on a free port, waits (≤ 60 s) until it answers, creates `bucket`.
    /// Panics (never skips) if `moto_server` is not installed.
    pub async fn start(bucket: &str) -> Self {
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("moto.log");
        let log = File::create(&log_path).expect("create moto log");
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{bin}` ({e}): install it with `pip install 'moto[server]'`")
            });
        let mut moto = MotoServer {
            child,
            port,
            bucket: bucket.to_string(),
            _dir: dir,
            log_path,
        };

        let client = Client::anonymous(moto.endpoint());
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto_server exited with {status}:\n{}",
                    tail(&moto.log_path, 50)
                );
            }
            if client.try_send(Method::GET, "/", None).await.is_ok() {
                break;
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                panic!(
                    "moto_server did not answer within {STARTUP_TIMEOUT:?}:\n{}",
                    tail(&moto.log_path, 50)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let r = client.send(Method::PUT, &format!("/{bucket}"), None).await;
        assert_eq!(r.status, 200, "create bucket {bucket}: {r}");
        moto
    }

    /// `http://127.0.0.1:PORT`
    /// Floe's storage flags for this server's bucket, under [`S3_PREFIX`].
    pub fn storage(&self) -> Storage {
        Storage::S3 {
            endpoint: self.endpoint(),
            bucket: self.bucket.clone(),
            region: "us-east-1".into(),
            prefix: Some(S3_PREFIX.into()),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// All keys in the bucket that start with `prefix` (ListObjectsV2, unsigned, all pages).
    pub async fn list_keys(&self, prefix: &str) -> Vec<String> {
        let client = Client::anonymous(self.endpoint());
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        for _page in 0..1000 {
            let mut path = format!("/{}?list-type=2&prefix={}", self.bucket, url_encode(prefix));
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", url_encode(t)));
            }
            let r = client.get(&path).await;
            assert_eq!(r.status, 200, "list {prefix}: {r}");
            keys.extend(xml_values(&r.text, "Key"));
            token = xml_values(&r.text, "NextContinuationToken")
                .into_iter()
                .next();
            if !r.text.contains("<IsTruncated>true</IsTruncated>") || token.is_none() {
                return keys;
            }
        }
        panic!("listing {prefix} did not end after 1000 pages");
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The texts of all `<tag>...</tag>` elements (XML entities for `&`, `<`, `>` decoded).
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(
            rest[..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        );
        rest = &rest[end + close.len()..];
    }
    out
}

// ------------------------------------------------------------------------------------------
// Floe process
// ------------------------------------------------------------------------------------------

/// Where a Floe process keeps its durable state.
#[derive(Clone, Debug)]
pub enum Storage {
    /// `--data-dir DIR`
    Local { data_dir: PathBuf },
    /// `--s3-endpoint ... --s3-bucket ...`
    S3 {
        endpoint: String,
        bucket: String,
        region: String,
        /// `--s3-prefix`, without leading or trailing `/`.
        prefix: Option<String>,
        access_key_id: String,
        secret_access_key: String,
    },
}

/// Path of the `floe` binary: `$FLOE_BIN`, else `<target>/debug/floe` next to this test
/// binary's `deps/` folder, else `<workspace>/target/debug/floe`.
pub fn floe_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FLOE_BIN") {
        return PathBuf::from(p);
    }
    let exe_candidate = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|d| d.join("floe")));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/floe");
    let bin = exe_candidate.filter(|p| p.is_file()).unwrap_or(workspace);
    assert!(
        bin.is_file(),
        "{} not found: build it first: cargo build --bin floe",
        bin.display()
    );
    bin
}

/// One `floe standalone` process: free port on 127.0.0.1, its own temporary cache dir, optional
/// config file, log (stdout+stderr, appended across restarts) in its temp dir. Killed on drop
/// (also while paused); if the test is panicking, the log's tail is printed.
pub struct Floe {
    storage: Storage,
    /// `standalone`, `metastore`, `writer` or `searcher`.
    role: String,
    grpc_port: u16,
    port: u16,
    dir: TempDir,
    config: Option<PathBuf>,
    extra_args: Vec<String>,
    /// `FLOE_INITIAL_ADMIN_PASSWORD` for every start (`None`: not set).
    initial_password: Option<String>,
    /// With `[tls]` on: the CA certificate (PEM) clients of this process trust.
    tls_ca: Option<Vec<u8>>,
    child: Option<Child>,
    starts: u32,
}

impl Floe {
    /// Starts Floe on `storage`; `config_toml`, if any, is written to a file passed with
    /// `--config`. Waits until `GET /` answers 200.
    pub async fn start(storage: Storage, config_toml: Option<&str>) -> Self {
        Self::start_with_args(storage, config_toml, &[]).await
    }

    /// Like [`Floe::start`], with more command-line flags after the harness's own (e.g.
    /// `&["--node-id", "a"]`); they are passed again on every restart. Two processes started
    /// on one `Storage` share the bucket; each has its own port and cache dir.
    pub async fn start_with_args(
        storage: Storage,
        config_toml: Option<&str>,
        extra_args: &[&str],
    ) -> Self {
        Self::start_role("standalone", storage, config_toml, extra_args).await
    }

    /// A cluster role (`metastore`, `writer`, `searcher`) or `standalone`, with its own HTTP
    /// and gRPC ports (kept across restarts). A metastore has no HTTP: it is ready when its
    /// gRPC port accepts connections.
    pub async fn start_role(
        role: &str,
        storage: Storage,
        config_toml: Option<&str>,
        extra_args: &[&str],
    ) -> Self {
        Self::start_full(role, storage, config_toml, extra_args, Some(ADMIN_PASSWORD)).await
    }

    /// [`Floe::start_role`] with `FLOE_INITIAL_ADMIN_PASSWORD` set to `initial_password`
    /// (`None`: unset) on every start.
    pub async fn start_full(
        role: &str,
        storage: Storage,
        config_toml: Option<&str>,
        extra_args: &[&str],
        initial_password: Option<&str>,
    ) -> Self {
        Self::launch(
            role,
            storage,
            config_toml,
            extra_args,
            initial_password,
            None,
        )
        .await
    }

    /// [`Floe::start_role`] with TLS on (`config_toml` has a `[tls]` section): its clients
    /// use `https://` and trust `ca_pem`.
    pub async fn start_tls(
        role: &str,
        storage: Storage,
        config_toml: &str,
        extra_args: &[&str],
        ca_pem: &[u8],
    ) -> Self {
        let password = Some(ADMIN_PASSWORD);
        Self::launch(
            role,
            storage,
            Some(config_toml),
            extra_args,
            password,
            Some(ca_pem),
        )
        .await
    }

    async fn launch(
        role: &str,
        storage: Storage,
        config_toml: Option<&str>,
        extra_args: &[&str],
        initial_password: Option<&str>,
        tls_ca: Option<&[u8]>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("cache")).unwrap();
        let config = config_toml.map(|toml| {
            let p = dir.path().join("floe.toml");
            fs::write(&p, toml).unwrap();
            p
        });
        let mut floe = Floe {
            storage,
            role: role.to_string(),
            grpc_port: free_port(),
            port: free_port(),
            dir,
            config,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            initial_password: initial_password.map(str::to_string),
            tls_ca: tls_ca.map(<[u8]>::to_vec),
            child: None,
            starts: 0,
        };
        floe.spawn_and_wait().await;
        floe
    }

    fn scheme(&self) -> &'static str {
        if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The gRPC address clients of this node use, e.g. `http://127.0.0.1:PORT`.
    pub fn grpc_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.grpc_port)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port)
    }

    /// A client for this process (the port stays the same across restarts).
    pub fn client(&self) -> Client {
        match &self.tls_ca {
            Some(ca) => Client::trusting(self.url(), ca),
            None => Client::new(self.url()),
        }
    }

    /// The local cache directory (`--cache-dir`).
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// The log file (stdout and stderr of every start).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("floe.log")
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The OS process id of the running process, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` if the process has exited on its own (crashed) since it was started.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// How many times the process was started (1 after [`Floe::start`]).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// SIGKILL (no graceful shutdown) and wait for the process to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (a clean shutdown) and wait up to 30 s for the process to exit; then
    /// SIGKILL if it has not. Returns how long the clean shutdown took.
    pub fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        let Some(mut child) = self.child.take() else {
            return Duration::ZERO;
        };
        send_signal(child.id(), "TERM");
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = child.try_wait() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("floe did not exit within 30 s of SIGTERM");
    }

    /// SIGSTOP: the process freezes (its sockets stay open, requests hang) until
    /// [`Floe::resume`]. Stands for a stalled machine or a long GC pause.
    pub fn pause(&self) {
        send_signal(self.pid().expect("pause: floe is not running"), "STOP");
    }

    /// SIGCONT after [`Floe::pause`].
    pub fn resume(&self) {
        send_signal(self.pid().expect("resume: floe is not running"), "CONT");
    }

    /// Deletes everything in the cache dir; only while stopped.
    pub fn wipe_cache(&mut self) {
        assert!(!self.is_running(), "wipe_cache while Floe is running");
        let cache = self.cache_dir();
        fs::remove_dir_all(&cache).expect("remove cache dir");
        fs::create_dir_all(&cache).unwrap();
    }

    /// Starts again (same port, storage, cache dir and config) after [`Floe::stop`].
    pub async fn start_again(&mut self) {
        assert!(!self.is_running(), "start_again while Floe is running");
        self.spawn_and_wait().await;
    }

    /// [`Floe::stop`] then [`Floe::start_again`].
    pub async fn restart(&mut self) {
        self.stop();
        self.start_again().await;
    }

    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            self.role.clone(),
            "--http-addr".into(),
            format!("127.0.0.1:{}", self.port),
            "--cache-dir".into(),
            self.cache_dir().display().to_string(),
        ];
        match &self.storage {
            Storage::Local { data_dir } => {
                a.extend(["--data-dir".into(), data_dir.display().to_string()]);
            }
            Storage::S3 {
                endpoint,
                bucket,
                region,
                prefix,
                access_key_id,
                secret_access_key,
            } => {
                a.extend([
                    "--s3-endpoint".into(),
                    endpoint.clone(),
                    "--s3-bucket".into(),
                    bucket.clone(),
                    "--s3-region".into(),
                    region.clone(),
                    "--s3-access-key-id".into(),
                    access_key_id.clone(),
                    "--s3-secret-access-key".into(),
                    secret_access_key.clone(),
                ]);
                if let Some(p) = prefix {
                    a.extend(["--s3-prefix".into(), p.clone()]);
                }
            }
        }
        if let Some(c) = &self.config {
            a.extend(["--config".into(), c.display().to_string()]);
        }
        if self.role != "standalone" {
            a.extend([
                "--grpc-addr".into(),
                format!("127.0.0.1:{}", self.grpc_port),
            ]);
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    async fn spawn_and_wait(&mut self) {
        let bin = floe_bin();
        let args = self.args();
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        writeln!(
            log,
            "===== start #{}: {} {}",
            self.starts,
            bin.display(),
            args.join(" ")
        )
        .unwrap();
        let mut command = Command::new(&bin);
        match &self.initial_password {
            Some(p) => command.env("FLOE_INITIAL_ADMIN_PASSWORD", p),
            None => command.env_remove("FLOE_INITIAL_ADMIN_PASSWORD"),
        };
        let child = command
            .args(&args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.child = Some(child);

        let client = self.client();
        let started = Instant::now();
        let mut last;
        loop {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                panic!(
                    "floe exited during startup with {status}; log:\n{}",
                    self.log_tail(80)
                );
            }
            if self.role == "metastore" {
                match tokio::net::TcpStream::connect(("127.0.0.1", self.grpc_port)).await {
                    Ok(_) => return,
                    Err(e) => last = e.to_string(),
                }
            } else {
                // The security health check needs no credentials (a Floe may have been
                // bootstrapped with another password than the harness's).
                match client
                    .try_send(Method::GET, "/_plugins/_security/health", None)
                    .await
                {
                    Ok(r) if r.status == 200 => return,
                    Ok(r) => last = r.to_string(),
                    Err(e) => last = e.to_string(),
                }
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                panic!(
                    "floe did not answer GET / with 200 within {STARTUP_TIMEOUT:?} (last: {last}); log:\n{}",
                    self.log_tail(80)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Floe {
    fn drop(&mut self) {
        self.stop();
        if let Ok(dir) = std::env::var("FLOE_KEEP_LOGS") {
            let dest = Path::new(&dir).join(format!("floe-{}.log", self.port));
            let _ = fs::create_dir_all(&dir);
            if fs::copy(self.log_path(), &dest).is_ok() {
                eprintln!("floe log kept at {}", dest.display());
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- floe log ({}), last 200 lines -----\n{}\n----- end of floe log -----",
                self.log_path().display(),
                self.log_tail(200)
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// Test environment: storage + Floe
// ------------------------------------------------------------------------------------------

/// Key prefix Floe is given on the S3 backend (exercises `--s3-prefix`).
pub const S3_PREFIX: &str = "floe-it";
/// Bucket created in moto for each test.
pub const S3_BUCKET: &str = "floe-test";

/// One test's world: its storage (a temp data dir, or a moto server) and one Floe on it.
/// Dropped in field order: Floe first, then the storage.
pub struct TestEnv {
    pub floe: Floe,
    pub backend: Backend,
    pub moto: Option<MotoServer>,
    pub data_dir: Option<TempDir>,
}

/// The cluster secret nodes present to each other over gRPC, read from a local bucket (as
/// any process with access to the bucket can).
pub fn local_cluster_secret(storage: &Storage) -> String {
    let Storage::Local { data_dir } = storage else {
        panic!("local_cluster_secret needs a local bucket");
    };
    fs::read_to_string(data_dir.join("metastore/cluster_secret"))
        .expect("the cluster secret is in the bucket once a node has started")
        .trim()
        .to_string()
}

/// A fresh local-directory storage (`--data-dir`) in a temporary directory, which is removed
/// when the returned `TempDir` is dropped (drop it after every Floe on it). Several Floes may
/// be started on one `Storage`.
pub fn temp_local_storage() -> (TempDir, Storage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    fs::create_dir_all(&data_dir).unwrap();
    (dir, Storage::Local { data_dir })
}

impl TestEnv {
    /// Fresh storage of kind `backend` and a Floe started on it.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with_config(backend, None).await
    }

    /// Like [`TestEnv::start`], with a TOML config file passed via `--config`.
    pub async fn start_with_config(backend: Backend, config_toml: Option<&str>) -> Self {
        let (storage, moto, data_dir) = match backend {
            Backend::Local => {
                let (dir, storage) = temp_local_storage();
                (storage, None, Some(dir))
            }
            Backend::S3 => {
                let moto = MotoServer::start(S3_BUCKET).await;
                (moto.storage(), Some(moto), None)
            }
        };
        let floe = Floe::start(storage, config_toml).await;
        TestEnv {
            floe,
            backend,
            moto,
            data_dir,
        }
    }

    pub fn client(&self) -> Client {
        self.floe.client()
    }

    /// Keys of the objects Floe stored under `sub` (e.g. `indexes/<uuid>/`), relative to the
    /// storage root (without the S3 prefix), sorted. Local backend: regular files under
    /// `data-dir/sub`.
    pub async fn storage_keys(&self, sub: &str) -> Vec<String> {
        let mut keys: Vec<String> = match self.floe.storage() {
            Storage::Local { data_dir } => {
                let mut out = Vec::new();
                walk_files(data_dir, data_dir, &mut out);
                out.into_iter().filter(|k| k.starts_with(sub)).collect()
            }
            Storage::S3 { prefix, .. } => {
                let moto = self.moto.as_ref().expect("S3 storage without moto");
                let root = prefix.as_ref().map(|p| format!("{p}/")).unwrap_or_default();
                moto.list_keys(&format!("{root}{sub}"))
                    .await
                    .into_iter()
                    .map(|k| k[root.len()..].to_string())
                    .collect()
            }
        };
        keys.sort();
        keys
    }
}

/// Collects the regular files under `dir` as `/`-separated paths relative to `root`.
fn walk_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            walk_files(root, &path, out);
        } else if ft.is_file() {
            let rel = path.strip_prefix(root).unwrap();
            out.push(
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// Fault injection: seeded randomness, process memory, a switchable TCP proxy, and `_bulk`
// with per-item acknowledgement tracking
// ------------------------------------------------------------------------------------------

/// `$name` parsed as a number, else `default` (lets a long local run override test sizes).
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A small deterministic random generator (SplitMix64): same seed, same sequence.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        self.next_u64() % n
    }

    /// Uniform in `lo..hi` (`lo < hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The number at the start of a `/proc/<pid>/status` value (e.g. `Threads`), as written.
pub fn proc_status_value(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A `kB` value of `/proc/<pid>/status` (e.g. `VmRSS`, `VmHWM`), in bytes.
pub fn proc_status_bytes(pid: u32, key: &str) -> Option<u64> {
    proc_status_value(pid, key).map(|kb| kb * 1024)
}

/// Number of threads of a live process (`Threads` in `/proc/<pid>/status`).
pub fn proc_threads(pid: u32) -> Option<u64> {
    proc_status_value(pid, "Threads")
}

/// Sends signal `name` (`STOP`, `CONT`, `KILL`, ...) to `pid` with `kill -s`; panics if that
/// fails.
pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("run kill -s {name} {pid}: {e}"));
    assert!(status.success(), "kill -s {name} {pid}: {status}");
}

/// Calls `check` every `every` until it returns true or `timeout` has passed. Returns the time
/// from the call to the first `true` (`None` on timeout); `check` runs at least once.
pub async fn poll_until<F, Fut>(
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Peak resident set size (`VmHWM`) of a live process, in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    proc_status_bytes(pid, "VmHWM")
}

/// A TCP proxy on 127.0.0.1 in front of one target (e.g. moto), that a test switches "down"
/// (every accepted connection is closed at once, and every open one is dropped) and "up"
/// again. Stands for an unreachable bucket. Runs on the test's tokio runtime; stops on drop.
pub struct FaultProxy {
    pub port: u16,
    up: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    /// Connections forwarded / refused while down, since start.
    pub forwarded: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FaultProxy {
    /// Starts forwarding (up) to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let (up, up_rx) = tokio::sync::watch::channel(true);
        let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (fwd, rej) = (forwarded.clone(), refused.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if !*up_rx.borrow() {
                    rej.fetch_add(1, Ordering::Relaxed);
                    drop(inbound);
                    continue;
                }
                fwd.fetch_add(1, Ordering::Relaxed);
                let mut down = up_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                    // Both sockets are dropped here: the client sees its connection close.
                });
            }
        });
        FaultProxy {
            port,
            up,
            accept,
            forwarded,
            refused,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Up: forward new connections. Down: refuse new ones, drop open ones.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.set_up(false);
        self.accept.abort();
    }
}

impl TestEnv {
    /// A moto server, a [`FaultProxy`] in front of it, and Floe on S3 through the proxy,
    /// with `config_toml` (e.g. a `[storage]` section with short retries).
    pub async fn start_s3_behind_proxy(config_toml: Option<&str>) -> (TestEnv, FaultProxy) {
        let moto = MotoServer::start(S3_BUCKET).await;
        let proxy = FaultProxy::start(moto.port).await;
        let storage = Storage::S3 {
            endpoint: proxy.endpoint(),
            bucket: moto.bucket.clone(),
            region: "us-east-1".into(),
            prefix: Some(S3_PREFIX.into()),
            access_key_id: "test".into(),
            secret_access_key: "test".into(),
        };
        let floe = Floe::start(storage, config_toml).await;
        let env = TestEnv {
            floe,
            backend: Backend::S3,
            moto: Some(moto),
            data_dir: None,
        };
        (env, proxy)
    }
}

/// One operation of a `_bulk` whose acknowledgement a test tracks.
#[derive(Clone, Debug)]
pub enum TrackedOp {
    /// `index` with an explicit `_id` (`Some`) or a generated one (`None`).
    Index {
        id: Option<String>,
        doc: Value,
    },
    Delete {
        id: String,
    },
}

/// What Floe answered for one operation.
#[derive(Clone, Debug, Default)]
pub struct ItemAck {
    /// HTTP 200 and item status 200/201: Floe promised the operation is durable.
    pub acked: bool,
    /// The item's status; `None` when the request failed as a whole.
    pub status: Option<u16>,
    /// `_id` as answered (the generated one for `Index { id: None }`).
    pub id: Option<String>,
    /// `error.type` of the item, or of the whole response when it was not 200.
    pub error_type: Option<String>,
    /// `_seq_no` and `_primary_term` of an acknowledged item (for failure reports).
    pub seq_no: Option<u64>,
    pub primary_term: Option<u64>,
}

/// A `_bulk` request and its per-item outcome.
#[derive(Debug)]
pub struct TrackedBulk {
    /// `Err`: transport failure (refused, reset, timeout) as text; nothing acknowledged.
    pub response: Result<Resp, String>,
    /// One per operation, in order.
    pub items: Vec<ItemAck>,
    pub elapsed: Duration,
    /// HTTP 200 whose `items` do not line up with the request (a protocol bug).
    pub malformed: Option<String>,
}

impl TrackedBulk {
    pub fn http_status(&self) -> Option<u16> {
        self.response.as_ref().ok().map(|r| r.status)
    }

    pub fn acked(&self) -> usize {
        self.items.iter().filter(|i| i.acked).count()
    }
}

/// NDJSON body of `ops` on `index`.
pub fn tracked_bulk_body(index: &str, ops: &[TrackedOp]) -> String {
    let mut out = String::new();
    for op in ops {
        match op {
            TrackedOp::Index { id, doc } => {
                let action = match id {
                    Some(id) => json!({"index": {"_index": index, "_id": id}}),
                    None => json!({"index": {"_index": index}}),
                };
                out.push_str(&action.to_string());
                out.push('\n');
                out.push_str(&doc.to_string());
                out.push('\n');
            }
            TrackedOp::Delete { id } => {
                out.push_str(&json!({"delete": {"_index": index, "_id": id}}).to_string());
                out.push('\n');
            }
        }
    }
    out
}

/// Sends `ops` as one `_bulk` and says, per item, whether it was acknowledged. Never panics
/// on transport errors or error statuses: those are outcomes.
pub async fn send_tracked_bulk(client: &Client, index: &str, ops: &[TrackedOp]) -> TrackedBulk {
    let body = tracked_bulk_body(index, ops).into_bytes();
    let started = Instant::now();
    let sent = client
        .try_send(Method::POST, "/_bulk", Some(("application/x-ndjson", body)))
        .await;
    let elapsed = started.elapsed();
    let mut items = vec![ItemAck::default(); ops.len()];
    let mut malformed = None;
    let response = match sent {
        Err(e) => Err(error_chain(&e)),
        Ok(r) => {
            if r.status != 200 {
                let ty = r.json["error"]["type"].as_str().map(str::to_owned);
                for item in &mut items {
                    item.error_type = ty.clone();
                }
            } else {
                match r.json["items"].as_array() {
                    Some(answered) if answered.len() == ops.len() => {
                        for ((item, op), a) in items.iter_mut().zip(ops).zip(answered) {
                            let (kind, body) = match a.as_object().and_then(|o| o.iter().next()) {
                                Some((k, v)) => (k.as_str(), v),
                                None => ("", &Value::Null),
                            };
                            let expected = match op {
                                TrackedOp::Index { .. } => "index",
                                TrackedOp::Delete { .. } => "delete",
                            };
                            if kind != expected {
                                malformed.get_or_insert(format!(
                                    "item of kind {kind:?}, sent {expected}: {a}"
                                ));
                            }
                            item.status = body["status"].as_u64().map(|s| s as u16);
                            item.id = body["_id"].as_str().map(str::to_owned);
                            item.error_type = body["error"]["type"].as_str().map(str::to_owned);
                            item.seq_no = body["_seq_no"].as_u64();
                            item.primary_term = body["_primary_term"].as_u64();
                            item.acked = kind == expected && matches!(item.status, Some(200 | 201));
                            if let (TrackedOp::Index { id: Some(sent), .. }, Some(got)) =
                                (op, &item.id)
                            {
                                if sent != got {
                                    malformed
                                        .get_or_insert(format!("sent _id {sent}, answered {got}"));
                                    item.acked = false;
                                }
                            }
                            if item.acked && item.id.is_none() {
                                malformed
                                    .get_or_insert(format!("acknowledged item without _id: {a}"));
                                item.acked = false;
                            }
                        }
                    }
                    _ => malformed = Some(format!("{} operations sent, response: {r}", ops.len())),
                }
            }
            Ok(r)
        }
    };
    TrackedBulk {
        response,
        items,
        elapsed,
        malformed,
    }
}

/// Every hit of `index` matching `filter` (a query clause; `Value::Null` for none) with the
/// integer `field` in `lo..hi`, with `_source` limited to `source`. Pages by windows of
/// `field` (halved while a window holds more than 10000 hits), each checked to be complete
/// (`hits.len() == hits.total`, relation `eq`), so the result is exact.
pub async fn scan_range(
    client: &Client,
    index: &str,
    filter: &Value,
    field: &str,
    lo: i64,
    hi: i64,
    source: &[&str],
) -> Vec<Value> {
    const PAGE: u64 = 10_000;
    let mut out = Vec::new();
    let mut window: i64 = 5_000;
    let mut from = lo;
    while from < hi {
        let to = (from + window).min(hi);
        let mut clauses = vec![json!({"range": {field: {"gte": from, "lt": to}}})];
        if !filter.is_null() {
            clauses.push(filter.clone());
        }
        let r = client
            .search(
                index,
                &json!({
                    "query": {"bool": {"filter": clauses}},
                    "size": PAGE,
                    "track_total_hits": true,
                    "_source": source,
                }),
            )
            .await;
        let total = total_hits(&r);
        let page = hits(&r);
        let complete =
            r.json["hits"]["total"]["relation"] == json!("eq") && total == page.len() as u64;
        if complete {
            out.extend(page.iter().cloned());
            from = to;
        } else {
            assert!(
                window > 1,
                "{field} = {from} alone has {total} hits (page of {})",
                page.len()
            );
            window /= 2;
        }
    }
    out
}

#[cfg(test)]
mod harness_tests {
    use super::*;

    #[test]
    fn xml_and_encoding() {
        let xml = "<a><Key>x/1</Key><Key>a&amp;b</Key><NextContinuationToken>t+1</NextContinuationToken></a>";
        assert_eq!(xml_values(xml, "Key"), vec!["x/1", "a&b"]);
        assert_eq!(url_encode("p/indexes/ a+b"), "p/indexes/%20a%2Bb");
        assert_eq!(ts(3661), "2024-05-01T01:01:01Z");
    }

    /// moto: bucket creation, unsigned PUT, and listing across pages (> 1000 keys).
    #[tokio::test]
    async fn moto_lists_all_pages() {
        let moto = MotoServer::start("harness").await;
        let c = Client::anonymous(moto.endpoint());
        for i in 0..1005 {
            let r = c
                .send(
                    Method::PUT,
                    &format!("/harness/p/k{i:04}"),
                    Some(("application/octet-stream", b"x".to_vec())),
                )
                .await;
            assert_eq!(r.status, 200, "{r}");
        }
        c.send(
            Method::PUT,
            "/harness/q/other",
            Some(("application/octet-stream", b"x".to_vec())),
        )
        .await;
        let keys = moto.list_keys("p/").await;
        assert_eq!(keys.len(), 1005);
        assert_eq!(keys[0], "p/k0000");
        assert_eq!(moto.list_keys("q/").await, vec!["q/other"]);
        assert!(moto.list_keys("nothing/").await.is_empty());
    }
}
