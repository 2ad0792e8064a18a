//! Several engine processes on one database, and one killed with SIGKILL.
//!
//! The test binary re-executes itself as an engine instance (`instance_entry_point`, which
//! does nothing unless `MAAS_INSTANCE_URL` is set): each instance runs a supervised worker
//! pool and the leader singletons on the shared PostgreSQL or MariaDB database from
//! `./scripts/test`, with simulated zero-latency BMCs that log every power command to a
//! per-process file, so the parent can prove that no step ran twice.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use async_trait::async_trait;
use common::server_url;
use maas_core::host::BmcEndpoint;
use maas_core::machine::Rules;
use maas_core::ports::inventory::Inventory;
use maas_core::ports::power::*;
use maas_core::ports::store::*;
use maas_core::*;
use maas_engine::InstanceId;
use maas_engine::{Engine, SingletonIntervals, SystemClock};
use maas_engine::{PoolConfig, Singletons, WorkerConfig, WorkerPool};
use maas_sim::sim::fleet_hosts;
use maas_sim::{FaultPlan, SimFleet};
use maas_store::{InstanceLock, OpenOptions, SqlStore};
use sea_orm::ConnectionTrait;

const PER_BATCH: usize = 250;

/// A simulated fleet that appends `hostname op` to a log file for every power command.
struct LoggedFleet {
    fleet: SimFleet,
    names: HashMap<String, String>,
    log: std::sync::Mutex<std::fs::File>,
}

#[async_trait]
impl PowerDriver for LoggedFleet {
    async fn power_status(&self, bmc: &BmcEndpoint) -> Result<PowerState, PowerError> {
        self.fleet.power_status(bmc).await
    }
    async fn power(&self, bmc: &BmcEndpoint, op: PowerOp) -> Result<PowerReport, PowerError> {
        let r = self.fleet.power(bmc, op).await;
        let host = self.names.get(&bmc.address).cloned().unwrap_or_default();
        let mut f = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(f, "{host} {op}");
        r
    }
    async fn set_boot_device(&self, bmc: &BmcEndpoint, device: BootDevice, persistent: bool) -> Result<(), PowerError> {
        self.fleet.set_boot_device(bmc, device, persistent).await
    }
    async fn boot_device(&self, bmc: &BmcEndpoint) -> Result<BootDevice, PowerError> {
        self.fleet.boot_device(bmc).await
    }
    async fn probe(&self, bmc: &BmcEndpoint) -> Result<ProbeReport, PowerError> {
        self.fleet.probe(bmc).await
    }
    async fn insert_media(&self, bmc: &BmcEndpoint, image_url: &str) -> Result<(), PowerError> {
        self.fleet.insert_media(bmc, image_url).await
    }
    async fn eject_media(&self, bmc: &BmcEndpoint) -> Result<(), PowerError> {
        self.fleet.eject_media(bmc).await
    }
}

fn engine_config(lease: Duration) -> EngineConfig {
    EngineConfig {
        lease,
        leader_ttl: Duration::from_secs(2),
        intervals: SingletonIntervals {
            rescue: Duration::from_millis(300),
            outbox: Duration::from_millis(500),
            ..Default::default()
        },
        ..EngineConfig::default()
    }
}

async fn instance_engine(url: &str, hosts: usize, log: &Path, lease: Duration) -> (Engine, Arc<SqlStore>) {
    let store = Arc::new(SqlStore::open(url, &OpenOptions::default(), Rules::default()).await.unwrap());
    let fleet = SimFleet::new(1, FaultPlan::none());
    let names = fleet_hosts(&fleet, 1, hosts).into_iter().map(|h| (h.bmc.address, h.hostname.to_string())).collect();
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let driver = Arc::new(LoggedFleet { fleet, names, log: std::sync::Mutex::new(file) });
    let clock = Arc::new(SystemClock::new());
    let seed = std::process::id() as u64;
    let engine = Engine::builder(store.clone(), store.clone(), driver, clock.clone(), IdGenerator::new(clock, seed))
        .config(engine_config(lease))
        .build();
    (engine, store)
}

async fn claims_left(store: &SqlStore) -> usize {
    let sql = sea_orm::Statement::from_string(store.backend(), "SELECT hostname FROM maas_claims");
    store.connection().query_all_raw(sql).await.unwrap().len()
}

async fn unfinished(store: &SqlStore) -> usize {
    let states = vec![BatchState::Running, BatchState::Paused, BatchState::Cancelling];
    store.batch_list(BatchListParams { states, limit: 10_000, ..Default::default() }).await.unwrap().len()
}

/// The engine instance a parent test starts as a child process (no-op otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_entry_point() {
    let Ok(url) = std::env::var("MAAS_INSTANCE_URL") else { return };
    let hosts: usize = std::env::var("MAAS_INSTANCE_HOSTS").unwrap().parse().unwrap();
    let name = std::env::var("MAAS_INSTANCE_NAME").unwrap();
    let log = PathBuf::from(std::env::var("MAAS_INSTANCE_LOG").unwrap());
    // Short leases when a sibling is about to be killed (its jobs must be rescued quickly).
    let lease = if std::env::var("MAAS_INSTANCE_SHORT_LEASE").is_ok() { 3 } else { 60 };
    let (engine, store) = instance_engine(&url, hosts, &log, Duration::from_secs(lease)).await;
    // As maasd starts: hold the name, then take back the leases of its earlier runs.
    let _name = InstanceLock::acquire(&url, &name, Duration::from_secs(5)).await.unwrap();
    let incarnation = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let id = InstanceId::new(&name, incarnation).unwrap();
    let taken = engine.take_over_earlier_incarnations(&id).await.unwrap();
    if let Ok(path) = std::env::var("MAAS_INSTANCE_TAKEN") {
        std::fs::write(path, format!("{}", taken.retried.len() + taken.failed.len())).unwrap();
    }
    let pool = WorkerPool::start(
        &engine,
        PoolConfig {
            site: Site::new("dc1").unwrap(),
            pool: Pool::new("web").unwrap(),
            workers: 3,
            worker: WorkerConfig {
                capacity: 64,
                flush_size: 64,
                flush_interval: Duration::from_millis(10),
                idle_poll: Duration::from_millis(20),
                ..Default::default()
            },
            restart_delay: Duration::from_millis(50),
            instance: id.to_string(),
        },
    );
    let leader = Singletons::new(engine.clone(), id.to_string()).start(Duration::from_millis(100));
    // The crash test's victim also submits, recording each acknowledged batch.
    if let Ok(acks) = std::env::var("MAAS_INSTANCE_SUBMIT_ACKS") {
        let mut acks = std::fs::OpenOptions::new().create(true).append(true).open(acks).unwrap();
        for first in (1..=hosts).step_by(50) {
            let req = BatchRequest::new(Action::PowerCycle, [format!("sim[{first:06}-{:06}].dc1", first + 49)]);
            let b = engine.submit(&Principal::new("crash", []), &req).await.unwrap();
            writeln!(acks, "{}", b.batch.id).unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    while unfinished(&store).await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pool.shutdown().await;
    leader.shutdown().await;
}

fn spawn_instance(url: &str, hosts: usize, name: &str, log: &Path, acks: Option<&Path>) -> Child {
    spawn_instance_with(url, hosts, name, log, acks, &[])
}

fn spawn_instance_with(
    url: &str,
    hosts: usize,
    name: &str,
    log: &Path,
    acks: Option<&Path>,
    env: &[(&str, &Path)],
) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["instance_entry_point", "--exact", "--nocapture", "--test-threads=1"])
        .env("MAAS_INSTANCE_URL", url)
        .env("MAAS_INSTANCE_HOSTS", hosts.to_string())
        .env("MAAS_INSTANCE_NAME", name)
        .env("MAAS_INSTANCE_LOG", log);
    if let Some(a) = acks {
        cmd.env("MAAS_INSTANCE_SUBMIT_ACKS", a);
    }
    if name == "victim" || name == "survivor" {
        cmd.env("MAAS_INSTANCE_SHORT_LEASE", "1");
    }
    cmd.envs(env.iter().copied());
    cmd.spawn().unwrap()
}

fn wait(mut child: Child, limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "instance exited with {status}");
            return;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("instance did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn fresh_db(url: &str, tag: &str) -> (String, Arc<SqlStore>) {
    let (url, store) = common::fresh_server_db(url, &format!("maas_mp_{tag}_{}", std::process::id())).await;
    (url, Arc::new(store))
}

fn power_commands(logs: &[PathBuf]) -> (HashMap<String, usize>, Vec<usize>) {
    let mut per_host = HashMap::new();
    let mut per_log = Vec::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        per_log.push(text.lines().count());
        for line in text.lines() {
            *per_host.entry(line.to_string()).or_insert(0) += 1;
        }
    }
    (per_host, per_log)
}

async fn two_instances_share_the_work(server: &str, tag: &str) {
    let (url, store) = fresh_db(&server_url(server), tag).await;
    let hosts: usize = std::env::var("MAAS_MP_HOSTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000); // x 2 steps = 20,000 jobs
    let fleet = SimFleet::new(1, FaultPlan::none());
    store.host_upsert_many(fleet_hosts(&fleet, 1, hosts)).await.unwrap();
    let clock = Arc::new(SystemClock::new());
    let submitter =
        Engine::builder(store.clone(), store.clone(), Arc::new(fleet), clock.clone(), IdGenerator::new(clock, 77))
            .build();
    for first in (1..=hosts).step_by(PER_BATCH) {
        let mut req =
            BatchRequest::new(Action::PowerCycle, [format!("sim[{first:06}-{:06}].dc1", first + PER_BATCH - 1)]);
        req.rollout.max_in_flight = PER_BATCH as u32;
        submitter.submit(&Principal::new("mp", []), &req).await.unwrap();
    }
    let dir = std::env::temp_dir().join(format!("maas-mp-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let logs = [dir.join("a.log"), dir.join("b.log")];
    let started = Instant::now();
    let a = spawn_instance(&url, hosts, "a", &logs[0], None);
    let b = spawn_instance(&url, hosts, "b", &logs[1], None);
    wait(a, Duration::from_secs(300));
    wait(b, Duration::from_secs(300));
    let elapsed = started.elapsed();
    assert_eq!(unfinished(&store).await, 0, "every batch terminal");
    let jobs = store.job_list(JobListParams::default()).await.unwrap();
    assert_eq!(jobs.len(), hosts * 2);
    assert!(jobs.iter().all(|j| j.state == JobState::Succeeded), "none lost, none failed");
    let (per_host, per_log) = power_commands(&logs);
    assert_eq!(per_host.len(), hosts, "every host power-cycled");
    // A power cycle may run again only as a new attempt after the store declared the first
    // attempt's lease expired (a worker stalled past its 60 s lease) — never while a lease
    // was valid. Anything else executed twice is a double execution.
    let rescued: std::collections::HashSet<String> = jobs
        .iter()
        .filter(|j| j.kind == plan::StepKind::PowerCycle && j.attempt > 1)
        .filter(|j| j.last_error.as_deref().is_some_and(|e| e.contains("lease of worker")))
        .map(|j| format!("{} cycle", j.hostname))
        .collect();
    let twice: Vec<_> = per_host.iter().filter(|(h, n)| **n > 1 && !rescued.contains(*h)).collect();
    assert!(twice.is_empty(), "steps executed twice under a valid lease: {:?}", &twice[..twice.len().min(5)]);
    assert!(per_log.iter().all(|n| *n > 0), "both instances worked: {per_log:?}");
    assert_eq!(claims_left(&store).await, 0, "no claim left behind");
    println!(
        "{tag}: 2 processes x 3 workers ran {} jobs in {:.1} s ({:.0} jobs/s); power commands per process {per_log:?}; \
         re-run after an expired lease: {}",
        jobs.len(),
        elapsed.as_secs_f64(),
        jobs.len() as f64 / elapsed.as_secs_f64(),
        rescued.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Starts instance `name` submitting batches and SIGKILLs it mid-flight, once 10 batches
/// were acknowledged and it holds leases. Returns the acknowledged batch ids and the jobs
/// it held at its death.
async fn kill_mid_flight(
    url: &str,
    store: &SqlStore,
    hosts: usize,
    name: &str,
    log: &Path,
    acks: &Path,
) -> (Vec<String>, Vec<JobRecord>) {
    let leased = || async {
        store.job_list(JobListParams { states: vec![JobState::Running], ..Default::default() }).await.unwrap()
    };
    let mut victim = spawn_instance(url, hosts, name, log, Some(acks));
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let acked = std::fs::read_to_string(acks).map(|a| a.lines().count()).unwrap_or(0);
        if acked >= 10 && !leased().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.kill().unwrap(); // SIGKILL
    victim.wait().unwrap();
    let acked: Vec<String> = std::fs::read_to_string(acks).unwrap().lines().map(String::from).collect();
    assert!(acked.len() >= 10, "{name} acknowledged {} batches before the kill", acked.len());
    // A COMMIT the victim sent just before the kill may still be applied by the server
    // after the process is gone: read the leased jobs once two reads 500 ms apart agree.
    let mut running = leased().await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let again = leased().await;
        if again == running {
            break;
        }
        running = again;
    }
    (acked, running)
}

/// Every acknowledged batch completed and nothing is left unfinished or claimed.
async fn assert_all_finished(store: &SqlStore, acked: &[String]) {
    for id in acked {
        let id = BatchId(id.parse().unwrap());
        let b = store.batch_get(id).await.unwrap().unwrap_or_else(|| panic!("acknowledged batch {id} lost"));
        assert_eq!(b.state, BatchState::Completed, "batch {id}");
    }
    assert_eq!(unfinished(store).await, 0, "every batch finishes");
    assert_eq!(claims_left(store).await, 0, "no orphaned claim");
}

/// The job `j` as it is now.
async fn job_now(store: &SqlStore, j: &JobRecord) -> JobRecord {
    let now = store.job_list(JobListParams { host_run_id: Some(j.host_run_id), ..Default::default() }).await.unwrap();
    now.into_iter().find(|x| x.id == j.id).unwrap()
}

/// Hosts in the crash tests.
const CRASH_HOSTS: usize = 2_000;

/// A fresh database on `server` with [`CRASH_HOSTS`] simulated hosts, and a scratch
/// directory for the instances' logs: (url, store, directory).
async fn crash_lab(server: &str, tag: &str, what: &str) -> (String, Arc<SqlStore>, PathBuf) {
    let (url, store) = fresh_db(&server_url(server), tag).await;
    store.host_upsert_many(fleet_hosts(&SimFleet::new(1, FaultPlan::none()), 1, CRASH_HOSTS)).await.unwrap();
    let dir = std::env::temp_dir().join(format!("maas-{what}-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    (url, store, dir)
}

async fn a_killed_instance_loses_nothing(server: &str, tag: &str) {
    let (url, store, dir) = crash_lab(server, tag, "crash").await;
    let hosts = CRASH_HOSTS;
    let acks = dir.join("acks");
    let logs = [dir.join("victim.log"), dir.join("survivor.log")];
    let (acked, running) = kill_mid_flight(&url, &store, hosts, "victim", &logs[0], &acks).await;
    let survivor = spawn_instance(&url, hosts, "survivor", &logs[1], None);
    wait(survivor, Duration::from_secs(300));
    assert_all_finished(&store, &acked).await;
    for j in &running {
        let same = job_now(&store, j).await;
        assert_eq!(
            same.state,
            JobState::Succeeded,
            "a job the victim held was rescued and finished: {} {} attempt {} error {:?}",
            same.hostname,
            same.kind,
            same.attempt,
            same.last_error
        );
        assert!(same.attempt > j.attempt, "rescued jobs run a new attempt");
    }
    println!(
        "{tag}: victim killed after {} acknowledged batches with {} jobs leased; all batches finished, none lost",
        acked.len(),
        running.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A killed instance started again under its name (new incarnation) takes back the leases
/// its dead run held before its workers start, instead of waiting out their 60 s leases:
/// every job the dead run held ran again with the "instance restarted" error on its failed
/// attempt, not "lease expired".
async fn a_restarted_instance_takes_back_its_leases_at_once(server: &str, tag: &str) {
    let (url, store, dir) = crash_lab(server, tag, "restart").await;
    let hosts = CRASH_HOSTS;
    let (acks, taken) = (dir.join("acks"), dir.join("taken"));
    let logs = [dir.join("first.log"), dir.join("again.log")];
    // "node" runs with 60 s leases: an expired-lease rescue would take a minute.
    let (acked, running) = kill_mid_flight(&url, &store, hosts, "node", &logs[0], &acks).await;
    assert!(!running.is_empty(), "the killed run held leases");
    let restarted = Instant::now();
    let again = spawn_instance_with(&url, hosts, "node", &logs[1], None, &[("MAAS_INSTANCE_TAKEN", &taken)]);
    wait(again, Duration::from_secs(300));
    let elapsed = restarted.elapsed();
    assert_all_finished(&store, &acked).await;
    let taken: usize = std::fs::read_to_string(&taken).unwrap().parse().unwrap();
    assert_eq!(taken, running.len(), "the restart took back every lease its dead run held");
    for j in &running {
        let same = job_now(&store, j).await;
        assert_eq!(same.state, JobState::Succeeded, "{} {}", same.hostname, same.kind);
        let error = same.last_error.as_deref().unwrap_or_default();
        assert!(error.contains("its instance restarted as node@"), "{} {}: {error}", same.hostname, same.kind);
    }
    println!(
        "{tag}: killed with {} jobs leased (60 s leases); restarted under its name, it took them back at start \
         and finished every batch {:.1} s after the restart",
        running.len(),
        elapsed.as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_share_20000_jobs() {
    two_instances_share_the_work("MAAS_TEST_POSTGRES_URL", "pg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_two_processes_share_20000_jobs() {
    two_instances_share_the_work("MAAS_TEST_MYSQL_URL", "my").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigkilled_instance_loses_nothing() {
    a_killed_instance_loses_nothing("MAAS_TEST_POSTGRES_URL", "pgk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_sigkilled_instance_loses_nothing() {
    a_killed_instance_loses_nothing("MAAS_TEST_MYSQL_URL", "myk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_instance_takes_back_its_leases_at_once() {
    a_restarted_instance_takes_back_its_leases_at_once("MAAS_TEST_POSTGRES_URL", "pgr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_restarted_instance_takes_back_its_leases_at_once() {
    a_restarted_instance_takes_back_its_leases_at_once("MAAS_TEST_MYSQL_URL", "myr").await;
}
