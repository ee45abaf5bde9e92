//! `storage`: what the data set costs in the bucket — bytes per raw JSON byte, next to the
//! raw tantivy index's — and how many objects it took. The bucket is listed through Floe's
//! own storage layer, so local directories and S3 are measured the same way.
//!
//! Floe does not expose object-store counters over HTTP yet, so PUTs are approximated by the
//! objects present at the end: a lower bound, since objects deleted since (translog batches,
//! merged-away segments, older metastore versions) are not counted.

use floe_storage::Storage;

use crate::ctx::Ctx;
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
    let base = ctx
        .baseline_stats()
        .map(|b| b.size_on_disk as f64 / b.raw_bytes.max(1) as f64);
    ctx.note(
        "storage: object-store PUTs are approximated by the objects present in the bucket at \
         the end (a lower bound: deleted objects are not counted); Floe exposes no counters yet",
    );
    Ok(vec![
        Figure::new(
            "bucket bytes / raw JSON",
            bytes as f64 / raw.max(1) as f64,
            "x",
        )
        .vs(base)
        .note("baseline: raw tantivy index size / raw JSON"),
        Figure::new("bucket size", mb(bytes), "MB"),
        Figure::new("bucket objects (~PUTs)", objects.len() as f64, "objects"),
    ])
}
