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
//! Both also measure the REST face: `POST /v1/batches` with the same batch as JSON, over
//! HTTP/1.1 keep-alive with the same client certificate, on maasd's HTTPS listener (the
//! same service and store as the gRPC server). Its p99 is reported against gRPC's in the
//! same run (target: at most 1.2x).
//!
//! The server runs in this process on a runtime of its own (2 threads), as `maasd` serves
//! it (`maas::grpc::server::serve`: health, reflection, size limit, RPC metrics layer).
//! Every batch names hosts no other batch holds. Under `cargo test --all-targets` this
//! runs at a small size; `cargo bench --bench grpc` runs it in full.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use maas::grpc::identity::Policy;
use maas::grpc::pb::{self, maas_client::MaasClient};
use maas::grpc::service::{Authentication, MaasService};
use maas::grpc::tls::TlsFiles;
use maas::ports::inventory::Inventory;
use maas::store::{OpenOptions, SqlStore};
use maas::*;
use maas_sim::fleet_hosts;
use maas_sim::{FaultPlan, SimFleet};
use rustls_pki_types::pem::PemObject;
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
        // Warm-up and latency take three blocks per round (gRPC, JSON, in process shares
        // gRPC's block on its own store); throughput two per client (gRPC, JSON).
        (2 * (self.latency_submits + 10) + 2 * CLIENTS * self.throughput_per_client) * PER_SUBMIT
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

/// A JSON client on its own HTTPS connection (HTTP/1.1 keep-alive), presenting the bench's
/// client certificate.
struct JsonClient {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    port: u16,
}

impl JsonClient {
    async fn connect(port: u16, tls: &TlsFiles) -> JsonClient {
        let roots = {
            let mut r = rustls::RootCertStore::empty();
            for c in rustls_pki_types::CertificateDer::pem_file_iter(tls.ca.as_ref().unwrap()).unwrap() {
                r.add(c.unwrap()).unwrap();
            }
            r
        };
        let chain: Vec<_> =
            rustls_pki_types::CertificateDer::pem_file_iter(&tls.cert).unwrap().map(|c| c.unwrap()).collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&tls.key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        JsonClient { sender, port }
    }

    /// `POST /v1/batches` of the `i`-th block; the answer's JSON.
    async fn submit(&mut self, i: usize) -> serde_json::Value {
        let body = serde_json::json!({"hosts": [block(i)], "action": {"reboot": {}}}).to_string();
        let request = hyper::Request::post("/v1/batches")
            .header("host", format!("localhost:{}", self.port))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
        serde_json::from_slice(&bytes).unwrap()
    }
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
    let tls = TlsFiles::server_in(&certs).server().unwrap();
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = MaasService::new(served, Arc::new(policy.clone()), Authentication::ClientCertificate);
    // The HTTPS listener (REST and console) on the same service, as maasd runs it.
    let http_tls = TlsFiles::server_in(&certs).rustls_server().unwrap();
    let http_listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let http_port = http_listener.local_addr().unwrap().port();
    let router = maas::grpc::https::router(maas::grpc::rest::Rest::new(service.clone(), 4 << 20));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopped_http = stopped.clone();
    server_rt.spawn(async move {
        let until = async move {
            let mut s = stopped_http;
            let _ = s.changed().await;
        };
        maas::grpc::https::serve(http_listener, router, Some(http_tls), until).await;
    });
    server_rt.spawn(async move {
        let until = async move {
            let mut s = stopped;
            let _ = s.changed().await;
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
        let mut json = JsonClient::connect(http_port, &client_files).await;
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
            json.submit(take()).await;
        }

        // 1. Latency. The paths take turns, and which goes first rotates too: a commit
        //    right after another one waits on the same disk flush.
        let (mut grpc, mut inproc, mut check, mut rest) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..size.latency_submits {
            let i = take();
            let j = take();
            let order = [[0, 1, 2], [1, 2, 0], [2, 0, 1]][round % 3];
            for path in order {
                let t = Instant::now();
                if path == 0 {
                    let r = client.submit_batch(reboot(i)).await.unwrap().into_inner();
                    grpc.push(t.elapsed());
                    assert!(r.created && !r.batch_id.is_empty());
                } else if path == 2 {
                    let r = json.submit(j).await;
                    rest.push(t.elapsed());
                    assert!(r["created"] == serde_json::json!(true), "{r}");
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
        let (grpc, inproc, check, rest) = (latencies(grpc), latencies(inproc), latencies(check), latencies(rest));
        line("gRPC SubmitBatch", &grpc);
        line("JSON POST /v1/batches", &rest);
        line("reference: Engine::submit in process", &inproc);
        line("reference: grpc.health.v1 Check", &check);
        println!(
            "  gRPC p99 / in-process p99 = {:.2}x; target p99 <= 10 ms: {}",
            grpc.p99.as_secs_f64() / inproc.p99.as_secs_f64(),
            if grpc.p99 <= Duration::from_millis(10) { "met" } else { "NOT met" }
        );
        let ratio = rest.p99.as_secs_f64() / grpc.p99.as_secs_f64();
        println!(
            "  JSON p99 / gRPC p99 = {ratio:.2}x (p50 {:.2}x); target <= 1.2x: {}",
            rest.p50.as_secs_f64() / grpc.p50.as_secs_f64(),
            if ratio <= 1.2 { "met" } else { "NOT met" }
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
        let first_json = first + CLIENTS * per;
        let mut json_clients = Vec::new();
        for _ in 0..CLIENTS {
            json_clients.push(JsonClient::connect(http_port, &client_files).await);
        }
        let t = Instant::now();
        let tasks: Vec<_> = json_clients
            .into_iter()
            .enumerate()
            .map(|(c, mut client)| {
                tokio::spawn(async move {
                    for k in 0..per {
                        client.submit(first_json + c * per + k).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let json_rate = (CLIENTS * per) as f64 / t.elapsed().as_secs_f64();
        println!(
            "  {CLIENTS} concurrent gRPC clients: {grpc_rate:>8.1} submissions/s ({:.0} host-actions/s)",
            grpc_rate * PER_SUBMIT as f64
        );
        println!(
            "  {CLIENTS} concurrent JSON clients: {json_rate:>8.1} submissions/s; {:.2}x gRPC's",
            json_rate / grpc_rate
        );
        println!(
            "  reference: {CLIENTS} in-process submitters: {local_rate:>6.1} submissions/s; ratio {:.2}x",
            grpc_rate / local_rate
        );
    });
    let _ = stop.send(true);
    drop(server_rt);
    let _ = std::fs::remove_dir_all(&dir);
}
