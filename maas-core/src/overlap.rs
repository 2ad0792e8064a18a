//! Overlap: a host belongs to at most one active batch.
//!
//! **The rule the stores enforce.** Submitting a batch inserts one claim row per host, in
//! the same transaction that creates the batch and its chains, under a unique key on the
//! hostname. Any conflict aborts the whole submission; the store then reads who holds each
//! conflicting host and reports every one ([`Conflict`]). A claim is released when its host
//! run reaches a terminal state. No global lock, no queue: concurrent submitters on many
//! instances are serialized by the database's unique index alone.
//!
//! [`find_conflicts`] is the same rule as a pure function over a view of active claims; it
//! costs O(batch) lookups, independent of how many claims are active.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::id::BatchId;
use crate::names::Hostname;

/// A host already claimed by another active batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conflict {
    /// The contested host.
    pub host: Hostname,
    /// The active batch holding it.
    pub held_by: BatchId,
}

/// A read-only view of active claims.
pub trait ClaimLookup {
    /// The active batch holding `host`, if any.
    fn holder(&self, host: &Hostname) -> Option<BatchId>;
}

impl ClaimLookup for HashMap<Hostname, BatchId> {
    fn holder(&self, host: &Hostname) -> Option<BatchId> {
        self.get(host).copied()
    }
}

/// No active claims (e.g. a dry run with no store view).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoClaims;

impl ClaimLookup for NoClaims {
    fn holder(&self, _: &Hostname) -> Option<BatchId> {
        None
    }
}

/// Every host of `hosts` that is claimed, with its holder, in the order given.
pub fn find_conflicts<'a>(hosts: impl IntoIterator<Item = &'a Hostname>, claims: &dyn ClaimLookup) -> Vec<Conflict> {
    hosts.into_iter().filter_map(|h| claims.holder(h).map(|held_by| Conflict { host: h.clone(), held_by })).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn conflicts_name_host_and_holder_in_order() {
        let h = |s: &str| Hostname::new(s).unwrap();
        let b1 = BatchId(Uuid::from_u128(1));
        let b2 = BatchId(Uuid::from_u128(2));
        let claims: HashMap<Hostname, BatchId> = [(h("a"), b1), (h("c"), b2)].into_iter().collect();
        let got = find_conflicts(&[h("c"), h("b"), h("a")], &claims);
        assert_eq!(got, vec![Conflict { host: h("c"), held_by: b2 }, Conflict { host: h("a"), held_by: b1 }]);
        assert!(find_conflicts(&[h("a")], &NoClaims).is_empty());
    }
}
