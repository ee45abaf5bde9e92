//! The `Node` gRPC service every cluster role serves: REST calls forwarded by other nodes,
//! bulk items forwarded by other writers, refreshes, and commit notices for searchers.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request};
use floe_metastore::Metastore;
use floe_proto::rpc::node_server::Node;
use floe_proto::rpc::{
    CommitsRequest, CommitsResponse, ForwardRequest, ForwardResponse, LeafSearchRequest,
    LeafSearchResponse, RefreshRequest, RefreshResponse, RestRequest, RestResponse,
};
use floe_searcher::{LeafRequest, SearchService, ShardTarget};
use floe_writer::Writer;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tower::ServiceExt;
use tracing::{instrument, warn};

use crate::http::FORWARDED_HEADER;

pub struct NodeService {
    /// This node's REST API (what a forwarded REST call runs through).
    pub router: axum::Router,
    pub metastore: Arc<Metastore>,
    pub writer: Option<Arc<Writer>>,
    pub searcher: Arc<SearchService>,
    pub max_body: usize,
}

fn writer_of(service: &NodeService) -> Result<&Arc<Writer>, Status> {
    service
        .writer
        .as_ref()
        .ok_or_else(|| Status::failed_precondition("this node is not a writer"))
}

#[tonic::async_trait]
impl Node for NodeService {
    #[instrument(skip_all, fields(method = %request.get_ref().method, path = %request.get_ref().path_and_query))]
    async fn rest(
        &self,
        request: GrpcRequest<RestRequest>,
    ) -> Result<GrpcResponse<RestResponse>, Status> {
        // The trace goes on as the HTTP header the REST front end takes it from.
        let trace = crate::trace::of(&request);
        let req = request.into_inner();
        let mut builder = Request::builder()
            .method(req.method.as_str())
            .uri(req.path_and_query.as_str())
            .header(FORWARDED_HEADER, "1");
        if !trace.is_empty() {
            builder = builder.header(crate::trace::KEY, trace.as_str());
        }
        if !req.content_type.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, req.content_type.as_str());
        }
        if !req.authorization.is_empty() {
            builder = builder.header(header::AUTHORIZATION, req.authorization.as_str());
        }
        let http = builder
            .header(header::CONTENT_LENGTH, req.body.len())
            .body(Body::from(req.body))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let response = self
            .router
            .clone()
            .oneshot(http)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let status = response.status().as_u16() as u32;
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = axum::body::to_bytes(response.into_body(), self.max_body.max(64 << 20))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(GrpcResponse::new(RestResponse {
            status,
            body: body.to_vec(),
            content_type,
        }))
    }

    #[instrument(skip_all, fields(items = request.get_ref().ops.len(), trace = %crate::trace::of(&request)))]
    async fn forward(
        &self,
        request: GrpcRequest<ForwardRequest>,
    ) -> Result<GrpcResponse<ForwardResponse>, Status> {
        let trace = crate::trace::of(&request);
        let req = request.into_inner();
        let writer = writer_of(self)?;
        let items = crate::trace::serve(trace, writer.apply_forwarded(req.ops, req.refresh))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(GrpcResponse::new(ForwardResponse { items }))
    }

    #[instrument(skip_all, fields(trace = %crate::trace::of(&request)))]
    async fn refresh(
        &self,
        request: GrpcRequest<RefreshRequest>,
    ) -> Result<GrpcResponse<RefreshResponse>, Status> {
        let trace = crate::trace::of(&request);
        let indexes = request.into_inner().indexes;
        let writer = writer_of(self)?;
        crate::trace::serve(trace, writer.refresh(&indexes))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(GrpcResponse::new(RefreshResponse {}))
    }

    #[instrument(skip_all, fields(shards = request.get_ref().shards.len(), trace = %crate::trace::of(&request)))]
    async fn commits_published(
        &self,
        request: GrpcRequest<CommitsRequest>,
    ) -> Result<GrpcResponse<CommitsResponse>, Status> {
        let shards = request.into_inner().shards;
        tracing::debug!(shards = ?shards.iter().map(|s| s.shard).collect::<Vec<_>>(), "commits published elsewhere");
        // Shards of an index created a moment ago: learn the index first.
        if shards
            .iter()
            .any(|s| !self.metastore.knows_uuid(&s.index_uuid))
        {
            if let Err(e) = self.metastore.catch_up().await {
                warn!("reading the change log failed: {e}");
            }
        }
        let loads = shards
            .iter()
            .map(|s| self.metastore.refresh_shard(&s.index_uuid, s.shard));
        for r in futures::future::join_all(loads).await {
            if let Err(e) = r {
                warn!("loading a published commit failed: {e}");
            }
        }
        Ok(GrpcResponse::new(CommitsResponse {}))
    }

    #[instrument(skip_all, fields(trace = %crate::trace::of(&request)))]
    async fn leaf_search(
        &self,
        request: GrpcRequest<LeafSearchRequest>,
    ) -> Result<GrpcResponse<LeafSearchResponse>, Status> {
        let req = request.into_inner();
        let leaf: LeafRequest = serde_json::from_slice(&req.request_json)
            .map_err(|e| Status::invalid_argument(format!("leaf request: {e}")))?;
        let targets: Vec<ShardTarget> = serde_json::from_slice(&req.targets_json)
            .map_err(|e| Status::invalid_argument(format!("leaf targets: {e}")))?;
        match self.searcher.leaf_search(&leaf, targets).await {
            Ok(partial) => Ok(GrpcResponse::new(LeafSearchResponse {
                partial_json: serde_json::to_vec(&partial)
                    .map_err(|e| Status::internal(e.to_string()))?,
                ..Default::default()
            })),
            Err(e) if e.is_request_error() => {
                let (error_kind, error_message) = e.to_wire();
                Ok(GrpcResponse::new(LeafSearchResponse {
                    error_kind,
                    error_message,
                    ..Default::default()
                }))
            }
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}
