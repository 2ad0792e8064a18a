//! Close Session (NetFn App, command 0x3C) by session id. (By handle — id 0 and a handle
//! byte — is in the spec, but OpenIPMI's ipmi_sim answers it with 0x87.)

use ipmi_rs::connection::{IpmiCommand, Message, NetFn, NotEnoughData};

/// The request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseSession {
    /// The managed system's session id.
    pub session_id: u32,
}

impl From<CloseSession> for Message {
    fn from(c: CloseSession) -> Self {
        Message::new_request(NetFn::App, 0x3c, c.session_id.to_le_bytes().to_vec())
    }
}

impl IpmiCommand for CloseSession {
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
    fn request_bytes_are_the_id_little_endian() {
        let m: Message = CloseSession { session_id: 0x1234_5678 }.into();
        assert_eq!((m.netfn_raw(), m.cmd(), m.data()), (0x06, 0x3c, &[0x78, 0x56, 0x34, 0x12][..]));
    }
}
