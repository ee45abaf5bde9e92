//! Error responses in OpenSearch's shape.

use floe_tests::*;

/// A malformed NDJSON action line rejects the whole request with 400.
async fn malformed_bulk_line(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let body = concat!(
        "{\"index\":{\"_index\":\"logs\",\"_id\":\"1\"}}\n",
        "{\"a\":1}\n",
        "{not json\n",
        "{\"a\":2}\n",
    );
    let r = c.post_ndjson("/_bulk", body).await;
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(r.json["status"], json!(400), "{r}");
    assert!(
        r.json["error"]["type"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "error.type: {r}"
    );
    let reason = r.json["error"]["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("error.reason: {r}"));
    assert!(
        reason.to_lowercase().contains("line"),
        "error.reason should name the bad line: {r}"
    );

    // An empty bulk body is also a 400 (OpenSearch: action_request_validation_exception).
    let r = c.post_ndjson("/_bulk", "").await;
    assert_eq!(r.status, 400, "empty bulk: {r}");
    assert!(r.json["error"]["type"].is_string(), "{r}");
}

/// A bad document is an item-level error inside a 200 `_bulk`, never a lost batch.
async fn bulk_item_error(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c
        .put(
            "/strict",
            &json!({"mappings": {"properties": {"n": {"type": "long"}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");

    let docs = vec![
        ("s1".to_string(), json!({"n": 1})),
        ("s2".to_string(), json!({"n": "not-a-number"})),
        ("s3".to_string(), json!({"n": 3})),
    ];
    let r = c.post_ndjson("/_bulk", bulk_body("strict", docs)).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["errors"], json!(true), "{r}");
    let items = r.json["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items: {r}"));
    assert_eq!(items.len(), 3, "{r}");
    let bad = &items[1]["index"];
    assert_eq!(bad["_id"], json!("s2"), "{r}");
    assert_eq!(bad["status"], json!(400), "{r}");
    assert_eq!(
        bad["error"]["type"],
        json!("mapper_parsing_exception"),
        "{r}"
    );
    assert!(bad["error"]["reason"].is_string(), "{r}");
    for i in [0, 2] {
        assert_eq!(items[i]["index"]["status"], json!(201), "item {i}: {r}");
        assert!(items[i]["index"]["error"].is_null(), "item {i}: {r}");
    }

    c.refresh("strict").await;
    assert_eq!(c.count("strict").await, 2);
    for id in ["s1", "s3"] {
        let r = c.get(&format!("/strict/_doc/{id}")).await;
        assert_eq!(r.status, 200, "{r}");
    }
    let r = c.get("/strict/_doc/s2").await;
    assert_eq!(r.status, 404, "{r}");
    let r = c
        .search("strict", &json!({"query": {"range": {"n": {"gte": 0}}}}))
        .await;
    assert_eq!(total_hits(&r), 2, "{r}");
}

/// Reads of an index that does not exist: 404 `index_not_found_exception`.
async fn unknown_index(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c.get("/nope/_search").await;
    assert_error(&r, 404, "index_not_found_exception");
    let r = c
        .post("/nope/_search", &json!({"query": {"match_all": {}}}))
        .await;
    assert_error(&r, 404, "index_not_found_exception");
    let r = c.get("/nope/_count").await;
    assert_error(&r, 404, "index_not_found_exception");
    let r = c.get("/nope/_doc/1").await;
    assert_eq!(r.status, 404, "{r}");
    let r = c.get("/nope/_mapping").await;
    assert_error(&r, 404, "index_not_found_exception");
}

/// `[http] max_content_length` from the config file: a larger body gets 413.
async fn max_content_length(backend: Backend) {
    let env =
        TestEnv::start_with_config(backend, Some("[http]\nmax_content_length = 1024\n")).await;
    let c = env.client();

    let small = logs_bulk("logs", 0..2);
    assert!(small.len() < 1024);
    c.bulk_ok("/_bulk", small).await;

    let big = logs_bulk("logs", 0..40);
    assert!(big.len() > 4096);
    let r = c.post_ndjson("/_bulk", big).await;
    assert_eq!(r.status, 413, "{r}");

    // Still serving afterwards.
    let r = c.get("/").await;
    assert_eq!(r.status, 200, "{r}");
}

/// Unknown endpoints and methods: 404 or 405 with an `error` in JSON.
async fn unknown_endpoint(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    for (method, path) in [
        (Method::GET, "/_no_such_api/foo/bar"),
        (Method::DELETE, "/_cat/indices"),
        (Method::PATCH, "/_search"),
    ] {
        let r = c.send(method.clone(), path, None).await;
        assert!(r.status == 404 || r.status == 405, "{method} {path}: {r}");
        assert!(
            !r.json["error"].is_null(),
            "{method} {path}: want a JSON `error`: {r}"
        );
    }
}

e2e!(
    malformed_bulk_line,
    bulk_item_error,
    unknown_index,
    max_content_length,
    unknown_endpoint
);
