//! Real Redfish services on loopback for tests and benchmarks.
//!
//! - [`BmcPki`]: a throwaway CA and a BMC certificate for `127.0.0.1` (rcgen), written as
//!   PEM files, with the certificate's fingerprint for pinning.
//! - [`Sushy`]: `sushy-emulator` (sushy-tools, from PyPI; `./scripts/test` installs it in
//!   its virtualenv) with the fake system driver, over HTTPS, with or without basic auth.
//!   It has no `SessionService`, no ETags, no task monitors, no `PowerCycle`, and its
//!   power state changes 1 to 11 seconds after a reset.
//! - [`StandIn`]: a small Redfish service of our own for what the emulator does not do:
//!   sessions (which it can forget), ETags it requires on PATCH, resets answered 202
//!   with a task monitor, `PowerCycle`, a delay before every answer, request counters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use maas_core::host::{BmcEndpoint, BmcTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use serde_json::{Value, json};

/// The emulators' user name.
pub const USER: &str = "admin";
/// The emulators' password.
pub const PASSWORD: &str = "redfish-pass";

/// A throwaway CA and a BMC certificate issued by it for `127.0.0.1`.
pub struct BmcPki {
    /// The directory holding the PEM files.
    pub dir: PathBuf,
    /// The CA certificate (PEM file).
    pub ca_file: PathBuf,
    /// The BMC's certificate (PEM file).
    pub cert_file: PathBuf,
    /// The BMC's private key (PEM file).
    pub key_file: PathBuf,
    /// The BMC certificate's DER bytes.
    pub cert_der: Vec<u8>,
}

impl BmcPki {
    /// Makes the CA and certificate under `dir` (created).
    pub fn new(dir: &Path) -> Result<Self, String> {
        let fail = |e: &dyn std::fmt::Display| format!("making test certificates: {e}");
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(&e))?;
        ca.distinguished_name.push(DnType::CommonName, "maas test BMC CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(|e| fail(&e))?;
        let ca_pem = ca.self_signed(&ca_key).map_err(|e| fail(&e))?.pem();
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).map_err(|e| fail(&e))?;
        leaf.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().map_err(|e| fail(&e))?));
        leaf.distinguished_name.push(DnType::CommonName, "bmc");
        let key = KeyPair::generate().map_err(|e| fail(&e))?;
        let cert = leaf.signed_by(&key, &issuer).map_err(|e| fail(&e))?;
        let pki = BmcPki {
            dir: dir.to_path_buf(),
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("bmc.pem"),
            key_file: dir.join("bmc-key.pem"),
            cert_der: cert.der().to_vec(),
        };
        for (path, text) in [(&pki.ca_file, ca_pem), (&pki.cert_file, cert.pem()), (&pki.key_file, key.serialize_pem())]
        {
            std::fs::write(path, text).map_err(|e| fail(&e))?;
        }
        Ok(pki)
    }

    /// The BMC certificate's pin for the inventory (`sha256:...`).
    pub fn pin(&self) -> BmcTls {
        BmcTls::parse(&crate::tls::fingerprint(&self.cert_der)).unwrap_or(BmcTls::Verify)
    }
}

/// A free loopback TCP port (bound, then released).
pub fn free_port() -> Result<u16, String> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    socket.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// One `sushy-emulator` process with the fake driver; killed when dropped.
pub struct Sushy {
    /// Its HTTPS port on 127.0.0.1.
    pub port: u16,
    /// Its systems' ids (UUIDs), in order.
    pub systems: Vec<String>,
    /// Whether it asks for basic auth ([`USER`], [`PASSWORD`]).
    pub auth: bool,
    /// Its log file.
    pub log: PathBuf,
    child: Child,
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sushy {
    /// The `sushy-emulator` program: `$MAAS_SUSHY_EMULATOR`, else found on `PATH`.
    pub fn program() -> String {
        std::env::var("MAAS_SUSHY_EMULATOR").unwrap_or_else(|_| "sushy-emulator".into())
    }

    /// Starts an emulator with `systems` fake systems (powered off), serving HTTPS with
    /// `pki`'s certificate, asking for basic auth when `auth`; waits until it answers.
    pub fn start(pki: &BmcPki, systems: usize, auth: bool) -> Result<Sushy, String> {
        let port = free_port()?;
        let dir = pki.dir.join(format!("sushy-{port}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let ids: Vec<String> =
            (0..systems).map(|i| format!("00000000-0000-4000-8000-{:012}", port as usize * 1000 + i)).collect();
        let fake: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                json!({"uuid": id, "name": format!("fake-{port}-{i}"), "power_state": "Off",
                       "nics": [{"mac": format!("52:54:00:{:02x}:{:02x}:{:02x}", (port >> 8) & 0xff, port & 0xff, i), "ip": "10.0.0.1"}]})
            })
            .collect();
        let mut config = format!(
            "SUSHY_EMULATOR_FAKE_SYSTEMS = {fake}\nSUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\nSUSHY_EMULATOR_SSL_CERT = {cert:?}\nSUSHY_EMULATOR_SSL_KEY = {key:?}\n\
             SUSHY_EMULATOR_STATE_DIR = {state:?}\n",
            fake = serde_json::to_string(&fake)
                .map_err(|e| e.to_string())?
                .replace("false", "False")
                .replace("true", "True"),
            cert = pki.cert_file.display().to_string(),
            key = pki.key_file.display().to_string(),
            // Its own state: the fake driver keeps systems in a SQLite file, shared by
            // every emulator unless told otherwise.
            state = dir.join("state").display().to_string(),
        );
        if auth {
            // The emulator reads an htpasswd file of bcrypt hashes; bcrypt comes with it.
            let htpasswd = dir.join("htpasswd");
            config.push_str(&format!(
                "import bcrypt\nwith open({path:?}, 'w') as _f:\n    _f.write({USER:?} + ':' + \
                 bcrypt.hashpw({PASSWORD:?}.encode(), bcrypt.gensalt(4)).decode() + '\\n')\n\
                 SUSHY_EMULATOR_AUTH_FILE = {path:?}\n",
                path = htpasswd.display().to_string()
            ));
        }
        let config_file = dir.join("config.py");
        std::fs::write(&config_file, config).map_err(|e| e.to_string())?;
        let log = dir.join("emulator.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(Self::program())
            .args(["--fake", "--config"])
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                format!(
                    "starting {}: {e} (sushy-tools is installed by ./scripts/test into target/pyenv; \
                     activate it or set MAAS_SUSHY_EMULATOR)",
                    Self::program()
                )
            })?;
        let mut sushy = Sushy { port, systems: ids, auth, log, child };
        sushy.wait_ready()?;
        Ok(sushy)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!(
                    "sushy-emulator exited ({status}): {}",
                    log.chars().rev().take(2000).collect::<String>().chars().rev().collect::<String>()
                ));
            }
            if std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains("Running on")) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("sushy-emulator on port {} did not start within 60 s (log: {})", self.port, self.log.display()))
    }

    /// System `i`'s endpoint with `credentials_ref`, its certificate checked as `tls` says.
    pub fn endpoint(&self, i: usize, credentials_ref: &str, tls: BmcTls) -> BmcEndpoint {
        BmcEndpoint {
            system_id: (self.systems.len() > 1).then(|| self.systems[i].clone()),
            tls,
            ..BmcEndpoint::redfish("127.0.0.1", self.port, credentials_ref)
        }
    }

    /// The emulator's log so far (requests, resets).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A plain-HTTP file server on loopback for the files in `dir` (an ISO a BMC downloads as
/// virtual media); stops when the handle is dropped or aborted. Returns its base URL.
pub async fn serve_files(dir: PathBuf) -> Result<(String, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let dir = Arc::new(dir);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let dir = dir.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let dir = dir.clone();
                    async move {
                        let name = req.uri().path().trim_start_matches('/').to_string();
                        let found = (!name.contains("..") && !name.contains('/'))
                            .then(|| std::fs::read(dir.join(&name)).ok())
                            .flatten();
                        Ok::<_, std::convert::Infallible>(match found {
                            Some(bytes) => Response::new(Full::new(Bytes::from(bytes))),
                            None => error(StatusCode::NOT_FOUND, "no such file"),
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok((format!("http://{addr}"), task))
}

/// How the stand-in behaves.
#[derive(Debug, Clone)]
pub struct StandInConfig {
    /// Offer `SessionService` sessions.
    pub sessions: bool,
    /// Answer resets 202 with a task monitor that is polled this many times before done.
    pub task_polls: usize,
    /// Offer `PowerCycle`.
    pub power_cycle: bool,
    /// The first this many PATCHes find their ETag stale (another client changed the
    /// system in between).
    pub stale_etags: usize,
    /// Close the connection after every answer (as the emulator and many BMCs do).
    pub close_connections: bool,
    /// The first this many reads of the system answer 503 with `Retry-After: 1` (a BMC
    /// busy with another client).
    pub busy_reads: usize,
}

impl Default for StandInConfig {
    fn default() -> Self {
        StandInConfig {
            sessions: true,
            task_polls: 2,
            power_cycle: true,
            stale_etags: 0,
            busy_reads: 0,
            close_connections: false,
        }
    }
}

/// What the stand-in counts.
#[derive(Debug, Default)]
pub struct StandInCounters {
    /// Every request.
    pub requests: AtomicUsize,
    /// Sessions created.
    pub logins: AtomicUsize,
    /// Sessions deleted.
    pub logouts: AtomicUsize,
    /// 401 answers.
    pub unauthorized: AtomicUsize,
    /// PATCHes refused for a missing or stale ETag.
    pub etag_refusals: AtomicUsize,
    /// Task monitor polls.
    pub task_polls: AtomicUsize,
    /// Resets by type, in order.
    pub resets: Mutex<Vec<String>>,
}

#[derive(Default)]
struct StandInState {
    power_on: bool,
    boot_target: String,
    boot_enabled: String,
    etag: u64,
    sessions: HashMap<String, u64>,
    tasks: HashMap<u64, (usize, Option<bool>)>,
}

/// A minimal Redfish service with one system, over HTTPS; stops when dropped.
pub struct StandIn {
    /// Its address.
    pub addr: SocketAddr,
    /// What it counted.
    pub counters: Arc<StandInCounters>,
    delay_ms: Arc<AtomicU64>,
    state: Arc<Mutex<StandInState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    config: StandInConfig,
    counters: Arc<StandInCounters>,
    delay_ms: Arc<AtomicU64>,
    state: Arc<Mutex<StandInState>>,
    next: AtomicU64,
    stale: AtomicUsize,
    busy: AtomicUsize,
}

impl StandIn {
    /// Starts it on a free loopback port with `pki`'s certificate.
    pub async fn start(pki: &BmcPki, config: StandInConfig) -> Result<StandIn, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(&pki.cert_file).and_then(|c| c.collect()).map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::from_pem_file(&pki.key_file).map_err(|e| e.to_string())?;
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| e.to_string())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(Mutex::new(StandInState {
            boot_target: "None".into(),
            boot_enabled: "Disabled".into(),
            etag: 1,
            ..Default::default()
        }));
        let counters = Arc::new(StandInCounters::default());
        let delay_ms = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(Shared {
            config,
            counters: counters.clone(),
            delay_ms: delay_ms.clone(),
            state: state.clone(),
            next: AtomicU64::new(1),
            stale: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
        });
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, shared) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else { return };
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move {
                            let mut answer = shared.answer(req).await;
                            if shared.config.close_connections {
                                answer
                                    .headers_mut()
                                    .insert("Connection", hyper::header::HeaderValue::from_static("close"));
                            }
                            Ok::<_, std::convert::Infallible>(answer)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(StandIn { addr, counters, delay_ms, state, task })
    }

    /// Its endpoint with `credentials_ref`, checked as `tls` says.
    pub fn endpoint(&self, credentials_ref: &str, tls: BmcTls) -> BmcEndpoint {
        BmcEndpoint { tls, ..BmcEndpoint::redfish("127.0.0.1", self.addr.port(), credentials_ref) }
    }

    /// Delays every answer by `delay` from now on (a slow BMC).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Forgets every session (as a BMC does when they expire or it resets).
    pub fn expire_sessions(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).sessions.clear();
    }

    /// Sessions it holds now.
    pub fn sessions(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).sessions.len()
    }

    /// Whether the system is on.
    pub fn power_on(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).power_on
    }

    /// Powers the system on or off behind the driver's back (another tool, a button).
    pub fn set_power(&self, on: bool) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).power_on = on;
    }

    /// The boot override (target, enabled).
    pub fn boot(&self) -> (String, String) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (s.boot_target.clone(), s.boot_enabled.clone())
    }
}

const SYSTEM: &str = "/redfish/v1/Systems/1";
const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

fn reply(status: StatusCode, body: Value, headers: &[(&str, String)]) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(status).header("Content-Type", "application/json");
    for (name, value) in headers {
        response = response.header(*name, value.as_str());
    }
    let body = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
    response.body(Full::new(body)).unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(status, json!({"error": {"code": "Base.1.0.GeneralError", "message": message}}), &[])
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, StandInState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn authorized(&self, req: &Request<hyper::body::Incoming>) -> bool {
        let header = |name| req.headers().get(name).and_then(|v: &hyper::header::HeaderValue| v.to_str().ok());
        if let Some(token) = header("x-auth-token") {
            return self.lock().sessions.contains_key(token);
        }
        let expected = {
            use base64::Engine as _;
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")))
        };
        header("authorization") == Some(expected.as_str())
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let delay = self.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let (method, path) = (req.method().clone(), req.uri().path().trim_end_matches('/').to_string());
        if method == Method::GET && path == "/redfish/v1" {
            let mut root = json!({"RedfishVersion": "1.15.0", "Systems": {"@odata.id": "/redfish/v1/Systems"}});
            if self.config.sessions {
                root["Links"] = json!({"Sessions": {"@odata.id": SESSIONS}});
            }
            return reply(StatusCode::OK, root, &[]);
        }
        if method == Method::POST && path == SESSIONS && self.config.sessions {
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let login: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if login["UserName"] != USER || login["Password"] != PASSWORD {
                self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                return error(StatusCode::UNAUTHORIZED, "bad credentials");
            }
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            let token = format!("token-{id}-{}", id * 7919);
            self.lock().sessions.insert(token.clone(), id);
            self.counters.logins.fetch_add(1, Ordering::Relaxed);
            return reply(
                StatusCode::CREATED,
                json!({"Id": id.to_string()}),
                &[("X-Auth-Token", token), ("Location", format!("{SESSIONS}/{id}"))],
            );
        }
        if !self.authorized(&req) {
            self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::UNAUTHORIZED, "log in first");
        }
        let if_match = req.headers().get("if-match").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match (method, path.as_str()) {
            (Method::DELETE, p) if p.starts_with(SESSIONS) => {
                let id: u64 = p.rsplit('/').next().and_then(|i| i.parse().ok()).unwrap_or(0);
                self.lock().sessions.retain(|_, v| *v != id);
                self.counters.logouts.fetch_add(1, Ordering::Relaxed);
                reply(StatusCode::NO_CONTENT, Value::Null, &[])
            }
            (Method::GET, "/redfish/v1/Systems") => {
                reply(StatusCode::OK, json!({"Members": [{"@odata.id": SYSTEM}]}), &[])
            }
            (Method::GET, SYSTEM) if self.busy.fetch_add(1, Ordering::Relaxed) < self.config.busy_reads => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"message": "busy with another session"}}),
                &[("Retry-After", "1".into())],
            ),
            (Method::GET, SYSTEM) => {
                let s = self.lock();
                let mut types = vec!["On", "ForceOff", "ForceRestart", "GracefulShutdown"];
                if self.config.power_cycle {
                    types.push("PowerCycle");
                }
                let etag = format!("W/\"{}\"", s.etag);
                let system = json!({
                    "Id": "1", "PowerState": if s.power_on { "On" } else { "Off" },
                    "Boot": {"BootSourceOverrideTarget": s.boot_target, "BootSourceOverrideEnabled": s.boot_enabled,
                             "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Hdd", "Cd"]},
                    "Actions": {"#ComputerSystem.Reset": {"target": format!("{SYSTEM}/Actions/ComputerSystem.Reset"),
                                "ResetType@Redfish.AllowableValues": types}},
                });
                reply(StatusCode::OK, system, &[("ETag", etag)])
            }
            (Method::PATCH, SYSTEM) => {
                let mut s = self.lock();
                if self.stale.fetch_add(1, Ordering::Relaxed) < self.config.stale_etags {
                    s.etag += 1;
                }
                let current = format!("W/\"{}\"", s.etag);
                match if_match {
                    None => {
                        self.counters.etag_refusals.fetch_add(1, Ordering::Relaxed);
                        return error(StatusCode::PRECONDITION_REQUIRED, "If-Match is required");
                    }
                    Some(tag) if tag != current => {
                        self.counters.etag_refusals.fetch_add(1, Ordering::Relaxed);
                        return error(StatusCode::PRECONDITION_FAILED, "stale ETag");
                    }
                    Some(_) => {}
                }
                if let Some(t) = body["Boot"]["BootSourceOverrideTarget"].as_str() {
                    s.boot_target = t.to_string();
                }
                if let Some(e) = body["Boot"]["BootSourceOverrideEnabled"].as_str() {
                    s.boot_enabled = e.to_string();
                }
                s.etag += 1;
                reply(StatusCode::NO_CONTENT, Value::Null, &[])
            }
            (Method::POST, p) if p == format!("{SYSTEM}/Actions/ComputerSystem.Reset") => {
                let reset = body["ResetType"].as_str().unwrap_or_default().to_string();
                let on = match reset.as_str() {
                    "On" | "ForceRestart" | "PowerCycle" => true,
                    "ForceOff" | "GracefulShutdown" => false,
                    _ => return error(StatusCode::BAD_REQUEST, &format!("ResetType {reset} is not supported")),
                };
                self.counters.resets.lock().unwrap_or_else(|p| p.into_inner()).push(reset);
                let id = self.next.fetch_add(1, Ordering::Relaxed);
                if self.config.task_polls == 0 {
                    self.lock().power_on = on;
                    return reply(StatusCode::NO_CONTENT, Value::Null, &[]);
                }
                self.lock().tasks.insert(id, (self.config.task_polls, Some(on)));
                reply(
                    StatusCode::ACCEPTED,
                    Value::Null,
                    &[("Location", format!("/redfish/v1/TaskService/TaskMonitors/{id}"))],
                )
            }
            (Method::GET, p) if p.starts_with("/redfish/v1/TaskService/TaskMonitors/") => {
                self.counters.task_polls.fetch_add(1, Ordering::Relaxed);
                let id: u64 = p.rsplit('/').next().and_then(|i| i.parse().ok()).unwrap_or(0);
                let mut s = self.lock();
                let Some((left, power)) = s.tasks.get_mut(&id) else { return error(StatusCode::NOT_FOUND, "no task") };
                if *left > 1 {
                    *left -= 1;
                    return reply(
                        StatusCode::ACCEPTED,
                        json!({"TaskState": "Running"}),
                        &[("Location", p.to_string())],
                    );
                }
                // The change happens when the task completes, not when it was accepted.
                if let Some(on) = power.take() {
                    s.power_on = on;
                }
                reply(StatusCode::OK, json!({"TaskState": "Completed", "TaskStatus": "OK"}), &[])
            }
            _ => error(StatusCode::NOT_FOUND, "no such resource"),
        }
    }
}
