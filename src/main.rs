//! The `floe` binary: `floe standalone` runs metastore, writer and searcher in one process;
//! `floe metastore`, `floe writer` and `floe searcher` run them as a cluster.

mod cluster;
mod config;
mod http;
mod standalone;

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

fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tantivy=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    // Blocking work (document building, tantivy applies, local file I/O) runs on tokio's
    // blocking pool. What feeds it is bounded by cores, never by shards (applies: 4 per core,
    // shard opens and refreshes: a few at a time, one translog writer); the cap is a backstop.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(256)
        .build()?;
    match cli.command {
        Command::Standalone(flags) => {
            let config = config::FloeConfig::load(&flags)?;
            runtime.block_on(standalone::run(config))
        }
        Command::Metastore(flags) => {
            let config = config::FloeConfig::load(&flags)?;
            runtime.block_on(cluster::run_metastore(config))
        }
        Command::Writer(flags) => {
            let config = config::FloeConfig::load(&flags)?;
            runtime.block_on(cluster::run_writer(config))
        }
        Command::Searcher(flags) => {
            let config = config::FloeConfig::load(&flags)?;
            runtime.block_on(cluster::run_searcher(config))
        }
    }
}
