//! Prometheus metrics, `/healthz` and `/readyz` on a port of their own.
//!
//! - From the outbox, through [`MetricsNotifier`] (the outbox leader delivers each event to
//!   one instance, so these count once across a deployment, at least once):
//!   `maas_events_total{kind}`, `maas_batches_accepted_total{action}`,
//!   `maas_host_runs_total{outcome}`, `maas_stragglers_total`; and with each delivery the
//!   host runs and steps that finished since the last one, from the store:
//!   `maas_host_run_seconds{action,sku,site,outcome}` and
//!   `maas_step_seconds{action,step,sku,site}` (histograms).
//! - Refreshed from the store every few seconds ([`refresh`]): per site
//!   `maas_hosts_in_flight`, `maas_jobs{state}` (queued, running, waiting),
//!   `maas_live_workers`; per site and step kind `maas_queue_depth` and
//!   `maas_queue_oldest_seconds`; `maas_batches{state,action}` for unfinished batches;
//!   `maas_outbox_lag_seconds{consumer}` (age of the oldest event a consumer has not
//!   taken; 0 when caught up).
//! - This process's own work ([`refresh`], from the engine's counters):
//!   `maas_claims_total`, `maas_jobs_claimed_total`, `maas_jobs_completed_total`,
//!   `maas_completions_stale_total`, `maas_lease_rescues_total{outcome}` (retried,
//!   failed, wait_expired), `maas_stragglers_flagged_total`,
//!   `maas_audit_write_failures_total` (refusals whose audit entry the store did not take),
//!   `maas_worker_store_errors_total` (workers' failed store calls, each retried).
//! - Requests ([`RpcMetricsLayer`]): `maas_rpc_total{method,code}` and
//!   `maas_rpc_seconds{method}`.
//! - BMCs ([`MeteredPower`]): `maas_bmc_command_seconds{op}` and
//!   `maas_bmc_errors_total{op,class}` (unreachable, authentication, busy, rejected,
//!   timeout, unsupported).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use maas_core::host::BmcEndpoint;
use maas_core::model::{BatchState, Event, EventKind};
use maas_core::ports::power::{BootDevice, PowerDriver, PowerError, PowerOp, PowerReport, PowerState, ProbeReport};
use maas_core::ports::services::{Notifier, NotifyError};
use maas_core::ports::store::{BatchListParams, StatsParams, Store};
use maas_core::time::{Clock, Timestamp};
use maas_engine::Engine;

use crate::errors::SetupError;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tonic::codegen::http;

/// Installs the process-wide Prometheus recorder.
pub fn install() -> Result<PrometheusHandle, SetupError> {
    let seconds = [0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0];
    let fast = [0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    let e = |e: metrics_exporter_prometheus::BuildError| SetupError { what: "metrics".into(), message: e.to_string() };
    PrometheusBuilder::new()
        .set_buckets(&seconds)
        .map_err(e)?
        .set_buckets_for_metric(Matcher::Prefix("maas_rpc".into()), &fast)
        .map_err(e)?
        .set_buckets_for_metric(Matcher::Prefix("maas_bmc".into()), &fast)
        .map_err(e)?
        .install_recorder()
        .map_err(e)
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Records outbox events as metrics, and with each delivery the durations of host runs and
/// steps that finished since the previous one. Deliveries are at least once, so a
/// redelivered event may count twice (after a crash between delivery and
/// acknowledgement).
pub struct MetricsNotifier {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Durations are read for `[watermark, now)`; the next delivery starts where this ended.
    watermark: Mutex<Timestamp>,
}

impl MetricsNotifier {
    /// A notifier reading durations from `store`, from now on.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now();
        MetricsNotifier { store, clock, watermark: Mutex::new(now) }
    }

    async fn record_durations(&self) -> Result<(), NotifyError> {
        let from = *self.watermark.lock().unwrap_or_else(|p| p.into_inner());
        let until = self.clock.now();
        let window = StatsParams { finished_from: Some(from), finished_until: Some(until), ..Default::default() };
        let error = |e: maas_core::ports::store::StoreError| NotifyError::Prepare { cause: e.into() };
        let runs = self.store.stats_host_runs(window.clone()).await.map_err(error)?;
        let steps = self.store.stats_steps(window).await.map_err(error)?;
        for r in runs {
            metrics::histogram!("maas_host_run_seconds",
                "action" => r.action.as_str(), "sku" => r.sku.to_string(), "site" => r.site.to_string(),
                "outcome" => r.state.to_string())
            .record(seconds(r.finished_at.since(r.started_at)));
        }
        for s in steps {
            metrics::histogram!("maas_step_seconds",
                "action" => s.action.as_str(), "step" => s.kind.as_str(), "sku" => s.sku.to_string(),
                "site" => s.site.to_string())
            .record(seconds(s.finished_at.since(s.started_at)));
        }
        *self.watermark.lock().unwrap_or_else(|p| p.into_inner()) = until;
        Ok(())
    }
}

#[async_trait]
impl Notifier for MetricsNotifier {
    async fn deliver(&self, events: &[Event]) -> Result<(), NotifyError> {
        // Durations first: a failure redelivers the events, which must not count twice.
        self.record_durations().await?;
        for e in events {
            metrics::counter!("maas_events_total", "kind" => e.kind.name()).increment(1);
            match &e.kind {
                EventKind::BatchAccepted { action, .. } => {
                    metrics::counter!("maas_batches_accepted_total", "action" => action.kind().as_str()).increment(1)
                }
                EventKind::HostSucceeded { .. } => {
                    metrics::counter!("maas_host_runs_total", "outcome" => "succeeded").increment(1)
                }
                EventKind::HostFailed { .. } => {
                    metrics::counter!("maas_host_runs_total", "outcome" => "failed").increment(1)
                }
                EventKind::HostCancelled { .. } => {
                    metrics::counter!("maas_host_runs_total", "outcome" => "cancelled").increment(1)
                }
                EventKind::StragglerFlagged { .. } => metrics::counter!("maas_stragglers_total").increment(1),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Refreshes the gauges and this process's counters from the engine every `every`, forever.
pub async fn refresh(engine: Engine, every: Duration) {
    loop {
        refresh_once(&engine).await;
        tokio::time::sleep(every).await;
    }
}

async fn refresh_once(engine: &Engine) {
    let now = engine.clock().now();
    let age = |t: Option<Timestamp>| t.map_or(0.0, |t| seconds(now.since(t)));
    if let Ok(sites) = engine.active_counts().await {
        for s in sites {
            let site = s.activity.site.to_string();
            metrics::gauge!("maas_hosts_in_flight", "site" => site.clone()).set(s.activity.hosts_in_flight as f64);
            metrics::gauge!("maas_live_workers", "site" => site.clone()).set(s.live_workers as f64);
            for (state, n) in [
                ("queued", s.activity.jobs_queued),
                ("running", s.activity.jobs_running),
                ("waiting", s.activity.jobs_waiting),
            ] {
                metrics::gauge!("maas_jobs", "site" => site.clone(), "state" => state).set(n as f64);
            }
        }
    }
    if let Ok(queues) = engine.queue_depths().await {
        // Queues that emptied since the last refresh read 0, not their last value.
        static SEEN: Mutex<BTreeSet<(String, &'static str)>> = Mutex::new(BTreeSet::new());
        let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        for v in seen.iter() {
            metrics::gauge!("maas_queue_depth", "site" => v.0.clone(), "kind" => v.1).set(0.0);
            metrics::gauge!("maas_queue_oldest_seconds", "site" => v.0.clone(), "kind" => v.1).set(0.0);
        }
        for q in queues {
            let (site, kind) = (q.site.to_string(), q.kind.as_str());
            metrics::gauge!("maas_queue_depth", "site" => site.clone(), "kind" => kind).set(f64::from(q.queued));
            metrics::gauge!("maas_queue_oldest_seconds", "site" => site.clone(), "kind" => kind)
                .set(age(q.oldest_enqueued_at));
            seen.insert((site, kind));
        }
    }
    for state in [BatchState::Running, BatchState::Paused, BatchState::Cancelling] {
        let params = BatchListParams { states: vec![state], limit: 10_000, ..Default::default() };
        if let Ok(list) = engine.list_batches(params).await {
            let mut by_action: BTreeMap<&'static str, usize> =
                maas_core::action::ActionKind::ALL.iter().map(|a| (a.as_str(), 0)).collect();
            for b in &list {
                *by_action.entry(b.action().as_str()).or_insert(0) += 1;
            }
            for (action, n) in by_action {
                metrics::gauge!("maas_batches", "state" => state.as_str(), "action" => action).set(n as f64);
            }
        }
    }
    if let Ok(backlog) = engine.outbox_backlog().await {
        for b in backlog {
            metrics::gauge!("maas_outbox_lag_seconds", "consumer" => b.consumer).set(age(b.oldest_pending_at));
        }
    }
    let c = engine.counters();
    metrics::counter!("maas_claims_total").absolute(c.claims);
    metrics::counter!("maas_jobs_claimed_total").absolute(c.jobs_claimed);
    metrics::counter!("maas_jobs_completed_total").absolute(c.jobs_completed);
    metrics::counter!("maas_completions_stale_total").absolute(c.completions_stale);
    metrics::counter!("maas_lease_rescues_total", "outcome" => "retried").absolute(c.leases_retried);
    metrics::counter!("maas_lease_rescues_total", "outcome" => "failed").absolute(c.leases_failed);
    metrics::counter!("maas_lease_rescues_total", "outcome" => "wait_expired").absolute(c.waits_expired);
    metrics::counter!("maas_stragglers_flagged_total").absolute(c.stragglers_flagged);
    metrics::counter!("maas_audit_write_failures_total").absolute(c.audit_write_failures);
    metrics::counter!("maas_worker_store_errors_total").absolute(c.worker_store_errors);
}

/// A tower layer counting and timing every gRPC call by method and status code.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics { inner }
    }
}

/// The service [`RpcMetricsLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

/// The gRPC status name for a `grpc-status` header value.
fn code_name(value: Option<&http::HeaderValue>) -> String {
    let code = value.and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()).unwrap_or(0);
    format!("{:?}", tonic::Code::from_i32(code))
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/').to_string();
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            // A failed call answers with its status in the headers (trailers-only); a
            // successful one sends `0` in the trailers, after this point.
            let code = match &answer {
                Ok(response) => code_name(response.headers().get("grpc-status")),
                Err(_) => "Internal".to_string(),
            };
            let elapsed = started.elapsed();
            tracing::debug!(%method, %code, elapsed_ms = elapsed.as_secs_f64() * 1e3, "rpc");
            metrics::histogram!("maas_rpc_seconds", "method" => method.clone()).record(elapsed.as_secs_f64());
            metrics::counter!("maas_rpc_total", "method" => method, "code" => code).increment(1);
            answer
        })
    }
}

/// A power driver that times every BMC command and counts errors by class.
pub struct MeteredPower {
    inner: Arc<dyn PowerDriver>,
}

impl MeteredPower {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn PowerDriver>) -> Self {
        MeteredPower { inner }
    }
}

async fn metered<T>(op: &'static str, call: impl Future<Output = Result<T, PowerError>>) -> Result<T, PowerError> {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!("maas_bmc_command_seconds", "op" => op).record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        metrics::counter!("maas_bmc_errors_total", "op" => op, "class" => e.class()).increment(1);
        tracing::warn!(op, class = e.class(), error = %e, "BMC command failed");
    }
    result
}

#[async_trait]
impl PowerDriver for MeteredPower {
    async fn power_status(&self, bmc: &BmcEndpoint) -> Result<PowerState, PowerError> {
        metered("power_status", self.inner.power_status(bmc)).await
    }

    async fn power(&self, bmc: &BmcEndpoint, op: PowerOp) -> Result<PowerReport, PowerError> {
        metered("power", self.inner.power(bmc, op)).await
    }

    async fn set_boot_device(&self, bmc: &BmcEndpoint, device: BootDevice, persistent: bool) -> Result<(), PowerError> {
        metered("set_boot_device", self.inner.set_boot_device(bmc, device, persistent)).await
    }

    async fn boot_device(&self, bmc: &BmcEndpoint) -> Result<BootDevice, PowerError> {
        metered("boot_device", self.inner.boot_device(bmc)).await
    }

    async fn probe(&self, bmc: &BmcEndpoint) -> Result<ProbeReport, PowerError> {
        metered("probe", self.inner.probe(bmc)).await
    }

    async fn insert_media(&self, bmc: &BmcEndpoint, image_url: &str) -> Result<(), PowerError> {
        metered("insert_media", self.inner.insert_media(bmc, image_url)).await
    }

    async fn eject_media(&self, bmc: &BmcEndpoint) -> Result<(), PowerError> {
        metered("eject_media", self.inner.eject_media(bmc)).await
    }
}

/// How long `/readyz` waits for the store to answer.
const READY_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `/metrics` (Prometheus text format), `/healthz` (the process answers) and
/// `/readyz` on `addr`: ready when `ready` is set (the API is serving) and the store
/// answers a query within 2 s, so a load balancer stops sending work to a maasd whose
/// database is gone, and sends it again once the database is back.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    ready: Arc<AtomicBool>,
    store: Arc<dyn Store>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/healthz", get(|| std::future::ready("ok")))
        .route(
            "/readyz",
            get(move || {
                let (ready, store) = (ready.clone(), store.clone());
                async move {
                    if !ready.load(Ordering::Relaxed) {
                        return (StatusCode::SERVICE_UNAVAILABLE, "starting");
                    }
                    match tokio::time::timeout(READY_STORE_TIMEOUT, store.event_cursor_get("readyz")).await {
                        Ok(Ok(_)) => (StatusCode::OK, "ready"),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "readyz: the store does not answer");
                            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
                        }
                        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable"),
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
