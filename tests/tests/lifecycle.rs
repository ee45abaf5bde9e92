//! The log-platform scenario: a template and an ISM policy ("roll over after N documents,
//! delete T seconds after rolling over") attached by `ism_template`, a bootstrap index with
//! a write alias, and a loader writing to the alias the whole time — across a SIGKILL and
//! restart. Rollovers happen, deleted indexes leave nothing in the bucket, and every
//! acknowledged document of an index still within retention is found.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use floe_tests::*;

const ROLLOVER_DOCS: u64 = 100;

fn policy() -> Value {
    json!({"policy": {
        "description": "rollover then delete",
        "default_state": "hot",
        "states": [
            {"name": "hot",
             "actions": [{"rollover": {"min_doc_count": ROLLOVER_DOCS}}],
             "transitions": [{"state_name": "delete", "conditions": {"min_rollover_age": "4s"}}]},
            {"name": "delete", "actions": [{"delete": {}}], "transitions": []}
        ],
        "ism_template": [{"index_patterns": ["logs-*"], "priority": 1}]
    }})
}

/// Writes batches through the alias; remembers which index acknowledged each id.
struct Loader {
    next: usize,
    acked: BTreeMap<String, String>,
}

impl Loader {
    async fn batch(&mut self, c: &Client) {
        let docs = (self.next..self.next + 20).map(|i| (format!("d{i}"), json!({"n": i})));
        let r = c
            .bulk_ok_retrying("/_bulk", bulk_body("logs", docs), Duration::from_secs(30))
            .await;
        for item in r.json["items"].as_array().into_iter().flatten() {
            let item = &item["index"];
            self.acked.insert(
                item["_id"].as_str().unwrap_or_default().to_string(),
                item["_index"].as_str().unwrap_or_default().to_string(),
            );
        }
        self.next += 20;
    }
}

/// Sets `plugins.index_state_management.job_interval` (60 minutes freezes ISM in a test).
async fn set_job_interval(c: &Client, interval: Value) {
    let body = json!({"persistent": {"plugins.index_state_management.job_interval": interval}});
    let r = c.put("/_cluster/settings", &body).await;
    assert_eq!(r.status, 200, "{r}");
}

async fn write_index(c: &Client) -> String {
    let r = c.get("/_alias/logs").await;
    r.json
        .as_object()
        .and_then(|o| {
            o.iter()
                .find(|(_, v)| v["aliases"]["logs"]["is_write_index"] == true)
                .map(|(k, _)| k.clone())
        })
        .unwrap_or_else(|| panic!("no write index: {r}"))
}

async fn index_exists(c: &Client, index: &str) -> bool {
    c.head(&format!("/{index}")).await.status == 200
}

async fn ism_rolls_over_and_deletes(backend: Backend) {
    let mut env = TestEnv::start(backend).await;
    let c = env.client();
    set_job_interval(&c, json!("1s")).await;
    let r = c
        .put("/_plugins/_ism/policies/logs-policy", &policy())
        .await;
    assert_eq!(r.status, 201, "{r}");
    let r = c
        .put(
            "/_index_template/logs",
            &json!({"index_patterns": ["logs-*"], "template": {"settings": {
                "number_of_shards": 1, "refresh_interval": "1s",
                "plugins.index_state_management.rollover_alias": "logs"}}}),
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
    let r = c.get("/_plugins/_ism/explain/logs-000001").await;
    assert_eq!(
        r.json["logs-000001"]["policy_id"], "logs-policy",
        "attached by ism_template: {r}"
    );
    let first_uuid = c.get("/logs-000001/_settings").await.json["logs-000001"]["settings"]["index"]
        ["uuid"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // Load until the alias has rolled over twice.
    let mut loader = Loader {
        next: 0,
        acked: BTreeMap::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while write_index(&c).await.as_str() < "logs-000003" {
        assert!(Instant::now() < deadline, "no second rollover within 90 s");
        loader.batch(&c).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // SIGKILL in the middle; the restarted node carries on where ISM stopped.
    env.floe.stop();
    env.floe.start_again().await;
    let c = env.client();
    let at_restart = write_index(&c).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        loader.batch(&c).await;
        let rolled_again = write_index(&c).await > at_restart;
        let first_deleted = !index_exists(&c, "logs-000001").await;
        if rolled_again && first_deleted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart: rolled over again {rolled_again}, logs-000001 deleted {first_deleted}\n{}",
            c.get("/_plugins/_ism/explain").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Freeze ISM, then check what is left.
    set_job_interval(&c, json!(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = c.get("/_cluster/settings").await;
    assert_eq!(
        r.json["persistent"]["plugins.index_state_management.job_interval"], 60,
        "{r}"
    );
    c.refresh("logs").await;
    let mut per_index: BTreeMap<String, u64> = BTreeMap::new();
    for index in loader.acked.values() {
        *per_index.entry(index.clone()).or_default() += 1;
    }
    let mut kept = 0;
    for (index, n) in &per_index {
        if index_exists(&c, index).await {
            assert_eq!(
                c.count(index).await,
                *n,
                "acknowledged documents of {index}"
            );
            kept += n;
        }
    }
    assert!(per_index.len() >= 3, "indexes written: {per_index:?}");
    println!(
        "FIGURE ism_indexes_written={} ism_docs_acked={} ism_docs_within_retention={kept}",
        per_index.len(),
        loader.acked.len()
    );
    assert_eq!(
        c.count("logs").await,
        kept,
        "the alias covers every index within retention"
    );
    // Rolled-over indexes hold at least the rollover size when they rolled.
    let keys = env.storage_keys(&format!("indexes/{first_uuid}/")).await;
    assert!(
        keys.is_empty(),
        "objects of the deleted index remain: {keys:?}"
    );
    // Explain: the current write index is managed; the ones before it rolled over.
    let r = c.get("/_plugins/_ism/explain").await;
    let current = write_index(&c).await;
    assert_eq!(r.json[&current]["policy_id"], "logs-policy", "{r}");
    let rolled = r
        .json
        .as_object()
        .map(|o| {
            o.values()
                .filter(|v| v["rolled_over"] == true && v["state"]["name"] == "hot")
                .count()
        })
        .unwrap_or(0);
    assert!(rolled >= 1, "{r}");
}

/// The ISM API: policies, add/remove/change_policy/retry/explain, and its errors.
async fn ism_api(backend: Backend) {
    let env = TestEnv::start(backend).await;
    let c = env.client();
    let r = c.put("/_plugins/_ism/policies/p1", &policy()).await;
    assert_eq!(
        (r.status, r.json["_id"].clone(), r.json["_seq_no"].clone()),
        (201, json!("p1"), json!(0)),
        "{r}"
    );
    let r = c.put("/_plugins/_ism/policies/p1", &policy()).await;
    assert_eq!(
        (r.status, r.json["_seq_no"].clone()),
        (200, json!(1)),
        "{r}"
    );
    let r = c.get("/_plugins/_ism/policies/p1").await;
    assert_eq!(r.json["policy"]["default_state"], "hot", "{r}");
    assert_eq!(
        c.get("/_plugins/_ism/policies").await.json["total_policies"],
        1
    );
    let mut bad = policy();
    bad["policy"]["states"][0]["actions"][0] = json!({"shrink": {}});
    assert_error(
        &c.put("/_plugins/_ism/policies/bad", &bad).await,
        400,
        "illegal_argument_exception",
    );
    assert_error(
        &c.get("/_plugins/_ism/policies/nope").await,
        404,
        "status_exception",
    );

    assert_eq!(c.put("/other-1", &json!({})).await.status, 200);
    let r = c
        .post("/_plugins/_ism/add/other-1", &json!({"policy_id": "p1"}))
        .await;
    assert_eq!(
        (
            r.json["updated_indices"].clone(),
            r.json["failures"].clone()
        ),
        (json!(1), json!(false)),
        "{r}"
    );
    let r = c
        .post("/_plugins/_ism/add/other-1", &json!({"policy_id": "p1"}))
        .await;
    assert_eq!(r.json["failures"], true, "already managed: {r}");
    assert_error(
        &c.post("/_plugins/_ism/add/other-1", &json!({"policy_id": "nope"}))
            .await,
        404,
        "status_exception",
    );
    let r = c
        .post(
            "/_plugins/_ism/change_policy/other-1",
            &json!({"policy_id": "p1", "state": "delete"}),
        )
        .await;
    assert_eq!(r.json["updated_indices"], 1, "{r}");
    assert_error(
        &c.post(
            "/_plugins/_ism/change_policy/other-1",
            &json!({"policy_id": "p1", "state": "warm"}),
        )
        .await,
        400,
        "illegal_argument_exception",
    );
    let r = c.post("/_plugins/_ism/retry/other-1", &json!({})).await;
    assert_eq!(r.json["failures"], true, "not failed: {r}");
    let r = c.get("/_plugins/_ism/explain/other-1").await;
    assert_eq!(r.json["other-1"]["policy_id"], "p1", "{r}");
    assert_eq!(r.json["total_managed_indices"], 1, "{r}");
    let r = c.post("/_plugins/_ism/remove/other-1", &json!({})).await;
    assert_eq!(r.json["updated_indices"], 1, "{r}");
    let r = c.get("/_plugins/_ism/explain/other-1").await;
    assert_eq!(r.json["total_managed_indices"], 0, "{r}");
    let r = c.delete("/_plugins/_ism/policies/p1").await;
    assert_eq!(r.json["result"], "deleted", "{r}");
    assert_error(
        &c.delete("/_plugins/_ism/policies/p1").await,
        404,
        "status_exception",
    );
    assert_error(
        &c.put(
            "/_cluster/settings",
            &json!({"persistent": {"plugins.index_state_management.job_interval": "soon"}}),
        )
        .await,
        400,
        "illegal_argument_exception",
    );
    // read_only blocks writes with 403.
    let r = c
        .put(
            "/other-1/_settings",
            &json!({"index": {"blocks": {"write": true}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c
        .post_ndjson(
            "/_bulk",
            bulk_body("other-1", [("x".to_string(), json!({"a": 1}))]),
        )
        .await;
    assert_eq!(r.json["items"][0]["index"]["status"], 403, "{r}");
    assert_eq!(
        r.json["items"][0]["index"]["error"]["type"], "cluster_block_exception",
        "{r}"
    );
}

e2e!(ism_rolls_over_and_deletes, ism_api);

/// Many small refreshes: background merges keep the segment count bounded, a force merge
/// leaves one segment with the same answers, and after the grace period no segment object
/// outside the published commit is left in the bucket.
#[tokio::test]
async fn small_refreshes_keep_segments_bounded() {
    const REFRESHES: usize = 1000;
    let env =
        TestEnv::start_with_config(Backend::Local, Some("[indexing]\ngc_grace_ms = 500\n")).await;
    let c = env.client();
    let r = c
        .put(
            "/seg",
            &json!({"settings": {"number_of_shards": 1, "refresh_interval": "-1"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    for i in 0..REFRESHES {
        let r = c
            .put(
                &format!("/seg/_doc/{i}?refresh=true"),
                &json!({"n": i, "msg": format!("line {i}")}),
            )
            .await;
        assert_eq!(r.status, 201, "{r}");
    }
    let segments = |c: Client| async move {
        let r = c.get("/_cat/segments/seg?format=json").await;
        assert_eq!(r.status, 200, "{r}");
        r.json.as_array().cloned().unwrap_or_default()
    };
    let before = segments(c.clone()).await;
    println!(
        "FIGURE segments_after_{REFRESHES}_refreshes={}",
        before.len()
    );
    assert!(
        before.len() <= 30,
        "{} segments after {REFRESHES} refreshes",
        before.len()
    );
    let docs: u64 = before
        .iter()
        .map(|s| {
            s["docs.count"]
                .as_str()
                .unwrap_or("0")
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(docs, REFRESHES as u64);
    let query =
        json!({"size": REFRESHES, "sort": [{"n": "asc"}], "query": {"match": {"msg": "line"}}});
    let answer = |r: Resp| {
        hits(&r)
            .iter()
            .map(|h| h["_source"].clone())
            .collect::<Vec<_>>()
    };
    let first = answer(c.search("seg", &query).await);
    assert_eq!(first.len(), REFRESHES);

    let r = c.post_empty("/_forcemerge?max_num_segments=1").await;
    assert_eq!(r.status, 200, "{r}");
    c.refresh("seg").await;
    let after = segments(c.clone()).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        answer(c.search("seg", &query).await),
        first,
        "same answers after the merge"
    );

    // After the grace period only the published segment's objects remain.
    let uuid = c.get("/seg/_settings").await.json["seg"]["settings"]["index"]["uuid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let segment = after[0]["segment"].as_str().unwrap_or_default().to_string();
    let prefix = format!("indexes/{uuid}/0/segments/");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let keys = env.storage_keys(&prefix).await;
        let stray: Vec<&String> = keys
            .iter()
            .filter(|k| {
                !k.rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .starts_with(&segment)
            })
            .collect();
        if stray.is_empty() && !keys.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "objects no commit needs remain: {stray:?}"
        );
        // Retired objects are deleted by the writer's refresh loop once the grace period passed.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // `_cat/indices` and the bucket agree once the grace period has passed.
    let Storage::Local { data_dir } = env.floe.storage() else {
        unreachable!("local backend")
    };
    let in_bucket: u64 = env
        .storage_keys(&prefix)
        .await
        .iter()
        .map(|k| {
            std::fs::metadata(data_dir.join(k))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum();
    let r = c.get("/_cat/indices/seg?format=json&bytes=b").await;
    let reported: u64 = r.json[0]["store.size"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        reported, in_bucket,
        "_cat/indices store.size vs the bucket: {r}"
    );
    println!("FIGURE seg_store_bytes={reported}");
}

/// Two processes on one bucket both run ISM: every step is claimed, so each index rolls
/// over exactly once — consecutive names, one write index, nothing lost.
#[tokio::test]
async fn two_runners_never_run_a_step_twice() {
    let (_data, storage) = temp_local_storage();
    let a = Floe::start_with_args(storage.clone(), None, &["--node-id", "a"]).await;
    let b = Floe::start_with_args(storage, None, &["--node-id", "b"]).await;
    let c = a.client();
    set_job_interval(&c, json!("1s")).await;
    let mut p = policy();
    // Keep every index: only rollovers happen.
    p["policy"]["states"][0]["transitions"] = json!([]);
    assert_eq!(c.put("/_plugins/_ism/policies/keep", &p).await.status, 201);
    let r = c
        .put(
            "/_index_template/logs",
            &json!({"index_patterns": ["logs-*"], "template": {"settings": {
                "plugins.index_state_management.rollover_alias": "logs"}}}),
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

    let mut loader = Loader {
        next: 0,
        acked: BTreeMap::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while write_index(&c).await.as_str() < "logs-000005" {
        assert!(
            Instant::now() < deadline,
            "four rollovers did not happen within 90 s"
        );
        loader.batch(&c).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set_job_interval(&c, json!(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The alias on B: consecutive indexes, exactly one of them the write index.
    let r = b.client().get("/_alias/logs").await;
    let members = r.json.as_object().cloned().unwrap_or_default();
    let names: Vec<&String> = members.keys().collect();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            **name,
            format!("logs-{:06}", i + 1),
            "a gap or a double rollover: {r}"
        );
    }
    let writers = members
        .values()
        .filter(|v| v["aliases"]["logs"]["is_write_index"] == true)
        .count();
    assert_eq!(writers, 1, "{r}");
    // Each rolled-over index rolled over once, when it held enough documents.
    c.refresh("logs").await;
    for name in &names[..names.len() - 1] {
        let n = c.count(name).await;
        assert!(n >= ROLLOVER_DOCS, "{name} rolled over with {n} documents");
    }
    assert_eq!(c.count("logs").await, loader.acked.len() as u64);
    println!("FIGURE two_runners_rollovers={}", names.len() - 1);
}

/// A failing action is retried as its `retry` says, then marked failed (explain shows it);
/// `retry` after fixing the cause resumes it. An action past its `timeout` fails.
#[tokio::test]
async fn failed_actions_retry_then_resume() {
    let env = TestEnv::start(Backend::Local).await;
    let c = env.client();
    set_job_interval(&c, json!("1s")).await;
    let policy = |timeout: Option<&str>| {
        let mut step = json!({"rollover": {"min_doc_count": 1}, "retry": {"count": 1, "delay": "1s", "backoff": "constant"}});
        if let Some(t) = timeout {
            step["rollover"]["min_doc_count"] = json!(1_000_000);
            step["timeout"] = json!(t);
        }
        json!({"policy": {"default_state": "hot", "states": [{"name": "hot", "actions": [step], "transitions": []}]}})
    };
    assert_eq!(
        c.put("/_plugins/_ism/policies/roll", &policy(None))
            .await
            .status,
        201
    );
    assert_eq!(
        c.put("/_plugins/_ism/policies/slow", &policy(Some("2s")))
            .await
            .status,
        201
    );
    // No rollover_alias setting: the rollover fails, is retried once, then fails for good.
    assert_eq!(
        c.put(
            "/app-000001",
            &json!({"aliases": {"app": {"is_write_index": true}}})
        )
        .await
        .status,
        200
    );
    c.bulk_ok(
        "/_bulk",
        bulk_body("app", [("a1".to_string(), json!({"n": 1}))]),
    )
    .await;
    c.refresh("app").await;
    let r = c
        .post(
            "/_plugins/_ism/add/app-000001",
            &json!({"policy_id": "roll"}),
        )
        .await;
    assert_eq!(r.json["updated_indices"], 1, "{r}");
    let explain = |c: Client, index: &'static str| async move {
        c.get(&format!("/_plugins/_ism/explain/{index}")).await.json[index].clone()
    };
    let failed = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let c = c.clone();
        async move { explain(c, "app-000001").await["retry_info"]["failed"] == true }
    })
    .await;
    let e = explain(c.clone(), "app-000001").await;
    assert!(failed.is_some(), "never failed: {e}");
    assert_eq!(e["retry_info"]["consumed_retries"], 1, "{e}");
    assert!(
        e["info"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("rollover_alias"),
        "{e}"
    );
    assert_eq!(c.head("/app-000002").await.status, 404);
    // Fix the cause, retry: the rollover happens.
    let r = c
        .put(
            "/app-000001/_settings",
            &json!({"index": {"plugins.index_state_management.rollover_alias": "app"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    let r = c.post("/_plugins/_ism/retry/app-000001", &json!({})).await;
    assert_eq!(r.json["updated_indices"], 1, "{r}");
    // The new index appears first; the managed index's state says so a moment later.
    let rolled = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let c = c.clone();
        async move {
            c.head("/app-000002").await.status == 200
                && explain(c.clone(), "app-000001").await["rolled_over"] == true
        }
    })
    .await;
    assert!(
        rolled.is_some(),
        "no rollover after retry: {}",
        explain(c.clone(), "app-000001").await
    );

    // Conditions that never come true: the action times out and fails.
    let r = c.put("/slow-000001", &json!({"settings": {"plugins.index_state_management.rollover_alias": "slow"}, "aliases": {"slow": {"is_write_index": true}}})).await;
    assert_eq!(r.status, 200, "{r}");
    c.post(
        "/_plugins/_ism/add/slow-000001",
        &json!({"policy_id": "slow"}),
    )
    .await;
    let timed_out = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let c = c.clone();
        async move { explain(c, "slow-000001").await["retry_info"]["failed"] == true }
    })
    .await;
    let e = explain(c.clone(), "slow-000001").await;
    assert!(timed_out.is_some(), "never timed out: {e}");
    assert!(
        e["info"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("timed out"),
        "{e}"
    );
}

/// The index-setting and merge actions, run by the ISM job: `read_only` blocks writes,
/// `replica_count` and `index_priority` change the settings, `force_merge` leaves one
/// segment; then the policy is complete.
#[tokio::test]
async fn ism_setting_and_merge_actions() {
    let env = TestEnv::start(Backend::Local).await;
    let c = env.client();
    set_job_interval(&c, json!("1s")).await;
    let policy = json!({"policy": {"default_state": "warm", "states": [{"name": "warm", "actions": [
        {"read_only": {}},
        {"replica_count": {"number_of_replicas": 2}},
        {"index_priority": {"priority": 50}},
        {"force_merge": {"max_num_segments": 1}}
    ], "transitions": []}]}});
    assert_eq!(
        c.put("/_plugins/_ism/policies/warm", &policy).await.status,
        201
    );
    let r = c
        .put(
            "/old",
            &json!({"settings": {"number_of_shards": 1, "refresh_interval": "-1"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r}");
    for i in 0..5 {
        let r = c
            .put(&format!("/old/_doc/{i}?refresh=true"), &json!({"n": i}))
            .await;
        assert_eq!(r.status, 201, "{r}");
    }
    let r = c
        .post("/_plugins/_ism/add/old", &json!({"policy_id": "warm"}))
        .await;
    assert_eq!(r.json["updated_indices"], 1, "{r}");
    let done = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let c = c.clone();
        async move {
            let r = c.get("/_plugins/_ism/explain/old").await;
            r.json["old"]["info"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("completed")
        }
    })
    .await;
    let explain = c.get("/_plugins/_ism/explain/old").await;
    assert!(done.is_some(), "policy did not complete: {explain}");
    let r = c.get("/old/_settings").await;
    let s = &r.json["old"]["settings"]["index"];
    assert_eq!(
        (
            s["blocks"]["write"].clone(),
            s["number_of_replicas"].clone(),
            s["priority"].clone()
        ),
        (json!("true"), json!("2"), json!("50")),
        "{r}"
    );
    c.refresh("old").await;
    let r = c.get("/_cat/segments/old?format=json").await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(c.count("old").await, 5);
    let r = c.put("/old/_doc/9", &json!({"n": 9})).await;
    assert_error(&r, 403, "cluster_block_exception");
}
