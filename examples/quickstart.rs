//! Quickstart: the maas engine on a simulated fleet of 3,000 hosts in three sites — the
//! embedded SQLite store (`./maas-quickstart.db`, recreated on every run), simulated BMCs
//! with a few faults, simulated installers, four workers per site and the leader
//! singletons, all on a simulated clock.
//!
//! It shows the whole rejection report, an overlapping batch rejected with its conflicts,
//! a dry run, a low-priority reimage wave overtaken by an urgent one, a cancel, a batch
//! that exceeds its failure budget, pauses and raises a ticket, live progress bars, an ETA,
//! and a final statistics table. Run: `cargo run --release --example quickstart`.

use std::sync::Arc;
use std::time::Duration;

use maas::engine::BatchView;
use maas::ports::store::{AuditFilter, BatchListParams, StatsParams};
use maas::store::{OpenOptions, SqlStore};
use maas::*;
use maas_sim::FaultPlan;
use maas_sim::{SimConfig, Simulation};

const ROUND: Duration = Duration::from_secs(30);

fn bar(b: &BatchRecord) -> String {
    let c = b.counts;
    let done = c.succeeded + c.failed + c.cancelled;
    let width = 24;
    let filled = (done as usize * width).checked_div(c.total() as usize).unwrap_or(0);
    format!(
        "[{}{}] {done:>4}/{:<4} {:<10}",
        "#".repeat(filled),
        ".".repeat(width - filled),
        c.total(),
        b.state.to_string()
    )
}

fn reimage(os: &str, hosts: &[&str]) -> BatchRequest {
    BatchRequest::new(
        Action::Reimage { os: OsRelease::new(os).expect("valid release"), install_timeout_secs: None },
        hosts.iter().copied(),
    )
}

async fn state(sim: &Simulation, id: BatchId) -> BatchRecord {
    sim.engine().get_batch(id).await.map(|v: BatchView| v.batch).expect("batch exists")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = SimConfig {
        seed: 42,
        sites: 3,
        hosts_per_site: 1000,
        workers_per_site: 4,
        worker_capacity: 64,
        defunct_every: 0,
        allocated_every: 97,
        faults: FaultPlan { busy: 0.02, timeout: 0.01, wrong_state: 0.01, install_failure: 0.005, ..FaultPlan::none() },
        check: false,
        ..SimConfig::scenario()
    };
    const DB: &str = "maas-quickstart.db";
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{DB}{suffix}"));
    }
    let store = SqlStore::open(&format!("sqlite://{DB}"), &OpenOptions::default(), Rules::default()).await?;
    let mut sim = Simulation::with_store(cfg, Arc::new(store)).await;
    let engine = sim.engine().clone();
    let alice = Principal::new("alice", []);
    println!("maas quickstart: 3,000 simulated hosts in 3 sites, 4 workers per site, SQLite store ./{DB}\n");

    let bad = BatchRequest::new(
        Action::Reboot { soft: false },
        ["sim[000096-000098].dc1", "ghost1.dc9", "bad_name", "web[5-"],
    );
    println!(
        "1. a request with problems gets the whole report at once:\n{}\n",
        engine.submit(&alice, &bad).await.unwrap_err()
    );

    let mut wave = reimage("ubuntu-24.04", &["sim[000001-000800].dc1", "sim[000001-000400].dc2"]);
    wave.priority = PriorityClass::Low;
    wave.rollout = RolloutPolicy { max_in_flight: 300, failure_budget: 50 };
    wave.force = Some(ForceInUse { reason: "fleet-wide OS upgrade CHG-1001".into() });
    let wave = sim.submit_as("organic-growth", wave).await?;
    println!("2. low-priority reimage wave of 1,200 hosts accepted: {wave}");

    let overlap = BatchRequest::new(Action::Reboot { soft: false }, ["sim[000790-000810].dc1"]);
    match engine.submit(&Principal::new("bob", []), &overlap).await {
        Err(e) => println!("3. overlapping batch rejected:\n{e}\n"),
        Ok(s) => println!("3. unexpected: accepted {}", s.batch.id),
    }

    let dry = engine.dry_run(&alice, &BatchRequest::new(Action::PowerCycle, ["sim[000001-000005].dc3"])).await?;
    let plan: Vec<&str> = dry.plan.iter().map(|s| s.kind.as_str()).collect();
    println!(
        "4. dry run of a power cycle on 5 hosts: acceptable={}, plan {}, nothing written\n",
        dry.acceptable,
        plan.join(" -> ")
    );

    for _ in 0..10 {
        sim.round(ROUND).await?;
    }
    let mut urgent = reimage("ubuntu-24.04", &["sim[000801-000850].dc1"]);
    urgent.priority = PriorityClass::Urgent;
    let urgent = sim.submit_as("carol", urgent).await?;
    println!("5. urgent reimage of 50 hosts submitted while the wave runs: {urgent}");

    let mut reboot = BatchRequest::new(Action::Reboot { soft: false }, ["sim[000001-000090].dc3"]);
    reboot.force = Some(ForceInUse { reason: "kernel fix CHG-1002".into() });
    let reboot = sim.submit_as("dave", reboot).await?;
    let cancelled = engine.cancel_batch(&Principal::new("dave", []), reboot, "wrong rack").await?;
    println!(
        "6. reboot batch cancelled at once: {reboot} -> {} ({} hosts never started)",
        cancelled.state, cancelled.counts.cancelled
    );

    for i in (401..=460).step_by(2) {
        // A beta image that half the hardware cannot boot.
        sim.set_install(&format!("sim{i:06}.dc2"), Duration::from_secs(900), false);
    }
    let mut risky = reimage("ubuntu-26.04-beta", &["sim[000401-000460].dc2"]);
    risky.rollout = RolloutPolicy { max_in_flight: 10, failure_budget: 3 };
    let risky = sim.submit_as("erin", risky).await?;
    println!("7. risky beta reimage with a failure budget of 3: {risky}\n");

    let watched = [("wave  ", wave), ("urgent", urgent), ("risky ", risky)];
    let mut urgent_done = None;
    let mut eta_shown = false;
    for round in 0..2_000u32 {
        sim.round(ROUND).await?;
        let minutes = (round + 11) * 30 / 60;
        let mut settled = true;
        let mut lines = Vec::new();
        for (name, id) in watched {
            let b = state(&sim, id).await;
            settled &= b.state != BatchState::Running;
            lines.push(format!("  {name} {}", bar(&b)));
            if id == urgent && b.state == BatchState::Completed && urgent_done.is_none() {
                let w = state(&sim, wave).await.counts;
                urgent_done =
                    Some(format!("t+{minutes} min, when the wave was at {}/{}", w.succeeded + w.failed, w.total()));
            }
        }
        if !eta_shown && round == 60 {
            eta_shown = true;
            if let Some(eta) = engine.eta(wave).await? {
                println!(
                    "   ETA of the wave from {} historical step durations: {} min from now",
                    eta.samples,
                    eta.remaining.as_secs() / 60
                );
            }
        }
        if round % 10 == 0 || settled {
            println!("t+{minutes:>4} min\n{}", lines.join("\n"));
        }
        if settled {
            break;
        }
    }
    println!(
        "\nthe urgent batch, submitted after the wave, finished at {}: its queue key gave it a 4 h head start.",
        urgent_done.unwrap_or_else(|| "(not yet)".into())
    );
    let risky_b = state(&sim, risky).await;
    println!(
        "risky batch: {} ({}) after {} failures; no new host started after the pause.",
        risky_b.state,
        risky_b.pause_reason.map(|r| r.to_string()).unwrap_or_default(),
        risky_b.counts.failed
    );
    // The risky batch's tickets: the pause over its budget, and each failed install.
    for (id, t) in engine.tickets(1_000).await?.into_iter().filter(|(_, t)| t.batch_id == risky) {
        println!("   ticket {id} [{:?}] {}", t.kind, t.summary);
    }

    let stats = engine.batch_stats(StatsParams::default()).await?;
    println!(
        "\nhost runs: {} succeeded, {} failed, {} cancelled; success rate {:.1}%",
        stats.succeeded,
        stats.failed,
        stats.cancelled,
        100.0 * stats.success_rate.unwrap_or(0.0)
    );
    println!(
        "{:<9} {:<6} {:<5} {:>6} {:>9} {:>9} {:>9}",
        "action", "sku", "site", "hosts", "p50 min", "p95 min", "max min"
    );
    for s in &stats.host_runs {
        let m = |d: Duration| d.as_secs_f64() / 60.0;
        println!(
            "{:<9} {:<6} {:<5} {:>6} {:>9.1} {:>9.1} {:>9.1}",
            s.action.to_string(),
            s.sku.as_str(),
            s.site.as_str(),
            s.durations.count,
            m(s.durations.p50),
            m(s.durations.p95),
            m(s.durations.max)
        );
    }
    let batches = engine.list_batches(BatchListParams::default()).await?;
    let trail = engine.audit(&alice, AuditFilter { limit: AuditFilter::MAX_LIMIT, ..Default::default() }).await?;
    println!("\n{} batches; audit trail has {} entries; sites now:", batches.len(), trail.len());
    for a in engine.active_counts().await? {
        println!(
            "  {}: {} hosts in flight, {} jobs queued, {} running, {} waiting, {} live workers",
            a.activity.site,
            a.activity.hosts_in_flight,
            a.activity.jobs_queued,
            a.activity.jobs_running,
            a.activity.jobs_waiting,
            a.live_workers
        );
    }
    Ok(())
}
