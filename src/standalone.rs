//! Wiring of `floe standalone`: one bucket, one metastore, one writer, one searcher, one
//! HTTP listener. The cluster roles (`crate::cluster`) reuse these steps.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use floe_cache::{CacheConfig, SegmentCache};
use floe_metastore::security::Bootstrap;
use floe_metastore::{Metastore, MetastoreOptions};
use floe_searcher::SearchService;
use floe_storage::Storage;
use floe_writer::pressure::IndexingPressure;
use floe_writer::{Writer, WriterConfig};
use tracing::{error, info, warn};

use crate::config::FloeConfig;
use crate::http::{router, AppState};

pub async fn run(config: FloeConfig) -> anyhow::Result<()> {
    let (storage, metastore) = open_bucket(&config).await?;
    let cache = open_segment_cache(&config, &storage).await?;
    let writer = start_writer(&config, &storage, &metastore, &cache)?;
    let searcher = start_searcher(&metastore, cache);
    tokio::spawn(
        searcher
            .clone()
            .run_prefetch_loop(Arc::new(|_, _| true), prefetch_interval(&config)),
    );
    // The ISM runner lives with the metastore: in standalone, in this process.
    start_ism(&config, &storage, &metastore, &writer, &searcher);
    let state = app_state(
        &config,
        "standalone",
        storage,
        metastore,
        Some(writer.clone()),
        searcher,
    );
    serve_http(&config, router(Arc::new(state)), shutdown_signal()).await?;
    // SIGTERM / Ctrl-C: publish everything and end the session, so a restart is immediate.
    writer.shutdown().await;
    Ok(())
}

/// Starts the ISM runner ([`crate::lifecycle`]). Several may run on one bucket (every
/// writer of a cluster runs one): each step is claimed before it runs.
pub fn start_ism(
    config: &FloeConfig,
    storage: &Storage,
    metastore: &Arc<Metastore>,
    writer: &Arc<Writer>,
    searcher: &Arc<SearchService>,
) {
    tokio::spawn(
        crate::lifecycle::IsmRunner::new(
            storage.clone(),
            metastore.clone(),
            writer.clone(),
            searcher.clone(),
            &config.node_id(),
        )
        .run(),
    );
}

/// Opens the bucket and the metastore in it, and starts tailing the metastore's change log.
pub async fn open_bucket(config: &FloeConfig) -> anyhow::Result<(Storage, Arc<Metastore>)> {
    let storage = Storage::open(&config.storage).context("opening object storage")?;
    match &config.storage.s3 {
        Some(s3) => {
            info!(bucket = %s3.bucket, endpoint = ?s3.endpoint, prefix = %config.storage.prefix, "storage: S3")
        }
        None => info!(dir = %config.storage.data_dir.display(), "storage: local directory"),
    }
    let metastore = Arc::new(
        Metastore::open_with(
            storage.clone(),
            MetastoreOptions {
                clock_skew_margin: Duration::from_millis(config.indexing.clock_skew_margin_ms),
            },
        )
        .await
        .context("loading the metastore from object storage")?,
    );
    tokio::spawn(
        metastore
            .clone()
            .run_tail(Duration::from_millis(config.metastore_poll_ms.max(10))),
    );
    std::fs::create_dir_all(&config.cache_dir)
        .with_context(|| format!("creating cache dir {}", config.cache_dir.display()))?;
    bootstrap_security(config, &metastore).await?;
    Ok((storage, metastore))
}

/// With security on: on an empty bucket, creates `admin` with the password in
/// `FLOE_INITIAL_ADMIN_PASSWORD` (or a generated one, printed once); later starts change
/// nothing. With security off: a warning, at every start.
async fn bootstrap_security(config: &FloeConfig, metastore: &Metastore) -> anyhow::Result<()> {
    if !config.security.enabled {
        warn!(
            "SECURITY IS OFF ([security] enabled = false): every route is open to anyone who can reach this node"
        );
        return Ok(());
    }
    let initial = std::env::var("FLOE_INITIAL_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    match metastore
        .bootstrap_security(initial.as_deref())
        .await
        .context("bootstrapping security")?
    {
        Bootstrap::Existing => {}
        Bootstrap::Created => {
            info!("security: user [admin] created with the password in FLOE_INITIAL_ADMIN_PASSWORD")
        }
        Bootstrap::Generated(password) => {
            // Shown once, on the terminal, whatever the log level.
            eprintln!(
                "\n  Floe security: user [admin] was created with the password\n\n      {password}\n\n  It is not shown again. Log in with: curl -u 'admin:{password}' http://{}/\n",
                config.http.addr
            );
        }
    }
    Ok(())
}

/// The writer, with its session registration and recovery in the background and its
/// refresh and lease loops running.
pub fn start_writer(
    config: &FloeConfig,
    storage: &Storage,
    metastore: &Arc<Metastore>,
    cache: &SegmentCache,
) -> anyhow::Result<Arc<Writer>> {
    let writer = Arc::new(Writer::new(
        metastore.clone(),
        storage.clone(),
        cache.blocks().clone(),
        WriterConfig {
            scratch_dir: config.cache_dir.join("writer"),
            memory: config.indexing.memory_bytes(),
            max_open_writers: config.indexing.max_open_writers,
            threads_per_shard: config.indexing.threads_per_shard,
            lease_ttl: Duration::from_millis(config.indexing.lease_ttl_ms),
            clock_skew_margin: Duration::from_millis(config.indexing.clock_skew_margin_ms),
            node_id: config.node_id(),
            idle_close: Duration::from_millis(config.indexing.idle_close_ms),
            gc_grace: Duration::from_millis(config.indexing.gc_grace_ms),
        },
    ));
    // The node session may have to wait for a previous incarnation to expire: serve reads
    // meanwhile, then replay what the previous owners of our shards left in the translog.
    let starting = writer.clone();
    tokio::spawn(async move {
        if let Err(e) = starting.start_session().await {
            error!("could not register the node session: {e}");
            return;
        }
        match starting.recover().await {
            Ok(0) => {}
            Ok(n) => info!(
                shards = n,
                "replayed translogs of shards with unpublished operations"
            ),
            Err(e) => error!(
                "recovering shards from the translog failed (retried by the lease loop): {e}"
            ),
        }
    });
    tokio::spawn(writer.clone().run_refresh_loop());
    tokio::spawn(writer.clone().run_lease_loop());
    Ok(writer)
}

/// The process's segment cache (memory and disk budgets from the config): searchers read
/// segments through it, writers the files of shards they took over until hydrated.
pub async fn open_segment_cache(
    config: &FloeConfig,
    storage: &Storage,
) -> anyhow::Result<SegmentCache> {
    // Whole files mirrored by earlier versions: disposable, and outside the disk budget.
    let _ = std::fs::remove_dir_all(config.cache_dir.join("searcher"));
    let cache_config = CacheConfig {
        memory_bytes: config.cache.memory.as_u64(),
        disk_bytes: config.cache.disk.as_u64(),
        dir: config.cache_dir.join("segment-cache"),
    };
    SegmentCache::open(storage.clone(), &cache_config)
        .await
        .context("opening the segment cache")
}

pub fn start_searcher(metastore: &Arc<Metastore>, cache: SegmentCache) -> Arc<SearchService> {
    Arc::new(SearchService::new(metastore.clone(), cache))
}

/// How often a searcher looks for newly published commits to prefetch: as often as the
/// metastore's change log is read.
pub fn prefetch_interval(config: &FloeConfig) -> Duration {
    Duration::from_millis(config.metastore_poll_ms.max(10))
}

pub fn app_state(
    config: &FloeConfig,
    role: &'static str,
    storage: Storage,
    metastore: Arc<Metastore>,
    writer: Option<Arc<Writer>>,
    searcher: Arc<SearchService>,
) -> AppState {
    let pressure_limit = config
        .indexing
        .max_inflight_bytes
        .unwrap_or_else(IndexingPressure::default_limit);
    info!(bytes = pressure_limit, "indexing pressure limit");
    let metastore_for_security = metastore.clone();
    AppState {
        storage,
        metastore,
        pressure: IndexingPressure::new(pressure_limit),
        writer,
        searcher,
        max_content_length: config.http.max_content_length,
        role,
        node_id: config.node_id(),
        cluster: None,
        metrics: crate::http::metrics::Metrics::new(&config.node_id(), role),
        reindex_allowlist: config.reindex.remote_allowlist.clone(),
        security: Arc::new(crate::http::security::Security::new(
            config.security.enabled,
            metastore_for_security,
            config.security.max_failed_logins,
            Duration::from_millis(config.security.block_ms),
        )),
    }
}

/// Serves HTTP until `stop` completes (then finishes the requests in flight).
pub async fn serve_http(
    config: &FloeConfig,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Some((cert, key)) = config.tls.identity()? {
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(cert, key)
            .await
            .context("loading the TLS certificate and key")?;
        let handle = axum_server::Handle::new();
        let stopping = handle.clone();
        tokio::spawn(async move {
            stop.await;
            stopping.graceful_shutdown(Some(Duration::from_secs(30)));
        });
        info!(addr = %config.http.addr, "HTTPS listening");
        axum_server::bind_rustls(config.http.addr, tls)
            .handle(handle)
            .serve(app)
            .await
            .with_context(|| format!("serving HTTPS on {}", config.http.addr))?;
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(config.http.addr)
        .await
        .with_context(|| format!("binding {}", config.http.addr))?;
    info!(addr = %config.http.addr, "HTTP listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    info!("shutting down");
}
