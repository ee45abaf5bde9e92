//! `memory`: peak resident memory (`VmHWM` from `/proc/<pid>/status`) of the Floe process
//! after ingest and after the warm queries. Cold-query restarts start a new process, so the
//! query scenario records its figure before them; run alone, this scenario ingests and runs
//! a few warm queries itself.

use crate::ctx::Ctx;
use crate::queries::bench_queries;
use crate::report::Figure;
use crate::scenarios::{mb, query, Skip};

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Figure>> {
    if ctx.opts.url.is_some() {
        return Err(Skip("the memory of a --url Floe is not visible to the harness".into()).into());
    }
    ctx.ingested().await?;
    if ctx.rss_after_queries.is_none() {
        let client = ctx.floe().await?.client.clone();
        let queries = bench_queries(ctx.time_range());
        let pb = ctx.progress((queries.len() * 6) as u64, "warm queries, Floe");
        query::floe_warm(&client, &queries, 1, 5, &pb).await?;
        pb.finish_and_clear();
        let process = ctx.floe().await?.owned("memory")?;
        ctx.rss_after_queries = Some(process.peak_rss()?);
    }
    let mut figures = Vec::new();
    if let Some(rss) = ctx.rss_after_ingest {
        figures.push(
            Figure::new("peak RSS after ingest", mb(rss), "MB").note("VmHWM of the floe process"),
        );
    }
    if let Some(rss) = ctx.rss_after_queries {
        figures.push(Figure::new("peak RSS after queries", mb(rss), "MB"));
    }
    Ok(figures)
}
