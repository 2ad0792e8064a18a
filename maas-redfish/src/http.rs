//! One HTTPS connection to a BMC (hyper's HTTP/1.1 client over tokio-rustls), kept open
//! while the BMC keeps it open and reopened when it closed it (many BMCs, and the
//! emulator, answer `Connection: close`). Answers are JSON, read up to a size limit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use maas_core::host::BmcEndpoint;
use maas_core::ports::power::PowerError;
use rustls_pki_types::ServerName;

/// The largest answer read from a BMC (a hostile or broken one cannot exhaust memory).
const MAX_BODY: usize = 4 << 20;

/// What a BMC answered.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    /// `ETag`, if sent.
    pub(crate) etag: Option<String>,
    /// `Location`, if sent (a created session, a task monitor).
    pub(crate) location: Option<String>,
    /// `X-Auth-Token`, if sent (a created session).
    pub(crate) token: Option<String>,
    /// `Retry-After` in seconds, if sent.
    pub(crate) retry_after: Option<u64>,
    /// The JSON body (`Null` when empty or not JSON).
    pub(crate) body: serde_json::Value,
}

impl Answer {
    /// The Redfish error message of a refusal, or the status's reason.
    pub(crate) fn message(&self) -> String {
        let error = &self.body["error"];
        let extended = error["@Message.ExtendedInfo"][0]["Message"].as_str();
        extended
            .or_else(|| error["message"].as_str())
            .map(|m| m.chars().take(300).collect())
            .unwrap_or_else(|| self.status.canonical_reason().unwrap_or("no reason given").to_string())
    }
}

/// A request: method, path (with query), extra headers, JSON body.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) path: &'a str,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<serde_json::Value>,
}

impl<'a> Call<'a> {
    pub(crate) fn get(path: &'a str) -> Self {
        Call { method: Method::GET, path, headers: Vec::new(), body: None }
    }
    pub(crate) fn with(method: Method, path: &'a str, body: serde_json::Value) -> Self {
        Call { method, path, headers: Vec::new(), body: Some(body) }
    }
}

/// Why a request failed before an answer came.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Nothing was sent (connecting, TLS): safe to send again.
    NotSent(PowerError),
    /// The request may have reached the BMC.
    MaybeSent(PowerError),
}

impl Failure {
    pub(crate) fn error(self) -> PowerError {
        match self {
            Failure::NotSent(e) | Failure::MaybeSent(e) => e,
        }
    }
}

/// An open connection.
pub(crate) struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

fn io_error(bmc: &str, e: &std::io::Error) -> PowerError {
    let rustls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(c)) => {
            PowerError::Certificate { bmc: bmc.to_string(), detail: format!("{c:?}") }
        }
        Some(rustls::Error::General(detail)) => {
            PowerError::Certificate { bmc: bmc.to_string(), detail: detail.clone() }
        }
        Some(other) => PowerError::Unreachable { bmc: bmc.to_string(), detail: format!("TLS: {other}") },
        None => PowerError::Unreachable { bmc: bmc.to_string(), detail: e.to_string() },
    }
}

impl Connection {
    /// Opens TCP, TLS (checked by `tls`) and HTTP/1.1 to `bmc` within `timeout`.
    pub(crate) async fn open(
        bmc: &BmcEndpoint,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Connection, PowerError> {
        let key = bmc.key();
        let timed_out = || PowerError::Timeout { bmc: key.clone(), millis: timeout.as_millis() as u64 };
        let host = bmc.address.trim_start_matches('[').trim_end_matches(']').to_string();
        let work = async {
            let tcp =
                tokio::net::TcpStream::connect((host.as_str(), bmc.port)).await.map_err(|e| io_error(&key, &e))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| PowerError::Unreachable { bmc: key.clone(), detail: format!("address: {e}") })?;
            let stream =
                tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| io_error(&key, &e))?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| PowerError::Unreachable { bmc: key.clone(), detail: format!("HTTP: {e}") })?;
            // Ends when the BMC or the driver closes the connection.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(Connection { sender })
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| timed_out())?
    }

    /// Whether another request can go on this connection.
    pub(crate) fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends `call` with `auth` (an `Authorization` or `X-Auth-Token` header) and reads
    /// the answer within `timeout`.
    pub(crate) async fn send(
        &mut self,
        bmc: &BmcEndpoint,
        call: &Call<'_>,
        auth: Option<(&'static str, &str)>,
        timeout: Duration,
    ) -> Result<Answer, Failure> {
        let key = bmc.key();
        let unreachable = |detail: String| PowerError::Unreachable { bmc: key.clone(), detail };
        if self.sender.ready().await.is_err() {
            return Err(Failure::NotSent(unreachable("the connection closed".into())));
        }
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(call.path)
            .header(hyper::header::HOST, key.as_str())
            .header(hyper::header::ACCEPT, "application/json")
            .header("OData-Version", "4.0");
        if let Some((name, value)) = auth {
            request = request.header(name, value);
        }
        for (name, value) in &call.headers {
            request = request.header(*name, value.as_str());
        }
        let body = match &call.body {
            Some(json) => {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| Failure::NotSent(PowerError::Unsupported(format!("request {}: {e}", call.path))))?;
        let exchange = async {
            let response = self.sender.send_request(request).await.map_err(|e| {
                // A request hyper could not write was not sent.
                if e.is_canceled() {
                    Failure::NotSent(unreachable(e.to_string()))
                } else {
                    Failure::MaybeSent(unreachable(e.to_string()))
                }
            })?;
            let (parts, body) = response.into_parts();
            let header = |name| {
                parts.headers.get(name).and_then(|v: &hyper::header::HeaderValue| v.to_str().ok()).map(str::to_string)
            };
            let bytes = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| Failure::MaybeSent(unreachable(format!("reading the answer: {e}"))))?
                .to_bytes();
            let body = if bytes.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
            };
            Ok(Answer {
                status: parts.status,
                etag: header(hyper::header::ETAG.as_str()),
                location: header(hyper::header::LOCATION.as_str()).map(|l| path_of(&l)),
                token: header("x-auth-token"),
                retry_after: header(hyper::header::RETRY_AFTER.as_str()).and_then(|v| v.trim().parse().ok()),
                body,
            })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| {
            Failure::MaybeSent(PowerError::Timeout { bmc: key.clone(), millis: timeout.as_millis() as u64 })
        })?
    }
}

/// The path (and query) of a URI that may be absolute (`https://bmc/redfish/v1/...`).
pub(crate) fn path_of(uri: &str) -> String {
    match uri.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|i| rest[i..].to_string()).unwrap_or_else(|| "/".into()),
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_become_paths() {
        assert_eq!(path_of("https://10.0.0.1:8443/redfish/v1/TaskMonitors/7"), "/redfish/v1/TaskMonitors/7");
        assert_eq!(path_of("/redfish/v1/SessionService/Sessions/3"), "/redfish/v1/SessionService/Sessions/3");
        assert_eq!(path_of("https://bmc"), "/");
    }

    #[test]
    fn refusals_say_what_the_bmc_said() {
        let answer = |body| Answer {
            status: StatusCode::BAD_REQUEST,
            etag: None,
            location: None,
            token: None,
            retry_after: None,
            body,
        };
        let redfish = serde_json::json!({"error": {"code": "Base.1.0.GeneralError", "message": "general",
            "@Message.ExtendedInfo": [{"Message": "The value PowerCycle for ResetType is not supported."}]}});
        assert_eq!(answer(redfish).message(), "The value PowerCycle for ResetType is not supported.");
        assert_eq!(answer(serde_json::json!({"error": {"message": "plain"}})).message(), "plain");
        assert_eq!(answer(serde_json::Value::Null).message(), "Bad Request");
    }
}
