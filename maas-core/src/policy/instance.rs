//! Instance identity, sans-IO: who owns a lease, and which leases a restarted instance
//! may take back at once.
//!
//! An instance is one engine process. Its **name** (maasd's `instance`, e.g. the host it
//! runs on) is chosen by the operator, stays the same across restarts, and must be held
//! by one process at a time — the shell takes an exclusive lock on it (maas-store's
//! `InstanceLock`) before it works. Its **incarnation** tells one run of that name from
//! the next: the shell picks a new one at every start (the start time in milliseconds).
//! Every lease an instance takes is owned by `name@incarnation/…` (worker ids,
//! [`crate::policy::Supervisor::worker_id`]), so when an instance starts again under its
//! name, every running job leased by an earlier incarnation of that name belonged to a
//! process that is gone: [`InstanceId::forfeits`] says which, and
//! [`crate::machine::decide_lease_forfeited`] ends those attempts now instead of after
//! their leases run out.

use std::fmt;

/// The longest instance name.
pub const MAX_INSTANCE_NAME: usize = 48;

/// One run of a named instance: `name@incarnation`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId {
    name: String,
    incarnation: u64,
}

/// Why an instance name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "instance name {name:?} is not valid: use 1 to {MAX_INSTANCE_NAME} letters, digits, '.', '_' or '-' \
     (it names this process in worker ids and leader rows)"
)]
pub struct InstanceNameError {
    /// The refused name.
    pub name: String,
}

impl InstanceId {
    /// Run `incarnation` of the instance `name`.
    pub fn new(name: &str, incarnation: u64) -> Result<Self, InstanceNameError> {
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > MAX_INSTANCE_NAME || !name.chars().all(plain) {
            return Err(InstanceNameError { name: name.to_string() });
        }
        Ok(InstanceId { name: name.to_string(), incarnation })
    }

    /// The name, the same in every incarnation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This run's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether a lease owned by `owner` belongs to an earlier (or any other) incarnation
    /// of this instance's name: its process is gone, since the name is held by one process
    /// at a time. Owners of other instances, and of this incarnation, are not forfeit. An
    /// owner written before incarnations existed (`name/…`) is an earlier run too.
    pub fn forfeits(&self, owner: &str) -> bool {
        let Some(rest) = owner.strip_prefix(self.name.as_str()) else { return false };
        if rest.starts_with('/') {
            return true;
        }
        let Some(rest) = rest.strip_prefix('@') else { return false };
        let incarnation = rest.split('/').next().unwrap_or_default();
        incarnation != self.incarnation.to_string()
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.incarnation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_and_bounded() {
        assert!(InstanceId::new("maasd-a.dc1_2", 1).is_ok());
        for bad in ["", "a/b", "a@b", "a b", "a%", &"x".repeat(MAX_INSTANCE_NAME + 1)] {
            let e = InstanceId::new(bad, 1).unwrap_err();
            assert!(e.to_string().contains("is not valid"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn only_other_incarnations_of_the_same_name_are_forfeit() {
        let me = InstanceId::new("maasd", 20).unwrap();
        assert_eq!(me.to_string(), "maasd@20");
        assert!(me.forfeits("maasd@19/dc1/web/0.0"));
        assert!(me.forfeits("maasd@2/dc1/web/3.1"));
        assert!(me.forfeits("maasd/dc1/web/0.0"), "an owner from before incarnations");
        assert!(!me.forfeits("maasd@20/dc1/web/0.0"), "this run's own workers");
        assert!(me.forfeits("maasd@200/dc1/web/0.0"), "an incarnation is compared whole, not by prefix");
        assert!(!me.forfeits("maasd-b@19/dc1/web/0.0"), "another instance whose name extends this one");
        assert!(!me.forfeits("other@19/dc1/web/0.0"));
        assert!(!me.forfeits("maas"));
    }
}
