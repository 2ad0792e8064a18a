//! Set System Boot Options (NetFn Chassis, command 0x08), parameter 5 (boot flags): the
//! next boot device, for the next boot only or for all future boots.

use ipmi_rs::connection::{IpmiCommand, Message, NetFn, NotEnoughData};

use maas_core::ports::power::BootDevice;

/// Parameter selector of the boot flags.
pub(crate) const BOOT_FLAGS: u8 = 0x05;

/// The device selector (bits 5:2 of data byte 2) for `device`.
pub(crate) fn device_selector(device: BootDevice) -> u8 {
    match device {
        BootDevice::Default => 0x00,
        BootDevice::Pxe => 0x01,
        BootDevice::Disk => 0x02,
        BootDevice::Cd => 0x05,
    }
}

/// The request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetBootFlags {
    /// The device.
    pub device: BootDevice,
    /// All future boots (else the next boot only).
    pub persistent: bool,
}

impl From<SetBootFlags> for Message {
    fn from(s: SetBootFlags) -> Self {
        // Byte 1: bit 7 "flags valid", bit 6 "persistent"; byte 2: the device selector.
        let valid = 0x80 | if s.persistent { 0x40 } else { 0x00 };
        let data = vec![BOOT_FLAGS, valid, device_selector(s.device) << 2, 0x00, 0x00, 0x00];
        Message::new_request(NetFn::Chassis, 0x08, data)
    }
}

impl IpmiCommand for SetBootFlags {
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
        let m: Message = SetBootFlags { device: BootDevice::Pxe, persistent: false }.into();
        assert_eq!((m.netfn_raw(), m.cmd()), (0x00, 0x08));
        assert_eq!(m.data(), &[0x05, 0x80, 0x04, 0, 0, 0]);
        let m: Message = SetBootFlags { device: BootDevice::Disk, persistent: true }.into();
        assert_eq!(m.data(), &[0x05, 0xc0, 0x08, 0, 0, 0]);
        let m: Message = SetBootFlags { device: BootDevice::Default, persistent: false }.into();
        assert_eq!(m.data(), &[0x05, 0x80, 0x00, 0, 0, 0]);
    }
}
