//! The deterministic simulator: the whole engine — facade, workers, singletons on two
//! instances — on a [`ManualClock`], the [`MemStore`] and the [`SimFleet`], driven by one
//! seed. Each step is one seeded move (a submission, a duplicate with an idempotency key,
//! one keyed request sent four times at once, a cancel, a pause, a resume, a worker claiming or flushing, a worker crash, restart or
//! stall, a pool remapping, an installer callback, a leader tick, or time passing); after
//! every step [`Checker`] asserts the invariants. Then faults stop and the run drains:
//! every accepted batch must reach a terminal state.
//!
//! Everything is single-threaded and every source of choice is the seed, so a run is a
//! pure function of its [`SimConfig`]: the same seed yields the same trace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use maas_core::action::Action;
use maas_core::authz::Principal;
use maas_core::batch::{BatchRequest, RolloutPolicy};
use maas_core::host::HostState;
use maas_core::id::{BatchId, IdGenerator};
use maas_core::machine::{JobOutcome, Rules};
use maas_core::model::*;
use maas_core::names::{Hostname, OsRelease, Pool};
use maas_core::plan::StepKind;
use maas_core::policy::{WorkerAction, WorkerMachine};
use maas_core::ports::store::*;
use maas_core::priority::PriorityClass;
use maas_core::rng::SimRng;
use maas_core::time::{Clock, ManualClock, Timestamp};
use maas_engine::{Engine, EngineConfig, EngineError, ReclaimPolicy, Singletons, Worker, WorkerConfig};

use crate::memstore::MemStore;
use crate::simfleet::{FaultPlan, SimFleet};

mod checker;
mod config;
mod fakes;
mod moves;

use checker::Checker;
pub use config::{SimBackend, SimConfig, SimError, SimFailure, SimReport};
use fakes::site;
pub use fakes::{RecordingNotifier, SimProvisioner, fleet_hosts, sim_iso_url};

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

/// An installer (or a first-booting OS) that will call back.
struct PendingCallback {
    token: String,
    ok: bool,
    tries: u32,
    /// The first-boot token the installed OS reports with after a successful install.
    then: Option<String>,
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
    installs: BTreeMap<(Timestamp, u64), PendingCallback>,
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
                give_up_after: 3,
            }),
            stragglers: maas_engine::StragglerPolicy { factor: 3.0, min_peers: 3, ticket: true },
            ..EngineConfig::default()
        };
        let engine = Engine::builder(
            store.clone(),
            Arc::new(YieldingInventory(store.clone())),
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
        // A worker asked to shut down during the fault phase may finish stopping only now:
        // its supervisor starts a replacement, as after a rolling restart.
        for i in 0..self.workers.len() {
            if !self.workers[i].alive {
                self.restart(i);
            }
        }
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

/// The simulated store as the engine's inventory, yielding once before each host lookup as
/// a database round trip would: the calls of one `submit_at_once` move interleave between
/// their idempotency-key lookup and their write, so they race each other for real.
struct YieldingInventory(Arc<dyn SimBackend>);

#[async_trait::async_trait]
impl maas_core::ports::inventory::Inventory for YieldingInventory {
    async fn host_get_many(&self, names: &[Hostname]) -> Result<Vec<maas_core::host::Host>, StoreError> {
        tokio::task::yield_now().await;
        self.0.host_get_many(names).await
    }
    async fn host_list(
        &self,
        filter: maas_core::ports::inventory::HostFilter,
    ) -> Result<Vec<maas_core::host::Host>, StoreError> {
        self.0.host_list(filter).await
    }
    async fn host_upsert_many(&self, hosts: Vec<maas_core::host::Host>) -> Result<usize, StoreError> {
        self.0.host_upsert_many(hosts).await
    }
    async fn host_set_state(&self, name: &Hostname, change: maas_core::host::StateChange) -> Result<(), StoreError> {
        self.0.host_set_state(name, change).await
    }
}
