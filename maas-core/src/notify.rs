//! Notifications as data: the rule every webhook URL follows (https, or plain http to this
//! machine only), a batch's subscriptions (the receivers its submitter asked to be told),
//! and the one-line messages chat channels (Slack- or Teams-compatible incoming webhooks)
//! get for the events people act on.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{Event, EventKind};

/// A webhook URL, parsed: `https://host[:port]/path` or `http://...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebhookUrl {
    /// Whether it is https.
    pub tls: bool,
    /// The host (a name, an IPv4 address or a bracketed IPv6 one).
    pub host: String,
    /// The port (443 or 80 when not given).
    pub port: u16,
    /// The path, at least `/`.
    pub path: String,
}

impl WebhookUrl {
    /// Parses `url`; the error says what is wrong.
    pub fn parse(url: &str) -> Result<WebhookUrl, &'static str> {
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            _ => return Err("https:// or http:// expected"),
        };
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("it holds a space or control character");
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not accepted");
        }
        let default = if tls { 443 } else { 80 };
        let port = |p: &str| p.parse::<u16>().map_err(|_| "bad port");
        let (host, port) = match authority.strip_prefix('[').and_then(|a| a.find(']')) {
            // [IPv6]:port
            Some(end) => {
                let (host, rest) = authority.split_at(end + 2);
                match rest.strip_prefix(':') {
                    Some(p) => (host, port(p)?),
                    None if rest.is_empty() => (host, default),
                    None => return Err("bad port"),
                }
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, port(p)?),
                None => (authority, default),
            },
        };
        if host.is_empty() {
            return Err("no host");
        }
        Ok(WebhookUrl { tls, host: host.to_string(), port, path })
    }

    /// Whether the host is this machine (127.0.0.0/8, ::1, localhost).
    pub fn is_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let octets: Vec<&str> = host.split('.').collect();
        let ipv4_loopback = octets.len() == 4
            && octets.iter().all(|o| !o.is_empty() && o.len() <= 3 && o.parse::<u8>().is_ok())
            && octets[0] == "127";
        host.eq_ignore_ascii_case("localhost") || host == "::1" || ipv4_loopback
    }

    /// Plain http to a receiver off this machine: events and signatures would cross the
    /// network unencrypted.
    pub fn plain_off_loopback(&self) -> bool {
        !self.tls && !self.is_loopback()
    }
}

/// One receiver a batch's submitter asked to be told about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subscription {
    /// A webhook URL of the submitter's: the batch's events as signed JSON.
    Url(String),
    /// A channel the daemon's configuration names (`channel:NAME`): a chat room or a
    /// team's hook, with a readable message per notable event.
    Channel(String),
}

impl Subscription {
    /// Most subscriptions one batch may have.
    pub const MAX_PER_BATCH: usize = 5;

    /// Parses one entry (`channel:NAME`, or an `https://` URL; plain http only to this
    /// machine), checked against the `channels` the daemon knows; the error says why.
    pub fn parse(entry: &str, channels: &[String]) -> Result<Subscription, String> {
        if let Some(name) = entry.strip_prefix("channel:") {
            return if channels.iter().any(|c| c == name) {
                Ok(Subscription::Channel(name.to_string()))
            } else if channels.is_empty() {
                Err(format!("no channel {name:?}: this deployment configures no channels"))
            } else {
                Err(format!("no channel {name:?} (known: {})", channels.join(", ")))
            };
        }
        if entry.len() > 2048 {
            return Err(format!("{} bytes; the limit is 2048", entry.len()));
        }
        let url = WebhookUrl::parse(entry).map_err(|e| format!("{entry:?}: {e}"))?;
        if url.plain_off_loopback() {
            return Err(format!("{entry:?}: plain http leaves the machine; use https://"));
        }
        Ok(Subscription::Url(entry.to_string()))
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subscription::Url(u) => f.write_str(u),
            Subscription::Channel(c) => write!(f, "channel:{c}"),
        }
    }
}

/// Failed deliveries in a row per subscribed URL, and when to give one up: a URL a batch's
/// submitter named is given up for the events at hand after [`Strikes::LIMIT`] failures
/// in a row, so one dead endpoint does not hold every other subscription back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Strikes {
    failures: std::collections::HashMap<String, u32>,
}

impl Strikes {
    /// Failures in a row after which a URL is given up.
    pub const LIMIT: u32 = 5;

    /// `url` took its events: its count starts over.
    pub fn delivered(&mut self, url: &str) {
        self.failures.remove(url);
    }

    /// `url` failed once more; `true` when it is to be given up now (its count starts over).
    pub fn failed(&mut self, url: &str) -> bool {
        let n = self.failures.entry(url.to_string()).or_default();
        *n += 1;
        if *n >= Self::LIMIT {
            self.failures.remove(url);
            return true;
        }
        false
    }
}

/// The format a channel's receiver reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelFormat {
    /// The batch's events as a signed JSON array, as webhooks get them.
    #[default]
    Json,
    /// `{"text": "..."}`: what Slack's (and Mattermost's, Rocket.Chat's) incoming webhooks read.
    Slack,
    /// `{"text": "..."}` as a Microsoft Teams incoming webhook reads it (Markdown line breaks).
    Teams,
}

/// The line a person reads for `event`, for the events worth a message (accepted, paused,
/// resumed, cancel requested, a host failed, finished); `None` for the per-host chatter.
pub fn readable(event: &Event) -> Option<String> {
    let id = event.batch_id.to_string();
    let short = &id[..id.len().min(13)];
    let text = match &event.kind {
        EventKind::BatchAccepted { action, hosts, submitter } => {
            format!("maas batch {short}: {action} on {hosts} host(s) accepted, submitted by {submitter}")
        }
        EventKind::HostFailed { host, step, error, .. } => {
            let error: String = error.chars().take(300).collect();
            format!("maas batch {short}: {host} failed at {step}: {error}")
        }
        EventKind::BatchPaused { reason } => format!("maas batch {short}: paused ({reason})"),
        EventKind::BatchResumed { principal } => format!("maas batch {short}: resumed by {principal}"),
        EventKind::CancelRequested { principal, reason } => {
            format!("maas batch {short}: cancel requested by {principal}: {reason}")
        }
        EventKind::BatchCompleted { summary } => format!(
            "maas batch {short}: completed: {} of {} host(s) succeeded, {} failed, {} cancelled",
            summary.succeeded, summary.total, summary.failed, summary.cancelled
        ),
        EventKind::BatchCancelled { summary } => format!(
            "maas batch {short}: cancelled: {} of {} host(s) succeeded, {} failed, {} cancelled",
            summary.succeeded, summary.total, summary.failed, summary.cancelled
        ),
        _ => return None,
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BatchId;
    use crate::model::BatchSummary;
    use crate::names::Hostname;
    use crate::plan::StepKind;
    use crate::time::Timestamp;

    #[test]
    fn urls_parse_and_plain_http_is_for_this_machine_only() {
        let u = WebhookUrl::parse("https://hooks.example:8443/maas").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.path.as_str()), (true, "hooks.example", 8443, "/maas"));
        assert_eq!(WebhookUrl::parse("https://hooks.example").unwrap().port, 443);
        assert_eq!(WebhookUrl::parse("http://[::1]:9/x").unwrap().host, "[::1]");
        assert_eq!(WebhookUrl::parse("http://[::1]/x").unwrap().port, 80);
        for (bad, why) in [
            ("ftp://x/", "https:// or http://"),
            ("https://:80/", "no host"),
            ("https://x:port/", "bad port"),
            ("https://user:pw@x/", "credentials"),
            ("https://x/a b", "space"),
        ] {
            let e = WebhookUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        for (url, off) in [
            ("http://127.0.0.1:1/", false),
            ("http://localhost/", false),
            ("http://10.0.0.1/", true),
            ("https://x/", false),
        ] {
            assert_eq!(WebhookUrl::parse(url).unwrap().plain_off_loopback(), off, "{url}");
        }
    }

    #[test]
    fn subscriptions_name_a_known_channel_or_a_safe_url() {
        let channels = vec!["sre-room".to_string(), "db-team".to_string()];
        assert_eq!(Subscription::parse("channel:sre-room", &channels), Ok(Subscription::Channel("sre-room".into())));
        let e = Subscription::parse("channel:ops", &channels).unwrap_err();
        assert_eq!(e, "no channel \"ops\" (known: sre-room, db-team)");
        assert!(Subscription::parse("channel:ops", &[]).unwrap_err().contains("configures no channels"));
        let url = "https://hooks.example/alice";
        assert_eq!(Subscription::parse(url, &channels), Ok(Subscription::Url(url.into())));
        assert!(Subscription::parse("http://hooks.example/alice", &channels).unwrap_err().contains("plain http"));
        assert!(Subscription::parse("http://127.0.0.1:9000/", &channels).is_ok());
        assert!(
            Subscription::parse(&format!("https://x/{}", "a".repeat(3000)), &channels).unwrap_err().contains("limit")
        );
    }

    #[test]
    fn a_url_is_given_up_after_its_failures_in_a_row_and_a_delivery_starts_over() {
        let mut s = Strikes::default();
        for _ in 1..Strikes::LIMIT {
            assert!(!s.failed("https://a/"));
        }
        s.delivered("https://a/");
        for _ in 1..Strikes::LIMIT {
            assert!(!s.failed("https://a/"), "the count started over");
        }
        assert!(!s.failed("https://b/"), "per URL");
        assert!(s.failed("https://a/"));
        assert!(!s.failed("https://a/"), "given up, then counted afresh");
    }

    #[test]
    fn people_get_a_line_for_what_they_act_on_and_none_for_chatter() {
        let batch = BatchId(uuid::Uuid::from_u128(0x0190_a0b0_1234_7000_8000_0000_0000_0001));
        let at = Timestamp::from_millis(0);
        let event = |kind| Event { seq: 1, batch_id: batch, at, kind };
        let host = Hostname::new("web7.dc1").unwrap();
        let failed = event(EventKind::HostFailed {
            host: host.clone(),
            step: StepKind::PowerCycle,
            error: "BMC unreachable".into(),
            wedged: false,
        });
        assert_eq!(
            readable(&failed).unwrap(),
            "maas batch 0190a0b0-1234: web7.dc1 failed at power_cycle: BMC unreachable"
        );
        let done = event(EventKind::BatchCompleted {
            summary: BatchSummary { total: 10, succeeded: 9, failed: 1, cancelled: 0 },
        });
        assert!(readable(&done).unwrap().ends_with("completed: 9 of 10 host(s) succeeded, 1 failed, 0 cancelled"));
        assert_eq!(readable(&event(EventKind::HostStarted { host })), None);
    }
}
