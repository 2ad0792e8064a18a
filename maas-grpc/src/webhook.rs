//! The webhook notifier: outbox events POSTed as a JSON array to an `http://` URL, signed
//! with HMAC-SHA256 (`X-Maas-Signature: sha256=<hex>` over the exact body), at least once
//! and in order (the outbox redelivers the whole slice after any failure, with backoff).
//! Receivers deduplicate by `seq`. For https, put a TLS-terminating proxy in front.

use std::time::Duration;

use async_trait::async_trait;
use maas_core::model::Event;
use maas_core::ports::services::{Notifier, NotifyError};
use ring::hmac;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where and how to deliver.
pub struct WebhookNotifier {
    host: String,
    port: u16,
    path: String,
    key: hmac::Key,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookNotifier(http://{}:{}{})", self.host, self.port, self.path)
    }
}

/// The signature header value for `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

impl WebhookNotifier {
    /// A notifier POSTing to `url` (`http://host[:port]/path`), signing with `secret`.
    pub fn new(url: &str, secret: &[u8]) -> Result<Self, String> {
        let rest =
            url.strip_prefix("http://").ok_or_else(|| format!("webhook URL {url:?}: only http:// is supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| format!("webhook URL {url:?}: bad port"))?),
            None => (authority.to_string(), 80),
        };
        if host.is_empty() {
            return Err(format!("webhook URL {url:?}: no host"));
        }
        Ok(WebhookNotifier {
            host,
            port,
            path,
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            timeout: Duration::from_secs(10),
        })
    }

    async fn post(&self, body: &[u8], first: u64, last: u64) -> Result<u16, std::io::Error> {
        let mut stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        let tag = hmac::sign(&self.key, body);
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             X-Maas-Signature: sha256={hex}\r\nX-Maas-Delivery: {first}-{last}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host,
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
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
        let body = serde_json::to_vec(events).map_err(|e| NotifyError(format!("encoding events: {e}")))?;
        match tokio::time::timeout(self.timeout, self.post(&body, first.seq, last.seq)).await {
            Ok(Ok(code)) if (200..300).contains(&code) => Ok(()),
            Ok(Ok(code)) => Err(NotifyError(format!("webhook {self:?} answered HTTP {code}"))),
            Ok(Err(e)) => Err(NotifyError(format!("webhook {self:?}: {e}"))),
            Err(_) => Err(NotifyError(format!("webhook {self:?}: no answer in {:?}", self.timeout))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_signatures() {
        let w = WebhookNotifier::new("http://127.0.0.1:8080/hooks/maas", b"k").unwrap();
        assert_eq!((w.host.as_str(), w.port, w.path.as_str()), ("127.0.0.1", 8080, "/hooks/maas"));
        assert!(WebhookNotifier::new("https://x/", b"k").unwrap_err().contains("only http://"));
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
