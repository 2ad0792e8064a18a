//! What to simulate and what a run reports: [`SimConfig`], [`SimReport`], [`SimFailure`],
//! [`SimError`].

use std::time::Duration;

use maas_core::ports::inventory::Inventory;
use maas_core::ports::store::*;
use maas_engine::EngineError;

use crate::simfleet::FaultPlan;

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
