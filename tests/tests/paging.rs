//! Paging through results: scroll, point in time and `search_after`, answered as
//! OpenSearch 2.x does. A scroll or point in time pins each shard's commit: documents
//! written, deleted or merged afterwards do not change what it returns, and the segment
//! objects it reads stay in the bucket (garbage collection skips them) until it is closed.

use std::collections::BTreeSet;
use std::time::Duration;

use floe_tests::*;

const DOCS: usize = 600;

fn doc(i: usize) -> Value {
    json!({"n": i, "g": format!("g{}", i % 7), "@timestamp": ts(i as u64)})
}

/// 600 documents in 6 bulks, each refreshed: several segments per shard.
async fn load(c: &Client, index: &str) {
    let r = c
        .put(
            &format!("/{index}"),
            &json!({"settings": {"number_of_shards": 3}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    for chunk in 0..6 {
        let docs = (chunk * 100..(chunk + 1) * 100).map(|i| (format!("d{i}"), doc(i)));
        c.bulk_ok("/_bulk?refresh=true", bulk_body(index, docs))
            .await;
    }
}

fn ids_of(r: &Resp) -> Vec<String> {
    hit_ids(r)
}

async fn segment_objects(env: &TestEnv) -> BTreeSet<String> {
    env.storage_keys("indexes/")
        .await
        .into_iter()
        .filter(|k| k.contains("/segments/"))
        .collect()
}

async fn scroll_and_pit(backend: Backend) {
    let env = TestEnv::start_with_config(backend, Some("[indexing]\ngc_grace_ms = 300\n")).await;
    let c = env.client();
    load(&c, "pg").await;
    // Earlier merges' leftovers are collected first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = segment_objects(&env).await;

    // Page 1 of a scroll in index order, then the index changes under it.
    let r = c.post("/pg/_search?scroll=1m", &json!({"size": 50})).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["hits"]["total"]["value"], DOCS, "{r}");
    let mut seen: Vec<String> = ids_of(&r);
    let mut scroll_id = r.json["_scroll_id"].as_str().unwrap().to_string();
    let deletes: String = (0..100)
        .map(|i| format!("{{\"delete\":{{\"_index\":\"pg\",\"_id\":\"d{i}\"}}}}\n"))
        .collect();
    c.bulk_ok("/_bulk", deletes).await;
    let extra = (DOCS..DOCS + 50).map(|i| (format!("d{i}"), doc(i)));
    c.bulk_ok("/_bulk?refresh=true", bulk_body("pg", extra))
        .await;
    let r = c.post_empty("/pg/_forcemerge?max_num_segments=1").await;
    assert_eq!(r.status, 200, "{r}");
    c.refresh("pg").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = segment_objects(&env).await;
    let kept: Vec<&String> = before.intersection(&during).collect();
    assert_eq!(
        kept.len(),
        before.len(),
        "the scroll's segment objects stay while it is open: {before:?} vs {during:?}"
    );
    assert_eq!(c.count("pg").await, (DOCS - 100 + 50) as u64);
    // The rest of the scroll: the documents as they were when it started.
    for _ in 0..100 {
        let r = c
            .post(
                "/_search/scroll",
                &json!({"scroll": "1m", "scroll_id": scroll_id}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.json["hits"]["total"]["value"], DOCS, "{r}");
        let page = ids_of(&r);
        scroll_id = r.json["_scroll_id"].as_str().unwrap().to_string();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 50);
        seen.extend(page);
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), DOCS, "every document once");
    assert_eq!(unique.len(), DOCS);
    assert!(unique
        .iter()
        .all(|id| id[1..].parse::<usize>().unwrap() < DOCS));

    // Closing the scroll lets garbage collection take the merged-away objects.
    let r = c
        .send(
            Method::DELETE,
            "/_search/scroll",
            Some((
                "application/json",
                json!({"scroll_id": [scroll_id.clone()]})
                    .to_string()
                    .into_bytes(),
            )),
        )
        .await;
    assert_eq!(r.json, json!({"succeeded": true, "num_freed": 1}), "{r}");
    // Bounded generously: on a loaded 2-core machine the writers' loop may tick slowly.
    let collected = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let env = &env;
        let before = before.clone();
        async move { segment_objects(env).await.intersection(&before).count() == 0 }
    })
    .await;
    if collected.is_none() {
        let left: Vec<String> = segment_objects(&env)
            .await
            .intersection(&before)
            .cloned()
            .collect();
        let pins: Vec<String> = env
            .storage_keys("indexes/")
            .await
            .into_iter()
            .filter(|k| k.contains("/pins/"))
            .collect();
        let warnings: Vec<String> = env
            .floe
            .log_tail(2000)
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(String::from)
            .collect();
        panic!(
            "pinned objects were never collected after the scroll closed: {left:?}\n\
             pins left: {pins:?}\nwarnings: {warnings:#?}"
        );
    }
    let r = c
        .post("/_search/scroll", &json!({"scroll_id": scroll_id}))
        .await;
    assert_error(&r, 404, "search_context_missing_exception");

    // A point in time, paged with search_after on a key with ties (7 values).
    let r = c
        .post_empty("/pg/_search/point_in_time?keep_alive=1m")
        .await;
    assert_eq!(r.status, 200, "{r}");
    let pit = r.json["pit_id"].as_str().unwrap().to_string();
    assert_eq!(r.json["_shards"]["total"], 3, "{r}");
    let more = (DOCS + 50..DOCS + 80).map(|i| (format!("d{i}"), doc(i)));
    c.bulk_ok("/_bulk?refresh=true", bulk_body("pg", more))
        .await;
    let mut after: Option<Value> = None;
    let mut pit_seen = Vec::new();
    for _ in 0..100 {
        let mut body = json!({"size": 40, "pit": {"id": pit, "keep_alive": "1m"},
            "sort": [{"g.keyword": "asc"}, {"n": "desc"}]});
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let r = c.post("/_search", &body).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.json["pit_id"], json!(pit), "{r}");
        assert_eq!(r.json["hits"]["total"]["value"], DOCS - 50, "{r}");
        let hits = hits(&r);
        if hits.is_empty() {
            break;
        }
        after = Some(hits.last().unwrap()["sort"].clone());
        pit_seen.extend(hits.iter().map(|h| {
            (
                h["_source"]["g"].as_str().unwrap().to_string(),
                std::cmp::Reverse(h["_source"]["n"].as_u64().unwrap()),
            )
        }));
    }
    let mut sorted = pit_seen.clone();
    sorted.sort();
    assert_eq!(pit_seen, sorted, "pages follow the sort order");
    let expected: BTreeSet<u64> = (100..DOCS as u64 + 50).collect();
    let got: BTreeSet<u64> = pit_seen.iter().map(|(_, n)| n.0).collect();
    assert_eq!(
        got, expected,
        "the documents live when the point in time opened, once each"
    );
    assert_eq!(pit_seen.len(), expected.len());

    // A scroll sorted on a key with ties: equal keys are ordered by position, every
    // document comes once.
    let r = c
        .post(
            "/pg/_search?scroll=30s",
            &json!({"size": 33, "sort": [{"g.keyword": "desc"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let mut groups: Vec<String> = hits(&r)
        .iter()
        .map(|h| h["_source"]["g"].as_str().unwrap().to_string())
        .collect();
    let mut ids: Vec<String> = ids_of(&r);
    let mut sid = r.json["_scroll_id"].as_str().unwrap().to_string();
    for _ in 0..100 {
        let r = c.post("/_search/scroll", &json!({"scroll_id": sid})).await;
        assert_eq!(r.status, 200, "{r}");
        sid = r.json["_scroll_id"].as_str().unwrap().to_string();
        if hits(&r).is_empty() {
            break;
        }
        groups.extend(
            hits(&r)
                .iter()
                .map(|h| h["_source"]["g"].as_str().unwrap().to_string()),
        );
        ids.extend(ids_of(&r));
    }
    let live = DOCS - 100 + 80;
    assert_eq!(ids.len(), live, "every live document once");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), live);
    assert!(groups.windows(2).all(|w| w[0] >= w[1]), "descending groups");

    let r = c.get("/_search/point_in_time/_all").await;
    assert!(
        r.json["pits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pit_id"] == json!(pit)),
        "{r}"
    );
    // Errors: an index with a point in time, from with search_after, a bad scroll id.
    let r = c.post("/pg/_search", &json!({"pit": {"id": pit}})).await;
    assert_eq!(r.status, 400, "{r}");
    let r = c
        .post(
            "/pg/_search",
            &json!({"from": 10, "sort": [{"n": "asc"}], "search_after": [5]}),
        )
        .await;
    assert_eq!(r.status, 400, "{r}");
    let r = c
        .post("/_search/scroll", &json!({"scroll_id": "not-a-scroll"}))
        .await;
    assert_eq!(r.status, 400, "{r}");
    let r = c
        .send(
            Method::DELETE,
            "/_search/point_in_time",
            Some((
                "application/json",
                json!({"pit_id": [pit.clone()]}).to_string().into_bytes(),
            )),
        )
        .await;
    assert_eq!(r.json["pits"][0]["successful"], true, "{r}");
    let r = c.post("/_search", &json!({"pit": {"id": pit}})).await;
    assert_error(&r, 404, "search_context_missing_exception");
}

/// `search_after` without a point in time: pages of the live index in sort order.
async fn search_after_live(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    load(&c, "sa").await;
    let mut after: Option<Value> = None;
    let mut ns = Vec::new();
    for _ in 0..100 {
        let mut body = json!({"size": 64, "sort": [{"@timestamp": "desc"}, {"n": "asc"}],
            "query": {"range": {"n": {"gte": 50}}}});
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let r = c.search("sa", &body).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(
            r.json["hits"]["total"]["value"],
            DOCS - 50,
            "counts cover every match: {r}"
        );
        let page = hits(&r);
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap()["sort"].clone());
        ns.extend(page.iter().map(|h| h["_source"]["n"].as_u64().unwrap()));
    }
    let expected: Vec<u64> = (50..DOCS as u64).rev().collect();
    assert_eq!(ns, expected);
}

e2e!(scroll_and_pit, search_after_live);
