//! Who may do what: principals, permissions and the [`Authorizer`] seam.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::action::ActionKind;
use crate::names::{Group, Pool, Site};
use crate::priority::PriorityClass;

/// An authenticated caller: a user, a service (from its client certificate), or the system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// Its identity (certificate CN / SAN URI, or `system:<task>`).
    pub name: String,
    /// Its groups.
    pub groups: Vec<Group>,
}

impl Principal {
    /// A principal with groups.
    pub fn new(name: impl Into<String>, groups: impl IntoIterator<Item = Group>) -> Self {
        Principal { name: name.into(), groups: groups.into_iter().collect() }
    }

    /// The built-in principal of maas' own tasks (e.g. the reclaim workflow).
    pub fn system(task: &str) -> Self {
        Principal { name: format!("system:{task}"), groups: Vec::new() }
    }

    /// Whether this is a built-in system principal.
    pub fn is_system(&self) -> bool {
        self.name.starts_with("system:")
    }
}

/// Something a principal may be allowed to do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "permission", rename_all = "snake_case")]
pub enum Permission {
    /// Run `action` on hosts of `pool` in `site`.
    Act {
        /// The action.
        action: ActionKind,
        /// The hosts' pool.
        pool: Pool,
        /// The hosts' site.
        site: Site,
    },
    /// Act on allocated (in-use) hosts of `pool` in `site`, with a recorded reason.
    ForceInUse {
        /// The hosts' pool.
        pool: Pool,
        /// The hosts' site.
        site: Site,
    },
    /// Submit batches of priority `class` (low and normal need no grant).
    Priority {
        /// The class asked for.
        class: PriorityClass,
    },
    /// Read batches and inventory.
    Read,
    /// Read the audit trail (a grant with `audit`, or an admin).
    ReadAudit,
    /// Read the batches and hosts of `pool` (restricted pools only by their groups).
    ReadPool {
        /// The pool.
        pool: Pool,
    },
    /// Change inventory, pool mappings; cancel others' batches.
    Admin,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Permission::Act { action, pool, site } => write!(f, "{action} on pool {pool} in site {site}"),
            Permission::ForceInUse { pool, site } => write!(f, "force-in-use on pool {pool} in site {site}"),
            Permission::Priority { class } => write!(f, "priority {class}"),
            Permission::Read => write!(f, "read"),
            Permission::Admin => write!(f, "admin"),
            Permission::ReadAudit => write!(f, "read the audit trail"),
            Permission::ReadPool { pool } => write!(f, "read pool {pool}"),
        }
    }
}

/// A refusal, naming the missing permission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{principal} lacks permission: {permission}")]
pub struct Denied {
    /// Who asked.
    pub principal: String,
    /// What they lack.
    pub permission: Permission,
}

/// Decides whether a principal holds a permission.
///
/// # Contract
/// - Pure and fast: no I/O per call (policies are loaded up front), so it can run inside
///   validation of a 10,000-host batch.
/// - Deterministic: the same principal and permission give the same answer until the
///   policy is replaced.
/// - `Admin` implies every other permission.
pub trait Authorizer: Send + Sync {
    /// `Ok` if `principal` holds `permission`, else a [`Denied`] naming it.
    fn check(&self, principal: &Principal, permission: &Permission) -> Result<(), Denied>;
}

/// Whether `principal` may control (cancel, pause, resume) a batch `submitter` submitted:
/// its submitter may, and an admin.
pub fn check_controls_batch(authorizer: &dyn Authorizer, principal: &Principal, submitter: &str) -> Result<(), Denied> {
    if submitter == principal.name { Ok(()) } else { authorizer.check(principal, &Permission::Admin) }
}

/// Grants everything to everyone: for examples, tests and single-user embedding.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn check(&self, _: &Principal, _: &Permission) -> Result<(), Denied> {
        Ok(())
    }
}

/// One grant of a [`GroupPolicy`]: members of `group` may run `actions` on `pools` in
/// `sites` (`None` means any), and force in-use hosts if `force`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The group granted.
    pub group: Group,
    /// Allowed actions (`None`: all).
    #[serde(default)]
    pub actions: Option<Vec<ActionKind>>,
    /// Allowed pools (`None`: all).
    #[serde(default)]
    pub pools: Option<Vec<Pool>>,
    /// Allowed sites (`None`: all).
    #[serde(default)]
    pub sites: Option<Vec<Site>>,
    /// May force in-use hosts.
    #[serde(default)]
    pub force: bool,
    /// Administrator.
    #[serde(default)]
    pub admin: bool,
    /// The highest priority class members may submit at (`None`: normal; low and normal
    /// need no grant, `high` and `urgent` do).
    #[serde(default)]
    pub max_priority: Option<PriorityClass>,
    /// Members may read the audit trail (admins always may).
    #[serde(default)]
    pub audit: bool,
}

impl Grant {
    /// Everything to the members of `group` (administrators).
    pub fn admin(group: Group) -> Grant {
        Grant {
            group,
            actions: None,
            pools: None,
            sites: None,
            force: false,
            admin: true,
            max_priority: None,
            audit: false,
        }
    }

    /// The highest priority class this grant allows.
    pub fn priority_limit(&self) -> PriorityClass {
        if self.admin { PriorityClass::Urgent } else { self.max_priority.unwrap_or(PriorityClass::Normal) }
    }
}

/// A group-based policy: the union of its grants. Everyone authenticated may read, except
/// the batches and hosts of `restricted_pools`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPolicy {
    /// The grants.
    pub grants: Vec<Grant>,
    /// Pools whose batches and hosts only their groups read: those with a grant covering
    /// the pool (its `pools` names it or is absent), and admins. Every other pool is
    /// readable by any authenticated principal.
    #[serde(default)]
    pub restricted_pools: Vec<Pool>,
}

fn allows<T: PartialEq>(list: &Option<Vec<T>>, item: &T) -> bool {
    list.as_ref().is_none_or(|l| l.contains(item))
}

impl Authorizer for GroupPolicy {
    fn check(&self, principal: &Principal, permission: &Permission) -> Result<(), Denied> {
        let mine = self.grants.iter().filter(|g| principal.groups.contains(&g.group));
        let ok = mine.clone().any(|g| g.admin)
            || match permission {
                Permission::Read => true,
                Permission::ReadPool { pool } => {
                    !self.restricted_pools.contains(pool) || mine.clone().any(|g| allows(&g.pools, pool))
                }
                Permission::Admin => false,
                Permission::ReadAudit => mine.clone().any(|g| g.audit),
                Permission::Priority { class } => {
                    *class <= PriorityClass::Normal || mine.clone().any(|g| g.priority_limit() >= *class)
                }
                Permission::Act { action, pool, site } => {
                    mine.clone().any(|g| allows(&g.actions, action) && allows(&g.pools, pool) && allows(&g.sites, site))
                }
                Permission::ForceInUse { pool, site } => {
                    mine.clone().any(|g| g.force && allows(&g.pools, pool) && allows(&g.sites, site))
                }
            };
        if ok { Ok(()) } else { Err(Denied { principal: principal.name.clone(), permission: permission.clone() }) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_policy_grants_by_group_action_pool_site() {
        let g = |s: &str| Group::new(s).unwrap();
        let policy = GroupPolicy {
            grants: vec![
                Grant {
                    group: g("web-sre"),
                    actions: Some(vec![ActionKind::Reboot]),
                    pools: Some(vec![Pool::new("web").unwrap()]),
                    sites: None,
                    force: false,
                    admin: false,
                    max_priority: None,
                    audit: false,
                },
                Grant {
                    group: g("ops"),
                    actions: None,
                    pools: None,
                    sites: Some(vec![Site::new("dc1").unwrap()]),
                    force: true,
                    admin: false,
                    max_priority: None,
                    audit: false,
                },
                Grant::admin(g("root")),
            ],
            restricted_pools: vec![Pool::new("secure").unwrap()],
        };
        let act = |a, p: &str, s: &str| Permission::Act {
            action: a,
            pool: Pool::new(p).unwrap(),
            site: Site::new(s).unwrap(),
        };
        let alice = Principal::new("alice", [g("web-sre")]);
        assert!(policy.check(&alice, &act(ActionKind::Reboot, "web", "dc9")).is_ok());
        let denied = policy.check(&alice, &act(ActionKind::Reimage, "web", "dc1")).unwrap_err();
        assert_eq!(denied.to_string(), "alice lacks permission: reimage on pool web in site dc1");
        let ops = Principal::new("bob", [g("ops")]);
        assert!(
            policy
                .check(
                    &ops,
                    &Permission::ForceInUse { pool: Pool::new("db").unwrap(), site: Site::new("dc1").unwrap() }
                )
                .is_ok()
        );
        assert!(policy.check(&ops, &act(ActionKind::Reimage, "db", "dc2")).is_err());
        assert!(policy.check(&ops, &Permission::Admin).is_err());
        assert!(policy.check(&Principal::new("root", [g("root")]), &Permission::Admin).is_ok());
        assert!(policy.check(&Principal::new("nobody", []), &Permission::Read).is_ok());
        // Reading: every pool but the restricted ones, which need a grant covering them.
        let read = |p: &str| Permission::ReadPool { pool: Pool::new(p).unwrap() };
        let nobody = Principal::new("nobody", []);
        assert!(policy.check(&nobody, &read("web")).is_ok());
        let denied = policy.check(&nobody, &read("secure")).unwrap_err();
        assert_eq!(denied.to_string(), "nobody lacks permission: read pool secure");
        assert!(policy.check(&alice, &read("secure")).is_err(), "alice's grant names pool web only");
        assert!(policy.check(&ops, &read("secure")).is_ok(), "ops' grant covers every pool");
        // The audit trail: admins, and grants with `audit`.
        assert!(policy.check(&ops, &Permission::ReadAudit).is_err());
        assert!(policy.check(&Principal::new("root", [g("root")]), &Permission::ReadAudit).is_ok());
    }
}
