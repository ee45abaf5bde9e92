//! Cold reads: a searcher with an empty cache answers from the bucket by byte range, reading
//! a small share of the index in a few parallel rounds of GETs; answers never depend on what
//! the cache holds (cold, warm, evicting, wiped while running).
//!
//! `FLOE_COLD_DOCS` sets the size of the cold-read index (default 300,000 documents).

use std::time::{Duration, Instant};

use floe_tests::proxy::LatencyProxy;
use floe_tests::*;
use serde_json::{json, Value};

/// Added to every request to the bucket while cold queries run.
const LATENCY: Duration = Duration::from_millis(200);

fn cold_docs() -> usize {
    env_u64("FLOE_COLD_DOCS", 300_000) as usize
}

/// Log line `i`: one request every 100 ms from 2024-05-01T00:00:00Z.
fn access_log(i: usize) -> Value {
    let ms = 1_714_521_600_000u64 + i as u64 * 100;
    let status = [200, 200, 200, 200, 200, 200, 304, 404, 500, 200][i % 10];
    let path = [
        "/index.html",
        "/api/orders",
        "/img/logo.png",
        "/api/users",
        "/search",
    ][i % 5];
    json!({
        "@timestamp": ms,
        "request_id": format!("req-{i:08}"),
        "clientip": format!("10.{}.{}.{}", i % 7, (i / 7) % 251, (i * 31) % 253),
        "message": format!("GET {path} HTTP/1.1 {status} served in {} ms", i % 97),
        "status": status,
        "size": (i * 7919) % 50_000,
    })
}

fn log_mappings() -> Value {
    json!({"properties": {
        "@timestamp": {"type": "date"},
        "request_id": {"type": "keyword"},
        "clientip": {"type": "keyword"},
        "message": {"type": "text"},
        "status": {"type": "integer"},
        "size": {"type": "long"},
    }})
}

async fn load(c: &Client, index: &str, docs: usize) {
    let r = c
        .put(
            &format!("/{index}"),
            &json!({"settings": {"number_of_shards": 2}, "mappings": log_mappings()}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let step = 10_000;
    for start in (0..docs).step_by(step) {
        let end = (start + step).min(docs);
        let body = bulk_body(
            index,
            (start..end).map(|i| (format!("d{i}"), access_log(i))),
        );
        c.bulk_ok("/_bulk", body).await;
    }
    c.refresh_within(index, Duration::from_secs(120)).await;
}

/// (bytes fetched, blocks fetched) by the segment cache since start.
async fn cache_fetched(c: &Client) -> (u64, u64) {
    let r = c.get("/_floe/stats").await;
    assert_eq!(r.status, 200, "{r}");
    let cache = &r.json["cache"];
    (
        cache["bytes_fetched"].as_u64().expect("bytes_fetched"),
        cache["block_fetches"].as_u64().expect("block_fetches"),
    )
}

async fn index_bytes(c: &Client, index: &str) -> u64 {
    let r = c
        .get(&format!("/_cat/indices/{index}?format=json&bytes=b"))
        .await;
    assert_eq!(r.status, 200, "{r}");
    r.json[0]["store.size"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("store.size")
}

/// Runs `body` once with the latency on; returns the answer, the time it took, the bytes
/// and GETs it cost.
async fn timed_query(c: &Client, proxy: &LatencyProxy, body: &Value) -> (Resp, Duration, u64, u64) {
    let (bytes_before, _) = cache_fetched(c).await;
    let gets_before = proxy.requests();
    proxy.set_latency(LATENCY);
    let started = Instant::now();
    let r = c.search("cold", body).await;
    let took = started.elapsed();
    proxy.set_latency(Duration::ZERO);
    let gets = proxy.requests() - gets_before;
    let (bytes_after, _) = cache_fetched(c).await;
    assert_eq!(r.status, 200, "{r}");
    (r, took, bytes_after - bytes_before, gets)
}

/// After SIGKILL and a wiped cache, a selective term query and a last-15-minutes top-10 each
/// read at most 10% of the index, in at most 3 sequential round trips to the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_queries_read_little_in_few_round_trips() {
    let docs = cold_docs();
    let moto = MotoServer::start(S3_BUCKET).await;
    let proxy = LatencyProxy::start(moto.port).await;
    let Storage::S3 {
        bucket,
        region,
        prefix,
        access_key_id,
        secret_access_key,
        ..
    } = moto.storage()
    else {
        unreachable!()
    };
    let storage = Storage::S3 {
        endpoint: proxy.endpoint(),
        bucket,
        region,
        prefix,
        access_key_id,
        secret_access_key,
    };
    let mut floe = Floe::start_with_args(
        storage,
        None,
        &["--cache-memory", "64MiB", "--cache-disk", "16MiB"],
    )
    .await;
    let c = floe.client();
    let loading = Instant::now();
    load(&c, "cold", docs).await;
    eprintln!("loaded {docs} docs in {:?}", loading.elapsed());
    assert_eq!(
        c.count("cold").await,
        docs as u64,
        "count after the refresh"
    );
    let total = index_bytes(&c, "cold").await;

    floe.stop();
    floe.wipe_cache();
    floe.start_again().await;
    let c = floe.client();
    assert_eq!(
        c.wait_for_count("cold", docs as u64, Duration::from_secs(60))
            .await,
        Some(docs as u64)
    );
    // Background prefetch (hot caches of the served segments) has settled.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let wanted = docs / 3 + 7;
    let term = json!({"query": {"term": {"request_id": format!("req-{wanted:08}")}}});
    let (r, took, bytes, gets) = timed_query(&c, &proxy, &term).await;
    assert_eq!(hit_ids(&r), vec![format!("d{wanted}")], "{r}");
    eprintln!(
        "cold term query: {took:?} ({:.2} round trips of {LATENCY:?}), {bytes} bytes = {:.2}% of {total}, {gets} GETs",
        took.as_secs_f64() / LATENCY.as_secs_f64(),
        bytes as f64 * 100.0 / total as f64
    );
    assert!(
        bytes * 10 <= total,
        "term query read {bytes} of {total} bytes"
    );
    assert!(
        took < LATENCY * 4,
        "term query took {took:?}: more than 3 round trips"
    );

    let last_ms = 1_714_521_600_000u64 + (docs as u64 - 1) * 100;
    let recent = json!({
        "size": 10,
        "sort": [{"@timestamp": "desc"}],
        "query": {"range": {"@timestamp": {"gte": last_ms - 15 * 60 * 1000}}},
    });
    let (r, took, bytes, gets) = timed_query(&c, &proxy, &recent).await;
    let ids = hit_ids(&r);
    let expected: Vec<String> = (docs - 10..docs).rev().map(|i| format!("d{i}")).collect();
    assert_eq!(ids, expected, "{r}");
    eprintln!(
        "cold last-15-minutes top-10: {took:?} ({:.2} round trips), {bytes} bytes = {:.2}% of {total}, {gets} GETs",
        took.as_secs_f64() / LATENCY.as_secs_f64(),
        bytes as f64 * 100.0 / total as f64
    );
    assert!(bytes * 10 <= total, "top-10 read {bytes} of {total} bytes");
    assert!(
        took < LATENCY * 4,
        "top-10 took {took:?}: more than 3 round trips"
    );

    // Time to green of the writer after the kill: the shards were taken over (session
    // expiry, open, replay) without downloading them; a write lands and is searchable.
    let started = Instant::now();
    let body = bulk_body("cold", [("late".to_string(), access_log(0))]);
    c.bulk_ok_retrying("/_bulk?refresh=true", body, Duration::from_secs(60))
        .await;
    eprintln!(
        "write + refresh after the restart: {:?} for a {total}-byte index",
        started.elapsed()
    );

    // The disk tier stayed within its budget.
    let used = dir_bytes(&floe.cache_dir().join("segment-cache"));
    assert!(used <= 16 << 20, "segment cache holds {used} bytes on disk");
}

/// Bytes the files under `dir` take on disk (allocated blocks: the cache files are sparse).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// Queries of every kind the cache serves differently: terms, full text, ranges, sorts,
/// aggregations, deep pages.
fn query_suite() -> Vec<Value> {
    vec![
        json!({"query": {"term": {"request_id": "req-00001234"}}}),
        json!({"query": {"match": {"message": "orders 404"}}, "size": 20}),
        json!({"query": {"range": {"size": {"gte": 1000, "lt": 1200}}}, "sort": [{"size": "asc"}, {"@timestamp": "desc"}], "size": 15}),
        json!({"query": {"prefix": {"clientip": "10.3.1"}}, "sort": [{"@timestamp": "asc"}], "size": 5}),
        json!({"size": 0, "aggs": {"by_status": {"terms": {"field": "status"}}, "sizes": {"stats": {"field": "size"}}}}),
        json!({"size": 0, "aggs": {"per_hour": {"date_histogram": {"field": "@timestamp", "fixed_interval": "1h"}}}}),
        json!({"query": {"match_all": {}}, "from": 300, "size": 10, "sort": [{"@timestamp": "desc"}]}),
        json!({"query": {"bool": {"must": [{"match": {"message": "search"}}], "filter": [{"term": {"status": 500}}]}}, "size": 10}),
    ]
}

/// Answers without `took` (the only field that may differ).
async fn answers(c: &Client) -> Vec<Value> {
    let mut out = Vec::new();
    for q in query_suite() {
        let mut r = c.search("cold", &q).await;
        assert_eq!(r.status, 200, "{q}: {r}");
        r.json.as_object_mut().unwrap().remove("took");
        out.push(r.json);
    }
    out
}

/// The same queries answer the same with a warm cache, a cache far smaller than the index
/// (constant eviction, no disk tier), and a cache whose directory is wiped while running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_do_not_depend_on_the_cache() {
    let (_dir, storage) = temp_local_storage();
    let writer = Floe::start_with_args(storage.clone(), None, &["--node-id", "w"]).await;
    let c = writer.client();
    load(&c, "cold", 30_000).await;
    let first = answers(&c).await;
    // A time range: shards and segments outside it are pruned; exactly its documents count.
    let base = 1_714_521_600_000u64;
    let window = json!({
        "query": {"bool": {"filter": [{"range": {"@timestamp": {"gte": base + 10_000 * 100, "lt": base + 12_000 * 100}}}]}},
        "sort": [{"@timestamp": "asc"}],
        "size": 3,
        "aggs": {"n": {"value_count": {"field": "size"}}},
    });
    let r = c.search("cold", &window).await;
    assert_eq!(total_hits(&r), 2_000, "{r}");
    assert_eq!(hit_ids(&r), vec!["d10000", "d10001", "d10002"], "{r}");
    assert_eq!(r.json["aggregations"]["n"]["value"], json!(2000.0), "{r}");
    assert_eq!(
        answers(&c).await,
        first,
        "warm answers differ from the first ones"
    );

    // Room for a handful of blocks only.
    let tiny = Floe::start_with_args(
        storage.clone(),
        None,
        &[
            "--node-id",
            "tiny",
            "--cache-memory",
            "256KiB",
            "--cache-disk",
            "0",
        ],
    )
    .await;
    let t = tiny.client();
    assert_eq!(
        t.wait_for_count("cold", 30_000, Duration::from_secs(30))
            .await,
        Some(30_000)
    );
    assert_eq!(answers(&t).await, first, "answers under eviction differ");
    let r = t.get("/_floe/stats").await;
    let cache = &r.json["cache"];
    assert!(
        cache["block_fetches"].as_u64().unwrap() > 0,
        "the tiny cache fetched nothing: {r}"
    );
    // What a query cost the cache, and the node's figures in OpenSearch's shape.
    let mut profiled = query_suite()[1].clone();
    profiled["profile"] = json!(true);
    let r = t.search("cold", &profiled).await;
    let cost = &r.json["profile"]["floe"]["cache"];
    assert!(cost["block_reads"].as_u64().unwrap() > 0, "{r}");
    assert!(cost["bytes_fetched"].as_u64().is_some(), "{r}");
    let r = t.get("/_nodes/stats").await;
    assert_eq!(r.status, 200, "{r}");
    let node = r.json["nodes"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(node["indices"]["docs"]["count"], json!(30_000), "{r}");
    assert!(
        node["floe"]["cache"]["block_fetches"].as_u64().unwrap() > 0,
        "{r}"
    );
    assert!(node["floe"]["cache"]["hit_ratio"].as_f64().is_some(), "{r}");

    // A disk tier whose files vanish while it runs: reads still come out right.
    let wiped = Floe::start_with_args(
        storage,
        None,
        &[
            "--node-id",
            "wiped",
            "--cache-memory",
            "512KiB",
            "--cache-disk",
            "4MiB",
        ],
    )
    .await;
    let w = wiped.client();
    assert_eq!(
        w.wait_for_count("cold", 30_000, Duration::from_secs(30))
            .await,
        Some(30_000)
    );
    assert_eq!(
        answers(&w).await,
        first,
        "answers with a fresh cache differ"
    );
    let cache_dir = wiped.cache_dir().join("segment-cache");
    std::fs::remove_dir_all(&cache_dir).expect("wipe the segment cache");
    assert_eq!(
        answers(&w).await,
        first,
        "answers after wiping the cache differ"
    );
}

/// Pruning on any date field, not only `@timestamp`: a query that requires `created` in a
/// range skips the shards and segments whose `created` bounds miss it. Shown by what the
/// cache is asked for: a range outside every shard reads nothing; a range inside one of
/// three segments reads fewer blocks than the same range in a non-required place (which
/// cannot prune), and both answer the same documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_date_field_prunes_shards_and_segments() {
    let (_dir, storage) = temp_local_storage();
    let floe = Floe::start_with_args(storage, None, &["--node-id", "w"]).await;
    let c = floe.client();
    let r = c
        .put(
            "/ev",
            &json!({
                "settings": {"number_of_shards": 1, "refresh_interval": "-1"},
                "mappings": {"properties": {
                    "created": {"type": "date"},
                    "n": {"type": "long"},
                    "note": {"type": "text"},
                }},
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    // Three refreshes, three segments, one year of `created` each.
    for (batch, year) in [2020, 2021, 2022].into_iter().enumerate() {
        let docs = (0..300).map(|i| {
            let id = format!("y{year}-{i}");
            let doc = json!({
                "created": format!("{year}-{:02}-{:02}T12:00:00Z", i % 12 + 1, i % 28 + 1),
                "n": batch * 1000 + i,
                "note": format!("event {i} of {year} with some words to index"),
            });
            (id, doc)
        });
        c.bulk_ok("/_bulk?refresh=true", bulk_body("ev", docs))
            .await;
    }
    let segments = c.get("/_cat/segments/ev?format=json").await;
    assert!(
        segments.json.as_array().map_or(0, Vec::len) >= 2,
        "expected separate segments: {segments}"
    );
    let range_2021 = json!({"range": {"created": {"gte": "2021-01-01", "lt": "2022-01-01"}}});
    let profiled = |query: Value| {
        json!({
            "query": query,
            "size": 5,
            "sort": [{"n": "asc"}],
            "aggs": {"sum": {"sum": {"field": "n"}}},
            "profile": true,
        })
    };
    let reads = |r: &Resp| {
        r.json["profile"]["floe"]["cache"]["block_reads"]
            .as_u64()
            .unwrap()
    };

    // Required: the 2020 and 2022 segments are skipped.
    let pruned = c
        .search(
            "ev",
            &profiled(json!({"bool": {"filter": [range_2021.clone()]}})),
        )
        .await;
    assert_eq!(pruned.status, 200, "{pruned}");
    assert_eq!(total_hits(&pruned), 300, "{pruned}");
    assert_eq!(hit_ids(&pruned)[0], "y2021-0", "{pruned}");
    // Optional (one `should`, nothing required): the same documents, no pruning.
    let unpruned = c
        .search(
            "ev",
            &profiled(json!({"bool": {"should": [range_2021], "minimum_should_match": 1}})),
        )
        .await;
    assert_eq!(total_hits(&unpruned), 300, "{unpruned}");
    assert_eq!(hit_ids(&unpruned), hit_ids(&pruned));
    assert_eq!(
        pruned.json["aggregations"]["sum"],
        unpruned.json["aggregations"]["sum"]
    );
    eprintln!(
        "FIGURE block reads for a 2021 range on `created`: required {} (2 of 3 segments pruned), optional {}",
        reads(&pruned),
        reads(&unpruned)
    );
    assert!(
        reads(&pruned) < reads(&unpruned),
        "pruned {} block reads, unpruned {}",
        reads(&pruned),
        reads(&unpruned)
    );

    // Outside every document: the shard is never opened, nothing is read.
    let none = c
        .search(
            "ev",
            &profiled(json!({"range": {"created": {"gte": "2030-01-01"}}})),
        )
        .await;
    assert_eq!(none.status, 200, "{none}");
    assert_eq!(total_hits(&none), 0, "{none}");
    assert_eq!(reads(&none), 0, "{none}");
    // A bound on a non-date field with the same numbers prunes nothing.
    let numeric = c
        .search(
            "ev",
            &json!({"query": {"range": {"n": {"gte": 1000, "lt": 1300}}}}),
        )
        .await;
    assert_eq!(total_hits(&numeric), 300, "{numeric}");
}
