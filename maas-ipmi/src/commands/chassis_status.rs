//! Get Chassis Status (NetFn Chassis, command 0x01): the power state and its faults.

use ipmi_rs::connection::{IpmiCommand, Message, NetFn, NotEnoughData};

/// The request (no data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetChassisStatus;

/// The parts of the answer maas uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisStatus {
    /// System power is on.
    pub power_on: bool,
    /// Power overload.
    pub overload: bool,
    /// Power interlock active.
    pub interlock: bool,
    /// Main power fault.
    pub power_fault: bool,
    /// Power control fault.
    pub control_fault: bool,
}

impl From<GetChassisStatus> for Message {
    fn from(_: GetChassisStatus) -> Self {
        Message::new_request(NetFn::Chassis, 0x01, Vec::new())
    }
}

impl IpmiCommand for GetChassisStatus {
    type Output = ChassisStatus;
    type Error = NotEnoughData;

    fn parse_success_response(data: &[u8]) -> Result<Self::Output, Self::Error> {
        // Current power state, last power event, misc chassis state are mandatory.
        super::need(data, 3)?;
        let b = data[0];
        Ok(ChassisStatus {
            power_on: b & 0x01 != 0,
            overload: b & 0x02 != 0,
            interlock: b & 0x04 != 0,
            power_fault: b & 0x08 != 0,
            control_fault: b & 0x10 != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        let m: Message = GetChassisStatus.into();
        assert_eq!((m.netfn_raw(), m.cmd(), m.data()), (0x00, 0x01, &[][..]));
    }

    #[test]
    fn parses_power_and_faults() {
        let s = GetChassisStatus::parse_success_response(&[0x01, 0x00, 0x00]).unwrap();
        assert!(s.power_on && !s.overload && !s.power_fault);
        let s = GetChassisStatus::parse_success_response(&[0x1a, 0x00, 0x40, 0x00]).unwrap();
        assert!(!s.power_on && s.overload && s.power_fault && s.control_fault && !s.interlock);
        assert!(GetChassisStatus::parse_success_response(&[0x01]).is_err());
    }
}
