//! The `maas.v1` client as shells use it: one [`Client`] type whether it talks to a
//! remote `maasd` (over mTLS, or plaintext on loopback) or to a service in this process
//! (the embedded engine), plus the rules every shell shares for turning words into
//! requests ([`action`], [`priority`]) and for reading a refusal's structured details
//! ([`rejection`]). `maasctl` and the Python module both use it.

use crate::errors::UnknownWord;
use std::time::Duration;

use tonic::codegen::http;
use tonic::transport::Endpoint;
use tower::ServiceExt as _;

use crate::pb::maas_client::MaasClient;
use crate::pb::maas_server::MaasServer;
use crate::pb::{self, action::Kind};
use crate::service::MaasService;
use crate::tls::TlsFiles;

/// A transport failure (a concrete type: with a boxed trait object as the service's error,
/// futures of client calls cannot be proven `Send` in generic code, rust-lang/rust#102211).
#[derive(Debug)]
pub struct TransportError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Either transport: a network channel or the service itself.
pub type Transport = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    TransportError,
>;

/// A `maas.v1` client. Cloning is cheap, and clones share the connection, so each thread
/// or task can hold its own.
pub type Client = MaasClient<Transport>;

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address is not a URI (`https://maas.example:7443`).
    #[error("server address {address:?}: {detail}")]
    Address {
        /// As given.
        address: String,
        /// Why.
        detail: String,
    },
    /// The certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Nothing answered, or the TLS handshake failed.
    #[error("cannot connect to {address}: {detail}")]
    Unreachable {
        /// As given.
        address: String,
        /// Why (with the underlying cause).
        detail: String,
    },
}

/// Connects to `address`, over mTLS with `tls` (the server is checked against its CA under
/// the address's host name), or in plaintext without. Fails within `timeout` if nothing
/// answers.
pub async fn connect(address: &str, tls: Option<&TlsFiles>, timeout: Duration) -> Result<Client, ConnectError> {
    Ok(MaasClient::new(connect_transport(address, tls, timeout).await?))
}

/// Waits until the server at `address` accepts connections and reports `maas.v1.Maas` as
/// serving (grpc.health.v1), at most `deadline`: for scripts that start `maasd` and use it
/// at once. A connection refused (not listening yet) or a server still starting is asked
/// again every 200 ms; a bad address or certificate fails at once (waiting does not mend
/// it). Returns a connected client.
pub async fn wait_ready(address: &str, tls: Option<&TlsFiles>, deadline: Duration) -> Result<Client, ConnectError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let until = std::time::Instant::now() + deadline;
    loop {
        let last = match connect_transport(address, tls, Duration::from_secs(2)).await {
            Ok(transport) => {
                let mut health = tonic_health::pb::health_client::HealthClient::new(transport.clone());
                let ask = tonic_health::pb::HealthCheckRequest { service: "maas.v1.Maas".into() };
                match health.check(ask).await {
                    Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => {
                        return Ok(MaasClient::new(transport));
                    }
                    Ok(r) => format!("maas.v1.Maas is {:?}", r.get_ref().status()),
                    Err(s) => format!("health check: {}", s.message()),
                }
            }
            Err(e @ (ConnectError::Address { .. } | ConnectError::Tls(_))) => return Err(e),
            Err(e) => e.to_string(),
        };
        if std::time::Instant::now() >= until {
            return Err(ConnectError::Unreachable {
                address: address.to_string(),
                detail: format!("not ready within {deadline:?} (last: {last})"),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connect_transport(
    address: &str,
    tls: Option<&TlsFiles>,
    timeout: Duration,
) -> Result<Transport, ConnectError> {
    let bad = |detail: String| ConnectError::Address { address: address.to_string(), detail };
    let mut endpoint = Endpoint::from_shared(address.to_string()).map_err(|e| bad(e.to_string()))?;
    if let Some(files) = tls {
        let host = endpoint.uri().host().ok_or_else(|| bad("it names no host".into()))?.to_string();
        endpoint = endpoint.tls_config(files.client(&host)?).map_err(|e| bad(format!("TLS: {e}")))?;
    }
    let channel = endpoint
        .connect_timeout(timeout)
        .connect()
        .await
        .map_err(|e| ConnectError::Unreachable { address: address.to_string(), detail: error_chain(&e) })?;
    Ok(Transport::new(channel.map_err(|e| TransportError(e.into()))))
}

/// A client for `service` in this process: the same requests, checks and answers as over
/// the network, without sockets or certificates (the service's own authentication
/// applies). Requests larger than `max_message_bytes` are refused as `maasd` refuses them.
pub fn in_process(service: MaasService, max_message_bytes: usize) -> Client {
    let server = MaasServer::new(service).max_decoding_message_size(max_message_bytes);
    let service = tower::service_fn(move |request: http::Request<tonic::body::Body>| {
        let mut server = server.clone();
        async move {
            use tower::Service;
            server.call(request).await.map_err(|never| match never {})
        }
    });
    MaasClient::new(Transport::new(service))
}

/// An error with its causes, `outer: inner: innermost` (tonic's transport errors keep the
/// useful part — "connection refused", the TLS alert — in the source chain).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// The action named by `spec`: `reimage:OS`, `reboot`, `reboot-soft`, `power-on`,
/// `power-off`, `power-off-soft`, `power-cycle`, `wipe`, `decommission` (underscores work
/// as dashes).
pub fn action(spec: &str) -> Result<pb::Action, UnknownWord> {
    let normal = spec.trim().replace('_', "-");
    let kind = match normal.as_str() {
        "reboot" => Kind::Reboot(pb::action::Reboot { soft: false }),
        "reboot-soft" => Kind::Reboot(pb::action::Reboot { soft: true }),
        "power-on" => Kind::PowerOn(pb::action::PowerOn {}),
        "power-off" => Kind::PowerOff(pb::action::PowerOff { soft: false }),
        "power-off-soft" => Kind::PowerOff(pb::action::PowerOff { soft: true }),
        "power-cycle" => Kind::PowerCycle(pb::action::PowerCycle {}),
        "wipe" | "wipe-disks" => Kind::WipeDisks(pb::action::Wipe { method: 0 }),
        "decommission" => Kind::Decommission(pb::action::Wipe { method: 0 }),
        other => match other.strip_prefix("reimage:") {
            Some(os) if !os.is_empty() => {
                Kind::Reimage(pb::action::Reimage { os: os.to_string(), install_timeout_secs: None })
            }
            _ => {
                return Err(UnknownWord {
                    what: "action",
                    input: spec.to_string(),
                    expected: "reimage:OS, reboot, reboot-soft, power-on, power-off, power-off-soft, power-cycle, \
                               wipe or decommission",
                });
            }
        },
    };
    Ok(pb::Action { kind: Some(kind) })
}

/// The priority class named `name`: low, normal, high or urgent.
pub fn priority(name: &str) -> Result<pb::Priority, UnknownWord> {
    match name.trim() {
        "low" => Ok(pb::Priority::Low),
        "normal" => Ok(pb::Priority::Normal),
        "high" => Ok(pb::Priority::High),
        "urgent" => Ok(pb::Priority::Urgent),
        other => {
            Err(UnknownWord { what: "priority", input: other.to_string(), expected: "low, normal, high or urgent" })
        }
    }
}

/// The structured reasons of a refused submission (conflicts, unknown hosts, ...), when
/// the status carries them: the first problems only when `truncated` is set (see
/// [`full_rejection`]).
pub fn rejection(status: &tonic::Status) -> Option<pb::Rejection> {
    crate::status::rejection_of(status)
}

/// Every reason `request` was refused with `status`: the status's own report when it is
/// whole, otherwise the report of a dry run of the same request (refusals carry only their
/// first problems, so that any client can read them). `None` when the status carries no
/// report; the status's partial report when the dry run fails.
pub async fn full_rejection(
    client: &mut Client,
    request: &pb::SubmitBatchRequest,
    status: &tonic::Status,
) -> Option<pb::Rejection> {
    let partial = rejection(status)?;
    if !partial.truncated {
        return Some(partial);
    }
    let dry = pb::SubmitBatchRequest { dry_run: true, ..request.clone() };
    match client.submit_batch(dry).await {
        Ok(answer) => answer.into_inner().problems.or(Some(partial)),
        Err(_) => Some(partial),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names_map_to_the_proto_and_bad_names_are_named() {
        assert_eq!(action("power_on").unwrap().kind, Some(Kind::PowerOn(pb::action::PowerOn {})));
        assert_eq!(
            action("reimage:ubuntu-24.04").unwrap().kind,
            Some(Kind::Reimage(pb::action::Reimage { os: "ubuntu-24.04".into(), install_timeout_secs: None }))
        );
        let e = action("reimage:").unwrap_err();
        assert_eq!((e.what, e.input.as_str()), ("action", "reimage:"));
        assert!(e.to_string().contains("\"reimage:\"") && e.to_string().contains("power-cycle"), "{e}");
        assert_eq!(action("nuke").unwrap_err().input, "nuke");
        assert_eq!(priority("urgent").unwrap(), pb::Priority::Urgent);
        assert!(priority("asap").unwrap_err().to_string().contains("\"asap\""));
    }
}
