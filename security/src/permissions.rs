//! What a caller may do. Roles name actions (`indices:data/read/search`) or action groups
//! (`read`, `cluster_monitor`, …, the groups OpenSearch's security plugin ships), with `*`
//! wildcards, and index patterns. [`Permissions`] is a caller's roles compiled once, then
//! asked per action and index.

use crate::model::{Role, SecurityTable};

/// The action patterns an action group stands for; any other name is a pattern itself.
pub fn expand_group(name: &str) -> Vec<&'static str> {
    const COMPOSITE_RO: [&str; 7] = [
        "indices:data/read/mget*",
        "indices:data/read/msearch*",
        "indices:data/read/mtv*",
        "indices:admin/aliases/exists*",
        "indices:admin/aliases/get*",
        "indices:data/read/scroll*",
        "indices:admin/resolve/index",
    ];
    const READ: [&str; 3] = [
        "indices:data/read*",
        "indices:admin/mappings/fields/get*",
        "indices:admin/resolve/index",
    ];
    const WRITE: [&str; 2] = ["indices:data/write*", "indices:admin/mapping/put"];
    match name {
        "cluster_all" => vec!["cluster:*"],
        "cluster_monitor" => vec!["cluster:monitor/*"],
        "cluster_manage" => vec!["cluster:admin/*", "cluster:monitor/*"],
        "cluster_composite_ops_ro" => COMPOSITE_RO.to_vec(),
        "cluster_composite_ops" => {
            let mut v = COMPOSITE_RO.to_vec();
            v.extend([
                "indices:data/write/bulk*",
                "indices:admin/aliases*",
                "indices:data/write/reindex*",
            ]);
            v
        }
        "cluster_manage_index_templates" => vec![
            "indices:admin/template/*",
            "indices:admin/index_template/*",
            "cluster:admin/component_template/*",
        ],
        "manage_snapshots" => vec!["cluster:admin/snapshot/*", "cluster:admin/repository/*"],
        "indices_all" => vec!["indices:*"],
        "read" => READ.to_vec(),
        "write" => WRITE.to_vec(),
        "index" => vec![
            "indices:data/write/index*",
            "indices:data/write/update*",
            "indices:data/write/bulk*",
            "indices:admin/mapping/put",
        ],
        "delete" => vec!["indices:data/write/delete*", "indices:data/write/bulk*"],
        "create_index" => vec!["indices:admin/create", "indices:admin/mapping/put"],
        "manage" => vec!["indices:monitor/*", "indices:admin/*"],
        "manage_aliases" => vec!["indices:admin/aliases*"],
        "indices_monitor" => vec!["indices:monitor/*"],
        "search" => vec!["indices:data/read/search*", "indices:data/read/msearch*"],
        "get" => vec!["indices:data/read/get*", "indices:data/read/mget*"],
        "crud" | "data_access" => {
            let mut v = READ.to_vec();
            v.extend(WRITE);
            v
        }
        _ => Vec::new(),
    }
}

/// `*` (any run of characters) and `?` (one character) glob matching.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn action_patterns(names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        let group = expand_group(name);
        if group.is_empty() {
            out.push(name.clone());
        } else {
            out.extend(group.into_iter().map(String::from));
        }
    }
    out
}

#[derive(Clone, Debug, Default)]
struct Grant {
    cluster: Vec<String>,
    /// (index patterns, action patterns).
    index: Vec<(Vec<String>, Vec<String>)>,
}

impl Grant {
    fn of(roles: &[Role], user: &str) -> Grant {
        let mut g = Grant::default();
        for role in roles {
            g.cluster.extend(action_patterns(&role.cluster_permissions));
            for ip in &role.index_permissions {
                let patterns = ip
                    .index_patterns
                    .iter()
                    .map(|p| {
                        p.replace("${user.name}", user)
                            .replace("${user_name}", user)
                    })
                    .collect();
                g.index
                    .push((patterns, action_patterns(&ip.allowed_actions)));
            }
        }
        g
    }

    fn cluster_allows(&self, action: &str) -> bool {
        self.cluster.iter().any(|p| glob(p, action))
    }

    fn index_allows(&self, action: &str, index: &str) -> bool {
        self.index.iter().any(|(indexes, actions)| {
            indexes.iter().any(|p| glob(p, index)) && actions.iter().any(|a| glob(a, action))
        })
    }
}

/// A caller's permissions: the union of their roles, intersected with an API key's own
/// role descriptors when the key has them.
#[derive(Clone, Debug, Default)]
pub struct Permissions {
    grant: Grant,
    limit: Option<Grant>,
}

impl Permissions {
    /// The permissions of `roles` (unknown role names grant nothing) for user `user`.
    pub fn of(table: &SecurityTable, roles: &[String], user: &str) -> Permissions {
        let roles: Vec<Role> = roles.iter().filter_map(|r| table.role(r)).collect();
        Permissions {
            grant: Grant::of(&roles, user),
            limit: None,
        }
    }

    /// These permissions, further limited to what `roles` allow.
    pub fn limited_to(mut self, roles: &[Role], user: &str) -> Permissions {
        self.limit = Some(Grant::of(roles, user));
        self
    }

    /// Whether a cluster-level action is allowed.
    pub fn cluster_allows(&self, action: &str) -> bool {
        self.grant.cluster_allows(action)
            && self.limit.as_ref().is_none_or(|l| l.cluster_allows(action))
    }

    /// Whether an index action on `index` (an index or alias name) is allowed.
    pub fn index_allows(&self, action: &str, index: &str) -> bool {
        self.grant.index_allows(action, index)
            && self
                .limit
                .as_ref()
                .is_none_or(|l| l.index_allows(action, index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IndexPermission;

    fn role(cluster: &[&str], index: &[(&[&str], &[&str])]) -> Role {
        Role {
            cluster_permissions: cluster.iter().map(|s| s.to_string()).collect(),
            index_permissions: index
                .iter()
                .map(|(p, a)| IndexPermission {
                    index_patterns: p.iter().map(|s| s.to_string()).collect(),
                    allowed_actions: a.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            ..Role::default()
        }
    }

    #[test]
    fn globs() {
        assert!(glob("logs-*", "logs-2024"));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*-b-*", "a-b-c"));
        assert!(!glob("logs-*", "metrics-1"));
        assert!(glob("indices:data/read*", "indices:data/read/search"));
        assert!(!glob("logs", "logs-1"));
    }

    #[test]
    fn groups_and_patterns() {
        let mut table = SecurityTable::default();
        table.roles.insert(
            "logs_reader".into(),
            role(&["cluster_monitor"], &[(&["logs-*"], &["read"])]),
        );
        table
            .roles
            .insert("writer".into(), role(&[], &[(&["logs-*"], &["index"])]));
        let p = Permissions::of(&table, &["logs_reader".into(), "nope".into()], "bob");
        assert!(p.cluster_allows("cluster:monitor/health"));
        assert!(!p.cluster_allows("cluster:admin/settings/update"));
        assert!(p.index_allows("indices:data/read/search", "logs-1"));
        assert!(!p.index_allows("indices:data/read/search", "metrics-1"));
        assert!(!p.index_allows("indices:data/write/index", "logs-1"));
        let w = Permissions::of(&table, &["writer".into()], "bob");
        assert!(w.index_allows("indices:data/write/index", "logs-1"));
        assert!(w.index_allows("indices:data/write/bulk", "logs-1"));
        assert!(!w.index_allows("indices:data/write/delete", "logs-1"));
        assert!(!w.index_allows("indices:admin/delete", "logs-1"));
    }

    #[test]
    fn reserved_roles_and_user_name_patterns() {
        let table = SecurityTable::default();
        let all = Permissions::of(&table, &["all_access".into()], "admin");
        assert!(all.cluster_allows("cluster:admin/opendistro_security/user/put"));
        assert!(all.index_allows("indices:admin/delete", "anything"));
        let own = Permissions::of(&table, &["own_index".into()], "carol");
        assert!(own.index_allows("indices:admin/create", "carol"));
        assert!(!own.index_allows("indices:admin/create", "dave"));
        let ro = Permissions::of(&table, &["readall".into()], "r");
        assert!(ro.index_allows("indices:data/read/search", "x"));
        assert!(!ro.index_allows("indices:data/write/bulk", "x"));
    }

    #[test]
    fn an_api_key_limit_narrows_never_widens() {
        let table = SecurityTable::default();
        let limit = [role(&[], &[(&["logs-*"], &["read", "write"])])];
        let p = Permissions::of(&table, &["readall".into()], "u").limited_to(&limit, "u");
        assert!(p.index_allows("indices:data/read/search", "logs-1"));
        assert!(!p.index_allows("indices:data/read/search", "other"));
        // The key's descriptors grant write; the owner cannot write: denied.
        assert!(!p.index_allows("indices:data/write/index", "logs-1"));
        assert!(!p.cluster_allows("cluster:monitor/health"));
    }
}
