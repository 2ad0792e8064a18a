//! Chassis Control (NetFn Chassis, command 0x02): power down, up, cycle, hard reset, soft
//! (ACPI) shutdown.

use ipmi_rs::connection::{IpmiCommand, Message, NetFn, NotEnoughData};

/// What to do to the chassis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    /// 0x00: hard power down.
    PowerDown,
    /// 0x01: power up.
    PowerUp,
    /// 0x02: power down, then up after the BMC's interval.
    PowerCycle,
    /// 0x03: hard (warm) reset.
    HardReset,
    /// 0x05: ask the OS to shut down (ACPI soft off).
    SoftShutdown,
}

impl ControlAction {
    /// The request's data byte.
    pub fn code(self) -> u8 {
        match self {
            ControlAction::PowerDown => 0x00,
            ControlAction::PowerUp => 0x01,
            ControlAction::PowerCycle => 0x02,
            ControlAction::HardReset => 0x03,
            ControlAction::SoftShutdown => 0x05,
        }
    }
}

/// The request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChassisControl(pub ControlAction);

impl From<ChassisControl> for Message {
    fn from(c: ChassisControl) -> Self {
        Message::new_request(NetFn::Chassis, 0x02, vec![c.0.code()])
    }
}

impl IpmiCommand for ChassisControl {
    type Output = ();
    type Error = NotEnoughData;

    fn parse_success_response(_data: &[u8]) -> Result<Self::Output, Self::Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        for (action, code) in [
            (ControlAction::PowerDown, 0x00),
            (ControlAction::PowerUp, 0x01),
            (ControlAction::PowerCycle, 0x02),
            (ControlAction::HardReset, 0x03),
            (ControlAction::SoftShutdown, 0x05),
        ] {
            let m: Message = ChassisControl(action).into();
            assert_eq!((m.netfn_raw(), m.cmd(), m.data()), (0x00, 0x02, &[code][..]));
        }
    }

    #[test]
    fn empty_answer_is_success() {
        assert_eq!(ChassisControl::parse_success_response(&[]), Ok(()));
    }
}
