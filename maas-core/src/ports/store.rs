//! The `Store` seam: durable state, applied atomically. Methods are named noun-first
//! (`batch_submit`, `job_claim`) and take params structs, so they group by table and can
//! grow parameters without breaking callers.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::action::ActionKind;
use crate::authz::Principal;
use crate::id::{BatchId, HostRunId, JobId};
use crate::machine::{JobOutcome, NewBatch, TransitionError};
use crate::model::*;
use crate::names::{Hostname, Pool, Site, Sku};
use crate::overlap::Conflict;
use crate::plan::StepKind;
use crate::ports::services::Ticket;
use crate::time::Timestamp;

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The submission overlaps active batches; nothing was written.
    #[error("{} host(s) already held by active batches: {}", conflicts.len(), describe_conflicts(conflicts))]
    Overlap {
        /// Every conflicting host with the batch holding it.
        conflicts: Vec<Conflict>,
    },
    /// The idempotency key already names a batch with a different spec.
    #[error("idempotency key {key:?} already used by batch {batch} with a different spec")]
    IdempotencyKeyReused {
        /// The key.
        key: String,
        /// The batch holding it.
        batch: BatchId,
    },
    /// An import would give two hosts the same MAC address; nothing was written.
    #[error(
        "MAC {mac} would belong to {}: a network boot must identify one host",
        hosts.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(" and ")
    )]
    DuplicateMac {
        /// The MAC.
        mac: crate::host::MacAddr,
        /// The hosts claiming it (the import's and the inventory's).
        hosts: Vec<Hostname>,
    },
    /// No such row.
    #[error("{what} {id} not found")]
    NotFound {
        /// What kind of row.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The state machines refused the change; nothing was written.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The database failed.
    #[error("store backend: {message}")]
    Backend {
        /// What failed.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// `what` (a job, a host run, a batch) with `id` does not exist.
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        StoreError::NotFound { what, id: id.to_string() }
    }
}

fn describe_conflicts(conflicts: &[Conflict]) -> String {
    // Group by holder and collapse the names: "web[0790-0800].dc1 (batch X)".
    let mut by_holder: std::collections::BTreeMap<BatchId, Vec<&str>> = std::collections::BTreeMap::new();
    for c in conflicts {
        by_holder.entry(c.held_by).or_default().push(c.host.as_str());
    }
    by_holder
        .iter()
        .map(|(batch, hosts)| format!("{} (batch {batch})", crate::hostlist::collapse(hosts)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parameters of [`Store::batch_submit`].
#[derive(Debug, Clone)]
pub struct BatchSubmitParams {
    /// Every row of the batch, from [`crate::machine::plan_submission`].
    pub new_batch: NewBatch,
}

/// Result of [`Store::batch_submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSubmitted {
    /// The batch (the existing one on an idempotent resubmission).
    pub batch: BatchRecord,
    /// `false` when an earlier submission with the same key and spec was returned.
    pub created: bool,
}

/// Parameters of [`Store::batch_list`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchListParams {
    /// Only this submitter's.
    pub submitter: Option<String>,
    /// Only these states (empty: all).
    pub states: Vec<BatchState>,
    /// Only this action.
    pub action: Option<ActionKind>,
    /// Created at or after.
    pub created_from: Option<Timestamp>,
    /// Created before.
    pub created_until: Option<Timestamp>,
    /// Paging: only batches with an id below this (newest first).
    pub before: Option<BatchId>,
    /// At most this many (0 means 100).
    pub limit: usize,
}

/// Parameters of [`Store::batch_cancel`].
#[derive(Debug, Clone)]
pub struct BatchCancelParams {
    /// The batch.
    pub batch_id: BatchId,
    /// Who cancels.
    pub principal: Principal,
    /// Why.
    pub reason: String,
    /// Now.
    pub now: Timestamp,
}

/// Parameters of [`Store::batch_set_paused`].
#[derive(Debug, Clone)]
pub struct BatchSetPausedParams {
    /// The batch.
    pub batch_id: BatchId,
    /// Who.
    pub principal: Principal,
    /// `true` pauses, `false` resumes.
    pub paused: bool,
    /// Why (pause).
    pub reason: String,
    /// Now.
    pub now: Timestamp,
}

/// Parameters of [`Store::host_run_list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRunListParams {
    /// The batch.
    pub batch_id: Option<BatchId>,
    /// Only these hosts (empty: all).
    pub hostnames: Vec<Hostname>,
    /// Only these states (empty: all).
    pub states: Vec<HostRunState>,
}

/// Parameters of [`Store::job_list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobListParams {
    /// Only this batch's.
    pub batch_id: Option<BatchId>,
    /// Only this host run's.
    pub host_run_id: Option<HostRunId>,
    /// Only these states (empty: all).
    pub states: Vec<JobState>,
    /// Only jobs leased to this owner.
    pub lease_owner: Option<String>,
}

/// Parameters of [`Store::job_claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobClaimParams {
    /// The worker's site.
    pub site: Site,
    /// The step kinds its pool takes.
    pub kinds: Vec<StepKind>,
    /// At most this many.
    pub limit: usize,
    /// The worker's id.
    pub owner: String,
    /// Now.
    pub now: Timestamp,
    /// Lease length.
    pub lease: Duration,
}

/// One completion in [`Store::job_complete_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCompletion {
    /// The job.
    pub job_id: JobId,
    /// The attempt that ran it (fencing token).
    pub attempt: u32,
    /// What happened.
    pub outcome: JobOutcome,
}

/// Parameters of [`Store::job_complete_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCompleteManyParams {
    /// The completions.
    pub completions: Vec<JobCompletion>,
    /// Now.
    pub now: Timestamp,
}

/// Parameters of [`Store::job_heartbeat_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobHeartbeatManyParams {
    /// The worker.
    pub owner: String,
    /// Its jobs.
    pub job_ids: Vec<JobId>,
    /// Now.
    pub now: Timestamp,
    /// New lease length from now.
    pub lease: Duration,
}

/// Parameters of [`Store::job_rescue_expired`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRescueParams {
    /// Now.
    pub now: Timestamp,
    /// At most this many jobs per call.
    pub limit: usize,
}

/// Parameters of [`Store::job_forfeit_leases`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobForfeitParams {
    /// The instance that started; it must hold its name's lock.
    pub instance: crate::policy::InstanceId,
    /// Now.
    pub now: Timestamp,
}

/// What [`Store::job_rescue_expired`] and [`Store::job_forfeit_leases`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RescueReport {
    /// Expired leases put back for a retry.
    pub retried: Vec<JobId>,
    /// Expired leases with no attempts left: failed.
    pub failed: Vec<JobId>,
    /// Waiting jobs past their deadline: failed.
    pub wait_expired: Vec<JobId>,
}

/// Parameters of [`Store::job_resolve_wait`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResolveWaitParams {
    /// The per-job callback token.
    pub token: String,
    /// What the installer reported.
    pub outcome: JobOutcome,
    /// Now.
    pub now: Timestamp,
}

/// Parameters of [`Store::event_list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventListParams {
    /// Only events with `seq` above this.
    pub after: u64,
    /// Only this batch's.
    pub batch_id: Option<BatchId>,
    /// At most this many (0 means 1000).
    pub limit: usize,
}

/// Parameters of [`Store::leader_attempt_elect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectParams {
    /// The singleton's name (`rescuer`, `outbox`, ...).
    pub name: String,
    /// The candidate.
    pub owner: String,
    /// Now.
    pub now: Timestamp,
    /// Lease length.
    pub ttl: Duration,
}

/// Parameters of [`Store::worker_heartbeat`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerHeartbeatParams {
    /// Worker id.
    pub id: String,
    /// Its site.
    pub site: Site,
    /// Its pool.
    pub pool: Pool,
    /// Now.
    pub now: Timestamp,
}

/// Parameters of [`Store::worker_list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerListParams {
    /// Only this site.
    pub site: Option<Site>,
    /// Only workers whose last heartbeat is at or after this.
    pub fresh_since: Option<Timestamp>,
}

impl WorkerListParams {
    /// The live workers at `now`, of every site. The one liveness rule: a worker is live
    /// while its last heartbeat is at most `freshness` old.
    pub fn live(now: Timestamp, freshness: Duration) -> Self {
        WorkerListParams { site: None, fresh_since: Some(now.minus(freshness)) }
    }
}

/// A finished host run, for statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRunSample {
    /// Its batch.
    pub batch_id: BatchId,
    /// The action.
    pub action: ActionKind,
    /// The host's site.
    pub site: Site,
    /// The host's SKU.
    pub sku: Sku,
    /// How it ended.
    pub state: HostRunState,
    /// Started.
    pub started_at: Timestamp,
    /// Finished.
    pub finished_at: Timestamp,
}

/// Parameters of [`Store::stats_host_runs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsParams {
    /// Finished at or after.
    pub finished_from: Option<Timestamp>,
    /// Finished before.
    pub finished_until: Option<Timestamp>,
    /// Only this batch's.
    pub batch_id: Option<BatchId>,
}

/// Parameters of [`ReportStore::rollup_list`]: rollups of the days in `[from, until)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupListParams {
    /// Days at or after this (its day included).
    pub from: Option<Timestamp>,
    /// Days before this.
    pub until: Option<Timestamp>,
}

/// Parameters of [`Store::job_release_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReleaseParams {
    /// The worker handing jobs back.
    pub owner: String,
    /// Each job with the attempt it holds.
    pub jobs: Vec<(JobId, u32)>,
    /// Now.
    pub now: Timestamp,
}

/// Parameters of [`Store::host_run_flag_straggler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StragglerFlagParams {
    /// The slow host run.
    pub host_run_id: HostRunId,
    /// The chain position it is slow at.
    pub position: u32,
    /// Now.
    pub now: Timestamp,
}

/// A finished step, for step-duration statistics and ETAs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSample {
    /// Its batch.
    pub batch_id: BatchId,
    /// The batch's action.
    pub action: ActionKind,
    /// The step.
    pub kind: StepKind,
    /// The host's site.
    pub site: Site,
    /// The host's SKU.
    pub sku: Sku,
    /// When the step began: its successful attempt's start, or the start of the wait.
    pub started_at: Timestamp,
    /// When it succeeded.
    pub finished_at: Timestamp,
}

/// What is in flight in one site right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteActivity {
    /// The site.
    pub site: Site,
    /// Host runs running.
    pub hosts_in_flight: u32,
    /// Jobs available to claim (including ones backing off).
    pub jobs_queued: u32,
    /// Jobs leased to workers.
    pub jobs_running: u32,
    /// Jobs parked for a callback.
    pub jobs_waiting: u32,
}

/// The runnable jobs of one site and step kind: the queue workers claim from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    /// The site.
    pub site: Site,
    /// The step kind.
    pub kind: StepKind,
    /// Jobs available to claim (including ones backing off).
    pub queued: u32,
    /// When the longest-waiting of them became runnable.
    pub oldest_enqueued_at: Option<Timestamp>,
}

impl SiteActivity {
    /// Nothing in flight in `site`.
    pub fn idle(site: Site) -> Self {
        SiteActivity { site, hosts_in_flight: 0, jobs_queued: 0, jobs_running: 0, jobs_waiting: 0 }
    }
}

/// A stored ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketRecord {
    /// Its id.
    pub id: String,
    /// The ticket.
    pub ticket: Ticket,
}

/// Parameters of [`Store::batch_purge_finished`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeParams {
    /// Only batches that finished before this.
    pub finished_before: Timestamp,
    /// Outbox events are removed only up to this `seq` (what every consumer has seen).
    pub events_through: u64,
    /// At most this many batches per call (0 means 100).
    pub limit: usize,
}

/// What [`Store::batch_purge_finished`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// Batches.
    pub batches: usize,
    /// Their host runs.
    pub host_runs: usize,
    /// Their jobs.
    pub jobs: usize,
    /// Their outbox events.
    pub events: usize,
}

/// Which audit entries to list ([`ReportStore::audit_list`]), newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Only this principal's calls.
    pub principal: Option<String>,
    /// Only this operation.
    pub op: Option<AuditOp>,
    /// Only calls naming this host.
    pub host: Option<Hostname>,
    /// Only this batch's.
    pub batch_id: Option<BatchId>,
    /// Only at or after this time.
    pub from: Option<Timestamp>,
    /// Only before this time.
    pub until: Option<Timestamp>,
    /// Only entries older than this id (paging: the last id of the previous page).
    pub before_id: Option<u64>,
    /// At most this many (0 means 100).
    pub limit: usize,
}

impl AuditFilter {
    /// The default and the largest page.
    pub const MAX_LIMIT: usize = 1000;

    /// The page size asked for, within `1..=MAX_LIMIT`.
    pub fn page_size(&self) -> usize {
        if self.limit == 0 { 100 } else { self.limit.min(Self::MAX_LIMIT) }
    }

    /// Whether `rec` passes every filter (what every store applies; the SQL stores
    /// narrow with SQL first and check the host here, since entries keep hostlists).
    pub fn matches(&self, rec: &AuditRecord) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == rec.principal)
            && self.op.is_none_or(|op| op == rec.op)
            && self.batch_id.is_none_or(|b| rec.batch_id == Some(b))
            && self.from.is_none_or(|t| rec.at >= t)
            && self.until.is_none_or(|t| rec.at < t)
            && self.before_id.is_none_or(|id| rec.id < id)
            && self.host.as_ref().is_none_or(|h| rec.names_host(h.as_str()))
    }
}

/// The queue contract: what runs work — submitting, claiming, heartbeating, completing,
/// rescuing, cancelling, pausing, the outbox, leader rows, the pool-kind mapping and the
/// worker registry. Every method changes or guards state that another instance may race.
///
/// # Contract
/// - **Atomic.** Every method applies all of its writes or none. Writes that a decision
///   implies (chain advance, claim release, batch counters, outbox events) commit in the
///   same transaction as the change that implies them.
/// - **Decisions come from maas-core.** A store loads the rows a change touches, calls the
///   matching function of [`crate::machine`], and writes the returned effects through
///   [`crate::effects::ApplyEffects`]; it decides nothing itself (except the ordering rule
///   of `job_claim`, which is the queue key).
/// - **Overlap.** `batch_submit` inserts one claim per host under a unique key on hostname;
///   if any host is claimed it writes nothing and fails with [`StoreError::Overlap`] naming
///   every conflicting host and its holder. With an idempotency key already used by the
///   same submitter, it returns that batch (`created: false`) when the spec fingerprint
///   matches and fails with [`StoreError::IdempotencyKeyReused`] otherwise.
/// - **Claims.** `job_claim` leases up to `limit` available jobs of `site` whose kind is
///   in `kinds` and whose `run_at` has passed, smallest `(key, id)` first, incrementing
///   their attempt; no job is ever handed to two claimers while its lease is valid, even
///   to concurrent callers on other connections or processes.
/// - **Fencing.** `job_complete_many` applies a completion only if the job is still running
///   the reported attempt; otherwise that completion fails with
///   [`TransitionError::StaleAttempt`] and the others still apply.
/// - **Leases.** `job_heartbeat_many` extends only leases held by `owner` and returns the
///   ids it extended. `job_rescue_expired` applies [`crate::machine::Expiry`]: expired
///   leases are failed retryable attempts, expired waits are failures.
/// - **Leader.** `leader_attempt_elect` applies [`crate::policy::leader::elect`]: it returns
///   `true` iff after the call `owner` holds the named lease.
/// - **Hand-back.** `job_release_many` returns held running jobs to `available` (see
///   [`crate::machine::hand_back`]) and returns the ids it released; others are skipped.
/// - **Outbox.** Events get strictly increasing `seq` in commit order; `event_list` returns
///   them ascending. Consumer cursors only move forward.
/// - **Stragglers.** `host_run_flag_straggler` flags a host run at most once per chain
///   position ([`crate::machine::decide_straggler`]) and appends the event in the same
///   transaction; it returns whether it flagged.
/// - **Tickets.** `ticket_open` is idempotent per (kind, batch, host): it returns the
///   existing ticket's id and `false` for a repeat.
/// - **Retention.** `batch_purge_finished` removes terminal batches finished before the
///   cut-off with their host runs and jobs, and their events up to `events_through`; the
///   audit trail and tickets are kept. Before a batch's rows go, its finished host runs and
///   succeeded steps are folded ([`crate::rollup::fold`], the image from its spec) into the
///   rollups, exactly once even when a purge is interrupted; rollups are never removed.
/// - **Audit.** `batch_submit`, `batch_cancel` and `batch_set_paused` write the audit
///   entry their decision carries in the same transaction as the change; `audit_append`
///   writes one alone. Each entry gets a unique id, larger than every id written before
///   it began (paging newest first by `before_id` is stable).
/// - **Time.** A store never reads a clock: `now` comes in the params.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Cancels a batch (see [`crate::machine::decide_cancel`]).
    async fn batch_cancel(&self, p: BatchCancelParams) -> Result<BatchRecord, StoreError>;
    /// The batch `submitter` created with idempotency key `key`, if any.
    async fn batch_find_by_key(&self, submitter: &str, key: &str) -> Result<Option<BatchRecord>, StoreError>;
    /// Frees a batch's idempotency key (past the horizon): `batch_find_by_key` no longer
    /// finds it, and the key may name a new batch. The batch is otherwise unchanged.
    async fn batch_forget_key(&self, batch: BatchId) -> Result<(), StoreError>;
    /// Pauses or resumes a batch.
    async fn batch_set_paused(&self, p: BatchSetPausedParams) -> Result<BatchRecord, StoreError>;
    /// Removes old finished batches (retention).
    async fn batch_purge_finished(&self, p: PurgeParams) -> Result<PurgeReport, StoreError>;
    /// Creates a batch with its claims and chains, atomically.
    async fn batch_submit(&self, p: BatchSubmitParams) -> Result<BatchSubmitted, StoreError>;
    /// Active claims on any of `hosts`.
    async fn claim_get_many(&self, hosts: &[Hostname]) -> Result<Vec<Claim>, StoreError>;
    /// Consumer `consumer`'s cursor (0 if new).
    async fn event_cursor_get(&self, consumer: &str) -> Result<u64, StoreError>;
    /// Moves `consumer`'s cursor forward to `seq` (never back).
    async fn event_cursor_set(&self, consumer: &str, seq: u64) -> Result<(), StoreError>;
    /// Outbox events after a position, ascending.
    async fn event_list(&self, p: EventListParams) -> Result<Vec<Event>, StoreError>;
    /// Flags a slow host run once per step; `true` if it was flagged now.
    async fn host_run_flag_straggler(&self, p: StragglerFlagParams) -> Result<bool, StoreError>;
    /// Leases runnable jobs to a worker.
    async fn job_claim(&self, p: JobClaimParams) -> Result<Vec<JobRecord>, StoreError>;
    /// Records outcomes, each fenced by its attempt; one result per completion, in order.
    async fn job_complete_many(&self, p: JobCompleteManyParams)
    -> Result<Vec<Result<(), TransitionError>>, StoreError>;
    /// Extends leases; returns the ids still held by `owner`.
    async fn job_heartbeat_many(&self, p: JobHeartbeatManyParams) -> Result<Vec<JobId>, StoreError>;
    /// Hands running jobs back unfinished; returns the ids released.
    async fn job_release_many(&self, p: JobReleaseParams) -> Result<Vec<JobId>, StoreError>;
    /// Rescues expired leases and waits.
    async fn job_rescue_expired(&self, p: JobRescueParams) -> Result<RescueReport, StoreError>;
    /// Ends, at once, the attempts of running jobs leased by earlier incarnations of a
    /// restarted instance (maas-core's `decide_lease_forfeited`, under each job's lock);
    /// reported as `retried` or `failed` like expired leases.
    async fn job_forfeit_leases(&self, p: JobForfeitParams) -> Result<RescueReport, StoreError>;
    /// Completes a waiting job from its callback token.
    async fn job_resolve_wait(&self, p: JobResolveWaitParams) -> Result<JobRecord, StoreError>;
    /// Tries to take or keep a leader lease.
    async fn leader_attempt_elect(&self, p: LeaderElectParams) -> Result<bool, StoreError>;
    /// Gives a leader lease up if `owner` holds it.
    async fn leader_resign(&self, name: &str, owner: &str) -> Result<(), StoreError>;
    /// The step kinds a pool's workers take (`None`: no mapping stored).
    async fn pool_kinds_get(&self, pool: &Pool) -> Result<Option<Vec<StepKind>>, StoreError>;
    /// Replaces a pool's step kinds.
    async fn pool_kinds_set(&self, pool: &Pool, kinds: &[StepKind]) -> Result<(), StoreError>;
    /// Appends an audit entry written on its own (refused calls, inventory and pool
    /// changes; its `id` is ignored and assigned). Accepted batch changes write theirs
    /// with the change.
    async fn audit_append(&self, record: AuditRecord) -> Result<(), StoreError>;
    /// Opens a ticket, or finds the same one; returns its id and whether it is new.
    async fn ticket_open(&self, ticket: Ticket) -> Result<(String, bool), StoreError>;
    /// Records a worker heartbeat (registers it on first call).
    async fn worker_heartbeat(&self, p: WorkerHeartbeatParams) -> Result<(), StoreError>;
}

/// Reporting: what people and dashboards read — batches, host runs and jobs, statistics,
/// activity, tickets, the audit trail and the worker registry. Reads only.
///
/// # Contract
/// - **Consistent.** Each call reads one committed state (no half-applied change).
/// - **Ordered.** Lists come in the order each method names (newest first, or by batch
///   and ordinal), so paging by the last id seen is stable.
/// - **Time.** `now`, windows and freshness cut-offs come in the params.
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// The rollups of the days asked for, in key order.
    async fn rollup_list(&self, p: RollupListParams) -> Result<Vec<crate::rollup::Rollup>, StoreError>;
    /// The audit entries passing `filter` ([`AuditFilter::matches`]), newest (largest
    /// id) first, at most [`AuditFilter::page_size`].
    async fn audit_list(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
    /// One batch.
    async fn batch_get(&self, id: BatchId) -> Result<Option<BatchRecord>, StoreError>;
    /// Batches, newest first.
    async fn batch_list(&self, p: BatchListParams) -> Result<Vec<BatchRecord>, StoreError>;
    /// Host runs, by batch and ordinal.
    async fn host_run_list(&self, p: HostRunListParams) -> Result<Vec<HostRunRecord>, StoreError>;
    /// Jobs, by host run and position.
    async fn job_list(&self, p: JobListParams) -> Result<Vec<JobRecord>, StoreError>;
    /// Work in flight, per site (sites with nothing in flight may be absent).
    async fn stats_active(&self) -> Result<Vec<SiteActivity>, StoreError>;
    /// Runnable jobs per site and step kind, ordered by site then kind.
    async fn stats_queues(&self) -> Result<Vec<QueueDepth>, StoreError>;
    /// Finished host runs in a time window.
    async fn stats_host_runs(&self, p: StatsParams) -> Result<Vec<HostRunSample>, StoreError>;
    /// Succeeded steps finished in a time window.
    async fn stats_steps(&self, p: StatsParams) -> Result<Vec<StepSample>, StoreError>;
    /// Tickets, newest first.
    async fn ticket_list(&self, limit: usize) -> Result<Vec<TicketRecord>, StoreError>;
    /// Registered workers.
    async fn worker_list(&self, p: WorkerListParams) -> Result<Vec<WorkerRecord>, StoreError>;
}

/// Durable state of batches, chains, claims, leases and the outbox: the queue contract and
/// reporting together, as the engine uses them. Implement [`QueueStore`] and
/// [`ReportStore`]; this follows.
pub trait Store: QueueStore + ReportStore {}

impl<T: QueueStore + ReportStore + ?Sized> Store for T {}
