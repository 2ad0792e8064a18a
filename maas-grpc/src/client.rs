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
///
/// `address` may list several maasd instances of one deployment, comma-separated
/// (`https://maas-a:7443,https://maas-b:7443`): the client uses the first that answers, and
/// fails over to the next when a call finds its instance gone ([`Failover`]).
pub async fn connect(address: &str, tls: Option<&TlsFiles>, timeout: Duration) -> Result<Client, ConnectError> {
    Ok(MaasClient::new(transport(address, tls, timeout).await?))
}

/// One instance's channel, or a [`Failover`] over several (comma-separated).
async fn transport(address: &str, tls: Option<&TlsFiles>, timeout: Duration) -> Result<Transport, ConnectError> {
    let addresses: Vec<&str> = address.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    if addresses.len() <= 1 {
        return connect_transport(address.trim(), tls, timeout).await;
    }
    Ok(Transport::new(Failover::connect(&addresses, tls, timeout).await?))
}

/// The calls a client may send again to another instance when the first one is gone:
/// reads. Writes are not replayed (one may have been applied before the instance died);
/// they fail with UNAVAILABLE and the calls after them go to the next instance.
const REPLAYABLE: &[&str] = &[
    "/maas.v1.Maas/GetBatch",
    "/maas.v1.Maas/ListBatches",
    "/maas.v1.Maas/WatchBatch",
    "/maas.v1.Maas/BatchStats",
    "/maas.v1.Maas/ActiveCounts",
    "/maas.v1.Maas/ListTickets",
    "/maas.v1.Maas/ListHosts",
    "/maas.v1.Maas/GetPoolKinds",
    "/maas.v1.Maas/ListImages",
    "/maas.v1.Maas/ListAudit",
    "/grpc.health.v1.Health/Check",
];

/// A transport over several instances of one deployment (they share the database, so any
/// of them answers any call). Calls go to the current instance; one that fails in
/// transport (refused, reset: the instance is gone — not a gRPC status, which an instance
/// that is up answers with) moves the client to the next instance. A read is then sent
/// again there at once ([`REPLAYABLE`]); a write reports UNAVAILABLE.
#[derive(Clone)]
pub struct Failover {
    instances: std::sync::Arc<Vec<(String, tonic::transport::Channel)>>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Failover {
    /// Channels to every address (each connected lazily), starting with the first that
    /// connects within `timeout`; fails naming every address when none does.
    async fn connect(addresses: &[&str], tls: Option<&TlsFiles>, timeout: Duration) -> Result<Self, ConnectError> {
        let mut instances = Vec::new();
        for address in addresses {
            instances.push((address.to_string(), endpoint(address, tls, timeout)?.connect_lazy()));
        }
        let mut failures = Vec::new();
        for (i, address) in addresses.iter().enumerate() {
            match endpoint(address, tls, timeout)?.connect().await {
                Ok(channel) => {
                    instances[i].1 = channel;
                    let current = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(i));
                    return Ok(Failover { instances: std::sync::Arc::new(instances), current });
                }
                Err(e) => failures.push(format!("{address}: {}", error_chain(&e))),
            }
        }
        Err(ConnectError::Unreachable { address: addresses.join(","), detail: failures.join("; ") })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Failover {
    type Response = http::Response<tonic::body::Body>;
    type Error = TransportError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, TransportError>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), TransportError>> {
        // Each call waits for its instance's channel (`oneshot`).
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        use http_body_util::BodyExt;
        let (instances, current) = (self.instances.clone(), self.current.clone());
        Box::pin(async move {
            let n = instances.len();
            let first = current.load(std::sync::atomic::Ordering::Relaxed) % n;
            let replayable = REPLAYABLE.contains(&request.uri().path());
            if !replayable {
                let result = instances[first].1.clone().oneshot(request).await;
                if result.is_err() {
                    let _ = current.compare_exchange(first, (first + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
                }
                return result.map_err(|e| TransportError(e.into()));
            }
            // A read: its (small, unary) request is kept to send it again elsewhere.
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.map_err(|e| TransportError(e.into()))?.to_bytes();
            let mut last = None;
            for k in 0..n {
                let i = (first + k) % n;
                let attempt = http::Request::from_parts(
                    parts.clone(),
                    tonic::body::Body::new(http_body_util::Full::new(bytes.clone())),
                );
                match instances[i].1.clone().oneshot(attempt).await {
                    Ok(response) => {
                        current.store(i, Ordering::Relaxed);
                        return Ok(response);
                    }
                    Err(e) => last = Some(TransportError(e.into())),
                }
            }
            let _ = current.compare_exchange(first, (first + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
            Err(last.unwrap_or_else(|| TransportError("no instance to call".into())))
        })
    }
}

use std::sync::atomic::Ordering;

/// Waits until the server at `address` accepts connections and reports `maas.v1.Maas` as
/// serving (grpc.health.v1), at most `deadline`: for scripts that start `maasd` and use it
/// at once. A connection refused (not listening yet) or a server still starting is asked
/// again every 200 ms; a bad address or certificate fails at once (waiting does not mend
/// it). Returns a connected client.
pub async fn wait_ready(address: &str, tls: Option<&TlsFiles>, deadline: Duration) -> Result<Client, ConnectError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let until = std::time::Instant::now() + deadline;
    loop {
        let last = match transport(address, tls, Duration::from_secs(2)).await {
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

/// The endpoint of one instance: its TLS checked under the address's host name.
fn endpoint(address: &str, tls: Option<&TlsFiles>, timeout: Duration) -> Result<Endpoint, ConnectError> {
    let bad = |detail: String| ConnectError::Address { address: address.to_string(), detail };
    let mut endpoint = Endpoint::from_shared(address.to_string()).map_err(|e| bad(e.to_string()))?;
    if let Some(files) = tls {
        let host = endpoint.uri().host().ok_or_else(|| bad("it names no host".into()))?.to_string();
        endpoint = endpoint.tls_config(files.client(&host)?).map_err(|e| bad(format!("TLS: {e}")))?;
    }
    Ok(endpoint.connect_timeout(timeout))
}

async fn connect_transport(
    address: &str,
    tls: Option<&TlsFiles>,
    timeout: Duration,
) -> Result<Transport, ConnectError> {
    let channel = endpoint(address, tls, timeout)?
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
