//! Classifies ipmi-rs failures into maas's `PowerError` for the engine's retry policy:
//! unreachable, authentication, busy, rejected (with the completion code), timeout.
//! Messages name the BMC and what happened, never a credential.

use std::io::ErrorKind;

use ipmi_rs::IpmiError;
use ipmi_rs::connection::CompletionErrorCode;
use ipmi_rs::rmcp::{
    ActivationError, RmcpIpmiError, RmcpIpmiReceiveError, RmcpIpmiSendError, V1_5WriteError, V2_0ActivationError,
    V2_0WriteError,
};
use maas_core::ports::power::PowerError;

/// The completion code byte of `code` (ipmi-rs only converts the other way).
pub(crate) fn completion_byte(code: &CompletionErrorCode) -> u8 {
    use CompletionErrorCode::*;
    match code {
        NodeBusy => 0xc0,
        InvalidCommand => 0xc1,
        InvalidCommandForLun => 0xc2,
        ProcessingTimeout => 0xc3,
        OutOfSpace => 0xc4,
        ReservationCancelledOrInvalidId => 0xc5,
        RequestDataTruncated => 0xc6,
        RequestDataLenInvalid => 0xc7,
        RequestDataLengthLimitExceeded => 0xc8,
        ParameterOutOfRange => 0xc9,
        CannotReturnNumOfRequestedBytes => 0xca,
        RequestedDatapointNotPresent => 0xcb,
        InvalidDataFieldInRequest => 0xcc,
        CommandIllegalForSensorOrRecord => 0xcd,
        ResponseUnavailable { .. } => 0xce,
        CannotExecuteDuplicateRequest => 0xcf,
        DestinationUnavailable => 0xd3,
        InsufficientPrivilege => 0xd4,
        CannotExecuteCommandInCurrentState => 0xd5,
        SubFunctionDisabled => 0xd6,
        Unspecified => 0xff,
        Oem(v) | CommandSpecific(v) | Reserved(v) => *v,
    }
}

fn io(bmc: &str, e: &std::io::Error, timeout_ms: u64) -> PowerError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => PowerError::Timeout { bmc: bmc.to_string(), millis: timeout_ms },
        _ => PowerError::Unreachable { bmc: bmc.to_string(), detail: e.to_string() },
    }
}

/// A failed session opening.
pub(crate) fn activation(bmc: &str, e: &ActivationError, timeout_ms: u64) -> PowerError {
    use ActivationError as A;
    use V2_0ActivationError as V2;
    match e {
        // No answer to the RMCP ping: nothing listens there.
        A::PingSend(e) | A::PongReceive(e) | A::BindSocket(e) => {
            PowerError::Unreachable { bmc: bmc.to_string(), detail: format!("no RMCP answer ({})", e.kind()) }
        }
        A::V2_0(V2::Io(e)) => io(bmc, e, timeout_ms),
        A::V2_0(
            V2::RakpMessage2Parse(_)
            | V2::RakpMessage2Validate(_)
            | V2::RakpMessage4Parse(_)
            | V2::RakpMessage4Validate(_)
            | V2::RakpMessage4InvalidIntegrityCheckValue
            | V2::ServerAuthenticationFailed
            | V2::InvalidKeyExchangeAuthCodeLen(..),
        ) => PowerError::Authentication { bmc: bmc.to_string() },
        A::V2_0(V2::OpenSessionResponseValidate(_) | V2::OpenSessionResponseParse(_)) => {
            PowerError::Unsupported(format!("BMC {bmc} refused the RMCP+ session parameters (cipher suite 3)"))
        }
        A::V2_0(V2::OpenSessionResponseReceive(r) | V2::RakpMessage2Receive(r) | V2::RakpMessage4Receive(r)) => {
            receive(bmc, r, timeout_ms)
        }
        A::IpmiNotSupported | A::NoSupportedIpmiLANVersions => {
            PowerError::Unsupported(format!("BMC {bmc} does not offer IPMI v2.0 over LAN"))
        }
        other => {
            PowerError::Unreachable { bmc: bmc.to_string(), detail: format!("session setup failed: {}", kind(other)) }
        }
    }
}

/// The variant name of an activation error, for messages (its fields may hold key material).
fn kind(e: &ActivationError) -> String {
    let shown = format!("{e:?}");
    shown.split(['(', ' ', '{']).next().unwrap_or("unknown").to_string()
}

fn receive(bmc: &str, e: &RmcpIpmiReceiveError, timeout_ms: u64) -> PowerError {
    match e {
        RmcpIpmiReceiveError::Io(e) => io(bmc, e, timeout_ms),
        other => PowerError::Unreachable { bmc: bmc.to_string(), detail: format!("malformed answer: {other:?}") },
    }
}

/// A failed command on an open session.
pub(crate) fn command<E: std::fmt::Debug>(bmc: &str, e: &IpmiError<RmcpIpmiError, E>, timeout_ms: u64) -> PowerError {
    match e {
        IpmiError::Connection(RmcpIpmiError::Receive(r)) => receive(bmc, r, timeout_ms),
        IpmiError::Connection(RmcpIpmiError::Send(
            RmcpIpmiSendError::V2_0(V2_0WriteError::Io(e)) | RmcpIpmiSendError::V1_5(V1_5WriteError::Io(e)),
        )) => io(bmc, e, timeout_ms),
        IpmiError::Connection(other) => {
            PowerError::Unreachable { bmc: bmc.to_string(), detail: format!("session error: {other:?}") }
        }
        IpmiError::Failed { completion_code, .. }
        | IpmiError::Command { completion_code: Some(completion_code), .. } => {
            let code = completion_byte(completion_code);
            match completion_code {
                CompletionErrorCode::NodeBusy | CompletionErrorCode::ResponseUnavailable { .. } => {
                    PowerError::Busy { bmc: bmc.to_string(), detail: format!("completion code {code:#04x}") }
                }
                other => PowerError::Rejected { bmc: bmc.to_string(), code, detail: format!("{other:?}") },
            }
        }
        other => PowerError::Unreachable { bmc: bmc.to_string(), detail: format!("unexpected answer: {other:?}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_bytes_round_trip() {
        for b in [0xc0u8, 0xc1, 0xcc, 0xcf, 0xd4, 0xd5, 0xd6, 0xff, 0x01, 0x80, 0xe0] {
            let code = CompletionErrorCode::try_from(b).unwrap();
            assert_eq!(completion_byte(&code), b, "{code:?}");
        }
    }

    #[test]
    fn busy_and_rejections_are_classified() {
        let busy: IpmiError<RmcpIpmiError, ()> = IpmiError::Failed {
            netfn: ipmi_rs::connection::NetFn::Chassis,
            cmd: 2,
            completion_code: CompletionErrorCode::NodeBusy,
            data: vec![],
        };
        assert!(matches!(command("b:623", &busy, 1000), PowerError::Busy { .. }));
        let denied: IpmiError<RmcpIpmiError, ()> = IpmiError::Failed {
            netfn: ipmi_rs::connection::NetFn::Chassis,
            cmd: 2,
            completion_code: CompletionErrorCode::InsufficientPrivilege,
            data: vec![],
        };
        assert!(matches!(command("b:623", &denied, 1000), PowerError::Rejected { code: 0xd4, .. }));
        let lost: IpmiError<RmcpIpmiError, ()> = IpmiError::Connection(RmcpIpmiError::Receive(
            RmcpIpmiReceiveError::Io(std::io::Error::from(ErrorKind::WouldBlock)),
        ));
        assert!(matches!(command("b:623", &lost, 1000), PowerError::Timeout { millis: 1000, .. }));
    }
}
