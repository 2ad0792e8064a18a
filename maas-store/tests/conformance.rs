//! The maas-core Store conformance suite on SQLite, PostgreSQL and MariaDB, each behaviour
//! on a fresh database. The servers come from `./scripts/test` (MAAS_TEST_POSTGRES_URL,
//! MAAS_TEST_MYSQL_URL); without them the server tests fail and say so.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use maas_core::machine::Rules;
mod common;

use common::server_url;
use maas_sim::testkit::store::{Backend, exercise};
use maas_store::{OpenOptions, SqlStore};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh database on the server behind `url`.
async fn fresh_server_db(url: &str) -> Arc<dyn Backend> {
    let name = format!("maas_conf_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    Arc::new(common::fresh_server_db(url, &name).await.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passes_the_store_conformance_suite() {
    let dir = std::env::temp_dir().join(format!("maas-store-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let factory = || {
        let path = dir.join(format!("t{}.db", NEXT.fetch_add(1, Ordering::SeqCst)));
        async move {
            let url = format!("sqlite://{}", path.display());
            let store =
                SqlStore::open(&url, &OpenOptions::default(), Rules::default()).await.unwrap_or_else(|e| panic!("{e}"));
            Arc::new(store) as Arc<dyn Backend>
        }
    };
    exercise(factory, |name| println!("sqlite: {name} ok")).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_store_conformance_suite() {
    let url = server_url("MAAS_TEST_POSTGRES_URL");
    exercise(|| fresh_server_db(&url), |name| println!("postgres: {name} ok")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_passes_the_store_conformance_suite() {
    let url = server_url("MAAS_TEST_MYSQL_URL");
    exercise(|| fresh_server_db(&url), |name| println!("mariadb: {name} ok")).await;
}
