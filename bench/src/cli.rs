//! Command line: a subcommand picks the scenarios, flags (accepted before or after it) say
//! what data, which Floe, and how many repetitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::scenarios::Scenario;

#[derive(Parser, Debug)]
#[command(
    name = "floe-bench",
    about = "Floe performance figures against the raw-tantivy limit, in one run",
    after_help = "Examples:\n  cargo build --release --bin floe && cargo run -p floe-bench --release -- all --docs 1000000\n  cargo build --bin floe && cargo run -p floe-bench -- all --docs 20000 --smoke"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub opts: Opts,
}

#[derive(Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Every scenario, in order: baseline, ingest, storage, ingest-async, freshness, query,
    /// memory, recovery.
    All,
    /// One scenario (and whatever it needs first).
    #[command(flatten)]
    One(Scenario),
}

impl Opts {
    pub fn segments(&self) -> usize {
        self.merge_segments
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1)
    }
}

impl Command {
    pub fn scenarios(self) -> Vec<Scenario> {
        match self {
            Command::All => Scenario::ALL.to_vec(),
            Command::One(s) => vec![s],
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct Opts {
    /// Number of documents [default: 1000000 generated; all lines of --input].
    #[arg(long, global = true)]
    pub docs: Option<u64>,
    /// Use this NDJSON file (one document per line) instead of generated documents.
    #[arg(long, global = true)]
    pub input: Option<PathBuf>,
    /// Seed of the data generator: the same seed gives the same documents.
    #[arg(long, global = true, default_value_t = 42)]
    pub seed: u64,
    /// Hours of time the generated `@timestamp`s span.
    #[arg(long, global = true, default_value_t = 24.0)]
    pub window_hours: f64,
    /// Concurrent `_bulk` clients.
    #[arg(long, global = true, default_value_t = 8)]
    pub clients: usize,
    /// Documents per `_bulk` request.
    #[arg(long, global = true, default_value_t = 5000)]
    pub batch: usize,
    /// Use an existing Floe (or OpenSearch) at this URL instead of starting one; cold
    /// queries, storage and memory need a started one and are skipped. The indexes
    /// bench-logs and bench-freshness there are deleted and recreated.
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// The `floe` binary to start [default: next to this binary, else target/release/floe,
    /// else target/debug/floe].
    #[arg(long, global = true)]
    pub floe_bin: Option<PathBuf>,
    /// Directory for the results [default: bench/results].
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,
    /// Passed to the started Floe: S3-compatible endpoint (credentials from AWS_* env).
    #[arg(long, global = true)]
    pub s3_endpoint: Option<String>,
    /// Passed to the started Floe: bucket.
    #[arg(long, global = true)]
    pub s3_bucket: Option<String>,
    /// Passed to the started Floe: key prefix [default: floe-bench-<unix time>].
    #[arg(long, global = true)]
    pub s3_prefix: Option<String>,
    /// Quick run for CI: few repetitions; exits non-zero if any scenario fails.
    #[arg(long, global = true)]
    pub smoke: bool,
    /// Timed repetitions of each warm query [default: 50, smoke: 5].
    #[arg(long, global = true)]
    pub warm_reps: Option<usize>,
    /// Cold runs (restart with an empty cache) of each query [default: 3, smoke: 1].
    #[arg(long, global = true)]
    pub cold_runs: Option<usize>,
    /// Freshness samples [default: 20, smoke: 3].
    #[arg(long, global = true)]
    pub freshness_samples: Option<usize>,
    /// Baseline tantivy indexing memory in MiB (Floe's default `memory_per_shard`).
    #[arg(long, global = true, default_value_t = 256)]
    pub memory_budget_mb: usize,
    /// Where temporary indexes and Floe's data and cache go [default: system temp dir].
    #[arg(long, global = true)]
    pub work_dir: Option<PathBuf>,
    /// Keep the work dir (baseline index, Floe's data, cache and log) for inspection.
    #[arg(long, global = true)]
    pub keep_work_dir: bool,
    /// Map fields dynamically (every string becomes `text` + `.keyword`), for Floe and the
    /// baseline alike, instead of the explicit http_logs mapping.
    #[arg(long, global = true)]
    pub dynamic_mapping: bool,
    /// Segments to merge the ingested index (and the baseline) into before the queries
    /// [default: one per core, so a query's segments are searched in parallel].
    #[arg(long, global = true)]
    pub merge_segments: Option<usize>,
}

impl Opts {
    pub fn warm_reps(&self) -> usize {
        self.warm_reps.unwrap_or(if self.smoke { 5 } else { 50 })
    }

    pub fn cold_runs(&self) -> usize {
        self.cold_runs.unwrap_or(if self.smoke { 1 } else { 3 })
    }

    pub fn freshness_samples(&self) -> usize {
        self.freshness_samples
            .unwrap_or(if self.smoke { 3 } else { 20 })
    }
}
