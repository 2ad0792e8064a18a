//! The Store (and Inventory) conformance suite, by behaviour group: [`queue`] (the
//! `QueueStore` contract), [`report`] (`ReportStore`), [`inventory`]. Each group has its
//! own entry point; [`exercise`] runs them all.

mod inventory;
mod queue;
mod report;

pub use inventory::*;
pub use queue::*;
pub use report::*;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use maas_core::action::Action;
use maas_core::authz::Principal;
use maas_core::batch::{BatchSpec, RolloutPolicy};
use maas_core::host::{BmcEndpoint, Host, HostState};
use maas_core::id::IdGenerator;
use maas_core::machine::{self, HostTarget, JobOutcome, Rules, TransitionError};
use maas_core::model::*;
use maas_core::names::{Hostname, Pool, Site, Sku};
use maas_core::plan::StepKind;
use maas_core::ports::inventory::Inventory;
use maas_core::ports::store::*;
use maas_core::priority::PriorityClass;
use maas_core::time::{Clock, ManualClock, Timestamp};

/// A backend under test: a [`Store`] that is also the [`Inventory`].
pub trait Backend: Store + Inventory {}
impl<T: Store + Inventory> Backend for T {}

/// What each behaviour gets: a fresh, empty backend, a manual clock and an id source.
pub struct Harness {
    /// The backend.
    pub store: Arc<dyn Backend>,
    /// The clock the harness passes as `now`.
    pub clock: ManualClock,
    /// Ids for new rows.
    pub ids: IdGenerator,
    /// Rules (must equal the backend's).
    pub rules: Rules,
}

const LEASE: Duration = Duration::from_secs(60);

fn h(s: &str) -> Hostname {
    Hostname::new(s).unwrap()
}

fn site(s: &str) -> Site {
    Site::new(s).unwrap()
}

impl Harness {
    /// Wraps a fresh backend.
    pub fn new(store: Arc<dyn Backend>) -> Self {
        let clock = ManualClock::new(Timestamp::from_millis(1_700_000_000_000));
        let ids = IdGenerator::new(Arc::new(clock.clone()), 0x5eed);
        Harness { store, clock, ids, rules: Rules::default() }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Adds hosts `n{0..count}.{site}` in `site`.
    pub async fn add_hosts(&self, site_name: &str, count: usize) -> Vec<Hostname> {
        let hosts: Vec<Host> = (0..count)
            .map(|i| Host {
                hostname: h(&format!("n{i}.{site_name}")),
                site: site(site_name),
                rack: None,
                pool: Pool::new("web").unwrap(),
                owner_group: None,
                sku: Sku::new("gen9").unwrap(),
                bmc: BmcEndpoint::ipmi(format!("10.0.0.{i}"), 623, "default"),
                state: HostState::Ready,
                mac: None,
                allocated_to: None,
                state_since: None,
                boot_method: Default::default(),
            })
            .collect();
        let names = hosts.iter().map(|h| h.hostname.clone()).collect();
        self.store.host_upsert_many(hosts).await.unwrap();
        names
    }

    /// Builds the rows of a batch on `hosts` (already in the inventory) the way the engine does.
    pub async fn new_batch(
        &self,
        hosts: &[Hostname],
        action: Action,
        tweak: impl FnOnce(&mut BatchSpec),
    ) -> machine::NewBatch {
        let inv = self.store.host_get_many(hosts).await.unwrap();
        let targets: Vec<HostTarget> = hosts
            .iter()
            .map(|n| {
                let x = inv.iter().find(|i| &i.hostname == n).expect("host in inventory");
                HostTarget {
                    hostname: x.hostname.clone(),
                    site: x.site.clone(),
                    pool: x.pool.clone(),
                    sku: x.sku.clone(),
                }
            })
            .collect();
        let mut spec = BatchSpec {
            action,
            hosts: hosts.to_vec(),
            priority: PriorityClass::default(),
            rollout: RolloutPolicy::default(),
            idempotency_key: None,
            not_before: None,
            force: None,
            comment: None,
            params: Default::default(),
            notify: Vec::new(),
        };
        tweak(&mut spec);
        machine::plan_submission(spec, &Principal::new("alice", []), &targets, self.now(), &self.ids, &self.rules)
    }

    /// Submits a batch.
    pub async fn submit(
        &self,
        hosts: &[Hostname],
        action: Action,
        tweak: impl FnOnce(&mut BatchSpec),
    ) -> Result<BatchSubmitted, StoreError> {
        let new_batch = self.new_batch(hosts, action, tweak).await;
        self.store.batch_submit(BatchSubmitParams { new_batch }).await
    }

    /// Claims jobs of every kind in `site`.
    pub async fn claim(&self, site_name: &str, limit: usize, owner: &str) -> Vec<JobRecord> {
        self.store
            .job_claim(JobClaimParams {
                site: site(site_name),
                kinds: StepKind::ALL.to_vec(),
                limit,
                owner: owner.into(),
                now: self.now(),
                lease: LEASE,
            })
            .await
            .unwrap()
    }

    /// Completes one job.
    pub async fn complete(&self, job: &JobRecord, outcome: JobOutcome) -> Result<(), TransitionError> {
        let mut r = self
            .store
            .job_complete_many(JobCompleteManyParams {
                completions: vec![JobCompletion { job_id: job.id, attempt: job.attempt, outcome }],
                now: self.now(),
            })
            .await
            .unwrap();
        r.pop().unwrap()
    }

    /// Claims and succeeds jobs (resolving waits by token) until nothing is left to do in
    /// `site`, at most `rounds` rounds.
    pub async fn drain(&self, site_name: &str, rounds: usize) {
        for _ in 0..rounds {
            let jobs = self.claim(site_name, 1000, "drainer").await;
            let waiting = self
                .store
                .job_list(JobListParams { states: vec![JobState::Waiting], ..Default::default() })
                .await
                .unwrap();
            if jobs.is_empty() && waiting.is_empty() {
                return;
            }
            for j in &jobs {
                self.complete(j, JobOutcome::Succeeded).await.unwrap();
            }
            for w in waiting {
                let token = w.wait_token.clone().unwrap();
                self.store
                    .job_resolve_wait(JobResolveWaitParams { token, outcome: JobOutcome::Succeeded, now: self.now() })
                    .await
                    .unwrap();
            }
        }
    }

    async fn batch(&self, b: &BatchRecord) -> BatchRecord {
        self.store.batch_get(b.id).await.unwrap().unwrap()
    }

    async fn jobs_of(&self, b: &BatchRecord) -> Vec<JobRecord> {
        self.store.job_list(JobListParams { batch_id: Some(b.id), ..Default::default() }).await.unwrap()
    }
}

fn reboot() -> Action {
    Action::Reboot { soft: false }
}

macro_rules! run_all {
    ($factory:ident, $report:ident, $($name:ident),* $(,)?) => {
        $(
            $name(Harness::new($factory().await)).await;
            $report(stringify!($name));
        )*
    };
}

/// Runs every queue-contract behaviour ([`queue`]), each on a fresh backend from `factory`;
/// calls `report` with each behaviour's name as it passes.
pub async fn exercise_queue<F, Fut>(factory: &F, report: &impl Fn(&str))
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Backend>>,
{
    run_all!(
        factory,
        report,
        submit_creates_batch_runs_chains_claims_and_event,
        concurrent_submit_with_shared_host_has_one_winner,
        overlap_error_names_every_conflicting_host_and_holder,
        idempotent_resubmit_returns_the_same_batch,
        concurrent_identical_keyed_submits_all_get_the_one_batch,
        claims_respect_site_kinds_key_order_and_limit,
        scheduled_jobs_wait_for_their_time,
        concurrent_claimers_never_share_a_job,
        completion_with_stale_attempt_is_refused,
        one_call_records_many_mixed_completions,
        chains_advance_only_after_the_previous_step_succeeds,
        failed_steps_retry_with_backoff_then_fail_the_host_run,
        expired_leases_are_rescued_and_retried_or_failed,
        a_restarted_instance_forfeits_only_its_earlier_incarnations_leases,
        heartbeats_extend_only_own_leases,
        waiting_steps_park_and_complete_by_callback_or_deadline,
        cancelling_mid_install_fences_the_host_before_releasing_it,
        cancel_releases_claims_and_stops_pending_jobs,
        failure_budget_pauses_the_batch,
        max_in_flight_limits_running_hosts,
        pause_and_resume_by_a_user,
        leader_lease_is_exclusive_and_expires,
        outbox_is_ordered_and_cursors_only_move_forward,
        hand_back_returns_held_jobs_without_spending_an_attempt,
        stragglers_are_flagged_once_per_step,
        retention_purges_old_finished_batches_only,
    );
}

/// Runs every reporting behaviour ([`report`]) and the inventory's ([`inventory`]).
pub async fn exercise_report<F, Fut>(factory: &F, report: &impl Fn(&str))
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Backend>>,
{
    run_all!(
        factory,
        report,
        batch_list_filters_and_pages,
        audit_entries_commit_with_their_change_and_filter_and_page,
        finished_host_runs_are_sampled_for_stats,
        step_samples_and_site_activity,
        tickets_are_idempotent_and_listed_newest_first,
        pool_kinds_and_worker_registry_round_trip,
        inventory_upserts_lists_and_sets_state,
        macs_are_unique_and_find_their_host,
    );
}

/// Runs every Store behaviour — the queue contract, then reporting and the inventory —
/// each on a fresh backend from `factory`; calls `report` with each behaviour's name as it
/// passes (a failure panics with the behaviour's assertion).
pub async fn exercise<F, Fut>(factory: F, report: impl Fn(&str))
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Backend>>,
{
    exercise_queue(&factory, &report).await;
    exercise_report(&factory, &report).await;
}
