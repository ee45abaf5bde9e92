//! `baseline`: how fast raw tantivy indexes the data set in-process, with 1 and 2 indexing
//! threads, and how big the index is. This is the ceiling Floe's ingest is compared with.
//! The generator's own speed is measured too, since it is part of every indexing figure.

use std::time::Instant;

use crate::baseline::IndexStats;
use crate::ctx::Ctx;
use crate::report::Figure;
use crate::scenarios::mb;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();

    let source = ctx.source.clone();
    let started = Instant::now();
    let mut n = 0u64;
    tokio::task::block_in_place(|| {
        source.for_each(|_| {
            n += 1;
            Ok(())
        })
    })?;
    figures.push(
        Figure::new(
            "generator throughput",
            n as f64 / started.elapsed().as_secs_f64(),
            "docs/s",
        )
        .note("producing the documents only; included in every indexing figure"),
    );

    let one = ctx.build_baseline(1)?;
    let one_stats = one.stats.clone();
    let one_dir = one.dir.clone();
    drop(one);
    std::fs::remove_dir_all(one_dir)?;
    throughput(&mut figures, &one_stats, "index 1 thread");

    let two = ctx.build_baseline(2)?;
    throughput(&mut figures, &two.stats, "index 2 threads");
    let s = &two.stats;
    figures.push(Figure::new("index size", mb(s.size_on_disk), "MB"));
    figures.push(
        Figure::new(
            "index size / raw JSON",
            s.size_on_disk as f64 / s.raw_bytes.max(1) as f64,
            "x",
        )
        .note("after merges finished; includes the stored _source"),
    );
    ctx.baseline = Some(two);

    // The truthful limit: a typed schema, none of Floe's code.
    let typed = ctx.typed_baseline()?.clone();
    let secs = typed.elapsed.as_secs_f64();
    figures.push(
        Figure::new(
            "typed schema, 2 threads",
            typed.docs as f64 / secs,
            "docs/s",
        )
        .note(format!(
            "raw tantivy, one field per mapped field: {}",
            typed.schema
        )),
    );
    figures.push(
        Figure::new(
            "typed schema docs per CPU-second",
            typed.docs_per_cpu_second(),
            "docs/cpu-s",
        )
        .note("this process's user+sys CPU: parsing, indexing, commit and merges"),
    );
    figures.push(
        Figure::new(
            "typed schema index size / raw JSON",
            typed.size_on_disk as f64 / typed.raw_bytes.max(1) as f64,
            "x",
        )
        .note("tantivy's default settings; includes the stored _source"),
    );
    Ok(figures)
}

fn throughput(figures: &mut Vec<Figure>, s: &IndexStats, name: &str) {
    let secs = s.elapsed.as_secs_f64();
    figures.push(
        Figure::new(name, s.docs as f64 / secs, "docs/s")
            .note("Floe's layout: parse + Floe DocBuilder + tantivy, one commit at the end"),
    );
    figures.push(Figure::new(
        format!("{name} MB/s"),
        mb(s.raw_bytes) / secs,
        "MB/s",
    ));
}
