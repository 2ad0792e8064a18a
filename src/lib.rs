//! maas: lifecycle of bare-metal server fleets — batches of destructive actions (reimage,
//! reboot, power, wipe, decommission) run safely on sets of hosts.
//!
//! This root crate is the SDK's front door. It re-exports a chosen surface:
//!
//! - The domain and its pure decisions and policies (from maas-core), as modules —
//!   [`action`], [`authz`], [`batch`], [`config`], [`estimate`], [`host`], [`hostlist`],
//!   [`id`], [`machine`], [`model`], [`names`], [`netboot`], [`overlap`], [`plan`], [`policy`],
//!   [`ports`] (the seams), [`priority`], [`rng`], [`time`], [`validate`] — and their
//!   everyday types at the top level ([`BatchRequest`], [`Host`], [`Store`], ...).
//! - The runtime (maas-engine) as [`engine`], with [`Engine`], [`EngineError`],
//!   [`WorkerPool`], [`Singletons`] and [`SystemClock`] at the top level.
//! - The SQL stores as [`store`] (feature `store`), the IPMI power driver as [`ipmi`]
//!   (feature `ipmi`), the Redfish power driver as [`redfish`] (feature `redfish`), the
//!   boot service (network boots, image catalog, installer
//!   callbacks) as [`boot`] (feature `boot`), the gRPC API (service, server, client, TLS
//!   helpers) as [`grpc`] (feature `grpc`) — all on by default.
//! - The simulation kit as `sim` (feature `sim`, off by default): the in-memory store,
//!   the simulated fleet, the deterministic simulator and the conformance suites.
//!
//! Python is the separate package `maas` (maas-py), built with maturin.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use maas_core::{
    Action, ActionKind, AllowAll, Authorizer, BatchId, BatchRecord, BatchRequest, BatchSpec, BatchState, BmcEndpoint,
    Clock, Denied, EngineConfig, Event, EventKind, ForceInUse, Group, GroupPolicy, Host, HostRunId, HostRunRecord,
    HostRunState, HostState, Hostname, IdGenerator, Inventory, JobId, JobOutcome, JobRecord, JobState, Limits, MacAddr,
    ManualClock, OsRelease, Permission, Pool, PoolConfig, PowerDriver, Principal, PriorityClass, PriorityPolicy,
    Problem, Rack, RolloutPolicy, Rules, Site, Sku, Store, StoreError, Timestamp, ValidationReport, WipeMethod,
    WorkerConfig,
};
pub use maas_core::{
    action, authz, batch, config, estimate, host, hostlist, id, machine, model, names, netboot, overlap, plan, policy,
    ports, priority, rng, time, validate,
};

pub use maas_engine as engine;
pub use maas_engine::{Engine, EngineError, Singletons, SystemClock, WorkerPool};

#[cfg(feature = "boot")]
pub use maas_boot as boot;
#[cfg(feature = "grpc")]
pub use maas_grpc as grpc;
#[cfg(feature = "ipmi")]
pub use maas_ipmi as ipmi;
#[cfg(feature = "redfish")]
pub use maas_redfish as redfish;
#[cfg(feature = "sim")]
pub use maas_sim as sim;
#[cfg(feature = "store")]
pub use maas_store as store;
