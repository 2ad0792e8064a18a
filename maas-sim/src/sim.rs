//! The deterministic simulator: the whole engine — facade, workers, singletons on two
//! instances — on a [`ManualClock`], the [`MemStore`] and the [`SimFleet`], driven by one
//! seed. Each step is one seeded move (a submission, a duplicate with an idempotency key, a
//! cancel, a pause, a resume, a worker claiming or flushing, a worker crash, restart or
//! stall, a pool remapping, an installer callback, a leader tick, or time passing); after
//! every step [`Checker`] asserts the invariants. Then faults stop and the run drains:
//! every accepted batch must reach a terminal state.
//!
//! Everything is single-threaded and every source of choice is the seed, so a run is a
//! pure function of its [`SimConfig`]: the same seed yields the same trace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use maas_core::action::{Action, WipeMethod};
use maas_core::authz::Principal;
use maas_core::batch::{BatchRequest, RolloutPolicy};
use maas_core::host::{BmcEndpoint, Host, HostState};
use maas_core::id::{BatchId, IdGenerator, JobId};
use maas_core::machine::{JobOutcome, Rules, TransitionError};
use maas_core::model::*;
use maas_core::names::{Hostname, OsRelease, Pool, Site, Sku};
use maas_core::plan::{BootImage, StepKind};
use maas_core::policy::{WorkerAction, WorkerMachine};
use maas_core::ports::inventory::Inventory;
use maas_core::ports::power::PowerState;
use maas_core::ports::services::{Notifier, NotifyError, ProvisionError, Provisioner};
use maas_core::ports::store::*;
use maas_core::priority::PriorityClass;
use maas_core::rng::SimRng;
use maas_core::time::{Clock, ManualClock, Timestamp};
use maas_engine::worker::Performed;
use maas_engine::{Engine, EngineConfig, EngineError, ReclaimPolicy, Singletons, Worker, WorkerConfig};

use crate::memstore::{MemStore, Transition};
use crate::simfleet::{FaultPlan, SimFleet};

/// A store the simulator can run on: any [`Store`] that is also the [`Inventory`].
/// Invariant checking needs the in-memory store's transition log, so it runs only on
/// [`Simulation::new`]'s [`MemStore`].
pub trait SimBackend: Store + Inventory {}
impl<T: Store + Inventory> SimBackend for T {}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed everything is drawn from.
    pub seed: u64,
    /// Sites.
    pub sites: usize,
    /// Hosts per site.
    pub hosts_per_site: usize,
    /// Workers per site.
    pub workers_per_site: usize,
    /// Steps with faults.
    pub steps: usize,
    /// Most steps to drain after faults stop.
    pub drain_steps: usize,
    /// BMC faults during the fault phase.
    pub faults: FaultPlan,
    /// Chance per step that a worker crashes (fault phase).
    pub crash: f64,
    /// Chance per step that a worker stalls past its leases (fault phase).
    pub stall: f64,
    /// Chance that a notifier delivery fails (fault phase).
    pub notify_failure: f64,
    /// Check invariants after every step (off only for benchmarks).
    pub check: bool,
    /// Jobs each worker runs at once.
    pub worker_capacity: usize,
    /// Every n-th host starts defunct (for the reclaim workflow; 0: none).
    pub defunct_every: usize,
    /// Every n-th host starts allocated (needs force; 0: none).
    pub allocated_every: usize,
    /// Finished batches are purged this long after they finish.
    pub retention: Duration,
    /// How long a worker asked to shut down lets its steps finish before handing the rest
    /// back (simulated steps take up to 15 s).
    pub shutdown_grace: Duration,
}

impl SimConfig {
    /// A fault-free fleet for scenario tests: 2 sites x 40 hosts, no defunct or allocated
    /// hosts, installs of 10 to 12 minutes, invariants checked after every round.
    pub fn scenario() -> Self {
        SimConfig {
            steps: 0,
            hosts_per_site: 40,
            faults: FaultPlan {
                install_min: Duration::from_secs(600),
                install_max: Duration::from_secs(720),
                ..FaultPlan::none()
            },
            crash: 0.0,
            stall: 0.0,
            notify_failure: 0.0,
            defunct_every: 0,
            allocated_every: 0,
            retention: Duration::from_secs(30 * 24 * 3600),
            ..SimConfig::small(1)
        }
    }

    /// A small, fast, fault-heavy run for the test suite.
    pub fn small(seed: u64) -> Self {
        SimConfig {
            seed,
            sites: 2,
            hosts_per_site: 24,
            workers_per_site: 2,
            steps: 250,
            drain_steps: 4_000,
            faults: FaultPlan {
                timeout: 0.05,
                busy: 0.05,
                wrong_state: 0.05,
                install_failure: 0.1,
                install_min: Duration::from_secs(20),
                install_max: Duration::from_secs(240),
            },
            crash: 0.02,
            stall: 0.01,
            notify_failure: 0.2,
            check: true,
            worker_capacity: 8,
            defunct_every: 17,
            allocated_every: 23,
            retention: Duration::from_secs(1800),
            // Half the seeds give shutdowns too little grace for their steps, so workers
            // hand work back with outcomes still buffered.
            shutdown_grace: Duration::from_secs(if seed.is_multiple_of(2) { 1 } else { 10 }),
        }
    }
}

/// A provisioner that remembers what it was asked to serve, so the simulator can play the
/// installer calling back.
#[derive(Debug, Default)]
pub struct SimProvisioner {
    prepared: Mutex<Vec<(Hostname, BootImage, String)>>,
}

impl SimProvisioner {
    /// Preparations since the last call.
    pub fn take_prepared(&self) -> Vec<(Hostname, BootImage, String)> {
        std::mem::take(&mut *self.prepared.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl Provisioner for SimProvisioner {
    async fn prepare(&self, host: &Host, image: &BootImage, token: &str) -> Result<(), ProvisionError> {
        self.prepared.lock().unwrap_or_else(|p| p.into_inner()).push((
            host.hostname.clone(),
            image.clone(),
            token.to_string(),
        ));
        Ok(())
    }

    async fn clear(&self, _host: &Hostname) -> Result<(), ProvisionError> {
        Ok(())
    }
}

/// A notifier that records deliveries and fails on demand.
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    delivered: Mutex<Vec<Event>>,
    failing: Mutex<bool>,
}

impl RecordingNotifier {
    /// Every event delivered, in delivery order (with repeats).
    pub fn delivered(&self) -> Vec<Event> {
        self.delivered.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes deliveries fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = failing;
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn deliver(&self, events: &[Event]) -> Result<(), NotifyError> {
        if *self.failing.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(NotifyError::Refused { receiver: "webhook".into(), answer: "HTTP 503".into() });
        }
        self.delivered.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(events);
        Ok(())
    }
}

/// The hosts of a simulated fleet: `per_site` hosts `sim001.dc1` ... in each of `sites`
/// sites, pool `web`, two SKUs, every BMC powered on in `fleet`.
pub fn fleet_hosts(fleet: &SimFleet, sites: usize, per_site: usize) -> Vec<Host> {
    let mut hosts = Vec::with_capacity(sites * per_site);
    for s in 1..=sites {
        for i in 1..=per_site {
            let bmc = BmcEndpoint {
                address: format!("10.{}.{}.{}", s, i / 250, i % 250),
                port: 623,
                credentials_ref: "bmc-default".into(),
            };
            fleet.add_bmc(&bmc, PowerState::On);
            hosts.push(Host {
                hostname: Hostname::new(&host_name(s, i)).unwrap_or_else(|_| unreachable!("valid by construction")),
                site: site(s),
                rack: None,
                pool: Pool::new("web").unwrap_or_else(|_| unreachable!()),
                owner_group: None,
                sku: Sku::new(if i % 2 == 0 { "gen10" } else { "gen11" }).unwrap_or_else(|_| unreachable!()),
                bmc,
                state: HostState::Ready,
            });
        }
    }
    hosts
}

fn host_name(site: usize, i: usize) -> String {
    format!("sim{i:06}.dc{site}")
}

fn site(s: usize) -> Site {
    Site::new(&format!("dc{s}")).unwrap_or_else(|_| unreachable!("valid by construction"))
}

struct SimWorker {
    worker: Worker,
    site: usize,
    slot: usize,
    generation: u32,
    alive: bool,
    stalled_until: Option<Timestamp>,
    /// Jobs executed, with when the step "finishes" and its outcome.
    in_flight: Vec<(JobRecord, Timestamp, JobOutcome)>,
}

/// A run's result.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// One line per step.
    pub trace: Vec<String>,
    /// Batches accepted.
    pub accepted: usize,
    /// Submissions rejected (overlap, bad spec, key reuse).
    pub rejected: usize,
    /// Jobs completed by workers (applied).
    pub completed: usize,
    /// Worker crashes.
    pub crashes: usize,
    /// Simulated time.
    pub simulated: Duration,
    /// Host runs that succeeded (of batches still in the store).
    pub succeeded_hosts: usize,
}

/// What went wrong in a scenario driven step by step ([`Simulation::round`],
/// [`Simulation::settle`], [`Simulation::submit_as`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// An invariant was violated, or a store call failed, during a round.
    #[error("{0}")]
    Run(String),
    /// Batches were still live after this many rounds.
    #[error("not settled after {rounds} rounds")]
    NotSettled {
        /// Rounds run.
        rounds: usize,
    },
    /// The engine refused (a submission's rejection report, say).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A failed run: the violated invariant and the trace up to it.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// What went wrong.
    pub error: String,
    /// One line per step, up to the failure.
    pub trace: Vec<String>,
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (after {} steps)", self.error, self.trace.len())
    }
}

/// A simulation in progress.
pub struct Simulation {
    cfg: SimConfig,
    clock: ManualClock,
    store: Arc<dyn SimBackend>,
    mem: Option<Arc<MemStore>>,
    fleet: Arc<SimFleet>,
    provisioner: Arc<SimProvisioner>,
    notifier: Arc<RecordingNotifier>,
    engine: Engine,
    workers: Vec<SimWorker>,
    singletons: Vec<Singletons>,
    rng: SimRng,
    installs: BTreeMap<(Timestamp, u64), (String, bool, u32)>,
    install_seq: u64,
    requests: Vec<(Principal, BatchRequest)>,
    accepted: BTreeSet<BatchId>,
    keys: HashMap<(String, String), BatchId>,
    install_overrides: HashMap<Hostname, (Duration, bool)>,
    checker: Checker,
    report: SimReport,
    start: Timestamp,
    worker_policy: WorkerPolicy,
}

/// The worker policy the simulator polls: maas-core's [`WorkerMachine::poll_action`],
/// unless a test swaps in a variant (to prove the simulator catches a broken policy).
pub type WorkerPolicy = fn(&mut WorkerMachine, Timestamp) -> Option<WorkerAction>;

const LEASE: Duration = Duration::from_secs(120);

impl Simulation {
    /// Builds the fleet, the engine, two instances' singletons and the workers, on the
    /// in-memory store (invariants checked when `cfg.check`).
    pub async fn new(cfg: SimConfig) -> Self {
        let mem = Arc::new(MemStore::with_transition_log(Rules::default()));
        Self::build(cfg, mem.clone(), Some(mem)).await
    }

    /// The same on another store (e.g. SQLite), which must follow `Rules::default()`.
    /// The invariant checker needs the in-memory store, so `cfg.check` is ignored.
    pub async fn with_store(cfg: SimConfig, store: Arc<dyn SimBackend>) -> Self {
        Self::build(SimConfig { check: false, ..cfg }, store, None).await
    }

    async fn build(cfg: SimConfig, store: Arc<dyn SimBackend>, mem: Option<Arc<MemStore>>) -> Self {
        let start = Timestamp::from_millis(1_800_000_000_000);
        let clock = ManualClock::simulated(start);
        let rules = Rules::default();
        let fleet = Arc::new(SimFleet::new(cfg.seed ^ 0x5eed, cfg.faults));
        let mut hosts = fleet_hosts(&fleet, cfg.sites, cfg.hosts_per_site);
        // A few repaired hosts for the reclaim workflow.
        if cfg.defunct_every > 0 {
            for h in hosts.iter_mut().step_by(cfg.defunct_every) {
                h.state = HostState::Defunct;
            }
        }
        if cfg.allocated_every > 0 {
            for h in hosts.iter_mut().skip(5).step_by(cfg.allocated_every) {
                h.state = HostState::Allocated;
            }
        }
        let _ = store.host_upsert_many(hosts).await;
        let provisioner = Arc::new(SimProvisioner::default());
        let notifier = Arc::new(RecordingNotifier::default());
        let config = EngineConfig {
            lease: LEASE,
            retention: cfg.retention,
            reclaim: Some(ReclaimPolicy {
                os: OsRelease::new("ubuntu-24.04").unwrap_or_else(|_| unreachable!()),
                max_hosts_per_batch: 4,
                priority: PriorityClass::Low,
            }),
            stragglers: maas_engine::StragglerPolicy { factor: 3.0, min_peers: 3, ticket: true },
            ..EngineConfig::default()
        };
        let engine = Engine::builder(
            store.clone(),
            store.clone(),
            fleet.clone(),
            Arc::new(clock.clone()),
            IdGenerator::new(Arc::new(clock.clone()), cfg.seed),
        )
        .provisioner(provisioner.clone())
        .notifier("webhook", notifier.clone())
        .rules(rules)
        .config(config)
        .build();
        let singletons =
            vec![Singletons::new(engine.clone(), "instance-a"), Singletons::new(engine.clone(), "instance-b")];
        let mut sim = Simulation {
            rng: SimRng::seed_from_u64(cfg.seed),
            cfg,
            clock,
            store,
            mem,
            fleet,
            provisioner,
            notifier,
            engine,
            workers: Vec::new(),
            singletons,
            installs: BTreeMap::new(),
            install_seq: 0,
            requests: Vec::new(),
            accepted: BTreeSet::new(),
            keys: HashMap::new(),
            install_overrides: HashMap::new(),
            checker: Checker::default(),
            report: SimReport::default(),
            start,
            worker_policy: WorkerMachine::poll_action,
        };
        for s in 1..=sim.cfg.sites {
            for slot in 0..sim.cfg.workers_per_site {
                let worker = sim.new_worker(s, slot, 0);
                sim.workers.push(SimWorker {
                    worker,
                    site: s,
                    slot,
                    generation: 0,
                    alive: true,
                    stalled_until: None,
                    in_flight: Vec::new(),
                });
            }
        }
        sim
    }

    fn new_worker(&self, s: usize, slot: usize, generation: u32) -> Worker {
        let capacity = self.cfg.worker_capacity;
        let cfg = WorkerConfig {
            capacity,
            flush_size: capacity,
            flush_interval: Duration::from_secs(2),
            shutdown_grace: self.cfg.shutdown_grace,
            ..Default::default()
        };
        let pool = Pool::new("web").unwrap_or_else(|_| unreachable!());
        Worker::new(self.engine.clone(), format!("dc{s}/web/{slot}.{generation}"), site(s), pool, cfg)
    }

    /// Polls `policy` instead of [`WorkerMachine::poll_action`] for every worker's next
    /// action: for tests that prove a broken policy is caught.
    pub fn with_worker_policy(mut self, policy: WorkerPolicy) -> Self {
        self.worker_policy = policy;
        self
    }

    /// The engine under simulation.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The simulated clock.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The simulated BMCs.
    pub fn fleet(&self) -> &Arc<SimFleet> {
        &self.fleet
    }

    /// The recording notifier.
    pub fn notifier(&self) -> &Arc<RecordingNotifier> {
        &self.notifier
    }

    /// Makes `host`'s next install take `takes` and succeed or fail, instead of drawing it.
    pub fn set_install(&mut self, host: &str, takes: Duration, succeeds: bool) {
        if let Ok(h) = Hostname::new(host) {
            self.install_overrides.insert(h, (takes, succeeds));
        }
    }

    /// One drain round: every worker ticks, due installs call back, instance A's
    /// singletons tick, then time moves on `step`; invariants are checked.
    pub async fn round(&mut self, step: Duration) -> Result<(), SimError> {
        self.drain_round_by(step).await.map_err(SimError::Run)?;
        self.check().await.map_err(SimError::Run)
    }

    /// Rounds until every batch is terminal (at most `max` rounds).
    pub async fn settle(&mut self, step: Duration, max: usize) -> Result<usize, SimError> {
        for i in 0..max {
            if self.all_settled().await {
                return Ok(i);
            }
            self.round(step).await?;
        }
        Err(SimError::NotSettled { rounds: max })
    }

    /// Submits as `who` through the facade (the checker learns of accepted batches).
    pub async fn submit_as(&mut self, who: &str, req: BatchRequest) -> Result<BatchId, SimError> {
        let submitted = self.engine.submit(&Principal::new(who, []), &req).await?;
        self.accepted.insert(submitted.batch.id);
        Ok(submitted.batch.id)
    }

    /// Stops or restarts every worker of the simulation (for liveness scenarios).
    pub fn set_workers_alive(&mut self, alive: bool) {
        for w in &mut self.workers {
            w.alive = alive;
        }
    }

    /// The store under simulation.
    pub fn store(&self) -> &Arc<dyn SimBackend> {
        &self.store
    }

    /// The in-memory store, when the simulation runs on one.
    pub fn mem(&self) -> Option<&Arc<MemStore>> {
        self.mem.as_ref()
    }

    /// Every batch, oldest first (through the Store API, so it works on any store).
    async fn batches(&self) -> Vec<BatchRecord> {
        let mut out = Vec::new();
        let mut before = None;
        loop {
            let page = self.store.batch_list(BatchListParams { before, limit: 1000, ..Default::default() }).await;
            let page = page.unwrap_or_default();
            let last = page.last().map(|b| b.id);
            let full = page.len() == 1000;
            out.extend(page);
            match last {
                Some(id) if full => before = Some(id),
                _ => break,
            }
        }
        out.reverse();
        out
    }

    fn trace(&mut self, line: String) {
        let t = self.clock.now().since(self.start).as_secs();
        self.report.trace.push(format!("{:>6} t+{t}s {line}", self.report.trace.len()));
    }

    /// Runs the fault phase, then drains; `Err` names the first violated invariant and
    /// carries the trace up to it.
    pub async fn run(mut self) -> Result<SimReport, SimFailure> {
        match self.run_inner().await {
            Ok(()) => {
                self.report.simulated = self.clock.now().since(self.start);
                let succeeded = HostRunListParams { states: vec![HostRunState::Succeeded], ..Default::default() };
                self.report.succeeded_hosts = self.store.host_run_list(succeeded).await.map(|r| r.len()).unwrap_or(0);
                Ok(self.report)
            }
            Err(error) => Err(SimFailure { error, trace: self.report.trace }),
        }
    }

    async fn run_inner(&mut self) -> Result<(), String> {
        for _ in 0..self.cfg.steps {
            self.step(true).await?;
            self.check().await?;
        }
        self.stop_faults().await;
        for _ in 0..self.cfg.drain_steps {
            if self.all_settled().await {
                break;
            }
            self.drain_round().await?;
            self.check().await?;
        }
        self.final_check().await
    }

    async fn check(&mut self) -> Result<(), String> {
        let Some(mem) = &self.mem else { return Ok(()) };
        if !self.cfg.check {
            mem.take_transitions();
            return Ok(());
        }
        let now = self.clock.now();
        self.checker.after_step(mem, &self.engine, now).await
    }

    async fn step(&mut self, faults: bool) -> Result<(), String> {
        let roll = self.rng.below(1000);
        match roll {
            0..=119 => self.submit_random().await,
            120..=159 => self.resubmit().await,
            160..=184 => self.cancel_random().await,
            185..=209 => self.pause_random().await,
            210..=249 => self.resume_random().await,
            250..=599 => {
                let w = self.rng.below(self.workers.len() as u64) as usize;
                self.worker_tick(w).await?;
            }
            600..=679 => self.callbacks().await,
            680..=759 => {
                let i = self.rng.below(2) as usize;
                self.leader_tick(i).await;
            }
            760..=771 if faults => self.crash_or_restart().await,
            772..=779 if faults => self.stop_gracefully(),
            780..=789 if faults => self.stall().await,
            790..=799 => self.remap_pool().await,
            800..=809 if faults => {
                let failing = self.rng.chance(self.cfg.notify_failure);
                self.notifier.set_failing(failing);
                self.trace(format!("notifier failing={failing}"));
            }
            _ => {
                let d = Duration::from_millis(500 + self.rng.below(9_500));
                self.clock.advance(d);
                self.trace(format!("advance {} ms", d.as_millis()));
            }
        }
        Ok(())
    }

    async fn stop_faults(&mut self) {
        self.fleet
            .set_faults(FaultPlan { install_failure: 0.0, ..FaultPlan { ..self.cfg.faults } }.without_bmc_faults());
        self.notifier.set_failing(false);
        let _ =
            self.store.pool_kinds_set(&Pool::new("web").unwrap_or_else(|_| unreachable!()), &all_worker_kinds()).await;
        for i in 0..self.workers.len() {
            self.workers[i].stalled_until = None;
            if !self.workers[i].alive {
                self.restart(i);
            }
        }
        self.trace("faults stop".into());
    }

    async fn drain_round(&mut self) -> Result<(), String> {
        self.resume_paused().await;
        self.drain_round_by(Duration::from_secs(5)).await
    }

    async fn resume_paused(&mut self) {
        // An operator resumes what paused.
        let paused: Vec<BatchId> =
            self.batches().await.iter().filter(|b| b.state == BatchState::Paused).map(|b| b.id).collect();
        for id in paused {
            let b = self.store.batch_get(id).await.ok().flatten();
            let who = Principal::new(b.map(|b| b.submitter).unwrap_or_default(), []);
            let r = self.engine.resume_batch(&who, id).await;
            if r.is_ok() {
                self.checker.resumed(id);
            }
            self.trace(format!(
                "drain: resume {id}: {}",
                r.map(|b| b.state.to_string()).unwrap_or_else(|e| e.to_string())
            ));
        }
    }

    async fn drain_round_by(&mut self, step: Duration) -> Result<(), String> {
        for w in 0..self.workers.len() {
            self.worker_tick(w).await?;
        }
        self.callbacks().await;
        self.leader_tick(0).await;
        self.clock.advance(step);
        Ok(())
    }

    async fn all_settled(&self) -> bool {
        let batches = self.batches().await;
        let live: BTreeSet<BatchId> = batches.iter().filter(|b| !b.state.is_terminal()).map(|b| b.id).collect();
        live.is_empty()
            && self.workers.iter().all(|w| {
                let m = w.worker.machine();
                w.in_flight.is_empty() && m.running() == 0 && m.buffered() == 0
            })
    }

    fn random_request(&mut self) -> (Principal, BatchRequest) {
        let s = 1 + self.rng.below(self.cfg.sites as u64) as usize;
        let n = self.cfg.hosts_per_site as u64;
        let first = 1 + self.rng.below(n);
        let last = (first + self.rng.below(8)).min(n);
        let expr = format!("sim[{first:06}-{last:06}].dc{s}");
        let action = match self.rng.below(7) {
            0 => Action::Reboot { soft: false },
            1 => Action::Reboot { soft: true },
            2 => Action::PowerCycle,
            3 => Action::PowerOn,
            4 => Action::PowerOff { soft: self.rng.chance(0.5) },
            5 => Action::WipeDisks { method: WipeMethod::Quick },
            _ => Action::Reimage {
                os: OsRelease::new("ubuntu-24.04").unwrap_or_else(|_| unreachable!()),
                install_timeout_secs: Some(900),
            },
        };
        let mut req = BatchRequest::new(action, [expr]);
        req.priority = [PriorityClass::Low, PriorityClass::Normal, PriorityClass::High, PriorityClass::Urgent]
            [self.rng.below(4) as usize];
        req.rollout =
            RolloutPolicy { max_in_flight: 1 + self.rng.below(4) as u32, failure_budget: self.rng.below(3) as u32 };
        if self.rng.chance(0.3) {
            req.force = Some(maas_core::batch::ForceInUse { reason: "simulated maintenance".into() });
        }
        if self.rng.chance(0.5) {
            req.idempotency_key = Some(format!("key-{}", self.rng.below(1_000_000)));
        }
        let who = Principal::new(["alice", "bob", "carol"][self.rng.below(3) as usize], []);
        (who, req)
    }

    async fn submit(&mut self, who: Principal, req: BatchRequest, label: &str) -> Option<BatchId> {
        let r = self.engine.submit(&who, &req).await;
        let line = match &r {
            Ok(s) => {
                if s.created {
                    self.report.accepted += 1;
                }
                if let Some(key) = &req.idempotency_key {
                    self.keys.insert((who.name.clone(), key.clone()), s.batch.id);
                }
                self.accepted.insert(s.batch.id);
                format!("{label} {} by {}: accepted {} created={}", req.hosts[0], who.name, s.batch.id, s.created)
            }
            Err(e) => {
                self.report.rejected += 1;
                format!("{label} {} by {}: rejected: {}", req.hosts[0], who.name, first_line(&e.to_string()))
            }
        };
        self.requests.push((who, req));
        self.trace(line);
        r.ok().map(|s| s.batch.id)
    }

    async fn submit_random(&mut self) {
        let (who, req) = self.random_request();
        self.submit(who, req, "submit").await;
    }

    /// The live batch an idempotency key names, if any.
    async fn key_holder(&self, who: &Principal, req: &BatchRequest) -> Option<BatchId> {
        let key = req.idempotency_key.clone()?;
        let id = *self.keys.get(&(who.name.clone(), key))?;
        self.store.batch_get(id).await.ok().flatten().map(|b| b.id)
    }

    async fn resubmit(&mut self) {
        let keyed: Vec<usize> =
            (0..self.requests.len()).filter(|i| self.requests[*i].1.idempotency_key.is_some()).collect();
        if keyed.is_empty() {
            return self.submit_random().await;
        }
        let (who, mut req) = self.requests[keyed[self.rng.below(keyed.len() as u64) as usize]].clone();
        let label = if self.rng.chance(0.3) {
            // Same key, another spec: must be refused, never merged.
            req.rollout.max_in_flight += 1;
            "resubmit-changed"
        } else {
            "resubmit"
        };
        // The key's live batch, and whether this request describes the same batch.
        let holder = self.key_holder(&who, &req).await;
        let same = match holder {
            Some(id) => self.store.batch_get(id).await.ok().flatten().is_some_and(|b| same_spec(&req, &b.spec)),
            None => false,
        };
        let got = self.submit(who, req.clone(), label).await;
        match (holder, got) {
            (Some(held), Some(got)) if !same => self
                .checker
                .note(format!("key {:?} of batch {held} accepted a changed spec as {got}", req.idempotency_key)),
            (Some(held), Some(got)) if got != held => {
                self.checker.note(format!("key {:?} of batch {held} made a second batch {got}", req.idempotency_key))
            }
            (Some(held), None) if same => {
                self.checker.note(format!("key {:?} of batch {held}: the same spec was refused", req.idempotency_key))
            }
            _ => {}
        }
    }

    async fn pick_live_batch(&mut self) -> Option<BatchRecord> {
        let live: Vec<BatchRecord> = self.batches().await.into_iter().filter(|b| !b.state.is_terminal()).collect();
        if live.is_empty() {
            return None;
        }
        Some(live[self.rng.below(live.len() as u64) as usize].clone())
    }

    async fn cancel_random(&mut self) {
        let Some(b) = self.pick_live_batch().await else { return };
        let r = self.engine.cancel_batch(&Principal::new(b.submitter.clone(), []), b.id, "simulated cancel").await;
        self.trace(format!("cancel {}: {}", b.id, outcome(r.map(|b| b.state))));
    }

    async fn pause_random(&mut self) {
        let Some(b) = self.pick_live_batch().await else { return };
        let r = self.engine.pause_batch(&Principal::new(b.submitter.clone(), []), b.id, "simulated pause").await;
        self.trace(format!("pause {}: {}", b.id, outcome(r.map(|b| b.state))));
    }

    async fn resume_random(&mut self) {
        let Some(b) = self.pick_live_batch().await else { return };
        let r = self.engine.resume_batch(&Principal::new(b.submitter.clone(), []), b.id).await;
        if r.is_ok() {
            self.checker.resumed(b.id);
        }
        self.trace(format!("resume {}: {}", b.id, outcome(r.map(|b| b.state))));
    }

    /// One turn of worker `w`: the steps whose simulated time is up finish, then every
    /// action its policy (maas-core's `WorkerMachine`, unless a test swapped it) has due is
    /// carried out by maas-engine's `Worker::perform`, as in production; the checker sees
    /// every claim, heartbeat, flush, hand-back and stop.
    async fn worker_tick(&mut self, w: usize) -> Result<(), String> {
        let now = self.clock.now();
        if !self.workers[w].alive || self.workers[w].stalled_until.is_some_and(|t| now < t) {
            return Ok(());
        }
        self.workers[w].stalled_until = None;
        let sw = &mut self.workers[w];
        let (mut done, still): (Vec<_>, Vec<_>) = sw.in_flight.drain(..).partition(|(_, at, _)| *at <= now);
        sw.in_flight = still;
        // Each step finished at its own time, as the runtime would have seen it.
        done.sort_by_key(|(job, at, _)| (*at, job.id));
        for (job, at, outcome) in done {
            sw.worker.machine_mut().handle_step_finished(job.id, outcome, at);
        }
        let id = sw.worker.id().to_string();
        let mut did = Vec::new();
        // Bounded: a policy that never runs out of due actions is a failure, not a hang.
        for _ in 0..32 {
            let Some(action) = (self.worker_policy)(self.workers[w].worker.machine_mut(), now) else {
                return self.worker_turn_done(w, did);
            };
            let claim = match &action {
                WorkerAction::Claim(p) => Some((p.limit, self.claim_candidates(w, &p.kinds, now))),
                _ => None,
            };
            let flushing: Vec<JobId> = match &action {
                WorkerAction::Flush(p) => p.completions.iter().map(|c| c.job_id).collect(),
                _ => Vec::new(),
            };
            did.push(action.name());
            let performed = self.workers[w].worker.perform(action, now).await.map_err(|e| e.to_string())?;
            match performed {
                Performed::Noted => {}
                Performed::Claimed(jobs) => {
                    if let Some((limit, Some(before))) = claim {
                        let records: Vec<JobRecord> = jobs.iter().map(|(j, _)| j.clone()).collect();
                        self.checker.claimed(&id, &records, before, limit, now, LEASE)?;
                    }
                    for (job, host) in jobs {
                        let outcome = self.engine.run_step_on(&job, host).await;
                        let takes = Duration::from_millis(self.rng.below(15_000));
                        self.workers[w].in_flight.push((job, now.plus(takes), outcome));
                    }
                }
                Performed::Extended(held) => self.checker.extended(&id, &held, now.plus(LEASE)),
                Performed::Flushed(r) => {
                    self.report.completed += r.applied;
                    self.checker.flushed(&id, &flushing, &r.stale)?;
                }
                Performed::HandedBack(released) => {
                    self.workers[w].in_flight.clear();
                    self.checker.handed_back(&id, &released);
                }
                Performed::Stopped => {
                    self.workers[w].alive = false;
                    self.workers[w].in_flight.clear();
                    if let Some(mem) = &self.mem {
                        Checker::stopped_gracefully(mem, &id)?;
                    }
                    self.trace(format!("worker {id} stopped gracefully"));
                    return self.worker_turn_done(w, did);
                }
            }
        }
        Err(format!("worker {id}'s policy still had actions due after 32 in one turn: {did:?}"))
    }

    fn worker_turn_done(&mut self, w: usize, did: Vec<&'static str>) -> Result<(), String> {
        self.schedule_installs();
        let sw = &self.workers[w];
        let m = sw.worker.machine();
        let line = format!("worker {}: {} running {} buffered {}", m.id(), did.join(","), m.running(), m.buffered());
        self.trace(line);
        Ok(())
    }

    /// Available jobs worker `w` could take now, in claim order (when checking).
    fn claim_candidates(&self, w: usize, kinds: &[StepKind], now: Timestamp) -> Option<Vec<(i64, JobId)>> {
        let mem = self.mem.as_ref().filter(|_| self.cfg.check)?;
        Some(self.checker.claim_candidates(mem, &site(self.workers[w].site), kinds, now))
    }

    /// Asks a live worker to shut down gracefully: it stops claiming, lets its steps
    /// finish for its grace, hands the rest back, flushes, and stops.
    fn stop_gracefully(&mut self) {
        let w = self.rng.below(self.workers.len() as u64) as usize;
        if !self.workers[w].alive {
            return;
        }
        let now = self.clock.now();
        let sw = &mut self.workers[w];
        sw.worker.machine_mut().handle_shutdown(now);
        let id = sw.worker.id().to_string();
        self.trace(format!("worker {id} is asked to shut down"));
    }

    fn schedule_installs(&mut self) {
        for (host, _, token) in self.provisioner.take_prepared() {
            let plan = self.fleet.plan_install();
            let (takes, succeeds) = self.install_overrides.get(&host).copied().unwrap_or((plan.takes, plan.succeeds));
            self.install_seq += 1;
            let at = self.clock.now().plus(takes);
            self.installs.insert((at, self.install_seq), (token, succeeds, 0));
        }
    }

    async fn callbacks(&mut self) {
        let now = self.clock.now();
        let due: Vec<(Timestamp, u64)> =
            self.installs.range(..(now.plus(Duration::from_millis(1)), 0)).map(|(k, _)| *k).collect();
        for k in due {
            let Some((token, ok, tries)) = self.installs.remove(&k) else { continue };
            let outcome = if ok {
                JobOutcome::Succeeded
            } else {
                JobOutcome::Failed { error: "installer: no bootable disk".into(), retryable: false }
            };
            let r = self.engine.report_wait_result(&token, outcome).await;
            if r.is_err() && tries < 5 {
                // Installers retry their callback (e.g. it raced the power-cycle report).
                self.install_seq += 1;
                self.installs.insert((now.plus(Duration::from_secs(30)), self.install_seq), (token, ok, tries + 1));
            }
            self.trace(format!("callback ok={ok} try {tries}: {}", outcome_of(r.map(|j| j.state))));
        }
    }

    async fn leader_tick(&mut self, i: usize) {
        let now = self.clock.now();
        let r = self.singletons[i].tick(now).await;
        if !r.ran.is_empty() {
            let line = format!(
                "leader {i}: ran {:?} retried {} failed {} waits {} stragglers {} delivered {} tickets {} purged {} reclaim {:?} errors {}",
                r.ran,
                r.rescued.retried.len(),
                r.rescued.failed.len(),
                r.rescued.wait_expired.len(),
                r.stragglers,
                r.delivered,
                r.tickets,
                r.purged.batches,
                r.reclaimed,
                r.errors.len()
            );
            if let Some(b) = r.reclaimed {
                self.accepted.insert(b);
            }
            self.trace(line);
        }
    }

    async fn crash_or_restart(&mut self) {
        let w = self.rng.below(self.workers.len() as u64) as usize;
        if self.workers[w].alive {
            let sw = &mut self.workers[w];
            sw.alive = false;
            sw.in_flight.clear();
            let id = sw.worker.id().to_string();
            self.report.crashes += 1;
            self.trace(format!("worker {id} crashes with its jobs and unflushed completions"));
        } else {
            self.restart(w);
        }
    }

    fn restart(&mut self, w: usize) {
        let (s, slot, generation) = (self.workers[w].site, self.workers[w].slot, self.workers[w].generation + 1);
        let worker = self.new_worker(s, slot, generation);
        let id = worker.id().to_string();
        self.workers[w] =
            SimWorker { worker, site: s, slot, generation, alive: true, stalled_until: None, in_flight: Vec::new() };
        self.trace(format!("worker {id} starts (supervisor restart)"));
    }

    async fn stall(&mut self) {
        let w = self.rng.below(self.workers.len() as u64) as usize;
        let until = self.clock.now().plus(LEASE * 2);
        self.workers[w].stalled_until = Some(until);
        let id = self.workers[w].worker.id().to_string();
        self.trace(format!("worker {id} stalls past its leases"));
    }

    async fn remap_pool(&mut self) {
        let pool = Pool::new("web").unwrap_or_else(|_| unreachable!());
        let kinds = if self.rng.chance(0.5) {
            all_worker_kinds()
        } else {
            all_worker_kinds().into_iter().filter(|_| self.rng.chance(0.6)).collect()
        };
        let _ = self.store.pool_kinds_set(&pool, &kinds).await;
        self.trace(format!("pool web now takes {}", kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")));
    }

    async fn final_check(&mut self) -> Result<(), String> {
        // Let the leaders run (both instances; a dead leader's row expires after its TTL)
        // until a whole window adds no event: late work such as a reclaim batch drains too.
        for _ in 0..20 {
            let before = self.checker.all_events.len();
            for _ in 0..20 {
                self.leader_tick(0).await;
                self.leader_tick(1).await;
                self.clock.advance(Duration::from_secs(5));
            }
            self.check().await?;
            for _ in 0..self.cfg.drain_steps {
                if self.all_settled().await {
                    break;
                }
                self.drain_round().await?;
                self.check().await?;
            }
            if self.checker.all_events.len() == before {
                break;
            }
        }
        let batches: HashMap<BatchId, BatchRecord> = self.batches().await.into_iter().map(|b| (b.id, b)).collect();
        for id in &self.accepted {
            match batches.get(id) {
                Some(b) if !b.state.is_terminal() => {
                    return Err(format!("batch {id} is still {} after faults stopped and the run drained", b.state));
                }
                Some(_) => {}
                None if self.checker.terminal_seen.contains(id) => {}
                None => return Err(format!("batch {id} vanished before it finished")),
            }
        }
        // Every event reached the notifier, at least once, in order.
        let delivered = self.notifier.delivered();
        let mut seen = BTreeSet::new();
        let mut last_seq = 0;
        for e in &delivered {
            if seen.insert(e.seq) {
                if e.seq < last_seq {
                    return Err(format!("notifier got event {} after {}", e.seq, last_seq));
                }
                last_seq = e.seq;
            }
        }
        let all = self.checker.all_events.clone();
        let missing: Vec<u64> = all.iter().filter(|s| !seen.contains(s)).copied().collect();
        if !missing.is_empty() {
            return Err(format!("events never delivered to the notifier: {missing:?}"));
        }
        if let Some(n) = self.checker.notes.first() {
            return Err(n.clone());
        }
        Ok(())
    }
}

impl FaultPlan {
    /// This plan without BMC command faults (installs keep their timing).
    pub fn without_bmc_faults(self) -> Self {
        FaultPlan { timeout: 0.0, busy: 0.0, wrong_state: 0.0, ..self }
    }
}

/// Whether `req` asks for exactly the batch `spec` describes (what the fingerprint covers).
fn same_spec(req: &BatchRequest, spec: &maas_core::batch::BatchSpec) -> bool {
    let (mut hosts, problems) = maas_core::validate::expand_hosts(req, &maas_core::batch::Limits::default());
    let mut theirs = spec.hosts.clone();
    hosts.sort();
    theirs.sort();
    problems.is_empty()
        && hosts == theirs
        && req.action == spec.action
        && req.priority == spec.priority
        && req.rollout == spec.rollout
        && req.not_before == spec.not_before
        && req.force == spec.force
}

fn all_worker_kinds() -> Vec<StepKind> {
    StepKind::ALL.iter().copied().filter(|k| !k.is_wait()).collect()
}

fn first_line(s: &str) -> String {
    let mut lines = s.lines();
    let first = lines.next().unwrap_or_default().to_string();
    match lines.next() {
        Some(second) => format!("{first} {}", second.trim()),
        None => first,
    }
}

fn outcome(r: Result<BatchState, EngineError>) -> String {
    r.map(|s| s.to_string()).unwrap_or_else(|e| format!("refused: {e}"))
}

fn outcome_of(r: Result<JobState, EngineError>) -> String {
    r.map(|s| format!("job {s}")).unwrap_or_else(|e| format!("refused: {e}"))
}

/// The invariant checker. It reads the store after every step and keeps what it needs to
/// judge the next one.
#[derive(Debug, Default)]
pub struct Checker {
    /// Per job: the worker holding it, its attempt and when its lease ends.
    holders: HashMap<JobId, (String, u32, Timestamp)>,
    /// Jobs each worker handed back on shutdown.
    handed_back: BTreeSet<(String, JobId)>,
    /// Events checked so far.
    events_after: u64,
    all_events: Vec<u64>,
    /// Per batch, what its events said so far.
    batch_events: HashMap<BatchId, BatchEventState>,
    /// Batches seen terminal.
    terminal_seen: BTreeSet<BatchId>,
    /// Failed counts at the last check, and batches resumed since.
    failed_seen: HashMap<BatchId, u32>,
    resumed: BTreeSet<BatchId>,
    notes: Vec<String>,
}

#[derive(Debug, Default)]
struct BatchEventState {
    paused: bool,
    cancelling: bool,
    finished: bool,
    started: BTreeSet<Hostname>,
    ended: BTreeSet<Hostname>,
}

impl Checker {
    fn note(&mut self, s: String) {
        self.notes.push(s);
    }

    fn resumed(&mut self, id: BatchId) {
        self.resumed.insert(id);
    }

    fn extended(&mut self, owner: &str, held: &[JobId], until: Timestamp) {
        for id in held {
            if let Some(h) = self.holders.get_mut(id).filter(|h| h.0 == owner) {
                h.2 = until;
            }
        }
    }

    /// The worker's completions of `jobs` are in the store (applied, or refused as stale):
    /// it no longer runs them. None of them may be a job it handed back: a step whose
    /// outcome was buffered must be flushed, never released to run again.
    fn flushed(&mut self, owner: &str, jobs: &[JobId], stale: &[(JobId, TransitionError)]) -> Result<(), String> {
        for id in jobs {
            if self.holders.get(id).is_some_and(|h| h.0 == owner) {
                self.holders.remove(id);
            }
        }
        for (id, why) in stale {
            if self.handed_back.contains(&(owner.to_string(), *id)) {
                return Err(format!(
                    "worker {owner} handed back job {id} although its step had finished (outcome refused: {why}): \
                     the step runs twice"
                ));
            }
        }
        Ok(())
    }

    /// The worker released `jobs` on shutdown.
    fn handed_back(&mut self, owner: &str, jobs: &[JobId]) {
        for id in jobs {
            self.handed_back.insert((owner.to_string(), *id));
            if self.holders.get(id).is_some_and(|h| h.0 == owner) {
                self.holders.remove(id);
            }
        }
    }

    /// A worker that stopped gracefully holds no lease any more: every job it ran was
    /// flushed or handed back, none is left for the rescuer.
    fn stopped_gracefully(store: &MemStore, owner: &str) -> Result<(), String> {
        let left: Vec<JobId> = store
            .jobs_snapshot()
            .into_iter()
            .filter(|j| j.state == JobState::Running && j.lease_owner.as_deref() == Some(owner))
            .map(|j| j.id)
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("worker {owner} stopped gracefully but still holds the leases of {left:?}"))
        }
    }

    /// Available jobs of `site` and `kinds` a worker could take now, in claim order.
    fn claim_candidates(&self, store: &MemStore, site: &Site, kinds: &[StepKind], now: Timestamp) -> Vec<(i64, JobId)> {
        let mut c: Vec<(i64, JobId)> = store
            .jobs_snapshot()
            .into_iter()
            .filter(|j| j.state == JobState::Available && &j.site == site && kinds.contains(&j.kind) && j.run_at <= now)
            .map(|j| (j.key, j.id))
            .collect();
        c.sort_unstable();
        c
    }

    /// Claim order (the priority-aging rule) and exclusivity.
    fn claimed(
        &mut self,
        owner: &str,
        jobs: &[JobRecord],
        candidates: Vec<(i64, JobId)>,
        limit: usize,
        now: Timestamp,
        lease: Duration,
    ) -> Result<(), String> {
        let expected: Vec<JobId> = candidates.iter().take(limit).map(|(_, id)| *id).collect();
        let got: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut expected_sorted = expected.clone();
        expected_sorted.sort();
        if got_sorted != expected_sorted {
            return Err(format!(
                "worker {owner} claimed {got:?}, but queue-key order says {expected:?}: the priority-aging bound needs smallest keys first"
            ));
        }
        for j in jobs {
            if let Some((holder, attempt, until)) = self.holders.get(&j.id)
                && holder != owner
                && now < *until
            {
                return Err(format!(
                    "job {} claimed by {owner} while {holder} (attempt {attempt}) held a lease until {until}",
                    j.id
                ));
            }
            if let Some((_, attempt, _)) = self.holders.get(&j.id)
                && j.attempt <= *attempt
            {
                return Err(format!("job {} re-claimed without a new attempt ({} after {attempt})", j.id, j.attempt));
            }
            self.holders.insert(j.id, (owner.to_string(), j.attempt, now.plus(lease)));
        }
        Ok(())
    }

    async fn after_step(&mut self, store: &MemStore, engine: &Engine, now: Timestamp) -> Result<(), String> {
        // 1. Every transition legal.
        for t in store.take_transitions() {
            let ok = match t {
                Transition::Job { from: Some(f), to, .. } => f.can_become(to),
                Transition::Job { from: None, to, .. } => {
                    matches!(to, JobState::Blocked | JobState::Available | JobState::Waiting)
                }
                Transition::HostRun { from: Some(f), to, .. } => f.can_become(to),
                Transition::HostRun { from: None, to, .. } => {
                    matches!(to, HostRunState::Queued | HostRunState::Running)
                }
                Transition::Batch { from: Some(f), to, .. } => f.can_become(to),
                Transition::Batch { from: None, to, .. } => to == BatchState::Running,
            };
            if !ok {
                return Err(format!("illegal transition written: {t:?}"));
            }
        }
        // 2. No host in two active batches; claims match unfinished host runs.
        let runs = store.host_runs_snapshot();
        let mut active: HashMap<&Hostname, BatchId> = HashMap::new();
        for r in runs.iter().filter(|r| !r.state.is_terminal()) {
            if let Some(other) = active.insert(&r.hostname, r.batch_id) {
                return Err(format!("{} is in two active batches: {other} and {}", r.hostname, r.batch_id));
            }
        }
        let claims = store.claims_snapshot();
        if claims.len() != active.len() {
            return Err(format!("{} claims for {} unfinished host runs", claims.len(), active.len()));
        }
        for c in &claims {
            if active.get(&c.hostname) != Some(&c.batch_id) {
                return Err(format!("claim on {} by {} has no unfinished host run", c.hostname, c.batch_id));
            }
        }
        // 3. Counts, max-in-flight and failure budgets.
        let mut tally: HashMap<BatchId, HostRunCounts> = HashMap::new();
        for r in &runs {
            let c = tally.entry(r.batch_id).or_default();
            match r.state {
                HostRunState::Queued => c.queued += 1,
                HostRunState::Running => c.running += 1,
                HostRunState::Succeeded => c.succeeded += 1,
                HostRunState::Failed => c.failed += 1,
                HostRunState::Cancelled => c.cancelled += 1,
            }
        }
        for b in store.batches_snapshot() {
            let counted = tally.get(&b.id).copied().unwrap_or_default();
            if counted != b.counts {
                return Err(format!("batch {} counts {:?} but its host runs say {counted:?}", b.id, b.counts));
            }
            if b.counts.running > b.spec.rollout.max_in_flight {
                return Err(format!(
                    "batch {} runs {} hosts, over max_in_flight {}",
                    b.id, b.counts.running, b.spec.rollout.max_in_flight
                ));
            }
            let before = self.failed_seen.insert(b.id, b.counts.failed).unwrap_or(0);
            if b.counts.failed > before {
                self.resumed.remove(&b.id);
            }
            if b.state == BatchState::Running
                && b.counts.failed > b.spec.rollout.failure_budget
                && !self.resumed.contains(&b.id)
            {
                return Err(format!(
                    "batch {} is running with {} failures, over its budget of {}",
                    b.id, b.counts.failed, b.spec.rollout.failure_budget
                ));
            }
            if b.state.is_terminal() {
                self.terminal_seen.insert(b.id);
            }
        }
        // 4. Outbox: ordered, complete per batch, nothing after the end, no start while paused.
        loop {
            let events = engine
                .store()
                .event_list(EventListParams { after: self.events_after, batch_id: None, limit: 1000 })
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = events.last().map(|e| e.seq) else { break };
            for e in events {
                if e.seq <= self.events_after {
                    return Err(format!("event seq {} not above {}", e.seq, self.events_after));
                }
                self.events_after = e.seq;
                self.all_events.push(e.seq);
                self.check_event(&e)?;
            }
            self.events_after = last;
        }
        let _ = now;
        Ok(())
    }

    fn check_event(&mut self, e: &Event) -> Result<(), String> {
        let first = !self.batch_events.contains_key(&e.batch_id);
        let st = self.batch_events.entry(e.batch_id).or_default();
        if first && !matches!(e.kind, EventKind::BatchAccepted { .. }) {
            return Err(format!("batch {}'s first event is {:?}, not batch_accepted", e.batch_id, e.kind));
        }
        if st.finished {
            return Err(format!("event {:?} after batch {} finished", e.kind, e.batch_id));
        }
        match &e.kind {
            EventKind::HostStarted { host } => {
                if st.paused || st.cancelling {
                    return Err(format!("{host} started while batch {} was paused or cancelling", e.batch_id));
                }
                if !st.started.insert(host.clone()) {
                    return Err(format!("{host} started twice in batch {}", e.batch_id));
                }
            }
            EventKind::HostSucceeded { host } | EventKind::HostFailed { host, .. } => {
                if !st.started.contains(host) {
                    return Err(format!("{host} ended in batch {} without starting", e.batch_id));
                }
                if !st.ended.insert(host.clone()) {
                    return Err(format!("{host} ended twice in batch {}", e.batch_id));
                }
            }
            EventKind::HostCancelled { host } => {
                if !st.ended.insert(host.clone()) {
                    return Err(format!("{host} ended twice in batch {}", e.batch_id));
                }
            }
            EventKind::BatchPaused { .. } => st.paused = true,
            EventKind::BatchResumed { .. } => st.paused = false,
            EventKind::CancelRequested { .. } => st.cancelling = true,
            EventKind::BatchCompleted { summary } | EventKind::BatchCancelled { summary } => {
                st.finished = true;
                if summary.total as usize != st.ended.len() {
                    return Err(format!(
                        "batch {} finished with {} hosts but {} host end events",
                        e.batch_id,
                        summary.total,
                        st.ended.len()
                    ));
                }
            }
            EventKind::BatchAccepted { .. } | EventKind::StragglerFlagged { .. } => {}
            other => return Err(format!("the checker does not know event {other:?}: teach it")),
        }
        Ok(())
    }
}

/// Runs one seed on [`SimConfig::small`]; the error names the violated invariant.
pub async fn run_seed(seed: u64) -> Result<SimReport, SimFailure> {
    Simulation::new(SimConfig::small(seed)).await.run().await
}

/// A large, fault-free reimage wave (for the benchmark): `hosts` hosts in `sites` sites,
/// `workers_per_site` workers each, one batch per site with `max_in_flight` hosts at once.
/// Returns the simulated time and how many jobs completed.
pub async fn reimage_wave(hosts: usize, sites: usize, workers_per_site: usize) -> Result<SimReport, SimFailure> {
    let per_site = hosts / sites.max(1);
    let cfg = SimConfig {
        seed: 1,
        sites,
        hosts_per_site: per_site,
        workers_per_site,
        steps: 0,
        drain_steps: 1_000_000,
        faults: FaultPlan {
            install_min: Duration::from_secs(300),
            install_max: Duration::from_secs(900),
            ..FaultPlan::none()
        },
        crash: 0.0,
        stall: 0.0,
        notify_failure: 0.0,
        check: false,
        worker_capacity: 256,
        defunct_every: 0,
        allocated_every: 0,
        retention: Duration::from_secs(30 * 24 * 3600),
        shutdown_grace: Duration::from_secs(10),
    };
    let mut sim = Simulation::new(cfg).await;
    // Batches of at most 5,000 hosts (the default limit is 10,000 per batch).
    const CHUNK: usize = 5_000;
    for s in 1..=sites {
        for first in (1..=per_site).step_by(CHUNK) {
            let last = (first + CHUNK - 1).min(per_site);
            let mut req = BatchRequest::new(
                Action::Reimage {
                    os: OsRelease::new("ubuntu-24.04").unwrap_or_else(|_| unreachable!()),
                    install_timeout_secs: None,
                },
                [format!("sim[{first:06}-{last:06}].dc{s}")],
            );
            req.rollout = RolloutPolicy { max_in_flight: CHUNK as u32, failure_budget: CHUNK as u32 };
            if sim.submit_as("wave", req).await.is_err() {
                return Err(SimFailure {
                    error: format!("wave batch {first}-{last} in dc{s} rejected"),
                    trace: sim.report.trace,
                });
            }
        }
    }
    sim.run().await
}
