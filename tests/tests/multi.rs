//! Multi-document and multi-search APIs: `_mget`, `GET /{index}/_source/{id}`, `_msearch`.

use floe_tests::*;

async fn mget_source_msearch(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let docs = (0..20).map(|i| {
        (
            format!("d{i}"),
            json!({"n": i, "level": if i % 2 == 0 { "error" } else { "info" }}),
        )
    });
    c.bulk_ok("/_bulk", bulk_body("logs", docs)).await;
    c.refresh("logs").await;
    assert_eq!(
        c.put("/other", &json!({"aliases": {"other-alias": {}}}))
            .await
            .status,
        200
    );
    // Not refreshed: answered realtime from the writer.
    let r = c.put("/other/_doc/o1", &json!({"x": 1})).await;
    assert_eq!(r.status, 201, "{r}");

    let r = c
        .post(
            "/_mget",
            &json!({"docs": [
                {"_index": "logs", "_id": "d3"},
                {"_index": "other-alias", "_id": "o1"},
                {"_index": "logs", "_id": "missing"},
                {"_index": "nope", "_id": "x"}
            ]}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let d = &r.json["docs"];
    assert_eq!(
        (d[0]["found"].clone(), d[0]["_source"]["n"].clone()),
        (json!(true), json!(3)),
        "{r}"
    );
    assert_eq!(
        (d[1]["_index"].clone(), d[1]["_source"]["x"].clone()),
        (json!("other"), json!(1)),
        "{r}"
    );
    assert_eq!(d[2]["found"], false, "{r}");
    assert_eq!(d[3]["error"]["type"], "index_not_found_exception", "{r}");
    let r = c.post("/logs/_mget", &json!({"ids": ["d1", "d2"]})).await;
    let ns: Vec<Value> = r.json["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["_source"]["n"].clone())
        .collect();
    assert_eq!(ns, [json!(1), json!(2)], "{r}");
    assert_error(
        &c.post("/_mget", &json!({"ids": ["d1"]})).await,
        400,
        "illegal_argument_exception",
    );

    let r = c.get("/_cat/count/logs?format=json").await;
    assert_eq!(r.json[0]["count"], "20", "{r}");
    let r = c.get("/_cat/count?v").await;
    assert!(
        r.text.lines().next().unwrap_or_default().contains("count"),
        "{r}"
    );
    let r = c.get("/logs/_source/d5").await;
    assert_eq!(
        (r.status, r.json.clone()),
        (200, json!({"n": 5, "level": "info"})),
        "{r}"
    );
    assert_error(
        &c.get("/logs/_source/missing").await,
        404,
        "resource_not_found_exception",
    );
    assert_eq!(c.head("/logs/_source/d5").await.status, 200);
    assert_eq!(c.head("/logs/_source/missing").await.status, 404);

    let body = [
        json!({"index": "logs"}),
        json!({"query": {"term": {"level": "error"}}, "size": 0, "track_total_hits": true}),
        json!({}),
        json!({"query": {"ids": {"values": ["d7"]}}}),
        json!({"index": "nope"}),
        json!({"query": {"match_all": {}}}),
        json!({"index": ["logs", "other"], "ignore_unavailable": true}),
        json!({"size": 0, "track_total_hits": true}),
    ]
    .iter()
    .map(|v| v.to_string() + "\n")
    .collect::<String>();
    let r = c.post_ndjson("/logs/_msearch", body).await;
    assert_eq!(r.status, 200, "{r}");
    let responses = r.json["responses"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(responses.len(), 4, "{r}");
    assert_eq!(
        (responses[0]["status"].clone(), total_hits_of(&responses[0])),
        (json!(200), 10),
        "{r}"
    );
    assert_eq!(
        responses[1]["hits"]["hits"][0]["_id"], "d7",
        "default index from the path: {r}"
    );
    assert_eq!(responses[2]["status"], 404, "{r}");
    assert_eq!(
        responses[2]["error"]["type"], "index_not_found_exception",
        "{r}"
    );
    // Both indexes: 20 documents, plus o1 once the background refresh published it.
    let both = total_hits_of(&responses[3]);
    assert!(both == 20 || both == 21, "{r}");
    assert_error(
        &c.post_ndjson("/_msearch", "{}\n").await,
        400,
        "illegal_argument_exception",
    );
}

fn total_hits_of(v: &Value) -> u64 {
    v["hits"]["total"]["value"].as_u64().unwrap_or(u64::MAX)
}

/// `_field_caps` over a daily index pattern, the way Dashboards builds an index pattern:
/// each field's type, whether it is searchable and aggregatable, conflicts listed per index.
async fn field_caps(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c
        .put(
            "/logs-1",
            &json!({"mappings": {"properties": {"status": {"type": "long"}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c
        .put(
            "/logs-2",
            &json!({"mappings": {"properties": {"status": {"type": "keyword"}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    for index in ["logs-1", "logs-2"] {
        let r = c
            .put(
                &format!("/{index}/_doc/1?refresh=true"),
                &json!({"message": "hello", "user": {"name": "ann"}, "@timestamp": "2024-05-01T00:00:00Z", "status": 200}),
            )
            .await;
        assert!(r.status == 201, "{r}");
    }
    let r = c.get("/logs-*/_field_caps?fields=*").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["indices"], json!(["logs-1", "logs-2"]), "{r}");
    let f = &r.json["fields"];
    assert_eq!(
        f["message"],
        json!({"text": {"type": "text", "searchable": true, "aggregatable": false}}),
        "{r}"
    );
    assert_eq!(f["message.keyword"]["keyword"]["aggregatable"], true, "{r}");
    assert_eq!(f["@timestamp"]["date"]["aggregatable"], true, "{r}");
    assert_eq!(f["user"]["object"]["searchable"], false, "{r}");
    assert_eq!(f["user.name"]["text"]["type"], "text", "{r}");
    assert_eq!(f["_id"]["_id"]["searchable"], true, "{r}");
    // A field mapped differently per index lists each type with its indices.
    assert_eq!(f["status"]["long"]["indices"], json!(["logs-1"]), "{r}");
    assert_eq!(f["status"]["keyword"]["indices"], json!(["logs-2"]), "{r}");
    // Patterns pick fields; a missing index is a 404; no fields is a 400.
    let r = c.post("/_field_caps?fields=user.*", &json!({})).await;
    let names: Vec<&String> = r.json["fields"].as_object().unwrap().keys().collect();
    assert_eq!(names, vec!["user.name", "user.name.keyword"], "{r}");
    assert_error(
        &c.get("/nope/_field_caps?fields=*").await,
        404,
        "index_not_found_exception",
    );
    assert_eq!(c.get("/logs-1/_field_caps").await.status, 400);
}

/// What Grafana's OpenSearch data source sends: `_msearch` with a header per search,
/// epoch-millisecond ranges, `interval` + `extended_bounds` + `format: epoch_millis` on the
/// histogram, an empty `script_fields`, and a logs query sorted by time then `_doc`.
async fn grafana_msearch(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let docs = (1..=6).map(|i| {
        (
            format!("{i}"),
            json!({"@timestamp": format!("2024-05-01T0{i}:00:00Z"), "n": i}),
        )
    });
    c.bulk_ok("/_bulk?refresh=true", bulk_body("g", docs)).await;
    let (from, to) = (1_714_521_600_000i64, 1_714_550_400_000i64); // 00:00 .. 08:00
    let header =
        json!({"search_type": "query_then_fetch", "ignore_unavailable": true, "index": "g"});
    let metrics = json!({"size": 0,
        "query": {"bool": {"filter": [
            {"range": {"@timestamp": {"gte": from, "lte": to, "format": "epoch_millis"}}},
            {"query_string": {"analyze_wildcard": true, "query": "*"}}]}},
        "aggs": {"2": {"date_histogram": {"interval": "1h", "field": "@timestamp", "min_doc_count": 0,
            "extended_bounds": {"min": from, "max": to}, "format": "epoch_millis"},
            "aggs": {"1": {"avg": {"field": "n"}}}}}});
    let logs = json!({"size": 500,
        "query": {"bool": {"filter": [{"range": {"@timestamp": {"gte": from, "lte": to, "format": "epoch_millis"}}}]}},
        "sort": [{"@timestamp": {"order": "desc", "unmapped_type": "boolean"}}, {"_doc": {"order": "desc"}}],
        "script_fields": {}, "aggs": {}});
    let body = format!("{header}\n{metrics}\n{header}\n{logs}\n");
    let r = c
        .post_ndjson("/_msearch?max_concurrent_shard_requests=5", body)
        .await;
    assert_eq!(r.status, 200, "{r}");
    let buckets = r.json["responses"][0]["aggregations"]["2"]["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(
        buckets.len(),
        9,
        "00:00 through 08:00, empty ones included: {r}"
    );
    assert_eq!(buckets[0]["key_as_string"], from.to_string(), "{r}");
    assert_eq!(buckets[0]["doc_count"], 0, "{r}");
    assert_eq!(buckets[3]["1"]["value"], 3.0, "{r}");
    let ids: Vec<&str> = r.json["responses"][1]["hits"]["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .iter()
        .map(|h| h["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["6", "5", "4", "3", "2", "1"], "{r}");
    let r = c
        .post(
            "/g/_search",
            &json!({"script_fields": {"x": {"script": "doc['n'].value * 2"}}}),
        )
        .await;
    assert_eq!(r.status, 400, "{r}");
}

e2e!(mget_source_msearch, field_caps, grafana_msearch);
