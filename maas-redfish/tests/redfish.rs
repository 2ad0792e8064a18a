//! The PowerDriver suite and the Redfish behaviours against real services on loopback:
//! `sushy-emulator` (sushy-tools from PyPI, installed by `./scripts/test`) over HTTPS with
//! and without authentication, and the harness's stand-in for what the emulator does not
//! do (sessions, ETags, task monitors, slowness).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use maas_core::host::{BmcEndpoint, BmcTls};
use maas_core::ports::power::{BootDevice, PowerDriver, PowerError, PowerOp, PowerState};
use maas_core::ports::services::{Credentials, Secrets, SecretsError};
use maas_redfish::harness::{BmcPki, PASSWORD, StandIn, StandInConfig, Sushy, USER, free_port, serve_files};
use maas_redfish::{RedfishConfig, RedfishPowerDriver, TrustConfig};
use maas_sim::testkit::power::{PowerFixture, exercise, wait_for};

/// "good" has the emulators' credentials, "bad" a wrong password.
struct TestSecrets(HashMap<&'static str, (&'static str, &'static str)>);

#[async_trait]
impl Secrets for TestSecrets {
    async fn credentials(&self, reference: &str) -> Result<Credentials, SecretsError> {
        let (u, p) = self
            .0
            .get(reference)
            .ok_or_else(|| SecretsError { reference: reference.into(), detail: "unknown".into() })?;
        Ok(Credentials::new(*u, *p))
    }
}

fn secrets() -> Arc<TestSecrets> {
    Arc::new(TestSecrets(HashMap::from([("good", (USER, PASSWORD)), ("bad", (USER, "not-the-password"))])))
}

fn pki(name: &str) -> BmcPki {
    let dir = std::env::temp_dir().join(format!("maas-redfish-{}-{name}", std::process::id()));
    BmcPki::new(&dir).unwrap_or_else(|e| panic!("{e}"))
}

fn config(pki: &BmcPki) -> RedfishConfig {
    RedfishConfig {
        request_timeout: Duration::from_secs(5),
        deadline: Duration::from_secs(40),
        backoff: Duration::from_millis(50),
        poll_interval: Duration::from_millis(200),
        trust: TrustConfig { ca_file: Some(pki.ca_file.clone()), bundles: HashMap::new() },
        ..RedfishConfig::default()
    }
}

fn driver(pki: &BmcPki) -> Arc<RedfishPowerDriver> {
    Arc::new(RedfishPowerDriver::new(secrets(), config(pki)).expect("valid config"))
}

fn silent_endpoint() -> BmcEndpoint {
    BmcEndpoint::redfish("127.0.0.1", free_port().unwrap(), "good")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_driver_suite_passes_against_sushy_emulator() {
    let pki = Arc::new(pki("suite"));
    let emulators: Arc<Mutex<Vec<Sushy>>> = Arc::default();
    let kept = emulators.clone();
    exercise(
        move || {
            let (emulators, pki) = (kept.clone(), pki.clone());
            async move {
                // Two systems behind one authenticating BMC: each host names its system.
                let sushy = Sushy::start(&pki, 2, true).unwrap_or_else(|e| panic!("{e}"));
                let hosts = (0..2).map(|i| sushy.endpoint(i, "good", BmcTls::Verify)).collect();
                let bad_credentials = sushy.endpoint(0, "bad", BmcTls::Verify);
                emulators.lock().unwrap().push(sushy);
                PowerFixture { driver: driver(&pki), hosts, unreachable: silent_endpoint(), bad_credentials }
            }
        },
        |name| println!("sushy-emulator: {name} ok"),
    )
    .await;
    println!("sushy-emulator: PowerDriver suite passed against {} emulators", emulators.lock().unwrap().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_without_power_cycle_is_cycled_off_then_on() {
    let pki = pki("cycle");
    // The emulator's fake system offers no PowerCycle.
    let sushy = Sushy::start(&pki, 1, false).unwrap_or_else(|e| panic!("{e}"));
    let (d, bmc) = (driver(&pki), sushy.endpoint(0, "good", BmcTls::Verify));
    d.power(&bmc, PowerOp::On).await.unwrap();
    wait_for(d.as_ref(), &bmc, PowerState::On).await;
    let report = d.power(&bmc, PowerOp::Cycle).await.unwrap();
    assert_eq!((report.before, report.sent), (PowerState::On, Some(PowerOp::Cycle)));
    wait_for(d.as_ref(), &bmc, PowerState::On).await;
    assert!(!sushy.log_text().contains("\" 501 "), "a reset type was refused:\n{}", sushy.log_text());
    // The same against the stand-in, which counts what it was sent.
    let standin =
        StandIn::start(&pki, StandInConfig { power_cycle: false, task_polls: 0, ..Default::default() }).await.unwrap();
    let bmc = standin.endpoint("good", BmcTls::Verify);
    standin.set_power(true);
    d.power(&bmc, PowerOp::Cycle).await.unwrap();
    assert_eq!(*standin.counters.resets.lock().unwrap(), ["ForceOff", "On"]);
    assert!(standin.power_on());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_reused_made_again_when_forgotten_and_deleted_on_close() {
    let pki = pki("sessions");
    let standin = StandIn::start(&pki, StandInConfig::default()).await.unwrap();
    let (d, bmc) = (driver(&pki), standin.endpoint("good", BmcTls::Verify));
    for _ in 0..10 {
        assert_eq!(d.power_status(&bmc).await.unwrap(), PowerState::Off);
    }
    assert_eq!(standin.counters.logins.load(Ordering::Relaxed), 1, "one session, reused");
    assert_eq!(d.open_sessions().await, 1);
    // The BMC forgets it (expiry, a BMC reset): the next call logs in again, once.
    standin.expire_sessions();
    assert_eq!(d.power_status(&bmc).await.unwrap(), PowerState::Off);
    assert_eq!(standin.counters.logins.load(Ordering::Relaxed), 2);
    assert_eq!(standin.counters.unauthorized.load(Ordering::Relaxed), 1);
    d.close_all().await;
    assert_eq!((standin.sessions(), d.open_sessions().await), (0, 0), "sessions deleted on close");
    assert_eq!(standin.counters.logouts.load(Ordering::Relaxed), 1);
    // A BMC that closes every connection: the session is still deleted on close.
    let closing = StandIn::start(&pki, StandInConfig { close_connections: true, ..Default::default() }).await.unwrap();
    let bmc = closing.endpoint("good", BmcTls::Verify);
    for _ in 0..3 {
        assert_eq!(d.power_status(&bmc).await.unwrap(), PowerState::Off);
    }
    assert_eq!((closing.counters.logins.load(Ordering::Relaxed), closing.sessions()), (1, 1));
    d.close_all().await;
    assert_eq!((closing.counters.logouts.load(Ordering::Relaxed), closing.sessions()), (1, 0));
    // The emulator offers no SessionService: basic auth, no session.
    let sushy = Sushy::start(&pki, 1, true).unwrap_or_else(|e| panic!("{e}"));
    let bmc = sushy.endpoint(0, "good", BmcTls::Verify);
    assert_eq!(d.power_status(&bmc).await.unwrap(), PowerState::Off);
    assert_eq!(d.open_sessions().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_followed_and_boot_overrides_carry_fresh_etags() {
    let pki = pki("tasks");
    let standin =
        StandIn::start(&pki, StandInConfig { task_polls: 3, stale_etags: 1, ..Default::default() }).await.unwrap();
    let (d, bmc) = (driver(&pki), standin.endpoint("good", BmcTls::Verify));
    let report = d.power(&bmc, PowerOp::On).await.unwrap();
    assert_eq!(report.sent, Some(PowerOp::On));
    // The stand-in powers on when the task completes: the call returned after it did.
    assert!(standin.power_on(), "power returned before its task ended");
    assert_eq!(standin.counters.task_polls.load(Ordering::Relaxed), 3);
    let report = d.power(&bmc, PowerOp::Cycle).await.unwrap();
    assert_eq!(report.sent, Some(PowerOp::Cycle));
    assert_eq!(standin.counters.resets.lock().unwrap().last().map(String::as_str), Some("PowerCycle"));
    // The first PATCH finds its ETag stale (412); the driver reads a fresh one and sends again.
    d.set_boot_device(&bmc, BootDevice::Pxe, false).await.unwrap();
    assert_eq!(standin.boot(), ("Pxe".to_string(), "Once".to_string()));
    assert_eq!(standin.counters.etag_refusals.load(Ordering::Relaxed), 1);
    assert_eq!(d.boot_device(&bmc).await.unwrap(), BootDevice::Pxe);
    d.set_boot_device(&bmc, BootDevice::Disk, true).await.unwrap();
    assert_eq!(standin.boot(), ("Hdd".to_string(), "Continuous".to_string()));
    d.set_boot_device(&bmc, BootDevice::Default, false).await.unwrap();
    assert_eq!(d.boot_device(&bmc).await.unwrap(), BootDevice::Default);
    // A change made behind the driver's back is what the next read reports.
    standin.set_power(false);
    assert_eq!(d.power_status(&bmc).await.unwrap(), PowerState::Off);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_checked_as_the_inventory_says() {
    let pki = pki("tls");
    let other = self::pki("tls-other");
    let sushy = Sushy::start(&pki, 1, false).unwrap_or_else(|e| panic!("{e}"));
    // A driver whose default CA is not the one that issued the BMC's certificate.
    let stranger = driver(&other);
    let err = stranger.power_status(&sushy.endpoint(0, "good", BmcTls::Verify)).await.unwrap_err();
    assert!(matches!(err, PowerError::Certificate { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("TLS certificate refused"), "{err}");
    // The right pin passes where the CA does not; a wrong pin is refused, naming both.
    assert_eq!(stranger.power_status(&sushy.endpoint(0, "good", pki.pin())).await.unwrap(), PowerState::Off);
    let err = stranger.power_status(&sushy.endpoint(0, "good", other.pin())).await.unwrap_err();
    assert!(err.to_string().contains("is not the pinned"), "{err}");
    // A named bundle; an unknown name is refused, naming the known ones.
    let bundles = RedfishConfig {
        trust: TrustConfig {
            ca_file: Some(other.ca_file.clone()),
            bundles: HashMap::from([("dc1".to_string(), pki.ca_file.clone())]),
        },
        ..config(&pki)
    };
    let named = RedfishPowerDriver::new(secrets(), bundles).unwrap();
    let dc1 = sushy.endpoint(0, "good", BmcTls::Bundle("dc1".into()));
    assert_eq!(named.power_status(&dc1).await.unwrap(), PowerState::Off);
    let err = named.power_status(&sushy.endpoint(0, "good", BmcTls::Bundle("dc9".into()))).await.unwrap_err();
    assert!(err.to_string().contains("no CA bundle named \"dc9\" is configured (known: dc1)"), "{err}");
    // insecure: explicit, and it connects.
    assert_eq!(stranger.power_status(&sushy.endpoint(0, "good", BmcTls::Insecure)).await.unwrap(), PowerState::Off);
    // A CA file that is not there is refused when the driver is made.
    let missing = RedfishConfig {
        trust: TrustConfig { ca_file: Some("/nonexistent/ca.pem".into()), bundles: HashMap::new() },
        ..RedfishConfig::default()
    };
    let err = RedfishPowerDriver::new(secrets(), missing).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_not_retried() {
    let pki = pki("auth");
    let standin = StandIn::start(&pki, StandInConfig::default()).await.unwrap();
    let d = driver(&pki);
    let bad = standin.endpoint("bad", BmcTls::Verify);
    let err = d.power(&bad, PowerOp::On).await.unwrap_err();
    assert!(matches!(err, PowerError::Authentication { .. }), "{err}");
    // The root and one login attempt, nothing more.
    assert_eq!(standin.counters.requests.load(Ordering::Relaxed), 2);
    // Asked again at once with the same credentials: refused without asking the BMC.
    for _ in 0..5 {
        assert!(matches!(d.power_status(&bad).await, Err(PowerError::Authentication { .. })));
    }
    assert_eq!(standin.counters.requests.load(Ordering::Relaxed), 2, "no retry storm");
    assert!(standin.counters.resets.lock().unwrap().is_empty());
    // Basic auth (the emulator): refused the same way.
    let sushy = Sushy::start(&pki, 1, true).unwrap_or_else(|e| panic!("{e}"));
    let err = d.power_status(&sushy.endpoint(0, "bad", BmcTls::Verify)).await.unwrap_err();
    assert!(matches!(err, PowerError::Authentication { .. }), "{err}");
    assert!(!err.to_string().contains(PASSWORD) && !err.to_string().contains("not-the-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_bmc_meets_the_deadline() {
    let pki = pki("slow");
    let standin = StandIn::start(&pki, StandInConfig::default()).await.unwrap();
    standin.set_delay(Duration::from_secs(5));
    let slow = RedfishConfig {
        request_timeout: Duration::from_millis(400),
        deadline: Duration::from_millis(1500),
        ..config(&pki)
    };
    let d = RedfishPowerDriver::new(secrets(), slow).unwrap();
    let started = Instant::now();
    let err = d.power_status(&standin.endpoint("good", BmcTls::Verify)).await.unwrap_err();
    assert!(matches!(err, PowerError::Timeout { .. }), "{err}");
    assert!(err.is_retryable());
    // Bounded by the deadline (and a margin for a loaded machine), not by the BMC.
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_media_is_inserted_verified_and_ejected() {
    let pki = pki("media");
    let iso_dir = pki.dir.join("iso");
    std::fs::create_dir_all(&iso_dir).unwrap();
    std::fs::write(iso_dir.join("installer.iso"), b"not really an ISO, but bytes the BMC downloads").unwrap();
    let (base, files) = serve_files(iso_dir).await.unwrap();
    let sushy = Sushy::start(&pki, 1, true).unwrap_or_else(|e| panic!("{e}"));
    let (d, bmc) = (driver(&pki), sushy.endpoint(0, "good", BmcTls::Verify));
    let url = format!("{base}/installer.iso");
    d.insert_media(&bmc, &url).await.unwrap();
    // Inserting what is inserted changes nothing; booting from it is a boot override.
    d.insert_media(&bmc, &url).await.unwrap();
    d.set_boot_device(&bmc, BootDevice::Cd, false).await.unwrap();
    assert_eq!(d.boot_device(&bmc).await.unwrap(), BootDevice::Cd);
    d.eject_media(&bmc).await.unwrap();
    d.eject_media(&bmc).await.unwrap(); // an empty drive: nothing to do
    // A URL the BMC cannot fetch is refused, and says so.
    let err = d.insert_media(&bmc, &format!("{base}/missing.iso")).await.unwrap_err();
    assert!(matches!(err, PowerError::Refused { .. }), "{err}");
    let log = sushy.log_text();
    assert!(log.contains("VirtualMedia.InsertMedia"), "{log}");
    assert!(log.contains("VirtualMedia.EjectMedia"), "{log}");
    files.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_answers_are_waited_out_and_calls_to_one_bmc_are_paced() {
    let pki = pki("busy");
    let standin = StandIn::start(&pki, StandInConfig { busy_reads: 2, ..Default::default() }).await.unwrap();
    let bmc = standin.endpoint("good", BmcTls::Verify);
    let interval = Duration::from_millis(50);
    let d =
        Arc::new(RedfishPowerDriver::new(secrets(), RedfishConfig { min_interval: interval, ..config(&pki) }).unwrap());
    // Two 503s with Retry-After: 1, then the answer, within one call.
    let started = Instant::now();
    assert_eq!(d.power_status(&bmc).await.unwrap(), PowerState::Off);
    assert!(started.elapsed() >= Duration::from_secs(2), "Retry-After was not honoured: {:?}", started.elapsed());
    // A burst of ten shares one session, one request after another at least `interval` apart.
    let started = Instant::now();
    let burst: Vec<_> = (0..10)
        .map(|_| {
            let (d, bmc) = (d.clone(), bmc.clone());
            tokio::spawn(async move { d.power_status(&bmc).await })
        })
        .collect();
    for call in burst {
        assert_eq!(call.await.unwrap().unwrap(), PowerState::Off);
    }
    assert!(started.elapsed() >= interval * 10, "a burst of 10 took {:?}", started.elapsed());
    assert_eq!(standin.counters.logins.load(Ordering::Relaxed), 1);
    // A BMC that stays busy past the retries is a retryable `busy` error.
    let always = StandIn::start(&pki, StandInConfig { busy_reads: usize::MAX, ..Default::default() }).await.unwrap();
    let quick = RedfishConfig { retries: 1, ..config(&pki) };
    let err = RedfishPowerDriver::new(secrets(), quick)
        .unwrap()
        .power_status(&always.endpoint("good", BmcTls::Verify))
        .await
        .unwrap_err();
    assert!(matches!(err, PowerError::Busy { .. }) && err.is_retryable(), "{err}");
}

/// What a test's log subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_insecure_host_is_logged_at_every_connection_and_no_secret_is() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let pki = pki("insecure-log");
    let standin = StandIn::start(&pki, StandInConfig { close_connections: true, ..Default::default() }).await.unwrap();
    let d = driver(&pki);
    let bmc = standin.endpoint("good", BmcTls::Insecure);
    for _ in 0..3 {
        assert_eq!(d.power_status(&bmc).await.unwrap(), PowerState::Off);
    }
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let warnings = text.matches("without checking the BMC's TLS certificate").count();
    // The root, the login and three reads: a connection each, each logged.
    assert!(warnings >= 5, "{warnings} warnings:\n{text}");
    assert!(!text.contains(PASSWORD) && !text.contains("token-"), "{text}");
}
