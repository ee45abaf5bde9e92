//! Where the bucket is.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings of an S3-compatible endpoint (AWS S3, MinIO, moto, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:9000`; empty means AWS's default endpoint for the region.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Virtual-hosted-style addressing; off by default (path style, as MinIO wants).
    pub virtual_hosted_style: bool,
}

/// The bucket: a local directory (the embedded default) or S3, plus a key prefix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// Root of the local-directory backend; ignored when `s3` is set.
    pub data_dir: PathBuf,
    pub s3: Option<S3Config>,
    /// Every key Floe writes starts with this prefix (may be empty).
    pub prefix: String,
    /// S3: retries of a failed request (5xx, throttling, timeouts), with exponential backoff.
    pub max_retries: usize,
    /// S3: no retry starts later than this after the first attempt, in milliseconds.
    pub retry_timeout_ms: u64,
    /// S3: timeout of one request attempt, in milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            s3: None,
            prefix: String::new(),
            max_retries: 6,
            retry_timeout_ms: 30_000,
            request_timeout_ms: 30_000,
        }
    }
}
