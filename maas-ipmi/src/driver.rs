//! `IpmiPowerDriver`: maas's `PowerDriver` over IPMI v2.0 RMCP+ (cipher suite 3).
//!
//! - ipmi-rs is blocking: every BMC exchange runs on tokio's blocking threads, under a
//!   global limit of concurrent BMC calls.
//! - One session per BMC, reused across calls and closed by [`IpmiPowerDriver::close_all`];
//!   calls to one BMC are serialized with a minimum interval between commands (BMCs fall
//!   over under bursts).
//! - Every call runs under a deadline. Lost packets (a timeout) and unreachable BMCs are
//!   retried with exponential backoff inside the deadline — for reads and idempotent
//!   requests always, for cycle, reset and soft off only while the session was still
//!   being opened (a lost answer to a cycle must not cause a second cycle).
//! - Credentials come from the `Secrets` seam per call that opens a session and are
//!   dropped (zeroed) right after; no error or log carries them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use maas_core::host::BmcEndpoint;
use maas_core::ports::power::{
    BootDevice, PowerDriver, PowerError, PowerOp, PowerReport, PowerState, ProbeReport, no_virtual_media,
};
use maas_core::ports::services::Secrets;
use tokio::sync::Semaphore;

use crate::commands::{ChassisControl, ControlAction, GetBootFlags, GetChassisStatus, SetBootFlags};
use crate::session::BmcSession;

/// The only cipher suite ipmi-rs implements (RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128).
pub const CIPHER_SUITE: u8 = 3;

/// How the driver talks to BMCs.
#[derive(Debug, Clone)]
pub struct IpmiConfig {
    /// RMCP+ cipher suite; only 3 is supported (others are refused by [`IpmiPowerDriver::new`]).
    pub cipher_suite: u8,
    /// How long one packet waits for its answer.
    pub packet_timeout: Duration,
    /// The whole call's deadline, retries included.
    pub deadline: Duration,
    /// Attempts after the first for retryable failures.
    pub retries: u32,
    /// The first retry's backoff (doubling after).
    pub backoff: Duration,
    /// BMC calls in flight at once, across all BMCs.
    pub max_concurrent: usize,
    /// The least time between two commands to one BMC.
    pub min_interval: Duration,
}

impl Default for IpmiConfig {
    fn default() -> Self {
        IpmiConfig {
            cipher_suite: CIPHER_SUITE,
            packet_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(20),
            retries: 3,
            backoff: Duration::from_millis(200),
            max_concurrent: 64,
            min_interval: Duration::from_millis(20),
        }
    }
}

#[derive(Default)]
struct Slot {
    session: Option<BmcSession>,
    last_command: Option<Instant>,
}

/// The IPMI `PowerDriver`.
pub struct IpmiPowerDriver {
    config: IpmiConfig,
    secrets: Arc<dyn Secrets>,
    permits: Arc<Semaphore>,
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl std::fmt::Debug for IpmiPowerDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpmiPowerDriver").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Whether a request may be sent again after a lost answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    Safe,
    OnlyBeforeSessionOpens,
}

impl IpmiPowerDriver {
    /// A driver resolving credentials through `secrets`. Refuses configurations it cannot
    /// honour (a cipher suite other than 3) with `PowerError::Unsupported`.
    pub fn new(secrets: Arc<dyn Secrets>, config: IpmiConfig) -> Result<Self, PowerError> {
        if config.cipher_suite != CIPHER_SUITE {
            return Err(PowerError::Unsupported(format!(
                "RMCP+ cipher suite {} (only cipher suite {CIPHER_SUITE} is implemented)",
                config.cipher_suite
            )));
        }
        if config.max_concurrent == 0 {
            return Err(PowerError::Unsupported("max_concurrent must be at least 1".into()));
        }
        Ok(IpmiPowerDriver {
            permits: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            secrets,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// Sessions open now (one per BMC at most).
    pub async fn open_sessions(&self) -> usize {
        let slots: Vec<_> = self.slots.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let mut n = 0;
        for slot in slots {
            n += usize::from(slot.lock().await.session.is_some());
        }
        n
    }

    /// Closes every open session (call on shutdown; BMCs allow few sessions).
    pub async fn close_all(&self) {
        let slots: Vec<_> = self.slots.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let mut closing = Vec::new();
        for slot in slots {
            if let Some(session) = slot.lock().await.session.take() {
                closing.push(tokio::task::spawn_blocking(move || session.close()));
            }
        }
        for c in closing {
            let _ = c.await;
        }
    }

    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).entry(key.to_string()).or_default().clone()
    }

    /// Runs `op` on the BMC's session (opening one if needed) on a blocking thread, under
    /// the global limit, the per-BMC serialization and interval, the deadline and retries.
    async fn with_session<T, F>(&self, bmc: &BmcEndpoint, resend: Resend, op: F) -> Result<T, PowerError>
    where
        T: Send + 'static,
        F: Fn(&mut BmcSession) -> Result<T, PowerError> + Clone + Send + 'static,
    {
        let key = format!("{}:{}", bmc.address, bmc.port);
        let deadline = Instant::now() + self.config.deadline;
        let timed_out = || PowerError::Timeout { bmc: key.clone(), millis: self.config.deadline.as_millis() as u64 };
        let _permit = tokio::time::timeout_at(deadline.into(), self.permits.acquire())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| PowerError::Unsupported("the driver is shut down".into()))?;
        let slot = self.slot(&key);
        let mut slot = tokio::time::timeout_at(deadline.into(), slot.lock()).await.map_err(|_| timed_out())?;
        let mut attempt = 0u32;
        loop {
            if let Some(last) = slot.last_command {
                tokio::time::sleep_until((last + self.config.min_interval).into()).await;
            }
            let session = slot.session.take();
            let credentials = match session {
                Some(_) => None,
                None => Some(
                    self.secrets
                        .credentials(&bmc.credentials_ref)
                        .await
                        .map_err(|e| PowerError::Unsupported(format!("BMC {key}: {e}")))?,
                ),
            };
            let (op, target, packet_timeout) = (op.clone(), key.clone(), self.config.packet_timeout);
            let work = tokio::task::spawn_blocking(move || {
                let mut session = match session {
                    Some(s) => s,
                    None => {
                        let opened =
                            BmcSession::open(&target, credentials.as_ref().expect("credentials"), packet_timeout);
                        drop(credentials); // zeroed on drop
                        match opened {
                            Ok(s) => s,
                            Err(e) => return (None, Err(e), true),
                        }
                    }
                };
                let result = op(&mut session);
                (Some(session), result, false)
            });
            let outcome = tokio::time::timeout_at(deadline.into(), work).await;
            slot.last_command = Some(Instant::now());
            let (session, result, failed_opening) = match outcome {
                Err(_) => return Err(timed_out()),
                Ok(Err(join)) => {
                    return Err(PowerError::Unreachable { bmc: key.clone(), detail: format!("worker thread: {join}") });
                }
                Ok(Ok(done)) => done,
            };
            let error = match result {
                Ok(v) => {
                    slot.session = session;
                    return Ok(v);
                }
                Err(e) => e,
            };
            match &error {
                // The session is fine; the BMC said no or not now.
                PowerError::Rejected { .. } | PowerError::Busy { .. } => slot.session = session,
                // A lost packet desynchronizes the session: drop it (and close it if we can).
                _ => {
                    if let Some(s) = session {
                        tokio::task::spawn_blocking(move || s.close());
                    }
                }
            }
            let may_resend = resend == Resend::Safe || failed_opening;
            let backoff = self.config.backoff * 2u32.saturating_pow(attempt);
            if error.is_retryable()
                && may_resend
                && attempt < self.config.retries
                && Instant::now() + backoff < deadline
            {
                attempt += 1;
                tokio::time::sleep(backoff).await;
                continue;
            }
            return Err(error);
        }
    }
}

fn state(on: bool) -> PowerState {
    if on { PowerState::On } else { PowerState::Off }
}

fn action(op: PowerOp) -> ControlAction {
    match op {
        PowerOp::On => ControlAction::PowerUp,
        PowerOp::Off => ControlAction::PowerDown,
        PowerOp::Cycle => ControlAction::PowerCycle,
        PowerOp::Reset => ControlAction::HardReset,
        PowerOp::SoftOff => ControlAction::SoftShutdown,
    }
}

#[async_trait]
impl PowerDriver for IpmiPowerDriver {
    async fn power_status(&self, bmc: &BmcEndpoint) -> Result<PowerState, PowerError> {
        self.with_session(bmc, Resend::Safe, |s| Ok(state(s.call(GetChassisStatus)?.power_on))).await
    }

    async fn power(&self, bmc: &BmcEndpoint, op: PowerOp) -> Result<PowerReport, PowerError> {
        let resend = match op {
            PowerOp::On | PowerOp::Off => Resend::Safe,
            PowerOp::Cycle | PowerOp::Reset | PowerOp::SoftOff => Resend::OnlyBeforeSessionOpens,
        };
        self.with_session(bmc, resend, move |s| {
            let before = state(s.call(GetChassisStatus)?.power_on);
            let sent = op.command_for(before);
            if let Some(command) = sent {
                s.call(ChassisControl(action(command)))?;
            }
            Ok(PowerReport { before, sent })
        })
        .await
    }

    async fn set_boot_device(&self, bmc: &BmcEndpoint, device: BootDevice, persistent: bool) -> Result<(), PowerError> {
        self.with_session(bmc, Resend::Safe, move |s| s.call(SetBootFlags { device, persistent })).await
    }

    async fn boot_device(&self, bmc: &BmcEndpoint) -> Result<BootDevice, PowerError> {
        self.with_session(bmc, Resend::Safe, |s| Ok(s.call(GetBootFlags)?.device())).await
    }

    async fn probe(&self, bmc: &BmcEndpoint) -> Result<ProbeReport, PowerError> {
        self.with_session(bmc, Resend::Safe, |s| {
            let firmware = s.firmware()?;
            let power = state(s.call(GetChassisStatus)?.power_on);
            Ok(ProbeReport { power, firmware: Some(firmware) })
        })
        .await
    }

    async fn insert_media(&self, bmc: &BmcEndpoint, _image_url: &str) -> Result<(), PowerError> {
        Err(no_virtual_media(bmc))
    }

    async fn eject_media(&self, bmc: &BmcEndpoint) -> Result<(), PowerError> {
        Err(no_virtual_media(bmc))
    }
}
