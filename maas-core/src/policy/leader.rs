//! The leader singletons' policy, sans-IO: which singleton task is due at `now`
//! ([`LeaderSchedule`]), when a failing notifier may be tried again ([`NotifierBackoff`]),
//! which events raise tickets ([`ticket_for`]) and which outbox cursors exist.
//!
//! maas-engine's `Singletons` carries the tasks out (leader election, store calls,
//! deliveries); maas-sim drives the same `Singletons`, so the schedule is simulated too.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use crate::config::{SingletonIntervals, StragglerPolicy};
use crate::estimate;
use crate::id::{BatchId, HostRunId};
use crate::model::{Event, EventKind, JobRecord, JobState, PauseReason};
use crate::names::Hostname;
use crate::ports::services::{Ticket, TicketKind};
use crate::time::Timestamp;

/// A singleton task; each runs only on the instance holding its leader row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaderTask {
    /// Expired leases become retries with backoff (or failures); expired waits fail.
    Rescuer,
    /// Host runs slow against their batch peers are flagged.
    Stragglers,
    /// Events go to every notifier; tickets are raised.
    Outbox,
    /// Finished batches older than the retention are purged.
    Retention,
    /// Defunct, unallocated hosts are reimaged and returned to their pool.
    Reclaim,
}

impl LeaderTask {
    /// Every task, in the order a tick runs them.
    pub const ALL: [LeaderTask; 5] =
        [LeaderTask::Rescuer, LeaderTask::Stragglers, LeaderTask::Outbox, LeaderTask::Retention, LeaderTask::Reclaim];

    /// Its name: the leader row's name.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaderTask::Rescuer => "rescuer",
            LeaderTask::Stragglers => "stragglers",
            LeaderTask::Outbox => "outbox",
            LeaderTask::Retention => "retention",
            LeaderTask::Reclaim => "reclaim",
        }
    }

    /// How often it runs.
    pub fn period(self, iv: &SingletonIntervals) -> Duration {
        match self {
            LeaderTask::Rescuer => iv.rescue,
            LeaderTask::Stragglers => iv.stragglers,
            LeaderTask::Outbox => iv.outbox,
            LeaderTask::Retention => iv.retention,
            LeaderTask::Reclaim => iv.reclaim,
        }
    }
}

impl fmt::Display for LeaderTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When each singleton task last ran on this instance, and so which are due.
#[derive(Debug, Clone, Default)]
pub struct LeaderSchedule {
    intervals: SingletonIntervals,
    last: BTreeMap<LeaderTask, Timestamp>,
}

impl LeaderSchedule {
    /// A schedule with these periods; every task is due at once.
    pub fn new(intervals: SingletonIntervals) -> Self {
        LeaderSchedule { intervals, last: BTreeMap::new() }
    }

    /// The tasks due at `now` (each must still win its leader election to run).
    pub fn due(&self, now: Timestamp) -> Vec<LeaderTask> {
        LeaderTask::ALL
            .into_iter()
            .filter(|t| self.last.get(t).is_none_or(|at| now.since(*at) >= t.period(&self.intervals)))
            .collect()
    }

    /// `task` ran (this instance led it) at `now`. A task this instance did not lead stays
    /// due, so it runs as soon as the leader row is free.
    pub fn ran(&mut self, task: LeaderTask, now: Timestamp) {
        self.last.insert(task, now);
    }

    /// When the next task falls due.
    pub fn next_due(&self) -> Timestamp {
        LeaderTask::ALL
            .into_iter()
            .map(|t| self.last.get(&t).map_or(Timestamp::EPOCH, |at| at.plus(t.period(&self.intervals))))
            .min()
            .unwrap_or(Timestamp::EPOCH)
    }
}

/// Who holds a singleton's leader row, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderLease {
    /// The instance leading.
    pub owner: String,
    /// Its lease ends then unless renewed.
    pub expires_at: Timestamp,
}

/// Leader election, the one rule every store applies under its lock: `owner` takes (or
/// renews) the row when nobody holds it, it already holds it, or the holder's lease has
/// run out; the new lease lasts `ttl`. `None`: another instance leads.
pub fn elect(current: Option<&LeaderLease>, owner: &str, now: Timestamp, ttl: Duration) -> Option<LeaderLease> {
    match current {
        Some(held) if held.owner != owner && held.expires_at > now => None,
        _ => Some(LeaderLease { owner: owner.to_string(), expires_at: now.plus(ttl) }),
    }
}

/// The longest wait between two deliveries to a failing notifier.
pub const NOTIFY_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How long to wait before the next delivery to a notifier that failed `failures` times in
/// a row: the outbox period `base`, doubling per failure, at most [`NOTIFY_BACKOFF_MAX`].
pub fn notify_backoff(failures: u32, base: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    base.saturating_mul(1 << doublings).min(NOTIFY_BACKOFF_MAX)
}

/// Per failing notifier: consecutive failures and when to try it again. A failing notifier
/// is retried after [`notify_backoff`] without holding the others back.
#[derive(Debug, Clone, Default)]
pub struct NotifierBackoff {
    failing: HashMap<String, (u32, Timestamp)>,
}

impl NotifierBackoff {
    /// Whether `notifier` may be tried at `now`.
    pub fn may_deliver(&self, notifier: &str, now: Timestamp) -> bool {
        self.failing.get(notifier).is_none_or(|(_, retry_at)| now >= *retry_at)
    }

    /// `notifier` failed at `now` (the outbox period is `base`): returns its consecutive
    /// failures and the wait before the next try.
    pub fn failed(&mut self, notifier: &str, now: Timestamp, base: Duration) -> (u32, Duration) {
        let entry = self.failing.entry(notifier.to_string()).or_insert((0, now));
        entry.0 += 1;
        let wait = notify_backoff(entry.0, base);
        entry.1 = now.plus(wait);
        (entry.0, wait)
    }

    /// `notifier` took everything: its failures are forgotten.
    pub fn delivered(&mut self, notifier: &str) {
        self.failing.remove(notifier);
    }
}

/// The outbox cursor of the ticket raiser.
pub const TICKETS_CONSUMER: &str = "tickets";

/// The outbox cursor name of the notifier registered as `name`.
pub fn notifier_consumer(name: &str) -> String {
    format!("notify:{name}")
}

/// When a job's current step began: its attempt's start, or the start of its wait.
pub fn step_began(j: &JobRecord) -> Option<Timestamp> {
    if j.kind.is_wait() { j.enqueued_at } else { j.started_at }
}

/// The steps of one batch's `jobs` that straggle at `now`: running or waiting longer than
/// `policy.factor` x the p95 of the same chain position's succeeded peers (with at least
/// `policy.min_peers` of them). Returns each straggler's host run and chain position; the
/// store flags each at most once ([`crate::machine::decide_straggler`]).
pub fn stragglers(jobs: &[JobRecord], now: Timestamp, policy: &StragglerPolicy) -> Vec<(HostRunId, u32)> {
    let mut peers: BTreeMap<u32, Vec<Duration>> = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.state == JobState::Succeeded) {
        if let (Some(from), Some(to)) = (step_began(j), j.finished_at) {
            peers.entry(j.position).or_default().push(to.since(from));
        }
    }
    let mut out = Vec::new();
    for j in jobs.iter().filter(|j| matches!(j.state, JobState::Running | JobState::Waiting)) {
        let (Some(began), Some(durations)) = (step_began(j), peers.get_mut(&j.position)) else { continue };
        if estimate::is_straggler(now.since(began), durations, policy.factor, policy.min_peers) {
            out.push((j.host_run_id, j.position));
        }
    }
    out
}

/// What one reclaim round does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReclaimPlan {
    /// The hosts the round's batch reimages.
    pub submit: Vec<Hostname>,
    /// Hosts whose last `give_up_after` reclaims all failed: left alone (a ticket says so),
    /// with the batch of the last failure.
    pub give_up: Vec<(Hostname, BatchId)>,
}

/// One reclaim round: the defunct hosts no active batch claims, in the order given, at most
/// `max` (at least one), except those whose most recent reclaims failed `give_up_after`
/// times in a row. `history` is each earlier reclaim's outcome per host, newest first: a
/// success ends a host's run of failures.
pub fn reclaim_plan(
    defunct: &[Hostname],
    claimed: &HashSet<Hostname>,
    history: &[(Hostname, BatchId, bool)],
    give_up_after: u32,
    max: usize,
) -> ReclaimPlan {
    let mut failures: HashMap<&Hostname, (u32, bool, Option<BatchId>)> = HashMap::new();
    for (host, batch, succeeded) in history {
        let (count, done, last) = failures.entry(host).or_insert((0, false, None));
        if *done {
            continue;
        }
        if *succeeded {
            *done = true;
        } else {
            *count += 1;
            last.get_or_insert(*batch);
        }
    }
    let mut plan = ReclaimPlan::default();
    for h in defunct.iter().filter(|h| !claimed.contains(*h)) {
        match failures.get(h) {
            Some((n, _, Some(batch))) if give_up_after > 0 && *n >= give_up_after => {
                plan.give_up.push((h.clone(), *batch))
            }
            _ if plan.submit.len() < max.max(1) => plan.submit.push(h.clone()),
            _ => {}
        }
    }
    plan
}

/// The ticket an event raises, if any (stragglers only when `stragglers` is on).
pub fn ticket_for(e: &Event, stragglers: bool) -> Option<Ticket> {
    let (kind, host, step, summary) = match &e.kind {
        EventKind::HostFailed { host, step, error, wedged: true } => {
            (TicketKind::WedgedHost, Some(host.clone()), Some(*step), format!("{host} wedged at {step}: {error}"))
        }
        EventKind::HostFailed { host, step, error, .. } if step.is_wait() => (
            TicketKind::InstallFailed,
            Some(host.clone()),
            Some(*step),
            format!("{host} failed at {step} (batch {}): {error}", e.batch_id),
        ),
        EventKind::BatchPaused { reason: reason @ PauseReason::FailureBudget { .. } } => {
            (TicketKind::FailureBudget, None, None, format!("batch {} paused: {reason}", e.batch_id))
        }
        EventKind::StragglerFlagged { host, step } if stragglers => (
            TicketKind::Straggler,
            Some(host.clone()),
            Some(*step),
            format!("{host} is slow at {step} against its batch peers (batch {})", e.batch_id),
        ),
        _ => return None,
    };
    Some(Ticket { kind, batch_id: e.batch_id, host, step, summary, at: e.at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::StepKind;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_millis(s * 1000)
    }

    #[test]
    fn every_task_is_due_at_first_then_by_its_period() {
        let mut s = LeaderSchedule::new(SingletonIntervals::default());
        assert_eq!(s.due(t(0)), LeaderTask::ALL.to_vec());
        for task in LeaderTask::ALL {
            s.ran(task, t(0));
        }
        assert!(s.due(t(0)).is_empty());
        assert_eq!(s.next_due(), t(1), "the outbox runs every second");
        assert_eq!(s.due(t(5)), vec![LeaderTask::Rescuer, LeaderTask::Outbox]);
    }

    #[test]
    fn a_task_not_led_stays_due() {
        let mut s = LeaderSchedule::new(SingletonIntervals::default());
        s.ran(LeaderTask::Outbox, t(0));
        assert!(s.due(t(0)).contains(&LeaderTask::Rescuer));
        assert_eq!(s.next_due(), Timestamp::EPOCH);
    }

    #[test]
    fn election_takes_a_free_or_expired_row_and_renews_its_own() {
        let ttl = Duration::from_secs(30);
        let held = |owner: &str, until: i64| LeaderLease { owner: owner.into(), expires_at: t(until) };
        let cases: [(&str, Option<LeaderLease>, Option<i64>); 5] = [
            ("nobody leads", None, Some(40)),
            ("renews its own lease", Some(held("a", 20)), Some(40)),
            ("another's live lease wins", Some(held("b", 20)), None),
            ("another's lease ending now is over", Some(held("b", 10)), Some(40)),
            ("another's expired lease is taken", Some(held("b", 5)), Some(40)),
        ];
        for (name, current, want) in cases {
            let got = elect(current.as_ref(), "a", t(10), ttl).map(|l| l.expires_at);
            assert_eq!(got, want.map(t), "{name}");
        }
    }

    #[test]
    fn stragglers_are_slow_against_finished_peers_of_the_same_step() {
        use crate::id::{BatchId, JobId};
        use crate::names::Site;
        let run = |n: u128| HostRunId(uuid::Uuid::from_u128(n));
        let job = |n: u128, state: JobState, began: i64, finished: Option<i64>| JobRecord {
            id: JobId(uuid::Uuid::from_u128(n)),
            batch_id: BatchId(uuid::Uuid::from_u128(1)),
            host_run_id: run(n),
            hostname: Hostname::new(&format!("h{n}.dc1")).unwrap(),
            site: Site::new("dc1").unwrap(),
            position: 1,
            kind: crate::plan::StepKind::PowerCycle,
            params: Default::default(),
            state,
            attempt: 1,
            max_attempts: 3,
            priority: crate::priority::PriorityClass::Normal,
            key: 0,
            run_at: t(0),
            lease_owner: None,
            lease_expires_at: None,
            wait_token: None,
            wait_deadline: None,
            created_at: t(0),
            enqueued_at: Some(t(0)),
            started_at: Some(t(began)),
            finished_at: finished.map(t),
            last_error: None,
        };
        let policy = StragglerPolicy { factor: 3.0, min_peers: 3, ticket: true };
        // Three peers took 10 s each; one host has been at it for 40 s, another for 20 s.
        let mut jobs: Vec<JobRecord> = (10..13).map(|n| job(n, JobState::Succeeded, 0, Some(10))).collect();
        jobs.push(job(20, JobState::Running, 0, None));
        jobs.push(job(21, JobState::Running, 20, None));
        assert_eq!(stragglers(&jobs, t(40), &policy), vec![(run(20), 1)]);
        // Too few peers: nobody is judged.
        assert!(stragglers(&jobs[1..], t(40), &policy).is_empty());
    }

    #[test]
    fn reclaim_takes_unclaimed_defunct_hosts_up_to_the_cap() {
        let h = |s: &str| Hostname::new(s).unwrap();
        let defunct = [h("a"), h("b"), h("c"), h("d")];
        let claimed: HashSet<Hostname> = [h("b")].into();
        let plan = |d: &[Hostname], max| reclaim_plan(d, &claimed, &[], 3, max).submit;
        assert_eq!(plan(&defunct, 2), vec![h("a"), h("c")]);
        assert_eq!(plan(&defunct, 0), vec![h("a")], "at least one");
        assert!(plan(&defunct[1..2], 5).is_empty());
    }

    #[test]
    fn reclaim_leaves_a_host_alone_after_its_failures_in_a_row() {
        let h = |s: &str| Hostname::new(s).unwrap();
        let b = |n: u128| BatchId(uuid::Uuid::from_u128(n));
        let defunct = [h("a"), h("b"), h("c")];
        // Newest first: a failed 3 times in a row; b failed twice after a success before;
        // c failed 3 times but succeeded since.
        let history = [
            (h("a"), b(9), false),
            (h("b"), b(9), false),
            (h("a"), b(8), false),
            (h("b"), b(8), false),
            (h("c"), b(8), true),
            (h("a"), b(7), false),
            (h("b"), b(7), true),
            (h("c"), b(7), false),
            (h("c"), b(6), false),
            (h("c"), b(5), false),
        ];
        let plan = reclaim_plan(&defunct, &HashSet::new(), &history, 3, 10);
        assert_eq!(plan.submit, vec![h("b"), h("c")]);
        assert_eq!(plan.give_up, vec![(h("a"), b(9))], "the ticket names the last failure");
        assert_eq!(reclaim_plan(&defunct, &HashSet::new(), &history, 0, 10).submit.len(), 3, "0: never give up");
    }

    #[test]
    fn a_failed_install_wipe_or_first_boot_raises_a_ticket_and_other_failures_do_not() {
        let host = Hostname::new("h1.dc1").unwrap();
        let failed = |step, wedged| Event {
            seq: 1,
            batch_id: crate::id::BatchId(uuid::Uuid::nil()),
            at: t(5),
            kind: EventKind::HostFailed { host: host.clone(), step, error: "disk full; log: dd".into(), wedged },
        };
        for step in [StepKind::AwaitInstall, StepKind::AwaitWipe, StepKind::AwaitFirstBoot] {
            let ticket = ticket_for(&failed(step, false), false).unwrap();
            assert_eq!(
                (ticket.kind, ticket.step, ticket.host.clone()),
                (TicketKind::InstallFailed, Some(step), Some(host.clone()))
            );
            assert!(ticket.summary.contains("disk full; log: dd"), "{}", ticket.summary);
        }
        assert_eq!(ticket_for(&failed(StepKind::PowerCycle, true), false).unwrap().kind, TicketKind::WedgedHost);
        assert!(ticket_for(&failed(StepKind::PowerCycle, false), false).is_none());
    }

    #[test]
    fn a_failing_notifier_backs_off_doubling_to_a_cap_and_recovers() {
        let base = Duration::from_secs(1);
        let mut b = NotifierBackoff::default();
        assert!(b.may_deliver("hook", t(0)));
        assert_eq!(b.failed("hook", t(0), base), (1, Duration::from_secs(1)));
        assert!(!b.may_deliver("hook", Timestamp::from_millis(999)));
        assert!(b.may_deliver("hook", t(1)));
        assert_eq!(b.failed("hook", t(1), base), (2, Duration::from_secs(2)));
        assert_eq!(b.failed("hook", t(3), base), (3, Duration::from_secs(4)));
        assert!(b.may_deliver("other", t(3)), "others are not held back");
        for n in 4..40 {
            b.failed("hook", t(3), base);
            assert!(notify_backoff(n, base) <= NOTIFY_BACKOFF_MAX);
        }
        assert_eq!(notify_backoff(39, base), NOTIFY_BACKOFF_MAX);
        b.delivered("hook");
        assert!(b.may_deliver("hook", t(3)));
    }
}
