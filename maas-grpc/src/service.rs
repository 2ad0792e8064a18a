//! The `maas.v1.Maas` service: converts requests at the edge, calls the engine as the
//! caller's principal (maas-core authorizes), and converts results and errors back.
//!
//! Errors: a rejected submission is `INVALID_ARGUMENT` (or `FAILED_PRECONDITION` when the
//! only problems are overlaps and in-use hosts) with an encoded `maas.v1.Rejection` as the
//! status details; a denied request is `PERMISSION_DENIED` naming the missing permission;
//! an unknown batch is `NOT_FOUND`; a reused idempotency key is `ALREADY_EXISTS`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use maas_core::action::{Action, ActionKind, WipeMethod};
use maas_core::authz::Principal;
use maas_core::batch::{BatchRequest, ForceInUse};
use maas_core::host::{BmcEndpoint, Host, HostState};
use maas_core::id::BatchId;
use maas_core::machine::JobOutcome;
use maas_core::model::{BatchRecord, BatchState, Event};
use maas_core::names::{Group, Hostname, OsRelease, Pool, Rack, Site, Sku};
use maas_core::plan::StepKind;
use maas_core::ports::inventory::HostFilter;
use maas_core::ports::store::{BatchListParams, StatsParams, StoreError};
use maas_core::priority::PriorityClass;
use maas_core::time::Timestamp;
use maas_core::validate::{Problem, ValidationReport};
use maas_engine::{BatchView, DurationStats, Engine, EngineError};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::identity::Policy;
use crate::pb;

/// How callers are identified.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// By client certificate (mTLS), through the policy.
    ClientCertificate,
    /// Plaintext on loopback (development): everyone is this principal.
    Fixed(Principal),
}

/// The service.
#[derive(Clone)]
pub struct MaasService {
    engine: Engine,
    policy: Arc<Policy>,
    auth: Authentication,
    watch_poll: Duration,
}

impl MaasService {
    /// A service over `engine`, identifying callers by `auth` and `policy`.
    pub fn new(engine: Engine, policy: Arc<Policy>, auth: Authentication) -> Self {
        MaasService { engine, policy, auth, watch_poll: Duration::from_millis(200) }
    }

    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        match &self.auth {
            Authentication::Fixed(p) => Ok(p.clone()),
            Authentication::ClientCertificate => {
                let certs = request
                    .peer_certs()
                    .ok_or_else(|| Status::unauthenticated("a client certificate is required (mTLS)"))?;
                let leaf = certs.first().ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
                self.policy.principal_of_cert(leaf).map_err(|e| Status::unauthenticated(e.to_string()))
            }
        }
    }
}

fn batch_id(s: &str) -> Result<BatchId, Status> {
    s.parse().map_err(|_| Status::invalid_argument(format!("batch_id {s:?} is not a batch id")))
}

fn priority(p: i32) -> Result<PriorityClass, Status> {
    Ok(match pb::Priority::try_from(p).map_err(|_| Status::invalid_argument(format!("unknown priority {p}")))? {
        pb::Priority::Unspecified | pb::Priority::Normal => PriorityClass::Normal,
        pb::Priority::Low => PriorityClass::Low,
        pb::Priority::High => PriorityClass::High,
        pb::Priority::Urgent => PriorityClass::Urgent,
    })
}

fn wipe(m: i32) -> Result<WipeMethod, Status> {
    Ok(match pb::WipeMethod::try_from(m).map_err(|_| Status::invalid_argument(format!("unknown wipe method {m}")))? {
        pb::WipeMethod::Unspecified | pb::WipeMethod::Quick => WipeMethod::Quick,
        pb::WipeMethod::Secure => WipeMethod::Secure,
    })
}

fn action(a: Option<pb::Action>) -> Result<Action, Status> {
    use pb::action::Kind;
    let kind = a.and_then(|a| a.kind).ok_or_else(|| Status::invalid_argument("action is required"))?;
    Ok(match kind {
        Kind::Reimage(r) => Action::Reimage {
            os: OsRelease::new(&r.os).map_err(|e| Status::invalid_argument(format!("action.reimage.os: {e}")))?,
            install_timeout_secs: r.install_timeout_secs,
        },
        Kind::Reboot(r) => Action::Reboot { soft: r.soft },
        Kind::PowerOn(_) => Action::PowerOn,
        Kind::PowerOff(p) => Action::PowerOff { soft: p.soft },
        Kind::PowerCycle(_) => Action::PowerCycle,
        Kind::WipeDisks(w) => Action::WipeDisks { method: wipe(w.method)? },
        Kind::Decommission(w) => Action::Decommission { method: wipe(w.method)? },
    })
}

/// The domain request for a `SubmitBatchRequest`.
pub fn batch_request(r: pb::SubmitBatchRequest) -> Result<BatchRequest, Status> {
    let mut req = BatchRequest::new(action(r.action)?, r.hosts);
    req.priority = priority(r.priority)?;
    if r.max_in_flight > 0 {
        req.rollout.max_in_flight = r.max_in_flight;
    }
    if let Some(budget) = r.failure_budget {
        req.rollout.failure_budget = budget;
    }
    req.idempotency_key = (!r.idempotency_key.is_empty()).then_some(r.idempotency_key);
    req.force = (!r.force_reason.is_empty()).then_some(ForceInUse { reason: r.force_reason });
    req.not_before = r.not_before_ms.map(Timestamp::from_millis);
    req.sites = r
        .sites
        .iter()
        .map(|s| Site::new(s).map_err(|e| Status::invalid_argument(format!("sites: {e}"))))
        .collect::<Result<_, _>>()?;
    req.comment = (!r.comment.is_empty()).then_some(r.comment);
    Ok(req)
}

/// The structured rejection of a report.
pub fn rejection(report: &ValidationReport) -> pb::Rejection {
    let mut r = pb::Rejection { summary: report.to_string(), ..Default::default() };
    for p in &report.problems {
        match p {
            Problem::Conflict { host, held_by } => {
                r.conflicts.push(pb::Conflict { hostname: host.to_string(), batch_id: held_by.to_string() })
            }
            Problem::UnknownHost { host } => r.unknown_hosts.push(host.to_string()),
            Problem::Decommissioned { host } => r.decommissioned_hosts.push(host.to_string()),
            Problem::InUse { host, .. } => r.in_use_hosts.push(host.to_string()),
            Problem::Unauthorized { host, denied } => r.unauthorized.push(format!("{host}: {denied}")),
            other => r.other.push(other.to_string()),
        }
    }
    r
}

fn status(e: EngineError) -> Status {
    match e {
        EngineError::Rejected(report) => {
            let only_holds =
                report.problems.iter().all(|p| matches!(p, Problem::Conflict { .. } | Problem::InUse { .. }));
            let code = if only_holds { tonic::Code::FailedPrecondition } else { tonic::Code::InvalidArgument };
            let details = rejection(&report).encode_to_vec();
            Status::with_details(code, report.to_string(), details.into())
        }
        EngineError::Denied(d) => Status::permission_denied(d.to_string()),
        EngineError::NotFound(id) => Status::not_found(format!("batch {id} not found")),
        EngineError::Store(StoreError::IdempotencyKeyReused { key, batch }) => {
            Status::already_exists(format!("idempotency key {key:?} was used for batch {batch} with another request"))
        }
        EngineError::Store(StoreError::NotFound { .. }) => Status::not_found("not found"),
        EngineError::Store(StoreError::Transition(t)) => Status::failed_precondition(t.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

fn ms(t: Timestamp) -> i64 {
    t.as_millis()
}

/// A batch record as the API shows it.
pub fn batch(b: &BatchRecord) -> pb::Batch {
    pb::Batch {
        id: b.id.to_string(),
        submitter: b.submitter.clone(),
        action: b.action().to_string(),
        state: b.state.to_string(),
        pause_reason: b.pause_reason.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        counts: Some(pb::Counts {
            queued: b.counts.queued,
            running: b.counts.running,
            succeeded: b.counts.succeeded,
            failed: b.counts.failed,
            cancelled: b.counts.cancelled,
        }),
        created_at_ms: ms(b.created_at),
        updated_at_ms: ms(b.updated_at),
        finished_at_ms: b.finished_at.map(ms),
        hosts: Vec::new(),
        idempotency_key: b.spec.idempotency_key.clone().unwrap_or_default(),
    }
}

fn view(v: BatchView, only: &[String]) -> pb::Batch {
    let mut out = batch(&v.batch);
    out.hosts = v
        .hosts
        .into_iter()
        .filter(|h| only.is_empty() || only.iter().any(|o| o == h.hostname.as_str()))
        .map(|h| pb::HostRun {
            hostname: h.hostname.to_string(),
            site: h.site.to_string(),
            state: h.state.to_string(),
            step: h.step.map(|s| s.as_str().to_string()).unwrap_or_default(),
            step_state: h.step_state.map(|s| s.to_string()).unwrap_or_default(),
            attempts: h.attempts,
            last_error: h.last_error.unwrap_or_default(),
            straggler: h.straggler,
        })
        .collect();
    out
}

fn duration_stats(d: &DurationStats) -> pb::DurationStats {
    let p = &d.durations;
    pb::DurationStats {
        action: d.action.to_string(),
        step: d.step.map(|s| s.as_str().to_string()).unwrap_or_default(),
        sku: d.sku.to_string(),
        site: d.site.to_string(),
        durations: Some(pb::Percentiles {
            count: p.count as u32,
            p50_seconds: p.p50.as_secs_f64(),
            p90_seconds: p.p90.as_secs_f64(),
            p95_seconds: p.p95.as_secs_f64(),
            p99_seconds: p.p99.as_secs_f64(),
            max_seconds: p.max.as_secs_f64(),
        }),
    }
}

fn event(e: &Event) -> pb::Event {
    pb::Event {
        seq: e.seq,
        batch_id: e.batch_id.to_string(),
        at_ms: ms(e.at),
        kind: e.kind.name().to_string(),
        json: serde_json::to_string(&e.kind).unwrap_or_default(),
    }
}

/// A name field: parsed by maas-core's validated name type, or an error naming the field.
fn named<T, E: std::fmt::Display>(
    field: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, Status> {
    parse(value).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn host_state(field: &str, s: &str) -> Result<HostState, Status> {
    HostState::parse(s).ok_or_else(|| {
        Status::invalid_argument(format!(
            "{field}: unknown host state {s:?} (ready, allocated, defunct, decommissioned)"
        ))
    })
}

/// A host record from the API, validated; errors name the host's index and field.
pub fn host_from(i: usize, h: pb::Host) -> Result<Host, Status> {
    let f = |name: &str| format!("hosts[{i}].{name}");
    let optional = |v: String| (!v.is_empty()).then_some(v);
    Ok(Host {
        hostname: named(&f("hostname"), &h.hostname, Hostname::new)?,
        site: named(&f("site"), &h.site, Site::new)?,
        rack: optional(h.rack).map(|r| named(&f("rack"), &r, Rack::new)).transpose()?,
        pool: named(&f("pool"), &h.pool, Pool::new)?,
        owner_group: optional(h.owner_group).map(|g| named(&f("owner_group"), &g, Group::new)).transpose()?,
        sku: named(&f("sku"), &h.sku, Sku::new)?,
        bmc: BmcEndpoint {
            address: if h.bmc_address.is_empty() {
                return Err(Status::invalid_argument(format!("{} is required", f("bmc_address"))));
            } else {
                h.bmc_address
            },
            port: u16::try_from(if h.bmc_port == 0 { 623 } else { h.bmc_port }).map_err(|_| {
                Status::invalid_argument(format!("{}: {} is not a UDP port", f("bmc_port"), h.bmc_port))
            })?,
            credentials_ref: h.credentials_ref,
        },
        state: if h.state.is_empty() { HostState::Ready } else { host_state(&f("state"), &h.state)? },
    })
}

/// A host record as the API shows it.
pub fn host_to(h: &Host) -> pb::Host {
    pb::Host {
        hostname: h.hostname.to_string(),
        site: h.site.to_string(),
        rack: h.rack.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        pool: h.pool.to_string(),
        owner_group: h.owner_group.as_ref().map(|g| g.to_string()).unwrap_or_default(),
        sku: h.sku.to_string(),
        bmc_address: h.bmc.address.clone(),
        bmc_port: u32::from(h.bmc.port),
        credentials_ref: h.bmc.credentials_ref.clone(),
        state: h.state.to_string(),
    }
}

fn pool_kinds(pool: &Pool, kinds: Option<Vec<StepKind>>) -> pb::PoolKinds {
    match kinds {
        Some(k) => pb::PoolKinds {
            pool: pool.to_string(),
            kinds: k.iter().map(|k| k.as_str().to_string()).collect(),
            all: false,
        },
        None => pb::PoolKinds { pool: pool.to_string(), kinds: vec![], all: true },
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::maas_server::Maas for MaasService {
    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let principal = self.principal(&request)?;
        let body = request.into_inner();
        let dry_run = body.dry_run;
        let req = batch_request(body)?;
        if dry_run {
            let report = self.engine.dry_run(&principal, &req).await.map_err(status)?;
            return Ok(Response::new(pb::SubmitBatchResponse {
                acceptable: report.acceptable,
                expanded_hosts: report.hosts.iter().map(|h| h.hostname.to_string()).collect(),
                plan: report.plan.iter().map(|s| s.kind.as_str().to_string()).collect(),
                warnings: report.warnings.clone(),
                problems: (!report.report.is_ok()).then(|| rejection(&report.report)),
                ..Default::default()
            }));
        }
        let done = self.engine.submit(&principal, &req).await.map_err(status)?;
        Ok(Response::new(pb::SubmitBatchResponse {
            batch_id: done.batch.id.to_string(),
            created: done.created,
            warnings: done.warnings,
            acceptable: true,
            ..Default::default()
        }))
    }

    async fn get_batch(&self, request: Request<pb::GetBatchRequest>) -> Result<Response<pb::Batch>, Status> {
        self.principal(&request)?;
        let r = request.into_inner();
        let v = self.engine.get_batch(batch_id(&r.batch_id)?).await.map_err(status)?;
        Ok(Response::new(view(v, &r.hostnames)))
    }

    async fn list_batches(
        &self,
        request: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        self.principal(&request)?;
        let r = request.into_inner();
        let states = r
            .states
            .iter()
            .map(|s| BatchState::parse(s).ok_or_else(|| Status::invalid_argument(format!("unknown batch state {s:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let limit = if r.limit == 0 { 50 } else { r.limit.min(1000) as usize };
        let action = (!r.action.is_empty())
            .then(|| {
                ActionKind::parse(&r.action).ok_or_else(|| {
                    let known: Vec<&str> = ActionKind::ALL.iter().map(|a| a.as_str()).collect();
                    Status::invalid_argument(format!("action: unknown action {:?} ({})", r.action, known.join(", ")))
                })
            })
            .transpose()?;
        let params = BatchListParams {
            submitter: (!r.submitter.is_empty()).then_some(r.submitter),
            states,
            action,
            created_from: r.created_from_ms.map(Timestamp::from_millis),
            created_until: r.created_until_ms.map(Timestamp::from_millis),
            before: if r.before_id.is_empty() { None } else { Some(batch_id(&r.before_id)?) },
            limit,
        };
        let list = self.engine.list_batches(params).await.map_err(status)?;
        let next =
            if list.len() == limit { list.last().map(|b| b.id.to_string()).unwrap_or_default() } else { String::new() };
        Ok(Response::new(pb::ListBatchesResponse { batches: list.iter().map(batch).collect(), next_before_id: next }))
    }

    async fn cancel_batch(&self, request: Request<pb::CancelBatchRequest>) -> Result<Response<pb::Batch>, Status> {
        let principal = self.principal(&request)?;
        let r = request.into_inner();
        let reason = if r.reason.is_empty() { "cancelled through the API" } else { r.reason.as_str() };
        let b = self.engine.cancel_batch(&principal, batch_id(&r.batch_id)?, reason).await.map_err(status)?;
        Ok(Response::new(batch(&b)))
    }

    async fn pause_batch(&self, request: Request<pb::BatchRef>) -> Result<Response<pb::Batch>, Status> {
        let principal = self.principal(&request)?;
        let id = batch_id(&request.into_inner().batch_id)?;
        let b = self.engine.pause_batch(&principal, id, "paused through the API").await.map_err(status)?;
        Ok(Response::new(batch(&b)))
    }

    async fn resume_batch(&self, request: Request<pb::BatchRef>) -> Result<Response<pb::Batch>, Status> {
        let principal = self.principal(&request)?;
        let id = batch_id(&request.into_inner().batch_id)?;
        let b = self.engine.resume_batch(&principal, id).await.map_err(status)?;
        Ok(Response::new(batch(&b)))
    }

    type WatchBatchStream = EventStream;

    async fn watch_batch(
        &self,
        request: Request<pb::WatchBatchRequest>,
    ) -> Result<Response<Self::WatchBatchStream>, Status> {
        self.principal(&request)?;
        let r = request.into_inner();
        let batch = if r.batch_id.is_empty() { None } else { Some(batch_id(&r.batch_id)?) };
        if let Some(id) = batch {
            self.engine.get_batch(id).await.map_err(status)?;
        }
        let stream = self
            .engine
            .watch(batch, r.after, self.watch_poll)
            .map(|e| e.map(|e| event(&e)).map_err(|e| Status::unavailable(e.to_string())));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_install_result(
        &self,
        request: Request<pb::ReportInstallResultRequest>,
    ) -> Result<Response<pb::ReportInstallResultResponse>, Status> {
        // Authenticated by the per-job token, not by the caller's certificate.
        let r = request.into_inner();
        let outcome = if r.succeeded {
            JobOutcome::Succeeded
        } else {
            let error = if r.error.is_empty() { "the installer reported a failure".to_string() } else { r.error };
            JobOutcome::Failed { error, retryable: false }
        };
        let job = self.engine.report_wait_result(&r.token, outcome).await.map_err(|e| match e {
            EngineError::Store(StoreError::NotFound { .. }) => Status::not_found("unknown or expired token"),
            other => status(other),
        })?;
        Ok(Response::new(pb::ReportInstallResultResponse { job_state: job.state.to_string() }))
    }

    async fn batch_stats(
        &self,
        request: Request<pb::BatchStatsRequest>,
    ) -> Result<Response<pb::BatchStatsResponse>, Status> {
        self.principal(&request)?;
        let r = request.into_inner();
        let window = StatsParams {
            finished_from: r.from_ms.map(Timestamp::from_millis),
            finished_until: r.until_ms.map(Timestamp::from_millis),
        };
        let stats = self.engine.batch_stats(window).await.map_err(status)?;
        Ok(Response::new(pb::BatchStatsResponse {
            batches_by_state: stats.batches_by_state.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            succeeded: stats.succeeded,
            failed: stats.failed,
            cancelled: stats.cancelled,
            success_rate: stats.success_rate,
            host_runs: stats.host_runs.iter().map(duration_stats).collect(),
            steps: stats.steps.iter().map(duration_stats).collect(),
        }))
    }

    async fn active_counts(
        &self,
        request: Request<pb::ActiveCountsRequest>,
    ) -> Result<Response<pb::ActiveCountsResponse>, Status> {
        self.principal(&request)?;
        let sites = self.engine.active_counts().await.map_err(status)?;
        Ok(Response::new(pb::ActiveCountsResponse {
            sites: sites
                .into_iter()
                .map(|s| pb::SiteActivity {
                    site: s.activity.site.to_string(),
                    hosts_in_flight: s.activity.hosts_in_flight,
                    jobs_queued: s.activity.jobs_queued,
                    jobs_running: s.activity.jobs_running,
                    jobs_waiting: s.activity.jobs_waiting,
                    live_workers: s.live_workers,
                })
                .collect(),
        }))
    }

    async fn list_tickets(
        &self,
        request: Request<pb::ListTicketsRequest>,
    ) -> Result<Response<pb::ListTicketsResponse>, Status> {
        self.principal(&request)?;
        let limit = request.into_inner().limit;
        let tickets = self.engine.tickets(if limit == 0 { 100 } else { limit as usize }).await.map_err(status)?;
        Ok(Response::new(pb::ListTicketsResponse {
            tickets: tickets
                .into_iter()
                .map(|(id, t)| pb::Ticket {
                    id,
                    kind: serde_json::to_value(t.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    batch_id: t.batch_id.to_string(),
                    host: t.host.map(|h| h.to_string()).unwrap_or_default(),
                    step: t.step.map(|s| s.as_str().to_string()).unwrap_or_default(),
                    summary: t.summary,
                    at_ms: ms(t.at),
                })
                .collect(),
        }))
    }

    async fn import_hosts(
        &self,
        request: Request<pb::ImportHostsRequest>,
    ) -> Result<Response<pb::ImportHostsResponse>, Status> {
        let principal = self.principal(&request)?;
        // Every record is validated before any is written.
        let hosts = request
            .into_inner()
            .hosts
            .into_iter()
            .enumerate()
            .map(|(i, h)| host_from(i, h))
            .collect::<Result<Vec<_>, _>>()?;
        let written = self.engine.import_hosts(&principal, hosts).await.map_err(status)?;
        Ok(Response::new(pb::ImportHostsResponse { written: written as u32 }))
    }

    async fn list_hosts(
        &self,
        request: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        let principal = self.principal(&request)?;
        let r = request.into_inner();
        let optional = |v: &str| (!v.is_empty()).then(|| v.to_string());
        let filter = HostFilter {
            site: optional(&r.site).map(|s| named("site", &s, Site::new)).transpose()?,
            pool: optional(&r.pool).map(|p| named("pool", &p, Pool::new)).transpose()?,
            state: optional(&r.state).map(|s| host_state("state", &s)).transpose()?,
            after: optional(&r.after).map(|h| named("after", &h, Hostname::new)).transpose()?,
            limit: if r.limit == 0 { 1000 } else { r.limit.min(10_000) as usize },
        };
        let hosts = self.engine.list_hosts(&principal, filter).await.map_err(status)?;
        Ok(Response::new(pb::ListHostsResponse { hosts: hosts.iter().map(host_to).collect() }))
    }

    async fn set_host_state(
        &self,
        request: Request<pb::SetHostStateRequest>,
    ) -> Result<Response<pb::SetHostStateResponse>, Status> {
        let principal = self.principal(&request)?;
        let r = request.into_inner();
        let host = named("hostname", &r.hostname, Hostname::new)?;
        self.engine.set_host_state(&principal, &host, host_state("state", &r.state)?).await.map_err(status)?;
        Ok(Response::new(pb::SetHostStateResponse {}))
    }

    async fn get_pool_kinds(&self, request: Request<pb::PoolRef>) -> Result<Response<pb::PoolKinds>, Status> {
        let principal = self.principal(&request)?;
        let pool = named("pool", &request.into_inner().pool, Pool::new)?;
        let kinds = self.engine.pool_kinds(&principal, &pool).await.map_err(status)?;
        Ok(Response::new(pool_kinds(&pool, kinds)))
    }

    async fn set_pool_kinds(&self, request: Request<pb::PoolKinds>) -> Result<Response<pb::PoolKinds>, Status> {
        let principal = self.principal(&request)?;
        let r = request.into_inner();
        let pool = named("pool", &r.pool, Pool::new)?;
        let kinds: Vec<StepKind> = if r.all {
            StepKind::ALL.to_vec()
        } else {
            r.kinds
                .iter()
                .map(|k| {
                    StepKind::parse(k)
                        .ok_or_else(|| Status::invalid_argument(format!("kinds: unknown step kind {k:?}")))
                })
                .collect::<Result<_, _>>()?
        };
        self.engine.set_pool_kinds(&principal, &pool, &kinds).await.map_err(status)?;
        let kinds = self.engine.pool_kinds(&principal, &pool).await.map_err(status)?;
        Ok(Response::new(pool_kinds(&pool, kinds)))
    }
}
