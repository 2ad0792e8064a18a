//! maas-core: the domain of maas — batches of destructive actions on bare-metal hosts —
//! as pure, tested decisions behind small seams.
//!
//! - Domain: [`names`], [`host`], [`action`], [`batch`], [`hostlist`].
//! - Decisions: [`validate`] (the whole report), [`overlap`], [`priority`] (aging queue
//!   keys), [`plan`] (each action's chain of steps), [`model`] + [`machine`] (the job,
//!   host-run and batch state machines, as functions from rows to rows).
//! - Seams: [`ports`] (`Store`, `Inventory`, `PowerDriver`, `Provisioner`, `Notifier`,
//!   `Ticketing`, `Authorizer` in [`authz`], `Secrets`, and `Clock` in [`time`]).
//! - Reference implementations: [`memstore::MemStore`], [`simfleet::SimFleet`].
//! - `testkit` feature: the conformance suites every backend and driver must pass.
//!
//! maas-core reads no clock (time comes from a [`time::Clock`]), draws no entropy (a seeded
//! [`rng::SimRng`]), and knows nothing of SQL, gRPC, Python or IPMI.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod authz;
pub mod batch;
pub mod engine;
pub mod host;
pub mod hostlist;
pub mod id;
pub mod machine;
pub mod memstore;
pub mod model;
pub mod names;
pub mod overlap;
pub mod plan;
pub mod ports;
pub mod priority;
pub mod rng;
pub mod sim;
pub mod simfleet;
pub mod time;
pub mod validate;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use action::{Action, ActionKind, WipeMethod};
pub use authz::{AllowAll, Authorizer, Denied, GroupPolicy, Permission, Principal};
pub use batch::{BatchRequest, BatchSpec, ForceInUse, Limits, RolloutPolicy};
pub use engine::{Engine, EngineConfig, EngineError};
pub use host::{BmcEndpoint, Host, HostState};
pub use id::{BatchId, HostRunId, IdGenerator, JobId};
pub use machine::{JobOutcome, Rules};
pub use memstore::MemStore;
pub use model::{BatchRecord, BatchState, Event, EventKind, HostRunRecord, HostRunState, JobRecord, JobState};
pub use names::{Group, Hostname, OsRelease, Pool, Rack, Site, Sku};
pub use ports::{Inventory, PowerDriver, Store, StoreError};
pub use priority::{PriorityClass, PriorityPolicy};
pub use simfleet::{FaultPlan, SimFleet, SimInstaller};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};
pub use validate::{Problem, ValidationReport};
