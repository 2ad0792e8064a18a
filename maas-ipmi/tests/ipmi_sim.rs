//! The PowerDriver suite and agreement tests against real BMCs: OpenIPMI `ipmi_sim`
//! processes on loopback (installed by `./scripts/test`), checked with `ipmitool`.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use maas_core::host::BmcEndpoint;
use maas_core::ports::power::{BootDevice, PowerDriver, PowerError, PowerOp, PowerState};
use maas_core::ports::services::{Credentials, Secrets, SecretsError};
use maas_ipmi::harness::{PASSWORD, SimFleet, USER};
use maas_ipmi::{IpmiConfig, IpmiPowerDriver};
use maas_sim::testkit::power::{PowerFixture, exercise, wait_for};

/// "good" has the simulators' credentials, "bad" a wrong password.
struct TestSecrets(HashMap<&'static str, (&'static str, &'static str)>);

impl TestSecrets {
    fn new() -> Arc<Self> {
        Arc::new(TestSecrets(HashMap::from([("good", (USER, PASSWORD)), ("bad", (USER, "not-the-password"))])))
    }
}

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

fn config() -> IpmiConfig {
    IpmiConfig {
        packet_timeout: Duration::from_millis(500),
        deadline: Duration::from_secs(8),
        backoff: Duration::from_millis(50),
        ..IpmiConfig::default()
    }
}

fn driver() -> Arc<IpmiPowerDriver> {
    Arc::new(IpmiPowerDriver::new(TestSecrets::new(), config()).expect("valid config"))
}

/// A loopback port where nothing listens.
fn silent_endpoint() -> BmcEndpoint {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    drop(socket);
    BmcEndpoint::ipmi("127.0.0.1", port, "good")
}

fn ipmitool(bmc: &BmcEndpoint, args: &[&str]) -> String {
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", "3", "-H", &bmc.address, "-p", &bmc.port.to_string(), "-U", USER, "-P", PASSWORD])
        .args(args)
        .output()
        .expect("ipmitool is installed (./scripts/test installs it)");
    assert!(out.status.success(), "ipmitool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_driver_suite_passes_against_ipmi_sim() {
    let fleets: Arc<Mutex<Vec<SimFleet>>> = Arc::default();
    let kept = fleets.clone();
    let started = Arc::new(Mutex::new(0usize));
    let counted = started.clone();
    exercise(
        move || {
            let fleets = kept.clone();
            let counted = counted.clone();
            async move {
                let fleet = SimFleet::start_local(2).unwrap_or_else(|e| panic!("{e}"));
                *counted.lock().unwrap() += fleet.bmcs.len();
                let hosts = fleet.bmcs.iter().map(|b| b.endpoint("good")).collect();
                let bad_credentials = fleet.bmcs[0].endpoint("bad");
                fleets.lock().unwrap().push(fleet);
                PowerFixture { driver: driver(), hosts, unreachable: silent_endpoint(), bad_credentials }
            }
        },
        |name| println!("ipmi_sim: {name} ok"),
    )
    .await;
    println!("ipmi_sim: PowerDriver suite passed against {} simulated BMCs", started.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmitool_agrees_with_the_driver_both_ways() {
    let mut fleet = SimFleet::start_local(1).unwrap_or_else(|e| panic!("{e}"));
    let bmc = fleet.bmcs[0].endpoint("good");
    let d = driver();
    // We set, ipmitool and the chassis record read.
    d.power(&bmc, PowerOp::On).await.unwrap();
    wait_for(d.as_ref(), &bmc, PowerState::On).await;
    assert!(ipmitool(&bmc, &["chassis", "power", "status"]).contains("is on"));
    assert!(fleet.bmcs[0].recorded_power());
    d.set_boot_device(&bmc, BootDevice::Pxe, false).await.unwrap();
    let param = ipmitool(&bmc, &["chassis", "bootparam", "get", "5"]);
    assert!(param.contains("Force PXE"), "{param}");
    assert!(param.contains("next boot"), "{param}");
    assert!(fleet.bmcs[0].calls().iter().any(|c| c == "set boot pxe"), "{:?}", fleet.bmcs[0].calls());
    // ipmitool sets, we read.
    ipmitool(&bmc, &["chassis", "power", "off"]);
    wait_for(d.as_ref(), &bmc, PowerState::Off).await;
    ipmitool(&bmc, &["chassis", "bootdev", "disk"]);
    assert_eq!(d.boot_device(&bmc).await.unwrap_or(BootDevice::Default), BootDevice::Disk);
    assert!(fleet.bmcs[0].alive(), "the simulator stayed up");
    d.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_reused_and_closed_never_leaked() {
    let fleet = SimFleet::start_local(1).unwrap_or_else(|e| panic!("{e}"));
    let bmc = fleet.bmcs[0].endpoint("good");
    let d = driver();
    for _ in 0..20 {
        d.power_status(&bmc).await.unwrap();
    }
    assert_eq!(d.open_sessions().await, 1, "one session per BMC, reused");
    d.close_all().await;
    assert_eq!(d.open_sessions().await, 0);
    // A BMC allows 63 sessions: 80 drivers in a row, each closing its session, must all
    // get in (a leak would lock the BMC for ~30 s after the 63rd).
    for i in 0..80 {
        let d = driver();
        d.power_status(&bmc).await.unwrap_or_else(|e| panic!("driver {i}: {e}"));
        d.close_all().await;
    }
}

#[tokio::test]
async fn other_cipher_suites_are_refused_cleanly() {
    let err =
        IpmiPowerDriver::new(TestSecrets::new(), IpmiConfig { cipher_suite: 17, ..IpmiConfig::default() }).unwrap_err();
    assert!(matches!(err, PowerError::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("cipher suite 17"), "{err}");
}

/// A UDP relay on loopback in front of a BMC that drops one packet in `one_in`, at random
/// (seeded), in each direction: a lossy network. Runs on a thread of its own for a minute.
fn lossy_relay(target: std::net::SocketAddr, one_in: u64) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::net::UdpSocket;
    let front = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = front.local_addr().unwrap().port();
    front.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let back = UdpSocket::bind("127.0.0.1:0").unwrap();
    back.connect(target).unwrap();
    back.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = dropped.clone();
    std::thread::spawn(move || {
        let (mut client, mut rng) = (None, 0x9e37_79b9_7f4a_7c15u64);
        let mut lose = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let lost = rng % one_in == 0;
            counter.fetch_add(usize::from(lost), std::sync::atomic::Ordering::Relaxed);
            lost
        };
        let mut buf = [0u8; 2048];
        // Bounded: the relay outlives any test using it by at most a minute.
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < until {
            if let Ok((n, from)) = front.recv_from(&mut buf) {
                client = Some(from);
                if !lose() {
                    let _ = back.send(&buf[..n]);
                }
            }
            if let (Ok(n), Some(c)) = (back.recv(&mut buf), client)
                && !lose()
            {
                let _ = front.send_to(&buf[..n], c);
            }
        }
    });
    (port, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_packets_are_retried_within_the_deadline() {
    let fleet = SimFleet::start_local(1).unwrap_or_else(|e| panic!("{e}"));
    let real = &fleet.bmcs[0];
    let target: std::net::SocketAddr = format!("{}:{}", real.address, real.port).parse().unwrap();
    let (port, dropped) = lossy_relay(target, 20);
    let bmc = BmcEndpoint::ipmi("127.0.0.1", port, "good");
    let d = Arc::new(
        IpmiPowerDriver::new(
            TestSecrets::new(),
            IpmiConfig {
                packet_timeout: Duration::from_millis(200),
                deadline: Duration::from_secs(20),
                retries: 10,
                backoff: Duration::from_millis(20),
                ..IpmiConfig::default()
            },
        )
        .unwrap(),
    );
    // One packet in twenty is lost, either way (a session's opening is ~14 packets, so a
    // third of the attempts lose one): every call still answers, by reopening the session
    // and retrying.
    for i in 0..30 {
        let state = d.power_status(&bmc).await.unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert_eq!(state, PowerState::Off);
    }
    d.power(&bmc, PowerOp::On).await.unwrap();
    wait_for(d.as_ref(), &bmc, PowerState::On).await;
    assert!(real.recorded_power());
    let lost = dropped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(lost > 3, "the relay dropped only {lost} packets: the test proves nothing");
    println!("ipmi_sim: 31 calls answered through a relay that dropped {lost} packets");
    d.close_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_one_bmc_are_serialized_with_the_minimum_interval() {
    let fleet = SimFleet::start_local(1).unwrap_or_else(|e| panic!("{e}"));
    let bmc = fleet.bmcs[0].endpoint("good");
    let interval = Duration::from_millis(50);
    let d =
        Arc::new(IpmiPowerDriver::new(TestSecrets::new(), IpmiConfig { min_interval: interval, ..config() }).unwrap());
    d.power_status(&bmc).await.unwrap();
    let started = std::time::Instant::now();
    let burst: Vec<_> = (0..10)
        .map(|_| {
            let (d, bmc) = (d.clone(), bmc.clone());
            tokio::spawn(async move { d.power_status(&bmc).await })
        })
        .collect();
    for call in burst {
        call.await.unwrap().unwrap();
    }
    // A lower bound only: ten commands one after another, each at least `interval` after
    // the previous one, however fast the machine is.
    assert!(started.elapsed() >= interval * 10, "a burst of 10 took {:?}", started.elapsed());
    assert_eq!(d.open_sessions().await, 1, "the burst shared one session");
    d.close_all().await;
}
