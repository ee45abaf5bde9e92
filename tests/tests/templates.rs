//! Index templates: composable templates built from component templates, legacy templates
//! when no composable one matches, applied on explicit and automatic index creation;
//! validation errors in OpenSearch's shape; templates survive a restart.

use floe_tests::*;

async fn shards_of(c: &Client, index: &str) -> String {
    let r = c.get(&format!("/{index}/_settings")).await;
    assert_eq!(r.status, 200, "{r}");
    r.json[index]["settings"]["index"]["number_of_shards"]
        .as_str()
        .unwrap_or_else(|| panic!("number_of_shards: {r}"))
        .to_string()
}

async fn templates_shape_new_indexes(backend: Backend) {
    let mut env = TestEnv::start(backend).await;
    let c = env.client();

    let r = c
        .put(
            "/_component_template/base",
            &json!({"template": {
                "settings": {"index": {"number_of_shards": 2}},
                "mappings": {"properties": {"host": {"type": "keyword"}}}
            }}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c
        .put(
            "/_index_template/logs",
            &json!({
                "index_patterns": ["logs-*"],
                "priority": 10,
                "composed_of": ["base"],
                "template": {
                    "settings": {"refresh_interval": "1s"},
                    "mappings": {"properties": {"msg": {"type": "text"}}},
                    "aliases": {"all-logs": {}}
                },
                "_meta": {"owner": "platform"}
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c
        .put(
            "/_template/old",
            &json!({"index_patterns": ["logs-*", "old-*"], "order": 1,
                    "settings": {"number_of_shards": 3}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");

    // Automatic creation by a bulk write gets the composable template (legacy ignored).
    c.bulk_ok(
        "/_bulk",
        bulk_body(
            "logs-a",
            (0..10).map(|i| {
                (
                    format!("a{i}"),
                    json!({"host": format!("h{i}"), "msg": "hello world"}),
                )
            }),
        ),
    )
    .await;
    assert_eq!(shards_of(&c, "logs-a").await, "2");
    let r = c.get("/logs-a/_mapping").await;
    let props = &r.json["logs-a"]["mappings"]["properties"];
    assert_eq!(
        (props["host"]["type"].clone(), props["msg"]["type"].clone()),
        (json!("keyword"), json!("text")),
        "{r}"
    );
    c.refresh("all-logs").await;
    assert_eq!(c.count("all-logs").await, 10);
    let r = c
        .search("logs-a", &json!({"query": {"term": {"host": "h3"}}}))
        .await;
    assert_eq!(hit_ids(&r), ["a3"], "host is a keyword, not text: {r}");

    // Explicit creation: the request's own settings win over the template's.
    let r = c
        .put("/logs-b", &json!({"settings": {"number_of_shards": 1}}))
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(shards_of(&c, "logs-b").await, "1");
    assert_eq!(
        c.get("/_alias/all-logs")
            .await
            .json
            .as_object()
            .map(|o| o.len()),
        Some(2)
    );
    // Only legacy templates match: they apply.
    assert_eq!(c.put("/old-x", &json!({})).await.status, 200);
    assert_eq!(shards_of(&c, "old-x").await, "3");
    // Nothing matches: defaults.
    assert_eq!(c.put("/plain", &json!({})).await.status, 200);
    assert_eq!(shards_of(&c, "plain").await, "1");

    // Read endpoints.
    let r = c.get("/_index_template/logs").await;
    let t = &r.json["index_templates"][0];
    assert_eq!(t["name"], "logs", "{r}");
    assert_eq!(t["index_template"]["composed_of"], json!(["base"]), "{r}");
    assert_eq!(t["index_template"]["priority"], json!(10), "{r}");
    assert_eq!(
        t["index_template"]["_meta"],
        json!({"owner": "platform"}),
        "{r}"
    );
    assert_eq!(
        t["index_template"]["template"]["settings"]["index.refresh_interval"],
        json!("1s"),
        "{r}"
    );
    let r = c.get("/_component_template/ba*").await;
    assert_eq!(r.json["component_templates"][0]["name"], "base", "{r}");
    let r = c.get("/_template/old").await;
    assert_eq!(r.json["old"]["order"], json!(1), "{r}");
    assert_eq!(
        r.json["old"]["index_patterns"],
        json!(["logs-*", "old-*"]),
        "{r}"
    );
    assert_eq!(c.head("/_index_template/logs").await.status, 200);
    assert_eq!(c.head("/_index_template/nope").await.status, 404);
    assert_eq!(c.head("/_template/old").await.status, 200);

    // Errors.
    let r = c.get("/_index_template/nope").await;
    assert_error(&r, 404, "resource_not_found_exception");
    let r = c
        .put(
            "/_index_template/x",
            &json!({"index_patterns": ["x-*"], "composed_of": ["missing"]}),
        )
        .await;
    assert_error(&r, 400, "illegal_argument_exception");
    let r = c
        .put(
            "/_index_template/clash",
            &json!({"index_patterns": ["logs-a*"], "priority": 10}),
        )
        .await;
    assert_error(&r, 400, "illegal_argument_exception");
    let r = c.put("/_index_template/bad", &json!({"index_patterns": ["bad-*"], "template": {"settings": {"number_of_shards": 0}}})).await;
    assert_error(&r, 400, "illegal_argument_exception");
    let r = c
        .put("/_index_template/bad", &json!({"template": {}}))
        .await;
    assert_error(&r, 400, "illegal_argument_exception");
    let r = c
        .put(
            "/_index_template/logs?create=true",
            &json!({"index_patterns": ["logs-*"], "priority": 10}),
        )
        .await;
    assert_error(&r, 400, "illegal_argument_exception");
    let r = c.delete("/_component_template/base").await;
    assert_error(&r, 400, "illegal_argument_exception");
    let r = c.delete("/_template/nope").await;
    assert_error(&r, 404, "resource_not_found_exception");

    // Templates live in the bucket: a restart with an empty cache keeps them.
    env.floe.stop();
    env.floe.wipe_cache();
    env.floe.start_again().await;
    let c = env.client();
    c.bulk_ok_retrying(
        "/_bulk",
        bulk_body("logs-c", [("c1".to_string(), json!({"host": "h"}))]),
        std::time::Duration::from_secs(30),
    )
    .await;
    assert_eq!(shards_of(&c, "logs-c").await, "2");

    // Without the composable template, the legacy one applies to new logs-* indexes.
    assert_eq!(c.delete("/_index_template/logs").await.status, 200);
    assert_eq!(c.delete("/_component_template/base").await.status, 200);
    assert_eq!(c.put("/logs-d", &json!({})).await.status, 200);
    assert_eq!(shards_of(&c, "logs-d").await, "3");
    assert_eq!(
        c.get("/_index_template").await.json,
        json!({"index_templates": []})
    );
}

e2e!(templates_shape_new_indexes);
