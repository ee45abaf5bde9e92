//! Unit tests of the writer role against a local-directory bucket.
use super::*;
use serde_json::json;

/// A writer configuration for tests: small memory, one thread, no GC grace.
fn test_config(
    scratch_dir: std::path::PathBuf,
    lease_ttl: Duration,
    node_id: impl Into<String>,
) -> WriterConfig {
    WriterConfig {
        scratch_dir,
        memory: 40_000_000,
        max_open_writers: 2,
        threads_per_shard: 1,
        lease_ttl,
        clock_skew_margin: Duration::from_millis(100),
        node_id: node_id.into(),
        idle_close: Duration::from_secs(60),
        gc_grace: Duration::ZERO,
    }
}

async fn metastore(storage: &Storage) -> Arc<Metastore> {
    Arc::new(
        Metastore::open_with(
            storage.clone(),
            floe_metastore::MetastoreOptions {
                clock_skew_margin: Duration::from_millis(100),
            },
        )
        .await
        .unwrap(),
    )
}

/// A local-directory bucket in a temporary directory, and a metastore on it.
async fn bucket() -> (tempfile::TempDir, Storage, Arc<Metastore>) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path().join("bucket")).unwrap();
    let ms = metastore(&storage).await;
    (dir, storage, ms)
}

/// A `_bulk` body indexing `docs` (`_id`, source JSON) into `index`.
fn index_body(index: &str, docs: impl IntoIterator<Item = (String, String)>) -> Bytes {
    let mut b = String::new();
    for (id, source) in docs {
        b.push_str(&format!(
            "{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"{id}\"}}}}\n{source}\n"
        ));
    }
    Bytes::from(b)
}

async fn started(ms: Arc<Metastore>, storage: &Storage, config: WriterConfig) -> Writer {
    let blocks = floe_cache::BlockCache::open(
        storage.clone(),
        &floe_cache::CacheConfig {
            memory_bytes: 16 << 20,
            disk_bytes: 0,
            dir: config.scratch_dir.join("blocks"),
        },
    )
    .await
    .unwrap();
    let w = Writer::new(ms, storage.clone(), blocks, config);
    w.start_session().await.unwrap();
    w
}

#[test]
fn routing_is_stable_and_spread() {
    let mut counts = [0u32; 3];
    for i in 0..300 {
        counts[shard_for(&i.to_string(), 3) as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
    assert_eq!(shard_for("abc", 5), shard_for("abc", 5));
}

#[test]
fn create_body() {
    let (s, m) = parse_create_body(
        &json!({"settings": {"index": {"number_of_shards": "3", "refresh_interval": "500ms"}},
        "mappings": {"properties": {"n": {"type": "long"}}}}),
    )
    .unwrap();
    assert_eq!(s.number_of_shards, 3);
    assert_eq!(s.refresh(), Some(Duration::from_millis(500)));
    assert!(m.get("n").is_some());
    assert!(parse_create_body(&json!({"settings": {"number_of_shards": 0}})).is_err());
    assert!(parse_create_body(&json!({"settings": {"refresh_interval": "abc"}})).is_err());
    let (s, _) = parse_create_body(&json!({"settings": {"index.translog.durability": "async", "index": {"translog": {"sync_interval": "200ms"}}}})).unwrap();
    assert_eq!(
        (
            s.translog_durability.as_str(),
            s.translog_sync_interval.as_str()
        ),
        ("async", "200ms")
    );
    assert!(
        parse_create_body(&json!({"settings": {"translog": {"durability": "never"}}})).is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_refresh_publishes_segments_and_restores() {
    let (dir, storage, ms) = bucket().await;
    // Short sessions: the second writer (same node id) waits for the first to expire.
    let config = test_config(
        dir.path().join("scratch"),
        Duration::from_millis(600),
        "test-node",
    );
    let w = started(ms.clone(), &storage, config.clone()).await;
    let body = Bytes::from_static(b"{\"index\":{\"_index\":\"t\",\"_id\":\"1\"}}\n{\"n\":1,\"m\":\"hello world\"}\n{\"index\":{\"_index\":\"t\"}}\n{\"n\":\"bad\"}\n{\"index\":{\"_index\":\"t\",\"_id\":\"1\"}}\n{\"n\":2}\n");
    let resp = w
        .bulk(None, body, RefreshPolicy::True)
        .await
        .unwrap()
        .to_json();
    assert_eq!(resp["errors"], true);
    assert_eq!(resp["items"][0]["index"]["result"], "created");
    assert_eq!(
        resp["items"][1]["index"]["error"]["type"],
        "mapper_parsing_exception"
    );
    assert_eq!(resp["items"][2]["index"]["result"], "updated");
    let meta = ms.get_index("t").unwrap();
    assert_eq!(meta.shards[&0].num_docs, 1);
    assert!(!storage
        .list(&meta.segments_prefix(0))
        .await
        .unwrap()
        .is_empty());
    // A fresh writer (empty scratch) continues from the bucket.
    std::fs::remove_dir_all(dir.path().join("scratch")).unwrap();
    let w2 = started(ms.clone(), &storage, config).await;
    let body = Bytes::from_static(b"{\"index\":{\"_index\":\"t\",\"_id\":\"2\"}}\n{\"n\":3}\n{\"delete\":{\"_index\":\"t\",\"_id\":\"1\"}}\n");
    let resp = w2
        .bulk(None, body, RefreshPolicy::True)
        .await
        .unwrap()
        .to_json();
    assert_eq!(resp["items"][1]["delete"]["result"], "deleted", "{resp}");
    assert_eq!(ms.get_index("t").unwrap().shards[&0].num_docs, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrefreshed_writes_are_replayed_from_the_translog() {
    let (dir, storage, ms) = bucket().await;
    // Short sessions: the second writer (same node id) waits for the first to expire.
    let config = test_config(
        dir.path().join("scratch"),
        Duration::from_millis(600),
        "test-node",
    );
    let w = started(ms.clone(), &storage, config.clone()).await;
    let body = Bytes::from_static(b"{\"index\":{\"_index\":\"r\",\"_id\":\"a\"}}\n{\"n\":1}\n{\"index\":{\"_index\":\"r\",\"_id\":\"b\"}}\n{\"n\":2}\n");
    w.bulk(None, body, RefreshPolicy::True)
        .await
        .unwrap()
        .to_json();
    // Acknowledged but never refreshed: only the translog has these.
    let body = Bytes::from_static(b"{\"index\":{\"_index\":\"r\",\"_id\":\"c\"}}\n{\"n\":3}\n{\"delete\":{\"_index\":\"r\",\"_id\":\"a\"}}\n{\"index\":{\"_index\":\"r\",\"_id\":\"b\"}}\n{\"n\":22}\n");
    let resp = w
        .bulk(None, body, RefreshPolicy::False)
        .await
        .unwrap()
        .to_json();
    assert_eq!(resp["errors"], false, "{resp}");
    let uuid = ms.get_index("r").unwrap().uuid;
    assert_eq!(
        storage.list("nodes").await.unwrap().len(),
        1,
        "covered batches were deleted (one writer-wide translog object left)"
    );
    drop(w); // the "crash": local state is thrown away below
    std::fs::remove_dir_all(dir.path().join("scratch")).unwrap();
    let ms2 = metastore(&storage).await;
    let w2 = started(ms2.clone(), &storage, config).await;
    assert_eq!(w2.recover().await.unwrap(), 1);
    w2.refresh(&["r".to_string()]).await.unwrap();
    let meta = ms2.get_index("r").unwrap();
    assert_eq!(meta.shards[&0].num_docs, 2, "b and c live, a deleted");
    assert_eq!(meta.shards[&0].translog_checkpoint, 5);
    let left: Vec<String> = storage
        .list(&format!("indexes/{uuid}/0/translog"))
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(
        left.iter().all(|k| k.ends_with("-fence")),
        "only the takeover marker remains: {left:?}"
    );
    // The crashed incarnation's log is covered by the new commit: collected.
    assert_eq!(w2.collect_dead_logs().await.unwrap(), 1);
    assert!(storage.list("nodes").await.unwrap().is_empty());
    // Sequence numbers continue after the replayed ones.
    let resp = w2
        .bulk(
            None,
            Bytes::from_static(b"{\"index\":{\"_index\":\"r\",\"_id\":\"b\"}}\n{\"n\":3}\n"),
            RefreshPolicy::False,
        )
        .await
        .unwrap()
        .to_json();
    assert_eq!(resp["items"][0]["index"]["_seq_no"], 5);
    assert_eq!(resp["items"][0]["index"]["_version"], 3);
}

/// Two writers believe they own a shard: the old owner paused past its lease while a new
/// one took over. Only the new epoch's view survives; the old owner can neither
/// acknowledge nor publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_owner_is_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path().join("bucket")).unwrap();
    let writer = |name: &str, ttl_ms: u64, ms: Arc<Metastore>| {
        started(
            ms,
            &storage,
            test_config(
                dir.path().join(name),
                Duration::from_millis(ttl_ms),
                name.to_string(),
            ),
        )
    };
    let ms_a = metastore(&storage).await;
    let a = writer("a", 800, ms_a.clone()).await;
    let doc = |id: &str| {
        Bytes::from(format!(
            "{{\"index\":{{\"_index\":\"f\",\"_id\":\"{id}\"}}}}\n{{\"v\":1}}\n"
        ))
    };
    let r = a
        .bulk(None, doc("a1"), RefreshPolicy::True)
        .await
        .unwrap()
        .to_json();
    assert_eq!(r["items"][0]["index"]["_primary_term"], 1);
    assert_eq!(
        a.bulk(None, doc("a2"), RefreshPolicy::False)
            .await
            .unwrap()
            .to_json()["errors"],
        false
    );
    // A pauses (no lease renewal) past its lease.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let ms_b = metastore(&storage).await;
    let b = writer("b", 10_000, ms_b.clone()).await;
    let r = b
        .bulk(None, doc("b1"), RefreshPolicy::False)
        .await
        .unwrap()
        .to_json();
    assert_eq!(r["items"][0]["index"]["_primary_term"], 2, "{r}");
    // B publishes; every object its commit references is recorded byte for byte.
    b.refresh(&["f".to_string()]).await.unwrap();
    let fresh = metastore(&storage).await;
    let meta = fresh.get_index("f").unwrap();
    assert_eq!(meta.shards[&0].epoch, 2);
    assert_eq!(
        meta.shards[&0].num_docs, 3,
        "a1, a2 (acknowledged by A, replayed by B) and b1; not a3"
    );
    let prefix = meta.segments_prefix(0);
    let mut referenced = Vec::new();
    for f in &meta.shards[&0].files {
        let key = format!("{prefix}/{}", f.object_key());
        referenced.push((key.clone(), storage.get(&key).await.unwrap()));
    }
    let before: Vec<String> = storage
        .list(&prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    // ... nor publish what it still holds (a2, applied locally before the pause), and
    // what it uploads trying to (create-only, under its own epoch's keys) replaces no
    // object of the published commit.
    match a.refresh(&["f".to_string()]).await {
        Err(WriterError::Metastore(MetastoreError::StaleCommit { .. })) => {}
        other => panic!("stale publish must be refused, got {other:?}"),
    }
    for (key, bytes) in &referenced {
        assert_eq!(&storage.get(key).await.unwrap(), bytes, "{key} unchanged");
    }
    let zombie_uploads: Vec<String> = storage
        .list(&prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !before.contains(k))
        .collect();
    assert!(!zombie_uploads.is_empty(), "A did upload its segment");
    assert!(
        zombie_uploads
            .iter()
            .all(|k| k.starts_with(&format!("{prefix}/0000000001/"))),
        "{zombie_uploads:?}"
    );
    assert_eq!(fresh.get_index("f").unwrap().shards[&0].epoch, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_durability_acknowledges_first_and_syncs_on_interval() {
    let (dir, storage, ms) = bucket().await;
    let w = started(
        ms.clone(),
        &storage,
        test_config(dir.path().join("scratch"), Duration::from_secs(10), "n"),
    )
    .await;
    w.create_index("as", &json!({"settings": {"index.translog.durability": "async", "index.translog.sync_interval": "300ms"}})).await.unwrap();
    let translog = "nodes".to_string();
    let r = w
        .bulk(
            Some("as"),
            Bytes::from_static(b"{\"index\":{\"_id\":\"1\"}}\n{\"v\":1}\n"),
            RefreshPolicy::False,
        )
        .await
        .unwrap()
        .to_json();
    assert_eq!(r["errors"], false);
    assert!(
        storage.list(&translog).await.unwrap().is_empty(),
        "acknowledged before the sync"
    );
    let mut synced = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !storage.list(&translog).await.unwrap().is_empty() {
            synced = true;
            break;
        }
    }
    assert!(synced, "the translog is written within the sync interval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_merge_publishes_one_segment_and_gc_removes_the_rest() {
    let (dir, storage, ms) = bucket().await;
    let w = started(
        ms.clone(),
        &storage,
        test_config(dir.path().join("scratch"), Duration::from_secs(10), "n"),
    )
    .await;
    for i in 0..3 {
        let body = format!("{{\"index\":{{\"_index\":\"m\",\"_id\":\"{i}\"}}}}\n{{\"v\":{i}}}\n");
        w.bulk(None, Bytes::from(body), RefreshPolicy::True)
            .await
            .unwrap()
            .to_json();
    }
    let segments = |m: &IndexMeta| {
        m.shards[&0]
            .files
            .iter()
            .filter(|f| f.name.ends_with(".idx"))
            .count()
    };
    assert!(segments(&ms.get_index("m").unwrap()) >= 2);
    assert_eq!(w.force_merge(&["m".to_string()], 1).await.unwrap(), 1);
    let meta = ms.get_index("m").unwrap();
    assert_eq!(segments(&meta), 1);
    assert_eq!(meta.shards[&0].num_docs, 3);
    let writer = w.shards.lock().await.values().next().unwrap().clone();
    assert!(writer.collect_garbage(Duration::ZERO).await > 0);
    let mut in_bucket: Vec<String> = storage
        .list(&meta.segments_prefix(0))
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap().to_string())
        .collect();
    let mut live: Vec<String> = meta.shards[&0]
        .files
        .iter()
        .map(|f| f.name.clone())
        .collect();
    in_bucket.sort();
    live.sort();
    assert_eq!(in_bucket, live, "only the published commit's files remain");
}

/// A translog object that cannot be re-applied does not wedge the shard: it is set aside
/// (kept, never dropped), counted, and everything else is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_translog_is_kept_and_the_shard_opens() {
    let (dir, storage, ms) = bucket().await;
    let config = test_config(dir.path().join("scratch"), Duration::from_millis(600), "n");
    let w = started(ms.clone(), &storage, config.clone()).await;
    let body = Bytes::from_static(b"{\"index\":{\"_index\":\"q\",\"_id\":\"a\"}}\n{\"n\":1}\n");
    w.bulk(None, body.clone(), RefreshPolicy::False)
        .await
        .unwrap();
    let uuid = ms.get_index("q").unwrap().uuid;
    // A damaged object sorting after the good one.
    let bad =
        format!("indexes/{uuid}/0/translog/0000000001-00000000000000000005-00000000000000000006");
    storage
        .put(&bad, Bytes::from_static(b"not json\n"))
        .await
        .unwrap();
    drop(w);
    std::fs::remove_dir_all(dir.path().join("scratch")).unwrap();
    let w2 = started(metastore(&storage).await, &storage, config).await;
    assert_eq!(w2.recover().await.unwrap(), 1);
    assert_eq!(w2.replay_failures().await, 1);
    let kept = storage
        .list(&format!("indexes/{uuid}/0/translog-failed"))
        .await
        .unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    w2.refresh(&["q".to_string()]).await.unwrap();
    assert_eq!(w2.metastore.get_index("q").unwrap().shards[&0].num_docs, 1);
}

/// More shards written at once than writer slots: operations wait in shard backlogs,
/// with outcomes (versions, realtime reads) decided at once, and every document reaches
/// the published commits; threads stay bounded by the slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_shards_than_writer_slots() {
    let (dir, storage, ms) = bucket().await;
    let config = test_config(dir.path().join("scratch"), Duration::from_secs(10), "n");
    let w = started(ms.clone(), &storage, config).await;
    w.create_index("many", &json!({"settings": {"number_of_shards": 12}}))
        .await
        .unwrap();
    let body = |v: u32| {
        index_body(
            "many",
            (0..60).map(|i| (format!("d{i}"), format!("{{\"v\":{v}}}"))),
        )
    };
    let r = w
        .bulk(None, body(1), RefreshPolicy::False)
        .await
        .unwrap()
        .to_json();
    assert_eq!(r["errors"], false, "{r}");
    assert!(w.pool.open_count() <= 2, "writer slots respected");
    let r = w
        .bulk(None, body(2), RefreshPolicy::False)
        .await
        .unwrap()
        .to_json();
    assert!(
        r["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["index"]["_version"] == 2),
        "overwrites see the backlogged first versions: {r}"
    );
    let got = w.realtime_get("many", "d7", None).await.unwrap();
    assert_eq!(
        (got.version, &got.source.unwrap()[..]),
        (2, &b"{\"v\":2}"[..])
    );
    w.refresh(&["many".to_string()]).await.unwrap();
    let meta = ms.get_index("many").unwrap();
    assert_eq!(meta.doc_count(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_memory_budget_flushes_the_largest_shard_first() {
    let (dir, storage, ms) = bucket().await;
    let config = test_config(dir.path().join("scratch"), Duration::from_secs(10), "n");
    let budget = config.memory;
    let w = started(ms.clone(), &storage, config).await;
    for index in ["small", "big"] {
        w.create_index(index, &json!({"settings": {"number_of_shards": 1}}))
            .await
            .unwrap();
    }
    let bulk = |index: &str, from: usize, n: usize, pad: usize| {
        let source = format!("{{\"m\":\"{}\"}}", "x".repeat(pad));
        index_body(
            index,
            (from..from + n).map(|i| (format!("d{i}"), source.clone())),
        )
    };
    let r = w
        .bulk(None, bulk("small", 0, 10, 100), RefreshPolicy::False)
        .await
        .unwrap()
        .to_json();
    assert_eq!(r["errors"], false, "{r}");
    let key_of = |shards: &HashMap<ShardKey, Arc<ShardWriter>>, index: &str| {
        let uuid = ms.get_index(index).unwrap().uuid;
        let (_, s) = shards
            .iter()
            .find(|(_, s)| s.spec.index_uuid == uuid)
            .unwrap();
        Arc::as_ptr(s) as usize
    };
    let small = key_of(&*w.shards.lock().await, "small");
    let small_held = w.pool.buffered_by(small);
    assert!(small_held > 0, "the small shard's buffer is counted");
    // The big index alone writes over twice the budget (estimated), 400 docs of 10 KB a time.
    let mut written = 0;
    for round in 0..12 {
        let r = w
            .bulk(
                None,
                bulk("big", round * 400, 400, 10_000),
                RefreshPolicy::False,
            )
            .await
            .unwrap()
            .to_json();
        assert_eq!(r["errors"], false);
        written += 400 * crate::pool::estimated_bytes(10_010);
        assert!(
            w.pool.buffered_bytes() <= budget,
            "round {round}: {} held over a budget of {budget}",
            w.pool.buffered_bytes()
        );
    }
    let big = key_of(&*w.shards.lock().await, "big");
    assert!(written > 2 * budget);
    assert!(
        w.pool.buffered_by(big) < budget,
        "the big shard was flushed"
    );
    assert_eq!(
        w.pool.buffered_by(small),
        small_held,
        "the small shard was left alone: the largest goes first"
    );
    // Flushed locally, not lost: a refresh publishes everything.
    w.refresh(&["big".to_string(), "small".to_string()])
        .await
        .unwrap();
    assert_eq!(ms.get_index("big").unwrap().doc_count(), 4800);
    assert_eq!(ms.get_index("small").unwrap().doc_count(), 10);
    assert_eq!(w.pool.buffered_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_logs_of_deleted_indexes_are_collected() {
    let (dir, storage, ms) = bucket().await;
    let ttl = Duration::from_millis(600);
    let w = started(
        ms.clone(),
        &storage,
        test_config(dir.path().join("a"), ttl, "a"),
    )
    .await;
    let body = Bytes::from_static(b"{\"index\":{\"_index\":\"gone\",\"_id\":\"1\"}}\n{\"n\":1}\n");
    let r = w.bulk(None, body, RefreshPolicy::False).await.unwrap();
    assert_eq!(r.to_json()["errors"], false);
    drop(w); // dies with its log not covered by any commit
    ms.delete_index("gone").await.unwrap();
    assert_eq!(storage.list("nodes").await.unwrap().len(), 1);
    // Another node that never knew the index collects the log once the owner is gone.
    let ms2 = metastore(&storage).await;
    let w2 = started(ms2, &storage, test_config(dir.path().join("b"), ttl, "b")).await;
    tokio::time::sleep(ttl + Duration::from_millis(400)).await;
    assert_eq!(w2.collect_dead_logs().await.unwrap(), 1);
    let left: Vec<String> = storage
        .list("nodes")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("nodes/a/"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_refreshes_are_all_kept() {
    let (dir, storage, ms) = bucket().await;
    let config = test_config(dir.path().join("scratch"), Duration::from_secs(10), "n");
    let w = Arc::new(started(ms.clone(), &storage, config).await);
    w.create_index("busy", &json!({"settings": {"number_of_shards": 1}}))
        .await
        .unwrap();
    // Refreshes commit while writes keep arriving: those land in the backlog meanwhile.
    let refresher = {
        let w = w.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                w.refresh(&["busy".to_string()]).await.unwrap();
            }
        })
    };
    for round in 0..30 {
        let body = index_body(
            "busy",
            (0..200).map(|i| (format!("r{round}-{i}"), format!("{{\"m\":\"hello {i}\"}}"))),
        );
        let r = w
            .bulk(None, body, RefreshPolicy::False)
            .await
            .unwrap()
            .to_json();
        assert_eq!(r["errors"], false);
        let got = w.realtime_get("busy", &format!("r{round}-7"), None).await;
        assert!(
            got.is_some(),
            "round {round}: an acknowledged write is readable"
        );
    }
    refresher.await.unwrap();
    w.refresh(&["busy".to_string()]).await.unwrap();
    assert_eq!(ms.get_index("busy").unwrap().doc_count(), 6000);
}

/// Conditional writes and updates are decided once, logged with their condition, and a
/// replay after a crash reaches the same documents, versions and sequence numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_and_updates_replay_the_same() {
    let (dir, storage, ms) = bucket().await;
    let config = test_config(
        dir.path().join("scratch"),
        Duration::from_millis(600),
        "test-node",
    );
    let w = started(ms.clone(), &storage, config.clone()).await;
    let body = Bytes::from_static(
        b"{\"index\":{\"_index\":\"u\",\"_id\":\"a\"}}\n{\"n\":1,\"tags\":[\"x\"]}\n\
{\"index\":{\"_index\":\"u\",\"_id\":\"b\"}}\n{\"n\":2}\n",
    );
    let first = w
        .bulk(None, body, RefreshPolicy::True)
        .await
        .unwrap()
        .to_json();
    assert_eq!(first["errors"], false, "{first}");
    let a_seq = first["items"][0]["index"]["_seq_no"].as_u64().unwrap();
    let term = first["items"][0]["index"]["_primary_term"]
        .as_u64()
        .unwrap();
    // Unpublished from here on: only the translog holds these.
    let body = format!(
        "{{\"index\":{{\"_index\":\"u\",\"_id\":\"a\",\"if_seq_no\":{a_seq},\"if_primary_term\":{term}}}}}\n{{\"n\":10,\"tags\":[\"x\"]}}\n\
{{\"index\":{{\"_index\":\"u\",\"_id\":\"a\",\"if_seq_no\":{a_seq},\"if_primary_term\":{term}}}}}\n{{\"n\":99}}\n\
{{\"update\":{{\"_index\":\"u\",\"_id\":\"a\"}}}}\n{{\"script\":{{\"source\":\"ctx._source.n += params.d; ctx._source.tags.add('y')\",\"params\":{{\"d\":5}}}}}}\n\
{{\"update\":{{\"_index\":\"u\",\"_id\":\"a\"}}}}\n{{\"doc\":{{\"n\":15}}}}\n\
{{\"update\":{{\"_index\":\"u\",\"_id\":\"c\"}}}}\n{{\"doc\":{{\"n\":3}},\"doc_as_upsert\":true,\"_source\":true}}\n\
{{\"update\":{{\"_index\":\"u\",\"_id\":\"missing\"}}}}\n{{\"doc\":{{\"n\":3}}}}\n\
{{\"index\":{{\"_index\":\"u\",\"_id\":\"b\",\"version\":7,\"version_type\":\"external\"}}}}\n{{\"n\":7}}\n\
{{\"index\":{{\"_index\":\"u\",\"_id\":\"b\",\"version\":7,\"version_type\":\"external\"}}}}\n{{\"n\":8}}\n\
{{\"update\":{{\"_index\":\"u\",\"_id\":\"b\"}}}}\n{{\"script\":\"ctx.op = 'delete'\"}}\n\
{{\"index\":{{\"_index\":\"u\",\"_id\":\"\"}}}}\n{{\"n\":0}}\n"
    );
    let resp = w
        .bulk(None, Bytes::from(body), RefreshPolicy::False)
        .await
        .unwrap()
        .to_json();
    let items = resp["items"].as_array().unwrap();
    let summary: Vec<(String, u64, String)> = items
        .iter()
        .map(|item| {
            let (kind, body) = item.as_object().unwrap().iter().next().unwrap();
            let outcome = body["result"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| body["error"]["type"].as_str().unwrap().to_string());
            (kind.clone(), body["status"].as_u64().unwrap(), outcome)
        })
        .collect();
    let expect = |k: &str, s: u64, o: &str| (k.to_string(), s, o.to_string());
    assert_eq!(
        summary,
        vec![
            expect("index", 200, "updated"),
            expect("index", 409, "version_conflict_engine_exception"),
            expect("update", 200, "updated"),
            expect("update", 200, "noop"),
            expect("update", 201, "created"),
            expect("update", 404, "document_missing_exception"),
            expect("index", 200, "updated"),
            expect("index", 409, "version_conflict_engine_exception"),
            expect("update", 200, "deleted"),
            expect("index", 400, "action_request_validation_exception"),
        ],
        "{resp}"
    );
    assert_eq!(
        items[6]["index"]["_version"], 7,
        "the external version is kept"
    );
    assert_eq!(items[4]["update"]["get"]["_source"], json!({"n": 3}));
    async fn live(w: &Writer, id: &str) -> Option<Value> {
        let r = w.realtime_get("u", id, None).await?;
        r.source
            .map(|s| serde_json::from_slice::<Value>(&s).unwrap())
    }
    assert_eq!(
        live(&w, "a").await,
        Some(json!({"n": 15, "tags": ["x", "y"]}))
    );
    let a_before = w.realtime_get("u", "a", None).await.unwrap();
    // The "crash": the next incarnation starts with empty local state (a fresh scratch
    // directory; the old one may still be written by the dropped writer's threads).
    drop(w);
    let config = WriterConfig {
        scratch_dir: dir.path().join("scratch-after-crash"),
        ..config
    };
    let ms2 = metastore(&storage).await;
    let w2 = started(ms2.clone(), &storage, config).await;
    w2.recover().await.unwrap();
    assert_eq!(w2.replay_failures().await, 0);
    assert_eq!(
        live(&w2, "a").await,
        Some(json!({"n": 15, "tags": ["x", "y"]}))
    );
    let a_after = w2.realtime_get("u", "a", None).await.unwrap();
    assert_eq!(
        (a_after.version, a_after.seq_no),
        (a_before.version, a_before.seq_no)
    );
    assert_eq!(live(&w2, "c").await, Some(json!({"n": 3})));
    w2.refresh(&["u".to_string()]).await.unwrap();
    assert_eq!(
        ms2.get_index("u").unwrap().shards[&0].num_docs,
        2,
        "a and c live, b deleted"
    );
}
