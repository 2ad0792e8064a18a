//! maas-engine: the runtime. A small tokio executor around maas-core's sans-IO policies —
//! it turns timers and I/O into events for the core's state machines and carries out the
//! actions they return — and **the API boundary** every shell (gRPC, Python, CLI) calls:
//!
//! - [`Engine`] — the facade: submit (with a dry run), query, cancel, pause/resume,
//!   statistics, ETAs, live watching, callbacks, audit and tickets ([`facade`]).
//! - [`Worker`] and [`WorkerPool`] — drive maas-core's [`WorkerMachine`] (what to claim,
//!   when to heartbeat, flush and hand back) with real store calls and step executions;
//!   pools supervise their workers by maas-core's [`Supervisor`] ([`worker`], [`pool`]).
//! - [`Singletons`] — the leader-only periodic tasks, scheduled by maas-core's
//!   [`LeaderSchedule`] ([`leader`]).
//! - [`steps`] — what each step does through the drivers.
//! - [`SystemClock`] — the one reader of the operating system's clock; [`OsTokens`] — the
//!   one reader of its random source (callback tokens, id seeds).
//!
//! Nothing here reads a clock or draws entropy except through the [`Clock`] and the seeded
//! [`IdGenerator`] it was built with, so maas-sim runs the facade, the steps and the same
//! core policies deterministically.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod counters;
mod entropy;
pub mod facade;
pub mod leader;
pub mod media;
pub mod pool;
pub mod steps;
pub mod worker;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

pub use self::clock::SystemClock;
pub use self::counters::CounterSnapshot;
use self::counters::Counters;
pub use self::entropy::OsTokens;

use maas_core::authz::{AllowAll, Authorizer, Denied};
use maas_core::id::{BatchId, IdGenerator};
use maas_core::machine::Rules;
use maas_core::ports::inventory::Inventory;
use maas_core::ports::power::PowerDriver;
use maas_core::ports::services::{Notifier, Provisioner, Ticket, Ticketing, TicketingError};
use maas_core::ports::store::{Store, StoreError};
use maas_core::time::Clock;
use maas_core::validate::ValidationReport;

pub use facade::{
    ActiveSite, BatchStats, BatchView, DryRunHost, DryRunReport, DurationStats, Eta, HostRunView, OutboxBacklog,
    OutcomeCounts, StepView, Submitted,
};
pub use leader::{ErrorSink, Singletons, SingletonsHandle, TickReport};
pub use maas_core::config::{
    EngineConfig, PoolConfig, ReclaimPolicy, SingletonIntervals, StragglerPolicy, VerifyPolicy, WorkerConfig,
};
pub use maas_core::estimate;
pub use maas_core::policy::{InstanceId, LeaderSchedule, Supervisor, WorkerMachine};
pub use pool::{PoolHandle, PoolReport, WorkerPool};
pub use worker::Worker;

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
    /// The ticket system failed.
    #[error(transparent)]
    Ticketing(#[from] TicketingError),
    /// Outbox delivery: some notifiers failed (each is retried after its backoff; the
    /// others were not held back).
    #[error("delivered {delivered} event(s); failed: {}", failures.join("; "))]
    Delivery {
        /// Events delivered, counted per notifier.
        delivered: usize,
        /// One line per failed notifier: its error and when it is tried again.
        failures: Vec<String>,
    },
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
        Ok(self.store.ticket_open(ticket).await.map(|(id, _)| id)?)
    }

    async fn list(&self, limit: usize) -> Result<Vec<(String, Ticket)>, TicketingError> {
        let rows = self.store.ticket_list(limit).await?;
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

    /// The inventory.
    pub fn inventory(&self) -> &Arc<dyn Inventory> {
        &self.inner.inventory
    }

    /// Takes back at once the leases of `instance`'s earlier incarnations: after a crash
    /// or kill, the jobs its old workers held run again now instead of when their leases
    /// run out. Call it at startup, once this process holds `instance`'s name (maas-store's
    /// `InstanceLock`, which makes "an earlier incarnation" mean "a process that is gone"),
    /// and before its workers start. Each forfeited attempt counts as a failed, retryable
    /// attempt, as an expired lease does.
    pub async fn take_over_earlier_incarnations(
        &self,
        instance: &maas_core::policy::InstanceId,
    ) -> Result<maas_core::ports::store::RescueReport, EngineError> {
        let p = maas_core::ports::store::JobForfeitParams { instance: instance.clone(), now: self.inner.clock.now() };
        let r = self.inner.store.job_forfeit_leases(p).await?;
        self.inner.counters.rescued(r.retried.len(), r.failed.len(), 0);
        if !r.retried.is_empty() || !r.failed.is_empty() {
            self.changed();
        }
        Ok(r)
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
        let mut notifiers = self.notifiers;
        // Virtual media leaves the drive however a host run ends (see `media`).
        let ejector = media::MediaEjector::new(self.power.clone(), self.inventory.clone(), self.store.clone());
        notifiers.push((media::MEDIA_EJECTOR.to_string(), Arc::new(ejector)));
        Engine {
            inner: Arc::new(Inner {
                store: self.store,
                inventory: self.inventory,
                authorizer: self.authorizer,
                power: self.power,
                provisioner: self.provisioner,
                notifiers,
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
