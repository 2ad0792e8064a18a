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
