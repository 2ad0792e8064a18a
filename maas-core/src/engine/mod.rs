//! The engine: the SDK's main entry point and **the API boundary** every shell (gRPC,
//! Python, CLI) calls. It turns the pure decisions of maas-core into a running system on
//! any [`Store`], [`Inventory`] and [`PowerDriver`]:
//!
//! - [`Engine`] — the facade: submit (with a dry run), query, cancel, pause/resume,
//!   statistics, ETAs, live watching, callbacks, audit and tickets ([`facade`]).
//! - [`Worker`] and [`WorkerPool`] — claim runnable jobs for a site and its pool's kinds,
//!   run them through the drivers with verified power outcomes, extend leases, complete in
//!   batches; pools supervise their workers and shut down gracefully ([`worker`], [`pool`]).
//! - [`Singletons`] — the leader-only periodic tasks: lease rescue, straggler scan, outbox
//!   delivery with tickets, retention and the server-reclaim workflow ([`leader`]).
//! - [`estimate`] — percentiles and completion estimates, as pure functions.
//!
//! Nothing here reads a clock or draws entropy except through the [`Clock`] and the seeded
//! [`IdGenerator`] it was built with, so [`crate::sim`] runs all of it deterministically.

mod counters;
pub mod estimate;
pub mod facade;
pub mod leader;
pub mod pool;
pub mod steps;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

pub use self::counters::CounterSnapshot;
use self::counters::Counters;

use crate::authz::{AllowAll, Authorizer, Denied};
use crate::batch::Limits;
use crate::id::{BatchId, IdGenerator};
use crate::machine::Rules;
use crate::names::OsRelease;
use crate::ports::inventory::Inventory;
use crate::ports::power::PowerDriver;
use crate::ports::services::{Notifier, Provisioner, Ticket, Ticketing, TicketingError};
use crate::ports::store::{Store, StoreError};
use crate::priority::PriorityClass;
use crate::time::Clock;
use crate::validate::ValidationReport;

pub use facade::{
    ActiveSite, BatchStats, BatchView, DryRunHost, DryRunReport, DurationStats, Eta, HostRunView, OutboxBacklog,
    Submitted,
};
pub use leader::{Singletons, SingletonsHandle, TickReport};
pub use pool::{PoolConfig, PoolHandle, PoolReport, WorkerPool};
pub use worker::{Worker, WorkerConfig};

/// How power outcomes are verified: poll the BMC until it reports the target state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyPolicy {
    /// Between polls.
    pub interval: Duration,
    /// Give up after this long (hard power operations).
    pub deadline: Duration,
    /// Give up after this long for a soft (ACPI) power off, which waits for the OS.
    pub soft_deadline: Duration,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        VerifyPolicy {
            interval: Duration::from_secs(2),
            deadline: Duration::from_secs(120),
            soft_deadline: Duration::from_secs(600),
        }
    }
}

impl VerifyPolicy {
    /// How many polls fit in `deadline` (at least one).
    pub fn polls(&self, deadline: Duration) -> u32 {
        let interval = self.interval.as_millis().max(1);
        (deadline.as_millis() / interval).clamp(1, 10_000) as u32
    }
}

/// When a host run counts as a straggler.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StragglerPolicy {
    /// Slower than `factor` x the p95 of its batch peers' durations for the same step.
    pub factor: f64,
    /// Only with at least this many finished peers for that step.
    pub min_peers: usize,
    /// Raise a ticket for each flagged straggler.
    pub ticket: bool,
}

impl Default for StragglerPolicy {
    fn default() -> Self {
        StragglerPolicy { factor: 3.0, min_peers: 5, ticket: true }
    }
}

/// The server-reclaim workflow: defunct, unallocated hosts are reimaged by the system and
/// returned to their pool (their state goes back to `ready`) when the reimage succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReclaimPolicy {
    /// The release reclaimed hosts get.
    pub os: OsRelease,
    /// Most hosts per reclaim batch.
    pub max_hosts_per_batch: usize,
    /// The reclaim batches' priority.
    pub priority: PriorityClass,
}

/// How often each singleton runs (on the leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SingletonIntervals {
    /// Lease and wait rescue.
    pub rescue: Duration,
    /// Straggler scan.
    pub stragglers: Duration,
    /// Outbox delivery and tickets.
    pub outbox: Duration,
    /// Retention.
    pub retention: Duration,
    /// Reclaim workflow.
    pub reclaim: Duration,
}

impl Default for SingletonIntervals {
    fn default() -> Self {
        SingletonIntervals {
            rescue: Duration::from_secs(5),
            stragglers: Duration::from_secs(60),
            outbox: Duration::from_secs(1),
            retention: Duration::from_secs(3600),
            reclaim: Duration::from_secs(600),
        }
    }
}

/// Engine-wide settings. `Default` gives the values the design and seeds describe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Size and sanity limits on requests.
    pub limits: Limits,
    /// Probe every host's BMC before accepting a batch.
    pub console_check: bool,
    /// Concurrent probes during a console check.
    pub console_check_concurrency: usize,
    /// A site is live while some worker heartbeat is fresher than this.
    pub worker_freshness: Duration,
    /// Job lease length (workers extend it while running).
    pub lease: Duration,
    /// Power verification.
    pub verify: VerifyPolicy,
    /// Straggler detection.
    pub stragglers: StragglerPolicy,
    /// Finished batches are purged this long after they finish.
    pub retention: Duration,
    /// The reclaim workflow (`None`: off).
    pub reclaim: Option<ReclaimPolicy>,
    /// Leader lease length.
    pub leader_ttl: Duration,
    /// Singleton periods.
    pub intervals: SingletonIntervals,
    /// Window of history behind ETAs.
    pub eta_history: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::default(),
            console_check: false,
            console_check_concurrency: 64,
            worker_freshness: Duration::from_secs(180),
            lease: Duration::from_secs(60),
            verify: VerifyPolicy::default(),
            stragglers: StragglerPolicy::default(),
            retention: Duration::from_secs(30 * 24 * 3600),
            reclaim: None,
            leader_ttl: Duration::from_secs(30),
            intervals: SingletonIntervals::default(),
            eta_history: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

/// An engine failure, for shells to map onto their status codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The request is invalid, unauthorized, overlaps active batches, or failed the console
    /// check; the report names every problem. Nothing was written.
    #[error("{0}")]
    Rejected(ValidationReport),
    /// The principal may not do this.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// No such batch.
    #[error("batch {0} not found")]
    NotFound(BatchId),
    /// The store failed or refused (idempotency key reuse, illegal transition, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The default [`Ticketing`]: tickets are rows in the engine's store, so they survive
/// restarts and are listable from every instance.
#[derive(Clone)]
pub struct StoreTicketing {
    store: Arc<dyn Store>,
}

impl StoreTicketing {
    /// Tickets in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreTicketing { store }
    }
}

#[async_trait]
impl Ticketing for StoreTicketing {
    async fn open(&self, ticket: Ticket) -> Result<String, TicketingError> {
        self.store.ticket_open(ticket).await.map(|(id, _)| id).map_err(|e| TicketingError(e.to_string()))
    }

    async fn list(&self, limit: usize) -> Result<Vec<(String, Ticket)>, TicketingError> {
        let rows = self.store.ticket_list(limit).await.map_err(|e| TicketingError(e.to_string()))?;
        Ok(rows.into_iter().map(|r| (r.id, r.ticket)).collect())
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) inventory: Arc<dyn Inventory>,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    pub(crate) power: Arc<dyn PowerDriver>,
    pub(crate) provisioner: Option<Arc<dyn Provisioner>>,
    pub(crate) notifiers: Vec<(String, Arc<dyn Notifier>)>,
    pub(crate) ticketing: Arc<dyn Ticketing>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ids: IdGenerator,
    pub(crate) rules: Rules,
    pub(crate) config: EngineConfig,
    /// Pinged after every write this instance makes, so watchers wake at once.
    pub(crate) changed: Notify,
    /// This instance's activity counters.
    pub(crate) counters: Counters,
}

/// The maas engine. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

/// Builds an [`Engine`]. The store, inventory, power driver and clock are required; the
/// rest default to: [`AllowAll`], no provisioner (reimage and wipe fail clearly), no
/// notifiers, [`StoreTicketing`], [`EngineConfig::default`], [`Rules::default`].
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    inventory: Arc<dyn Inventory>,
    power: Arc<dyn PowerDriver>,
    clock: Arc<dyn Clock>,
    ids: IdGenerator,
    authorizer: Arc<dyn Authorizer>,
    provisioner: Option<Arc<dyn Provisioner>>,
    notifiers: Vec<(String, Arc<dyn Notifier>)>,
    ticketing: Option<Arc<dyn Ticketing>>,
    rules: Rules,
    config: EngineConfig,
}

impl Engine {
    /// Starts building an engine. `ids` must be seeded from the OS's entropy in production
    /// (callback tokens come from it) and from the simulation seed in tests.
    pub fn builder(
        store: Arc<dyn Store>,
        inventory: Arc<dyn Inventory>,
        power: Arc<dyn PowerDriver>,
        clock: Arc<dyn Clock>,
        ids: IdGenerator,
    ) -> EngineBuilder {
        EngineBuilder {
            store,
            inventory,
            power,
            clock,
            ids,
            authorizer: Arc::new(AllowAll),
            provisioner: None,
            notifiers: Vec::new(),
            ticketing: None,
            rules: Rules::default(),
            config: EngineConfig::default(),
        }
    }

    /// What this instance's workers and singletons did since the engine was built.
    pub fn counters(&self) -> CounterSnapshot {
        self.inner.counters.snapshot()
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(crate) fn changed(&self) {
        self.inner.changed.notify_waiters();
    }
}

impl EngineBuilder {
    /// Who may do what.
    pub fn authorizer(mut self, a: Arc<dyn Authorizer>) -> Self {
        self.authorizer = a;
        self
    }

    /// What hosts PXE-boot into.
    pub fn provisioner(mut self, p: Arc<dyn Provisioner>) -> Self {
        self.provisioner = Some(p);
        self
    }

    /// Adds a notifier; `name` keys its delivery cursor, so keep it stable across restarts.
    pub fn notifier(mut self, name: &str, n: Arc<dyn Notifier>) -> Self {
        self.notifiers.push((name.to_string(), n));
        self
    }

    /// Where tickets go (default: the store).
    pub fn ticketing(mut self, t: Arc<dyn Ticketing>) -> Self {
        self.ticketing = Some(t);
        self
    }

    /// The decision rules; must match the rules the store was built with.
    pub fn rules(mut self, r: Rules) -> Self {
        self.rules = r;
        self
    }

    /// Settings.
    pub fn config(mut self, c: EngineConfig) -> Self {
        self.config = c;
        self
    }

    /// The engine.
    pub fn build(self) -> Engine {
        let ticketing = self.ticketing.unwrap_or_else(|| Arc::new(StoreTicketing::new(self.store.clone())));
        Engine {
            inner: Arc::new(Inner {
                store: self.store,
                inventory: self.inventory,
                authorizer: self.authorizer,
                power: self.power,
                provisioner: self.provisioner,
                notifiers: self.notifiers,
                ticketing,
                clock: self.clock,
                ids: self.ids,
                rules: self.rules,
                config: self.config,
                changed: Notify::new(),
                counters: Counters::default(),
            }),
        }
    }
}
