//! The in-memory reference [`Store`] (and [`Inventory`]): the executable definition of the
//! contract, used by tests, the simulator and examples. One mutex around plain maps; it is
//! never held across an `.await`, so every method is atomic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use maas_core::effects::{ApplyEffects, EffectWrite};
use maas_core::host::{Host, StateChange};
use maas_core::id::{BatchId, HostRunId, JobId};
use maas_core::machine::{self, Effects, Expiry, JobContext, Rules, TransitionError};
use maas_core::model::*;
use maas_core::names::{Hostname, Pool, Site};
use maas_core::overlap::Conflict;
use maas_core::plan::StepKind;
use maas_core::policy::leader::{self, LeaderLease};
use maas_core::ports::inventory::{HostFilter, Inventory};
use maas_core::ports::services::{Ticket, TicketKind};
use maas_core::ports::store::*;
use maas_core::rollup::{Rollup, RollupKey};
use maas_core::time::Timestamp;

#[derive(Default)]
struct State {
    hosts: BTreeMap<Hostname, Host>,
    batches: BTreeMap<BatchId, BatchRecord>,
    idempotency: HashMap<(String, String), BatchId>,
    host_runs: HashMap<HostRunId, HostRunRecord>,
    runs_by_batch: HashMap<BatchId, Vec<HostRunId>>,
    jobs: HashMap<JobId, JobRecord>,
    jobs_by_run: HashMap<HostRunId, Vec<JobId>>,
    /// The claim index: available jobs only, by (site, kind, key, id).
    available: BTreeSet<(Site, StepKind, i64, JobId)>,
    leased: BTreeSet<(Timestamp, JobId)>,
    waiting: BTreeSet<(Timestamp, JobId)>,
    tokens: HashMap<String, JobId>,
    claims: HashMap<Hostname, Claim>,
    events: Vec<Event>,
    cursors: HashMap<String, u64>,
    audit: Vec<AuditRecord>,
    rollups: BTreeMap<RollupKey, Rollup>,
    leaders: HashMap<String, LeaderLease>,
    pool_kinds: HashMap<Pool, Vec<StepKind>>,
    workers: BTreeMap<String, WorkerRecord>,
    last_seq: u64,
    /// Every state change written, when the log is on (for invariant checkers).
    log: Option<Vec<Transition>>,
    tickets: Vec<TicketRecord>,
    ticket_keys: HashMap<(TicketKind, BatchId, Option<Hostname>), String>,
}

impl State {
    fn unindex(&mut self, job: &JobRecord) {
        match job.state {
            JobState::Available => {
                self.available.remove(&(job.site.clone(), job.kind, job.key, job.id));
            }
            JobState::Running => {
                if let Some(t) = job.lease_expires_at {
                    self.leased.remove(&(t, job.id));
                }
            }
            JobState::Waiting => {
                if let Some(t) = job.wait_deadline {
                    self.waiting.remove(&(t, job.id));
                }
            }
            _ => {}
        }
    }

    fn append_event(&mut self, e: NewEvent) {
        self.last_seq += 1;
        self.events.push(Event { seq: self.last_seq, batch_id: e.batch_id, at: e.at, kind: e.kind });
    }

    fn put_run(&mut self, run: HostRunRecord) {
        if let Some(log) = &mut self.log {
            let from = self.host_runs.get(&run.id).map(|r| r.state);
            if from != Some(run.state) {
                log.push(Transition::HostRun { id: run.id, from, to: run.state });
            }
        }
        self.host_runs.insert(run.id, run);
    }

    fn put_batch(&mut self, batch: BatchRecord) {
        if let Some(log) = &mut self.log {
            let from = self.batches.get(&batch.id).map(|b| b.state);
            if from != Some(batch.state) {
                log.push(Transition::Batch { id: batch.id, from, to: batch.state });
            }
        }
        self.batches.insert(batch.id, batch);
    }

    /// Writes a job row and keeps the indexes in step with its state.
    fn put_job(&mut self, job: JobRecord) {
        let old = self.jobs.get(&job.id).cloned();
        if let Some(log) = &mut self.log {
            let from = old.as_ref().map(|j| j.state);
            if from != Some(job.state) {
                log.push(Transition::Job { id: job.id, from, to: job.state });
            }
        }
        if let Some(old) = old {
            self.unindex(&old);
        }
        match job.state {
            JobState::Available => {
                self.available.insert((job.site.clone(), job.kind, job.key, job.id));
            }
            JobState::Running => {
                if let Some(t) = job.lease_expires_at {
                    self.leased.insert((t, job.id));
                }
            }
            JobState::Waiting => {
                if let Some(t) = job.wait_deadline {
                    self.waiting.insert((t, job.id));
                }
            }
            _ => {}
        }
        if job.state.is_terminal()
            && let Some(t) = &job.wait_token
        {
            self.tokens.remove(t);
        }
        self.jobs.insert(job.id, job);
    }

    fn job_context(&self, job_id: JobId) -> Result<JobContext, StoreError> {
        let job = self.jobs.get(&job_id).cloned().ok_or_else(|| StoreError::not_found("job", job_id))?;
        let host_run = self
            .host_runs
            .get(&job.host_run_id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("host run", job.host_run_id))?;
        let batch =
            self.batches.get(&job.batch_id).cloned().ok_or_else(|| StoreError::not_found("batch", job.batch_id))?;
        let next = self
            .jobs_by_run
            .get(&job.host_run_id)
            .and_then(|ids| ids.get(job.position as usize + 1))
            .and_then(|id| self.jobs.get(id))
            .cloned();
        Ok(JobContext { batch, host_run, job, next })
    }

    /// Finished host runs (started and ended) passing `p`, by finish time.
    fn host_run_samples(&self, p: &StatsParams) -> Vec<HostRunSample> {
        let mut out: Vec<HostRunSample> = self
            .host_runs
            .values()
            .filter(|r| p.batch_id.is_none_or(|b| r.batch_id == b))
            .filter_map(|r| {
                let (started_at, finished_at) = (r.started_at?, r.finished_at?);
                let inside = p.finished_from.is_none_or(|t| finished_at >= t)
                    && p.finished_until.is_none_or(|t| finished_at < t);
                let action = self.batches.get(&r.batch_id)?.action();
                inside.then(|| HostRunSample {
                    batch_id: r.batch_id,
                    action,
                    site: r.site.clone(),
                    sku: r.sku.clone(),
                    state: r.state,
                    started_at,
                    finished_at,
                })
            })
            .collect();
        out.sort_by_key(|s| (s.finished_at, s.batch_id));
        out
    }

    /// Succeeded steps passing `p`, by finish time.
    fn step_samples(&self, p: &StatsParams) -> Vec<StepSample> {
        let mut out: Vec<StepSample> = self
            .jobs
            .values()
            .filter(|j| j.state == JobState::Succeeded && p.batch_id.is_none_or(|b| j.batch_id == b))
            .filter_map(|j| {
                let finished_at = j.finished_at?;
                let inside = p.finished_from.is_none_or(|t| finished_at >= t)
                    && p.finished_until.is_none_or(|t| finished_at < t);
                if !inside {
                    return None;
                }
                let started_at = if j.kind.is_wait() { j.enqueued_at? } else { j.started_at? };
                let run = self.host_runs.get(&j.host_run_id)?;
                Some(StepSample {
                    batch_id: j.batch_id,
                    action: self.batches.get(&j.batch_id)?.action(),
                    kind: j.kind,
                    site: j.site.clone(),
                    sku: run.sku.clone(),
                    started_at,
                    finished_at,
                })
            })
            .collect();
        out.sort_by_key(|s| (s.finished_at, s.batch_id, s.kind));
        out
    }

    /// Appends to the audit trail, numbering from 1.
    fn append_audit(&mut self, mut entry: AuditRecord) {
        entry.id = self.audit.len() as u64 + 1;
        self.audit.push(entry);
    }

    /// Applies a decision's effects through maas-core's [`ApplyEffects`] (which also
    /// starts the queued host runs the decision allows).
    fn apply(&mut self, fx: Effects, now: Timestamp, rules: &Rules) -> Result<(), TransitionError> {
        let mut apply = ApplyEffects::new(fx, now, rules);
        while let Some(write) = apply.next_write() {
            match write {
                EffectWrite::PutJobs(jobs) => jobs.into_iter().for_each(|j| self.put_job(j)),
                EffectWrite::PutHostRuns(runs) => runs.into_iter().for_each(|r| self.put_run(r)),
                EffectWrite::CancelUnfinishedJobsOf(runs) => {
                    for run_id in runs {
                        for id in self.jobs_by_run.get(&run_id).cloned().unwrap_or_default() {
                            if let Some(mut job) = self.jobs.get(&id).cloned()
                                && machine::cancel_unfinished(&mut job, now)
                            {
                                self.put_job(job);
                            }
                        }
                    }
                }
                EffectWrite::ReleaseClaims(hosts) => hosts.iter().for_each(|h| {
                    self.claims.remove(h);
                }),
                EffectWrite::AppendEvents(events) => events.into_iter().for_each(|e| self.append_event(e)),
                EffectWrite::AppendAudit(entries) => entries.into_iter().for_each(|a| self.append_audit(a)),
                EffectWrite::PutBatch(batch) => self.put_batch(batch),
                EffectWrite::LoadQueued { batch, count } => {
                    let queued: Vec<(HostRunRecord, JobRecord)> = self
                        .runs_by_batch
                        .get(&batch)
                        .into_iter()
                        .flatten()
                        .filter_map(|id| self.host_runs.get(id))
                        .filter(|r| r.state == HostRunState::Queued)
                        .take(count as usize)
                        .filter_map(|r| {
                            let head = self.jobs_by_run.get(&r.id)?.first()?;
                            Some((r.clone(), self.jobs.get(head)?.clone()))
                        })
                        .collect();
                    apply.queued_loaded(queued)?;
                }
            }
        }
        Ok(())
    }
}

fn site_entry<'a>(m: &'a mut BTreeMap<Site, SiteActivity>, site: &Site) -> &'a mut SiteActivity {
    m.entry(site.clone()).or_insert_with(|| SiteActivity::idle(site.clone()))
}

/// One state change a [`MemStore`] wrote (`from: None`: the row was created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A job.
    Job {
        /// The job.
        id: JobId,
        /// Before.
        from: Option<JobState>,
        /// After.
        to: JobState,
    },
    /// A host run.
    HostRun {
        /// The host run.
        id: HostRunId,
        /// Before.
        from: Option<HostRunState>,
        /// After.
        to: HostRunState,
    },
    /// A batch.
    Batch {
        /// The batch.
        id: BatchId,
        /// Before.
        from: Option<BatchState>,
        /// After.
        to: BatchState,
    },
}

/// The in-memory reference store.
pub struct MemStore {
    state: Mutex<State>,
    rules: Rules,
    /// Chain reads (job lists by host run) still to fail as if the database were away.
    chain_reads_to_fail: AtomicUsize,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new(Rules::default())
    }
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore").finish_non_exhaustive()
    }
}

impl MemStore {
    /// An empty store following `rules`.
    pub fn new(rules: Rules) -> Self {
        MemStore { state: Mutex::new(State::default()), rules, chain_reads_to_fail: AtomicUsize::new(0) }
    }

    /// Makes the next `n` chain reads (`job_list` by host run, what steps read) fail with
    /// a backend error, as a database that is away would: for tests of the steps' patience.
    pub fn fail_chain_reads(&self, n: usize) {
        self.chain_reads_to_fail.store(n, Ordering::SeqCst);
    }

    /// Chain reads still to fail (see [`Self::fail_chain_reads`]).
    pub fn chain_reads_failing(&self) -> usize {
        self.chain_reads_to_fail.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty store that logs every state change it writes (see [`Self::take_transitions`]).
    pub fn with_transition_log(rules: Rules) -> Self {
        let store = MemStore::new(rules);
        store.lock().log = Some(Vec::new());
        store
    }

    /// The state changes written since the last call (empty unless the log is on).
    pub fn take_transitions(&self) -> Vec<Transition> {
        self.lock().log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// A snapshot of every host run, by batch and ordinal.
    pub fn host_runs_snapshot(&self) -> Vec<HostRunRecord> {
        let st = self.lock();
        let mut runs: Vec<HostRunRecord> = st.host_runs.values().cloned().collect();
        runs.sort_by_key(|r| (r.batch_id, r.ordinal));
        runs
    }

    /// A snapshot of every batch, oldest first.
    pub fn batches_snapshot(&self) -> Vec<BatchRecord> {
        self.lock().batches.values().cloned().collect()
    }

    /// A snapshot of every job (for invariant checkers and tests).
    pub fn jobs_snapshot(&self) -> Vec<JobRecord> {
        let mut jobs: Vec<JobRecord> = self.lock().jobs.values().cloned().collect();
        jobs.sort_by_key(|j| j.id);
        jobs
    }

    /// A snapshot of every claim (for invariant checkers and tests).
    pub fn claims_snapshot(&self) -> Vec<Claim> {
        let mut claims: Vec<Claim> = self.lock().claims.values().cloned().collect();
        claims.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        claims
    }
}

#[async_trait]
impl QueueStore for MemStore {
    async fn batch_forget_key(&self, batch: BatchId) -> Result<(), StoreError> {
        self.lock().idempotency.retain(|_, b| *b != batch);
        Ok(())
    }

    async fn audit_append(&self, record: AuditRecord) -> Result<(), StoreError> {
        self.lock().append_audit(record);
        Ok(())
    }

    async fn batch_cancel(&self, p: BatchCancelParams) -> Result<BatchRecord, StoreError> {
        let mut st = self.lock();
        let batch = st.batches.get(&p.batch_id).cloned().ok_or_else(|| StoreError::not_found("batch", p.batch_id))?;
        let runs: Vec<(HostRunRecord, Option<JobRecord>)> = st
            .runs_by_batch
            .get(&p.batch_id)
            .into_iter()
            .flatten()
            .filter_map(|id| st.host_runs.get(id))
            .filter(|r| !r.state.is_terminal())
            .map(|r| {
                let current = st
                    .jobs_by_run
                    .get(&r.id)
                    .and_then(|j| j.get(r.step as usize))
                    .and_then(|id| st.jobs.get(id))
                    .cloned();
                (r.clone(), current)
            })
            .collect();
        let fx = machine::decide_cancel(batch, runs, &p.principal, &p.reason, p.now, &self.rules)?;
        st.apply(fx, p.now, &self.rules)?;
        Ok(st.batches[&p.batch_id].clone())
    }

    async fn batch_find_by_key(&self, submitter: &str, key: &str) -> Result<Option<BatchRecord>, StoreError> {
        let st = self.lock();
        let id = st.idempotency.get(&(submitter.to_string(), key.to_string()));
        Ok(id.and_then(|id| st.batches.get(id)).cloned())
    }

    async fn batch_set_paused(&self, p: BatchSetPausedParams) -> Result<BatchRecord, StoreError> {
        let mut st = self.lock();
        let batch = st.batches.get(&p.batch_id).cloned().ok_or_else(|| StoreError::not_found("batch", p.batch_id))?;
        let fx = if p.paused {
            machine::decide_pause(batch, &p.principal, &p.reason, p.now)?
        } else {
            machine::decide_resume(batch, &p.principal, p.now)?
        };
        st.apply(fx, p.now, &self.rules)?;
        Ok(st.batches[&p.batch_id].clone())
    }

    async fn batch_purge_finished(&self, p: PurgeParams) -> Result<PurgeReport, StoreError> {
        let mut st = self.lock();
        let limit = if p.limit == 0 { 100 } else { p.limit };
        let old: Vec<BatchId> = st
            .batches
            .values()
            .filter(|b| b.state.is_terminal() && b.finished_at.is_some_and(|t| t < p.finished_before))
            .take(limit)
            .map(|b| b.id)
            .collect();
        let mut report = PurgeReport::default();
        for id in &old {
            // Folded into the rollups first, in the same critical section as the removal.
            let only = StatsParams { batch_id: Some(*id), ..Default::default() };
            let (runs, steps) = (st.host_run_samples(&only), st.step_samples(&only));
            let image = st.batches.get(id).map(|b| maas_core::rollup::image_of(&b.spec.action)).unwrap_or_default();
            maas_core::rollup::merge(&mut st.rollups, maas_core::rollup::fold(&runs, &steps, |_| image.clone()));
            st.batches.remove(id);
            st.idempotency.retain(|_, b| b != id);
            for run in st.runs_by_batch.remove(id).unwrap_or_default() {
                st.host_runs.remove(&run);
                report.host_runs += 1;
                for job in st.jobs_by_run.remove(&run).unwrap_or_default() {
                    if let Some(j) = st.jobs.remove(&job) {
                        st.unindex(&j);
                        report.jobs += 1;
                    }
                }
            }
        }
        report.batches = old.len();
        let gone: BTreeSet<BatchId> = old.into_iter().collect();
        let before = st.events.len();
        st.events.retain(|e| !(e.seq <= p.events_through && gone.contains(&e.batch_id)));
        report.events = before - st.events.len();
        Ok(report)
    }

    async fn batch_submit(&self, p: BatchSubmitParams) -> Result<BatchSubmitted, StoreError> {
        let nb = p.new_batch;
        let mut st = self.lock();
        if let Some(key) = &nb.batch.spec.idempotency_key
            && let Some(existing) = st.idempotency.get(&(nb.batch.submitter.clone(), key.clone()))
        {
            let existing = st.batches[existing].clone();
            if machine::idempotent_match(&existing, &nb.batch.spec) {
                return Ok(BatchSubmitted { batch: existing, created: false });
            }
            return Err(StoreError::IdempotencyKeyReused { key: key.clone(), batch: existing.id });
        }
        let conflicts: Vec<Conflict> = nb
            .claims
            .iter()
            .filter_map(|c| {
                st.claims.get(&c.hostname).map(|held| Conflict { host: c.hostname.clone(), held_by: held.batch_id })
            })
            .collect();
        if !conflicts.is_empty() {
            return Err(StoreError::Overlap { conflicts });
        }
        let batch = nb.batch.clone();
        if let Some(key) = &batch.spec.idempotency_key {
            st.idempotency.insert((batch.submitter.clone(), key.clone()), batch.id);
        }
        st.runs_by_batch.insert(batch.id, nb.host_runs.iter().map(|r| r.id).collect());
        for run in nb.host_runs {
            st.put_run(run);
        }
        for job in nb.jobs {
            st.jobs_by_run.entry(job.host_run_id).or_default().push(job.id);
            if let Some(t) = &job.wait_token {
                st.tokens.insert(t.clone(), job.id);
            }
            st.put_job(job);
        }
        for c in nb.claims {
            st.claims.insert(c.hostname.clone(), c);
        }
        for e in nb.events {
            st.append_event(e);
        }
        st.append_audit(nb.audit);
        st.put_batch(batch.clone());
        Ok(BatchSubmitted { batch, created: true })
    }

    async fn claim_get_many(&self, hosts: &[Hostname]) -> Result<Vec<Claim>, StoreError> {
        let st = self.lock();
        Ok(hosts.iter().filter_map(|h| st.claims.get(h).cloned()).collect())
    }

    async fn event_cursor_get(&self, consumer: &str) -> Result<u64, StoreError> {
        Ok(self.lock().cursors.get(consumer).copied().unwrap_or(0))
    }

    async fn event_cursor_set(&self, consumer: &str, seq: u64) -> Result<(), StoreError> {
        let mut st = self.lock();
        let c = st.cursors.entry(consumer.to_string()).or_insert(0);
        *c = (*c).max(seq);
        Ok(())
    }

    async fn event_list(&self, p: EventListParams) -> Result<Vec<Event>, StoreError> {
        let st = self.lock();
        let limit = if p.limit == 0 { 1000 } else { p.limit };
        let start = st.events.partition_point(|e| e.seq <= p.after);
        Ok(st.events[start..]
            .iter()
            .filter(|e| p.batch_id.is_none_or(|b| e.batch_id == b))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn host_run_flag_straggler(&self, p: StragglerFlagParams) -> Result<bool, StoreError> {
        let mut st = self.lock();
        let run = st
            .host_runs
            .get(&p.host_run_id)
            .cloned()
            .ok_or_else(|| StoreError::not_found("host run", p.host_run_id))?;
        let Some(kind) = st
            .jobs_by_run
            .get(&run.id)
            .and_then(|ids| ids.get(p.position as usize))
            .and_then(|id| st.jobs.get(id))
            .map(|j| j.kind)
        else {
            return Ok(false);
        };
        match machine::decide_straggler(run, p.position, kind, p.now) {
            Some(fx) => {
                st.apply(fx, p.now, &self.rules)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn job_claim(&self, p: JobClaimParams) -> Result<Vec<JobRecord>, StoreError> {
        let mut st = self.lock();
        let mut candidates: Vec<(i64, JobId)> = Vec::new();
        for kind in &p.kinds {
            let lo = (p.site.clone(), *kind, i64::MIN, JobId(uuid::Uuid::nil()));
            let hi = (p.site.clone(), *kind, i64::MAX, JobId(uuid::Uuid::max()));
            candidates.extend(
                st.available
                    .range(lo..=hi)
                    .filter(|(_, _, _, id)| st.jobs.get(id).is_some_and(|j| j.run_at <= p.now))
                    .take(p.limit)
                    .map(|(_, _, key, id)| (*key, *id)),
            );
        }
        candidates.sort_unstable();
        candidates.truncate(p.limit);
        let mut out = Vec::with_capacity(candidates.len());
        for (_, id) in candidates {
            let mut job = st.jobs[&id].clone();
            machine::lease_job(&mut job, &p.owner, p.now, p.lease)?;
            st.put_job(job.clone());
            out.push(job);
        }
        Ok(out)
    }

    async fn job_complete_many(
        &self,
        p: JobCompleteManyParams,
    ) -> Result<Vec<Result<(), TransitionError>>, StoreError> {
        let mut st = self.lock();
        let mut results = Vec::with_capacity(p.completions.len());
        for c in p.completions {
            let ctx = st.job_context(c.job_id)?;
            let decided = machine::check_fence(&ctx.job, c.attempt)
                .and_then(|()| machine::decide_job_outcome(ctx, c.outcome, p.now, &self.rules));
            results.push(match decided {
                Ok(fx) => st.apply(fx, p.now, &self.rules),
                Err(e) => Err(e),
            });
        }
        Ok(results)
    }

    async fn job_heartbeat_many(&self, p: JobHeartbeatManyParams) -> Result<Vec<JobId>, StoreError> {
        let mut st = self.lock();
        let mut held = Vec::new();
        for id in p.job_ids {
            if let Some(mut job) = st.jobs.get(&id).cloned().filter(|j| machine::lease_is_held(j, &p.owner)) {
                job.lease_expires_at = Some(p.now.plus(p.lease));
                st.put_job(job);
                held.push(id);
            }
        }
        Ok(held)
    }

    async fn job_release_many(&self, p: JobReleaseParams) -> Result<Vec<JobId>, StoreError> {
        let mut st = self.lock();
        let mut released = Vec::new();
        for (id, attempt) in p.jobs {
            let Some(job) = st.jobs.get(&id).cloned() else { continue };
            if let Ok(job) = machine::hand_back(job, &p.owner, attempt, p.now) {
                st.put_job(job);
                released.push(id);
            }
        }
        Ok(released)
    }

    async fn job_rescue_expired(&self, p: JobRescueParams) -> Result<RescueReport, StoreError> {
        let mut st = self.lock();
        let mut report = RescueReport::default();
        let limit = if p.limit == 0 { usize::MAX } else { p.limit };
        // Candidates from the deadline indexes; maas-core's `Expiry` decides each.
        for expiry in Expiry::ALL {
            let index = match expiry {
                Expiry::Lease => &st.leased,
                Expiry::Wait => &st.waiting,
            };
            let room = limit.saturating_sub(report.retried.len() + report.failed.len() + report.wait_expired.len());
            let due: Vec<JobId> = index.iter().take_while(|(t, _)| *t <= p.now).take(room).map(|(_, id)| *id).collect();
            for id in due {
                let ctx = st.job_context(id)?;
                let Some(fx) = expiry.decide(ctx, p.now, &self.rules)? else { continue };
                st.apply(fx, p.now, &self.rules)?;
                match expiry {
                    Expiry::Wait => report.wait_expired.push(id),
                    Expiry::Lease if st.jobs[&id].state == JobState::Failed => report.failed.push(id),
                    Expiry::Lease => report.retried.push(id),
                }
            }
        }
        Ok(report)
    }

    async fn job_forfeit_leases(&self, p: JobForfeitParams) -> Result<RescueReport, StoreError> {
        let mut st = self.lock();
        let mut report = RescueReport::default();
        let leased: Vec<JobId> = st.leased.iter().map(|(_, id)| *id).collect();
        for id in leased {
            let ctx = st.job_context(id)?;
            let Some(fx) = machine::decide_lease_forfeited(ctx, &p.instance, p.now, &self.rules)? else { continue };
            st.apply(fx, p.now, &self.rules)?;
            match st.jobs[&id].state {
                JobState::Failed => report.failed.push(id),
                _ => report.retried.push(id),
            }
        }
        Ok(report)
    }

    async fn job_resolve_wait(&self, p: JobResolveWaitParams) -> Result<JobRecord, StoreError> {
        let mut st = self.lock();
        let id = *st.tokens.get(&p.token).ok_or(TransitionError::WrongToken)?;
        let ctx = st.job_context(id)?;
        let fx = machine::decide_wait_result(ctx, &p.token, p.outcome, p.now, &self.rules)?;
        st.apply(fx, p.now, &self.rules)?;
        Ok(st.jobs[&id].clone())
    }

    async fn leader_attempt_elect(&self, p: LeaderElectParams) -> Result<bool, StoreError> {
        let mut st = self.lock();
        match leader::elect(st.leaders.get(&p.name), &p.owner, p.now, p.ttl) {
            Some(lease) => {
                st.leaders.insert(p.name, lease);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn leader_resign(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let mut st = self.lock();
        if st.leaders.get(name).is_some_and(|l| l.owner == owner) {
            st.leaders.remove(name);
        }
        Ok(())
    }

    async fn pool_kinds_get(&self, pool: &Pool) -> Result<Option<Vec<StepKind>>, StoreError> {
        Ok(self.lock().pool_kinds.get(pool).cloned())
    }

    async fn pool_kinds_set(&self, pool: &Pool, kinds: &[StepKind]) -> Result<(), StoreError> {
        self.lock().pool_kinds.insert(pool.clone(), kinds.to_vec());
        Ok(())
    }

    async fn ticket_open(&self, ticket: Ticket) -> Result<(String, bool), StoreError> {
        let mut st = self.lock();
        let key = (ticket.kind, ticket.batch_id, ticket.host.clone());
        if let Some(id) = st.ticket_keys.get(&key) {
            return Ok((id.clone(), false));
        }
        let id = format!("T-{:06}", st.tickets.len() + 1);
        st.ticket_keys.insert(key, id.clone());
        st.tickets.push(TicketRecord { id: id.clone(), ticket });
        Ok((id, true))
    }

    async fn worker_heartbeat(&self, p: WorkerHeartbeatParams) -> Result<(), StoreError> {
        let mut st = self.lock();
        let w = st.workers.entry(p.id.clone()).or_insert_with(|| WorkerRecord {
            id: p.id.clone(),
            site: p.site.clone(),
            pool: p.pool.clone(),
            started_at: p.now,
            last_heartbeat: p.now,
        });
        w.site = p.site;
        w.pool = p.pool;
        w.last_heartbeat = w.last_heartbeat.max(p.now);
        Ok(())
    }
}

#[async_trait]
impl ReportStore for MemStore {
    async fn audit_list(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let st = self.lock();
        Ok(st.audit.iter().rev().filter(|a| filter.matches(a)).take(filter.page_size()).cloned().collect())
    }

    async fn batch_get(&self, id: BatchId) -> Result<Option<BatchRecord>, StoreError> {
        Ok(self.lock().batches.get(&id).cloned())
    }

    async fn batch_list(&self, p: BatchListParams) -> Result<Vec<BatchRecord>, StoreError> {
        let st = self.lock();
        let limit = if p.limit == 0 { 100 } else { p.limit };
        Ok(st
            .batches
            .values()
            .rev()
            .filter(|b| p.before.is_none_or(|before| b.id < before))
            .filter(|b| p.submitter.as_ref().is_none_or(|s| &b.submitter == s))
            .filter(|b| p.states.is_empty() || p.states.contains(&b.state))
            .filter(|b| p.action.is_none_or(|a| b.action() == a))
            .filter(|b| p.created_from.is_none_or(|t| b.created_at >= t))
            .filter(|b| p.created_until.is_none_or(|t| b.created_at < t))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn host_run_list(&self, p: HostRunListParams) -> Result<Vec<HostRunRecord>, StoreError> {
        let st = self.lock();
        let batch_ids: Vec<BatchId> = match p.batch_id {
            Some(b) => vec![b],
            None => st.batches.keys().copied().collect(),
        };
        Ok(batch_ids
            .iter()
            .flat_map(|b| st.runs_by_batch.get(b).into_iter().flatten())
            .filter_map(|id| st.host_runs.get(id))
            .filter(|r| p.hostnames.is_empty() || p.hostnames.contains(&r.hostname))
            .filter(|r| p.states.is_empty() || p.states.contains(&r.state))
            .cloned()
            .collect())
    }

    async fn job_list(&self, p: JobListParams) -> Result<Vec<JobRecord>, StoreError> {
        if p.host_run_id.is_some()
            && self.chain_reads_to_fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
        {
            return Err(StoreError::Backend {
                message: "the database is away (MemStore::fail_chain_reads)".into(),
                source: None,
            });
        }
        let st = self.lock();
        let runs: Vec<HostRunId> = match (p.host_run_id, p.batch_id) {
            (Some(r), _) => vec![r],
            (None, Some(b)) => st.runs_by_batch.get(&b).cloned().unwrap_or_default(),
            (None, None) => {
                let mut all: Vec<&HostRunRecord> = st.host_runs.values().collect();
                all.sort_by_key(|r| (r.batch_id, r.ordinal));
                all.iter().map(|r| r.id).collect()
            }
        };
        Ok(runs
            .iter()
            .flat_map(|r| st.jobs_by_run.get(r).into_iter().flatten())
            .filter_map(|id| st.jobs.get(id))
            .filter(|j| p.states.is_empty() || p.states.contains(&j.state))
            .filter(|j| p.lease_owner.is_none() || j.lease_owner == p.lease_owner)
            .cloned()
            .collect())
    }

    async fn stats_host_runs(&self, p: StatsParams) -> Result<Vec<HostRunSample>, StoreError> {
        Ok(self.lock().host_run_samples(&p))
    }

    async fn stats_active(&self) -> Result<Vec<SiteActivity>, StoreError> {
        let st = self.lock();
        let mut by_site: BTreeMap<Site, SiteActivity> = BTreeMap::new();
        for r in st.host_runs.values().filter(|r| r.state == HostRunState::Running) {
            site_entry(&mut by_site, &r.site).hosts_in_flight += 1;
        }
        for (site, _, _, _) in &st.available {
            site_entry(&mut by_site, site).jobs_queued += 1;
        }
        for (_, id) in &st.leased {
            if let Some(j) = st.jobs.get(id) {
                site_entry(&mut by_site, &j.site).jobs_running += 1;
            }
        }
        for (_, id) in &st.waiting {
            if let Some(j) = st.jobs.get(id) {
                site_entry(&mut by_site, &j.site).jobs_waiting += 1;
            }
        }
        Ok(by_site.into_values().collect())
    }

    async fn stats_queues(&self) -> Result<Vec<QueueDepth>, StoreError> {
        let st = self.lock();
        let mut by_queue: BTreeMap<(Site, StepKind), QueueDepth> = BTreeMap::new();
        for (site, kind, _, id) in &st.available {
            let q = by_queue.entry((site.clone(), *kind)).or_insert_with(|| QueueDepth {
                site: site.clone(),
                kind: *kind,
                queued: 0,
                oldest_enqueued_at: None,
            });
            q.queued += 1;
            let since = st.jobs.get(id).and_then(|j| j.enqueued_at);
            q.oldest_enqueued_at = match (q.oldest_enqueued_at, since) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(by_queue.into_values().collect())
    }

    async fn stats_steps(&self, p: StatsParams) -> Result<Vec<StepSample>, StoreError> {
        Ok(self.lock().step_samples(&p))
    }

    async fn rollup_list(&self, p: RollupListParams) -> Result<Vec<Rollup>, StoreError> {
        let st = self.lock();
        let from = p.from.map(maas_core::rollup::day_of);
        Ok(st
            .rollups
            .values()
            .filter(|r| from.is_none_or(|t| r.key.day >= t) && p.until.is_none_or(|t| r.key.day < t))
            .cloned()
            .collect())
    }

    async fn ticket_list(&self, limit: usize) -> Result<Vec<TicketRecord>, StoreError> {
        let st = self.lock();
        Ok(st.tickets.iter().rev().take(if limit == 0 { usize::MAX } else { limit }).cloned().collect())
    }

    async fn worker_list(&self, p: WorkerListParams) -> Result<Vec<WorkerRecord>, StoreError> {
        let st = self.lock();
        Ok(st
            .workers
            .values()
            .filter(|w| p.site.as_ref().is_none_or(|s| &w.site == s))
            .filter(|w| p.fresh_since.is_none_or(|t| w.last_heartbeat >= t))
            .cloned()
            .collect())
    }
}

#[async_trait]
impl Inventory for MemStore {
    async fn host_get_many(&self, names: &[Hostname]) -> Result<Vec<Host>, StoreError> {
        let st = self.lock();
        Ok(names.iter().filter_map(|n| st.hosts.get(n).cloned()).collect())
    }

    async fn host_list(&self, f: HostFilter) -> Result<Vec<Host>, StoreError> {
        let st = self.lock();
        let limit = if f.limit == 0 { usize::MAX } else { f.limit };
        let start = match &f.after {
            Some(a) => std::ops::Bound::Excluded(a.clone()),
            None => std::ops::Bound::Unbounded,
        };
        Ok(st
            .hosts
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, h)| h)
            .filter(|h| f.site.as_ref().is_none_or(|s| &h.site == s))
            .filter(|h| f.pool.as_ref().is_none_or(|p| &h.pool == p))
            .filter(|h| f.state.is_none_or(|s| h.state == s))
            .filter(|h| f.mac.is_none_or(|m| h.mac == Some(m)))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn host_upsert_many(&self, hosts: Vec<Host>) -> Result<usize, StoreError> {
        let mut st = self.lock();
        let n = hosts.len();
        let macs: std::collections::HashSet<_> = hosts.iter().filter_map(|h| h.mac).collect();
        let holders: Vec<&Host> = st.hosts.values().filter(|h| h.mac.is_some_and(|m| macs.contains(&m))).collect();
        if let Some((mac, hosts)) = maas_core::host::duplicate_macs(&hosts, holders).into_iter().next() {
            return Err(StoreError::DuplicateMac { mac, hosts });
        }
        for h in hosts {
            st.hosts.insert(h.hostname.clone(), h);
        }
        Ok(n)
    }

    async fn host_set_state(&self, name: &Hostname, change: StateChange) -> Result<(), StoreError> {
        let mut st = self.lock();
        let h = st.hosts.get_mut(name).ok_or_else(|| StoreError::not_found("host", name))?;
        change.apply(h);
        Ok(())
    }
}
