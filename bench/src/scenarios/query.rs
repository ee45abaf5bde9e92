//! `query`: latency of the benchmark queries on Floe, warm (repeated after a warm-up) and
//! cold (Floe restarted with an empty cache, so segment data comes from object storage), each
//! next to the same query on the raw-tantivy baseline. Cold runs also report the bytes Floe
//! fetched into its cache for that one query.
//!
//! Every answer is reduced to an [`Outcome`] (hit count, buckets) and compared with the
//! baseline's: a mismatch is flagged in the figure's note and the report's notes.

use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::ProgressBar;
use serde_json::{json, Value};

use crate::client::Client;
use crate::ctx::{Ctx, INDEX};
use crate::queries::{bench_queries, BenchQuery, Outcome};
use crate::report::Figure;
use crate::scenarios::mb;
use crate::stats::Summary;

/// Latencies and the answer of one query, repeated.
pub struct Timed {
    pub latencies: Vec<Duration>,
    pub outcome: Outcome,
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Figure>> {
    ctx.ingested().await?;
    ctx.baseline()?;
    let queries = bench_queries(ctx.time_range());
    let client = ctx.floe().await?.client.clone();
    let reps = ctx.opts.warm_reps().max(1);
    let warmup = (reps / 10).clamp(1, 5);
    let per_side = (queries.len() * (reps + warmup)) as u64;

    let pb = ctx.progress(per_side, "warm queries, Floe");
    let floe_warm = floe_warm(&client, &queries, warmup, reps, &pb).await?;
    pb.finish_and_clear();
    if let Some(p) = ctx.floe.as_ref().and_then(|f| f.process.as_ref()) {
        ctx.rss_after_queries = Some(p.peak_rss()?);
    }

    let pb = ctx.progress(per_side, "warm queries, tantivy");
    let base = ctx.baseline.as_ref().context("baseline index")?;
    let base_warm = tokio::task::block_in_place(|| -> anyhow::Result<Vec<Timed>> {
        queries
            .iter()
            .map(|q| {
                let mut latencies = Vec::with_capacity(reps);
                let mut outcome = base.run(q)?;
                for i in 0..warmup + reps {
                    let t = Instant::now();
                    outcome = base.run(q)?;
                    if i >= warmup {
                        latencies.push(t.elapsed());
                    }
                    pb.inc(1);
                }
                Ok(Timed { latencies, outcome })
            })
            .collect()
    })?;
    pb.finish_and_clear();

    let cold = cold_runs(ctx, &client, &queries).await?;

    if reps < 100 {
        ctx.note(format!(
            "query: percentiles are nearest-rank; with {reps} repetitions p99 is the slowest one"
        ));
    }
    let mut figures = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let (f, b) = (&floe_warm[i], &base_warm[i]);
        let fs = Summary::of(&f.latencies).context("no warm sample")?;
        let bs = Summary::of(&b.latencies).context("no baseline sample")?;
        let mut p50 =
            Figure::new(format!("{} warm p50", q.name), fs.p50_ms, "ms").vs(Some(bs.p50_ms));
        if f.outcome == b.outcome {
            p50 = p50.note(format!("{}; {reps} reps", f.outcome));
        } else {
            let msg = format!("MISMATCH: Floe {} vs baseline {}", f.outcome, b.outcome);
            ctx.mismatch(&format!("query {}", q.name), &msg)?;
            p50 = p50.note(msg);
        }
        figures.push(p50);
        figures
            .push(Figure::new(format!("{} warm p99", q.name), fs.p99_ms, "ms").vs(Some(bs.p99_ms)));
        if let Some(runs) = &cold {
            let c = &runs[i];
            let cs = Summary::of(&c.floe).context("no cold sample")?;
            let bc = Summary::of(&c.baseline).context("no baseline cold sample")?;
            figures.push(
                Figure::new(format!("{} cold p50", q.name), cs.p50_ms, "ms")
                    .vs(Some(bc.p50_ms))
                    .note(format!(
                        "{} runs; baseline: reopen the local index + query (page cache warm)",
                        cs.n
                    )),
            );
            figures.push(
                Figure::new(format!("{} cold p99", q.name), cs.p99_ms, "ms").vs(Some(bc.p99_ms)),
            );
            let avg_bytes = c.fetched.iter().sum::<u64>() / c.fetched.len().max(1) as u64;
            let avg_gets = c.gets.iter().sum::<u64>() as f64 / c.gets.len().max(1) as f64;
            figures.push(
                Figure::new(format!("{} cold fetched", q.name), mb(avg_bytes), "MB").note(
                    format!(
                        "{:.2}% of the index ({} MB), {avg_gets:.0} ranged GETs: what the cold query read from the bucket",
                        avg_bytes as f64 * 100.0 / c.index_bytes.max(1) as f64,
                        mb(c.index_bytes)
                    ),
                ),
            );
        }
    }
    Ok(figures)
}

/// Runs each query `warmup` times untimed, then `reps` times timed, over HTTP.
pub async fn floe_warm(
    client: &Client,
    queries: &[BenchQuery],
    warmup: usize,
    reps: usize,
    pb: &ProgressBar,
) -> anyhow::Result<Vec<Timed>> {
    let mut out = Vec::new();
    for q in queries {
        let body = floe_body(q);
        let mut latencies = Vec::with_capacity(reps);
        let mut last = Value::Null;
        for i in 0..warmup + reps {
            let t = Instant::now();
            last = client
                .search(INDEX, &body)
                .await
                .with_context(|| format!("query {}", q.name))?;
            if i >= warmup {
                latencies.push(t.elapsed());
            }
            pb.inc(1);
        }
        out.push(Timed {
            latencies,
            outcome: Outcome::from_response(&last),
        });
    }
    Ok(out)
}

/// The body sent to Floe: the query as is, with exact hit counts so they can be compared.
fn floe_body(q: &BenchQuery) -> Value {
    let mut body = q.body.clone();
    body["track_total_hits"] = json!(true);
    body
}

/// Cold measurements of one query.
struct Cold {
    floe: Vec<Duration>,
    baseline: Vec<Duration>,
    /// Bytes Floe's segment cache fetched from the bucket during each cold run.
    fetched: Vec<u64>,
    /// Ranged GETs (blocks fetched) of each cold run.
    gets: Vec<u64>,
    /// The index's published bytes.
    index_bytes: u64,
}

/// (bytes fetched, blocks fetched) by Floe's segment cache since it started.
async fn cache_fetched(client: &Client) -> anyhow::Result<(u64, u64)> {
    let stats = client.get_json("/_floe/stats").await?;
    let get = |k: &str| {
        stats["cache"][k]
            .as_u64()
            .context("cache counters in /_floe/stats")
    };
    Ok((get("bytes_fetched")?, get("block_fetches")?))
}

/// For each query, `cold_runs` times: restart Floe with an empty cache and run it once; and
/// reopen the baseline index and run it once. `None` when Floe is not ours to restart.
async fn cold_runs(
    ctx: &mut Ctx,
    client: &Client,
    queries: &[BenchQuery],
) -> anyhow::Result<Option<Vec<Cold>>> {
    let runs = ctx.opts.cold_runs();
    let has_process = ctx.floe.as_ref().is_some_and(|f| f.process.is_some());
    if runs == 0 || !has_process {
        ctx.note("query: cold runs skipped (they need a Floe started by the harness, and --cold-runs > 0)");
        return Ok(None);
    }
    let pb = ctx.progress((queries.len() * runs) as u64, "cold queries");
    let process = ctx
        .floe
        .as_mut()
        .and_then(|f| f.process.as_mut())
        .context("floe process")?;
    let base = ctx.baseline.as_ref().context("baseline index")?;
    let index_bytes = client.index_bytes(INDEX).await?;
    let mut out = Vec::new();
    for q in queries {
        let body = floe_body(q);
        let mut cold = Cold {
            floe: Vec::new(),
            baseline: Vec::new(),
            fetched: Vec::new(),
            gets: Vec::new(),
            index_bytes,
        };
        for _ in 0..runs {
            process.restart_cold(client).await?;
            let (bytes0, gets0) = cache_fetched(client).await?;
            let t = Instant::now();
            client
                .search(INDEX, &body)
                .await
                .with_context(|| format!("cold query {}", q.name))?;
            cold.floe.push(t.elapsed());
            let (bytes1, gets1) = cache_fetched(client).await?;
            cold.fetched.push(bytes1 - bytes0);
            cold.gets.push(gets1 - gets0);
            let (elapsed, _) = tokio::task::block_in_place(|| base.run_cold(q))?;
            cold.baseline.push(elapsed);
            pb.inc(1);
        }
        out.push(cold);
    }
    pb.finish_and_clear();
    Ok(Some(out))
}
