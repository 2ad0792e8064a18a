//! Set Session Privilege Level (NetFn App, command 0x3B). ipmi-rs opens sessions at the
//! user privilege level; chassis control needs more (else completion code 0xD4).

use ipmi_rs::connection::{IpmiCommand, Message, NetFn, NotEnoughData};

/// A session privilege level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivilegeLevel {
    /// 0x03.
    Operator,
    /// 0x04.
    Administrator,
}

impl PrivilegeLevel {
    fn code(self) -> u8 {
        match self {
            PrivilegeLevel::Operator => 0x03,
            PrivilegeLevel::Administrator => 0x04,
        }
    }
}

/// The request; the answer is the level now in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetSessionPrivilege(pub PrivilegeLevel);

impl From<SetSessionPrivilege> for Message {
    fn from(s: SetSessionPrivilege) -> Self {
        Message::new_request(NetFn::App, 0x3b, vec![s.0.code()])
    }
}

impl IpmiCommand for SetSessionPrivilege {
    type Output = u8;
    type Error = NotEnoughData;

    fn parse_success_response(data: &[u8]) -> Result<Self::Output, Self::Error> {
        super::need(data, 1)?;
        Ok(data[0] & 0x0f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_bytes() {
        let m: Message = SetSessionPrivilege(PrivilegeLevel::Administrator).into();
        assert_eq!((m.netfn_raw(), m.cmd(), m.data()), (0x06, 0x3b, &[0x04][..]));
        let m: Message = SetSessionPrivilege(PrivilegeLevel::Operator).into();
        assert_eq!(m.data(), &[0x03]);
        assert_eq!(SetSessionPrivilege::parse_success_response(&[0x04]), Ok(4));
        assert!(SetSessionPrivilege::parse_success_response(&[]).is_err());
    }
}
