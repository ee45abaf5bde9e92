//! Authentication: credentials checked against the security table give a [`Principal`]
//! (who the caller is and what they may do). Every failure is the same [`AuthError`], so an
//! answer never tells whether a user exists.

use crate::credentials::{secret_matches, Credentials};
use crate::model::{Role, SecurityTable};
use crate::password;
use crate::permissions::Permissions;

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing authentication credentials")]
    Missing,
    /// Unknown user, wrong password, or an unknown, expired or revoked API key.
    #[error("invalid authentication credentials")]
    Invalid,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: String,
    pub backend_roles: Vec<String>,
    /// Security roles (mapped, or given directly).
    pub roles: Vec<String>,
    pub attributes: Vec<String>,
    /// The API key used, if any (its id).
    pub api_key: Option<String>,
    pub permissions: Permissions,
}

impl Principal {
    /// How OpenSearch's security plugin names a user in messages.
    pub fn describe(&self) -> String {
        format!(
            "User [name={}, backend_roles=[{}], requestedTenant=null]",
            self.user,
            self.backend_roles.join(", ")
        )
    }
}

/// Checks `credentials` against `table` at time `now_ms`. Costs one argon2 verification
/// for a password, whether or not the user exists.
pub fn authenticate(
    table: &SecurityTable,
    credentials: &Credentials,
    now_ms: i64,
) -> Result<Principal, AuthError> {
    match credentials {
        Credentials::Basic { user, password } => {
            let Some(record) = table.users.get(user) else {
                let _ = password::verify(password, password::decoy_hash());
                return Err(AuthError::Invalid);
            };
            if !password::verify(password, &record.hash) {
                return Err(AuthError::Invalid);
            }
            let roles = table.roles_of(user, record);
            Ok(Principal {
                user: user.clone(),
                backend_roles: record.backend_roles.clone(),
                permissions: Permissions::of(table, &roles, user),
                roles,
                attributes: record.attributes.keys().cloned().collect(),
                api_key: None,
            })
        }
        Credentials::ApiKey { id, secret } => {
            let key = table.api_keys.get(id);
            let matches = secret_matches(secret, key.map_or("", |k| k.hash.as_str()));
            let Some(key) = key.filter(|_| matches) else {
                return Err(AuthError::Invalid);
            };
            if key.invalidated || key.expires_ms.is_some_and(|e| e <= now_ms) {
                return Err(AuthError::Invalid);
            }
            let Some(owner) = table.users.get(&key.owner) else {
                return Err(AuthError::Invalid);
            };
            let roles = table.roles_of(&key.owner, owner);
            let mut permissions = Permissions::of(table, &roles, &key.owner);
            if let Some(descriptors) = &key.role_descriptors {
                let limit: Vec<Role> = descriptors.values().cloned().collect();
                permissions = permissions.limited_to(&limit, &key.owner);
            }
            Ok(Principal {
                user: key.owner.clone(),
                backend_roles: owner.backend_roles.clone(),
                permissions,
                roles,
                attributes: owner.attributes.keys().cloned().collect(),
                api_key: Some(id.clone()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{new_api_key, secret_hash};
    use crate::model::{ApiKey, User};

    fn table() -> SecurityTable {
        let mut t = SecurityTable::bootstrap(password::hash("admin-secret"));
        t.users.insert(
            "bob".into(),
            User {
                hash: password::hash("bob-secret"),
                opendistro_security_roles: vec!["readall".into()],
                ..User::default()
            },
        );
        t
    }

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    #[test]
    fn users_and_passwords() {
        let t = table();
        let admin = authenticate(&t, &basic("admin", "admin-secret"), 0).unwrap();
        assert_eq!(admin.roles, vec!["all_access".to_string()]);
        assert!(admin
            .permissions
            .cluster_allows("cluster:admin/settings/update"));
        let bob = authenticate(&t, &basic("bob", "bob-secret"), 0).unwrap();
        assert_eq!(bob.roles, vec!["readall".to_string()]);
        assert!(!bob
            .permissions
            .index_allows("indices:data/write/index", "x"));
        assert_eq!(
            authenticate(&t, &basic("bob", "admin-secret"), 0).unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            authenticate(&t, &basic("nobody", "admin-secret"), 0).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn api_keys_expire_revoke_and_limit() {
        let mut t = table();
        let (id, secret, _) = new_api_key();
        let limit = crate::model::Role {
            index_permissions: vec![crate::model::IndexPermission {
                index_patterns: vec!["logs-*".into()],
                allowed_actions: vec!["read".into()],
            }],
            ..Default::default()
        };
        t.api_keys.insert(
            id.clone(),
            ApiKey {
                name: "k".into(),
                hash: secret_hash(&secret),
                owner: "admin".into(),
                created_ms: 0,
                expires_ms: Some(1_000),
                invalidated: false,
                role_descriptors: Some([("r".to_string(), limit)].into()),
            },
        );
        let creds = Credentials::ApiKey {
            id: id.clone(),
            secret: secret.clone(),
        };
        let p = authenticate(&t, &creds, 500).unwrap();
        assert_eq!(p.user, "admin");
        assert_eq!(p.api_key.as_deref(), Some(id.as_str()));
        assert!(p
            .permissions
            .index_allows("indices:data/read/search", "logs-1"));
        assert!(!p
            .permissions
            .index_allows("indices:data/read/search", "other"));
        assert!(!p
            .permissions
            .index_allows("indices:data/write/index", "logs-1"));
        assert!(authenticate(&t, &creds, 1_000).is_err(), "expired");
        let wrong = Credentials::ApiKey {
            id: id.clone(),
            secret: "wrong".into(),
        };
        assert!(authenticate(&t, &wrong, 500).is_err());
        t.api_keys.get_mut(&id).unwrap().invalidated = true;
        assert!(authenticate(&t, &creds, 500).is_err(), "revoked");
    }
}
