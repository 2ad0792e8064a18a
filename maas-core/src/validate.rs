//! Validation of a batch request: one pure function that returns the whole report —
//! every bad expression, bad name, duplicate, unknown, decommissioned, out-of-site, in-use,
//! conflicting and unauthorized host, and every bad option — not only the first problem.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::authz::{Authorizer, Denied, Permission, Principal};
use crate::batch::{BatchRequest, BatchSpec, Limits};
use crate::host::{Host, HostState};
use crate::hostlist;
use crate::id::BatchId;
use crate::names::{Hostname, Site};
use crate::notify::Subscription;
use crate::overlap::ClaimLookup;
use crate::priority::PriorityClass;
use crate::time::Timestamp;

/// One thing wrong with a batch request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// A hostlist expression that does not parse.
    #[error("{message}")]
    BadHostlist {
        /// Index of the expression in the request's `hosts`.
        index: usize,
        /// Character position in that expression.
        position: usize,
        /// The parser's message.
        message: String,
    },
    /// An expanded name that is not a valid hostname.
    #[error("{message}")]
    BadHostname {
        /// The name as written.
        input: String,
        /// What is wrong.
        message: String,
    },
    /// A host listed more than once.
    #[error("{host} is listed {count} times")]
    Duplicate {
        /// The host.
        host: Hostname,
        /// How often.
        count: usize,
    },
    /// No host was given.
    #[error("the batch names no hosts")]
    NoHosts,
    /// More hosts than the limit.
    #[error("the batch has {count} hosts; the limit is {max}")]
    TooManyHosts {
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Not in the inventory.
    #[error("{host} is not in the inventory")]
    UnknownHost {
        /// The host.
        host: Hostname,
    },
    /// Decommissioned: nothing may be submitted on it.
    #[error("{host} is decommissioned")]
    Decommissioned {
        /// The host.
        host: Hostname,
    },
    /// In a site the request does not allow.
    #[error("{host} is in site {site}, not in {}", join_sites(allowed))]
    SiteNotAllowed {
        /// The host.
        host: Hostname,
        /// Its site.
        site: Site,
        /// The sites the request allows.
        allowed: Vec<Site>,
    },
    /// Allocated / in use, and the request is not forced.
    #[error("{host} is in use ({state}); resubmit with force and a reason to act on it anyway")]
    InUse {
        /// The host.
        host: Hostname,
        /// Its inventory state.
        state: HostState,
    },
    /// Held by another active batch.
    #[error("{host} is held by active batch {held_by}")]
    Conflict {
        /// The host.
        host: Hostname,
        /// The batch holding it.
        held_by: BatchId,
    },
    /// The principal may not act on this host.
    #[error("{host}: {denied}")]
    Unauthorized {
        /// The host.
        host: Hostname,
        /// The missing permission.
        denied: Denied,
    },
    /// The principal may not submit at the priority asked for.
    #[error("{denied}; the policy grants {} priorities up to {granted}", denied.principal)]
    PriorityNotGranted {
        /// The missing permission ([`Permission::Priority`]).
        denied: Denied,
        /// The highest class the principal may use.
        granted: PriorityClass,
    },
    /// The pre-acceptance console check could not reach or log in to the host's BMC.
    #[error("{host}: BMC console check failed: {error}")]
    ConsoleCheck {
        /// The host.
        host: Hostname,
        /// What the BMC said (never a credential).
        error: String,
    },
    /// The host cannot be network-booted as the action needs (no MAC in the inventory, its
    /// configuration template does not render).
    #[error("{host}: {message}")]
    NotBootable {
        /// The host.
        host: Hostname,
        /// Why.
        message: String,
    },
    /// An inventory record whose settings do not go together (Redfish settings on an IPMI
    /// BMC, virtual media without Redfish): [`Host::problem`].
    #[error("{message}")]
    BadHostRecord {
        /// The host.
        host: Hostname,
        /// What is wrong, naming the host.
        message: String,
    },
    /// An option or action parameter is out of range.
    #[error("{field}: {message}")]
    BadParameter {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn join_sites(sites: &[Site]) -> String {
    sites.iter().map(Site::as_str).collect::<Vec<_>>().join(", ")
}

impl Problem {
    /// Whether this is a missing permission (and nothing else would fix it).
    pub fn is_denial(&self) -> bool {
        matches!(self, Problem::Unauthorized { .. } | Problem::PriorityNotGranted { .. })
    }

    /// The host this problem is about, if it is about one host.
    pub fn host(&self) -> Option<&Hostname> {
        match self {
            Problem::Duplicate { host, .. }
            | Problem::UnknownHost { host }
            | Problem::Decommissioned { host }
            | Problem::SiteNotAllowed { host, .. }
            | Problem::InUse { host, .. }
            | Problem::Conflict { host, .. }
            | Problem::Unauthorized { host, .. }
            | Problem::ConsoleCheck { host, .. }
            | Problem::NotBootable { host, .. } => Some(host),
            _ => None,
        }
    }
}

/// Everything wrong with a request. Empty means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ValidationReport {
    /// The problems, grouped by host in submission order, then options.
    pub problems: Vec<Problem>,
}

impl ValidationReport {
    /// Whether there is nothing wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Only the conflicts (for callers that retry after the holders finish).
    pub fn conflicts(&self) -> impl Iterator<Item = (&Hostname, BatchId)> {
        self.problems.iter().filter_map(|p| match p {
            Problem::Conflict { host, held_by } => Some((host, *held_by)),
            _ => None,
        })
    }
}

impl ValidationReport {
    /// The report as people read it, at most `lines` problem lines (conflicts grouped by
    /// the batch holding them, as collapsed hostlists) and at most `max_bytes` bytes, with
    /// how many more there are: short enough for a status line or a trailer at any size.
    pub fn summary(&self, lines: usize, max_bytes: usize) -> String {
        let mut out = format!("batch rejected: {} problem(s)", self.problems.len());
        // Conflicts read best grouped by the batch holding them, as a collapsed hostlist.
        let mut held: Vec<(BatchId, Vec<&str>)> = Vec::new();
        let mut rows = Vec::new();
        for p in &self.problems {
            match p {
                Problem::Conflict { host, held_by } => match held.iter_mut().find(|(b, _)| b == held_by) {
                    Some((_, hosts)) => hosts.push(host.as_str()),
                    None => {
                        rows.push(None);
                        held.push((*held_by, vec![host.as_str()]));
                    }
                },
                other => rows.push(Some(other.to_string())),
            }
        }
        let mut groups = held.into_iter();
        let mut shown = 0;
        for row in &rows {
            if shown == lines {
                break;
            }
            let line = match row {
                Some(text) => text.clone(),
                None => match groups.next() {
                    Some((batch, hosts)) => {
                        let verb = if hosts.len() == 1 { "is" } else { "are" };
                        format!("{} {verb} held by active batch {batch}", crate::hostlist::collapse(&hosts))
                    }
                    None => continue,
                },
            };
            let line = format!("\n  - {}", clip(&line, max_bytes / 4));
            if out.len() + line.len() + 32 > max_bytes {
                break;
            }
            out.push_str(&line);
            shown += 1;
        }
        if rows.len() > shown {
            out.push_str(&format!("\n  ... and {} more", rows.len() - shown));
        }
        out
    }
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary(50, usize::MAX))
    }
}

/// `text` cut to at most `max_bytes` bytes (on a character boundary), marked with `...`
/// when cut.
pub fn clip(text: &str, max_bytes: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max_bytes {
        return text.into();
    }
    let mut end = max_bytes.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end]).into()
}

/// What a free-text field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// One line without control characters: keys, names, filters, tokens.
    Line,
    /// Prose and file contents: tabs, newlines and carriage returns, no other control
    /// characters.
    Prose,
}

/// Why `value` cannot go into a field of `kind` holding at most `max_bytes`, if it
/// cannot: a NUL or other control character (named, with its byte position), or its
/// length. Every store refuses the same text this way, before it reaches a database (a
/// NUL is an encoding error on PostgreSQL and silently kept elsewhere).
pub fn text_problem(value: &str, kind: TextKind, max_bytes: usize) -> Option<String> {
    if value.len() > max_bytes {
        return Some(format!("longer than {max_bytes} bytes ({} bytes)", value.len()));
    }
    let allowed = |c: char| kind == TextKind::Prose && matches!(c, '\t' | '\n' | '\r');
    value
        .char_indices()
        .find(|&(_, c)| c.is_control() && !allowed(c))
        .map(|(at, c)| format!("contains the control character U+{:04X} at byte {at}", c as u32))
}

/// `text` with every control character prose may not hold (see [`TextKind::Prose`])
/// replaced by U+FFFD, for text machines send that is kept rather than refused (an
/// installer's error and log excerpt).
pub fn scrub(text: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r');
    if !text.contains(bad) {
        return text.into();
    }
    text.chars().map(|c| if bad(c) { '\u{fffd}' } else { c }).collect::<String>().into()
}

/// A free-text field of a request other than a submission (a cancel or pause reason),
/// checked as submissions check theirs: a report naming the field, or nothing.
pub fn check_text(field: &str, value: &str, kind: TextKind, max_bytes: usize) -> Result<(), ValidationReport> {
    match text_problem(value, kind, max_bytes) {
        Some(message) => {
            Err(ValidationReport { problems: vec![Problem::BadParameter { field: field.into(), message }] })
        }
        None => Ok(()),
    }
}

/// Looks hosts up in the inventory (a snapshot taken by the caller).
pub trait HostLookup {
    /// The inventory record of `host`, if it exists.
    fn host(&self, host: &Hostname) -> Option<&Host>;
}

impl HostLookup for HashMap<Hostname, Host> {
    fn host(&self, host: &Hostname) -> Option<&Host> {
        self.get(host)
    }
}

/// What validation looks at besides the request.
pub struct ValidationContext<'a> {
    /// Size and sanity limits.
    pub limits: &'a Limits,
    /// Who submits.
    pub principal: &'a Principal,
    /// Their permissions.
    pub authorizer: &'a dyn Authorizer,
    /// The inventory snapshot of the requested hosts.
    pub hosts: &'a dyn HostLookup,
    /// Active claims (a snapshot: the store enforces the rule atomically regardless).
    pub claims: &'a dyn ClaimLookup,
    /// The current time (for `not_before`).
    pub now: Timestamp,
}

/// Expands the request's hostlists and validates names, duplicates and size: the part of
/// validation that needs no inventory. Returns the distinct hosts in order and problems.
pub fn expand_hosts(req: &BatchRequest, limits: &Limits) -> (Vec<Hostname>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut names = Vec::new();
    let mut budget = limits.expansion_cap;
    for (index, expr) in req.hosts.iter().enumerate() {
        match hostlist::expand(expr, budget) {
            Ok(expanded) => {
                budget = budget.saturating_sub(expanded.len());
                names.extend(expanded);
            }
            Err(e) => problems.push(Problem::BadHostlist { index, position: e.position, message: e.to_string() }),
        }
    }
    let mut counts: HashMap<Hostname, usize> = HashMap::new();
    let mut hosts = Vec::with_capacity(names.len());
    for name in names {
        match Hostname::new(&name) {
            Ok(h) => {
                let c = counts.entry(h.clone()).or_insert(0);
                *c += 1;
                if *c == 1 {
                    hosts.push(h);
                }
            }
            Err(e) => problems.push(Problem::BadHostname { input: name, message: e.to_string() }),
        }
    }
    for h in &hosts {
        if let Some(&count) = counts.get(h).filter(|c| **c > 1) {
            problems.push(Problem::Duplicate { host: h.clone(), count });
        }
    }
    if hosts.is_empty() && problems.is_empty() {
        problems.push(Problem::NoHosts);
    }
    if hosts.len() > limits.max_batch_hosts {
        problems.push(Problem::TooManyHosts { count: hosts.len(), max: limits.max_batch_hosts });
    }
    (hosts, problems)
}

fn option_problems(req: &BatchRequest, ctx: &ValidationContext<'_>) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut bad = |field: &str, message: String| out.push(Problem::BadParameter { field: field.into(), message });
    for m in req.action.parameter_problems() {
        bad("action", m);
    }
    if req.rollout.max_in_flight == 0 {
        bad("rollout.max_in_flight", "must be at least 1".into());
    }
    if let Some(key) = &req.idempotency_key {
        if key.trim().is_empty() {
            bad("idempotency_key", "must not be blank".into());
        } else if let Some(m) = text_problem(key, TextKind::Line, ctx.limits.max_key_len) {
            bad("idempotency_key", m);
        }
    }
    if let Some(t) = req.not_before {
        let horizon = ctx.now.plus(ctx.limits.max_schedule_ahead);
        if t > horizon {
            bad(
                "not_before",
                format!("{t} is more than {} days ahead", ctx.limits.max_schedule_ahead.as_secs() / 86_400),
            );
        }
    }
    if let Some(force) = &req.force {
        if force.reason.trim().is_empty() {
            bad("force.reason", "a reason is required to act on in-use hosts".into());
        } else if let Some(m) = text_problem(&force.reason, TextKind::Prose, ctx.limits.max_text_len) {
            bad("force.reason", m);
        }
    }
    if let Some(m) = req.comment.as_deref().and_then(|c| text_problem(c, TextKind::Prose, ctx.limits.max_text_len)) {
        bad("comment", m);
    }
    if req.notify.len() > Subscription::MAX_PER_BATCH {
        bad("notify", format!("{} receivers; the limit is {}", req.notify.len(), Subscription::MAX_PER_BATCH));
    }
    for (i, entry) in req.notify.iter().enumerate() {
        match Subscription::parse(entry, &ctx.limits.subscription_channels) {
            Err(m) => bad(&format!("notify[{i}]"), m),
            Ok(Subscription::Url(_)) if !ctx.limits.subscription_urls => bad(
                &format!("notify[{i}]"),
                "this deployment takes channel subscriptions only (channel:NAME); it signs no URLs".into(),
            ),
            Ok(_) => {}
        }
    }
    const MAX_PARAMS: usize = 64;
    if req.params.len() > MAX_PARAMS {
        bad("params", format!("{} parameters; the limit is {MAX_PARAMS}", req.params.len()));
    }
    for (k, v) in &req.params {
        if k.is_empty() || k.len() > 64 || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            bad("params", format!("{k:?} is not a parameter name (1 to 64 letters, digits, _ and -)"));
        }
        if let Some(m) = text_problem(v, TextKind::Prose, ctx.limits.max_text_len * 16) {
            bad(&format!("params.{k}"), m);
        }
    }
    out
}

/// Validates `req` completely. On success, the spec to submit; otherwise every problem.
pub fn validate_batch(req: &BatchRequest, ctx: &ValidationContext<'_>) -> Result<BatchSpec, ValidationReport> {
    let (hosts, mut problems) = expand_hosts(req, ctx.limits);
    let allowed_sites: HashSet<&Site> = req.sites.iter().collect();
    let action = req.action.kind();
    // Authorization is asked once per (pool, site), not per host.
    let mut decisions: HashMap<(String, String, bool), Result<(), Denied>> = HashMap::new();
    for host in &hosts {
        let Some(rec) = ctx.hosts.host(host) else {
            problems.push(Problem::UnknownHost { host: host.clone() });
            continue;
        };
        if rec.state == HostState::Decommissioned {
            problems.push(Problem::Decommissioned { host: host.clone() });
        }
        if !allowed_sites.is_empty() && !allowed_sites.contains(&rec.site) {
            problems.push(Problem::SiteNotAllowed {
                host: host.clone(),
                site: rec.site.clone(),
                allowed: req.sites.clone(),
            });
        }
        let in_use = rec.state == HostState::Allocated;
        if in_use && req.force.is_none() {
            problems.push(Problem::InUse { host: host.clone(), state: rec.state });
        }
        if let Some(held_by) = ctx.claims.holder(host) {
            problems.push(Problem::Conflict { host: host.clone(), held_by });
        }
        let mut ask = |permission: Permission, forced: bool| {
            decisions
                .entry((rec.pool.to_string(), rec.site.to_string(), forced))
                .or_insert_with(|| ctx.authorizer.check(ctx.principal, &permission))
                .clone()
        };
        let act = Permission::Act { action, pool: rec.pool.clone(), site: rec.site.clone() };
        if let Err(denied) = ask(act, false) {
            problems.push(Problem::Unauthorized { host: host.clone(), denied });
        } else if in_use && req.force.is_some() {
            let force = Permission::ForceInUse { pool: rec.pool.clone(), site: rec.site.clone() };
            if let Err(denied) = ask(force, true) {
                problems.push(Problem::Unauthorized { host: host.clone(), denied });
            }
        }
    }
    if let Some(p) = priority_problem(req.priority, ctx) {
        problems.push(p);
    }
    problems.extend(option_problems(req, ctx));
    if !problems.is_empty() {
        return Err(ValidationReport { problems });
    }
    Ok(BatchSpec::from_request(req, hosts))
}

/// A priority above normal needs a grant; refused naming the highest class granted.
fn priority_problem(class: PriorityClass, ctx: &ValidationContext<'_>) -> Option<Problem> {
    let may = |class| ctx.authorizer.check(ctx.principal, &Permission::Priority { class });
    let denied = may(class).err()?;
    let granted = PriorityClass::ALL.into_iter().rev().find(|c| may(*c).is_ok()).unwrap_or_default();
    Some(Problem::PriorityNotGranted { denied, granted })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{Action, ActionKind};
    use crate::authz::{Grant, GroupPolicy};
    use crate::batch::ForceInUse;
    use crate::host::BmcEndpoint;
    use crate::names::{Group, Pool, Sku};
    use uuid::Uuid;

    fn host(name: &str, site: &str, pool: &str, state: HostState) -> Host {
        Host {
            hostname: Hostname::new(name).unwrap(),
            site: Site::new(site).unwrap(),
            rack: None,
            pool: Pool::new(pool).unwrap(),
            owner_group: None,
            sku: Sku::new("gen9").unwrap(),
            bmc: BmcEndpoint::ipmi("127.0.0.1", 623, "default"),
            state,
            mac: None,
            allocated_to: None,
            state_since: None,
            boot_method: Default::default(),
        }
    }

    struct Fixture {
        inventory: HashMap<Hostname, Host>,
        claims: HashMap<Hostname, BatchId>,
        policy: GroupPolicy,
        limits: Limits,
    }

    fn fixture() -> Fixture {
        let mut inventory = HashMap::new();
        for i in 1..=5 {
            let h = host(&format!("web{i}.dc1"), "dc1", "web", HostState::Ready);
            inventory.insert(h.hostname.clone(), h);
        }
        for h in [
            host("db1.dc2", "dc2", "db", HostState::Ready),
            host("web6.dc1", "dc1", "web", HostState::Allocated),
            host("old1.dc1", "dc1", "web", HostState::Decommissioned),
        ] {
            inventory.insert(h.hostname.clone(), h);
        }
        let claims = [(Hostname::new("web5.dc1").unwrap(), BatchId(Uuid::from_u128(7)))].into_iter().collect();
        let policy = GroupPolicy {
            grants: vec![Grant {
                group: Group::new("sre").unwrap(),
                actions: Some(vec![ActionKind::Reboot]),
                pools: Some(vec![Pool::new("web").unwrap()]),
                sites: None,
                force: false,
                admin: false,
                max_priority: None,
                audit: false,
            }],
            ..Default::default()
        };
        Fixture { inventory, claims, policy, limits: Limits { max_batch_hosts: 20, ..Limits::default() } }
    }

    fn run(f: &Fixture, req: &BatchRequest) -> Result<BatchSpec, Vec<String>> {
        let principal = Principal::new("alice", [Group::new("sre").unwrap()]);
        let ctx = ValidationContext {
            limits: &f.limits,
            principal: &principal,
            authorizer: &f.policy,
            hosts: &f.inventory,
            claims: &f.claims,
            now: Timestamp::from_millis(0),
        };
        validate_batch(req, &ctx).map_err(|r| r.problems.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn a_good_request_becomes_a_spec_in_order() {
        let f = fixture();
        let spec = run(&f, &BatchRequest::new(Action::Reboot { soft: false }, ["web[3,1-2].dc1"])).unwrap();
        let names: Vec<&str> = spec.hosts.iter().map(|h| h.as_str()).collect();
        assert_eq!(names, ["web3.dc1", "web1.dc1", "web2.dc1"]);
    }

    #[test]
    fn subscriptions_name_known_channels_and_safe_urls_and_are_bounded() {
        let mut f = fixture();
        f.limits.subscription_channels = vec!["sre-room".into()];
        let mut req = BatchRequest::new(Action::Reboot { soft: false }, ["web1.dc1"]);
        req.notify = vec!["channel:sre-room".into(), "https://hooks.example/alice".into()];
        assert_eq!(run(&f, &req).unwrap().notify, req.notify, "kept in the spec");
        req.notify = vec!["channel:ops".into(), "http://hooks.example/x".into()];
        let errors = run(&f, &req).unwrap_err();
        assert!(errors[0].starts_with("notify[0]: no channel \"ops\" (known: sre-room)"), "{errors:?}");
        assert!(errors[1].starts_with("notify[1]:") && errors[1].contains("plain http"), "{errors:?}");
        req.notify = vec!["channel:sre-room".into(); 6];
        assert!(run(&f, &req).unwrap_err()[0].contains("6 receivers; the limit is 5"));
        f.limits.subscription_urls = false;
        req.notify = vec!["https://hooks.example/alice".into()];
        assert!(run(&f, &req).unwrap_err()[0].contains("channel subscriptions only"));
    }

    #[test]
    fn priorities_above_normal_need_a_grant_and_a_refusal_names_it() {
        let mut f = fixture();
        let at = |class| {
            let mut req = BatchRequest::new(Action::Reboot { soft: false }, ["web1.dc1"]);
            req.priority = class;
            req
        };
        for class in [PriorityClass::Low, PriorityClass::Normal] {
            assert!(run(&f, &at(class)).is_ok(), "{class} needs no grant");
        }
        assert_eq!(
            run(&f, &at(PriorityClass::High)).unwrap_err(),
            ["alice lacks permission: priority high; the policy grants alice priorities up to normal"]
        );
        f.policy.grants[0].max_priority = Some(PriorityClass::High);
        assert!(run(&f, &at(PriorityClass::High)).is_ok());
        let refused = run(&f, &at(PriorityClass::Urgent)).unwrap_err();
        assert_eq!(refused, ["alice lacks permission: priority urgent; the policy grants alice priorities up to high"]);
        f.policy.grants[0].admin = true;
        assert!(run(&f, &at(PriorityClass::Urgent)).is_ok(), "admins may use every class");
    }

    #[test]
    fn the_report_lists_every_problem_at_once() {
        let f = fixture();
        let mut req = BatchRequest::new(
            Action::Reboot { soft: false },
            ["web[1-1,1].dc1", "web5.dc1,web6.dc1,db1.dc2,old1.dc1,ghost.dc1,bad_name", "x[1-"],
        );
        req.sites = vec![Site::new("dc1").unwrap()];
        req.rollout.max_in_flight = 0;
        let got = run(&f, &req).unwrap_err();
        assert_eq!(
            got,
            vec![
                "hostlist \"x[1-\", position 1: '[' is never closed",
                "hostname \"bad_name\" has '_' at position 3; allowed are ASCII letters, digits, '-' and '.'",
                "web1.dc1 is listed 2 times",
                "web5.dc1 is held by active batch 00000000-0000-0000-0000-000000000007",
                "web6.dc1 is in use (allocated); resubmit with force and a reason to act on it anyway",
                "db1.dc2 is in site dc2, not in dc1",
                "db1.dc2: alice lacks permission: reboot on pool db in site dc2",
                "old1.dc1 is decommissioned",
                "ghost.dc1 is not in the inventory",
                "rollout.max_in_flight: must be at least 1",
            ]
        );
    }

    #[test]
    fn force_needs_a_reason_and_the_permission() {
        let f = fixture();
        let mut req = BatchRequest::new(Action::Reboot { soft: false }, ["web6.dc1"]);
        req.force = Some(ForceInUse { reason: "  ".into() });
        assert_eq!(
            run(&f, &req).unwrap_err(),
            vec![
                "web6.dc1: alice lacks permission: force-in-use on pool web in site dc1",
                "force.reason: a reason is required to act on in-use hosts"
            ]
        );
    }

    #[test]
    fn size_limits_and_empty_batches_are_reported() {
        let f = fixture();
        let got = run(&f, &BatchRequest::new(Action::Reboot { soft: false }, ["n[1-21]"])).unwrap_err();
        assert!(got.contains(&"the batch has 21 hosts; the limit is 20".to_string()), "{got:?}");
        let got = run(&f, &BatchRequest::new(Action::Reboot { soft: false }, Vec::<String>::new())).unwrap_err();
        assert_eq!(got, vec!["the batch names no hosts"]);
        let got = run(&f, &BatchRequest::new(Action::Reboot { soft: false }, ["n[1-100001]"])).unwrap_err();
        assert_eq!(got, vec!["hostlist \"n[1-100001]\", position 0: expands to 100001 names; the limit is 100000"]);
    }

    #[test]
    fn control_characters_in_any_text_field_are_named_with_the_field() {
        let f = fixture();
        let mut req = BatchRequest::new(Action::Reboot { soft: false }, ["web1.dc1"]);
        req.idempotency_key = Some("k\u{0}y".into());
        req.comment = Some("line one\nline two\u{1b}[31m".into());
        req.force = Some(ForceInUse { reason: "ok\ttabbed\u{7f}".into() });
        req.params.insert("ssh_key".into(), "ssh-ed25519 AAAA\r\n\u{0}".into());
        let got = run(&f, &req).unwrap_err();
        for expected in [
            "idempotency_key: contains the control character U+0000 at byte 1",
            "comment: contains the control character U+001B at byte 17",
            "force.reason: contains the control character U+007F at byte 9",
            "params.ssh_key: contains the control character U+0000 at byte 18",
        ] {
            assert!(got.iter().any(|p| p == expected), "{expected:?} missing from {got:?}");
        }
        // A key is one line; prose keeps tabs and newlines.
        assert!(text_problem("a\nb", TextKind::Line, 10).is_some());
        assert_eq!(text_problem("a\n\tb\r\n", TextKind::Prose, 10), None);
        assert_eq!(text_problem("abcdef", TextKind::Line, 5).unwrap(), "longer than 5 bytes (6 bytes)");
        assert_eq!(scrub("log\u{0}\ttail\u{1b}"), "log\u{fffd}\ttail\u{fffd}");
        let report = check_text("reason", "stop\u{0}", TextKind::Prose, 100).unwrap_err();
        assert_eq!(report.problems[0].to_string(), "reason: contains the control character U+0000 at byte 4");
    }

    #[test]
    fn a_summary_stays_short_at_any_size() {
        let problems: Vec<Problem> = (0..10_000)
            .map(|i| Problem::UnknownHost { host: Hostname::new(&format!("ghost{i:05}.dc1")).unwrap() })
            .chain((0..10_000).map(|i| Problem::Conflict {
                host: Hostname::new(&format!("web{:05}.dc1", i * 2)).unwrap(),
                held_by: BatchId(uuid::Uuid::from_u128(u128::from(i as u32 % 3 + 1))),
            }))
            .collect();
        let report = ValidationReport { problems };
        let short = report.summary(10, 1024);
        assert!(short.len() <= 1024, "{} bytes", short.len());
        assert!(short.starts_with("batch rejected: 20000 problem(s)"), "{short}");
        assert!(short.contains("ghost00000.dc1 is not in the inventory"), "{short}");
        assert!(short.ends_with("more"), "{short}");
        assert_eq!(clip("héllo", 4), "h...");
        assert_eq!(clip("hello", 5), "hello");
    }
}
