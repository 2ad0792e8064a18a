//! One RMCP+ session with one BMC, blocking (ipmi-rs is blocking; the driver runs this on
//! tokio's blocking threads). Opening raises the session to administrator (ipmi-rs leaves
//! it at user level, where chassis control fails with 0xD4); `close` ends the session by
//! its id (ipmi-rs never closes sessions, and a BMC has only 63; the id comes from the
//! patched ipmi-rs in third_party/).

use std::time::Duration;

use ipmi_rs::Ipmi;
use ipmi_rs::app::GetDeviceId;
use ipmi_rs::connection::IpmiCommand;
use ipmi_rs::rmcp::Rmcp;
use maas_core::ports::power::PowerError;
use maas_core::ports::services::Credentials;

use crate::commands::{CloseSession, PrivilegeLevel, SetSessionPrivilege};
use crate::errors;

/// An open, administrator-level session.
pub struct BmcSession {
    ipmi: Ipmi<Rmcp>,
    bmc: String,
    timeout_ms: u64,
    session_id: Option<u32>,
}

impl std::fmt::Debug for BmcSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BmcSession").field("bmc", &self.bmc).field("session_id", &self.session_id).finish()
    }
}

impl BmcSession {
    /// Opens a session with the BMC at `bmc` (`address:port`); every packet waits at most
    /// `timeout` for its answer.
    pub fn open(bmc: &str, credentials: &Credentials, timeout: Duration) -> Result<Self, PowerError> {
        let timeout_ms = timeout.as_millis() as u64;
        let mut rmcp = Rmcp::new(bmc, timeout)
            .map_err(|e| PowerError::Unreachable { bmc: bmc.to_string(), detail: format!("address: {}", e.kind()) })?;
        rmcp.activate(true, Some(&credentials.username), Some(credentials.password()))
            .map_err(|e| errors::activation(bmc, &e, timeout_ms))?;
        let session_id = rmcp.session_id();
        let mut session = BmcSession { ipmi: Ipmi::new(rmcp), bmc: bmc.to_string(), timeout_ms, session_id };
        session.call(SetSessionPrivilege(PrivilegeLevel::Administrator))?;
        Ok(session)
    }

    /// Sends one command and waits for its answer.
    pub fn call<C>(&mut self, command: C) -> Result<C::Output, PowerError>
    where
        C: IpmiCommand,
        C::Error: std::fmt::Debug,
    {
        self.ipmi.send_recv(command).map_err(|e| errors::command(&self.bmc, &e, self.timeout_ms))
    }

    /// Vendor and firmware from Get Device ID, as one line.
    pub fn firmware(&mut self) -> Result<String, PowerError> {
        let id = self.call(GetDeviceId)?;
        Ok(format!(
            "manufacturer {:#x} product {:#x} firmware {}.{:02x} IPMI {}.{}",
            id.manufacturer_id,
            id.product_id,
            id.major_fw_revision,
            id.minor_fw_revision,
            id.major_version,
            id.minor_version
        ))
    }

    /// Ends the session on the BMC (best effort: a BMC that does not answer expires it).
    pub fn close(mut self) {
        if let Some(session_id) = self.session_id.take() {
            let _ = self.call(CloseSession { session_id });
        }
    }
}
