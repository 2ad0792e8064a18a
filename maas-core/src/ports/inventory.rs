//! The `Inventory` seam: hosts, their sites, pools and allocation state.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::host::{Host, HostState, MacAddr, StateChange};
use crate::names::{Hostname, Pool, Site};
use crate::ports::store::StoreError;

/// Which hosts to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFilter {
    /// Only this site.
    pub site: Option<Site>,
    /// Only this pool.
    pub pool: Option<Pool>,
    /// Only this state.
    pub state: Option<HostState>,
    /// Only the host with this MAC (the boot service's lookup; MACs are unique).
    pub mac: Option<MacAddr>,
    /// Only names after this one (paging).
    pub after: Option<Hostname>,
    /// At most this many (0: no limit).
    pub limit: usize,
}

/// The inventory of hosts.
///
/// # Contract
/// - `host_get_many` returns the hosts that exist among `names`, in any order; unknown
///   names are simply absent (validation reports them).
/// - `host_upsert_many` is idempotent: inserting the same host twice leaves one row equal
///   to the last write; all or nothing.
/// - `host_upsert_many` refuses (`StoreError::Invalid`, naming the MAC and both hosts, and
///   writing nothing) an import in which two hosts would share a MAC, counting hosts
///   already in the inventory.
/// - `host_set_state` applies [`StateChange::apply`] (the state, who holds an allocated
///   host, since when) and fails with `StoreError::NotFound` for an unknown host.
/// - `host_list` returns hosts ordered by name, filtered, at most `limit`.
#[async_trait]
pub trait Inventory: Send + Sync {
    /// The existing hosts among `names`.
    async fn host_get_many(&self, names: &[Hostname]) -> Result<Vec<Host>, StoreError>;
    /// Hosts matching `filter`, by name.
    async fn host_list(&self, filter: HostFilter) -> Result<Vec<Host>, StoreError>;
    /// Inserts or replaces hosts; returns how many were written.
    async fn host_upsert_many(&self, hosts: Vec<Host>) -> Result<usize, StoreError>;
    /// Changes one host's lifecycle state.
    async fn host_set_state(&self, name: &Hostname, change: StateChange) -> Result<(), StoreError>;
}
