//! Table-driven tests of the transition functions, next to them: each case is a row (a
//! sentence, the situation, what the decision must write), checked by one helper.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::action::Action;
use crate::batch::{BatchSpec, RolloutPolicy};
use crate::effects::{ApplyEffects, EffectWrite};
use crate::names::{Pool, Site, Sku};
use crate::priority::PriorityClass;
use crate::time::ManualClock;

const NOW: Timestamp = Timestamp::from_millis(1_000_000);

/// A reboot batch of `hosts` hosts, one at a time, with a failure budget of `budget`.
fn batch(hosts: usize, budget: u32) -> NewBatch {
    let clock = ManualClock::new(NOW);
    let ids = IdGenerator::new(Arc::new(clock), 7);
    let targets: Vec<HostTarget> = (0..hosts)
        .map(|i| HostTarget {
            hostname: Hostname::new(&format!("h{i}.dc1")).unwrap(),
            site: Site::new("dc1").unwrap(),
            pool: Pool::new("web").unwrap(),
            sku: Sku::new("s1").unwrap(),
        })
        .collect();
    let spec = BatchSpec {
        action: Action::Reboot { soft: false },
        hosts: targets.iter().map(|t| t.hostname.clone()).collect(),
        priority: PriorityClass::Normal,
        rollout: RolloutPolicy { max_in_flight: 1, failure_budget: budget },
        idempotency_key: None,
        not_before: None,
        force: None,
        comment: None,
        params: Default::default(),
        notify: Vec::new(),
    };
    plan_submission(spec, &Principal::new("alice", []), &targets, NOW, &ids, &Rules::default())
}

/// The context of host 0's job at `position`, leased (running) as a worker would hold it.
fn running(nb: &NewBatch, position: usize) -> JobContext {
    let run = nb.host_runs[0].clone();
    let chain: Vec<JobRecord> = nb.jobs.iter().filter(|j| j.host_run_id == run.id).cloned().collect();
    let mut job = chain[position].clone();
    job.state = JobState::Available;
    LeaseGrant::new("w1", NOW, Duration::from_secs(60)).apply(&mut job).unwrap();
    let next = chain.get(position + 1).cloned();
    JobContext { batch: nb.batch.clone(), host_run: HostRunRecord { step: position as u32, ..run }, job, next }
}

/// What a decision must write, as the rows and events it names.
#[derive(Debug, PartialEq)]
struct Expect {
    job: JobState,
    next: Option<JobState>,
    run: HostRunState,
    batch: BatchState,
    events: Vec<&'static str>,
    start_queued: u32,
}

fn check(name: &str, ctx: JobContext, outcome: JobOutcome, want: Expect) {
    let run = ctx.host_run.clone();
    let has_next = ctx.next.is_some();
    let may_end = may_end_host_run(&run, &outcome, has_next);
    let fx = decide_job_outcome(ctx, outcome, NOW, &Rules::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let got = Expect {
        job: fx.jobs[0].state,
        next: fx.jobs.get(1).map(|j| j.state),
        run: fx.host_runs[0].state,
        batch: fx.batch.as_ref().unwrap().state,
        events: fx.events.iter().map(|e| e.kind.name()).collect(),
        start_queued: fx.start_queued,
    };
    assert_eq!(got, want, "{name}");
    if got.run.is_terminal() {
        assert!(may_end, "{name}: the run ended but may_end_host_run said it could not");
    }
}

#[test]
fn job_outcomes_move_the_chain_the_run_and_the_batch() {
    use HostRunState as R;
    use JobState as J;
    let nb = batch(2, 0);
    let last = nb.jobs.iter().filter(|j| j.host_run_id == nb.host_runs[0].id).count() - 1;
    let ok = || JobOutcome::Succeeded;
    let failed = |retryable| JobOutcome::Failed { error: "bmc said no".into(), retryable };
    let exhausted = {
        let mut c = running(&nb, 0);
        c.job.attempt = c.job.max_attempts;
        c
    };
    let cancelling = {
        let mut c = running(&nb, 0);
        c.host_run.cancel_requested = true;
        c
    };
    let cases = [
        (
            "success mid-chain makes the next step available",
            running(&nb, 0),
            ok(),
            Expect {
                job: J::Succeeded,
                next: Some(J::Available),
                run: R::Running,
                batch: BatchState::Running,
                events: vec![],
                start_queued: 0,
            },
        ),
        (
            "success of the last step ends the run and frees room for the next",
            running(&nb, last),
            ok(),
            Expect {
                job: J::Succeeded,
                next: None,
                run: R::Succeeded,
                batch: BatchState::Running,
                events: vec!["host_succeeded"],
                start_queued: 1,
            },
        ),
        (
            "a retryable failure with attempts left is retried",
            running(&nb, 0),
            failed(true),
            Expect {
                job: J::Available,
                next: None,
                run: R::Running,
                batch: BatchState::Running,
                events: vec![],
                start_queued: 0,
            },
        ),
        (
            "a retryable failure with no attempt left wedges the host and spends the budget",
            exhausted,
            failed(true),
            Expect {
                job: J::Failed,
                next: None,
                run: R::Failed,
                batch: BatchState::Paused,
                events: vec!["host_failed", "batch_paused"],
                start_queued: 0,
            },
        ),
        (
            "a permanent failure ends the run and pauses a batch over budget",
            running(&nb, 0),
            failed(false),
            Expect {
                job: J::Failed,
                next: None,
                run: R::Failed,
                batch: BatchState::Paused,
                events: vec!["host_failed", "batch_paused"],
                start_queued: 0,
            },
        ),
        (
            "a step finishing after a cancel request ends its run cancelled",
            cancelling,
            ok(),
            Expect {
                job: J::Succeeded,
                next: None,
                run: R::Cancelled,
                batch: BatchState::Running,
                events: vec!["host_cancelled"],
                start_queued: 1,
            },
        ),
    ];
    for (name, ctx, outcome, want) in cases {
        check(name, ctx, outcome, want);
    }
}

#[test]
fn a_stale_attempt_is_fenced_off() {
    let nb = batch(1, 0);
    let ctx = running(&nb, 0);
    assert!(check_fence(&ctx.job, ctx.job.attempt).is_ok());
    for (name, attempt) in [("an older attempt", ctx.job.attempt - 1), ("a newer attempt", ctx.job.attempt + 1)] {
        assert!(matches!(check_fence(&ctx.job, attempt), Err(TransitionError::StaleAttempt { .. })), "{name}");
    }
}

#[test]
fn expiry_is_due_only_in_its_state_at_or_after_its_deadline() {
    let nb = batch(1, 0);
    let leased = running(&nb, 0).job;
    let mut waiting = leased.clone();
    waiting.state = JobState::Waiting;
    waiting.lease_expires_at = None;
    waiting.wait_deadline = Some(NOW.plus(Duration::from_secs(600)));
    let lease_end = leased.lease_expires_at.unwrap();
    let cases = [
        ("a lease before its end", Expiry::Lease, &leased, lease_end.minus(Duration::from_millis(1)), false),
        ("a lease at its end", Expiry::Lease, &leased, lease_end, true),
        ("a waiting job has no lease to expire", Expiry::Lease, &waiting, lease_end, false),
        ("a wait before its deadline", Expiry::Wait, &waiting, NOW, false),
        ("a wait past its deadline", Expiry::Wait, &waiting, NOW.plus(Duration::from_secs(601)), true),
        ("a running job has no wait to expire", Expiry::Wait, &leased, NOW.plus(Duration::from_secs(601)), false),
    ];
    for (name, expiry, job, now, due) in cases {
        assert_eq!(expiry.is_due(job, now), due, "{name}");
    }
}

#[test]
fn an_expired_lease_is_a_failed_retryable_attempt_and_a_live_one_is_left_alone() {
    let nb = batch(1, 0);
    let ctx = running(&nb, 0);
    let end = ctx.job.lease_expires_at.unwrap();
    let rules = Rules::default();
    assert_eq!(Expiry::Lease.decide(ctx.clone(), end.minus(Duration::from_millis(1)), &rules).unwrap(), None);
    let fx = Expiry::Lease.decide(ctx, end, &rules).unwrap().expect("due");
    assert_eq!(fx.jobs[0].state, JobState::Available, "retried");
    assert!(fx.jobs[0].last_error.as_deref().unwrap().contains("lease of worker w1 expired"));
}

/// Every write of an `ApplyEffects`, answering `LoadQueued` with `queued`.
fn writes(fx: Effects, queued: Vec<(HostRunRecord, JobRecord)>) -> Vec<EffectWrite> {
    let rules = Rules::default();
    let mut apply = ApplyEffects::new(fx, NOW, &rules);
    let mut queued = Some(queued);
    let mut out = Vec::new();
    while let Some(w) = apply.next_write() {
        if matches!(w, EffectWrite::LoadQueued { .. }) {
            apply.queued_loaded(queued.take().unwrap_or_default()).unwrap();
        }
        out.push(w);
    }
    out
}

fn names(writes: &[EffectWrite]) -> Vec<&'static str> {
    writes
        .iter()
        .map(|w| match w {
            EffectWrite::PutJobs(_) => "jobs",
            EffectWrite::PutHostRuns(_) => "host_runs",
            EffectWrite::CancelUnfinishedJobsOf(_) => "cancel_unfinished",
            EffectWrite::ReleaseClaims(_) => "release_claims",
            EffectWrite::AppendEvents(_) => "events",
            EffectWrite::AppendAudit(_) => "audit",
            EffectWrite::PutBatch(_) => "batch",
            EffectWrite::LoadQueued { .. } => "load_queued",
        })
        .collect()
}

#[test]
fn applying_effects_writes_in_order_then_starts_the_queued_runs_the_decision_allows() {
    let nb = batch(2, 0);
    let last = nb.jobs.iter().filter(|j| j.host_run_id == nb.host_runs[0].id).count() - 1;
    let fx = decide_job_outcome(running(&nb, last), JobOutcome::Succeeded, NOW, &Rules::default()).unwrap();
    let queued_run = nb.host_runs[1].clone();
    let head = nb.jobs.iter().find(|j| j.host_run_id == queued_run.id && j.position == 0).unwrap().clone();
    let w = writes(fx, vec![(queued_run.clone(), head)]);
    assert_eq!(
        names(&w),
        [
            "jobs",
            "host_runs",
            // A run that succeeded has nothing left to cancel: no cancel_unfinished.
            "release_claims",
            "events",
            "batch",
            "load_queued",
            // The start of the next queued run, decided by `start_queued_runs`.
            "jobs",
            "host_runs",
            "events",
            "batch",
        ]
    );
    assert_eq!(w[5], EffectWrite::LoadQueued { batch: nb.batch.id, count: 1 });
    let EffectWrite::PutHostRuns(started) = &w[7] else { panic!("{:?}", w[7]) };
    assert_eq!((started[0].id, started[0].state), (queued_run.id, HostRunState::Running));
    let EffectWrite::PutBatch(b) = &w[9] else { panic!("{:?}", w[9]) };
    assert_eq!((b.counts.running, b.counts.queued, b.counts.succeeded), (1, 0, 1));
}

#[test]
fn applying_effects_that_start_nothing_never_asks_for_queued_runs() {
    let nb = batch(2, 0);
    let fx = decide_job_outcome(running(&nb, 0), JobOutcome::Succeeded, NOW, &Rules::default()).unwrap();
    assert_eq!(names(&writes(fx, vec![])), ["jobs", "host_runs", "batch"]);
    let paused = decide_pause(nb.batch.clone(), &Principal::new("alice", []), "look", NOW).unwrap();
    assert_eq!(names(&writes(paused, vec![])), ["events", "audit", "batch"]);
}

#[test]
fn cancel_pause_and_resume_move_the_batch() {
    let nb = batch(2, 0);
    let alice = Principal::new("alice", []);
    let head = |i: usize| nb.jobs.iter().find(|j| j.host_run_id == nb.host_runs[i].id && j.position == 0).cloned();
    let mid_step = running(&nb, 0).job;
    let names = |fx: &Effects| fx.events.iter().map(|e| e.kind.name()).collect::<Vec<_>>();
    // (case, runs with their current jobs, batch state after, events, runs ended, runs marked)
    type Case = (&'static str, Vec<(HostRunRecord, Option<JobRecord>)>, BatchState, Vec<&'static str>, usize, usize);
    let cases: [Case; 2] = [
        (
            "a host mid-step is marked and ends when its step reports; a queued host ends now",
            vec![(nb.host_runs[0].clone(), Some(mid_step)), (nb.host_runs[1].clone(), head(1))],
            BatchState::Cancelling,
            vec!["cancel_requested", "host_cancelled"],
            1,
            1,
        ),
        (
            "with nothing mid-step every host ends now and the batch is cancelled",
            vec![(nb.host_runs[0].clone(), head(0)), (nb.host_runs[1].clone(), head(1))],
            BatchState::Cancelled,
            vec!["cancel_requested", "host_cancelled", "host_cancelled", "batch_cancelled"],
            2,
            0,
        ),
    ];
    for (name, runs, state, events, ended, marked) in cases {
        let fx = decide_cancel(nb.batch.clone(), runs, &alice, "wrong hosts", NOW, &Rules::default()).unwrap();
        assert_eq!(fx.batch.as_ref().unwrap().state, state, "{name}");
        assert_eq!(names(&fx), events, "{name}");
        assert_eq!(fx.host_runs.iter().filter(|r| r.state == HostRunState::Cancelled).count(), ended, "{name}");
        assert_eq!(fx.host_runs.iter().filter(|r| r.cancel_requested).count(), marked, "{name}");
        assert_eq!(fx.released_claims.len(), ended, "{name}: claims of ended hosts are released");
        // The cancel is audited with the change: who, why, which batch and hosts.
        let [audit] = &fx.audit[..] else { panic!("{name}: one audit entry, got {:?}", fx.audit) };
        assert_eq!(
            (audit.op, audit.accepted, audit.principal.as_str(), audit.reason.as_deref(), audit.batch_id),
            (AuditOp::Cancel, true, "alice", Some("wrong hosts"), Some(nb.batch.id)),
            "{name}"
        );
        assert_eq!(audit.host_count, 2);
        assert!(audit.names_host(nb.host_runs[1].hostname.as_str()), "{name}: {}", audit.hosts);
    }
    // Cancelling twice changes nothing but is audited; a finished batch cannot be
    // cancelled, paused or resumed.
    let mut cancelling = nb.batch.clone();
    cancelling.state = BatchState::Cancelling;
    let again = decide_cancel(cancelling, vec![], &alice, "again", NOW, &Rules::default()).unwrap();
    assert_eq!(Effects { audit: vec![], ..again.clone() }, Effects::default());
    assert_eq!(again.audit.iter().map(|a| a.reason.as_deref()).collect::<Vec<_>>(), [Some("again")]);
    let mut done = nb.batch.clone();
    done.state = BatchState::Completed;
    assert!(matches!(
        decide_cancel(done.clone(), vec![], &alice, "late", NOW, &Rules::default()),
        Err(TransitionError::BatchFinished { .. })
    ));
    assert!(decide_pause(done.clone(), &alice, "late", NOW).is_err());
    assert!(decide_resume(done, &alice, NOW).is_err());
    // Pause, then resume: queued hosts may start again up to max_in_flight.
    let paused = decide_pause(nb.batch.clone(), &alice, "look first", NOW).unwrap().batch.unwrap();
    assert_eq!(paused.state, BatchState::Paused);
    assert!(decide_pause(paused.clone(), &alice, "twice", NOW).is_err(), "a paused batch cannot pause again");
    let resumed = decide_resume(paused, &alice, NOW).unwrap();
    assert_eq!((resumed.batch.as_ref().unwrap().state, resumed.start_queued), (BatchState::Running, 0));
    let ops: Vec<AuditOp> = resumed.audit.iter().map(|a| a.op).collect();
    assert_eq!(ops, [AuditOp::Resume]);
    let paused = decide_pause(nb.batch.clone(), &alice, "look first", NOW).unwrap();
    assert_eq!(
        paused.audit.iter().map(|a| (a.op, a.reason.as_deref())).collect::<Vec<_>>(),
        [(AuditOp::Pause, Some("look first"))]
    );
}

/// A batch of `action` on the one host `h0.dc1` (pool web), as submitted at `now`: for the
/// tests of decisions about one chain (here and in `netboot`).
pub(crate) fn one_host_batch(action: Action, now: Timestamp) -> NewBatch {
    let ids = IdGenerator::new(Arc::new(ManualClock::new(now)), 9);
    let target = HostTarget {
        hostname: Hostname::new("h0.dc1").unwrap(),
        site: Site::new("dc1").unwrap(),
        pool: Pool::new("web").unwrap(),
        sku: Sku::new("s1").unwrap(),
    };
    let spec = BatchSpec {
        action,
        hosts: vec![target.hostname.clone()],
        priority: PriorityClass::Normal,
        rollout: RolloutPolicy::default(),
        idempotency_key: None,
        not_before: None,
        force: None,
        comment: None,
        params: Default::default(),
        notify: Vec::new(),
    };
    plan_submission(spec, &Principal::new("alice", []), &[target], now, &ids, &Rules::default())
}

#[test]
fn cancelling_a_host_mid_install_fences_it_before_its_claim_is_released() {
    let reimage = Action::Reimage { os: crate::names::OsRelease::new("u24").unwrap(), install_timeout_secs: None };
    let nb = one_host_batch(reimage, NOW);
    let mut run = nb.host_runs[0].clone();
    let mut wait = nb.jobs.iter().find(|j| j.kind == crate::plan::StepKind::AwaitInstall).unwrap().clone();
    wait.state = JobState::Waiting;
    run.step = wait.position;
    let batch = nb.batch.clone();
    assert_eq!(batch.counts.running, 1, "started at submit");
    let alice = Principal::new("alice", []);
    let fx =
        decide_cancel(batch.clone(), vec![(run.clone(), Some(wait.clone()))], &alice, "stop", NOW, &Rules::default())
            .unwrap();
    assert_eq!(fx.batch.as_ref().unwrap().state, BatchState::Cancelling);
    assert!(fx.released_claims.is_empty(), "the claim waits for the fence");
    assert!(fx.cancel_jobs_of.is_empty());
    let fence = &fx.jobs[0];
    assert_eq!((fence.id, fence.kind, fence.state), (wait.id, crate::plan::StepKind::Fence, JobState::Available));
    assert_eq!((fence.wait_token.as_deref(), fence.wait_deadline), (None, None), "the installer's token is dead");
    assert!(fx.host_runs[0].cancel_requested);
    // The fence fails once (a BMC blip): it is retried, the claim still held.
    let mut leased = fence.clone();
    LeaseGrant::new("w1", NOW, Duration::from_secs(60)).apply(&mut leased).unwrap();
    let ctx = JobContext {
        batch: fx.batch.clone().unwrap(),
        host_run: fx.host_runs[0].clone(),
        job: leased.clone(),
        next: nb.jobs.iter().find(|j| j.position == wait.position + 1).cloned(),
    };
    let failed = JobOutcome::Failed { error: "BMC busy".into(), retryable: true };
    let retry = decide_job_outcome(ctx.clone(), failed, NOW, &Rules::default()).unwrap();
    assert_eq!(retry.jobs[0].state, JobState::Available);
    assert!(retry.released_claims.is_empty());
    // Powered off: now the run ends cancelled and the claim goes.
    let done = decide_job_outcome(ctx, JobOutcome::Succeeded, NOW, &Rules::default()).unwrap();
    assert_eq!(done.host_runs[0].state, HostRunState::Cancelled);
    assert_eq!(done.released_claims, vec![Hostname::new("h0.dc1").unwrap()]);
    assert_eq!(done.batch.unwrap().state, BatchState::Cancelled);
}

#[test]
fn the_controls_offered_are_those_the_decisions_accept() {
    let nb = batch(2, 5);
    let alice = Principal::new("alice", []);
    for &state in BatchState::ALL {
        let mut b = nb.batch.clone();
        b.state = state;
        let c = batch_controls(state);
        let cancel = decide_cancel(b.clone(), vec![], &alice, "r", NOW, &Rules::default());
        // Cancelling a batch already cancelling is accepted as a no-op, not offered.
        assert_eq!(c.cancel, cancel.is_ok_and(|fx| fx.batch.is_some()), "cancel in {state}");
        assert_eq!(c.pause, decide_pause(b.clone(), &alice, "r", NOW).is_ok(), "pause in {state}");
        assert_eq!(c.resume, decide_resume(b, &alice, NOW).is_ok(), "resume in {state}");
    }
}
