//! `RedfishPowerDriver`: maas's `PowerDriver` over DMTF Redfish.
//!
//! - One HTTPS connection and one login per BMC, reused across calls: a `SessionService`
//!   session (its `X-Auth-Token`) when the service offers one, HTTP basic auth when it
//!   does not or refuses to make sessions. A session the BMC forgot (a 401) is made again
//!   once; sessions are deleted by [`RedfishPowerDriver::close_all`].
//! - Refused credentials are not tried again for `auth_holdoff` unless they change (BMCs
//!   lock accounts after a few failures: no retry storm).
//! - Calls to one BMC are serialized with a minimum interval; a global limit bounds the
//!   calls in flight; every call has a deadline, and lost or busy answers are retried
//!   with backoff inside it — always for reads and idempotent requests, for restarts and
//!   cycles only when the request surely was not sent.
//! - Power: `ComputerSystem.Reset` with a `ResetType` the system advertises
//!   (`ResetType@Redfish.AllowableValues`); a cycle where `PowerCycle` is not offered is
//!   `ForceOff`, the off state read back, then `On`. Asynchronous operations (202 and a
//!   task monitor) are followed to their end.
//! - Boot override: `Boot.BootSourceOverrideTarget` (Pxe, Hdd, Cd, None),
//!   `BootSourceOverrideEnabled` (Once, Continuous, Disabled) and optionally
//!   `BootSourceOverrideMode` (UEFI, Legacy), sent with `If-Match` when the service gives
//!   an ETag, and again with a fresh one if it says the ETag is stale (412, 428).
//! - Virtual media: `VirtualMedia.InsertMedia`/`EjectMedia` on the system's (or its
//!   manager's) CD/DVD device, read back to verify.
//! - TLS per host as the inventory says ([`maas_core::host::BmcTls`]); `insecure` hosts
//!   are logged at every connection. Credentials come from `Secrets`; no error or log
//!   carries them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use hyper::{Method, StatusCode};
use maas_core::host::{BmcEndpoint, BmcTls};
use maas_core::ports::power::{BootDevice, PowerDriver, PowerError, PowerOp, PowerReport, PowerState, ProbeReport};
use maas_core::ports::services::Secrets;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::http::{Answer, Call, Connection, Failure};
use crate::tls::{Trust, TrustConfig, TrustError};

/// The boot mode sent with a boot override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    /// `UEFI`.
    Uefi,
    /// `Legacy` (BIOS).
    Legacy,
}

/// How the driver talks to Redfish services.
#[derive(Debug, Clone)]
pub struct RedfishConfig {
    /// One HTTP exchange's timeout (connecting included).
    pub request_timeout: Duration,
    /// The whole call's deadline: retries, task monitors and a cycle's off-then-on.
    pub deadline: Duration,
    /// Attempts after the first for retryable failures.
    pub retries: u32,
    /// The first retry's backoff (doubling after).
    pub backoff: Duration,
    /// BMC calls in flight at once, across all BMCs.
    pub max_concurrent: usize,
    /// The least time between two requests to one BMC.
    pub min_interval: Duration,
    /// How often a task monitor, or a cycle's off state, is polled.
    pub poll_interval: Duration,
    /// Log in with a `SessionService` session when the service offers one (else basic
    /// auth on every request).
    pub sessions: bool,
    /// The boot mode to send with boot overrides (`None`: leave the system's).
    pub boot_mode: Option<BootMode>,
    /// How long refused credentials are not tried again (unless they change).
    pub auth_holdoff: Duration,
    /// Whom BMC certificates chain to.
    pub trust: TrustConfig,
}

impl Default for RedfishConfig {
    fn default() -> Self {
        RedfishConfig {
            request_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
            retries: 3,
            backoff: Duration::from_millis(500),
            max_concurrent: 64,
            min_interval: Duration::from_millis(20),
            poll_interval: Duration::from_millis(500),
            sessions: true,
            boot_mode: None,
            auth_holdoff: Duration::from_secs(60),
            trust: TrustConfig::default(),
        }
    }
}

/// How the driver logs in to one BMC.
enum Auth {
    /// A session: its token and where to delete it.
    Session { token: String, location: Option<String> },
    /// Basic auth: the header value.
    Basic(String),
}

/// What was learnt about a service (paths, reset types), kept while it answers.
#[derive(Debug, Clone, Default)]
struct Service {
    /// `SessionService/Sessions`, if offered.
    sessions: Option<String>,
    /// The `Systems` collection.
    systems: String,
    /// The version the root reports.
    version: Option<String>,
    /// The `ComputerSystem` path of each system id asked for (`None`: the BMC's only one).
    system_paths: HashMap<Option<String>, String>,
}

#[derive(Default)]
struct Slot {
    /// The BMC as last addressed (to delete its session on close).
    endpoint: Option<BmcEndpoint>,
    connection: Option<Connection>,
    auth: Option<Auth>,
    service: Option<Service>,
    /// Each resource's ETag from its last read, by path.
    etags: HashMap<String, String>,
    last_request: Option<Instant>,
    /// Credentials refused: when, and a digest of them.
    refused: Option<(Instant, [u8; 32])>,
    /// A digest of the credentials the current login used (what a 401 refuses).
    login_digest: Option<[u8; 32]>,
}

/// Whether a request may be sent again after an answer was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    Safe,
    OnlyUnsent,
}

/// The Redfish `PowerDriver`.
pub struct RedfishPowerDriver {
    config: RedfishConfig,
    secrets: Arc<dyn Secrets>,
    trust: Trust,
    permits: Arc<Semaphore>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl std::fmt::Debug for RedfishPowerDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedfishPowerDriver").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The key a slot is kept under: one per BMC address (several systems behind one BMC share
/// its connection and login).
fn slot_key(bmc: &BmcEndpoint) -> String {
    format!("{}|{}", bmc.key(), bmc.tls.spec())
}

impl RedfishPowerDriver {
    /// A driver resolving credentials through `secrets`; loads every CA bundle now and
    /// refuses one it cannot read, naming it.
    pub fn new(secrets: Arc<dyn Secrets>, config: RedfishConfig) -> Result<Self, TrustError> {
        if config.max_concurrent == 0 {
            return Err(TrustError("max_concurrent must be at least 1".into()));
        }
        Ok(RedfishPowerDriver {
            trust: Trust::load(&config.trust)?,
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            secrets,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// Sessions open now (one per BMC at most).
    pub async fn open_sessions(&self) -> usize {
        let mut n = 0;
        for slot in self.all_slots() {
            n += usize::from(matches!(slot.lock().await.auth, Some(Auth::Session { .. })));
        }
        n
    }

    /// Deletes every session and closes every connection (call on shutdown: BMCs allow
    /// few sessions).
    pub async fn close_all(&self) {
        for slot in self.all_slots() {
            let mut slot = slot.lock_owned().await;
            let (Some(Auth::Session { token, location: Some(location) }), Some(bmc)) =
                (slot.auth.take(), slot.endpoint.clone())
            else {
                slot.connection = None;
                continue;
            };
            // On the open connection, or a new one (many BMCs close theirs after each answer).
            let deadline = Instant::now() + self.config.request_timeout;
            let mut session = Session { driver: self, bmc: &bmc, slot, deadline };
            let call = Call { method: Method::DELETE, path: &location, headers: Vec::new(), body: None };
            if let Err(e) = session.exchange(&call, Some(("X-Auth-Token", token))).await {
                tracing::warn!(bmc = %bmc.key(), error = %e.error(), "the Redfish session could not be deleted");
            }
            session.slot.connection = None;
            session.slot.service = None;
        }
    }

    /// The image URL the BMC's virtual CD/DVD holds, if any (what an operator, or a test,
    /// checks after an install).
    pub async fn media_inserted(&self, bmc: &BmcEndpoint) -> Result<Option<String>, PowerError> {
        self.with_bmc(bmc, async |s| {
            let devices = s.cd_devices().await?;
            Ok(devices
                .iter()
                .find(|(_, d)| d["Inserted"].as_bool() == Some(true))
                .map(|(_, d)| d["Image"].as_str().unwrap_or_default().to_string()))
        })
        .await
    }

    fn all_slots(&self) -> Vec<Arc<tokio::sync::Mutex<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Runs `op` on the BMC's slot under the global limit, the per-BMC serialization and
    /// the call's deadline.
    async fn with_bmc<T>(
        &self,
        bmc: &BmcEndpoint,
        op: impl AsyncFnOnce(&mut Session<'_>) -> Result<T, PowerError>,
    ) -> Result<T, PowerError> {
        let deadline = Instant::now() + self.config.deadline;
        let timed_out = || PowerError::Timeout { bmc: bmc.key(), millis: self.config.deadline.as_millis() as u64 };
        let _permit = tokio::time::timeout_at(deadline.into(), self.permits.acquire())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| PowerError::Unsupported("the driver is shut down".into()))?;
        let slot = self.slots.lock().unwrap_or_else(|p| p.into_inner()).entry(slot_key(bmc)).or_default().clone();
        let mut slot = tokio::time::timeout_at(deadline.into(), slot.lock_owned()).await.map_err(|_| timed_out())?;
        if slot.endpoint.is_none() {
            slot.endpoint = Some(bmc.clone());
        }
        let mut session = Session { driver: self, bmc, slot, deadline };
        match tokio::time::timeout_at(deadline.into(), op(&mut session)).await {
            Ok(result) => result,
            Err(_) => {
                // Whatever was in flight is abandoned with its connection.
                session.slot.connection = None;
                Err(timed_out())
            }
        }
    }
}

/// One call's hold on a BMC.
struct Session<'a> {
    driver: &'a RedfishPowerDriver,
    bmc: &'a BmcEndpoint,
    slot: tokio::sync::OwnedMutexGuard<Slot>,
    deadline: Instant,
}

/// A `PowerError` for an answer that is not a success.
fn refusal(bmc: &BmcEndpoint, answer: &Answer) -> PowerError {
    let key = bmc.key();
    let detail = answer.message();
    match answer.status {
        StatusCode::UNAUTHORIZED => PowerError::Authentication { bmc: key },
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => PowerError::Busy { bmc: key, detail },
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => {
            PowerError::Unsupported(format!("BMC {key}: {detail}"))
        }
        status => PowerError::Refused { bmc: key, status: status.as_u16(), detail },
    }
}

fn credentials_digest(username: &str, password: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(username.as_bytes());
    ctx.update(&[0]);
    ctx.update(password);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn link(value: &Value) -> Option<String> {
    value["@odata.id"].as_str().map(str::to_string)
}

fn power_state(bmc: &BmcEndpoint, system: &Value) -> Result<PowerState, PowerError> {
    match system["PowerState"].as_str() {
        Some("On" | "PoweringOn" | "Paused") => Ok(PowerState::On),
        Some("Off" | "PoweringOff") => Ok(PowerState::Off),
        other => Err(PowerError::Unsupported(format!("BMC {}: the system reports PowerState {other:?}", bmc.key()))),
    }
}

/// What to send for a power command, given the reset types the system offers (`None`:
/// it does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResetPlan {
    /// One `ResetType`.
    One(&'static str),
    /// `ForceOff`, the off state read back, then this `ResetType` (a cycle on a system
    /// without `PowerCycle`).
    OffThenOn(&'static str),
}

pub(crate) fn reset_plan(op: PowerOp, allowed: Option<&[String]>) -> Result<ResetPlan, String> {
    let offered = |t: &str| allowed.is_none_or(|a| a.iter().any(|x| x == t));
    let first = |candidates: &[&'static str]| candidates.iter().copied().find(|t| offered(t));
    let on = first(&["On", "ForceOn"]);
    let plan = match op {
        PowerOp::On => on.map(ResetPlan::One),
        PowerOp::Off => first(&["ForceOff"]).map(ResetPlan::One),
        PowerOp::SoftOff => first(&["GracefulShutdown"]).map(ResetPlan::One),
        PowerOp::Reset => first(&["ForceRestart", "PowerCycle"])
            .map(ResetPlan::One)
            .or_else(|| on.filter(|_| offered("ForceOff")).map(ResetPlan::OffThenOn)),
        PowerOp::Cycle => first(&["PowerCycle"])
            .map(ResetPlan::One)
            .or_else(|| on.filter(|_| offered("ForceOff")).map(ResetPlan::OffThenOn)),
    };
    plan.ok_or_else(|| {
        format!("no reset type for {op}: the system offers {}", allowed.map(|a| a.join(", ")).unwrap_or_default())
    })
}

impl Session<'_> {
    fn key(&self) -> String {
        self.bmc.key()
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// How long to wait before attempt `attempt + 1` after `error` (`wait`: what the BMC
    /// asked for, else doubling from the configured backoff); `None` when it is not worth
    /// another attempt (not retryable, retries used up, or past the deadline).
    fn backoff(&self, error: &PowerError, attempt: u32, wait: Option<Duration>) -> Option<Duration> {
        let config = &self.driver.config;
        let backoff = wait.unwrap_or(config.backoff * 2u32.saturating_pow(attempt));
        (error.is_retryable() && attempt < config.retries && backoff < self.left()).then_some(backoff)
    }

    /// One exchange: paced, on the open connection or a new one (a closed connection is
    /// reopened once; nothing was sent on it).
    async fn exchange(&mut self, call: &Call<'_>, auth: Option<(&'static str, String)>) -> Result<Answer, Failure> {
        let config = &self.driver.config;
        if let Some(last) = self.slot.last_request {
            tokio::time::sleep_until((last + config.min_interval).into()).await;
        }
        let timeout = config.request_timeout.min(self.left());
        for reopened in [false, true] {
            let reused = self.slot.connection.as_ref().is_some_and(Connection::is_open);
            if !reused {
                let tls = self
                    .driver
                    .trust
                    .client(&self.bmc.tls)
                    .map_err(|detail| Failure::NotSent(PowerError::Certificate { bmc: self.key(), detail }))?;
                if self.bmc.tls == BmcTls::Insecure {
                    tracing::warn!(bmc = %self.key(), "connecting without checking the BMC's TLS certificate (tls = insecure)");
                }
                self.slot.connection = Some(Connection::open(self.bmc, tls, timeout).await.map_err(Failure::NotSent)?);
            }
            let Some(connection) = self.slot.connection.as_mut() else { continue };
            let auth = auth.as_ref().map(|(name, value)| (*name, value.as_str()));
            let result = connection.send(self.bmc, call, auth, timeout).await;
            self.slot.last_request = Some(Instant::now());
            match result {
                // A kept connection the BMC closed meanwhile: once more on a new one.
                Err(Failure::NotSent(_)) if reused && !reopened => self.slot.connection = None,
                Err(e) => {
                    self.slot.connection = None;
                    return Err(e);
                }
                Ok(answer) => return Ok(answer),
            }
        }
        Err(Failure::NotSent(PowerError::Unreachable { bmc: self.key(), detail: "the connection closed".into() }))
    }

    /// The service root (no login needed): the sessions and systems paths.
    async fn service(&mut self) -> Result<Service, PowerError> {
        if let Some(s) = &self.slot.service {
            return Ok(s.clone());
        }
        // Unauthenticated (the root needs no login), retried like any read.
        let mut attempt = 0u32;
        let root = loop {
            let error = match self.exchange(&Call::get("/redfish/v1/"), None).await {
                Ok(answer) if answer.status.is_success() => break answer,
                Ok(answer) => refusal(self.bmc, &answer),
                Err(failure) => failure.error(),
            };
            let Some(backoff) = self.backoff(&error, attempt, None) else { return Err(error) };
            attempt += 1;
            tokio::time::sleep(backoff).await;
        };
        let service = Service {
            sessions: link(&root.body["Links"]["Sessions"]),
            systems: link(&root.body["Systems"]).unwrap_or_else(|| "/redfish/v1/Systems".into()),
            version: root.body["RedfishVersion"].as_str().map(str::to_string),
            system_paths: HashMap::new(),
        };
        self.slot.service = Some(service.clone());
        Ok(service)
    }

    /// Logs in if not logged in: a session when offered (and configured), else basic.
    async fn login(&mut self) -> Result<(&'static str, String), PowerError> {
        if let Some(auth) = &self.slot.auth {
            return Ok(match auth {
                Auth::Session { token, .. } => ("X-Auth-Token", token.clone()),
                Auth::Basic(header) => ("Authorization", header.clone()),
            });
        }
        let credentials = self
            .driver
            .secrets
            .credentials(&self.bmc.credentials_ref)
            .await
            .map_err(|e| PowerError::Unsupported(format!("BMC {}: {e}", self.key())))?;
        let digest = credentials_digest(&credentials.username, credentials.password());
        if let Some((when, refused)) = self.slot.refused
            && refused == digest
            && when.elapsed() < self.driver.config.auth_holdoff
        {
            // The same credentials were refused moments ago: asking again would only
            // bring the account closer to a lockout.
            return Err(PowerError::Authentication { bmc: self.key() });
        }
        let service = self.service().await?;
        if let (true, Some(sessions)) = (self.driver.config.sessions, service.sessions) {
            let body = json!({"UserName": credentials.username,
                              "Password": String::from_utf8_lossy(credentials.password())});
            let answer =
                self.exchange(&Call::with(Method::POST, &sessions, body), None).await.map_err(Failure::error)?;
            match answer.status {
                s if s.is_success() && answer.token.is_some() => {
                    let token = answer.token.clone().unwrap_or_default();
                    self.slot.auth = Some(Auth::Session { token: token.clone(), location: answer.location });
                    self.slot.refused = None;
                    self.slot.login_digest = Some(digest);
                    return Ok(("X-Auth-Token", token));
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    self.slot.refused = Some((Instant::now(), digest));
                    return Err(PowerError::Authentication { bmc: self.key() });
                }
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    return Err(refusal(self.bmc, &answer));
                }
                // No sessions after all (or none for this account): basic auth.
                _ => tracing::info!(bmc = %self.key(), status = %answer.status, "no Redfish session; using basic auth"),
            }
        }
        let mut pair = credentials.username.clone().into_bytes();
        pair.push(b':');
        pair.extend_from_slice(credentials.password());
        let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(&pair));
        pair.iter_mut().for_each(|b| *b = 0);
        self.slot.auth = Some(Auth::Basic(header.clone()));
        self.slot.login_digest = Some(digest);
        Ok(("Authorization", header))
    }

    /// Sends `call` logged in (when `authenticated`), retrying within the deadline:
    /// lost answers per `resend`, busy answers always; a forgotten session is made
    /// again once. Returns any answer but 401, 429 and 503.
    async fn request(&mut self, call: &Call<'_>, resend: Resend, authenticated: bool) -> Result<Answer, PowerError> {
        let mut attempt = 0u32;
        let mut relogged = false;
        loop {
            let auth = if authenticated { Some(self.login().await?) } else { None };
            let session = matches!(self.slot.auth, Some(Auth::Session { .. }));
            let error = match self.exchange(call, auth).await {
                Ok(answer) if answer.status == StatusCode::UNAUTHORIZED && authenticated => {
                    self.slot.auth = None;
                    if session && !relogged {
                        // The BMC forgot the session (expired, reset): log in again once.
                        relogged = true;
                        continue;
                    }
                    if let Some(digest) = self.slot.login_digest.take() {
                        self.slot.refused = Some((Instant::now(), digest));
                    }
                    return Err(PowerError::Authentication { bmc: self.key() });
                }
                Ok(answer)
                    if matches!(answer.status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) =>
                {
                    let wait = answer.retry_after.map(Duration::from_secs);
                    (refusal(self.bmc, &answer), wait)
                }
                Ok(answer) => return Ok(answer),
                Err(Failure::NotSent(e)) => (e, None),
                Err(Failure::MaybeSent(e)) if resend == Resend::Safe => (e, None),
                Err(Failure::MaybeSent(e)) => return Err(e),
            };
            let (error, wait) = error;
            let Some(backoff) = self.backoff(&error, attempt, wait) else { return Err(error) };
            attempt += 1;
            tokio::time::sleep(backoff).await;
        }
    }

    /// [`Session::request`], wanting a success.
    async fn checked(&mut self, call: &Call<'_>, resend: Resend, authenticated: bool) -> Result<Answer, PowerError> {
        let answer = self.request(call, resend, authenticated).await?;
        if answer.status.is_success() { Ok(answer) } else { Err(refusal(self.bmc, &answer)) }
    }

    /// This host's `ComputerSystem` path: the inventory's system id, or the BMC's only
    /// system.
    async fn system_path(&mut self) -> Result<String, PowerError> {
        let service = self.service().await?;
        if let Some(path) = service.system_paths.get(&self.bmc.system_id) {
            return Ok(path.clone());
        }
        let path = match &self.bmc.system_id {
            Some(id) => format!("{}/{id}", service.systems.trim_end_matches('/')),
            None => {
                let collection = self.checked(&Call::get(&service.systems), Resend::Safe, true).await?;
                let members: Vec<String> =
                    collection.body["Members"].as_array().into_iter().flatten().filter_map(link).collect();
                match members.as_slice() {
                    [only] => only.clone(),
                    [] => return Err(PowerError::Unsupported(format!("BMC {}: it manages no system", self.key()))),
                    many => {
                        let ids: Vec<&str> = many.iter().filter_map(|m| m.rsplit('/').next()).collect();
                        return Err(PowerError::Unsupported(format!(
                            "BMC {} manages {} systems ({}): set the host's redfish_system_id",
                            self.key(),
                            many.len(),
                            ids.join(", ")
                        )));
                    }
                }
            }
        };
        if let Some(s) = self.slot.service.as_mut() {
            s.system_paths.insert(self.bmc.system_id.clone(), path.clone());
        }
        Ok(path)
    }

    /// GETs `path` and keeps its ETag for the next change to it.
    async fn read(&mut self, path: &str) -> Result<Answer, PowerError> {
        let answer = self.request(&Call::get(path), Resend::Safe, true).await?;
        if answer.status.is_success() {
            match answer.etag.clone().or_else(|| answer.body["@odata.etag"].as_str().map(str::to_string)) {
                Some(tag) => self.slot.etags.insert(path.to_string(), tag),
                None => self.slot.etags.remove(path),
            };
        }
        Ok(answer)
    }

    /// Reads this host's system.
    async fn system(&mut self) -> Result<(String, Value), PowerError> {
        let path = self.system_path().await?;
        let answer = self.read(&path).await?;
        if answer.status == StatusCode::NOT_FOUND {
            if let Some(s) = self.slot.service.as_mut() {
                s.system_paths.remove(&self.bmc.system_id);
            }
            return Err(PowerError::Refused {
                bmc: self.key(),
                status: 404,
                detail: format!("no system at {path} (check the host's redfish_system_id)"),
            });
        }
        if !answer.status.is_success() {
            return Err(refusal(self.bmc, &answer));
        }
        Ok((path, answer.body))
    }

    /// Follows a 202's task monitor until the task ends, within the deadline.
    async fn follow(&mut self, answer: Answer) -> Result<(), PowerError> {
        let mut answer = answer;
        while answer.status == StatusCode::ACCEPTED {
            let Some(monitor) = answer.location.clone() else { return Ok(()) };
            tokio::time::sleep(self.driver.config.poll_interval.min(self.left())).await;
            answer = self.request(&Call::get(&monitor), Resend::Safe, true).await?;
            if answer.status == StatusCode::NOT_FOUND {
                // Monitors may go away once their task is done.
                return Ok(());
            }
            if answer.status != StatusCode::ACCEPTED && !answer.status.is_success() {
                return Err(refusal(self.bmc, &answer));
            }
            if answer.location.is_none() && answer.status == StatusCode::ACCEPTED {
                answer.location = Some(monitor);
            }
        }
        match answer.body["TaskState"].as_str() {
            Some(state @ ("Exception" | "Killed" | "Cancelled")) => Err(PowerError::Refused {
                bmc: self.key(),
                status: answer.status.as_u16(),
                detail: format!(
                    "the task ended {state}: {}",
                    answer.body["Messages"][0]["Message"].as_str().unwrap_or("no message")
                ),
            }),
            _ => Ok(()),
        }
    }

    /// POSTs an action (not resent once it may have been sent, unless `resend`) and
    /// follows its task.
    async fn act(&mut self, target: &str, body: Value, resend: Resend) -> Result<(), PowerError> {
        let answer = self.checked(&Call::with(Method::POST, target, body), resend, true).await?;
        self.follow(answer).await
    }

    /// PATCHes a resource with `If-Match` when an ETag is known, and again with a fresh
    /// one when the service says it is stale or required.
    async fn patch(&mut self, path: &str, body: Value) -> Result<(), PowerError> {
        for fresh in [false, true] {
            let mut call = Call::with(Method::PATCH, path, body.clone());
            if let Some(etag) = self.slot.etags.get(path).cloned() {
                call.headers.push(("If-Match", etag));
            }
            let answer = self.request(&call, Resend::Safe, true).await?;
            match answer.status {
                StatusCode::PRECONDITION_FAILED | StatusCode::PRECONDITION_REQUIRED if !fresh => {
                    self.read(path).await?;
                }
                s if s.is_success() => return self.follow(answer).await,
                _ => return Err(refusal(self.bmc, &answer)),
            }
        }
        Err(PowerError::Refused { bmc: self.key(), status: 412, detail: "the ETag went stale twice".into() })
    }

    async fn reset(&mut self, system: &Value, reset_type: &str, resend: Resend) -> Result<(), PowerError> {
        let action = &system["Actions"]["#ComputerSystem.Reset"];
        let target = action["target"]
            .as_str()
            .ok_or_else(|| PowerError::Unsupported(format!("BMC {}: the system offers no Reset action", self.key())))?
            .to_string();
        self.act(&target, json!({"ResetType": reset_type}), resend).await
    }

    /// Polls the power state until `target`, within the deadline.
    async fn await_state(&mut self, target: PowerState) -> Result<(), PowerError> {
        loop {
            let (_, system) = self.system().await?;
            let state = power_state(self.bmc, &system)?;
            if state == target {
                return Ok(());
            }
            let interval = self.driver.config.poll_interval;
            if self.left() <= interval {
                return Err(PowerError::Timeout {
                    bmc: self.key(),
                    millis: self.driver.config.deadline.as_millis() as u64,
                });
            }
            tokio::time::sleep(interval).await;
        }
    }

    async fn power(&mut self, op: PowerOp) -> Result<PowerReport, PowerError> {
        let (_, system) = self.system().await?;
        let before = power_state(self.bmc, &system)?;
        let Some(command) = op.command_for(before) else { return Ok(PowerReport { before, sent: None }) };
        let allowed: Option<Vec<String>> =
            system["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect());
        let plan = reset_plan(command, allowed.as_deref())
            .map_err(|e| PowerError::Unsupported(format!("BMC {}: {e}", self.key())))?;
        let resend = match command {
            PowerOp::On | PowerOp::Off => Resend::Safe,
            _ => Resend::OnlyUnsent,
        };
        match plan {
            ResetPlan::One(reset_type) => self.reset(&system, reset_type, resend).await?,
            ResetPlan::OffThenOn(on) => {
                tracing::debug!(bmc = %self.key(), "no PowerCycle offered: ForceOff, then {on}");
                self.reset(&system, "ForceOff", Resend::Safe).await?;
                self.await_state(PowerState::Off).await?;
                self.reset(&system, on, Resend::Safe).await?;
            }
        }
        Ok(PowerReport { before, sent: Some(command) })
    }

    async fn set_boot(&mut self, device: BootDevice, persistent: bool) -> Result<(), PowerError> {
        let (path, system) = self.system().await?;
        let target = match device {
            BootDevice::Pxe => "Pxe",
            BootDevice::Disk => "Hdd",
            BootDevice::Cd => "Cd",
            BootDevice::Default => "None",
        };
        let allowed = system["Boot"]["BootSourceOverrideTarget@Redfish.AllowableValues"].as_array();
        if let Some(allowed) = allowed
            && device != BootDevice::Default
            && !allowed.iter().any(|v| v.as_str() == Some(target))
        {
            let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
            return Err(PowerError::Unsupported(format!(
                "BMC {}: boot override target {target} is not offered ({})",
                self.key(),
                names.join(", ")
            )));
        }
        let enabled = match (device, persistent) {
            (BootDevice::Default, _) => "Disabled",
            (_, true) => "Continuous",
            (_, false) => "Once",
        };
        let mut boot = json!({"BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": enabled});
        if let Some(mode) = self.driver.config.boot_mode {
            boot["BootSourceOverrideMode"] = json!(match mode {
                BootMode::Uefi => "UEFI",
                BootMode::Legacy => "Legacy",
            });
        }
        self.patch(&path, json!({"Boot": boot})).await
    }

    async fn boot_device(&mut self) -> Result<BootDevice, PowerError> {
        let (_, system) = self.system().await?;
        let boot = &system["Boot"];
        if boot["BootSourceOverrideEnabled"].as_str() == Some("Disabled") {
            return Ok(BootDevice::Default);
        }
        Ok(match boot["BootSourceOverrideTarget"].as_str() {
            Some("Pxe" | "UefiHttp") => BootDevice::Pxe,
            Some("Hdd") => BootDevice::Disk,
            Some("Cd") => BootDevice::Cd,
            _ => BootDevice::Default,
        })
    }

    async fn probe(&mut self) -> Result<ProbeReport, PowerError> {
        let (_, system) = self.system().await?;
        let power = power_state(self.bmc, &system)?;
        let version = self.slot.service.as_ref().and_then(|s| s.version.clone());
        let mut firmware = version.map(|v| format!("Redfish {v}"));
        if let Some(manager) = link(&system["Links"]["ManagedBy"][0])
            && let Ok(answer) = self.checked(&Call::get(&manager), Resend::Safe, true).await
            && let Some(fw) = answer.body["FirmwareVersion"].as_str()
        {
            firmware = Some(format!("{}, manager firmware {fw}", firmware.unwrap_or_default()));
        }
        Ok(ProbeReport { power, firmware })
    }

    /// The CD/DVD virtual media devices: the system's, else its manager's.
    async fn cd_devices(&mut self) -> Result<Vec<(String, Value)>, PowerError> {
        let (_, system) = self.system().await?;
        let collection = match link(&system["VirtualMedia"]) {
            Some(c) => Some(c),
            None => match link(&system["Links"]["ManagedBy"][0]) {
                Some(manager) => {
                    link(&self.checked(&Call::get(&manager), Resend::Safe, true).await?.body["VirtualMedia"])
                }
                None => None,
            },
        };
        let Some(collection) = collection else {
            return Err(PowerError::Unsupported(format!("BMC {}: no virtual media", self.key())));
        };
        let members: Vec<String> = self.checked(&Call::get(&collection), Resend::Safe, true).await?.body["Members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(link)
            .collect();
        let mut cds = Vec::new();
        for member in members {
            let device = self.checked(&Call::get(&member), Resend::Safe, true).await?.body;
            let types = device["MediaTypes"].as_array().into_iter().flatten().filter_map(Value::as_str);
            if types.clone().any(|t| t.eq_ignore_ascii_case("CD") || t.eq_ignore_ascii_case("DVD")) {
                cds.push((member, device));
            }
        }
        if cds.is_empty() {
            return Err(PowerError::Unsupported(format!("BMC {}: no CD/DVD virtual media device", self.key())));
        }
        Ok(cds)
    }

    async fn eject(&mut self, path: &str, device: &Value) -> Result<(), PowerError> {
        match device["Actions"]["#VirtualMedia.EjectMedia"]["target"].as_str() {
            Some(target) => self.act(target, json!({}), Resend::Safe).await,
            None => self.patch(path, json!({"Image": null, "Inserted": false})).await,
        }
    }

    async fn insert_media(&mut self, url: &str) -> Result<(), PowerError> {
        let (path, device) = self.cd_devices().await?.remove(0);
        let inserted = device["Inserted"].as_bool().unwrap_or(false);
        if inserted && device["Image"].as_str() == Some(url) {
            return Ok(());
        }
        if inserted {
            self.eject(&path, &device).await?;
        }
        match device["Actions"]["#VirtualMedia.InsertMedia"]["target"].as_str() {
            Some(target) => {
                let body = json!({"Image": url, "Inserted": true, "WriteProtected": true});
                self.act(target, body, Resend::Safe).await?
            }
            None => self.patch(&path, json!({"Image": url, "Inserted": true})).await?,
        }
        let now = self.checked(&Call::get(&path), Resend::Safe, true).await?.body;
        let name = url.rsplit('/').next().unwrap_or(url);
        let image_matches = now["Image"].as_str() == Some(url) || now["ImageName"].as_str() == Some(name);
        if now["Inserted"].as_bool() == Some(true) && image_matches {
            Ok(())
        } else {
            Err(PowerError::Refused {
                bmc: self.key(),
                status: 200,
                detail: format!(
                    "after InsertMedia the device reports Inserted {} and Image {}",
                    now["Inserted"], now["Image"]
                ),
            })
        }
    }

    async fn eject_media(&mut self) -> Result<(), PowerError> {
        for (path, device) in self.cd_devices().await? {
            if device["Inserted"].as_bool() != Some(true) {
                continue;
            }
            self.eject(&path, &device).await?;
            let now = self.checked(&Call::get(&path), Resend::Safe, true).await?.body;
            if now["Inserted"].as_bool() == Some(true) {
                return Err(PowerError::Refused {
                    bmc: self.key(),
                    status: 200,
                    detail: format!("after EjectMedia {path} still reports media inserted"),
                });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl PowerDriver for RedfishPowerDriver {
    async fn power_status(&self, bmc: &BmcEndpoint) -> Result<PowerState, PowerError> {
        self.with_bmc(bmc, async |s| {
            let (_, system) = s.system().await?;
            power_state(s.bmc, &system)
        })
        .await
    }

    async fn power(&self, bmc: &BmcEndpoint, op: PowerOp) -> Result<PowerReport, PowerError> {
        self.with_bmc(bmc, async |s| s.power(op).await).await
    }

    async fn set_boot_device(&self, bmc: &BmcEndpoint, device: BootDevice, persistent: bool) -> Result<(), PowerError> {
        self.with_bmc(bmc, async |s| s.set_boot(device, persistent).await).await
    }

    async fn boot_device(&self, bmc: &BmcEndpoint) -> Result<BootDevice, PowerError> {
        self.with_bmc(bmc, async |s| s.boot_device().await).await
    }

    async fn probe(&self, bmc: &BmcEndpoint) -> Result<ProbeReport, PowerError> {
        self.with_bmc(bmc, async |s| s.probe().await).await
    }

    async fn insert_media(&self, bmc: &BmcEndpoint, image_url: &str) -> Result<(), PowerError> {
        self.with_bmc(bmc, async |s| s.insert_media(image_url).await).await
    }

    async fn eject_media(&self, bmc: &BmcEndpoint) -> Result<(), PowerError> {
        self.with_bmc(bmc, async |s| s.eject_media().await).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(types: &[&str]) -> Vec<String> {
        types.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn reset_types_follow_what_the_system_offers() {
        // sushy-emulator's fake system: no PowerCycle.
        let sushy =
            offered(&["On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi", "ForceOn"]);
        assert_eq!(reset_plan(PowerOp::Cycle, Some(&sushy)), Ok(ResetPlan::OffThenOn("On")));
        assert_eq!(reset_plan(PowerOp::Reset, Some(&sushy)), Ok(ResetPlan::One("ForceRestart")));
        assert_eq!(reset_plan(PowerOp::SoftOff, Some(&sushy)), Ok(ResetPlan::One("GracefulShutdown")));
        let full = offered(&["On", "ForceOff", "PowerCycle"]);
        assert_eq!(reset_plan(PowerOp::Cycle, Some(&full)), Ok(ResetPlan::One("PowerCycle")));
        assert_eq!(reset_plan(PowerOp::Reset, Some(&full)), Ok(ResetPlan::One("PowerCycle")));
        assert_eq!(reset_plan(PowerOp::On, Some(&offered(&["ForceOn", "ForceOff"]))), Ok(ResetPlan::One("ForceOn")));
        // A system that says nothing gets the standard types.
        assert_eq!(reset_plan(PowerOp::Cycle, None), Ok(ResetPlan::One("PowerCycle")));
        let err = reset_plan(PowerOp::SoftOff, Some(&offered(&["On", "ForceOff"]))).unwrap_err();
        assert!(err.contains("offers On, ForceOff"), "{err}");
    }

    #[test]
    fn slot_keys_separate_tls_settings() {
        let a = BmcEndpoint::redfish("10.0.0.1", 8443, "c");
        let b = BmcEndpoint { tls: BmcTls::Insecure, ..a.clone() };
        assert_ne!(slot_key(&a), slot_key(&b));
        let c = BmcEndpoint { system_id: Some("2".into()), ..a.clone() };
        assert_eq!(slot_key(&a), slot_key(&c), "systems behind one BMC share its connection and login");
    }
}
