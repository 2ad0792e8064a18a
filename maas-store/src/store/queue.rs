//! `QueueStore` for SQL: submit, claim, heartbeat, complete (set-based, in
//! [`super::complete`]), rescue, cancel, pause, the outbox, leader rows, pool kinds and the
//! worker registry. Every change is load (locked) → maas-core's decision → its effects,
//! in one transaction ([`SqlStore::apply`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use maas_core::id::{HostRunId, JobId};
use maas_core::machine::{self, Expiry, TransitionError};
use maas_core::model::*;
use maas_core::names::{Hostname, Pool};
use maas_core::plan::StepKind;
use maas_core::policy::leader::{self, LeaderLease};
use maas_core::ports::services::Ticket;
use maas_core::ports::store::*;
use maas_core::time::Timestamp;
use sea_orm::DbBackend;

use crate::entity;
use crate::errors::{backend as backend_err, is_unique_violation, transient};
use crate::rows::{self, col, n, os, s, t};
use sea_orm::EntityTrait;

use super::*;

#[async_trait]
impl QueueStore for SqlStore {
    async fn batch_forget_key(&self, batch: BatchId) -> Result<(), StoreError> {
        write_txn!(self, c, {
            self.exec(c, "UPDATE maas_batches SET idempotency_key = NULL WHERE id = ?", vec![s(batch)])
                .await
                .map(|_| ())
        })
    }

    async fn audit_append(&self, record: AuditRecord) -> Result<(), StoreError> {
        write_txn!(self, c, { self.insert_audit(c, std::slice::from_ref(&record)).await })
    }

    async fn batch_cancel(&self, p: BatchCancelParams) -> Result<BatchRecord, StoreError> {
        write_txn!(self, c, {
            let batch =
                self.batch_row(c, p.batch_id, true).await?.ok_or_else(|| StoreError::not_found("batch", p.batch_id))?;
            // The unfinished host runs (maas-core's non-terminal states).
            let unfinished: Vec<HostRunState> =
                HostRunState::ALL.iter().copied().filter(|st| !st.is_terminal()).collect();
            let sql = format!(
                "SELECT * FROM maas_host_runs WHERE batch_id = ? AND state IN ({}) ORDER BY ordinal{}",
                placeholders(unfinished.len()),
                self.lock()
            );
            let mut v = vec![s(p.batch_id)];
            v.extend(unfinished.iter().map(|st| s(st.as_str())));
            let mut runs = Vec::new();
            for row in self.all(c, &sql, v).await? {
                let run = rows::run(&row)?;
                let current = self.job_at(c, run.id, run.step).await?;
                runs.push((run, current));
            }
            let fx = machine::decide_cancel(batch, runs, &p.principal, &p.reason, p.now, &self.rules)?;
            let mut pending = Vec::new();
            self.apply(c, fx, p.now, &mut pending).await?;
            self.append_events(c, pending).await?;
            self.batch_row(c, p.batch_id, false).await?.ok_or_else(|| StoreError::not_found("batch", p.batch_id))
        })
    }

    async fn batch_find_by_key(&self, submitter: &str, key: &str) -> Result<Option<BatchRecord>, StoreError> {
        self.find_by_key(&self.db, submitter, key).await
    }

    async fn batch_purge_finished(&self, p: PurgeParams) -> Result<PurgeReport, StoreError> {
        let limit = if p.limit == 0 { 100 } else { p.limit as i64 };
        // Finished batches: maas-core's terminal states.
        let finished: Vec<BatchState> = BatchState::ALL.iter().copied().filter(|st| st.is_terminal()).collect();
        let sql = format!(
            "SELECT id FROM maas_batches WHERE state IN ({}) AND finished_at < ? ORDER BY finished_at LIMIT ?",
            placeholders(finished.len())
        );
        let mut v: Vec<_> = finished.iter().map(|st| s(st.as_str())).collect();
        v.extend([t(p.finished_before), n(limit)]);
        let rows = self.all(&self.db, &sql, v).await?;
        let ids: Vec<String> = rows.iter().map(|r| col::<String>(r, "id")).collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(PurgeReport::default());
        }
        // Bounded transactions: a batch's host runs and their jobs go PURGE_RUNS host runs
        // at a time; its events and its row go last, so an interrupted purge leaves a
        // finished batch that the next purge picks up again.
        let mut report = PurgeReport::default();
        for id in &ids {
            self.fold_into_rollups(id).await?;
            loop {
                let chunk = self
                    .all(
                        &self.db,
                        "SELECT id FROM maas_host_runs WHERE batch_id = ? ORDER BY ordinal LIMIT ?",
                        vec![s(id), n(PURGE_RUNS as i64)],
                    )
                    .await?;
                if chunk.is_empty() {
                    break;
                }
                let runs: Vec<String> = chunk.iter().map(|r| col::<String>(r, "id")).collect::<Result<_, _>>()?;
                let (jobs, gone) = write_txn!(self, c, {
                    let (list, v) = in_list(&runs);
                    let jobs = self
                        .exec(c, &format!("DELETE FROM maas_jobs WHERE host_run_id IN ({list})"), v.clone())
                        .await?;
                    let gone = self.exec(c, &format!("DELETE FROM maas_host_runs WHERE id IN ({list})"), v).await?;
                    Ok((jobs, gone))
                })?;
                report.jobs += jobs as usize;
                report.host_runs += gone as usize;
            }
            let (events, batches) = write_txn!(self, c, {
                let events = self
                    .exec(
                        c,
                        "DELETE FROM maas_events WHERE batch_id = ? AND seq <= ?",
                        vec![s(id), n(p.events_through as i64)],
                    )
                    .await?;
                let batches = self.exec(c, "DELETE FROM maas_batches WHERE id = ?", vec![s(id)]).await?;
                Ok((events, batches))
            })?;
            report.events += events as usize;
            report.batches += batches as usize;
        }
        Ok(report)
    }

    async fn batch_set_paused(&self, p: BatchSetPausedParams) -> Result<BatchRecord, StoreError> {
        write_txn!(self, c, {
            let batch =
                self.batch_row(c, p.batch_id, true).await?.ok_or_else(|| StoreError::not_found("batch", p.batch_id))?;
            let fx = if p.paused {
                machine::decide_pause(batch, &p.principal, &p.reason, p.now)?
            } else {
                machine::decide_resume(batch, &p.principal, p.now)?
            };
            let mut pending = Vec::new();
            self.apply(c, fx, p.now, &mut pending).await?;
            self.append_events(c, pending).await?;
            self.batch_row(c, p.batch_id, false).await?.ok_or_else(|| StoreError::not_found("batch", p.batch_id))
        })
    }

    async fn batch_submit(&self, p: BatchSubmitParams) -> Result<BatchSubmitted, StoreError> {
        let nb = p.new_batch;
        let key = nb.batch.spec.idempotency_key.clone();
        let hosts: Vec<Hostname> = nb.claims.iter().map(|c| c.hostname.clone()).collect();
        for _ in 0..RETRIES {
            // The idempotent answer first: the same key always gets the same batch.
            if let Some(key) = &key
                && let Some(existing) = self.find_by_key(&self.db, &nb.batch.submitter, key).await?
            {
                if machine::idempotent_match(&existing, &nb.batch.spec) {
                    return Ok(BatchSubmitted { batch: existing, created: false });
                }
                return Err(StoreError::IdempotencyKeyReused { key: key.clone(), batch: existing.id });
            }
            let result: Result<(), StoreError> = write_txn!(self, c, { self.insert_batch(c, &nb).await });
            match result {
                Ok(()) => return Ok(BatchSubmitted { batch: nb.batch.clone(), created: true }),
                Err(e) if is_unique_violation(&e) => {
                    // Rolled back whole. A concurrent submission of this key may have won:
                    // its batch is the answer (the check at the top of the loop).
                    if let Some(key) = &key
                        && self.find_by_key(&self.db, &nb.batch.submitter, key).await?.is_some()
                    {
                        continue;
                    }
                    // Otherwise say who holds the hosts (or loop: they finished meanwhile).
                    let conflicts = self.conflicts(&self.db, &hosts).await?;
                    if !conflicts.is_empty() {
                        return Err(StoreError::Overlap { conflicts });
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Backend {
            message: "batch_submit kept racing other submitters; try again".into(),
            source: None,
        })
    }

    async fn claim_get_many(&self, hosts: &[Hostname]) -> Result<Vec<Claim>, StoreError> {
        self.claims_of(&self.db, hosts).await
    }

    async fn event_cursor_get(&self, consumer: &str) -> Result<u64, StoreError> {
        let row = self.one(&self.db, "SELECT seq FROM maas_cursors WHERE consumer = ?", vec![s(consumer)]).await?;
        Ok(row.map(|r| col::<i64>(&r, "seq")).transpose()?.unwrap_or(0) as u64)
    }

    async fn event_cursor_set(&self, consumer: &str, seq: u64) -> Result<(), StoreError> {
        let g = self.greatest();
        self.upsert(
            &self.db,
            "maas_cursors",
            "consumer",
            &["consumer", "seq"],
            vec![s(consumer), n(seq as i64)],
            &[("seq", format!("{g}(maas_cursors.seq, NEW(seq))"))],
        )
        .await
    }

    async fn event_list(&self, p: EventListParams) -> Result<Vec<Event>, StoreError> {
        let limit = if p.limit == 0 { 1000 } else { p.limit as i64 };
        let rows = match p.batch_id {
            Some(b) => {
                self.all(
                    &self.db,
                    "SELECT * FROM maas_events WHERE seq > ? AND batch_id = ? ORDER BY seq LIMIT ?",
                    vec![n(p.after as i64), s(b), n(limit)],
                )
                .await?
            }
            None => {
                self.all(
                    &self.db,
                    "SELECT * FROM maas_events WHERE seq > ? ORDER BY seq LIMIT ?",
                    vec![n(p.after as i64), n(limit)],
                )
                .await?
            }
        };
        rows.iter().map(rows::event).collect()
    }

    async fn host_run_flag_straggler(&self, p: StragglerFlagParams) -> Result<bool, StoreError> {
        write_txn!(self, c, {
            // A flag changes the host run only (no batch lock), in the completions' order:
            // host run, then job; its event is appended last.
            let run = self.run_row(c, p.host_run_id).await?;
            let Some(job) = self.job_at(c, run.id, p.position).await? else { return Ok(false) };
            match machine::decide_straggler(run, p.position, job.kind, p.now) {
                Some(fx) => {
                    let mut pending = Vec::new();
                    self.apply(c, fx, p.now, &mut pending).await?;
                    self.append_events(c, pending).await?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    async fn job_claim(&self, p: JobClaimParams) -> Result<Vec<JobRecord>, StoreError> {
        if p.kinds.is_empty() || p.limit == 0 {
            return Ok(Vec::new());
        }
        let grant = machine::LeaseGrant::new(&p.owner, p.now, p.lease);
        let kinds: Vec<&str> = p.kinds.iter().map(|k| k.as_str()).collect();
        let kind_list = placeholders(kinds.len());
        // What the lease writes (`LeaseGrant`), as SQL: owner, expiry, start, attempt + 1.
        let set = "state = ?, attempt = attempt + 1, lease_owner = ?, lease_expires_at = ?, started_at = ?";
        let set_values =
            || vec![s(machine::LeaseGrant::TO.as_str()), s(&grant.owner), t(grant.expires_at), t(grant.started_at)];
        // A literal, not a parameter: the partial claim index's predicate must be provable
        // from the statement text for a generic (cached) plan to use it.
        let from = machine::LeaseGrant::FROM.as_str();
        let mut filter = vec![s(&p.site)];
        filter.extend(kinds.iter().map(s));
        filter.push(t(p.now));
        filter.push(n(p.limit as i64));
        let mut jobs = match self.backend {
            // One statement: the fenced CTE picks and locks (skipping rows other claimers
            // hold), the UPDATE leases them and returns the leased rows.
            DbBackend::Postgres => {
                let sql = format!(
                    "WITH picked AS MATERIALIZED (\
                        SELECT id FROM maas_jobs WHERE state = '{from}' AND site = ? AND kind IN ({kind_list}) AND run_at <= ? \
                        ORDER BY queue_key, id LIMIT ? FOR UPDATE SKIP LOCKED) \
                     UPDATE maas_jobs SET {set} FROM picked WHERE maas_jobs.id = picked.id RETURNING maas_jobs.*"
                );
                let mut v = filter;
                v.extend(set_values());
                // Parameters in text order: the CTE's, then the SET's.
                self.all(&self.db, &sql, v).await?.iter().map(rows::job).collect::<Result<Vec<_>, _>>()?
            }
            // One statement under the database write lock (writers are serialised).
            DbBackend::Sqlite => {
                let sql = format!(
                    "UPDATE maas_jobs SET {set} WHERE id IN (\
                        SELECT id FROM maas_jobs WHERE state = '{from}' AND site = ? AND kind IN ({kind_list}) AND run_at <= ? \
                        ORDER BY queue_key, id LIMIT ?) RETURNING *"
                );
                let mut v = set_values();
                v.extend(filter);
                self.all(&self.db, &sql, v).await?.iter().map(rows::job).collect::<Result<Vec<_>, _>>()?
            }
            // MySQL/MariaDB have no UPDATE ... RETURNING: lock with SKIP LOCKED, lease the
            // locked ids in one UPDATE, and build the records from the rows read.
            _ => write_txn!(self, c, {
                let sql = format!(
                    "SELECT * FROM maas_jobs WHERE ready_site = ? AND kind IN ({kind_list}) AND run_at <= ? \
                     ORDER BY queue_key, id LIMIT ? FOR UPDATE SKIP LOCKED"
                );
                let mut picked = Vec::new();
                for row in self.all(c, &sql, filter.clone()).await? {
                    let mut job = rows::job(&row)?;
                    grant.apply(&mut job)?;
                    picked.push(job);
                }
                if !picked.is_empty() {
                    let (list, ids) = in_list(&picked.iter().map(|j| j.id).collect::<Vec<_>>());
                    let mut v = set_values();
                    v.extend(ids);
                    let sql = format!("UPDATE maas_jobs SET {set} WHERE id IN ({list}) AND state = '{from}'");
                    let leased = self.exec(c, &sql, v).await?;
                    if leased != picked.len() as u64 {
                        return Err(rows::corrupt("claim", format!("leased {leased} of {} locked jobs", picked.len())));
                    }
                }
                Ok(picked)
            })?,
        };
        // RETURNING promises no order: hand jobs out in queue-key order.
        jobs.sort_by_key(|j| (j.key, j.id));
        Ok(jobs)
    }

    async fn job_complete_many(
        &self,
        p: JobCompleteManyParams,
    ) -> Result<Vec<Result<(), TransitionError>>, StoreError> {
        // One group is one transaction (its statement locks rows in id order). A longer call
        // is split in host-run order (one unlocked read), so concurrent calls take the
        // groups' locks in one order and rarely deadlock (and retry when they do).
        let mut order: Vec<usize> = (0..p.completions.len()).collect();
        if p.completions.len() > COMPLETION_GROUP {
            let ids: Vec<JobId> = p.completions.iter().map(|c| c.job_id).collect();
            let mut run_of: BTreeMap<JobId, HostRunId> = BTreeMap::new();
            for chunk in ids.chunks(CHUNK) {
                let (list, v) = in_list(chunk);
                let sql = format!("SELECT id, host_run_id FROM maas_jobs WHERE id IN ({list})");
                for row in self.all(&self.db, &sql, v).await? {
                    run_of.insert(rows::job_id(&row, "id")?, HostRunId(rows::job_id(&row, "host_run_id")?.0));
                }
            }
            let mut keyed = Vec::with_capacity(order.len());
            for i in order {
                let id = p.completions[i].job_id;
                keyed.push((*run_of.get(&id).ok_or_else(|| StoreError::not_found("job", id))?, i));
            }
            keyed.sort();
            order = keyed.into_iter().map(|(_, i)| i).collect();
        }
        let mut results: Vec<Option<Result<(), TransitionError>>> = vec![None; p.completions.len()];
        for group in order.chunks(COMPLETION_GROUP) {
            let group: Vec<(usize, &JobCompletion)> = group.iter().map(|i| (*i, &p.completions[*i])).collect();
            let decided = write_txn!(self, c, { self.complete_group(c, &group, p.now).await })?;
            for (i, r) in decided {
                results[i] = Some(r);
            }
        }
        Ok(results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect())
    }

    async fn job_heartbeat_many(&self, p: JobHeartbeatManyParams) -> Result<Vec<JobId>, StoreError> {
        if p.job_ids.is_empty() {
            return Ok(Vec::new());
        }
        write_txn!(self, c, {
            let mut held = Vec::new();
            for chunk in p.job_ids.chunks(CHUNK) {
                let (list, ids) = in_list(chunk);
                // maas-core's `lease_is_held`: running under this owner.
                let held_by = "state = ? AND lease_owner = ?";
                let mut v = vec![t(p.now.plus(p.lease))];
                v.extend(ids.clone());
                v.extend([s(machine::LeaseGrant::TO.as_str()), s(&p.owner)]);
                self.exec(
                    c,
                    &format!("UPDATE maas_jobs SET lease_expires_at = ? WHERE id IN ({list}) AND {held_by}"),
                    v,
                )
                .await?;
                let mut v = ids;
                v.extend([s(machine::LeaseGrant::TO.as_str()), s(&p.owner)]);
                for row in
                    self.all(c, &format!("SELECT id FROM maas_jobs WHERE id IN ({list}) AND {held_by}"), v).await?
                {
                    held.push(rows::job_id(&row, "id")?);
                }
            }
            let order: BTreeMap<JobId, usize> = p.job_ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
            held.sort_by_key(|id| order.get(id).copied().unwrap_or(usize::MAX));
            Ok(held)
        })
    }

    async fn job_release_many(&self, p: JobReleaseParams) -> Result<Vec<JobId>, StoreError> {
        write_txn!(self, c, {
            let mut released = Vec::new();
            for (id, attempt) in &p.jobs {
                let Some(job) = self.job_row(c, *id, true).await? else { continue };
                if let Ok(job) = machine::hand_back(job, &p.owner, *attempt, p.now) {
                    self.put_job(c, &job).await?;
                    released.push(*id);
                }
            }
            Ok(released)
        })
    }

    async fn job_rescue_expired(&self, p: JobRescueParams) -> Result<RescueReport, StoreError> {
        let limit = if p.limit == 0 { i64::MAX } else { p.limit as i64 };
        let mut report = RescueReport::default();
        // Candidates by an indexed range scan on maas-core's `Expiry` (state, deadline);
        // each is decided by `Expiry::decide` under its host run's lock, which re-checks it.
        for expiry in Expiry::ALL {
            let done = (report.retried.len() + report.failed.len() + report.wait_expired.len()) as i64;
            let column = expiry_column(expiry);
            let sql =
                format!("SELECT id FROM maas_jobs WHERE state = ? AND {column} <= ? ORDER BY {column}, id LIMIT ?");
            let due = self.all(&self.db, &sql, vec![s(expiry.state().as_str()), t(p.now), n(limit - done)]).await?;
            for row in due {
                let id = rows::job_id(&row, "id")?;
                let decided: Option<JobRecord> = write_txn!(self, c, {
                    let mut pending = Vec::new();
                    let decided = self
                        .job_change(c, id, p.now, &mut pending, |ctx| expiry.decide(ctx, p.now, &self.rules))
                        .await?;
                    self.append_events(c, pending).await?;
                    Ok(decided?)
                })?;
                match (expiry, decided) {
                    (_, None) => {}
                    (Expiry::Wait, Some(_)) => report.wait_expired.push(id),
                    (Expiry::Lease, Some(j)) if j.state == JobState::Failed => report.failed.push(id),
                    (Expiry::Lease, Some(_)) => report.retried.push(id),
                }
            }
        }
        Ok(report)
    }

    async fn job_forfeit_leases(&self, p: JobForfeitParams) -> Result<RescueReport, StoreError> {
        let mut report = RescueReport::default();
        // Candidates: the running jobs (a bounded set, leased by live workers) whose owner
        // the instance forfeits; each is decided again under its host run's lock.
        let sql = "SELECT id, lease_owner FROM maas_jobs WHERE state = ? ORDER BY id";
        for row in self.all(&self.db, sql, vec![s(JobState::Running.as_str())]).await? {
            let owner: Option<String> = col(&row, "lease_owner")?;
            if !owner.is_some_and(|o| p.instance.forfeits(&o)) {
                continue;
            }
            let id = rows::job_id(&row, "id")?;
            let decided: Option<JobRecord> = write_txn!(self, c, {
                let mut pending = Vec::new();
                let decided = self
                    .job_change(c, id, p.now, &mut pending, |ctx| {
                        machine::decide_lease_forfeited(ctx, &p.instance, p.now, &self.rules)
                    })
                    .await?;
                self.append_events(c, pending).await?;
                Ok(decided?)
            })?;
            match decided {
                None => {}
                Some(j) if j.state == JobState::Failed => report.failed.push(id),
                Some(_) => report.retried.push(id),
            }
        }
        Ok(report)
    }

    async fn job_resolve_wait(&self, p: JobResolveWaitParams) -> Result<JobRecord, StoreError> {
        write_txn!(self, c, {
            let row = self.one(c, "SELECT id FROM maas_jobs WHERE wait_token = ?", vec![s(&p.token)]).await?;
            let row = row.ok_or(TransitionError::WrongToken)?;
            let id = rows::job_id(&row, "id")?;
            let mut pending = Vec::new();
            self.job_change(c, id, p.now, &mut pending, |ctx| {
                machine::decide_wait_result(ctx, &p.token, p.outcome.clone(), p.now, &self.rules).map(Some)
            })
            .await??;
            self.append_events(c, pending).await?;
            self.job_row(c, id, false).await?.ok_or_else(|| StoreError::not_found("job", id))
        })
    }

    async fn leader_attempt_elect(&self, p: LeaderElectParams) -> Result<bool, StoreError> {
        let result = write_txn!(self, c, {
            let sql = format!("SELECT * FROM maas_leaders WHERE name = ?{}", self.lock());
            let current = match self.one(c, &sql, vec![s(&p.name)]).await? {
                Some(row) => Some(LeaderLease {
                    owner: col(&row, "owner")?,
                    expires_at: Timestamp::from_millis(col(&row, "expires_at")?),
                }),
                None => None,
            };
            // maas-core decides; the row is written as decided.
            let Some(lease) = leader::elect(current.as_ref(), &p.owner, p.now, p.ttl) else { return Ok(false) };
            let v = vec![s(&lease.owner), t(lease.expires_at), s(&p.name)];
            if current.is_some() {
                self.exec(c, "UPDATE maas_leaders SET owner = ?, expires_at = ? WHERE name = ?", v).await?;
            } else {
                self.exec(c, "INSERT INTO maas_leaders (owner, expires_at, name) VALUES (?, ?, ?)", v).await?;
            }
            Ok(true)
        });
        match result {
            // Another candidate inserted the row first: it leads.
            Err(e) if is_unique_violation(&e) => Ok(false),
            other => other,
        }
    }

    async fn leader_resign(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.exec(&self.db, "DELETE FROM maas_leaders WHERE name = ? AND owner = ?", vec![s(name), s(owner)])
            .await
            .map(|_| ())
    }

    async fn pool_kinds_get(&self, pool: &Pool) -> Result<Option<Vec<StepKind>>, StoreError> {
        let found =
            entity::pool_kinds::Entity::find_by_id(pool.to_string()).one(&self.db).await.map_err(backend_err)?;
        found.map(|m| rows::json_in("kinds", &m.kinds)).transpose()
    }

    async fn pool_kinds_set(&self, pool: &Pool, kinds: &[StepKind]) -> Result<(), StoreError> {
        self.upsert(
            &self.db,
            "maas_pool_kinds",
            "pool",
            &["pool", "kinds"],
            vec![s(pool), s(rows::to_json(&kinds))],
            &[("kinds", "NEW(kinds)".into())],
        )
        .await
    }

    async fn ticket_open(&self, ticket: Ticket) -> Result<(String, bool), StoreError> {
        let host = ticket.host.as_ref().map(|h| h.to_string()).unwrap_or_default();
        let kind = rows::enum_str(&ticket.kind);
        if let Some(id) = self.ticket_find(&kind, ticket.batch_id, &host).await? {
            return Ok((id, false));
        }
        let inserted = self
            .exec(
                &self.db,
                "INSERT INTO maas_tickets (kind, batch_id, host, step, summary, at) VALUES (?, ?, ?, ?, ?, ?)",
                vec![
                    s(&kind),
                    s(ticket.batch_id),
                    s(&host),
                    os(ticket.step.map(|k| k.as_str())),
                    s(&ticket.summary),
                    t(ticket.at),
                ],
            )
            .await;
        match inserted {
            Ok(_) => Ok((
                self.ticket_find(&kind, ticket.batch_id, &host)
                    .await?
                    .ok_or_else(|| StoreError::not_found("ticket", &kind))?,
                true,
            )),
            Err(e) if is_unique_violation(&e) => Ok((
                self.ticket_find(&kind, ticket.batch_id, &host)
                    .await?
                    .ok_or_else(|| StoreError::not_found("ticket", &kind))?,
                false,
            )),
            Err(e) => Err(e),
        }
    }

    async fn worker_heartbeat(&self, p: WorkerHeartbeatParams) -> Result<(), StoreError> {
        let g = self.greatest();
        self.upsert(
            &self.db,
            "maas_workers",
            "id",
            &["id", "site", "pool", "started_at", "last_heartbeat"],
            vec![s(&p.id), s(&p.site), s(&p.pool), t(p.now), t(p.now)],
            &[
                ("site", "NEW(site)".into()),
                ("pool", "NEW(pool)".into()),
                ("last_heartbeat", format!("{g}(maas_workers.last_heartbeat, NEW(last_heartbeat))")),
            ],
        )
        .await
    }
}

impl SqlStore {
    /// Folds finished batch `id` into the rollups, once: its samples are read (a finished
    /// batch's rows no longer change), then, under the batch row's lock, unless it is
    /// already `rolled_up`, each rollup row is merged and written and the batch marked, in
    /// one transaction. Only the retention leader purges, so no two folds race on a key.
    async fn fold_into_rollups(&self, id: &str) -> Result<(), StoreError> {
        let batch_id = BatchId(uuid::Uuid::parse_str(id).map_err(|e| rows::corrupt("id", e))?);
        let Some(batch) = self.batch_row(&self.db, batch_id, false).await? else { return Ok(()) };
        let only = StatsParams { batch_id: Some(batch_id), ..Default::default() };
        let (runs, steps) = (self.stats_host_runs(only.clone()).await?, self.stats_steps(only).await?);
        let image = maas_core::rollup::image_of(&batch.spec.action);
        let folded = maas_core::rollup::fold(&runs, &steps, |_| image.clone());
        write_txn!(self, c, {
            let sql = format!("SELECT rolled_up FROM maas_batches WHERE id = ?{}", self.lock());
            let Some(row) = self.one(c, &sql, vec![s(id)]).await? else { return Ok(()) };
            if col::<i64>(&row, "rolled_up")? != 0 {
                return Ok(());
            }
            let key = "day = ? AND action = ? AND site = ? AND sku = ? AND image = ? AND step = ?";
            for r in &folded {
                let mut merged = r.clone();
                let sql = format!("SELECT {} FROM maas_rollups WHERE {key}{}", rows::ROLLUP_COLUMNS, self.lock());
                if let Some(row) = self.one(c, &sql, rows::rollup_key_values(&r.key)).await? {
                    merged.merge(&rows::rollup(&row)?);
                    self.exec(c, &format!("DELETE FROM maas_rollups WHERE {key}"), rows::rollup_key_values(&r.key))
                        .await?;
                }
                self.insert_rows(c, "maas_rollups", rows::ROLLUP_COLUMNS, vec![rows::rollup_values(&merged)]).await?;
            }
            self.exec(c, "UPDATE maas_batches SET rolled_up = 1 WHERE id = ?", vec![s(id)]).await.map(|_| ())
        })
    }
}
