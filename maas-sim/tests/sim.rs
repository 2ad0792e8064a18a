//! The deterministic simulator suite: the whole engine under seeded faults, many seeds,
//! with a replay command for any failing seed and a determinism check.
//!
//! - `cargo test -p maas-sim --test sim` runs 200 seeds (`MAAS_SIM_SEEDS=N` for more).
//! - `MAAS_SIM_SEED=S cargo test -p maas-sim --test sim -- --nocapture` replays one seed
//!   and prints its trace.
//! - The simulator drives maas-core's production worker policy; two deliberately broken
//!   variants of it (defined here, not shipped) must be caught.

use maas_core::Timestamp;
use maas_core::policy::{WorkerAction, WorkerMachine};
use maas_sim::sim::{self, SimConfig, Simulation};

fn seeds() -> (Vec<u64>, bool) {
    if let Some(seed) = std::env::var("MAAS_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return (vec![seed], true);
    }
    let n = std::env::var("MAAS_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200u64);
    ((0..n).collect(), false)
}

#[tokio::test(flavor = "current_thread")]
async fn every_invariant_holds_across_seeds() {
    let (seeds, replay) = seeds();
    let mut failures = Vec::new();
    let (mut accepted, mut rejected, mut completed, mut crashes) = (0, 0, 0, 0);
    for &seed in &seeds {
        match sim::run_seed(seed).await {
            Ok(r) => {
                if replay {
                    println!("{}", r.trace.join("\n"));
                }
                accepted += r.accepted;
                rejected += r.rejected;
                completed += r.completed;
                crashes += r.crashes;
            }
            Err(e) => {
                if replay {
                    println!("{}", e.trace.join("\n"));
                }
                failures.push(format!(
                    "seed {seed}: {e}\n  replay: MAAS_SIM_SEED={seed} cargo test -p maas-sim --test sim -- --nocapture"
                ))
            }
        }
    }
    println!(
        "simulator: {} of {} seeds passed; {accepted} batches accepted, {rejected} rejected, {completed} jobs completed, {crashes} worker crashes",
        seeds.len() - failures.len(),
        seeds.len()
    );
    assert!(failures.is_empty(), "{} seed(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test(flavor = "current_thread")]
async fn one_seed_twice_yields_identical_traces() {
    let a = sim::run_seed(7).await.expect("seed 7");
    let b = sim::run_seed(7).await.expect("seed 7 again");
    assert!(a.trace.len() > 200, "a real run: {} steps", a.trace.len());
    assert_eq!(a.trace, b.trace);
    let c = sim::run_seed(8).await.expect("seed 8");
    assert_ne!(a.trace, c.trace, "different seeds explore different runs");
}

/// A worker policy that, at the end of a shutdown's grace, hands back the jobs whose
/// outcomes are buffered as well as those still running: their steps would run twice.
fn hands_back_finished_steps(m: &mut WorkerMachine, now: Timestamp) -> Option<WorkerAction> {
    let mut action = m.poll_action(now)?;
    if let WorkerAction::HandBack(p) = &mut action {
        p.jobs.extend(m.buffered_completions().iter().map(|c| (c.job_id, c.attempt)));
    }
    Some(action)
}

/// A worker policy that stops as soon as nothing runs, dropping its buffered outcomes: the
/// jobs stay leased to a worker that is gone until the rescuer runs them again.
fn stops_without_flushing(m: &mut WorkerMachine, now: Timestamp) -> Option<WorkerAction> {
    if m.stopping() && m.running() == 0 && m.buffered() > 0 {
        return Some(WorkerAction::Stop);
    }
    m.poll_action(now)
}

/// Runs seeds on `policy` until the simulator fails one; returns the seed and the error.
/// Shutdowns get a short grace, so most hand work back.
async fn first_failure(policy: sim::WorkerPolicy) -> Option<(u64, String)> {
    for seed in 0..200 {
        let cfg = SimConfig { shutdown_grace: std::time::Duration::from_secs(1), ..SimConfig::small(seed) };
        let run = Simulation::new(cfg).await.with_worker_policy(policy).run().await;
        if let Err(e) = run {
            return Some((seed, e.error));
        }
    }
    None
}

#[tokio::test(flavor = "current_thread")]
async fn the_simulator_catches_a_worker_policy_that_hands_back_finished_steps() {
    let (seed, error) = first_failure(hands_back_finished_steps).await.expect("the broken policy is caught");
    println!("hands back finished steps: caught at seed {seed}: {error}");
    assert!(error.contains("the step runs twice"), "{error}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_simulator_catches_a_worker_policy_that_stops_with_outcomes_unflushed() {
    let (seed, error) = first_failure(stops_without_flushing).await.expect("the broken policy is caught");
    println!("stops without flushing: caught at seed {seed}: {error}");
    assert!(error.contains("stopped gracefully but still holds the leases"), "{error}");
}
