//! Get System Boot Options (NetFn Chassis, command 0x09), parameter 5 (boot flags).

use ipmi_rs::connection::{IpmiCommand, Message, NetFn, NotEnoughData};

use maas_core::ports::power::BootDevice;

use super::set_boot_flags::BOOT_FLAGS;

/// The request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetBootFlags;

/// The boot flags in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags {
    /// The override is valid (else the BIOS order applies).
    pub valid: bool,
    /// For all future boots.
    pub persistent: bool,
    /// The device selector (bits 5:2 of data byte 2).
    pub selector: u8,
}

impl BootFlags {
    /// The device the selector names (`Default` for no override or a device maas does not
    /// set). This reads back what was last set; whether the override is still armed for
    /// the next boot is [`BootFlags::valid`], which some BMCs (OpenIPMI's ipmi_sim among
    /// them) never report.
    pub fn device(&self) -> BootDevice {
        match self.selector {
            0x01 => BootDevice::Pxe,
            0x02 | 0x03 => BootDevice::Disk,
            0x05 => BootDevice::Cd,
            _ => BootDevice::Default,
        }
    }
}

impl From<GetBootFlags> for Message {
    fn from(_: GetBootFlags) -> Self {
        // Parameter selector, set selector, block selector.
        Message::new_request(NetFn::Chassis, 0x09, vec![BOOT_FLAGS, 0x00, 0x00])
    }
}

impl IpmiCommand for GetBootFlags {
    type Output = BootFlags;
    type Error = NotEnoughData;

    fn parse_success_response(data: &[u8]) -> Result<Self::Output, Self::Error> {
        // Parameter version, parameter selector, then the 5 data bytes.
        super::need(data, 4)?;
        let (flags, device) = (data[2], data[3]);
        Ok(BootFlags { valid: flags & 0x80 != 0, persistent: flags & 0x40 != 0, selector: (device >> 2) & 0x0f })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        let m: Message = GetBootFlags.into();
        assert_eq!((m.netfn_raw(), m.cmd(), m.data()), (0x00, 0x09, &[0x05, 0x00, 0x00][..]));
    }

    #[test]
    fn parses_what_ipmitool_shows() {
        // `ipmitool chassis bootparam get 5` after `bootdev pxe`: data 80 04 00 00 00.
        let f = GetBootFlags::parse_success_response(&[0x01, 0x05, 0x80, 0x04, 0, 0, 0]).unwrap();
        assert_eq!((f.device(), f.persistent), (BootDevice::Pxe, false));
        let f = GetBootFlags::parse_success_response(&[0x01, 0x05, 0xc0, 0x08, 0, 0, 0]).unwrap();
        assert_eq!((f.device(), f.persistent), (BootDevice::Disk, true));
        // ipmi_sim keeps the selector but not the valid bit.
        let f = GetBootFlags::parse_success_response(&[0x01, 0x05, 0x00, 0x04, 0, 0, 0]).unwrap();
        assert_eq!((f.device(), f.valid), (BootDevice::Pxe, false));
        let f = GetBootFlags::parse_success_response(&[0x01, 0x05, 0x80, 0x00, 0, 0, 0]).unwrap();
        assert_eq!(f.device(), BootDevice::Default);
        assert!(GetBootFlags::parse_success_response(&[0x01, 0x05]).is_err());
    }
}
