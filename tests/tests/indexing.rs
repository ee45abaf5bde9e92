//! Mappings, explicit index creation with shards, single-document index/update, and
//! `refresh_interval`.

use std::time::{Duration, Instant};

use floe_tests::*;

/// Dynamic mapping of the auto-created `logs` index.
async fn dynamic_mapping(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    c.bulk_ok("/_bulk", logs_bulk("logs", 0..20)).await;

    let r = c.get("/logs/_mapping").await;
    assert_eq!(r.status, 200, "{r}");
    let props = &r.json["logs"]["mappings"]["properties"];
    assert_eq!(props["status"]["type"], json!("long"), "status: {r}");
    assert_eq!(props["size"]["type"], json!("long"), "size: {r}");
    assert_eq!(props["message"]["type"], json!("text"), "message: {r}");
    assert_eq!(
        props["message"]["fields"]["keyword"]["type"],
        json!("keyword"),
        "message.keyword: {r}"
    );
    assert_eq!(
        props["@timestamp"]["type"],
        json!("date"),
        "@timestamp: {r}"
    );
    assert_eq!(props["bytes"]["type"], json!("float"), "bytes: {r}");
    assert_eq!(props["ok"]["type"], json!("boolean"), "ok: {r}");
}

/// `PUT /typed` with 3 shards and an explicit mapping; a second PUT fails; docs spread over
/// the shards are all found, sorted and paged across shards.
async fn create_index_with_shards(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let body = json!({
        "settings": {"number_of_shards": 3, "refresh_interval": "1s"},
        "mappings": {"properties": {"n": {"type": "long"}, "tag": {"type": "keyword"}}},
    });
    let r = c.put("/typed", &body).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["acknowledged"], json!(true), "{r}");
    assert_eq!(r.json["index"], json!("typed"), "{r}");

    let r = c.put("/typed", &body).await;
    assert_error(&r, 400, "resource_already_exists_exception");

    let r = c.get("/typed/_mapping").await;
    assert_eq!(r.status, 200, "{r}");
    let props = &r.json["typed"]["mappings"]["properties"];
    assert_eq!(props["n"]["type"], json!("long"), "{r}");
    assert_eq!(props["tag"]["type"], json!("keyword"), "{r}");

    let r = c.get("/typed/_settings").await;
    assert_eq!(r.status, 200, "{r}");
    let idx = &r.json["typed"]["settings"]["index"];
    // OpenSearch renders setting values as strings; accept numbers too.
    assert!(
        idx["number_of_shards"] == json!("3") || idx["number_of_shards"] == json!(3),
        "{r}"
    );
    assert_eq!(idx["refresh_interval"], json!("1s"), "{r}");
    assert!(
        idx["uuid"].as_str().is_some_and(|u| !u.is_empty()),
        "index.uuid: {r}"
    );

    const N: usize = 60;
    let docs = (0..N).map(|i| {
        (format!("t-{i}"), {
            let tag = ["a", "b", "c"][i % 3];
            json!({"n": i, "tag": tag})
        })
    });
    c.bulk_ok("/_bulk", bulk_body("typed", docs)).await;
    c.refresh("typed").await;
    assert_eq!(c.count("typed").await, N as u64);

    let r = c
        .search("typed", &json!({"query": {"match_all": {}}, "size": 0}))
        .await;
    assert_eq!(r.json["_shards"]["total"], json!(3), "_shards.total: {r}");
    assert_eq!(r.json["_shards"]["failed"], json!(0), "{r}");
    assert_eq!(total_hits(&r), N as u64);
    assert_eq!(hits(&r).len(), 0, "size 0: {r}");

    let r = c
        .search(
            "typed",
            &json!({"query": {"term": {"tag": "a"}}, "size": N}),
        )
        .await;
    assert_eq!(total_hits(&r), (N / 3) as u64, "{r}");
    let r = c
        .search(
            "typed",
            &json!({"query": {"range": {"n": {"gte": 10, "lt": 20}}}}),
        )
        .await;
    assert_eq!(total_hits(&r), 10, "{r}");

    // Cross-shard merge of sorted results, with paging.
    let r = c
        .search("typed", &json!({"sort": [{"n": "asc"}], "size": N}))
        .await;
    let want: Vec<String> = (0..N).map(|i| format!("t-{i}")).collect();
    assert_eq!(hit_ids(&r), want, "{r}");
    let r = c
        .search(
            "typed",
            &json!({"sort": [{"n": "desc"}], "from": 25, "size": 10}),
        )
        .await;
    let want: Vec<String> = (0..N)
        .rev()
        .skip(25)
        .take(10)
        .map(|i| format!("t-{i}"))
        .collect();
    assert_eq!(hit_ids(&r), want, "{r}");

    for i in 0..N {
        let r = c.get(&format!("/typed/_doc/t-{i}")).await;
        assert_eq!(r.status, 200, "t-{i}: {r}");
        assert_eq!(r.json["_source"]["n"], json!(i), "{r}");
    }
}

/// `PUT /_doc/{id}` and `POST /_doc` create (201); re-PUT updates (200) without a new doc.
async fn index_and_update_doc(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();

    let r = c
        .put("/docs/_doc/abc", &json!({"v": 1, "msg": "first version"}))
        .await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.json["result"], json!("created"), "{r}");
    assert_eq!(r.json["_id"], json!("abc"), "{r}");
    assert_eq!(r.json["_index"], json!("docs"), "{r}");
    let v1 = r.json["_version"]
        .as_u64()
        .unwrap_or_else(|| panic!("_version: {r}"));

    let r = c
        .post("/docs/_doc", &json!({"v": 10, "msg": "generated id"}))
        .await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.json["result"], json!("created"), "{r}");
    let generated = r.json["_id"]
        .as_str()
        .unwrap_or_else(|| panic!("_id: {r}"))
        .to_string();
    assert!(!generated.is_empty() && generated != "abc", "{r}");

    let r = c
        .put("/docs/_doc/abc", &json!({"v": 2, "msg": "second version"}))
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["result"], json!("updated"), "{r}");
    let v2 = r.json["_version"]
        .as_u64()
        .unwrap_or_else(|| panic!("_version: {r}"));
    assert!(v2 > v1, "_version must grow: {v1} -> {v2}");

    c.refresh("docs").await;
    assert_eq!(
        c.count("docs").await,
        2,
        "an update must not add a document"
    );

    let r = c.get("/docs/_doc/abc").await;
    assert_eq!(
        r.json["_source"],
        json!({"v": 2, "msg": "second version"}),
        "{r}"
    );
    let r = c.get(&format!("/docs/_doc/{generated}")).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["_source"]["v"], json!(10), "{r}");

    // The old version is gone from the index, the new one is there.
    let r = c
        .search("docs", &json!({"query": {"match": {"msg": "first"}}}))
        .await;
    assert_eq!(total_hits(&r), 0, "old version still searchable: {r}");
    let r = c
        .search("docs", &json!({"query": {"match": {"msg": "second"}}}))
        .await;
    assert_eq!(hit_ids(&r), vec!["abc".to_string()], "{r}");
    let r = c
        .search("docs", &json!({"query": {"term": {"v": 1}}}))
        .await;
    assert_eq!(total_hits(&r), 0, "{r}");
}

/// Without an explicit `_refresh`, new docs become searchable within 10 s (default
/// `refresh_interval` of an auto-created index, and an explicit `"1s"`).
async fn refresh_interval(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c
        .put(
            "/explicit",
            &json!({"settings": {"refresh_interval": "1s"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");

    for index in ["auto", "explicit"] {
        let r = c
            .put(&format!("/{index}/_doc/1"), &json!({"msg": "hello"}))
            .await;
        assert_eq!(r.status, 201, "{r}");
        let started = Instant::now();
        let n = c.wait_for_count(index, 1, Duration::from_secs(10)).await;
        assert_eq!(
            n,
            Some(1),
            "{index}: doc not searchable 10 s after indexing without _refresh"
        );
        let r = c
            .search(index, &json!({"query": {"match": {"msg": "hello"}}}))
            .await;
        assert_eq!(hit_ids(&r), vec!["1".to_string()], "{r}");
        eprintln!("{index}: searchable after {:?}", started.elapsed());
    }
}

/// Mappings as log shippers send them: `dynamic_templates` (`match_mapping_type`, `match`,
/// `path_match`), multi-fields under any name, `format: epoch_second`,
/// `dynamic: strict_allow_templates`, and `PUT _mapping` adding multi-fields and templates.
async fn templates_and_multi_fields(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c
        .put(
            "/shipped",
            &json!({"mappings": {
                "dynamic_templates": [
                    {"ips": {"match": "*_ip", "mapping": {"type": "ip"}}},
                    {"labels": {"path_match": "labels.*", "mapping": {"type": "keyword"}}},
                    {"strings": {"match_mapping_type": "string", "mapping": {"type": "keyword", "fields": {"text": {"type": "text"}}}}}
                ],
                "properties": {
                    "title": {"type": "text", "fields": {"raw": {"type": "keyword"}}},
                    "ts": {"type": "date", "format": "epoch_second"}
                }
            }}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let doc = json!({"title": "Hello World", "client_ip": "10.0.0.1", "note": "abc def",
        "labels": {"env": "prod"}, "ts": 1714521600, "n": 3});
    let r = c.put("/shipped/_doc/1?refresh=true", &doc).await;
    assert_eq!(r.status, 201, "{r}");
    let r = c.get("/shipped/_mapping").await;
    let props = &r.json["shipped"]["mappings"]["properties"];
    assert_eq!(props["client_ip"]["type"], "ip", "{r}");
    assert_eq!(
        props["labels"]["properties"]["env"]["type"], "keyword",
        "{r}"
    );
    assert_eq!(props["note"]["type"], "keyword", "{r}");
    assert_eq!(props["note"]["fields"]["text"]["type"], "text", "{r}");
    assert_eq!(props["n"]["type"], "long", "not a string: no template: {r}");
    assert_eq!(props["title"]["fields"]["raw"]["type"], "keyword", "{r}");
    assert_eq!(props["ts"]["format"], "epoch_second", "{r}");
    assert_eq!(
        r.json["shipped"]["mappings"]["dynamic_templates"][0]["ips"]["match"], "*_ip",
        "{r}"
    );
    let one = |q: Value| {
        let c = c.clone();
        async move {
            let r = c.search("shipped", &json!({"query": q})).await;
            total_hits(&r)
        }
    };
    assert_eq!(one(json!({"term": {"title.raw": "Hello World"}})).await, 1);
    assert_eq!(one(json!({"term": {"title.raw": "hello"}})).await, 0);
    assert_eq!(one(json!({"match": {"title": "hello"}})).await, 1);
    assert_eq!(one(json!({"term": {"note": "abc def"}})).await, 1);
    assert_eq!(one(json!({"match": {"note.text": "def"}})).await, 1);
    assert_eq!(one(json!({"term": {"labels.env": "prod"}})).await, 1);
    assert_eq!(
        one(
            json!({"range": {"ts": {"gte": "2024-05-01T00:00:00Z", "lte": "2024-05-01T00:00:00Z"}}})
        )
        .await,
        1,
        "epoch seconds read as seconds"
    );
    let r = c
        .search(
            "shipped",
            &json!({"size": 0, "aggs": {"t": {"terms": {"field": "title.raw"}}}}),
        )
        .await;
    assert_eq!(
        r.json["aggregations"]["t"]["buckets"][0]["key"], "Hello World",
        "{r}"
    );

    // PUT _mapping: a new multi-field on an existing field, a new template; a type change
    // is refused.
    let r = c
        .put(
            "/shipped/_mapping",
            &json!({"properties": {"title": {"type": "text", "fields": {"en": {"type": "text"}}}},
                "dynamic_templates": [{"longs": {"match_mapping_type": "long", "mapping": {"type": "double"}}}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c.get("/shipped/_mapping").await;
    let m = &r.json["shipped"]["mappings"];
    assert_eq!(
        m["properties"]["title"]["fields"]["en"]["type"], "text",
        "{r}"
    );
    assert_eq!(
        m["properties"]["title"]["fields"]["raw"]["type"], "keyword",
        "{r}"
    );
    assert_eq!(m["dynamic_templates"].as_array().unwrap().len(), 4, "{r}");
    let r = c.put("/shipped/_doc/2", &json!({"count": 7})).await;
    assert_eq!(r.status, 201, "{r}");
    let r = c.get("/shipped/_mapping").await;
    assert_eq!(
        r.json["shipped"]["mappings"]["properties"]["count"]["type"], "double",
        "{r}"
    );
    let r = c
        .put(
            "/shipped/_mapping",
            &json!({"properties": {"n": {"type": "keyword"}}}),
        )
        .await;
    assert_eq!(r.status, 400, "{r}");

    // strict_allow_templates: only fields a template maps.
    let r = c
        .put(
            "/strict",
            &json!({"mappings": {"dynamic": "strict_allow_templates",
                "dynamic_templates": [{"tags": {"match": "tag_*", "mapping": {"type": "keyword"}}}]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        c.put("/strict/_doc/1", &json!({"tag_a": "x"})).await.status,
        201
    );
    let r = c.put("/strict/_doc/2", &json!({"other": "x"})).await;
    assert_error(&r, 400, "strict_dynamic_mapping_exception");
    let r = c
        .put(
            "/bad",
            &json!({"mappings": {"dynamic_templates": [{"x": {"match": "a.*", "match_pattern": "regex", "mapping": {"type": "keyword"}}}]}}),
        )
        .await;
    assert_eq!(r.status, 400, "{r}");
}

e2e!(
    templates_and_multi_fields,
    dynamic_mapping,
    create_index_with_shards,
    index_and_update_doc,
    refresh_interval
);

/// `null_value`: an explicit `null` is indexed as the mapping's value (searchable, counted
/// by aggregations) while `_source` keeps the `null`; a missing field stays missing.
#[tokio::test]
async fn null_value_stands_in_for_nulls() {
    let env = TestEnv::start(Backend::Local).await;
    let c = env.client();
    let r = c
        .put(
            "/nv",
            &json!({"mappings": {"properties": {
                "status": {"type": "keyword", "null_value": "NULL"},
                "code": {"type": "long", "null_value": -1},
                "bad": {"type": "keyword", "null_value": {"an": "object"}}}}}),
        )
        .await;
    assert_error(&r, 400, "mapper_parsing_exception");
    let r = c
        .put(
            "/nv",
            &json!({"mappings": {"properties": {
                "status": {"type": "keyword", "null_value": "NULL"},
                "code": {"type": "long", "null_value": -1}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let docs = [
        ("1", json!({"status": null, "code": null})),
        ("2", json!({"status": "ok", "code": 200})),
        ("3", json!({"other": 1})),
    ];
    c.bulk_ok(
        "/_bulk?refresh=true",
        bulk_body("nv", docs.iter().map(|(i, d)| (i.to_string(), d.clone()))),
    )
    .await;
    let r = c
        .search("nv", &json!({"query": {"term": {"status": "NULL"}}}))
        .await;
    assert_eq!(hit_ids(&r), vec!["1"], "{r}");
    assert_eq!(hits(&r)[0]["_source"]["status"], Value::Null, "{r}");
    let r = c
        .search("nv", &json!({"query": {"range": {"code": {"lt": 0}}}}))
        .await;
    assert_eq!(hit_ids(&r), vec!["1"], "{r}");
    let r = c
        .search(
            "nv",
            &json!({"size": 0, "query": {"bool": {"must_not": {"exists": {"field": "status"}}}}}),
        )
        .await;
    assert_eq!(
        r.json["hits"]["total"]["value"], 1,
        "only the missing one: {r}"
    );
    let r = c.get("/nv/_mapping").await;
    assert_eq!(
        r.json["nv"]["mappings"]["properties"]["status"]["null_value"], "NULL",
        "{r}"
    );
}
