//! The `PowerDriver` seam: talking to BMCs.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::host::{BmcEndpoint, BmcProtocol};

/// Chassis power state as the BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// Powered on.
    On,
    /// Powered off.
    Off,
}

/// A power request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerOp {
    /// Power up.
    On,
    /// Hard power down.
    Off,
    /// Off then on (a host that is off is just powered on).
    Cycle,
    /// Hard reset (warm).
    Reset,
    /// ACPI soft off: ask the OS to shut down.
    SoftOff,
}

impl PowerOp {
    /// The state the host must reach for the request to count as done.
    pub fn target(self) -> PowerState {
        match self {
            PowerOp::On | PowerOp::Cycle | PowerOp::Reset => PowerState::On,
            PowerOp::Off | PowerOp::SoftOff => PowerState::Off,
        }
    }
}

impl PowerOp {
    /// What to send to a host whose power is `before` (the contract's idempotence, shared by
    /// every driver): nothing for `On` of a host that is on or `Off`/`SoftOff` of one that
    /// is off; `On` for a `Cycle` or `Reset` of a host that is off; else the request itself.
    pub fn command_for(self, before: PowerState) -> Option<PowerOp> {
        match (self, before) {
            (PowerOp::On, PowerState::On) | (PowerOp::Off | PowerOp::SoftOff, PowerState::Off) => None,
            (PowerOp::Cycle | PowerOp::Reset, PowerState::Off) => Some(PowerOp::On),
            (op, _) => Some(op),
        }
    }
}

impl fmt::Display for PowerOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerOp::On => "on",
            PowerOp::Off => "off",
            PowerOp::Cycle => "cycle",
            PowerOp::Reset => "reset",
            PowerOp::SoftOff => "soft off",
        })
    }
}

/// What a power request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerReport {
    /// The state before the request.
    pub before: PowerState,
    /// The command actually sent (`None`: nothing needed, e.g. `On` when already on;
    /// `Some(On)` for a `Cycle` of a host that was off).
    pub sent: Option<PowerOp>,
}

/// The next boot device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootDevice {
    /// Network boot.
    Pxe,
    /// Local disk.
    Disk,
    /// No override (BIOS order).
    Default,
    /// The (virtual) CD/DVD drive: an ISO mounted through the BMC's virtual media.
    Cd,
}

/// What a probe (console check) found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The power state.
    pub power: PowerState,
    /// A description of the BMC (vendor, firmware), if it gives one.
    pub firmware: Option<String>,
}

/// Why a BMC call failed, classified for the retry policy. Never carries credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PowerError {
    /// No answer from the BMC (network, wrong address, BMC down).
    #[error("BMC {bmc} unreachable: {detail}")]
    Unreachable {
        /// `address:port`.
        bmc: String,
        /// What happened.
        detail: String,
    },
    /// The BMC refused the credentials.
    #[error("BMC {bmc} refused the credentials")]
    Authentication {
        /// `address:port`.
        bmc: String,
    },
    /// The BMC is busy (node busy, session limit); try later.
    #[error("BMC {bmc} busy: {detail}")]
    Busy {
        /// `address:port`.
        bmc: String,
        /// What it said.
        detail: String,
    },
    /// The BMC rejected the command.
    #[error("BMC {bmc} rejected the command (completion code {code:#04x}): {detail}")]
    Rejected {
        /// `address:port`.
        bmc: String,
        /// IPMI completion code.
        code: u8,
        /// What it means.
        detail: String,
    },
    /// No answer in time.
    #[error("BMC {bmc} timed out after {millis} ms")]
    Timeout {
        /// `address:port`.
        bmc: String,
        /// The deadline.
        millis: u64,
    },
    /// The driver cannot do this (e.g. an unsupported cipher suite).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The BMC refused an HTTP request (Redfish): a 4xx or 5xx that is not about
    /// credentials or load.
    #[error("BMC {bmc} refused the request (HTTP {status}): {detail}")]
    Refused {
        /// `address:port`.
        bmc: String,
        /// The HTTP status.
        status: u16,
        /// The Redfish error message, if it gave one.
        detail: String,
    },
    /// The BMC's TLS certificate failed the check the inventory asks for (not issued by
    /// the configured CA, not naming the BMC, not the pinned fingerprint). Not retried.
    #[error("BMC {bmc}: TLS certificate refused: {detail}")]
    Certificate {
        /// `address:port`.
        bmc: String,
        /// What did not match.
        detail: String,
    },
}

impl PowerError {
    /// The error's class as a stable label: `unreachable`, `authentication`, `busy`,
    /// `rejected`, `timeout`, `unsupported` or `certificate`.
    pub fn class(&self) -> &'static str {
        match self {
            PowerError::Unreachable { .. } => "unreachable",
            PowerError::Authentication { .. } => "authentication",
            PowerError::Busy { .. } => "busy",
            PowerError::Rejected { .. } | PowerError::Refused { .. } => "rejected",
            PowerError::Certificate { .. } => "certificate",
            PowerError::Timeout { .. } => "timeout",
            PowerError::Unsupported(_) => "unsupported",
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PowerError::Unreachable { .. } | PowerError::Busy { .. } | PowerError::Timeout { .. })
    }
}

/// Controls hosts' power and boot through their BMCs.
///
/// # Contract
/// - `power_status` reads the current state without changing anything.
/// - `power` is idempotent where the physics allow: `On` of a host that is on and `Off` of
///   a host that is off send nothing (`sent: None`); `Cycle` of a host that is off powers
///   it on (`sent: Some(On)`). It returns once the BMC accepted the command; the caller
///   verifies the outcome by polling `power_status` (BMCs report late).
/// - `set_boot_device` applies to the next boot only unless `persistent`.
/// - Every call finishes within the driver's own deadline, and errors are classified
///   ([`PowerError::is_retryable`]); no credential appears in an error or a log.
/// - Safe to call concurrently for different BMCs; calls to one BMC may be serialized.
#[async_trait]
pub trait PowerDriver: Send + Sync {
    /// The chassis power state.
    async fn power_status(&self, bmc: &BmcEndpoint) -> Result<PowerState, PowerError>;
    /// Sends a power request (see the contract for idempotence).
    async fn power(&self, bmc: &BmcEndpoint, op: PowerOp) -> Result<PowerReport, PowerError>;
    /// Sets the next boot device.
    async fn set_boot_device(&self, bmc: &BmcEndpoint, device: BootDevice, persistent: bool) -> Result<(), PowerError>;
    /// The boot device override in effect.
    async fn boot_device(&self, bmc: &BmcEndpoint) -> Result<BootDevice, PowerError>;
    /// Opens a session and reads identity and power: the console pre-check.
    async fn probe(&self, bmc: &BmcEndpoint) -> Result<ProbeReport, PowerError>;
    /// Mounts the ISO at `image_url` in the BMC's virtual CD/DVD drive (ejecting what
    /// was there), verified by reading the drive back. Drivers without virtual media
    /// answer [`no_virtual_media`]. (No default: a wrapping driver must pass it on.)
    async fn insert_media(&self, bmc: &BmcEndpoint, image_url: &str) -> Result<(), PowerError>;
    /// Ejects whatever the BMC's virtual CD/DVD drives hold, verified; ejecting an empty
    /// drive is not an error.
    async fn eject_media(&self, bmc: &BmcEndpoint) -> Result<(), PowerError>;
}

/// What a driver without virtual media (IPMI) answers to `insert_media` and `eject_media`.
pub fn no_virtual_media(bmc: &BmcEndpoint) -> PowerError {
    PowerError::Unsupported(format!("BMC {}: virtual media needs a Redfish BMC ({} has none)", bmc.key(), bmc.protocol))
}

/// One driver per BMC protocol, chosen by each host's [`BmcEndpoint::protocol`]: how one
/// engine drives a mixed IPMI and Redfish fleet. A protocol without a driver answers
/// `Unsupported`, naming it.
#[derive(Clone, Default)]
pub struct ByProtocol {
    ipmi: Option<std::sync::Arc<dyn PowerDriver>>,
    redfish: Option<std::sync::Arc<dyn PowerDriver>>,
}

impl fmt::Debug for ByProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByProtocol")
            .field("ipmi", &self.ipmi.is_some())
            .field("redfish", &self.redfish.is_some())
            .finish()
    }
}

impl ByProtocol {
    /// No driver yet.
    pub fn new() -> Self {
        ByProtocol::default()
    }

    /// Drives `protocol`'s BMCs with `driver`.
    pub fn with(mut self, protocol: BmcProtocol, driver: std::sync::Arc<dyn PowerDriver>) -> Self {
        match protocol {
            BmcProtocol::Ipmi => self.ipmi = Some(driver),
            BmcProtocol::Redfish => self.redfish = Some(driver),
        }
        self
    }

    fn driver(&self, bmc: &BmcEndpoint) -> Result<&dyn PowerDriver, PowerError> {
        let driver = match bmc.protocol {
            BmcProtocol::Ipmi => &self.ipmi,
            BmcProtocol::Redfish => &self.redfish,
        };
        driver.as_deref().ok_or_else(|| {
            PowerError::Unsupported(format!("BMC {}: no {} driver is configured", bmc.key(), bmc.protocol))
        })
    }
}

#[async_trait]
impl PowerDriver for ByProtocol {
    async fn power_status(&self, bmc: &BmcEndpoint) -> Result<PowerState, PowerError> {
        self.driver(bmc)?.power_status(bmc).await
    }
    async fn power(&self, bmc: &BmcEndpoint, op: PowerOp) -> Result<PowerReport, PowerError> {
        self.driver(bmc)?.power(bmc, op).await
    }
    async fn set_boot_device(&self, bmc: &BmcEndpoint, device: BootDevice, persistent: bool) -> Result<(), PowerError> {
        self.driver(bmc)?.set_boot_device(bmc, device, persistent).await
    }
    async fn boot_device(&self, bmc: &BmcEndpoint) -> Result<BootDevice, PowerError> {
        self.driver(bmc)?.boot_device(bmc).await
    }
    async fn probe(&self, bmc: &BmcEndpoint) -> Result<ProbeReport, PowerError> {
        self.driver(bmc)?.probe(bmc).await
    }
    async fn insert_media(&self, bmc: &BmcEndpoint, image_url: &str) -> Result<(), PowerError> {
        self.driver(bmc)?.insert_media(bmc, image_url).await
    }
    async fn eject_media(&self, bmc: &BmcEndpoint) -> Result<(), PowerError> {
        self.driver(bmc)?.eject_media(bmc).await
    }
}
