//! Operation-sequence property tests: random submits, claims, completions, failures,
//! lease expiries, callbacks, cancels, pauses and resumes against the reference store, with
//! the invariants checked after every operation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use maas_core::machine::{self, HostTarget, Rules};
use maas_core::ports::store::*;
use maas_core::*;
use maas_sim::MemStore;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Submit {
        first: usize,
        len: usize,
        max_in_flight: u32,
        budget: u32,
        reimage: bool,
    },
    Claim {
        n: usize,
    },
    Complete {
        pick: usize,
        ok: bool,
        retryable: bool,
    },
    Callback {
        pick: usize,
        ok: bool,
    },
    Advance {
        secs: u64,
    },
    Cancel {
        pick: usize,
    },
    Pause {
        pick: usize,
    },
    Resume {
        pick: usize,
    },
    /// The worker's instance is killed and starts again under its name: what it held is
    /// forgotten, and the restart takes its earlier incarnation's leases back.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0usize..10, 1usize..5, 1u32..4, 0u32..3, any::<bool>()).prop_map(|(first, len, max_in_flight, budget, reimage)| Op::Submit { first, len, max_in_flight, budget, reimage }),
        4 => (1usize..6).prop_map(|n| Op::Claim { n }),
        6 => (any::<usize>(), any::<bool>(), any::<bool>()).prop_map(|(pick, ok, retryable)| Op::Complete { pick, ok, retryable }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, ok)| Op::Callback { pick, ok }),
        2 => (1u64..400).prop_map(|secs| Op::Advance { secs }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Pause { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Resume { pick }),
        1 => Just(Op::Restart),
    ]
}

const HOSTS: usize = 12;

struct World {
    store: MemStore,
    clock: ManualClock,
    ids: IdGenerator,
    hosts: Vec<HostTarget>,
    held: Vec<JobRecord>,
    /// The worker instance's current run (its leases are owned by `i@<incarnation>/…`).
    incarnation: u64,
    batches: Vec<BatchId>,
    last_job_state: HashMap<JobId, JobState>,
    last_run_state: HashMap<HostRunId, HostRunState>,
    last_batch_state: HashMap<BatchId, BatchState>,
}

impl World {
    fn new() -> Self {
        let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
        let ids = IdGenerator::new(Arc::new(clock.clone()), 3);
        let hosts = (0..HOSTS)
            .map(|i| HostTarget {
                hostname: Hostname::new(&format!("h{i}")).unwrap(),
                site: Site::new("dc1").unwrap(),
                pool: Pool::new("p").unwrap(),
                sku: Sku::new("s").unwrap(),
            })
            .collect();
        World {
            store: MemStore::default(),
            clock,
            ids,
            hosts,
            held: Vec::new(),
            incarnation: 1,
            batches: Vec::new(),
            last_job_state: HashMap::new(),
            last_run_state: HashMap::new(),
            last_batch_state: HashMap::new(),
        }
    }

    async fn apply(&mut self, op: Op) {
        let now = self.clock.now();
        let bob = Principal::new("bob", []);
        match op {
            Op::Submit { first, len, max_in_flight, budget, reimage } => {
                let targets: Vec<HostTarget> = self.hosts.iter().cycle().skip(first).take(len).cloned().collect();
                let action = if reimage {
                    Action::Reimage { os: OsRelease::new("os1").unwrap(), install_timeout_secs: Some(600) }
                } else {
                    Action::Reboot { soft: false }
                };
                let spec = BatchSpec {
                    action,
                    hosts: targets.iter().map(|t| t.hostname.clone()).collect(),
                    priority: PriorityClass::Normal,
                    rollout: RolloutPolicy { max_in_flight, failure_budget: budget },
                    idempotency_key: None,
                    not_before: None,
                    force: None,
                    comment: None,
                    params: Default::default(),
                    notify: Vec::new(),
                };
                let nb = machine::plan_submission(spec, &bob, &targets, now, &self.ids, &Rules::default());
                match self.store.batch_submit(BatchSubmitParams { new_batch: nb }).await {
                    Ok(b) => self.batches.push(b.batch.id),
                    Err(StoreError::Overlap { conflicts }) => assert!(!conflicts.is_empty()),
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Claim { n } => {
                let jobs = self
                    .store
                    .job_claim(JobClaimParams {
                        site: Site::new("dc1").unwrap(),
                        kinds: maas_core::plan::StepKind::ALL.to_vec(),
                        limit: n,
                        owner: format!("i@{}/dc1/web/0.0", self.incarnation),
                        now,
                        lease: Duration::from_secs(60),
                    })
                    .await
                    .unwrap();
                for j in &jobs {
                    assert!(!self.held.iter().any(|h| h.id == j.id && h.attempt == j.attempt), "job handed out twice");
                }
                self.held.extend(jobs);
            }
            Op::Complete { pick, ok, retryable } => {
                if self.held.is_empty() {
                    return;
                }
                let job = self.held.remove(pick % self.held.len());
                let outcome =
                    if ok { JobOutcome::Succeeded } else { JobOutcome::Failed { error: "boom".into(), retryable } };
                let r = self
                    .store
                    .job_complete_many(JobCompleteManyParams {
                        completions: vec![JobCompletion { job_id: job.id, attempt: job.attempt, outcome }],
                        now,
                    })
                    .await
                    .unwrap();
                // A stale completion (lease expired meanwhile) is refused; that is correct.
                if let Err(e) = &r[0] {
                    assert!(matches!(e, machine::TransitionError::StaleAttempt { .. }), "{e}");
                }
            }
            Op::Callback { pick, ok } => {
                let waiting = self
                    .store
                    .job_list(JobListParams { states: vec![JobState::Waiting], ..Default::default() })
                    .await
                    .unwrap();
                if waiting.is_empty() {
                    return;
                }
                let w = &waiting[pick % waiting.len()];
                let outcome = if ok {
                    JobOutcome::Succeeded
                } else {
                    JobOutcome::Failed { error: "install failed".into(), retryable: false }
                };
                self.store
                    .job_resolve_wait(JobResolveWaitParams { token: w.wait_token.clone().unwrap(), outcome, now })
                    .await
                    .unwrap();
            }
            Op::Advance { secs } => {
                self.clock.advance(Duration::from_secs(secs));
                self.store.job_rescue_expired(JobRescueParams { now: self.clock.now(), limit: 0 }).await.unwrap();
            }
            Op::Restart => {
                self.held.clear();
                self.incarnation += 1;
                let instance = maas_core::policy::InstanceId::new("i", self.incarnation).unwrap();
                let r = self.store.job_forfeit_leases(JobForfeitParams { instance, now }).await.unwrap();
                let running = self
                    .store
                    .job_list(JobListParams { states: vec![JobState::Running], ..Default::default() })
                    .await
                    .unwrap();
                assert!(running.is_empty(), "leases of the dead run left: {running:?} after {r:?}");
            }
            Op::Cancel { pick } | Op::Pause { pick } | Op::Resume { pick } if self.batches.is_empty() => {
                let _ = pick;
            }
            Op::Cancel { pick } => {
                let id = self.batches[pick % self.batches.len()];
                let r = self
                    .store
                    .batch_cancel(BatchCancelParams { batch_id: id, principal: bob, reason: "r".into(), now })
                    .await;
                if let Err(e) = r {
                    assert!(matches!(e, StoreError::Transition(_)), "{e}");
                }
            }
            Op::Pause { pick } | Op::Resume { pick } => {
                let paused = matches!(op, Op::Pause { .. });
                let id = self.batches[pick % self.batches.len()];
                let r = self
                    .store
                    .batch_set_paused(BatchSetPausedParams {
                        batch_id: id,
                        principal: bob,
                        paused,
                        reason: "r".into(),
                        now,
                    })
                    .await;
                if let Err(e) = r {
                    assert!(matches!(e, StoreError::Transition(_)), "{e}");
                }
            }
        }
    }

    async fn check_invariants(&mut self) {
        let jobs = self.store.jobs_snapshot();
        let claims = self.store.claims_snapshot();
        let runs = self.store.host_run_list(HostRunListParams::default()).await.unwrap();
        let batches = self.store.batch_list(BatchListParams { limit: 10_000, ..Default::default() }).await.unwrap();
        // Every operation moves each row at most one legal step (or leaves it).
        for j in &jobs {
            if let Some(prev) = self.last_job_state.insert(j.id, j.state) {
                assert!(prev == j.state || prev.can_become(j.state), "job {prev} -> {}", j.state);
            }
        }
        for r in &runs {
            if let Some(prev) = self.last_run_state.insert(r.id, r.state) {
                assert!(prev == r.state || prev.can_become(r.state), "host run {prev} -> {}", r.state);
            }
        }
        for b in &batches {
            if let Some(prev) = self.last_batch_state.insert(b.id, b.state) {
                assert!(prev == b.state || prev.can_become(b.state), "batch {prev} -> {}", b.state);
            }
        }
        // Claims: exactly the unfinished host runs, at most one per host.
        let claimed: HashSet<&Hostname> = claims.iter().map(|c| &c.hostname).collect();
        assert_eq!(claimed.len(), claims.len());
        let unfinished: Vec<&HostRunRecord> = runs.iter().filter(|r| !r.state.is_terminal()).collect();
        assert_eq!(unfinished.len(), claims.len(), "claims must match unfinished host runs");
        for r in &unfinished {
            let c = claims.iter().find(|c| c.hostname == r.hostname).expect("unfinished run holds its claim");
            assert_eq!(c.host_run_id, r.id);
        }
        for b in &batches {
            let mine: Vec<&HostRunRecord> = runs.iter().filter(|r| r.batch_id == b.id).collect();
            let count = |s: HostRunState| mine.iter().filter(|r| r.state == s).count() as u32;
            let c = b.counts;
            assert_eq!(
                (c.queued, c.running, c.succeeded, c.failed, c.cancelled),
                (
                    count(HostRunState::Queued),
                    count(HostRunState::Running),
                    count(HostRunState::Succeeded),
                    count(HostRunState::Failed),
                    count(HostRunState::Cancelled)
                ),
                "batch counters drifted"
            );
            assert!(c.running <= b.spec.rollout.max_in_flight, "max_in_flight exceeded");
            if b.state.is_terminal() {
                assert_eq!(c.unfinished(), 0, "terminal batch with unfinished hosts");
            }
            if b.state == BatchState::Running && c.queued > 0 {
                assert_eq!(c.running, b.spec.rollout.max_in_flight, "a running batch must fill its slots");
            }
        }
        // Chains: at most one non-blocked, non-terminal job per host run; none after a terminal run.
        let mut active_per_run: HashMap<HostRunId, usize> = HashMap::new();
        for j in &jobs {
            if matches!(j.state, JobState::Available | JobState::Running | JobState::Waiting) {
                *active_per_run.entry(j.host_run_id).or_default() += 1;
            }
        }
        for r in &runs {
            // A run that succeeded did every step of its chain (nothing left to cancel).
            if r.state == HostRunState::Succeeded {
                let undone = jobs.iter().filter(|j| j.host_run_id == r.id && j.state != JobState::Succeeded).count();
                assert_eq!(undone, 0, "a succeeded run has jobs that did not succeed");
            }
            let active = active_per_run.get(&r.id).copied().unwrap_or(0);
            if r.state.is_terminal() || r.state == HostRunState::Queued {
                assert_eq!(active, 0, "{} run has runnable jobs", r.state);
            } else {
                assert!(active <= 1, "two steps of one chain runnable at once");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn random_operation_sequences_keep_every_invariant(ops in proptest::collection::vec(op(), 1..120)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut w = World::new();
            for op in ops {
                w.apply(op).await;
                w.check_invariants().await;
            }
        });
    }
}
