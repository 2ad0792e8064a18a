//! The invariant checker: after every step it reads the store and judges what changed —
//! legal transitions, one active batch per host, counts, max-in-flight, failure budgets,
//! claim order and exclusivity, graceful stops, and the outbox.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use maas_core::id::{BatchId, JobId};
use maas_core::machine::TransitionError;
use maas_core::model::*;
use maas_core::names::{Hostname, Site};
use maas_core::plan::StepKind;
use maas_core::ports::store::*;
use maas_core::time::Timestamp;
use maas_engine::Engine;

use crate::memstore::{MemStore, Transition};

/// The invariant checker. It reads the store after every step and keeps what it needs to
/// judge the next one.
#[derive(Debug, Default)]
pub(super) struct Checker {
    /// Per job: the worker holding it, its attempt and when its lease ends.
    holders: HashMap<JobId, (String, u32, Timestamp)>,
    /// Jobs each worker handed back on shutdown.
    handed_back: BTreeSet<(String, JobId)>,
    /// Events checked so far.
    events_after: u64,
    pub(super) all_events: Vec<u64>,
    /// Per batch, what its events said so far.
    batch_events: HashMap<BatchId, BatchEventState>,
    /// Batches seen terminal.
    pub(super) terminal_seen: BTreeSet<BatchId>,
    /// Failed counts at the last check, and batches resumed since.
    failed_seen: HashMap<BatchId, u32>,
    resumed: BTreeSet<BatchId>,
    pub(super) notes: Vec<String>,
}

#[derive(Debug, Default)]
pub(super) struct BatchEventState {
    paused: bool,
    cancelling: bool,
    finished: bool,
    started: BTreeSet<Hostname>,
    ended: BTreeSet<Hostname>,
}

impl Checker {
    pub(super) fn note(&mut self, s: String) {
        self.notes.push(s);
    }

    pub(super) fn resumed(&mut self, id: BatchId) {
        self.resumed.insert(id);
    }

    pub(super) fn extended(&mut self, owner: &str, held: &[JobId], until: Timestamp) {
        for id in held {
            if let Some(h) = self.holders.get_mut(id).filter(|h| h.0 == owner) {
                h.2 = until;
            }
        }
    }

    /// The worker's completions of `jobs` are in the store (applied, or refused as stale):
    /// it no longer runs them. None of them may be a job it handed back: a step whose
    /// outcome was buffered must be flushed, never released to run again.
    pub(super) fn flushed(
        &mut self,
        owner: &str,
        jobs: &[JobId],
        stale: &[(JobId, TransitionError)],
    ) -> Result<(), String> {
        for id in jobs {
            if self.holders.get(id).is_some_and(|h| h.0 == owner) {
                self.holders.remove(id);
            }
        }
        for (id, why) in stale {
            if self.handed_back.contains(&(owner.to_string(), *id)) {
                return Err(format!(
                    "worker {owner} handed back job {id} although its step had finished (outcome refused: {why}): \
                     the step runs twice"
                ));
            }
        }
        Ok(())
    }

    /// The worker released `jobs` on shutdown.
    pub(super) fn handed_back(&mut self, owner: &str, jobs: &[JobId]) {
        for id in jobs {
            self.handed_back.insert((owner.to_string(), *id));
            if self.holders.get(id).is_some_and(|h| h.0 == owner) {
                self.holders.remove(id);
            }
        }
    }

    /// A worker that stopped gracefully holds no lease any more: every job it ran was
    /// flushed or handed back, none is left for the rescuer.
    pub(super) fn stopped_gracefully(store: &MemStore, owner: &str) -> Result<(), String> {
        let left: Vec<JobId> = store
            .jobs_snapshot()
            .into_iter()
            .filter(|j| j.state == JobState::Running && j.lease_owner.as_deref() == Some(owner))
            .map(|j| j.id)
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("worker {owner} stopped gracefully but still holds the leases of {left:?}"))
        }
    }

    /// Available jobs of `site` and `kinds` a worker could take now, in claim order.
    pub(super) fn claim_candidates(
        &self,
        store: &MemStore,
        site: &Site,
        kinds: &[StepKind],
        now: Timestamp,
    ) -> Vec<(i64, JobId)> {
        let mut c: Vec<(i64, JobId)> = store
            .jobs_snapshot()
            .into_iter()
            .filter(|j| j.state == JobState::Available && &j.site == site && kinds.contains(&j.kind) && j.run_at <= now)
            .map(|j| (j.key, j.id))
            .collect();
        c.sort_unstable();
        c
    }

    /// Claim order (the priority-aging rule) and exclusivity.
    pub(super) fn claimed(
        &mut self,
        owner: &str,
        jobs: &[JobRecord],
        candidates: Vec<(i64, JobId)>,
        limit: usize,
        now: Timestamp,
        lease: Duration,
    ) -> Result<(), String> {
        let expected: Vec<JobId> = candidates.iter().take(limit).map(|(_, id)| *id).collect();
        let got: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut expected_sorted = expected.clone();
        expected_sorted.sort();
        if got_sorted != expected_sorted {
            return Err(format!(
                "worker {owner} claimed {got:?}, but queue-key order says {expected:?}: the priority-aging bound needs smallest keys first"
            ));
        }
        for j in jobs {
            if let Some((holder, attempt, until)) = self.holders.get(&j.id)
                && holder != owner
                && now < *until
            {
                return Err(format!(
                    "job {} claimed by {owner} while {holder} (attempt {attempt}) held a lease until {until}",
                    j.id
                ));
            }
            if let Some((_, attempt, _)) = self.holders.get(&j.id)
                && j.attempt <= *attempt
            {
                return Err(format!("job {} re-claimed without a new attempt ({} after {attempt})", j.id, j.attempt));
            }
            self.holders.insert(j.id, (owner.to_string(), j.attempt, now.plus(lease)));
        }
        Ok(())
    }

    pub(super) async fn after_step(&mut self, store: &MemStore, engine: &Engine, now: Timestamp) -> Result<(), String> {
        // 1. Every transition legal.
        for t in store.take_transitions() {
            let ok = match t {
                Transition::Job { from: Some(f), to, .. } => f.can_become(to),
                Transition::Job { from: None, to, .. } => {
                    matches!(to, JobState::Blocked | JobState::Available | JobState::Waiting)
                }
                Transition::HostRun { from: Some(f), to, .. } => f.can_become(to),
                Transition::HostRun { from: None, to, .. } => {
                    matches!(to, HostRunState::Queued | HostRunState::Running)
                }
                Transition::Batch { from: Some(f), to, .. } => f.can_become(to),
                Transition::Batch { from: None, to, .. } => to == BatchState::Running,
            };
            if !ok {
                return Err(format!("illegal transition written: {t:?}"));
            }
        }
        // 2. No host in two active batches; claims match unfinished host runs.
        let runs = store.host_runs_snapshot();
        let mut active: HashMap<&Hostname, BatchId> = HashMap::new();
        for r in runs.iter().filter(|r| !r.state.is_terminal()) {
            if let Some(other) = active.insert(&r.hostname, r.batch_id) {
                return Err(format!("{} is in two active batches: {other} and {}", r.hostname, r.batch_id));
            }
        }
        let claims = store.claims_snapshot();
        if claims.len() != active.len() {
            return Err(format!("{} claims for {} unfinished host runs", claims.len(), active.len()));
        }
        for c in &claims {
            if active.get(&c.hostname) != Some(&c.batch_id) {
                return Err(format!("claim on {} by {} has no unfinished host run", c.hostname, c.batch_id));
            }
        }
        // 3. Counts, max-in-flight and failure budgets.
        let mut tally: HashMap<BatchId, HostRunCounts> = HashMap::new();
        for r in &runs {
            let c = tally.entry(r.batch_id).or_default();
            match r.state {
                HostRunState::Queued => c.queued += 1,
                HostRunState::Running => c.running += 1,
                HostRunState::Succeeded => c.succeeded += 1,
                HostRunState::Failed => c.failed += 1,
                HostRunState::Cancelled => c.cancelled += 1,
            }
        }
        for b in store.batches_snapshot() {
            let counted = tally.get(&b.id).copied().unwrap_or_default();
            if counted != b.counts {
                return Err(format!("batch {} counts {:?} but its host runs say {counted:?}", b.id, b.counts));
            }
            if b.counts.running > b.spec.rollout.max_in_flight {
                return Err(format!(
                    "batch {} runs {} hosts, over max_in_flight {}",
                    b.id, b.counts.running, b.spec.rollout.max_in_flight
                ));
            }
            let before = self.failed_seen.insert(b.id, b.counts.failed).unwrap_or(0);
            if b.counts.failed > before {
                self.resumed.remove(&b.id);
            }
            if b.state == BatchState::Running
                && b.counts.failed > b.spec.rollout.failure_budget
                && !self.resumed.contains(&b.id)
            {
                return Err(format!(
                    "batch {} is running with {} failures, over its budget of {}",
                    b.id, b.counts.failed, b.spec.rollout.failure_budget
                ));
            }
            if b.state.is_terminal() {
                self.terminal_seen.insert(b.id);
            }
        }
        // 4. Outbox: ordered, complete per batch, nothing after the end, no start while paused.
        loop {
            let events = engine
                .store()
                .event_list(EventListParams { after: self.events_after, batch_id: None, limit: 1000 })
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = events.last().map(|e| e.seq) else { break };
            for e in events {
                if e.seq <= self.events_after {
                    return Err(format!("event seq {} not above {}", e.seq, self.events_after));
                }
                self.events_after = e.seq;
                self.all_events.push(e.seq);
                self.check_event(&e)?;
            }
            self.events_after = last;
        }
        let _ = now;
        Ok(())
    }

    pub(super) fn check_event(&mut self, e: &Event) -> Result<(), String> {
        let first = !self.batch_events.contains_key(&e.batch_id);
        let st = self.batch_events.entry(e.batch_id).or_default();
        if first && !matches!(e.kind, EventKind::BatchAccepted { .. }) {
            return Err(format!("batch {}'s first event is {:?}, not batch_accepted", e.batch_id, e.kind));
        }
        if st.finished {
            return Err(format!("event {:?} after batch {} finished", e.kind, e.batch_id));
        }
        match &e.kind {
            EventKind::HostStarted { host } => {
                if st.paused || st.cancelling {
                    return Err(format!("{host} started while batch {} was paused or cancelling", e.batch_id));
                }
                if !st.started.insert(host.clone()) {
                    return Err(format!("{host} started twice in batch {}", e.batch_id));
                }
            }
            EventKind::HostSucceeded { host } | EventKind::HostFailed { host, .. } => {
                if !st.started.contains(host) {
                    return Err(format!("{host} ended in batch {} without starting", e.batch_id));
                }
                if !st.ended.insert(host.clone()) {
                    return Err(format!("{host} ended twice in batch {}", e.batch_id));
                }
            }
            EventKind::HostCancelled { host } => {
                if !st.ended.insert(host.clone()) {
                    return Err(format!("{host} ended twice in batch {}", e.batch_id));
                }
            }
            EventKind::BatchPaused { .. } => st.paused = true,
            EventKind::BatchResumed { .. } => st.paused = false,
            EventKind::CancelRequested { .. } => st.cancelling = true,
            EventKind::BatchCompleted { summary } | EventKind::BatchCancelled { summary } => {
                st.finished = true;
                if summary.total as usize != st.ended.len() {
                    return Err(format!(
                        "batch {} finished with {} hosts but {} host end events",
                        e.batch_id,
                        summary.total,
                        st.ended.len()
                    ));
                }
            }
            EventKind::BatchAccepted { .. } | EventKind::StragglerFlagged { .. } => {}
            other => return Err(format!("the checker does not know event {other:?}: teach it")),
        }
        Ok(())
    }
}
