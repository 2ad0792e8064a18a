//! A fleet of real BMCs for tests and benchmarks: OpenIPMI `ipmi_sim` processes on loopback
//! (Debian package `openipmi`; see ../shared/IPMI-SIM.md), each with a fresh state
//! directory and a chassis-control program that records the power and boot state the BMC
//! is asked for in files, so a test can read exactly what a driver did. Dropping the fleet
//! kills every simulator by PID and removes its files.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maas_core::host::BmcEndpoint;

/// The user every simulated BMC has (administrator).
pub const USER: &str = "admin";
/// Its password.
pub const PASSWORD: &str = "maas-sim-secret";

/// What ipmi_sim runs for chassis requests (shell builtins only: ipmi_sim forks it for
/// every request, so its cost is in every contender's figures): `chassis.sh DIR get
/// power|boot` prints the recorded state; `set power 0|1`, `set reset 1`, `set shutdown 1` (an OS honouring ACPI
/// powers off) and `set boot DEV` record it.
const CHASSIS_SCRIPT: &str = r#"#!/bin/sh
dir="$1"; shift
echo "$*" >> "$dir/calls.log"
op="$1"; shift
case "$op" in
  get)
    for p in "$@"; do
      case "$p" in
        power) v=0; [ -r "$dir/power" ] && read -r v < "$dir/power"; echo "power:$v" ;;
        boot) v=default; [ -r "$dir/boot" ] && read -r v < "$dir/boot"; echo "boot:$v" ;;
      esac
    done ;;
  set)
    while [ $# -ge 2 ]; do
      case "$1" in
        power) echo "$2" > "$dir/power" ;;
        reset) echo 1 > "$dir/power" ;;
        shutdown) echo 0 > "$dir/power" ;;
        boot) echo "$2" > "$dir/boot" ;;
      esac
      shift 2
    done ;;
esac
exit 0
"#;

const EMULATOR: &str = "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n";

/// One simulated BMC.
#[derive(Debug)]
pub struct SimBmc {
    /// Where it listens.
    pub address: String,
    /// Its UDP port.
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl SimBmc {
    /// The endpoint, with `credentials_ref`.
    pub fn endpoint(&self, credentials_ref: &str) -> BmcEndpoint {
        BmcEndpoint::ipmi(self.address.clone(), self.port, credentials_ref)
    }

    /// The power state the chassis was last set to (`true`: on).
    pub fn recorded_power(&self) -> bool {
        std::fs::read_to_string(self.dir.join("power")).map(|s| s.trim() == "1").unwrap_or(false)
    }

    /// The chassis requests ipmi_sim ran, one per line (`get power`, `set power 1`, ...).
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls.log"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// Its directory (the chassis program's state, `calls.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the simulator process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Why a fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// `ipmi_sim` is not installed.
    #[error("ipmi_sim not found ({0}): install the Debian package openipmi (./scripts/test does)")]
    Missing(std::io::Error),
    /// Files could not be written.
    #[error("preparing {path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A simulator never answered.
    #[error("ipmi_sim on {bmc} did not answer an RMCP ping within 10 s; its log: {log}")]
    NoAnswer {
        /// `address:port`.
        bmc: String,
        /// The end of its log.
        log: String,
    },
}

/// A chassis-control program other than the recording one (see [`SimFleet::start_with`]).
pub struct Chassis<'a> {
    /// The program ipmi_sim runs as `PROGRAM BMC_DIR get|set ...`.
    pub program: &'a Path,
    /// Writes what BMC `i`'s program needs into its directory.
    pub prepare: &'a dyn Fn(usize, &Path) -> std::io::Result<()>,
}

/// Running simulators.
#[derive(Debug)]
pub struct SimFleet {
    /// The BMCs, in the order asked for.
    pub bmcs: Vec<SimBmc>,
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HarnessError + '_ {
    move |source| HarnessError::Io { path: path.display().to_string(), source }
}

/// An RMCP presence ping; true once a pong comes back.
fn answers(address: &str, port: u16) -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else { return false };
    if socket.set_read_timeout(Some(Duration::from_millis(200))).is_err() {
        return false;
    }
    let ping = [0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x01, 0x00, 0x00];
    if socket.send_to(&ping, (address, port)).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(socket.recv_from(&mut buf), Ok((n, _)) if n >= 8)
}

impl SimFleet {
    /// Starts one simulator per `(address, port)` and waits until each answers.
    pub fn start(listen: &[(String, u16)]) -> Result<SimFleet, HarnessError> {
        SimFleet::start_with(listen, None)
    }

    /// As [`SimFleet::start`], with `chassis` as every BMC's chassis-control program (a
    /// BMC in front of a real machine: the netboot lab's VMs); `prepare(i, dir)` writes
    /// what BMC `i`'s program reads into its directory before the simulator starts.
    pub fn start_with(listen: &[(String, u16)], chassis: Option<Chassis<'_>>) -> Result<SimFleet, HarnessError> {
        static FLEETS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = FLEETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("maas-ipmi-sim-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        let script = match &chassis {
            Some(c) => c.program.to_path_buf(),
            None => {
                let script = root.join("chassis.sh");
                std::fs::write(&script, CHASSIS_SCRIPT).map_err(io(&script))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).map_err(io(&script))?;
                script
            }
        };
        let emu = root.join("bmc.emu");
        std::fs::write(&emu, EMULATOR).map_err(io(&emu))?;
        let mut fleet = SimFleet { bmcs: Vec::with_capacity(listen.len()), root: root.clone() };
        for (i, (address, port)) in listen.iter().enumerate() {
            let dir = root.join(format!("bmc{i}"));
            let state = dir.join("state");
            std::fs::create_dir_all(&state).map_err(io(&state))?;
            if let Some(c) = &chassis {
                (c.prepare)(i, &dir).map_err(io(&dir))?;
            }
            let conf = dir.join("lan.conf");
            let text = format!(
                "name \"bmc{i}\"\nset_working_mc 0x20\n  startlan 1\n    addr {address} {port}\n    priv_limit admin\n    \
                 guid {:032x}\n  endlan\n  chassis_control \"{} {}\"\n  user 2 true \"{USER}\" \"{PASSWORD}\" admin 10 none md2 md5 straight\n",
                0xa000_0000_0000_0000_0000_0000_0000_0000u128 + i as u128,
                script.display(),
                dir.display()
            );
            std::fs::write(&conf, text).map_err(io(&conf))?;
            let log = std::fs::File::create(dir.join("sim.log")).map_err(io(&dir))?;
            let child = Command::new("ipmi_sim")
                .arg("-c")
                .arg(&conf)
                .arg("-f")
                .arg(&emu)
                .arg("-s")
                .arg(&state)
                .arg("-n")
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io(&dir))?)
                .stderr(log)
                .spawn()
                .map_err(HarnessError::Missing)?;
            fleet.bmcs.push(SimBmc { address: address.clone(), port: *port, dir, child });
        }
        for bmc in &fleet.bmcs {
            let started = Instant::now();
            while !answers(&bmc.address, bmc.port) {
                if started.elapsed() > Duration::from_secs(10) {
                    let log = std::fs::read_to_string(bmc.dir.join("sim.log")).unwrap_or_default();
                    let tail: String = log.chars().rev().take(400).collect::<String>().chars().rev().collect();
                    return Err(HarnessError::NoAnswer { bmc: format!("{}:{}", bmc.address, bmc.port), log: tail });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(fleet)
    }

    /// `n` simulators on 127.0.0.1, on free UDP ports.
    pub fn start_local(n: usize) -> Result<SimFleet, HarnessError> {
        let mut listen = Vec::with_capacity(n);
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let socket = UdpSocket::bind("127.0.0.1:0").map_err(HarnessError::Missing)?;
            let port = socket.local_addr().map_err(HarnessError::Missing)?.port();
            held.push(socket);
            listen.push(("127.0.0.1".to_string(), port));
        }
        drop(held);
        SimFleet::start(&listen)
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        for bmc in &mut self.bmcs {
            let _ = bmc.child.kill();
            let _ = bmc.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
