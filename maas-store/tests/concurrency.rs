//! 16 concurrent submitters with overlapping random host sets, on PostgreSQL and MariaDB
//! (and SQLite): every host is claimed at most once and every loser is rolled back whole.
//! The servers come from `./scripts/test`.

use std::collections::HashSet;
use std::sync::Arc;

mod common;

use common::server_url;
use maas_core::action::Action;
use maas_core::names::Hostname;
use maas_core::ports::store::*;
use maas_core::rng::SimRng;
use maas_sim::testkit::store::Harness;
use maas_store::SqlStore;

async fn fresh(url: &str, tag: &str) -> Arc<SqlStore> {
    if url.starts_with("sqlite:") {
        return Arc::new(common::open(url).await);
    }
    Arc::new(common::fresh_server_db(url, &format!("maas_conc_{tag}_{}", std::process::id())).await.1)
}

async fn sixteen_submitters(store: Arc<SqlStore>) {
    let t = Arc::new(Harness::new(store.clone()));
    let hosts = t.add_hosts("dc1", 64).await;
    let mut rng = SimRng::seed_from_u64(16);
    let mut total_winners = 0;
    for round in 0..5 {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let mut mine: Vec<Hostname> = Vec::new();
            while mine.len() < 8 {
                let h = hosts[rng.below(hosts.len() as u64) as usize].clone();
                if !mine.contains(&h) {
                    mine.push(h);
                }
            }
            let nb = t.new_batch(&mine, Action::PowerCycle, |_| {}).await;
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.batch_submit(BatchSubmitParams { new_batch: nb }).await }));
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(b) => winners.push(b.batch),
                Err(StoreError::Overlap { conflicts }) => losers.push(conflicts),
                Err(e) => panic!("round {round}: unexpected error {e}"),
            }
        }
        assert!(!winners.is_empty(), "round {round}: someone wins");
        assert!(losers.iter().all(|c| !c.is_empty()), "every loser is told who holds its hosts");
        let claims = store.claim_get_many(&hosts).await.unwrap();
        let claimed: HashSet<&Hostname> = claims.iter().map(|c| &c.hostname).collect();
        assert_eq!(claimed.len(), claims.len(), "a host claimed twice");
        let mine: HashSet<_> = winners.iter().map(|b| b.id).collect();
        let active: usize = winners.iter().map(|b| b.spec.hosts.len()).sum();
        assert_eq!(claims.len(), active, "claims belong to this round's winners only");
        assert!(claims.iter().all(|c| mine.contains(&c.batch_id)));
        total_winners += winners.len();
        let listed = store.batch_list(BatchListParams { limit: 1000, ..Default::default() }).await.unwrap();
        assert_eq!(listed.len(), total_winners, "losers leave no batch");
        let jobs = store.job_list(JobListParams::default()).await.unwrap();
        assert_eq!(jobs.len(), total_winners * 8 * 2, "losers leave no jobs");
        // Cancel the winners so the next round starts from free hosts.
        for b in winners {
            store
                .batch_cancel(BatchCancelParams {
                    batch_id: b.id,
                    principal: maas_core::Principal::new("alice", []),
                    reason: "next round".into(),
                    now: maas_core::Timestamp::from_millis(1_700_000_000_000),
                })
                .await
                .unwrap();
        }
        assert!(store.claim_get_many(&hosts).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sixteen_concurrent_submitters() {
    sixteen_submitters(fresh(&server_url("MAAS_TEST_POSTGRES_URL"), "pg").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_sixteen_concurrent_submitters() {
    sixteen_submitters(fresh(&server_url("MAAS_TEST_MYSQL_URL"), "my").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sixteen_concurrent_submitters() {
    let dir = std::env::temp_dir().join(format!("maas-conc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    sixteen_submitters(fresh(&format!("sqlite://{}", dir.join("c.db").display()), "lite").await).await;
    std::fs::remove_dir_all(&dir).ok();
}

/// Steps that read the store (set_boot_pxe reads its chain) while their worker also waits
/// on the store: with a pool of two connections and 64 such steps in one worker, every
/// step runs once, on its first attempt. (When a worker polled its steps only between its
/// own store calls, a step holding a connection waited for the worker, the worker waited
/// for a connection, and the pool stalled until leases expired.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_steps_reading_the_store_do_not_stall_their_worker() {
    use maas_core::Inventory;
    use maas_core::OsRelease;
    use maas_core::config::WorkerConfig;
    use maas_core::names::{Pool, Site};
    use maas_core::plan::StepKind;
    use maas_core::{BatchRequest, IdGenerator, Principal};
    use maas_engine::{Engine, PoolConfig, SystemClock, WorkerPool};
    use maas_sim::{FaultPlan, SimFleet, SimInstaller};
    use std::time::{Duration, Instant};

    const HOSTS: usize = 64;
    let dir = std::env::temp_dir().join(format!("maas-stall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("s.db").display());
    let options = maas_store::OpenOptions { max_connections: 2, ..Default::default() };
    let store = Arc::new(SqlStore::open(&url, &options, maas_core::machine::Rules::default()).await.unwrap());
    let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
    store.host_upsert_many(maas_sim::sim::fleet_hosts(&fleet, 1, HOSTS)).await.unwrap();
    let clock = Arc::new(SystemClock::new());
    let engine =
        Engine::builder(store.clone(), store.clone(), fleet.clone(), clock.clone(), IdGenerator::new(clock, 1))
            .provisioner(Arc::new(SimInstaller::new(fleet))) // never started: installs stay pending
            .build();
    let mut req = BatchRequest::new(
        Action::Reimage { os: OsRelease::new("ubuntu-24.04").unwrap(), install_timeout_secs: None },
        [format!("sim[000001-{HOSTS:06}].dc1")],
    );
    req.rollout.max_in_flight = HOSTS as u32;
    let id = engine.submit(&Principal::new("t", []), &req).await.unwrap().batch.id;
    let pool = WorkerPool::start(
        &engine,
        PoolConfig {
            site: Site::new("dc1").unwrap(),
            pool: Pool::new("web").unwrap(),
            workers: 1,
            worker: WorkerConfig { capacity: HOSTS, ..Default::default() },
            restart_delay: Duration::from_millis(100),
            instance: "stall".into(),
        },
    );
    // Bounded: far longer than the work needs, shorter than the default 60 s lease, so a
    // stall shows as a failure here rather than as a rescue.
    let until = Instant::now() + Duration::from_secs(50);
    let mut at_install = 0;
    while Instant::now() < until {
        if let Ok(view) = engine.get_batch(id).await {
            at_install = view.hosts.iter().filter(|h| h.step == Some(StepKind::AwaitInstall)).count();
            if at_install == HOSTS {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pool.shutdown().await;
    assert_eq!(at_install, HOSTS, "every host reached await_install");
    let jobs = store.job_list(JobListParams::default()).await.unwrap();
    let retried: Vec<_> = jobs.iter().filter(|j| j.attempt > 1).map(|j| (&j.hostname, j.kind)).collect();
    assert!(retried.is_empty(), "steps ran more than once: {:?}", &retried[..retried.len().min(5)]);
    std::fs::remove_dir_all(&dir).ok();
}
