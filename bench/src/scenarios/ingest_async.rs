//! `ingest-async`: the same `_bulk` ingest with `index.translog.durability: async` (acknowledged
//! before the translog write, synced every second), into its own index, next to the default
//! `request` durability measured by `ingest` and the raw-tantivy baseline. The index is
//! deleted afterwards so later scenarios see only the main one.

use anyhow::Context as _;
use serde_json::json;

use crate::ctx::Ctx;
use crate::report::Figure;
use crate::scenarios::ingest::ingest_into;
use crate::scenarios::mb;
use crate::stats::Summary;

const INDEX: &str = "bench-logs-async";

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Figure>> {
    let request = ctx.ingested().await?.clone();
    let mut body = crate::ctx::index_body(&ctx.opts);
    body["settings"]["index"]["translog"] = json!({"durability": "async", "sync_interval": "1s"});
    let s = ingest_into(ctx, INDEX, &body, false).await?;
    ctx.floe().await?.client.delete_index(INDEX).await?;
    let secs = s.elapsed.as_secs_f64();
    let rate = s.docs as f64 / secs;
    let request_rate = request.docs as f64 / request.elapsed.as_secs_f64();
    let base_rate = ctx
        .baseline_stats()
        .map(|b| b.docs as f64 / b.elapsed.as_secs_f64());
    let acks = Summary::of(&s.acks).context("no bulk request was acknowledged")?;
    Ok(vec![
        Figure::new("async ingest throughput", rate, "docs/s")
            .vs(base_rate)
            .note(format!(
                "x{:.2} of request durability ({:.0} docs/s)",
                rate / request_rate,
                request_rate
            )),
        Figure::new("async ingest MB/s", mb(s.raw_bytes) / secs, "MB/s"),
        Figure::new("async bulk ack p50", acks.p50_ms, "ms"),
        Figure::new("async bulk ack p99", acks.p99_ms, "ms").note(format!("{} requests", acks.n)),
    ])
}
