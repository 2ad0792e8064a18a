//! Applying a decision's [`Effects`]: the one owner of what gets written, in which order, and
//! of starting the queued host runs a decision frees room for. Every store — the in-memory
//! reference, the SQL stores' single-change path and their set-based completion overlay —
//! drives an [`ApplyEffects`] and carries out its [`EffectWrite`]s; none re-implements the
//! sequence.
//!
//! Sans-IO: [`ApplyEffects::next_write`] hands out one write at a time;
//! [`EffectWrite::LoadQueued`] asks the store for the next queued host runs of a batch
//! (with their head jobs), answered by [`ApplyEffects::queued_loaded`], which decides their
//! start ([`machine::start_queued_runs`]) and queues that decision's writes.

use std::collections::VecDeque;

use crate::id::{BatchId, HostRunId};
use crate::machine::{self, Effects, Rules, TransitionError};
use crate::model::{AuditRecord, BatchRecord, HostRunRecord, JobRecord, NewEvent};
use crate::names::Hostname;
use crate::time::Timestamp;

/// One write a store carries out, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffectWrite {
    /// Overwrite these jobs (by id).
    PutJobs(Vec<JobRecord>),
    /// Overwrite these host runs (by id).
    PutHostRuns(Vec<HostRunRecord>),
    /// The unfinished jobs of these host runs become cancelled at `now`: apply
    /// [`machine::cancel_unfinished`] to each (or its set-based equivalent on the
    /// [`machine::CANCELLABLE`] states).
    CancelUnfinishedJobsOf(Vec<HostRunId>),
    /// Delete these claims.
    ReleaseClaims(Vec<Hostname>),
    /// Append these events to the outbox (a store may defer them to just before commit).
    AppendEvents(Vec<NewEvent>),
    /// Append these entries to the audit trail.
    AppendAudit(Vec<AuditRecord>),
    /// Overwrite the batch.
    PutBatch(BatchRecord),
    /// Load up to `count` queued host runs of `batch`, lowest ordinal first, each with its
    /// chain's head job, and answer with [`ApplyEffects::queued_loaded`] (a store that may
    /// not start runs now stops here instead).
    LoadQueued {
        /// The batch.
        batch: BatchId,
        /// At most this many.
        count: u32,
    },
}

/// A decision's effects being applied (see the module doc).
#[derive(Debug)]
pub struct ApplyEffects<'r> {
    writes: VecDeque<EffectWrite>,
    /// The batch whose queued runs are being loaded.
    starting: Option<BatchRecord>,
    now: Timestamp,
    rules: &'r Rules,
}

impl<'r> ApplyEffects<'r> {
    /// Starts applying `fx`, decided at `now` under `rules`.
    pub fn new(fx: Effects, now: Timestamp, rules: &'r Rules) -> Self {
        let mut a = ApplyEffects { writes: VecDeque::new(), starting: None, now, rules };
        a.queue(fx);
        a
    }

    fn queue(&mut self, fx: Effects) {
        let Effects { jobs, host_runs, batch, cancel_jobs_of, released_claims, events, start_queued, audit } = fx;
        let w = &mut self.writes;
        if !jobs.is_empty() {
            w.push_back(EffectWrite::PutJobs(jobs));
        }
        if !host_runs.is_empty() {
            w.push_back(EffectWrite::PutHostRuns(host_runs));
        }
        if !cancel_jobs_of.is_empty() {
            w.push_back(EffectWrite::CancelUnfinishedJobsOf(cancel_jobs_of));
        }
        if !released_claims.is_empty() {
            w.push_back(EffectWrite::ReleaseClaims(released_claims));
        }
        if !events.is_empty() {
            w.push_back(EffectWrite::AppendEvents(events));
        }
        if !audit.is_empty() {
            w.push_back(EffectWrite::AppendAudit(audit));
        }
        if let Some(batch) = batch {
            if start_queued > 0 {
                w.push_back(EffectWrite::PutBatch(batch.clone()));
                w.push_back(EffectWrite::LoadQueued { batch: batch.id, count: start_queued });
                self.starting = Some(batch);
            } else {
                w.push_back(EffectWrite::PutBatch(batch));
            }
        }
    }

    /// The next write, or `None` when every effect is applied.
    pub fn next_write(&mut self) -> Option<EffectWrite> {
        self.writes.pop_front()
    }

    /// The queued host runs asked for by [`EffectWrite::LoadQueued`] (fewer than asked when
    /// the batch has fewer): decides their start and queues that decision's writes.
    pub fn queued_loaded(&mut self, runs: Vec<(HostRunRecord, JobRecord)>) -> Result<(), TransitionError> {
        let Some(batch) = self.starting.take() else { return Ok(()) };
        let fx = machine::start_queued_runs(batch, runs, self.now, self.rules)?;
        self.queue(fx);
        Ok(())
    }
}
