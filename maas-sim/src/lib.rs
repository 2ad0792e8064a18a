//! maas-sim: maas under simulation, and the yardsticks every backend is measured with.
//!
//! - [`memstore::MemStore`] — the in-memory reference `Store` + `Inventory`, with an
//!   optional transition log for invariant checking.
//! - [`simfleet`] — [`SimFleet`], a simulated `PowerDriver` with seeded faults, and
//!   [`SimInstaller`], installers that call back in real time (for the embedded engine).
//! - [`sim`] — the deterministic simulator: the engine's facade and steps (maas-engine) and
//!   **the same** worker and leader policies the runtime drives (maas-core's
//!   `WorkerMachine`, `LeaderSchedule`), on a manual clock, under seeded faults, with an
//!   invariant checker after every step.
//! - [`testkit`] — the conformance suites: `testkit::store::exercise` for every `Store`,
//!   `testkit::power::exercise` for every `PowerDriver`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod memstore;
pub mod sim;
pub mod simfleet;
pub mod testkit;

pub use memstore::MemStore;
pub use sim::{SimConfig, SimError, SimFailure, SimReport, Simulation, fleet_hosts};
pub use simfleet::{FaultPlan, SimFleet, SimInstaller};
