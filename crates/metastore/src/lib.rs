//! The metastore: indexes (settings, mappings) and each shard's latest commit point, persisted
//! as one JSON object per index under `metastore/indexes/` in the bucket.
//!
//! Every change is a read-modify-write guarded by a conditional put (create-only for a new
//! index, compare-and-swap on the ETag for an update), so two metastore processes racing never
//! lose an update: the loser reloads and retries. A restarted metastore reloads everything
//! from the bucket; nothing lives only in memory.

mod names;
mod store;

pub use names::validate_index_name;
pub use store::{Metastore, MetastoreError};
