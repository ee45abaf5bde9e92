//! Fault tests: what Floe promises when things go wrong.
//!
//! - `crash_during_ingest`: SIGKILL Floe again and again under concurrent `_bulk` load; every
//!   acknowledged write is there exactly once afterwards, every acknowledged delete stays.
//! - `bucket_outage`: the bucket becomes unreachable (a proxy in front of moto drops every
//!   connection); writes fail with 503 and acknowledge nothing, then recover on their own.
//! - `delete_racing_refresh`: a delete of a live document is never answered `not_found`,
//!   also while a refresh commits (a race `crash_during_ingest` found).
//! - `overload_gets_429`: more write bytes than the indexing-pressure budget get 429 with
//!   `Retry-After`, never a 5xx, and memory stays bounded.
//!
//! Each prints one `summary:` line. Longer local runs: `FLOE_CRASH_SECS`, `FLOE_CRASH_KILLS`,
//! `FLOE_CRASH_SEED`, `FLOE_OUTAGE_SECS`, `FLOE_OVERLOAD_SECS`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_tests::*;

/// A `term` query clause (a filter for [`scan_range`]).
fn term(field: &str, value: impl Into<Value>) -> Value {
    json!({"term": {field: value.into()}})
}

/// `(marker, _id)` of scanned hits.
fn marker_ids(hits: &[Value]) -> Vec<(String, String)> {
    hits.iter()
        .map(|h| {
            (
                h["_source"]["marker"]
                    .as_str()
                    .unwrap_or_else(|| panic!("hit without _source.marker: {h}"))
                    .to_string(),
                h["_id"].as_str().expect("hit _id").to_string(),
            )
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// crash_during_ingest
// ------------------------------------------------------------------------------------------

const CRASH_INDEX: &str = "crash";
const CRASH_CLIENTS: u32 = 4;
const CRASH_BATCH: usize = 100;

/// An acknowledged index operation.
#[derive(Clone, Debug)]
struct Acked {
    id: String,
    /// Milliseconds since the test's ingest started.
    at_ms: u128,
    seq_no: Option<u64>,
    primary_term: Option<u64>,
}

/// What one ingest client sent and what Floe acknowledged.
#[derive(Default)]
struct ClientLog {
    client: u32,
    /// `n` of the next document (markers `c{client}-{n}` / `g{client}-{n}`).
    next_n: i64,
    /// marker → acknowledged index operation.
    acked: HashMap<String, Acked>,
    /// Acknowledged explicit ids not yet picked for deletion.
    deletable: Vec<String>,
    /// Ids a delete was sent for (acknowledged or not): their presence is undetermined
    /// unless the delete was acknowledged.
    delete_sent: HashSet<String>,
    delete_acked: HashSet<String>,
    /// Deletes of acknowledged documents answered 404 (the document was missing then):
    /// id and when (ms since the ingest started).
    delete_not_found: Vec<(String, u128)>,
    /// Fresh explicit ids answered `updated` (200): they existed already.
    unexpected_updates: Vec<String>,
    bulks: u64,
    transport_errors: u64,
    http_status: BTreeMap<u16, u64>,
    item_errors: BTreeMap<String, u64>,
    malformed: Vec<String>,
}

async fn crash_client(
    client: u32,
    url: String,
    seed: u64,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> ClientLog {
    let http = Client::with_timeout(url, Duration::from_secs(10));
    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(u64::from(client) + 1));
    let mut log = ClientLog {
        client,
        ..ClientLog::default()
    };
    while !stop.load(Ordering::Relaxed) {
        let mut ops = Vec::with_capacity(CRASH_BATCH);
        let mut markers = Vec::with_capacity(CRASH_BATCH);
        for _ in 0..CRASH_BATCH {
            if !log.deletable.is_empty() && rng.chance(5) {
                let k = rng.below(log.deletable.len() as u64) as usize;
                let id = log.deletable.swap_remove(k);
                log.delete_sent.insert(id.clone());
                ops.push(TrackedOp::Delete { id });
                markers.push(None);
                continue;
            }
            let n = log.next_n;
            log.next_n += 1;
            let generated = rng.chance(10);
            let marker = format!("{}{client}-{n}", if generated { "g" } else { "c" });
            let doc = json!({
                "client": client,
                "n": n,
                "marker": marker,
                "message": format!("client {client} wrote document {n} before the crash"),
            });
            ops.push(TrackedOp::Index {
                id: (!generated).then(|| marker.clone()),
                doc,
            });
            markers.push(Some(marker));
        }
        let res = send_tracked_bulk(&http, CRASH_INDEX, &ops).await;
        log.bulks += 1;
        let at_ms = started.elapsed().as_millis();
        if let Some(m) = &res.malformed {
            log.malformed.push(m.clone());
        }
        match res.http_status() {
            None => log.transport_errors += 1,
            Some(s) => *log.http_status.entry(s).or_default() += 1,
        }
        for ((op, item), marker) in ops.iter().zip(&res.items).zip(&markers) {
            match op {
                TrackedOp::Index { id, .. } => {
                    if item.acked {
                        let got = item.id.clone().expect("acked item has an id");
                        if id.is_some() {
                            if item.status == Some(200) {
                                log.unexpected_updates.push(got.clone());
                            }
                            log.deletable.push(got.clone());
                        }
                        log.acked.insert(
                            marker.clone().expect("index op has a marker"),
                            Acked {
                                id: got,
                                at_ms,
                                seq_no: item.seq_no,
                                primary_term: item.primary_term,
                            },
                        );
                    }
                }
                TrackedOp::Delete { id } => {
                    if item.acked {
                        log.delete_acked.insert(id.clone());
                    } else if item.status == Some(404) {
                        log.delete_not_found.push((id.clone(), at_ms));
                    }
                }
            }
            if res.http_status() == Some(200) && !item.acked {
                let ty = item
                    .error_type
                    .clone()
                    .unwrap_or_else(|| format!("status {}", item.status.map_or(0, u32::from)));
                *log.item_errors.entry(ty).or_default() += 1;
            }
        }
        if res.http_status() != Some(200) {
            // Floe is down or restarting: back off a little (bounded), then go on.
            tokio::time::sleep(Duration::from_millis(rng.range(50, 300))).await;
        }
    }
    log
}

/// Kills Floe at random moments (1–3 s apart) and starts it again on the same storage,
/// sometimes with an empty cache dir, until `min_kills` kills and `secs` have passed.
/// Returns the process and the kill times (ms since `started`).
async fn crash_killer(
    mut floe: Floe,
    seed: u64,
    min_kills: u64,
    secs: u64,
    started: Instant,
) -> (Floe, Vec<(u128, bool, Duration)>) {
    let mut rng = Rng::new(seed ^ 0xDEAD_BEEF);
    let mut kills = Vec::new();
    while (kills.len() as u64) < min_kills || started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(rng.range(1000, 3000))).await;
        let at = started.elapsed().as_millis();
        floe.stop();
        let wipe = rng.chance(50);
        if wipe {
            floe.wipe_cache();
        }
        let t = Instant::now();
        floe.start_again().await;
        let back = t.elapsed();
        eprintln!(
            "kill #{} at {at} ms (wipe cache: {wipe}), answering again after {back:?}",
            kills.len() + 1
        );
        kills.push((at, wipe, back));
    }
    (floe, kills)
}

/// Continuous `_bulk` load from 4 clients while Floe is SIGKILLed and restarted ≥ 5 times:
/// afterwards every acknowledged document is found exactly once, every acknowledged delete
/// holds, nothing is duplicated.
async fn crash_during_ingest(backend: Backend) {
    let secs = env_u64("FLOE_CRASH_SECS", 15);
    let min_kills = env_u64("FLOE_CRASH_KILLS", 5);
    let seed = env_u64("FLOE_CRASH_SEED", 7);
    let env = TestEnv::start(backend).await;
    let TestEnv {
        floe,
        moto: _moto,
        data_dir: _data_dir,
        ..
    } = env;
    let c = floe.client();
    let r = c
        .put(
            &format!("/{CRASH_INDEX}"),
            &json!({
                "settings": {"number_of_shards": 2, "refresh_interval": "1s"},
                "mappings": {"properties": {
                    "client": {"type": "integer"},
                    "n": {"type": "long"},
                    "marker": {"type": "keyword"},
                    "message": {"type": "text"},
                }},
            }),
        )
        .await;
    assert_eq!(r.status, 200, "create {CRASH_INDEX}: {r}");

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CRASH_CLIENTS)
        .map(|i| tokio::spawn(crash_client(i, floe.url(), seed, started, stop.clone())))
        .collect();
    let killer = tokio::spawn(crash_killer(floe, seed, min_kills, secs, started));
    let killed = killer.await;
    if killed.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    let (mut floe, kills) = killed.expect("killer task (Floe did not come back?)");
    // Some more load on the last incarnation, then stop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for h in clients {
        logs.push(h.await.expect("ingest client"));
    }
    let ingest_ms = started.elapsed().as_millis();
    assert!(floe.exited().is_none(), "floe exited on its own");

    // Read everything back.
    c.refresh_within(CRASH_INDEX, Duration::from_secs(30)).await;
    let mut by_marker: HashMap<String, Vec<String>> = HashMap::new();
    let mut id_count: HashMap<String, u32> = HashMap::new();
    let mut found = 0u64;
    for log in &logs {
        let hits = scan_range(
            &c,
            CRASH_INDEX,
            &term("client", log.client),
            "n",
            0,
            log.next_n,
            &["marker"],
        )
        .await;
        for (marker, id) in marker_ids(&hits) {
            found += 1;
            *id_count.entry(id.clone()).or_default() += 1;
            by_marker.entry(marker).or_default().push(id);
        }
    }
    let count = c.count(CRASH_INDEX).await;

    // Judge.
    let acknowledged: usize = logs.iter().map(|l| l.acked.len()).sum();
    let deletes_acked: usize = logs.iter().map(|l| l.delete_acked.len()).sum();
    // Markers (= ids of explicit-id documents) or ids seen more than once.
    let duplicated: Vec<&String> = by_marker
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(m, _)| m)
        .chain(id_count.iter().filter(|(_, &n)| n > 1).map(|(id, _)| id))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut lost = Vec::new();
    let mut resurrected = Vec::new();
    let mut acked_markers = HashSet::new();
    for log in &logs {
        for (marker, a) in &log.acked {
            acked_markers.insert(marker.as_str());
            if log.delete_sent.contains(&a.id) {
                continue;
            }
            if !by_marker.get(marker).is_some_and(|ids| ids.contains(&a.id)) {
                lost.push((marker.clone(), a.clone()));
            }
        }
        for id in &log.delete_acked {
            if id_count.contains_key(id) {
                resurrected.push(id.clone());
            }
        }
    }
    let unacked_found = by_marker
        .keys()
        .filter(|m| !acked_markers.contains(m.as_str()))
        .count();
    let delete_not_found: Vec<String> = logs
        .iter()
        .flat_map(|l| {
            l.delete_not_found.iter().map(|(id, at)| {
                let acked_at = l.acked.get(id).map(|a| a.at_ms);
                let still_there = id_count.contains_key(id);
                format!("{id} (indexed at {acked_at:?} ms, delete answered 404 at {at} ms, present at the end: {still_there})")
            })
        })
        .collect();
    let unexpected_updates: Vec<&String> =
        logs.iter().flat_map(|l| &l.unexpected_updates).collect();
    let malformed: Vec<&String> = logs.iter().flat_map(|l| &l.malformed).collect();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut item_errors: BTreeMap<&str, u64> = BTreeMap::new();
    for l in &logs {
        *statuses.entry("transport".into()).or_default() += l.transport_errors;
        for (s, n) in &l.http_status {
            *statuses.entry(s.to_string()).or_default() += n;
        }
        for (t, n) in &l.item_errors {
            *item_errors.entry(t).or_default() += n;
        }
    }
    let bulks: u64 = logs.iter().map(|l| l.bulks).sum();
    eprintln!(
        "ingest: {ingest_ms} ms, {bulks} bulks, responses {statuses:?}, item errors {item_errors:?}, \
         deletes acknowledged {deletes_acked}, found but never acknowledged {unacked_found}, \
         _count {count}, kills {:?}",
        kills
            .iter()
            .map(|(at, wipe, back)| format!("{at}ms{}+{}ms", if *wipe { "/wiped" } else { "" }, back.as_millis()))
            .collect::<Vec<_>>()
    );
    lost.sort_by_key(|(_, a)| a.at_ms);
    for (marker, a) in lost.iter().take(20) {
        eprintln!(
            "LOST {marker}: _id {} acknowledged at {} ms (_seq_no {:?}, _primary_term {:?})",
            a.id, a.at_ms, a.seq_no, a.primary_term
        );
    }
    for m in duplicated.iter().take(20) {
        eprintln!("DUPLICATED {m}: {:?}", by_marker.get(*m));
    }
    for id in resurrected.iter().take(20) {
        eprintln!("RESURRECTED {id}");
    }
    println!(
        "summary: crash_during_ingest backend={backend:?} acknowledged={acknowledged} found={found} \
         duplicated={} lost={} resurrected={} kills={}",
        duplicated.len(),
        lost.len(),
        resurrected.len(),
        kills.len()
    );
    assert!(
        malformed.is_empty(),
        "malformed bulk responses: {malformed:?}"
    );
    assert_eq!(
        count, found,
        "_count disagrees with the documents read back"
    );
    assert!(acknowledged > 0, "nothing was acknowledged at all");
    assert!(
        duplicated.is_empty(),
        "duplicated documents: {duplicated:?}"
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged documents lost, first: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        resurrected.is_empty(),
        "acknowledged deletes undone: {resurrected:?}"
    );
    assert!(
        delete_not_found.is_empty(),
        "{} deletes of acknowledged, never deleted documents answered 404 not_found: {delete_not_found:#?}",
        delete_not_found.len()
    );
    assert!(
        unexpected_updates.is_empty(),
        "fresh ids answered `updated`: {unexpected_updates:?}"
    );
    assert!(
        kills.len() as u64 >= min_kills,
        "only {} kills",
        kills.len()
    );
}

mod crash_during_ingest {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local() {
        super::crash_during_ingest(floe_tests::Backend::Local).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn s3() {
        super::crash_during_ingest(floe_tests::Backend::S3).await
    }
}

/// A delete of a document that exists must find it, also while a refresh is committing.
/// (Found by `crash_during_ingest`: deletes arriving just as a refresh commits answered 404
/// `not_found` and were not applied, although the document was live.) Two clients each index
/// 50 new documents per bulk and delete the 50 acknowledged in their previous bulk, while
/// refreshes run every 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_racing_refresh() {
    let secs = env_u64("FLOE_RACE_SECS", 5);
    let env = TestEnv::start(Backend::Local).await;
    let c = env.client();
    let r = c
        .put(
            "/race",
            &json!({"settings": {"refresh_interval": "100ms"},
                    "mappings": {"properties": {"n": {"type": "long"}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let started = Instant::now();
    let tasks: Vec<_> = (0..2u32)
        .map(|client| {
            let c = c.clone();
            tokio::spawn(async move {
                let (mut n, mut live, mut deleted, mut not_found) =
                    (0u64, Vec::new(), 0u64, Vec::new());
                while started.elapsed() < Duration::from_secs(secs) {
                    let mut ops: Vec<TrackedOp> =
                        live.drain(..).map(|id| TrackedOp::Delete { id }).collect();
                    for _ in 0..50 {
                        ops.push(TrackedOp::Index {
                            id: Some(format!("r{client}-{n}")),
                            doc: json!({"n": n}),
                        });
                        n += 1;
                    }
                    let res = send_tracked_bulk(&c, "race", &ops).await;
                    assert_eq!(res.http_status(), Some(200), "{:?}", res.response);
                    for (op, item) in ops.iter().zip(&res.items) {
                        match op {
                            TrackedOp::Index { id, .. } => {
                                assert!(item.acked, "index {id:?}: {item:?}");
                                live.push(id.clone().unwrap());
                            }
                            TrackedOp::Delete { .. } if item.acked => deleted += 1,
                            TrackedOp::Delete { id } => not_found.push((id.clone(), item.status)),
                        }
                    }
                }
                (n, deleted, not_found)
            })
        })
        .collect();
    let (mut indexed, mut deleted, mut not_found) = (0, 0, Vec::new());
    for t in tasks {
        let (n, d, nf) = t.await.expect("race client");
        indexed += n;
        deleted += d;
        not_found.extend(nf);
    }
    c.refresh("race").await;
    let count = c.count("race").await;
    println!(
        "summary: delete_racing_refresh indexed={indexed} deletes_acknowledged={deleted} \
         deletes_not_found={} count={count} expected_count={}",
        not_found.len(),
        indexed - deleted
    );
    assert!(
        not_found.is_empty(),
        "{} deletes of live, acknowledged documents were not applied (status 404?): {:?}",
        not_found.len(),
        &not_found[..not_found.len().min(10)]
    );
    assert_eq!(count, indexed - deleted);
}

// ------------------------------------------------------------------------------------------
// bucket_outage
// ------------------------------------------------------------------------------------------

const OUTAGE_INDEX: &str = "outage";

/// Markers and ids of documents the outage test writes: `o-{n}`, one counter for the test.
struct OutageDocs {
    next_n: i64,
}

impl OutageDocs {
    fn batch(&mut self, phase: &str, len: usize) -> Vec<TrackedOp> {
        (0..len)
            .map(|_| {
                let n = self.next_n;
                self.next_n += 1;
                let marker = format!("o-{n}");
                TrackedOp::Index {
                    id: Some(marker.clone()),
                    doc: json!({"n": n, "marker": marker, "phase": phase, "message": format!("{phase} document {n}")}),
                }
            })
            .collect()
    }
}

/// Adds the acknowledged markers of `res` (ids equal markers) to `acked`.
fn record_acked(res: &TrackedBulk, acked: &mut Vec<String>) {
    assert!(
        res.malformed.is_none(),
        "malformed bulk response: {:?}",
        res.malformed
    );
    acked.extend(
        res.items
            .iter()
            .filter(|i| i.acked)
            .filter_map(|i| i.id.clone()),
    );
}

/// Whether a failed bulk says clearly that storage is unavailable: HTTP 503 with an
/// `error.type`, or HTTP 200 whose every item failed with status 503 and an `error.type`.
fn is_clear_503(res: &TrackedBulk) -> bool {
    match &res.response {
        Err(_) => false,
        Ok(r) if r.status == 503 => r.json["error"]["type"].is_string(),
        Ok(r) if r.status == 200 => {
            r.json["errors"] == json!(true)
                && res
                    .items
                    .iter()
                    .all(|i| i.status == Some(503) && i.error_type.is_some())
        }
        Ok(_) => false,
    }
}

/// Checks every acknowledged marker is searchable exactly once; returns (found, found but
/// never acknowledged).
async fn verify_outage_docs(c: &Client, acked: &[String], next_n: i64) -> (usize, usize) {
    let hits = scan_range(c, OUTAGE_INDEX, &Value::Null, "n", 0, next_n, &["marker"]).await;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for (marker, id) in marker_ids(&hits) {
        assert_eq!(marker, id, "marker and _id differ");
        *seen.entry(marker).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dups.is_empty(), "documents found more than once: {dups:?}");
    let missing: Vec<&String> = acked.iter().filter(|m| !seen.contains_key(*m)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged documents not searchable: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let acked_set: HashSet<&String> = acked.iter().collect();
    let unacked = seen.keys().filter(|m| !acked_set.contains(m)).count();
    (seen.len(), unacked)
}

/// The bucket becomes unreachable for a while: writes fail fast with a clear 503 and claim
/// nothing; when it is back, writes succeed again by themselves and nothing acknowledged is
/// missing or doubled (also after a SIGKILL and restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_outage() {
    let outage_secs = env_u64("FLOE_OUTAGE_SECS", 5);
    let (mut env, proxy) = TestEnv::start_s3_behind_proxy(Some(
        "[storage]\nmax_retries = 2\nretry_timeout_ms = 2000\nrequest_timeout_ms = 2000\n",
    ))
    .await;
    let c = Client::with_timeout(env.floe.url(), Duration::from_secs(60));
    let r = c
        .put(
            &format!("/{OUTAGE_INDEX}"),
            &json!({
                "settings": {"refresh_interval": "1s"},
                "mappings": {"properties": {
                    "n": {"type": "long"},
                    "marker": {"type": "keyword"},
                    "phase": {"type": "keyword"},
                    "message": {"type": "text"},
                }},
            }),
        )
        .await;
    assert_eq!(r.status, 200, "create {OUTAGE_INDEX}: {r}");
    let mut docs = OutageDocs { next_n: 0 };
    let mut acked: Vec<String> = Vec::new();

    // Before: everything acknowledged.
    for _ in 0..5 {
        let res = send_tracked_bulk(&c, OUTAGE_INDEX, &docs.batch("before", 50)).await;
        assert_eq!(res.acked(), 50, "before the outage: {:?}", res.response);
        record_acked(&res, &mut acked);
    }
    let acked_before = acked.len();

    // Outage: two clients keep writing; every third bulk of the second one also brings a new
    // field (so it needs a mapping update in the bucket, not only a translog write).
    proxy.set_up(false);
    let down_at = Instant::now();
    let mut during = Vec::new();
    let mut unclear = Vec::new();
    let mut unclear_new_field = Vec::new();
    let mut new_field_bulks = 0;
    let mut acked_during = 0;
    while down_at.elapsed() < Duration::from_secs(outage_secs) {
        let a = docs.batch("during", 20);
        let mut b = docs.batch("during", 20);
        let new_field = during.len() % 3 == 0;
        if new_field {
            if let TrackedOp::Index { doc, .. } = &mut b[0] {
                doc[format!("extra_{}", during.len())] =
                    json!("a new field while the bucket is down");
            }
        }
        let (ra, rb) = tokio::join!(
            send_tracked_bulk(&c, OUTAGE_INDEX, &a),
            send_tracked_bulk(&c, OUTAGE_INDEX, &b)
        );
        for (res, with_new_field) in [(ra, false), (rb, new_field)] {
            acked_during += res.acked();
            record_acked(&res, &mut acked);
            new_field_bulks += usize::from(with_new_field);
            if !is_clear_503(&res) {
                let first = res.items.first().cloned().unwrap_or_default();
                let what = format!(
                    "HTTP {:?} after {:?}, first item status {:?} type {:?}: {}",
                    res.http_status(),
                    res.elapsed,
                    first.status,
                    first.error_type,
                    match &res.response {
                        Ok(r) => r.json["items"][0].to_string(),
                        Err(e) => e.clone(),
                    }
                );
                if with_new_field {
                    unclear_new_field.push(what);
                } else {
                    unclear.push(what);
                }
            }
            during.push(res);
        }
    }
    let slowest = during.iter().map(|r| r.elapsed).max().unwrap_or_default();

    // Back up: writes succeed again within a bounded time.
    proxy.set_up(true);
    let up_at = Instant::now();
    let mut attempts_after_up = 0;
    loop {
        attempts_after_up += 1;
        let res = send_tracked_bulk(&c, OUTAGE_INDEX, &docs.batch("recovering", 10)).await;
        record_acked(&res, &mut acked);
        if res.acked() == 10 {
            break;
        }
        assert!(
            up_at.elapsed() < Duration::from_secs(30),
            "writes still fail 30 s after the bucket came back: {:?}",
            res.response
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let recovered_after = up_at.elapsed();
    for _ in 0..5 {
        let res = send_tracked_bulk(&c, OUTAGE_INDEX, &docs.batch("after", 50)).await;
        assert_eq!(res.acked(), 50, "after the outage: {:?}", res.response);
        record_acked(&res, &mut acked);
    }
    c.refresh_within(OUTAGE_INDEX, Duration::from_secs(30))
        .await;
    let (found, unacked_found) = verify_outage_docs(&c, &acked, docs.next_n).await;

    // And after a crash: the translog written around the outage replays to the same state.
    env.floe.restart().await;
    c.refresh_within(OUTAGE_INDEX, Duration::from_secs(30))
        .await;
    let (found_after_restart, unacked_after_restart) =
        verify_outage_docs(&c, &acked, docs.next_n).await;

    println!(
        "summary: bucket_outage acknowledged={} (before={acked_before} during={acked_during}) \
         outage_bulks={} clear_503={} (new-field bulks {new_field_bulks}, of them not a clear 503: {}) slowest_failure_ms={} recovered_after_ms={} attempts_after_up={attempts_after_up} \
         found={found} unacknowledged_found={unacked_found} found_after_restart={found_after_restart} \
         unacknowledged_found_after_restart={unacked_after_restart} proxy_refused={}",
        acked.len(),
        during.len(),
        during.len() - unclear.len() - unclear_new_field.len(),
        unclear_new_field.len(),
        slowest.as_millis(),
        recovered_after.as_millis(),
        proxy.refused.load(Ordering::Relaxed),
    );
    assert_eq!(
        acked_during, 0,
        "items acknowledged while the bucket was unreachable"
    );
    assert!(
        unclear.is_empty(),
        "{} of {} bulks during the outage did not fail with a clear 503: {:#?}",
        unclear.len(),
        during.len(),
        &unclear[..unclear.len().min(3)]
    );
    assert!(
        slowest < Duration::from_secs(20),
        "a bulk took {slowest:?} to fail during the outage"
    );
    assert!(
        unclear_new_field.is_empty(),
        "{} of {new_field_bulks} bulks that add a field (mapping update) during the outage did not \
         fail with a clear 503: {:#?}",
        unclear_new_field.len(),
        &unclear_new_field[..unclear_new_field.len().min(3)]
    );
}

// ------------------------------------------------------------------------------------------
// overload_gets_429
// ------------------------------------------------------------------------------------------

const OVERLOAD_CLIENTS: usize = 32;
const OVERLOAD_BODY: usize = 1_000_000;

/// A `_bulk` body of about [`OVERLOAD_BODY`] bytes: documents of ~1 KB, generated ids.
/// Returns the body and its number of documents.
fn overload_body(client: usize, rng: &mut Rng) -> (Vec<u8>, usize) {
    const WORDS: [&str; 16] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut body = String::with_capacity(OVERLOAD_BODY + 2048);
    let mut docs = 0;
    while body.len() < OVERLOAD_BODY - 1200 {
        let mut message = String::new();
        while message.len() < 1000 {
            message.push_str(WORDS[rng.below(16) as usize]);
            message.push(' ');
        }
        body.push_str("{\"index\":{\"_index\":\"load\"}}\n");
        body.push_str(
            &json!({"client": client, "seq": docs, "value": rng.below(1_000_000), "message": message})
                .to_string(),
        );
        body.push('\n');
        docs += 1;
    }
    (body.into_bytes(), docs)
}

#[derive(Default, Debug)]
struct OverloadLog {
    ok: u64,
    docs_acked: u64,
    rejected: u64,
    bad_rejections: Vec<String>,
    other: BTreeMap<u16, u64>,
    other_examples: Vec<String>,
    transport_errors: Vec<String>,
}

/// 32 clients keep sending 1 MB bulks at a 2 MB indexing-pressure budget: the excess gets
/// 429 `es_rejected_execution_exception` with `Retry-After`, nothing gets a 5xx, the process
/// stays up with bounded memory and serves normally afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_429() {
    let secs = env_u64("FLOE_OVERLOAD_SECS", 5);
    let mut env = TestEnv::start_with_config(
        Backend::Local,
        Some("[indexing]\nmax_inflight_bytes = 2000000\nmemory = 50000000\n"),
    )
    .await;
    let pid = env.floe.pid().expect("floe pid");
    let rss_start = peak_rss_bytes(pid).unwrap_or(0);
    let started = Instant::now();
    let tasks: Vec<_> = (0..OVERLOAD_CLIENTS)
        .map(|client| {
            let http = Client::with_timeout(env.floe.url(), Duration::from_secs(60));
            tokio::spawn(async move {
                let mut rng = Rng::new(client as u64 + 1000);
                let (body, docs) = overload_body(client, &mut rng);
                let mut log = OverloadLog::default();
                while started.elapsed() < Duration::from_secs(secs) {
                    let r = http
                        .try_send(
                            Method::POST,
                            "/_bulk",
                            Some(("application/x-ndjson", body.clone())),
                        )
                        .await;
                    match r {
                        Err(e) => {
                            log.transport_errors.push(error_chain(&e));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Ok(r) if r.status == 200 => {
                            log.ok += 1;
                            if r.json["errors"] == json!(false) {
                                log.docs_acked += docs as u64;
                            } else {
                                log.other_examples.push(r.to_string());
                            }
                        }
                        Ok(r) if r.status == 429 => {
                            log.rejected += 1;
                            let retry_after = r
                                .headers
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.trim().parse::<u64>().ok());
                            if r.json["error"]["type"] != json!("es_rejected_execution_exception")
                                || r.json["status"] != json!(429)
                                || retry_after.is_none()
                            {
                                log.bad_rejections
                                    .push(format!("Retry-After {retry_after:?}: {r}"));
                            }
                            // Keep the pressure up (a polite client would wait Retry-After).
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(r) => {
                            *log.other.entry(r.status).or_default() += 1;
                            if log.other_examples.len() < 3 {
                                log.other_examples.push(r.to_string());
                            }
                        }
                    }
                }
                log
            })
        })
        .collect();
    let mut total = OverloadLog::default();
    for t in tasks {
        let l = t.await.expect("overload client");
        total.ok += l.ok;
        total.docs_acked += l.docs_acked;
        total.rejected += l.rejected;
        total.bad_rejections.extend(l.bad_rejections);
        for (s, n) in l.other {
            *total.other.entry(s).or_default() += n;
        }
        total.other_examples.extend(l.other_examples);
        total.transport_errors.extend(l.transport_errors);
    }
    let load_ms = started.elapsed().as_millis();
    assert!(
        env.floe.exited().is_none(),
        "floe died under load: {:?}",
        env.floe.exited()
    );
    let peak = peak_rss_bytes(pid).expect("VmHWM of floe");

    // Still serving: the acknowledged load is all there, and a normal write works.
    let c = env.client();
    c.refresh("load").await;
    let loaded = c.count("load").await;
    c.bulk_ok("/_bulk", logs_bulk("after", 0..20)).await;
    c.refresh("after").await;
    let r = c
        .search("after", &json!({"query": {"match": {"message": "error"}}}))
        .await;
    assert!(total_hits(&r) > 0, "{r}");
    assert_eq!(c.count("after").await, 20);

    println!(
        "summary: overload_gets_429 ok={} rejected_429={} other={:?} transport_errors={} \
         docs_acknowledged={} docs_found={loaded} load_ms={load_ms} vm_hwm_mib={} (at start {})",
        total.ok,
        total.rejected,
        total.other,
        total.transport_errors.len(),
        total.docs_acked,
        peak >> 20,
        rss_start >> 20,
    );
    assert!(total.rejected > 0, "no 429 under 32 concurrent 1 MB bulks");
    assert!(total.ok > 0, "nothing was admitted at all");
    assert!(
        total.bad_rejections.is_empty(),
        "429s without the expected shape: {:?}",
        &total.bad_rejections[..total.bad_rejections.len().min(3)]
    );
    assert!(
        total.other.is_empty(),
        "unexpected statuses {:?}: {:?}",
        total.other,
        total.other_examples
    );
    assert!(
        total.transport_errors.is_empty(),
        "{} transport errors, e.g. {:?}",
        total.transport_errors.len(),
        &total.transport_errors[..total.transport_errors.len().min(3)]
    );
    assert_eq!(
        loaded, total.docs_acked,
        "documents found vs acknowledged under load"
    );
    assert!(
        peak < 1536 << 20,
        "peak RSS {} MiB over the 1.5 GiB bound",
        peak >> 20
    );
}
