//! `_bulk` ingest and the `_search` / `_count` / `_doc` read paths, on 200 log documents
//! (see `floe_tests::log_doc`) in the auto-created index `logs`.

use std::collections::{BTreeSet, HashMap};

use floe_tests::*;

const N: usize = 200;

/// Starts Floe on `backend`, bulk-loads `N` log docs into `logs`, refreshes, checks `_count`.
async fn loaded(backend: Backend) -> (TestEnv, Client) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c.bulk_ok("/_bulk", logs_bulk("logs", 0..N)).await;
    let items = r.json["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {r}"));
    assert_eq!(items.len(), N, "{r}");
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["index"]["_id"], json!(log_id(i)), "item {i}: {item}");
        assert_eq!(item["index"]["_index"], json!("logs"), "item {i}: {item}");
        assert_eq!(item["index"]["status"], json!(201), "item {i}: {item}");
        assert_eq!(
            item["index"]["result"],
            json!("created"),
            "item {i}: {item}"
        );
    }
    c.refresh("logs").await;
    assert_eq!(c.count("logs").await, N as u64);
    (env, c)
}

/// Number of log docs (of the first `N`) matching `pred`.
fn expected(pred: impl Fn(usize, &Value) -> bool) -> u64 {
    (0..N).filter(|&i| pred(i, &log_doc(i))).count() as u64
}

fn status(d: &Value) -> i64 {
    d["status"].as_i64().unwrap()
}

async fn root_info(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let r = env.client().get("/").await;
    assert_eq!(r.status, 200, "{r}");
    let number = r.json["version"]["number"]
        .as_str()
        .unwrap_or_else(|| panic!("version.number: {r}"));
    assert!(
        number.starts_with("2."),
        "version.number should be 2.x: {r}"
    );
    assert_eq!(
        r.json["version"]["distribution"],
        json!("opensearch"),
        "{r}"
    );
    assert!(r.json["tagline"].is_string(), "tagline: {r}");
}

/// match_all, match, term, terms, range (numbers and dates), bool, query_string, `q=`.
async fn queries(backend: Backend) {
    let (_env, c) = loaded(backend).await;

    let cases: Vec<(&str, Value, u64)> = vec![
        ("match_all", json!({"match_all": {}}), N as u64),
        (
            "match error",
            json!({"match": {"message": "error"}}),
            expected(|_, d| status(d) >= 400),
        ),
        (
            "match timeout",
            json!({"match": {"message": "timeout"}}),
            expected(|_, d| status(d) == 500),
        ),
        (
            "match two words (OR)",
            json!({"match": {"message": "timeout moved"}}),
            expected(|_, d| status(d) == 500 || status(d) == 301),
        ),
        (
            "match with operator and",
            json!({"match": {"message": {"query": "users error", "operator": "and"}}}),
            expected(|i, d| i % 3 == 0 && status(d) >= 400),
        ),
        (
            "term status",
            json!({"term": {"status": 404}}),
            expected(|_, d| status(d) == 404),
        ),
        (
            "term ok",
            json!({"term": {"ok": false}}),
            expected(|_, d| status(d) >= 400),
        ),
        (
            "term message.keyword",
            json!({"term": {"message.keyword": "GET /api/users completed ok"}}),
            expected(|_, d| d["message"] == "GET /api/users completed ok"),
        ),
        // `.keyword` sub-fields are columns only (no inverted index): exact values, lists,
        // prefixes, ranges and presence are answered from the column.
        (
            "terms message.keyword",
            json!({"terms": {"message.keyword": ["GET /api/users completed ok", "PUT /api/items moved permanently"]}}),
            expected(|_, d| {
                d["message"] == "GET /api/users completed ok"
                    || d["message"] == "PUT /api/items moved permanently"
            }),
        ),
        (
            "prefix message.keyword",
            json!({"prefix": {"message.keyword": "POST /api/o"}}),
            expected(|_, d| d["message"].as_str().unwrap().starts_with("POST /api/o")),
        ),
        (
            "wildcard message.keyword, trailing star",
            json!({"wildcard": {"message.keyword": "DELETE*"}}),
            expected(|_, d| d["message"].as_str().unwrap().starts_with("DELETE")),
        ),
        (
            "range message.keyword",
            json!({"range": {"message.keyword": {"gte": "GET", "lt": "POST"}}}),
            expected(|_, d| {
                let m = d["message"].as_str().unwrap();
                ("GET"..="POST").contains(&m) && m < "POST"
            }),
        ),
        (
            "exists message",
            json!({"exists": {"field": "message"}}),
            N as u64,
        ),
        (
            "terms status",
            json!({"terms": {"status": [301, 500]}}),
            expected(|_, d| [301, 500].contains(&status(d))),
        ),
        (
            "range status",
            json!({"range": {"status": {"gte": 400, "lt": 500}}}),
            expected(|_, d| (400..500).contains(&status(d))),
        ),
        (
            "range size",
            json!({"range": {"size": {"gt": 100, "lte": 500}}}),
            expected(|i, _| i * 10 > 100 && i * 10 <= 500),
        ),
        (
            "range bytes",
            json!({"range": {"bytes": {"gte": 10.5, "lt": 20.0}}}),
            expected(|i, _| (10..20).contains(&i)),
        ),
        (
            "range @timestamp",
            json!({"range": {"@timestamp": {"gte": "2024-05-01T01:00:00Z", "lt": "2024-05-01T02:00:00Z"}}}),
            expected(|i, _| (3600..7200).contains(&log_seconds(i))),
        ),
        (
            "range @timestamp, date only",
            json!({"range": {"@timestamp": {"gte": "2024-05-01", "lt": "2024-05-02"}}}),
            N as u64,
        ),
        (
            "bool must/filter/must_not",
            json!({"bool": {
                "must": [{"match": {"message": "error"}}],
                "filter": [{"range": {"status": {"gte": 400}}}],
                "must_not": [{"term": {"status": 500}}],
                "should": [{"match": {"message": "users"}}],
            }}),
            expected(|_, d| status(d) == 404),
        ),
        (
            "bool should only",
            json!({"bool": {"should": [{"term": {"status": 301}}, {"term": {"status": 500}}]}}),
            expected(|_, d| [301, 500].contains(&status(d))),
        ),
        (
            "bool filter with term and range",
            json!({"bool": {"filter": [
                {"term": {"status": 200}},
                {"range": {"@timestamp": {"lt": "2024-05-01T01:00:00Z"}}},
            ]}}),
            expected(|i, d| status(d) == 200 && log_seconds(i) < 3600),
        ),
        (
            "query_string AND",
            json!({"query_string": {"query": "status:404 AND message:error"}}),
            expected(|_, d| status(d) == 404),
        ),
        (
            "query_string OR",
            json!({"query_string": {"query": "message:timeout OR status:301"}}),
            expected(|_, d| [301, 500].contains(&status(d))),
        ),
    ];

    let mut failures = Vec::new();
    for (name, query, want) in &cases {
        let r = c
            .post("/logs/_search", &json!({"query": query, "size": N}))
            .await;
        if r.status != 200 {
            failures.push(format!("{name}: {query} -> {r}"));
            continue;
        }
        let total = &r.json["hits"]["total"];
        let got_hits = r.json["hits"]["hits"].as_array().map(|h| h.len() as u64);
        if total["value"] != json!(want)
            || total["relation"] != json!("eq")
            || got_hits != Some(*want)
        {
            failures.push(format!(
                "{name}: {query}: want {want} (eq), got total {total}, {got_hits:?} hits"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // URL query `q=` (GET) and a GET with a JSON body, as curl users send it.
    let r = c.get("/logs/_search?q=status:404").await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        total_hits(&r),
        expected(|_, d| status(d) == 404),
        "q=status:404: {r}"
    );
    let r = c
        .get_json(
            "/logs/_search",
            &json!({"query": {"term": {"status": 500}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        total_hits(&r),
        expected(|_, d| status(d) == 500),
        "GET with body: {r}"
    );

    // _count with a query.
    let r = c
        .post(
            "/logs/_count",
            &json!({"query": {"match": {"message": "error"}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.json["count"],
        json!(expected(|_, d| status(d) >= 400)),
        "{r}"
    );

    // Aggregations and sort read the `.keyword` column.
    let r = c
        .search(
            "logs",
            &json!({"size": 1, "sort": [{"message.keyword": "asc"}],
                    "aggs": {"m": {"terms": {"field": "message.keyword", "size": 100}}}}),
        )
        .await;
    let mut counts: HashMap<String, u64> = HashMap::new();
    for i in 0..N {
        *counts
            .entry(log_doc(i)["message"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let buckets = r.json["aggregations"]["m"]["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("terms on message.keyword: {r}"));
    assert_eq!(buckets.len(), counts.len(), "{r}");
    for b in buckets {
        assert_eq!(
            b["doc_count"].as_u64(),
            counts.get(b["key"].as_str().unwrap()).copied(),
            "{b}"
        );
    }
    let first = counts.keys().min().unwrap();
    assert_eq!(
        r.json["hits"]["hits"][0]["_source"]["message"],
        json!(first),
        "{r}"
    );
}

/// Default size, from/size, sort by `@timestamp` and `status`, `_source`/`_id`/`_index` in hits.
async fn paging_sort_source(backend: Backend) {
    let (_env, c) = loaded(backend).await;

    // Ids ordered by @timestamp.
    let mut by_ts: Vec<usize> = (0..N).collect();
    by_ts.sort_by_key(|&i| log_seconds(i));
    let asc_ids: Vec<String> = by_ts.iter().map(|&i| log_id(i)).collect();
    let desc_ids: Vec<String> = asc_ids.iter().rev().cloned().collect();

    // Default size is 10; total still counts everything.
    let r = c.search("logs", &json!({"query": {"match_all": {}}})).await;
    assert_eq!(hits(&r).len(), 10, "default size: {r}");
    assert_eq!(total_hits(&r), N as u64);
    assert_eq!(r.json["hits"]["total"]["relation"], json!("eq"), "{r}");

    // _source, _id, _index in every hit; _source is the document as sent.
    let r = c
        .search("logs", &json!({"query": {"match_all": {}}, "size": N}))
        .await;
    let mut seen = BTreeSet::new();
    for h in hits(&r) {
        let id = h["_id"]
            .as_str()
            .unwrap_or_else(|| panic!("hit without _id: {h}"));
        let i: usize = id
            .trim_start_matches("log-")
            .parse()
            .unwrap_or_else(|_| panic!("unexpected _id {id}"));
        assert_eq!(h["_index"], json!("logs"), "{h}");
        assert_eq!(h["_source"], log_doc(i), "_source of {id}");
        seen.insert(i);
    }
    assert_eq!(seen.len(), N, "every doc exactly once");

    // Sort by @timestamp desc (object form), top 10.
    let r = c
        .search(
            "logs",
            &json!({"sort": [{"@timestamp": {"order": "desc"}}], "size": 10}),
        )
        .await;
    assert_eq!(
        hit_ids(&r),
        desc_ids[..10].to_vec(),
        "sort @timestamp desc: {r}"
    );
    for h in hits(&r) {
        assert!(h["sort"].is_array(), "sorted hits carry `sort` values: {h}");
    }

    // Sort asc with from/size (paging through the sorted list).
    for from in [0usize, 10, 95, 195] {
        let r = c
            .search(
                "logs",
                &json!({"sort": [{"@timestamp": "asc"}], "from": from, "size": 10}),
            )
            .await;
        let want = asc_ids[from..(from + 10).min(N)].to_vec();
        assert_eq!(hit_ids(&r), want, "sort @timestamp asc from {from}: {r}");
    }

    // Sort by status asc (string form), all docs: non-decreasing, complete.
    let r = c
        .search("logs", &json!({"sort": ["status"], "size": N}))
        .await;
    let statuses: Vec<i64> = hits(&r)
        .iter()
        .map(|h| h["_source"]["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses.len(), N, "{r}");
    assert!(
        statuses.windows(2).all(|w| w[0] <= w[1]),
        "status asc not sorted: {statuses:?}"
    );

    // Two sort keys: status desc, then @timestamp asc.
    let r = c
        .search(
            "logs",
            &json!({"sort": [{"status": "desc"}, {"@timestamp": "asc"}], "size": 30}),
        )
        .await;
    let mut want: Vec<usize> = (0..N).collect();
    want.sort_by_key(|&i| (-STATUSES[i % 10], log_seconds(i)));
    let want: Vec<String> = want[..30].iter().map(|&i| log_id(i)).collect();
    assert_eq!(hit_ids(&r), want, "sort status desc, @timestamp asc: {r}");

    // Query + sort + paging together.
    let r = c
        .search(
            "logs",
            &json!({"query": {"term": {"status": 404}}, "sort": [{"@timestamp": "desc"}], "from": 5, "size": 5}),
        )
        .await;
    let want: Vec<String> = desc_ids
        .iter()
        .filter(|id| STATUSES[id[4..].parse::<usize>().unwrap() % 10] == 404)
        .skip(5)
        .take(5)
        .cloned()
        .collect();
    assert_eq!(hit_ids(&r), want, "{r}");
    assert_eq!(total_hits(&r), expected(|_, d| status(d) == 404));
}

/// `/logs,other/_search`, `lo*`, `/_search`.
async fn multi_index(backend: Backend) {
    let (_env, c) = loaded(backend).await;
    let other: Vec<(String, Value)> = (0..5)
        .map(|i| {
            (
                format!("o-{i}"),
                json!({"message": "other index doc", "status": 200}),
            )
        })
        .collect();
    c.bulk_ok("/_bulk", bulk_body("other", other)).await;
    c.refresh("other").await;

    let all = json!({"query": {"match_all": {}}, "size": 300});
    let r = c.search("logs,other", &all).await;
    assert_eq!(total_hits(&r), N as u64 + 5, "logs,other: {r}");
    let indexes: BTreeSet<&str> = hits(&r)
        .iter()
        .map(|h| h["_index"].as_str().unwrap())
        .collect();
    assert_eq!(indexes, BTreeSet::from(["logs", "other"]), "{r}");

    let r = c.search("lo*", &all).await;
    assert_eq!(total_hits(&r), N as u64, "lo*: {r}");
    assert!(hits(&r).iter().all(|h| h["_index"] == "logs"), "{r}");

    let r = c.search("", &all).await;
    assert_eq!(total_hits(&r), N as u64 + 5, "/_search: {r}");

    let r = c
        .search(
            "logs,other",
            &json!({"query": {"match": {"message": "other"}}}),
        )
        .await;
    assert_eq!(total_hits(&r), 5, "{r}");
    assert!(hits(&r).iter().all(|h| h["_index"] == "other"), "{r}");
}

/// `GET /logs/_doc/{id}`: found with `_source`; missing id → 404 `found: false`.
async fn get_doc(backend: Backend) {
    let (_env, c) = loaded(backend).await;
    let docs: HashMap<String, Value> = (0..N).map(|i| (log_id(i), log_doc(i))).collect();
    for i in [0usize, 7, 123, N - 1] {
        let id = log_id(i);
        let r = c.get(&format!("/logs/_doc/{id}")).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.json["found"], json!(true), "{r}");
        assert_eq!(r.json["_id"], json!(id), "{r}");
        assert_eq!(r.json["_index"], json!("logs"), "{r}");
        assert_eq!(r.json["_source"], docs[&id], "{r}");
    }
    let r = c.get("/logs/_doc/no-such-id").await;
    assert_eq!(r.status, 404, "{r}");
    assert_eq!(r.json["found"], json!(false), "{r}");
    assert_eq!(r.json["_id"], json!("no-such-id"), "{r}");
}

/// Enough documents that top-k by `@timestamp` runs on a time slice first (the searcher's
/// window pruning): results, paging, filters and totals must equal a full sort's.
async fn sort_by_timestamp_large(backend: Backend) {
    const DOCS: usize = 4000;
    let env = TestEnv::start(backend).await;
    let c = env.client();
    c.bulk_ok("/_bulk", logs_bulk("big", 0..DOCS)).await;
    c.refresh("big").await;
    let mut by_time: Vec<usize> = (0..DOCS).collect();
    by_time.sort_by_key(|&i| std::cmp::Reverse(log_seconds(i)));
    for (from, size) in [(0, 10), (40, 20)] {
        let r = c
            .search(
                "big",
                &json!({"sort": [{"@timestamp": "desc"}], "from": from, "size": size}),
            )
            .await;
        let want: Vec<String> = by_time[from..from + size]
            .iter()
            .map(|&i| log_id(i))
            .collect();
        assert_eq!(hit_ids(&r), want, "desc from {from}: {r}");
        assert_eq!(r.json["hits"]["total"]["value"], json!(DOCS), "{r}");
    }
    let r = c
        .search("big", &json!({"sort": [{"@timestamp": "asc"}], "size": 5}))
        .await;
    let want: Vec<String> = by_time.iter().rev().take(5).map(|&i| log_id(i)).collect();
    assert_eq!(hit_ids(&r), want, "asc: {r}");
    // A filter matching few documents: the slice is widened until the end.
    let r = c
        .search("big", &json!({"query": {"term": {"status": 500}}, "sort": [{"@timestamp": "desc"}], "size": 10, "track_total_hits": true}))
        .await;
    let want: Vec<String> = by_time
        .iter()
        .filter(|&&i| STATUSES[i % 10] == 500)
        .take(10)
        .map(|&i| log_id(i))
        .collect();
    assert_eq!(hit_ids(&r), want, "filtered: {r}");
    assert_eq!(r.json["hits"]["total"]["value"], json!(DOCS / 10), "{r}");
}

/// `date_histogram` on `@timestamp`: the fast paths (whole-index scan, filtered collector)
/// give the same buckets as tantivy's aggregation (forced by a sub-aggregation) and as
/// counting client-side.
async fn date_histogram_paths_agree(backend: Backend) {
    const DOCS: usize = 600;
    let env = TestEnv::start(backend).await;
    let c = env.client();
    c.bulk_ok("/_bulk", logs_bulk("h", 0..DOCS)).await;
    c.refresh("h").await;
    let buckets = |r: &Resp| -> Vec<(i64, u64)> {
        r.json["aggregations"]["per"]["buckets"]
            .as_array()
            .unwrap_or_else(|| panic!("buckets: {r}"))
            .iter()
            .map(|b| (b["key"].as_i64().unwrap(), b["doc_count"].as_u64().unwrap()))
            .collect()
    };
    let hist = json!({"date_histogram": {"field": "@timestamp", "fixed_interval": "10m"}});
    let fast = c
        .search("h", &json!({"size": 0, "aggs": {"per": hist}}))
        .await;
    let mut with_sub = hist.clone();
    with_sub["aggs"] = json!({"m": {"max": {"field": "size"}}});
    let generic = c
        .search("h", &json!({"size": 0, "aggs": {"per": with_sub}}))
        .await;
    assert_eq!(
        buckets(&fast),
        buckets(&generic),
        "fast {fast}\ngeneric {generic}"
    );
    let base_ms = 1_714_521_600_000i64; // 2024-05-01T00:00:00Z
    let mut want = std::collections::BTreeMap::new();
    for i in 0..DOCS {
        let key = base_ms + (log_seconds(i) as i64 / 600) * 600_000;
        *want.entry(key).or_insert(0u64) += 1;
    }
    let got: std::collections::BTreeMap<i64, u64> =
        buckets(&fast).into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(got, want);
    assert_eq!(
        fast.json["aggregations"]["per"]["buckets"][0]["key_as_string"],
        json!("2024-05-01T00:00:00.000Z")
    );
    // With a query: the collector path, against tantivy's again.
    let q = json!({"term": {"status": 404}});
    let fast = c
        .search("h", &json!({"size": 0, "query": q, "aggs": {"per": hist}}))
        .await;
    let generic = c
        .search(
            "h",
            &json!({"size": 0, "query": q, "aggs": {"per": with_sub}}),
        )
        .await;
    assert_eq!(buckets(&fast), buckets(&generic));
}

/// `date_histogram` with calendar intervals and time zones, as OpenSearch buckets them:
/// months of their real length, days from local midnight (23 hours across a DST change),
/// `key_as_string` in the zone; nested under `terms` with a sub-aggregation; the same
/// answers with 1 shard or 3.
async fn calendar_histograms(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    // (timestamp, service, n)
    let docs = [
        ("2024-01-15T10:00:00Z", "api", 1),
        ("2024-01-31T23:30:00Z", "web", 2),
        ("2024-02-10T00:00:00Z", "api", 3),
        ("2024-02-29T12:00:00Z", "api", 4),
        ("2024-03-30T22:30:00Z", "web", 5), // 23:30 on the 30th in Paris (+01:00)
        ("2024-03-30T23:30:00Z", "web", 6), // 00:30 on the 31st in Paris
        ("2024-03-31T21:30:00Z", "api", 7), // 23:30 on the 31st in Paris (+02:00)
        ("2024-05-02T08:00:00Z", "api", 8),
    ];
    for (index, shards) in [("cal1", 1), ("cal3", 3)] {
        let r = c
            .put(
                &format!("/{index}"),
                &json!({"settings": {"number_of_shards": shards},
                    "mappings": {"properties": {"@timestamp": {"type": "date"}, "created": {"type": "date"}, "service": {"type": "keyword"}}}}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        let body = docs.iter().enumerate().map(|(i, (t, s, n))| {
            (
                format!("c{i}"),
                json!({"@timestamp": t, "created": t, "service": s, "n": n}),
            )
        });
        c.bulk_ok("/_bulk?refresh=true", bulk_body(index, body))
            .await;
    }
    let keys = |r: &Resp, name: &str| -> Vec<(String, u64)> {
        r.json["aggregations"][name]["buckets"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .map(|b| {
                (
                    b["key_as_string"].as_str().unwrap_or_default().to_string(),
                    b["doc_count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // Any date field, not only `@timestamp`, gets calendar months (its bounds come from the
    // commits' date bounds).
    for (index, field) in [
        ("cal1", "@timestamp"),
        ("cal3", "@timestamp"),
        ("cal1", "created"),
        ("cal3", "created"),
    ] {
        let r = c
            .search(
                index,
                &json!({"size": 0, "aggs": {"m": {"date_histogram": {"field": field, "calendar_interval": "month"}}}}),
            )
            .await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(
            keys(&r, "m"),
            vec![
                ("2024-01-01T00:00:00.000Z".to_string(), 2),
                ("2024-02-01T00:00:00.000Z".to_string(), 2),
                ("2024-03-01T00:00:00.000Z".to_string(), 3),
                ("2024-04-01T00:00:00.000Z".to_string(), 0),
                ("2024-05-01T00:00:00.000Z".to_string(), 1),
            ],
            "{index}: {r}"
        );
        assert_eq!(
            r.json["aggregations"]["m"]["buckets"][0]["key"],
            1_704_067_200_000i64
        );
        // Days split at local midnight in Paris (the 31st of March has 23 hours).
        let r = c
            .search(
                index,
                &json!({"size": 0,
                    "query": {"range": {field: {"gte": "2024-03-30T00:00:00Z", "lt": "2024-04-01T00:00:00Z"}}},
                    "aggs": {"d": {"date_histogram": {"field": field, "calendar_interval": "day", "time_zone": "Europe/Paris"}},
                        "m": {"date_histogram": {"field": field, "calendar_interval": "1M", "time_zone": "Europe/Paris", "min_doc_count": 1}}}}),
            )
            .await;
        assert_eq!(
            keys(&r, "d"),
            vec![
                ("2024-03-30T00:00:00.000+01:00".to_string(), 1),
                ("2024-03-31T00:00:00.000+01:00".to_string(), 2),
            ],
            "{index}: {r}"
        );
        let d = &r.json["aggregations"]["d"]["buckets"];
        assert_eq!(
            d[1]["key"].as_i64().unwrap() - d[0]["key"].as_i64().unwrap(),
            24 * 3_600_000
        );
        assert_eq!(
            keys(&r, "m"),
            vec![("2024-03-01T00:00:00.000+01:00".to_string(), 3)],
            "{r}"
        );
        // Nested under terms, with a sub-aggregation per month.
        let r = c
            .search(
                index,
                &json!({"size": 0, "aggs": {"s": {"terms": {"field": "service", "order": {"_key": "asc"}},
                    "aggs": {"per": {"date_histogram": {"field": "@timestamp", "calendar_interval": "quarter"},
                        "aggs": {"top": {"max": {"field": "n"}}}}}}}}),
            )
            .await;
        let api = &r.json["aggregations"]["s"]["buckets"][0];
        assert_eq!(api["key"], "api", "{r}");
        let per: Vec<(String, u64, f64)> = api["per"]["buckets"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .map(|b| {
                (
                    b["key_as_string"].as_str().unwrap().to_string(),
                    b["doc_count"].as_u64().unwrap(),
                    b["top"]["value"].as_f64().unwrap_or(-1.0),
                )
            })
            .collect();
        assert_eq!(
            per,
            vec![
                ("2024-01-01T00:00:00.000Z".to_string(), 4, 7.0),
                ("2024-04-01T00:00:00.000Z".to_string(), 1, 8.0),
            ],
            "{r}"
        );
    }
    // date_range: bounds as dates, keys as OpenSearch writes them, `keyed`.
    for index in ["cal1", "cal3"] {
        let r = c
            .search(
                index,
                &json!({"size": 0, "aggs": {
                    "r": {"date_range": {"field": "@timestamp", "ranges": [
                        {"from": "2024-04-01", "key": "later"},
                        {"to": "2024-02-01"},
                        {"from": "2024-02-01", "to": "2024-04-01"}
                    ]}},
                    "k": {"date_range": {"field": "@timestamp", "keyed": true,
                        "ranges": [{"key": "march", "from": "2024-03-01", "to": "2024-04-01"}]},
                        "aggs": {"top": {"max": {"field": "n"}}}}
                }}),
            )
            .await;
        let got: Vec<(String, u64)> = r.json["aggregations"]["r"]["buckets"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .map(|b| {
                (
                    b["key"].as_str().unwrap().to_string(),
                    b["doc_count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("*-2024-02-01T00:00:00.000Z".to_string(), 2),
                (
                    "2024-02-01T00:00:00.000Z-2024-04-01T00:00:00.000Z".to_string(),
                    5
                ),
                ("later".to_string(), 1),
            ],
            "{index}: {r}"
        );
        assert_eq!(
            r.json["aggregations"]["r"]["buckets"][1]["from"], 1_706_745_600_000.0,
            "{r}"
        );
        let march = &r.json["aggregations"]["k"]["buckets"]["march"];
        assert_eq!(
            (march["doc_count"].clone(), march["top"]["value"].clone()),
            (json!(3), json!(7.0)),
            "{r}"
        );
    }
    let r = c
        .post(
            "/cal1/_search",
            &json!({"size": 0, "aggs": {"d": {"date_histogram": {"field": "@timestamp", "calendar_interval": "day", "time_zone": "Mars/Olympus"}}}}),
        )
        .await;
    assert_error(&r, 400, "illegal_argument_exception");
}

/// The query types beyond the basics, with hit sets derived from the documents:
/// `fuzzy`, `regexp`, `wildcard` with inner `*`/`?`, `match_phrase_prefix`, `dis_max`,
/// `boosting`, `minimum_should_match` as a percentage, `boost`, constant-score `terms`.
async fn query_breadth(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c
        .put(
            "/qb",
            &json!({"settings": {"number_of_shards": 2},
                "mappings": {"properties": {"msg": {"type": "text"}, "tag": {"type": "keyword"}, "n": {"type": "long"}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let docs = (0..6).map(|i| {
        (
            format!("{i}"),
            json!({"msg": format!("quick brown {} jumps", words[i]), "tag": format!("t{}", i % 3), "n": i}),
        )
    });
    c.bulk_ok("/_bulk?refresh=true", bulk_body("qb", docs))
        .await;
    let ids = |q: Value| {
        let c = c.clone();
        async move {
            let r = c.search("qb", &json!({"query": q, "size": 20})).await;
            let mut ids = hit_ids(&r);
            ids.sort();
            ids
        }
    };
    let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(json!({"fuzzy": {"msg": "charlei"}})).await, v(&["2"]));
    assert_eq!(
        ids(json!({"query_string": {"query": "msg:charlei~ OR tag:t0^2"}})).await,
        v(&["0", "2", "3"])
    );
    assert_eq!(
        ids(json!({"fuzzy": {"msg": {"value": "dleta", "fuzziness": 1}}})).await,
        v(&["3"]),
        "one transposition"
    );
    assert_eq!(
        ids(json!({"fuzzy": {"msg": {"value": "dleta", "fuzziness": 1, "transpositions": false}}}))
            .await,
        v(&[])
    );
    assert_eq!(
        ids(json!({"regexp": {"tag": "t[12]"}})).await,
        v(&["1", "2", "4", "5"])
    );
    assert_eq!(
        ids(json!({"regexp": {"msg": "(alp|ech)[a-z]+"}})).await,
        v(&["0", "4"])
    );
    assert_eq!(
        ids(json!({"wildcard": {"tag": "t*2"}})).await,
        v(&["2", "5"])
    );
    assert_eq!(
        ids(json!({"wildcard": {"msg": {"value": "?ravo"}}})).await,
        v(&["1"])
    );
    assert_eq!(
        ids(json!({"match_phrase_prefix": {"msg": "brown ch"}})).await,
        v(&["2"])
    );
    assert_eq!(
        ids(json!({"match_phrase_prefix": {"msg": "jumps brown"}})).await,
        v(&[]),
        "order matters"
    );
    // Phrase slop: "quick … jumps" has two words between them.
    assert_eq!(
        ids(json!({"match_phrase": {"msg": {"query": "quick jumps", "slop": 1}}})).await,
        v(&[])
    );
    assert_eq!(
        ids(json!({"match_phrase": {"msg": {"query": "quick jumps", "slop": 2}}})).await,
        v(&["0", "1", "2", "3", "4", "5"])
    );
    assert_eq!(
        ids(json!({"query_string": {"query": "msg:\"brown jumps\"~1 AND tag:t1"}})).await,
        v(&["1", "4"])
    );
    assert_eq!(
        ids(json!({"query_string": {"query": "msg:\"brown jumps\""}})).await,
        v(&[])
    );
    assert_eq!(
        ids(json!({"bool": {"should": [{"term": {"tag": "t1"}}, {"term": {"n": 1}}, {"term": {"n": 3}}], "minimum_should_match": "66%"}})).await,
        v(&["1", "3", "4"]),
        "66% of 3 clauses rounds down to 1 clause"
    );
    assert_eq!(
        ids(json!({"bool": {"should": [{"term": {"tag": "t1"}}, {"term": {"n": 1}}, {"term": {"n": 3}}], "minimum_should_match": "-1"}})).await,
        v(&["1"]),
        "all but one of 3 clauses"
    );
    // Scores: dis_max takes the best clause; boosting demotes; boost multiplies.
    let scores = |q: Value| {
        let c = c.clone();
        async move {
            let r = c.search("qb", &json!({"query": q, "size": 20})).await;
            hits(&r)
                .iter()
                .map(|h| {
                    (
                        h["_id"].as_str().unwrap().to_string(),
                        h["_score"].as_f64().unwrap(),
                    )
                })
                .collect::<std::collections::BTreeMap<String, f64>>()
        }
    };
    let plain = scores(json!({"match": {"msg": "quick"}})).await;
    let demoted = scores(json!({"boosting": {"positive": {"match": {"msg": "quick"}}, "negative": {"term": {"tag": "t0"}}, "negative_boost": 0.25}})).await;
    for (id, s) in &plain {
        let factor = if ["0", "3"].contains(&id.as_str()) {
            0.25
        } else {
            1.0
        };
        assert!(
            (demoted[id] - s * factor).abs() < 1e-4,
            "{id}: {} vs {s} x {factor}",
            demoted[id]
        );
    }
    let boosted = scores(json!({"match": {"msg": {"query": "quick", "boost": 3}}})).await;
    for (id, s) in &plain {
        assert!((boosted[id] - 3.0 * s).abs() < 1e-4, "{id}");
    }
    let dm = scores(
        json!({"dis_max": {"queries": [{"match": {"msg": "alpha"}}, {"match": {"msg": "quick"}}]}}),
    )
    .await;
    let alpha = scores(json!({"match": {"msg": "alpha"}})).await;
    assert!(
        (dm["0"] - alpha["0"].max(plain["0"])).abs() < 1e-4,
        "best clause only"
    );
    let terms = scores(json!({"terms": {"tag": ["t1", "t2"]}})).await;
    assert!(
        terms.values().all(|s| (*s - 1.0).abs() < 1e-6),
        "constant score: {terms:?}"
    );
    let r = c
        .post("/qb/_search", &json!({"query": {"regexp": {"tag": "t[1"}}}))
        .await;
    assert_eq!(r.status, 400, "{r}");
    // Highlighting what matched, also when _source is not returned.
    let r = c
        .search(
            "qb",
            &json!({"_source": false, "query": {"bool": {"must": {"match": {"msg": "Charlie"}}, "filter": {"term": {"tag": "t2"}}}},
                "highlight": {"pre_tags": ["<b>"], "post_tags": ["</b>"], "fields": {"*": {}}}}),
        )
        .await;
    assert_eq!(hit_ids(&r), vec!["2".to_string()], "{r}");
    assert_eq!(
        hits(&r)[0]["highlight"],
        json!({"msg": ["quick brown <b>charlie</b> jumps"], "tag": ["<b>t2</b>"]}),
        "{r}"
    );
    assert!(hits(&r)[0].get("_source").is_none(), "{r}");
}

/// `filter`, `filters` (named and listed) and `missing` aggregations with the query DSL,
/// at the top and nested, with sub-aggregations; counts derived from the documents.
async fn filter_aggs(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c
        .put(
            "/fa",
            &json!({"settings": {"number_of_shards": 3},
                "mappings": {"properties": {"msg": {"type": "text"}, "tag": {"type": "keyword"}, "n": {"type": "long"}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let docs = (0..30).map(|i| {
        let mut d = json!({"msg": if i % 2 == 0 { "even number" } else { "odd number" }, "tag": format!("t{}", i % 3), "n": i});
        if i % 5 == 0 {
            d.as_object_mut().unwrap().remove("tag");
        }
        (format!("{i}"), d)
    });
    c.bulk_ok("/_bulk?refresh=true", bulk_body("fa", docs))
        .await;
    let tagged = |t: usize| (0..30usize).filter(move |i| i % 5 != 0 && i % 3 == t);
    let r = c
        .search(
            "fa",
            &json!({"size": 0, "aggs": {
                "one": {"filter": {"bool": {"must": [{"match": {"msg": "even"}}], "filter": [{"range": {"n": {"lt": 10}}}]}},
                    "aggs": {"top": {"max": {"field": "n"}}}},
                "named": {"filters": {"filters": {"t1": {"term": {"tag": "t1"}}, "odd": {"match": {"msg": "odd"}}}},
                    "aggs": {"top": {"max": {"field": "n"}}}},
                "listed": {"filters": {"filters": [{"term": {"tag": "t2"}}, {"exists": {"field": "tag"}}]}},
                "untagged": {"missing": {"field": "tag"}},
                "by": {"terms": {"field": "tag", "order": {"_key": "asc"}},
                    "aggs": {"big": {"filters": {"filters": {"ge20": {"range": {"n": {"gte": 20}}}}}}}}
            }}),
        )
        .await;
    let a = &r.json["aggregations"];
    assert_eq!(a["one"]["doc_count"], 5, "{r}");
    // percentile_ranks: the share of values at or below each value (n = 0..29), also per
    // bucket and as a list.
    let r3 = c
        .search(
            "fa",
            &json!({"size": 0, "aggs": {
                "ranks": {"percentile_ranks": {"field": "n", "values": [5, 14.5, 100]}},
                "by": {"terms": {"field": "tag", "order": {"_key": "asc"}},
                    "aggs": {"r": {"percentile_ranks": {"field": "n", "values": [10], "keyed": false}}}}
            }}),
        )
        .await;
    assert_eq!(r3.status, 200, "{r3}");
    let ranks = &r3.json["aggregations"]["ranks"]["values"];
    assert_eq!(ranks["5.0"], 20.0, "6 of 30: {r3}");
    assert_eq!(ranks["14.5"], 50.0, "{r3}");
    assert_eq!(ranks["100.0"], 100.0, "{r3}");
    // t0 holds 3, 6, 9, 12, 18, 21, 24, 27 (multiples of 3 without those of 5): 3 of 8 ≤ 10.
    let t0 = &r3.json["aggregations"]["by"]["buckets"][0];
    assert_eq!(t0["key"], "t0", "{r3}");
    assert_eq!(t0["r"]["values"][0]["key"], 10.0, "{r3}");
    assert_eq!(t0["r"]["values"][0]["value"], 37.5, "{r3}");
    // `meta` comes back on its aggregation; too many buckets is a 400 that says so.
    let r2 = c
        .search(
            "fa",
            &json!({"size": 0, "aggs": {"by": {"terms": {"field": "tag"}, "meta": {"color": "blue"},
                "aggs": {"f": {"filters": {"filters": {"x": {"match_all": {}}}}, "meta": {"k": 1}}}}}}),
        )
        .await;
    assert_eq!(
        r2.json["aggregations"]["by"]["meta"],
        json!({"color": "blue"}),
        "{r2}"
    );
    assert_eq!(
        r2.json["aggregations"]["by"]["buckets"][0]["f"]["meta"],
        json!({"k": 1}),
        "{r2}"
    );
    // top_hits: the best documents of each bucket, with their source.
    let r4 = c
        .search(
            "fa",
            &json!({"size": 0, "query": {"range": {"n": {"lt": 20}}}, "aggs": {
                "by": {"terms": {"field": "tag", "order": {"_key": "asc"}},
                    "aggs": {"top": {"top_hits": {"size": 2, "sort": [{"n": "desc"}], "_source": ["n"]}}}},
                "one": {"filter": {"term": {"tag": "t1"}}, "aggs": {"first": {"top_hits": {"size": 1, "sort": [{"n": "asc"}]}}}},
                "latest": {"top_hits": {"size": 1, "sort": [{"n": "desc"}]}}
            }}),
        )
        .await;
    let a4 = &r4.json["aggregations"];
    for (t, b) in a4["by"]["buckets"].as_array().unwrap().iter().enumerate() {
        let want: Vec<usize> = tagged(t)
            .filter(|i| *i < 20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .take(2)
            .collect();
        let got: Vec<u64> = b["top"]["hits"]["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["_source"]["n"].as_u64().unwrap())
            .collect();
        assert_eq!(
            got,
            want.iter().map(|i| *i as u64).collect::<Vec<_>>(),
            "t{t}: {r4}"
        );
        assert_eq!(
            b["top"]["hits"]["total"]["value"],
            tagged(t).filter(|i| *i < 20).count(),
            "{r4}"
        );
    }
    assert_eq!(
        a4["one"]["first"]["hits"]["hits"][0]["_source"]["n"], 1,
        "{r4}"
    );
    assert_eq!(a4["latest"]["hits"]["hits"][0]["_id"], "19", "{r4}");
    let r3 = c
        .post(
            "/fa/_search",
            &json!({"size": 0, "aggs": {"h": {"histogram": {"field": "n", "interval": 0.00001}}}}),
        )
        .await;
    assert_error(&r3, 400, "too_many_buckets_exception");
    assert_eq!(a["one"]["top"]["value"], 8.0, "{r}");
    assert_eq!(
        a["named"]["buckets"]["t1"]["doc_count"],
        tagged(1).count(),
        "{r}"
    );
    assert_eq!(
        a["named"]["buckets"]["t1"]["top"]["value"],
        tagged(1).max().unwrap() as f64,
        "{r}"
    );
    assert_eq!(a["named"]["buckets"]["odd"]["doc_count"], 15, "{r}");
    assert_eq!(
        a["listed"]["buckets"],
        json!([{"doc_count": tagged(2).count()}, {"doc_count": 24}]),
        "{r}"
    );
    assert_eq!(a["untagged"]["doc_count"], 6, "{r}");
    let by = a["by"]["buckets"].as_array().unwrap();
    for (t, b) in by.iter().enumerate() {
        assert_eq!(b["key"], format!("t{t}"), "{r}");
        assert_eq!(
            b["big"]["buckets"]["ge20"]["doc_count"],
            tagged(t).filter(|i| *i >= 20).count(),
            "{r}"
        );
    }
}

/// `fields`/`docvalue_fields` (patterns, date formats), `stored_fields`,
/// `rest_total_hits_as_int`, `_validate/query` and `_analyze`.
async fn fields_validate_analyze(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c
        .put(
            "/fv",
            &json!({"mappings": {"properties": {"@timestamp": {"type": "date"}, "msg": {"type": "text"},
                "tags": {"type": "keyword"}, "n": {"type": "long"}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let doc = json!({"@timestamp": "2024-05-01T10:00:00Z", "msg": "Quick Foxes", "tags": ["a", "b"], "n": 3});
    c.bulk_ok(
        "/_bulk?refresh=true",
        bulk_body("fv", [("1".to_string(), doc)]),
    )
    .await;
    let r = c
        .search(
            "fv",
            &json!({"_source": false, "fields": ["t*", "n"],
                "docvalue_fields": [{"field": "@timestamp", "format": "epoch_millis"}]}),
        )
        .await;
    let hit = &hits(&r)[0];
    assert_eq!(
        hit["fields"],
        json!({"tags": ["a", "b"], "n": [3], "@timestamp": ["1714557600000"]}),
        "{r}"
    );
    assert!(hit.get("_source").is_none(), "{r}");
    let r = c.search("fv", &json!({"stored_fields": ["_none_"]})).await;
    assert!(hits(&r)[0].get("_source").is_none(), "{r}");
    let r = c
        .post("/fv/_search?rest_total_hits_as_int=true", &json!({}))
        .await;
    assert_eq!(r.json["hits"]["total"], 1, "{r}");

    let r = c
        .post(
            "/fv/_validate/query",
            &json!({"query": {"match": {"msg": "fox"}}}),
        )
        .await;
    assert_eq!(r.json["valid"], true, "{r}");
    let r = c
        .post(
            "/fv/_validate/query?explain=true",
            &json!({"query": {"range": {"msg": {"gte": 1}}}}),
        )
        .await;
    assert_eq!(r.json["valid"], false, "{r}");
    assert!(
        r.json["explanations"][0]["error"]
            .as_str()
            .unwrap()
            .contains("text"),
        "{r}"
    );
    let r = c
        .post("/fv/_validate/query", &json!({"query": {"bogus": {}}}))
        .await;
    assert_eq!(r.json["valid"], false, "{r}");

    let r = c
        .post(
            "/_analyze",
            &json!({"analyzer": "standard", "text": "The Quick-Fox"}),
        )
        .await;
    let toks: Vec<(&str, u64, u64, u64)> = r.json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["token"].as_str().unwrap(),
                t["start_offset"].as_u64().unwrap(),
                t["end_offset"].as_u64().unwrap(),
                t["position"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        toks,
        vec![("the", 0, 3, 0), ("quick", 4, 9, 1), ("fox", 10, 13, 2)],
        "{r}"
    );
    let r = c
        .post(
            "/fv/_analyze",
            &json!({"field": "tags", "text": "Not Split"}),
        )
        .await;
    assert_eq!(r.json["tokens"][0]["token"], "Not Split", "{r}");
    let r = c
        .post("/_analyze", &json!({"analyzer": "nope", "text": "x"}))
        .await;
    assert_eq!(r.status, 400, "{r}");

    // _explain: the score of one document for a query, with its parts.
    let r = c
        .post(
            "/fv/_explain/1",
            &json!({"query": {"match": {"msg": "quick"}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["matched"], true, "{r}");
    let score = hits(
        &c.search("fv", &json!({"query": {"match": {"msg": "quick"}}}))
            .await,
    )[0]["_score"]
        .as_f64()
        .unwrap();
    let explained = r.json["explanation"]["value"].as_f64().unwrap();
    assert!((score - explained).abs() < 1e-4, "{score} vs {r}");
    let r = c
        .post(
            "/fv/_explain/1",
            &json!({"query": {"match": {"msg": "slow"}}}),
        )
        .await;
    assert_eq!(
        (r.status, r.json["matched"].clone()),
        (200, json!(false)),
        "{r}"
    );
    let r = c
        .post("/fv/_explain/nope", &json!({"query": {"match_all": {}}}))
        .await;
    assert_eq!(r.status, 404, "{r}");
}

/// Pipeline aggregations on merged histogram buckets (2 shards): cumulative_sum,
/// derivative, moving_fn and bucket_script, including under a calendar histogram.
async fn pipeline_aggs(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c
        .put(
            "/pl",
            &json!({"settings": {"number_of_shards": 2},
                "mappings": {"properties": {"@timestamp": {"type": "date"}, "n": {"type": "long"}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    // Day d (1..=4) has d documents, each with n = 10.
    let docs = (1..=4).flat_map(|d| {
        (0..d).map(move |i| {
            (
                format!("{d}-{i}"),
                json!({"@timestamp": format!("2024-05-0{d}T0{i}:00:00Z"), "n": 10}),
            )
        })
    });
    c.bulk_ok("/_bulk?refresh=true", bulk_body("pl", docs))
        .await;
    for interval in [
        json!({"fixed_interval": "1d"}),
        json!({"calendar_interval": "day", "time_zone": "UTC"}),
    ] {
        let mut hist = json!({"field": "@timestamp"});
        hist.as_object_mut()
            .unwrap()
            .extend(interval.as_object().unwrap().clone());
        let r = c
            .search(
                "pl",
                &json!({"size": 0, "aggs": {"d": {"date_histogram": hist, "aggs": {
                    "total": {"sum": {"field": "n"}},
                    "running": {"cumulative_sum": {"buckets_path": "_count"}},
                    "change": {"derivative": {"buckets_path": "total"}},
                    "avg": {"moving_fn": {"buckets_path": "_count", "window": 2, "script": "MovingFunctions.unweightedAvg(values)"}},
                    "per_doc": {"bucket_script": {"buckets_path": {"t": "total", "c": "_count"}, "script": "params.t / params.c"}}
                }}}}),
            )
            .await;
        let b = r.json["aggregations"]["d"]["buckets"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"));
        let col = |name: &str| -> Vec<Value> {
            b.iter()
                .map(|x| x.get(name).map_or(Value::Null, |v| v["value"].clone()))
                .collect()
        };
        assert_eq!(
            col("running"),
            vec![json!(1.0), json!(3.0), json!(6.0), json!(10.0)],
            "{r}"
        );
        assert_eq!(
            col("change"),
            vec![Value::Null, json!(10.0), json!(10.0), json!(10.0)],
            "{r}"
        );
        assert_eq!(
            col("avg"),
            vec![Value::Null, json!(1.0), json!(1.5), json!(2.5)],
            "{r}"
        );
        assert_eq!(col("per_doc"), vec![json!(10.0); 4], "{r}");
    }
}

/// `terminate_after` and `timeout` (body or URL): each shard stops collecting at the limit
/// and the response says so (`terminated_early`, `timed_out`); hits, count and
/// aggregations all cover the same documents. Bad values are 400s.
async fn search_limits(backend: Backend) {
    let (_env, c) = loaded(backend).await;
    let body = json!({
        "query": {"match_all": {}},
        "terminate_after": 10,
        "size": 50,
        "aggs": {"n": {"value_count": {"field": "status"}}},
    });
    let r = c.search("logs", &body).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(total_hits(&r), 10, "{r}");
    assert_eq!(hits(&r).len(), 10, "{r}");
    assert_eq!(r.json["terminated_early"], json!(true), "{r}");
    assert_eq!(r.json["aggregations"]["n"]["value"], json!(10.0), "{r}");
    assert_eq!(r.json["timed_out"], json!(false), "{r}");
    // A limit above the matches: everything, not terminated early.
    let r = c
        .get("/logs/_search?terminate_after=100000&q=status:200")
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(total_hits(&r), expected(|_, d| status(d) == 200), "{r}");
    assert_eq!(r.json["terminated_early"], json!(false), "{r}");
    // `_count` too.
    let r = c.get("/logs/_count?terminate_after=7").await;
    assert_eq!(r.json["count"], json!(7), "{r}");
    assert_eq!(r.json["terminated_early"], json!(true), "{r}");
    // Without it, the field is absent, as in OpenSearch.
    let r = c.search("logs", &json!({"query": {"match_all": {}}})).await;
    assert!(r.json.get("terminated_early").is_none(), "{r}");
    // A timeout already passed when the shard starts: nothing collected, `timed_out`.
    let r = c
        .search(
            "logs",
            &json!({"query": {"match_all": {}}, "timeout": "1nanos"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json["timed_out"], json!(true), "{r}");
    assert!(total_hits(&r) < N as u64, "{r}");
    // A generous one changes nothing.
    let r = c.get("/logs/_search?timeout=30s&size=0").await;
    assert_eq!(r.json["timed_out"], json!(false), "{r}");
    assert_eq!(total_hits(&r), N as u64, "{r}");
    assert_error(
        &c.post("/logs/_search", &json!({"terminate_after": 0}))
            .await,
        400,
        "illegal_argument_exception",
    );
    assert_error(
        &c.post("/logs/_search", &json!({"timeout": "soon"})).await,
        400,
        "parsing_exception",
    );
}

e2e!(
    search_limits,
    pipeline_aggs,
    fields_validate_analyze,
    filter_aggs,
    query_breadth,
    calendar_histograms,
    root_info,
    queries,
    paging_sort_source,
    multi_index,
    get_doc,
    sort_by_timestamp_large,
    date_histogram_paths_agree
);

/// Aggregation options tantivy computes and Floe passes through or rewrites: `percentiles`,
/// `extended_stats`, `show_term_doc_count_error`, and `offset` on date histograms (fixed
/// intervals, and calendar intervals through the exact-boundary rewrite). Expected values
/// from the documents: n = 1..10 at 00:00..09:00 on 2024-01-01.
#[tokio::test]
async fn aggregation_options() {
    let env = TestEnv::start(Backend::Local).await;
    let c = env.client();
    let r = c
        .put(
            "/ao",
            &json!({"settings": {"number_of_shards": 2},
                "mappings": {"properties": {"@timestamp": {"type": "date"}, "n": {"type": "long"},
                    "service": {"type": "keyword"}}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    c.bulk_ok(
        "/_bulk?refresh=true",
        bulk_body(
            "ao",
            (1..=10).map(|n: i64| {
                (
                    n.to_string(),
                    json!({"@timestamp": format!("2024-01-01T{:02}:00:00Z", n - 1), "n": n,
                        "service": if n % 2 == 1 { "a" } else { "b" }}),
                )
            }),
        ),
    )
    .await;
    let r = c
        .search(
            "ao",
            &json!({"size": 0, "aggs": {
                "x": {"extended_stats": {"field": "n"}},
                "p": {"percentiles": {"field": "n", "percents": [50, 100]}},
                "s": {"terms": {"field": "service", "show_term_doc_count_error": true}},
                "inc": {"terms": {"field": "service", "include": "a.*"}},
                "exc": {"terms": {"field": "service", "exclude": ["a"]}},
                "six": {"date_histogram": {"field": "@timestamp", "fixed_interval": "6h", "offset": "+3h"}},
                "m": {"date_histogram": {"field": "@timestamp", "calendar_interval": "month", "offset": "+6h"}}}}),
        )
        .await;
    let aggs = &r.json["aggregations"];
    let x = &aggs["x"];
    assert_eq!(
        (
            x["count"].as_u64(),
            x["min"].as_f64(),
            x["max"].as_f64(),
            x["sum"].as_f64()
        ),
        (Some(10), Some(1.0), Some(10.0), Some(55.0)),
        "{r}"
    );
    assert!((x["avg"].as_f64().unwrap() - 5.5).abs() < 1e-9, "{r}");
    assert!(
        (x["sum_of_squares"].as_f64().unwrap() - 385.0).abs() < 1e-9,
        "{r}"
    );
    assert!((x["variance"].as_f64().unwrap() - 8.25).abs() < 1e-9, "{r}");
    assert!(
        (x["std_deviation"].as_f64().unwrap() - 8.25f64.sqrt()).abs() < 1e-9,
        "{r}"
    );
    // Percentiles are estimated (OpenSearch: t-digest; tantivy: a sketch within 1%).
    let p50 = aggs["p"]["values"]["50.0"]
        .as_f64()
        .unwrap_or_else(|| panic!("{r}"));
    let p100 = aggs["p"]["values"]["100.0"]
        .as_f64()
        .unwrap_or_else(|| panic!("{r}"));
    assert!((4.9..=6.1).contains(&p50), "{r}");
    assert!((9.8..=10.2).contains(&p100), "{r}");
    for b in aggs["s"]["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
    {
        assert_eq!(b["doc_count"], 5, "{r}");
        assert_eq!(b["doc_count_error_upper_bound"], 0, "{r}");
    }
    assert_eq!(buckets(&r, "inc", "key"), [("a".to_string(), 5)], "{r}");
    assert_eq!(buckets(&r, "exc", "key"), [("b".to_string(), 5)], "{r}");
    assert_eq!(
        buckets(&r, "six", "key_as_string"),
        [
            ("2023-12-31T21:00:00.000Z".to_string(), 3),
            ("2024-01-01T03:00:00.000Z".to_string(), 6),
            ("2024-01-01T09:00:00.000Z".to_string(), 1)
        ],
        "{r}"
    );
    assert_eq!(
        buckets(&r, "m", "key_as_string"),
        [
            ("2023-12-01T06:00:00.000Z".to_string(), 6),
            ("2024-01-01T06:00:00.000Z".to_string(), 4)
        ],
        "{r}"
    );
}
