//! gRPC API benchmarks (a harness binary: each figure is one timed run, reported next to
//! references measured in the same run, on the same kind of store).
//!
//! 1. `latency` — SubmitBatch of a 100-host reboot batch through gRPC over mTLS on
//!    loopback, one client, one at a time: p50 / p99 / max. The store is SQLite (a file;
//!    WAL, `synchronous = FULL`). References: the same submits through `Engine::submit` in
//!    process on a store of its own (what the API adds is the difference), and a
//!    grpc.health.v1 Check on the same connection (the transport's floor).
//! 2. `throughput` — sustained SubmitBatch calls per second from 16 concurrent clients,
//!    each on its own mTLS connection, each submitting 100-host batches back to back.
//!    Reference: 16 concurrent in-process submitters on a store of their own.
//!
//! The server runs in this process on a runtime of its own (2 threads), as `maasd` serves
//! it (`maas::grpc::server::serve`: health, reflection, size limit, RPC metrics layer).
//! Every batch names hosts no other batch holds. Under `cargo test --all-targets` this
//! runs at a small size; `cargo bench --bench grpc` runs it in full.

use std::sync::Arc;
use std::time::{Duration, Instant};

use maas::grpc::identity::Policy;
use maas::grpc::pb::{self, maas_client::MaasClient};
use maas::grpc::service::{Authentication, MaasService};
use maas::grpc::tls::TlsFiles;
use maas::ports::inventory::Inventory;
use maas::store::{OpenOptions, SqlStore};
use maas::*;
use maas_sim::fleet_hosts;
use maas_sim::{FaultPlan, SimFleet};
use tonic::transport::{Channel, Endpoint};

const PER_SUBMIT: usize = 100;
const CLIENTS: usize = 16;

struct Size {
    latency_submits: usize,
    throughput_per_client: usize,
}

impl Size {
    /// Hosts each engine needs: every batch takes 100 fresh hosts.
    fn hosts(&self) -> usize {
        (self.latency_submits + 10 + CLIENTS * self.throughput_per_client) * PER_SUBMIT
    }
}

/// The `i`-th block of 100 simulated hosts, as one hostlist.
fn block(i: usize) -> String {
    format!("sim[{:06}-{:06}].dc1", i * PER_SUBMIT + 1, (i + 1) * PER_SUBMIT)
}

fn reboot(i: usize) -> pb::SubmitBatchRequest {
    pb::SubmitBatchRequest {
        action: Some(pb::Action { kind: Some(pb::action::Kind::Reboot(pb::action::Reboot { soft: false })) }),
        hosts: vec![block(i)],
        ..Default::default()
    }
}

/// An engine on a fresh SQLite file holding `hosts` simulated hosts.
async fn engine(path: &std::path::Path, hosts: usize, policy: &Policy) -> Engine {
    let store = Arc::new(
        SqlStore::open(&format!("sqlite://{}", path.display()), &OpenOptions::default(), Rules::default())
            .await
            .unwrap(),
    );
    let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
    for chunk in fleet_hosts(&fleet, 1, hosts).chunks(5_000) {
        store.host_upsert_many(chunk.to_vec()).await.unwrap();
    }
    let clock = Arc::new(SystemClock::new());
    Engine::builder(store.clone(), store, fleet, clock.clone(), IdGenerator::new(clock, 11))
        .authorizer(Arc::new(policy.authorizer()))
        .build()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Latencies {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn latencies(mut samples: Vec<Duration>) -> Latencies {
    samples.sort();
    Latencies { p50: percentile(&samples, 0.5), p99: percentile(&samples, 0.99), max: *samples.last().unwrap() }
}

fn line(name: &str, l: &Latencies) {
    println!("  {name:<44} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms", ms(l.p50), ms(l.p99), ms(l.max));
}

async fn connect(port: u16, tls: &TlsFiles) -> MaasClient<Channel> {
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls.client("localhost").unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap();
    MaasClient::new(channel)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full {
        Size { latency_submits: 500, throughput_per_client: 40 }
    } else {
        Size { latency_submits: 20, throughput_per_client: 2 }
    };
    let dir = std::env::temp_dir().join(format!("maas-bench-grpc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    maas::grpc::devcerts::write_dev_certs(&dir.join("certs"), &["bench"]).unwrap();
    let policy_file = dir.join("policy.json");
    std::fs::write(&policy_file, r#"{"members": {"bench": ["sre"]}, "grants": [{"group": "sre", "pools": ["web"]}]}"#)
        .unwrap();
    let policy = Policy::load(&policy_file).unwrap();
    let bench = policy.principal("bench", &[]);
    let certs = dir.join("certs");
    let client_files =
        TlsFiles { cert: certs.join("bench.pem"), key: certs.join("bench-key.pem"), ca: Some(certs.join("ca.pem")) };

    // The server: its own runtime and threads, as maasd.
    let server_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let served = server_rt.block_on(engine(&dir.join("api.db"), size.hosts(), &policy));
    let tls =
        TlsFiles { cert: certs.join("server.pem"), key: certs.join("server-key.pem"), ca: Some(certs.join("ca.pem")) }
            .server()
            .unwrap();
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = MaasService::new(served, Arc::new(policy.clone()), Authentication::ClientCertificate);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    server_rt.spawn(async move {
        let until = async {
            let _ = stopped.await;
        };
        maas::grpc::server::serve(listener, service, Some(tls), 4 << 20, until).await.unwrap();
    });

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        println!(
            "SubmitBatch, {PER_SUBMIT}-host reboot batches, SQLite, mTLS on loopback ({} sequential, {CLIENTS} clients x {}):",
            size.latency_submits, size.throughput_per_client
        );
        let local = engine(&dir.join("local.db"), size.hosts(), &policy).await;
        let mut client = connect(port, &client_files).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(
            Endpoint::from_shared(format!("https://localhost:{port}"))
                .unwrap()
                .tls_config(client_files.client("localhost").unwrap())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
        let mut next = 0usize;
        let mut take = || {
            next += 1;
            next - 1
        };
        // Warm both paths (connections, statement caches, page cache).
        for _ in 0..10 {
            let i = take();
            client.submit_batch(reboot(i)).await.unwrap();
            local.submit(&bench, &BatchRequest::new(Action::Reboot { soft: false }, [block(i)])).await.unwrap();
        }

        // 1. Latency. The two paths alternate, and which goes first alternates too: a
        //    commit right after another one waits on the same disk flush.
        let (mut grpc, mut inproc, mut check) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..size.latency_submits {
            let i = take();
            for path in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
                let t = Instant::now();
                if path == 0 {
                    let r = client.submit_batch(reboot(i)).await.unwrap().into_inner();
                    grpc.push(t.elapsed());
                    assert!(r.created && !r.batch_id.is_empty());
                } else {
                    // On a runtime worker, as the server runs its handlers.
                    let (local, bench) = (local.clone(), bench.clone());
                    let req = BatchRequest::new(Action::Reboot { soft: false }, [block(i)]);
                    tokio::spawn(async move { local.submit(&bench, &req).await.map(|_| ()) }).await.unwrap().unwrap();
                    inproc.push(t.elapsed());
                }
            }
            let t = Instant::now();
            health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
            check.push(t.elapsed());
        }
        let (grpc, inproc, check) = (latencies(grpc), latencies(inproc), latencies(check));
        line("gRPC SubmitBatch", &grpc);
        line("reference: Engine::submit in process", &inproc);
        line("reference: grpc.health.v1 Check", &check);
        println!(
            "  gRPC p99 / in-process p99 = {:.2}x; target p99 <= 10 ms: {}",
            grpc.p99.as_secs_f64() / inproc.p99.as_secs_f64(),
            if grpc.p99 <= Duration::from_millis(10) { "met" } else { "NOT met" }
        );

        // 2. Throughput: 16 clients on their own connections, against 16 in-process tasks.
        let first = take();
        let per = size.throughput_per_client;
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(connect(port, &client_files).await);
        }
        let t = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(c, mut client)| {
                tokio::spawn(async move {
                    for k in 0..per {
                        client.submit_batch(reboot(first + c * per + k)).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let grpc_rate = (CLIENTS * per) as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (local, bench) = (local.clone(), bench.clone());
                tokio::spawn(async move {
                    for k in 0..per {
                        let req = BatchRequest::new(Action::Reboot { soft: false }, [block(first + c * per + k)]);
                        local.submit(&bench, &req).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let local_rate = (CLIENTS * per) as f64 / t.elapsed().as_secs_f64();
        println!(
            "  {CLIENTS} concurrent gRPC clients: {grpc_rate:>8.1} submissions/s ({:.0} host-actions/s)",
            grpc_rate * PER_SUBMIT as f64
        );
        println!(
            "  reference: {CLIENTS} in-process submitters: {local_rate:>6.1} submissions/s; ratio {:.2}x",
            grpc_rate / local_rate
        );
    });
    let _ = stop.send(());
    drop(server_rt);
    let _ = std::fs::remove_dir_all(&dir);
}
