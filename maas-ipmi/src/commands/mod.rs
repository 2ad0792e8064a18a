//! The IPMI commands ipmi-rs 0.6 lacks, as its `IpmiCommand` codecs: one file per command,
//! each with byte-level tests of its request and response.

mod chassis_control;
mod chassis_status;
mod close_session;
mod get_boot_flags;
mod get_session_info;
mod set_boot_flags;
mod set_session_privilege;

pub use chassis_control::{ChassisControl, ControlAction};
pub use chassis_status::{ChassisStatus, GetChassisStatus};
pub use close_session::CloseSession;
pub use get_boot_flags::{BootFlags, GetBootFlags};
pub use get_session_info::{GetSessionInfo, SessionInfo};
pub use set_boot_flags::SetBootFlags;
pub use set_session_privilege::{PrivilegeLevel, SetSessionPrivilege};

use ipmi_rs::connection::NotEnoughData;

/// A response shorter than the command's fixed part.
fn need(data: &[u8], len: usize) -> Result<(), NotEnoughData> {
    if data.len() < len { Err(NotEnoughData) } else { Ok(()) }
}
