//! Security on the REST API: every request is authenticated (HTTP Basic against internal
//! users, or an API key) before anything else happens, including forwarding to another
//! node; then authorized ([`authz`]) against the caller's roles. The state lives in the
//! metastore record (see `floe_metastore::security`), so every node applies a change
//! within a poll interval and no node failure can lose it.

pub mod api;
pub mod api_keys;
pub mod authz;
mod throttle;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use floe_metastore::Metastore;
use floe_security::authn::{authenticate as check, AuthError};
use floe_security::{credentials, Principal};
use tracing::{info_span, warn, Instrument};

use super::{ApiError, AppState};
use throttle::Throttle;

/// The authenticated caller of a request (an extension every handler can read). `None`
/// when security is turned off: everything is allowed.
#[derive(Clone)]
pub struct Caller(pub Option<Arc<Principal>>);

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.principal() {
            Some(p) => write!(f, "{}", p.user),
            None => write!(f, "-"),
        }
    }
}

impl Caller {
    pub fn principal(&self) -> Option<&Principal> {
        self.0.as_deref()
    }
}

/// A verified `Authorization` header: who, as of which security record, until when.
#[derive(Clone)]
struct Verified {
    principal: Arc<Principal>,
    version: Option<String>,
    until_ms: Option<i64>,
}

/// Authentication state of a node.
pub struct Security {
    pub enabled: bool,
    metastore: Arc<Metastore>,
    /// SHA-256 of the header → its verification, so argon2 runs once per credential and
    /// security-record version, not per request.
    verified: moka::sync::Cache<String, Verified>,
    throttle: Throttle,
}

impl Security {
    pub fn new(
        enabled: bool,
        metastore: Arc<Metastore>,
        max_failed_logins: u32,
        block: Duration,
    ) -> Security {
        Security {
            enabled,
            metastore,
            verified: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            throttle: Throttle::new(max_failed_logins, block),
        }
    }

    /// Who `authorization` (a header value) is.
    async fn verify(&self, authorization: &[u8]) -> Result<Arc<Principal>, AuthError> {
        let key = credentials::secret_hash(&String::from_utf8_lossy(authorization));
        let (table, version) = self.metastore.security();
        let now = floe_metastore::now_millis();
        // Only headers that parsed and verified are cached: a hit needs neither again.
        if let Some(v) = self.verified.get(&key) {
            if v.version == version && v.until_ms.is_none_or(|u| u > now) {
                return Ok(v.principal);
            }
        }
        let creds = credentials::parse(authorization).ok_or(AuthError::Invalid)?;
        let until_ms = match &creds {
            credentials::Credentials::ApiKey { id, .. } => {
                table.api_keys.get(id).and_then(|k| k.expires_ms)
            }
            credentials::Credentials::Basic { .. } => None,
        };
        // argon2 takes tens of milliseconds of CPU: off the async workers.
        let principal = tokio::task::spawn_blocking(move || check(&table, &creds, now))
            .await
            .map_err(|_| AuthError::Invalid)??;
        let principal = Arc::new(principal);
        self.verified.insert(
            key,
            Verified {
                principal: principal.clone(),
                version,
                until_ms,
            },
        );
        Ok(principal)
    }
}

/// Paths anyone may call: the security plugin's health check.
fn is_public(path: &str) -> bool {
    path == "/_plugins/_security/health"
}

/// The middleware: 401 without valid credentials, 429 for an address refused after too
/// many failures; otherwise the request goes on with its [`Caller`].
pub async fn authenticate(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let security = &state.security;
    if !security.enabled || is_public(req.uri().path()) {
        req.extensions_mut().insert(Caller(None));
        return next.run(req).await;
    }
    // Requests forwarded over gRPC carry no socket address (and were checked already).
    let addr: IpAddr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let path = req.uri().path().to_string();
    // Forwarded requests share no address: they are never throttled (the entry node was).
    let throttled = !addr.is_unspecified();
    if let Some(wait) = security.throttle.blocked(addr).filter(|_| throttled) {
        return too_many_failures(addr, wait);
    }
    let Some(header_value) = req.headers().get(header::AUTHORIZATION).cloned() else {
        return unauthorized(&format!(
            "missing authentication credentials for REST request [{path}]"
        ));
    };
    match security
        .verify(header_value.as_bytes())
        .instrument(info_span!("authenticate"))
        .await
    {
        Ok(principal) => {
            if throttled {
                security.throttle.succeeded(addr);
            }
            req.extensions_mut().insert(Caller(Some(principal)));
            next.run(req).await
        }
        Err(_) => {
            let delay = if throttled {
                security.throttle.failed(addr)
            } else {
                Duration::ZERO
            };
            warn!(%addr, path, "authentication failed");
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            unauthorized(&format!(
                "unable to authenticate user for REST request [{path}]"
            ))
        }
    }
}

fn unauthorized(reason: &str) -> Response {
    let mut resp =
        ApiError::new(StatusCode::UNAUTHORIZED, "security_exception", reason).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"OpenSearch Security\""),
    );
    resp
}

fn too_many_failures(addr: IpAddr, wait: Duration) -> Response {
    let mut resp = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "security_exception",
        format!("too many failed authentication attempts from [{addr}]; try again later"),
    )
    .into_response();
    let secs = wait.as_secs().max(1).to_string();
    if let Ok(v) = HeaderValue::from_str(&secs) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}
