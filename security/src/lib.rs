//! Floe's security model, independent of HTTP and storage: who a request is
//! ([`authn`]: HTTP Basic against internal users, API keys), what they may do
//! ([`permissions`]: roles, action groups and index patterns as OpenSearch's security
//! plugin names them), and the records that say so ([`model`]), which the metastore keeps in
//! the bucket so that no node failure can lose them.

pub mod authn;
pub mod credentials;
pub mod model;
pub mod password;
pub mod permissions;

pub use authn::{AuthError, Principal};
pub use credentials::Credentials;
pub use model::{ApiKey, IndexPermission, Role, RoleMapping, SecurityTable, User};
pub use permissions::Permissions;
