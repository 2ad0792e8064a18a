//! Conversions between `maas.v1` messages and maas-core's types, in both directions: the
//! one place that sees both. Requests that do not convert are refused with
//! `INVALID_ARGUMENT` naming the field.

use maas_core::action::{Action, WipeMethod};
use maas_core::batch::{BatchRequest, ForceInUse};
use maas_core::host::{BmcEndpoint, BmcProtocol, BmcTls, BootMethod, Host, HostState, MacAddr};
use maas_core::id::BatchId;
use maas_core::model::{AuditOp, AuditRecord, BatchRecord, Event};
use maas_core::names::{Group, Hostname, OsRelease, Pool, Rack, Site, Sku};
use maas_core::plan::StepKind;
use maas_core::ports::store::AuditFilter;
use maas_core::priority::PriorityClass;
use maas_core::time::Timestamp;
use maas_core::validate::{Problem, TextKind, ValidationReport, text_problem};
use maas_engine::{BatchView, DurationStats};
use tonic::Status;

use crate::pb;

pub(crate) fn batch_id(s: &str) -> Result<BatchId, Status> {
    s.parse().map_err(|_| Status::invalid_argument(format!("batch_id {s:?} is not a batch id")))
}

pub(crate) fn priority(p: i32) -> Result<PriorityClass, Status> {
    Ok(match pb::Priority::try_from(p).map_err(|_| Status::invalid_argument(format!("unknown priority {p}")))? {
        pb::Priority::Unspecified | pb::Priority::Normal => PriorityClass::Normal,
        pb::Priority::Low => PriorityClass::Low,
        pb::Priority::High => PriorityClass::High,
        pb::Priority::Urgent => PriorityClass::Urgent,
    })
}

pub(crate) fn wipe(m: i32) -> Result<WipeMethod, Status> {
    Ok(match pb::WipeMethod::try_from(m).map_err(|_| Status::invalid_argument(format!("unknown wipe method {m}")))? {
        pb::WipeMethod::Unspecified | pb::WipeMethod::Quick => WipeMethod::Quick,
        pb::WipeMethod::Secure => WipeMethod::Secure,
    })
}

pub(crate) fn action(a: Option<pb::Action>) -> Result<Action, Status> {
    use pb::action::Kind;
    let kind = a.and_then(|a| a.kind).ok_or_else(|| Status::invalid_argument("action is required"))?;
    Ok(match kind {
        Kind::Reimage(r) => Action::Reimage {
            os: OsRelease::new(&r.os).map_err(|e| Status::invalid_argument(format!("action.reimage.os: {e}")))?,
            install_timeout_secs: r.install_timeout_secs,
        },
        Kind::Reboot(r) => Action::Reboot { soft: r.soft },
        Kind::PowerOn(_) => Action::PowerOn,
        Kind::PowerOff(p) => Action::PowerOff { soft: p.soft },
        Kind::PowerCycle(_) => Action::PowerCycle,
        Kind::WipeDisks(w) => Action::WipeDisks { method: wipe(w.method)? },
        Kind::Decommission(w) => Action::Decommission { method: wipe(w.method)? },
    })
}

/// The domain request for a `SubmitBatchRequest`.
pub fn batch_request(r: pb::SubmitBatchRequest) -> Result<BatchRequest, Status> {
    let mut req = BatchRequest::new(action(r.action)?, r.hosts);
    req.priority = priority(r.priority)?;
    if r.max_in_flight > 0 {
        req.rollout.max_in_flight = r.max_in_flight;
    }
    if let Some(budget) = r.failure_budget {
        req.rollout.failure_budget = budget;
    }
    req.idempotency_key = (!r.idempotency_key.is_empty()).then_some(r.idempotency_key);
    req.force = (!r.force_reason.is_empty()).then_some(ForceInUse { reason: r.force_reason });
    req.not_before = r.not_before_ms.map(Timestamp::from_millis);
    req.console_check = r.console_check;
    req.notify = r.notify;
    req.sites = r
        .sites
        .iter()
        .map(|s| Site::new(s).map_err(|e| Status::invalid_argument(format!("sites: {e}"))))
        .collect::<Result<_, _>>()?;
    req.comment = (!r.comment.is_empty()).then_some(r.comment);
    req.params = r.params.into_iter().collect();
    Ok(req)
}

/// The structured rejection of a report.
pub fn rejection(report: &ValidationReport) -> pb::Rejection {
    let mut r = pb::Rejection {
        summary: report.to_string(),
        total_problems: report.problems.len() as u32,
        ..Default::default()
    };
    for p in &report.problems {
        match p {
            Problem::Conflict { host, held_by } => {
                r.conflicts.push(pb::Conflict { hostname: host.to_string(), batch_id: held_by.to_string() })
            }
            Problem::UnknownHost { host } => r.unknown_hosts.push(host.to_string()),
            Problem::Decommissioned { host } => r.decommissioned_hosts.push(host.to_string()),
            Problem::InUse { host, .. } => r.in_use_hosts.push(host.to_string()),
            Problem::Unauthorized { host, denied } => r.unauthorized.push(format!("{host}: {denied}")),
            p @ Problem::PriorityNotGranted { .. } => r.unauthorized.push(p.to_string()),
            other => r.other.push(other.to_string()),
        }
    }
    r
}

pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millis()
}

/// A batch record as the API shows it.
pub fn batch(b: &BatchRecord) -> pb::Batch {
    pb::Batch {
        id: b.id.to_string(),
        submitter: b.submitter.clone(),
        action: b.action().to_string(),
        state: b.state.to_string(),
        pause_reason: b.pause_reason.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        counts: Some(pb::Counts {
            queued: b.counts.queued,
            running: b.counts.running,
            succeeded: b.counts.succeeded,
            failed: b.counts.failed,
            cancelled: b.counts.cancelled,
        }),
        created_at_ms: ms(b.created_at),
        updated_at_ms: ms(b.updated_at),
        finished_at_ms: b.finished_at.map(ms),
        hosts: Vec::new(),
        idempotency_key: b.spec.idempotency_key.clone().unwrap_or_default(),
    }
}

pub(crate) fn view(v: BatchView, only: &[String], steps: bool) -> pb::Batch {
    let mut out = batch(&v.batch);
    out.hosts = v
        .hosts
        .into_iter()
        .filter(|h| only.is_empty() || only.iter().any(|o| o == h.hostname.as_str()))
        .map(|h| pb::HostRun {
            hostname: h.hostname.to_string(),
            site: h.site.to_string(),
            state: h.state.to_string(),
            step: h.step.map(|s| s.as_str().to_string()).unwrap_or_default(),
            step_state: h.step_state.map(|s| s.to_string()).unwrap_or_default(),
            attempts: h.attempts,
            last_error: h.last_error.unwrap_or_default(),
            straggler: h.straggler,
            started_at_ms: h.started_at.map_or(0, ms),
            finished_at_ms: h.finished_at.map_or(0, ms),
            steps: if steps {
                h.steps
                    .into_iter()
                    .map(|s| pb::StepRun {
                        step: s.kind.as_str().to_string(),
                        state: s.state.to_string(),
                        attempts: s.attempts,
                        started_at_ms: s.started_at.map_or(0, ms),
                        finished_at_ms: s.finished_at.map_or(0, ms),
                        error: s.error.unwrap_or_default(),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        })
        .collect();
    out
}

pub(crate) fn duration_stats(d: &DurationStats) -> pb::DurationStats {
    let p = &d.durations;
    pb::DurationStats {
        action: d.action.to_string(),
        step: d.step.map(|s| s.as_str().to_string()).unwrap_or_default(),
        sku: d.sku.to_string(),
        site: d.site.to_string(),
        durations: Some(pb::Percentiles {
            count: p.count as u32,
            p50_seconds: p.p50.as_secs_f64(),
            p90_seconds: p.p90.as_secs_f64(),
            p95_seconds: p.p95.as_secs_f64(),
            p99_seconds: p.p99.as_secs_f64(),
            max_seconds: p.max.as_secs_f64(),
        }),
    }
}

pub(crate) fn event(e: &Event) -> pb::Event {
    pb::Event {
        seq: e.seq,
        batch_id: e.batch_id.to_string(),
        at_ms: ms(e.at),
        kind: e.kind.name().to_string(),
        json: serde_json::to_string(&e.kind).unwrap_or_default(),
    }
}

/// A free-text request field that is not a validated name (a filter, a BMC address, a
/// credentials reference): refused naming the field when it holds a control character or
/// more than 1 KiB, before any store sees it.
pub(crate) fn plain(field: &str, value: String) -> Result<String, Status> {
    match text_problem(&value, TextKind::Line, 1024) {
        Some(m) => Err(Status::invalid_argument(format!("{field}: {m}"))),
        None => Ok(value),
    }
}

/// A name field: parsed by maas-core's validated name type, or an error naming the field.
pub(crate) fn named<T, E: std::fmt::Display>(
    field: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, Status> {
    parse(value).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

pub(crate) fn host_state(field: &str, s: &str) -> Result<HostState, Status> {
    HostState::parse(s).ok_or_else(|| {
        Status::invalid_argument(format!(
            "{field}: unknown host state {s:?} (ready, allocated, defunct, decommissioned)"
        ))
    })
}

/// A host record from the API, validated; errors name the host's index and field.
pub fn host_from(i: usize, h: pb::Host) -> Result<Host, Status> {
    let f = |name: &str| format!("hosts[{i}].{name}");
    let optional = |v: String| (!v.is_empty()).then_some(v);
    let protocol = match h.bmc_protocol.as_str() {
        "" => BmcProtocol::Ipmi,
        p => BmcProtocol::parse(p).ok_or_else(|| {
            Status::invalid_argument(format!("{}: unknown BMC protocol {p:?} (ipmi, redfish)", f("bmc_protocol")))
        })?,
    };
    let host = Host {
        hostname: named(&f("hostname"), &h.hostname, Hostname::new)?,
        site: named(&f("site"), &h.site, Site::new)?,
        rack: optional(h.rack).map(|r| named(&f("rack"), &r, Rack::new)).transpose()?,
        pool: named(&f("pool"), &h.pool, Pool::new)?,
        owner_group: optional(h.owner_group).map(|g| named(&f("owner_group"), &g, Group::new)).transpose()?,
        sku: named(&f("sku"), &h.sku, Sku::new)?,
        bmc: BmcEndpoint {
            address: if h.bmc_address.is_empty() {
                return Err(Status::invalid_argument(format!("{} is required", f("bmc_address"))));
            } else {
                plain(&f("bmc_address"), h.bmc_address)?
            },
            port: u16::try_from(if h.bmc_port == 0 { u32::from(protocol.default_port()) } else { h.bmc_port })
                .map_err(|_| Status::invalid_argument(format!("{}: {} is not a port", f("bmc_port"), h.bmc_port)))?,
            credentials_ref: plain(&f("credentials_ref"), h.credentials_ref)?,
            protocol,
            system_id: optional(h.redfish_system_id).map(|s| plain(&f("redfish_system_id"), s)).transpose()?,
            tls: named(&f("bmc_tls"), &h.bmc_tls, BmcTls::parse)?,
        },
        state: if h.state.is_empty() { HostState::Ready } else { host_state(&f("state"), &h.state)? },
        mac: optional(h.mac).map(|m| named(&f("mac"), &m, MacAddr::parse)).transpose()?,
        allocated_to: optional(h.allocated_to).map(|a| plain(&f("allocated_to"), a)).transpose()?,
        state_since: None,
        boot_method: match h.boot_method.as_str() {
            "" => BootMethod::Network,
            m => BootMethod::parse(m).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{}: unknown boot method {m:?} (network, virtual_media)",
                    f("boot_method")
                ))
            })?,
        },
    };
    match host.problem() {
        Some(problem) => Err(Status::invalid_argument(format!("hosts[{i}]: {problem}"))),
        None => Ok(host),
    }
}

/// A host record as the API shows it.
pub fn host_to(h: &Host) -> pb::Host {
    pb::Host {
        hostname: h.hostname.to_string(),
        site: h.site.to_string(),
        rack: h.rack.as_ref().map(|r| r.to_string()).unwrap_or_default(),
        pool: h.pool.to_string(),
        owner_group: h.owner_group.as_ref().map(|g| g.to_string()).unwrap_or_default(),
        sku: h.sku.to_string(),
        bmc_address: h.bmc.address.clone(),
        bmc_port: u32::from(h.bmc.port),
        credentials_ref: h.bmc.credentials_ref.clone(),
        state: h.state.to_string(),
        mac: h.mac.map(|m| m.to_string()).unwrap_or_default(),
        allocated_to: h.allocated_to.clone().unwrap_or_default(),
        state_since_ms: h.state_since.map(ms).unwrap_or_default(),
        bmc_protocol: h.bmc.protocol.to_string(),
        redfish_system_id: h.bmc.system_id.clone().unwrap_or_default(),
        bmc_tls: h.bmc.tls.spec(),
        boot_method: h.boot_method.to_string(),
    }
}

/// A ListAudit request as the store's filter; errors name the field.
pub(crate) fn audit_filter(r: pb::ListAuditRequest) -> Result<AuditFilter, Status> {
    let optional = |v: String| (!v.is_empty()).then_some(v);
    let time = |v: i64| (v != 0).then(|| Timestamp::from_millis(v));
    Ok(AuditFilter {
        principal: optional(r.principal).map(|p| plain("principal", p)).transpose()?,
        op: optional(r.op)
            .map(|op| {
                AuditOp::parse(&op).ok_or_else(|| {
                    let known: Vec<&str> = AuditOp::ALL.iter().map(|o| o.as_str()).collect();
                    Status::invalid_argument(format!("op: unknown operation {op:?} ({})", known.join(", ")))
                })
            })
            .transpose()?,
        host: optional(r.host).map(|h| named("host", &h, Hostname::new)).transpose()?,
        batch_id: optional(r.batch_id).map(|b| batch_id(&b)).transpose()?,
        from: time(r.from_ms),
        until: time(r.until_ms),
        before_id: (r.before_id != 0).then_some(r.before_id),
        limit: r.limit as usize,
    })
}

/// One period's statistics as the API shows them.
pub(crate) fn period_stats(p: &maas_core::rollup::PeriodStats) -> pb::PeriodStats {
    pb::PeriodStats {
        start_ms: ms(p.start),
        action: p.action.to_string(),
        succeeded: p.succeeded,
        failed: p.failed,
        cancelled: p.cancelled,
        success_rate: p.success_rate,
        p50_seconds: p.p50.map(|d| d.as_secs_f64()),
        p95_seconds: p.p95.map(|d| d.as_secs_f64()),
    }
}

/// An audit entry as the API shows it.
pub(crate) fn audit_entry(a: &AuditRecord) -> pb::AuditEntry {
    pb::AuditEntry {
        id: a.id,
        at_ms: ms(a.at),
        principal: a.principal.clone(),
        op: a.op.to_string(),
        accepted: a.accepted,
        batch_id: a.batch_id.map(|b| b.to_string()).unwrap_or_default(),
        action: a.action.as_ref().map(|x| x.kind().to_string()).unwrap_or_default(),
        host_count: a.host_count,
        hosts: a.hosts.clone(),
        summary: a.summary.clone(),
        reason: a.reason.clone().unwrap_or_default(),
        forced: a.forced,
        comment: a.comment.clone().unwrap_or_default(),
        error: a.error.clone().unwrap_or_default(),
    }
}

pub(crate) fn pool_kinds(pool: &Pool, kinds: Option<Vec<StepKind>>) -> pb::PoolKinds {
    match kinds {
        Some(k) => pb::PoolKinds {
            pool: pool.to_string(),
            kinds: k.iter().map(|k| k.as_str().to_string()).collect(),
            all: false,
        },
        None => pb::PoolKinds { pool: pool.to_string(), kinds: vec![], all: true },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_keeps_its_console_check_choice() {
        let reboot = || pb::SubmitBatchRequest {
            action: Some(pb::Action { kind: Some(pb::action::Kind::Reboot(pb::action::Reboot { soft: false })) }),
            hosts: vec!["web1.dc1".into()],
            ..Default::default()
        };
        assert_eq!(batch_request(reboot()).unwrap().console_check, None, "unset: the daemon's default");
        for choice in [true, false] {
            let r = pb::SubmitBatchRequest { console_check: Some(choice), ..reboot() };
            assert_eq!(batch_request(r).unwrap().console_check, Some(choice));
        }
    }
}
