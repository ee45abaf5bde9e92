//! `storage`: what the data set costs in the bucket — bytes per raw JSON byte, next to the
//! raw tantivy index's — and how many object-store requests it took, from Floe's own
//! counters (`GET /_floe/stats`). Measured right after ingest (and the force merge).

use floe_storage::Storage;

use crate::ctx::{Ctx, INDEX};
use crate::report::Figure;
use crate::scenarios::{mb, Skip};

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Figure>> {
    let raw = ctx.ingested().await?.raw_bytes;
    let floe = ctx.floe().await?;
    let Some(process) = floe.process.as_ref() else {
        return Err(Skip("the bucket of a --url Floe is not known to the harness".into()).into());
    };
    let storage = Storage::open(&process.storage_config())?;
    // Lock files of the local backend (`.locks/`) are not objects.
    let objects: Vec<(String, u64)> = storage
        .list("")
        .await?
        .into_iter()
        .filter(|(key, _)| !key.starts_with('.'))
        .collect();
    let bytes: u64 = objects.iter().map(|(_, size)| size).sum();
    let docs = ctx.ingested().await?.docs.max(1) as f64;
    let client = ctx.floe().await?.client.clone();
    let stats = client.get_json("/_floe/stats").await?;
    let per_million = |key: &str| stats["storage"][key].as_f64().unwrap_or(0.0) * 1e6 / docs;
    let live = client.index_bytes(INDEX).await? as f64;
    let base = ctx
        .baseline_stats()
        .map(|b| b.size_on_disk as f64 / b.raw_bytes.max(1) as f64);
    Ok(vec![
        Figure::new("index bytes / raw JSON", live / raw.max(1) as f64, "x")
            .vs(base)
            .note("the published commit (all shards); baseline: raw tantivy index size / raw JSON"),
        Figure::new("bucket bytes / raw JSON", bytes as f64 / raw.max(1) as f64, "x")
            .note("every object, incl. merged-away segments awaiting deletion (60 s grace) and the metastore"),
        Figure::new("bucket size", mb(bytes), "MB"),
        Figure::new("bucket objects", objects.len() as f64, "objects"),
        Figure::new("object-store PUTs per 1M docs", per_million("puts"), "requests")
            .note("since Floe started: translog batches, segment files, metastore updates"),
        Figure::new("object-store GETs per 1M docs", per_million("gets"), "requests"),
        Figure::new("object-store DELETEs per 1M docs", per_million("deletes"), "requests"),
    ])
}
