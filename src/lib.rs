//! maas: lifecycle of bare-metal server fleets — batches of destructive actions (reimage,
//! reboot, power, wipe, decommission) run safely on sets of hosts.
//!
//! This root crate re-exports the SDK. Today that is [`maas_core`] (the domain, decisions,
//! seams, the in-memory store and the simulated fleet); store backends, IPMI, gRPC and
//! Python arrive as features in later releases (see README.md).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use maas_core as core;
pub use maas_core::*;
