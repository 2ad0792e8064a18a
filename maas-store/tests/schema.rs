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
        hosts, batches, host_runs, jobs, claims, outbox_seq, events, cursors, audit_log, leaders, pool_kinds, workers,
        rollups, tickets
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
    let url = server_url("MAAS_TEST_POSTGRES_URL");
    migrates_and_refuses_newer(&url).await;
    let db = open(&url, &OpenOptions::default()).await.unwrap();
    queue_indexes_are_cheap_on_postgres(&db).await;
}

/// m0005: every `maas_*` text column compares bytewise, and the finished-jobs index holds
/// finished jobs only.
async fn queue_indexes_are_cheap_on_postgres(db: &sea_orm::DatabaseConnection) {
    let one = |sql: &str| sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, sql.to_string());
    let row = db
        .query_one_raw(one("SELECT COUNT(*) AS all_text, COUNT(*) FILTER (WHERE collation_name = 'C') AS bytewise \
             FROM information_schema.columns WHERE table_schema = current_schema() \
             AND table_name LIKE 'maas\\_%' AND data_type IN ('text', 'character varying')"))
        .await
        .unwrap()
        .unwrap();
    let (all, bytewise): (i64, i64) = (row.try_get("", "all_text").unwrap(), row.try_get("", "bytewise").unwrap());
    assert!(all > 50, "the maas tables have text columns: {all}");
    assert_eq!(bytewise, all, "every maas text column is COLLATE \"C\"");
    let row = db
        .query_one_raw(one("SELECT indexdef FROM pg_indexes WHERE indexname = 'maas_jobs_finished'"))
        .await
        .unwrap()
        .unwrap();
    let def: String = row.try_get("", "indexdef").unwrap();
    assert!(def.ends_with("WHERE (finished_at IS NOT NULL)"), "{def}");
}

#[tokio::test]
async fn mariadb_is_migrated_and_guarded() {
    migrates_and_refuses_newer(&server_url("MAAS_TEST_MYSQL_URL")).await;
}

/// A database at m0002 (accepted submissions in `maas_audit`, hosts without holders) is
/// upgraded in place: its audit entries move to the trail as accepted submissions, its
/// hosts keep every field and gain none.
async fn an_older_schema_keeps_its_audit_entries_and_hosts(old: &sea_orm::DatabaseConnection, url: &str) {
    use maas_core::host::HostState;
    use maas_core::model::AuditOp;
    use maas_core::ports::inventory::Inventory;
    use maas_core::ports::store::{AuditFilter, ReportStore};
    use sea_orm_migration::MigratorTrait;
    maas_store::schema::Migrator::up(old, Some(2)).await.unwrap();
    let batch = "0190a0b0-0000-7000-8000-000000000001";
    old.execute_unprepared(&format!(
        "INSERT INTO maas_audit (at, principal, batch_id, action, host_count, hosts, force_reason, comment) \
         VALUES (1700000000000, 'alice', '{batch}', '{{\"kind\":\"power_cycle\"}}', 2, 'n[1-2].dc1', 'fix', 'CHG-7')"
    ))
    .await
    .unwrap();
    old.execute_unprepared(
        "INSERT INTO maas_hosts (hostname, site, rack, pool, owner_group, sku, bmc_address, bmc_port, \
         bmc_credentials_ref, state, mac) VALUES ('n1.dc1', 'dc1', NULL, 'web', NULL, 'gen9', '10.0.0.1', 623, \
         'default', 'allocated', NULL)",
    )
    .await
    .unwrap();
    old.execute_unprepared(&format!(
        "INSERT INTO maas_batches (id, submitter, fingerprint, action, spec, state, queued, running, succeeded, \
         failed, cancelled, created_at, updated_at) VALUES ('{batch}', 'alice', 'f', 'power_cycle', '{{}}', \
         'running', 3, 0, 0, 0, 0, 1700000000000, 1700000000000)"
    ))
    .await
    .unwrap();
    for (i, pool) in ["web", "db", "web"].iter().enumerate() {
        old.execute_unprepared(&format!(
            "INSERT INTO maas_host_runs (id, batch_id, ordinal, hostname, site, pool, sku, state, step, \
             cancel_requested) VALUES ('0190a0b0-0000-7000-8000-00000000010{i}', '{batch}', {i}, 'n{i}.dc1', \
             'dc1', '{pool}', 'gen9', 'queued', 0, FALSE)"
        ))
        .await
        .unwrap();
    }
    let store = common::open(url).await;
    // The batch learned its hosts' pools from its host runs: sorted, each once.
    let row = store.connection().query_one_raw(sea_orm::Statement::from_string(
        store.connection().get_database_backend(),
        "SELECT pools FROM maas_batches",
    ));
    let pools: Option<String> = row.await.unwrap().unwrap().try_get("", "pools").unwrap();
    assert_eq!(pools.as_deref(), Some("db,web"));
    let trail = store.audit_list(AuditFilter::default()).await.unwrap();
    assert_eq!(trail.len(), 1);
    let a = &trail[0];
    assert_eq!((a.op, a.accepted, a.principal.as_str(), a.host_count), (AuditOp::Submit, true, "alice", 2));
    assert_eq!((a.batch_id.map(|b| b.to_string()), a.forced), (Some(batch.to_string()), true));
    assert_eq!((a.reason.as_deref(), a.comment.as_deref()), (Some("fix"), Some("CHG-7")));
    assert!(a.names_host("n2.dc1"));
    let host = store.host_get_many(&[maas_core::names::Hostname::new("n1.dc1").unwrap()]).await.unwrap();
    assert_eq!(
        (host[0].state, host[0].allocated_to.as_deref(), host[0].state_since),
        (HostState::Allocated, None, None)
    );
    // m0004: existing hosts speak IPMI and boot from the network.
    assert_eq!(host[0].bmc, maas_core::host::BmcEndpoint::ipmi("10.0.0.1", 623, "default"));
    assert_eq!(host[0].boot_method, maas_core::host::BootMethod::Network);
}

#[tokio::test]
async fn sqlite_upgrades_an_older_schema_in_place() {
    let dir = std::env::temp_dir().join(format!("maas-store-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("maas.db");
    let old = sea_orm::Database::connect(format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
    an_older_schema_keeps_its_audit_entries_and_hosts(&old, &format!("sqlite://{}", path.display())).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn postgres_upgrades_an_older_schema_in_place() {
    upgrades_on_server("MAAS_TEST_POSTGRES_URL").await;
}

#[tokio::test]
async fn mariadb_upgrades_an_older_schema_in_place() {
    upgrades_on_server("MAAS_TEST_MYSQL_URL").await;
}

async fn upgrades_on_server(var: &str) {
    let url = server_url(var);
    let name = format!("maas_upgrade_{}", std::process::id());
    let admin = common::open(&url).await;
    admin.connection().execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
    let url = format!("{}/{name}", url.rsplit_once('/').unwrap().0);
    let old = sea_orm::Database::connect(url.as_str()).await.unwrap();
    an_older_schema_keeps_its_audit_entries_and_hosts(&old, &url).await;
}

#[tokio::test]
async fn unsupported_urls_are_named() {
    let err = open("oracle://x", &OpenOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("unsupported database URL \"oracle://x\""), "{err}");
}
