//! maas: lifecycle of bare-metal server fleets — batches of destructive actions (reimage,
//! reboot, power, wipe, decommission) run safely on sets of hosts.
//!
//! This root crate re-exports the SDK: [`maas_core`] (the domain, decisions, engine, seams,
//! the in-memory store and the simulated fleet) at the top level, the SQL stores as
//! [`store`] (feature `store`) and the IPMI power driver as [`ipmi`] (feature `ipmi`), both
//! on by default; the gRPC API (service, server, generated client, TLS helpers) as
//! [`grpc`] (feature `grpc`). Python arrives in a later release (see README.md).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use maas_core as core;
pub use maas_core::*;
#[cfg(feature = "grpc")]
pub use maas_grpc as grpc;
#[cfg(feature = "ipmi")]
pub use maas_ipmi as ipmi;
#[cfg(feature = "store")]
pub use maas_store as store;
