//! The schema migrates on every backend, twice is a no-op, a newer schema is refused, and
//! the sea-orm entities match the migrated tables.
//! PostgreSQL and MariaDB come from `./scripts/test` (MAAS_TEST_POSTGRES_URL and
//! MAAS_TEST_MYSQL_URL); without them these tests fail and say so, never skip.

mod common;

use common::server_url;
use maas_store::{OpenError, OpenOptions, open};
use sea_orm::ConnectionTrait;

async fn migrates_and_refuses_newer(url: &str) {
    let db = open(url, &OpenOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
    for table in ["maas_hosts", "maas_batches", "maas_jobs", "maas_claims", "maas_events", "maas_tickets"] {
        db.execute_unprepared(&format!("SELECT COUNT(*) FROM {table}"))
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
    }
    entities_match_tables(&db).await;
    drop(db);
    let db = open(url, &OpenOptions::default()).await.expect("reopening is a no-op");
    db.execute_unprepared("INSERT INTO seaql_migrations (version, applied_at) VALUES ('m9999_from_the_future', 0)")
        .await
        .unwrap();
    let err = open(url, &OpenOptions::default()).await.unwrap_err();
    assert!(matches!(err, OpenError::NewerSchema { .. }), "{err}");
    assert!(err.to_string().contains("m9999_from_the_future"), "{err}");
    db.execute_unprepared("DELETE FROM seaql_migrations WHERE version = 'm9999_from_the_future'").await.unwrap();
}

/// Every entity selects its columns by name from the migrated table: an entity and its
/// migration cannot drift apart. (The store's entity reads check the types on real rows
/// in the conformance suite.)
async fn entities_match_tables(db: &sea_orm::DatabaseConnection) {
    use maas_store::entity::*;
    use sea_orm::EntityTrait;
    macro_rules! read_each {
        ($($table:ident),*) => {$(
            $table::Entity::find().one(db).await.unwrap_or_else(|e| panic!("entity {}: {e}", stringify!($table)));
        )*};
    }
    read_each!(
        hosts, batches, host_runs, jobs, claims, outbox_seq, events, cursors, audit, leaders, pool_kinds, workers,
        tickets
    );
}

#[tokio::test]
async fn sqlite_file_is_created_migrated_and_guarded() {
    let dir = std::env::temp_dir().join(format!("maas-store-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("maas.db").display());
    migrates_and_refuses_newer(&url).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn postgres_is_migrated_and_guarded() {
    migrates_and_refuses_newer(&server_url("MAAS_TEST_POSTGRES_URL")).await;
}

#[tokio::test]
async fn mariadb_is_migrated_and_guarded() {
    migrates_and_refuses_newer(&server_url("MAAS_TEST_MYSQL_URL")).await;
}

#[tokio::test]
async fn unsupported_urls_are_named() {
    let err = open("oracle://x", &OpenOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("unsupported database URL \"oracle://x\""), "{err}");
}
