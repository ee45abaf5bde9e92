//! The scenarios. Each one is a function `async fn run(&mut Ctx) -> anyhow::Result<Vec<Figure>>`
//! in its own module, registered in [`Scenario`]; adding one (recovery, overload, ...) means a
//! module, a variant, and a line in [`Scenario::run`].
//!
//! A scenario that cannot be measured in this configuration (e.g. cold queries against a
//! `--url` Floe) returns a [`Skip`] error, reported as skipped rather than failed.

use std::time::Instant;

use crate::ctx::Ctx;
use crate::report::{Figure, ScenarioResult};

pub mod baseline;
pub mod freshness;
pub mod ingest;
pub mod ingest_async;
pub mod memory;
pub mod query;
pub mod recovery;
pub mod storage;

/// A scenario, also the subcommand that runs it alone.
#[derive(clap::Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Raw tantivy indexing with 1 and 2 threads on Floe's layout, and on a typed schema
    /// (no Floe needed).
    Baseline,
    /// `_bulk` throughput, ack latency and documents per CPU-second.
    Ingest,
    /// Bytes and objects in the bucket per raw JSON byte (ingests first).
    Storage,
    /// `_bulk` with `index.translog.durability: async`, next to the default (ingests first).
    IngestAsync,
    /// Time from a `_bulk` ack to the document being searchable.
    Freshness,
    /// Warm and cold query latency against the baseline (ingests and builds the baseline).
    Query,
    /// Peak RSS of Floe after ingest and after queries.
    Memory,
    /// Time to green after a SIGKILL with the cache wiped (ingests first).
    Recovery,
}

/// "This cannot be measured here", as opposed to "this failed".
#[derive(Debug)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

impl std::error::Error for Skip {}

impl Scenario {
    /// Every scenario, in the order `all` runs them: storage right after ingest (its request
    /// counts cover the main index only), then the other indexes' scenarios, memory (it reports what
    /// ingest and queries left behind), recovery last (it restarts Floe).
    pub const ALL: [Scenario; 8] = [
        Scenario::Baseline,
        Scenario::Ingest,
        Scenario::Storage,
        Scenario::IngestAsync,
        Scenario::Freshness,
        Scenario::Query,
        Scenario::Memory,
        Scenario::Recovery,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::Ingest => "ingest",
            Scenario::Storage => "storage",
            Scenario::IngestAsync => "ingest-async",
            Scenario::Freshness => "freshness",
            Scenario::Query => "query",
            Scenario::Memory => "memory",
            Scenario::Recovery => "recovery",
        }
    }

    pub async fn run(self, ctx: &mut Ctx) -> anyhow::Result<Vec<Figure>> {
        match self {
            Scenario::Baseline => baseline::run(ctx).await,
            Scenario::Ingest => ingest::run(ctx).await,
            Scenario::Storage => storage::run(ctx).await,
            Scenario::IngestAsync => ingest_async::run(ctx).await,
            Scenario::Freshness => freshness::run(ctx).await,
            Scenario::Query => query::run(ctx).await,
            Scenario::Memory => memory::run(ctx).await,
            Scenario::Recovery => recovery::run(ctx).await,
        }
    }
}

/// Runs `scenarios` in order; a failing one is recorded and the next one still runs.
pub async fn run_all(ctx: &mut Ctx, scenarios: &[Scenario]) -> Vec<ScenarioResult> {
    let mut results = Vec::new();
    for &s in scenarios {
        eprintln!("==> {}", s.name());
        let started = Instant::now();
        let (figures, error) = match s.run(ctx).await {
            Ok(f) => (f, None),
            Err(e) => match e.downcast_ref::<Skip>() {
                Some(skip) => {
                    ctx.note(format!("{}: {}", s.name(), skip));
                    eprintln!("    {skip}");
                    continue;
                }
                None => {
                    eprintln!("    FAILED: {e:#}");
                    (Vec::new(), Some(format!("{e:#}")))
                }
            },
        };
        for f in &figures {
            eprintln!(
                "    {:<34} {:>14} {:<8} {}",
                f.name,
                crate::report::fmt_num(f.value),
                f.unit,
                f.ratio
                    .map(|r| format!("x{r:.2} vs baseline"))
                    .unwrap_or_default()
            );
        }
        results.push(ScenarioResult {
            scenario: s.name().to_string(),
            seconds: started.elapsed().as_secs_f64(),
            figures,
            error,
        });
    }
    results
}

/// Megabytes (10^6 bytes), the unit of every size and MB/s figure.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
