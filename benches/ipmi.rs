//! IPMI benchmark (a harness binary): the power status of every BMC of a fleet of real
//! OpenIPMI `ipmi_sim` BMCs, one loopback address each (127.0.1.N), read three ways in the
//! same run:
//! - through `IpmiPowerDriver` (all at once; the driver's concurrency limit applies),
//! - through FreeIPMI's `ipmipower -D LAN_2_0 -W opensesspriv` in one call for all hosts,
//! - through a sequential `ipmitool` loop (one process per BMC, as scripts often do).
//!
//! Targets (issue 5): no slower than ipmipower; at least 20x faster than the ipmitool loop.
//! Run: `cargo bench --bench ipmi` (100 and 500 BMCs; needs ipmi_sim, ipmipower and
//! ipmitool, which `./scripts/test` installs). Under `cargo test --all-targets` it runs
//! with 10 BMCs.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maas::ipmi::harness::{PASSWORD, SimFleet, USER};
use maas::ipmi::{IpmiConfig, IpmiPowerDriver, StaticSecrets};
use maas::ports::power::{PowerDriver, PowerState};

const PORT: u16 = 9623;
/// BMC calls in flight at once (the driver's global limit).
const MAX_CONCURRENT: usize = 32;

fn address(i: usize) -> String {
    format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250)
}

/// Our driver: every BMC's power status, concurrently. Returns (seconds, answers).
async fn ours(fleet: &SimFleet) -> (f64, usize) {
    let driver = Arc::new(
        IpmiPowerDriver::new(
            Arc::new(StaticSecrets::new(USER, PASSWORD)),
            IpmiConfig { max_concurrent: MAX_CONCURRENT, ..IpmiConfig::default() },
        )
        .expect("config"),
    );
    let started = Instant::now();
    let calls: Vec<_> = fleet
        .bmcs
        .iter()
        .map(|b| {
            let (driver, bmc) = (driver.clone(), b.endpoint("sim"));
            tokio::spawn(async move { driver.power_status(&bmc).await })
        })
        .collect();
    let mut answered = 0;
    for c in calls {
        if matches!(c.await.expect("task"), Ok(PowerState::On | PowerState::Off)) {
            answered += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    driver.close_all().await;
    (seconds, answered)
}

/// ipmipower, one call for the whole fleet. Returns (seconds, answers).
fn ipmipower(n: usize) -> (f64, usize) {
    let hosts: Vec<String> = (0..n).map(|i| format!("{}:{PORT}", address(i))).collect();
    let started = Instant::now();
    let out = Command::new("ipmipower")
        .args(["-D", "LAN_2_0", "-W", "opensesspriv", "-I", "3", "-u", USER, "-p", PASSWORD, "--stat"])
        .arg("-h")
        .arg(hosts.join(","))
        .output()
        .expect("ipmipower is installed (freeipmi-tools)");
    let seconds = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    (seconds, text.lines().filter(|l| l.ends_with(": on") || l.ends_with(": off")).count())
}

/// A sequential ipmitool loop. Returns (seconds, answers).
fn ipmitool_loop(n: usize) -> (f64, usize) {
    let started = Instant::now();
    let mut answered = 0;
    for i in 0..n {
        let out = Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", &address(i), "-p", &PORT.to_string(), "-U", USER, "-P", PASSWORD])
            .args(["chassis", "power", "status"])
            .output()
            .expect("ipmitool is installed");
        if String::from_utf8_lossy(&out.stdout).contains("Chassis Power is") {
            answered += 1;
        }
    }
    (started.elapsed().as_secs_f64(), answered)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[100, 500] } else { &[10] };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for &n in sizes {
        let listen: Vec<(String, u16)> = (0..n).map(|i| (address(i), PORT)).collect();
        let started = Instant::now();
        let fleet = SimFleet::start(&listen).unwrap_or_else(|e| panic!("{e}"));
        println!(
            "{n} ipmi_sim BMCs on 127.0.1.x:{PORT} started in {:.1} s; power status of all of them:",
            started.elapsed().as_secs_f64()
        );
        // Each contender opens its own sessions every time. The two fast ones alternate,
        // three rounds each, best kept, so neither gains from running on warmer simulators.
        let (mut t_ours, mut a_ours, mut t_power, mut a_power) = (f64::MAX, 0, f64::MAX, 0);
        for _ in 0..3 {
            let (t, a) = ipmipower(n);
            if t < t_power {
                (t_power, a_power) = (t, a);
            }
            std::thread::sleep(Duration::from_millis(200));
            let (t, a) = rt.block_on(ours(&fleet));
            if t < t_ours {
                (t_ours, a_ours) = (t, a);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let (t_tool, a_tool) = ipmitool_loop(n);
        println!(
            "  maas IpmiPowerDriver  : {t_ours:>7.2} s ({a_ours}/{n} answered; {MAX_CONCURRENT} calls in flight; best of 3)"
        );
        println!(
            "  ipmipower, one call   : {t_power:>7.2} s ({a_power}/{n} answered; best of 3) -> maas is {:.2}x its speed (target >= 1)",
            t_power / t_ours
        );
        println!(
            "  ipmitool, sequential  : {t_tool:>7.2} s ({a_tool}/{n} answered) -> maas is {:.1}x faster (target >= 20)",
            t_tool / t_ours
        );
        assert_eq!(a_ours, n, "every BMC answered our driver");
    }
}
