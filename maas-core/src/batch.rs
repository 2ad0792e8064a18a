//! Batches as users write them ([`BatchRequest`]: hostlist expressions, parsed from JSON or
//! built in code) and as the system keeps them ([`BatchSpec`]: validated, expanded).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::hostlist::DEFAULT_EXPANSION_CAP;
use crate::id::BatchId;
use crate::model::{AuditOp, AuditRecord};
use crate::names::{Hostname, Site};
use crate::priority::PriorityClass;
use crate::time::Timestamp;

/// How fast a batch may go and how much failure it tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutPolicy {
    /// At most this many hosts of the batch run at once (>= 1).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// The batch pauses (no new hosts start) once more than this many host runs failed.
    #[serde(default = "default_failure_budget")]
    pub failure_budget: u32,
}

fn default_max_in_flight() -> u32 {
    100
}

fn default_failure_budget() -> u32 {
    5
}

impl Default for RolloutPolicy {
    /// 100 hosts in flight; pause after the 6th failed host.
    fn default() -> Self {
        RolloutPolicy { max_in_flight: default_max_in_flight(), failure_budget: default_failure_budget() }
    }
}

/// Permission to act on hosts that are allocated / in use, with the reason recorded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForceInUse {
    /// Why (recorded in the audit trail; required, non-blank).
    pub reason: String,
}

/// A batch as submitted: hostlist expressions and options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// What to do.
    pub action: Action,
    /// Hostlist expressions (`web[001-100].dc1`) or plain names.
    pub hosts: Vec<String>,
    /// How urgent.
    #[serde(default)]
    pub priority: PriorityClass,
    /// Parallelism cap and failure budget.
    #[serde(default)]
    pub rollout: RolloutPolicy,
    /// Resubmitting with the same key and spec returns the first batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Do not start before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// Act on in-use hosts too (needs the force permission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<ForceInUse>,
    /// If non-empty, every host must be in one of these sites.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<Site>,
    /// Free text for humans (the change ticket, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Values for the image's configuration template (`{{ params.KEY }}`): cloud-init
    /// user-data, kickstart variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Check every host's BMC console before accepting (the seed's pre-acceptance
    /// console check); `None`: the engine's default (`EngineConfig::console_check`, maasd's
    /// `[ipmi] console_check`). Not part of the batch's spec: it decides acceptance only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_check: Option<bool>,
    /// Whom to tell about this batch, besides the daemon's own webhooks: `https://` URLs of
    /// the submitter's (signed JSON events) or `channel:NAME` for a channel the daemon
    /// configures (a chat room: a readable line per notable event). At most
    /// [`crate::notify::Subscription::MAX_PER_BATCH`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
}

impl BatchRequest {
    /// A request with defaults for everything but the action and hosts.
    pub fn new(action: Action, hosts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        BatchRequest {
            action,
            hosts: hosts.into_iter().map(Into::into).collect(),
            priority: PriorityClass::default(),
            rollout: RolloutPolicy::default(),
            idempotency_key: None,
            not_before: None,
            force: None,
            sites: Vec::new(),
            comment: None,
            params: BTreeMap::new(),
            console_check: None,
            notify: Vec::new(),
        }
    }

    /// Parses a JSON batch document; the error names the line, column and field.
    pub fn from_json(doc: &str) -> Result<Self, SpecParseError> {
        serde_json::from_str(doc).map_err(|e| SpecParseError {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }
}

/// A batch document that is not valid JSON or does not match the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("batch spec: {message}")]
pub struct SpecParseError {
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column of the problem.
    pub column: usize,
    /// What is wrong (from the parser, naming the field).
    pub message: String,
}

/// A validated batch: hosts expanded, named and de-duplicated, in submission order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSpec {
    /// What to do.
    pub action: Action,
    /// The hosts, in the order they will be started.
    pub hosts: Vec<Hostname>,
    /// How urgent.
    pub priority: PriorityClass,
    /// Parallelism cap and failure budget.
    pub rollout: RolloutPolicy,
    /// Idempotency key.
    pub idempotency_key: Option<String>,
    /// Do not start before this time.
    pub not_before: Option<Timestamp>,
    /// Forced onto in-use hosts, with the reason.
    pub force: Option<ForceInUse>,
    /// Free text.
    pub comment: Option<String>,
    /// Values for the image's configuration template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Its subscriptions ([`BatchRequest::notify`], checked). Not part of the fingerprint:
    /// whom to tell does not change what the batch does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
}

/// What an audit entry says a submission asked for, in one line.
fn submit_summary(
    action: &Action,
    priority: PriorityClass,
    rollout: &RolloutPolicy,
    not_before: Option<Timestamp>,
    params: &BTreeMap<String, String>,
) -> String {
    let mut s = format!(
        "{action}, priority {priority}, max in flight {}, failure budget {}",
        rollout.max_in_flight, rollout.failure_budget
    );
    if let Some(t) = not_before {
        s.push_str(&format!(", not before {t}"));
    }
    if !params.is_empty() {
        let keys: Vec<&str> = params.keys().map(String::as_str).collect();
        s.push_str(&format!(", params {}", keys.join(" ")));
    }
    AuditRecord::printable(&s, 1024)
}

impl BatchRequest {
    /// This request's audit entry, as `principal` made it at `at` (accepted until marked
    /// refused). Its hosts are the expressions as written: a refused request may not
    /// expand.
    pub fn audit_entry(&self, principal: &str, at: Timestamp) -> AuditRecord {
        let expr = self.hosts.join(",");
        let mut a = AuditRecord::new(AuditOp::Submit, principal, at);
        a.host_count = crate::hostlist::expand(&expr, DEFAULT_EXPANSION_CAP).map_or(0, |names| names.len() as u32);
        a.hosts = AuditRecord::printable(&expr, 4096);
        a.action = Some(self.action.clone());
        a.summary = submit_summary(&self.action, self.priority, &self.rollout, self.not_before, &self.params);
        a.reason = self.force.as_ref().map(|f| AuditRecord::printable(&f.reason, 1024));
        a.forced = self.force.is_some();
        a.comment = self.comment.as_deref().map(|c| AuditRecord::printable(c, 1024));
        a
    }
}

impl BatchSpec {
    /// The audit entry of this spec's acceptance as batch `batch_id`.
    pub fn audit_entry(&self, principal: &str, at: Timestamp, batch_id: BatchId) -> AuditRecord {
        let names: Vec<&str> = self.hosts.iter().map(Hostname::as_str).collect();
        let mut a = AuditRecord::new(AuditOp::Submit, principal, at).on_hosts(&names);
        a.batch_id = Some(batch_id);
        a.action = Some(self.action.clone());
        a.summary = submit_summary(&self.action, self.priority, &self.rollout, self.not_before, &self.params);
        a.reason = self.force.as_ref().map(|f| f.reason.clone());
        a.forced = self.force.is_some();
        a.comment = self.comment.clone();
        a
    }

    /// The spec `req` describes once its hostlists expanded to `hosts` (validation decides
    /// whether it may be submitted; this only assembles it).
    pub fn from_request(req: &BatchRequest, hosts: Vec<Hostname>) -> Self {
        BatchSpec {
            action: req.action.clone(),
            hosts,
            priority: req.priority,
            rollout: req.rollout,
            idempotency_key: req.idempotency_key.clone(),
            not_before: req.not_before,
            force: req.force.clone(),
            comment: req.comment.clone(),
            params: req.params.clone(),
            notify: req.notify.clone(),
        }
    }

    /// A stable fingerprint of everything that defines the batch's effect (action, host
    /// set, priority, rollout, schedule, force), used to tell an idempotent resubmission
    /// from a different batch reusing a key. FNV-1a over a canonical JSON rendering.
    pub fn fingerprint(&self) -> String {
        let mut hosts: Vec<&str> = self.hosts.iter().map(Hostname::as_str).collect();
        hosts.sort_unstable();
        let canonical = serde_json::json!({
            "action": self.action,
            "hosts": hosts,
            "priority": self.priority,
            "rollout": self.rollout,
            "not_before": self.not_before,
            "force": self.force,
            "params": self.params,
        });
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in canonical.to_string().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// Size and sanity limits on what a batch may ask (configurable per deployment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most hosts in one batch.
    pub max_batch_hosts: usize,
    /// Most names one hostlist request may expand to (checked before expanding).
    pub expansion_cap: usize,
    /// Furthest in the future `not_before` may be.
    pub max_schedule_ahead: Duration,
    /// Longest free-text field (comment, force reason).
    pub max_text_len: usize,
    /// Longest idempotency key.
    pub max_key_len: usize,
    /// The channels a batch may subscribe to (`channel:NAME`): the daemon's `[[channels]]`.
    pub subscription_channels: Vec<String>,
    /// Whether a batch may name webhook URLs of its own (the daemon signs them with its
    /// `[subscriptions]` secret; without one, only channels).
    pub subscription_urls: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_hosts: 10_000,
            expansion_cap: DEFAULT_EXPANSION_CAP,
            max_schedule_ahead: Duration::from_secs(30 * 24 * 3600),
            max_text_len: 2_000,
            max_key_len: 128,
            subscription_channels: Vec::new(),
            subscription_urls: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_documents_parse_with_defaults_and_name_bad_fields() {
        let r = BatchRequest::from_json(r#"{"action":{"kind":"reboot"},"hosts":["web[1-3].dc1"],"priority":"high"}"#)
            .unwrap();
        assert_eq!(r.rollout, RolloutPolicy::default());
        assert_eq!(r.priority, PriorityClass::High);
        let e = BatchRequest::from_json("{\"action\":{\"kind\":\"reboot\"},\n\"hostz\":[]}").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unknown field `hostz`"), "{e}");
        let e = BatchRequest::from_json(r#"{"action":{"kind":"reboot"},"hosts":[],"not_before":"soon"}"#).unwrap_err();
        assert!(e.message.contains("invalid RFC 3339 timestamp \"soon\""), "{e}");
        let e = BatchRequest::from_json(r#"{"action":{"kind":"reboot"},"hosts":[],"rollout":{"max_in_flight":-1}}"#)
            .unwrap_err();
        assert!(e.message.contains("max_in_flight") || e.message.contains("invalid value"), "{e}");
    }

    #[test]
    fn fingerprint_ignores_host_order_and_key_but_not_action() {
        let h = |s: &str| Hostname::new(s).unwrap();
        let spec = BatchSpec {
            action: Action::PowerCycle,
            hosts: vec![h("a"), h("b")],
            priority: PriorityClass::Normal,
            rollout: RolloutPolicy::default(),
            idempotency_key: Some("k".into()),
            not_before: None,
            force: None,
            comment: None,
            params: BTreeMap::new(),
            notify: Vec::new(),
        };
        let mut other = spec.clone();
        other.hosts.reverse();
        other.idempotency_key = Some("k2".into());
        other.comment = Some("note".into());
        assert_eq!(spec.fingerprint(), other.fingerprint());
        other.action = Action::PowerOn;
        assert_ne!(spec.fingerprint(), other.fingerprint());
    }
}
