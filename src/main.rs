//! The `floe` binary: `floe standalone` runs metastore, writer and searcher in one process;
//! `floe metastore`, `floe writer` and `floe searcher` run them as a cluster.

mod byquery;
mod cluster;
mod config;
mod http;
mod lifecycle;
mod standalone;
mod trace;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "floe",
    version,
    about = "Floe: an OpenSearch-compatible search engine whose only state is in object storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Metastore + writer + searcher in one process (local directory storage by default).
    Standalone(config::ConfigFlags),
    /// Cluster membership: which writers and searchers are alive (gRPC only).
    Metastore(config::ConfigFlags),
    /// Takes writes (any node's `_bulk`), owns the shards placed on it, uploads segments.
    Writer(config::ConfigFlags),
    /// Answers searches from cached segments; scales apart from writers.
    Searcher(config::ConfigFlags),
}

/// mimalloc instead of glibc's malloc: indexing allocates and frees many short-lived buffers
/// per document, and glibc's malloc, free, consolidation and the zeroing of pages it had
/// returned to the OS took about a fifth of ingest CPU (perf, 1M http_logs documents).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (flags, role) = match &cli.command {
        Command::Standalone(f) => (f, "standalone"),
        Command::Metastore(f) => (f, "metastore"),
        Command::Writer(f) => (f, "writer"),
        Command::Searcher(f) => (f, "searcher"),
    };
    let config = config::FloeConfig::load(flags)?;
    init_logs(&config.log_format)?;
    // More than one rustls crypto provider is linked in (the S3 client's and ours): name the
    // one TLS uses, once, before any TLS is set up.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let node_id = config.node_id();
    // Every line carries the node id: each runtime thread (and this one) stays inside a
    // `node` span for its whole life.
    let _main_span = tracing::info_span!("node", id = %node_id, role).entered();
    // Blocking work (document building, tantivy applies, local file I/O) runs on tokio's
    // blocking pool. What feeds it is bounded by cores, never by shards (applies: 4 per core,
    // shard opens and refreshes: a few at a time, one translog writer); the cap is a backstop.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(256)
        .on_thread_start(move || {
            let span = tracing::info_span!("node", id = %node_id, role);
            std::mem::forget(span.entered());
        })
        .build()?;
    match cli.command {
        Command::Standalone(_) => runtime.block_on(standalone::run(config)),
        Command::Metastore(_) => runtime.block_on(cluster::run_metastore(config)),
        Command::Writer(_) => runtime.block_on(cluster::run_writer(config)),
        Command::Searcher(_) => runtime.block_on(cluster::run_searcher(config)),
    }
}

/// Logs to stderr: `text` (colours only on a terminal, so a log file gets plain text) or
/// `json` (one object per line, for log collectors). Level filter from `RUST_LOG`.
fn init_logs(format: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,tantivy=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "text" | "" => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        "json" => builder.json().init(),
        other => anyhow::bail!("--log-format must be text or json, not [{other}]"),
    }
    Ok(())
}
