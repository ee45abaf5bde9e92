//! Wiring of `floe standalone`: one bucket, one metastore, one writer, one searcher, one
//! HTTP listener.

use std::sync::Arc;

use anyhow::Context;
use floe_cache::FileCache;
use floe_metastore::Metastore;
use floe_searcher::SearchService;
use floe_storage::Storage;
use floe_writer::pressure::IndexingPressure;
use floe_writer::{Writer, WriterConfig};
use tracing::info;

use crate::config::FloeConfig;
use crate::http::{router, AppState};

pub async fn run(config: FloeConfig) -> anyhow::Result<()> {
    let storage = Storage::open(&config.storage).context("opening object storage")?;
    match &config.storage.s3 {
        Some(s3) => {
            info!(bucket = %s3.bucket, endpoint = ?s3.endpoint, prefix = %config.storage.prefix, "storage: S3")
        }
        None => info!(dir = %config.storage.data_dir.display(), "storage: local directory"),
    }
    let metastore = Arc::new(
        Metastore::open(storage.clone())
            .await
            .context("loading the metastore from object storage")?,
    );
    std::fs::create_dir_all(&config.cache_dir)
        .with_context(|| format!("creating cache dir {}", config.cache_dir.display()))?;
    let writer = Arc::new(Writer::new(
        metastore.clone(),
        storage.clone(),
        WriterConfig {
            scratch_dir: config.cache_dir.join("writer"),
            memory_budget_per_shard: config.indexing.memory_per_shard,
            threads_per_shard: config.indexing.threads_per_shard,
            lease_ttl: std::time::Duration::from_millis(config.indexing.lease_ttl_ms),
            node_id: config.node_id(),
            gc_grace: std::time::Duration::from_millis(config.indexing.gc_grace_ms),
        },
    ));
    let recovered = writer
        .recover()
        .await
        .context("recovering shards from the translog")?;
    if recovered > 0 {
        info!(
            shards = recovered,
            "replayed translogs of shards with unpublished operations"
        );
    }
    let cache = FileCache::new(config.cache_dir.join("searcher"), storage.clone())?;
    let searcher = Arc::new(SearchService::new(metastore.clone(), cache));
    tokio::spawn(writer.clone().run_refresh_loop());
    tokio::spawn(writer.clone().run_lease_loop());
    let pressure_limit = config
        .indexing
        .max_inflight_bytes
        .unwrap_or_else(IndexingPressure::default_limit);
    info!(bytes = pressure_limit, "indexing pressure limit");
    let state = Arc::new(AppState {
        storage: storage.clone(),
        metastore,
        pressure: IndexingPressure::new(pressure_limit),
        writer,
        searcher,
        max_content_length: config.http.max_content_length,
    });
    let listener = tokio::net::TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("binding {}", config.http.addr))?;
    info!(addr = %config.http.addr, "floe standalone listening");
    axum::serve(listener, router(state)).await?;
    Ok(())
}
