//! Quickstart: a simulated fleet of 3,000 hosts in three sites, driven end to end on the
//! in-memory store with a manual clock — validation with a full report, an overlapping batch
//! rejected with its conflicts, priority aging (an urgent reimage overtakes a low-priority
//! wave), a cancel, a failure budget that pauses a batch, and a final table.
//!
//! The worker loop here is deliberately small (claim, execute on the simulated BMCs,
//! complete, deliver install callbacks); the engine with leases, heartbeats, supervision
//! and singletons replaces it. Run: `cargo run --release --example quickstart`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use maas::machine::{self, HostTarget, Rules};
use maas::plan::StepKind;
use maas::ports::power::{BootDevice, PowerOp, PowerState};
use maas::ports::store::*;
use maas::validate::{ValidationContext, validate_batch};
use maas::*;

const SITES: [&str; 3] = ["dc1", "dc2", "dc3"];
const PER_SITE: usize = 1000;

struct Demo {
    store: MemStore,
    fleet: SimFleet,
    clock: ManualClock,
    ids: IdGenerator,
    inventory: HashMap<Hostname, Host>,
    pending_installs: Vec<(Timestamp, String, bool)>,
}

impl Demo {
    fn new() -> Self {
        let clock = ManualClock::new(Timestamp::parse_rfc3339("2026-11-21T09:00:00Z").unwrap());
        let faults =
            FaultPlan { busy: 0.02, timeout: 0.01, wrong_state: 0.01, install_failure: 0.01, ..FaultPlan::none() };
        let mut inventory = HashMap::new();
        let fleet = SimFleet::new(42, faults);
        for (s, site) in SITES.iter().enumerate() {
            for i in 1..=PER_SITE {
                let bmc = BmcEndpoint {
                    address: format!("10.{s}.{}.{}", i / 250, i % 250),
                    port: 623,
                    credentials_ref: "default".into(),
                };
                fleet.add_bmc(&bmc, PowerState::On);
                let host = Host {
                    hostname: Hostname::new(&format!("web{i:04}.{site}")).unwrap(),
                    site: Site::new(site).unwrap(),
                    rack: None,
                    pool: Pool::new("web").unwrap(),
                    owner_group: None,
                    sku: Sku::new(if i % 3 == 0 { "gen10" } else { "gen9" }).unwrap(),
                    bmc,
                    state: if i % 97 == 0 { HostState::Allocated } else { HostState::Ready },
                };
                inventory.insert(host.hostname.clone(), host);
            }
        }
        let ids = IdGenerator::new(Arc::new(clock.clone()), 7);
        Demo { store: MemStore::default(), fleet, clock, ids, inventory, pending_installs: Vec::new() }
    }

    async fn submit(&self, who: &str, req: BatchRequest) -> Result<BatchRecord, String> {
        let claims: HashMap<Hostname, BatchId> = HashMap::new();
        let limits = Limits::default();
        let principal = Principal::new(who, []);
        let ctx = ValidationContext {
            limits: &limits,
            principal: &principal,
            authorizer: &AllowAll,
            hosts: &self.inventory,
            claims: &claims,
            now: self.clock.now(),
        };
        let spec = validate_batch(&req, &ctx).map_err(|r| r.to_string())?;
        let targets: Vec<HostTarget> = spec
            .hosts
            .iter()
            .map(|h| {
                let x = &self.inventory[h];
                HostTarget { hostname: h.clone(), site: x.site.clone(), pool: x.pool.clone(), sku: x.sku.clone() }
            })
            .collect();
        let new_batch =
            machine::plan_submission(spec, &principal, &targets, self.clock.now(), &self.ids, &Rules::default());
        self.store.batch_submit(BatchSubmitParams { new_batch }).await.map(|b| b.batch).map_err(|e| e.to_string())
    }

    /// One tick: every site's worker claims up to 200 jobs, runs them on the simulated
    /// BMCs, completes them; installs that finished report back; the rescuer runs.
    async fn tick(&mut self) -> usize {
        let now = self.clock.now();
        let mut done = 0;
        for site in SITES {
            let jobs = self
                .store
                .job_claim(JobClaimParams {
                    site: Site::new(site).unwrap(),
                    kinds: StepKind::ALL.to_vec(),
                    limit: 200,
                    owner: format!("worker-{site}"),
                    now,
                    lease: Duration::from_secs(300),
                })
                .await
                .unwrap();
            let mut completions = Vec::with_capacity(jobs.len());
            for job in jobs {
                let outcome = self.execute(&job).await;
                completions.push(JobCompletion { job_id: job.id, attempt: job.attempt, outcome });
            }
            done += completions.len();
            self.store.job_complete_many(JobCompleteManyParams { completions, now }).await.unwrap();
        }
        let (ready, later): (Vec<_>, Vec<_>) = self.pending_installs.drain(..).partition(|(at, _, _)| *at <= now);
        self.pending_installs = later;
        for (_, token, ok) in ready {
            let outcome = if ok {
                JobOutcome::Succeeded
            } else {
                JobOutcome::Failed { error: "installer: disk not found".into(), retryable: false }
            };
            let _ = self.store.job_resolve_wait(JobResolveWaitParams { token, outcome, now }).await;
        }
        self.store.job_rescue_expired(JobRescueParams { now, limit: 0 }).await.unwrap();
        self.clock.advance(Duration::from_secs(30));
        done
    }

    async fn execute(&mut self, job: &maas::JobRecord) -> JobOutcome {
        let bmc = self.inventory[&job.hostname].bmc.clone();
        let bmc = &bmc;
        let result = match job.kind {
            StepKind::Preflight => self.fleet.probe(bmc).await.map(|_| ()),
            StepKind::SetBootPxe => {
                // The installer reports with the next waiting step's token when it finishes.
                let jobs = self
                    .store
                    .job_list(JobListParams { host_run_id: Some(job.host_run_id), ..Default::default() })
                    .await
                    .unwrap();
                if let Some(token) = jobs.iter().find_map(|j| j.wait_token.clone()) {
                    let plan = self.fleet.plan_install();
                    // A beta image that half the hardware cannot boot: the budget will trip.
                    let beta = format!("{:?}", job.params.boot).contains("beta");
                    let ok = plan.succeeds && !(beta && job.hostname.as_str().as_bytes()[6].is_multiple_of(2));
                    self.pending_installs.push((self.clock.now().plus(plan.takes), token, ok));
                }
                self.fleet.set_boot_device(bmc, BootDevice::Pxe, false).await
            }
            StepKind::PowerCycle => self.fleet.power(bmc, PowerOp::Cycle).await.map(|_| ()),
            StepKind::PowerOn => self.fleet.power(bmc, PowerOp::On).await.map(|_| ()),
            StepKind::PowerOff => self.fleet.power(bmc, PowerOp::Off).await.map(|_| ()),
            StepKind::SoftOff => self.fleet.power(bmc, PowerOp::SoftOff).await.map(|_| ()),
            StepKind::SoftReset => self.fleet.power(bmc, PowerOp::Reset).await.map(|_| ()),
            StepKind::Verify => match self.fleet.power_status(bmc).await {
                Ok(PowerState::On) => Ok(()),
                Ok(PowerState::Off) => {
                    Err(maas::ports::PowerError::Busy { bmc: bmc.address.clone(), detail: "still off".into() })
                }
                Err(e) => Err(e),
            },
            StepKind::Release | StepKind::MarkDecommissioned | StepKind::AwaitInstall | StepKind::AwaitWipe => Ok(()),
        };
        match result {
            Ok(()) => JobOutcome::Succeeded,
            Err(e) => JobOutcome::Failed { retryable: e.is_retryable(), error: e.to_string() },
        }
    }
}

fn bar(done: u32, total: u32) -> String {
    let w = 30;
    let filled = (done as usize * w).checked_div(total as usize).unwrap_or(0);
    format!("[{}{}] {done}/{total}", "#".repeat(filled), " ".repeat(w - filled))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut demo = Demo::new();
    println!("maas quickstart: {} simulated hosts in {} sites (in-memory store)\n", demo.inventory.len(), SITES.len());

    let bad =
        BatchRequest::new(Action::Reboot { soft: false }, ["web[0096-0098].dc1", "ghost1.dc9", "bad_name", "web[5-"]);
    println!(
        "1. a request with problems gets the whole report at once:\n{}\n",
        demo.submit("alice", bad).await.unwrap_err()
    );

    let mut wave = BatchRequest::new(
        Action::Reimage { os: OsRelease::new("ubuntu-24.04").unwrap(), install_timeout_secs: None },
        ["web[0001-0800].dc1", "web[0001-0400].dc2"],
    );
    wave.priority = PriorityClass::Low;
    wave.rollout = RolloutPolicy { max_in_flight: 300, failure_budget: 50 };
    wave.force = Some(ForceInUse { reason: "fleet-wide OS upgrade CHG-1001".into() });
    let wave = demo.submit("organic-growth", wave).await.unwrap();
    println!("2. low-priority reimage wave accepted: {} ({} hosts)", wave.id, wave.spec.hosts.len());

    let overlap = BatchRequest::new(Action::Reboot { soft: false }, ["web[0790-0810].dc1"]);
    match demo.submit("bob", overlap).await {
        Err(e) => println!("3. overlapping batch rejected:\n   {e}\n"),
        Ok(b) => println!("3. unexpected: accepted {}", b.id),
    }

    for _ in 0..10 {
        demo.tick().await;
    }
    let mut urgent = BatchRequest::new(
        Action::Reimage { os: OsRelease::new("ubuntu-24.04").unwrap(), install_timeout_secs: None },
        ["web[0801-0850].dc1"],
    );
    urgent.priority = PriorityClass::Urgent;
    let urgent = demo.submit("carol", urgent).await.unwrap();
    println!("4. urgent reimage of 50 hosts submitted while the wave runs: {}", urgent.id);

    let reboot =
        demo.submit("dave", BatchRequest::new(Action::Reboot { soft: false }, ["web[0001-0090].dc3"])).await.unwrap();
    let cancelled = demo
        .store
        .batch_cancel(BatchCancelParams {
            batch_id: reboot.id,
            principal: Principal::new("dave", []),
            reason: "wrong rack".into(),
            now: demo.clock.now(),
        })
        .await
        .unwrap();
    println!("5. reboot batch cancelled at once: {} -> {}", reboot.id, cancelled.state);

    let mut risky = BatchRequest::new(
        Action::Reimage { os: OsRelease::new("ubuntu-26.04-beta").unwrap(), install_timeout_secs: None },
        ["web[0401-0409].dc2", "web[0410-0460].dc2"],
    );
    risky.rollout = RolloutPolicy { max_in_flight: 10, failure_budget: 3 };
    let risky = demo.submit("erin", risky).await.unwrap();
    println!("6. risky beta reimage with a failure budget of 3: {}\n", risky.id);

    let wave_id = wave.id;
    let batches = [("wave", wave.id), ("urgent", urgent.id), ("risky", risky.id)];
    let mut urgent_done_at = None;
    for tick in 0..400 {
        demo.tick().await;
        let mut all_settled = true;
        let mut line = format!("t+{:>5}s", (tick + 11) * 30);
        for (name, id) in batches {
            let b = demo.store.batch_get(id).await.unwrap().unwrap();
            let c = b.counts;
            line.push_str(&format!("  {name} {} {}", bar(c.succeeded + c.failed + c.cancelled, c.total()), b.state));
            all_settled &= !matches!(b.state, BatchState::Running);
            if name == "urgent" && b.state == BatchState::Completed && urgent_done_at.is_none() {
                let w = demo.store.batch_get(wave_id).await.unwrap().unwrap().counts;
                urgent_done_at = Some(format!(
                    "t+{}s, when the low-priority wave was at {}/{}",
                    (tick + 11) * 30,
                    w.succeeded + w.failed,
                    w.total()
                ));
            }
        }
        if tick % 20 == 0 || all_settled {
            println!("{line}");
        }
        if all_settled {
            break;
        }
    }
    println!(
        "\nthe urgent batch, submitted after the wave, finished at {}: its queue key gave it a 4 h head start.",
        urgent_done_at.unwrap_or_default()
    );
    let samples = demo.store.stats_host_runs(StatsParams::default()).await.unwrap();
    let mut table: BTreeMap<(String, String), (u32, u32, u64)> = BTreeMap::new();
    for s in samples {
        let e = table.entry((s.action.to_string(), s.sku.to_string())).or_default();
        match s.state {
            HostRunState::Succeeded => e.0 += 1,
            HostRunState::Failed => e.1 += 1,
            _ => {}
        }
        e.2 += s.finished_at.since(s.started_at).as_secs();
    }
    println!("\n{:<10} {:<6} {:>9} {:>7} {:>12}", "action", "sku", "succeeded", "failed", "mean min");
    for ((action, sku), (ok, failed, secs)) in table.into_iter().filter(|(_, v)| v.0 + v.1 > 0) {
        let n = (ok + failed).max(1) as u64;
        println!("{action:<10} {sku:<6} {ok:>9} {failed:>7} {:>12.1}", secs as f64 / n as f64 / 60.0);
    }
    let risky = demo.store.batch_get(risky.id).await.unwrap().unwrap();
    println!("\nrisky batch: {} ({:?}) after {} failures", risky.state, risky.pause_reason, risky.counts.failed);
}
