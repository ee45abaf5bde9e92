//! `_delete_by_query`, `_update_by_query` and `_reindex` (local, and from a remote cluster:
//! a second Floe process), with `wait_for_completion=false` tasks, answered as OpenSearch
//! 2.x does. Expected counts come from the data written.

use std::time::Duration;

use floe_tests::*;

const DOCS: usize = 300;

fn doc(i: usize) -> Value {
    json!({"n": i, "kind": if i.is_multiple_of(3) { "error" } else { "ok" }, "hits": 0})
}

async fn load(c: &Client, index: &str, shards: u32) {
    let r = c
        .put(
            &format!("/{index}"),
            &json!({"settings": {"number_of_shards": shards}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    for chunk in 0..3 {
        let docs = (chunk * 100..(chunk + 1) * 100).map(|i| (format!("d{i}"), doc(i)));
        c.bulk_ok("/_bulk?refresh=true", bulk_body(index, docs))
            .await;
    }
}

async fn by_query(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    load(&c, "bq", 3).await;
    let errors = (0..DOCS).filter(|i: &usize| i.is_multiple_of(3)).count();

    // Update by query with a script, in small batches.
    let r = c
        .post(
            "/bq/_update_by_query?refresh=true&scroll_size=40",
            &json!({"query": {"term": {"kind": "error"}},
                "script": {"source": "ctx._source.hits += params.n", "params": {"n": 5}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["total"], errors, "{r}");
    assert_eq!(r.json["updated"], errors, "{r}");
    assert_eq!(r.json["batches"], errors.div_ceil(40), "{r}");
    assert_eq!(r.json["failures"], json!([]), "{r}");
    let r = c
        .search("bq", &json!({"size": 0, "query": {"term": {"hits": 5}}}))
        .await;
    assert_eq!(total_hits(&r), errors as u64, "{r}");

    // A script that says noop for some documents.
    let r = c
        .post(
            "/bq/_update_by_query?refresh=true",
            &json!({"query": {"range": {"n": {"lt": 10}}}, "script": "ctx.op = 'noop'"}),
        )
        .await;
    assert_eq!(
        (r.json["noops"].clone(), r.json["updated"].clone()),
        (json!(10), json!(0)),
        "{r}"
    );

    // Delete by query, at most 50 documents first, then the rest.
    let r = c
        .post(
            "/bq/_delete_by_query?refresh=true",
            &json!({"query": {"term": {"kind": "error"}}, "max_docs": 50}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["deleted"], 50, "{r}");
    assert!(r.json.get("updated").is_none(), "{r}");
    let r = c
        .post(
            "/bq/_delete_by_query?refresh=true&conflicts=proceed",
            &json!({"query": {"term": {"kind": "error"}}}),
        )
        .await;
    assert_eq!(r.json["deleted"], errors - 50, "{r}");
    assert_eq!(c.count("bq").await, (DOCS - errors) as u64);

    // Local reindex of a query, with a script, then op_type=create conflicts.
    let r = c
        .post(
            "/_reindex?refresh=true",
            &json!({"source": {"index": "bq", "query": {"range": {"n": {"lt": 100}}}},
                "dest": {"index": "bq-copy"},
                "script": {"source": "ctx._source.copied = true"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let copied = (0..100).filter(|i: &usize| !i.is_multiple_of(3)).count();
    assert_eq!(r.json["created"], copied, "{r}");
    let r = c
        .search(
            "bq-copy",
            &json!({"size": 0, "query": {"term": {"copied": true}}}),
        )
        .await;
    assert_eq!(total_hits(&r), copied as u64, "{r}");
    let r = c.get("/bq-copy/_doc/d1").await;
    assert_eq!(r.json["_source"]["n"], 1, "same ids: {r}");
    let r = c
        .post(
            "/_reindex",
            &json!({"source": {"index": "bq", "query": {"range": {"n": {"lt": 100}}}},
                "dest": {"index": "bq-copy", "op_type": "create"}}),
        )
        .await;
    assert_eq!(r.status, 409, "conflicts abort by default: {r}");
    assert_eq!(
        r.json["failures"][0]["cause"]["type"], "version_conflict_engine_exception",
        "{r}"
    );
    let r = c
        .post(
            "/_reindex",
            &json!({"source": {"index": "bq", "query": {"range": {"n": {"lt": 100}}}},
                "dest": {"index": "bq-copy", "op_type": "create"}, "conflicts": "proceed"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["version_conflicts"], copied, "{r}");

    // A background task, its result read back through _tasks.
    let r = c
        .post(
            "/bq/_delete_by_query?wait_for_completion=false&refresh=true",
            &json!({"query": {"range": {"n": {"gte": 200}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let task = r.json["task"].as_str().unwrap().to_string();
    let done = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let c = c.clone();
        let path = format!("/_tasks/{task}");
        async move { c.get(&path).await.json["completed"] == json!(true) }
    })
    .await;
    assert!(done.is_some(), "task never completed");
    let r = c.get(&format!("/_tasks/{task}")).await;
    let expected = (200..DOCS).filter(|i: &usize| !i.is_multiple_of(3)).count();
    assert_eq!(r.json["response"]["deleted"], expected, "{r}");
    assert_error(
        &c.get("/_tasks/nope:1").await,
        404,
        "resource_not_found_exception",
    );
    // A task can be cancelled: it stops after its current batch; what it wrote stays.
    let many = (0..2000).map(|i| (format!("c{i}"), doc(i)));
    c.bulk_ok("/_bulk?refresh=true", bulk_body("bq-cancel", many))
        .await;
    let r = c
        .post(
            "/bq-cancel/_update_by_query?wait_for_completion=false&scroll_size=1",
            &json!({"script": {"source": "ctx._source.hits += 1"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let task = r.json["task"].as_str().unwrap().to_string();
    let r = c.post_empty(&format!("/_tasks/{task}/_cancel")).await;
    assert_eq!(r.status, 200, "{r}");
    let node = task.split(':').next().unwrap();
    assert_eq!(
        r.json["nodes"][node]["tasks"][&task]["cancelled"], true,
        "{r}"
    );
    let done = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let c = c.clone();
        let path = format!("/_tasks/{task}");
        async move { c.get(&path).await.json["completed"] == json!(true) }
    })
    .await;
    assert!(done.is_some(), "the cancelled task never completed");
    let r = c.get(&format!("/_tasks/{task}")).await;
    assert_eq!(r.json["response"]["canceled"], "by user request", "{r}");
    let updated = r.json["response"]["updated"].as_u64().unwrap();
    assert!(updated < 2000, "stopped early: {r}");
    c.refresh("bq-cancel").await;
    let r = c
        .search(
            "bq-cancel",
            &json!({"size": 0, "query": {"term": {"hits": 1}}, "track_total_hits": true}),
        )
        .await;
    assert_eq!(
        r.json["hits"]["total"]["value"].as_u64().unwrap(),
        updated,
        "exactly what the task reported is written: {r}"
    );
    assert_error(
        &c.post_empty("/_tasks/nope:1/_cancel").await,
        404,
        "resource_not_found_exception",
    );
    let r = c
        .post("/bq/_delete_by_query?conflicts=maybe", &json!({}))
        .await;
    assert_eq!(r.status, 400, "{r}");
}

/// Migration off another cluster: `_reindex` with `source.remote` from a second Floe.
#[tokio::test]
async fn reindex_from_remote() {
    let old = TestEnv::start(Backend::Local).await;
    let new = TestEnv::start_with_config(
        Backend::Local,
        Some("[reindex]\nremote_allowlist = [\"127.0.0.1:*\"]\n"),
    )
    .await;
    load(&old.client(), "legacy", 2).await;
    let c = new.client();
    let r = c
        .post(
            "/_reindex?refresh=true",
            &json!({"source": {"remote": {"host": old.client().base_url(), "username": "admin", "password": ADMIN_PASSWORD},
                    "index": "legacy", "size": 64, "query": {"term": {"kind": "ok"}}},
                "dest": {"index": "migrated"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let ok = (0..DOCS).filter(|i: &usize| !i.is_multiple_of(3)).count();
    assert_eq!(r.json["created"], ok, "{r}");
    assert_eq!(r.json["batches"], ok.div_ceil(64), "{r}");
    assert_eq!(c.count("migrated").await, ok as u64);
    let r = c.get("/migrated/_doc/d2").await;
    assert_eq!(r.json["_source"], doc(2), "{r}");
    // An unreachable remote is a clear error, nothing written.
    let r = c
        .post(
            "/_reindex",
            &json!({"source": {"remote": {"host": format!("http://127.0.0.1:{}", free_port())},
                    "index": "legacy"}, "dest": {"index": "migrated2"}}),
        )
        .await;
    assert_eq!(r.status, 502, "{r}");
    // A host not on the allowlist is refused before anything is fetched; so is any remote
    // on a node with the default (empty) allowlist.
    let r = c
        .post(
            "/_reindex",
            &json!({"source": {"remote": {"host": "http://localhost:9200"}, "index": "legacy"},
                "dest": {"index": "x"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{r}");
    assert!(r.text.contains("allowlist"), "{r}");
    let r = old
        .client()
        .post(
            "/_reindex",
            &json!({"source": {"remote": {"host": new.client().base_url()}, "index": "migrated"},
                "dest": {"index": "back"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{r}");
    let r = c
        .post(
            "/_reindex",
            &json!({"source": {"remote": {"host": "file:///etc"}, "index": "legacy"},
                "dest": {"index": "x"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{r}");
}

e2e!(by_query);
