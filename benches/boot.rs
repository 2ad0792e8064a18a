//! The boot service's throughput answering iPXE requests (a harness binary: each figure is
//! one timed run, reported next to a reference measured in the same run).
//!
//! 1,000 hosts with MACs on SQLite (the embedded default); a reimage batch has brought 500 of them to
//! `await_install` (so half are offered their installer, half their local disk, as in a
//! rollout). Clients ask `GET /boot/{mac}` for every MAC in turn, one TCP connection per
//! request as firmware does, from 8 concurrent tasks. Reference: the same clients asking
//! the same server's `/healthz` (the HTTP stack's floor, no store reads). Also: the answer
//! computed in process (`BootService::script_for`), without HTTP.
//!
//! Under `cargo test --all-targets` this runs briefly; `cargo bench --bench boot` in full.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use maas::boot::{BootProvisioner, BootService, BootServiceConfig, Catalog, ImageConfig, ImageKind};
use maas::ports::inventory::Inventory;
use maas::*;
use maas_sim::fleet_hosts;
use maas_sim::{FaultPlan, SimFleet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOSTS: usize = 1000;
const INSTALLING: usize = 500;
const CLIENTS: usize = 8;

fn catalog(dir: &std::path::Path) -> Catalog {
    let file = dir.join("artifact");
    std::fs::write(&file, "x").unwrap();
    let sha = maas::boot::catalog::sha256_file(&file).unwrap();
    let path = file.display().to_string();
    Catalog::load(&[ImageConfig {
        name: "ubuntu-24.04".into(),
        kind: ImageKind::Install,
        kernel: path.clone(),
        kernel_sha256: sha.clone(),
        initrd: path.clone(),
        initrd_sha256: sha.clone(),
        root: Some(path),
        root_sha256: Some(sha),
        iso: None,
        iso_sha256: None,
        kernel_args: "console=ttyS0".into(),
        firmware: Default::default(),
        config_template: None,
    }])
    .unwrap()
}

async fn get(port: u16, path: &str) -> bool {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let req = format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut out = Vec::with_capacity(1024);
    s.read_to_end(&mut out).await.is_ok() && out.starts_with(b"HTTP/1.1 200")
}

/// Requests per second from `CLIENTS` tasks asking `path(i)` for `secs`.
async fn rate(port: u16, secs: f64, path: impl Fn(usize) -> String + Send + Sync + 'static) -> f64 {
    let path = Arc::new(path);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (path, done, stop) = (path.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    assert!(get(port, &path(i % HOSTS)).await, "a request failed");
                    done.fetch_add(1, Ordering::Relaxed);
                    i += CLIENTS;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let secs = if full { 5.0 } else { 0.3 };
    let dir = std::env::temp_dir().join(format!("maas-bench-boot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (service, port, macs) = server.block_on(async {
        // The embedded default store, SQLite in a file.
        let url = format!("sqlite://{}", dir.join("boot.db").display());
        let store = Arc::new(
            maas::store::SqlStore::open(&url, &maas::store::OpenOptions::default(), machine::Rules::default())
                .await
                .unwrap(),
        );
        let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
        let hosts = fleet_hosts(&fleet, 1, HOSTS);
        let macs: Vec<String> = hosts.iter().map(|h| h.mac.unwrap().to_string()).collect();
        store.host_upsert_many(hosts).await.unwrap();
        let catalog = Arc::new(catalog(&dir));
        let clock = Arc::new(SystemClock::new());
        let engine = Engine::builder(store.clone(), store.clone(), fleet, clock.clone(), IdGenerator::new(clock, 1))
            .provisioner(Arc::new(BootProvisioner::new(catalog.clone())))
            .build();
        let mut req = BatchRequest::new(
            Action::Reimage { os: OsRelease::new("ubuntu-24.04").unwrap(), install_timeout_secs: None },
            [format!("sim[000001-{INSTALLING:06}].dc1")],
        );
        req.rollout.max_in_flight = INSTALLING as u32;
        let id = engine.submit(&Principal::new("bench", []), &req).await.unwrap().batch.id;
        let pool = WorkerPool::start(
            &engine,
            PoolConfig {
                site: Site::new("dc1").unwrap(),
                pool: Pool::new("web").unwrap(),
                workers: 2,
                worker: WorkerConfig::default(),
                restart_delay: Duration::from_secs(1),
                instance: "bench".into(),
            },
        );
        let started = Instant::now();
        loop {
            // The workers hold SQLite's writer while they bring 500 chains forward; a read may
            // time out waiting for a connection meanwhile: ask again.
            let waiting = match engine.get_batch(id).await {
                Ok(view) => view.hosts.iter().all(|h| h.step == Some(plan::StepKind::AwaitInstall)),
                Err(_) => false,
            };
            if waiting {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "the batch did not reach await_install");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        pool.shutdown().await;
        let service = BootService::new(
            engine,
            catalog,
            BootServiceConfig { public_url: "http://10.0.0.5:8080".into(), retry_secs: 5 },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let serving = service.clone();
        tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
        (service, port, macs)
    });

    // In process: every MAC once per round.
    let in_process = server.block_on(async {
        let started = Instant::now();
        let mut n = 0u64;
        let mut offered = 0;
        while started.elapsed().as_secs_f64() < secs {
            for mac in &macs {
                offered += usize::from(service.script_for(mac).await.contains("kernel "));
                n += 1;
            }
        }
        assert_eq!(offered % INSTALLING, 0, "half the hosts are offered their installer");
        n as f64 / started.elapsed().as_secs_f64()
    });

    // Over HTTP, from a client runtime of its own (2 threads, as the server).
    let client = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let macs = Arc::new(macs);
    let boot = {
        let macs = macs.clone();
        client.block_on(rate(port, secs, move |i| format!("/boot/{}", macs[i])))
    };
    let floor = client.block_on(rate(port, secs, |_| "/healthz".to_string()));
    println!("boot service, {HOSTS} hosts ({INSTALLING} installing), SQLite store:");
    println!("  GET /boot/{{mac}} over HTTP, {CLIENTS} clients, a connection per request: {boot:.0} requests/s");
    println!("  reference, GET /healthz on the same server and clients: {floor:.0} requests/s");
    println!("  ratio boot / healthz: {:.2}", boot / floor);
    println!("  script_for in process (no HTTP): {in_process:.0} answers/s");
    let _ = std::fs::remove_dir_all(&dir);
}
