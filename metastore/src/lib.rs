//! The metastore: indexes (settings, mappings), each shard's owner and latest commit point,
//! and node sessions, persisted in the bucket under `metastore/`.
//!
//! What changes at different rates lives in different objects (see [`store`]): an index
//! record changes when its mapping does, a shard record on each publish, a session once per
//! renewal interval. Every change is create-only or compare-and-swap, so processes racing
//! never lose an update; a numbered change log tells other processes what to re-read.

pub mod aliases;
mod changelog;
pub mod cluster_settings;
mod error;
pub mod ism;
pub mod membership;
mod names;
pub mod pits;
pub mod security;
mod session;
mod store;
pub mod templates;

pub use aliases::{AliasAction, AliasSpec, AliasTable, WriteTarget};
pub use changelog::Change;
pub use error::{now_millis, MetastoreError};
pub use membership::{ClusterView, Membership, MembershipService};
pub use names::{flatten_keys, matches_pattern, shard_for, validate_index_name};
pub use session::NodeSession;
pub use store::{Grant, Metastore, MetastoreOptions};
pub use templates::{ComponentTemplate, IndexTemplate, LegacyTemplate, TemplateTable};
