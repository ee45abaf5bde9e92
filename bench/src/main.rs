//! `floe-bench`: reproducible performance figures for Floe, each next to the limit set by raw
//! tantivy on the same documents, schema and queries, in one run.
//!
//! ```text
//! cargo build --release --bin floe
//! cargo run -p floe-bench --release -- all --docs 1000000
//! ```
//!
//! Modules by concern: `generator` (data), `baseline` (raw tantivy), `floe` + `client` (the
//! system under test), `queries`, `scenarios/*` (one per measurement), `report` + `chart`
//! (output), `ctx` (what scenarios share), `cli`.

mod baseline;
mod chart;
mod cli;
mod client;
mod ctx;
mod floe;
mod generator;
mod queries;
mod report;
mod scenarios;
mod stats;
mod typed;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use time::format_description::well_known::Rfc3339;

use crate::cli::Cli;
use crate::ctx::Ctx;
use crate::report::{Report, RunMeta};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("floe-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let started_at = time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let mut ctx = Ctx::new(cli.opts.clone())?;
    let scenarios = cli.command.scenarios();
    eprintln!(
        "floe-bench: {} — work dir {}",
        ctx.source.describe(),
        ctx.work.path().display()
    );
    if cfg!(debug_assertions) && !ctx.opts.smoke {
        ctx.note(
            "the harness is a debug build: baseline figures are not representative (use --release)",
        );
    }
    let results = tokio::select! {
        r = scenarios::run_all(&mut ctx, &scenarios) => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    };

    let floe = match (&ctx.opts.url, &ctx.floe) {
        (Some(url), _) => format!("existing endpoint {url}"),
        (None, Some(_)) => {
            let bin = floe::find_floe_bin(ctx.opts.floe_bin.as_deref())?;
            let storage = match &ctx.opts.s3_endpoint {
                Some(e) => format!("S3 endpoint {e}"),
                None => "local data dir".to_string(),
            };
            format!("floe standalone ({}), {storage}", bin.display())
        }
        (None, None) => "not started (baseline only)".to_string(),
    };
    let report = Report {
        meta: RunMeta {
            started_at,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            data: ctx.source.describe(),
            docs: ctx.docs,
            raw_json_bytes: ctx.raw_bytes().unwrap_or(0),
            floe,
            bench_build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
            machine: machine(),
            git_commit: git_commit(),
            smoke: ctx.opts.smoke,
        },
        scenarios: results,
        notes: ctx.notes.clone(),
    };
    let out = ctx
        .opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"));
    let stem = if ctx.opts.smoke { "smoke" } else { "latest" };
    for path in report.write(&out, stem)? {
        eprintln!("wrote {}", path.display());
    }
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    if ctx.opts.keep_work_dir {
        ctx.floe = None; // stops Floe before its files are looked at
        let kept = std::mem::replace(&mut ctx.work, tempfile::tempdir()?).keep();
        eprintln!("kept work dir {}", kept.display());
    }
    let failed = report.failed();
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for s in failed {
        eprintln!(
            "FAILED scenario {}: {}",
            s.scenario,
            s.error.as_deref().unwrap_or("no figures")
        );
    }
    Ok(ExitCode::FAILURE)
}

/// CPU model, cores and memory, from /proc (Linux); best effort.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{model}, {cores} cores, {mem_gb:.0} GiB RAM")
}

/// `git rev-parse --short HEAD`, marked dirty when the tree has changes; best effort.
fn git_commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(c) if git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty()) => {
            format!("{c} (with uncommitted changes)")
        }
        Some(c) => c,
        None => "unknown".into(),
    }
}
