//! Queue-contract behaviours (`QueueStore`): submit and overlap, claims, completions,
//! chains, retries, rescue, waits, cancel, pause, budgets, leader rows, the outbox,
//! hand-back, stragglers and retention.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use maas_core::action::{Action, ActionKind};
use maas_core::authz::Principal;
use maas_core::batch::{BatchSpec, RolloutPolicy};
use maas_core::machine::{JobOutcome, TransitionError};
use maas_core::model::*;
use maas_core::names::{Hostname, OsRelease};
use maas_core::plan::StepKind;
use maas_core::ports::store::*;
use maas_core::priority::PriorityClass;

use super::*;

/// Submitting writes the batch, one queued-or-running host run per host, every job of
/// every chain (head available, rest blocked), one claim per host and an accepted event.
pub async fn submit_creates_batch_runs_chains_claims_and_event(t: Harness) {
    let hosts = t.add_hosts("dc1", 3).await;
    let b = t.submit(&hosts, reboot(), |s| s.rollout.max_in_flight = 2).await.unwrap();
    assert!(b.created);
    let batch = t.batch(&b.batch).await;
    assert_eq!(batch.state, BatchState::Running);
    assert_eq!((batch.counts.running, batch.counts.queued), (2, 1));
    let runs =
        t.store.host_run_list(HostRunListParams { batch_id: Some(batch.id), ..Default::default() }).await.unwrap();
    assert_eq!(runs.iter().map(|r| r.hostname.clone()).collect::<Vec<_>>(), hosts);
    let jobs = t.jobs_of(&batch).await;
    assert_eq!(jobs.len(), 9, "3 hosts x [preflight, power_cycle, verify]");
    assert_eq!(jobs.iter().filter(|j| j.state == JobState::Available).count(), 2);
    assert_eq!(jobs.iter().filter(|j| j.state == JobState::Blocked).count(), 7);
    assert_eq!(t.store.claim_get_many(&hosts).await.unwrap().len(), 3);
    let events = t.store.event_list(EventListParams { batch_id: Some(batch.id), ..Default::default() }).await.unwrap();
    assert_eq!(events[0].kind.name(), "batch_accepted");
    assert_eq!(events.iter().filter(|e| e.kind.name() == "host_started").count(), 2);
    let audit = t.store.audit_list(AuditFilter::default()).await.unwrap();
    assert_eq!((audit[0].op, audit[0].accepted, audit[0].batch_id), (AuditOp::Submit, true, Some(batch.id)));
    assert_eq!(audit[0].hosts, "n[0-2].dc1");
    // The batch names its hosts' pools, read back by get and list.
    let web = vec![maas_core::names::Pool::new("web").unwrap()];
    assert_eq!(t.store.batch_get(batch.id).await.unwrap().unwrap().pools, web);
    assert_eq!(t.store.batch_list(BatchListParams::default()).await.unwrap()[0].pools, web);
}

/// Many submitters racing for shared hosts: each host ends up claimed by exactly one
/// batch, and every losing submission left nothing behind (no batch, jobs, claims, events).
pub async fn concurrent_submit_with_shared_host_has_one_winner(t: Harness) {
    let hosts = t.add_hosts("dc1", 12).await;
    let t = Arc::new(t);
    let mut tasks = Vec::new();
    for i in 0..8usize {
        // Overlapping windows: batch i takes hosts i..i+5.
        let mine: Vec<Hostname> = hosts[i..(i + 5).min(hosts.len())].to_vec();
        let nb = t.new_batch(&mine, reboot(), |_| {}).await;
        let store = t.store.clone();
        tasks.push(tokio::spawn(async move { store.batch_submit(BatchSubmitParams { new_batch: nb }).await }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(b) => winners.push(b.batch),
            Err(StoreError::Overlap { conflicts }) => assert!(!conflicts.is_empty()),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(!winners.is_empty());
    let listed = t.store.batch_list(BatchListParams::default()).await.unwrap();
    assert_eq!(listed.len(), winners.len(), "losers must leave no batch");
    let claims = t.store.claim_get_many(&hosts).await.unwrap();
    let claimed: HashSet<&Hostname> = claims.iter().map(|c| &c.hostname).collect();
    assert_eq!(claimed.len(), claims.len(), "a host claimed twice");
    let expected: usize = winners.iter().map(|b| b.spec.hosts.len()).sum();
    assert_eq!(claims.len(), expected, "claims must belong to winners only");
    let jobs = t.store.job_list(JobListParams::default()).await.unwrap();
    assert!(jobs.iter().all(|j| winners.iter().any(|w| w.id == j.batch_id)), "a loser left jobs");
    let events = t.store.event_list(EventListParams::default()).await.unwrap();
    assert!(events.iter().all(|e| winners.iter().any(|w| w.id == e.batch_id)), "a loser left events");
}

/// The overlap error names every conflicting host and the batch holding it.
pub async fn overlap_error_names_every_conflicting_host_and_holder(t: Harness) {
    let hosts = t.add_hosts("dc1", 4).await;
    let first = t.submit(&hosts[..2], reboot(), |_| {}).await.unwrap().batch;
    let err = t.submit(&hosts[..3], reboot(), |_| {}).await.unwrap_err();
    let StoreError::Overlap { conflicts } = err else { panic!("expected overlap, got {err}") };
    let mut got: Vec<(String, maas_core::id::BatchId)> =
        conflicts.iter().map(|c| (c.host.to_string(), c.held_by)).collect();
    got.sort();
    assert_eq!(got, vec![(hosts[0].to_string(), first.id), (hosts[1].to_string(), first.id)]);
    assert!(t.store.claim_get_many(&hosts[2..3]).await.unwrap().is_empty(), "the free host must stay unclaimed");
}

/// Resubmitting with the same idempotency key and spec returns the same batch; the same key
/// with another spec is refused; a forgotten key (past its horizon) names a new batch.
pub async fn idempotent_resubmit_returns_the_same_batch(t: Harness) {
    let hosts = t.add_hosts("dc1", 3).await;
    let key = |s: &mut BatchSpec| s.idempotency_key = Some("change-42".into());
    let a = t.submit(&hosts[..2], reboot(), key).await.unwrap();
    let b = t.submit(&hosts[..2], reboot(), key).await.unwrap();
    assert!(a.created && !b.created);
    assert_eq!(a.batch.id, b.batch.id);
    let err = t.submit(&hosts[..2], Action::PowerCycle, key).await.unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyKeyReused { batch, .. } if batch == a.batch.id), "{err}");
    assert_eq!(t.store.batch_list(BatchListParams::default()).await.unwrap().len(), 1);
    let found = t.store.batch_find_by_key("alice", "change-42").await.unwrap();
    assert_eq!(found.map(|b| b.id), Some(a.batch.id));
    assert!(t.store.batch_find_by_key("bob", "change-42").await.unwrap().is_none(), "keys are per submitter");
    assert!(t.store.batch_find_by_key("alice", "other").await.unwrap().is_none());
    t.store.batch_forget_key(a.batch.id).await.unwrap();
    assert!(t.store.batch_find_by_key("alice", "change-42").await.unwrap().is_none());
    let c = t.submit(&hosts[2..], Action::PowerCycle, key).await.unwrap();
    assert!(c.created && c.batch.id != a.batch.id, "the key names a new batch");
    assert!(t.store.batch_get(a.batch.id).await.unwrap().is_some(), "the old batch stays");
}

/// Sixteen identical submissions with one key, at once (a client retrying after a
/// timeout): one batch is created and every caller gets its id, under any interleaving.
pub async fn concurrent_identical_keyed_submits_all_get_the_one_batch(t: Harness) {
    let hosts = t.add_hosts("dc1", 4).await;
    let t = Arc::new(t);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let nb = t.new_batch(&hosts, reboot(), |s| s.idempotency_key = Some("retry-7".into())).await;
        let store = t.store.clone();
        tasks.push(tokio::spawn(async move { store.batch_submit(BatchSubmitParams { new_batch: nb }).await }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for task in tasks {
        let done = task.await.unwrap().unwrap_or_else(|e| panic!("a keyed resubmission was refused: {e}"));
        ids.insert(done.batch.id);
        created += usize::from(done.created);
    }
    assert_eq!((ids.len(), created), (1, 1), "one batch, created once, returned to all");
    assert_eq!(t.store.batch_list(BatchListParams::default()).await.unwrap().len(), 1);
}

/// Claims take only the worker's site and kinds, smallest queue key first, at most `limit`.
pub async fn claims_respect_site_kinds_key_order_and_limit(t: Harness) {
    let dc1 = t.add_hosts("dc1", 4).await;
    let dc2 = t.add_hosts("dc2", 2).await;
    let low = t.submit(&dc1[..2], reboot(), |s| s.priority = PriorityClass::Low).await.unwrap().batch;
    t.clock.advance(Duration::from_secs(1));
    let urgent = t.submit(&dc1[2..], reboot(), |s| s.priority = PriorityClass::Urgent).await.unwrap().batch;
    t.submit(&dc2, reboot(), |_| {}).await.unwrap();
    // Wrong kind: nothing.
    let none = t
        .store
        .job_claim(JobClaimParams {
            site: site("dc1"),
            kinds: vec![StepKind::Verify],
            limit: 10,
            owner: "w".into(),
            now: t.now(),
            lease: LEASE,
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    let got = t.claim("dc1", 3, "w1").await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|j| j.site == site("dc1") && j.state == JobState::Running && j.attempt == 1));
    assert!(got.windows(2).all(|w| (w[0].key, w[0].id) <= (w[1].key, w[1].id)), "not in key order");
    assert_eq!(got[0].batch_id, urgent.id);
    assert_eq!(got[1].batch_id, urgent.id);
    assert_eq!(got[2].batch_id, low.id);
    assert_eq!(t.claim("dc1", 10, "w2").await.len(), 1);
    assert_eq!(t.claim("dc2", 10, "w3").await.len(), 2);
}

/// Jobs scheduled for later (`not_before`) are not claimable before their time.
pub async fn scheduled_jobs_wait_for_their_time(t: Harness) {
    let hosts = t.add_hosts("dc1", 1).await;
    let later = t.now().plus(Duration::from_secs(600));
    t.submit(&hosts, reboot(), |s| s.not_before = Some(later)).await.unwrap();
    assert!(t.claim("dc1", 10, "w").await.is_empty());
    t.clock.advance(Duration::from_secs(600));
    assert_eq!(t.claim("dc1", 10, "w").await.len(), 1);
}

/// Concurrent claimers never receive the same job.
pub async fn concurrent_claimers_never_share_a_job(t: Harness) {
    let hosts = t.add_hosts("dc1", 40).await;
    t.submit(&hosts, reboot(), |s| s.rollout.max_in_flight = 40).await.unwrap();
    let t = Arc::new(t);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let t = t.clone();
        tasks.push(tokio::spawn(async move { t.claim("dc1", 7, &format!("w{w}")).await }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for task in tasks {
        for j in task.await.unwrap() {
            assert!(seen.insert(j.id), "job {} handed out twice", j.id);
            total += 1;
        }
    }
    assert_eq!(total, 40);
}

/// A completion from an attempt that no longer holds the job is refused and changes nothing.
pub async fn completion_with_stale_attempt_is_refused(t: Harness) {
    let hosts = t.add_hosts("dc1", 1).await;
    t.submit(&hosts, reboot(), |_| {}).await.unwrap();
    let job = t.claim("dc1", 1, "w1").await.remove(0);
    t.clock.advance(LEASE + Duration::from_secs(1));
    let report = t.store.job_rescue_expired(JobRescueParams { now: t.now(), limit: 100 }).await.unwrap();
    assert_eq!(report.retried, vec![job.id]);
    t.clock.advance(Duration::from_secs(600));
    let again = t.claim("dc1", 1, "w2").await.remove(0);
    assert_eq!((again.id, again.attempt), (job.id, 2));
    let err = t.complete(&job, JobOutcome::Succeeded).await.unwrap_err();
    assert!(matches!(err, TransitionError::StaleAttempt { attempt: 1, current: 2, .. }), "{err}");
    let now =
        t.store.job_list(JobListParams { host_run_id: Some(job.host_run_id), ..Default::default() }).await.unwrap();
    assert_eq!(now[0].state, JobState::Running);
    assert_eq!(now[1].state, JobState::Blocked, "a stale completion must not advance the chain");
    t.complete(&again, JobOutcome::Succeeded).await.unwrap();
}

/// One `job_complete_many` call mixing every kind of outcome, across two batches, answers
/// each completion as if it had been recorded alone, in call order: chain advances, a
/// retry, a host run ending (which starts a queued one), a failed host run, a stale attempt
/// and a duplicate of an earlier completion in the same call.
pub async fn one_call_records_many_mixed_completions(t: Harness) {
    let hosts = t.add_hosts("dc1", 8).await;
    let a = t.submit(&hosts[..6], reboot(), |s| s.rollout.max_in_flight = 3).await.unwrap().batch;
    let b = t.submit(&hosts[6..], reboot(), |_| {}).await.unwrap().batch;
    // Take host 2 of batch A to its last step first.
    let mut last = None;
    for _ in 0..3 {
        let jobs = t.claim("dc1", 100, "w").await;
        let (mine, rest): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| j.hostname == hosts[2]);
        t.store
            .job_release_many(JobReleaseParams {
                owner: "w".into(),
                jobs: rest.iter().map(|j| (j.id, j.attempt)).collect(),
                now: t.now(),
            })
            .await
            .unwrap();
        if mine[0].kind == StepKind::Verify {
            last = mine.into_iter().next();
            break;
        }
        t.complete(&mine[0], JobOutcome::Succeeded).await.unwrap();
    }
    let last = last.expect("host 2 reaches its verify step");
    let heads = t.claim("dc1", 100, "w").await;
    let head = |i: usize| heads.iter().find(|j| j.hostname == hosts[i]).cloned().unwrap();
    assert_eq!(heads.len(), 4, "hosts 0, 1 (batch A) and 6, 7 (batch B); host 2 is held above");
    let done = |job: &JobRecord, attempt: u32, outcome: JobOutcome| JobCompletion { job_id: job.id, attempt, outcome };
    let retry = JobOutcome::Failed { error: "BMC busy".into(), retryable: true };
    let fatal = JobOutcome::Failed { error: "no such BMC".into(), retryable: false };
    let calls = vec![
        done(&head(0), head(0).attempt, JobOutcome::Succeeded),
        done(&head(1), head(1).attempt, retry),
        done(&last, last.attempt, JobOutcome::Succeeded),
        done(&head(6), head(6).attempt + 1, JobOutcome::Succeeded),
        done(&head(0), head(0).attempt, JobOutcome::Succeeded),
        done(&head(7), head(7).attempt, fatal),
    ];
    let results = t.store.job_complete_many(JobCompleteManyParams { completions: calls, now: t.now() }).await.unwrap();
    assert_eq!(results.len(), 6);
    assert!(results[0].is_ok() && results[1].is_ok() && results[2].is_ok() && results[5].is_ok(), "{results:?}");
    assert!(matches!(results[3], Err(TransitionError::StaleAttempt { .. })), "{:?}", results[3]);
    assert!(results[4].is_err(), "the duplicate comes after the job already succeeded: {:?}", results[4]);

    let chain = |i: usize| {
        let store = t.store.clone();
        let host = hosts[i].clone();
        async move {
            let runs =
                store.host_run_list(HostRunListParams { hostnames: vec![host], ..Default::default() }).await.unwrap();
            let jobs =
                store.job_list(JobListParams { host_run_id: Some(runs[0].id), ..Default::default() }).await.unwrap();
            (runs[0].clone(), jobs)
        }
    };
    let (run0, jobs0) = chain(0).await;
    assert_eq!((run0.step, jobs0[0].state, jobs0[1].state), (1, JobState::Succeeded, JobState::Available));
    let (run1, jobs1) = chain(1).await;
    assert_eq!((run1.step, jobs1[0].state, jobs1[0].attempt), (0, JobState::Available, head(1).attempt));
    assert_eq!(jobs1[0].last_error.as_deref(), Some("BMC busy"));
    assert!(jobs1[0].run_at > t.now(), "the retry waits for its backoff");
    assert_eq!(chain(2).await.0.state, HostRunState::Succeeded);
    assert_eq!(chain(3).await.0.state, HostRunState::Running, "host 2's end starts the first queued host");
    assert_eq!(chain(4).await.0.state, HostRunState::Queued);
    let (run6, jobs6) = chain(6).await;
    assert_eq!((run6.state, jobs6[0].state), (HostRunState::Running, JobState::Running), "stale: untouched");
    assert_eq!(chain(7).await.0.state, HostRunState::Failed);

    let batch_a = t.batch(&a).await;
    assert_eq!(
        (batch_a.counts.running, batch_a.counts.queued, batch_a.counts.succeeded),
        (3, 2, 1),
        "{:?}",
        batch_a.counts
    );
    assert_eq!(t.batch(&b).await.counts.failed, 1);
    assert!(t.store.claim_get_many(&hosts[2..3]).await.unwrap().is_empty(), "host 2's claim is released");
    let names: Vec<&str> = t
        .store
        .event_list(EventListParams { batch_id: Some(a.id), ..Default::default() })
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind.name())
        .collect::<Vec<_>>()
        .into_iter()
        .filter(|n| *n != "batch_accepted")
        .collect();
    assert_eq!(names.iter().filter(|n| **n == "host_started").count(), 4);
    assert_eq!(names.iter().filter(|n| **n == "host_succeeded").count(), 1);
}

/// A chain advances one step at a time, only after the previous step succeeds; the last
/// step ends the host run, releases the claim and completes the batch.
pub async fn chains_advance_only_after_the_previous_step_succeeds(t: Harness) {
    let hosts = t.add_hosts("dc1", 1).await;
    let batch = t.submit(&hosts, reboot(), |_| {}).await.unwrap().batch;
    let mut order = Vec::new();
    for _ in 0..3 {
        let jobs = t.claim("dc1", 10, "w").await;
        assert_eq!(jobs.len(), 1, "only the chain head is runnable");
        order.push(jobs[0].kind);
        assert!(t.claim("dc1", 10, "w").await.is_empty(), "next step must wait for this one");
        t.complete(&jobs[0], JobOutcome::Succeeded).await.unwrap();
    }
    assert_eq!(order, vec![StepKind::Preflight, StepKind::PowerCycle, StepKind::Verify]);
    let b = t.batch(&batch).await;
    assert_eq!(b.state, BatchState::Completed);
    assert_eq!(b.counts.succeeded, 1);
    assert!(b.finished_at.is_some());
    assert!(t.store.claim_get_many(&hosts).await.unwrap().is_empty());
    let names: Vec<&str> = t
        .store
        .event_list(EventListParams { batch_id: Some(batch.id), ..Default::default() })
        .await
        .unwrap()
        .iter()
        .map(|e| e.kind.name())
        .collect();
    assert_eq!(names, ["batch_accepted", "host_started", "host_succeeded", "batch_completed"]);
    // The host is free again.
    t.submit(&hosts, reboot(), |_| {}).await.unwrap();
}

/// A retryable failure re-queues the step after a backoff; exhausting attempts fails the
/// host run, cancels the rest of its chain and marks it wedged.
pub async fn failed_steps_retry_with_backoff_then_fail_the_host_run(t: Harness) {
    let hosts = t.add_hosts("dc1", 1).await;
    let batch = t.submit(&hosts, Action::PowerCycle, |_| {}).await.unwrap().batch;
    let first = t.claim("dc1", 1, "w").await.remove(0);
    t.complete(&first, JobOutcome::Succeeded).await.unwrap();
    let fail = JobOutcome::Failed { error: "BMC busy".into(), retryable: true };
    for attempt in 1..=5u32 {
        let job = t.claim("dc1", 1, "w").await;
        assert_eq!(job.len(), 1, "attempt {attempt} must be claimable after its backoff");
        assert_eq!(job[0].attempt, attempt);
        t.complete(&job[0], fail.clone()).await.unwrap();
        if attempt < 5 {
            assert!(t.claim("dc1", 1, "w").await.is_empty(), "retry must wait for its backoff");
            t.clock.advance(t.rules.retry.backoff(attempt));
        }
    }
    let b = t.batch(&batch).await;
    assert_eq!((b.counts.failed, b.state), (1, BatchState::Completed));
    let runs =
        t.store.host_run_list(HostRunListParams { batch_id: Some(batch.id), ..Default::default() }).await.unwrap();
    assert_eq!(runs[0].state, HostRunState::Failed);
    assert_eq!(runs[0].last_error.as_deref(), Some("BMC busy"));
    let events = t.store.event_list(EventListParams { batch_id: Some(batch.id), ..Default::default() }).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::HostFailed { wedged: true, step: StepKind::PowerCycle, .. }))
    );
    assert!(t.store.claim_get_many(&hosts).await.unwrap().is_empty());
}

/// Expired leases are rescued: retried while attempts remain, failed after.
pub async fn expired_leases_are_rescued_and_retried_or_failed(t: Harness) {
    let hosts = t.add_hosts("dc1", 1).await;
    let batch = t.submit(&hosts, reboot(), |_| {}).await.unwrap().batch;
    for attempt in 1..=3u32 {
        let job = t.claim("dc1", 1, "w").await;
        assert_eq!(job.len(), 1, "attempt {attempt}");
        assert!(
            t.store.job_rescue_expired(JobRescueParams { now: t.now(), limit: 10 }).await.unwrap().retried.is_empty(),
            "a live lease must not be rescued"
        );
        t.clock.advance(LEASE + Duration::from_millis(1));
        let r = t.store.job_rescue_expired(JobRescueParams { now: t.now(), limit: 10 }).await.unwrap();
        if attempt < 3 {
            assert_eq!(r.retried, vec![job[0].id]);
            t.clock.advance(Duration::from_secs(600));
        } else {
            assert_eq!(r.failed, vec![job[0].id], "preflight has 3 attempts");
        }
    }
    assert_eq!(t.batch(&batch).await.counts.failed, 1);
}

/// A restarted instance takes back at once the leases of its earlier incarnations (and of
/// owners from before incarnations), and only those: its own live workers and other
/// instances keep theirs. The forfeited attempt's late completion is refused.
pub async fn a_restarted_instance_forfeits_only_its_earlier_incarnations_leases(t: Harness) {
    let hosts = t.add_hosts("dc1", 4).await;
    t.submit(&hosts, reboot(), |s| s.rollout.max_in_flight = 4).await.unwrap();
    let owners = ["i1@1/dc1/web/0.0", "i1@2/dc1/web/0.0", "i10@1/dc1/web/0.0", "i1/dc1/web/1.0"];
    let mut jobs = Vec::new();
    for owner in owners {
        jobs.push(t.claim("dc1", 1, owner).await.remove(0));
    }
    let restarted = maas_core::policy::InstanceId::new("i1", 2).unwrap();
    let forfeit = |now| JobForfeitParams { instance: restarted.clone(), now };
    let r = t.store.job_forfeit_leases(forfeit(t.now())).await.unwrap();
    let mut retried = r.retried.clone();
    retried.sort();
    let mut want = vec![jobs[0].id, jobs[3].id];
    want.sort();
    assert_eq!((retried, r.failed.len(), r.wait_expired.len()), (want, 0, 0), "the leases lost with i1@1 and i1");
    for (job, lost) in jobs.iter().zip([true, false, false, true]) {
        let now =
            t.store.job_list(JobListParams { host_run_id: Some(job.host_run_id), ..Default::default() }).await.unwrap();
        let now = now.iter().find(|j| j.id == job.id).unwrap();
        if lost {
            assert_eq!((now.state, now.lease_owner.as_deref()), (JobState::Available, None), "{}", job.hostname);
            let error = now.last_error.as_deref().unwrap_or_default();
            assert!(error.contains("restarted as i1@2"), "{error}");
        } else {
            assert_eq!(now.state, JobState::Running, "{} keeps its lease", job.hostname);
        }
    }
    let err = t.complete(&jobs[0], JobOutcome::Succeeded).await.unwrap_err();
    assert!(matches!(err, TransitionError::StaleAttempt { .. }), "{err}");
    assert_eq!(t.store.job_forfeit_leases(forfeit(t.now())).await.unwrap(), RescueReport::default(), "once");
    t.complete(&jobs[1], JobOutcome::Succeeded).await.unwrap();
}

/// Heartbeats extend only leases the caller holds.
pub async fn heartbeats_extend_only_own_leases(t: Harness) {
    let hosts = t.add_hosts("dc1", 2).await;
    t.submit(&hosts, reboot(), |_| {}).await.unwrap();
    let a = t.claim("dc1", 1, "wa").await.remove(0);
    let b = t.claim("dc1", 1, "wb").await.remove(0);
    t.clock.advance(Duration::from_secs(50));
    let held = t
        .store
        .job_heartbeat_many(JobHeartbeatManyParams {
            owner: "wa".into(),
            job_ids: vec![a.id, b.id],
            now: t.now(),
            lease: LEASE,
        })
        .await
        .unwrap();
    assert_eq!(held, vec![a.id]);
    t.clock.advance(Duration::from_secs(20));
    let r = t.store.job_rescue_expired(JobRescueParams { now: t.now(), limit: 10 }).await.unwrap();
    assert_eq!(r.retried, vec![b.id], "only the lease without a heartbeat expires");
}

/// Submits a reimage of `hosts` (1 h install timeout) and completes its steps up to the
/// install: the batch and its waiting install jobs.
async fn reimage_to_install(t: &Harness, hosts: &[Hostname]) -> (BatchRecord, Vec<JobRecord>) {
    let os = OsRelease::new("ubuntu-24.04").unwrap();
    let batch = t.submit(hosts, Action::Reimage { os, install_timeout_secs: Some(3600) }, |_| {}).await.unwrap().batch;
    for _ in 0..3 {
        for j in t.claim("dc1", 10, "w").await {
            t.complete(&j, JobOutcome::Succeeded).await.unwrap();
        }
    }
    let waiting = t
        .store
        .job_list(JobListParams { batch_id: Some(batch.id), states: vec![JobState::Waiting], ..Default::default() })
        .await
        .unwrap();
    (batch, waiting)
}

/// A waiting step parks without a worker; its callback token completes it; a wrong token is
/// refused; a missed deadline fails the host run.
pub async fn waiting_steps_park_and_complete_by_callback_or_deadline(t: Harness) {
    let hosts = t.add_hosts("dc1", 2).await;
    let (batch, waiting) = reimage_to_install(&t, &hosts).await;
    assert_eq!(waiting.len(), 2);
    assert!(waiting.iter().all(|w| w.kind == StepKind::AwaitInstall && w.lease_owner.is_none()));
    assert!(t.claim("dc1", 10, "w").await.is_empty(), "a waiting job is not claimable");
    let bad = t
        .store
        .job_resolve_wait(JobResolveWaitParams { token: "guess".into(), outcome: JobOutcome::Succeeded, now: t.now() })
        .await;
    assert!(matches!(bad, Err(StoreError::Transition(TransitionError::WrongToken))));
    let token = waiting[0].wait_token.clone().unwrap();
    let done = t
        .store
        .job_resolve_wait(JobResolveWaitParams { token: token.clone(), outcome: JobOutcome::Succeeded, now: t.now() })
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    let replay =
        t.store.job_resolve_wait(JobResolveWaitParams { token, outcome: JobOutcome::Succeeded, now: t.now() }).await;
    assert!(replay.is_err(), "a token completes its job once");
    let next = t.claim("dc1", 10, "w").await;
    assert_eq!(next.iter().map(|j| j.kind).collect::<Vec<_>>(), vec![StepKind::BootDisk]);
    t.clock.advance(Duration::from_secs(3601));
    let r = t.store.job_rescue_expired(JobRescueParams { now: t.now(), limit: 10 }).await.unwrap();
    assert_eq!(r.wait_expired, vec![waiting[1].id]);
    let runs = t
        .store
        .host_run_list(HostRunListParams {
            batch_id: Some(batch.id),
            hostnames: vec![waiting[1].hostname.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs[0].state, HostRunState::Failed);
    assert!(runs[0].last_error.as_deref().unwrap().contains("no await_install report"), "{:?}", runs[0].last_error);
}

/// Cancel stops everything not running and releases those claims at once; a host mid-step
/// finishes that step, then is cancelled and released; the batch ends cancelled.
pub async fn cancel_releases_claims_and_stops_pending_jobs(t: Harness) {
    let hosts = t.add_hosts("dc1", 4).await;
    let batch = t.submit(&hosts, reboot(), |s| s.rollout.max_in_flight = 2).await.unwrap().batch;
    let running = t.claim("dc1", 1, "w").await.remove(0);
    let b = t
        .store
        .batch_cancel(BatchCancelParams {
            batch_id: batch.id,
            principal: Principal::new("bob", []),
            reason: "wrong hosts".into(),
            now: t.now(),
        })
        .await
        .unwrap();
    assert_eq!(b.state, BatchState::Cancelling);
    assert_eq!((b.counts.cancelled, b.counts.running), (3, 1));
    let claims = t.store.claim_get_many(&hosts).await.unwrap();
    assert_eq!(claims.iter().map(|c| c.hostname.clone()).collect::<Vec<_>>(), vec![running.hostname.clone()]);
    assert!(t.claim("dc1", 10, "w").await.is_empty(), "no pending job may start after cancel");
    t.complete(&running, JobOutcome::Succeeded).await.unwrap();
    let b = t.batch(&batch).await;
    assert_eq!(b.state, BatchState::Cancelled);
    assert_eq!(b.counts.cancelled, 4);
    assert!(t.store.claim_get_many(&hosts).await.unwrap().is_empty());
    let jobs = t.jobs_of(&batch).await;
    assert!(jobs.iter().all(|j| j.state.is_terminal()), "every job must end");
    let again = t
        .store
        .batch_cancel(BatchCancelParams {
            batch_id: batch.id,
            principal: Principal::new("bob", []),
            reason: "again".into(),
            now: t.now(),
        })
        .await;
    assert!(matches!(again, Err(StoreError::Transition(TransitionError::BatchFinished { .. }))));
}

/// More failures than the budget pause the batch: no new hosts start; resume continues.
pub async fn failure_budget_pauses_the_batch(t: Harness) {
    let hosts = t.add_hosts("dc1", 6).await;
    let batch = t
        .submit(&hosts, reboot(), |s| s.rollout = RolloutPolicy { max_in_flight: 2, failure_budget: 1 })
        .await
        .unwrap()
        .batch;
    let fatal = JobOutcome::Failed { error: "preflight: in use".into(), retryable: false };
    for j in t.claim("dc1", 10, "w").await {
        t.complete(&j, fatal.clone()).await.unwrap();
    }
    // Two failed; the first freed a slot (a third host started), the second broke the budget.
    let b = t.batch(&batch).await;
    assert_eq!(b.state, BatchState::Paused);
    assert!(matches!(b.pause_reason, Some(PauseReason::FailureBudget { failed: 2, budget: 1 })));
    let before = b.counts;
    assert!(before.queued >= 3);
    for j in t.claim("dc1", 10, "w").await {
        t.complete(&j, JobOutcome::Succeeded).await.unwrap();
    }
    t.drain("dc1", 10).await;
    let b = t.batch(&batch).await;
    assert_eq!(b.state, BatchState::Paused);
    assert_eq!(b.counts.queued, before.queued, "no new host may start while paused");
    let r = t
        .store
        .batch_set_paused(BatchSetPausedParams {
            batch_id: batch.id,
            principal: Principal::new("bob", []),
            paused: false,
            reason: String::new(),
            now: t.now(),
        })
        .await
        .unwrap();
    assert_eq!(r.state, BatchState::Running);
    t.drain("dc1", 20).await;
    let b = t.batch(&batch).await;
    assert_eq!(b.state, BatchState::Completed);
    assert_eq!((b.counts.failed, b.counts.succeeded), (2, 4));
}

/// At most `max_in_flight` host runs of a batch run at once; finishing one starts the next.
pub async fn max_in_flight_limits_running_hosts(t: Harness) {
    let hosts = t.add_hosts("dc1", 5).await;
    let batch = t.submit(&hosts, Action::PowerOn, |s| s.rollout.max_in_flight = 2).await.unwrap().batch;
    let mut peak = 0;
    for _ in 0..20 {
        let b = t.batch(&batch).await;
        peak = peak.max(b.counts.running);
        assert!(b.counts.running <= 2);
        let jobs = t.claim("dc1", 10, "w").await;
        if jobs.is_empty() {
            break;
        }
        for j in jobs {
            t.complete(&j, JobOutcome::Succeeded).await.unwrap();
        }
    }
    assert_eq!(peak, 2);
    assert_eq!(t.batch(&batch).await.state, BatchState::Completed);
}

/// A user pause stops new hosts from starting; a paused batch cannot be paused again.
pub async fn pause_and_resume_by_a_user(t: Harness) {
    let hosts = t.add_hosts("dc1", 3).await;
    let batch = t.submit(&hosts, Action::PowerOn, |s| s.rollout.max_in_flight = 1).await.unwrap().batch;
    let p = |paused| BatchSetPausedParams {
        batch_id: batch.id,
        principal: Principal::new("bob", []),
        paused,
        reason: "look first".into(),
        now: t.now(),
    };
    assert_eq!(t.store.batch_set_paused(p(true)).await.unwrap().state, BatchState::Paused);
    assert!(matches!(t.store.batch_set_paused(p(true)).await, Err(StoreError::Transition(_))));
    t.drain("dc1", 10).await;
    let b = t.batch(&batch).await;
    assert_eq!((b.counts.succeeded, b.counts.queued), (1, 2), "the running host finishes; no new one starts");
    t.store.batch_set_paused(p(false)).await.unwrap();
    t.drain("dc1", 10).await;
    assert_eq!(t.batch(&batch).await.state, BatchState::Completed);
}

/// The leader lease is exclusive while valid, renewable by its holder, and taken over after
/// it expires or is resigned.
pub async fn leader_lease_is_exclusive_and_expires(t: Harness) {
    let p = |owner: &str, now| LeaderElectParams {
        name: "rescuer".into(),
        owner: owner.into(),
        now,
        ttl: Duration::from_secs(30),
    };
    assert!(t.store.leader_attempt_elect(p("a", t.now())).await.unwrap());
    assert!(!t.store.leader_attempt_elect(p("b", t.now())).await.unwrap());
    t.clock.advance(Duration::from_secs(20));
    assert!(t.store.leader_attempt_elect(p("a", t.now())).await.unwrap(), "holder renews");
    t.clock.advance(Duration::from_secs(20));
    assert!(!t.store.leader_attempt_elect(p("b", t.now())).await.unwrap(), "renewal moved the expiry");
    t.clock.advance(Duration::from_secs(11));
    assert!(t.store.leader_attempt_elect(p("b", t.now())).await.unwrap(), "expired lease is taken over");
    t.store.leader_resign("rescuer", "a").await.unwrap();
    assert!(!t.store.leader_attempt_elect(p("a", t.now())).await.unwrap(), "resign by a non-holder does nothing");
    t.store.leader_resign("rescuer", "b").await.unwrap();
    assert!(t.store.leader_attempt_elect(p("a", t.now())).await.unwrap());
    let other =
        LeaderElectParams { name: "outbox".into(), owner: "b".into(), now: t.now(), ttl: Duration::from_secs(30) };
    assert!(t.store.leader_attempt_elect(other).await.unwrap(), "leases are per name");
}

/// Outbox events are numbered in commit order, readable from any position and per batch;
/// cursors only move forward.
pub async fn outbox_is_ordered_and_cursors_only_move_forward(t: Harness) {
    let hosts = t.add_hosts("dc1", 2).await;
    let a = t.submit(&hosts[..1], Action::PowerOn, |_| {}).await.unwrap().batch;
    let b = t.submit(&hosts[1..], Action::PowerOn, |_| {}).await.unwrap().batch;
    t.drain("dc1", 5).await;
    let all = t.store.event_list(EventListParams::default()).await.unwrap();
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all.len(), 8, "2 x (accepted, started, succeeded, completed)");
    let tail = t.store.event_list(EventListParams { after: all[3].seq, limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![all[4].seq, all[5].seq]);
    for batch in [&a, &b] {
        let mine =
            t.store.event_list(EventListParams { batch_id: Some(batch.id), ..Default::default() }).await.unwrap();
        assert_eq!(mine.first().unwrap().kind.name(), "batch_accepted");
        assert_eq!(mine.last().unwrap().kind.name(), "batch_completed");
    }
    assert_eq!(t.store.event_cursor_get("webhook").await.unwrap(), 0);
    t.store.event_cursor_set("webhook", 5).await.unwrap();
    t.store.event_cursor_set("webhook", 3).await.unwrap();
    assert_eq!(t.store.event_cursor_get("webhook").await.unwrap(), 5);
}

/// A worker handing jobs back leaves them available at once with their attempt returned;
/// it cannot hand back someone else's job or an attempt it no longer holds.
pub async fn hand_back_returns_held_jobs_without_spending_an_attempt(t: Harness) {
    let hosts = t.add_hosts("dc1", 2).await;
    t.submit(&hosts, reboot(), |_| {}).await.unwrap();
    let jobs = t.claim("dc1", 2, "w1").await;
    assert_eq!(jobs.len(), 2);
    let (a, b) = (&jobs[0], &jobs[1]);
    let p = JobReleaseParams { owner: "w2".into(), jobs: vec![(a.id, a.attempt)], now: t.now() };
    assert!(t.store.job_release_many(p).await.unwrap().is_empty(), "not w2's job");
    let p = JobReleaseParams { owner: "w1".into(), jobs: vec![(a.id, a.attempt + 1), (b.id, b.attempt)], now: t.now() };
    assert_eq!(t.store.job_release_many(p).await.unwrap(), vec![b.id], "only the held attempt is released");
    let again = t.claim("dc1", 5, "w3").await;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt, again[0].max_attempts), (b.id, 2, b.max_attempts + 1));
    assert_eq!(again[0].key, b.key, "it keeps its place in the queue");
}

/// A straggler is flagged once per step, with one event, only while it is on that step.
pub async fn stragglers_are_flagged_once_per_step(t: Harness) {
    let hosts = t.add_hosts("dc1", 1).await;
    let batch = t.submit(&hosts, reboot(), |_| {}).await.unwrap().batch;
    let run =
        t.store.host_run_list(HostRunListParams { batch_id: Some(batch.id), ..Default::default() }).await.unwrap();
    let flag = |position| StragglerFlagParams { host_run_id: run[0].id, position, now: t.now() };
    assert!(!t.store.host_run_flag_straggler(flag(1)).await.unwrap(), "not on step 1 yet");
    assert!(t.store.host_run_flag_straggler(flag(0)).await.unwrap());
    assert!(!t.store.host_run_flag_straggler(flag(0)).await.unwrap(), "once per step");
    let events = t.store.event_list(EventListParams { batch_id: Some(batch.id), ..Default::default() }).await.unwrap();
    let flagged: Vec<_> = events.iter().filter(|e| matches!(e.kind, EventKind::StragglerFlagged { .. })).collect();
    assert_eq!(flagged.len(), 1);
    let run =
        t.store.host_run_list(HostRunListParams { batch_id: Some(batch.id), ..Default::default() }).await.unwrap();
    assert_eq!(run[0].straggler_step, Some(0));
}

/// Retention removes old finished batches with their rows, keeps unseen events, the audit
/// trail and active batches, and folds what it removes into the rollups, once.
pub async fn retention_purges_old_finished_batches_only(t: Harness) {
    let hosts = t.add_hosts("dc1", 3).await;
    let old = t.submit(&hosts[..1], reboot(), |_| {}).await.unwrap().batch;
    t.drain("dc1", 10).await;
    t.clock.advance(Duration::from_secs(3600));
    let active = t.submit(&hosts[1..2], reboot(), |_| {}).await.unwrap().batch;
    let events = t.store.event_list(EventListParams::default()).await.unwrap();
    let seen = events.iter().filter(|e| e.batch_id == old.id).map(|e| e.seq).min().unwrap();
    let p = PurgeParams { finished_before: t.now().minus(Duration::from_secs(60)), events_through: seen, limit: 0 };
    let r = t.store.batch_purge_finished(p).await.unwrap();
    assert_eq!((r.batches, r.host_runs, r.jobs, r.events), (1, 1, 3, 1));
    assert!(t.store.batch_get(old.id).await.unwrap().is_none());
    assert!(t.store.batch_get(active.id).await.unwrap().is_some());
    let left = t.store.event_list(EventListParams { batch_id: Some(old.id), ..Default::default() }).await.unwrap();
    assert!(!left.is_empty() && left.iter().all(|e| e.seq > seen), "unseen events stay");
    assert_eq!(
        t.store.audit_list(AuditFilter::default()).await.unwrap().len(),
        2,
        "the audit trail outlives retention"
    );
    let after = t.store.event_list(EventListParams::default()).await.unwrap();
    assert!(after.windows(2).all(|w| w[0].seq < w[1].seq));

    // The purged batch lives on in the rollups: its host run and each of its three steps.
    let rolled = t.store.rollup_list(RollupListParams::default()).await.unwrap();
    let runs: Vec<_> = rolled.iter().filter(|r| r.key.step.is_none()).collect();
    assert_eq!(runs.len(), 1, "{rolled:?}");
    let run = runs[0];
    assert_eq!((run.key.action, run.succeeded, run.failed, run.durations.count()), (ActionKind::Reboot, 1, 0, 1));
    assert_eq!(run.key.day, maas_core::rollup::day_of(old.created_at));
    assert_eq!(rolled.iter().filter(|r| r.key.step.is_some()).map(|r| r.succeeded).sum::<u64>(), 3);
    // Two more batches of the same day (the active one finishes too) merge into the same
    // rollups; a purge with nothing to remove adds nothing.
    let second = t.submit(&hosts[2..], reboot(), |_| {}).await.unwrap().batch;
    t.drain("dc1", 10).await;
    t.clock.advance(Duration::from_secs(3600));
    let p = PurgeParams { finished_before: t.now().minus(Duration::from_secs(60)), events_through: u64::MAX, limit: 0 };
    t.store.batch_purge_finished(p.clone()).await.unwrap();
    assert!(t.store.batch_get(second.id).await.unwrap().is_none());
    t.store.batch_purge_finished(p).await.unwrap();
    let rolled = t.store.rollup_list(RollupListParams::default()).await.unwrap();
    let runs: Vec<_> = rolled.iter().filter(|r| r.key.step.is_none()).collect();
    let same_day = runs.iter().all(|r| r.key.day == run.key.day);
    let total: u64 = runs.iter().map(|r| r.succeeded).sum();
    assert!(same_day && total == 3, "{runs:?}");
    let later = RollupListParams { from: Some(t.now().plus(Duration::from_secs(86_400))), until: None };
    assert!(t.store.rollup_list(later).await.unwrap().is_empty(), "days filter");
}

/// Cancelling a batch whose host waits on its installer turns that wait into a fence (power
/// off, verified): the claim is held, the token is dead, and only the fence's report ends
/// the host run and releases the host.
pub async fn cancelling_mid_install_fences_the_host_before_releasing_it(t: Harness) {
    let hosts = t.add_hosts("dc1", 1).await;
    let (batch, waiting) = reimage_to_install(&t, &hosts).await;
    let token = waiting[0].wait_token.clone().unwrap();
    let cancel = |reason: &str| BatchCancelParams {
        batch_id: batch.id,
        principal: Principal::new("alice", []),
        reason: reason.into(),
        now: t.now(),
    };
    let b = t.store.batch_cancel(cancel("change window over")).await.unwrap();
    assert_eq!(b.state, BatchState::Cancelling);
    assert_eq!(t.store.claim_get_many(&hosts).await.unwrap().len(), 1, "held until fenced");
    let late = JobResolveWaitParams { token, outcome: JobOutcome::Succeeded, now: t.now() };
    assert!(t.store.job_resolve_wait(late).await.is_err(), "the installer's token died with the cancel");
    let fence = t.claim("dc1", 10, "w").await;
    assert_eq!(fence.iter().map(|j| j.kind).collect::<Vec<_>>(), vec![StepKind::Fence]);
    assert_eq!(fence[0].id, waiting[0].id);
    t.complete(&fence[0], JobOutcome::Succeeded).await.unwrap();
    assert!(t.store.claim_get_many(&hosts).await.unwrap().is_empty(), "released once fenced");
    assert_eq!(t.store.batch_get(batch.id).await.unwrap().unwrap().state, BatchState::Cancelled);
    let runs = t.store.host_run_list(HostRunListParams { batch_id: Some(batch.id), ..Default::default() }).await;
    assert_eq!(runs.unwrap()[0].state, HostRunState::Cancelled);
}
