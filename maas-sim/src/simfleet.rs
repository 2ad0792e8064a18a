//! A simulated fleet: a [`PowerDriver`] over simulated BMCs with seeded faults (timeouts,
//! busy BMCs, commands accepted but not applied), plus seeded install outcomes. It holds
//! the same driver suite as real IPMI, so the simulator is held to the real thing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use maas_core::host::BmcEndpoint;
use maas_core::ports::power::{BootDevice, PowerDriver, PowerError, PowerOp, PowerReport, PowerState, ProbeReport};
use maas_core::ports::services::PreparedBoot;
use maas_core::rng::SimRng;

/// Fault probabilities (0..=1) per BMC command, and install behaviour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultPlan {
    /// A command times out (nothing happens).
    pub timeout: f64,
    /// The BMC answers "busy" (nothing happens).
    pub busy: f64,
    /// A power command is accepted but the state does not change (verification catches it).
    pub wrong_state: f64,
    /// An install or wipe fails.
    pub install_failure: f64,
    /// Shortest install.
    pub install_min: Duration,
    /// Longest install.
    pub install_max: Duration,
}

impl FaultPlan {
    /// No faults; installs take 10 to 20 minutes.
    pub fn none() -> Self {
        FaultPlan {
            timeout: 0.0,
            busy: 0.0,
            wrong_state: 0.0,
            install_failure: 0.0,
            install_min: Duration::from_secs(600),
            install_max: Duration::from_secs(1200),
        }
    }
}

/// One simulated BMC's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimBmc {
    /// Chassis power.
    pub power: PowerState,
    /// Next boot device.
    pub boot: BootDevice,
    /// Whether the boot override persists.
    pub boot_persistent: bool,
    /// The credentials reference it accepts.
    pub credentials_ref: String,
    /// Whether it answers at all.
    pub reachable: bool,
    /// Commands that changed something.
    pub commands: u64,
    /// The ISO in its virtual CD/DVD drive (virtual media).
    pub media: Option<String>,
    /// How many times media was inserted.
    pub media_inserts: u64,
}

/// How a simulated install goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstallPlan {
    /// How long it takes.
    pub takes: Duration,
    /// Whether it succeeds.
    pub succeeds: bool,
}

/// A fleet of simulated BMCs, keyed by `address:port`.
#[derive(Debug)]
pub struct SimFleet {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    bmcs: HashMap<String, SimBmc>,
    rng: SimRng,
    faults: FaultPlan,
    /// How long each command takes, in real time (zero in simulations on a manual clock).
    latency: Duration,
}

fn key(bmc: &BmcEndpoint) -> String {
    format!("{}:{}", bmc.address, bmc.port)
}

impl SimFleet {
    /// An empty fleet whose faults are drawn from `seed`.
    pub fn new(seed: u64, faults: FaultPlan) -> Self {
        let inner = Inner { bmcs: HashMap::new(), rng: SimRng::seed_from_u64(seed), faults, latency: Duration::ZERO };
        SimFleet { inner: Mutex::new(inner) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or resets) a BMC, powered `power`, accepting `bmc.credentials_ref`.
    pub fn add_bmc(&self, bmc: &BmcEndpoint, power: PowerState) {
        self.lock().bmcs.insert(
            key(bmc),
            SimBmc {
                power,
                boot: BootDevice::Default,
                boot_persistent: false,
                credentials_ref: bmc.credentials_ref.clone(),
                reachable: true,
                commands: 0,
                media: None,
                media_inserts: 0,
            },
        );
    }

    /// Makes a BMC answer or go silent.
    pub fn set_reachable(&self, bmc: &BmcEndpoint, reachable: bool) {
        if let Some(b) = self.lock().bmcs.get_mut(&key(bmc)) {
            b.reachable = reachable;
        }
    }

    /// Makes every command take `latency` in real time (tokio's timer), as BMCs do: for
    /// real-time rehearsals with steps in flight (maasd's `sim_bmc_latency_ms`). Leave it
    /// zero under a manual clock.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Waits out the configured latency, if any.
    async fn answer_after_latency(&self) {
        let latency = self.lock().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    /// Replaces the fault plan (e.g. "faults stop" in a simulation).
    pub fn set_faults(&self, faults: FaultPlan) {
        self.lock().faults = faults;
    }

    /// A BMC's state.
    pub fn bmc(&self, bmc: &BmcEndpoint) -> Option<SimBmc> {
        self.lock().bmcs.get(&key(bmc)).cloned()
    }

    /// Draws how an install on a host goes.
    pub fn plan_install(&self) -> InstallPlan {
        let mut g = self.lock();
        let f = g.faults;
        let span = f.install_max.saturating_sub(f.install_min).as_millis() as u64;
        let takes = f.install_min + Duration::from_millis(g.rng.below(span + 1));
        let succeeds = !g.rng.chance(f.install_failure);
        InstallPlan { takes, succeeds }
    }

    /// Runs one command against a BMC: checks reachability, credentials and faults, then
    /// applies `f` (unless a fault swallows it).
    fn command<T>(
        &self,
        bmc: &BmcEndpoint,
        changes_power: bool,
        f: impl FnOnce(&mut SimBmc) -> T,
    ) -> Result<T, PowerError> {
        let mut g = self.lock();
        let Inner { bmcs, rng, faults, .. } = &mut *g;
        let name = key(bmc);
        let Some(b) = bmcs.get_mut(&name) else {
            return Err(PowerError::Unreachable { bmc: name, detail: "no BMC at this address".into() });
        };
        if !b.reachable {
            return Err(PowerError::Unreachable { bmc: name, detail: "no answer".into() });
        }
        if b.credentials_ref != bmc.credentials_ref {
            return Err(PowerError::Authentication { bmc: name });
        }
        if rng.chance(faults.timeout) {
            return Err(PowerError::Timeout { bmc: name, millis: 5_000 });
        }
        if rng.chance(faults.busy) {
            return Err(PowerError::Busy { bmc: name, detail: "node busy (0xc0)".into() });
        }
        if changes_power && rng.chance(faults.wrong_state) {
            // Accepted, then nothing happens: a real failure mode of tired BMCs.
            let mut scratch = b.clone();
            return Ok(f(&mut scratch));
        }
        Ok(f(b))
    }
}

#[async_trait]
impl PowerDriver for SimFleet {
    async fn power_status(&self, bmc: &BmcEndpoint) -> Result<PowerState, PowerError> {
        self.answer_after_latency().await;
        self.command(bmc, false, |b| b.power)
    }

    async fn power(&self, bmc: &BmcEndpoint, op: PowerOp) -> Result<PowerReport, PowerError> {
        self.answer_after_latency().await;
        self.command(bmc, true, |b| {
            let before = b.power;
            let sent = op.command_for(before);
            if sent.is_some() {
                b.power = op.target();
                b.commands += 1;
            }
            PowerReport { before, sent }
        })
    }

    async fn set_boot_device(&self, bmc: &BmcEndpoint, device: BootDevice, persistent: bool) -> Result<(), PowerError> {
        self.answer_after_latency().await;
        self.command(bmc, false, |b| {
            b.boot = device;
            b.boot_persistent = persistent;
            b.commands += 1;
        })
    }

    async fn boot_device(&self, bmc: &BmcEndpoint) -> Result<BootDevice, PowerError> {
        self.answer_after_latency().await;
        self.command(bmc, false, |b| b.boot)
    }

    async fn probe(&self, bmc: &BmcEndpoint) -> Result<ProbeReport, PowerError> {
        self.answer_after_latency().await;
        self.command(bmc, false, |b| ProbeReport { power: b.power, firmware: Some("maas-sim 1.0".into()) })
    }

    async fn insert_media(&self, bmc: &BmcEndpoint, image_url: &str) -> Result<(), PowerError> {
        self.answer_after_latency().await;
        self.command(bmc, false, |b| {
            if b.media.as_deref() != Some(image_url) {
                b.media = Some(image_url.to_string());
                b.media_inserts += 1;
                b.commands += 1;
            }
        })
    }

    async fn eject_media(&self, bmc: &BmcEndpoint) -> Result<(), PowerError> {
        self.answer_after_latency().await;
        self.command(bmc, false, |b| {
            if b.media.take().is_some() {
                b.commands += 1;
            }
        })
    }
}

/// The simulated fleet's installers, in real time: a [`Provisioner`] that, for each install
/// or wipe it is asked to prepare, draws an [`InstallPlan`] from the fleet and — once
/// [`SimInstaller::start`] runs — reports the outcome through the engine's callback after
/// the drawn time, as a real installer calls back. The drawn time runs from `prepare`, so
/// the callback can come before the engine has recorded the power cycle that started the
/// install (the job is not waiting yet): a refused callback is retried every second for up
/// to ten minutes, as installers do — a loaded machine may take many seconds to record a
/// power cycle, and a lost callback leaves the host waiting for its install deadline.
///
/// The deterministic simulator plays installers on its own clock instead; this is for
/// the real-time engines: `maasd` on a simulated fleet and the embedded Python engine.
#[derive(Debug)]
pub struct SimInstaller {
    fleet: std::sync::Arc<SimFleet>,
    sender: tokio::sync::mpsc::UnboundedSender<(PreparedBoot, InstallPlan)>,
    receiver: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<(PreparedBoot, InstallPlan)>>>,
}

impl SimInstaller {
    /// Installers for `fleet` (its fault plan says how long installs take and how often
    /// they fail).
    pub fn new(fleet: std::sync::Arc<SimFleet>) -> Self {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        SimInstaller { fleet, sender, receiver: Mutex::new(Some(receiver)) }
    }

    /// Starts calling back through `engine` (on the current tokio runtime). Abort the
    /// handle to stop; `None` if it was already started.
    pub fn start(&self, engine: maas_engine::Engine) -> Option<tokio::task::JoinHandle<()>> {
        let mut receiver = self.receiver.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        Some(tokio::spawn(async move {
            let mut installs = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    next = receiver.recv() => match next {
                        Some((boot, plan)) => {
                            installs.spawn(call_back(engine.clone(), boot, plan));
                        }
                        None => break,
                    },
                    Some(_) = installs.join_next(), if !installs.is_empty() => {}
                }
            }
        }))
    }
}

/// How many times (a second apart) a simulated installer or first boot reports before it
/// gives up: until the engine has recorded the step before the wait, however loaded.
const CALLBACK_PATIENCE: u32 = 600;

/// One simulated installer: waits out the install, then reports its outcome; after a
/// successful install of a reimage, the new OS reports its first boot.
async fn call_back(engine: maas_engine::Engine, boot: PreparedBoot, plan: InstallPlan) {
    tokio::time::sleep(plan.takes).await;
    let outcome = if plan.succeeds {
        maas_core::machine::JobOutcome::Succeeded
    } else {
        maas_core::machine::JobOutcome::Failed { error: "installer: no bootable disk".into(), retryable: false }
    };
    if !report(&engine, &boot.token, outcome, CALLBACK_PATIENCE).await || !plan.succeeds {
        return;
    }
    if let Some(first_boot) = &boot.first_boot_token {
        // The boot_disk step power-cycles the host first; the OS retries until it is heard.
        report(&engine, first_boot, maas_core::machine::JobOutcome::Succeeded, CALLBACK_PATIENCE).await;
    }
}

async fn report(
    engine: &maas_engine::Engine,
    token: &str,
    outcome: maas_core::machine::JobOutcome,
    tries: u32,
) -> bool {
    for _ in 0..tries {
        if engine.report_wait_result(token, outcome.clone()).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

#[async_trait]
impl maas_core::ports::services::Provisioner for SimInstaller {
    fn check(
        &self,
        _image: &maas_core::plan::BootImage,
        _hosts: &[&maas_core::host::Host],
        _params: &std::collections::BTreeMap<String, String>,
    ) -> Vec<maas_core::validate::Problem> {
        Vec::new()
    }

    fn images(&self) -> Vec<maas_core::ports::ImageSummary> {
        Vec::new()
    }

    async fn prepare(
        &self,
        _host: &maas_core::host::Host,
        boot: &PreparedBoot,
    ) -> Result<(), maas_core::ports::services::ProvisionError> {
        // The receiver only goes away with the runtime; then there is nobody to call back.
        let _ = self.sender.send((boot.clone(), self.fleet.plan_install()));
        Ok(())
    }

    async fn clear(
        &self,
        _host: &maas_core::names::Hostname,
    ) -> Result<(), maas_core::ports::services::ProvisionError> {
        Ok(())
    }

    fn media_url(
        &self,
        _host: &maas_core::host::Host,
        image: &maas_core::plan::BootImage,
    ) -> Result<String, maas_core::ports::services::ProvisionError> {
        Ok(crate::sim::sim_iso_url(image))
    }
}
