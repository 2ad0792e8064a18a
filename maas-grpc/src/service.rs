//! The `maas.v1.Maas` service: converts requests at the edge, calls the engine as the
//! caller's principal (maas-core authorizes), and converts results and errors back.
//! Conversions live in [`crate::convert`], the error → status mapping in
//! [`crate::status`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use maas_core::action::ActionKind;
use maas_core::authz::Principal;
use maas_core::host::MacAddr;
use maas_core::machine::JobOutcome;
use maas_core::model::BatchState;
use maas_core::names::{Hostname, Pool, Site};
use maas_core::plan::StepKind;
use maas_core::ports::inventory::HostFilter;
use maas_core::ports::store::{BatchListParams, StatsParams, StoreError};
use maas_core::time::Timestamp;
use maas_engine::{Engine, EngineError};
use tonic::{Request, Response, Status};

use crate::convert::*;
use crate::identity::Policy;
use crate::pb;
use crate::status::status;

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

    /// The engine the service calls.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The principal of a caller that presented `leaf` (a DER client certificate), or the
    /// fixed principal of a plaintext development server. The HTTPS listener (REST and
    /// console) authenticates its callers with this, as the gRPC methods do.
    pub fn principal_of_peer(&self, leaf: Option<&[u8]>) -> Result<Principal, Status> {
        match &self.auth {
            Authentication::Fixed(p) => Ok(p.clone()),
            Authentication::ClientCertificate => {
                let leaf = leaf.ok_or_else(|| Status::unauthenticated("a client certificate is required (mTLS)"))?;
                self.policy.principal_of_cert(leaf).map_err(|e| Status::unauthenticated(e.to_string()))
            }
        }
    }

    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        // A call the HTTPS listener makes for an authenticated caller: it is in-process, so
        // the request carries no TLS connection, only the principal already established.
        if let Some(Caller(p)) = request.extensions().get::<Caller>() {
            return Ok(p.clone());
        }
        let certs = request.peer_certs();
        self.principal_of_peer(certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref()))
    }
}

/// The authenticated caller of an in-process call (the REST routes and the console set it
/// on the `tonic::Request` they pass to the service's methods). Only server code can set
/// request extensions: a remote gRPC client cannot.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

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
        let principal = self.principal(&request)?;
        let r = request.into_inner();
        let v = self.engine.get_batch_as(&principal, batch_id(&r.batch_id)?).await.map_err(status)?;
        Ok(Response::new(view(v, &r.hostnames, r.steps)))
    }

    async fn list_batches(
        &self,
        request: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let principal = self.principal(&request)?;
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
            submitter: (!r.submitter.is_empty()).then(|| plain("submitter", r.submitter)).transpose()?,
            states,
            action,
            created_from: r.created_from_ms.map(Timestamp::from_millis),
            created_until: r.created_until_ms.map(Timestamp::from_millis),
            before: if r.before_id.is_empty() { None } else { Some(batch_id(&r.before_id)?) },
            limit,
        };
        let list = self.engine.list_batches_as(&principal, params).await.map_err(status)?;
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
        let principal = self.principal(&request)?;
        let r = request.into_inner();
        let batch = if r.batch_id.is_empty() { None } else { Some(batch_id(&r.batch_id)?) };
        if let Some(id) = batch {
            self.engine.get_batch_as(&principal, id).await.map_err(status)?;
        }
        let stream = self
            .engine
            .watch_as(&principal, batch, r.after, self.watch_poll)
            .map(|e| e.map(|e| event(&e)).map_err(|e| crate::status::unavailable(&e)));
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
            ..Default::default()
        };
        let periods = match r.by.as_str() {
            "" => Vec::new(),
            by => {
                let period = maas_core::rollup::Period::parse(by).ok_or_else(|| {
                    Status::invalid_argument(format!("by: {by:?} is not a period (day, week or month)"))
                })?;
                self.engine.batch_stats_by(window.clone(), period).await.map_err(status)?
            }
        };
        let stats = self.engine.batch_stats(window).await.map_err(status)?;
        Ok(Response::new(pb::BatchStatsResponse {
            periods: periods.iter().map(period_stats).collect(),
            batches_by_state: stats.batches_by_state.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            succeeded: stats.succeeded,
            failed: stats.failed,
            cancelled: stats.cancelled,
            success_rate: stats.success_rate,
            host_runs: stats.host_runs.iter().map(duration_stats).collect(),
            steps: stats.steps.iter().map(duration_stats).collect(),
            outcomes: stats
                .outcomes
                .iter()
                .map(|o| pb::OutcomeCounts {
                    action: o.action.to_string(),
                    sku: o.sku.to_string(),
                    site: o.site.to_string(),
                    succeeded: o.succeeded,
                    failed: o.failed,
                    cancelled: o.cancelled,
                })
                .collect(),
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
            mac: optional(&r.mac).map(|m| named("mac", &m, MacAddr::parse)).transpose()?,
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
        let allocated_to = (!r.allocated_to.is_empty()).then_some(r.allocated_to);
        let state = host_state("state", &r.state)?;
        self.engine.set_host_state(&principal, &host, state, allocated_to).await.map_err(status)?;
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

    async fn list_images(
        &self,
        request: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        self.principal(&request)?;
        let images = self
            .engine
            .images()
            .into_iter()
            .map(|i| pb::Image {
                name: i.name,
                kind: i.kind,
                firmware: i.firmware,
                has_config_template: i.has_config_template,
                template_params: i.template_params,
            })
            .collect();
        Ok(Response::new(pb::ListImagesResponse { images }))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let principal = self.principal(&request)?;
        let filter = audit_filter(request.into_inner())?;
        let entries = self.engine.audit(&principal, filter).await.map_err(status)?;
        Ok(Response::new(pb::ListAuditResponse { entries: entries.iter().map(audit_entry).collect() }))
    }
}
