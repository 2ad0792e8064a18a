//! The simulator's moves, one per seeded step: submissions (with duplicates and
//! idempotency keys), cancels, pauses and resumes, worker turns (driving maas-core's
//! `WorkerMachine` through maas-engine's `Worker::perform`), crashes, restarts, stalls and
//! graceful stops, pool remaps, installer callbacks and leader ticks.

use std::time::Duration;

use maas_core::action::{Action, WipeMethod};
use maas_core::authz::Principal;
use maas_core::batch::{BatchRequest, RolloutPolicy};
use maas_core::id::{BatchId, JobId};
use maas_core::machine::JobOutcome;
use maas_core::model::*;
use maas_core::names::{OsRelease, Pool};
use maas_core::plan::StepKind;
use maas_core::policy::WorkerAction;
use maas_core::priority::PriorityClass;
use maas_core::time::{Clock, Timestamp};
use maas_engine::worker::Performed;

use super::*;

impl Simulation {
    pub(super) async fn step(&mut self, faults: bool) -> Result<(), String> {
        let roll = self.rng.below(1000);
        match roll {
            0..=119 => self.submit_random().await,
            120..=149 => self.resubmit().await,
            150..=159 => self.submit_at_once().await,
            160..=184 => self.cancel_random().await,
            185..=209 => self.pause_random().await,
            210..=249 => self.resume_random().await,
            250..=599 => {
                let w = self.rng.below(self.workers.len() as u64) as usize;
                self.worker_tick(w).await?;
            }
            600..=679 => self.callbacks().await,
            680..=759 => {
                let i = self.rng.below(2) as usize;
                self.leader_tick(i).await;
            }
            760..=771 if faults => self.crash_or_restart().await,
            772..=779 if faults => self.stop_gracefully(),
            780..=789 if faults => self.stall().await,
            790..=799 => self.remap_pool().await,
            800..=809 if faults => {
                let failing = self.rng.chance(self.cfg.notify_failure);
                self.notifier.set_failing(failing);
                self.trace(format!("notifier failing={failing}"));
            }
            _ => {
                let d = Duration::from_millis(500 + self.rng.below(9_500));
                self.clock.advance(d);
                self.trace(format!("advance {} ms", d.as_millis()));
            }
        }
        Ok(())
    }

    pub(super) fn random_request(&mut self) -> (Principal, BatchRequest) {
        let s = 1 + self.rng.below(self.cfg.sites as u64) as usize;
        let n = self.cfg.hosts_per_site as u64;
        let first = 1 + self.rng.below(n);
        let last = (first + self.rng.below(8)).min(n);
        let expr = format!("sim[{first:06}-{last:06}].dc{s}");
        let action = match self.rng.below(7) {
            0 => Action::Reboot { soft: false },
            1 => Action::Reboot { soft: true },
            2 => Action::PowerCycle,
            3 => Action::PowerOn,
            4 => Action::PowerOff { soft: self.rng.chance(0.5) },
            5 => Action::WipeDisks { method: WipeMethod::Quick },
            _ => Action::Reimage {
                os: OsRelease::new("ubuntu-24.04").unwrap_or_else(|_| unreachable!()),
                install_timeout_secs: Some(900),
            },
        };
        let mut req = BatchRequest::new(action, [expr]);
        req.priority = [PriorityClass::Low, PriorityClass::Normal, PriorityClass::High, PriorityClass::Urgent]
            [self.rng.below(4) as usize];
        req.rollout =
            RolloutPolicy { max_in_flight: 1 + self.rng.below(4) as u32, failure_budget: self.rng.below(3) as u32 };
        if self.rng.chance(0.3) {
            req.force = Some(maas_core::batch::ForceInUse { reason: "simulated maintenance".into() });
        }
        if self.rng.chance(0.5) {
            req.idempotency_key = Some(format!("key-{}", self.rng.below(1_000_000)));
        }
        let who = Principal::new(["alice", "bob", "carol"][self.rng.below(3) as usize], []);
        (who, req)
    }

    pub(super) async fn submit(&mut self, who: Principal, req: BatchRequest, label: &str) -> Option<BatchId> {
        let r = self.engine.submit(&who, &req).await;
        let line = match &r {
            Ok(s) => {
                if s.created {
                    self.report.accepted += 1;
                }
                if let Some(key) = &req.idempotency_key {
                    self.keys.insert((who.name.clone(), key.clone()), s.batch.id);
                }
                self.accepted.insert(s.batch.id);
                format!("{label} {} by {}: accepted {} created={}", req.hosts[0], who.name, s.batch.id, s.created)
            }
            Err(e) => {
                self.report.rejected += 1;
                format!("{label} {} by {}: rejected: {}", req.hosts[0], who.name, first_line(&e.to_string()))
            }
        };
        self.requests.push((who, req));
        self.trace(line);
        r.ok().map(|s| s.batch.id)
    }

    pub(super) async fn submit_random(&mut self) {
        let (who, req) = self.random_request();
        self.submit(who, req, "submit").await;
    }

    /// One keyed request sent four times at once, as a client retrying after a timeout while
    /// its first call is still in flight: every call that is answered gets the one batch,
    /// and only one of them created it. A refusal is allowed only if every call is refused.
    pub(super) async fn submit_at_once(&mut self) {
        let (who, mut req) = self.random_request();
        req.idempotency_key = Some(format!("burst-{}", self.rng.below(1_000_000)));
        let answers = futures::future::join_all((0..4).map(|_| self.engine.submit(&who, &req))).await;
        let ids: BTreeSet<BatchId> = answers.iter().filter_map(|r| r.as_ref().ok()).map(|s| s.batch.id).collect();
        let created = answers.iter().filter(|r| r.as_ref().is_ok_and(|s| s.created)).count();
        let refused = answers.iter().filter(|r| r.is_err()).count();
        if ids.len() > 1 || created > 1 || (!ids.is_empty() && refused > 0) {
            self.checker.note(format!(
                "key {:?} sent 4 times at once: batches {ids:?}, {created} created, {refused} refused",
                req.idempotency_key
            ));
        }
        let line = match ids.iter().next() {
            Some(id) => {
                self.report.accepted += usize::from(created > 0);
                self.keys.insert((who.name.clone(), req.idempotency_key.clone().unwrap_or_default()), *id);
                self.accepted.insert(*id);
                format!("submit-at-once {} by {}: accepted {id} x{}", req.hosts[0], who.name, 4 - refused)
            }
            None => {
                self.report.rejected += 1;
                format!("submit-at-once {} by {}: rejected x4", req.hosts[0], who.name)
            }
        };
        self.requests.push((who, req));
        self.trace(line);
    }

    /// The live batch an idempotency key names, if any.
    pub(super) async fn key_holder(&self, who: &Principal, req: &BatchRequest) -> Option<BatchId> {
        let key = req.idempotency_key.clone()?;
        let id = *self.keys.get(&(who.name.clone(), key))?;
        self.store.batch_get(id).await.ok().flatten().map(|b| b.id)
    }

    pub(super) async fn resubmit(&mut self) {
        let keyed: Vec<usize> =
            (0..self.requests.len()).filter(|i| self.requests[*i].1.idempotency_key.is_some()).collect();
        if keyed.is_empty() {
            return self.submit_random().await;
        }
        let (who, mut req) = self.requests[keyed[self.rng.below(keyed.len() as u64) as usize]].clone();
        let label = if self.rng.chance(0.3) {
            // Same key, another spec: must be refused, never merged.
            req.rollout.max_in_flight += 1;
            "resubmit-changed"
        } else {
            "resubmit"
        };
        // The key's live batch, and whether this request describes the same batch.
        let holder = self.key_holder(&who, &req).await;
        let same = match holder {
            Some(id) => self.store.batch_get(id).await.ok().flatten().is_some_and(|b| same_spec(&req, &b.spec)),
            None => false,
        };
        let got = self.submit(who, req.clone(), label).await;
        match (holder, got) {
            (Some(held), Some(got)) if !same => self
                .checker
                .note(format!("key {:?} of batch {held} accepted a changed spec as {got}", req.idempotency_key)),
            (Some(held), Some(got)) if got != held => {
                self.checker.note(format!("key {:?} of batch {held} made a second batch {got}", req.idempotency_key))
            }
            (Some(held), None) if same => {
                self.checker.note(format!("key {:?} of batch {held}: the same spec was refused", req.idempotency_key))
            }
            _ => {}
        }
    }

    pub(super) async fn pick_live_batch(&mut self) -> Option<BatchRecord> {
        let live: Vec<BatchRecord> = self.batches().await.into_iter().filter(|b| !b.state.is_terminal()).collect();
        if live.is_empty() {
            return None;
        }
        Some(live[self.rng.below(live.len() as u64) as usize].clone())
    }

    pub(super) async fn cancel_random(&mut self) {
        let Some(b) = self.pick_live_batch().await else { return };
        let r = self.engine.cancel_batch(&Principal::new(b.submitter.clone(), []), b.id, "simulated cancel").await;
        self.trace(format!("cancel {}: {}", b.id, outcome(r.map(|b| b.state))));
    }

    pub(super) async fn pause_random(&mut self) {
        let Some(b) = self.pick_live_batch().await else { return };
        let r = self.engine.pause_batch(&Principal::new(b.submitter.clone(), []), b.id, "simulated pause").await;
        self.trace(format!("pause {}: {}", b.id, outcome(r.map(|b| b.state))));
    }

    pub(super) async fn resume_random(&mut self) {
        let Some(b) = self.pick_live_batch().await else { return };
        let r = self.engine.resume_batch(&Principal::new(b.submitter.clone(), []), b.id).await;
        if r.is_ok() {
            self.checker.resumed(b.id);
        }
        self.trace(format!("resume {}: {}", b.id, outcome(r.map(|b| b.state))));
    }

    /// One turn of worker `w`: the steps whose simulated time is up finish, then every
    /// action its policy (maas-core's `WorkerMachine`, unless a test swapped it) has due is
    /// carried out by maas-engine's `Worker::perform`, as in production; the checker sees
    /// every claim, heartbeat, flush, hand-back and stop.
    pub(super) async fn worker_tick(&mut self, w: usize) -> Result<(), String> {
        let now = self.clock.now();
        if !self.workers[w].alive || self.workers[w].stalled_until.is_some_and(|t| now < t) {
            return Ok(());
        }
        self.workers[w].stalled_until = None;
        let sw = &mut self.workers[w];
        let (mut done, still): (Vec<_>, Vec<_>) = sw.in_flight.drain(..).partition(|(_, at, _)| *at <= now);
        sw.in_flight = still;
        // Each step finished at its own time, as the runtime would have seen it.
        done.sort_by_key(|(job, at, _)| (*at, job.id));
        for (job, at, outcome) in done {
            sw.worker.machine_mut().handle_step_finished(job.id, outcome, at);
        }
        let id = sw.worker.id().to_string();
        let mut did = Vec::new();
        // Bounded: a policy that never runs out of due actions is a failure, not a hang.
        for _ in 0..32 {
            let Some(action) = (self.worker_policy)(self.workers[w].worker.machine_mut(), now) else {
                return self.worker_turn_done(w, did);
            };
            let claim = match &action {
                WorkerAction::Claim(p) => Some((p.limit, self.claim_candidates(w, &p.kinds, now))),
                _ => None,
            };
            let flushing: Vec<JobId> = match &action {
                WorkerAction::Flush(p) => p.completions.iter().map(|c| c.job_id).collect(),
                _ => Vec::new(),
            };
            did.push(action.name());
            let performed = self.workers[w].worker.perform(action, now).await.map_err(|e| e.to_string())?;
            match performed {
                Performed::Noted => {}
                Performed::Claimed(_) | Performed::ClaimedHostsUnknown(_) => {
                    // With hosts looked up in the claim, or (the lookup failed) by each step.
                    let jobs: Vec<(JobRecord, Option<Option<maas_core::host::Host>>)> = match performed {
                        Performed::Claimed(jobs) => jobs.into_iter().map(|(j, h)| (j, Some(h))).collect(),
                        Performed::ClaimedHostsUnknown(jobs) => jobs.into_iter().map(|j| (j, None)).collect(),
                        _ => Vec::new(),
                    };
                    if let Some((limit, Some(before))) = claim {
                        let records: Vec<JobRecord> = jobs.iter().map(|(j, _)| j.clone()).collect();
                        self.checker.claimed(&id, &records, before, limit, now, LEASE)?;
                    }
                    for (job, host) in jobs {
                        let cfg = self.workers[w].worker.machine().config();
                        let outcome = match host {
                            Some(host) => self.engine.run_step_on(&job, host, cfg).await,
                            None => self.engine.run_step(&job, cfg).await,
                        };
                        let takes = Duration::from_millis(self.rng.below(15_000));
                        self.workers[w].in_flight.push((job, now.plus(takes), outcome));
                    }
                }
                Performed::Extended(held) => self.checker.extended(&id, &held, now.plus(LEASE)),
                Performed::Flushed(r) => {
                    self.report.completed += r.applied;
                    self.checker.flushed(&id, &flushing, &r.stale)?;
                }
                Performed::HandedBack(released) => {
                    self.workers[w].in_flight.clear();
                    self.checker.handed_back(&id, &released);
                }
                Performed::Stopped => {
                    self.workers[w].alive = false;
                    self.workers[w].in_flight.clear();
                    if let Some(mem) = &self.mem {
                        Checker::stopped_gracefully(mem, &id)?;
                    }
                    self.trace(format!("worker {id} stopped gracefully"));
                    return self.worker_turn_done(w, did);
                }
            }
        }
        Err(format!("worker {id}'s policy still had actions due after 32 in one turn: {did:?}"))
    }

    pub(super) fn worker_turn_done(&mut self, w: usize, did: Vec<&'static str>) -> Result<(), String> {
        self.schedule_installs();
        let sw = &self.workers[w];
        let m = sw.worker.machine();
        let line = format!("worker {}: {} running {} buffered {}", m.id(), did.join(","), m.running(), m.buffered());
        self.trace(line);
        Ok(())
    }

    /// Available jobs worker `w` could take now, in claim order (when checking).
    pub(super) fn claim_candidates(&self, w: usize, kinds: &[StepKind], now: Timestamp) -> Option<Vec<(i64, JobId)>> {
        let mem = self.mem.as_ref().filter(|_| self.cfg.check)?;
        Some(self.checker.claim_candidates(mem, &site(self.workers[w].site), kinds, now))
    }

    /// Asks a live worker to shut down gracefully: it stops claiming, lets its steps
    /// finish for its grace, hands the rest back, flushes, and stops.
    pub(super) fn stop_gracefully(&mut self) {
        let w = self.rng.below(self.workers.len() as u64) as usize;
        if !self.workers[w].alive {
            return;
        }
        let now = self.clock.now();
        let sw = &mut self.workers[w];
        sw.worker.machine_mut().handle_shutdown(now);
        let id = sw.worker.id().to_string();
        self.trace(format!("worker {id} is asked to shut down"));
    }

    pub(super) fn schedule_installs(&mut self) {
        for (host, boot) in self.provisioner.take_prepared() {
            let plan = self.fleet.plan_install();
            let (takes, succeeds) = self.install_overrides.get(&host).copied().unwrap_or((plan.takes, plan.succeeds));
            self.install_seq += 1;
            let at = self.clock.now().plus(takes);
            let pending = PendingCallback { token: boot.token, ok: succeeds, tries: 0, then: boot.first_boot_token };
            self.installs.insert((at, self.install_seq), pending);
        }
    }

    pub(super) async fn callbacks(&mut self) {
        let now = self.clock.now();
        let due: Vec<(Timestamp, u64)> =
            self.installs.range(..(now.plus(Duration::from_millis(1)), 0)).map(|(k, _)| *k).collect();
        for k in due {
            let Some(cb) = self.installs.remove(&k) else { continue };
            let ok = cb.ok;
            let tries = cb.tries;
            let outcome = if ok {
                JobOutcome::Succeeded
            } else {
                JobOutcome::Failed { error: "installer: no bootable disk".into(), retryable: false }
            };
            let r = self.engine.report_wait_result(&cb.token, outcome).await;
            match (&r, cb.then.clone()) {
                // The installed OS reports its first boot a minute after the install (it may
                // race the boot_disk step: retried like any callback).
                (Ok(_), Some(first_boot)) if ok => {
                    self.install_seq += 1;
                    let next = PendingCallback { token: first_boot, ok: true, tries: 0, then: None };
                    self.installs.insert((now.plus(Duration::from_secs(60)), self.install_seq), next);
                }
                (Err(_), _) if tries < 5 => {
                    // Installers retry their callback (e.g. it raced the power-cycle report).
                    self.install_seq += 1;
                    let retry = PendingCallback { tries: tries + 1, ..cb };
                    self.installs.insert((now.plus(Duration::from_secs(30)), self.install_seq), retry);
                }
                _ => {}
            }
            self.trace(format!("callback ok={ok} try {tries}: {}", outcome_of(r.map(|j| j.state))));
        }
    }

    pub(super) async fn leader_tick(&mut self, i: usize) {
        let now = self.clock.now();
        let r = self.singletons[i].tick(now).await;
        if !r.ran.is_empty() {
            let line = format!(
                "leader {i}: ran {:?} retried {} failed {} waits {} stragglers {} delivered {} tickets {} purged {} reclaim {:?} errors {}",
                r.ran,
                r.rescued.retried.len(),
                r.rescued.failed.len(),
                r.rescued.wait_expired.len(),
                r.stragglers,
                r.delivered,
                r.tickets,
                r.purged.batches,
                r.reclaimed,
                r.errors.len()
            );
            if let Some(b) = r.reclaimed {
                self.accepted.insert(b);
            }
            self.trace(line);
        }
    }

    pub(super) async fn crash_or_restart(&mut self) {
        let w = self.rng.below(self.workers.len() as u64) as usize;
        if self.workers[w].alive {
            let sw = &mut self.workers[w];
            sw.alive = false;
            sw.in_flight.clear();
            let id = sw.worker.id().to_string();
            self.report.crashes += 1;
            self.trace(format!("worker {id} crashes with its jobs and unflushed completions"));
        } else {
            self.restart(w);
        }
    }

    pub(super) fn restart(&mut self, w: usize) {
        let (s, slot, generation) = (self.workers[w].site, self.workers[w].slot, self.workers[w].generation + 1);
        let worker = self.new_worker(s, slot, generation);
        let id = worker.id().to_string();
        self.workers[w] =
            SimWorker { worker, site: s, slot, generation, alive: true, stalled_until: None, in_flight: Vec::new() };
        self.trace(format!("worker {id} starts (supervisor restart)"));
    }

    pub(super) async fn stall(&mut self) {
        let w = self.rng.below(self.workers.len() as u64) as usize;
        let until = self.clock.now().plus(LEASE * 2);
        self.workers[w].stalled_until = Some(until);
        let id = self.workers[w].worker.id().to_string();
        self.trace(format!("worker {id} stalls past its leases"));
    }

    pub(super) async fn remap_pool(&mut self) {
        let pool = Pool::new("web").unwrap_or_else(|_| unreachable!());
        let kinds = if self.rng.chance(0.5) {
            all_worker_kinds()
        } else {
            all_worker_kinds().into_iter().filter(|_| self.rng.chance(0.6)).collect()
        };
        let _ = self.store.pool_kinds_set(&pool, &kinds).await;
        self.trace(format!("pool web now takes {}", kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")));
    }
}
