//! Aliases: writes through a write alias, searches through filtered and routed aliases,
//! atomic `POST /_aliases`, the read endpoints, OpenSearch's errors, and aliases that
//! survive a restart with an empty cache.

use floe_tests::*;

fn level_docs(from: usize, n: usize) -> String {
    let mut body = String::new();
    for i in from..from + n {
        let level = if i % 2 == 0 { "error" } else { "info" };
        body.push_str("{\"index\":{}}\n");
        body.push_str(&json!({"n": i, "level": level}).to_string());
        body.push('\n');
    }
    body
}

fn item_indexes(r: &Resp) -> Vec<String> {
    let mut v: Vec<String> = r.json["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items: {r}"))
        .iter()
        .map(|i| {
            i["index"]["_index"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    v.dedup();
    v
}

async fn aliases_route_reads_and_writes(backend: Backend) {
    let mut env = TestEnv::start(backend).await;
    let c = env.client();

    // A bootstrap index with its write alias, as log platforms start.
    let r = c
        .put(
            "/logs-000001",
            &json!({"aliases": {"logs": {"is_write_index": true}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c.bulk_ok("/logs/_bulk", level_docs(0, 20)).await;
    assert_eq!(item_indexes(&r), ["logs-000001"], "{r}");

    // One request moves the write index and adds a filtered and a routed alias.
    let four = json!({"settings": {"number_of_shards": 4}});
    assert_eq!(c.put("/logs-000002", &four).await.status, 200);
    let r = c
        .post(
            "/_aliases",
            &json!({"actions": [
                {"add": {"index": "logs-000001", "alias": "logs", "is_write_index": false}},
                {"add": {"index": "logs-000002", "alias": "logs", "is_write_index": true}},
                {"add": {"indices": ["logs-*"], "alias": "errors",
                         "filter": {"term": {"level": "error"}}}},
                {"add": {"index": "logs-000002", "alias": "routed", "routing": "r1"}}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["acknowledged"], true, "{r}");
    let r = c
        .bulk_ok(
            "/_bulk",
            level_docs(20, 10).replace("{\"index\":{}}", "{\"index\":{\"_index\":\"logs\"}}"),
        )
        .await;
    assert_eq!(item_indexes(&r), ["logs-000002"], "{r}");
    let r = c
        .put(
            "/logs/_doc/one?refresh=true",
            &json!({"n": 100, "level": "error"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["_index"].clone()),
        (201, json!("logs-000002")),
        "{r}"
    );
    let r = c.get("/logs/_doc/one").await;
    assert_eq!(
        r.status, 400,
        "GET _doc through an alias of two indexes: {r}"
    );
    let r = c
        .put(
            "/routed/_doc/two?refresh=true",
            &json!({"n": 101, "level": "info"}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    let r = c.get("/routed/_doc/two").await;
    assert_eq!(
        (r.status, r.json["_index"].clone()),
        (200, json!("logs-000002")),
        "{r}"
    );
    c.refresh("logs").await;

    assert_eq!(c.count("logs").await, 32);
    assert_eq!(c.count("logs-000001").await, 20);
    // The filter applies to searches through the alias only.
    assert_eq!(c.count("errors").await, 16);
    let r = c.search("errors", &json!({"size": 100})).await;
    assert!(
        hits(&r).iter().all(|h| h["_source"]["level"] == "error"),
        "{r}"
    );
    let r = c
        .search(
            "errors,logs-000001",
            &json!({"size": 0, "track_total_hits": true}),
        )
        .await;
    assert_eq!(
        total_hits(&r),
        26,
        "logs-000001 named directly is unfiltered: {r}"
    );
    // Routed alias: searches only the shard of r1 (one of four), where its write went.
    let r = c
        .search("routed", &json!({"query": {"ids": {"values": ["two"]}}}))
        .await;
    assert_eq!(
        (r.json["_shards"]["total"].clone(), hit_ids(&r)),
        (json!(1), vec!["two".to_string()]),
        "{r}"
    );
    let r = c.search("logs-000002", &json!({"size": 0})).await;
    assert_eq!(r.json["_shards"]["total"], 4, "{r}");

    // Read endpoints.
    let r = c.get("/_alias/logs").await;
    assert_eq!(
        r.json,
        json!({"logs-000001": {"aliases": {"logs": {"is_write_index": false}}},
               "logs-000002": {"aliases": {"logs": {"is_write_index": true}}}}),
        "{r}"
    );
    let r = c.get("/logs-000002/_alias").await;
    assert_eq!(
        r.json["logs-000002"]["aliases"]["routed"],
        json!({"index_routing": "r1", "search_routing": "r1"}),
        "{r}"
    );
    let r = c.get("/logs-000001").await;
    assert_eq!(
        r.json["logs-000001"]["aliases"]["errors"]["filter"],
        json!({"term": {"level": "error"}}),
        "{r}"
    );
    assert_eq!(c.head("/_alias/errors").await.status, 200);
    assert_eq!(c.head("/logs-000001/_alias/routed").await.status, 404);
    assert_eq!(c.head("/_alias/nope").await.status, 404);
    let r = c.get("/_cat/aliases?format=json").await;
    let rows = r.json.as_array().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(rows.len(), 5, "{r}");
    assert!(
        rows.iter().any(|row| row["alias"] == "logs"
            && row["index"] == "logs-000002"
            && row["is_write_index"] == "true"),
        "{r}"
    );

    // Errors, and a failed request changes nothing.
    let before = c.get("/_alias").await.json;
    let r = c
        .post(
            "/_aliases",
            &json!({"actions": [
                {"remove": {"index": "logs-000001", "alias": "logs"}},
                {"add": {"index": "missing", "alias": "x"}}
            ]}),
        )
        .await;
    assert_error(&r, 404, "index_not_found_exception");
    assert_eq!(
        c.get("/_alias").await.json,
        before,
        "a failed request changed aliases"
    );
    let r = c
        .post("/_aliases", &json!({"actions": [{"add": {"index": "logs-000001", "alias": "logs", "is_write_index": true}}]}))
        .await;
    assert_error(&r, 400, "illegal_argument_exception");
    let r = c.put("/logs-000001/_alias/logs-000002", &json!({})).await;
    assert_error(&r, 400, "invalid_alias_name_exception");
    let r = c.put("/errors", &json!({})).await;
    assert_error(&r, 400, "invalid_index_name_exception");
    let r = c.delete("/logs").await;
    assert_error(&r, 400, "illegal_argument_exception");
    let r = c.delete("/logs-000001/_alias/nope").await;
    assert_error(&r, 404, "aliases_not_found_exception");
    let r = c.get("/_alias/nope").await;
    assert_error(&r, 404, "aliases_not_found_exception");
    let r = c
        .post(
            "/_aliases",
            &json!({"actions": [{"rename": {"index": "a", "alias": "b"}}]}),
        )
        .await;
    assert_error(&r, 400, "illegal_argument_exception");
    let r = c.post("/errors/_doc", &json!({"n": 1})).await;
    assert_error(&r, 400, "illegal_argument_exception");
    assert!(
        r.json["error"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no write index"),
        "{r}"
    );
    assert_eq!(
        c.get("/_alias").await.json,
        before,
        "failed requests changed aliases"
    );

    // Aliases live in the bucket: a restart with an empty cache keeps them.
    env.floe.stop();
    env.floe.wipe_cache();
    env.floe.start_again().await;
    let c = env.client();
    assert_eq!(c.get("/_alias").await.json, before);
    assert_eq!(c.count("errors").await, 16);

    // remove_index deletes the index with its aliases, in the same request.
    let r = c
        .post(
            "/_aliases",
            &json!({"actions": [{"remove_index": {"index": "logs-000001"}}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(c.head("/logs-000001").await.status, 404);
    assert_eq!(c.count("errors").await, 6);
    let r = c.get("/_alias/logs").await;
    assert_eq!(
        r.json,
        json!({"logs-000002": {"aliases": {"logs": {"is_write_index": true}}}}),
        "{r}"
    );
    // Deleting the last index of an alias removes the alias.
    assert_eq!(c.delete("/logs-000002").await.status, 200);
    assert_eq!(c.head("/_alias/logs").await.status, 404);
    let r = c.get("/_cat/aliases").await;
    assert_eq!(r.text.trim(), "", "{r}");
}

e2e!(aliases_route_reads_and_writes);

/// Writes through the alias never stop while it rolls over: every acknowledged document is
/// found through the alias afterwards, and no write was refused.
async fn rollover_moves_the_write_alias(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c
        .put(
            "/_index_template/logs",
            &json!({"index_patterns": ["logs-*"], "template": {"settings": {"number_of_shards": 2}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c
        .put(
            "/logs-000001",
            &json!({"aliases": {"logs": {"is_write_index": true}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");

    // A loader writes through the alias the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loader = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0usize;
            let mut into = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 20_000 {
                let docs = (sent..sent + 20).map(|i| (format!("d{i}"), json!({"n": i})));
                let r = c.bulk_ok("/_bulk", bulk_body("logs", docs)).await;
                for item in r.json["items"].as_array().into_iter().flatten() {
                    into.insert(
                        item["index"]["_index"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                sent += 20;
            }
            (sent, into)
        })
    };
    let mut rolled = Vec::new();
    for _ in 0..3 {
        // Roll over once the write index holds some published documents.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            c.refresh("logs").await;
            let r = c
                .post("/logs/_rollover", &json!({"conditions": {"max_docs": 40}}))
                .await;
            assert_eq!(r.status, 200, "{r}");
            if r.json["rolled_over"] == true {
                assert_eq!(r.json["conditions"]["[max_docs: 40]"], true, "{r}");
                rolled.push(r.json["new_index"].as_str().unwrap_or_default().to_string());
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never rolled over: {r}"
            );
        }
    }
    assert_eq!(rolled, ["logs-000002", "logs-000003", "logs-000004"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, into) = loader.await.expect("loader");
    assert!(into.len() >= 2, "writes went to one index only: {into:?}");
    c.refresh("logs").await;
    assert_eq!(
        c.count("logs").await,
        sent as u64,
        "every acknowledged write is found"
    );
    assert_eq!(
        c.get("/logs-000004/_settings").await.json["logs-000004"]["settings"]["index"]
            ["number_of_shards"],
        "2"
    );
    let r = c.get("/_alias/logs").await;
    assert_eq!(
        r.json["logs-000004"]["aliases"]["logs"]["is_write_index"], true,
        "{r}"
    );
    assert_eq!(
        r.json["logs-000001"]["aliases"]["logs"]["is_write_index"], false,
        "{r}"
    );

    // Conditions not met, dry run: nothing changes.
    let r = c
        .post(
            "/logs/_rollover",
            &json!({"conditions": {"max_docs": 1_000_000, "max_age": "1d"}}),
        )
        .await;
    assert_eq!(
        (r.json["rolled_over"].clone(), r.json["new_index"].clone()),
        (json!(false), json!("logs-000005")),
        "{r}"
    );
    let r = c.post("/logs/_rollover?dry_run=true", &json!({})).await;
    assert_eq!(
        (r.json["rolled_over"].clone(), r.json["dry_run"].clone()),
        (json!(false), json!(true)),
        "{r}"
    );
    assert_eq!(c.head("/logs-000005").await.status, 404);

    // An alias with one index and no explicit write flag moves whole; a new name may be given.
    assert_eq!(
        c.put("/solo", &json!({"aliases": {"current": {}}}))
            .await
            .status,
        200
    );
    let r = c
        .post(
            "/current/_rollover/solo-next",
            &json!({"settings": {"number_of_shards": 3}}),
        )
        .await;
    assert_eq!(r.json["rolled_over"], true, "{r}");
    let r = c.get("/_alias/current").await;
    assert_eq!(
        r.json,
        json!({"solo-next": {"aliases": {"current": {}}}}),
        "{r}"
    );
    assert_eq!(
        c.get("/solo-next/_settings").await.json["solo-next"]["settings"]["index"]
            ["number_of_shards"],
        "3"
    );

    // Errors.
    assert_error(
        &c.post("/logs-000001/_rollover", &json!({})).await,
        400,
        "illegal_argument_exception",
    );
    assert_error(
        &c.post("/nope/_rollover", &json!({})).await,
        404,
        "aliases_not_found_exception",
    );
    assert_error(
        &c.post(
            "/logs/_rollover",
            &json!({"conditions": {"max_age": "soon"}}),
        )
        .await,
        400,
        "illegal_argument_exception",
    );
    assert_error(
        &c.post("/current/_rollover", &json!({})).await,
        400,
        "illegal_argument_exception",
    );
}

e2e!(rollover_moves_the_write_alias);
