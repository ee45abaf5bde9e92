//! The control plane: what several processes on one bucket, and many shards in one process,
//! must get right.
//!
//! - `two_processes_share_one_bucket`: an index, a mapping change and a delete made through
//!   one process are seen by another process on the same bucket within a bound.
//! - `zombie_writer_is_fenced`: a writer frozen with SIGSTOP while a successor with the same
//!   node id takes its shards over (after the lease expires) acknowledges nothing that gets
//!   lost or doubled when it wakes up.
//! - `read_your_writes`: a realtime `GET` right after a write returns that write (`_version`,
//!   `_seq_no`, `_primary_term`), also while refreshes commit in between.
//! - `many_shards_scaled`: `FLOE_SCALE_INDEXES` x `FLOE_SCALE_SHARDS` shards (default 30 x 10)
//!   in one process: creation and bulk time, threads, memory, idle bucket requests, and the
//!   time until every document is back after SIGKILL and a restart with an empty cache.
//!
//! Measured figures are printed as `FIGURE name=value` lines
//! (`cargo nextest run -p floe-tests --test control_plane --no-capture | grep FIGURE`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_tests::*;

/// How often a process polls for something another process did.
const POLL: Duration = Duration::from_millis(50);
/// The longest a poll for another process's change goes on.
const POLL_BOUND: Duration = Duration::from_secs(5);
/// The asserted bound on cross-process visibility (target 1 s; slack for a loaded CI box).
const VISIBLE_WITHIN: Duration = Duration::from_secs(2);

fn figure(name: &str, value: impl std::fmt::Display) {
    println!("FIGURE {name}={value}");
}

// ------------------------------------------------------------------------------------------
// 1. Two processes, one bucket
// ------------------------------------------------------------------------------------------

/// Polls `check` on the other process and asserts it held within [`VISIBLE_WITHIN`].
async fn assert_visible<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let took = poll_until(POLL_BOUND, POLL, check).await;
    let Some(took) = took else {
        panic!("{what}: not visible on the other process within {POLL_BOUND:?}");
    };
    figure(&format!("{what}_ms"), took.as_millis());
    assert!(
        took < VISIBLE_WITHIN,
        "{what}: visible on the other process only after {took:?} (bound {VISIBLE_WITHIN:?})"
    );
}

#[tokio::test]
async fn two_processes_share_one_bucket() {
    let (_data, storage) = temp_local_storage();
    let a = Floe::start_with_args(storage.clone(), None, &["--node-id", "a"]).await;
    let b = Floe::start_with_args(storage, None, &["--node-id", "b"]).await;
    let (ca, cb) = (a.client(), b.client());
    let cb = &cb;

    let settings = json!({"settings": {"number_of_shards": 1}});
    let r = ca.put("/shared", &settings).await;
    assert_eq!(r.status, 200, "create on A: {r}");
    let r = ca
        .put(
            "/shared/_doc/1?refresh=true",
            &json!({"title": "hello from a"}),
        )
        .await;
    assert!(matches!(r.status, 200 | 201), "index on A: {r}");
    assert_visible("index_and_doc_visible", || async move {
        if cb.get("/shared").await.status != 200 {
            return false;
        }
        let r = cb
            .post("/shared/_search", &json!({"query": {"match_all": {}}}))
            .await;
        r.status == 200 && hit_ids(&r) == ["1"]
    })
    .await;

    let r = ca
        .post(
            "/_aliases",
            &json!({"actions": [{"add": {"index": "shared", "alias": "shared-alias",
                "filter": {"term": {"title": "hello"}}}}]}),
        )
        .await;
    assert_eq!(r.status, 200, "alias on A: {r}");
    assert_visible("alias_visible", || async move {
        let r = cb.get("/shared-alias/_search").await;
        r.status == 200 && hit_ids(&r) == ["1"]
    })
    .await;

    let r = ca
        .put(
            "/_index_template/shared-t",
            &json!({"index_patterns": ["shared-t-*"], "template": {"settings": {"number_of_shards": 3}}}),
        )
        .await;
    assert_eq!(r.status, 200, "template on A: {r}");
    assert_visible("template_visible", || async move {
        cb.get("/_index_template/shared-t").await.status == 200
    })
    .await;
    let r = cb.put("/shared-t-1", &json!({})).await;
    assert_eq!(r.status, 200, "create on B: {r}");
    let r = cb.get("/shared-t-1/_settings").await;
    assert_eq!(
        r.json["shared-t-1"]["settings"]["index"]["number_of_shards"], "3",
        "{r}"
    );

    let r = ca
        .put(
            "/shared/_mapping",
            &json!({"properties": {"added_on_a": {"type": "keyword"}}}),
        )
        .await;
    assert_eq!(r.status, 200, "mapping change on A: {r}");
    assert_visible("mapping_visible", || async move {
        let r = cb.get("/shared/_mapping").await;
        r.status == 200
            && r.json["shared"]["mappings"]["properties"]["added_on_a"]["type"] == "keyword"
    })
    .await;

    let r = ca.delete("/shared").await;
    assert_eq!(r.status, 200, "delete on A: {r}");
    assert_visible("delete_visible", || async move {
        cb.get("/shared").await.status == 404 && cb.get("/_alias/shared-alias").await.status == 404
    })
    .await;
}

// ------------------------------------------------------------------------------------------
// 2. A zombie writer is fenced
// ------------------------------------------------------------------------------------------

const ZOMBIE_INDEX: &str = "zz";
const LEASE_TTL: Duration = Duration::from_millis(3000);
const ZOMBIE_BATCH: i64 = 20;

/// What one ingest client saw.
#[derive(Default)]
struct IngestLog {
    /// Each acknowledged `n`, with when the acknowledgement arrived.
    acked: Vec<(i64, Instant)>,
    bulks: u64,
    /// Outcome of each unacknowledged item: error type, HTTP status or transport error.
    failures: BTreeMap<String, u64>,
}

/// Sends `_bulk` batches of [`ZOMBIE_BATCH`] documents without `_id`, each with a unique
/// integer `n` taken from `next_n`, until `stop`; counts acknowledged items in `acked_count`.
async fn ingest(
    client: Client,
    next_n: Arc<AtomicI64>,
    acked_count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> IngestLog {
    let mut log = IngestLog::default();
    while !stop.load(Ordering::Relaxed) {
        let first = next_n.fetch_add(ZOMBIE_BATCH, Ordering::Relaxed);
        let ops: Vec<TrackedOp> = (first..first + ZOMBIE_BATCH)
            .map(|n| TrackedOp::Index {
                id: None,
                doc: json!({"n": n, "via": client.base_url()}),
            })
            .collect();
        let res = send_tracked_bulk(&client, ZOMBIE_INDEX, &ops).await;
        log.bulks += 1;
        assert!(res.malformed.is_none(), "malformed bulk answer: {res:?}");
        let now = Instant::now();
        for (n, item) in (first..).zip(&res.items) {
            if item.acked {
                log.acked.push((n, now));
                acked_count.fetch_add(1, Ordering::Relaxed);
            } else {
                let why = match (&res.response, &item.error_type, item.status) {
                    (Err(_), _, _) => "transport error".to_string(),
                    (_, Some(ty), _) => ty.clone(),
                    (Ok(r), None, s) => format!("status {}", s.unwrap_or(r.status)),
                };
                *log.failures.entry(why).or_default() += 1;
            }
        }
        if res.http_status() != Some(200) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    log
}

/// A running [`ingest`] client.
struct Ingester {
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<IngestLog>,
}

impl Ingester {
    fn start(client: Client, next_n: &Arc<AtomicI64>) -> Self {
        let (acked, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let task = tokio::spawn(ingest(client, next_n.clone(), acked.clone(), stop.clone()));
        Ingester { acked, stop, task }
    }

    /// Waits (≤ `timeout`) until at least `n` items were acknowledged.
    async fn wait_acked(&self, n: u64, timeout: Duration, what: &str) {
        let acked = &self.acked;
        let ok = poll_until(timeout, POLL, || async move {
            acked.load(Ordering::Relaxed) >= n
        });
        assert!(
            ok.await.is_some(),
            "{what}: fewer than {n} acknowledged within {timeout:?}"
        );
    }

    async fn finish(self) -> IngestLog {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("ingest task panicked")
    }
}

#[tokio::test]
async fn zombie_writer_is_fenced() {
    let config = format!("[indexing]\nlease_ttl_ms = {}\n", LEASE_TTL.as_millis());
    let (_data, storage) = temp_local_storage();
    let mut a = Floe::start_with_args(storage.clone(), Some(&config), &["--node-id", "z"]).await;
    let r = a
        .client()
        .put(
            &format!("/{ZOMBIE_INDEX}"),
            &json!({"settings": {"number_of_shards": 2}}),
        )
        .await;
    assert_eq!(r.status, 200, "create {ZOMBIE_INDEX}: {r}");

    // Requests to a paused A hang: give up on them soon (they count as unacknowledged).
    let next_n = Arc::new(AtomicI64::new(0));
    let to_a = Ingester::start(
        Client::with_timeout(a.url(), Duration::from_secs(2)),
        &next_n,
    );
    to_a.wait_acked(100, Duration::from_secs(30), "A before the pause")
        .await;

    a.pause();
    let paused_at = Instant::now();
    let mut b = Floe::start_with_args(storage, Some(&config), &["--node-id", "z"]).await;
    figure(
        "zombie_b_started_after_pause_ms",
        paused_at.elapsed().as_millis(),
    );
    let to_b = Ingester::start(
        Client::with_timeout(b.url(), Duration::from_secs(15)),
        &next_n,
    );
    to_b.wait_acked(60, Duration::from_secs(30), "B after A's lease expired")
        .await;

    a.resume();
    let resumed_at = Instant::now();
    // A keeps being sent writes for a while after it wakes up (a fixed span on purpose).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (log_a, log_b) = (to_a.finish().await, to_b.finish().await);
    a.stop();
    assert!(b.exited().is_none(), "B exited: {}", b.log_tail(50));

    let first_b_ack = log_b
        .acked
        .iter()
        .map(|&(_, at)| at)
        .min()
        .expect("B acked nothing");
    let takeover = first_b_ack - paused_at;
    let acked_by_a_after = log_a
        .acked
        .iter()
        .filter(|&&(_, at)| at >= resumed_at)
        .count();
    figure("zombie_takeover_after_pause_ms", takeover.as_millis());
    println!(
        "zombie: A bulks {} acked {} (after resume {acked_by_a_after}) failures {:?}; \
         B bulks {} acked {} failures {:?}",
        log_a.bulks,
        log_a.acked.len(),
        log_a.failures,
        log_b.bulks,
        log_b.acked.len(),
        log_b.failures
    );

    let cb = b.client();
    cb.refresh_within(ZOMBIE_INDEX, Duration::from_secs(30))
        .await;
    let sent = next_n.load(Ordering::Relaxed);
    let found = scan_range(&cb, ZOMBIE_INDEX, &Value::Null, "n", 0, sent, &["n"]).await;
    let mut copies: HashMap<i64, u32> = HashMap::new();
    for hit in &found {
        let n = hit["_source"]["n"]
            .as_i64()
            .unwrap_or_else(|| panic!("hit without n: {hit}"));
        *copies.entry(n).or_default() += 1;
    }
    let acked: Vec<i64> = log_a
        .acked
        .iter()
        .chain(&log_b.acked)
        .map(|&(n, _)| n)
        .collect();
    let mut lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|n| !copies.contains_key(n))
        .collect();
    lost.sort_unstable();
    let mut doubled: Vec<(i64, u32)> = copies
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(&n, &c)| (n, c))
        .collect();
    doubled.sort_unstable();
    println!(
        "zombie: sent {sent}, acknowledged {}, found {} distinct ({} hits), lost {}, doubled {}",
        acked.len(),
        copies.len(),
        found.len(),
        lost.len(),
        doubled.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged but lost: {:?}",
        &lost[..lost.len().min(20)]
    );
    assert!(
        doubled.is_empty(),
        "(n, copies) found twice: {:?}",
        &doubled[..doubled.len().min(20)]
    );
    assert!(
        takeover >= LEASE_TTL / 2,
        "B acknowledged a write {takeover:?} after A was paused: before A's lease \
         (ttl {LEASE_TTL:?}, last renewed at most a renewal period before) could expire"
    );
}

// ------------------------------------------------------------------------------------------
// 3. Read your writes
// ------------------------------------------------------------------------------------------

/// What a write answered.
#[derive(Clone, Debug)]
struct Written {
    id: String,
    version: u64,
    seq_no: u64,
    primary_term: u64,
    doc: Value,
}

fn written(r: &Resp, doc: &Value) -> Written {
    assert!(matches!(r.status, 200 | 201), "write: {r}");
    let num = |k: &str| {
        r.json[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no {k} in write answer: {r}"))
    };
    Written {
        id: r.json["_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no _id: {r}"))
            .to_string(),
        version: num("_version"),
        seq_no: num("_seq_no"),
        primary_term: num("_primary_term"),
        doc: doc.clone(),
    }
}

/// Every way the read-back can differ from the write, by kind (`<write kind>: <field>`),
/// with how often and the first example.
#[derive(Default)]
struct Mismatches(BTreeMap<String, (u32, String)>);

impl Mismatches {
    fn add(&mut self, kind: String, example: impl FnOnce() -> String) {
        let e = self.0.entry(kind).or_insert_with(|| (0, example()));
        e.0 += 1;
    }
}

/// `GET` and `HEAD` right after `w` (a write of kind `what`): found, with exactly what the
/// write answered.
async fn check_reads_back(c: &Client, w: &Written, what: &str, step: usize, out: &mut Mismatches) {
    let path = format!("/ryw/_doc/{}", w.id);
    let r = c.get(&path).await;
    let example = || format!("step {step}: GET {path} right after the write {w:?}: {r}");
    if r.status != 200 || r.json["found"] != json!(true) {
        out.add(format!("{what}: not found (HTTP {})", r.status), example);
    } else {
        let expected = [
            ("_version", json!(w.version)),
            ("_seq_no", json!(w.seq_no)),
            ("_primary_term", json!(w.primary_term)),
            ("_source", w.doc.clone()),
        ];
        for (field, want) in expected {
            if r.json[field] != want {
                out.add(format!("{what}: {field}"), example);
            }
        }
    }
    let head = c.head(&path).await.status;
    if head != 200 {
        let example = || format!("step {step}: HEAD {path} right after the write {w:?}: {head}");
        out.add(format!("{what}: HEAD {head}"), example);
    }
}

#[tokio::test]
async fn read_your_writes() {
    let env = TestEnv::start(Backend::Local).await;
    let c = env.client();
    let settings = json!({"settings": {"number_of_shards": 1, "refresh_interval": "100ms"}});
    let r = c.put("/ryw", &settings).await;
    assert_eq!(r.status, 200, "{r}");

    let mut latest: Vec<(Written, &str)> = Vec::new();
    let mut seq_nos: Vec<u64> = Vec::new();
    let mut bad = Mismatches::default();
    for i in 0..200usize {
        let doc = json!({"i": i, "message": format!("write {i}")});
        let (r, what) = if i % 2 == 0 {
            (c.put(&format!("/ryw/_doc/e{i}"), &doc).await, "explicit id")
        } else {
            (c.post("/ryw/_doc", &doc).await, "generated id")
        };
        let w = written(&r, &doc);
        assert_eq!(w.version, 1, "a new document: {w:?}");
        seq_nos.push(w.seq_no);
        check_reads_back(&c, &w, what, i, &mut bad).await;
        latest.push((w, what));

        if i % 5 == 4 {
            // Overwrite an earlier document (explicit or generated id alike).
            let k = (i * 7) % latest.len();
            let (before, kind) = latest[k].clone();
            let what = format!("overwrite of {kind}");
            let doc = json!({"i": i, "message": format!("overwrite of {} at {i}", before.id)});
            let r = c.put(&format!("/ryw/_doc/{}", before.id), &doc).await;
            let w = written(&r, &doc);
            let example = || format!("step {i}: overwrite of {before:?}: {r}");
            if w.version != before.version + 1 {
                bad.add(format!("{what}: answered _version"), example);
            }
            if w.seq_no <= before.seq_no {
                bad.add(format!("{what}: answered _seq_no"), example);
            }
            seq_nos.push(w.seq_no);
            check_reads_back(&c, &w, &what, i, &mut bad).await;
            latest[k] = (w, kind);
        }
    }
    let distinct: HashSet<u64> = seq_nos.iter().copied().collect();
    if distinct.len() != seq_nos.len() {
        bad.add("writes: a _seq_no answered twice".into(), || {
            format!("{seq_nos:?}")
        });
    }
    // Overwrites replaced their document: each id is found once.
    c.refresh("ryw").await;
    let r = c
        .search("ryw", &json!({"size": 1000, "_source": false}))
        .await;
    let mut found = hit_ids(&r);
    found.sort();
    let mut expected: Vec<String> = latest.iter().map(|(w, _)| w.id.clone()).collect();
    expected.sort();
    if found != expected {
        let example = || format!("{} hits for {} ids: {found:?}", found.len(), expected.len());
        bad.add("after refresh: ids found".into(), example);
    }
    let report: Vec<String> = bad
        .0
        .iter()
        .map(|(kind, (n, example))| format!("{kind}: {n} times, first: {example}"))
        .collect();
    println!(
        "read_your_writes: {} writes, {} kinds of mismatch",
        seq_nos.len(),
        report.len()
    );
    assert!(
        report.is_empty(),
        "reads right after writes differ:\n{}",
        report.join("\n")
    );
}

// ------------------------------------------------------------------------------------------
// 4. Many shards in one process
// ------------------------------------------------------------------------------------------

/// Default size: 30 indexes x 10 shards (a CI-sized 3,000-shard figure); override with
/// `FLOE_SCALE_INDEXES` / `FLOE_SCALE_SHARDS` (e.g. 300 x 10 by hand).
const SCALE_INDEXES: u64 = 30;
const SCALE_SHARDS: u64 = 10;
/// Documents per shard in the one `_bulk` (distinct ids: nearly every shard gets some).
const DOCS_PER_SHARD: u64 = 2;
const MAX_THREADS: u64 = 300;
const MAX_IDLE_REQUESTS_PER_S: f64 = 5.0;
const IDLE_WINDOW: Duration = Duration::from_secs(5);

fn scale_index(i: u64) -> String {
    format!("scale-{i:04}")
}

/// Request counters of `GET /_floe/stats` (`storage.*` except the byte counts).
async fn request_counters(c: &Client) -> BTreeMap<String, u64> {
    let r = c.get("/_floe/stats").await;
    assert_eq!(r.status, 200, "{r}");
    let storage = r.json["storage"]
        .as_object()
        .unwrap_or_else(|| panic!("no storage: {r}"));
    storage
        .iter()
        .filter(|(k, _)| !k.starts_with("bytes"))
        .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
        .collect()
}

/// Sum of `docs.count` over the `scale-*` rows of `_cat/indices`, and how many rows there are.
async fn cat_scale_docs(c: &Client) -> Option<(u64, u64)> {
    let r = c
        .try_send(Method::GET, "/_cat/indices?format=json", None)
        .await
        .ok()?;
    let rows = r.json.as_array()?;
    let mut scale = rows.iter().filter(|row| {
        row["index"]
            .as_str()
            .is_some_and(|i| i.starts_with("scale-"))
    });
    scale.try_fold((0, 0), |(sum, rows), row| {
        let docs = &row["docs.count"];
        let n = docs.as_u64().or_else(|| docs.as_str()?.parse().ok())?;
        Some((sum + n, rows + 1))
    })
}

/// Polls until `_cat/indices`, then `scale-*/_count`, show `total` documents; returns the
/// time from the call until `_cat/indices` did and until `_count` did.
async fn wait_all_docs(
    c: &Client,
    indexes: u64,
    total: u64,
    timeout: Duration,
) -> (Duration, Duration) {
    let cat = poll_until(timeout, Duration::from_millis(200), || async {
        cat_scale_docs(c).await == Some((total, indexes))
    })
    .await;
    let Some(cat) = cat else {
        let last = cat_scale_docs(c).await;
        panic!(
            "_cat/indices: (docs, indexes) {last:?}, not ({total}, {indexes}) after {timeout:?}"
        );
    };
    let count = poll_until(timeout, Duration::from_millis(200), || async {
        let r = c.try_send(Method::GET, "/scale-*/_count", None).await;
        r.is_ok_and(|r| r.json["count"].as_u64() == Some(total))
    })
    .await;
    let count = count.unwrap_or_else(|| panic!("scale-*/_count is not {total} after {timeout:?}"));
    (cat, cat + count)
}

#[tokio::test]
async fn many_shards_scaled() {
    let indexes = env_u64("FLOE_SCALE_INDEXES", SCALE_INDEXES);
    let shards = env_u64("FLOE_SCALE_SHARDS", SCALE_SHARDS);
    let total_shards = indexes * shards;
    let per_index = shards * DOCS_PER_SHARD;
    let total_docs = indexes * per_index;
    let timeout = Duration::from_secs(60 + total_shards / 10);
    figure("scale_indexes", indexes);
    figure("scale_shards", total_shards);

    let mut env = TestEnv::start(Backend::Local).await;
    let c = Client::with_timeout(env.floe.url(), timeout);
    let started = Instant::now();
    for i in 0..indexes {
        let r = c
            .put(
                &format!("/{}", scale_index(i)),
                &json!({"settings": {"number_of_shards": shards}}),
            )
            .await;
        assert_eq!(r.status, 200, "create {}: {r}", scale_index(i));
    }
    figure("create_indexes_ms", started.elapsed().as_millis());

    let body: String = (0..indexes)
        .map(|i| {
            let docs = (0..per_index).map(|d| (format!("d{d}"), json!({"index": i, "d": d})));
            bulk_body(&scale_index(i), docs)
        })
        .collect();
    let started = Instant::now();
    let r = c.bulk_ok("/_bulk", body).await;
    figure("bulk_ms", started.elapsed().as_millis());
    figure("bulk_docs", total_docs);
    let items = r.json["items"].as_array().map_or(0, Vec::len) as u64;
    assert_eq!(items, total_docs, "bulk items");
    // Shards that received documents, read off the bucket (`indexes/<uuid>/<shard>/...`).
    let keys = env.storage_keys("indexes/").await;
    let touched: HashSet<(&str, &str)> = keys
        .iter()
        .filter_map(|k| {
            let mut parts = k.split('/').skip(1);
            Some((parts.next()?, parts.next()?))
        })
        .collect();
    figure("shards_with_objects", touched.len());
    let (_, visible) = wait_all_docs(&c, indexes, total_docs, timeout).await;
    figure("visible_after_bulk_ms", visible.as_millis());

    let pid = env.floe.pid().expect("floe pid");
    let threads = proc_threads(pid).expect("Threads of floe");
    let rss = proc_status_bytes(pid, "VmRSS").expect("VmRSS of floe");
    figure("threads", threads);
    figure("rss_mib", rss / (1 << 20));
    let before = request_counters(&c).await;
    tokio::time::sleep(IDLE_WINDOW).await; // the measurement window itself
    let after = request_counters(&c).await;
    let idle: BTreeMap<&str, u64> = after
        .iter()
        .map(|(k, v)| (k.as_str(), v - before.get(k).copied().unwrap_or(0)))
        .collect();
    let idle_per_s = idle.values().sum::<u64>() as f64 / IDLE_WINDOW.as_secs_f64();
    figure("idle_requests_per_s", format!("{idle_per_s:.2}"));
    figure(
        "idle_requests_in_window",
        format!("{idle:?}").replace(' ', ""),
    );

    env.floe.stop();
    env.floe.wipe_cache();
    let started = Instant::now();
    env.floe.start_again().await;
    let answering = started.elapsed();
    figure("restart_answering_ms", answering.as_millis());
    let (cat, count) = wait_all_docs(&c, indexes, total_docs, timeout).await;
    figure("restart_cat_all_docs_ms", (answering + cat).as_millis());
    figure("restart_count_all_docs_ms", (answering + count).as_millis());
    let pid = env.floe.pid().expect("floe pid");
    figure("threads_after_restart", proc_threads(pid).unwrap_or(0));

    assert!(
        threads < MAX_THREADS,
        "{threads} threads for {total_shards} shards (limit {MAX_THREADS})"
    );
    assert!(
        idle_per_s <= MAX_IDLE_REQUESTS_PER_S,
        "{idle_per_s:.2} bucket requests/s while idle ({idle:?} in {IDLE_WINDOW:?})"
    );
}
