//! Floe's configuration: one typed struct, loaded from a TOML file, then `FLOE_*` / `AWS_*`
//! environment variables, then command-line flags (each later source wins).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bytesize::ByteSize;
use floe_storage::{S3Config, StorageConfig};
use serde::{Deserialize, Serialize};

/// HTTP front end settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// `http.max_content_length`: larger request bodies get 413.
    pub max_content_length: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:9200".parse().expect("valid default address"),
            max_content_length: 100 * 1024 * 1024,
        }
    }
}

/// Writer (indexing) settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexingConfig {
    /// tantivy indexing memory of the process, in bytes, shared by the open shard writers.
    /// Default: a quarter of the machine's memory, at most 2 GiB.
    pub memory: Option<usize>,
    /// Shard writers open at once (each holds ~3 threads); more shards take turns.
    pub max_open_writers: usize,
    /// Shards not written for this long (and fully published) are closed.
    pub idle_close_ms: u64,
    /// Assumed bound on clock skew between nodes; see docs/ARCHITECTURE.md (leases).
    pub clock_skew_margin_ms: u64,
    /// tantivy indexing threads for a single-shard index (multi-shard indexes use one per shard).
    pub threads_per_shard: usize,
    /// Indexing pressure: bytes of write requests in flight before new ones get 429.
    /// Default: 10% of the machine's memory, between 64 MiB and 1 GiB.
    pub max_inflight_bytes: Option<usize>,
    /// Shard lease duration: a writer that stops renewing loses its shards after this.
    pub lease_ttl_ms: u64,
    /// How long merged-away segment objects stay in the bucket before deletion.
    pub gc_grace_ms: u64,
}

impl Default for IndexingConfig {
    fn default() -> Self {
        IndexingConfig {
            memory: None,
            max_open_writers: std::thread::available_parallelism()
                .map(|n| n.get() * 4)
                .unwrap_or(8),
            idle_close_ms: 30_000,
            clock_skew_margin_ms: 1_000,
            threads_per_shard: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(1),
            max_inflight_bytes: None,
            lease_ttl_ms: 4_000,
            gc_grace_ms: 60_000,
        }
    }
}

/// `[security]`: authentication and authorization of every REST request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityConfig {
    /// On by default. Turning it off (`enabled = false`, `FLOE_SECURITY_ENABLED=false` or
    /// `--security-enabled false`) opens every route to anyone who can reach the port, and
    /// is warned about at every start.
    pub enabled: bool,
    /// Failed logins from one client address before it is refused for `block_ms`.
    pub max_failed_logins: u32,
    pub block_ms: u64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            enabled: true,
            max_failed_logins: 10,
            block_ms: 60_000,
        }
    }
}

/// `[tls]`: HTTPS for the REST API and TLS for gRPC between nodes (rustls), from PEM files.
/// Off unless `cert_file` and `key_file` are set. `ca_file` is what nodes trust when they
/// call each other (the CA that signed the other nodes' certificates).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// (certificate chain, private key) in PEM, when TLS is on.
    pub fn identity(&self) -> anyhow::Result<Option<(Vec<u8>, Vec<u8>)>> {
        match (&self.cert_file, &self.key_file) {
            (Some(c), Some(k)) => Ok(Some((
                std::fs::read(c).with_context(|| format!("reading {}", c.display()))?,
                std::fs::read(k).with_context(|| format!("reading {}", k.display()))?,
            ))),
            (None, None) => Ok(None),
            _ => anyhow::bail!("[tls] needs both cert_file and key_file"),
        }
    }

    /// The CA certificate (PEM) nodes trust, when set.
    pub fn ca(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.ca_file
            .as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
            .transpose()
    }
}

/// Everything `floe standalone` needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FloeConfig {
    pub http: HttpConfig,
    pub storage: StorageConfig,
    /// Searcher cache and writer scratch space; disposable while Floe is stopped.
    pub cache_dir: PathBuf,
    pub cache: CacheSizes,
    pub indexing: IndexingConfig,
    /// Stable name of this node (shard owner). Default: host name and HTTP port.
    #[serde(alias = "node_name")]
    pub node_id: Option<String>,
    /// How often this process reads the metastore's change log (other processes' changes
    /// reach it within this interval).
    pub metastore_poll_ms: u64,
    pub cluster: ClusterConfig,
    pub reindex: ReindexConfig,
    pub security: SecurityConfig,
    pub tls: TlsConfig,
    /// `text` (default) or `json` (one object per line, for log collectors).
    pub log_format: String,
}

/// `_reindex` from remote clusters (`[reindex]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReindexConfig {
    /// `host:port` patterns (`*` wildcards) a reindex may read from, as OpenSearch's
    /// `reindex.remote.allowlist`; empty (the default): none, so a request cannot make
    /// Floe fetch from arbitrary addresses.
    pub remote_allowlist: Vec<String>,
}

/// Budgets of the searcher's segment cache (`[cache]`; sizes with units, e.g. "512MiB").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheSizes {
    /// Segment blocks kept in memory (parsed hot caches get a quarter more).
    pub memory: ByteSize,
    /// Segment blocks kept on local disk, under `<cache_dir>/searcher` (0: memory only).
    pub disk: ByteSize,
}

impl Default for CacheSizes {
    fn default() -> Self {
        CacheSizes {
            memory: ByteSize::mib(512),
            disk: ByteSize::gib(10),
        }
    }
}

/// How the roles of a cluster find each other (`[cluster]`; unused by `standalone`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// gRPC listen address [default: 127.0.0.1:9400 metastore, :9401 writer, :9402 searcher].
    pub grpc_addr: Option<SocketAddr>,
    /// The metastore's gRPC address, e.g. `http://127.0.0.1:9400`.
    pub metastore: Option<String>,
    /// Availability zone (placement spreads copies across zones).
    pub zone: String,
    /// Host name or IP other nodes reach this one at [default: the gRPC listen IP, or the
    /// host name when listening on 0.0.0.0].
    pub advertise_host: Option<String>,
    /// How often a node heartbeats to the metastore.
    pub heartbeat_ms: u64,
    /// A node silent for this long counts as gone and its shards move.
    pub node_timeout_ms: u64,
    /// Metastore: forced awareness zones for searcher copies (empty: the live searchers' zones).
    pub awareness_zones: Vec<String>,
    /// Metastore: searchers the cluster is sized for (0: the live ones); with the skew it caps
    /// the copies one searcher serves.
    pub provisioned_searchers: u32,
    pub skew_factor_percent: u32,
    pub flat_skew: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            grpc_addr: None,
            metastore: None,
            zone: String::new(),
            advertise_host: None,
            heartbeat_ms: 500,
            node_timeout_ms: 3_000,
            awareness_zones: Vec::new(),
            provisioned_searchers: 0,
            skew_factor_percent: 50,
            flat_skew: 2,
        }
    }
}

impl Default for FloeConfig {
    fn default() -> Self {
        FloeConfig {
            http: HttpConfig::default(),
            storage: StorageConfig::default(),
            cache_dir: PathBuf::new(),
            cache: CacheSizes::default(),
            indexing: IndexingConfig::default(),
            node_id: None,
            metastore_poll_ms: 400,
            cluster: ClusterConfig::default(),
            reindex: ReindexConfig::default(),
            security: SecurityConfig::default(),
            tls: TlsConfig::default(),
            log_format: "text".into(),
        }
    }
}

impl IndexingConfig {
    /// The indexing memory budget in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory.unwrap_or_else(|| {
            let total = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find(|l| l.starts_with("MemTotal:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
                })
                .map_or(4 << 30, |kb| kb * 1024);
            (total / 4).clamp(256 << 20, 2 << 30)
        })
    }
}

/// Command-line overrides (all optional; `None` keeps the file/env value).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConfigFlags {
    /// TOML configuration file.
    #[arg(long, env = "FLOE_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:9200].
    #[arg(long, env = "FLOE_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Root of the local-directory object storage [default: ./data].
    #[arg(long, env = "FLOE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Local cache and scratch directory [default: ./floe-cache].
    #[arg(long, env = "FLOE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Memory for cached segment blocks, e.g. 512MiB [default: 512MiB].
    #[arg(long, env = "FLOE_CACHE_MEMORY")]
    pub cache_memory: Option<ByteSize>,
    /// Local disk for cached segment blocks, e.g. 10GiB; 0 for none [default: 10GiB].
    #[arg(long, env = "FLOE_CACHE_DISK")]
    pub cache_disk: Option<ByteSize>,
    /// Stable name of this node [default: host name and HTTP port]. A restarted process
    /// with the same id takes its shards over once the old incarnation's session expired.
    #[arg(long, env = "FLOE_NODE_ID")]
    pub node_id: Option<String>,
    /// Maximum request body in bytes [default: 104857600].
    #[arg(long, env = "FLOE_MAX_CONTENT_LENGTH")]
    pub max_content_length: Option<usize>,
    /// S3-compatible endpoint URL (selects S3 instead of --data-dir).
    #[arg(long, env = "FLOE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 bucket (selects S3 instead of --data-dir).
    #[arg(long, env = "FLOE_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    #[arg(long, env = "FLOE_S3_REGION")]
    pub s3_region: Option<String>,
    /// Key prefix inside the bucket (or data dir).
    #[arg(long, env = "FLOE_S3_PREFIX")]
    pub s3_prefix: Option<String>,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// gRPC listen address of this node (cluster roles).
    #[arg(long, env = "FLOE_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// The metastore's gRPC address, e.g. http://127.0.0.1:9400 (writer, searcher).
    #[arg(long, env = "FLOE_METASTORE")]
    pub metastore: Option<String>,
    /// Availability zone of this node.
    #[arg(long, env = "FLOE_ZONE")]
    pub zone: Option<String>,
    /// Host name or IP other nodes reach this one at (containers: the service or pod IP).
    #[arg(long, env = "FLOE_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// Log format: text (default; colours only on a terminal) or json.
    #[arg(long, env = "FLOE_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Authentication and authorization (`[security] enabled`; default true).
    #[arg(long, env = "FLOE_SECURITY_ENABLED")]
    pub security_enabled: Option<bool>,
    /// PEM certificate chain for HTTPS and gRPC over TLS (`[tls] cert_file`).
    #[arg(long, env = "FLOE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (`[tls] key_file`).
    #[arg(long, env = "FLOE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate nodes trust when calling each other (`[tls] ca_file`).
    #[arg(long, env = "FLOE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl FloeConfig {
    /// The node name, defaulted from the host name and HTTP port, so a restarted process
    /// reclaims its own shards at once.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "floe".to_string());
            format!("{host}-{}", self.http.addr.port())
        })
    }

    /// Defaults, then the file (if any), then flags/env (clap already merged env into flags).
    pub fn load(flags: &ConfigFlags) -> anyhow::Result<FloeConfig> {
        let mut config = match &flags.config {
            Some(path) => Self::from_file(path)?,
            None => FloeConfig {
                cache_dir: PathBuf::from("./floe-cache"),
                ..FloeConfig::default()
            },
        };
        if config.cache_dir.as_os_str().is_empty() {
            config.cache_dir = PathBuf::from("./floe-cache");
        }
        if let Some(a) = flags.http_addr {
            config.http.addr = a;
        }
        if let Some(d) = &flags.data_dir {
            config.storage.data_dir = d.clone();
        }
        if let Some(d) = &flags.cache_dir {
            config.cache_dir = d.clone();
        }
        if let Some(m) = flags.cache_memory {
            config.cache.memory = m;
        }
        if let Some(d) = flags.cache_disk {
            config.cache.disk = d;
        }
        if let Some(n) = &flags.node_id {
            config.node_id = Some(n.clone());
        }
        if let Some(n) = flags.max_content_length {
            config.http.max_content_length = n;
        }
        if let Some(a) = flags.grpc_addr {
            config.cluster.grpc_addr = Some(a);
        }
        if let Some(m) = &flags.metastore {
            config.cluster.metastore = Some(m.clone());
        }
        if let Some(z) = &flags.zone {
            config.cluster.zone = z.clone();
        }
        if let Some(on) = flags.security_enabled {
            config.security.enabled = on;
        }
        if let Some(p) = &flags.tls_cert {
            config.tls.cert_file = Some(p.clone());
        }
        if let Some(p) = &flags.tls_key {
            config.tls.key_file = Some(p.clone());
        }
        if let Some(p) = &flags.tls_ca {
            config.tls.ca_file = Some(p.clone());
        }
        if let Some(f) = &flags.log_format {
            config.log_format = f.clone();
        }
        if let Some(h) = &flags.advertise_host {
            config.cluster.advertise_host = Some(h.clone());
        }
        if let Some(p) = &flags.s3_prefix {
            config.storage.prefix = p.clone();
        }
        if flags.s3_bucket.is_some() || flags.s3_endpoint.is_some() || config.storage.s3.is_some() {
            let mut s3: S3Config = config.storage.s3.clone().unwrap_or_default();
            if let Some(v) = &flags.s3_endpoint {
                s3.endpoint = Some(v.clone());
            }
            if let Some(v) = &flags.s3_bucket {
                s3.bucket = v.clone();
            }
            if let Some(v) = flags
                .s3_region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
            {
                s3.region = Some(v);
            }
            if let Some(v) = &flags.s3_access_key_id {
                s3.access_key_id = Some(v.clone());
            }
            if let Some(v) = &flags.s3_secret_access_key {
                s3.secret_access_key = Some(v.clone());
            }
            anyhow::ensure!(
                !s3.bucket.is_empty(),
                "an S3 endpoint needs a bucket: --s3-bucket"
            );
            config.storage.s3 = Some(s3);
        }
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<FloeConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut config: FloeConfig = toml::from_str(&text)
            .with_context(|| format!("parsing config file {}", path.display()))?;
        if config.cache_dir.as_os_str().is_empty() {
            config.cache_dir = PathBuf::from("./floe-cache");
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("floe.toml");
        std::fs::write(&file, "cache_dir = \"/tmp/c\"\n[http]\nmax_content_length = 1024\n[storage]\ndata_dir = \"/tmp/d\"\n").unwrap();
        let flags = ConfigFlags {
            config: Some(file),
            http_addr: Some("127.0.0.1:9300".parse().unwrap()),
            ..ConfigFlags::default()
        };
        let c = FloeConfig::load(&flags).unwrap();
        assert_eq!(c.http.max_content_length, 1024);
        assert_eq!(c.http.addr.port(), 9300);
        assert_eq!(c.storage.data_dir, PathBuf::from("/tmp/d"));
        assert_eq!(c.cache_dir, PathBuf::from("/tmp/c"));
        assert!(c.storage.s3.is_none());
        let s3 = FloeConfig::load(&ConfigFlags {
            s3_bucket: Some("b".into()),
            s3_endpoint: Some("http://127.0.0.1:9000".into()),
            ..ConfigFlags::default()
        })
        .unwrap();
        assert_eq!(s3.storage.s3.unwrap().bucket, "b");
    }
}
