//! `freshness`: how long after a `_bulk` acknowledgement a document can be found by
//! `_search` — what a user tailing logs waits for. One small document per sample, with a
//! unique `_id`, then `_search` by that id every ~20 ms until it appears (bounded).
//!
//! It writes to its own index (`refresh_interval` 1s, as the main one) so the main index
//! stays identical to the baseline's for the query comparison. Samples are spread over the
//! refresh period with varying pauses, so they do not all land at the same phase of it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::ctx::Ctx;
use crate::report::Figure;
use crate::stats::Summary;

const INDEX: &str = "bench-freshness";
const POLL: Duration = Duration::from_millis(20);
const DEADLINE: Duration = Duration::from_secs(30);

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Figure>> {
    let samples = ctx.opts.freshness_samples().max(1);
    let client = ctx.floe().await?.client.clone();
    client
        .recreate_index(
            INDEX,
            &json!({"settings": {"index": {"refresh_interval": "1s"}}}),
        )
        .await?;
    let pb = ctx.progress(samples as u64, "freshness");
    let mut lags = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = format!("fresh-{i}");
        let doc = json!({"@timestamp": "2024-05-01T00:00:00Z", "status": 200,
                         "message": format!("freshness probe {i}")});
        let body = format!("{{\"index\":{{\"_id\":\"{id}\"}}}}\n{doc}\n");
        let r = client.bulk(INDEX, body.into_bytes()).await?;
        if r.status != 200 || r.json["errors"] == json!(true) {
            bail!("freshness _bulk: HTTP {}: {}", r.status, r.text);
        }
        let acked = Instant::now();
        let query = json!({"query": {"ids": {"values": [id]}}, "size": 1});
        loop {
            let resp = client.search(INDEX, &query).await?;
            if resp["hits"]["total"]["value"].as_u64().unwrap_or(0) > 0 {
                lags.push(acked.elapsed());
                break;
            }
            if acked.elapsed() > DEADLINE {
                bail!("document {id} not searchable {DEADLINE:?} after its ack");
            }
            tokio::time::sleep(POLL).await;
        }
        pb.inc(1);
        // Vary where in the refresh period the next write lands.
        tokio::time::sleep(Duration::from_millis((i as u64 * 137) % 400)).await;
    }
    pb.finish_and_clear();
    let s = Summary::of(&lags).context("no freshness sample")?;
    let note = format!(
        "{} samples, refresh_interval 1s, polled every {POLL:?}",
        s.n
    );
    Ok(vec![
        Figure::new("ack -> searchable p50", s.p50_ms, "ms").note(note),
        Figure::new("ack -> searchable p99", s.p99_ms, "ms"),
    ])
}
