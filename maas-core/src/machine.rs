//! The decisions: pure functions from the rows a change touches to the rows it writes.
//!
//! Stores load the rows named in a context, call one of these functions, and write the
//! returned [`Effects`] in the same transaction. They never decide anything themselves —
//! so every backend behaves the same, and the in-memory reference store and the SQL stores
//! are held to one conformance suite.
//!
//! The rules in one place:
//! - Submitting creates every host run `queued` and every job `blocked`, then starts the
//!   first `max_in_flight` host runs: their head job becomes `available`.
//! - A job that succeeds makes the next job of its chain `available` (or `waiting`, for a
//!   callback step); the last one ends the host run `succeeded`.
//! - A job that fails with attempts left goes back to `available` after a backoff (keeping
//!   its queue key, so it keeps its age); otherwise its host run ends `failed` and the rest
//!   of the chain is cancelled.
//! - Ending a host run releases its claim, may pause the batch (more failures than the
//!   budget), may complete it (nothing unfinished), and frees a slot for the next queued
//!   host run while the batch is running.
//! - Cancel ends every host run that is not mid-step at once; a host mid-step finishes that
//!   step, then ends `cancelled`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::authz::Principal;
use crate::batch::BatchSpec;
use crate::id::{HostRunId, IdGenerator, JobId};
use crate::model::*;
use crate::names::{Hostname, Pool, Site, Sku};
use crate::plan::{StepKind, StepParams, plan_for};
use crate::priority::PriorityPolicy;
use crate::time::Timestamp;

/// How long failed attempts wait before the retry: `base * 2^(attempt-1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { base: Duration::from_secs(5), max: Duration::from_secs(300) }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp).min(self.max)
    }
}

/// The tunable rules the decisions follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rules {
    /// Priority class offsets.
    pub priority: PriorityPolicy,
    /// Retry backoff.
    pub retry: RetryPolicy,
}

/// A change the machines refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// A state change the machine does not allow.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// The job is not running or waiting, so it has no outcome to record.
    #[error("job {job} is {state}, not in progress")]
    NotInProgress {
        /// The job.
        job: JobId,
        /// Its state.
        state: JobState,
    },
    /// A completion from an attempt that no longer holds the job (fencing).
    #[error("job {job}: attempt {attempt} no longer holds it (state {state}, attempt {current})")]
    StaleAttempt {
        /// The job.
        job: JobId,
        /// The attempt that reported.
        attempt: u32,
        /// The job's state now.
        state: JobState,
        /// The job's attempt now.
        current: u32,
    },
    /// The batch is already terminal.
    #[error("batch is already {state}")]
    BatchFinished {
        /// Its state.
        state: BatchState,
    },
    /// A callback token that does not match the parked job.
    #[error("callback token does not match a waiting job")]
    WrongToken,
}

/// A host as a batch needs it (from the inventory, at submit time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTarget {
    /// The host.
    pub hostname: Hostname,
    /// Its site.
    pub site: Site,
    /// Its pool.
    pub pool: Pool,
    /// Its SKU.
    pub sku: Sku,
}

/// Everything a submission writes, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBatch {
    /// The batch.
    pub batch: BatchRecord,
    /// Its host runs, in ordinal order.
    pub host_runs: Vec<HostRunRecord>,
    /// Every job of every chain.
    pub jobs: Vec<JobRecord>,
    /// One claim per host.
    pub claims: Vec<Claim>,
    /// Outbox events.
    pub events: Vec<NewEvent>,
    /// The audit entry.
    pub audit: AuditRecord,
}

/// Rows to write after a decision, applied in one transaction in this order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Effects {
    /// Jobs to overwrite (by id).
    pub jobs: Vec<JobRecord>,
    /// Host runs to overwrite (by id).
    pub host_runs: Vec<HostRunRecord>,
    /// The batch to overwrite.
    pub batch: Option<BatchRecord>,
    /// Host runs whose unfinished jobs ([`CANCELLABLE`]) become `cancelled` with
    /// `finished_at = now` ([`cancel_unfinished`]).
    pub cancel_jobs_of: Vec<HostRunId>,
    /// Claims to delete.
    pub released_claims: Vec<Hostname>,
    /// Events to append.
    pub events: Vec<NewEvent>,
    /// Then start this many queued host runs of the batch (lowest ordinal first) with
    /// [`start_queued_runs`].
    pub start_queued: u32,
    /// Audit entries to write with the change (a user's cancel, pause or resume).
    pub audit: Vec<AuditRecord>,
}

/// The audit entry of `principal`'s accepted `op` on `batch` (its hosts named, so a host's
/// trail shows who stopped or resumed work on it).
pub fn batch_audit(
    op: AuditOp,
    batch: &BatchRecord,
    principal: &Principal,
    reason: &str,
    now: Timestamp,
) -> AuditRecord {
    let names: Vec<&str> = batch.spec.hosts.iter().map(Hostname::as_str).collect();
    let mut a = AuditRecord::new(op, &principal.name, now).on_hosts(&names);
    a.batch_id = Some(batch.id);
    a.action = Some(batch.spec.action.clone());
    a.summary = format!("{op} batch {} ({}, {} hosts)", batch.id, batch.spec.action, names.len());
    a.reason = (!reason.is_empty()).then(|| reason.to_string());
    a
}

impl Effects {
    /// Whether applying these effects changes the batch `seen` (the batch the decision was
    /// made on) beyond its `updated_at`: a host run starts or ends, an event is written, or
    /// a counter or state moves. When it does not, a store may leave the batch row alone, so
    /// chain advances and retries never queue on their batch's row.
    pub fn changes_batch(&self, seen: &BatchRecord) -> bool {
        self.start_queued > 0
            || !self.events.is_empty()
            || self.batch.as_ref().is_some_and(|b| {
                let mut same_time = b.clone();
                same_time.updated_at = seen.updated_at;
                same_time != *seen
            })
    }

    /// Whether these effects touch one chain only (its jobs and host run): the batch at most
    /// in `updated_at`, no cancellations, no released claims. Such effects from different
    /// chains commute, so a store may write many of them in one set-based statement.
    pub fn is_chain_local(&self, seen: &BatchRecord) -> bool {
        !self.changes_batch(seen) && self.cancel_jobs_of.is_empty() && self.released_claims.is_empty()
    }
}

/// What a worker (or callback) reports for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum JobOutcome {
    /// The step did what it should (verified).
    Succeeded,
    /// The step failed.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether another attempt may help (timeouts, busy BMCs), or not (a rejected
        /// command, a failed install).
        retryable: bool,
    },
}

/// The rows a job outcome touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobContext {
    /// The batch.
    pub batch: BatchRecord,
    /// The job's host run.
    pub host_run: HostRunRecord,
    /// The job.
    pub job: JobRecord,
    /// The next job of the chain (position + 1), if any.
    pub next: Option<JobRecord>,
}

/// How many queued host runs may start now.
pub fn releasable(batch: &BatchRecord) -> u32 {
    if batch.state != BatchState::Running {
        return 0;
    }
    batch.counts.queued.min(batch.spec.rollout.max_in_flight.saturating_sub(batch.counts.running))
}

/// Makes a blocked job runnable: `available` with its queue key, or `waiting` with its
/// deadline for a callback step.
fn activate(
    job: &mut JobRecord,
    not_before: Option<Timestamp>,
    now: Timestamp,
    rules: &Rules,
) -> Result<(), TransitionError> {
    if job.kind.is_wait() {
        job.state.check(JobState::Waiting)?;
        job.state = JobState::Waiting;
        job.enqueued_at = Some(now);
        job.wait_deadline = Some(now.plus(job.params.wait().unwrap_or(Duration::ZERO)));
    } else {
        job.state.check(JobState::Available)?;
        let enqueued = not_before.map_or(now, |t| t.max(now));
        job.state = JobState::Available;
        job.enqueued_at = Some(enqueued);
        job.run_at = enqueued;
        job.key = rules.priority.queue_key(enqueued, job.priority);
    }
    Ok(())
}

/// Builds every row of a new batch (the store inserts them in one transaction, claims
/// under a unique key on hostname). `targets` are the spec's hosts, in order.
pub fn plan_submission(
    spec: BatchSpec,
    submitter: &Principal,
    targets: &[HostTarget],
    now: Timestamp,
    ids: &IdGenerator,
    rules: &Rules,
) -> NewBatch {
    let batch_id = ids.batch();
    let plan = plan_for(&spec.action);
    let forced = spec.force.is_some();
    let n = targets.len() as u32;
    let mut host_runs = Vec::with_capacity(targets.len());
    let mut jobs = Vec::with_capacity(targets.len() * plan.len());
    let mut claims = Vec::with_capacity(targets.len());
    for (ordinal, t) in targets.iter().enumerate() {
        let run_id = ids.host_run();
        host_runs.push(HostRunRecord {
            id: run_id,
            batch_id,
            ordinal: ordinal as u32,
            hostname: t.hostname.clone(),
            site: t.site.clone(),
            pool: t.pool.clone(),
            sku: t.sku.clone(),
            state: HostRunState::Queued,
            step: 0,
            cancel_requested: false,
            started_at: None,
            finished_at: None,
            last_error: None,
            straggler_step: None,
        });
        for (position, step) in plan.iter().enumerate() {
            jobs.push(JobRecord {
                id: ids.job(),
                batch_id,
                host_run_id: run_id,
                hostname: t.hostname.clone(),
                site: t.site.clone(),
                position: position as u32,
                kind: step.kind,
                params: StepParams { forced, ..step.params.clone() },
                state: JobState::Blocked,
                attempt: 0,
                max_attempts: step.max_attempts,
                priority: spec.priority,
                key: 0,
                run_at: now,
                lease_owner: None,
                lease_expires_at: None,
                wait_token: step.kind.is_wait().then(|| ids.token()),
                wait_deadline: None,
                created_at: now,
                enqueued_at: None,
                started_at: None,
                finished_at: None,
                last_error: None,
            });
        }
        claims.push(Claim { hostname: t.hostname.clone(), batch_id, host_run_id: run_id, since: now });
    }
    let audit = spec.audit_entry(&submitter.name, now, batch_id);
    let mut batch = BatchRecord {
        id: batch_id,
        submitter: submitter.name.clone(),
        fingerprint: spec.fingerprint(),
        spec: std::sync::Arc::new(spec),
        state: BatchState::Running,
        pause_reason: None,
        cancel_reason: None,
        counts: HostRunCounts { queued: n, ..Default::default() },
        created_at: now,
        updated_at: now,
        finished_at: None,
        pools: targets.iter().map(|t| t.pool.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect(),
    };
    let mut events = vec![NewEvent {
        batch_id,
        at: now,
        kind: EventKind::BatchAccepted {
            action: batch.spec.action.clone(),
            hosts: n,
            submitter: submitter.name.clone(),
        },
    }];
    let start = releasable(&batch) as usize;
    let steps = plan.len();
    for i in 0..start {
        let (run, head) = (&mut host_runs[i], &mut jobs[i * steps]);
        // Fresh rows: these transitions are legal by construction.
        start_one(&mut batch, run, head, now, rules, &mut events).unwrap_or_default();
    }
    NewBatch { batch, host_runs, jobs, claims, events, audit }
}

fn start_one(
    batch: &mut BatchRecord,
    run: &mut HostRunRecord,
    head: &mut JobRecord,
    now: Timestamp,
    rules: &Rules,
    events: &mut Vec<NewEvent>,
) -> Result<(), TransitionError> {
    run.state.check(HostRunState::Running)?;
    activate(head, batch.spec.not_before, now, rules)?;
    run.state = HostRunState::Running;
    run.started_at = Some(now);
    run.step = head.position;
    batch.counts.shift(HostRunState::Queued, HostRunState::Running);
    events.push(NewEvent { batch_id: batch.id, at: now, kind: EventKind::HostStarted { host: run.hostname.clone() } });
    Ok(())
}

/// Starts queued host runs (each with its head job), as many as [`releasable`] allows;
/// extra pairs are left alone.
pub fn start_queued_runs(
    mut batch: BatchRecord,
    runs: Vec<(HostRunRecord, JobRecord)>,
    now: Timestamp,
    rules: &Rules,
) -> Result<Effects, TransitionError> {
    let mut fx = Effects::default();
    let n = releasable(&batch) as usize;
    for (mut run, mut head) in runs.into_iter().take(n) {
        start_one(&mut batch, &mut run, &mut head, now, rules, &mut fx.events)?;
        fx.host_runs.push(run);
        fx.jobs.push(head);
    }
    batch.updated_at = now;
    fx.batch = Some(batch);
    Ok(fx)
}

/// What a claim writes on every job it takes: the job becomes `running` under `owner`
/// until `expires_at`, started at `started_at`, and its attempt counter goes up by one (the
/// fencing token the completion must present). SQL stores write these columns for a whole
/// claim in one statement; [`lease_job`] is the same change on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The worker taking the jobs.
    pub owner: String,
    /// When the lease runs out unless heartbeated.
    pub expires_at: Timestamp,
    /// The claim time.
    pub started_at: Timestamp,
}

impl LeaseGrant {
    /// The state claims take jobs from.
    pub const FROM: JobState = JobState::Available;
    /// The state a leased job is in.
    pub const TO: JobState = JobState::Running;

    /// A lease for `owner` from `now` for `ttl`.
    pub fn new(owner: &str, now: Timestamp, ttl: Duration) -> Self {
        Self { owner: owner.to_string(), expires_at: now.plus(ttl), started_at: now }
    }

    /// Applies the lease to `job` (which must be available).
    pub fn apply(&self, job: &mut JobRecord) -> Result<(), TransitionError> {
        job.state.check(Self::TO)?;
        job.state = Self::TO;
        job.attempt += 1;
        job.lease_owner = Some(self.owner.clone());
        job.lease_expires_at = Some(self.expires_at);
        job.started_at = Some(self.started_at);
        Ok(())
    }
}

/// The job states [`Effects::cancel_jobs_of`] cancels: not started, or parked.
pub const CANCELLABLE: [JobState; 3] = [JobState::Blocked, JobState::Available, JobState::Waiting];

/// Applies [`Effects::cancel_jobs_of`] to one job of such a host run: cancels it at `now`
/// if it is in a [`CANCELLABLE`] state. Returns whether it did.
pub fn cancel_unfinished(job: &mut JobRecord, now: Timestamp) -> bool {
    if !CANCELLABLE.contains(&job.state) {
        return false;
    }
    job.state = JobState::Cancelled;
    job.finished_at = Some(now);
    true
}

/// Leases an available job to `owner` until `now + ttl` (a claim). The attempt counter
/// goes up: it is the fencing token the completion must present.
pub fn lease_job(job: &mut JobRecord, owner: &str, now: Timestamp, ttl: Duration) -> Result<(), TransitionError> {
    LeaseGrant::new(owner, now, ttl).apply(job)
}

/// Whether `owner`'s lease on `job` may be extended (it is running and theirs).
pub fn lease_is_held(job: &JobRecord, owner: &str) -> bool {
    job.state == JobState::Running && job.lease_owner.as_deref() == Some(owner)
}

/// Fencing: a completion from `attempt` applies only while the job is running that attempt.
pub fn check_fence(job: &JobRecord, attempt: u32) -> Result<(), TransitionError> {
    if job.state == JobState::Running && job.attempt == attempt {
        Ok(())
    } else {
        Err(TransitionError::StaleAttempt { job: job.id, attempt, state: job.state, current: job.attempt })
    }
}

fn clear_lease(job: &mut JobRecord) {
    job.lease_owner = None;
    job.lease_expires_at = None;
}

/// Decides what an outcome of a running or waiting job implies for its chain, host run and
/// batch.
pub fn decide_job_outcome(
    ctx: JobContext,
    outcome: JobOutcome,
    now: Timestamp,
    rules: &Rules,
) -> Result<Effects, TransitionError> {
    let JobContext { mut batch, mut host_run, mut job, next } = ctx;
    if !matches!(job.state, JobState::Running | JobState::Waiting) {
        return Err(TransitionError::NotInProgress { job: job.id, state: job.state });
    }
    let mut fx = Effects::default();
    match outcome {
        JobOutcome::Succeeded => {
            job.state.check(JobState::Succeeded)?;
            job.state = JobState::Succeeded;
            job.finished_at = Some(now);
            clear_lease(&mut job);
            match next {
                _ if host_run.cancel_requested => {
                    end_host_run(&mut batch, &mut host_run, HostRunState::Cancelled, None, now, &mut fx)?
                }
                Some(mut next) => {
                    activate(&mut next, None, now, rules)?;
                    host_run.step = next.position;
                    fx.jobs.push(next);
                }
                None => end_host_run(&mut batch, &mut host_run, HostRunState::Succeeded, None, now, &mut fx)?,
            }
        }
        JobOutcome::Failed { error, retryable } => {
            job.last_error = Some(error.clone());
            let attempts_left = job.attempt < job.max_attempts;
            // A cancelled host run retries only its fence: its claim waits for the power-off.
            let may_retry = !host_run.cancel_requested || job.kind == StepKind::Fence;
            if retryable && attempts_left && job.state == JobState::Running && may_retry {
                job.state.check(JobState::Available)?;
                job.state = JobState::Available;
                job.run_at = now.plus(rules.retry.backoff(job.attempt));
                clear_lease(&mut job);
            } else {
                job.state.check(JobState::Failed)?;
                job.state = JobState::Failed;
                job.finished_at = Some(now);
                clear_lease(&mut job);
                let failure = Failure { step: job.kind, error, wedged: retryable && !attempts_left };
                end_host_run(&mut batch, &mut host_run, HostRunState::Failed, Some(failure), now, &mut fx)?;
            }
        }
    }
    fx.jobs.insert(0, job);
    fx.host_runs.push(host_run);
    batch.updated_at = now;
    fx.batch = Some(batch);
    Ok(fx)
}

/// The two ways a job in progress runs out of time, and what the rescuer does about each.
/// The one owner of the expiry rule: stores pick candidates by [`Expiry::state`] and
/// [`Expiry::deadline`] (an indexed range scan) and decide each, under their lock, with
/// [`Expiry::decide`], which re-checks [`Expiry::is_due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Expiry {
    /// A running job's lease ended: its worker is presumed dead (a failed, retryable
    /// attempt).
    Lease,
    /// A waiting job's deadline passed without its callback (a final failure).
    Wait,
}

impl Expiry {
    /// Both, in the order the rescuer takes them.
    pub const ALL: [Expiry; 2] = [Expiry::Lease, Expiry::Wait];

    /// The state a job must be in to expire this way.
    pub fn state(self) -> JobState {
        match self {
            Expiry::Lease => JobState::Running,
            Expiry::Wait => JobState::Waiting,
        }
    }

    /// The job's deadline under this expiry.
    pub fn deadline(self, job: &JobRecord) -> Option<Timestamp> {
        match self {
            Expiry::Lease => job.lease_expires_at,
            Expiry::Wait => job.wait_deadline,
        }
    }

    /// Whether `job` has expired this way at `now`: in [`Expiry::state`], with its
    /// deadline at or before `now`.
    pub fn is_due(self, job: &JobRecord, now: Timestamp) -> bool {
        job.state == self.state() && self.deadline(job).is_some_and(|t| t <= now)
    }

    /// What expiring implies, or `None` when the job is not (or no longer) due — a
    /// heartbeat, completion or callback won the race.
    pub fn decide(self, ctx: JobContext, now: Timestamp, rules: &Rules) -> Result<Option<Effects>, TransitionError> {
        if !self.is_due(&ctx.job, now) {
            return Ok(None);
        }
        match self {
            Expiry::Lease => decide_lease_expired(ctx, now, rules).map(Some),
            Expiry::Wait => decide_wait_expired(ctx, now, rules).map(Some),
        }
    }
}

/// Whether recording `outcome` for the current job of `run` could end the run: a failure,
/// the chain's last step (`has_next` false), or a run whose cancel was requested. Stores
/// that lock a batch only when a completion may change it use this to lock up front
/// instead of deciding twice; the decision itself ([`decide_job_outcome`]) is the truth.
pub fn may_end_host_run(run: &HostRunRecord, outcome: &JobOutcome, has_next: bool) -> bool {
    run.cancel_requested || !has_next || matches!(outcome, JobOutcome::Failed { .. })
}

/// A lease ran out: the worker is presumed dead. Counts as a failed, retryable attempt.
pub fn decide_lease_expired(ctx: JobContext, now: Timestamp, rules: &Rules) -> Result<Effects, TransitionError> {
    let error = format!(
        "lease of worker {} expired at {}",
        ctx.job.lease_owner.as_deref().unwrap_or("?"),
        ctx.job.lease_expires_at.unwrap_or(now)
    );
    decide_job_outcome(ctx, JobOutcome::Failed { error, retryable: true }, now, rules)
}

/// `instance` started again under its name: a running job leased by an earlier
/// incarnation ([`InstanceId::forfeits`](crate::policy::InstanceId::forfeits)) lost its
/// worker with that process, so its attempt fails now (retryably, as an expired lease
/// would) instead of when the lease runs out. `None` when the job is not running or not
/// leased by an earlier incarnation (it finished, or another instance holds it).
pub fn decide_lease_forfeited(
    ctx: JobContext,
    instance: &crate::policy::InstanceId,
    now: Timestamp,
    rules: &Rules,
) -> Result<Option<Effects>, TransitionError> {
    let Some(owner) = ctx.job.lease_owner.clone() else { return Ok(None) };
    if ctx.job.state != JobState::Running || !instance.forfeits(&owner) {
        return Ok(None);
    }
    let error = format!("worker {owner} was lost: its instance restarted as {instance}");
    decide_job_outcome(ctx, JobOutcome::Failed { error, retryable: true }, now, rules).map(Some)
}

/// A waiting job's deadline passed without a callback.
pub fn decide_wait_expired(ctx: JobContext, now: Timestamp, rules: &Rules) -> Result<Effects, TransitionError> {
    let error = format!("no {} report before the deadline {}", ctx.job.kind, ctx.job.wait_deadline.unwrap_or(now));
    decide_job_outcome(ctx, JobOutcome::Failed { error, retryable: false }, now, rules)
}

/// A callback (installer / wipe report) for a waiting job, authenticated by its token.
pub fn decide_wait_result(
    ctx: JobContext,
    token: &str,
    outcome: JobOutcome,
    now: Timestamp,
    rules: &Rules,
) -> Result<Effects, TransitionError> {
    let token_matches =
        ctx.job.wait_token.as_deref().is_some_and(|t| crate::netboot::tokens_equal(t.as_bytes(), token.as_bytes()));
    if ctx.job.state != JobState::Waiting || !token_matches {
        return Err(TransitionError::WrongToken);
    }
    let outcome = match outcome {
        JobOutcome::Failed { error, .. } => JobOutcome::Failed { error, retryable: false },
        ok => ok,
    };
    decide_job_outcome(ctx, outcome, now, rules)
}

struct Failure {
    step: crate::plan::StepKind,
    error: String,
    wedged: bool,
}

fn end_host_run(
    batch: &mut BatchRecord,
    run: &mut HostRunRecord,
    end: HostRunState,
    failure: Option<Failure>,
    now: Timestamp,
    fx: &mut Effects,
) -> Result<(), TransitionError> {
    run.state.check(end)?;
    batch.counts.shift(run.state, end);
    run.state = end;
    run.finished_at = Some(now);
    if end != HostRunState::Succeeded {
        // A run succeeds when the last job of its chain does, every earlier one having
        // succeeded before it: nothing of it is left to cancel (and the store is spared a
        // statement that would match no row, on two thirds of the runs that end).
        fx.cancel_jobs_of.push(run.id);
    }
    fx.released_claims.push(run.hostname.clone());
    let host = run.hostname.clone();
    let kind = match (end, failure) {
        (HostRunState::Failed, Some(Failure { step, error, wedged })) => {
            run.last_error = Some(error.clone());
            EventKind::HostFailed { host, step, error, wedged }
        }
        (HostRunState::Succeeded, _) => EventKind::HostSucceeded { host },
        _ => EventKind::HostCancelled { host },
    };
    fx.events.push(NewEvent { batch_id: batch.id, at: now, kind });
    let budget = batch.spec.rollout.failure_budget;
    if end == HostRunState::Failed && batch.state == BatchState::Running && batch.counts.failed > budget {
        let reason = PauseReason::FailureBudget { failed: batch.counts.failed, budget };
        batch.state.check(BatchState::Paused)?;
        batch.state = BatchState::Paused;
        batch.pause_reason = Some(reason.clone());
        fx.events.push(NewEvent { batch_id: batch.id, at: now, kind: EventKind::BatchPaused { reason } });
    }
    finish_if_done(batch, now, fx)?;
    fx.start_queued = releasable(batch);
    Ok(())
}

fn finish_if_done(batch: &mut BatchRecord, now: Timestamp, fx: &mut Effects) -> Result<(), TransitionError> {
    if batch.counts.unfinished() > 0 || batch.state.is_terminal() {
        return Ok(());
    }
    let summary = BatchSummary::from(batch.counts);
    let (state, kind) = if batch.state == BatchState::Cancelling {
        (BatchState::Cancelled, EventKind::BatchCancelled { summary })
    } else {
        (BatchState::Completed, EventKind::BatchCompleted { summary })
    };
    batch.state.check(state)?;
    batch.state = state;
    batch.finished_at = Some(now);
    fx.events.push(NewEvent { batch_id: batch.id, at: now, kind });
    Ok(())
}

/// Cancels a batch. `runs` are its unfinished host runs, each with its current job
/// (position `step`). Runs not mid-step end now; a run whose current job is leased is
/// marked `cancel_requested` and ends when that job reports. A run waiting on an installer
/// or wipe image (which may be writing its disks) is fenced: its waiting job becomes a
/// [`StepKind::Fence`] (power off, verified) and the run ends — releasing its claim — only
/// when that reports. Cancelling twice is a no-op.
pub fn decide_cancel(
    mut batch: BatchRecord,
    runs: Vec<(HostRunRecord, Option<JobRecord>)>,
    principal: &Principal,
    reason: &str,
    now: Timestamp,
    rules: &Rules,
) -> Result<Effects, TransitionError> {
    let mut fx = Effects::default();
    if batch.state.is_terminal() {
        return Err(TransitionError::BatchFinished { state: batch.state });
    }
    fx.audit.push(batch_audit(AuditOp::Cancel, &batch, principal, reason, now));
    if batch.state == BatchState::Cancelling {
        return Ok(fx);
    }
    batch.state.check(BatchState::Cancelling)?;
    batch.state = BatchState::Cancelling;
    batch.cancel_reason = Some(reason.to_string());
    batch.pause_reason = None;
    fx.events.push(NewEvent {
        batch_id: batch.id,
        at: now,
        kind: EventKind::CancelRequested { principal: principal.name.clone(), reason: reason.to_string() },
    });
    for (mut run, current) in runs {
        if run.state.is_terminal() {
            continue;
        }
        let mid_step =
            current.as_ref().is_some_and(|j| j.state == JobState::Running) && run.state == HostRunState::Running;
        let installing = current.as_ref().filter(|j| j.state == JobState::Waiting && j.kind.fences_on_cancel());
        if let Some(wait) = installing {
            let mut fence = wait.clone();
            fence.state.check(JobState::Available)?;
            fence.kind = StepKind::Fence;
            fence.params = crate::plan::StepParams::default();
            fence.wait_token = None;
            fence.wait_deadline = None;
            fence.attempt = 0;
            fence.max_attempts = StepKind::Fence.default_max_attempts();
            fence.state = JobState::Available;
            fence.enqueued_at = Some(now);
            fence.run_at = now;
            fence.key = rules.priority.queue_key(now, fence.priority);
            fx.jobs.push(fence);
            run.cancel_requested = true;
            fx.host_runs.push(run);
        } else if mid_step {
            run.cancel_requested = true;
            fx.host_runs.push(run);
        } else {
            // end_host_run also re-checks completion; the batch is Cancelling so it can only
            // become Cancelled.
            let mut sub = Effects::default();
            end_host_run(&mut batch, &mut run, HostRunState::Cancelled, None, now, &mut sub)?;
            fx.cancel_jobs_of.extend(sub.cancel_jobs_of);
            fx.released_claims.extend(sub.released_claims);
            fx.events.extend(sub.events);
            fx.host_runs.push(run);
        }
    }
    finish_if_done(&mut batch, now, &mut fx)?;
    batch.updated_at = now;
    fx.batch = Some(batch);
    Ok(fx)
}

/// The user controls a batch in `state` takes: exactly what [`decide_cancel`] (less its
/// no-op on a batch already cancelling), [`decide_pause`] and [`decide_resume`] accept, so
/// a console offers no control its decision would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchControls {
    /// Cancel.
    pub cancel: bool,
    /// Pause.
    pub pause: bool,
    /// Resume.
    pub resume: bool,
}

/// See [`BatchControls`].
pub fn batch_controls(state: BatchState) -> BatchControls {
    let open = !state.is_terminal();
    BatchControls {
        cancel: open && state.can_become(BatchState::Cancelling),
        pause: open && state.can_become(BatchState::Paused),
        resume: open && state.can_become(BatchState::Running),
    }
}

/// Pauses a running batch at a user's request: no new host runs start.
pub fn decide_pause(
    mut batch: BatchRecord,
    principal: &Principal,
    reason: &str,
    now: Timestamp,
) -> Result<Effects, TransitionError> {
    if batch.state.is_terminal() {
        return Err(TransitionError::BatchFinished { state: batch.state });
    }
    batch.state.check(BatchState::Paused)?;
    let reason = PauseReason::User { principal: principal.name.clone(), reason: reason.to_string() };
    batch.state = BatchState::Paused;
    batch.pause_reason = Some(reason.clone());
    batch.updated_at = now;
    let mut fx = Effects::default();
    if let PauseReason::User { reason, .. } = &reason {
        fx.audit.push(batch_audit(AuditOp::Pause, &batch, principal, reason, now));
    }
    fx.events.push(NewEvent { batch_id: batch.id, at: now, kind: EventKind::BatchPaused { reason } });
    fx.batch = Some(batch);
    Ok(fx)
}

/// Resumes a paused batch; queued host runs start up to `max_in_flight`.
pub fn decide_resume(
    mut batch: BatchRecord,
    principal: &Principal,
    now: Timestamp,
) -> Result<Effects, TransitionError> {
    if batch.state.is_terminal() {
        return Err(TransitionError::BatchFinished { state: batch.state });
    }
    batch.state.check(BatchState::Running)?;
    batch.state = BatchState::Running;
    batch.pause_reason = None;
    batch.updated_at = now;
    let mut fx = Effects::default();
    fx.audit.push(batch_audit(AuditOp::Resume, &batch, principal, "", now));
    fx.events.push(NewEvent {
        batch_id: batch.id,
        at: now,
        kind: EventKind::BatchResumed { principal: principal.name.clone() },
    });
    fx.start_queued = releasable(&batch);
    fx.batch = Some(batch);
    Ok(fx)
}

/// A worker hands a running job back unfinished (graceful shutdown): it becomes available
/// again at once, keeps its queue key, and the attempt it used is given back
/// (`max_attempts` grows by one; `attempt` stays, so it still fences the old holder).
pub fn hand_back(mut job: JobRecord, owner: &str, attempt: u32, now: Timestamp) -> Result<JobRecord, TransitionError> {
    check_fence(&job, attempt)?;
    if !lease_is_held(&job, owner) {
        return Err(TransitionError::StaleAttempt { job: job.id, attempt, state: job.state, current: job.attempt });
    }
    job.state.check(JobState::Available)?;
    job.state = JobState::Available;
    job.run_at = now;
    job.max_attempts += 1;
    clear_lease(&mut job);
    Ok(job)
}

/// The straggler scan found `run`'s current step (at chain position `position`, of kind
/// `step`) slow against its batch peers: flag it once per step and tell people.
/// `None` when it is no longer on that step or was already flagged for it.
pub fn decide_straggler(
    mut run: HostRunRecord,
    position: u32,
    step: crate::plan::StepKind,
    now: Timestamp,
) -> Option<Effects> {
    if run.state != HostRunState::Running || run.step != position || run.straggler_step == Some(position) {
        return None;
    }
    run.straggler_step = Some(position);
    let event = NewEvent {
        batch_id: run.batch_id,
        at: now,
        kind: EventKind::StragglerFlagged { host: run.hostname.clone(), step },
    };
    Some(Effects { host_runs: vec![run], events: vec![event], ..Default::default() })
}

/// Whether a resubmission with an idempotency key matches the batch already holding it.
pub fn idempotent_match(existing: &BatchRecord, spec: &BatchSpec) -> bool {
    existing.fingerprint == spec.fingerprint()
}

#[cfg(test)]
pub(crate) mod tests;
