//! A worker: the executor around one maas-core [`WorkerMachine`]. The machine decides what
//! to do next (claim, heartbeat, flush, hand back); [`Worker::perform`] carries each store
//! action out and reports the result back; [`Worker::run`] runs the claimed steps
//! concurrently through the drivers and sleeps until the machine's next timeout, a step
//! finishing or a shutdown request.
//!
//! maas-sim drives the same machine and the same [`Worker::perform`], with its own notion
//! of how long a step takes, so the simulator exercises the production policy.

use std::collections::HashMap;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};

use crate::Engine;
use crate::steps::StepFailure;
use maas_core::config::WorkerConfig;
use maas_core::host::Host;
use maas_core::id::JobId;
use maas_core::machine::{JobOutcome, TransitionError};
use maas_core::model::JobRecord;
use maas_core::names::{Hostname, Pool, Site};
use maas_core::policy::{WorkerAction, WorkerMachine};
use maas_core::ports::store::*;
use maas_core::time::Timestamp;

/// What a flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Completions applied.
    pub applied: usize,
    /// Completions refused because the attempt no longer held the job (its lease expired
    /// and it was rescued): the worker's result is discarded, by design.
    pub stale: Vec<(JobId, TransitionError)>,
}

/// What carrying out one [`WorkerAction`] produced, for the driver to act on.
#[derive(Debug)]
pub enum Performed {
    /// A bookkeeping action (registry heartbeat, kinds read).
    Noted,
    /// Jobs leased, each with its host as the inventory has it now (`None`: the host left
    /// the inventory); the driver starts running them.
    Claimed(Vec<(JobRecord, Option<Host>)>),
    /// Jobs leased whose hosts were not looked up (the lookup failed, or they were adopted
    /// after a claim's answer was lost): each step looks its own up (and fails its attempt
    /// retryably if it cannot).
    ClaimedHostsUnknown(Vec<JobRecord>),
    /// Leases extended; the jobs still held.
    Extended(Vec<JobId>),
    /// Buffered outcomes recorded.
    Flushed(FlushReport),
    /// Jobs released (shutdown); the driver abandons their steps.
    HandedBack(Vec<JobId>),
    /// The worker is done.
    Stopped,
}

/// One worker of a pool, in one site.
pub struct Worker {
    engine: Engine,
    machine: WorkerMachine,
    /// Its configuration, shared with the steps it runs (their store reads' backoff).
    config: std::sync::Arc<WorkerConfig>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("machine", &self.machine).finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker named `id` (unique across the deployment) for `site` and `pool`.
    pub fn new(engine: Engine, id: impl Into<String>, site: Site, pool: Pool, cfg: WorkerConfig) -> Self {
        let lease = engine.inner.config.lease;
        let config = std::sync::Arc::new(cfg.clone());
        Worker { engine, machine: WorkerMachine::new(id, site, pool, cfg, lease), config }
    }

    /// Its id (the lease owner on its jobs).
    pub fn id(&self) -> &str {
        self.machine.id()
    }

    /// Its policy state.
    pub fn machine(&self) -> &WorkerMachine {
        &self.machine
    }

    /// Its policy state, to feed events (steps finished, shutdown) and poll actions.
    pub fn machine_mut(&mut self) -> &mut WorkerMachine {
        &mut self.machine
    }

    /// Carries out `action` (from this worker's machine) against the store and reports the
    /// result to the machine. On a store error the machine is left as it was, so the same
    /// action comes back on the next poll.
    pub async fn perform(&mut self, action: WorkerAction, now: Timestamp) -> Result<Performed, StoreError> {
        let inner = &self.engine.inner;
        let store = &inner.store;
        match action {
            WorkerAction::Register(p) => {
                store.worker_heartbeat(p).await?;
                self.machine.handle_registered(now);
                Ok(Performed::Noted)
            }
            WorkerAction::ReadKinds(pool) => {
                let kinds = store.pool_kinds_get(&pool).await?;
                self.machine.handle_kinds(kinds, now);
                Ok(Performed::Noted)
            }
            WorkerAction::Claim(p) => {
                let limit = p.limit;
                let jobs = store.job_claim(p).await?;
                inner.counters.claimed(jobs.len());
                self.machine.handle_claimed(limit, &jobs, now);
                // One inventory read for the whole claim, not one per job. The jobs are
                // leased either way: they must run (or fail) rather than wait for their
                // leases to expire.
                let Ok(mut hosts) = self.hosts_of(&jobs).await else {
                    return Ok(Performed::ClaimedHostsUnknown(jobs));
                };
                let with_hosts = jobs.into_iter().map(|j| {
                    let host = hosts.remove(&j.hostname);
                    (j, host)
                });
                Ok(Performed::Claimed(with_hosts.collect()))
            }
            WorkerAction::Extend(p) => {
                let held = store.job_heartbeat_many(p).await?;
                self.machine.handle_extended(&held, now);
                Ok(Performed::Extended(held))
            }
            WorkerAction::Flush(p) => {
                let ids: Vec<JobId> = p.completions.iter().map(|c| c.job_id).collect();
                let results = store.job_complete_many(p).await?;
                self.machine.handle_flushed();
                self.engine.changed();
                let mut report = FlushReport::default();
                for (id, r) in ids.into_iter().zip(results) {
                    match r {
                        Ok(()) => report.applied += 1,
                        Err(e) => report.stale.push((id, e)),
                    }
                }
                inner.counters.completed(report.applied, report.stale.len());
                Ok(Performed::Flushed(report))
            }
            WorkerAction::HandBack(p) => {
                let released = store.job_release_many(p).await?;
                self.machine.handle_handed_back(&released);
                self.engine.changed();
                Ok(Performed::HandedBack(released))
            }
            WorkerAction::Adopt(p) => {
                let leased = store.job_list(p).await?;
                let adopted: std::collections::HashSet<JobId> =
                    self.machine.handle_adopted(leased.iter().map(|j| (j.id, j.attempt)), now).into_iter().collect();
                let jobs: Vec<JobRecord> = leased.into_iter().filter(|j| adopted.contains(&j.id)).collect();
                // They run as claimed ones do; their hosts are looked up by each step.
                Ok(Performed::ClaimedHostsUnknown(jobs))
            }
            WorkerAction::Stop => Ok(Performed::Stopped),
        }
    }

    /// The inventory records of the claimed jobs' hosts, in one call.
    async fn hosts_of(&self, jobs: &[JobRecord]) -> Result<HashMap<Hostname, Host>, StoreError> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        let names: Vec<Hostname> = jobs.iter().map(|j| j.hostname.clone()).collect();
        let hosts = self.engine.inner.inventory.host_get_many(&names).await?;
        Ok(hosts.into_iter().map(|h| (h.hostname.clone(), h)).collect())
    }

    /// The production loop: carry out every action the machine has due, then wait for its
    /// next timeout, a step finishing or `shutdown` turning true. Returns when the machine
    /// stops (after a shutdown: running steps finished or handed back, outcomes flushed).
    /// A failed store call is told to the machine, which backs off and retries it
    /// (`WorkerMachine::handle_store_error`): the database going away pauses claiming and
    /// flushing, not the steps running. Only while shutting down does a store error end the
    /// worker (its leases expire and are rescued).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), StoreError> {
        let clock = self.engine.inner.clock.clone();
        // Each step is its own task, so steps progress while this loop waits on the store:
        // a step holding a pooled connection must not wait for the loop to poll it while
        // the loop waits for a connection (that stalled whole pools until leases expired).
        let mut running = RunningSteps::default();
        let mut watching = true;
        loop {
            let now = clock.now();
            if *shutdown.borrow() {
                self.machine.handle_shutdown(now);
            }
            while let Some(action) = self.machine.poll_action(now) {
                let performed = match self.perform(action, now).await {
                    Ok(performed) => performed,
                    Err(e) if self.machine.stopping() => return Err(e),
                    Err(_) => {
                        self.engine.inner.counters.store_error();
                        self.machine.handle_store_error(now);
                        break;
                    }
                };
                match performed {
                    Performed::Claimed(jobs) => {
                        for (job, host) in jobs {
                            let (engine, cfg) = (self.engine.clone(), self.config.clone());
                            running.spawn(job.id, async move { engine.run_step_on(&job, host, &cfg).await });
                        }
                    }
                    Performed::ClaimedHostsUnknown(jobs) => {
                        for job in jobs {
                            let (engine, cfg) = (self.engine.clone(), self.config.clone());
                            running.spawn(job.id, async move { engine.run_step(&job, &cfg).await });
                        }
                    }
                    // The steps still running were handed back: abandon them.
                    Performed::HandedBack(_) => running.abandon(),
                    Performed::Stopped => return Ok(()),
                    Performed::Noted | Performed::Extended(_) | Performed::Flushed(_) => {}
                }
            }
            let nap = self.machine.poll_timeout().map_or(self.engine.inner.config.lease, |t| t.since(now));
            let sleep = clock.sleep(nap);
            tokio::select! {
                Some((job, outcome)) = running.next(), if !running.is_empty() => {
                    let now = clock.now();
                    self.machine.handle_step_finished(job, outcome, now);
                    // Take every other result that is ready too, before the next claim.
                    while let Some((job, outcome)) = running.try_next() {
                        self.machine.handle_step_finished(job, outcome, now);
                    }
                }
                _ = sleep => {}
                changed = shutdown.changed(), if watching => {
                    if changed.is_err() {
                        // The pool is gone: stop as on a shutdown.
                        watching = false;
                        self.machine.handle_shutdown(clock.now());
                    }
                }
            }
        }
    }
}

/// The steps a worker is running, each a task of its own.
#[derive(Default)]
struct RunningSteps {
    tasks: JoinSet<JobOutcome>,
    jobs: HashMap<tokio::task::Id, JobId>,
}

impl RunningSteps {
    fn spawn(&mut self, job: JobId, step: impl Future<Output = JobOutcome> + Send + 'static) {
        let handle = self.tasks.spawn(step);
        self.jobs.insert(handle.id(), job);
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Aborts every running step (their jobs were handed back).
    fn abandon(&mut self) {
        self.tasks.abort_all();
        self.tasks.detach_all();
        self.jobs.clear();
    }

    /// The next step to finish, with its outcome.
    async fn next(&mut self) -> Option<(JobId, JobOutcome)> {
        loop {
            let joined = self.tasks.join_next_with_id().await?;
            if let Some(done) = self.finished(joined) {
                return Some(done);
            }
        }
    }

    /// A step that has already finished, if any.
    fn try_next(&mut self) -> Option<(JobId, JobOutcome)> {
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            if let Some(done) = self.finished(joined) {
                return Some(done);
            }
        }
        None
    }

    fn finished(&mut self, joined: Result<(tokio::task::Id, JobOutcome), JoinError>) -> Option<(JobId, JobOutcome)> {
        match joined {
            Ok((task, outcome)) => Some((self.jobs.remove(&task)?, outcome)),
            // A step that panicked (a bug in a driver or in step code) fails its attempt,
            // retryably and naming the panic, instead of taking the worker and every other
            // step it runs down: the retry policy decides as for any failed attempt.
            Err(e) if e.is_panic() => {
                let job = self.jobs.remove(&e.id())?;
                let error = format!("the step panicked: {}", panic_text(e));
                Some((job, StepFailure { error, retryable: true }.into()))
            }
            Err(e) => {
                self.jobs.remove(&e.id());
                None
            }
        }
    }
}

fn panic_text(e: JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
