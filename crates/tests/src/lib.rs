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
//! (default `info`).

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
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:9200`); ignores proxy settings.
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .expect("build reqwest client");
        Client {
            base: base.into(),
            http,
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
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
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

    /// `POST /{index}/_refresh`; asserts 200.
    pub async fn refresh(&self, index: &str) {
        let r = self.post_empty(&format!("/{index}/_refresh")).await;
        assert_eq!(r.status, 200, "refresh {index}: {r}");
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

fn json_body(v: &Value) -> (&'static str, Vec<u8>) {
    (
        "application/json",
        serde_json::to_vec(v).expect("serialize JSON"),
    )
}

// --- response helpers -------------------------------------------------------------------------

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

        let client = Client::new(moto.endpoint());
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
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// All keys in the bucket that start with `prefix` (ListObjectsV2, unsigned, all pages).
    pub async fn list_keys(&self, prefix: &str) -> Vec<String> {
        let client = Client::new(self.endpoint());
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
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/floe");
    let bin = exe_candidate.filter(|p| p.is_file()).unwrap_or(workspace);
    assert!(
        bin.is_file(),
        "{} not found: build it first: cargo build --bin floe",
        bin.display()
    );
    bin
}

/// One `floe standalone` process: free port on 127.0.0.1, its own temporary cache dir, optional
/// config file, log (stdout+stderr, appended across restarts) in its temp dir. Killed on drop;
/// if the test is panicking, the log's tail is printed.
pub struct Floe {
    storage: Storage,
    port: u16,
    dir: TempDir,
    config: Option<PathBuf>,
    child: Option<Child>,
    starts: u32,
}

impl Floe {
    /// Starts Floe on `storage`; `config_toml`, if any, is written to a file passed with
    /// `--config`. Waits until `GET /` answers 200.
    pub async fn start(storage: Storage, config_toml: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("cache")).unwrap();
        let config = config_toml.map(|toml| {
            let p = dir.path().join("floe.toml");
            fs::write(&p, toml).unwrap();
            p
        });
        let mut floe = Floe {
            storage,
            port: free_port(),
            dir,
            config,
            child: None,
            starts: 0,
        };
        floe.spawn_and_wait().await;
        floe
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A client for this process (the port stays the same across restarts).
    pub fn client(&self) -> Client {
        Client::new(self.url())
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

    /// SIGKILL (no graceful shutdown) and wait for the process to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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
            "standalone".into(),
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
        let child = Command::new(&bin)
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
            match client.try_send(Method::GET, "/", None).await {
                Ok(r) if r.status == 200 => return,
                Ok(r) => last = r.to_string(),
                Err(e) => last = e.to_string(),
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

impl TestEnv {
    /// Fresh storage of kind `backend` and a Floe started on it.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with_config(backend, None).await
    }

    /// Like [`TestEnv::start`], with a TOML config file passed via `--config`.
    pub async fn start_with_config(backend: Backend, config_toml: Option<&str>) -> Self {
        let (storage, moto, data_dir) = match backend {
            Backend::Local => {
                let dir = tempfile::tempdir().expect("tempdir");
                (
                    Storage::Local {
                        data_dir: dir.path().join("data"),
                    },
                    None,
                    Some(dir),
                )
            }
            Backend::S3 => {
                let moto = MotoServer::start(S3_BUCKET).await;
                let storage = Storage::S3 {
                    endpoint: moto.endpoint(),
                    bucket: moto.bucket.clone(),
                    region: "us-east-1".into(),
                    prefix: Some(S3_PREFIX.into()),
                    access_key_id: "test".into(),
                    secret_access_key: "test".into(),
                };
                (storage, Some(moto), None)
            }
        };
        if let Storage::Local { data_dir } = &storage {
            fs::create_dir_all(data_dir).unwrap();
        }
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
        let c = Client::new(moto.endpoint());
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
