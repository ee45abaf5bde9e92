//! Wiring of the cluster roles: `floe metastore`, `floe writer`, `floe searcher`. Each is
//! the standalone pieces it needs, plus membership (heartbeats to the metastore) and the
//! `Node` gRPC service through which the roles reach each other.

mod fanout;
pub mod peers;
mod rpc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use floe_metastore::membership::role;
use floe_metastore::{ClusterView, Membership, MembershipService};
use floe_proto::rpc::metastore_server::MetastoreServer;
use floe_proto::rpc::node_server::NodeServer;
use floe_proto::rpc::{NodeInfo, PlacementRules};
use floe_proto::secret::{ClusterSecret, RequireSecret};
use floe_writer::Writer;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tracing::info;

use crate::config::FloeConfig;
use crate::http::router;
use crate::standalone::{
    app_state, open_bucket, open_segment_cache, serve_http, shutdown_signal, start_ism,
    start_searcher, start_writer,
};
use peers::{ClusterPeers, MAX_MESSAGE};

/// `floe metastore`: membership (who is alive) for the cluster. Shard state stays in the
/// bucket, where every node reads and compare-and-swaps it.
pub async fn run_metastore(config: FloeConfig) -> anyhow::Result<()> {
    let grpc = grpc_addr(&config, role::METASTORE);
    // The bucket holds the cluster secret every caller must present.
    let (_, metastore) = open_bucket(&config).await?;
    let secret = metastore
        .cluster_secret()
        .await
        .context("reading the cluster secret")?;
    let rules = PlacementRules {
        awareness_zones: config.cluster.awareness_zones.clone(),
        provisioned_searchers: config.cluster.provisioned_searchers,
        skew_factor_percent: config.cluster.skew_factor_percent,
        flat_skew: config.cluster.flat_skew,
    };
    let membership = Membership::new(
        node_info(&config, role::METASTORE, grpc),
        Duration::from_millis(config.cluster.node_timeout_ms),
        rules,
    );
    info!(addr = %grpc, "metastore gRPC listening");
    grpc_server(&config)?
        .add_service(MetastoreServer::with_interceptor(
            MembershipService(membership),
            RequireSecret::new(&secret),
        ))
        .serve_with_shutdown(grpc, shutdown_signal())
        .await
        .context("serving gRPC")?;
    Ok(())
}

/// `floe writer`: takes writes for the shards placed on it, forwards the others.
pub async fn run_writer(config: FloeConfig) -> anyhow::Result<()> {
    let (storage, metastore) = open_bucket(&config).await?;
    let cache = open_segment_cache(&config, &storage).await?;
    let writer = start_writer(&config, &storage, &metastore, &cache)?;
    let searcher = start_searcher(&metastore, cache);
    start_ism(&config, &storage, &metastore, &writer, &searcher);
    let view = join(&config, &metastore, role::WRITER, Some(writer.clone())).await?;
    let peers = ClusterPeers::new(view.clone());
    writer.set_peers(peers.clone());
    tokio::spawn(
        writer
            .clone()
            .run_cluster_loop(view.subscribe(), Duration::from_secs(1)),
    );
    let mut state = app_state(
        &config,
        role::WRITER,
        storage,
        metastore.clone(),
        Some(writer.clone()),
        searcher,
    );
    state.cluster = Some(peers);
    // On SIGTERM `serve` leaves the cluster first (the other writers take this one's
    // shards and stop forwarding here; their opens wait for our lease); then everything is
    // published and the session ended, which lets them in at once.
    serve(&config, state, view).await?;
    writer.shutdown().await;
    Ok(())
}

/// `floe searcher`: answers searches from segments it caches; forwards everything else.
pub async fn run_searcher(config: FloeConfig) -> anyhow::Result<()> {
    let (storage, metastore) = open_bucket(&config).await?;
    let searcher = start_searcher(&metastore, open_segment_cache(&config, &storage).await?);
    let view = join(&config, &metastore, role::SEARCHER, None).await?;
    let peers = ClusterPeers::new(view.clone());
    searcher.set_fanout(Arc::new(fanout::SearchFanout {
        peers: peers.clone(),
        metastore: metastore.clone(),
        local: Arc::downgrade(&searcher),
    }));
    // Prefetch what the copy plan gives this searcher.
    let (plan_peers, plan_metastore, me) = (peers.clone(), metastore.clone(), view.node_id());
    let serves: floe_searcher::Serves = Arc::new(move |uuid, shard| {
        plan_peers
            .copy_plan(&plan_metastore)
            .copies
            .get(&format!("{uuid}/{shard}"))
            .is_some_and(|nodes| nodes.contains(&me))
    });
    tokio::spawn(
        searcher
            .clone()
            .run_prefetch_loop(serves, crate::standalone::prefetch_interval(&config)),
    );
    let mut state = app_state(
        &config,
        role::SEARCHER,
        storage,
        metastore.clone(),
        None,
        searcher,
    );
    state.cluster = Some(peers);
    serve(&config, state, view).await
}

/// Starts heartbeating to the metastore; returns the view it keeps current.
async fn join(
    config: &FloeConfig,
    metastore: &floe_metastore::Metastore,
    node_role: &str,
    writer: Option<Arc<Writer>>,
) -> anyhow::Result<Arc<ClusterView>> {
    let url = config
        .cluster
        .metastore
        .clone()
        .context("a cluster role needs --metastore http://HOST:PORT")?;
    let view = ClusterView::new(node_info(config, node_role, grpc_addr(config, node_role)));
    let secret = metastore
        .cluster_secret()
        .await
        .context("reading the cluster secret")?;
    view.set_secret(ClusterSecret::new(&secret).map_err(anyhow::Error::msg)?);
    if let Some(tls) = grpc_client_tls(config)? {
        view.set_tls(tls);
    }
    let interval = Duration::from_millis(config.cluster.heartbeat_ms.max(50));
    let open = Arc::new(std::sync::atomic::AtomicU64::new(0));
    if let Some(w) = writer {
        let open = open.clone();
        tokio::spawn(async move {
            loop {
                let (shards, _) = w.open_counts().await;
                open.store(shards as u64, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    tokio::spawn(view.clone().run_heartbeat(url, interval, move |me| {
        me.rss_bytes = rss_bytes();
        me.load_1m = load_1m();
        me.open_shards = open.load(std::sync::atomic::Ordering::Relaxed);
    }));
    Ok(view)
}

/// HTTP and gRPC until SIGTERM or Ctrl-C.
async fn serve(
    config: &FloeConfig,
    state: crate::http::AppState,
    view: Arc<ClusterView>,
) -> anyhow::Result<()> {
    let node_role = state.role;
    let state = Arc::new(state);
    let app = router(state.clone());
    let node = rpc::NodeService {
        router: app.clone(),
        metastore: state.metastore.clone(),
        writer: state.writer.clone(),
        searcher: state.searcher.clone(),
        max_body: state.max_content_length,
    };
    let grpc = grpc_addr(config, node_role);
    // The secret `join` read from the bucket: the one this node presents, and requires.
    let require = RequireSecret::matching(&view.secret());
    let server = grpc_server(config)?
        .add_service(InterceptedService::new(
            NodeServer::new(node)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            require,
        ))
        .serve(grpc);
    info!(addr = %grpc, "node gRPC listening");
    let grpc_task = tokio::spawn(server);
    // On SIGTERM: leave the cluster first and keep serving for two heartbeats, so nodes
    // that still route here (writes, leaf searches) finish before this node stops.
    let heartbeat = Duration::from_millis(config.cluster.heartbeat_ms.max(50));
    let stop = async move {
        shutdown_signal().await;
        view.leave().await;
        tokio::time::sleep(heartbeat * 2).await;
    };
    serve_http(config, app, stop).await?;
    grpc_task.abort();
    Ok(())
}

/// A gRPC server, over TLS when `[tls]` has a certificate.
fn grpc_server(config: &FloeConfig) -> anyhow::Result<tonic::transport::Server> {
    let builder = tonic::transport::Server::builder();
    Ok(match config.tls.identity()? {
        Some((cert, key)) => builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .context("gRPC TLS configuration")?,
        None => builder,
    })
}

/// How this node calls others over gRPC: TLS trusting `[tls] ca_file` when TLS is on.
fn grpc_client_tls(config: &FloeConfig) -> anyhow::Result<Option<ClientTlsConfig>> {
    if config.tls.identity()?.is_none() {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = config.tls.ca()? {
        tls = tls.ca_certificate(Certificate::from_pem(ca));
    }
    Ok(Some(tls))
}

/// The gRPC listen address: configured, else 127.0.0.1 on the role's port (metastore
/// 9400, writer 9401, searcher 9402).
fn grpc_addr(config: &FloeConfig, node_role: &str) -> SocketAddr {
    let default_port = match node_role {
        role::METASTORE => 9400,
        role::WRITER => 9401,
        _ => 9402,
    };
    config
        .cluster
        .grpc_addr
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port)))
}

/// `addr` as other nodes reach it: the advertised host, else the listen IP unless it is
/// 0.0.0.0 (then the host name).
fn reachable(config: &FloeConfig, addr: SocketAddr) -> String {
    let host = config.cluster.advertise_host.clone().unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into())
        } else {
            addr.ip().to_string()
        }
    });
    format!("{host}:{}", addr.port())
}

fn node_info(config: &FloeConfig, node_role: &str, grpc: SocketAddr) -> NodeInfo {
    NodeInfo {
        node_id: config.node_id(),
        role: node_role.to_string(),
        zone: config.cluster.zone.clone(),
        http_addr: reachable(config, config.http.addr),
        grpc_addr: reachable(config, grpc),
        started_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        ..Default::default()
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn load_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}
