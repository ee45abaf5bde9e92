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

/// Mapping parameters that decide how a field is kept: `index: false` (searched through its
/// column; a text field is not searchable), `doc_values: false` (searchable, no sorting or
/// aggregations), `fielddata: true` (a text field aggregated by token), `scaled_float`
/// (values rounded to the scaling factor). Expected answers follow OpenSearch's semantics.
#[tokio::test]
async fn mapping_parameters_are_applied() {
    let env = TestEnv::start(Backend::Local).await;
    let c = env.client();
    let r = c
        .put(
            "/mp",
            &json!({"mappings": {"properties": {"price": {"type": "scaled_float"}}}}),
        )
        .await;
    assert_error(&r, 400, "mapper_parsing_exception");
    let r = c
        .put(
            "/mp",
            &json!({"settings": {"number_of_shards": 2}, "mappings": {"properties": {
                "code": {"type": "keyword", "index": false},
                "tag": {"type": "keyword", "doc_values": false},
                "n": {"type": "long", "doc_values": false},
                "note": {"type": "text", "index": false},
                "secret": {"type": "keyword", "index": false, "doc_values": false},
                "body": {"type": "text", "fielddata": true},
                "price": {"type": "scaled_float", "scaling_factor": 100}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let docs = [
        (
            "1",
            json!({"code": "A", "tag": "x", "n": 5, "note": "hello world", "secret": "s1",
                     "body": "The quick fox", "price": 1.234}),
        ),
        (
            "2",
            json!({"code": "B", "tag": "y", "n": 10, "note": "hello there", "secret": "s2",
                     "body": "quick brown dog", "price": 2.346}),
        ),
        (
            "3",
            json!({"code": "A", "tag": "x", "n": 15, "body": "Lazy dog", "price": 0.001}),
        ),
    ];
    c.bulk_ok(
        "/_bulk?refresh=true",
        bulk_body("mp", docs.iter().map(|(i, d)| (i.to_string(), d.clone()))),
    )
    .await;
    let ids = |r: &Resp| {
        let mut ids = hit_ids(r);
        ids.sort();
        ids
    };
    let found = |q: Value| {
        let c = &c;
        async move { ids(&c.search("mp", &json!({"query": q})).await) }
    };
    // index: false, with doc values: answered from the column.
    assert_eq!(found(json!({"term": {"code": "A"}})).await, ["1", "3"]);
    assert_eq!(found(json!({"range": {"code": {"gte": "B"}}})).await, ["2"]);
    // doc_values: false: terms, ranges and exists from the inverted index.
    assert_eq!(found(json!({"term": {"tag": "x"}})).await, ["1", "3"]);
    assert_eq!(
        found(json!({"range": {"n": {"gte": 10}}})).await,
        ["2", "3"]
    );
    assert_eq!(
        found(json!({"range": {"n": {"gt": 5, "lte": 12}}})).await,
        ["2"]
    );
    assert_eq!(
        found(json!({"exists": {"field": "n"}})).await,
        ["1", "2", "3"]
    );
    assert_eq!(found(json!({"prefix": {"tag": "y"}})).await, ["2"]);
    // ... but no sorting or aggregations.
    for body in [
        json!({"aggs": {"t": {"terms": {"field": "tag"}}}}),
        json!({"sort": [{"n": "asc"}]}),
    ] {
        let r = c.post("/mp/_search", &body).await;
        assert_eq!(r.status, 400, "{r}");
        assert!(r.to_string().contains("Use doc values instead"), "{r}");
    }
    // Kept in _source only: not searchable.
    for q in [
        json!({"match": {"note": "hello"}}),
        json!({"term": {"secret": "s1"}}),
    ] {
        let r = c.post("/mp/_search", &json!({"query": q})).await;
        assert_error(&r, 400, "query_shard_exception");
        assert!(r.to_string().contains("since it is not indexed"), "{r}");
    }
    // A query on every field skips them instead.
    let r = c
        .search(
            "mp",
            &json!({"query": {"query_string": {"query": "hello"}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(hit_ids(&r), Vec::<String>::new(), "{r}");
    // fielddata: terms by token, across both shards.
    let r = c
        .search(
            "mp",
            &json!({"size": 0, "aggs": {"w": {"terms": {"field": "body", "size": 3}},
                "c": {"terms": {"field": "code"}}}}),
        )
        .await;
    assert_eq!(
        buckets(&r, "w", "key"),
        [
            ("dog".to_string(), 2),
            ("quick".to_string(), 2),
            ("brown".to_string(), 1)
        ],
        "{r}"
    );
    assert_eq!(
        buckets(&r, "c", "key"),
        [("A".to_string(), 2), ("B".to_string(), 1)],
        "{r}"
    );
    // scaled_float: values as indexed (rounded to 1/100); _source as sent.
    let r = c
        .search(
            "mp",
            &json!({"size": 0, "aggs": {"s": {"sum": {"field": "price"}}, "m": {"max": {"field": "price"}}}}),
        )
        .await;
    let sum = r.json["aggregations"]["s"]["value"].as_f64().unwrap();
    assert!((sum - 3.58).abs() < 1e-9, "{r}");
    assert_eq!(r.json["aggregations"]["m"]["value"], json!(2.35), "{r}");
    assert_eq!(found(json!({"term": {"price": 1.234}})).await, ["1"]);
    assert_eq!(found(json!({"term": {"price": 1.23}})).await, ["1"]);
    assert_eq!(
        found(json!({"range": {"price": {"gt": 1.23}}})).await,
        ["2"]
    );
    let r = c.get("/mp/_doc/1").await;
    assert_eq!(r.json["_source"]["price"], json!(1.234), "{r}");
    // What Dashboards reads.
    let r = c.get("/mp/_field_caps?fields=*").await;
    let caps = |f: &str| {
        let (ty, caps) = r.json["fields"][f]
            .as_object()
            .and_then(|o| o.iter().next())
            .unwrap_or_else(|| panic!("{f}: {r}"));
        (
            ty.clone(),
            caps["searchable"].clone(),
            caps["aggregatable"].clone(),
        )
    };
    for (field, ty, searchable, aggregatable) in [
        ("code", "keyword", true, true),
        ("tag", "keyword", true, false),
        ("note", "text", false, false),
        ("secret", "keyword", false, false),
        ("body", "text", true, true),
        ("price", "scaled_float", true, true),
    ] {
        assert_eq!(
            caps(field),
            (ty.to_string(), json!(searchable), json!(aggregatable)),
            "{field}"
        );
    }
    // The mapping shows the parameters; they cannot change afterwards.
    let r = c.get("/mp/_mapping").await;
    let props = &r.json["mp"]["mappings"]["properties"];
    assert_eq!(props["code"]["index"], json!(false), "{r}");
    assert_eq!(props["tag"]["doc_values"], json!(false), "{r}");
    assert_eq!(props["body"]["fielddata"], json!(true), "{r}");
    assert_eq!(props["price"]["scaling_factor"], json!(100), "{r}");
    let r = c
        .put(
            "/mp/_mapping",
            &json!({"properties": {"tag": {"type": "keyword"}}}),
        )
        .await;
    assert_error(&r, 400, "illegal_argument_exception");
    assert!(
        r.to_string()
            .contains("Cannot update parameter [doc_values]"),
        "{r}"
    );
}

/// Date `format` in mappings: values are read in the format (and refused outside it), range
/// bounds on the field too (or in the query's own `format`), and dates are written back in
/// a histogram's `format` and as `fields` in the mapping's or the requested format.
#[tokio::test]
async fn custom_date_formats() {
    let env = TestEnv::start(Backend::Local).await;
    let c = env.client();
    let r = c
        .put(
            "/df",
            &json!({"mappings": {"properties": {"d": {"type": "date", "format": "yyyy-qq"}}}}),
        )
        .await;
    assert_error(&r, 400, "mapper_parsing_exception");
    let r = c
        .put(
            "/df",
            &json!({"mappings": {"properties": {
                "day": {"type": "date", "format": "dd/MM/yyyy"},
                "at": {"type": "date", "format": "yyyy-MM-dd HH:mm:ss||epoch_second"}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c
        .post_ndjson(
            "/_bulk?refresh=true",
            [
                r#"{"index":{"_index":"df","_id":"1"}}"#,
                r#"{"day":"05/03/2024","at":"2024-03-05 10:20:30"}"#,
                r#"{"index":{"_index":"df","_id":"2"}}"#,
                r#"{"day":"31/12/2023","at":1709900000}"#,
                r#"{"index":{"_index":"df","_id":"3"}}"#,
                r#"{"day":"2024-03-05"}"#,
                "",
            ]
            .join("\n"),
        )
        .await;
    let items = &r.json["items"];
    assert_eq!(items[0]["index"]["status"], 201, "{r}");
    assert_eq!(items[1]["index"]["status"], 201, "{r}");
    assert_eq!(
        items[2]["index"]["error"]["type"], "mapper_parsing_exception",
        "ISO is not dd/MM/yyyy: {r}"
    );
    let found = |q: Value| {
        let c = &c;
        async move {
            let mut ids = hit_ids(&c.search("df", &json!({"query": q})).await);
            ids.sort();
            ids
        }
    };
    assert_eq!(
        found(json!({"range": {"day": {"gte": "01/03/2024"}}})).await,
        ["1"]
    );
    assert_eq!(found(json!({"term": {"day": "31/12/2023"}})).await, ["2"]);
    // ISO and date math still read as bounds.
    assert_eq!(
        found(json!({"range": {"day": {"lt": "2024-01-01"}}})).await,
        ["2"]
    );
    assert_eq!(
        found(json!({"range": {"at": {"lt": "2024-03-06 00:00:00"}}})).await,
        ["1"]
    );
    // 1709900000 s = 2024-03-08T12:13:20Z; the query's own format.
    assert_eq!(
        found(json!({"range": {"at": {"gte": "2024/03/07", "format": "yyyy/MM/dd"}}})).await,
        ["2"]
    );
    // Date math rounds down for gte/lt and up for gt/lte, as OpenSearch does.
    for (op, expected) in [
        ("lte", vec!["1"]),
        ("gt", vec!["2"]),
        ("gte", vec!["1", "2"]),
        ("lt", vec![]),
    ] {
        let bound = if op == "gte" {
            "2024-03-05T23:00:00Z||/d"
        } else {
            "2024-03-05T00:00:00Z||/d"
        };
        assert_eq!(
            found(json!({"range": {"at": {op: bound}}})).await,
            expected,
            "{op} {bound}"
        );
    }
    let r = c
        .search(
            "df",
            &json!({"size": 0, "aggs": {"m": {"date_histogram": {"field": "day",
                "calendar_interval": "month", "format": "yyyy-MM"}}}}),
        )
        .await;
    assert_eq!(
        buckets(&r, "m", "key_as_string"),
        [
            ("2023-12".to_string(), 1),
            ("2024-01".to_string(), 0),
            ("2024-02".to_string(), 0),
            ("2024-03".to_string(), 1)
        ],
        "{r}"
    );
    let r = c
        .search(
            "df",
            &json!({"query": {"ids": {"values": ["1"]}},
                "fields": ["day", {"field": "at", "format": "epoch_millis"}]}),
        )
        .await;
    let fields = &hits(&r)[0]["fields"];
    assert_eq!(fields["day"], json!(["05/03/2024"]), "{r}");
    assert_eq!(fields["at"], json!(["1709634030000"]), "{r}");
    let r = c.search("df", &json!({"sort": [{"at": "desc"}]})).await;
    assert_eq!(hit_ids(&r), ["2", "1"], "{r}");
}

/// `ip` fields: addresses are kept in canonical form (an IPv4-mapped IPv6 address is its
/// IPv4 one), terms take an address or a CIDR block, ranges are by address order.
#[tokio::test]
async fn ip_fields_take_cidr_blocks_and_ranges() {
    let env = TestEnv::start(Backend::Local).await;
    let c = env.client();
    let r = c
        .put(
            "/ips",
            &json!({"settings": {"number_of_shards": 2},
                "mappings": {"properties": {"client": {"type": "ip"}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let addresses = [
        "10.0.0.1",
        "10.0.1.200",
        "192.168.16.5",
        "::ffff:192.168.31.1",
        "2001:db8::1",
        "9.255.255.255",
    ];
    c.bulk_ok(
        "/_bulk?refresh=true",
        bulk_body(
            "ips",
            addresses
                .iter()
                .enumerate()
                .map(|(i, a)| ((i + 1).to_string(), json!({"client": a}))),
        ),
    )
    .await;
    let r = c
        .put("/ips/_doc/bad", &json!({"client": "not-an-ip"}))
        .await;
    assert_error(&r, 400, "mapper_parsing_exception");
    let found = |q: Value| {
        let c = &c;
        async move {
            let mut ids = hit_ids(&c.search("ips", &json!({"query": q, "size": 20})).await);
            ids.sort();
            ids
        }
    };
    assert_eq!(
        found(json!({"term": {"client": "10.0.0.0/8"}})).await,
        ["1", "2"]
    );
    assert_eq!(
        found(json!({"term": {"client": "192.168.16.0/20"}})).await,
        ["3", "4"]
    );
    assert_eq!(
        found(json!({"term": {"client": "192.168.31.1"}})).await,
        ["4"]
    );
    assert_eq!(
        found(json!({"term": {"client": "2001:0db8:0:0::1"}})).await,
        ["5"]
    );
    assert_eq!(
        found(json!({"terms": {"client": ["10.0.0.1/32", "9.0.0.0/8"]}})).await,
        ["1", "6"]
    );
    assert_eq!(
        found(json!({"range": {"client": {"gte": "10.0.0.2", "lte": "192.168.16.5"}}})).await,
        ["2", "3"]
    );
    assert_eq!(
        found(json!({"range": {"client": {"gt": "9.255.255.255", "lt": "10.0.1.200"}}})).await,
        ["1"]
    );
    assert_eq!(
        found(json!({"query_string": {"query": "client:\"10.0.0.0/8\""}})).await,
        ["1", "2"]
    );
    let r = c
        .search(
            "ips",
            &json!({"size": 0, "aggs": {"c": {"terms": {"field": "client", "size": 10}}}}),
        )
        .await;
    let mut keys: Vec<String> = buckets(&r, "c", "key")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "10.0.0.1",
            "10.0.1.200",
            "192.168.16.5",
            "192.168.31.1",
            "2001:db8::1",
            "9.255.255.255"
        ],
        "{r}"
    );
    for (q, ty) in [
        (json!({"term": {"client": "nope"}}), "query_shard_exception"),
        (
            json!({"term": {"client": "2001:db8::/32"}}),
            "illegal_argument_exception",
        ),
    ] {
        let r = c.post("/ips/_search", &json!({"query": q})).await;
        assert_error(&r, 400, ty);
    }
}
