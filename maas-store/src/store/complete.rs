//! Set-based completion: one group of `job_complete_many` completions in one transaction,
//! in a fixed number of statements however many host runs end or start.
//!
//! 1. Lock the group's host runs and their chains (two statements, in id order).
//! 2. Decide every completion (maas-core) on an in-memory *overlay* of those rows, in
//!    order, each decision seeing the effects of the ones before it; batches are read
//!    without a lock.
//! 3. If a decision changes a batch (a host run ends, queued runs start, an event), lock
//!    those batches (one statement), re-read them and decide the whole group again. Queued
//!    host runs a decision starts are locked and loaded then (one statement per batch for
//!    the runs, one for their head jobs).
//! 4. Write every changed job and host run with one guarded statement per table (the
//!    guard: the state, and attempt or step, read under the lock), each changed batch,
//!    released claims in one statement, and the events last.
//!
//! Chain advances and retries never lock their batch, so completions of one batch from
//! many workers do not queue on its row unless they end host runs.

use std::collections::{BTreeMap, BTreeSet};

use maas_core::effects::{ApplyEffects, EffectWrite};
use maas_core::id::{BatchId, HostRunId, JobId};
use maas_core::machine::{self, JobContext, TransitionError};
use maas_core::model::*;
use maas_core::names::Hostname;
use maas_core::ports::store::{JobCompletion, StoreError};
use maas_core::time::Timestamp;
use sea_orm::ConnectionTrait;

use super::{CHUNK, SqlStore, in_list, placeholders};
use crate::errors::Raced;
use crate::rows::{self, n, s};

/// Rows read under lock (`was`) and as the decisions so far leave them (`now`).
#[derive(Default)]
struct Overlay {
    runs: BTreeMap<HostRunId, (HostRunRecord, HostRunRecord)>,
    jobs: BTreeMap<(HostRunId, u32), (JobRecord, JobRecord)>,
    position_of: BTreeMap<JobId, (HostRunId, u32)>,
    /// Batches: as read, as decided, and whether the read was under a lock.
    batches: BTreeMap<BatchId, (BatchRecord, BatchRecord, bool)>,
    released_claims: Vec<Hostname>,
    /// Host runs whose unfinished jobs are cancelled (those not loaded, in the database).
    cancelled_runs: Vec<HostRunId>,
    events: Vec<NewEvent>,
}

impl Overlay {
    fn add_run(&mut self, run: HostRunRecord) {
        self.runs.insert(run.id, (run.clone(), run));
    }

    fn add_job(&mut self, job: JobRecord) {
        self.position_of.insert(job.id, (job.host_run_id, job.position));
        self.jobs.insert((job.host_run_id, job.position), (job.clone(), job));
    }

    fn job(&self, run: HostRunId, position: u32) -> Option<&JobRecord> {
        self.jobs.get(&(run, position)).map(|(_, now)| now)
    }

    /// Folds one of maas-core's [`EffectWrite`]s in (every one but `LoadQueued`, which
    /// the caller answers from the database).
    fn write(&mut self, write: EffectWrite, now: Timestamp) -> Result<(), StoreError> {
        match write {
            EffectWrite::PutJobs(jobs) => {
                for j in jobs {
                    let slot = self
                        .jobs
                        .get_mut(&(j.host_run_id, j.position))
                        .ok_or_else(|| StoreError::not_found("job", j.id))?;
                    slot.1 = j;
                }
            }
            EffectWrite::PutHostRuns(runs) => {
                for r in runs {
                    let id = r.id;
                    self.runs.get_mut(&id).ok_or_else(|| StoreError::not_found("host run", id))?.1 = r;
                }
            }
            EffectWrite::CancelUnfinishedJobsOf(runs) => {
                for run in runs {
                    // Here for the loaded jobs, by one statement at flush for the rest.
                    self.cancelled_runs.push(run);
                    for (_, (_, job)) in self.jobs.range_mut((run, 0)..=(run, u32::MAX)) {
                        machine::cancel_unfinished(job, now);
                    }
                }
            }
            EffectWrite::ReleaseClaims(hosts) => self.released_claims.extend(hosts),
            EffectWrite::AppendEvents(events) => self.events.extend(events),
            EffectWrite::PutBatch(b) => {
                let id = b.id;
                self.batches.get_mut(&id).ok_or_else(|| StoreError::not_found("batch", id))?.1 = b;
            }
            EffectWrite::LoadQueued { batch, .. } => {
                return Err(StoreError::Backend {
                    message: format!("the overlay cannot load the queued runs of {batch} itself"),
                    source: None,
                });
            }
            EffectWrite::AppendAudit(_) => {
                return Err(StoreError::Backend {
                    message: "a job completion decided an audit entry; completions are not audited".into(),
                    source: None,
                });
            }
        }
        Ok(())
    }
}

impl SqlStore {
    /// Records one group of completions (see the module doc). `group` is (host run of the
    /// job, index in the caller's list, completion), sorted by host run.
    pub(super) async fn complete_group(
        &self,
        c: &impl ConnectionTrait,
        group: &[(usize, &JobCompletion)],
        now: Timestamp,
    ) -> Result<Vec<(usize, Result<(), TransitionError>)>, StoreError> {
        let lock = self.lock();
        let job_ids: Vec<JobId> = group.iter().map(|(_, d)| d.job_id).collect();
        // The host runs, locked in id order (a locking read does not lock the subquery's rows).
        let (done_ids, v) = self.one_of("id", &job_ids);
        let sql = format!(
            "SELECT * FROM maas_host_runs WHERE id IN (SELECT host_run_id FROM maas_jobs WHERE {done_ids}) \
             ORDER BY id{lock}"
        );
        let runs: Vec<HostRunRecord> =
            self.all(c, &sql, v.clone()).await?.iter().map(rows::run).collect::<Result<_, _>>()?;
        // Each completed job and the next of its chain. Not locked: every change to a chain
        // holds its host run's lock except claims and hand-backs, and the guarded writes
        // below catch those (the transaction then retries).
        let sql = format!(
            "SELECT j.* FROM maas_jobs j JOIN maas_jobs d ON j.host_run_id = d.host_run_id \
             AND (j.position = d.position OR j.position = d.position + 1) WHERE d.{done_ids}"
        );
        let chains: Vec<JobRecord> = self.all(c, &sql, v).await?.iter().map(rows::job).collect::<Result<_, _>>()?;
        // A completion that may end its host run (maas-core's `may_end_host_run`) will
        // change the batch: lock those batches now rather than deciding twice.
        let ends: BTreeSet<HostRunId> = {
            let at: BTreeSet<(HostRunId, u32)> = chains.iter().map(|j| (j.host_run_id, j.position)).collect();
            let done: BTreeMap<JobId, &JobCompletion> = group.iter().map(|(_, d)| (d.job_id, *d)).collect();
            let run_of: BTreeMap<HostRunId, &HostRunRecord> = runs.iter().map(|r| (r.id, r)).collect();
            chains
                .iter()
                .filter(|j| {
                    let has_next = at.contains(&(j.host_run_id, j.position + 1));
                    match (done.get(&j.id), run_of.get(&j.host_run_id)) {
                        (Some(d), Some(run)) => machine::may_end_host_run(run, &d.outcome, has_next),
                        _ => false,
                    }
                })
                .map(|j| j.host_run_id)
                .collect()
        };
        let mut ending_of: BTreeMap<BatchId, bool> = BTreeMap::new();
        for r in &runs {
            *ending_of.entry(r.batch_id).or_default() |= ends.contains(&r.id);
        }
        let mut batches: BTreeMap<BatchId, (BatchRecord, bool)> = BTreeMap::new();
        for locked in [true, false] {
            let ids: Vec<BatchId> = ending_of.iter().filter(|(_, e)| **e == locked).map(|(b, _)| *b).collect();
            for b in self.batch_heads(c, &ids, locked).await? {
                batches.insert(b.id, (b, locked));
            }
        }
        // Queued host runs started by a pass, with their head jobs (locked when loaded).
        let mut started: BTreeMap<BatchId, Vec<(HostRunRecord, JobRecord)>> = BTreeMap::new();
        for _pass in 0..4 {
            let mut ov = Overlay::default();
            runs.iter().cloned().for_each(|r| ov.add_run(r));
            chains.iter().cloned().for_each(|j| ov.add_job(j));
            for (id, (b, locked)) in &batches {
                ov.batches.insert(*id, (b.clone(), b.clone(), *locked));
            }
            let mut to_lock = BTreeSet::new();
            let mut decided = Vec::with_capacity(group.len());
            for &(i, done) in group {
                let &(run_id, position) =
                    ov.position_of.get(&done.job_id).ok_or_else(|| StoreError::not_found("job", done.job_id))?;
                let run = ov.runs.get(&run_id).ok_or_else(|| StoreError::not_found("host run", run_id))?.1.clone();
                let (_, batch, locked) =
                    ov.batches.get(&run.batch_id).ok_or_else(|| StoreError::not_found("batch", run.batch_id))?;
                let (batch, locked) = (batch.clone(), *locked);
                let job = ov.job(run_id, position).ok_or_else(|| StoreError::not_found("job", done.job_id))?.clone();
                let next = ov.job(run_id, position + 1).cloned();
                let ctx = JobContext { batch: batch.clone(), host_run: run, job, next };
                let fx = match machine::check_fence(&ctx.job, done.attempt)
                    .and_then(|()| machine::decide_job_outcome(ctx, done.outcome.clone(), now, &self.rules))
                {
                    Ok(fx) => fx,
                    Err(e) => {
                        decided.push((i, Err(e)));
                        continue;
                    }
                };
                decided.push((i, Ok(())));
                if !locked && fx.changes_batch(&batch) {
                    to_lock.insert(batch.id);
                }
                let mut apply = ApplyEffects::new(fx, now, &self.rules);
                while let Some(write) = apply.next_write() {
                    match write {
                        // Queued runs start only under the batch's lock; unlocked, this
                        // pass is decided again once the batch is locked.
                        EffectWrite::LoadQueued { .. } if !locked => break,
                        EffectWrite::LoadQueued { batch, count } => {
                            let pairs = self.queued_runs(c, &mut ov, &mut started, batch, count).await?;
                            apply.queued_loaded(pairs)?;
                        }
                        write => ov.write(write, now)?,
                    }
                }
            }
            if to_lock.is_empty() {
                self.flush(c, ov, now).await?;
                return Ok(decided);
            }
            let ids: Vec<BatchId> = to_lock.into_iter().collect();
            for b in self.batch_heads(c, &ids, true).await? {
                batches.insert(b.id, (b, true));
            }
        }
        Err(StoreError::Backend { message: "completion group kept finding batches to lock".into(), source: None })
    }

    /// Batch rows by id (heads, specs from the cache), locked in id order if `lock`.
    async fn batch_heads(
        &self,
        c: &impl ConnectionTrait,
        ids: &[BatchId],
        lock: bool,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let (list, v) = in_list(chunk);
            let sql = format!(
                "SELECT {} FROM maas_batches WHERE id IN ({list}) ORDER BY id{}",
                rows::BATCH_HEAD_COLUMNS,
                if lock { self.lock() } else { "" }
            );
            out.extend(self.batches_of(c, self.all(c, &sql, v).await?).await?);
        }
        Ok(out)
    }

    /// The next `count` queued host runs of `batch` the overlay has not started yet, with
    /// their head jobs, locked; loaded into the overlay (and remembered across passes).
    async fn queued_runs(
        &self,
        c: &impl ConnectionTrait,
        ov: &mut Overlay,
        started: &mut BTreeMap<BatchId, Vec<(HostRunRecord, JobRecord)>>,
        batch: BatchId,
        count: u32,
    ) -> Result<Vec<(HostRunRecord, JobRecord)>, StoreError> {
        let known = started.entry(batch).or_default();
        let fresh = |ov: &Overlay, run: &HostRunRecord| {
            ov.runs.get(&run.id).is_none_or(|(_, now)| now.state == HostRunState::Queued)
        };
        let mut pairs: Vec<(HostRunRecord, JobRecord)> =
            known.iter().filter(|(r, _)| fresh(ov, r)).take(count as usize).cloned().collect();
        if pairs.len() < count as usize {
            // Runs this or an earlier pass loaded are still queued in the database: skip them.
            let skip = known.len();
            let sql = format!(
                "SELECT * FROM maas_host_runs WHERE batch_id = ? AND state = ? ORDER BY ordinal LIMIT ?{}",
                self.lock()
            );
            let want = count as usize - pairs.len();
            let v = vec![s(batch), s(HostRunState::Queued.as_str()), n((skip + want) as i64)];
            let rows = self.all(c, &sql, v).await?;
            let mut more = Vec::new();
            for row in &rows {
                let run = rows::run(row)?;
                if !known.iter().any(|(k, _)| k.id == run.id) {
                    more.push(run);
                }
            }
            if !more.is_empty() {
                let (list, v) = in_list(&more.iter().map(|r| r.id).collect::<Vec<_>>());
                let sql = format!(
                    "SELECT * FROM maas_jobs WHERE host_run_id IN ({list}) AND position = 0 ORDER BY host_run_id{}",
                    self.lock()
                );
                let mut heads: BTreeMap<HostRunId, JobRecord> = BTreeMap::new();
                for row in self.all(c, &sql, v).await? {
                    let head = rows::job(&row)?;
                    heads.insert(head.host_run_id, head);
                }
                for run in more {
                    let head = heads.remove(&run.id).ok_or_else(|| StoreError::not_found("head job of", run.id))?;
                    known.push((run, head));
                }
                known.sort_by_key(|(r, _)| r.ordinal);
            }
            pairs = known.iter().filter(|(r, _)| fresh(ov, r)).take(count as usize).cloned().collect();
        }
        for (run, head) in &pairs {
            if !ov.runs.contains_key(&run.id) {
                ov.add_run(run.clone());
                ov.add_job(head.clone());
            }
        }
        Ok(pairs)
    }

    /// Writes what the overlay changed: jobs and host runs in one guarded statement each,
    /// changed batches, released claims, then the events.
    async fn flush(&self, c: &impl ConnectionTrait, ov: Overlay, now: Timestamp) -> Result<(), StoreError> {
        let mut job_writes = Vec::new();
        let rewritten =
            |what: &str, id: String| rows::corrupt(what, format!("{id}: a decision rewrote a fixed column"));
        for (was, job) in ov.jobs.values() {
            if was != job {
                let values = rows::job_mutable_values(was, job).ok_or_else(|| rewritten("job", job.id.to_string()))?;
                job_writes.push((values, vec![s(was.state.as_str()), n(was.attempt)]));
            }
        }
        let mut run_writes = Vec::new();
        for (was, run) in ov.runs.values() {
            if was != run {
                let values =
                    rows::run_mutable_values(was, run).ok_or_else(|| rewritten("host run", run.id.to_string()))?;
                run_writes.push((values, vec![s(was.state.as_str()), n(was.step)]));
            }
        }
        let expected = (job_writes.len() + run_writes.len()) as u64;
        let written =
            self.set_rows(c, "maas_jobs", rows::JOB_MUTABLE_COLUMNS, &["state", "attempt"], job_writes).await?
                + self.set_rows(c, "maas_host_runs", rows::RUN_MUTABLE_COLUMNS, &["state", "step"], run_writes).await?;
        if written != expected {
            // A hand-back or a claim changed a job after it was read: decide again.
            return Err(Raced { what: "completion", wrote: written, expected }.into());
        }
        self.cancel_jobs_of(c, &ov.cancelled_runs, now).await?;
        for (was, batch, locked) in ov.batches.values() {
            let mut same_time = batch.clone();
            same_time.updated_at = was.updated_at;
            if same_time == *was {
                continue; // at most `updated_at` moved: leave the row alone
            }
            if !locked {
                return Err(rows::corrupt("completion", format!("batch {} changed without its lock", batch.id)));
            }
            self.put_batch(c, batch).await?;
        }
        for hosts in ov.released_claims.chunks(CHUNK) {
            let sql = format!("DELETE FROM maas_claims WHERE hostname IN ({})", placeholders(hosts.len()));
            self.exec(c, &sql, hosts.iter().map(s).collect()).await?;
        }
        self.append_events(c, ov.events).await
    }
}
