//! The worker policy as a sans-IO state machine: what a worker does next — heartbeat in
//! the registry, re-read its pool's kinds, claim, extend leases, flush completions, hand
//! back on shutdown — decided from plain data at `now`, with no I/O and no clock.
//!
//! maas-engine's `Worker` drives a [`WorkerMachine`] with real store calls and step
//! executions; maas-sim drives the same machine on a manual clock, so a bug in this policy
//! is a simulator failure. The driver's loop:
//!
//! 1. `while let Some(action) = machine.poll_action(now)`: carry the action out and report
//!    its result with the matching `handle_*` (every action must be answered before the
//!    next poll, or the same action comes back);
//! 2. wait until [`WorkerMachine::poll_timeout`], a step finishing
//!    ([`WorkerMachine::handle_step_finished`]) or a shutdown request
//!    ([`WorkerMachine::handle_shutdown`]), whichever comes first;
//! 3. stop when [`WorkerAction::Stop`] is returned.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::config::WorkerConfig;
use crate::id::JobId;
use crate::machine::JobOutcome;
use crate::model::JobRecord;
use crate::names::{Pool, Site};
use crate::plan::StepKind;
use crate::ports::store::{
    JobClaimParams, JobCompleteManyParams, JobCompletion, JobHeartbeatManyParams, JobListParams, JobReleaseParams,
    WorkerHeartbeatParams,
};
use crate::time::Timestamp;

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerAction {
    /// Heartbeat in the worker registry; answer with [`WorkerMachine::handle_registered`].
    Register(WorkerHeartbeatParams),
    /// Read the pool's step kinds; answer with [`WorkerMachine::handle_kinds`].
    ReadKinds(Pool),
    /// Lease runnable jobs, look up their hosts and start running them; answer with
    /// [`WorkerMachine::handle_claimed`].
    Claim(JobClaimParams),
    /// Extend the leases of the jobs held; answer with [`WorkerMachine::handle_extended`].
    Extend(JobHeartbeatManyParams),
    /// Record the buffered outcomes in one call; answer with
    /// [`WorkerMachine::handle_flushed`].
    Flush(JobCompleteManyParams),
    /// Shutdown grace is over: abandon every step still running and release these jobs;
    /// answer with [`WorkerMachine::handle_handed_back`].
    HandBack(JobReleaseParams),
    /// A claim failed in transport: the store may have leased jobs whose answer was lost.
    /// List the jobs running under this worker's lease and start those it does not know
    /// of; answer with [`WorkerMachine::handle_adopted`].
    Adopt(JobListParams),
    /// Shut down: nothing is running, buffered or held any more.
    Stop,
}

impl WorkerAction {
    /// A short name, for traces and logs.
    pub fn name(&self) -> &'static str {
        match self {
            WorkerAction::Register(_) => "register",
            WorkerAction::ReadKinds(_) => "read_kinds",
            WorkerAction::Claim(_) => "claim",
            WorkerAction::Extend(_) => "extend",
            WorkerAction::Flush(_) => "flush",
            WorkerAction::HandBack(_) => "hand_back",
            WorkerAction::Adopt(_) => "adopt",
            WorkerAction::Stop => "stop",
        }
    }
}

/// One worker's policy state, for one site and pool.
#[derive(Debug, Clone)]
pub struct WorkerMachine {
    id: String,
    site: Site,
    pool: Pool,
    cfg: WorkerConfig,
    lease: Duration,
    kinds: Vec<StepKind>,
    kinds_read_at: Option<Timestamp>,
    registered_at: Option<Timestamp>,
    /// Jobs leased and still executing, with their attempt.
    running: BTreeMap<JobId, u32>,
    /// Outcomes waiting for a flush, oldest first.
    buffer: Vec<JobCompletion>,
    buffer_since: Option<Timestamp>,
    /// Completions in the flush under way (the first `flushing` of `buffer`).
    flushing: usize,
    last_heartbeat: Option<Timestamp>,
    /// No claim before this (set when a claim came back short: the queue is drained).
    claim_after: Option<Timestamp>,
    /// Shutdown requested: running steps may finish until this time.
    stop_at: Option<Timestamp>,
    stopped: bool,
    /// Store calls failed in a row (the database is away).
    store_failures: u32,
    /// No store call before this (backing off after a failure).
    retry_at: Option<Timestamp>,
    /// A claim is under way (its answer not yet handled).
    claiming: bool,
    /// A claim failed: jobs may be leased to this worker that it does not know of.
    claim_in_doubt: bool,
}

impl WorkerMachine {
    /// A worker named `id` (unique across the deployment; the lease owner on its jobs) for
    /// `site` and `pool`, holding leases of length `lease`.
    pub fn new(id: impl Into<String>, site: Site, pool: Pool, cfg: WorkerConfig, lease: Duration) -> Self {
        let kinds = cfg.default_kinds.clone();
        WorkerMachine {
            id: id.into(),
            site,
            pool,
            cfg,
            lease,
            kinds,
            kinds_read_at: None,
            registered_at: None,
            running: BTreeMap::new(),
            buffer: Vec::new(),
            buffer_since: None,
            flushing: 0,
            last_heartbeat: None,
            claim_after: None,
            stop_at: None,
            stopped: false,
            store_failures: 0,
            retry_at: None,
            claiming: false,
            claim_in_doubt: false,
        }
    }

    /// Its id (the lease owner on its jobs).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How it paces itself.
    pub fn config(&self) -> &WorkerConfig {
        &self.cfg
    }

    /// Its site.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The kinds it takes now.
    pub fn kinds(&self) -> &[StepKind] {
        &self.kinds
    }

    /// Jobs executing now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Completions waiting for a flush.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The jobs whose completions wait for a flush.
    pub fn buffered_jobs(&self) -> Vec<JobId> {
        self.buffer.iter().map(|c| c.job_id).collect()
    }

    /// The outcomes waiting for a flush, oldest first.
    pub fn buffered_completions(&self) -> &[JobCompletion] {
        &self.buffer
    }

    /// Every job it holds a lease on: running, or finished and not yet flushed.
    pub fn held(&self) -> Vec<JobId> {
        let mut all: BTreeSet<JobId> = self.running.keys().copied().collect();
        all.extend(self.buffer.iter().map(|c| c.job_id));
        all.into_iter().collect()
    }

    /// Whether a shutdown was requested.
    pub fn stopping(&self) -> bool {
        self.stop_at.is_some()
    }

    /// Whether it has stopped ([`WorkerAction::Stop`] was returned).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// How often leases are extended: a third of the lease, so two heartbeats may be lost.
    pub fn heartbeat_every(&self) -> Duration {
        self.lease / 3
    }

    fn registry_due(&self) -> Option<Timestamp> {
        Some(self.registered_at.map_or(Timestamp::EPOCH, |t| t.plus(self.cfg.registry_interval)))
    }

    fn kinds_due(&self) -> Option<Timestamp> {
        Some(self.kinds_read_at.map_or(Timestamp::EPOCH, |t| t.plus(self.cfg.kinds_refresh)))
    }

    /// Claim in batches: refill once at most half the capacity is busy, never while
    /// stopping, and not before `claim_after` after a short claim.
    fn claim_due(&self) -> Option<Timestamp> {
        let room = self.running.len() <= self.cfg.capacity / 2 && self.capacity_left() > 0;
        if self.stop_at.is_some() || !room || self.kinds.is_empty() {
            return None;
        }
        Some(self.claim_after.unwrap_or(Timestamp::EPOCH))
    }

    fn capacity_left(&self) -> usize {
        self.cfg.capacity.saturating_sub(self.running.len())
    }

    fn heartbeat_due(&self) -> Option<Timestamp> {
        if self.running.is_empty() && self.buffer.is_empty() {
            return None;
        }
        Some(self.last_heartbeat.map_or(Timestamp::EPOCH, |t| t.plus(self.heartbeat_every())))
    }

    /// Flush when the buffer is full or its oldest outcome has waited `flush_interval`; at
    /// once when stopping and nothing runs any more.
    fn flush_due(&self) -> Option<Timestamp> {
        let since = self.buffer_since?;
        if self.buffer.len() >= self.cfg.flush_size || (self.stop_at.is_some() && self.running.is_empty()) {
            return Some(Timestamp::EPOCH);
        }
        Some(since.plus(self.cfg.flush_interval))
    }

    /// The next action due at `now`, if any.
    pub fn poll_action(&mut self, now: Timestamp) -> Option<WorkerAction> {
        if self.stopped {
            return Some(WorkerAction::Stop);
        }
        if self.retry_at.is_some_and(|t| now < t) {
            // Backing off: the store failed; running steps go on, their outcomes wait.
            return None;
        }
        if self.claim_in_doubt {
            let p = JobListParams {
                states: vec![crate::model::JobState::Running],
                lease_owner: Some(self.id.clone()),
                ..Default::default()
            };
            return Some(WorkerAction::Adopt(p));
        }
        let due = |t: Option<Timestamp>| t.is_some_and(|t| t <= now);
        if due(self.registry_due()) {
            let p =
                WorkerHeartbeatParams { id: self.id.clone(), site: self.site.clone(), pool: self.pool.clone(), now };
            return Some(WorkerAction::Register(p));
        }
        if due(self.kinds_due()) {
            return Some(WorkerAction::ReadKinds(self.pool.clone()));
        }
        if let Some(deadline) = self.stop_at {
            if self.running.is_empty() && self.buffer.is_empty() {
                self.stopped = true;
                return Some(WorkerAction::Stop);
            }
            if now >= deadline && !self.running.is_empty() {
                // Grace is over: the steps still running are given back; outcomes already
                // buffered are not (they are flushed next, so no step runs twice).
                let jobs = self.running.iter().map(|(id, a)| (*id, *a)).collect();
                return Some(WorkerAction::HandBack(JobReleaseParams { owner: self.id.clone(), jobs, now }));
            }
        }
        // Flush before claiming: completions advance chains, so the next steps are there
        // to be claimed, and fewer leases are held.
        if due(self.flush_due()) {
            self.flushing = self.buffer.len();
            let p = JobCompleteManyParams { completions: self.buffer.clone(), now };
            return Some(WorkerAction::Flush(p));
        }
        if due(self.claim_due()) {
            self.claiming = true;
            let p = JobClaimParams {
                site: self.site.clone(),
                kinds: self.kinds.clone(),
                limit: self.capacity_left(),
                owner: self.id.clone(),
                now,
                lease: self.lease,
            };
            return Some(WorkerAction::Claim(p));
        }
        if due(self.heartbeat_due()) {
            let p = JobHeartbeatManyParams { owner: self.id.clone(), job_ids: self.held(), now, lease: self.lease };
            return Some(WorkerAction::Extend(p));
        }
        None
    }

    /// When the next action falls due without any event (`None`: only an event — a step
    /// finishing or a shutdown request — can make one due).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.stopped {
            return None;
        }
        let stop = self.stop_at.filter(|_| !self.running.is_empty());
        let next =
            [self.registry_due(), self.kinds_due(), self.claim_due(), self.heartbeat_due(), self.flush_due(), stop]
                .into_iter()
                .flatten()
                .min()?;
        Some(self.retry_at.map_or(next, |retry| next.max(retry)))
    }

    /// Store calls that failed in a row (0 once one succeeds again).
    pub fn store_failures(&self) -> u32 {
        self.store_failures
    }

    /// The store call for the last action failed (the database is away or overloaded).
    /// Nothing it would have changed is taken as done: the same work comes back, after a
    /// wait that starts at `store_retry_min` and doubles per failure up to
    /// `store_retry_max`. Steps already running go on; their outcomes wait in the buffer.
    pub fn handle_store_error(&mut self, now: Timestamp) {
        self.store_failures = self.store_failures.saturating_add(1);
        // A claim's answer may be lost after the store leased the jobs: find them next.
        self.claim_in_doubt |= std::mem::take(&mut self.claiming);
        self.retry_at = Some(now.plus(self.cfg.store_retry_wait(self.store_failures)));
        self.flushing = 0;
    }

    fn store_answered(&mut self) {
        self.store_failures = 0;
        self.retry_at = None;
    }

    /// The registry heartbeat was written.
    pub fn handle_registered(&mut self, now: Timestamp) {
        self.store_answered();
        self.registered_at = Some(now);
    }

    /// The pool's kinds were read (`None`: the pool has no mapping; take the defaults).
    pub fn handle_kinds(&mut self, kinds: Option<Vec<StepKind>>, now: Timestamp) {
        self.store_answered();
        self.kinds = kinds.unwrap_or_else(|| self.cfg.default_kinds.clone());
        self.kinds_read_at = Some(now);
    }

    /// The claim leased `jobs` (the driver starts running each); a short claim means the
    /// queue is drained, so the next claim waits `idle_poll`.
    pub fn handle_claimed(&mut self, limit: usize, jobs: &[JobRecord], now: Timestamp) {
        self.handle_claimed_ids(limit, jobs.iter().map(|j| (j.id, j.attempt)), now);
    }

    /// [`Self::handle_claimed`] with the leased jobs' ids and attempts only.
    pub fn handle_claimed_ids(&mut self, limit: usize, jobs: impl IntoIterator<Item = (JobId, u32)>, now: Timestamp) {
        self.store_answered();
        self.claiming = false;
        let mut n = 0;
        for (id, attempt) in jobs {
            self.running.insert(id, attempt);
            n += 1;
        }
        self.claim_after = (n < limit).then(|| now.plus(self.cfg.idle_poll));
        if self.last_heartbeat.is_none() {
            self.last_heartbeat = Some(now);
        }
    }

    /// The jobs running under this worker's lease were listed after a failed claim: those
    /// it did not know of are returned (the driver starts running them) and held from now.
    pub fn handle_adopted(&mut self, leased: impl IntoIterator<Item = (JobId, u32)>, now: Timestamp) -> Vec<JobId> {
        self.store_answered();
        self.claim_in_doubt = false;
        let known: BTreeSet<JobId> = self.held().into_iter().collect();
        let mut adopted = Vec::new();
        for (id, attempt) in leased {
            if !known.contains(&id) {
                self.running.insert(id, attempt);
                adopted.push(id);
            }
        }
        if !adopted.is_empty() && self.last_heartbeat.is_none() {
            self.last_heartbeat = Some(now);
        }
        adopted
    }

    /// A running step finished with `outcome`; it is buffered for the next flush. A job
    /// the worker no longer runs (handed back) is ignored.
    pub fn handle_step_finished(&mut self, job_id: JobId, outcome: JobOutcome, now: Timestamp) {
        let Some(attempt) = self.running.remove(&job_id) else { return };
        self.buffer_since.get_or_insert(now);
        self.buffer.push(JobCompletion { job_id, attempt, outcome });
        // A slot freed up: a claim may be due at once, unless the queue is drained.
    }

    /// The leases were extended (`held`: the jobs still leased to this worker; the others
    /// were rescued, and their outcomes will be refused as stale when flushed).
    pub fn handle_extended(&mut self, _held: &[JobId], now: Timestamp) {
        self.store_answered();
        self.last_heartbeat = Some(now);
    }

    /// The flush under way was recorded (applied or refused as stale, job by job).
    pub fn handle_flushed(&mut self) {
        self.store_answered();
        self.buffer.drain(..self.flushing.min(self.buffer.len()));
        self.flushing = 0;
        self.buffer_since = if self.buffer.is_empty() { None } else { self.buffer_since };
    }

    /// The running steps were abandoned and their jobs released.
    pub fn handle_handed_back(&mut self, _released: &[JobId]) {
        self.store_answered();
        self.running.clear();
    }

    /// A shutdown was requested: stop claiming, let running steps finish for
    /// `shutdown_grace`, then hand the rest back, flush, and stop.
    pub fn handle_shutdown(&mut self, now: Timestamp) {
        self.stop_at.get_or_insert(now.plus(self.cfg.shutdown_grace));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{Pool, Site};

    fn machine(capacity: usize) -> WorkerMachine {
        let cfg = WorkerConfig {
            capacity,
            flush_size: 4,
            flush_interval: Duration::from_millis(50),
            idle_poll: Duration::from_millis(500),
            kinds_refresh: Duration::from_secs(30),
            registry_interval: Duration::from_secs(30),
            default_kinds: vec![StepKind::PowerCycle],
            shutdown_grace: Duration::from_secs(10),
            store_retry_min: Duration::from_millis(100),
            store_retry_max: Duration::from_millis(350),
        };
        WorkerMachine::new("w1", Site::new("dc1").unwrap(), Pool::new("web").unwrap(), cfg, Duration::from_secs(60))
    }

    fn id(n: u128) -> JobId {
        JobId(uuid::Uuid::from_u128(n))
    }

    fn claimed(m: &mut WorkerMachine, limit: usize, jobs: impl IntoIterator<Item = u128>, now: Timestamp) {
        m.handle_claimed_ids(limit, jobs.into_iter().map(|n| (id(n), 1)), now);
    }

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// Answers the bookkeeping actions (register, kinds) and returns the first other one.
    fn next(m: &mut WorkerMachine, now: Timestamp) -> Option<WorkerAction> {
        loop {
            match m.poll_action(now)? {
                WorkerAction::Register(_) => m.handle_registered(now),
                WorkerAction::ReadKinds(_) => m.handle_kinds(None, now),
                other => return Some(other),
            }
        }
    }

    #[test]
    fn store_waits_double_up_to_the_max_and_a_step_gives_up_at_half_the_lease() {
        let m = machine(4);
        let waits: Vec<u128> = (1..=5).map(|n| m.cfg.store_retry_wait(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350, 350]);
        let lease = Duration::from_secs(2);
        assert_eq!(m.cfg.step_read_wait(1, Duration::ZERO, lease), Some(Duration::from_millis(100)));
        assert_eq!(m.cfg.step_read_wait(3, Duration::from_millis(650), lease), Some(Duration::from_millis(350)));
        assert_eq!(m.cfg.step_read_wait(4, Duration::from_millis(651), lease), None, "past half the lease");
    }

    #[test]
    fn claims_up_to_capacity_and_refills_only_at_half() {
        let mut m = machine(4);
        let Some(WorkerAction::Claim(p)) = next(&mut m, t(0)) else { panic!("claims first") };
        assert_eq!(p.limit, 4);
        claimed(&mut m, 4, [1, 2, 3, 4], t(0));
        assert_eq!(next(&mut m, t(0)), None, "full: no claim");
        m.handle_step_finished(id(1), JobOutcome::Succeeded, t(1));
        assert_eq!(next(&mut m, t(1)), None, "three of four busy: above half");
        m.handle_step_finished(id(2), JobOutcome::Succeeded, t(2));
        let Some(WorkerAction::Claim(p)) = next(&mut m, t(2)) else { panic!("refills at half") };
        assert_eq!(p.limit, 2);
    }

    #[test]
    fn a_short_claim_waits_idle_poll_before_the_next() {
        let mut m = machine(4);
        assert!(matches!(next(&mut m, t(0)), Some(WorkerAction::Claim(_))));
        claimed(&mut m, 4, [0u128; 0], t(0));
        assert_eq!(next(&mut m, t(499)), None);
        assert_eq!(m.poll_timeout(), Some(t(500)));
        assert!(matches!(next(&mut m, t(500)), Some(WorkerAction::Claim(_))));
    }

    #[test]
    fn flushes_on_size_or_interval() {
        let mut m = machine(8);
        assert!(matches!(next(&mut m, t(0)), Some(WorkerAction::Claim(_))));
        claimed(&mut m, 8, 1..=8, t(0));
        m.handle_step_finished(id(1), JobOutcome::Succeeded, t(10));
        assert_eq!(next(&mut m, t(59)), None);
        assert_eq!(m.poll_timeout(), Some(t(60)));
        let Some(WorkerAction::Flush(p)) = next(&mut m, t(60)) else { panic!("interval flush") };
        assert_eq!(p.completions.len(), 1);
        m.handle_flushed();
        for n in 2..=5 {
            m.handle_step_finished(id(n), JobOutcome::Succeeded, t(61));
        }
        // Half the capacity is free again: the size flush comes first, then the refill.
        let Some(WorkerAction::Flush(p)) = next(&mut m, t(61)) else { panic!("size flush") };
        assert_eq!(p.completions.len(), 4);
        m.handle_flushed();
        let Some(WorkerAction::Claim(p)) = next(&mut m, t(61)) else { panic!("refill") };
        assert_eq!(p.limit, 5);
    }

    #[test]
    fn a_step_finishing_during_a_flush_waits_for_the_next() {
        let mut m = machine(8);
        assert!(matches!(next(&mut m, t(0)), Some(WorkerAction::Claim(_))));
        claimed(&mut m, 8, 1..=8, t(0));
        m.handle_step_finished(id(1), JobOutcome::Succeeded, t(0));
        let Some(WorkerAction::Flush(_)) = next(&mut m, t(100)) else { panic!("flush") };
        m.handle_step_finished(id(2), JobOutcome::Succeeded, t(100));
        m.handle_flushed();
        assert_eq!(m.buffered_jobs(), vec![id(2)]);
    }

    #[test]
    fn a_failing_store_is_retried_with_doubling_waits_and_nothing_is_lost() {
        let mut m = machine(8);
        assert!(matches!(next(&mut m, t(0)), Some(WorkerAction::Claim(_))));
        claimed(&mut m, 8, 1..=8, t(0));
        m.handle_step_finished(id(1), JobOutcome::Succeeded, t(0));
        let Some(WorkerAction::Flush(p)) = next(&mut m, t(100)) else { panic!("flush") };
        assert_eq!(p.completions.len(), 1);
        // The database is away: waits of 100, 200, then 350 ms (capped), and no call before.
        let mut now = t(100);
        for wait in [100, 200, 350, 350] {
            m.handle_store_error(now);
            assert_eq!(m.poll_action(now.plus(Duration::from_millis(wait - 1))), None, "backing off {wait} ms");
            assert_eq!(m.poll_timeout(), Some(now.plus(Duration::from_millis(wait))));
            // Steps go on finishing meanwhile; their outcomes join the buffer.
            now = now.plus(Duration::from_millis(wait));
            let Some(WorkerAction::Flush(p)) = next(&mut m, now) else { panic!("the same flush comes back") };
            assert!(p.completions.iter().any(|c| c.job_id == id(1)), "the failed flush's outcome is kept");
        }
        assert_eq!(m.store_failures(), 4);
        m.handle_step_finished(id(2), JobOutcome::Succeeded, now);
        // It answers again: everything buffered is flushed, the count resets, claims resume.
        let Some(WorkerAction::Flush(p)) = next(&mut m, now) else { panic!("flush") };
        assert_eq!(p.completions.iter().map(|c| c.job_id).collect::<Vec<_>>(), [id(1), id(2)]);
        m.handle_flushed();
        assert_eq!((m.store_failures(), m.buffered()), (0, 0));
        m.handle_store_error(now);
        m.handle_step_finished(id(3), JobOutcome::Succeeded, now);
        // Its flush would be due in 50 ms; the wait (started over at 100 ms) holds it back.
        assert_eq!(m.poll_timeout(), Some(now.plus(Duration::from_millis(100))), "the waits start over");
    }

    #[test]
    fn after_a_failed_claim_the_jobs_leased_meanwhile_are_adopted_not_left_to_expire() {
        let mut m = machine(8);
        assert!(matches!(next(&mut m, t(0)), Some(WorkerAction::Claim(_))));
        claimed(&mut m, 8, [1], t(0));
        let Some(WorkerAction::Claim(_)) = next(&mut m, t(600)) else { panic!("a refill") };
        // The claim's answer is lost: the store may have leased jobs 2 and 3.
        m.handle_store_error(t(600));
        assert_eq!(m.poll_action(t(650)), None, "backing off first");
        let Some(WorkerAction::Adopt(p)) = m.poll_action(t(700)) else { panic!("adopt before anything else") };
        assert_eq!(
            (p.lease_owner.as_deref(), p.states.as_slice()),
            (Some("w1"), &[crate::model::JobState::Running][..])
        );
        let adopted = m.handle_adopted([(id(1), 1), (id(2), 1), (id(3), 1)], t(700));
        assert_eq!(adopted, [id(2), id(3)], "the ones it did not know of");
        assert_eq!(m.running(), 3);
        match next(&mut m, t(700)) {
            Some(WorkerAction::Claim(p)) => claimed(&mut m, p.limit, [], t(700)),
            other => assert!(!matches!(other, Some(WorkerAction::Adopt(_))), "once"),
        }
        // A failed flush leaves no doubt about claims.
        m.handle_step_finished(id(1), JobOutcome::Succeeded, t(700));
        let Some(WorkerAction::Flush(_)) = next(&mut m, t(800)) else { panic!("flush") };
        m.handle_store_error(t(800));
        assert!(matches!(m.poll_action(t(2000)), Some(WorkerAction::Flush(_))));
    }

    #[test]
    fn heartbeats_every_third_of_the_lease_for_every_held_job() {
        let mut m = machine(4);
        assert!(matches!(next(&mut m, t(0)), Some(WorkerAction::Claim(_))));
        claimed(&mut m, 4, [1, 2], t(0));
        m.handle_step_finished(id(1), JobOutcome::Succeeded, t(5));
        m.handle_flushed(); // nothing under way: keeps the buffer
        assert_eq!(m.poll_timeout(), Some(t(55)));
        let Some(WorkerAction::Flush(_)) = next(&mut m, t(55)) else { panic!("flush first") };
        // Not answered yet: the same flush comes again.
        assert!(matches!(next(&mut m, t(55)), Some(WorkerAction::Flush(_))));
        m.handle_flushed();
        let Some(WorkerAction::Claim(_)) = next(&mut m, t(20_000)) else { panic!("a claim is due") };
        claimed(&mut m, 3, [0u128; 0], t(20_000));
        let Some(WorkerAction::Extend(p)) = next(&mut m, t(20_000)) else { panic!("heartbeat") };
        assert_eq!(p.job_ids, vec![id(2)]);
    }

    #[test]
    fn shutdown_lets_steps_finish_then_hands_back_only_unfinished_and_flushes_the_rest() {
        let mut m = machine(4);
        assert!(matches!(next(&mut m, t(0)), Some(WorkerAction::Claim(_))));
        claimed(&mut m, 4, [1, 2, 3], t(0));
        m.handle_shutdown(t(1_000));
        m.handle_step_finished(id(1), JobOutcome::Succeeded, t(1_001));
        // Within grace: no claim, no hand-back; the finished step is flushed on interval.
        assert_eq!(next(&mut m, t(1_002)), None);
        assert_eq!(m.poll_timeout(), Some(t(1_051)));
        assert_eq!(next(&mut m, t(1_040)), None);
        // Grace is over before the flush: hand back 2 and 3, never 1.
        let Some(WorkerAction::HandBack(p)) = next(&mut m, t(11_000)) else { panic!("hand back") };
        assert_eq!(p.jobs, vec![(id(2), 1), (id(3), 1)]);
        m.handle_handed_back(&[id(2), id(3)]);
        let Some(WorkerAction::Flush(p)) = next(&mut m, t(11_000)) else { panic!("then flush") };
        assert_eq!(p.completions.len(), 1);
        m.handle_flushed();
        assert_eq!(next(&mut m, t(11_000)), Some(WorkerAction::Stop));
        assert!(m.stopped());
    }

    #[test]
    fn shutdown_with_nothing_running_flushes_at_once_and_stops() {
        let mut m = machine(4);
        assert!(matches!(next(&mut m, t(0)), Some(WorkerAction::Claim(_))));
        claimed(&mut m, 4, [1], t(0));
        m.handle_step_finished(id(1), JobOutcome::Succeeded, t(1));
        m.handle_shutdown(t(2));
        assert!(matches!(next(&mut m, t(2)), Some(WorkerAction::Flush(_))));
        m.handle_flushed();
        assert_eq!(next(&mut m, t(2)), Some(WorkerAction::Stop));
    }

    #[test]
    fn an_empty_pool_mapping_stops_claiming() {
        let mut m = machine(4);
        assert!(matches!(m.poll_action(t(0)), Some(WorkerAction::Register(_))));
        m.handle_registered(t(0));
        assert!(matches!(m.poll_action(t(0)), Some(WorkerAction::ReadKinds(_))));
        m.handle_kinds(Some(vec![]), t(0));
        assert_eq!(m.poll_action(t(0)), None);
        assert_eq!(m.poll_timeout(), Some(t(30_000)));
    }
}
