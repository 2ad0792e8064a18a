//! Whole-engine benchmarks (a harness binary, not criterion: each figure is one timed run).
//!
//! 1. Job throughput: power-cycle batches (2 jobs per host) through supervised worker
//!    pools of 1, 2 and 8 workers on the in-memory store with zero-latency simulated BMCs,
//!    on the real tokio runtime and clock; reported as jobs/s and as a ratio to the
//!    reference measured in the same run: the bare store driven by one loop (claim 256,
//!    complete 256), the limit the engine's bookkeeping can approach.
//! 2. A 100,000-host simulated reimage wave (600,000 jobs) through the deterministic
//!    simulator: wall time, simulated time and peak RSS.
//!
//! Run: `cargo bench --bench engine` (`-- throughput` or `-- wave` for one part).

use std::sync::Arc;
use std::time::{Duration, Instant};

use maas::engine::WorkerPool;
use maas::machine::JobOutcome;
use maas::plan::StepKind;
use maas::ports::inventory::Inventory;
use maas::ports::store::*;
use maas::*;
use maas_sim::fleet_hosts;
use maas_sim::{FaultPlan, MemStore, SimFleet};

const PER_BATCH: usize = 5_000;

/// Full size under `cargo bench`; a small smoke run under `cargo test --all-targets`.
struct Size {
    hosts: usize,
    wave: usize,
}

async fn loaded_engine(hosts: usize) -> (Engine, Arc<MemStore>) {
    let store = Arc::new(MemStore::default());
    let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
    store.host_upsert_many(fleet_hosts(&fleet, 1, hosts)).await.unwrap();
    let clock = Arc::new(SystemClock::new());
    let engine =
        Engine::builder(store.clone(), store.clone(), fleet, clock.clone(), IdGenerator::new(clock, 9)).build();
    let who = Principal::new("bench", []);
    for first in (1..=hosts).step_by(PER_BATCH) {
        let last = (first + PER_BATCH - 1).min(hosts);
        let mut req = BatchRequest::new(Action::PowerCycle, [format!("sim[{first:06}-{last:06}].dc1")]);
        req.rollout.max_in_flight = PER_BATCH as u32;
        engine.submit(&who, &req).await.unwrap();
    }
    (engine, store)
}

async fn reference(hosts: usize) -> f64 {
    let (_engine, store) = loaded_engine(hosts).await;
    let clock = SystemClock::new();
    let started = Instant::now();
    let mut done = 0usize;
    loop {
        let jobs = store
            .job_claim(JobClaimParams {
                site: Site::new("dc1").unwrap(),
                kinds: StepKind::ALL.to_vec(),
                limit: 256,
                owner: "ref".into(),
                now: clock.now(),
                lease: Duration::from_secs(60),
            })
            .await
            .unwrap();
        if jobs.is_empty() {
            break;
        }
        let completions = jobs
            .iter()
            .map(|j| JobCompletion { job_id: j.id, attempt: j.attempt, outcome: JobOutcome::Succeeded })
            .collect();
        done += jobs.len();
        store.job_complete_many(JobCompleteManyParams { completions, now: clock.now() }).await.unwrap();
    }
    assert_eq!(done, hosts * 2);
    done as f64 / started.elapsed().as_secs_f64()
}

async fn through_pools(hosts: usize, workers: usize) -> f64 {
    let (engine, store) = loaded_engine(hosts).await;
    let cfg = PoolConfig {
        site: Site::new("dc1").unwrap(),
        pool: Pool::new("web").unwrap(),
        workers,
        worker: WorkerConfig {
            capacity: 256,
            flush_size: 256,
            flush_interval: Duration::from_millis(2),
            idle_poll: Duration::from_millis(1),
            ..Default::default()
        },
        restart_delay: Duration::from_millis(10),
        instance: "bench".into(),
    };
    let started = Instant::now();
    let pool = WorkerPool::start(&engine, cfg);
    loop {
        let open = store
            .batch_list(BatchListParams { states: vec![BatchState::Running], ..Default::default() })
            .await
            .unwrap();
        if open.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let report = pool.shutdown().await;
    assert_eq!(report.restarts, 0);
    let succeeded = store.jobs_snapshot().iter().filter(|j| j.state == JobState::Succeeded).count();
    assert_eq!(succeeded, hosts * 2);
    succeeded as f64 / elapsed.as_secs_f64()
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let size = if all.iter().any(|a| a == "--bench") {
        Size { hosts: 20_000, wave: 100_000 }
    } else {
        Size { hosts: 1_000, wave: 2_000 }
    };
    let args: Vec<&String> = all.iter().filter(|a| !a.starts_with("--")).collect();
    let want = |part: &str| args.is_empty() || args.iter().any(|a| *a == part);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if want("throughput") {
        let hosts = size.hosts;
        println!("engine throughput: {hosts} hosts x power_cycle (2 jobs each), in-memory store, zero-latency BMCs");
        let limit = rt.block_on(reference(hosts));
        println!("  reference: bare store, one loop claim+complete 256 : {limit:>10.0} jobs/s");
        for workers in [1, 2, 8] {
            let rate = rt.block_on(through_pools(hosts, workers));
            println!(
                "  engine, pool of {workers} worker(s)                  : {rate:>10.0} jobs/s  ({:.2}x the reference)",
                rate / limit
            );
        }
    }
    if want("wave") {
        let started = Instant::now();
        let report = rt.block_on(maas_sim::sim::reimage_wave(size.wave, 4, 8)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.succeeded_hosts, size.wave, "every host of the wave is reimaged");
        println!(
            "{}-host simulated reimage wave: {} hosts reimaged, {} worker jobs + {} install callbacks in {:.1} s wall ({:.1} h simulated), peak RSS {:.0} MiB",
            size.wave,
            report.succeeded_hosts,
            report.completed,
            report.succeeded_hosts,
            started.elapsed().as_secs_f64(),
            report.simulated.as_secs_f64() / 3600.0,
            peak_rss_mib().unwrap_or(f64::NAN)
        );
    }
}
