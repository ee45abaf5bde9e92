//! The cluster secret on gRPC between nodes: every call carries it (metadata
//! `x-floe-cluster-secret`), every server refuses a call without it (`UNAUTHENTICATED`).
//! The secret lives in the bucket (`metastore/cluster_secret`), so only processes that can
//! read the bucket can call other nodes; REST requests forwarded between nodes are also
//! authenticated again by the node that answers them.

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

const KEY: &str = "x-floe-cluster-secret";

/// Client side: adds the secret to every call.
#[derive(Clone)]
pub struct ClusterSecret(MetadataValue<tonic::metadata::Ascii>);

impl ClusterSecret {
    /// `secret` must be printable ASCII (it is hex).
    pub fn new(secret: &str) -> Result<ClusterSecret, String> {
        MetadataValue::try_from(secret)
            .map(ClusterSecret)
            .map_err(|e| format!("the cluster secret is not valid metadata: {e}"))
    }
}

impl Interceptor for ClusterSecret {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(KEY, self.0.clone());
        Ok(request)
    }
}

/// Server side: lets in only calls that carry the secret (compared in constant time).
#[derive(Clone)]
pub struct RequireSecret(std::sync::Arc<[u8]>);

impl RequireSecret {
    pub fn new(secret: &str) -> RequireSecret {
        RequireSecret(secret.as_bytes().into())
    }

    /// Requires the secret a node presents itself.
    pub fn matching(secret: &ClusterSecret) -> RequireSecret {
        RequireSecret(secret.0.as_bytes().into())
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    // Constant time in the contents (the length of the secret is not secret).
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for RequireSecret {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match request.metadata().get(KEY) {
            Some(v) if same(v.as_bytes(), &self.0) => Ok(request),
            _ => Err(Status::unauthenticated(
                "missing or wrong cluster secret: only nodes of this cluster may call",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_passes() {
        let mut client = ClusterSecret::new("abc123").unwrap();
        let mut server = RequireSecret::new("abc123");
        let req = client.call(Request::new(())).unwrap();
        assert!(server.call(req).is_ok());
        assert!(server.call(Request::new(())).is_err());
        let mut other = ClusterSecret::new("abc124").unwrap();
        assert!(server.call(other.call(Request::new(())).unwrap()).is_err());
        assert!(ClusterSecret::new("bad\nvalue").is_err());
    }
}
