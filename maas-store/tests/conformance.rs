//! The maas-core Store conformance suite on SQLite, PostgreSQL and MariaDB, each behaviour
//! on a fresh database. The servers come from `./scripts/test` (MAAS_TEST_POSTGRES_URL,
//! MAAS_TEST_MYSQL_URL); without them the server tests fail and say so.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use maas_core::machine::Rules;
use maas_core::testkit::store::{Backend, exercise};
use maas_store::{OpenOptions, SqlStore};
use sea_orm::ConnectionTrait;

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn server_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run ./scripts/test, which starts the servers"))
}

/// A fresh database on the server behind `url` (whose path names an existing database).
async fn fresh_server_db(url: &str) -> Arc<dyn Backend> {
    let i = NEXT.fetch_add(1, Ordering::SeqCst);
    let name = format!("maas_conf_{}_{i}", std::process::id());
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    let admin = SqlStore::open(url, &OpenOptions::default(), Rules::default()).await.unwrap_or_else(|e| panic!("{e}"));
    admin.connection().execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
    let store = SqlStore::open(&format!("{base}/{name}"), &OpenOptions::default(), Rules::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(store)
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
