//! `maasd`: the maas daemon — the `maas.v1` gRPC API over mTLS, the worker pools and the
//! leader singletons, on one store. Several `maasd` on one PostgreSQL or MySQL server
//! scale out (claims skip each other's rows; leader rows elect one of each singleton).
//!
//! Defaults work out of the box for development: `sqlite://maasd.db`, a simulated fleet
//! (`--sim-hosts`), and certificates from `maasctl dev-certs` in `./certs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use maas_core::engine::{Engine, PoolConfig, Singletons, WorkerConfig, WorkerPool};
use maas_core::id::IdGenerator;
use maas_core::machine::Rules;
use maas_core::names::{Pool, Site};
use maas_core::ports::inventory::Inventory;
use maas_core::sim::fleet_hosts;
use maas_core::simfleet::{FaultPlan, SimFleet};
use maas_core::time::SystemClock;
use maas_grpc::identity::Policy;
use maas_grpc::pb::maas_server::MaasServer;
use maas_grpc::service::{Authentication, MaasService};
use maas_grpc::tls::TlsFiles;
use maas_store::{OpenOptions, SqlStore};

/// What this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    /// The API only.
    Api,
    /// Workers and singletons only.
    Worker,
    /// Everything.
    All,
}

#[derive(Debug, Parser)]
#[command(name = "maasd", version, about = "The maas daemon: gRPC API (mTLS), workers and singletons")]
struct Args {
    /// Where the API listens.
    #[arg(long, env = "MAASD_LISTEN", default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// The store (sqlite://FILE, postgres://..., mysql://...).
    #[arg(long, env = "MAASD_DB", default_value = "sqlite://maasd.db")]
    db: String,
    /// Directory with ca.pem, server.pem and server-key.pem (see `maasctl dev-certs`).
    #[arg(long, env = "MAASD_CERTS", default_value = "certs")]
    certs: PathBuf,
    /// The policy file (JSON: members, ou_groups, grants).
    #[arg(long, env = "MAASD_POLICY")]
    policy: Option<PathBuf>,
    /// Serve without TLS (development only; refused unless --listen is a loopback address).
    #[arg(long)]
    plaintext: bool,
    /// With --plaintext, the principal every caller acts as.
    #[arg(long, default_value = "local")]
    plaintext_principal: String,
    /// What this process runs.
    #[arg(long, value_enum, default_value = "all")]
    role: Role,
    /// Worker pools to run, as SITE/POOL (repeatable).
    #[arg(long = "pool", default_value = "dc1/web")]
    pools: Vec<String>,
    /// Workers per pool.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Register this many simulated hosts (sim000001.dc1, ...) with simulated BMCs.
    #[arg(long, default_value_t = 0)]
    sim_hosts: usize,
    /// This instance's name (worker ids, leader rows).
    #[arg(long, env = "MAASD_INSTANCE", default_value = "maasd")]
    instance: String,
    /// POST every outbox event (JSON, HMAC-SHA256 signed) to this http:// URL.
    #[arg(long, env = "MAASD_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// The file holding the webhook signing secret.
    #[arg(long, env = "MAASD_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// Where /metrics, /healthz and /readyz are served (plain HTTP; "off" to disable).
    #[arg(long, env = "MAASD_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    metrics_listen: String,
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("maasd: {message}");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.plaintext && !args.listen.ip().is_loopback() {
        fail(format!(
            "--plaintext is refused on {}: plaintext serves only on a loopback address (127.0.0.1, ::1)",
            args.listen
        ));
    }
    // Everything that can be wrong with the configuration fails here, before serving.
    let policy = match &args.policy {
        Some(path) => Policy::load(path).unwrap_or_else(|e| fail(e)),
        None => Policy::default(),
    };
    let tls = (!args.plaintext).then(|| {
        TlsFiles {
            cert: args.certs.join("server.pem"),
            key: args.certs.join("server-key.pem"),
            ca: Some(args.certs.join("ca.pem")),
        }
        .server()
        .unwrap_or_else(|e| {
            fail(format!("{e} (make development certificates with `maasctl dev-certs {}`)", args.certs.display()))
        })
    });
    let store =
        Arc::new(SqlStore::open(&args.db, &OpenOptions::default(), Rules::default()).await.unwrap_or_else(|e| fail(e)));
    let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
    if args.sim_hosts > 0 {
        store.host_upsert_many(fleet_hosts(&fleet, 1, args.sim_hosts)).await.unwrap_or_else(|e| fail(e));
    }
    let metrics_addr: Option<SocketAddr> = match args.metrics_listen.as_str() {
        "off" => None,
        a => Some(a.parse().unwrap_or_else(|e| fail(format!("--metrics-listen {a:?}: {e}")))),
    };
    let prometheus =
        metrics_addr.map(|_| maas_grpc::metrics::install().unwrap_or_else(|e| fail(format!("metrics: {e}"))));
    let clock = Arc::new(SystemClock::new());
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut builder =
        Engine::builder(store.clone(), store.clone(), fleet, clock.clone(), IdGenerator::new(clock, seed))
            .authorizer(Arc::new(policy.authorizer()))
            .notifier("metrics", Arc::new(maas_grpc::metrics::MetricsNotifier::default()));
    if let Some(url) = &args.webhook_url {
        let secret = match &args.webhook_secret_file {
            Some(f) => std::fs::read(f).unwrap_or_else(|e| fail(format!("webhook secret {}: {e}", f.display()))),
            None => fail("--webhook-url needs --webhook-secret-file"),
        };
        let secret: Vec<u8> = secret.trim_ascii().to_vec();
        let hook = maas_grpc::webhook::WebhookNotifier::new(url, &secret).unwrap_or_else(|e| fail(e));
        builder = builder.notifier("webhook", Arc::new(hook));
    }
    let engine = builder.build();
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
        let _ = stop_tx.send(true);
    });
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let (Some(addr), Some(handle)) = (metrics_addr, prometheus) {
        tokio::spawn(maas_grpc::metrics::refresh(engine.clone(), Duration::from_secs(5)));
        let (ready, until) = (ready.clone(), stopped(stop_rx.clone()));
        tokio::spawn(async move {
            if let Err(e) = maas_grpc::metrics::serve(addr, handle, ready, until).await {
                fail(format!("metrics on {addr}: {e}"));
            }
        });
    }

    let mut pools = Vec::new();
    let mut singletons = None;
    if args.role != Role::Api {
        for spec in &args.pools {
            let (site, pool) =
                spec.split_once('/').unwrap_or_else(|| fail(format!("--pool {spec:?}: expected SITE/POOL")));
            let site = Site::new(site).unwrap_or_else(|e| fail(format!("--pool {spec:?}: {e}")));
            let pool = Pool::new(pool).unwrap_or_else(|e| fail(format!("--pool {spec:?}: {e}")));
            pools.push(WorkerPool::start(
                &engine,
                PoolConfig {
                    site,
                    pool,
                    workers: args.workers,
                    worker: WorkerConfig::default(),
                    restart_delay: Duration::from_secs(1),
                    instance: args.instance.clone(),
                },
            ));
        }
        singletons = Some(Singletons::new(engine.clone(), args.instance.clone()).start(Duration::from_millis(500)));
    }

    let shutdown = stopped(stop_rx.clone());
    if args.role == Role::Worker {
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        shutdown.await;
    } else {
        let auth = if args.plaintext {
            Authentication::Fixed(policy.principal(&args.plaintext_principal, &[]))
        } else {
            Authentication::ClientCertificate
        };
        let service = MaasService::new(engine.clone(), Arc::new(policy), auth);
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<MaasServer<MaasService>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(maas_grpc::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .unwrap_or_else(|e| fail(format!("reflection: {e}")));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).unwrap_or_else(|e| fail(format!("TLS: {e}")));
        }
        eprintln!(
            "maasd: serving maas.v1 on {} ({}), store {}",
            args.listen,
            if args.plaintext { "plaintext, loopback only" } else { "mTLS" },
            maas_store::redact(&args.db)
        );
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        let served = builder
            .add_service(health_service)
            .add_service(reflection)
            .add_service(MaasServer::new(service).max_decoding_message_size(4 << 20))
            .serve_with_shutdown(args.listen, shutdown)
            .await;
        if let Err(e) = served {
            fail(format!("serving on {}: {e}", args.listen));
        }
    }
    eprintln!("maasd: shutting down: handing back unfinished jobs");
    for pool in pools {
        pool.shutdown().await;
    }
    if let Some(s) = singletons {
        s.shutdown().await;
    }
}
