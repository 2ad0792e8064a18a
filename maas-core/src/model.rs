//! The records stores keep: batches, host runs, jobs, claims, events, audit entries,
//! workers — and their state enums with the legal transitions (see
//! `docs/state-machines.md` for the diagrams).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::action::{Action, ActionKind};
use crate::batch::BatchSpec;
use crate::id::{BatchId, HostRunId, JobId};
use crate::names::{Hostname, Pool, Site, Sku};
use crate::plan::{StepKind, StepParams};
use crate::priority::PriorityClass;
use crate::time::Timestamp;

/// A state change the machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {machine} transition {from} -> {to}")]
pub struct IllegalTransition {
    /// Which machine (`job`, `host run`, `batch`).
    pub machine: &'static str,
    /// From state.
    pub from: &'static str,
    /// To state.
    pub to: &'static str,
}

macro_rules! state_enum {
    ($(#[$doc:meta])* $name:ident, $machine:literal, { $($(#[$vdoc:meta])* $variant:ident => $s:literal),* $(,)? }, terminal: [$($term:ident),*], edges: [$(($f:ident, $t:ident)),* $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every state.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The snake_case name used on the wire and in storage.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s,)* }
            }

            /// Parses [`Self::as_str`] output.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }

            /// Whether no transition leaves this state.
            pub fn is_terminal(self) -> bool {
                matches!(self, $($name::$term)|*)
            }

            /// Whether the machine allows `self -> to`.
            pub fn can_become(self, to: $name) -> bool {
                matches!((self, to), $(($name::$f, $name::$t))|*)
            }

            /// `Ok` if `self -> to` is legal.
            pub fn check(self, to: $name) -> Result<(), IllegalTransition> {
                if self.can_become(to) {
                    Ok(())
                } else {
                    Err(IllegalTransition { machine: $machine, from: self.as_str(), to: to.as_str() })
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_enum!(
    /// A job's state. Only `available` jobs sit in the claim index.
    JobState, "job", {
        /// Waiting for the previous step of its chain (or for its host run to start).
        Blocked => "blocked",
        /// Runnable: a worker may claim it once `run_at` has passed.
        Available => "available",
        /// Leased by a worker.
        Running => "running",
        /// Parked awaiting a callback until its deadline; holds no worker.
        Waiting => "waiting",
        /// Done.
        Succeeded => "succeeded",
        /// Failed for good.
        Failed => "failed",
        /// Will not run.
        Cancelled => "cancelled",
    },
    terminal: [Succeeded, Failed, Cancelled],
    edges: [
        (Blocked, Available), (Blocked, Waiting), (Blocked, Cancelled),
        (Available, Running), (Available, Cancelled),
        (Running, Succeeded), (Running, Failed), (Running, Available), (Running, Cancelled),
        (Waiting, Succeeded), (Waiting, Failed), (Waiting, Cancelled),
        // A cancelled network boot's waiting step becomes its fence (power off, verified).
        (Waiting, Available),
    ]
);

state_enum!(
    /// A host run's state.
    HostRunState, "host run", {
        /// Not started: held back by the batch's `max_in_flight` (or a pause).
        Queued => "queued",
        /// Its chain is under way.
        Running => "running",
        /// Every step succeeded.
        Succeeded => "succeeded",
        /// A step failed for good.
        Failed => "failed",
        /// Cancelled before finishing.
        Cancelled => "cancelled",
    },
    terminal: [Succeeded, Failed, Cancelled],
    edges: [
        (Queued, Running), (Queued, Cancelled),
        (Running, Succeeded), (Running, Failed), (Running, Cancelled),
    ]
);

state_enum!(
    /// A batch's state.
    BatchState, "batch", {
        /// Releasing hosts up to `max_in_flight`.
        Running => "running",
        /// No new hosts start (by a user, or over the failure budget); running ones finish.
        Paused => "paused",
        /// Cancel requested; waiting for hosts mid-step to finish that step.
        Cancelling => "cancelling",
        /// Every host run is terminal.
        Completed => "completed",
        /// Cancelled; every host run is terminal.
        Cancelled => "cancelled",
    },
    terminal: [Completed, Cancelled],
    edges: [
        (Running, Paused), (Running, Cancelling), (Running, Cancelled), (Running, Completed),
        (Paused, Running), (Paused, Cancelling), (Paused, Cancelled), (Paused, Completed),
        (Cancelling, Cancelled),
    ]
);

impl BatchState {
    /// Whether the batch still holds claims (not terminal).
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }
}

/// Why a batch is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum PauseReason {
    /// More host runs failed than the failure budget allows.
    FailureBudget {
        /// Failed host runs when it paused.
        failed: u32,
        /// The budget.
        budget: u32,
    },
    /// A user paused it.
    User {
        /// Who.
        principal: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for PauseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PauseReason::FailureBudget { failed, budget } => {
                write!(f, "{failed} host(s) failed, over the failure budget of {budget}")
            }
            PauseReason::User { principal, reason } => write!(f, "paused by {principal}: {reason}"),
        }
    }
}

/// Host runs of a batch by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostRunCounts {
    /// Not started.
    pub queued: u32,
    /// Under way.
    pub running: u32,
    /// Done.
    pub succeeded: u32,
    /// Failed.
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
}

impl HostRunCounts {
    /// All host runs.
    pub fn total(&self) -> u32 {
        self.queued + self.running + self.succeeded + self.failed + self.cancelled
    }

    /// Host runs not yet terminal.
    pub fn unfinished(&self) -> u32 {
        self.queued + self.running
    }

    /// The counter for `state`.
    pub fn slot(&mut self, state: HostRunState) -> &mut u32 {
        match state {
            HostRunState::Queued => &mut self.queued,
            HostRunState::Running => &mut self.running,
            HostRunState::Succeeded => &mut self.succeeded,
            HostRunState::Failed => &mut self.failed,
            HostRunState::Cancelled => &mut self.cancelled,
        }
    }

    /// Moves one host run from `from` to `to`.
    pub fn shift(&mut self, from: HostRunState, to: HostRunState) {
        let f = self.slot(from);
        *f = f.saturating_sub(1);
        *self.slot(to) += 1;
    }
}

/// A batch as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Its id.
    pub id: BatchId,
    /// Who submitted it.
    pub submitter: String,
    /// What it does, to which hosts.
    pub spec: std::sync::Arc<BatchSpec>,
    /// [`BatchSpec::fingerprint`], for idempotent resubmission.
    pub fingerprint: String,
    /// Its state.
    pub state: BatchState,
    /// Why it is paused, when paused.
    pub pause_reason: Option<PauseReason>,
    /// Why it was cancelled, when cancelling or cancelled.
    pub cancel_reason: Option<String>,
    /// Host runs by state.
    pub counts: HostRunCounts,
    /// Accepted at.
    pub created_at: Timestamp,
    /// Last changed at.
    pub updated_at: Timestamp,
    /// Reached a terminal state at.
    pub finished_at: Option<Timestamp>,
    /// The pools of its hosts, sorted, each once (what read restrictions go by).
    #[serde(default)]
    pub pools: Vec<Pool>,
}

impl BatchRecord {
    /// The action's kind.
    pub fn action(&self) -> ActionKind {
        self.spec.action.kind()
    }
}

/// One host's run within a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRunRecord {
    /// Its id.
    pub id: HostRunId,
    /// Its batch.
    pub batch_id: BatchId,
    /// Position within the batch (hosts start in this order).
    pub ordinal: u32,
    /// The host.
    pub hostname: Hostname,
    /// The host's site.
    pub site: Site,
    /// The host's pool.
    pub pool: Pool,
    /// The host's SKU.
    pub sku: Sku,
    /// Its state.
    pub state: HostRunState,
    /// Position of the current (or last) step.
    pub step: u32,
    /// A cancel arrived while a step was running: finish that step, then stop.
    pub cancel_requested: bool,
    /// Started at.
    pub started_at: Option<Timestamp>,
    /// Finished at.
    pub finished_at: Option<Timestamp>,
    /// The error that failed it.
    pub last_error: Option<String>,
    /// The chain position at which the straggler scan flagged it (once per step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub straggler_step: Option<u32>,
}

/// One step of a host run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Its id.
    pub id: JobId,
    /// Its batch.
    pub batch_id: BatchId,
    /// Its host run.
    pub host_run_id: HostRunId,
    /// The host.
    pub hostname: Hostname,
    /// The host's site (workers claim by site).
    pub site: Site,
    /// Position in the chain (0 = head).
    pub position: u32,
    /// The step.
    pub kind: StepKind,
    /// The step's parameters.
    pub params: StepParams,
    /// Its state.
    pub state: JobState,
    /// Attempts so far (incremented by each claim; fences stale completions).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The batch's priority class.
    pub priority: PriorityClass,
    /// Queue key (smaller first); set when the job becomes available.
    pub key: i64,
    /// Not claimable before this time (schedule, retry backoff).
    pub run_at: Timestamp,
    /// The worker holding the lease.
    pub lease_owner: Option<String>,
    /// The lease ends at.
    pub lease_expires_at: Option<Timestamp>,
    /// Callback token of a waiting step.
    pub wait_token: Option<String>,
    /// A waiting step fails if no callback arrives by then.
    pub wait_deadline: Option<Timestamp>,
    /// Created at.
    pub created_at: Timestamp,
    /// Became available (or waiting) at: the enqueue time the queue key derives from.
    pub enqueued_at: Option<Timestamp>,
    /// Last attempt started at.
    pub started_at: Option<Timestamp>,
    /// Finished at.
    pub finished_at: Option<Timestamp>,
    /// The last error.
    pub last_error: Option<String>,
}

/// "This host belongs to this active batch." At most one per host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Claim {
    /// The host (unique).
    pub hostname: Hostname,
    /// The holding batch.
    pub batch_id: BatchId,
    /// The host run.
    pub host_run_id: HostRunId,
    /// Claimed at.
    pub since: Timestamp,
}

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSummary {
    /// Host runs in all.
    pub total: u32,
    /// Succeeded.
    pub succeeded: u32,
    /// Failed.
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
}

impl From<HostRunCounts> for BatchSummary {
    fn from(c: HostRunCounts) -> Self {
        BatchSummary { total: c.total(), succeeded: c.succeeded, failed: c.failed, cancelled: c.cancelled }
    }
}

/// What happened, as users see it. Appended to the outbox in the same transaction as the
/// change it reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The batch was accepted.
    BatchAccepted {
        /// The action.
        action: Action,
        /// How many hosts.
        hosts: u32,
        /// Who submitted.
        submitter: String,
    },
    /// A host run started.
    HostStarted {
        /// The host.
        host: Hostname,
    },
    /// A host run succeeded.
    HostSucceeded {
        /// The host.
        host: Hostname,
    },
    /// A host run failed.
    HostFailed {
        /// The host.
        host: Hostname,
        /// The failing step.
        step: StepKind,
        /// The error.
        error: String,
        /// Retries exhausted on a retryable step: needs a human (ticketed).
        wedged: bool,
    },
    /// A host run was cancelled.
    HostCancelled {
        /// The host.
        host: Hostname,
    },
    /// A host run is slow against its batch peers.
    StragglerFlagged {
        /// The host.
        host: Hostname,
        /// The slow step.
        step: StepKind,
    },
    /// The batch paused.
    BatchPaused {
        /// Why.
        reason: PauseReason,
    },
    /// The batch resumed.
    BatchResumed {
        /// Who resumed it.
        principal: String,
    },
    /// A cancel was requested (hosts mid-step finish that step first).
    CancelRequested {
        /// Who.
        principal: String,
        /// Why.
        reason: String,
    },
    /// Every host run finished.
    BatchCompleted {
        /// The outcome.
        summary: BatchSummary,
    },
    /// The batch was cancelled and every host run is terminal.
    BatchCancelled {
        /// The outcome.
        summary: BatchSummary,
    },
}

impl EventKind {
    /// A short snake_case name of the event type.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::BatchAccepted { .. } => "batch_accepted",
            EventKind::HostStarted { .. } => "host_started",
            EventKind::HostSucceeded { .. } => "host_succeeded",
            EventKind::HostFailed { .. } => "host_failed",
            EventKind::HostCancelled { .. } => "host_cancelled",
            EventKind::StragglerFlagged { .. } => "straggler_flagged",
            EventKind::BatchPaused { .. } => "batch_paused",
            EventKind::BatchResumed { .. } => "batch_resumed",
            EventKind::CancelRequested { .. } => "cancel_requested",
            EventKind::BatchCompleted { .. } => "batch_completed",
            EventKind::BatchCancelled { .. } => "batch_cancelled",
        }
    }

    /// Whether this is its batch's final event (nothing about the batch follows it).
    pub fn ends_batch(&self) -> bool {
        matches!(self, EventKind::BatchCompleted { .. } | EventKind::BatchCancelled { .. })
    }
}

/// An event to append (the store assigns its sequence number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// The batch it is about.
    pub batch_id: BatchId,
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: EventKind,
}

/// An event in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the outbox: strictly increasing in commit order of one store.
    pub seq: u64,
    /// The batch it is about.
    pub batch_id: BatchId,
    /// When.
    pub at: Timestamp,
    /// What.
    pub kind: EventKind,
}

/// A mutating call, as the audit trail names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOp {
    /// A batch submission.
    Submit,
    /// A batch cancel.
    Cancel,
    /// A batch pause.
    Pause,
    /// A batch resume.
    Resume,
    /// An inventory import.
    ImportHosts,
    /// A host's lifecycle state change.
    SetHostState,
    /// A pool's step kinds change.
    SetPoolKinds,
}

impl AuditOp {
    /// Every operation.
    pub const ALL: [AuditOp; 7] = [
        AuditOp::Submit,
        AuditOp::Cancel,
        AuditOp::Pause,
        AuditOp::Resume,
        AuditOp::ImportHosts,
        AuditOp::SetHostState,
        AuditOp::SetPoolKinds,
    ];

    /// The snake_case name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOp::Submit => "submit",
            AuditOp::Cancel => "cancel",
            AuditOp::Pause => "pause",
            AuditOp::Resume => "resume",
            AuditOp::ImportHosts => "import_hosts",
            AuditOp::SetHostState => "set_host_state",
            AuditOp::SetPoolKinds => "set_pool_kinds",
        }
    }

    /// Parses [`AuditOp::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for AuditOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An entry of the audit trail: one mutating call, accepted or refused. Kept when
/// retention removes the batches it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its position in the trail, assigned by the store when written (strictly increasing
    /// in commit order; 0 before). Pages of the trail continue from it.
    pub id: u64,
    /// When.
    pub at: Timestamp,
    /// Who.
    pub principal: String,
    /// What was called.
    pub op: AuditOp,
    /// Whether it took effect. A refused call changed nothing; `error` says why.
    pub accepted: bool,
    /// The batch it created or acted on, if any (none for a refused submit).
    pub batch_id: Option<BatchId>,
    /// The action submitted (submits only).
    pub action: Option<Action>,
    /// How many hosts it named.
    pub host_count: u32,
    /// Which hosts (a collapsed hostlist; empty for pool and batch operations).
    pub hosts: String,
    /// The request in one line, for people (`reimage os=ubuntu-24.04, priority high`,
    /// `state allocated to payments`, `pool web: power_cycle, verify`).
    pub summary: String,
    /// The reason the caller gave (cancel, pause, force).
    pub reason: Option<String>,
    /// Whether in-use hosts were included on purpose (a forced submission).
    pub forced: bool,
    /// The submitter's comment.
    pub comment: Option<String>,
    /// Why it was refused (bounded).
    pub error: Option<String>,
}

impl AuditRecord {
    /// An accepted call with nothing but who, what and when filled in.
    pub fn new(op: AuditOp, principal: &str, at: Timestamp) -> Self {
        AuditRecord {
            id: 0,
            at,
            principal: principal.to_string(),
            op,
            accepted: true,
            batch_id: None,
            action: None,
            host_count: 0,
            hosts: String::new(),
            summary: String::new(),
            reason: None,
            forced: false,
            comment: None,
            error: None,
        }
    }

    /// The most of a refusal's message an entry keeps.
    pub const MAX_ERROR: usize = 2048;

    /// Marks the call refused with `error` (cut to [`AuditRecord::MAX_ERROR`] bytes on a
    /// character boundary).
    pub fn refused(mut self, error: &str) -> Self {
        let mut end = error.len().min(Self::MAX_ERROR);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        self.accepted = false;
        self.error = Some(error[..end].to_string());
        self
    }

    /// Names the hosts it concerned.
    pub fn on_hosts<S: AsRef<str>>(mut self, hosts: &[S]) -> Self {
        self.host_count = hosts.len() as u32;
        self.hosts = crate::hostlist::collapse(hosts);
        self
    }

    /// `text` as an entry keeps it: control characters escaped (a refused request may hold
    /// them, and the trail is read on terminals), at most `max` bytes.
    pub fn printable(text: &str, max: usize) -> String {
        let mut out = String::with_capacity(text.len().min(max));
        for c in text.chars() {
            let piece: String = if c.is_control() { c.escape_default().collect() } else { c.to_string() };
            if out.len() + piece.len() > max {
                out.push('…');
                break;
            }
            out.push_str(&piece);
        }
        out
    }

    /// Whether `host` is among the hosts it names.
    pub fn names_host(&self, host: &str) -> bool {
        if self.hosts.is_empty() {
            return false;
        }
        // The list was collapsed from at most `host_count` names.
        crate::hostlist::expand(&self.hosts, self.host_count.max(1) as usize)
            .is_ok_and(|names| names.iter().any(|n| n == host))
    }
}

/// A worker's registry entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Unique worker id (e.g. `host:pid:n`).
    pub id: String,
    /// The site it serves.
    pub site: Site,
    /// Its pool (cluster type).
    pub pool: Pool,
    /// First heartbeat.
    pub started_at: Timestamp,
    /// Latest heartbeat.
    pub last_heartbeat: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_have_no_way_out() {
        for &s in JobState::ALL {
            if s.is_terminal() {
                assert!(JobState::ALL.iter().all(|&t| !s.can_become(t)), "{s}");
            }
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        for &s in HostRunState::ALL {
            if s.is_terminal() {
                assert!(HostRunState::ALL.iter().all(|&t| !s.can_become(t)), "{s}");
            }
        }
        for &s in BatchState::ALL {
            if s.is_terminal() {
                assert!(BatchState::ALL.iter().all(|&t| !s.can_become(t)), "{s}");
            }
        }
        assert_eq!(
            JobState::Succeeded.check(JobState::Running).unwrap_err().to_string(),
            "illegal job transition succeeded -> running"
        );
    }

    #[test]
    fn counts_shift() {
        let mut c = HostRunCounts { queued: 2, ..Default::default() };
        c.shift(HostRunState::Queued, HostRunState::Running);
        c.shift(HostRunState::Running, HostRunState::Failed);
        assert_eq!((c.queued, c.running, c.failed, c.total(), c.unfinished()), (1, 0, 1, 2, 1));
    }
}
