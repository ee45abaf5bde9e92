//! Document APIs beyond plain writes: `_update` (doc, upsert, scripts, noop, `_source`),
//! `update` in `_bulk`, optimistic concurrency (`if_seq_no`/`if_primary_term`, external
//! versions), `_id` validation and `forced_refresh`, answered as OpenSearch 2.x does.

use floe_tests::*;

async fn update_api(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c
        .put(
            "/docs/_doc/1?refresh=true",
            &json!({"title": "first", "views": 1, "user": {"name": "ann"}, "tags": ["a"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.json["forced_refresh"], true, "{r}");

    // A partial document merges objects and replaces the rest.
    let r = c
        .post(
            "/docs/_update/1",
            &json!({"doc": {"views": 2, "user": {"age": 30}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["result"], "updated", "{r}");
    assert_eq!(r.json["_version"], 2, "{r}");
    let r = c.get("/docs/_doc/1").await;
    assert_eq!(
        r.json["_source"],
        json!({"title": "first", "views": 2, "user": {"name": "ann", "age": 30}, "tags": ["a"]}),
        "{r}"
    );

    // The same values again: a noop that writes nothing.
    let r = c
        .post("/docs/_update/1", &json!({"doc": {"views": 2}}))
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["result"], "noop", "{r}");
    assert_eq!(r.json["_version"], 2, "{r}");
    assert_eq!(r.json["_shards"]["total"], 0, "{r}");

    // A script in the common forms, with the new source in the answer.
    let r = c
        .post(
            "/docs/_update/1?_source=true",
            &json!({"script": {
                "source": "ctx._source.views += params.n; ctx._source.tags.add(params.tag); ctx._source.remove('title')",
                "lang": "painless",
                "params": {"n": 10, "tag": "b"}
            }}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json["get"]["_source"],
        json!({"views": 12, "user": {"name": "ann", "age": 30}, "tags": ["a", "b"]}),
        "{r}"
    );
    assert_eq!(r.json["get"]["found"], true, "{r}");

    // Missing documents: 404 unless an upsert says what to create.
    let r = c.post("/docs/_update/2", &json!({"doc": {"a": 1}})).await;
    assert_error(&r, 404, "document_missing_exception");
    let r = c
        .post(
            "/docs/_update/2",
            &json!({"doc": {"a": 1}, "doc_as_upsert": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.json["result"], "created", "{r}");
    let r = c
        .post(
            "/docs/_update/3?refresh=true",
            &json!({"script": "ctx._source.n += 1", "upsert": {"n": 0}}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(c.get("/docs/_doc/3").await.json["_source"], json!({"n": 0}));

    // Scripts Floe does not run, and malformed bodies, are 400s that say so.
    let r = c
        .post(
            "/docs/_update/1",
            &json!({"script": "for (x in ctx._source.tags) { x = 1 }"}),
        )
        .await;
    assert_error(&r, 400, "illegal_argument_exception");
    assert!(r.text.contains("script forms"), "{r}");
    let r = c.post("/docs/_update/1", &json!({})).await;
    assert_error(&r, 400, "illegal_argument_exception");

    // `update` in _bulk, including two updates of one id in one request (the second
    // builds on the first) and a delete by script.
    let body = concat!(
        "{\"update\":{\"_index\":\"docs\",\"_id\":\"2\"}}\n{\"doc\":{\"b\":2}}\n",
        "{\"update\":{\"_index\":\"docs\",\"_id\":\"2\"}}\n{\"script\":{\"source\":\"ctx._source.b += 1\"}}\n",
        "{\"update\":{\"_index\":\"docs\",\"_id\":\"9\",\"retry_on_conflict\":3}}\n{\"doc\":{\"z\":1},\"doc_as_upsert\":true}\n",
        "{\"update\":{\"_index\":\"docs\",\"_id\":\"3\"}}\n{\"script\":\"ctx.op = 'delete'\"}\n",
        "{\"update\":{\"_index\":\"docs\",\"_id\":\"nope\"}}\n{\"doc\":{\"z\":1}}\n",
    );
    let r = c.post_ndjson("/_bulk?refresh=true", body).await;
    assert_eq!(r.status, 200, "{r}");
    let results: Vec<(u64, String)> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let b = &i["update"];
            let what = b["result"]
                .as_str()
                .or(b["error"]["type"].as_str())
                .unwrap_or_default()
                .to_string();
            (b["status"].as_u64().unwrap_or(0), what)
        })
        .collect();
    let expected: Vec<(u64, String)> = [
        (200, "updated"),
        (200, "updated"),
        (201, "created"),
        (200, "deleted"),
        (404, "document_missing_exception"),
    ]
    .iter()
    .map(|(s, w)| (*s, w.to_string()))
    .collect();
    assert_eq!(results, expected, "{r}");
    assert_eq!(r.json["errors"], true, "{r}");
    assert_eq!(
        c.get("/docs/_doc/2").await.json["_source"],
        json!({"a": 1, "b": 3})
    );
    assert_eq!(c.get("/docs/_doc/3").await.status, 404);
    // Searches see the updated documents.
    let r = c
        .search("docs", &json!({"query": {"term": {"b": 3}}}))
        .await;
    assert_eq!(hit_ids(&r), vec!["2".to_string()], "{r}");
}

async fn optimistic_concurrency(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c.put("/occ/_doc/1", &json!({"v": 1})).await;
    assert_eq!(r.status, 201, "{r}");
    let (seq, term) = (r.json["_seq_no"].clone(), r.json["_primary_term"].clone());

    // The write that read seq/term wins; a second one with the same stale pair conflicts.
    let path = format!("/occ/_doc/1?if_seq_no={seq}&if_primary_term={term}");
    let r = c.put(&path, &json!({"v": 2})).await;
    assert_eq!(r.status, 200, "{r}");
    let r = c.put(&path, &json!({"v": 3})).await;
    assert_error(&r, 409, "version_conflict_engine_exception");
    assert!(r.text.contains("required seqNo"), "{r}");
    let r = c.get("/occ/_doc/1").await;
    assert_eq!(r.json["_source"], json!({"v": 2}), "{r}");
    // Conditional delete and update with a stale pair conflict too; nothing changes.
    let r = c.delete(&path).await;
    assert_error(&r, 409, "version_conflict_engine_exception");
    let r = c
        .post(
            &format!("/occ/_update/1?if_seq_no={seq}&if_primary_term={term}"),
            &json!({"doc": {"v": 9}}),
        )
        .await;
    assert_error(&r, 409, "version_conflict_engine_exception");
    // A condition on a document that does not exist conflicts.
    let r = c
        .put(
            "/occ/_doc/none?if_seq_no=0&if_primary_term=1",
            &json!({"v": 1}),
        )
        .await;
    assert_error(&r, 409, "version_conflict_engine_exception");

    // External versions: the given version is kept; a lower or equal one conflicts
    // (external_gte accepts equal).
    let r = c
        .put(
            "/occ/_doc/e?version=5&version_type=external",
            &json!({"v": 5}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.json["_version"], 5, "{r}");
    let r = c
        .put(
            "/occ/_doc/e?version=5&version_type=external",
            &json!({"v": 6}),
        )
        .await;
    assert_error(&r, 409, "version_conflict_engine_exception");
    let r = c
        .put(
            "/occ/_doc/e?version=5&version_type=external_gte",
            &json!({"v": 7}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c.get("/occ/_doc/e").await;
    assert_eq!(
        (r.json["_version"].clone(), r.json["_source"]["v"].clone()),
        (json!(5), json!(7)),
        "{r}"
    );

    // Invalid combinations are 400s.
    for bad in [
        "/occ/_doc/x?if_seq_no=1",
        "/occ/_doc/x?version=3",
        "/occ/_doc/x?version=3&version_type=bogus",
        "/occ/_create/x?version=3&version_type=external",
    ] {
        let r = c.put(bad, &json!({"v": 1})).await;
        assert_eq!(r.status, 400, "{bad}: {r}");
    }
    // _id validation: over 512 bytes, or empty in bulk.
    let long = "x".repeat(513);
    let r = c.put(&format!("/occ/_doc/{long}"), &json!({"v": 1})).await;
    assert_error(&r, 400, "action_request_validation_exception");
    let r = c
        .post_ndjson(
            "/_bulk",
            "{\"index\":{\"_index\":\"occ\",\"_id\":\"\",\"_type\":\"_doc\"}}\n{\"v\":1}\n{\"index\":{\"_index\":\"occ\",\"_id\":\"ok\",\"_type\":\"_doc\"}}\n{\"v\":1}\n",
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["items"][0]["index"]["status"], 400, "{r}");
    assert_eq!(r.json["items"][1]["index"]["status"], 201, "{r}");
}

e2e!(update_api, optimistic_concurrency);

/// Custom routing is kept with the document: `GET _doc` (realtime and refreshed), `_mget`
/// and search hits show `_routing`, also after a SIGKILL whose unrefreshed writes come back
/// from the translog; documents written without routing show none.
#[tokio::test]
async fn routing_is_stored_and_shown() {
    let mut env = TestEnv::start(Backend::Local).await;
    let c = env.client();
    let r = c
        .put("/rt", &json!({"settings": {"number_of_shards": 3}}))
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c.put("/rt/_doc/1?routing=user1", &json!({"v": 1})).await;
    assert_eq!(r.status, 201, "{r}");
    let r = c
        .post_ndjson(
            "/_bulk",
            "{\"index\":{\"_index\":\"rt\",\"_id\":\"2\",\"routing\":\"user2\"}}\n{\"v\":2}\n{\"index\":{\"_index\":\"rt\",\"_id\":\"3\"}}\n{\"v\":3}\n",
        )
        .await;
    assert_eq!(r.json["errors"], json!(false), "{r}");
    // Realtime, before any refresh.
    let r = c.get("/rt/_doc/1?routing=user1").await;
    assert_eq!(r.json["_routing"], json!("user1"), "{r}");
    // Killed before a refresh: the translog brings the writes and their routing back.
    env.floe.stop();
    env.floe.start_again().await;
    let c = env.client();
    c.refresh_within("rt", std::time::Duration::from_secs(30))
        .await;
    let r = c
        .search(
            "rt",
            &json!({"query": {"match_all": {}}, "sort": [{"v": "asc"}]}),
        )
        .await;
    let routing: Vec<Value> = hits(&r).iter().map(|h| h["_routing"].clone()).collect();
    assert_eq!(
        routing,
        [json!("user1"), json!("user2"), Value::Null],
        "{r}"
    );
    let r = c.get("/rt/_doc/2?routing=user2&realtime=false").await;
    assert_eq!(
        (r.json["found"].clone(), r.json["_routing"].clone()),
        (json!(true), json!("user2")),
        "{r}"
    );
    let r = c.get("/rt/_doc/3").await;
    assert!(r.json.get("_routing").is_none(), "{r}");
    let r = c
        .post(
            "/_mget",
            &json!({"docs": [{"_index": "rt", "_id": "1", "routing": "user1"}]}),
        )
        .await;
    assert_eq!(r.json["docs"][0]["_routing"], json!("user1"), "{r}");
    // By-query jobs write each document where its routing put it: updated in place, not
    // copied to the shard of its id; deleted where it is.
    let r = c
        .post(
            "/rt/_update_by_query?refresh=true",
            &json!({"query": {"term": {"v": 1}}, "script": {"source": "ctx._source.v = 10"}}),
        )
        .await;
    assert_eq!(r.json["updated"], 1, "{r}");
    let r = c
        .post(
            "/rt/_delete_by_query?refresh=true",
            &json!({"query": {"term": {"v": 2}}}),
        )
        .await;
    assert_eq!(r.json["deleted"], 1, "{r}");
    let r = c
        .search(
            "rt",
            &json!({"query": {"match_all": {}}, "sort": [{"v": "asc"}]}),
        )
        .await;
    let left: Vec<(Value, Value, Value)> = hits(&r)
        .iter()
        .map(|h| {
            (
                h["_id"].clone(),
                h["_routing"].clone(),
                h["_source"]["v"].clone(),
            )
        })
        .collect();
    assert_eq!(
        left,
        [
            (json!("3"), Value::Null, json!(3)),
            (json!("1"), json!("user1"), json!(10))
        ],
        "{r}"
    );
}
