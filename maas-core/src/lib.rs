//! maas-core: the domain of maas — batches of destructive actions on bare-metal hosts —
//! as pure, tested decisions and policies behind small seams. No runtime, no I/O, no clock.
//!
//! - Domain: [`names`], [`host`], [`action`], [`batch`], [`hostlist`].
//! - Decisions: [`validate`] (the whole report), [`overlap`], [`priority`] (aging queue
//!   keys), [`plan`] (each action's chain of steps), [`model`] + [`machine`] (the job,
//!   host-run and batch state machines, as functions from rows to rows), [`estimate`]
//!   (percentiles, stragglers, ETAs).
//! - Policies: [`policy`] — the worker, leader and pool-supervision state machines, sans-IO,
//!   driven by the runtime (maas-engine) and the simulator (maas-sim) alike; [`config`],
//!   the settings they decide with.
//! - Seams: [`ports`] (`Store`, `Inventory`, `PowerDriver`, `Provisioner`, `Notifier`,
//!   `Ticketing`, `Authorizer` in [`authz`], `Secrets`, and `Clock` in [`time`]).
//!
//! maas-core reads no clock (time comes from a [`time::Clock`] or as `now`), never sleeps,
//! draws no entropy (a seeded [`rng::SimRng`]), depends on no runtime, and knows nothing
//! of SQL, gRPC, Python, IPMI or HTTP. `tests/tidy.rs` keeps it that way.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod action;
pub mod authz;
pub mod batch;
pub mod config;
pub mod effects;
pub mod estimate;
pub mod host;
pub mod hostlist;
pub mod id;
pub mod machine;
pub mod model;
pub mod names;
pub mod netboot;
pub mod notify;
pub mod overlap;
pub mod plan;
pub mod policy;
pub mod ports;
pub mod priority;
pub mod rng;
pub mod rollup;
pub mod time;
pub mod validate;

pub use action::{Action, ActionKind, WipeMethod};
pub use authz::{AllowAll, Authorizer, Denied, GroupPolicy, Permission, Principal};
pub use batch::{BatchRequest, BatchSpec, ForceInUse, Limits, RolloutPolicy};
pub use config::{EngineConfig, PoolConfig, WorkerConfig};
pub use host::{BmcEndpoint, BmcProtocol, BmcTls, BootMethod, Host, HostState, MacAddr};
pub use id::{BatchId, HostRunId, IdGenerator, JobId};
pub use machine::{JobOutcome, Rules};
pub use model::{BatchRecord, BatchState, Event, EventKind, HostRunRecord, HostRunState, JobRecord, JobState};
pub use names::{Group, Hostname, OsRelease, Pool, Rack, Site, Sku};
pub use ports::{Inventory, PowerDriver, Store, StoreError};
pub use priority::{PriorityClass, PriorityPolicy};
pub use time::{Clock, ManualClock, Timestamp};
pub use validate::{Problem, ValidationReport};
