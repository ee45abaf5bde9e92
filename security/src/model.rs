//! The records of the security state: internal users, roles, role mappings and API keys,
//! in the JSON shape of OpenSearch's security plugin. All of it is one [`SecurityTable`]
//! (a few kilobytes for hundreds of users), changed with compare-and-swap as a whole.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything the security state holds. Reserved roles ([`reserved_role`]) are not stored:
/// they are part of the code and cannot be changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecurityTable {
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// Role name → who has it.
    #[serde(default)]
    pub mappings: BTreeMap<String, RoleMapping>,
    /// API key id → key.
    #[serde(default)]
    pub api_keys: BTreeMap<String, ApiKey>,
}

/// An internal user. The password is kept only as an argon2id hash.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub hash: String,
    #[serde(default)]
    pub backend_roles: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Roles given to the user directly (besides role mappings).
    #[serde(default)]
    pub opendistro_security_roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A role: cluster actions, and index actions on index patterns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    #[serde(default)]
    pub cluster_permissions: Vec<String>,
    #[serde(default)]
    pub index_permissions: Vec<IndexPermission>,
    /// Accepted for compatibility; Floe has no tenants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenant_permissions: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Index actions (names or action groups, wildcards allowed) on index patterns (wildcards
/// allowed; `${user.name}` is the caller's name).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexPermission {
    #[serde(default)]
    pub index_patterns: Vec<String>,
    #[serde(default)]
    pub allowed_actions: Vec<String>,
}

/// Who has a role: users by name, or anyone with one of the backend roles.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapping {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub backend_roles: Vec<String>,
    /// Accepted for compatibility; not used to grant anything.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// An API key: acts as its owner, limited to `role_descriptors` when given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub name: String,
    /// SHA-256 of the secret, hex (the secret is 128 random bits: a slow hash adds nothing).
    pub hash: String,
    pub owner: String,
    pub created_ms: i64,
    #[serde(default)]
    pub expires_ms: Option<i64>,
    #[serde(default)]
    pub invalidated: bool,
    /// When set, the key may do only what these roles allow (and its owner may).
    #[serde(default)]
    pub role_descriptors: Option<BTreeMap<String, Role>>,
}

/// Roles shipped with Floe, as in OpenSearch's security plugin. They cannot be changed or
/// deleted.
pub fn reserved_role(name: &str) -> Option<Role> {
    let all = |actions: &[&str]| IndexPermission {
        index_patterns: vec!["*".into()],
        allowed_actions: actions.iter().map(|a| a.to_string()).collect(),
    };
    let role = |cluster: &[&str], index: Vec<IndexPermission>, description: &str| Role {
        cluster_permissions: cluster.iter().map(|a| a.to_string()).collect(),
        index_permissions: index,
        tenant_permissions: Vec::new(),
        description: Some(description.to_string()),
    };
    Some(match name {
        "all_access" => role(
            &["*"],
            vec![all(&["*"])],
            "Full access to the cluster, every index and the security API",
        ),
        "security_manager" => role(
            &["cluster:admin/opendistro_security/*", "cluster:monitor/*"],
            vec![],
            "Manage users, roles and role mappings through the security API",
        ),
        "readall" => role(
            &["cluster_composite_ops_ro"],
            vec![all(&["read"])],
            "Read every index",
        ),
        "readall_and_monitor" => role(
            &["cluster_monitor", "cluster_composite_ops_ro"],
            vec![all(&["read", "indices_monitor"])],
            "Read every index and monitor the cluster",
        ),
        "own_index" => role(
            &["cluster_composite_ops"],
            vec![IndexPermission {
                index_patterns: vec!["${user.name}".into()],
                allowed_actions: vec!["indices_all".into()],
            }],
            "Every action on the index named after the user",
        ),
        _ => return None,
    })
}

/// The names of the reserved roles.
pub const RESERVED_ROLES: [&str; 5] = [
    "all_access",
    "security_manager",
    "readall",
    "readall_and_monitor",
    "own_index",
];

impl SecurityTable {
    /// A role by name: reserved or stored.
    pub fn role(&self, name: &str) -> Option<Role> {
        reserved_role(name).or_else(|| self.roles.get(name).cloned())
    }

    /// The roles `user` has: given directly, mapped by name, or mapped by backend role.
    pub fn roles_of(&self, name: &str, user: &User) -> Vec<String> {
        let mut roles: Vec<String> = user.opendistro_security_roles.clone();
        for (role, mapping) in &self.mappings {
            let by_name = mapping.users.iter().any(|u| u == name || u == "*");
            let by_backend = mapping
                .backend_roles
                .iter()
                .any(|b| user.backend_roles.contains(b));
            if by_name || by_backend {
                roles.push(role.clone());
            }
        }
        roles.sort();
        roles.dedup();
        roles
    }

    /// The table a new cluster starts with: `admin` (with this password hash), mapped to
    /// `all_access`.
    pub fn bootstrap(admin_hash: String) -> SecurityTable {
        let mut table = SecurityTable::default();
        table.users.insert(
            "admin".into(),
            User {
                hash: admin_hash,
                backend_roles: vec!["admin".into()],
                description: Some("Created at the first start".into()),
                ..User::default()
            },
        );
        table.mappings.insert(
            "all_access".into(),
            RoleMapping {
                users: vec!["admin".into()],
                backend_roles: vec!["admin".into()],
                ..RoleMapping::default()
            },
        );
        table
    }
}
