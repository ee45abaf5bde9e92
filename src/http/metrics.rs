//! `GET /metrics` in Prometheus' text format: requests and latency per endpoint, bulk items
//! and rejections (recorded as they happen), and at scrape time the counters the roles
//! keep (object-store requests, bytes and errors, cache hits, indexing pressure, shards,
//! session renewals).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use super::State;

/// This node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pub bulk_items: IntCounterVec,
    pub rejections: IntCounter,
    /// Scrape-time values: (name, label) → value.
    gauges: IntGaugeVec,
}

impl Metrics {
    pub fn new(node_id: &str, role: &str) -> Metrics {
        let registry = Registry::new_custom(
            Some("floe".into()),
            Some(
                [
                    ("node".to_string(), node_id.to_string()),
                    ("role".to_string(), role.to_string()),
                ]
                .into_iter()
                .collect(),
            ),
        )
        .expect("valid registry");
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "REST requests by endpoint, method and status",
            ),
            &["endpoint", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_seconds", "REST request latency by endpoint").buckets(
                vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            &["endpoint", "method"],
        )
        .expect("valid metric");
        let bulk_items = IntCounterVec::new(
            Opts::new("bulk_items_total", "bulk items by outcome (ok, failed)"),
            &["outcome"],
        )
        .expect("valid metric");
        let rejections = IntCounter::new(
            "indexing_pressure_rejections_total",
            "writes refused with 429 because indexing pressure was at its limit",
        )
        .expect("valid metric");
        let gauges = IntGaugeVec::new(
            Opts::new(
                "state",
                "counters and levels read at scrape time (see `what`)",
            ),
            &["what"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(bulk_items.clone()),
            Box::new(rejections.clone()),
            Box::new(gauges.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics {
            registry,
            requests,
            latency,
            bulk_items,
            rejections,
            gauges,
        }
    }

    fn set(&self, what: &str, value: u64) {
        self.gauges.with_label_values(&[what]).set(value as i64);
    }
}

/// Counts and times every routed request by its route pattern (`/{index}/_search`).
pub async fn record(
    state: axum::extract::State<std::sync::Arc<super::AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let m = &state.metrics;
    m.latency
        .with_label_values(&[&endpoint, &method])
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[&endpoint, &method, response.status().as_str()])
        .inc();
    response
}

/// `GET /metrics`.
pub async fn metrics(state: State) -> Response {
    let m = &state.metrics;
    let s = state.storage.stats();
    for (what, v) in [
        ("object_store_gets", s.gets),
        ("object_store_puts", s.puts),
        ("object_store_deletes", s.deletes),
        ("object_store_lists", s.lists),
        ("object_store_bytes_read", s.bytes_read),
        ("object_store_bytes_written", s.bytes_written),
        ("object_store_get_errors", s.get_errors),
        ("object_store_put_errors", s.put_errors),
        ("object_store_delete_errors", s.delete_errors),
        ("object_store_list_errors", s.list_errors),
        ("indexing_pressure_bytes", state.pressure.in_flight() as u64),
        (
            "indexing_pressure_limit_bytes",
            state.pressure.limit() as u64,
        ),
    ] {
        m.set(what, v);
    }
    let cache = state.searcher.cache_stats();
    m.set("cache_block_reads", cache.block_reads);
    m.set("cache_block_fetches", cache.block_fetches);
    m.set("cache_bytes_fetched", cache.bytes_fetched);
    if let Some(w) = &state.writer {
        let (open_shards, open_writers) = w.open_counts().await;
        m.set("writer_open_shards", open_shards as u64);
        m.set("writer_open_index_writers", open_writers as u64);
        m.set("session_renewals", w.session_renewals());
        m.set("replay_failures", w.replay_failures().await);
    }
    if let Some(c) = &state.cluster {
        let plan = c.copy_plan(&state.metastore);
        let me = c.view.node_id();
        let copies = plan.load().get(&me).copied().unwrap_or(0);
        m.set("searcher_shard_copies", copies as u64);
        m.set("cluster_nodes", c.view.nodes().len() as u64);
    }
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        out = format!("# encoding failed: {e}\n").into_bytes();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
