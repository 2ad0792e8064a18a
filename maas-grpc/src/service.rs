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
use maas_core::action::{Action, WipeMethod};
use maas_core::authz::Principal;
use maas_core::batch::{BatchRequest, ForceInUse};
use maas_core::engine::{BatchView, Engine, EngineError};
use maas_core::id::BatchId;
use maas_core::machine::JobOutcome;
use maas_core::model::{BatchRecord, BatchState, Event};
use maas_core::names::{OsRelease, Site};
use maas_core::ports::store::{BatchListParams, StoreError};
use maas_core::priority::PriorityClass;
use maas_core::time::Timestamp;
use maas_core::validate::{Problem, ValidationReport};
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

fn event(e: &Event) -> pb::Event {
    pb::Event {
        seq: e.seq,
        batch_id: e.batch_id.to_string(),
        at_ms: ms(e.at),
        kind: e.kind.name().to_string(),
        json: serde_json::to_string(&e.kind).unwrap_or_default(),
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
        let params = BatchListParams {
            submitter: (!r.submitter.is_empty()).then_some(r.submitter),
            states,
            before: if r.before_id.is_empty() { None } else { Some(batch_id(&r.before_id)?) },
            limit,
            ..Default::default()
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
}
