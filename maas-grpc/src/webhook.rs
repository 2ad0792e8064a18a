//! The webhook notifier: outbox events POSTed as a JSON array to an `https://` URL (rustls;
//! the receiver's certificate checked against the system's roots or a CA file of the
//! webhook's own), signed with HMAC-SHA256 (`X-Maas-Signature: sha256=<hex>` over the exact
//! body), at least once and in order (the outbox redelivers the whole slice after any
//! failure, with backoff). Receivers deduplicate by `seq`. Plain `http://` only to a
//! loopback receiver, or with an explicit opt-in that logs a warning; there is no mode that
//! skips checking an https receiver's certificate.
//!
//! A notifier takes a [`Selection`]: every event, only the events of batches some
//! principals submitted (a team's own hook), or tickets (failure budgets, wedged hosts,
//! stragglers) as `{"seq": .., "ticket": {..}}` objects. A delivery with nothing selected
//! posts nothing.

use crate::errors::WebhookUrlError;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use maas_core::id::BatchId;
use maas_core::model::{Event, EventKind};
use maas_core::policy::leader::ticket_for;
use maas_core::ports::services::{Notifier, NotifyError};
use maas_core::ports::store::Store;
use ring::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An `https://` or `http://host[:port]/path` URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl Endpoint {
    /// Parses `url` (`https://` or `http://`).
    pub fn parse(url: &str) -> Result<Endpoint, WebhookUrlError> {
        let bad = |reason: &str| WebhookUrlError { url: url.to_string(), reason: reason.to_string() };
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            _ => return Err(bad("https:// or http:// expected")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
            None => (authority.to_string(), if tls { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint { tls, host, port, path })
    }

    /// Whether plain http to this endpoint is refused: it is allowed to a loopback
    /// receiver (127.0.0.0/8, ::1, localhost), and elsewhere only with `allow_plain_http`.
    pub fn check_plain_http(&self, url: &str, allow_plain_http: bool) -> Result<(), WebhookUrlError> {
        if self.tls || allow_plain_http || self.is_loopback() {
            return Ok(());
        }
        Err(WebhookUrlError {
            url: url.to_string(),
            reason: "plain http leaves the machine: use https://, or set allow_plain_http = true to accept that \
                     events and signatures cross the network unencrypted"
                .into(),
        })
    }

    /// Whether plain http is used to a receiver off this machine.
    pub fn plain_off_loopback(&self) -> bool {
        !self.tls && !self.is_loopback()
    }

    fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// Whom an https webhook trusts: the system's root certificates, or the CA certificates in
/// a PEM file (a receiver with a private CA).
pub fn client_tls(url: &str, ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, WebhookUrlError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bad = |reason: String| WebhookUrlError { url: url.to_string(), reason };
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect())
                .map_err(|e| bad(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(bad(format!("CA file {}: no certificate in it", path.display())));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(format!("CA file {}: {e}", path.display())))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system bundle may hold certificates rustls cannot use; the rest serve.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(bad(format!("no system root certificates found ({:?}); set ca_file", found.errors)));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Which events a webhook receives.
#[derive(Clone)]
pub enum Selection {
    /// Every event.
    All,
    /// Events of batches these principals submitted; the store answers who submitted a
    /// batch (remembered per batch).
    Submitters {
        /// The principals.
        names: BTreeSet<String>,
        /// Where batches are looked up.
        store: Arc<dyn Store>,
    },
    /// Tickets derived from events (stragglers too when `stragglers`).
    Tickets {
        /// Straggler events raise tickets.
        stragglers: bool,
    },
}

/// Where and how to deliver.
pub struct WebhookNotifier {
    endpoint: Endpoint,
    /// For https: whom the receiver's certificate must chain to.
    tls: Option<Arc<rustls::ClientConfig>>,
    key: hmac::Key,
    timeout: Duration,
    selection: Selection,
    submitter_of: Mutex<HashMap<BatchId, Option<String>>>,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Endpoint { tls, host, port, path } = &self.endpoint;
        let scheme = if *tls { "https" } else { "http" };
        write!(f, "WebhookNotifier({scheme}://{host}:{port}{path})")
    }
}

fn hex_tag(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The signature header value for `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex_tag(&hmac::Key::new(hmac::HMAC_SHA256, secret), body))
}

impl WebhookNotifier {
    /// A notifier POSTing every event to `url` (`https://host[:port]/path`, its certificate
    /// checked against the system's roots; or `http://`), signing with `secret`.
    pub fn new(url: &str, secret: &[u8]) -> Result<Self, WebhookUrlError> {
        Self::trusting(url, secret, None)
    }

    /// [`WebhookNotifier::new`], an https receiver checked against the CA certificates in
    /// `ca_file` (PEM) instead of the system's roots.
    pub fn trusting(url: &str, secret: &[u8], ca_file: Option<&std::path::Path>) -> Result<Self, WebhookUrlError> {
        let endpoint = Endpoint::parse(url)?;
        let tls = if endpoint.tls { Some(client_tls(url, ca_file)?) } else { None };
        Ok(WebhookNotifier {
            endpoint,
            tls,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            timeout: Duration::from_secs(10),
            selection: Selection::All,
            submitter_of: Mutex::new(HashMap::new()),
        })
    }

    /// Delivers only what `selection` selects.
    pub fn select(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }

    async fn submitted_by_one_of(&self, e: &Event, names: &BTreeSet<String>, store: &Arc<dyn Store>) -> bool {
        if let EventKind::BatchAccepted { submitter, .. } = &e.kind {
            self.submitter_of.lock().unwrap_or_else(|p| p.into_inner()).insert(e.batch_id, Some(submitter.clone()));
        }
        let known = self.submitter_of.lock().unwrap_or_else(|p| p.into_inner()).get(&e.batch_id).cloned();
        let submitter = match known {
            Some(s) => s,
            None => {
                // A purged batch has no submitter to match: its events are not selected.
                let s = store.batch_get(e.batch_id).await.ok().flatten().map(|b| b.submitter);
                self.submitter_of.lock().unwrap_or_else(|p| p.into_inner()).insert(e.batch_id, s.clone());
                s
            }
        };
        if e.kind.ends_batch() {
            // Nothing about the batch follows: the cache holds unfinished batches only.
            self.submitter_of.lock().unwrap_or_else(|p| p.into_inner()).remove(&e.batch_id);
        }
        submitter.is_some_and(|s| names.contains(&s))
    }

    /// The body for `events` under the selection (`None`: nothing selected).
    async fn body(&self, events: &[Event]) -> Result<Option<Vec<u8>>, serde_json::Error> {
        let json = match &self.selection {
            Selection::All => serde_json::to_vec(events)?,
            Selection::Submitters { names, store } => {
                let mut chosen = Vec::new();
                for e in events {
                    if self.submitted_by_one_of(e, names, store).await {
                        chosen.push(e);
                    }
                }
                if chosen.is_empty() {
                    return Ok(None);
                }
                serde_json::to_vec(&chosen)?
            }
            Selection::Tickets { stragglers } => {
                let tickets: Vec<_> = events
                    .iter()
                    .filter_map(|e| {
                        ticket_for(e, *stragglers).map(|t| serde_json::json!({ "seq": e.seq, "ticket": t }))
                    })
                    .collect();
                if tickets.is_empty() {
                    return Ok(None);
                }
                serde_json::to_vec(&tickets)?
            }
        };
        Ok(Some(json))
    }

    async fn post(&self, body: &[u8], first: u64, last: u64) -> Result<u16, std::io::Error> {
        let host = self.endpoint.host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::net::TcpStream::connect((host, self.endpoint.port)).await?;
        match &self.tls {
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp).await?;
                self.exchange(tls, body, first, last).await
            }
            None => self.exchange(tcp, body, first, last).await,
        }
    }

    /// One HTTP/1.1 POST on `stream`; the answer's status code.
    async fn exchange(
        &self,
        mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        body: &[u8],
        first: u64,
        last: u64,
    ) -> Result<u16, std::io::Error> {
        let Endpoint { host, port, path, .. } = &self.endpoint;
        let hex = hex_tag(&self.key, body);
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             X-Maas-Signature: sha256={hex}\r\nX-Maas-Delivery: {first}-{last}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.flush().await?;
        let mut answer = Vec::new();
        // A TLS receiver may close without close_notify once it has answered: what was
        // read by then is the answer.
        if let Err(e) = stream.read_to_end(&mut answer).await
            && (answer.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof)
        {
            return Err(e);
        }
        let text = String::from_utf8_lossy(&answer);
        text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| {
            std::io::Error::other(format!("not an HTTP answer: {:?}", text.chars().take(40).collect::<String>()))
        })
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn deliver(&self, events: &[Event]) -> Result<(), NotifyError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return Ok(()) };
        let body = self.body(events).await.map_err(|e| NotifyError::Prepare { cause: e.into() })?;
        let Some(body) = body else { return Ok(()) };
        match tokio::time::timeout(self.timeout, self.post(&body, first.seq, last.seq)).await {
            Ok(Ok(code)) if (200..300).contains(&code) => Ok(()),
            Ok(Ok(code)) => {
                Err(NotifyError::Refused { receiver: format!("webhook {self:?}"), answer: format!("HTTP {code}") })
            }
            Ok(Err(e)) => Err(NotifyError::Unreachable { receiver: format!("webhook {self:?}"), cause: e.into() }),
            Err(_) => Err(NotifyError::Unreachable {
                receiver: format!("webhook {self:?}"),
                cause: format!("no answer in {:?}", self.timeout).into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_signatures() {
        let w = Endpoint::parse("http://127.0.0.1:8080/hooks/maas").unwrap();
        assert_eq!((w.host.as_str(), w.port, w.path.as_str()), ("127.0.0.1", 8080, "/hooks/maas"));
        assert_eq!(Endpoint::parse("http://hooks").unwrap().port, 80);
        assert_eq!(Endpoint::parse("https://hooks.example/x").unwrap().port, 443);
        assert!(Endpoint::parse("ftp://x/").unwrap_err().to_string().contains("https:// or http://"));
        // Plain http: loopback only, unless opted in.
        for (url, refused) in [
            ("http://127.0.0.1:8080/", false),
            ("http://localhost/", false),
            ("http://[::1]:9/", false),
            ("http://hooks.internal/", true),
            ("http://10.0.0.5/", true),
            ("https://hooks.internal/", false),
        ] {
            let e = Endpoint::parse(url).unwrap();
            assert_eq!(e.check_plain_http(url, false).is_err(), refused, "{url}");
            assert!(e.check_plain_http(url, true).is_ok(), "{url} with the opt-in");
        }
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn selections_choose_submitters_and_tickets() {
        use maas_core::action::Action;
        use maas_core::id::IdGenerator;
        use maas_core::machine::Rules;
        use maas_core::names::Hostname;
        use maas_core::plan::StepKind;
        use maas_core::time::{ManualClock, Timestamp};
        use maas_sim::memstore::MemStore;

        let ids = IdGenerator::new(Arc::new(ManualClock::new(Timestamp::from_millis(0))), 7);
        let (alices, unknown) = (ids.batch(), ids.batch());
        let host = Hostname::new("web001.dc1").unwrap();
        let at = Timestamp::from_millis(5);
        let events = vec![
            Event {
                seq: 1,
                batch_id: alices,
                at,
                kind: EventKind::BatchAccepted { action: Action::PowerCycle, hosts: 1, submitter: "alice".into() },
            },
            Event { seq: 2, batch_id: unknown, at, kind: EventKind::HostStarted { host: host.clone() } },
            Event {
                seq: 3,
                batch_id: alices,
                at,
                kind: EventKind::HostFailed { host, step: StepKind::PowerCycle, error: "dead".into(), wedged: true },
            },
        ];
        let seqs = |body: Option<Vec<u8>>| -> Vec<u64> {
            let v: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
            v.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect()
        };
        let store: Arc<dyn Store> = Arc::new(MemStore::new(Rules::default()));
        let hook = |selection| WebhookNotifier::new("http://127.0.0.1:1/", b"k").unwrap().select(selection);
        assert_eq!(seqs(hook(Selection::All).body(&events).await.unwrap()), [1, 2, 3]);
        let alice = Selection::Submitters { names: ["alice".to_string()].into(), store: store.clone() };
        let alices_hook = hook(alice);
        assert_eq!(seqs(alices_hook.body(&events).await.unwrap()), [1, 3], "the unknown batch is not alice's");
        assert_eq!(alices_hook.submitter_of.lock().unwrap().len(), 2, "both batches' submitters are remembered");
        let summary = maas_core::model::BatchSummary { total: 1, succeeded: 0, failed: 1, cancelled: 0 };
        let end = Event { seq: 4, batch_id: alices, at, kind: EventKind::BatchCompleted { summary } };
        assert_eq!(seqs(alices_hook.body(&[end]).await.unwrap()), [4]);
        assert!(!alices_hook.submitter_of.lock().unwrap().contains_key(&alices), "a finished batch is forgotten");
        let bob = Selection::Submitters { names: ["bob".to_string()].into(), store };
        assert_eq!(hook(bob).body(&events).await.unwrap(), None, "nothing selected posts nothing");
        let tickets = hook(Selection::Tickets { stragglers: true }).body(&events).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&tickets).unwrap();
        assert_eq!(v[0]["seq"], 3);
        assert_eq!(v[0]["ticket"]["kind"], "wedged_host");
        assert_eq!(v.as_array().unwrap().len(), 1);
    }
}
