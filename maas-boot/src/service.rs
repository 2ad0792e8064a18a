//! The boot service's HTTP endpoint: boot scripts by MAC, image files, per-host
//! configuration, installer callbacks. Every answer to a booting machine is a script it can
//! act on: an unknown MAC boots its disk, a store that cannot answer gets "ask again".

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use maas_core::host::{Host, MacAddr};
use maas_core::id::HostRunId;
use maas_core::machine::TransitionError;
use maas_core::model::JobRecord;
use maas_core::netboot::{
    BootOffer, BootUrls, InstallReport, TemplateVars, decide_host_boot, ipxe_install_script, ipxe_local_disk_script,
    ipxe_retry_script, open_wait_for_token,
};
use maas_core::plan::StepKind;
use maas_core::ports::inventory::HostFilter;
use maas_core::ports::store::{JobListParams, StoreError};
use maas_engine::{Engine, EngineError};

use crate::catalog::{Catalog, Source};
use crate::provisioner::image_for;

/// How the boot service is reached and behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootServiceConfig {
    /// The base URL hosts reach it at (`http://10.0.0.5:8080`), put into scripts.
    pub public_url: String,
    /// How long a host waits before asking again when the store cannot answer.
    pub retry_secs: u32,
}

/// The boot service: cheap to clone, shareable by every connection.
#[derive(Clone)]
pub struct BootService {
    engine: Engine,
    catalog: Arc<Catalog>,
    urls: BootUrls,
    retry_secs: u32,
}

/// A store read failed: the machine is told to ask again.
struct Unanswerable(String);

impl From<StoreError> for Unanswerable {
    fn from(e: StoreError) -> Self {
        Unanswerable(e.to_string())
    }
}

impl BootService {
    /// Over `engine`'s store and inventory, serving `catalog`.
    pub fn new(engine: Engine, catalog: Arc<Catalog>, config: BootServiceConfig) -> Self {
        let base = config.public_url.trim_end_matches('/').to_string();
        BootService { engine, catalog, urls: BootUrls { base }, retry_secs: config.retry_secs.max(1) }
    }

    /// The routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/boot/{mac}", get(boot))
            .route("/images/{name}/{artifact}", get(image_file))
            .route("/config/{run}/{token}", get(config))
            .route("/callback/{token}", post(callback))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router()).with_graceful_shutdown(shutdown).await
    }

    /// The iPXE script for a machine booting with `mac` (as text from the URL).
    pub async fn script_for(&self, mac: &str) -> String {
        let Ok(mac) = MacAddr::parse(mac) else {
            tracing::warn!(mac, "boot: not a MAC address; local disk");
            return ipxe_local_disk_script("the request names no valid MAC address");
        };
        match self.offer(mac).await {
            Ok((host, BootOffer::Image(pending))) => match image_for(&self.catalog, &pending.image) {
                Ok(image) => {
                    tracing::info!(%mac, host = %host, image = %image.name, batch = %pending.batch_id, "boot: serving the image");
                    ipxe_install_script(&image.boot(&self.urls), &pending, &self.urls, &host)
                }
                Err(why) => {
                    tracing::error!(%mac, host = %host, "boot: {why}; local disk");
                    ipxe_local_disk_script(&why)
                }
            },
            Ok((host, BootOffer::LocalDisk { reason })) => {
                tracing::info!(%mac, host = %host, reason, "boot: local disk");
                ipxe_local_disk_script(&reason)
            }
            Err(Unanswerable(why)) => {
                tracing::warn!(%mac, error = %why, "boot: the store cannot answer; the host will ask again");
                ipxe_retry_script("the boot service cannot reach its store", self.retry_secs, &self.urls)
            }
        }
    }

    /// What `mac` is offered, with the host's name (or a placeholder) for the log.
    async fn offer(&self, mac: MacAddr) -> Result<(String, BootOffer), Unanswerable> {
        let found =
            self.engine.inventory().host_list(HostFilter { mac: Some(mac), limit: 1, ..Default::default() }).await?;
        let Some(host) = found.into_iter().next() else {
            return Ok(("?".into(), BootOffer::LocalDisk { reason: format!("unknown MAC {mac}") }));
        };
        let chain = self.chain_of(&host).await?;
        Ok((host.hostname.to_string(), decide_host_boot(host.state, chain.as_deref())))
    }

    /// The job chain of the host's active host run, if a batch holds it.
    async fn chain_of(&self, host: &Host) -> Result<Option<Vec<JobRecord>>, Unanswerable> {
        let store = self.engine.store();
        let claims = store.claim_get_many(std::slice::from_ref(&host.hostname)).await?;
        let Some(claim) = claims.into_iter().next() else { return Ok(None) };
        let chain =
            store.job_list(JobListParams { host_run_id: Some(claim.host_run_id), ..Default::default() }).await?;
        Ok(Some(chain))
    }

    /// The rendered configuration for the open waiting step of `run` with `token`.
    async fn render_config(&self, run: HostRunId, token: &str) -> Result<Option<String>, Unanswerable> {
        let store = self.engine.store();
        let chain = store.job_list(JobListParams { host_run_id: Some(run), ..Default::default() }).await?;
        let Some(wait) = open_wait_for_token(&chain, token) else { return Ok(None) };
        let Some(image) = chain
            .iter()
            .filter(|j| j.kind == StepKind::SetBootPxe && j.position < wait.position)
            .max_by_key(|j| j.position)
            .and_then(|j| j.params.boot.as_ref())
            .and_then(|b| image_for(&self.catalog, b).ok())
        else {
            return Ok(None);
        };
        let Some(template) = &image.template else { return Ok(None) };
        let host = self.engine.inventory().host_get_many(std::slice::from_ref(&wait.hostname)).await?;
        let Some(host) = host.into_iter().next() else { return Ok(None) };
        let params = match store.batch_get(wait.batch_id).await? {
            Some(b) => b.spec.params.clone(),
            None => BTreeMap::new(),
        };
        let first_boot = chain
            .iter()
            .find(|j| j.kind == StepKind::AwaitFirstBoot && j.position > wait.position)
            .and_then(|j| j.wait_token.as_deref())
            .map(|t| self.urls.callback(t))
            .unwrap_or_default();
        let vars = TemplateVars {
            hostname: host.hostname.to_string(),
            site: host.site.to_string(),
            rack: host.rack.as_ref().map(|r| r.to_string()).unwrap_or_default(),
            sku: host.sku.to_string(),
            mac: host.mac.map(|m| m.to_string()).unwrap_or_default(),
            batch_id: wait.batch_id.to_string(),
            image: image.name.clone(),
            callback_url: self.urls.callback(token),
            first_boot_url: first_boot,
            config_url: self.urls.config(&run.to_string(), token),
            boot_url: self.urls.boot_script(),
        };
        // Parameters were checked at submit; a template changed since then renders the
        // missing ones empty rather than strand an installing host.
        Ok(Some(template.render(&vars, &params).unwrap_or_else(|e| {
            tracing::warn!(run = %run, "config: {e}");
            template.render(&vars, &BTreeMap::new()).unwrap_or_default()
        })))
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn boot(State(svc): State<BootService>, Path(mac): Path<String>) -> Response {
    text(StatusCode::OK, svc.script_for(&mac).await)
}

async fn image_file(State(svc): State<BootService>, Path((name, artifact)): Path<(String, String)>) -> Response {
    let Some(a) = svc.catalog.get(&name).and_then(|i| i.artifact(&artifact)) else {
        return text(StatusCode::NOT_FOUND, format!("no artifact {artifact:?} of image {name:?}\n"));
    };
    let Source::File(path) = &a.source else {
        return text(StatusCode::NOT_FOUND, format!("{name}/{artifact} is served from its URL, not here\n"));
    };
    match tokio::fs::File::open(path).await {
        Ok(file) => {
            let len = file.metadata().await.map(|m| m.len()).ok();
            let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 16));
            let mut response =
                (StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
            if let Some(len) = len {
                response.headers_mut().insert(header::CONTENT_LENGTH, len.into());
            }
            response
        }
        Err(e) => {
            tracing::error!(image = %name, artifact, path = %path.display(), "image file: {e}");
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{name}/{artifact} cannot be read now\n"))
        }
    }
}

async fn config(State(svc): State<BootService>, Path((run, token)): Path<(String, String)>) -> Response {
    let Ok(run) = run.parse::<HostRunId>() else {
        return text(StatusCode::NOT_FOUND, "no such configuration\n".into());
    };
    match svc.render_config(run, &token).await {
        Ok(Some(body)) => text(StatusCode::OK, body),
        Ok(None) => {
            text(StatusCode::NOT_FOUND, "no such configuration (unknown or ended step, or no template)\n".into())
        }
        Err(Unanswerable(why)) => {
            tracing::warn!(error = %why, "config: the store cannot answer");
            text(StatusCode::SERVICE_UNAVAILABLE, "the boot service cannot reach its store; retry\n".into())
        }
    }
}

async fn callback(State(svc): State<BootService>, Path(token): Path<String>, body: Bytes) -> Response {
    // Any content type: busybox `wget --post-data` sends form encoding for a JSON body.
    let report: InstallReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let message = format!(
                "the body must be JSON like {{\"succeeded\": true}} or {{\"succeeded\": false, \"error\": \"...\", \"log\": \"...\"}}: {e}"
            );
            return json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": message }));
        }
    };
    match svc.engine.report_wait_result(&token, report.outcome()).await {
        Ok(job) => {
            tracing::info!(host = %job.hostname, step = %job.kind, succeeded = report.succeeded, wiped = ?report.wiped, "callback accepted");
            json(
                StatusCode::OK,
                serde_json::json!({ "job_id": job.id.to_string(), "step": job.kind.as_str(), "state": job.state.as_str() }),
            )
        }
        Err(EngineError::Store(StoreError::Transition(TransitionError::WrongToken)))
        | Err(EngineError::Store(StoreError::NotFound { .. })) => {
            tracing::warn!("callback with an unknown, used or expired token refused");
            json(StatusCode::NOT_FOUND, serde_json::json!({ "error": "unknown, used or expired token" }))
        }
        Err(EngineError::Store(StoreError::Transition(t))) => {
            json(StatusCode::CONFLICT, serde_json::json!({ "error": t.to_string() }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "callback: the store cannot answer");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "error": "the boot service cannot record it now; retry" }),
            )
        }
    }
}
