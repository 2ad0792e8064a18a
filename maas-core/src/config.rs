//! The engine's settings, as plain data: what the runtime and the simulator configure, and
//! what the policies in [`crate::policy`] decide with. `Default` gives the values the
//! design and the seeds describe.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::batch::Limits;
use crate::names::{OsRelease, Pool, Site};
use crate::plan::StepKind;
use crate::priority::PriorityClass;

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
    /// A host whose last this many reclaims all failed is left alone, with a ticket
    /// (0: retried forever).
    pub give_up_after: u32,
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
    /// An idempotency key names its batch for this long after the batch was submitted;
    /// then the key is free for a new batch (a purged batch frees it sooner).
    pub idempotency_horizon: Duration,
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
            idempotency_horizon: Duration::from_secs(30 * 24 * 3600),
            reclaim: None,
            leader_ttl: Duration::from_secs(30),
            intervals: SingletonIntervals::default(),
            eta_history: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

/// How a worker paces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerConfig {
    /// Jobs it runs at once.
    pub capacity: usize,
    /// Flush completions when this many are buffered...
    pub flush_size: usize,
    /// ... or when the oldest has waited this long.
    pub flush_interval: Duration,
    /// How long to wait before claiming again when nothing was runnable.
    pub idle_poll: Duration,
    /// How often to re-read its pool's kinds from the store.
    pub kinds_refresh: Duration,
    /// How often to heartbeat in the worker registry.
    pub registry_interval: Duration,
    /// The kinds it takes while its pool has no mapping in the store.
    pub default_kinds: Vec<StepKind>,
    /// On shutdown, how long to let running jobs finish before handing them back.
    pub shutdown_grace: Duration,
    /// After a failed store call, the first wait before the next one (the database is
    /// away): doubled on every further failure...
    pub store_retry_min: Duration,
    /// ... up to this.
    pub store_retry_max: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            capacity: 64,
            flush_size: 64,
            flush_interval: Duration::from_millis(50),
            idle_poll: Duration::from_millis(500),
            kinds_refresh: Duration::from_secs(30),
            registry_interval: Duration::from_secs(30),
            default_kinds: StepKind::ALL.iter().copied().filter(|k| !k.is_wait()).collect(),
            shutdown_grace: Duration::from_secs(30),
            store_retry_min: Duration::from_millis(250),
            store_retry_max: Duration::from_secs(10),
        }
    }
}

impl WorkerConfig {
    /// The wait before the next store call after `failures` failed in a row (at least 1):
    /// `store_retry_min`, doubled per further failure, at most `store_retry_max`.
    pub fn store_retry_wait(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.store_retry_min.saturating_mul(1 << doublings).min(self.store_retry_max)
    }

    /// A step of a job leased to this worker could not read what it needs (its host) from
    /// the store `failures` times in a row, having waited `waited` so far: the wait before
    /// it reads again, or `None` to fail the attempt (retryably) because the next wait would
    /// reach past half the `lease` (the lease may lapse while the database is away, and the
    /// rescue is then the store's to make). Failing at once instead would spend an attempt
    /// on every step claimed just before the database went away.
    pub fn step_read_wait(&self, failures: u32, waited: Duration, lease: Duration) -> Option<Duration> {
        let wait = self.store_retry_wait(failures);
        (waited.saturating_add(wait) <= lease / 2).then_some(wait)
    }
}

/// One pool of workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// Its site.
    pub site: Site,
    /// Its pool ("cluster type"); the kinds it takes are read from the store.
    pub pool: Pool,
    /// How many workers it keeps running.
    pub workers: usize,
    /// Each worker's pacing.
    pub worker: WorkerConfig,
    /// Wait before replacing a crashed worker.
    pub restart_delay: Duration,
    /// This process's name, prefixed to worker ids (unique per instance).
    pub instance: String,
}
