//! Floe's one storage abstraction: a bucket (S3-compatible endpoint or local directory) with
//! the conditional writes the metastore relies on (create-only and compare-and-swap on ETag).
//!
//! Built on `object_store`, which gives both backends, ranged reads, listing and bounded
//! retries with backoff for S3. What it lacks — compare-and-swap on a local directory — is
//! added here with a file lock, so the metastore works the same on both backends.

mod config;
mod counting;
mod store;

pub use config::{S3Config, StorageConfig};
pub use counting::StorageStats;
pub use store::{Storage, StorageError};
