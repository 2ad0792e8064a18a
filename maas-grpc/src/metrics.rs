//! Prometheus metrics, `/healthz` and `/readyz` on a port of their own.
//!
//! - From the outbox (a notifier, so every instance's writes count once, at least once):
//!   `maas_events_total{kind}`, `maas_batches_accepted_total{action}`,
//!   `maas_host_runs_total{outcome}`, `maas_host_run_seconds{outcome}` (histogram, from
//!   the host's start to its end), `maas_stragglers_total`.
//! - Refreshed from the store every few seconds: per site `maas_hosts_in_flight`,
//!   `maas_jobs{state}` (queued, running, waiting), `maas_live_workers`; and
//!   `maas_batches{state}` for unfinished batches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use maas_core::engine::Engine;
use maas_core::id::BatchId;
use maas_core::model::{BatchState, Event, EventKind};
use maas_core::names::Hostname;
use maas_core::ports::services::{Notifier, NotifyError};
use maas_core::ports::store::BatchListParams;
use maas_core::time::Timestamp;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide Prometheus recorder.
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets(&[0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0])
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// Records outbox events as metrics. Deliveries are at least once, so a redelivered event
/// may count twice (after a crash between delivery and acknowledgement).
#[derive(Default)]
pub struct MetricsNotifier {
    started: Mutex<HashMap<(BatchId, Hostname), Timestamp>>,
}

impl MetricsNotifier {
    fn ended(&self, e: &Event, host: &Hostname, outcome: &'static str) {
        metrics::counter!("maas_host_runs_total", "outcome" => outcome).increment(1);
        let began = self.started.lock().unwrap_or_else(|p| p.into_inner()).remove(&(e.batch_id, host.clone()));
        if let Some(began) = began {
            let seconds = (e.at.as_millis() - began.as_millis()).max(0) as f64 / 1000.0;
            metrics::histogram!("maas_host_run_seconds", "outcome" => outcome).record(seconds);
        }
    }
}

#[async_trait]
impl Notifier for MetricsNotifier {
    async fn deliver(&self, events: &[Event]) -> Result<(), NotifyError> {
        for e in events {
            metrics::counter!("maas_events_total", "kind" => e.kind.name()).increment(1);
            match &e.kind {
                EventKind::BatchAccepted { action, .. } => {
                    metrics::counter!("maas_batches_accepted_total", "action" => action.kind().as_str()).increment(1)
                }
                EventKind::HostStarted { host } => {
                    self.started.lock().unwrap_or_else(|p| p.into_inner()).insert((e.batch_id, host.clone()), e.at);
                }
                EventKind::HostSucceeded { host } => self.ended(e, host, "succeeded"),
                EventKind::HostFailed { host, .. } => self.ended(e, host, "failed"),
                EventKind::HostCancelled { host } => self.ended(e, host, "cancelled"),
                EventKind::StragglerFlagged { .. } => metrics::counter!("maas_stragglers_total").increment(1),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Refreshes the gauges from the engine every `every`, forever.
pub async fn refresh(engine: Engine, every: Duration) {
    loop {
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
        for state in [BatchState::Running, BatchState::Paused, BatchState::Cancelling] {
            let params = BatchListParams { states: vec![state], limit: 10_000, ..Default::default() };
            if let Ok(list) = engine.list_batches(params).await {
                metrics::gauge!("maas_batches", "state" => state.as_str()).set(list.len() as f64);
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Serves `/metrics` (Prometheus text format), `/healthz` (the process answers) and
/// `/readyz` (`ready` is set: the store is open and the API is serving) on `addr`.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    ready: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/healthz", get(|| std::future::ready("ok")))
        .route(
            "/readyz",
            get(move || {
                let ok = ready.load(Ordering::Relaxed);
                std::future::ready(if ok {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
