//! Redfish benchmark (a harness binary): the power status of 100 emulated Redfish systems
//! — `sushy-emulator --fake` processes over HTTPS with basic auth, 10 systems behind each
//! — read two ways in the same run:
//! - through `RedfishPowerDriver` (all at once: the driver serializes calls per BMC and
//!   runs the BMCs concurrently),
//! - through a sequential loop of the same requests with a plain HTTP client (hyper over
//!   rustls, one `GET /redfish/v1/Systems/<id>` per system, basic auth), as a script does.
//!
//! The driver is timed warm (its logins and system paths found by a first round), the loop
//! needs none of that. Three rounds each, alternating, best kept; the ratio is reported.
//! Run: `cargo bench --bench redfish` (needs `sushy-emulator` on PATH, which
//! `./scripts/test` installs in target/pyenv). Under `cargo test --all-targets` it runs
//! with 2 emulators of 5 systems.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use maas::host::{BmcEndpoint, BmcTls};
use maas::ports::power::{PowerDriver, PowerState};
use maas::ports::services::{Credentials, Secrets, SecretsError};
use maas::redfish::harness::{BmcPki, PASSWORD, Sushy, USER};
use maas::redfish::{RedfishConfig, RedfishPowerDriver, TrustConfig};
use rustls_pki_types::pem::PemObject;

struct Fixed;

#[async_trait::async_trait]
impl Secrets for Fixed {
    async fn credentials(&self, _reference: &str) -> Result<Credentials, SecretsError> {
        Ok(Credentials::new(USER, PASSWORD))
    }
}

/// Every system's power status through the driver, at once. Returns (seconds, answers).
async fn ours(driver: &Arc<RedfishPowerDriver>, systems: &[BmcEndpoint]) -> (f64, usize) {
    let started = Instant::now();
    let calls: Vec<_> = systems
        .iter()
        .map(|bmc| {
            let (driver, bmc) = (driver.clone(), bmc.clone());
            tokio::spawn(async move { driver.power_status(&bmc).await })
        })
        .collect();
    let mut answered = 0;
    for c in calls {
        if matches!(c.await.expect("task"), Ok(PowerState::On | PowerState::Off)) {
            answered += 1;
        }
    }
    (started.elapsed().as_secs_f64(), answered)
}

/// The same requests one after another with a plain client. Returns (seconds, answers).
async fn plain_loop(tls: Arc<rustls::ClientConfig>, systems: &[(u16, String)]) -> (f64, usize) {
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}")));
    let started = Instant::now();
    let mut answered = 0;
    for (port, id) in systems {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", *port)).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let stream = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await.expect("TLS");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("HTTP");
        tokio::spawn(connection);
        let request = hyper::Request::get(format!("/redfish/v1/Systems/{id}"))
            .header("Host", format!("127.0.0.1:{port}"))
            .header("Authorization", &auth)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("answer");
        let body = response.into_body().collect().await.expect("body").to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if matches!(json["PowerState"].as_str(), Some("On" | "Off")) {
            answered += 1;
        }
    }
    (started.elapsed().as_secs_f64(), answered)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (emulators, per) = if full { (10, 10) } else { (2, 5) };
    let n = emulators * per;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pki = BmcPki::new(&std::env::temp_dir().join(format!("maas-bench-redfish-{}", std::process::id())))
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let fleet: Vec<Sushy> =
        (0..emulators).map(|_| Sushy::start(&pki, per, true).unwrap_or_else(|e| panic!("{e}"))).collect();
    println!(
        "{n} Redfish systems ({emulators} sushy-emulator processes x {per}, HTTPS, basic auth) started in {:.1} s; \
         power status of all of them:",
        started.elapsed().as_secs_f64()
    );
    let endpoints: Vec<BmcEndpoint> =
        fleet.iter().flat_map(|s| (0..per).map(move |i| s.endpoint(i, "bench", BmcTls::Verify))).collect();
    let plain: Vec<(u16, String)> =
        fleet.iter().flat_map(|s| s.systems.iter().map(move |id| (s.port, id.clone()))).collect();
    let config = RedfishConfig {
        trust: TrustConfig { ca_file: Some(pki.ca_file.clone()), bundles: HashMap::new() },
        ..RedfishConfig::default()
    };
    let driver = Arc::new(RedfishPowerDriver::new(Arc::new(Fixed), config).expect("config"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(&pki.ca_file).expect("CA").flatten() {
        roots.add(cert).expect("CA cert");
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    // Warm-up: the driver finds each BMC's root, login and system paths once.
    let (cold, _) = rt.block_on(ours(&driver, &endpoints));
    let (mut t_ours, mut a_ours, mut t_plain, mut a_plain) = (f64::MAX, 0, f64::MAX, 0);
    for _ in 0..3 {
        let (t, a) = rt.block_on(plain_loop(tls.clone(), &plain));
        if t < t_plain {
            (t_plain, a_plain) = (t, a);
        }
        let (t, a) = rt.block_on(ours(&driver, &endpoints));
        if t < t_ours {
            (t_ours, a_ours) = (t, a);
        }
    }
    println!(
        "  maas RedfishPowerDriver : {t_ours:>6.3} s ({a_ours}/{n} answered; best of 3; first, cold round {cold:.3} s)"
    );
    println!(
        "  plain client, sequential: {t_plain:>6.3} s ({a_plain}/{n} answered; best of 3) -> maas is {:.2}x faster",
        t_plain / t_ours
    );
    assert_eq!(a_ours, n, "every system answered the driver");
    assert_eq!(a_plain, n, "every system answered the plain client");
}
