//! SQL store benchmarks (a harness binary: each figure is one timed run, reported next to a
//! reference measured in the same run).
//!
//! 1. `submit` — durable submit throughput, in host-actions/s, of 100-host reboot batches
//!    through `Engine::submit` (expansion, validation, planning, one transaction), by one
//!    submitter and by 8 concurrent submitters, on SQLite (a file; WAL, `synchronous =
//!    FULL`) and on PostgreSQL. Reference: the backend's durable commit rate (one-row
//!    transactions, one client), the floor a store that commits once per batch stands on.
//! 2. `jobs` — job throughput on PostgreSQL (claim + complete + chain advance): 20,000
//!    reboot host runs (3 jobs each) drained by 1, 4 and 16 store workers, each a loop of
//!    `job_claim` (32) then one `job_complete_many`. References in the same run:
//!    - the raw limit: `pgbench` driving the same SQL (`benches/sql/pg-job-cycle.sql`: the
//!      claim statement `SqlStore` sends, then completion and chain advance as one
//!      statement) with as many clients, on the same server and data;
//!    - graphile-worker 0.18 (`benches/graphile/`, from npm, batching on) with as many
//!      concurrent jobs, on the same server, when `scripts/bench-store` has installed it.
//!
//! `MAAS_BENCH_WORKERS=1,4` picks the worker counts of the job part.
//! Run everything with `./scripts/bench-store` (starts the servers, installs graphile-worker,
//! runs this with `--bench`). Under `cargo test --all-targets` this runs at a small size;
//! the PostgreSQL parts need `MAAS_TEST_POSTGRES_URL` (set by `./scripts/test`) and say so
//! when it is missing.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use maas::machine::{self, HostTarget, JobOutcome};
use maas::plan::StepKind;
use maas::ports::inventory::Inventory;
use maas::ports::store::*;
use maas::store::{OpenOptions, SqlStore};
use maas::*;
use maas_sim::fleet_hosts;
use maas_sim::{FaultPlan, SimFleet};

/// Full size under `cargo bench`, a smoke run under `cargo test --all-targets`.
struct Size {
    /// Seconds spent measuring the commit-rate reference.
    commit_seconds: f64,
    submit_hosts: usize,
    job_hosts: usize,
    workers: Vec<usize>,
}

const PER_SUBMIT: usize = 100;
const CLAIM: usize = 128;

fn engine_on(store: Arc<SqlStore>) -> Engine {
    let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
    let clock = Arc::new(SystemClock::new());
    Engine::builder(store.clone(), store, fleet, clock.clone(), IdGenerator::new(clock, 3)).build()
}

async fn open(url: &str) -> SqlStore {
    let options = OpenOptions { max_connections: 24, ..OpenOptions::default() };
    SqlStore::open(url, &options, Rules::default()).await.unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// A fresh database `name` on the PostgreSQL server behind `url`; returns its URL.
async fn fresh_pg(url: &str, name: &str) -> String {
    let admin = open(url).await;
    let conn = admin.connection();
    use maas::store::sea_orm::ConnectionTrait;
    conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}")).await.unwrap();
    conn.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    format!("{base}/{name}")
}

/// Durable one-row commits per second by one client: the reference for submits.
async fn commit_rate(store: &SqlStore, seconds: f64) -> f64 {
    use maas::store::sea_orm::{ConnectionTrait, TransactionTrait};
    let conn = store.connection();
    conn.execute_unprepared("CREATE TABLE bench_commits (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)").await.unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        let txn = conn.begin().await.unwrap();
        txn.execute_unprepared(&format!("INSERT INTO bench_commits (id, v) VALUES ({n}, {n})")).await.unwrap();
        txn.commit().await.unwrap();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Submits `hosts` hosts in 100-host batches from `submitters` concurrent tasks; host-actions/s.
async fn submit_rate(engine: &Engine, hosts: usize, first: usize, submitters: usize) -> f64 {
    let batches: Vec<usize> = (0..hosts / PER_SUBMIT).map(|b| first + b * PER_SUBMIT).collect();
    let per = batches.len().div_ceil(submitters);
    let started = Instant::now();
    let tasks: Vec<_> = batches
        .chunks(per)
        .map(|mine| {
            let engine = engine.clone();
            let mine = mine.to_vec();
            tokio::spawn(async move {
                let who = Principal::new("bench", []);
                for start in mine {
                    let end = start + PER_SUBMIT - 1;
                    let req =
                        BatchRequest::new(Action::Reboot { soft: false }, [format!("sim[{start:06}-{end:06}].dc1")]);
                    engine.submit(&who, &req).await.unwrap_or_else(|e| panic!("{e}"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    hosts as f64 / started.elapsed().as_secs_f64()
}

async fn submit_part(label: &str, url: &str, size: &Size) {
    let store = Arc::new(open(url).await);
    let fleet = SimFleet::new(1, FaultPlan::none());
    store.host_upsert_many(fleet_hosts(&fleet, 1, 2 * size.submit_hosts)).await.unwrap();
    let engine = engine_on(store.clone());
    let one = submit_rate(&engine, size.submit_hosts, 1, 1).await;
    let eight = submit_rate(&engine, size.submit_hosts, 1 + size.submit_hosts, 8).await;
    let commits = commit_rate(&store, size.commit_seconds).await;
    let reference = commits * PER_SUBMIT as f64;
    println!(
        "  {label}: durable one-row commits, 1 client (reference): {commits:>9.0} commits/s = {reference:>9.0} host-actions/s at one commit per batch"
    );
    println!(
        "  {label}: Engine::submit, 1 submitter               : {one:>9.0} host-actions/s ({:.2}x)",
        one / reference
    );
    println!(
        "  {label}: Engine::submit, 8 submitters              : {eight:>9.0} host-actions/s ({:.2}x)",
        eight / reference
    );
}

/// Loads `hosts` reboot host runs (3 jobs each), every one running at once.
async fn load_jobs(store: &SqlStore, hosts: usize) {
    let fleet = SimFleet::new(1, FaultPlan::none());
    let inventory = fleet_hosts(&fleet, 1, hosts);
    store.host_upsert_many(inventory.clone()).await.unwrap();
    let clock = SystemClock::new();
    let ids = IdGenerator::new(Arc::new(SystemClock::new()), 5);
    let who = Principal::new("bench", []);
    for chunk in inventory.chunks(1000) {
        let mut req = BatchRequest::new(Action::Reboot { soft: false }, chunk.iter().map(|h| h.hostname.to_string()));
        req.rollout.max_in_flight = chunk.len() as u32;
        let spec = BatchSpec::from_request(&req, chunk.iter().map(|h| h.hostname.clone()).collect());
        let targets = chunk
            .iter()
            .map(|h| HostTarget {
                hostname: h.hostname.clone(),
                site: h.site.clone(),
                pool: h.pool.clone(),
                sku: h.sku.clone(),
            })
            .collect::<Vec<_>>();
        let new_batch = machine::plan_submission(spec, &who, &targets, clock.now(), &ids, &Rules::default());
        store.batch_submit(BatchSubmitParams { new_batch }).await.unwrap();
    }
    // What autovacuum does within a minute of a wave (maas sets its threshold to 2%):
    // every contender starts from the same, analyzed, table.
    use maas::store::sea_orm::ConnectionTrait;
    store.connection().execute_unprepared("ANALYZE").await.unwrap();
}

/// Drains the loaded jobs with `workers` store workers; jobs/s.
async fn drain_rate(store: Arc<SqlStore>, total: usize, workers: usize) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let clock = SystemClock::new();
                while done.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                    let jobs = store
                        .job_claim(JobClaimParams {
                            site: Site::new("dc1").unwrap(),
                            kinds: StepKind::ALL.to_vec(),
                            limit: CLAIM,
                            owner: format!("bench-{w}"),
                            now: clock.now(),
                            lease: Duration::from_secs(600),
                        })
                        .await
                        .unwrap();
                    if jobs.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    let completions = jobs
                        .iter()
                        .map(|j| JobCompletion { job_id: j.id, attempt: j.attempt, outcome: JobOutcome::Succeeded })
                        .collect();
                    let results =
                        store.job_complete_many(JobCompleteManyParams { completions, now: clock.now() }).await.unwrap();
                    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
                    done.fetch_add(jobs.len(), Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let n = done.load(Ordering::Relaxed);
    assert_eq!(n, total, "every job ran once");
    n as f64 / started.elapsed().as_secs_f64()
}

/// Counts jobs in `state` (for the pgbench reference, which reports no job counts itself).
async fn count_jobs(store: &SqlStore, state: JobState) -> usize {
    store.job_list(JobListParams { states: vec![state], ..Default::default() }).await.unwrap().len()
}

/// pgbench with `clients` clients running `benches/sql/pg-job-cycle.sql` until the jobs
/// run out; jobs/s.
async fn pgbench_rate(url: &str, store: &SqlStore, total: usize, clients: usize) -> Result<f64, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sql/pg-job-cycle.sql");
    // Each cycle takes up to 32 jobs; enough cycles for the whole queue, however it splits.
    let cycles = (total / CLAIM / clients + 1) * 2;
    let started = Instant::now();
    let out = Command::new("pgbench")
        .args(["-n", "-c", &clients.to_string(), "-j", &clients.min(2).to_string()])
        .args(["-t", &cycles.to_string(), "-f", script, url])
        .output()
        .map_err(|e| format!("pgbench: {e}"))?;
    let elapsed = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let done = count_jobs(store, JobState::Succeeded).await;
    if done < total * 9 / 10 {
        return Err(format!("pgbench finished only {done} of {total} jobs"));
    }
    Ok(done as f64 / elapsed)
}

/// graphile-worker 0.18 on the same server (`benches/graphile/run.mjs`); jobs/s.
fn graphile_rate(url: &str, jobs: usize, concurrency: usize) -> Result<f64, String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/graphile");
    if !std::path::Path::new(dir).join("node_modules/graphile-worker").exists() {
        return Err("not installed: ./scripts/bench-store installs it from npm".into());
    }
    let out = Command::new("node")
        .current_dir(dir)
        .args(["run.mjs", url, &jobs.to_string(), &concurrency.to_string()])
        .output()
        .map_err(|e| format!("node: {e}"))?;
    if !out.status.success() {
        return Err(format!("graphile-worker run failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("jobs/s ")).ok_or_else(|| format!("no rate in: {stdout}"))?;
    line.trim().parse().map_err(|e| format!("{line}: {e}"))
}

async fn jobs_part(url: &str, size: &Size) {
    let hosts = size.job_hosts;
    let total = hosts * 3;
    println!("  postgres: {hosts} reboot host runs ({total} jobs), claim {CLAIM} + complete + advance");
    for &workers in &size.workers {
        let db = fresh_pg(url, "maas_bench_jobs").await;
        let store = Arc::new(open(&db).await);
        load_jobs(&store, hosts).await;
        let ours = drain_rate(store.clone(), total, workers).await;
        drop(store);
        let db = fresh_pg(url, "maas_bench_jobs").await;
        let store = open(&db).await;
        load_jobs(&store, hosts).await;
        let raw = pgbench_rate(&db, &store, total, workers).await;
        drop(store);
        let graphile = graphile_rate(&fresh_pg(url, "maas_bench_graphile").await, total, workers);
        let vs = |r: &Result<f64, String>| match r {
            Ok(rate) => format!("{rate:>8.0} jobs/s -> maas {:.2}x", ours / rate),
            Err(why) => format!("skipped: {why}"),
        };
        println!(
            "  {workers:>2} worker(s): maas {ours:>8.0} jobs/s | pgbench same SQL {} | graphile-worker {}",
            vs(&raw),
            vs(&graphile)
        );
    }
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let mut size = if all.iter().any(|a| a == "--bench") {
        Size { commit_seconds: 3.0, submit_hosts: 50_000, job_hosts: 20_000, workers: vec![1, 4, 16] }
    } else {
        Size { commit_seconds: 0.3, submit_hosts: 1_000, job_hosts: 300, workers: vec![1, 4] }
    };
    if let Ok(list) = std::env::var("MAAS_BENCH_WORKERS") {
        size.workers = list.split(',').filter_map(|w| w.trim().parse().ok()).collect();
    }
    let args: Vec<&String> = all.iter().filter(|a| !a.starts_with("--")).collect();
    let want = |part: &str| args.is_empty() || args.iter().any(|a| *a == part);
    let pg = std::env::var("MAAS_BENCH_POSTGRES_URL").or_else(|_| std::env::var("MAAS_TEST_POSTGRES_URL")).ok();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        if want("submit") {
            println!("durable submit, {}-host reboot batches, {} hosts per run:", PER_SUBMIT, size.submit_hosts);
            let dir = std::env::temp_dir().join(format!("maas-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            submit_part("sqlite  ", &format!("sqlite://{}/submit.db", dir.display()), &size).await;
            let _ = std::fs::remove_dir_all(&dir);
            match &pg {
                Some(url) => submit_part("postgres", &fresh_pg(url, "maas_bench_submit").await, &size).await,
                None => println!("  postgres: needs MAAS_BENCH_POSTGRES_URL (./scripts/bench-store starts a server)"),
            }
        }
        if want("jobs") {
            println!("job throughput:");
            match &pg {
                Some(url) => jobs_part(url, &size).await,
                None => println!("  postgres: needs MAAS_BENCH_POSTGRES_URL (./scripts/bench-store starts a server)"),
            }
        }
    });
}
