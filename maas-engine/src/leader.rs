//! Singleton periodic tasks, carried out. maas-core's [`LeaderSchedule`] says which task is
//! due, [`NotifierBackoff`] which notifier may be tried, [`ticket_for`] which events raise
//! tickets. Each task runs only on the instance holding its TTL'd leader row, so any number
//! of instances may run [`Singletons`]:
//!
//! - `rescuer`: expired leases become retries with backoff (or failures), expired waits
//!   fail.
//! - `stragglers`: a host slower at its current step than `factor` x the p95 of its batch
//!   peers' durations for that step is flagged (once per step) and, by policy, ticketed.
//! - `outbox`: events go to every notifier (at least once, in order, each notifier with its
//!   own cursor; a failing one is retried with doubling backoff, [`maas_core::policy::leader::notify_backoff`], without
//!   holding the others back), and failure-budget pauses, wedged hosts and stragglers raise
//!   tickets.
//! - `retention`: finished batches older than the retention are purged.
//! - `reclaim`: defunct, unallocated hosts are reimaged by `system:reclaim` and return to
//!   their pool when the reimage succeeds.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Engine, EngineError, Inner};
use maas_core::action::Action;
use maas_core::authz::Principal;
use maas_core::batch::BatchRequest;
use maas_core::host::HostState;
use maas_core::id::BatchId;
use maas_core::model::*;
use maas_core::names::Hostname;
use maas_core::policy::leader::{
    LeaderSchedule, LeaderTask, NotifierBackoff, TICKETS_CONSUMER, notifier_consumer, reclaim_plan, stragglers,
    ticket_for,
};
use maas_core::ports::inventory::HostFilter;
use maas_core::ports::services::{Ticket, TicketKind};
use maas_core::ports::store::*;
use maas_core::time::Timestamp;

const PAGE: usize = 500;

/// Every outbox consumer of this engine: its notifiers, then tickets.
pub(crate) fn outbox_consumers(inner: &Inner) -> Vec<String> {
    let mut all: Vec<String> = inner.notifiers.iter().map(|(name, _)| notifier_consumer(name)).collect();
    all.push(TICKETS_CONSUMER.to_string());
    all
}

/// What one [`Singletons::tick`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// The tasks this instance ran (it led them).
    pub ran: Vec<&'static str>,
    /// The rescuer's work.
    pub rescued: RescueReport,
    /// Host runs flagged as stragglers.
    pub stragglers: usize,
    /// Events delivered to notifiers (counted per notifier).
    pub delivered: usize,
    /// Tickets opened or found.
    pub tickets: usize,
    /// Retention's work.
    pub purged: PurgeReport,
    /// The reclaim batch submitted, if any.
    pub reclaimed: Option<BatchId>,
    /// Failures (the task is retried on its next period).
    pub errors: Vec<String>,
}

/// The singleton tasks of one instance: maas-core's [`LeaderSchedule`] says which are due,
/// the leader rows say which this instance leads, and this carries them out.
pub struct Singletons {
    engine: Engine,
    owner: String,
    schedule: LeaderSchedule,
    notify_backoff: std::sync::Mutex<NotifierBackoff>,
    on_error: Option<ErrorSink>,
}

/// Where a running loop reports its tasks' failures (maasd: the log).
pub type ErrorSink = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// How often an unchanged failure is reported again while it lasts.
const REPEAT_ERRORS_AFTER: Duration = Duration::from_secs(30);

/// A running singleton loop.
#[derive(Debug)]
pub struct SingletonsHandle {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SingletonsHandle {
    /// Stops the loop and gives up its leader rows.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

impl Singletons {
    /// The singletons of the instance `owner` (unique per instance).
    pub fn new(engine: Engine, owner: impl Into<String>) -> Self {
        let schedule = LeaderSchedule::new(engine.inner.config.intervals);
        Singletons { engine, owner: owner.into(), schedule, notify_backoff: Default::default(), on_error: None }
    }

    /// Reports each failure of the running loop's tasks (a webhook refusing, the database
    /// away) to `sink`: when it first happens or changes, and every 30 s while it lasts.
    pub fn on_error(mut self, sink: ErrorSink) -> Self {
        self.on_error = Some(sink);
        self
    }

    /// Runs every task that is due and led by this instance.
    pub async fn tick(&mut self, now: Timestamp) -> TickReport {
        let mut report = TickReport::default();
        for task in self.schedule.due(now) {
            match self.lead(task, now).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    report.errors.push(format!("{task}: leader election: {e}"));
                    continue;
                }
            }
            self.schedule.ran(task, now);
            report.ran.push(task.as_str());
            let result = match task {
                LeaderTask::Rescuer => self.rescue(now).await.map(|r| report.rescued = r),
                LeaderTask::Stragglers => self.scan_stragglers(now).await.map(|n| report.stragglers = n),
                LeaderTask::Outbox => self.deliver_outbox().await.map(|(d, t)| {
                    report.delivered = d;
                    report.tickets = t;
                }),
                LeaderTask::Retention => self.retain(now).await.map(|p| report.purged = p),
                LeaderTask::Reclaim => self.reclaim().await.map(|b| report.reclaimed = b),
            };
            if let Err(e) = result {
                report.errors.push(format!("{task}: {e}"));
            }
        }
        report
    }

    async fn lead(&self, task: LeaderTask, now: Timestamp) -> Result<bool, StoreError> {
        let ttl = self.engine.inner.config.leader_ttl;
        let p = LeaderElectParams { name: task.as_str().into(), owner: self.owner.clone(), now, ttl };
        self.engine.inner.store.leader_attempt_elect(p).await
    }

    /// Runs the loop on the current tokio runtime: ticks, then sleeps until the next task
    /// is due (at most `poll`, so leader rows freed by others are taken up).
    pub fn start(mut self, poll: Duration) -> SingletonsHandle {
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let clock = self.engine.inner.clock.clone();
            let mut reported: (Vec<String>, Option<Timestamp>) = (Vec::new(), None);
            while !*rx.borrow() {
                let report = self.tick(clock.now()).await;
                if let Some(sink) = &self.on_error {
                    let now = clock.now();
                    let stale = reported.1.is_none_or(|t| now.since(t) >= REPEAT_ERRORS_AFTER);
                    if !report.errors.is_empty() && (report.errors != reported.0 || stale) {
                        report.errors.iter().for_each(|e| sink(e));
                        reported = (report.errors.clone(), Some(now));
                    } else if report.errors.is_empty() {
                        reported = (Vec::new(), None);
                    }
                }
                // Until the next task of ours falls due; a task led elsewhere stays due, so
                // never wait longer than `poll` (nor spin on it).
                let now = clock.now();
                let next = self.schedule.next_due();
                let nap = if next > now { next.since(now).min(poll) } else { poll };
                tokio::select! {
                    _ = clock.sleep(nap) => {}
                    r = rx.changed() => if r.is_err() { break },
                }
            }
            for task in LeaderTask::ALL {
                let _ = self.engine.inner.store.leader_resign(task.as_str(), &self.owner).await;
            }
        });
        SingletonsHandle { shutdown: tx, task }
    }

    /// Rescues expired leases and waits.
    pub async fn rescue(&self, now: Timestamp) -> Result<RescueReport, EngineError> {
        let r = self.engine.inner.store.job_rescue_expired(JobRescueParams { now, limit: 10_000 }).await?;
        self.engine.inner.counters.rescued(r.retried.len(), r.failed.len(), r.wait_expired.len());
        if r != RescueReport::default() {
            self.engine.changed();
        }
        Ok(r)
    }

    /// Flags host runs slow against their batch peers; returns how many were flagged.
    pub async fn scan_stragglers(&self, now: Timestamp) -> Result<usize, EngineError> {
        let inner = &self.engine.inner;
        let policy = inner.config.stragglers;
        let mut flagged = 0;
        let mut before = None;
        loop {
            let states = vec![BatchState::Running, BatchState::Paused, BatchState::Cancelling];
            let page =
                inner.store.batch_list(BatchListParams { states, before, limit: PAGE, ..Default::default() }).await?;
            for batch in &page {
                let jobs =
                    inner.store.job_list(JobListParams { batch_id: Some(batch.id), ..Default::default() }).await?;
                for (host_run_id, position) in stragglers(&jobs, now, &policy) {
                    let p = StragglerFlagParams { host_run_id, position, now };
                    if inner.store.host_run_flag_straggler(p).await? {
                        flagged += 1;
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => before = Some(last.id),
                _ => break,
            }
        }
        if flagged > 0 {
            inner.counters.stragglers(flagged);
            self.engine.changed();
        }
        Ok(flagged)
    }

    /// Delivers new outbox events to each notifier and raises tickets; returns (events
    /// delivered, tickets raised). A notifier that fails is tried again after
    /// [`notify_backoff`] (doubling per failure), with the same events; the others go on.
    pub async fn deliver_outbox(&self) -> Result<(usize, usize), EngineError> {
        let inner = &self.engine.inner;
        let now = inner.clock.now();
        let mut delivered = 0;
        let mut failures = Vec::new();
        'notifiers: for (name, notifier) in &inner.notifiers {
            let waiting = !self.notify_backoff.lock().unwrap_or_else(|p| p.into_inner()).may_deliver(name, now);
            if waiting {
                continue;
            }
            let consumer = notifier_consumer(name);
            loop {
                let after = inner.store.event_cursor_get(&consumer).await?;
                let events = inner.store.event_list(EventListParams { after, batch_id: None, limit: PAGE }).await?;
                let Some(last) = events.last().map(|e| e.seq) else { break };
                if let Err(e) = notifier.deliver(&events).await {
                    // Not delivered: the same events go again after the backoff. Other
                    // notifiers are not held back by this one.
                    let (failures_in_row, wait) = self.notify_backoff.lock().unwrap_or_else(|p| p.into_inner()).failed(
                        name,
                        now,
                        inner.config.intervals.outbox,
                    );
                    failures.push(format!("{name}: {e} (failure {failures_in_row}, next try in {wait:?})"));
                    continue 'notifiers;
                }
                inner.store.event_cursor_set(&consumer, last).await?;
                delivered += events.len();
            }
            self.notify_backoff.lock().unwrap_or_else(|p| p.into_inner()).delivered(name);
        }
        let mut tickets = 0;
        loop {
            let after = inner.store.event_cursor_get(TICKETS_CONSUMER).await?;
            let events = inner.store.event_list(EventListParams { after, batch_id: None, limit: PAGE }).await?;
            let Some(last) = events.last().map(|e| e.seq) else { break };
            for e in &events {
                if let Some(t) = ticket_for(e, inner.config.stragglers.ticket) {
                    inner.ticketing.open(t).await?;
                    tickets += 1;
                }
            }
            inner.store.event_cursor_set(TICKETS_CONSUMER, last).await?;
        }
        if !failures.is_empty() {
            return Err(EngineError::Delivery { delivered, failures });
        }
        Ok((delivered, tickets))
    }

    /// Purges batches finished longer than the retention ago; keeps events not yet seen by
    /// every consumer.
    pub async fn retain(&self, now: Timestamp) -> Result<PurgeReport, EngineError> {
        let inner = &self.engine.inner;
        let mut through = u64::MAX;
        for consumer in outbox_consumers(inner) {
            through = through.min(inner.store.event_cursor_get(&consumer).await?);
        }
        let p =
            PurgeParams { finished_before: now.minus(inner.config.retention), events_through: through, limit: 1000 };
        Ok(inner.store.batch_purge_finished(p).await?)
    }

    /// Submits defunct, unclaimed hosts for reimage as `system:reclaim`.
    pub async fn reclaim(&self) -> Result<Option<BatchId>, EngineError> {
        let inner = &self.engine.inner;
        let Some(policy) = &inner.config.reclaim else { return Ok(None) };
        let filter = HostFilter { state: Some(HostState::Defunct), ..Default::default() };
        let defunct = inner.inventory.host_list(filter).await?;
        let names: Vec<_> = defunct.iter().map(|h| h.hostname.clone()).collect();
        let claimed: std::collections::HashSet<_> =
            inner.store.claim_get_many(&names).await?.into_iter().map(|c| c.hostname).collect();
        let history = self.reclaim_history().await?;
        let plan = reclaim_plan(&names, &claimed, &history, policy.give_up_after, policy.max_hosts_per_batch);
        for (host, batch) in plan.give_up {
            let summary = format!(
                "{host}: the last {} reclaims failed (the latest in batch {batch}); reclaim leaves it alone",
                policy.give_up_after
            );
            let at = inner.clock.now();
            let ticket =
                Ticket { kind: TicketKind::ReclaimGivenUp, batch_id: batch, host: Some(host), step: None, summary, at };
            inner.ticketing.open(ticket).await?;
        }
        let free: Vec<String> = plan.submit.iter().map(|h| h.to_string()).collect();
        if free.is_empty() {
            return Ok(None);
        }
        let mut req = BatchRequest::new(Action::Reimage { os: policy.os.clone(), install_timeout_secs: None }, free);
        req.priority = policy.priority;
        req.comment = Some("reclaim: defunct hosts are reimaged and returned to their pool".into());
        let submitted = self.engine.submit_as_system("reclaim", &req).await?;
        Ok(Some(submitted.batch.id))
    }

    /// Earlier reclaims' outcomes per host, newest first: (host, batch, succeeded) of the
    /// finished host runs of the latest `RECLAIM_HISTORY` reclaim batches still kept.
    async fn reclaim_history(&self) -> Result<Vec<(Hostname, BatchId, bool)>, EngineError> {
        const RECLAIM_HISTORY: usize = 50;
        let store = &self.engine.inner.store;
        let reclaims = store
            .batch_list(BatchListParams {
                submitter: Some(Principal::system("reclaim").name),
                limit: RECLAIM_HISTORY,
                ..Default::default()
            })
            .await?;
        let mut out = Vec::new();
        for b in reclaims {
            let runs = store.host_run_list(HostRunListParams { batch_id: Some(b.id), ..Default::default() }).await?;
            for r in runs {
                match r.state {
                    HostRunState::Succeeded => out.push((r.hostname, b.id, true)),
                    HostRunState::Failed => out.push((r.hostname, b.id, false)),
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}
