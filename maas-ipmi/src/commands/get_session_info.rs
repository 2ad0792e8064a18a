//! Get Session Info (NetFn App, command 0x3D) for the session the request arrives on: its
//! handle is what Close Session needs, since ipmi-rs does not expose the session id.

use ipmi_rs::connection::{IpmiCommand, Message, NetFn, NotEnoughData};

/// The request (session index 0: "this session").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetSessionInfo;

/// The parts of the answer maas uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's handle.
    pub handle: u8,
    /// Sessions the BMC supports at once.
    pub possible: u8,
    /// Sessions active now.
    pub active: u8,
}

impl From<GetSessionInfo> for Message {
    fn from(_: GetSessionInfo) -> Self {
        Message::new_request(NetFn::App, 0x3d, vec![0x00])
    }
}

impl IpmiCommand for GetSessionInfo {
    type Output = SessionInfo;
    type Error = NotEnoughData;

    fn parse_success_response(data: &[u8]) -> Result<Self::Output, Self::Error> {
        super::need(data, 3)?;
        Ok(SessionInfo { handle: data[0], possible: data[1] & 0x3f, active: data[2] & 0x3f })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_bytes() {
        let m: Message = GetSessionInfo.into();
        assert_eq!((m.netfn_raw(), m.cmd(), m.data()), (0x06, 0x3d, &[0x00][..]));
        let info = GetSessionInfo::parse_success_response(&[0x07, 0x3f, 0x02, 0x02, 0x04, 0x01]).unwrap();
        assert_eq!(info, SessionInfo { handle: 7, possible: 63, active: 2 });
        assert!(GetSessionInfo::parse_success_response(&[0x07]).is_err());
    }
}
