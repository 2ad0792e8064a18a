//! Rows to records and back: every column conversion in one place.

use std::str::FromStr;
use std::sync::Arc;

use maas_core::batch::BatchSpec;
use maas_core::host::{BmcEndpoint, BmcProtocol, BmcTls, BootMethod, Host, MacAddr};
use maas_core::id::{BatchId, HostRunId, JobId};
use maas_core::model::*;
use maas_core::names::{Group, Hostname, Pool, Rack, Site, Sku};
use maas_core::plan::StepKind;
use maas_core::ports::services::Ticket;
use maas_core::ports::store::{StoreError, TicketRecord};
use maas_core::rollup::{Rollup, RollupKey};
use maas_core::time::Timestamp;
use sea_orm::{QueryResult, TryGetable, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::entity;

/// A store error for a row that does not decode (a corrupt or foreign row).
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Backend { message: format!("undecodable {what} row: {detail}"), source: None }
}

/// A column of `row`.
pub(crate) fn col<T: TryGetable>(row: &QueryResult, name: &str) -> Result<T, StoreError> {
    row.try_get::<T>("", name).map_err(|e| corrupt(name, e))
}

fn name<T: FromStr>(row: &QueryResult, c: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    let s: String = col(row, c)?;
    s.parse::<T>().map_err(|e| corrupt(c, e))
}

fn opt_name<T: FromStr>(row: &QueryResult, c: &str) -> Result<Option<T>, StoreError>
where
    T::Err: std::fmt::Display,
{
    let s: Option<String> = col(row, c)?;
    s.map(|s| s.parse::<T>().map_err(|e| corrupt(c, e))).transpose()
}

fn uuid(row: &QueryResult, c: &str) -> Result<uuid::Uuid, StoreError> {
    uuid_in(c, &col::<String>(row, c)?)
}

/// The UUID in column `c`'s text `s`.
fn uuid_in(c: &str, s: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(s.trim()).map_err(|e| corrupt(c, e))
}

/// A job id column (`id` of `maas_jobs`, or any column holding one).
pub(crate) fn job_id(row: &QueryResult, c: &str) -> Result<JobId, StoreError> {
    uuid(row, c).map(JobId)
}

fn ts(row: &QueryResult, c: &str) -> Result<Timestamp, StoreError> {
    Ok(Timestamp::from_millis(col::<i64>(row, c)?))
}

fn opt_ts(row: &QueryResult, c: &str) -> Result<Option<Timestamp>, StoreError> {
    Ok(col::<Option<i64>>(row, c)?.map(Timestamp::from_millis))
}

fn u32c(row: &QueryResult, c: &str) -> Result<u32, StoreError> {
    u32_in(c, col(row, c)?)
}

/// Column `c`'s integer `v` as a `u32`.
fn u32_in(c: &str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|e| corrupt(c, e))
}

fn json<T: DeserializeOwned>(row: &QueryResult, c: &str) -> Result<T, StoreError> {
    json_in(c, &col::<String>(row, c)?)
}

/// The value in column `c`'s JSON text `s`.
pub(crate) fn json_in<T: DeserializeOwned>(c: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(c, e))
}

fn opt_json<T: DeserializeOwned>(row: &QueryResult, c: &str) -> Result<Option<T>, StoreError> {
    let s: Option<String> = col(row, c)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| corrupt(c, e))).transpose()
}

/// A serde enum as its bare string (`"available"`).
pub(crate) fn enum_str<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn enum_of<T: DeserializeOwned>(row: &QueryResult, c: &str) -> Result<T, StoreError> {
    enum_in(c, col(row, c)?)
}

/// The serde enum named by column `c`'s text `s`.
fn enum_in<T: DeserializeOwned>(c: &str, s: String) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(s.clone())).map_err(|e| corrupt(c, format!("{s:?}: {e}")))
}

/// The PostgreSQL type of a column holding `v` (for `json_to_recordset` column lists).
pub(crate) fn pg_type(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "boolean",
        Value::BigInt(_) | Value::Int(_) => "bigint",
        _ => "text",
    }
}

/// A bound value as JSON (for rows sent as one JSON document). Only the kinds of values
/// this crate binds (text, integers, booleans, and their nulls) are accepted.
pub(crate) fn json_value(v: &Value) -> Result<serde_json::Value, StoreError> {
    Ok(match v {
        Value::Bool(Some(b)) => serde_json::Value::Bool(*b),
        Value::BigInt(Some(i)) => serde_json::Value::from(*i),
        Value::Int(Some(i)) => serde_json::Value::from(*i),
        Value::String(Some(s)) => serde_json::Value::String(s.to_string()),
        Value::Bool(None) | Value::BigInt(None) | Value::Int(None) | Value::String(None) => serde_json::Value::Null,
        other => return Err(corrupt("bound value", format!("{other:?} cannot travel as JSON"))),
    })
}

/// JSON text of `v`.
pub(crate) fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A timestamp column value.
pub(crate) fn t(v: Timestamp) -> Value {
    Value::from(v.as_millis())
}

/// An optional timestamp column value.
pub(crate) fn ot(v: Option<Timestamp>) -> Value {
    Value::from(v.map(Timestamp::as_millis))
}

/// A text column value.
pub(crate) fn s(v: impl ToString) -> Value {
    Value::from(v.to_string())
}

/// An optional text column value.
pub(crate) fn os<T: ToString>(v: Option<T>) -> Value {
    Value::from(v.map(|v| v.to_string()))
}

/// An integer column value.
pub(crate) fn n(v: impl Into<i64>) -> Value {
    Value::from(v.into())
}

/// The columns of `maas_jobs`, in [`job_values`] order.
pub(crate) const JOB_COLUMNS: &str = "id, batch_id, host_run_id, hostname, site, position, kind, params, state, attempt, \
     max_attempts, priority, queue_key, run_at, lease_owner, lease_expires_at, wait_token, wait_deadline, created_at, \
     enqueued_at, started_at, finished_at, last_error";

/// A job's column values.
pub(crate) fn job_values(j: &JobRecord) -> Vec<Value> {
    vec![
        s(j.id),
        s(j.batch_id),
        s(j.host_run_id),
        s(&j.hostname),
        s(&j.site),
        n(j.position),
        s(j.kind.as_str()),
        s(to_json(&j.params)),
        s(j.state.as_str()),
        n(j.attempt),
        n(j.max_attempts),
        s(enum_str(&j.priority)),
        n(j.key),
        t(j.run_at),
        os(j.lease_owner.as_ref()),
        ot(j.lease_expires_at),
        os(j.wait_token.as_ref()),
        ot(j.wait_deadline),
        t(j.created_at),
        ot(j.enqueued_at),
        ot(j.started_at),
        ot(j.finished_at),
        os(j.last_error.as_ref()),
    ]
}

/// The columns of `maas_jobs` a decision may change after submission (the id first), in
/// [`job_mutable_values`] order. Set-based writes send only these.
pub(crate) const JOB_MUTABLE_COLUMNS: &str = "id, state, attempt, max_attempts, queue_key, run_at, lease_owner, \
     lease_expires_at, wait_token, wait_deadline, enqueued_at, started_at, finished_at, last_error";

/// A job's [`JOB_MUTABLE_COLUMNS`] values, or `None` if `now` differs from `was` outside
/// them (a decision that rewrote what never changes: refuse to half-write it).
pub(crate) fn job_mutable_values(was: &JobRecord, now: &JobRecord) -> Option<Vec<Value>> {
    let same_identity = was.id == now.id
        && was.batch_id == now.batch_id
        && was.host_run_id == now.host_run_id
        && was.hostname == now.hostname
        && was.site == now.site
        && was.position == now.position
        && was.kind == now.kind
        && was.params == now.params
        && was.priority == now.priority
        && was.created_at == now.created_at;
    same_identity.then(|| {
        vec![
            s(now.id),
            s(now.state.as_str()),
            n(now.attempt),
            n(now.max_attempts),
            n(now.key),
            t(now.run_at),
            os(now.lease_owner.as_ref()),
            ot(now.lease_expires_at),
            os(now.wait_token.as_ref()),
            ot(now.wait_deadline),
            ot(now.enqueued_at),
            ot(now.started_at),
            ot(now.finished_at),
            os(now.last_error.as_ref()),
        ]
    })
}

/// A job from its row.
pub(crate) fn job(row: &QueryResult) -> Result<JobRecord, StoreError> {
    let kind: String = col(row, "kind")?;
    let state: String = col(row, "state")?;
    Ok(JobRecord {
        id: JobId(uuid(row, "id")?),
        batch_id: BatchId(uuid(row, "batch_id")?),
        host_run_id: HostRunId(uuid(row, "host_run_id")?),
        hostname: name(row, "hostname")?,
        site: name(row, "site")?,
        position: u32c(row, "position")?,
        kind: StepKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        params: json(row, "params")?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        attempt: u32c(row, "attempt")?,
        max_attempts: u32c(row, "max_attempts")?,
        priority: enum_of(row, "priority")?,
        key: col(row, "queue_key")?,
        run_at: ts(row, "run_at")?,
        lease_owner: col(row, "lease_owner")?,
        lease_expires_at: opt_ts(row, "lease_expires_at")?,
        wait_token: col(row, "wait_token")?,
        wait_deadline: opt_ts(row, "wait_deadline")?,
        created_at: ts(row, "created_at")?,
        enqueued_at: opt_ts(row, "enqueued_at")?,
        started_at: opt_ts(row, "started_at")?,
        finished_at: opt_ts(row, "finished_at")?,
        last_error: col(row, "last_error")?,
    })
}

/// The columns of `maas_host_runs`, in [`run_values`] order.
pub(crate) const RUN_COLUMNS: &str = "id, batch_id, ordinal, hostname, site, pool, sku, state, step, cancel_requested, \
     started_at, finished_at, last_error, straggler_step";

/// A host run's column values.
pub(crate) fn run_values(r: &HostRunRecord) -> Vec<Value> {
    vec![
        s(r.id),
        s(r.batch_id),
        n(r.ordinal),
        s(&r.hostname),
        s(&r.site),
        s(&r.pool),
        s(&r.sku),
        s(r.state.as_str()),
        n(r.step),
        Value::from(r.cancel_requested),
        ot(r.started_at),
        ot(r.finished_at),
        os(r.last_error.as_ref()),
        Value::from(r.straggler_step.map(i64::from)),
    ]
}

/// The columns of `maas_host_runs` a decision may change (the id first), in
/// [`run_mutable_values`] order.
pub(crate) const RUN_MUTABLE_COLUMNS: &str =
    "id, state, step, cancel_requested, started_at, finished_at, last_error, straggler_step";

/// A host run's [`RUN_MUTABLE_COLUMNS`] values, or `None` if `now` differs from `was`
/// outside them.
pub(crate) fn run_mutable_values(was: &HostRunRecord, now: &HostRunRecord) -> Option<Vec<Value>> {
    let same_identity = was.id == now.id
        && was.batch_id == now.batch_id
        && was.ordinal == now.ordinal
        && was.hostname == now.hostname
        && was.site == now.site
        && was.pool == now.pool
        && was.sku == now.sku;
    same_identity.then(|| {
        vec![
            s(now.id),
            s(now.state.as_str()),
            n(now.step),
            Value::from(now.cancel_requested),
            ot(now.started_at),
            ot(now.finished_at),
            os(now.last_error.as_ref()),
            Value::from(now.straggler_step.map(i64::from)),
        ]
    })
}

/// A host run from its row.
pub(crate) fn run(row: &QueryResult) -> Result<HostRunRecord, StoreError> {
    let state: String = col(row, "state")?;
    Ok(HostRunRecord {
        id: HostRunId(uuid(row, "id")?),
        batch_id: BatchId(uuid(row, "batch_id")?),
        ordinal: u32c(row, "ordinal")?,
        hostname: name(row, "hostname")?,
        site: name(row, "site")?,
        pool: name(row, "pool")?,
        sku: name(row, "sku")?,
        state: HostRunState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        step: u32c(row, "step")?,
        cancel_requested: col(row, "cancel_requested")?,
        started_at: opt_ts(row, "started_at")?,
        finished_at: opt_ts(row, "finished_at")?,
        last_error: col(row, "last_error")?,
        straggler_step: col::<Option<i64>>(row, "straggler_step")?.map(|v| v as u32),
    })
}

/// The columns of `maas_batches`, in [`batch_values`] order.
pub(crate) const BATCH_COLUMNS: &str = "id, submitter, idempotency_key, fingerprint, action, spec, state, pause_reason, \
     cancel_reason, queued, running, succeeded, failed, cancelled, created_at, updated_at, finished_at, pools";

/// A batch's column values.
pub(crate) fn batch_values(b: &BatchRecord) -> Vec<Value> {
    vec![
        s(b.id),
        s(&b.submitter),
        os(b.spec.idempotency_key.as_ref()),
        s(&b.fingerprint),
        s(enum_str(&b.action())),
        s(to_json(&*b.spec)),
        s(b.state.as_str()),
        os(b.pause_reason.as_ref().map(to_json)),
        os(b.cancel_reason.as_ref()),
        n(b.counts.queued),
        n(b.counts.running),
        n(b.counts.succeeded),
        n(b.counts.failed),
        n(b.counts.cancelled),
        t(b.created_at),
        t(b.updated_at),
        ot(b.finished_at),
        s(b.pools.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")),
    ]
}

/// The columns of `maas_batches` except the (large, immutable) spec.
pub(crate) const BATCH_HEAD_COLUMNS: &str = "id, submitter, idempotency_key, fingerprint, action, state, pause_reason, \
     cancel_reason, queued, running, succeeded, failed, cancelled, created_at, updated_at, finished_at, pools";

/// The mutable columns of `maas_batches`, in [`batch_state_values`] order, then the id.
pub(crate) const BATCH_STATE_SET: &str = "state = ?, pause_reason = ?, cancel_reason = ?, queued = ?, running = ?, \
     succeeded = ?, failed = ?, cancelled = ?, updated_at = ?, finished_at = ?";

/// A batch's mutable column values followed by its id (for `UPDATE ... WHERE id = ?`).
pub(crate) fn batch_state_values(b: &BatchRecord) -> Vec<Value> {
    vec![
        s(b.state.as_str()),
        os(b.pause_reason.as_ref().map(to_json)),
        os(b.cancel_reason.as_ref()),
        n(b.counts.queued),
        n(b.counts.running),
        n(b.counts.succeeded),
        n(b.counts.failed),
        n(b.counts.cancelled),
        t(b.updated_at),
        ot(b.finished_at),
        s(b.id),
    ]
}

/// A batch spec from a row's `spec` column.
pub(crate) fn spec(row: &QueryResult) -> Result<BatchSpec, StoreError> {
    json(row, "spec")
}

/// A batch from its row (any columns including [`BATCH_HEAD_COLUMNS`]) and its spec.
pub(crate) fn batch(row: &QueryResult, spec: Arc<BatchSpec>) -> Result<BatchRecord, StoreError> {
    let state: String = col(row, "state")?;
    Ok(BatchRecord {
        id: BatchId(uuid(row, "id")?),
        submitter: col(row, "submitter")?,
        spec,
        fingerprint: col(row, "fingerprint")?,
        state: BatchState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        pause_reason: opt_json(row, "pause_reason")?,
        cancel_reason: col(row, "cancel_reason")?,
        counts: HostRunCounts {
            queued: u32c(row, "queued")?,
            running: u32c(row, "running")?,
            succeeded: u32c(row, "succeeded")?,
            failed: u32c(row, "failed")?,
            cancelled: u32c(row, "cancelled")?,
        },
        created_at: ts(row, "created_at")?,
        updated_at: ts(row, "updated_at")?,
        finished_at: opt_ts(row, "finished_at")?,
        pools: col::<Option<String>>(row, "pools")?
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().map_err(|e| corrupt("pools", e)))
            .collect::<Result<_, _>>()?,
    })
}

/// A claim from its row.
pub(crate) fn claim(row: &QueryResult) -> Result<Claim, StoreError> {
    Ok(Claim {
        hostname: name(row, "hostname")?,
        batch_id: BatchId(uuid(row, "batch_id")?),
        host_run_id: HostRunId(uuid(row, "host_run_id")?),
        since: ts(row, "since")?,
    })
}

/// An event from its row.
pub(crate) fn event(row: &QueryResult) -> Result<Event, StoreError> {
    Ok(Event {
        seq: col::<i64>(row, "seq")? as u64,
        batch_id: BatchId(uuid(row, "batch_id")?),
        at: ts(row, "at")?,
        kind: json(row, "kind")?,
    })
}

/// The columns an audit entry is inserted with (`id` comes from the table).
pub(crate) const AUDIT_INSERT_COLUMNS: &str =
    "at, principal, op, accepted, batch_id, action, host_count, hosts, summary, reason, forced, comment, error";

/// An audit entry's values for [`AUDIT_INSERT_COLUMNS`].
pub(crate) fn audit_values(a: &AuditRecord) -> Vec<Value> {
    vec![
        t(a.at),
        s(&a.principal),
        s(a.op.as_str()),
        n(i64::from(a.accepted)),
        os(a.batch_id),
        os(a.action.as_ref().map(to_json)),
        n(a.host_count),
        s(&a.hosts),
        s(&a.summary),
        os(a.reason.as_ref()),
        n(i64::from(a.forced)),
        os(a.comment.as_ref()),
        os(a.error.as_ref()),
    ]
}

/// An audit entry from its row (`SELECT id, {AUDIT_INSERT_COLUMNS}`).
pub(crate) fn audit(row: &QueryResult) -> Result<AuditRecord, StoreError> {
    let op: String = col(row, "op")?;
    let batch_id: Option<String> = col(row, "batch_id")?;
    let action: Option<String> = col(row, "action")?;
    Ok(AuditRecord {
        id: u64::try_from(col::<i64>(row, "id")?).map_err(|e| corrupt("id", e))?,
        at: ts(row, "at")?,
        principal: col(row, "principal")?,
        op: AuditOp::parse(&op).ok_or_else(|| corrupt("op", format!("unknown operation {op:?}")))?,
        accepted: col::<i64>(row, "accepted")? != 0,
        batch_id: batch_id.map(|b| uuid_in("batch_id", &b).map(BatchId)).transpose()?,
        action: action.map(|a| json_in("action", &a)).transpose()?,
        host_count: u32_in("host_count", col(row, "host_count")?)?,
        hosts: col(row, "hosts")?,
        summary: col(row, "summary")?,
        reason: col(row, "reason")?,
        forced: col::<i64>(row, "forced")? != 0,
        comment: col(row, "comment")?,
        error: col(row, "error")?,
    })
}

/// A worker from its entity.
pub(crate) fn worker(m: entity::workers::Model) -> Result<WorkerRecord, StoreError> {
    Ok(WorkerRecord {
        id: m.id,
        site: m.site.parse().map_err(|e| corrupt("site", e))?,
        pool: m.pool.parse().map_err(|e| corrupt("pool", e))?,
        started_at: Timestamp::from_millis(m.started_at),
        last_heartbeat: Timestamp::from_millis(m.last_heartbeat),
    })
}

/// A ticket's id as people see it.
pub(crate) fn ticket_id(id: i64) -> String {
    format!("T-{id:06}")
}

/// A ticket from its entity.
pub(crate) fn ticket(m: entity::tickets::Model) -> Result<TicketRecord, StoreError> {
    Ok(TicketRecord {
        id: ticket_id(m.id),
        ticket: Ticket {
            kind: enum_in("kind", m.kind)?,
            batch_id: BatchId(uuid_in("batch_id", &m.batch_id)?),
            host: if m.host.is_empty() { None } else { Some(m.host.parse().map_err(|e| corrupt("host", e))?) },
            step: m.step.map(|k| StepKind::parse(&k).ok_or_else(|| corrupt("step", &k))).transpose()?,
            summary: m.summary,
            at: Timestamp::from_millis(m.at),
        },
    })
}

/// The columns of `maas_hosts`, in [`host_values`] order.
pub(crate) const HOST_COLUMNS: &str = "hostname, site, rack, pool, owner_group, sku, bmc_address, bmc_port, bmc_credentials_ref, state, mac, \
     allocated_to, state_since, bmc_protocol, bmc_system_id, bmc_tls, boot_method";

/// A host's column values.
pub(crate) fn host_values(h: &Host) -> Vec<Value> {
    vec![
        s(&h.hostname),
        s(&h.site),
        os(h.rack.as_ref()),
        s(&h.pool),
        os(h.owner_group.as_ref()),
        s(&h.sku),
        s(&h.bmc.address),
        n(h.bmc.port),
        s(&h.bmc.credentials_ref),
        s(enum_str(&h.state)),
        os(h.mac.as_ref()),
        os(h.allocated_to.as_ref()),
        ot(h.state_since),
        s(h.bmc.protocol.as_str()),
        os(h.bmc.system_id.as_ref()),
        os((!h.bmc.tls.is_verify()).then(|| h.bmc.tls.spec())),
        s(h.boot_method.as_str()),
    ]
}

/// A host from its row.
pub(crate) fn host(row: &QueryResult) -> Result<Host, StoreError> {
    Ok(Host {
        hostname: name::<Hostname>(row, "hostname")?,
        site: name::<Site>(row, "site")?,
        rack: opt_name::<Rack>(row, "rack")?,
        pool: name::<Pool>(row, "pool")?,
        owner_group: opt_name::<Group>(row, "owner_group")?,
        sku: name::<Sku>(row, "sku")?,
        bmc: BmcEndpoint {
            address: col(row, "bmc_address")?,
            port: u16::try_from(col::<i64>(row, "bmc_port")?).map_err(|e| corrupt("bmc_port", e))?,
            credentials_ref: col(row, "bmc_credentials_ref")?,
            protocol: {
                let p: String = col(row, "bmc_protocol")?;
                BmcProtocol::parse(&p).ok_or_else(|| corrupt("bmc_protocol", &p))?
            },
            system_id: col(row, "bmc_system_id")?,
            tls: col::<Option<String>>(row, "bmc_tls")?
                .map(|t| BmcTls::parse(&t).map_err(|e| corrupt("bmc_tls", e)))
                .transpose()?
                .unwrap_or_default(),
        },
        state: enum_of(row, "state")?,
        mac: opt_name::<MacAddr>(row, "mac")?,
        allocated_to: col(row, "allocated_to")?,
        state_since: opt_ts(row, "state_since")?,
        boot_method: {
            let m: String = col(row, "boot_method")?;
            BootMethod::parse(&m).ok_or_else(|| corrupt("boot_method", &m))?
        },
    })
}

/// A rollup key's column values, in `day, action, site, sku, image, step` order.
pub(crate) fn rollup_key_values(k: &RollupKey) -> Vec<Value> {
    vec![
        t(k.day),
        s(enum_str(&k.action)),
        s(&k.site),
        s(&k.sku),
        s(&k.image),
        s(k.step.map(|st| st.as_str()).unwrap_or_default()),
    ]
}

/// The columns of `maas_rollups`, in [`rollup_values`] order.
pub(crate) const ROLLUP_COLUMNS: &str = "day, action, site, sku, image, step, succeeded, failed, cancelled, durations";

/// A rollup's column values.
pub(crate) fn rollup_values(r: &Rollup) -> Vec<Value> {
    let mut v = rollup_key_values(&r.key);
    v.extend([n(r.succeeded as i64), n(r.failed as i64), n(r.cancelled as i64), s(to_json(&r.durations))]);
    v
}

/// A rollup from its row.
pub(crate) fn rollup(row: &QueryResult) -> Result<Rollup, StoreError> {
    let step: String = col(row, "step")?;
    let count = |c: &str| -> Result<u64, StoreError> { u64::try_from(col::<i64>(row, c)?).map_err(|e| corrupt(c, e)) };
    Ok(Rollup {
        key: RollupKey {
            day: ts(row, "day")?,
            action: enum_of(row, "action")?,
            site: name::<Site>(row, "site")?,
            sku: name::<Sku>(row, "sku")?,
            image: col(row, "image")?,
            step: if step.is_empty() {
                None
            } else {
                Some(StepKind::parse(&step).ok_or_else(|| corrupt("step", format!("unknown step {step:?}")))?)
            },
        },
        succeeded: count("succeeded")?,
        failed: count("failed")?,
        cancelled: count("cancelled")?,
        durations: json(row, "durations")?,
    })
}
