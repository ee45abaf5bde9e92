//! Admin endpoints: HEAD index, cluster health, `_cat/indices`, DELETE index.

use std::time::{Duration, Instant};

use floe_tests::*;

const N: usize = 50;

async fn head_health_cat(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    c.bulk_ok("/_bulk", logs_bulk("logs", 0..N)).await;
    c.refresh("logs").await;

    assert_eq!(c.head("/logs").await.status, 200);
    assert_eq!(c.head("/nope").await.status, 404);

    let r = c.get("/_cluster/health").await;
    assert_eq!(r.status, 200, "{r}");
    let status = r.json["status"]
        .as_str()
        .unwrap_or_else(|| panic!("status: {r}"));
    assert!(["green", "yellow", "red"].contains(&status), "{r}");

    let r = c.get("/_cat/indices?v").await;
    assert_eq!(r.status, 200, "{r}");
    let mut lines = r.text.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.split_whitespace().any(|w| w == "index"),
        "header line with `index`: {r}"
    );
    assert!(
        header.split_whitespace().any(|w| w == "docs.count"),
        "header line with `docs.count`: {r}"
    );
    assert!(
        lines.any(|l| l.split_whitespace().any(|w| w == "logs")),
        "a line for `logs`: {r}"
    );

    let r = c.get("/_cat/indices?format=json").await;
    assert_eq!(r.status, 200, "{r}");
    let rows = r
        .json
        .as_array()
        .unwrap_or_else(|| panic!("JSON array: {r}"));
    let row = rows
        .iter()
        .find(|row| row["index"] == "logs")
        .unwrap_or_else(|| panic!("no logs row: {r}"));
    // OpenSearch renders cat values as strings.
    let docs = &row["docs.count"];
    assert!(
        docs == &json!(N.to_string()) || docs == &json!(N),
        "docs.count: {r}"
    );
}

/// DELETE removes the index (404 afterwards) and its objects under `indexes/<uuid>/`; a new
/// index of the same name starts empty.
async fn delete_index(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    c.bulk_ok("/_bulk", logs_bulk("logs", 0..N)).await;
    c.refresh("logs").await;
    assert_eq!(c.count("logs").await, N as u64);

    let r = c.get("/logs/_settings").await;
    assert_eq!(r.status, 200, "{r}");
    let uuid = r.json["logs"]["settings"]["index"]["uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("logs.settings.index.uuid: {r}"))
        .to_string();
    let data_prefix = format!("indexes/{uuid}/");
    let before = env.storage_keys(&data_prefix).await;
    assert!(
        !before.is_empty(),
        "no objects under {data_prefix} after refresh"
    );

    let r = c.delete("/logs").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["acknowledged"], json!(true), "{r}");

    let r = c
        .post("/logs/_search", &json!({"query": {"match_all": {}}}))
        .await;
    assert_error(&r, 404, "index_not_found_exception");
    assert_eq!(c.head("/logs").await.status, 404);
    let r = c.delete("/logs").await;
    assert_error(&r, 404, "index_not_found_exception");

    // Objects may be removed in the background: allow 30 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    let left = loop {
        let left = env.storage_keys(&data_prefix).await;
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        left.is_empty(),
        "{} objects left under {data_prefix} 30 s after DELETE: {:?}",
        left.len(),
        &left[..left.len().min(20)]
    );

    // Same name again: a new, empty index.
    let r = c
        .put("/logs/_doc/fresh", &json!({"message": "new index"}))
        .await;
    assert_eq!(r.status, 201, "{r}");
    c.refresh("logs").await;
    assert_eq!(c.count("logs").await, 1);
    let r = c.get("/logs/_settings").await;
    assert_ne!(
        r.json["logs"]["settings"]["index"]["uuid"],
        json!(uuid),
        "a recreated index gets a new uuid: {r}"
    );
}

/// `_floe/stats` counts what reached the bucket: a refresh uploads segments, a cold search
/// after a restart with an empty cache downloads them.
async fn storage_stats(backend: Backend) {
    let mut env = TestEnv::start(backend).await;
    let c = env.client();
    c.bulk_ok("/_bulk", logs_bulk("logs", 0..N)).await;
    c.refresh("logs").await;
    let r = c.get("/_floe/stats").await;
    assert_eq!(r.status, 200, "{r}");
    let puts = r.json["storage"]["puts"].as_u64().unwrap_or(0);
    assert!(puts >= 3, "translog, metastore and segment PUTs: {r}");
    assert!(
        r.json["storage"]["bytes_written"].as_u64().unwrap_or(0) > 1000,
        "{r}"
    );
    assert!(
        r.json["indexing_pressure"]["limit_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{r}"
    );
    env.floe.stop();
    env.floe.wipe_cache();
    env.floe.start_again().await;
    let c = env.client();
    assert_eq!(c.count("logs").await, N as u64);
    let r = c.get("/_floe/stats").await;
    assert!(r.json["storage"]["gets"].as_u64().unwrap_or(0) >= 1, "{r}");
    assert!(
        r.json["storage"]["bytes_read"].as_u64().unwrap_or(0) > 1000,
        "{r}"
    );
}

/// `_block/write` refuses writes (403) and shows in the settings; `_flush` makes writes
/// searchable; `_resolve/index` names indexes with their aliases and aliases with theirs.
async fn block_flush_resolve(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c.put("/app-1", &json!({"aliases": {"app": {}}})).await;
    assert_eq!(r.status, 200, "{r}");
    let r = c.put("/app-1/_doc/1", &json!({"a": 1})).await;
    assert_eq!(r.status, 201, "{r}");
    let r = c.post_empty("/app-1/_flush").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        c.search("app-1", &json!({})).await.json["hits"]["total"]["value"],
        1
    );

    let r = c.put("/app-*/_block/write", &json!({})).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json["indices"],
        json!([{"name": "app-1", "blocked": true}]),
        "{r}"
    );
    let r = c.put("/app-1/_doc/2", &json!({"a": 2})).await;
    assert_error(&r, 403, "cluster_block_exception");
    let r = c.get("/app-1/_settings").await;
    assert_eq!(
        r.json["app-1"]["settings"]["index"]["blocks"]["write"], "true",
        "{r}"
    );
    assert_error(
        &c.put("/app-1/_block/read", &json!({})).await,
        400,
        "illegal_argument_exception",
    );
    // Lifting the block lets writes in again.
    let r = c
        .put("/app-1/_settings", &json!({"index.blocks.write": false}))
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(c.put("/app-1/_doc/2", &json!({"a": 2})).await.status, 201);

    let r = c.get("/_resolve/index/app*").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json["indices"],
        json!([{"name": "app-1", "attributes": ["open"], "aliases": ["app"]}]),
        "{r}"
    );
    assert_eq!(
        r.json["aliases"],
        json!([{"name": "app", "indices": ["app-1"]}]),
        "{r}"
    );
}

/// `_cat` parameters (`h`, `s`, `help`), `GET /_cat`, `_cat/plugins`, `_stats`, `_nodes`,
/// `_cluster/stats`, and `_close`/`_open`.
async fn stats_close_cat_params(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    c.bulk_ok("/_bulk?refresh=true", logs_bulk("logs-a", 0..30))
        .await;
    c.bulk_ok("/_bulk?refresh=true", logs_bulk("logs-b", 30..40))
        .await;

    // `bytes=` units on every `_cat` that shows sizes: whole units, consistent.
    let b = c
        .get("/_cat/shards?h=index,shard,store&bytes=b&format=json&s=index,shard")
        .await;
    let kb = c
        .get("/_cat/shards?h=index,shard,store&bytes=kb&format=json&s=index,shard")
        .await;
    assert_eq!(b.status, 200, "{b}");
    for (x, y) in b
        .json
        .as_array()
        .unwrap()
        .iter()
        .zip(kb.json.as_array().unwrap())
    {
        let bytes: u64 = x["store"].as_str().unwrap().parse().unwrap();
        let kbytes: u64 = y["store"].as_str().unwrap().parse().unwrap();
        assert_eq!(bytes / 1024, kbytes, "{b} {kb}");
    }
    let seg = c.get("/_cat/segments?h=size&bytes=b&format=json").await;
    assert!(
        seg.json[0]["size"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0,
        "{seg}"
    );
    let r = c
        .get("/_cat/indices?h=index,docs.count&s=docs.count:desc&format=json")
        .await;
    assert_eq!(
        r.json,
        json!([{"index": "logs-a", "docs.count": "30"}, {"index": "logs-b", "docs.count": "10"}]),
        "{r}"
    );
    let r = c.get("/_cat/indices?h=i*&s=index:desc&v").await;
    let lines: Vec<&str> = r.text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        vec!["index"],
        "{r}"
    );
    assert_eq!(lines[1].trim(), "logs-b", "{r}");
    assert!(c
        .get("/_cat/indices?help")
        .await
        .text
        .contains("docs.count"));
    assert!(c.get("/_cat").await.text.contains("/_cat/indices"));
    assert_eq!(c.get("/_cat/plugins?format=json").await.json, json!([]));

    let r = c.get("/logs-a/_stats").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json["indices"]["logs-a"]["primaries"]["docs"]["count"], 30,
        "{r}"
    );
    assert!(r.json["indices"].get("logs-b").is_none(), "{r}");
    let r = c.get("/_stats/docs").await;
    assert_eq!(r.json["_all"]["primaries"]["docs"]["count"], 40, "{r}");
    let r = c.get("/_nodes").await;
    assert_eq!(r.json["_nodes"]["total"], 1, "{r}");
    let r = c.get("/logs-a/_search_shards").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["indices"], json!({"logs-a": {}}), "{r}");
    let shards = r.json["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 1, "{r}");
    assert_eq!(
        (
            shards[0][0]["primary"].clone(),
            shards[0][0]["index"].clone(),
            shards[0][0]["state"].clone()
        ),
        (json!(true), json!("logs-a"), json!("STARTED")),
        "{r}"
    );
    assert_eq!(c.get("/_cluster/stats").await.json["indices"]["count"], 2);

    // Closed: searches and writes refused, wildcards skip it, its data comes back on open.
    let r = c.post_empty("/logs-a/_close").await;
    assert_eq!(r.json["indices"]["logs-a"]["closed"], true, "{r}");
    assert_error(
        &c.post("/logs-a/_search", &json!({})).await,
        400,
        "index_closed_exception",
    );
    assert_eq!(c.count("logs-*").await, 10);
    let r = c.put("/logs-a/_doc/x", &json!({"a": 1})).await;
    assert_error(&r, 400, "index_closed_exception");
    let r = c.get("/_cat/indices/logs-a?h=status").await;
    assert_eq!(r.text.trim(), "close", "{r}");
    let r = c.post_empty("/logs-a/_open").await;
    assert_eq!(r.json["acknowledged"], true, "{r}");
    assert_eq!(c.count("logs-a").await, 30);
}

/// `GET _settings` views (`flat_settings`, `/_settings/{name}`, `include_defaults`) and
/// `index.max_result_window`.
async fn settings_views(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c
        .put(
            "/sv",
            &json!({"settings": {"number_of_shards": 2, "refresh_interval": "2s"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c.get("/sv/_settings?flat_settings=true").await;
    let s = &r.json["sv"]["settings"];
    assert_eq!(s["index.number_of_shards"], "2", "{r}");
    assert_eq!(s["index.refresh_interval"], "2s", "{r}");
    let r = c.get("/sv/_settings/index.number_of_*").await;
    assert_eq!(
        r.json["sv"]["settings"],
        json!({"index": {"number_of_shards": "2", "number_of_replicas": "1"}}),
        "{r}"
    );
    let r = c
        .get("/sv/_settings/refresh_interval?include_defaults=true")
        .await;
    assert_eq!(
        r.json["sv"]["settings"],
        json!({"index": {"refresh_interval": "2s"}}),
        "{r}"
    );
    assert!(r.json["sv"].get("defaults").is_some(), "{r}");

    let r = c.post("/sv/_search", &json!({"size": 15000})).await;
    assert_error(&r, 400, "illegal_argument_exception");
    assert!(r.text.contains("[10000]"), "{r}");
    let r = c
        .put(
            "/sv/_settings",
            &json!({"index": {"max_result_window": 20000}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        c.post("/sv/_search", &json!({"size": 15000})).await.status,
        200
    );
    let r = c.get("/sv/_settings/max_result_window").await;
    assert_eq!(
        r.json["sv"]["settings"]["index"]["max_result_window"], "20000",
        "{r}"
    );

    // Hidden indexes: skipped by wildcards unless expand_wildcards asks; named, they answer.
    let r = c
        .put("/hid", &json!({"settings": {"index.hidden": true}}))
        .await;
    assert_eq!(r.status, 200, "{r}");
    c.bulk_ok("/_bulk?refresh=true", logs_bulk("hid", 0..3))
        .await;
    c.bulk_ok("/_bulk?refresh=true", logs_bulk("vis", 0..2))
        .await;
    let count = |path: String| {
        let c = c.clone();
        async move { c.get(&path).await.json["count"].clone() }
    };
    assert_eq!(count("/*/_count".into()).await, json!(2));
    assert_eq!(
        count("/*/_count?expand_wildcards=all".into()).await,
        json!(5)
    );
    assert_eq!(count("/hid/_count".into()).await, json!(3));
    assert_eq!(
        count("/*/_count?expand_wildcards=none".into()).await,
        json!(0)
    );
    let r = c.get("/nomatch*/_search?allow_no_indices=false").await;
    assert_error(&r, 404, "index_not_found_exception");
    assert_eq!(c.get("/nomatch*/_search").await.status, 200);
    let r = c.get("/hid/_settings/index.hidden").await;
    assert_eq!(r.json["hid"]["settings"]["index"]["hidden"], "true", "{r}");
}

e2e!(
    settings_views,
    stats_close_cat_params,
    head_health_cat,
    delete_index,
    storage_stats,
    block_flush_resolve
);
