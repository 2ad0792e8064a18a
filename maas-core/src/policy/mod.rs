//! The engine's policies as sans-IO state machines: plain data in, actions out, `now`
//! always an argument. The runtime (maas-engine) and the simulator (maas-sim) drive the
//! same machines, so the simulator tests the production policy.
//!
//! - [`worker`] — [`WorkerMachine`]: when to claim, heartbeat, flush and hand back.
//! - [`leader`] — [`LeaderSchedule`] and [`NotifierBackoff`]: which singleton runs when,
//!   which notifier may be tried, which events raise tickets.
//! - [`pool`] — [`Supervisor`]: replacing crashed workers, retiring slots on shutdown.
//! - [`instance`] — [`InstanceId`]: who owns a lease, and which leases a restarted
//!   instance takes back at once.

pub mod instance;
pub mod leader;
pub mod pool;
pub mod worker;

pub use instance::{InstanceId, InstanceNameError};
pub use leader::{LeaderSchedule, LeaderTask, NotifierBackoff};
pub use pool::{SlotDecision, Supervisor};
pub use worker::{WorkerAction, WorkerMachine};
