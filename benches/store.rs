//! SQL store benchmarks (a harness binary: each figure is one timed run, reported next to a
//! reference measured in the same run).
//!
//! 1. `submit` — durable submit throughput, in host-actions/s, of 100-host reboot batches
//!    through `Engine::submit` (expansion, validation, planning, one transaction), by one
//!    submitter and by 8 concurrent submitters, on SQLite (a file; WAL, `synchronous =
//!    FULL`) and on PostgreSQL. Reference: the backend's durable commit rate (one-row
//!    transactions, one client), the floor a store that commits once per batch stands on.
//! 2. `jobs` — job throughput (claim + complete + chain advance): 20,000 reboot host runs
//!    (3 jobs each) drained by 1, 4 and 16 store workers, each a loop of `job_claim` (128)
//!    then one `job_complete_many`, on PostgreSQL and on MariaDB. References in the same run:
//!    - the raw limit: the same SQL with as many clients on the same server and data — on
//!      PostgreSQL `pgbench` driving `benches/sql/pg-job-cycle.sql` (the claim statement
//!      `SqlStore` sends, then completion and chain advance as one statement); on MariaDB
//!      the statements of `benches/sql/mariadb-job-cycle.sql` (MariaDB has no pgbench),
//!      sent as they are by as many tasks;
//!    - graphile-worker 0.18 (`benches/graphile/`, from npm, batching on) with as many
//!      concurrent jobs, on the same PostgreSQL server, when `scripts/bench-store` has
//!      installed it.
//! 3. `queue1m` — the claim at depth on PostgreSQL: 333,334 reboot host runs (1,000,002
//!    jobs) queued at once, the claim's plan (`EXPLAIN ANALYZE`, it must read O(limit)
//!    rows), and 60,000 of them drained by 4 workers, against the `jobs` part's 60,000-job
//!    queue drained by 4 workers in the same run.
//!
//! `MAAS_BENCH_WORKERS=1,4` picks the worker counts of the job part. `MAAS_BENCH_ROUNDS=5`
//! sets the rounds of the submit and job parts (3 under `--bench`, each submit round on a
//! fresh database): the contenders take turns, and a summary line gives the median and
//! range of maas's rates and of each ratio (paired within a round).
//! Run everything with `./scripts/bench-store` (starts the servers, installs graphile-worker,
//! runs this with `--bench`). Under `cargo test --all-targets` this runs at a small size;
//! the server parts need `MAAS_TEST_POSTGRES_URL` and `MAAS_TEST_MYSQL_URL` (set by
//! `./scripts/test`; `MAAS_BENCH_*_URL` under `./scripts/bench-store`) and say so when one
//! is missing.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use maas::machine::{self, HostTarget, JobOutcome};
use maas::plan::StepKind;
use maas::ports::inventory::Inventory;
use maas::ports::store::*;
use maas::store::sea_orm::{DbBackend, Statement};
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
    /// Host runs queued for the `queue1m` part (3 jobs each).
    deep_hosts: usize,
    /// Rounds of the `submit` and `jobs` parts: each contender runs once per round, in
    /// turn, and the summary gives each figure's and each ratio's median and range.
    rounds: usize,
}

/// `median (min-max)` of `v`, each formatted by `f`.
fn spread(v: &[f64], f: impl Fn(f64) -> String) -> String {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.as_slice() {
        [] => "-".to_string(),
        [one] => f(*one),
        all => format!("{} ({}-{})", f(all[all.len() / 2]), f(all[0]), f(all[all.len() - 1])),
    }
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

/// A fresh database `name` on the PostgreSQL or MariaDB server behind `url`; returns its URL.
async fn fresh_db(url: &str, name: &str) -> String {
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

/// The submit part on each of `urls` in turn, a fresh database per round.
async fn submit_part(label: &str, urls: &[String], size: &Size) {
    let (mut ones, mut eights, mut ratios_one, mut ratios_eight) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (round, url) in urls.iter().enumerate() {
        let store = Arc::new(open(url).await);
        let fleet = SimFleet::new(1, FaultPlan::none());
        store.host_upsert_many(fleet_hosts(&fleet, 1, 2 * size.submit_hosts)).await.unwrap();
        let engine = engine_on(store.clone());
        let one = submit_rate(&engine, size.submit_hosts, 1, 1).await;
        let eight = submit_rate(&engine, size.submit_hosts, 1 + size.submit_hosts, 8).await;
        let commits = commit_rate(&store, size.commit_seconds).await;
        let reference = commits * PER_SUBMIT as f64;
        let round = round + 1;
        println!(
            "  {label}, round {round}: durable one-row commits, 1 client (reference): {commits:>9.0} commits/s = {reference:>9.0} host-actions/s at one commit per batch"
        );
        println!(
            "  {label}, round {round}: Engine::submit, 1 submitter               : {one:>9.0} host-actions/s ({:.2}x)",
            one / reference
        );
        println!(
            "  {label}, round {round}: Engine::submit, 8 submitters              : {eight:>9.0} host-actions/s ({:.2}x)",
            eight / reference
        );
        ones.push(one);
        eights.push(eight);
        ratios_one.push(one / reference);
        ratios_eight.push(eight / reference);
    }
    if urls.len() > 1 {
        let rate = |v: f64| format!("{v:.0}");
        let ratio = |v: f64| format!("{v:.2}x");
        println!(
            "  {label}, median (range) of {} rounds: 1 submitter {} host-actions/s ({}) | 8 submitters {} ({})",
            urls.len(),
            spread(&ones, rate),
            spread(&ratios_one, ratio),
            spread(&eights, rate),
            spread(&ratios_eight, ratio)
        );
    }
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
    let conn = store.connection();
    let analyze = match conn.get_database_backend() {
        maas::store::sea_orm::DbBackend::MySql => "ANALYZE TABLE maas_jobs, maas_host_runs",
        _ => "ANALYZE",
    };
    conn.execute_unprepared(analyze).await.unwrap();
}

/// Runs `goal` of the loaded jobs (all of them: `goal` = every job) with `workers` store
/// workers; jobs/s.
async fn drain_rate(store: Arc<SqlStore>, goal: usize, total: usize, workers: usize) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let clock = SystemClock::new();
                while done.load(Ordering::Relaxed) < goal && Instant::now() < deadline {
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
    assert!(n >= goal, "{n} of {goal} jobs ran before the deadline");
    assert!(n <= total, "{n} completions of {total} jobs: a job ran twice");
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
    // Each cycle takes up to CLAIM jobs; enough cycles for the whole queue, however it splits.
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

/// The raw-SQL reference on MariaDB: `benches/sql/mariadb-job-cycle.sql`'s claim and
/// completion transactions from `clients` tasks until `total` jobs ran; jobs/s.
async fn mariadb_raw_rate(store: Arc<SqlStore>, total: usize, clients: usize) -> Result<f64, String> {
    use maas::store::sea_orm::{ConnectionTrait, IsolationLevel, TransactionTrait};
    let script = include_str!("sql/mariadb-job-cycle.sql");
    // The statements under `-- claim` and under `-- complete`, comments dropped.
    let part = |name: &str| -> Vec<String> {
        let body = script.split(&format!("-- {name}\n")).nth(1).unwrap_or_default();
        let body = body.split("\n-- ").next().unwrap_or_default();
        body.split(";\n")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches(';').to_string())
            .collect()
    };
    let (claim, complete) = (part("claim"), part("complete"));
    if claim.len() != 2 || complete.len() != 3 {
        return Err(format!("mariadb-job-cycle.sql: {} claim and {} complete statements", claim.len(), complete.len()));
    }
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (store, done, claim, complete) = (store.clone(), done.clone(), claim.clone(), complete.clone());
            tokio::spawn(async move {
                let db = store.connection();
                let fill = |sql: &str, ids: &str| sql.replace(":client_id", &client.to_string()).replace(":ids", ids);
                while done.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                    let txn = db.begin_with_config(Some(IsolationLevel::ReadCommitted), None).await?;
                    let picked = txn.query_all_raw(Statement::from_string(DbBackend::MySql, claim[0].clone())).await?;
                    let ids = picked
                        .iter()
                        .map(|r| r.try_get::<String>("", "id").map(|id| format!("'{id}'")))
                        .collect::<Result<Vec<_>, _>>()?;
                    if ids.is_empty() {
                        txn.commit().await?;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    let ids = ids.join(", ");
                    txn.execute_unprepared(&fill(&claim[1], &ids)).await?;
                    txn.commit().await?;
                    let txn = db.begin_with_config(Some(IsolationLevel::ReadCommitted), None).await?;
                    let finished = txn.execute_unprepared(&fill(&complete[0], &ids)).await?.rows_affected();
                    for sql in &complete[1..] {
                        txn.execute_unprepared(&fill(sql, &ids)).await?;
                    }
                    txn.commit().await?;
                    done.fetch_add(finished as usize, Ordering::Relaxed);
                }
                Ok::<(), maas::store::sea_orm::DbErr>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    let n = done.load(Ordering::Relaxed);
    if n != total {
        return Err(format!("{n} of {total} jobs ran before the deadline"));
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// The servers the job parts run on.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    Postgres,
    MariaDb,
}

async fn jobs_part(server: Server, url: &str, size: &Size) {
    let hosts = size.job_hosts;
    let total = hosts * 3;
    let label = if server == Server::Postgres { "postgres" } else { "mariadb" };
    println!("  {label}: {hosts} reboot host runs ({total} jobs), claim {CLAIM} + complete + advance");
    for &workers in &size.workers {
        // Per round: maas's rate, and its ratio to each reference measured in that round.
        let (mut ours_all, mut raw_all, mut graphile_all) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=size.rounds {
            let db = fresh_db(url, "maas_bench_jobs").await;
            let store = Arc::new(open(&db).await);
            load_jobs(&store, hosts).await;
            let ours = drain_rate(store.clone(), total, total, workers).await;
            drop(store);
            let db = fresh_db(url, "maas_bench_jobs").await;
            let store = Arc::new(open(&db).await);
            load_jobs(&store, hosts).await;
            let raw = match server {
                Server::Postgres => pgbench_rate(&db, &store, total, workers).await,
                Server::MariaDb => mariadb_raw_rate(store.clone(), total, workers).await,
            };
            drop(store);
            let graphile = match server {
                Server::Postgres => Some(graphile_rate(&fresh_db(url, "maas_bench_graphile").await, total, workers)),
                Server::MariaDb => None,
            };
            let vs = |r: &Result<f64, String>| match r {
                Ok(rate) => format!("{rate:>8.0} jobs/s -> maas {:.2}x", ours / rate),
                Err(why) => format!("skipped: {why}"),
            };
            let graphile_shown = graphile.as_ref().map(|g| format!(" | graphile-worker {}", vs(g))).unwrap_or_default();
            println!(
                "  {workers:>2} worker(s), round {round}: maas {ours:>8.0} jobs/s | same SQL raw {}{graphile_shown}",
                vs(&raw)
            );
            ours_all.push(ours);
            raw_all.extend(raw.ok().map(|r| ours / r));
            graphile_all.extend(graphile.and_then(Result::ok).map(|g| ours / g));
        }
        if size.rounds > 1 {
            let rate = |v: f64| format!("{v:.0}");
            let ratio = |v: f64| format!("{v:.2}x");
            let graphile = if server == Server::Postgres {
                format!(" | vs graphile-worker {}", spread(&graphile_all, ratio))
            } else {
                String::new()
            };
            println!(
                "  {workers:>2} worker(s), median (range) of {} rounds: maas {} jobs/s | vs same SQL raw {}{graphile}",
                size.rounds,
                spread(&ours_all, rate),
                spread(&raw_all, ratio)
            );
        }
    }
}

/// The claim at depth (see the module doc): the plan of a claim in a deep queue, and
/// throughput from it against the `jobs` part's queue, both drained by 4 workers.
async fn deep_queue_part(url: &str, size: &Size) {
    use maas::store::sea_orm::{ConnectionTrait, TransactionTrait};
    let workers = 4;
    let shallow_jobs = size.job_hosts * 3;
    let db = fresh_db(url, "maas_bench_jobs").await;
    let store = Arc::new(open(&db).await);
    load_jobs(&store, size.job_hosts).await;
    let shallow = drain_rate(store.clone(), shallow_jobs, shallow_jobs, workers).await;
    drop(store);
    let deep_jobs = size.deep_hosts * 3;
    let db = fresh_db(url, "maas_bench_deep").await;
    let store = Arc::new(open(&db).await);
    let loading = Instant::now();
    load_jobs(&store, size.deep_hosts).await;
    println!("  postgres: {deep_jobs} jobs queued in {:.0} s; the claim's plan:", loading.elapsed().as_secs_f64());
    // The claim's pick (the statement SqlStore::job_claim sends), explained and rolled back.
    let explain = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) SELECT id FROM maas_jobs \
        WHERE state = 'available' AND site = 'dc1' AND kind IN ('preflight', 'power_cycle', 'verify') \
        AND run_at <= 9000000000000000 ORDER BY queue_key, id LIMIT 128 FOR UPDATE SKIP LOCKED";
    let txn = store.connection().begin().await.unwrap();
    for row in txn.query_all_raw(Statement::from_string(DbBackend::Postgres, explain)).await.unwrap() {
        println!("    {}", row.try_get::<String>("", "QUERY PLAN").unwrap());
    }
    txn.rollback().await.unwrap();
    let deep = drain_rate(store, shallow_jobs, deep_jobs, workers).await;
    println!(
        "  {workers} workers: {shallow_jobs} of {shallow_jobs} queued jobs {shallow:>8.0} jobs/s | {shallow_jobs} of {deep_jobs} queued jobs {deep:>8.0} jobs/s ({:.2}x)",
        deep / shallow
    );
}

fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let mut size = if all.iter().any(|a| a == "--bench") {
        Size {
            commit_seconds: 3.0,
            submit_hosts: 50_000,
            job_hosts: 20_000,
            workers: vec![1, 4, 16],
            deep_hosts: 333_334,
            rounds: 3,
        }
    } else {
        Size {
            commit_seconds: 0.3,
            submit_hosts: 1_000,
            job_hosts: 300,
            workers: vec![1, 4],
            deep_hosts: 1_000,
            rounds: 1,
        }
    };
    if let Ok(list) = std::env::var("MAAS_BENCH_WORKERS") {
        size.workers = list.split(',').filter_map(|w| w.trim().parse().ok()).collect();
    }
    if let Some(rounds) = std::env::var("MAAS_BENCH_ROUNDS").ok().and_then(|r| r.trim().parse().ok()) {
        size.rounds = rounds;
    }
    let args: Vec<&String> = all.iter().filter(|a| !a.starts_with("--")).collect();
    let want = |part: &str| args.is_empty() || args.iter().any(|a| *a == part);
    let server = |name: &str| {
        std::env::var(format!("MAAS_BENCH_{name}_URL")).or_else(|_| std::env::var(format!("MAAS_TEST_{name}_URL"))).ok()
    };
    let (pg, mariadb) = (server("POSTGRES"), server("MYSQL"));
    let missing = |label: &str, name: &str| {
        println!("  {label}: needs MAAS_BENCH_{name}_URL (./scripts/bench-store starts a server)")
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        if want("submit") {
            println!("durable submit, {}-host reboot batches, {} hosts per run:", PER_SUBMIT, size.submit_hosts);
            let dir = std::env::temp_dir().join(format!("maas-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let files: Vec<String> =
                (1..=size.rounds).map(|r| format!("sqlite://{}/submit-{r}.db", dir.display())).collect();
            submit_part("sqlite  ", &files, &size).await;
            let _ = std::fs::remove_dir_all(&dir);
            match &pg {
                Some(url) => {
                    let mut databases = Vec::new();
                    for r in 1..=size.rounds {
                        databases.push(fresh_db(url, &format!("maas_bench_submit_{r}")).await);
                    }
                    submit_part("postgres", &databases, &size).await
                }
                None => missing("postgres", "POSTGRES"),
            }
        }
        if want("jobs") {
            println!("job throughput:");
            match &pg {
                Some(url) => jobs_part(Server::Postgres, url, &size).await,
                None => missing("postgres", "POSTGRES"),
            }
            match &mariadb {
                Some(url) => jobs_part(Server::MariaDb, url, &size).await,
                None => missing("mariadb", "MYSQL"),
            }
        }
        if want("queue1m") {
            println!("a deep queue:");
            match &pg {
                Some(url) => deep_queue_part(url, &size).await,
                None => missing("postgres", "POSTGRES"),
            }
        }
    });
}
