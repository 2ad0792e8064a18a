//! Helpers shared by maas-store's server tests: the server URLs `./scripts/test` exports,
//! and a fresh database per test on those servers.
#![allow(dead_code)] // each test binary uses part of it

use maas_core::machine::Rules;
use maas_store::{OpenOptions, SqlStore};
use sea_orm::ConnectionTrait;

/// The URL in `var`; without it the test fails and says how to get the servers.
pub(crate) fn server_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run ./scripts/test, which starts the servers"))
}

/// Opens (and migrates) `url`, failing the test with the store's message.
pub(crate) async fn open(url: &str) -> SqlStore {
    SqlStore::open(url, &OpenOptions::default(), Rules::default()).await.unwrap_or_else(|e| panic!("{e}"))
}

/// A new, migrated database named `name` on the server behind `url` (whose path names an
/// existing database); returns its URL and the store.
pub(crate) async fn fresh_server_db(url: &str, name: &str) -> (String, SqlStore) {
    let admin = open(url).await;
    admin.connection().execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
    let base = url.rsplit_once('/').map(|(b, _)| b).unwrap_or(url);
    let url = format!("{base}/{name}");
    let store = open(&url).await;
    (url, store)
}
