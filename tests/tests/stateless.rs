//! The promise: object storage holds all durable state. SIGKILL Floe, delete its cache dir,
//! start it again on the same storage, and nothing acknowledged is lost.

use std::time::{Duration, Instant};

use floe_tests::*;

/// After a restart the shards may take a moment to be reopened; allow this long.
const RECOVERY: Duration = Duration::from_secs(30);

/// What we compare before and after a restart.
#[derive(Debug, PartialEq)]
struct Snapshot {
    count: u64,
    top_by_timestamp: Vec<String>,
    errors: u64,
    mapping: Value,
}

async fn snapshot(c: &Client) -> Snapshot {
    let count = c.count("logs").await;
    let r = c
        .search(
            "logs",
            &json!({"sort": [{"@timestamp": "desc"}], "size": 10}),
        )
        .await;
    let top_by_timestamp = hit_ids(&r);
    let r = c
        .search(
            "logs",
            &json!({"query": {"match": {"message": "error"}}, "size": 0}),
        )
        .await;
    let errors = total_hits(&r);
    let r = c.get("/logs/_mapping").await;
    assert_eq!(r.status, 200, "{r}");
    Snapshot {
        count,
        top_by_timestamp,
        errors,
        mapping: r.json,
    }
}

/// Kills Floe, wipes its cache, starts it again and waits until `logs` has `count` docs.
async fn kill_wipe_restart(env: &mut TestEnv, count: u64) {
    env.floe.stop();
    env.floe.wipe_cache();
    let started = Instant::now();
    env.floe.start_again().await;
    let c = env.client();
    let n = c.wait_for_count("logs", count, RECOVERY).await;
    assert_eq!(n, Some(count), "count of `logs` {RECOVERY:?} after restart");
    eprintln!("restart to full count took {:?}", started.elapsed());
}

/// Load, refresh, snapshot; kill + wipe cache + restart: same answers; then write more.
async fn restart_with_empty_cache(backend: Backend) {
    let mut env = TestEnv::start(backend).await;
    let c = env.client();
    c.bulk_ok("/_bulk", logs_bulk("logs", 0..200)).await;
    c.refresh("logs").await;
    let before = snapshot(&c).await;
    assert_eq!(before.count, 200);

    let r = c.get("/logs/_settings").await;
    let uuid = r.json["logs"]["settings"]["index"]["uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("uuid: {r}"))
        .to_string();
    let keys = env.storage_keys(&format!("indexes/{uuid}/")).await;
    assert!(
        !keys.is_empty(),
        "no segment objects under indexes/{uuid}/ after refresh"
    );
    eprintln!(
        "{} objects under indexes/{uuid}/, e.g. {:?}",
        keys.len(),
        &keys[..keys.len().min(5)]
    );

    kill_wipe_restart(&mut env, 200).await;
    let after = snapshot(&c).await;
    assert_eq!(
        after, before,
        "answers changed across kill + empty cache + restart"
    );
    let r = c.get("/logs/_doc/log-0042").await;
    assert_eq!(r.json["_source"], log_doc(42), "{r}");

    // Write after the restart (once the killed incarnation's session expired): old and new
    // are both there.
    c.bulk_ok_retrying("/_bulk", logs_bulk("logs", 200..250), RECOVERY)
        .await;
    c.refresh("logs").await;
    assert_eq!(c.count("logs").await, 250);
    for i in [0usize, 199, 200, 249] {
        let r = c.get(&format!("/logs/_doc/{}", log_id(i))).await;
        assert_eq!(r.status, 200, "{} after restart: {r}", log_id(i));
    }
    let r = c
        .search(
            "logs",
            &json!({"query": {"range": {"size": {"gte": 2000}}}, "size": 100}),
        )
        .await;
    assert_eq!(total_hits(&r), 50, "new docs searchable: {r}");

    // And once more, now with segments from both lives of the index.
    kill_wipe_restart(&mut env, 250).await;
    let r = c
        .search("logs", &json!({"query": {"match_all": {}}, "size": 0}))
        .await;
    assert_eq!(total_hits(&r), 250, "{r}");
}

/// Acknowledged writes survive SIGKILL right after the acknowledgement, without `_refresh`.
async fn acknowledged_writes_survive_kill(backend: Backend) {
    let mut env = TestEnv::start(backend).await;
    let c = env.client();
    c.bulk_ok("/_bulk", logs_bulk("logs", 0..100)).await;
    let r = c
        .put(
            "/logs/_doc/single",
            &json!({"message": "acknowledged alone", "status": 201}),
        )
        .await;
    assert_eq!(r.status, 201, "{r}");
    // No refresh: kill at once.
    kill_wipe_restart(&mut env, 101).await;
    for id in ["single".to_string(), log_id(0), log_id(99)] {
        let r = c.get(&format!("/logs/_doc/{id}")).await;
        assert_eq!(r.status, 200, "{id} lost: {r}");
    }
    let r = c
        .search(
            "logs",
            &json!({"query": {"match": {"message": "acknowledged"}}}),
        )
        .await;
    assert_eq!(hit_ids(&r), vec!["single".to_string()], "{r}");
}

e2e!(restart_with_empty_cache, acknowledged_writes_survive_kill);
