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
use maas_core::notify::WebhookUrl;
use maas_core::policy::leader::ticket_for;
use maas_core::ports::services::{Notifier, NotifyError};
use maas_core::ports::store::Store;
use ring::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `url` parsed as maas-core's [`WebhookUrl`], refused when it sends plain http off this
/// machine without `allow_plain_http`.
pub fn check_url(url: &str, allow_plain_http: bool) -> Result<WebhookUrl, WebhookUrlError> {
    let bad = |reason: String| WebhookUrlError { url: url.to_string(), reason };
    let parsed = WebhookUrl::parse(url).map_err(|e| bad(e.to_string()))?;
    if parsed.plain_off_loopback() && !allow_plain_http {
        return Err(bad("plain http leaves the machine: use https://, or set allow_plain_http = true to accept \
                        that events and signatures cross the network unencrypted"
            .into()));
    }
    Ok(parsed)
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
    tls_trusting(roots).map_err(|e| bad(e.to_string()))
}

/// A TLS client configuration (ring) trusting `roots`.
pub fn tls_trusting(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
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

/// One receiver: where to POST, whom its certificate must chain to, and the signing key.
/// Shared by the daemon's webhooks and the per-batch subscriptions.
pub struct Poster {
    endpoint: WebhookUrl,
    /// For https: whom the receiver's certificate must chain to.
    tls: Option<Arc<rustls::ClientConfig>>,
    key: hmac::Key,
    timeout: Duration,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let WebhookUrl { tls, host, port, path } = &self.endpoint;
        let scheme = if *tls { "https" } else { "http" };
        write!(f, "{scheme}://{host}:{port}{path}")
    }
}

/// The batches' facts the selections need (submitter, subscriptions), read once per batch
/// and forgotten once its last event went by.
#[derive(Default)]
pub struct BatchFacts {
    known: Mutex<HashMap<BatchId, Option<Facts>>>,
}

/// A batch's submitter and subscriptions.
type Facts = (String, Vec<String>);

impl BatchFacts {
    /// `(submitter, subscriptions)` of `e`'s batch (`None`: the batch is gone, purged).
    pub async fn of(&self, e: &Event, store: &Arc<dyn Store>) -> Option<(String, Vec<String>)> {
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner()).get(&e.batch_id).cloned();
        let facts = match known {
            Some(f) => f,
            None => {
                let b = store.batch_get(e.batch_id).await.ok().flatten();
                let f = match (b, &e.kind) {
                    (Some(b), _) => Some((b.submitter.clone(), b.spec.notify.clone())),
                    // Not readable (yet, or any more): its acceptance names its submitter.
                    (None, EventKind::BatchAccepted { submitter, .. }) => Some((submitter.clone(), Vec::new())),
                    (None, _) => None,
                };
                self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(e.batch_id, f.clone());
                f
            }
        };
        if e.kind.ends_batch() {
            // Nothing about the batch follows: the cache holds unfinished batches only.
            self.known.lock().unwrap_or_else(|p| p.into_inner()).remove(&e.batch_id);
        }
        facts
    }

    /// How many batches it remembers.
    pub fn len(&self) -> usize {
        self.known.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where and how to deliver.
pub struct WebhookNotifier {
    poster: Poster,
    selection: Selection,
    facts: BatchFacts,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookNotifier({:?})", self.poster)
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

impl Poster {
    /// A receiver at `url` (checked by [`check_url`]: plain http off this machine only with
    /// `allow_plain_http`), its https certificate checked against the CA certificates in
    /// `ca_file` or the system's roots, bodies signed with `secret`.
    pub fn new(
        url: &str,
        secret: &[u8],
        ca_file: Option<&std::path::Path>,
        allow_plain_http: bool,
    ) -> Result<Self, WebhookUrlError> {
        let endpoint = check_url(url, allow_plain_http)?;
        let tls = if endpoint.tls { Some(client_tls(url, ca_file)?) } else { None };
        Ok(Poster { endpoint, tls, key: hmac::Key::new(hmac::HMAC_SHA256, secret), timeout: Duration::from_secs(10) })
    }

    /// [`Poster::new`] with a TLS configuration already made (one per deployment for the
    /// subscriptions' URLs, which all trust the system's roots).
    pub fn with_tls(url: &str, secret: &[u8], tls: Arc<rustls::ClientConfig>) -> Result<Self, WebhookUrlError> {
        let endpoint = check_url(url, false)?;
        let tls = endpoint.tls.then_some(tls);
        Ok(Poster { endpoint, tls, key: hmac::Key::new(hmac::HMAC_SHA256, secret), timeout: Duration::from_secs(10) })
    }

    /// POSTs `body` (signed) and wants a 2xx, within the timeout; `first`..`last` name the
    /// outbox positions it carries (`X-Maas-Delivery`).
    pub async fn deliver(&self, body: &[u8], first: u64, last: u64) -> Result<(), NotifyError> {
        let receiver = || format!("webhook {self:?}");
        match tokio::time::timeout(self.timeout, self.post(body, first, last)).await {
            Ok(Ok(code)) if (200..300).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(NotifyError::Refused { receiver: receiver(), answer: format!("HTTP {code}") }),
            Ok(Err(e)) => Err(NotifyError::Unreachable { receiver: receiver(), cause: e.into() }),
            Err(_) => Err(NotifyError::Unreachable {
                receiver: receiver(),
                cause: format!("no answer in {:?}", self.timeout).into(),
            }),
        }
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
        let WebhookUrl { host, port, path, .. } = &self.endpoint;
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

impl WebhookNotifier {
    /// A notifier POSTing every event to `url` (`https://host[:port]/path`, its certificate
    /// checked against the system's roots; or `http://` to a loopback receiver), signing
    /// with `secret`.
    pub fn new(url: &str, secret: &[u8]) -> Result<Self, WebhookUrlError> {
        Self::trusting(url, secret, None, false)
    }

    /// [`WebhookNotifier::new`], an https receiver checked against the CA certificates in
    /// `ca_file` (PEM) instead of the system's roots; `allow_plain_http` accepts plain http
    /// to a receiver off this machine (the caller says so in its log).
    pub fn trusting(
        url: &str,
        secret: &[u8],
        ca_file: Option<&std::path::Path>,
        allow_plain_http: bool,
    ) -> Result<Self, WebhookUrlError> {
        Ok(WebhookNotifier {
            poster: Poster::new(url, secret, ca_file, allow_plain_http)?,
            selection: Selection::All,
            facts: BatchFacts::default(),
        })
    }

    /// Delivers only what `selection` selects.
    pub fn select(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }

    /// The body for `events` under the selection (`None`: nothing selected).
    async fn body(&self, events: &[Event]) -> Result<Option<Vec<u8>>, serde_json::Error> {
        let json = match &self.selection {
            Selection::All => serde_json::to_vec(events)?,
            Selection::Submitters { names, store } => {
                let mut chosen = Vec::new();
                for e in events {
                    if self.facts.of(e, store).await.is_some_and(|(submitter, _)| names.contains(&submitter)) {
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
}

#[async_trait]
impl Notifier for WebhookNotifier {
    async fn deliver(&self, events: &[Event]) -> Result<(), NotifyError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return Ok(()) };
        let body = self.body(events).await.map_err(|e| NotifyError::Prepare { cause: e.into() })?;
        let Some(body) = body else { return Ok(()) };
        self.poster.deliver(&body, first.seq, last.seq).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_signatures() {
        // Plain http: loopback only, unless opted in.
        for (url, refused) in [
            ("http://127.0.0.1:8080/", false),
            ("http://localhost/", false),
            ("http://[::1]:9/", false),
            ("http://hooks.internal/", true),
            ("http://10.0.0.5/", true),
            ("https://hooks.internal/", false),
        ] {
            assert_eq!(check_url(url, false).is_err(), refused, "{url}");
            assert!(check_url(url, true).is_ok(), "{url} with the opt-in");
        }
        assert!(check_url("ftp://x/", true).unwrap_err().to_string().contains("https:// or http://"));
        // The SDK's constructors follow the same rule.
        assert!(WebhookNotifier::new("http://hooks.internal/", b"k").unwrap_err().to_string().contains("plain http"));
        assert!(WebhookNotifier::trusting("http://hooks.internal/", b"k", None, true).is_ok());
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
        assert_eq!(alices_hook.facts.len(), 2, "both batches' submitters are remembered");
        let summary = maas_core::model::BatchSummary { total: 1, succeeded: 0, failed: 1, cancelled: 0 };
        let end = Event { seq: 4, batch_id: alices, at, kind: EventKind::BatchCompleted { summary } };
        assert_eq!(seqs(alices_hook.body(&[end]).await.unwrap()), [4]);
        assert_eq!(alices_hook.facts.len(), 1, "a finished batch is forgotten");
        let bob = Selection::Submitters { names: ["bob".to_string()].into(), store };
        assert_eq!(hook(bob).body(&events).await.unwrap(), None, "nothing selected posts nothing");
        let tickets = hook(Selection::Tickets { stragglers: true }).body(&events).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&tickets).unwrap();
        assert_eq!(v[0]["seq"], 3);
        assert_eq!(v[0]["ticket"]["kind"], "wedged_host");
        assert_eq!(v.as_array().unwrap().len(), 1);
    }
}
