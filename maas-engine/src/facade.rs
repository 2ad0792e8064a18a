//! The facade methods of [`Engine`]: what users and shells call.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use futures::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::{Engine, EngineError};
use maas_core::action::ActionKind;
use maas_core::authz::{AllowAll, Authorizer, Permission, Principal};
use maas_core::batch::{BatchRequest, BatchSpec};
use maas_core::estimate::{self, Percentiles};
use maas_core::host::{Host, HostState, StateChange};
use maas_core::id::BatchId;
use maas_core::machine::{self, HostTarget, JobOutcome};
use maas_core::model::*;
use maas_core::names::{Hostname, Pool, Site, Sku};
use maas_core::overlap::Conflict;
use maas_core::plan::{PlannedStep, StepKind, plan_for};
use maas_core::ports::inventory::HostFilter;
use maas_core::ports::services::Ticket;
use maas_core::ports::store::*;
use maas_core::time::Timestamp;
use maas_core::validate::{Problem, ValidationContext, ValidationReport, expand_hosts, validate_batch};

/// An accepted submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The batch (the earlier one, for an idempotent resubmission).
    pub batch: BatchRecord,
    /// `false` when the idempotency key returned an earlier batch.
    pub created: bool,
    /// Things the submitter should know that do not block acceptance.
    pub warnings: Vec<String>,
}

/// One host of a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunHost {
    /// The host.
    pub hostname: Hostname,
    /// Its inventory record (`None`: unknown).
    pub host: Option<Host>,
    /// The active batch holding it, if any.
    pub held_by: Option<BatchId>,
    /// The steps it would run.
    pub plan: Vec<StepKind>,
}

/// What a submission would do, written nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunReport {
    /// Whether `submit` would accept it now.
    pub acceptable: bool,
    /// Every expanded host, in order.
    pub hosts: Vec<DryRunHost>,
    /// Every problem (conflicts name the batch holding the host).
    pub report: ValidationReport,
    /// The planned steps with their parameters (the same for every host).
    pub plan: Vec<PlannedStep>,
    /// Non-blocking warnings.
    pub warnings: Vec<String>,
}

/// One host of a batch, as users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRunView {
    /// The host.
    pub hostname: Hostname,
    /// Its site.
    pub site: Site,
    /// Its SKU.
    pub sku: Sku,
    /// Its state.
    pub state: HostRunState,
    /// The current (or last) step.
    pub step: Option<StepKind>,
    /// That step's state.
    pub step_state: Option<JobState>,
    /// Attempts made at that step.
    pub attempts: u32,
    /// When that step's current attempt (or wait) began.
    pub step_since: Option<Timestamp>,
    /// The last error seen on any step.
    pub last_error: Option<String>,
    /// Started.
    pub started_at: Option<Timestamp>,
    /// Finished.
    pub finished_at: Option<Timestamp>,
    /// Flagged as slow against its peers.
    pub straggler: bool,
    /// Every step of its chain made so far, in order: its timeline.
    pub steps: Vec<StepView>,
}

/// One step of a host's chain, as users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepView {
    /// The step.
    pub kind: StepKind,
    /// Its state.
    pub state: JobState,
    /// Attempts made.
    pub attempts: u32,
    /// When its latest attempt (or wait) began.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Its last error.
    pub error: Option<String>,
}

/// A batch with every host's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchView {
    /// The batch.
    pub batch: BatchRecord,
    /// Its hosts, in submission order.
    pub hosts: Vec<HostRunView>,
}

/// Duration percentiles of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurationStats {
    /// The action.
    pub action: ActionKind,
    /// The step (`None`: whole host runs).
    pub step: Option<StepKind>,
    /// The SKU.
    pub sku: Sku,
    /// The site.
    pub site: Site,
    /// Percentiles.
    pub durations: Percentiles,
}

/// Statistics over a time window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchStats {
    /// Batches created in the window, by state.
    pub batches_by_state: BTreeMap<BatchState, u32>,
    /// Host runs that finished in the window: succeeded.
    pub succeeded: u32,
    /// ... failed.
    pub failed: u32,
    /// ... cancelled.
    pub cancelled: u32,
    /// succeeded / (succeeded + failed); `None` with nothing finished.
    pub success_rate: Option<f64>,
    /// Host-run durations by action, SKU and site (succeeded and failed runs).
    pub host_runs: Vec<DurationStats>,
    /// Step durations by action, step, SKU and site (succeeded steps).
    pub steps: Vec<DurationStats>,
    /// Host-run outcomes by action, SKU and site: where failures cluster.
    pub outcomes: Vec<OutcomeCounts>,
}

/// How the host runs of one action, SKU and site ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// The action.
    pub action: ActionKind,
    /// The SKU.
    pub sku: Sku,
    /// The site.
    pub site: Site,
    /// Succeeded.
    pub succeeded: u32,
    /// Failed.
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
}

/// One outbox consumer's position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxBacklog {
    /// The consumer (`notify:NAME` or `tickets`).
    pub consumer: String,
    /// The last event it took.
    pub cursor: u64,
    /// When the oldest event it has not taken was written (`None`: it is caught up).
    pub oldest_pending_at: Option<Timestamp>,
}

/// What is in flight in one site, and whether anyone is there to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveSite {
    /// Counts from the store.
    pub activity: SiteActivity,
    /// Workers with a fresh heartbeat.
    pub live_workers: u32,
}

/// When a running batch should finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eta {
    /// The batch.
    pub batch_id: BatchId,
    /// Expected finish.
    pub finish_at: Timestamp,
    /// From now.
    pub remaining: Duration,
    /// Historical step samples behind the estimate (0: built-in defaults only).
    pub samples: usize,
}

impl Engine {
    /// Validates, authorizes and checks `req` against the inventory and active claims, then
    /// creates the batch, its claims and chains in one atomic store call.
    pub async fn submit(&self, principal: &Principal, req: &BatchRequest) -> Result<Submitted, EngineError> {
        self.submit_with(principal, req, self.inner.authorizer.as_ref()).await
    }

    /// What `submit` would do, without writing anything.
    pub async fn dry_run(&self, principal: &Principal, req: &BatchRequest) -> Result<DryRunReport, EngineError> {
        let now = self.inner.clock.now();
        let (names, _) = expand_hosts(req, &self.inner.config.limits);
        let snapshot = self.snapshot(&names).await?;
        let report = match self.validate(principal, req, &snapshot, self.inner.authorizer.as_ref(), now).await {
            Ok(_) => ValidationReport::default(),
            Err(report) => report,
        };
        let plan = plan_for(&req.action);
        let kinds: Vec<StepKind> = plan.iter().map(|s| s.kind).collect();
        let hosts = names
            .iter()
            .map(|h| DryRunHost {
                hostname: h.clone(),
                host: snapshot.hosts.get(h).cloned(),
                held_by: snapshot.claims.get(h).copied(),
                plan: kinds.clone(),
            })
            .collect();
        let sites: BTreeSet<Site> = snapshot.hosts.values().map(|h| h.site.clone()).collect();
        let warnings = self.site_warnings(&sites, now).await?;
        Ok(DryRunReport { acceptable: report.is_ok(), hosts, report, plan, warnings })
    }

    /// Submits, and audits what the batch insert does not: a refusal, or an idempotent
    /// replay (the accepted batch's entry is written with the batch).
    pub(crate) async fn submit_with(
        &self,
        principal: &Principal,
        req: &BatchRequest,
        authorizer: &dyn Authorizer,
    ) -> Result<Submitted, EngineError> {
        let result = self.submit_unaudited(principal, req, authorizer).await;
        let entry = || req.audit_entry(&principal.name, self.inner.clock.now());
        match &result {
            Ok(s) if s.created => {}
            Ok(s) => {
                let mut replay = entry();
                replay.batch_id = Some(s.batch.id);
                replay.summary.push_str(" (idempotency key replay: the existing batch was returned)");
                self.audit_refusal_or_replay(replay).await;
            }
            Err(e) => self.audit_refusal_or_replay(entry().refused(&e.to_string())).await,
        }
        result
    }

    /// Writes an audit entry the caller's answer does not depend on (a refusal, a replay):
    /// a failed write is counted, and the caller's answer stands.
    async fn audit_refusal_or_replay(&self, entry: AuditRecord) {
        if self.inner.store.audit_append(entry).await.is_err() {
            self.inner.counters.audit_write_failed();
        }
    }

    /// Runs `op`; a refusal is audited as `entry`. An accepted call's entry is the
    /// caller's to write (with the change, or right after it).
    async fn refusals_audited<T>(
        &self,
        entry: impl FnOnce() -> AuditRecord,
        op: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        let result = op.await;
        if let Err(e) = &result {
            self.audit_refusal_or_replay(entry().refused(&e.to_string())).await;
        }
        result
    }

    /// Audits an accepted inventory or pool change, written right after it (the inventory
    /// may be another system than the store). If the entry cannot be written the call
    /// fails: each such change is idempotent, and the retry writes the entry.
    async fn audit_accepted(&self, entry: AuditRecord) -> Result<(), EngineError> {
        Ok(self.inner.store.audit_append(entry).await?)
    }

    async fn submit_unaudited(
        &self,
        principal: &Principal,
        req: &BatchRequest,
        authorizer: &dyn Authorizer,
    ) -> Result<Submitted, EngineError> {
        let now = self.inner.clock.now();
        // The same key always gets the same answer, whatever changed since: check it first.
        if let Some(answer) = self.idempotent_answer(principal, req).await? {
            return answer;
        }
        let (names, _) = expand_hosts(req, &self.inner.config.limits);
        let snapshot = self.snapshot(&names).await?;
        let spec = match self.validate(principal, req, &snapshot, authorizer, now).await {
            Ok(spec) => spec,
            // A concurrent submission with the same key may have won since the first check.
            Err(report) => match self.idempotent_answer(principal, req).await? {
                Some(answer) => return answer,
                None => return Err(EngineError::Rejected(report)),
            },
        };
        let targets: Vec<HostTarget> = spec
            .hosts
            .iter()
            .filter_map(|h| snapshot.hosts.get(h))
            .map(|h| HostTarget {
                hostname: h.hostname.clone(),
                site: h.site.clone(),
                pool: h.pool.clone(),
                sku: h.sku.clone(),
            })
            .collect();
        let sites: BTreeSet<Site> = targets.iter().map(|t| t.site.clone()).collect();
        let new_batch = machine::plan_submission(spec, principal, &targets, now, &self.inner.ids, &self.inner.rules);
        let submitted = match self.inner.store.batch_submit(BatchSubmitParams { new_batch }).await {
            Ok(s) => s,
            // The holder may be the batch of this very key, submitted concurrently.
            Err(StoreError::Overlap { conflicts }) => match self.idempotent_answer(principal, req).await? {
                Some(answer) => return answer,
                None => return Err(EngineError::Rejected(conflict_report(conflicts))),
            },
            Err(e) => return Err(e.into()),
        };
        self.changed();
        let mut warnings = self.site_warnings(&sites, now).await?;
        if !submitted.created {
            warnings.push(format!(
                "idempotency key {:?} already names batch {}; returning it",
                req.idempotency_key.as_deref().unwrap_or_default(),
                submitted.batch.id
            ));
        }
        if let Some(t) = submitted.batch.spec.not_before.filter(|t| *t > now) {
            warnings.push(format!("held until {t} (not_before)"));
        }
        Ok(Submitted { batch: submitted.batch, created: submitted.created, warnings })
    }

    /// The answer to a resubmission whose idempotency key already names a batch of the
    /// same submitter: that batch if the spec matches, an error if it does not.
    async fn idempotent_answer(
        &self,
        principal: &Principal,
        req: &BatchRequest,
    ) -> Result<Option<Result<Submitted, EngineError>>, EngineError> {
        let Some(key) = &req.idempotency_key else { return Ok(None) };
        // A key no store may hold is validation's to refuse, naming the field.
        let max = self.inner.config.limits.max_key_len;
        if maas_core::validate::text_problem(key, maas_core::validate::TextKind::Line, max).is_some() {
            return Ok(None);
        }
        let Some(existing) = self.inner.store.batch_find_by_key(&principal.name, key).await? else { return Ok(None) };
        // Past the horizon the key is free: this request makes a new batch.
        let now = self.inner.clock.now();
        if existing.created_at < now.minus(self.inner.config.idempotency_horizon) {
            self.inner.store.batch_forget_key(existing.id).await?;
            return Ok(None);
        }
        let (hosts, _) = expand_hosts(req, &self.inner.config.limits);
        if !machine::idempotent_match(&existing, &BatchSpec::from_request(req, hosts)) {
            let e = StoreError::IdempotencyKeyReused { key: key.clone(), batch: existing.id };
            return Ok(Some(Err(e.into())));
        }
        let warnings = vec![format!("idempotency key {key:?} already names batch {}; returning it", existing.id)];
        Ok(Some(Ok(Submitted { batch: existing, created: false, warnings })))
    }

    async fn snapshot(&self, names: &[Hostname]) -> Result<Snapshot, EngineError> {
        let hosts = self.inner.inventory.host_get_many(names).await?;
        let claims = self.inner.store.claim_get_many(names).await?;
        Ok(Snapshot {
            hosts: hosts.into_iter().map(|h| (h.hostname.clone(), h)).collect(),
            claims: claims.into_iter().map(|c| (c.hostname, c.batch_id)).collect(),
        })
    }

    async fn validate(
        &self,
        principal: &Principal,
        req: &BatchRequest,
        snapshot: &Snapshot,
        authorizer: &dyn Authorizer,
        now: Timestamp,
    ) -> Result<BatchSpec, ValidationReport> {
        let spec = validate_batch(
            req,
            &ValidationContext {
                limits: &self.inner.config.limits,
                principal,
                authorizer,
                hosts: &snapshot.hosts,
                claims: &snapshot.claims,
                now,
            },
        )?;
        let problems = self.boot_check(&spec, snapshot);
        if !problems.is_empty() {
            return Err(ValidationReport { problems });
        }
        if !req.console_check.unwrap_or(self.inner.config.console_check) {
            return Ok(spec);
        }
        let hosts = spec.hosts.iter().filter_map(|h| snapshot.hosts.get(h)).cloned().collect();
        let problems = self.console_check(hosts).await;
        if problems.is_empty() { Ok(spec) } else { Err(ValidationReport { problems }) }
    }

    /// For actions that network-boot (reimage, wipe, decommission): whether the configured
    /// provisioner can serve the image to every host with the batch's parameters. A batch
    /// it cannot run is refused now, not failed at its `set_boot_pxe` step.
    fn boot_check(&self, spec: &BatchSpec, snapshot: &Snapshot) -> Vec<Problem> {
        let Some(image) = plan_for(&spec.action).into_iter().find_map(|s| s.params.boot) else {
            return Vec::new();
        };
        let Some(provisioner) = &self.inner.provisioner else {
            return vec![Problem::BadParameter {
                field: "action".into(),
                message: format!(
                    "{} needs a network boot, and no provisioner is configured (maasd: a [boot] section and an image catalog)",
                    spec.action.kind()
                ),
            }];
        };
        let hosts: Vec<&Host> = spec.hosts.iter().filter_map(|h| snapshot.hosts.get(h)).collect();
        provisioner.check(&image, &hosts, &spec.params)
    }

    async fn console_check(&self, hosts: Vec<Host>) -> Vec<Problem> {
        let power = self.inner.power.clone();
        let probes = stream::iter(hosts).map(move |h| {
            let power = power.clone();
            async move {
                let error = power.probe(&h.bmc).await.err()?;
                Some(Problem::ConsoleCheck { host: h.hostname, error: error.to_string() })
            }
        });
        let found: Vec<Option<Problem>> =
            probes.buffered(self.inner.config.console_check_concurrency.max(1)).collect().await;
        found.into_iter().flatten().collect()
    }

    async fn site_warnings(&self, sites: &BTreeSet<Site>, now: Timestamp) -> Result<Vec<String>, EngineError> {
        let live = self.live_sites(now).await?;
        Ok(sites
            .iter()
            .filter(|s| !live.contains(*s))
            .map(|s| {
                format!(
                    "no live workers in site {s} (no heartbeat in the last {} s): its hosts wait until one starts",
                    self.inner.config.worker_freshness.as_secs()
                )
            })
            .collect())
    }

    /// Sites with a worker whose heartbeat is fresher than `worker_freshness`.
    pub async fn live_sites(&self, now: Timestamp) -> Result<BTreeSet<Site>, EngineError> {
        let live = WorkerListParams::live(now, self.inner.config.worker_freshness);
        let workers = self.inner.store.worker_list(live).await?;
        Ok(workers.into_iter().map(|w| w.site).collect())
    }

    /// A batch with each host's state, current step, attempts, last error and timings.
    pub async fn get_batch(&self, id: BatchId) -> Result<BatchView, EngineError> {
        let batch = self.inner.store.batch_get(id).await?.ok_or(EngineError::NotFound(id))?;
        self.view_of(batch).await
    }

    /// [`Engine::get_batch`] as `principal` reads it: refused when the batch touches a pool
    /// the policy keeps from them (`Permission::ReadPool`). The shells call the `_as`
    /// reads; the unscoped ones are for trusted in-process callers.
    pub async fn get_batch_as(&self, principal: &Principal, id: BatchId) -> Result<BatchView, EngineError> {
        let batch = self.inner.store.batch_get(id).await?.ok_or(EngineError::NotFound(id))?;
        self.check_reads_batch(principal, &batch)?;
        self.view_of(batch).await
    }

    /// Whether `principal` may read `batch` (every pool of its hosts).
    fn check_reads_batch(&self, principal: &Principal, batch: &BatchRecord) -> Result<(), EngineError> {
        for pool in &batch.pools {
            self.inner.authorizer.check(principal, &Permission::ReadPool { pool: pool.clone() })?;
        }
        Ok(())
    }

    async fn view_of(&self, batch: BatchRecord) -> Result<BatchView, EngineError> {
        let id = batch.id;
        let runs =
            self.inner.store.host_run_list(HostRunListParams { batch_id: Some(id), ..Default::default() }).await?;
        let jobs = self.inner.store.job_list(JobListParams { batch_id: Some(id), ..Default::default() }).await?;
        let mut chains: HashMap<maas_core::id::HostRunId, Vec<&JobRecord>> = HashMap::new();
        for j in &jobs {
            chains.entry(j.host_run_id).or_default().push(j);
        }
        let hosts = runs
            .into_iter()
            .map(|r| {
                let mut chain = chains.remove(&r.id).unwrap_or_default();
                chain.sort_by_key(|j| j.position);
                let job = chain.iter().find(|j| j.position == r.step);
                HostRunView {
                    step: job.map(|j| j.kind),
                    step_state: job.map(|j| j.state),
                    attempts: job.map_or(0, |j| j.attempt),
                    step_since: job.and_then(|j| j.started_at.or(j.enqueued_at)),
                    last_error: r.last_error.clone().or_else(|| job.and_then(|j| j.last_error.clone())),
                    straggler: r.straggler_step.is_some(),
                    steps: chain
                        .iter()
                        .map(|j| StepView {
                            kind: j.kind,
                            state: j.state,
                            attempts: j.attempt,
                            started_at: j.started_at.or(j.enqueued_at),
                            finished_at: j.finished_at,
                            error: j.last_error.clone(),
                        })
                        .collect(),
                    hostname: r.hostname,
                    site: r.site,
                    sku: r.sku,
                    state: r.state,
                    started_at: r.started_at,
                    finished_at: r.finished_at,
                }
            })
            .collect();
        Ok(BatchView { batch, hosts })
    }

    /// Batches, newest first, filtered and paged.
    pub async fn list_batches(&self, p: BatchListParams) -> Result<Vec<BatchRecord>, EngineError> {
        Ok(self.inner.store.batch_list(p).await?)
    }

    /// [`Engine::list_batches`] as `principal` reads it: batches touching pools the policy
    /// keeps from them are left out, and further pages are read until `p.limit` batches
    /// are found or the list ends (so a short page still means the end).
    pub async fn list_batches_as(
        &self,
        principal: &Principal,
        mut p: BatchListParams,
    ) -> Result<Vec<BatchRecord>, EngineError> {
        let limit = p.limit;
        let mut out = Vec::new();
        loop {
            let page = self.inner.store.batch_list(p.clone()).await?;
            let end = limit == 0 || page.len() < limit;
            p.before = page.last().map(|b| b.id);
            out.extend(page.into_iter().filter(|b| self.check_reads_batch(principal, b).is_ok()));
            if end || out.len() >= limit {
                out.truncate(if limit == 0 { usize::MAX } else { limit });
                return Ok(out);
            }
        }
    }

    /// [`Engine::watch`] as `principal` reads it: events of batches touching pools the
    /// policy keeps from them are left out (each batch is looked up once).
    pub fn watch_as(
        &self,
        principal: &Principal,
        batch: Option<BatchId>,
        after: u64,
        poll: Duration,
    ) -> impl Stream<Item = Result<Event, StoreError>> + Send + 'static {
        let engine = self.clone();
        let principal = principal.clone();
        let readable: std::sync::Arc<std::sync::Mutex<HashMap<BatchId, bool>>> = Default::default();
        self.watch(batch, after, poll).filter_map(move |e| {
            let (engine, principal, readable) = (engine.clone(), principal.clone(), readable.clone());
            async move {
                let Ok(event) = e else { return Some(e) };
                let known = readable.lock().ok().and_then(|m| m.get(&event.batch_id).copied());
                let ok = match known {
                    Some(ok) => ok,
                    None => {
                        // A batch retention removed is read as hidden.
                        let found = engine.inner.store.batch_get(event.batch_id).await;
                        let ok = matches!(&found, Ok(Some(b)) if engine.check_reads_batch(&principal, b).is_ok());
                        if found.is_ok()
                            && let Ok(mut m) = readable.lock()
                        {
                            m.insert(event.batch_id, ok);
                        }
                        ok
                    }
                };
                ok.then_some(Ok(event))
            }
        })
    }

    /// A cancel or pause reason is checked as a submission's comment is.
    fn check_reason(&self, reason: &str) -> Result<(), EngineError> {
        let max = self.inner.config.limits.max_text_len;
        maas_core::validate::check_text("reason", reason, maas_core::validate::TextKind::Prose, max)
            .map_err(EngineError::Rejected)
    }

    async fn owned_batch(&self, principal: &Principal, id: BatchId) -> Result<BatchRecord, EngineError> {
        let batch = self.inner.store.batch_get(id).await?.ok_or(EngineError::NotFound(id))?;
        self.check_controls(principal, &batch.submitter)?;
        Ok(batch)
    }

    /// Whether `principal` may cancel, pause and resume a batch `submitter` submitted: its
    /// submitter may, and an admin. The console shows those buttons only to them.
    pub fn may_control(&self, principal: &Principal, submitter: &str) -> bool {
        self.check_controls(principal, submitter).is_ok()
    }

    fn check_controls(&self, principal: &Principal, submitter: &str) -> Result<(), EngineError> {
        Ok(maas_core::authz::check_controls_batch(self.inner.authorizer.as_ref(), principal, submitter)?)
    }

    /// Cancels a batch: nothing new starts, queued hosts end at once, hosts mid-step finish
    /// that step and then end. The submitter or an admin may cancel.
    pub async fn cancel_batch(
        &self,
        principal: &Principal,
        id: BatchId,
        reason: &str,
    ) -> Result<BatchRecord, EngineError> {
        let entry = || self.batch_refusal(AuditOp::Cancel, principal, id, reason);
        self.refusals_audited(entry, async {
            self.check_reason(reason)?;
            self.owned_batch(principal, id).await?;
            let now = self.inner.clock.now();
            let p = BatchCancelParams { batch_id: id, principal: principal.clone(), reason: reason.to_string(), now };
            let b = self.inner.store.batch_cancel(p).await?;
            self.changed();
            Ok(b)
        })
        .await
    }

    /// The audit entry of a refused call on batch `id` (the decision writes accepted ones).
    fn batch_refusal(&self, op: AuditOp, principal: &Principal, id: BatchId, reason: &str) -> AuditRecord {
        let mut a = AuditRecord::new(op, &principal.name, self.inner.clock.now());
        a.batch_id = Some(id);
        a.summary = format!("{op} batch {id}");
        a.reason = (!reason.is_empty()).then(|| AuditRecord::printable(reason, 1024));
        a
    }

    /// Pauses a running batch (no new hosts start; running ones finish their chains).
    pub async fn pause_batch(
        &self,
        principal: &Principal,
        id: BatchId,
        reason: &str,
    ) -> Result<BatchRecord, EngineError> {
        self.set_paused(principal, id, true, reason).await
    }

    /// Resumes a paused batch (including one paused by its failure budget).
    pub async fn resume_batch(&self, principal: &Principal, id: BatchId) -> Result<BatchRecord, EngineError> {
        self.set_paused(principal, id, false, "").await
    }

    async fn set_paused(
        &self,
        principal: &Principal,
        id: BatchId,
        paused: bool,
        reason: &str,
    ) -> Result<BatchRecord, EngineError> {
        let op = if paused { AuditOp::Pause } else { AuditOp::Resume };
        let entry = || self.batch_refusal(op, principal, id, reason);
        self.refusals_audited(entry, async {
            self.check_reason(reason)?;
            self.owned_batch(principal, id).await?;
            let now = self.inner.clock.now();
            let p =
                BatchSetPausedParams { batch_id: id, principal: principal.clone(), paused, reason: reason.into(), now };
            let b = self.inner.store.batch_set_paused(p).await?;
            self.changed();
            Ok(b)
        })
        .await
    }

    /// The images the provisioner serves (empty without one).
    pub fn images(&self) -> Vec<maas_core::ports::ImageSummary> {
        self.inner.provisioner.as_ref().map(|p| p.images()).unwrap_or_default()
    }

    /// Reports the result of a waiting step (installer or wipe image), authenticated by the
    /// job's callback token.
    pub async fn report_wait_result(&self, token: &str, outcome: JobOutcome) -> Result<JobRecord, EngineError> {
        use maas_core::validate::{TextKind, scrub, text_problem};
        // No token holds control characters: such a one is unknown without asking the
        // store (a NUL is an encoding error on PostgreSQL). An installer's text is kept,
        // with what no store may hold replaced.
        if text_problem(token, TextKind::Line, 512).is_some() {
            return Err(StoreError::not_found("wait token", "(malformed)").into());
        }
        let outcome = match outcome {
            JobOutcome::Failed { error, retryable } => {
                JobOutcome::Failed { error: scrub(&error).into_owned(), retryable }
            }
            other => other,
        };
        let now = self.inner.clock.now();
        let job = self.inner.store.job_resolve_wait(JobResolveWaitParams { token: token.into(), outcome, now }).await?;
        self.changed();
        Ok(job)
    }

    /// Counts by state, success rate and duration percentiles over a window.
    pub async fn batch_stats(&self, window: StatsParams) -> Result<BatchStats, EngineError> {
        let mut batches_by_state = BTreeMap::new();
        let mut before = None;
        loop {
            let page = self
                .inner
                .store
                .batch_list(BatchListParams {
                    created_from: window.finished_from,
                    created_until: window.finished_until,
                    before,
                    limit: 500,
                    ..Default::default()
                })
                .await?;
            for b in &page {
                *batches_by_state.entry(b.state).or_insert(0) += 1;
            }
            match page.last() {
                Some(last) if page.len() == 500 => before = Some(last.id),
                _ => break,
            }
        }
        let runs = self.inner.store.stats_host_runs(window.clone()).await?;
        let mut by_outcome: BTreeMap<(ActionKind, Sku, Site), [u32; 3]> = BTreeMap::new();
        for r in &runs {
            let slot = match r.state {
                HostRunState::Succeeded => 0,
                HostRunState::Failed => 1,
                HostRunState::Cancelled => 2,
                // Samples are finished runs; an unfinished one counts nowhere.
                HostRunState::Queued | HostRunState::Running => continue,
            };
            by_outcome.entry((r.action, r.sku.clone(), r.site.clone())).or_default()[slot] += 1;
        }
        let [succeeded, failed, cancelled] =
            by_outcome.values().fold([0u32; 3], |[s, f, c], [s2, f2, c2]| [s + s2, f + f2, c + c2]);
        let success_rate = (succeeded + failed > 0).then(|| f64::from(succeeded) / f64::from(succeeded + failed));
        let outcomes = by_outcome
            .into_iter()
            .map(|((action, sku, site), [succeeded, failed, cancelled])| OutcomeCounts {
                action,
                sku,
                site,
                succeeded,
                failed,
                cancelled,
            })
            .collect();
        let mut run_groups: BTreeMap<(ActionKind, Sku, Site), Vec<Duration>> = BTreeMap::new();
        for r in runs.iter().filter(|r| r.state != HostRunState::Cancelled) {
            run_groups
                .entry((r.action, r.sku.clone(), r.site.clone()))
                .or_default()
                .push(r.finished_at.since(r.started_at));
        }
        let mut step_groups: BTreeMap<(ActionKind, StepKind, Sku, Site), Vec<Duration>> = BTreeMap::new();
        for s in self.inner.store.stats_steps(window).await? {
            step_groups.entry((s.action, s.kind, s.sku, s.site)).or_default().push(s.finished_at.since(s.started_at));
        }
        let host_runs = run_groups
            .into_iter()
            .filter_map(|((action, sku, site), d)| {
                Some(DurationStats { action, step: None, sku, site, durations: estimate::percentiles(d)? })
            })
            .collect();
        let steps = step_groups
            .into_iter()
            .filter_map(|((action, step, sku, site), d)| {
                Some(DurationStats { action, step: Some(step), sku, site, durations: estimate::percentiles(d)? })
            })
            .collect();
        Ok(BatchStats { batches_by_state, succeeded, failed, cancelled, success_rate, host_runs, steps, outcomes })
    }

    /// Host-run outcomes and durations per action, by `period`, over `window`: the daily
    /// rollups of what retention removed merged with the rows still kept (folded the same
    /// way), so a year back works whatever the retention. A window's first day counts
    /// whole in the rollups.
    pub async fn batch_stats_by(
        &self,
        window: StatsParams,
        period: maas_core::rollup::Period,
    ) -> Result<Vec<maas_core::rollup::PeriodStats>, EngineError> {
        use maas_core::rollup;
        let span = RollupListParams { from: window.finished_from, until: window.finished_until };
        let mut all = BTreeMap::new();
        rollup::merge(&mut all, self.inner.store.rollup_list(span).await?);
        let live = self.inner.store.stats_host_runs(window).await?;
        rollup::merge(&mut all, rollup::fold(&live, &[], |_| String::new()));
        Ok(rollup::by_period(all.values(), period))
    }

    /// Per site: hosts in flight, jobs queued / running / waiting, live workers.
    pub async fn active_counts(&self) -> Result<Vec<ActiveSite>, EngineError> {
        let now = self.inner.clock.now();
        let workers =
            self.inner.store.worker_list(WorkerListParams::live(now, self.inner.config.worker_freshness)).await?;
        let mut live: BTreeMap<Site, u32> = BTreeMap::new();
        for w in workers {
            *live.entry(w.site).or_insert(0) += 1;
        }
        let mut out: BTreeMap<Site, ActiveSite> = BTreeMap::new();
        for a in self.inner.store.stats_active().await? {
            out.insert(a.site.clone(), ActiveSite { activity: a, live_workers: 0 });
        }
        for (site, n) in live {
            out.entry(site.clone())
                .or_insert_with(|| ActiveSite {
                    activity: SiteActivity {
                        site,
                        hosts_in_flight: 0,
                        jobs_queued: 0,
                        jobs_running: 0,
                        jobs_waiting: 0,
                    },
                    live_workers: 0,
                })
                .live_workers = n;
        }
        Ok(out.into_values().collect())
    }

    /// Per outbox consumer (each notifier as `notify:NAME`, and `tickets`): how far it has
    /// taken events, and when the oldest event it has not taken yet was written.
    pub async fn outbox_backlog(&self) -> Result<Vec<OutboxBacklog>, EngineError> {
        let mut out = Vec::new();
        for consumer in crate::leader::outbox_consumers(&self.inner) {
            let cursor = self.inner.store.event_cursor_get(&consumer).await?;
            let next = self.inner.store.event_list(EventListParams { after: cursor, batch_id: None, limit: 1 }).await?;
            out.push(OutboxBacklog { consumer, cursor, oldest_pending_at: next.first().map(|e| e.at) });
        }
        Ok(out)
    }

    /// Runnable jobs per site and step kind, with the oldest one's enqueue time.
    pub async fn queue_depths(&self) -> Result<Vec<QueueDepth>, EngineError> {
        Ok(self.inner.store.stats_queues().await?)
    }

    /// When an unfinished batch should finish, from historical step durations for its
    /// action and each host's SKU (falling back to the action alone, then to built-in
    /// defaults), its hosts' progress and its `max_in_flight`.
    pub async fn eta(&self, id: BatchId) -> Result<Option<Eta>, EngineError> {
        let now = self.inner.clock.now();
        let batch = self.inner.store.batch_get(id).await?.ok_or(EngineError::NotFound(id))?;
        if batch.state.is_terminal() {
            return Ok(None);
        }
        let history = self
            .inner
            .store
            .stats_steps(StatsParams {
                finished_from: Some(now.minus(self.inner.config.eta_history)),
                ..Default::default()
            })
            .await?;
        let action = batch.action();
        let model = estimate::StepModel::from_samples(history.iter().filter(|s| s.action == action));
        let view = self.get_batch(id).await?;
        let plan: Vec<PlannedStep> = plan_for(&batch.spec.action);
        let mut running = Vec::new();
        let mut queued = Vec::new();
        for h in &view.hosts {
            match h.state {
                HostRunState::Running => {
                    let position = view_position(&plan, h);
                    let in_step = h.step_since.map_or(Duration::ZERO, |t| now.since(t));
                    running.push(model.remaining(&plan, &h.sku, position, in_step));
                }
                HostRunState::Queued => queued.push(model.remaining(&plan, &h.sku, 0, Duration::ZERO)),
                _ => {}
            }
        }
        let remaining = estimate::makespan(&running, &queued, batch.spec.rollout.max_in_flight as usize);
        Ok(Some(Eta { batch_id: id, finish_at: now.plus(remaining), remaining, samples: model.samples() }))
    }

    /// Watches the outbox live: events after `after` (of one batch, or all), in order, as
    /// they commit. A batch's stream ends after its final event. Polls the store (so it sees
    /// every instance's writes) and wakes early on this instance's own writes.
    pub fn watch(
        &self,
        batch: Option<BatchId>,
        after: u64,
        poll: Duration,
    ) -> impl Stream<Item = Result<Event, StoreError>> + Send + 'static {
        let engine = self.clone();
        stream::unfold(
            (engine, after, false, Vec::<Event>::new().into_iter()),
            move |(engine, mut after, done, mut buf)| async move {
                loop {
                    if let Some(e) = buf.next() {
                        after = e.seq;
                        let last = batch.is_some() && e.kind.ends_batch();
                        return Some((Ok(e), (engine, after, last, buf)));
                    }
                    if done {
                        return None;
                    }
                    let inner = engine.inner.clone();
                    let woke = inner.changed.notified();
                    let page =
                        engine.inner.store.event_list(EventListParams { after, batch_id: batch, limit: 500 }).await;
                    match page {
                        Err(e) => return Some((Err(e), (engine, after, true, Vec::new().into_iter()))),
                        Ok(events) if !events.is_empty() => buf = events.into_iter(),
                        Ok(_) => {
                            let sleep = engine.inner.clock.sleep(poll);
                            tokio::select! {
                                _ = woke => {}
                                _ = sleep => {}
                            }
                        }
                    }
                }
            },
        )
    }

    /// The audit trail, newest first: every mutating call, accepted or refused. Only
    /// principals the policy lets read it (`Permission::ReadAudit`).
    pub async fn audit(&self, principal: &Principal, filter: AuditFilter) -> Result<Vec<AuditRecord>, EngineError> {
        self.inner.authorizer.check(principal, &Permission::ReadAudit)?;
        Ok(self.inner.store.audit_list(filter).await?)
    }

    /// Tickets raised (failure budgets, wedged hosts, stragglers), newest first.
    pub async fn tickets(&self, limit: usize) -> Result<Vec<(String, Ticket)>, EngineError> {
        Ok(self.inner.ticketing.list(limit).await?)
    }

    /// Replaces the step kinds a pool's workers take (admins only). Running workers pick the
    /// change up on their next refresh, without a restart.
    pub async fn set_pool_kinds(
        &self,
        principal: &Principal,
        pool: &Pool,
        kinds: &[StepKind],
    ) -> Result<(), EngineError> {
        let mut entry = AuditRecord::new(AuditOp::SetPoolKinds, &principal.name, self.inner.clock.now());
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        entry.summary =
            format!("pool {pool}: {}", if names.is_empty() { "every step kind".into() } else { names.join(", ") });
        self.refusals_audited(|| entry.clone(), async {
            self.inner.authorizer.check(principal, &Permission::Admin)?;
            self.inner.store.pool_kinds_set(pool, kinds).await?;
            self.audit_accepted(entry.clone()).await
        })
        .await
    }

    /// Submits a reimage of `hosts` as the system (the reclaim workflow).
    pub(crate) async fn submit_as_system(&self, task: &str, req: &BatchRequest) -> Result<Submitted, EngineError> {
        self.submit_with(&Principal::system(task), req, &AllowAll).await
    }

    /// Marks hosts defunct (they will be reclaimed when unallocated).
    pub async fn mark_defunct(&self, principal: &Principal, host: &Hostname) -> Result<(), EngineError> {
        self.set_host_state(principal, host, HostState::Defunct, None).await
    }

    /// Sets a host's lifecycle state (admins only); `allocated_to` names who holds an
    /// allocated host (what a step refused on it later says).
    pub async fn set_host_state(
        &self,
        principal: &Principal,
        host: &Hostname,
        state: HostState,
        allocated_to: Option<String>,
    ) -> Result<(), EngineError> {
        let now = self.inner.clock.now();
        let mut entry = AuditRecord::new(AuditOp::SetHostState, &principal.name, now).on_hosts(&[host.as_str()]);
        entry.summary = match (state, &allocated_to) {
            (HostState::Allocated, Some(to)) => format!("state allocated to {}", AuditRecord::printable(to, 256)),
            _ => format!("state {state}"),
        };
        self.refusals_audited(|| entry.clone(), async {
            self.inner.authorizer.check(principal, &Permission::Admin)?;
            if let Some(to) = &allocated_to {
                let max = self.inner.config.limits.max_text_len;
                maas_core::validate::check_text("allocated_to", to, maas_core::validate::TextKind::Line, max)
                    .map_err(EngineError::Rejected)?;
            }
            let change = StateChange { state, allocated_to: allocated_to.clone(), at: now };
            self.inner.inventory.host_set_state(host, change).await?;
            self.audit_accepted(entry.clone()).await
        })
        .await
    }

    /// Inventory hosts matching `filter`, by name (anyone who may read).
    /// Hosts of pools the policy keeps from `principal` are left out; further pages are
    /// read until `filter.limit` hosts are found or the list ends.
    pub async fn list_hosts(&self, principal: &Principal, mut filter: HostFilter) -> Result<Vec<Host>, EngineError> {
        self.inner.authorizer.check(principal, &Permission::Read)?;
        let limit = filter.limit;
        let mut out = Vec::new();
        loop {
            let page = self.inner.inventory.host_list(filter.clone()).await?;
            let end = limit == 0 || page.len() < limit;
            filter.after = page.last().map(|h| h.hostname.clone());
            out.extend(page.into_iter().filter(|h| {
                self.inner.authorizer.check(principal, &Permission::ReadPool { pool: h.pool.clone() }).is_ok()
            }));
            if end || out.len() >= limit {
                out.truncate(if limit == 0 { usize::MAX } else { limit });
                return Ok(out);
            }
        }
    }

    /// Adds or replaces inventory hosts, idempotently (admins only). The records are
    /// already validated (names, sites, pools are checked types); returns how many were
    /// written.
    pub async fn import_hosts(&self, principal: &Principal, hosts: Vec<Host>) -> Result<usize, EngineError> {
        let names: Vec<&str> = hosts.iter().map(|h| h.hostname.as_str()).collect();
        let mut entry =
            AuditRecord::new(AuditOp::ImportHosts, &principal.name, self.inner.clock.now()).on_hosts(&names);
        let sites: BTreeSet<&str> = hosts.iter().map(|h| h.site.as_str()).collect();
        entry.summary =
            format!("import {} host(s) in {}", hosts.len(), sites.into_iter().collect::<Vec<_>>().join(", "));
        self.refusals_audited(|| entry.clone(), async {
            self.inner.authorizer.check(principal, &Permission::Admin)?;
            let problems: Vec<Problem> = hosts
                .iter()
                .filter_map(|h| h.problem().map(|message| Problem::BadHostRecord { host: h.hostname.clone(), message }))
                .collect();
            if !problems.is_empty() {
                return Err(EngineError::Rejected(ValidationReport { problems }));
            }
            let written = self.inner.inventory.host_upsert_many(hosts).await?;
            self.audit_accepted(entry.clone()).await?;
            Ok(written)
        })
        .await
    }

    /// The step kinds a pool's workers take (`None`: the pool takes every kind).
    pub async fn pool_kinds(&self, principal: &Principal, pool: &Pool) -> Result<Option<Vec<StepKind>>, EngineError> {
        self.inner.authorizer.check(principal, &Permission::Read)?;
        Ok(self.inner.store.pool_kinds_get(pool).await?)
    }
}

/// The chain position a host view is at (its current step's index in the plan).
fn view_position(plan: &[PlannedStep], h: &HostRunView) -> usize {
    let Some(step) = h.step else { return 0 };
    let pos = plan.iter().position(|s| s.kind == step).unwrap_or(0);
    if h.step_state == Some(JobState::Succeeded) { pos + 1 } else { pos }
}

struct Snapshot {
    hosts: HashMap<Hostname, Host>,
    claims: HashMap<Hostname, BatchId>,
}

fn conflict_report(conflicts: Vec<Conflict>) -> ValidationReport {
    ValidationReport {
        problems: conflicts.into_iter().map(|c| Problem::Conflict { host: c.host, held_by: c.held_by }).collect(),
    }
}
