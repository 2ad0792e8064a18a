//! Hosts as the inventory knows them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{Group, Hostname, Pool, Rack, Site, Sku};

/// Where a host is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// In its pool, free to use and to act on.
    #[default]
    Ready,
    /// Allocated to / in use by a service: destructive actions need a forced submission.
    Allocated,
    /// Broken; the reclaim workflow reimages defunct, unallocated hosts.
    Defunct,
    /// Gone for good: nothing may be submitted on it.
    Decommissioned,
}

impl HostState {
    /// Every state.
    pub const ALL: [HostState; 4] =
        [HostState::Ready, HostState::Allocated, HostState::Defunct, HostState::Decommissioned];

    /// The snake_case name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Ready => "ready",
            HostState::Allocated => "allocated",
            HostState::Defunct => "defunct",
            HostState::Decommissioned => "decommissioned",
        }
    }

    /// Parses [`HostState::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to reach a host's BMC. Holds a reference to credentials, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BmcEndpoint {
    /// IP address or DNS name of the BMC.
    pub address: String,
    /// UDP port (623 for IPMI).
    pub port: u16,
    /// The key under which the `Secrets` seam finds the credentials.
    pub credentials_ref: String,
}

/// A server in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Host {
    /// Its name (unique).
    pub hostname: Hostname,
    /// Its data center.
    pub site: Site,
    /// Its rack, if known.
    pub rack: Option<Rack>,
    /// Its pool.
    pub pool: Pool,
    /// The group that owns it, if any.
    pub owner_group: Option<Group>,
    /// Its hardware SKU.
    pub sku: Sku,
    /// Its BMC.
    pub bmc: BmcEndpoint,
    /// Its lifecycle state.
    pub state: HostState,
}
