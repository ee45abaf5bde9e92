//! `ingest`: the data set through `_bulk` with N concurrent clients — throughput in docs/s
//! and MB/s of raw JSON, and the latency of each acknowledgement.
//!
//! A generator thread builds the NDJSON bodies into a small bounded queue the clients pull
//! from, so memory stays at a few batches whatever the data set's size. Overload answers
//! (429, 503) are retried with backoff and counted, as a real shipper would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Mutex};

use crate::client::Client;
use crate::ctx::{Ctx, INDEX};
use crate::report::Figure;
use crate::scenarios::mb;
use crate::stats::Summary;

/// What ingesting the data set took.
#[derive(Clone, Debug)]
pub struct IngestStats {
    pub docs: u64,
    pub raw_bytes: u64,
    /// From the first request to the last acknowledgement.
    pub elapsed: Duration,
    /// From the last acknowledgement to the end of an explicit `_refresh`.
    pub refresh: Duration,
    /// `_forcemerge` to one segment after the refresh.
    pub force_merge: Duration,
    pub acks: Vec<Duration>,
    pub retries: u64,
    pub item_errors: u64,
    /// `_count` after the refresh.
    pub searchable: u64,
    /// CPU time (user + system) of the Floe process from the first request until it was
    /// idle again after the refresh (its merges included); `None` for a `--url` Floe.
    pub cpu: Option<Duration>,
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Figure>> {
    let s = ctx.ingested().await?.clone();
    let base = ctx.baseline_stats();
    let secs = s.elapsed.as_secs_f64();
    let base_rate = base.map(|b| b.docs as f64 / b.elapsed.as_secs_f64());
    let base_mbs = base.map(|b| mb(b.raw_bytes) / b.elapsed.as_secs_f64());
    let acks = Summary::of(&s.acks).context("no bulk request was acknowledged")?;
    let clients = format!("{} clients x {} docs", ctx.opts.clients, ctx.opts.batch);
    let typed = ctx.typed_baseline()?.clone();
    let mut figures = Vec::new();
    if let Some(cpu) = s.cpu {
        figures.push(
            Figure::new(
                "ingest docs per CPU-second",
                s.docs as f64 / cpu.as_secs_f64().max(1e-9),
                "docs/cpu-s",
            )
            .vs(Some(typed.docs_per_cpu_second()))
            .note(format!(
                "Floe process user+sys CPU, refresh and merges included ({:.1} CPU-s); baseline: raw tantivy on a typed schema, 2 threads",
                cpu.as_secs_f64()
            )),
        );
    }
    figures.extend([
        Figure::new("ingest throughput", s.docs as f64 / secs, "docs/s")
            .vs(base_rate)
            .note(format!("{clients}; baseline: raw tantivy, 2 threads")),
        Figure::new("ingest MB/s", mb(s.raw_bytes) / secs, "MB/s").vs(base_mbs),
        Figure::new("bulk ack p50", acks.p50_ms, "ms"),
        Figure::new("bulk ack p99", acks.p99_ms, "ms").note(format!("{} requests", acks.n)),
        Figure::new(
            "refresh after last ack",
            s.refresh.as_secs_f64() * 1e3,
            "ms",
        ),
        Figure::new("force merge", s.force_merge.as_secs_f64() * 1e3, "ms").note(format!(
            "to {} segment(s), one per core, before the queries; the baseline likewise",
            ctx.opts.segments()
        )),
        Figure::new("bulk retries (429/503)", s.retries as f64, "requests"),
        Figure::new("bulk item errors", s.item_errors as f64, "docs"),
        Figure::new("searchable after refresh", s.searchable as f64, "docs")
            .vs(Some(s.docs as f64))
            .note("baseline column: documents sent"),
    ]);
    if s.searchable != s.docs - s.item_errors {
        let msg = format!(
            "MISMATCH: {} docs acknowledged without error but {} searchable",
            s.docs - s.item_errors,
            s.searchable
        );
        ctx.mismatch("ingest", &msg)?;
        let last = figures.len() - 1;
        figures[last] = figures[last].clone().note(msg);
    }
    Ok(figures)
}

/// The CPU time of process `pid` once it is idle (under 10% of a core over a quarter
/// second, or after 20 s): background merges started by the ingest count as its cost.
async fn settled_cpu(pid: u32) -> anyhow::Result<Duration> {
    let step = Duration::from_millis(250);
    let mut last = crate::typed::process_cpu(pid)?;
    for _ in 0..80 {
        tokio::time::sleep(step).await;
        let now = crate::typed::process_cpu(pid)?;
        if now.saturating_sub(last) < step / 10 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// One `_bulk` request body.
struct Batch {
    body: Vec<u8>,
    docs: u64,
}

/// Creates [`INDEX`] afresh (`refresh_interval` 1s) and sends the data set into it.
pub async fn ingest(ctx: &mut Ctx) -> anyhow::Result<IngestStats> {
    let body = crate::ctx::index_body(&ctx.opts);
    ingest_into(ctx, INDEX, &body, true).await
}

/// Sends the data set into `index`, created afresh with `body`. With `finish`, refreshes,
/// force-merges and counts it afterwards (the main index, which the queries use).
pub async fn ingest_into(
    ctx: &mut Ctx,
    index: &str,
    body: &serde_json::Value,
    finish: bool,
) -> anyhow::Result<IngestStats> {
    let client = ctx.floe().await?.client.clone();
    client.recreate_index(index, body).await?;
    let index = index.to_string();
    let clients = ctx.opts.clients.max(1);
    let batch_size = ctx.opts.batch.max(1);
    let (tx, rx) = mpsc::channel::<Batch>(clients * 2);
    let source = ctx.source.clone();
    let producer = std::thread::spawn(move || -> anyhow::Result<u64> {
        let mut raw_bytes = 0u64;
        let mut batch = Batch {
            body: Vec::new(),
            docs: 0,
        };
        source.for_each(|doc| {
            batch.body.extend_from_slice(b"{\"index\":{}}\n");
            batch.body.extend_from_slice(doc.as_bytes());
            batch.body.push(b'\n');
            batch.docs += 1;
            raw_bytes += doc.len() as u64;
            if batch.docs as usize == batch_size {
                let full = std::mem::replace(
                    &mut batch,
                    Batch {
                        body: Vec::with_capacity(batch_size * 256),
                        docs: 0,
                    },
                );
                tx.blocking_send(full).context("all bulk clients stopped")?;
            }
            Ok(())
        })?;
        if batch.docs > 0 {
            tx.blocking_send(batch)
                .context("all bulk clients stopped")?;
        }
        Ok(raw_bytes)
    });

    let pid = ctx.floe().await?.process.as_ref().and_then(|p| p.pid());
    let cpu0 = pid.map(crate::typed::process_cpu).transpose()?;
    let pb = ctx.progress(ctx.docs, "_bulk ingest");
    let rx = Arc::new(Mutex::new(rx));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (rx, client, pb, index) = (rx.clone(), client.clone(), pb.clone(), index.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = ClientStats::default();
            loop {
                let next = rx.lock().await.recv().await;
                let Some(batch) = next else { break };
                let docs = batch.docs;
                let t = Instant::now();
                let (retries, errors) = send_batch(&client, &index, batch.body).await?;
                out.acks.push(t.elapsed());
                out.retries += retries;
                out.item_errors += errors;
                out.docs += docs;
                pb.inc(docs);
            }
            anyhow::Ok(out)
        }));
    }
    let mut total = ClientStats::default();
    let mut first_error = None;
    for t in tasks {
        match t.await? {
            Ok(s) => total.merge(s),
            Err(e) => {
                first_error.get_or_insert(e);
                // Unblock the producer: nobody may be left to receive.
                rx.lock().await.close();
            }
        }
    }
    let elapsed = started.elapsed();
    pb.finish_and_clear();
    let produced = producer.join().expect("generator thread panicked");
    if let Some(e) = first_error {
        return Err(e);
    }
    let raw_bytes = produced?;
    if !finish {
        return Ok(IngestStats {
            docs: total.docs,
            raw_bytes,
            elapsed,
            refresh: Default::default(),
            force_merge: Default::default(),
            acks: total.acks,
            retries: total.retries,
            item_errors: total.item_errors,
            searchable: 0,
            cpu: None,
        });
    }
    let t = Instant::now();
    client.refresh(&index).await?;
    let refresh = t.elapsed();
    let cpu = match (pid, cpu0) {
        (Some(pid), Some(cpu0)) => Some(settled_cpu(pid).await?.saturating_sub(cpu0)),
        _ => None,
    };
    // Merge to one segment per shard, as the baseline is: queries then compare engines,
    // not segment counts (the 1 s refreshes leave many small segments).
    let t = Instant::now();
    client.force_merge(&index, ctx.opts.segments()).await?;
    let force_merge = t.elapsed();
    let searchable = client.count(&index).await?;
    Ok(IngestStats {
        docs: total.docs,
        raw_bytes,
        elapsed,
        refresh,
        force_merge,
        acks: total.acks,
        retries: total.retries,
        item_errors: total.item_errors,
        searchable,
        cpu,
    })
}

#[derive(Default)]
struct ClientStats {
    docs: u64,
    acks: Vec<Duration>,
    retries: u64,
    item_errors: u64,
}

impl ClientStats {
    fn merge(&mut self, o: ClientStats) {
        self.docs += o.docs;
        self.acks.extend(o.acks);
        self.retries += o.retries;
        self.item_errors += o.item_errors;
    }
}

/// Sends one body until it is accepted; returns (retries, item errors). Overload answers
/// are retried with a growing pause; so are a few transport errors, since a server that
/// rejects a request before reading its body may close the connection under it.
async fn send_batch(client: &Client, index: &str, body: Vec<u8>) -> anyhow::Result<(u64, u64)> {
    const MAX_RETRIES: u64 = 100;
    const MAX_TRANSPORT_RETRIES: u64 = 5;
    let (mut retries, mut transport_errors) = (0, 0);
    loop {
        let pause = Duration::from_millis(20 * (retries + 1).min(25));
        let r = match client.bulk(index, body.clone()).await {
            Ok(r) => r,
            Err(e) if transport_errors < MAX_TRANSPORT_RETRIES => {
                transport_errors += 1;
                retries += 1;
                eprintln!("    _bulk transport error, retrying: {e:#}");
                tokio::time::sleep(pause).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        match r.status {
            200 => return Ok((retries, item_errors(&r.json))),
            429 | 503 if retries < MAX_RETRIES => {
                retries += 1;
                tokio::time::sleep(pause).await;
            }
            status => {
                let mut text = r.text;
                text.truncate(1_000);
                bail!("_bulk: HTTP {status} (after {retries} retries): {text}");
            }
        }
    }
}

fn item_errors(resp: &Value) -> u64 {
    if resp["errors"] != json!(true) {
        return 0;
    }
    resp["items"].as_array().map_or(0, |items| {
        items
            .iter()
            .filter(|i| {
                i.as_object()
                    .and_then(|o| o.values().next())
                    .is_some_and(|a| a.get("error").is_some())
            })
            .count() as u64
    })
}
