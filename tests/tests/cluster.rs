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
        let args = ["--node-id", id, "--zone", zone, "--metastore", &url];
        writers.push(Floe::start_role("writer", storage.clone(), None, &args).await);
    }
    for (id, zone) in [("s1", "a"), ("s2", "b")] {
        let args = ["--node-id", id, "--zone", zone, "--metastore", &url];
        searchers.push(Floe::start_role("searcher", storage.clone(), None, &args).await);
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
            Ok(r) => acked.lock().unwrap().extend(acknowledged(&r)),
            Err(_) => at = (at + 1) % urls.len(),
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
    let writer = Floe::start_role(
        "writer",
        storage.clone(),
        None,
        &["--node-id", "w1", "--zone", "a", "--metastore", &url],
    )
    .await;
    let mut searchers = Vec::new();
    for (id, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")] {
        let args = ["--node-id", id, "--zone", zone, "--metastore", &url];
        searchers.push(Floe::start_role("searcher", storage.clone(), None, &args).await);
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
    let text = explain.json["node_allocation_decisions"].to_string();
    assert!(text.contains("forced awareness"), "{explain}");
    // Searchers in zone a still answer for every shard.
    assert_eq!(a1.count("zoned").await, 100);
    drop(metastore);
}

/// A writer joining takes its share of the shards while clients ingest: the old owner
/// publishes, fences and releases each moved shard (the new one opens it without waiting
/// for a lease), and every acknowledged document is found exactly once.
#[tokio::test]
async fn writer_join_hands_shards_over() {
    let (_data, storage) = temp_local_storage();
    let metastore =
        Floe::start_role("metastore", storage.clone(), None, &["--node-id", "m1"]).await;
    let url = metastore.grpc_url();
    let w1 = Floe::start_role(
        "writer",
        storage.clone(),
        None,
        &["--node-id", "w1", "--metastore", &url],
    )
    .await;
    let s1 = Floe::start_role(
        "searcher",
        storage.clone(),
        None,
        &["--node-id", "s1", "--metastore", &url],
    )
    .await;
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
    let client = tokio::spawn(ingest(vec![w1.url()], 0, stop.clone(), acked.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let w2 = Floe::start_role(
        "writer",
        storage.clone(),
        None,
        &["--node-id", "w2", "--metastore", &url],
    )
    .await;
    // w2 owns some shards within a few heartbeats.
    let moved = poll_until(Duration::from_secs(15), Duration::from_millis(100), || {
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
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    let acked: Vec<u64> = acked.lock().unwrap().clone();
    figure("docs_acknowledged_across_handover", acked.len());
    assert!(
        acked.len() > 100,
        "ingest stalled: {} acknowledged",
        acked.len()
    );
    let r = w2.client().post_empty(&format!("/{INDEX}/_refresh")).await;
    assert_eq!(r.status, 200, "{r}");
    assert_all_found_once(&s1.client(), &acked).await;
    let handed = std::fs::read_to_string(w1.log_path()).unwrap_or_default();
    assert!(
        handed.contains("shard handed over"),
        "w1 never handed a shard over"
    );
    drop(metastore);
}
