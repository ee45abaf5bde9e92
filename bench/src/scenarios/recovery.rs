//! `recovery`: time to green after the writer is killed. Floe is stopped with SIGKILL, its
//! cache directory (searcher cache and writer scratch) wiped, and started again on the same
//! bucket; the clock runs from the kill. The shard is taken over from the bucket by byte
//! range, never downloaded whole, so these times should not grow with the shard's size:
//! compare `--docs 1000000` (~100 MB shard) with `--docs 10000000` (~1 GB).
//!
//! The restarted process has the same node id, so it first waits for the killed
//! incarnation's lease to expire (`[indexing] lease_ttl_ms`, 4 s by default): that wait is
//! part of every figure here and does not depend on the data.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::ctx::{Ctx, INDEX};
use crate::report::Figure;
use crate::scenarios::{mb, Skip};

/// The longest any step may take before the scenario fails.
const STEP_LIMIT: Duration = Duration::from_secs(600);

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Figure>> {
    let docs = ctx.ingested().await?.docs;
    let floe = ctx.floe().await?;
    let client = floe.client.clone();
    let Some(process) = floe.process.as_mut() else {
        return Err(Skip("a --url Floe cannot be killed by the harness".into()).into());
    };
    let index_bytes = client.index_bytes(INDEX).await?;

    let killed = Instant::now();
    process.restart_cold(&client).await?;
    let ready = killed.elapsed();
    wait_until(
        || async {
            let health = client
                .get_json(&format!("/_cluster/health/{INDEX}"))
                .await?;
            Ok((health["status"] == "green", None))
        },
        &mut Vec::new(),
    )
    .await
    .context("waiting for green")?;
    let green = killed.elapsed();
    let doc =
        serde_json::json!({"@timestamp": "2024-05-01T00:00:00Z", "message": "after the kill"});
    let body = format!("{{\"index\":{{}}}}\n{doc}\n").into_bytes();
    let mut attempts = 0;
    let mut refused = Vec::new();
    wait_until(
        || {
            attempts += 1;
            let (client, body) = (client.clone(), body.clone());
            async move {
                let r = client
                    .send(
                        reqwest::Method::POST,
                        &format!("/{INDEX}/_bulk?refresh=true"),
                        Some(("application/x-ndjson", body)),
                    )
                    .await?;
                let ok = r.status == 200 && r.json["errors"] == Value::Bool(false);
                let item = &r.json["items"][0]["index"];
                let why = match item["error"]["type"].as_str() {
                    Some(t) => format!("{} {t}", item["status"]),
                    None => r.status.to_string(),
                };
                Ok((ok, (!ok).then_some(why)))
            }
        },
        &mut refused,
    )
    .await
    .context("waiting for a write to be acknowledged")?;
    let writable = killed.elapsed();
    let fetched_at_write = client.get_json("/_floe/stats").await?["cache"]["bytes_fetched"]
        .as_u64()
        .unwrap_or(0);
    let counted = client.count(INDEX).await?;
    if counted != docs + 1 {
        bail!(
            "after the restart {INDEX} counts {counted} documents, expected {}",
            docs + 1
        );
    }
    let searchable = killed.elapsed();
    let share = fetched_at_write as f64 / index_bytes.max(1) as f64;
    refused.dedup();
    Ok(vec![
        Figure::new("index size", mb(index_bytes), "MB").note("one shard"),
        Figure::new("kill to process ready", ready.as_secs_f64(), "s"),
        Figure::new("kill to green", green.as_secs_f64(), "s")
            .note("health: every shard searchable (from the bucket)"),
        Figure::new("kill to first write acked", writable.as_secs_f64(), "s").note(format!(
            "`_bulk?refresh=true` of one document, {attempts} attempts (refused ({}) while the killed incarnation's 4 s lease ran): taken over, translog replayed, published",
            refused.join(", ")
        )),
        Figure::new("kill to every document counted", searchable.as_secs_f64(), "s"),
        Figure::new("bytes fetched by the first write's ack", mb(fetched_at_write), "MB").note(format!(
            "{:.1}% of the index; the writer's background copy of the shard to its disk starts at take-over and is included as far as it got",
            share * 100.0
        )),
    ])
}

/// Polls `check` every 100 ms until it says yes; errors count as "not yet" until the limit.
/// The statuses of refusals `check` reports are collected in `refused`.
async fn wait_until<F, Fut>(mut check: F, refused: &mut Vec<String>) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(bool, Option<String>)>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok((true, _)) => return Ok(()),
            Ok((false, status)) => {
                refused.extend(status);
                None
            }
            Err(e) => Some(e),
        };
        if started.elapsed() > STEP_LIMIT {
            return Err(last.unwrap_or_else(|| anyhow::anyhow!("not within {STEP_LIMIT:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
