//! Floe as a cluster of separate processes on one S3 bucket (moto): 1 metastore, 2 writers
//! (zones a, b), 2 searchers (zones a, b), talking gRPC on 127.0.0.1.
//!
//! `cluster_heals_itself`, in phases:
//! - read-after-refresh: a `?refresh=true` bulk sent to one writer is counted by every node
//!   when it returns (items of the other writer's shards are forwarded and published there);
//! - a writer is SIGKILLed while clients ingest through both writers (a client whose writer
//!   is gone switches to the other one): health returns to green by itself (time printed),
//!   and every acknowledged document is found exactly once;
//! - a searcher is SIGKILLed under a query loop sent through a writer: no query fails;
//! - the metastore is SIGKILLed during ingest and queries and restarted: queries keep
//!   succeeding, nothing acknowledged is lost.
//!
//! Figures: `cargo nextest run -p floe-tests --test cluster --no-capture | grep FIGURE`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use floe_tests::*;
use serde_json::json;

const INDEX: &str = "logs";
const SHARDS: u32 = 6;

fn figure(name: &str, value: impl std::fmt::Display) {
    println!("FIGURE {name}={value}");
}

/// A writer or searcher `id` (in `zone`, if any) of the cluster whose metastore is at `url`.
async fn node(role: &str, storage: &Storage, id: &str, zone: &str, url: &str) -> Floe {
    let mut args = vec!["--node-id", id, "--metastore", url];
    if !zone.is_empty() {
        args.extend(["--zone", zone]);
    }
    Floe::start_role(role, storage.clone(), None, &args).await
}

struct Cluster {
    metastore: Floe,
    writers: Vec<Floe>,
    searchers: Vec<Floe>,
    _moto: MotoServer,
}

async fn start_cluster() -> Cluster {
    let moto = MotoServer::start(S3_BUCKET).await;
    let storage = moto.storage();
    let metastore =
        Floe::start_role("metastore", storage.clone(), None, &["--node-id", "m1"]).await;
    let url = metastore.grpc_url();
    let mut writers = Vec::new();
    let mut searchers = Vec::new();
    for (id, zone) in [("w1", "a"), ("w2", "b")] {
        writers.push(node("writer", &storage, id, zone, &url).await);
    }
    for (id, zone) in [("s1", "a"), ("s2", "b")] {
        searchers.push(node("searcher", &storage, id, zone, &url).await);
    }
    let cluster = Cluster {
        metastore,
        writers,
        searchers,
        _moto: moto,
    };
    // Every node sees all five.
    for node in cluster.writers.iter().chain(&cluster.searchers) {
        let c = node.client();
        let seen = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
            let c = c.clone();
            async move { c.get("/_cluster/health").await.json["number_of_nodes"] == json!(5) }
        })
        .await;
        assert!(seen.is_some(), "{} never saw 5 nodes", node.url());
    }
    cluster
}

fn doc_bulk(ids: impl IntoIterator<Item = u64>) -> String {
    let mut body = String::new();
    for i in ids {
        body.push_str(&format!(
            "{{\"index\":{{\"_index\":\"{INDEX}\",\"_id\":\"d{i}\"}}}}\n{}\n",
            json!({"n": i, "message": format!("line {i}")})
        ));
    }
    body
}

/// Ids (numbers) of the items a bulk answer acknowledged.
fn acknowledged(r: &Resp) -> Vec<u64> {
    r.json["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|it| {
                    let it = &it["index"];
                    let ok = matches!(it["status"].as_u64(), Some(200 | 201));
                    let id = it["_id"].as_str()?.strip_prefix('d')?.parse().ok()?;
                    ok.then_some(id)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Ingests batches of 20 new ids through `urls[0]` (falling over to the next url when a
/// node is unreachable) until `stop`; records what was acknowledged.
async fn ingest(
    urls: Vec<String>,
    first_id: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
) {
    ingest_counting(urls, first_id, stop, acked, Default::default()).await
}

/// [`ingest`], counting the items that were not acknowledged in `rejected`.
async fn ingest_counting(
    urls: Vec<String>,
    first_id: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    rejected: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut next = first_id;
    let mut at = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let ids: Vec<u64> = (next..next + 20).collect();
        next += 20;
        let client = Client::with_timeout(urls[at].clone(), Duration::from_secs(30));
        match client
            .try_send(
                reqwest::Method::POST,
                "/_bulk",
                Some(("application/x-ndjson", doc_bulk(ids).into_bytes())),
            )
            .await
        {
            Ok(r) => {
                let ok = acknowledged(&r);
                rejected.fetch_add(20 - ok.len() as u64, Ordering::Relaxed);
                acked.lock().unwrap().extend(ok);
            }
            Err(_) => {
                rejected.fetch_add(20, Ordering::Relaxed);
                at = (at + 1) % urls.len();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `_count` through `url` until `stop`; returns (queries, failures).
async fn query_loop(url: String, stop: Arc<AtomicBool>) -> (u64, Vec<String>) {
    let client = Client::with_timeout(url, Duration::from_secs(30));
    let mut n = 0;
    let mut failures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        n += 1;
        match client
            .try_send(reqwest::Method::GET, &format!("/{INDEX}/_count"), None)
            .await
        {
            Ok(r) if r.status == 200 => {}
            Ok(r) => failures.push(r.to_string()),
            Err(e) => failures.push(error_chain(&e)),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (n, failures)
}

async fn wait_green(client: &Client, nodes: u64, bound: Duration) -> Option<Duration> {
    poll_until(bound, Duration::from_millis(100), || {
        let c = client.clone();
        async move {
            let h = c.get("/_cluster/health").await.json;
            h["status"] == json!("green") && h["number_of_nodes"] == json!(nodes)
        }
    })
    .await
}

/// Every id in `acked` is found exactly once (through `client`), after a refresh: asked for
/// in chunks with an `ids` query, each id must be one hit.
async fn assert_all_found_once(client: &Client, acked: &[u64]) {
    let mut missing = Vec::new();
    for chunk in acked.chunks(1000) {
        let ids: Vec<String> = chunk.iter().map(|i| format!("d{i}")).collect();
        let r = client
            .search(
                INDEX,
                &json!({"size": 2000, "_source": false, "query": {"ids": {"values": ids}}}),
            )
            .await;
        let mut seen: HashMap<String, u32> = HashMap::new();
        for id in hit_ids(&r) {
            *seen.entry(id).or_default() += 1;
        }
        let doubled: Vec<&String> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id)
            .collect();
        assert!(doubled.is_empty(), "ids found more than once: {doubled:?}");
        missing.extend(ids.into_iter().filter(|id| !seen.contains_key(id)));
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged ids missing (of {}), e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}

#[tokio::test]
async fn cluster_heals_itself() {
    let mut cluster = start_cluster().await;
    let w1 = cluster.writers[0].client();
    let s1 = cluster.searchers[0].client();

    // Admin through a searcher goes to a writer.
    let r = s1
        .put(
            &format!("/{INDEX}"),
            &json!({"settings": {"number_of_shards": SHARDS}}),
        )
        .await;
    assert_eq!(r.status, 200, "create through a searcher: {r}");

    let nodes = s1.get("/_cat/nodes?format=json").await;
    let mut roles: Vec<String> = nodes
        .json
        .as_array()
        .unwrap_or_else(|| panic!("{nodes}"))
        .iter()
        .map(|n| {
            format!(
                "{}:{}",
                n["name"].as_str().unwrap(),
                n["node.role"].as_str().unwrap()
            )
        })
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            "m1:metastore",
            "s1:searcher",
            "s2:searcher",
            "w1:writer",
            "w2:writer"
        ]
    );

    // (d) Read-after-refresh on every node.
    let r = w1
        .post_ndjson("/_bulk?refresh=true", doc_bulk(0..200))
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(acknowledged(&r).len(), 200, "{r}");
    for node in cluster.writers.iter().chain(&cluster.searchers) {
        assert_eq!(
            node.client().count(INDEX).await,
            200,
            "count on {}",
            node.url()
        );
    }
    // A request's trace id reaches every node it touches: sent to a searcher, the bulk goes
    // to a writer (and on to the shard's owner), whose log lines name it.
    let traced = reqwest::Client::new()
        .post(format!("{}/_bulk", cluster.searchers[0].url()))
        .header("x-floe-trace", "trace-4f1e")
        .header("authorization", basic_auth("admin", ADMIN_PASSWORD))
        .header("content-type", "application/x-ndjson")
        .body("{\"index\":{\"_index\":\"traced\",\"_id\":\"t1\"}}\n{\"a\":1}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), 200);
    assert_eq!(traced.headers()["x-floe-trace"], "trace-4f1e");
    let logged = cluster.writers.iter().any(|w| {
        std::fs::read_to_string(w.log_path()).is_ok_and(|log| {
            log.lines()
                .any(|l| l.contains("trace-4f1e") && l.contains("shard opened"))
        })
    });
    assert!(logged, "no writer log line names the trace");

    // Fanned-out searches merge exactly: sort keys, from/size, aggregations, `_shards`.
    let q = json!({"size": 5, "from": 3, "sort": [{"n": "desc"}],
        "aggs": {"avg_n": {"avg": {"field": "n"}}, "max_n": {"max": {"field": "n"}}}});
    for node in cluster.writers.iter().chain(&cluster.searchers) {
        let r = node.client().search(INDEX, &q).await;
        assert_eq!(hit_ids(&r), ["d196", "d195", "d194", "d193", "d192"], "{r}");
        assert_eq!(r.json["aggregations"]["avg_n"]["value"], json!(99.5), "{r}");
        assert_eq!(
            r.json["aggregations"]["max_n"]["value"],
            json!(199.0),
            "{r}"
        );
        assert_eq!(r.json["_shards"]["successful"], json!(SHARDS), "{r}");
        assert_eq!(total_hits(&r), 200, "{r}");
    }

    // Realtime get through a searcher reaches the owning writer.
    let r = s1.post_ndjson("/_bulk", doc_bulk(200..201)).await;
    assert_eq!(acknowledged(&r), vec![200], "{r}");
    let got = s1.get(&format!("/{INDEX}/_doc/d200")).await;
    assert_eq!(got.json["found"], json!(true), "{got}");

    // (a) Kill a writer under ingest through both writers.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new((0..201).collect::<Vec<u64>>()));
    let urls = [cluster.writers[0].url(), cluster.writers[1].url()];
    let clients = vec![
        tokio::spawn(ingest(
            vec![urls[0].clone(), urls[1].clone()],
            1_000_000,
            stop.clone(),
            acked.clone(),
        )),
        tokio::spawn(ingest(
            vec![urls[1].clone(), urls[0].clone()],
            2_000_000,
            stop.clone(),
            acked.clone(),
        )),
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill = acked.lock().unwrap().len();
    cluster.writers[1].stop();
    let green = wait_green(&s1, 4, Duration::from_secs(30)).await;
    let Some(green) = green else {
        let health = s1.get("/_cluster/health").await;
        panic!("not green within 30 s after a writer died: {health}");
    };
    figure("time_to_green_after_writer_kill_ms", green.as_millis());
    assert!(
        green <= Duration::from_secs(15),
        "green only after {green:?}"
    );
    let shards = s1.get("/_cat/shards?format=json").await;
    for row in shards.json.as_array().unwrap_or_else(|| panic!("{shards}")) {
        assert_eq!(row["state"], json!("STARTED"), "{shards}");
        assert_ne!(
            row["node"],
            json!("w2"),
            "a shard still on the dead writer: {shards}"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_kill = acked.lock().unwrap().len();
    assert!(
        after_kill > before_kill,
        "ingest stalled after the writer died"
    );

    // (b) Kill a searcher under query loops through a writer (which forwards to a
    // searcher) and through the surviving searcher (whose fan-out sends the dead one's
    // shards to itself).
    let qstop = Arc::new(AtomicBool::new(false));
    let loops = [
        tokio::spawn(query_loop(cluster.writers[0].url(), qstop.clone())),
        tokio::spawn(query_loop(cluster.searchers[1].url(), qstop.clone())),
    ];
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.searchers[0].stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    qstop.store(true, Ordering::Relaxed);
    for queries in loops {
        let (n, failures) = queries.await.unwrap();
        figure("queries_during_searcher_kill", n);
        assert!(
            failures.is_empty(),
            "{} of {n} queries failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
    }

    // (c) Kill the metastore during ingest and queries, then start it again.
    let s2 = cluster.searchers[1].client();
    let qstop = Arc::new(AtomicBool::new(false));
    let queries = tokio::spawn(query_loop(cluster.searchers[1].url(), qstop.clone()));
    let before = acked.lock().unwrap().len();
    cluster.metastore.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = acked.lock().unwrap().len();
    cluster.metastore.start_again().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    qstop.store(true, Ordering::Relaxed);
    let (n, failures) = queries.await.unwrap();
    figure("queries_during_metastore_outage", n);
    figure("docs_acknowledged_during_metastore_outage", during - before);
    assert!(
        failures.is_empty(),
        "{} of {n} queries failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let acked: Vec<u64> = acked.lock().unwrap().clone();
    figure("docs_acknowledged", acked.len());
    let r = s2.post_empty(&format!("/{INDEX}/_refresh")).await;
    assert_eq!(r.status, 200, "refresh: {r}");
    assert_all_found_once(&s2, &acked).await;

    // Prometheus metrics on every node.
    let m = w1.get("/metrics").await;
    assert_eq!(m.status, 200);
    for needle in [
        "floe_bulk_items_total{outcome=\"ok\"",
        "floe_http_requests_total{endpoint=\"/_bulk\"",
        "what=\"session_renewals\"",
        "what=\"object_store_puts\"",
    ] {
        assert!(
            m.text.contains(needle),
            "{needle} not in /metrics:\n{}",
            m.text
        );
    }
    let m = s2.get("/metrics").await;
    assert!(
        m.text.contains("what=\"searcher_shard_copies\""),
        "{}",
        m.text
    );
}

/// Searchers in zones a, a, b, b with two copies of each shard (forced awareness over a
/// and b, four provisioned searchers): every shard has a copy in each zone; with both b
/// searchers stopped, health turns yellow, no searcher goes over the cap, the b copies
/// stay unassigned and `allocation/explain` says why; searches still answer everything.
#[tokio::test]
async fn zones_cap_and_explain() {
    let (_data, storage) = temp_local_storage();
    let rules =
        "[cluster]\nawareness_zones = [\"a\", \"b\"]\nprovisioned_searchers = 4\nflat_skew = 0\n";
    let metastore = Floe::start_role(
        "metastore",
        storage.clone(),
        Some(rules),
        &["--node-id", "m1"],
    )
    .await;
    let url = metastore.grpc_url();
    let writer = node("writer", &storage, "w1", "a", &url).await;
    let mut searchers = Vec::new();
    for (id, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")] {
        searchers.push(node("searcher", &storage, id, zone, &url).await);
    }
    let w = writer.client();
    let r = w
        .put(
            "/zoned",
            &json!({"settings": {"number_of_shards": 10, "number_of_replicas": 2}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let body: String = (0..100)
        .map(|i| {
            format!("{{\"index\":{{\"_index\":\"zoned\",\"_id\":\"z{i}\"}}}}\n{{\"n\":{i}}}\n")
        })
        .collect();
    let r = w.post_ndjson("/_bulk?refresh=true", body).await;
    assert_eq!(r.json["errors"], json!(false), "{r}");
    let a1 = searchers[0].client();
    let all_seen = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let c = a1.clone();
        async move { c.get("/_cluster/health").await.json["number_of_nodes"] == json!(6) }
    })
    .await;
    assert!(all_seen.is_some(), "a1 never saw 6 nodes");
    assert_eq!(a1.count("zoned").await, 100);
    let h = a1
        .get("/_cluster/health?wait_for_status=green&timeout=20s")
        .await;
    assert_eq!(h.status, 200, "never green with all searchers: {h}");
    assert_eq!(h.json["number_of_nodes"], json!(6), "{h}");

    let replicas = |r: &Resp| -> Vec<(String, String, String)> {
        r.json
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .filter(|row| row["prirep"] == json!("r"))
            .map(|row| {
                (
                    row["shard"].as_str().unwrap().to_string(),
                    row["state"].as_str().unwrap().to_string(),
                    row["node"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let rows = replicas(&a1.get("/_cat/shards?format=json").await);
    assert_eq!(rows.len(), 20);
    for shard in 0..10 {
        let zones: Vec<char> = rows
            .iter()
            .filter(|(s, _, _)| *s == shard.to_string())
            .map(|(_, _, n)| n.chars().next().unwrap())
            .collect();
        assert!(
            zones.contains(&'a') && zones.contains(&'b'),
            "shard {shard}: {rows:?}"
        );
    }

    searchers[2].stop();
    searchers[3].stop();
    let yellow = poll_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let c = a1.clone();
        async move {
            let h = c.get("/_cluster/health").await.json;
            h["status"] == json!("yellow") && h["number_of_nodes"] == json!(4)
        }
    })
    .await;
    assert!(
        yellow.is_some(),
        "not yellow after zone b went: {}",
        a1.get("/_cluster/health").await
    );
    let rows = replicas(&a1.get("/_cat/shards?format=json").await);
    let unassigned = rows.iter().filter(|(_, s, _)| s == "UNASSIGNED").count();
    assert_eq!(
        unassigned, 10,
        "zone b's copies must not move to zone a: {rows:?}"
    );
    let explain = a1
        .post(
            "/_cluster/allocation/explain",
            &json!({"index": "zoned", "shard": 0, "primary": false}),
        )
        .await;
    assert_eq!(
        explain.json["current_state"],
        json!("unassigned"),
        "{explain}"
    );
    let cap = explain.json["searcher_cap"].as_u64().unwrap();
    figure("zone_test_searcher_cap", cap);
    let mut per_node: HashMap<String, u64> = HashMap::new();
    for (_, state, node) in &rows {
        if state == "STARTED" {
            *per_node.entry(node.clone()).or_default() += 1;
        }
    }
    assert!(
        per_node.values().all(|n| *n <= cap),
        "{per_node:?} over cap {cap}"
    );
    let alloc = a1.get("/_cat/allocation?format=json").await;
    let searchers_listed = alloc.json.as_array().map_or(0, |rows| {
        rows.iter()
            .filter(|r| r["node.role"] == json!("searcher"))
            .count()
    });
    assert_eq!(searchers_listed, 2, "{alloc}");
    let text = explain.json["node_allocation_decisions"].to_string();
    assert!(text.contains("forced awareness"), "{explain}");
    // Searchers in zone a still answer for every shard.
    assert_eq!(a1.count("zoned").await, 100);
    drop(metastore);
}

/// A writer joining takes its share of the shards while clients ingest: the old owner
/// publishes, fences and releases each moved shard (the new one opens it without waiting
/// for a lease). Then it leaves cleanly (SIGTERM) under the same ingest. No item fails, and
/// every acknowledged document is found exactly once.
#[tokio::test]
async fn writer_join_hands_shards_over() {
    let (_data, storage) = temp_local_storage();
    let metastore =
        Floe::start_role("metastore", storage.clone(), None, &["--node-id", "m1"]).await;
    let url = metastore.grpc_url();
    let w1 = node("writer", &storage, "w1", "", &url).await;
    let s1 = node("searcher", &storage, "s1", "", &url).await;
    let c = w1.client();
    let r = c
        .put(
            &format!("/{INDEX}"),
            &json!({"settings": {"number_of_shards": SHARDS}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let rejected = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let client = tokio::spawn(ingest_counting(
        vec![w1.url()],
        0,
        stop.clone(),
        acked.clone(),
        rejected.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let w2 = node("writer", &storage, "w2", "", &url).await;
    // w2 owns some shards within a few heartbeats (bounded generously: a loaded 2-core CI
    // machine runs other multi-process tests meanwhile).
    let moved = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let c = s1.client();
        async move {
            let r = c.get("/_cat/shards?format=json").await;
            r.json.as_array().is_some_and(|rows| {
                rows.iter()
                    .any(|row| row["prirep"] == json!("p") && row["node"] == json!("w2"))
            })
        }
    })
    .await;
    assert!(moved.is_some(), "no shard moved to the new writer");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // w2 leaves cleanly (SIGTERM) under the same ingest: its shards come back to w1.
    let mut w2 = w2;
    let took = w2.terminate();
    figure("writer_clean_shutdown_ms", took.as_millis());
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    let acked: Vec<u64> = acked.lock().unwrap().clone();
    figure("docs_acknowledged_across_handover", acked.len());
    figure(
        "items_refused_across_join_and_leave",
        rejected.load(Ordering::Relaxed),
    );
    assert_eq!(
        rejected.load(Ordering::Relaxed),
        0,
        "a writer joining or leaving cleanly must fail no item"
    );
    assert!(
        acked.len() > 100,
        "ingest stalled: {} acknowledged",
        acked.len()
    );
    let r = w1.client().post_empty(&format!("/{INDEX}/_refresh")).await;
    assert_eq!(r.status, 200, "{r}");
    assert_all_found_once(&s1.client(), &acked).await;
    let handed = std::fs::read_to_string(w1.log_path()).unwrap_or_default();
    assert!(
        handed.contains("shard handed over"),
        "w1 never handed a shard over"
    );
    drop(metastore);
}

/// Updates and conditional writes sent to one writer reach the writer that owns the shard:
/// the update is resolved there, against its live documents, and its answer comes back.
#[tokio::test]
async fn updates_are_forwarded_to_the_owner() {
    let (_data, storage) = temp_local_storage();
    let metastore =
        Floe::start_role("metastore", storage.clone(), None, &["--node-id", "m1"]).await;
    let url = metastore.grpc_url();
    let w1 = node("writer", &storage, "w1", "", &url).await;
    let w2 = node("writer", &storage, "w2", "", &url).await;
    let s1 = node("searcher", &storage, "s1", "", &url).await;
    let c = w1.client();
    // Both writers in w1's view before the first write, so placement spreads the shards
    // (12 of them: all on one writer has odds of 1 in 2,048).
    let both = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let c = c.clone();
        async move {
            let r = c.get("/_cat/nodes?format=json").await;
            r.json.as_array().is_some_and(|rows| {
                rows.iter()
                    .filter(|row| row["node.role"] == json!("writer"))
                    .count()
                    == 2
            })
        }
    })
    .await;
    assert!(both.is_some(), "w1 never saw both writers");
    let r = c
        .put("/upd", &json!({"settings": {"number_of_shards": 12}}))
        .await;
    assert_eq!(r.status, 200, "{r}");
    let n = 40;
    let body: String = (0..n)
        .map(|i| format!("{{\"index\":{{\"_index\":\"upd\",\"_id\":\"d{i}\"}}}}\n{{\"n\":{i}}}\n"))
        .collect();
    let r = c.post_ndjson("/_bulk", body).await;
    assert_eq!(r.json["errors"], json!(false), "{r}");
    // Both writers own shards of the index (bounded generously for a loaded CI machine).
    let split = poll_until(Duration::from_secs(40), Duration::from_millis(100), || {
        let c = s1.client();
        async move {
            let r = c.get("/_cat/shards?format=json").await;
            let owners: std::collections::BTreeSet<String> = r
                .json
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .filter(|row| row["prirep"] == json!("p") && row["index"] == json!("upd"))
                        .filter_map(|row| row["node"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            owners.contains("w1") && owners.contains("w2")
        }
    })
    .await;
    assert!(
        split.is_some(),
        "the shards were never split between w1 and w2"
    );
    let body: String = (0..n)
        .map(|i| format!("{{\"update\":{{\"_index\":\"upd\",\"_id\":\"d{i}\"}}}}\n{{\"script\":\"ctx._source.n += 100\",\"_source\":true}}\n"))
        .collect();
    let r = c.post_ndjson("/_bulk", body).await;
    assert_eq!(r.json["errors"], json!(false), "{r}");
    for i in 0..n {
        let item = &r.json["items"][i]["update"];
        assert_eq!(item["result"], "updated", "{r}");
        assert_eq!(item["get"]["_source"]["n"], json!(i + 100), "{r}");
    }
    // A single update and a stale conditional write through w1, whatever owns the shard.
    for i in 0..n {
        let r = c
            .post(&format!("/upd/_update/d{i}"), &json!({"doc": {"m": i}}))
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.json["_version"], 3, "{r}");
        let r = c
            .put(
                &format!("/upd/_doc/d{i}?if_seq_no=0&if_primary_term=999"),
                &json!({"n": -1}),
            )
            .await;
        assert_error(&r, 409, "version_conflict_engine_exception");
    }
    let r = c.post_empty("/upd/_refresh").await;
    assert_eq!(r.status, 200, "{r}");
    let r = s1
        .client()
        .search(
            "upd",
            &json!({"size": 100, "query": {"range": {"n": {"gte": 100}}}}),
        )
        .await;
    assert_eq!(total_hits(&r), n as u64, "{r}");
    drop((w1, w2, s1, metastore));
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What one metastore costs per node: `FLOE_SIM_NODES` (default 300) simulated nodes
/// heartbeat every 500 ms for `FLOE_SIM_SECONDS` (default 6); the metastore's CPU, memory
/// and the heartbeat latency of the steady state (after the first 2 s) are printed. Shards cost the metastore role nothing: shard
/// state lives in the bucket, read and written by the nodes.
#[tokio::test]
async fn metastore_serves_many_nodes() {
    use floe_proto::rpc::metastore_client::MetastoreClient;
    use floe_proto::rpc::{HeartbeatRequest, NodeInfo};
    let nodes = env_u64("FLOE_SIM_NODES", 300) as usize;
    let seconds = env_u64("FLOE_SIM_SECONDS", 6);
    let (_data, storage) = temp_local_storage();
    let metastore =
        Floe::start_role("metastore", storage.clone(), None, &["--node-id", "m1"]).await;
    let pid = metastore.pid().unwrap();
    // Simulated nodes present the cluster secret, as real ones do.
    let secret = floe_proto::secret::ClusterSecret::new(&local_cluster_secret(&storage)).unwrap();
    let channels: Vec<tonic::transport::Channel> = (0..8)
        .map(|_| {
            tonic::transport::Endpoint::from_shared(metastore.grpc_url())
                .unwrap()
                .connect_lazy()
        })
        .collect();
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..nodes)
        .map(|i| {
            let mut client = MetastoreClient::with_interceptor(
                channels[i % channels.len()].clone(),
                secret.clone(),
            );
            let (latencies, errors) = (latencies.clone(), errors.clone());
            tokio::spawn(async move {
                let role = if i % 2 == 0 { "writer" } else { "searcher" };
                let info = NodeInfo {
                    node_id: format!("sim-{i}"),
                    role: role.into(),
                    zone: ["a", "b", "c"][i % 3].into(),
                    grpc_addr: format!("127.0.0.1:{}", 20000 + i),
                    ..Default::default()
                };
                // Spread the first heartbeats over one interval, as real nodes are.
                tokio::time::sleep(Duration::from_millis((i as u64 * 500) / nodes as u64)).await;
                let mut known = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let req = HeartbeatRequest {
                        node: Some(info.clone()),
                        known_version: known,
                    };
                    match client.heartbeat(req).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            if !r.unchanged {
                                known = r.version;
                            }
                            // Steady state: after every node joined and got the list.
                            if t.duration_since(started) > Duration::from_secs(2) {
                                let ms = t.elapsed().as_secs_f64() * 1000.0;
                                latencies.lock().unwrap().push(ms);
                            }
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500).saturating_sub(t.elapsed()))
                        .await;
                }
            })
        })
        .collect();
    // CPU of the steady state only.
    tokio::time::sleep_until((started + Duration::from_secs(2)).into()).await;
    let cpu_before = cpu_seconds(pid);
    let steady = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = steady.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    let beats = lat.len() as f64;
    figure("sim_nodes", nodes);
    figure("sim_heartbeats_per_s", format!("{:.0}", beats / elapsed));
    figure(
        "metastore_cpu_percent",
        format!("{:.1}", 100.0 * cpu / elapsed),
    );
    figure(
        "metastore_cpu_us_per_heartbeat",
        format!("{:.0}", 1e6 * cpu / beats),
    );
    figure("metastore_rss_mib", format!("{:.0}", rss_mib(pid)));
    figure("heartbeat_p50_ms", format!("{:.2}", pct(0.5)));
    figure("heartbeat_p99_ms", format!("{:.2}", pct(0.99)));
    assert_eq!(errors.load(Ordering::Relaxed), 0, "heartbeats failed");
    assert!(pct(0.99) < 500.0, "heartbeat p99 {:.0} ms", pct(0.99));
}

/// Runs `clients` concurrent query loops spread over `urls` for `secs`; returns queries/s.
async fn query_rate(urls: &[String], clients: usize, secs: u64) -> f64 {
    let q = json!({"size": 10, "query": {"match": {"message": "error"}},
        "aggs": {"s": {"terms": {"field": "status"}}}});
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let loops: Vec<_> = (0..clients)
        .map(|i| {
            let c = Client::with_timeout(urls[i % urls.len()].clone(), Duration::from_secs(30));
            let q = q.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let r = c.search(INDEX, &q).await;
                    assert_eq!(r.status, 200, "{r}");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for l in loops {
        total += l.await.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Query throughput with one searcher, then two (`FLOE_QPS_DOCS` documents, default 20,000;
/// 4 clients for `FLOE_QPS_SECONDS`, default 3). On this 2-core machine every process shares
/// the same cores, so the figure shows the overhead of fanning out more than a speed-up.
#[tokio::test]
async fn query_throughput_one_vs_two_searchers() {
    let docs = env_u64("FLOE_QPS_DOCS", 20_000) as usize;
    let secs = env_u64("FLOE_QPS_SECONDS", 3);
    let (_data, storage) = temp_local_storage();
    let metastore =
        Floe::start_role("metastore", storage.clone(), None, &["--node-id", "m1"]).await;
    let url = metastore.grpc_url();
    let w = node("writer", &storage, "w1", "", &url).await;
    let mut s1 = node("searcher", &storage, "s1", "", &url).await;
    let mut s2 = node("searcher", &storage, "s2", "", &url).await;
    let c = w.client();
    let r = c
        .put(
            &format!("/{INDEX}"),
            &json!({"settings": {"number_of_shards": 4}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    for start in (0..docs).step_by(5000) {
        c.bulk_ok("/_bulk", logs_bulk(INDEX, start..(start + 5000).min(docs)))
            .await;
    }
    c.refresh(INDEX).await;
    let nodes_seen = |n: u64, c: Client| async move {
        poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
            let c = c.clone();
            async move { c.get("/_cluster/health").await.json["number_of_nodes"] == json!(n) }
        })
        .await
        .is_some()
    };
    s2.stop();
    assert!(nodes_seen(3, s1.client()).await, "s2 never left");
    assert_eq!(s1.client().count(INDEX).await, docs as u64);
    query_rate(&[s1.url()], 4, 1).await; // warm the cache
    let one = query_rate(&[s1.url()], 4, secs).await;
    s2.start_again().await;
    assert!(nodes_seen(4, s1.client()).await, "s2 never came back");
    assert!(nodes_seen(4, s2.client()).await, "s2 never joined");
    query_rate(&[s1.url(), s2.url()], 4, 1).await;
    let two = query_rate(&[s1.url(), s2.url()], 4, secs).await;
    // Two copies of every shard: each searcher answers from its own copies.
    let r = c
        .put(
            &format!("/{INDEX}/_settings"),
            &json!({"index": {"number_of_replicas": 2}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let settings = c.get(&format!("/{INDEX}/_settings")).await;
    assert_eq!(
        settings.json[INDEX]["settings"]["index"]["number_of_replicas"],
        json!("2"),
        "{settings}"
    );
    let bad = c
        .put(
            &format!("/{INDEX}/_settings"),
            &json!({"index": {"number_of_shards": 3}}),
        )
        .await;
    assert_error(&bad, 400, "illegal_argument_exception");
    tokio::time::sleep(Duration::from_secs(2)).await;
    query_rate(&[s1.url(), s2.url()], 4, 1).await;
    let both = Some(query_rate(&[s1.url(), s2.url()], 4, secs).await);
    figure("qps_1_searcher", format!("{one:.0}"));
    figure("qps_2_searchers", format!("{two:.0}"));
    figure("qps_ratio_2_over_1", format!("{:.2}", two / one));
    if let Some(both) = both {
        figure("qps_2_searchers_2_copies", format!("{both:.0}"));
    }
    s1.stop();
    drop(metastore);
}
