//! `maasd`: the maas daemon — the `maas.v1` gRPC API over mTLS, the worker pools and the
//! leader singletons, on one store. Several `maasd` on one PostgreSQL or MySQL server
//! scale out (claims skip each other's rows; leader rows elect one of each singleton).
//!
//! Configuration: a TOML file (`--config`, see [`maas_grpc::config`]), then `MAASD_*`
//! environment variables, then flags. Defaults work out of the box for development:
//! `sqlite://maasd.db`, a simulated fleet (`--sim-hosts`), and certificates from
//! `maasctl dev-certs` in `./certs`. With an `[ipmi]` or `[redfish]` section the fleet is real BMCs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use maas_core::host::BmcProtocol;
use maas_core::id::IdGenerator;
use maas_core::machine::Rules;
#[cfg(feature = "sim")]
use maas_core::ports::inventory::Inventory;
use maas_core::ports::power::ByProtocol;
use maas_core::ports::power::PowerDriver;
use maas_core::ports::services::{Provisioner, Secrets};
use maas_core::ports::store::Store;
use maas_core::time::Clock;
use maas_engine::{Engine, EngineConfig, OsTokens, PoolConfig, Singletons, WorkerConfig, WorkerPool};
use maas_engine::{InstanceId, SystemClock};
use maas_grpc::config::{Config, LogFormat, Role, WebhookConfig};
use maas_grpc::identity::Policy;
use maas_grpc::metrics::{MeteredPower, MetricsNotifier};
use maas_grpc::service::{Authentication, MaasService};
use maas_grpc::tls::TlsFiles;
use maas_grpc::webhook::{Selection, WebhookNotifier};
use maas_ipmi::{EnvSecrets, FileSecrets, IpmiPowerDriver};
use maas_redfish::RedfishPowerDriver;
use maas_store::{OpenOptions, SqlStore};

#[derive(Debug, Parser)]
#[command(name = "maasd", version, about = "The maas daemon: gRPC API (mTLS), workers and singletons")]
struct Args {
    /// A TOML configuration file; environment variables and flags override it.
    #[arg(long, env = "MAASD_CONFIG")]
    config: Option<PathBuf>,
    /// Where the API listens [default: 127.0.0.1:7443].
    #[arg(long, env = "MAASD_LISTEN")]
    listen: Option<SocketAddr>,
    /// The store (sqlite://FILE, postgres://..., mysql://...) [default: sqlite://maasd.db].
    #[arg(long, env = "MAASD_DB")]
    db: Option<String>,
    /// Directory with ca.pem, server.pem and server-key.pem (see `maasctl dev-certs`) [default: certs].
    #[arg(long, env = "MAASD_CERTS")]
    certs: Option<PathBuf>,
    /// The policy file (JSON: members, ou_groups, grants).
    #[arg(long, env = "MAASD_POLICY")]
    policy: Option<PathBuf>,
    /// Serve without TLS (development only; refused unless the listen address is loopback).
    #[arg(long)]
    plaintext: bool,
    /// With --plaintext, the principal every caller acts as [default: local].
    #[arg(long)]
    plaintext_principal: Option<String>,
    /// What this process runs [default: all].
    #[arg(long, value_enum, env = "MAASD_ROLE")]
    role: Option<Role>,
    /// Worker pools to run, as SITE/POOL (repeatable; replaces the configured list) [default: dc1/web].
    #[arg(long = "pool")]
    pools: Vec<String>,
    /// Workers per pool [default: 4].
    #[arg(long, env = "MAASD_WORKERS")]
    workers: Option<usize>,
    /// Register this many simulated hosts (sim000001.dc1, ...) with simulated BMCs.
    #[arg(long)]
    sim_hosts: Option<usize>,
    /// How long each simulated BMC command takes, in milliseconds [default: 0].
    #[arg(long)]
    sim_bmc_latency_ms: Option<u64>,
    /// This instance's name (worker ids, leader rows) [default: maasd].
    #[arg(long, env = "MAASD_INSTANCE")]
    instance: Option<String>,
    /// Also POST every outbox event (JSON, HMAC-SHA256 signed) to this https:// URL (or
    /// http:// to a loopback receiver).
    #[arg(long, env = "MAASD_WEBHOOK_URL", requires = "webhook_secret_file")]
    webhook_url: Option<String>,
    /// The file holding that webhook's signing secret.
    #[arg(long, env = "MAASD_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// PEM CA certificates that webhook's https receiver must chain to [default: the system's roots].
    #[arg(long, env = "MAASD_WEBHOOK_CA_FILE")]
    webhook_ca_file: Option<PathBuf>,
    /// Where /metrics, /healthz and /readyz are served (plain HTTP; "off" to disable) [default: 127.0.0.1:9464].
    #[arg(long, env = "MAASD_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Where the REST/JSON API (/v1/) and the web console (/ui/) are served, over the same TLS
    /// and client CA as the gRPC API ("off" to disable) [default: off].
    #[arg(long, env = "MAASD_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// Log line format [default: text].
    #[arg(long, value_enum, env = "MAASD_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Log filter (info, debug, warn,maas_grpc=debug); RUST_LOG wins [default: info].
    #[arg(long, env = "MAASD_LOG")]
    log_level: Option<String>,
    /// Most hosts in one batch [default: 10000].
    #[arg(long, env = "MAASD_MAX_BATCH_HOSTS")]
    max_batch_hosts: Option<usize>,
    /// Largest gRPC request in bytes [default: 4194304].
    #[arg(long, env = "MAASD_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
}

impl Args {
    /// The file's configuration (or the defaults) with the environment and flags on top.
    fn config(self) -> Result<Config, maas_grpc::errors::ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($($field:ident => $target:expr),* $(,)?) => { $(if let Some(v) = self.$field { $target = v; })* };
        }
        set! {
            listen => c.listen, db => c.db, certs => c.certs, plaintext_principal => c.plaintext_principal,
            role => c.role, workers => c.workers.per_pool, sim_hosts => c.sim_hosts, instance => c.instance,
            sim_bmc_latency_ms => c.sim_bmc_latency_ms,
            metrics_listen => c.metrics.listen, http_listen => c.http.listen, log_format => c.log.format, log_level => c.log.level,
            max_batch_hosts => c.limits.max_batch_hosts, max_message_bytes => c.limits.max_message_bytes,
        }
        if self.policy.is_some() {
            c.policy = self.policy;
        }
        c.plaintext |= self.plaintext;
        if !self.pools.is_empty() {
            c.workers.pools = self.pools;
        }
        if let (Some(url), Some(secret_file)) = (self.webhook_url, self.webhook_secret_file) {
            c.webhooks.push(WebhookConfig {
                url,
                secret_file,
                ca_file: self.webhook_ca_file,
                allow_plain_http: false,
                submitters: Vec::new(),
                tickets: false,
            });
        }
        Ok(c)
    }
}

/// Startup and fatal errors: one plain line on stderr (logging may not be set up yet), exit 2.
fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("maasd: {message}");
    std::process::exit(2);
}

/// The notifier for one `[[webhooks]]` entry, with its outbox consumer name (stable
/// across restarts and reordering: it is the URL and what it receives).
fn webhook(w: &WebhookConfig, store: &Arc<SqlStore>, stragglers: bool) -> (String, WebhookNotifier) {
    let secret = std::fs::read(&w.secret_file)
        .unwrap_or_else(|e| fail(format!("webhook secret {}: {e}", w.secret_file.display())));
    let hook = WebhookNotifier::trusting(&w.url, secret.trim_ascii(), w.ca_file.as_deref(), w.allow_plain_http)
        .unwrap_or_else(|e| fail(e));
    if maas_core::notify::WebhookUrl::parse(&w.url).is_ok_and(|u| u.plain_off_loopback()) {
        tracing::warn!(url = %w.url, "webhook over plain http off this machine (allow_plain_http): events and signatures cross the network unencrypted");
    }
    if w.tickets {
        (format!("tickets:{}", w.url), hook.select(Selection::Tickets { stragglers }))
    } else if w.submitters.is_empty() {
        (format!("webhook:{}", w.url), hook)
    } else {
        let names = w.submitters.iter().cloned().collect();
        let store: Arc<dyn Store> = store.clone();
        (format!("webhook:{}:{}", w.url, w.submitters.join(",")), hook.select(Selection::Submitters { names, store }))
    }
}

/// The notifiers of per-batch subscriptions, with their outbox consumer names: one per
/// `[[channels]]` entry, and one for the URLs batches name (with a `[subscriptions]` secret).
fn subscription_notifiers(
    config: &Config,
    store: &Arc<SqlStore>,
) -> Vec<(String, Arc<dyn maas_core::ports::services::Notifier>)> {
    use maas_grpc::subscriptions::{ChannelNotifier, UrlSubscriptions};
    use maas_grpc::webhook::{Poster, client_tls, tls_trusting};
    let read = |path: &std::path::Path| {
        std::fs::read(path).unwrap_or_else(|e| fail(format!("secret file {}: {e}", path.display())))
    };
    let mut out: Vec<(String, Arc<dyn maas_core::ports::services::Notifier>)> = Vec::new();
    for ch in &config.channels {
        let secret = ch.secret_file.as_deref().map(read).unwrap_or_default();
        let poster = Poster::new(&ch.url, secret.trim_ascii(), ch.ca_file.as_deref(), ch.allow_plain_http)
            .unwrap_or_else(|e| fail(e));
        let store: Arc<dyn Store> = store.clone();
        let notifier = ChannelNotifier::new(&ch.name, ch.format, poster, store);
        out.push((notifier.consumer().to_string(), Arc::new(notifier)));
    }
    if let Some(path) = &config.subscriptions.secret_file {
        let secret = read(path);
        let tls = client_tls("the URLs batches name", None).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no system root certificates: https URLs of subscriptions will be refused");
            tls_trusting(rustls::RootCertStore::empty()).unwrap_or_else(|e| fail(e))
        });
        let give_up = Box::new(|url: &str, e: &maas_core::ports::services::NotifyError| {
            tracing::warn!(url = %url, error = %e, "a batch's subscribed URL keeps failing: its events so far are given up");
        });
        let store: Arc<dyn Store> = store.clone();
        out.push(("subscriptions".into(), Arc::new(UrlSubscriptions::new(secret.trim_ascii(), tls, store, give_up))));
    }
    out
}

/// How long maasd asks for its instance name while another session holds it: a previous
/// run killed a moment ago still holds it until the database notices its connection closed.
const NAME_WAIT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() {
    let config = Args::parse().config().unwrap_or_else(|e| fail(e));
    // Everything that can be wrong with the configuration fails here, before serving.
    config.check().unwrap_or_else(|e| fail(e));
    maas_grpc::logging::init(config.log.format, &config.log.level).unwrap_or_else(|e| fail(e));
    let policy = match &config.policy {
        Some(path) => Policy::load(path).unwrap_or_else(|e| fail(e)),
        None => {
            tracing::warn!(
                "no policy (--policy or `policy` in the config): every request will be refused, since no \
                 principal holds any permission; see README, \"Identity and authorization\""
            );
            Policy::default()
        }
    };
    // Both listeners serve with the same certificate and client CA.
    let server_files = TlsFiles::server_in(&config.certs);
    let tls = (!config.plaintext).then(|| {
        server_files.server().unwrap_or_else(|e| {
            fail(format!("{e} (make development certificates with `maasctl dev-certs {}`)", config.certs.display()))
        })
    });
    let http_addr = config.http_addr().unwrap_or_else(|e| fail(e));
    let http_tls =
        (http_addr.is_some() && !config.plaintext).then(|| server_files.rustls_server().unwrap_or_else(|e| fail(e)));
    let pools = config.pools().unwrap_or_else(|e| fail(e));
    let metrics_addr = config.metrics_addr().unwrap_or_else(|e| fail(e));
    // This process's identity: its instance name, held exclusively until the process ends
    // (on a SQLite file, the file itself: one maasd per file), and a new incarnation per
    // start, so the leases of an earlier run of this name can be taken back at once.
    let started = SystemClock::new().now();
    let instance = InstanceId::new(&config.instance, started.as_millis() as u64).unwrap_or_else(|e| fail(e));
    let _instance_lock =
        maas_store::InstanceLock::acquire(&config.db, instance.name(), NAME_WAIT).await.unwrap_or_else(|e| fail(e));
    let store = Arc::new(
        SqlStore::open(&config.db, &OpenOptions::default(), Rules::default()).await.unwrap_or_else(|e| fail(e)),
    );

    // The fleet: real BMCs over IPMI when configured, else the simulated fleet.
    let mut sim_installers = (None, None);
    let (power, drivers): (Arc<dyn PowerDriver>, Option<RealDrivers>) = match config.real_fleet() {
        true => {
            let secrets = |file: Option<&PathBuf>| -> Arc<dyn Secrets> {
                match file {
                    Some(f) => Arc::new(FileSecrets::new(f)),
                    None => Arc::new(EnvSecrets),
                }
            };
            let ipmi_secrets = config.ipmi.as_ref().and_then(|i| i.secrets_file.as_ref());
            let ipmi = config.ipmi.as_ref().map(|section| {
                Arc::new(
                    IpmiPowerDriver::new(secrets(ipmi_secrets), section.driver_config())
                        .unwrap_or_else(|e| fail(format!("ipmi: {e}"))),
                )
            });
            let redfish = config.redfish.as_ref().map(|section| {
                let driver_config = section.driver_config().unwrap_or_else(|e| fail(e));
                let file = section.secrets_file.as_ref().or(ipmi_secrets);
                Arc::new(
                    RedfishPowerDriver::new(secrets(file), driver_config)
                        .unwrap_or_else(|e| fail(format!("redfish: {e}"))),
                )
            });
            let mut router = ByProtocol::new();
            if let Some(d) = &ipmi {
                router = router.with(BmcProtocol::Ipmi, d.clone());
            }
            if let Some(d) = &redfish {
                router = router.with(BmcProtocol::Redfish, d.clone());
            }
            (Arc::new(router), Some(RealDrivers { ipmi, redfish }))
        }
        false => {
            let latency = std::time::Duration::from_millis(config.sim_bmc_latency_ms);
            let (fleet, provisioner, start) = simulated_fleet(&store, config.sim_hosts, latency).await;
            sim_installers = (provisioner, start);
            (fleet, None)
        }
    };
    // Network boots: the boot service over the checked image catalog; a simulated fleet
    // without one simulates its installers.
    let catalog = config.boot.as_ref().map(|b| {
        let catalog = maas_boot::Catalog::load(&b.images).unwrap_or_else(|e| fail(format!("boot: {e}")));
        Arc::new(catalog)
    });
    let (provisioner, sim_installer) = match &catalog {
        Some(c) => {
            let public_url = config.boot.as_ref().map(|b| b.public_url.as_str()).unwrap_or_default();
            let provisioner = maas_boot::BootProvisioner::new(c.clone()).with_public_url(public_url);
            (Some(Arc::new(provisioner) as Arc<dyn Provisioner>), None)
        }
        None => sim_installers,
    };
    let prometheus =
        metrics_addr.map(|_| maas_grpc::metrics::install().unwrap_or_else(|e| fail(format!("metrics: {e}"))));
    let power: Arc<dyn PowerDriver> = if prometheus.is_some() { Arc::new(MeteredPower::new(power)) } else { power };

    let clock = Arc::new(SystemClock::new());
    let defaults = EngineConfig::default();
    let engine_config = EngineConfig {
        limits: config.core_limits(),
        console_check: config.console_check(),
        retention: Duration::from_secs(config.history.retention_secs),
        idempotency_horizon: Duration::from_secs(config.history.idempotency_horizon_secs),
        intervals: maas_core::config::SingletonIntervals {
            retention: Duration::from_secs(config.history.purge_every_secs.max(1)),
            reclaim: Duration::from_secs(config.reclaim.interval_secs.max(1)),
            ..defaults.intervals
        },
        reclaim: config.reclaim.policy().unwrap_or_else(|e| fail(e)),
        ..defaults
    };
    let stragglers = engine_config.stragglers.ticket;
    let mut builder = Engine::builder(
        store.clone(),
        store.clone(),
        power,
        clock.clone(),
        IdGenerator::new(clock.clone(), OsTokens::seed()).with_tokens(Arc::new(OsTokens)),
    )
    .authorizer(Arc::new(policy.authorizer()))
    .config(engine_config);
    if prometheus.is_some() {
        builder = builder.notifier("metrics", Arc::new(MetricsNotifier::new(store.clone(), clock)));
    }
    if let Some(p) = provisioner {
        builder = builder.provisioner(p);
    }
    for w in &config.webhooks {
        let (name, hook) = webhook(w, &store, stragglers);
        builder = builder.notifier(&name, Arc::new(hook));
    }
    for (name, notifier) in subscription_notifiers(&config, &store) {
        builder = builder.notifier(&name, notifier);
    }
    let engine = builder.build();
    if let Some(start) = sim_installer {
        start(engine.clone());
    }

    // Shutdown (SIGTERM or Ctrl-C) reaches every server through one channel.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .unwrap_or_else(|e| fail(format!("cannot watch SIGTERM: {e}")));
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested");
        let _ = stop_tx.send(true);
    });
    let ready = Arc::new(AtomicBool::new(false));
    if let (Some(addr), Some(handle)) = (metrics_addr, prometheus) {
        tokio::spawn(maas_grpc::metrics::refresh(engine.clone(), Duration::from_secs(5)));
        let (ready, until, store) = (ready.clone(), stopped(stop_rx.clone()), engine.store().clone());
        tokio::spawn(async move {
            if let Err(e) = maas_grpc::metrics::serve(addr, handle, ready, store, until).await {
                fail(format!("metrics on {addr}: {e}"));
            }
        });
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }

    if let (Some(section), Some(catalog)) = (&config.boot, catalog) {
        let service = maas_boot::BootService::new(
            engine.clone(),
            catalog,
            maas_boot::BootServiceConfig { public_url: section.public_url.clone(), retry_secs: section.retry_secs },
        );
        let listener = tokio::net::TcpListener::bind(section.listen)
            .await
            .unwrap_or_else(|e| fail(format!("boot service on {}: {e}", section.listen)));
        let until = stopped(stop_rx.clone());
        tracing::info!(listen = %section.listen, public_url = %section.public_url, images = engine.images().len(), "serving network boots");
        tokio::spawn(async move {
            if let Err(e) = service.serve(listener, until).await {
                fail(format!("boot service: {e}"));
            }
        });
    }

    let mut running_pools = Vec::new();
    let mut singletons = None;
    if config.role != Role::Api {
        let taken = engine.take_over_earlier_incarnations(&instance).await.unwrap_or_else(|e| fail(e));
        if taken != Default::default() {
            tracing::warn!(
                instance = %instance,
                retried = taken.retried.len(),
                failed = taken.failed.len(),
                "took back the jobs an earlier run of this instance held when it stopped"
            );
        }
        for spec in pools {
            tracing::info!(site = %spec.site, pool = %spec.pool, workers = config.workers.per_pool, "starting a worker pool");
            running_pools.push(WorkerPool::start(
                &engine,
                PoolConfig {
                    site: spec.site,
                    pool: spec.pool,
                    workers: config.workers.per_pool,
                    worker: WorkerConfig::default(),
                    restart_delay: Duration::from_secs(1),
                    instance: instance.to_string(),
                },
            ));
        }
        let log_error: maas_engine::ErrorSink = Arc::new(|e: &str| tracing::warn!(error = %e, "leader task failed"));
        singletons = Some(
            Singletons::new(engine.clone(), instance.to_string()).on_error(log_error).start(Duration::from_millis(500)),
        );
    }

    let shutdown = stopped(stop_rx.clone());
    if config.role == Role::Worker {
        ready.store(true, Ordering::Relaxed);
        shutdown.await;
    } else {
        let auth = if config.plaintext {
            Authentication::Fixed(policy.principal(&config.plaintext_principal, &[]))
        } else {
            Authentication::ClientCertificate
        };
        let service = MaasService::new(engine.clone(), Arc::new(policy), auth);
        if let Some(addr) = http_addr {
            let listener =
                tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| fail(format!("http.listen {addr}: {e}")));
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!(listen = %bound, "serving the REST/JSON API (/v1/) and the console (/ui/)");
            let rest = maas_grpc::rest::Rest::new(service.clone(), config.limits.max_message_bytes);
            let until = stopped(stop_rx.clone());
            tokio::spawn(maas_grpc::https::serve(listener, maas_grpc::https::router(rest), http_tls, until));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .unwrap_or_else(|e| fail(format!("listening on {}: {e}", config.listen)));
        let listen = listener.local_addr().unwrap_or(config.listen);
        tracing::info!(
            %listen,
            security = if config.plaintext { "plaintext, loopback only" } else { "mTLS" },
            store = %maas_store::redact(&config.db),
            fleet = match &drivers {
                Some(RealDrivers { ipmi: Some(_), redfish: Some(_) }) => "ipmi+redfish",
                Some(RealDrivers { redfish: Some(_), .. }) => "redfish",
                Some(_) => "ipmi",
                None => "simulated",
            },
            role = ?config.role,
            "serving maas.v1"
        );
        ready.store(true, Ordering::Relaxed);
        let served = maas_grpc::server::serve(listener, service, tls, config.limits.max_message_bytes, shutdown).await;
        if let Err(e) = served {
            fail(format!("serving on {listen}: {e}"));
        }
    }
    tracing::info!("shutting down: handing back unfinished jobs");
    for pool in running_pools {
        pool.shutdown().await;
    }
    if let Some(s) = singletons {
        s.shutdown().await;
    }
    if let Some(RealDrivers { ipmi, redfish }) = drivers {
        // BMCs allow few sessions: give them back.
        if let Some(d) = ipmi {
            d.close_all().await;
        }
        if let Some(d) = redfish {
            d.close_all().await;
        }
    }
    tracing::info!("stopped");
}

/// The real BMC drivers, kept to close their sessions on shutdown.
struct RealDrivers {
    ipmi: Option<Arc<IpmiPowerDriver>>,
    redfish: Option<Arc<RedfishPowerDriver>>,
}

/// How to start a simulated fleet's installers once the engine exists.
type StartInstallers = Box<dyn FnOnce(Engine)>;

/// The simulated fleet, with `hosts` simulated hosts registered (`sim000001.dc1`, ...), and
/// its simulated installers.
#[cfg(feature = "sim")]
async fn simulated_fleet(
    store: &Arc<SqlStore>,
    hosts: usize,
    latency: std::time::Duration,
) -> (Arc<dyn PowerDriver>, Option<Arc<dyn Provisioner>>, Option<StartInstallers>) {
    use maas_sim::{SimFleet, SimInstaller, sim::fleet_hosts};
    let fleet = Arc::new(SimFleet::new(1, maas_sim::FaultPlan::none()));
    fleet.set_latency(latency);
    if hosts > 0 {
        store.host_upsert_many(fleet_hosts(&fleet, 1, hosts)).await.unwrap_or_else(|e| fail(e));
    }
    let installer = Arc::new(SimInstaller::new(fleet.clone()));
    let start = installer.clone();
    (fleet, Some(installer), Some(Box::new(move |engine| drop(start.start(engine)))))
}

/// Without the `sim` feature there is no simulated fleet: `[ipmi]` or `[redfish]` is required.
#[cfg(not(feature = "sim"))]
async fn simulated_fleet(
    _store: &Arc<SqlStore>,
    _hosts: usize,
    _latency: std::time::Duration,
) -> (Arc<dyn PowerDriver>, Option<Arc<dyn Provisioner>>, Option<StartInstallers>) {
    fail("no [ipmi] or [redfish] section, and this maasd was built without the simulated fleet (cargo feature `sim`)")
}
