//! A worker: claims runnable jobs of its site and its pool's kinds (queue-key order), runs
//! them concurrently through the drivers, extends their leases while they run, and records
//! outcomes in batches, each fenced by its attempt.
//!
//! [`Worker`] exposes each move as a method (refresh, claim, record, flush, extend, hand
//! back) so the deterministic simulator can interleave them; [`Worker::run`] is the loop a
//! [`super::WorkerPool`] runs in production.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::Engine;
use crate::host::Host;
use crate::id::JobId;
use crate::machine::{JobOutcome, TransitionError};
use crate::model::JobRecord;
use crate::names::{Hostname, Pool, Site};
use crate::plan::StepKind;
use crate::ports::store::*;
use crate::time::Timestamp;

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
        }
    }
}

/// What a flush did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Completions applied.
    pub applied: usize,
    /// Completions refused because the attempt no longer held the job (its lease expired
    /// and it was rescued): the worker's result is discarded, by design.
    pub stale: Vec<(JobId, TransitionError)>,
}

/// One worker of a pool, in one site.
pub struct Worker {
    engine: Engine,
    id: String,
    site: Site,
    pool: Pool,
    cfg: WorkerConfig,
    kinds: Vec<StepKind>,
    kinds_read_at: Option<Timestamp>,
    registered_at: Option<Timestamp>,
    buffer: Vec<JobCompletion>,
    buffer_since: Option<Timestamp>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).field("site", &self.site).field("pool", &self.pool).finish()
    }
}

impl Worker {
    /// A worker named `id` (unique across the deployment) for `site` and `pool`.
    pub fn new(engine: Engine, id: impl Into<String>, site: Site, pool: Pool, cfg: WorkerConfig) -> Self {
        let kinds = cfg.default_kinds.clone();
        Worker {
            engine,
            id: id.into(),
            site,
            pool,
            cfg,
            kinds,
            kinds_read_at: None,
            registered_at: None,
            buffer: Vec::new(),
            buffer_since: None,
        }
    }

    /// Its id (the lease owner on its jobs).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The kinds it takes now.
    pub fn kinds(&self) -> &[StepKind] {
        &self.kinds
    }

    /// Completions waiting for a flush.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The jobs whose completions wait for a flush.
    pub fn buffered_jobs(&self) -> Vec<JobId> {
        self.buffer.iter().map(|c| c.job_id).collect()
    }

    /// Heartbeats in the registry and re-reads the pool's kinds, each when due.
    pub async fn refresh(&mut self, now: Timestamp) -> Result<(), StoreError> {
        let store = &self.engine.inner.store;
        if self.registered_at.is_none_or(|t| now.since(t) >= self.cfg.registry_interval) {
            let p =
                WorkerHeartbeatParams { id: self.id.clone(), site: self.site.clone(), pool: self.pool.clone(), now };
            store.worker_heartbeat(p).await?;
            self.registered_at = Some(now);
        }
        if self.kinds_read_at.is_none_or(|t| now.since(t) >= self.cfg.kinds_refresh) {
            self.kinds = store.pool_kinds_get(&self.pool).await?.unwrap_or_else(|| self.cfg.default_kinds.clone());
            self.kinds_read_at = Some(now);
        }
        Ok(())
    }

    /// Leases up to `limit` runnable jobs.
    pub async fn claim(&self, now: Timestamp, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        if limit == 0 || self.kinds.is_empty() {
            return Ok(Vec::new());
        }
        let p = JobClaimParams {
            site: self.site.clone(),
            kinds: self.kinds.clone(),
            limit,
            owner: self.id.clone(),
            now,
            lease: self.engine.inner.config.lease,
        };
        let jobs = self.engine.inner.store.job_claim(p).await?;
        self.engine.inner.counters.claimed(jobs.len());
        Ok(jobs)
    }

    /// The inventory records of the claimed jobs' hosts, in one call.
    pub async fn hosts_of(&self, jobs: &[JobRecord]) -> Result<HashMap<Hostname, Host>, StoreError> {
        if jobs.is_empty() {
            return Ok(HashMap::new());
        }
        let names: Vec<Hostname> = jobs.iter().map(|j| j.hostname.clone()).collect();
        let hosts = self.engine.inner.inventory.host_get_many(&names).await?;
        Ok(hosts.into_iter().map(|h| (h.hostname.clone(), h)).collect())
    }

    /// Buffers an outcome for the next flush.
    pub fn record(&mut self, job: &JobRecord, outcome: JobOutcome, now: Timestamp) {
        self.buffer_since.get_or_insert(now);
        self.buffer.push(JobCompletion { job_id: job.id, attempt: job.attempt, outcome });
    }

    /// Whether the buffer should be flushed now.
    pub fn flush_due(&self, now: Timestamp) -> bool {
        self.buffer.len() >= self.cfg.flush_size
            || self.buffer_since.is_some_and(|t| now.since(t) >= self.cfg.flush_interval)
    }

    /// Records every buffered outcome in one store call. On a store error the buffer is
    /// kept for the next try.
    pub async fn flush(&mut self, now: Timestamp) -> Result<FlushReport, StoreError> {
        if self.buffer.is_empty() {
            return Ok(FlushReport::default());
        }
        let completions = self.buffer.clone();
        let ids: Vec<JobId> = completions.iter().map(|c| c.job_id).collect();
        let results = self.engine.inner.store.job_complete_many(JobCompleteManyParams { completions, now }).await?;
        self.buffer.clear();
        self.buffer_since = None;
        self.engine.changed();
        let mut report = FlushReport::default();
        for (id, r) in ids.into_iter().zip(results) {
            match r {
                Ok(()) => report.applied += 1,
                Err(e) => report.stale.push((id, e)),
            }
        }
        self.engine.inner.counters.completed(report.applied, report.stale.len());
        Ok(report)
    }

    /// Extends the leases of `jobs`; returns those still held.
    pub async fn extend(&self, now: Timestamp, jobs: Vec<JobId>) -> Result<Vec<JobId>, StoreError> {
        if jobs.is_empty() {
            return Ok(jobs);
        }
        let lease = self.engine.inner.config.lease;
        self.engine
            .inner
            .store
            .job_heartbeat_many(JobHeartbeatManyParams { owner: self.id.clone(), job_ids: jobs, now, lease })
            .await
    }

    /// Hands unfinished jobs back (shutdown); returns the ids released.
    pub async fn hand_back(&self, now: Timestamp, jobs: Vec<(JobId, u32)>) -> Result<Vec<JobId>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let released =
            self.engine.inner.store.job_release_many(JobReleaseParams { owner: self.id.clone(), jobs, now }).await?;
        self.engine.changed();
        Ok(released)
    }

    /// The production loop: until `shutdown` turns true, claim up to capacity, run jobs
    /// concurrently, heartbeat leases every third of the lease, flush on size or interval.
    /// On shutdown, stop claiming, let running jobs finish for `shutdown_grace`, hand the
    /// rest back, flush, and return.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), StoreError> {
        let clock = self.engine.inner.clock.clone();
        let heartbeat_every = self.engine.inner.config.lease / 3;
        let mut running: FuturesUnordered<BoxFuture<'static, (JobRecord, JobOutcome)>> = FuturesUnordered::new();
        // Every job leased and not yet flushed, with its attempt.
        let mut held: BTreeMap<JobId, u32> = BTreeMap::new();
        let mut last_heartbeat = clock.now();
        let mut stop_at: Option<Timestamp> = None;
        loop {
            let now = clock.now();
            if stop_at.is_none() && *shutdown.borrow() {
                stop_at = Some(now.plus(self.cfg.shutdown_grace));
            }
            self.refresh(now).await?;
            let mut drained = true;
            // Claim in batches: refill once at most half the capacity is busy.
            if stop_at.is_none() && running.len() <= self.cfg.capacity / 2 {
                let want = self.cfg.capacity - running.len();
                let jobs = self.claim(now, want).await?;
                drained = jobs.len() < want;
                // One inventory read for the whole claim, not one per job.
                let mut hosts = self.hosts_of(&jobs).await?;
                for job in jobs {
                    held.insert(job.id, job.attempt);
                    let engine = self.engine.clone();
                    let host = hosts.remove(&job.hostname);
                    running.push(Box::pin(async move {
                        let outcome = engine.run_step_on(&job, host).await;
                        (job, outcome)
                    }));
                }
            }
            if now.since(last_heartbeat) >= heartbeat_every {
                self.extend(now, held.keys().copied().collect()).await?;
                last_heartbeat = now;
            }
            if self.flush_due(now) || (stop_at.is_some() && running.is_empty()) {
                let flushed: Vec<JobId> = self.buffer.iter().map(|c| c.job_id).collect();
                self.flush(now).await?;
                for id in flushed {
                    held.remove(&id);
                }
            }
            if let Some(deadline) = stop_at {
                if running.is_empty() && self.buffer.is_empty() {
                    return Ok(());
                }
                if now >= deadline {
                    drop(running);
                    let buffered: std::collections::BTreeSet<JobId> = self.buffer.iter().map(|c| c.job_id).collect();
                    let unfinished = held.iter().filter(|(id, _)| !buffered.contains(id)).map(|(id, a)| (*id, *a));
                    self.hand_back(now, unfinished.collect()).await?;
                    self.flush(now).await?;
                    return Ok(());
                }
            }
            let nap = if !self.buffer.is_empty() {
                self.cfg.flush_interval
            } else if drained || running.len() > self.cfg.capacity / 2 || stop_at.is_some() {
                self.cfg.idle_poll.min(heartbeat_every)
            } else {
                Duration::ZERO
            };
            let sleep = clock.sleep(nap);
            tokio::select! {
                Some((job, outcome)) = running.next(), if !running.is_empty() => {
                    let now = clock.now();
                    self.record(&job, outcome, now);
                    // Take every other result that is ready too, before the next claim.
                    while let Some(Some((job, outcome))) = running.next().now_or_never() {
                        self.record(&job, outcome, now);
                    }
                }
                _ = sleep => {}
                changed = shutdown.changed(), if stop_at.is_none() => {
                    if changed.is_err() {
                        // The pool is gone: stop as on a shutdown.
                        stop_at = Some(clock.now().plus(self.cfg.shutdown_grace));
                    }
                }
            }
        }
    }
}
