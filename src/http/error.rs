//! The one place where errors become OpenSearch's JSON error shape:
//! `{"error":{"root_cause":[...],"type":...,"reason":...},"status":N}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use floe_metastore::MetastoreError;
use floe_searcher::SearchError;
use floe_storage::StorageError;
use floe_writer::WriterError;
use serde_json::{json, Value};

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub reason: String,
    /// Index the error is about, when there is one.
    pub index: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            reason: reason.into(),
            index: None,
        }
    }

    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            reason,
        )
    }

    pub fn index_not_found(index: &str) -> Self {
        ApiError {
            index: Some(index.to_string()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "index_not_found_exception",
                format!("no such index [{index}]"),
            )
        }
    }

    pub fn body(&self) -> Value {
        let mut cause = json!({"type": self.kind, "reason": self.reason});
        if let Some(index) = &self.index {
            cause["index"] = json!(index);
            if self.kind == "index_not_found_exception" {
                cause["resource.type"] = json!("index_or_alias");
                cause["resource.id"] = json!(index);
            }
        }
        let mut error = cause.clone();
        error["root_cause"] = json!([cause]);
        json!({"error": error, "status": self.status.as_u16()})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, kind = self.kind, "{}", self.reason);
        }
        (self.status, Json(self.body())).into_response()
    }
}

fn from_storage(e: &StorageError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable_exception",
        format!("object storage unavailable: {e}"),
    )
}

impl From<MetastoreError> for ApiError {
    fn from(e: MetastoreError) -> Self {
        match &e {
            MetastoreError::IndexNotFound(name) => ApiError::index_not_found(name),
            MetastoreError::IndexAlreadyExists(name) => ApiError {
                index: Some(name.clone()),
                ..ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "resource_already_exists_exception",
                    e.to_string(),
                )
            },
            MetastoreError::InvalidIndexName { name, .. } => ApiError {
                index: Some(name.clone()),
                ..ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_index_name_exception",
                    e.to_string(),
                )
            },
            MetastoreError::Rejected(_) | MetastoreError::NoWriteIndex(_) => {
                ApiError::bad_request(e.to_string())
            }
            MetastoreError::AliasNotFound(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "aliases_not_found_exception",
                e.to_string(),
            ),
            MetastoreError::InvalidAliasName { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_alias_name_exception",
                e.to_string(),
            ),
            MetastoreError::Storage(s) => from_storage(s),
            MetastoreError::StaleCommit { .. } | MetastoreError::Contended(_) => ApiError::new(
                StatusCode::CONFLICT,
                "version_conflict_engine_exception",
                e.to_string(),
            ),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                e.to_string(),
            ),
        }
    }
}

impl From<WriterError> for ApiError {
    fn from(e: WriterError) -> Self {
        match e {
            WriterError::BulkParse(floe_writer::bulk::BulkParseError::Empty) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "action_request_validation_exception",
                e.to_string(),
            ),
            WriterError::BulkParse(_) | WriterError::BadRequest(_) => {
                ApiError::bad_request(e.to_string())
            }
            WriterError::MapperParsing(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "mapper_parsing_exception",
                e.to_string(),
            ),
            WriterError::Blocked(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                "cluster_block_exception",
                e.to_string(),
            ),
            WriterError::Item(status, typ, reason) => ApiError::new(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                typ,
                reason,
            ),
            WriterError::Metastore(m) => m.into(),
            WriterError::Storage(s) => from_storage(&s),
            WriterError::Unavailable(reason) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_shards_exception",
                format!("object storage unavailable, the write was not acknowledged: {reason}"),
            ),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                other.to_string(),
            ),
        }
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::IndexNotFound(name) => ApiError::index_not_found(&name),
            SearchError::IndexClosed(name) => {
                let mut e =
                    ApiError::new(StatusCode::BAD_REQUEST, "index_closed_exception", "closed");
                e.index = Some(name);
                e
            }
            SearchError::Parsing(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "parsing_exception", e.to_string())
            }
            SearchError::QueryShard(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "query_shard_exception",
                e.to_string(),
            ),
            SearchError::IllegalArgument(_) => ApiError::bad_request(e.to_string()),
            SearchError::TooManyBuckets(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "too_many_buckets_exception",
                e.to_string(),
            ),
            SearchError::ContextMissing(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "search_context_missing_exception",
                e.to_string(),
            ),
            SearchError::Tantivy(tantivy::TantivyError::AggregationError(
                tantivy::aggregation::AggregationError::BucketLimitExceeded { limit, .. },
            )) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "too_many_buckets_exception",
                SearchError::TooManyBuckets(limit as usize).to_string(),
            ),
            SearchError::Tantivy(tantivy::TantivyError::InvalidArgument(_))
            | SearchError::Tantivy(tantivy::TantivyError::AggregationError(_)) => {
                ApiError::bad_request(e.to_string())
            }
            SearchError::Metastore(m) => m.into(),
            SearchError::Storage(s) => from_storage(&s),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                other.to_string(),
            ),
        }
    }
}
