//! The schema, as sea-orm-migration migrations. DDL is written per backend where the
//! backends differ (types, autoincrement, partial indexes); everything else is shared.
//!
//! Conventions: ids are UUID text (`VARCHAR(36)`; PostgreSQL compares a `CHAR` column with a
//! text parameter by casting the column, which skips its index), times are milliseconds
//! since the epoch
//! (`BIGINT`, what `maas_core::Timestamp` holds, lossless everywhere), every integer is a
//! `BIGINT` (one Rust type decodes it on every backend), enums are their
//! snake_case names, structured values (specs, params, event kinds) are JSON text.
//!
//! The claim index holds runnable rows only: a partial index `WHERE state = 'available'`
//! on PostgreSQL and SQLite; on MySQL/MariaDB, which has no partial indexes, a stored
//! generated column `ready_site` that is the job's site while it is available and NULL
//! otherwise, leading the index `(ready_site, queue_key, id)` — the index range a claim's
//! equality selects holds available jobs only, in queue-key order.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;

/// The migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Initial),
            Box::new(M0002HostMac),
            Box::new(M0003AuditAndAllocation),
            Box::new(M0004BmcProtocols),
            Box::new(M0005QueueIndexes),
        ]
    }
}

/// The names of the migrations this build knows, oldest first.
pub fn known_migrations() -> Vec<String> {
    Migrator::migrations().iter().map(|m| m.name().to_string()).collect()
}

/// The first schema: every table the Store and Inventory need.
pub struct M0001Initial;

impl MigrationName for M0001Initial {
    fn name(&self) -> &str {
        "m0001_initial"
    }
}

/// Column types per backend.
struct Types {
    /// Short indexed text (names, ids, enum values).
    key: &'static str,
    /// Long text (JSON, errors).
    text: &'static str,
    /// An auto-incrementing 64-bit primary key.
    serial: &'static str,
}

fn types(backend: DbBackend) -> Types {
    match backend {
        DbBackend::MySql => {
            Types { key: "VARCHAR(255)", text: "LONGTEXT", serial: "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY" }
        }
        DbBackend::Postgres => Types { key: "TEXT", text: "TEXT", serial: "BIGSERIAL PRIMARY KEY" },
        _ => Types { key: "TEXT", text: "TEXT", serial: "INTEGER PRIMARY KEY AUTOINCREMENT" },
    }
}

/// MariaDB tables: transactional, byte-compared UTF-8.
const MYSQL_ENGINE: &str = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// The DDL of the first schema for `backend`, one statement per entry.
pub fn initial_ddl(backend: DbBackend) -> Vec<String> {
    let Types { key, text, serial } = types(backend);
    let mysql = backend == DbBackend::MySql;
    let engine = if mysql { MYSQL_ENGINE } else { "" };
    let mut ddl = vec![
        format!(
            "CREATE TABLE maas_hosts (
                hostname {key} NOT NULL PRIMARY KEY,
                site {key} NOT NULL,
                rack {key} NULL,
                pool {key} NOT NULL,
                owner_group {key} NULL,
                sku {key} NOT NULL,
                bmc_address {key} NOT NULL,
                bmc_port BIGINT NOT NULL,
                bmc_credentials_ref {key} NOT NULL,
                state {key} NOT NULL
            ){engine}"
        ),
        "CREATE INDEX maas_hosts_state ON maas_hosts (state, site, pool)".to_string(),
        format!(
            "CREATE TABLE maas_batches (
                id VARCHAR(36) NOT NULL PRIMARY KEY,
                submitter {key} NOT NULL,
                idempotency_key {key} NULL,
                fingerprint {key} NOT NULL,
                action {key} NOT NULL,
                spec {text} NOT NULL,
                state {key} NOT NULL,
                pause_reason {text} NULL,
                cancel_reason {text} NULL,
                queued BIGINT NOT NULL,
                running BIGINT NOT NULL,
                succeeded BIGINT NOT NULL,
                failed BIGINT NOT NULL,
                cancelled BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                finished_at BIGINT NULL
            ){engine}"
        ),
        "CREATE UNIQUE INDEX maas_batches_key ON maas_batches (submitter, idempotency_key)".to_string(),
        "CREATE INDEX maas_batches_state ON maas_batches (state, id)".to_string(),
        "CREATE INDEX maas_batches_finished ON maas_batches (finished_at)".to_string(),
        format!(
            "CREATE TABLE maas_host_runs (
                id VARCHAR(36) NOT NULL PRIMARY KEY,
                batch_id VARCHAR(36) NOT NULL,
                ordinal BIGINT NOT NULL,
                hostname {key} NOT NULL,
                site {key} NOT NULL,
                pool {key} NOT NULL,
                sku {key} NOT NULL,
                state {key} NOT NULL,
                step BIGINT NOT NULL,
                cancel_requested BOOLEAN NOT NULL,
                started_at BIGINT NULL,
                finished_at BIGINT NULL,
                last_error {text} NULL,
                straggler_step BIGINT NULL
            ){engine}"
        ),
        "CREATE UNIQUE INDEX maas_host_runs_batch ON maas_host_runs (batch_id, ordinal)".to_string(),
        "CREATE INDEX maas_host_runs_finished ON maas_host_runs (finished_at)".to_string(),
        format!(
            "CREATE TABLE maas_jobs (
                id VARCHAR(36) NOT NULL PRIMARY KEY,
                batch_id VARCHAR(36) NOT NULL,
                host_run_id VARCHAR(36) NOT NULL,
                hostname {key} NOT NULL,
                site {key} NOT NULL,
                position BIGINT NOT NULL,
                kind {key} NOT NULL,
                params {text} NOT NULL,
                state {key} NOT NULL,
                attempt BIGINT NOT NULL,
                max_attempts BIGINT NOT NULL,
                priority {key} NOT NULL,
                queue_key BIGINT NOT NULL,
                run_at BIGINT NOT NULL,
                lease_owner {key} NULL,
                lease_expires_at BIGINT NULL,
                wait_token {key} NULL,
                wait_deadline BIGINT NULL,
                created_at BIGINT NOT NULL,
                enqueued_at BIGINT NULL,
                started_at BIGINT NULL,
                finished_at BIGINT NULL,
                last_error {text} NULL{ready}
            ){engine}",
            ready = if mysql {
                ",\n                ready_site VARCHAR(255) AS (CASE WHEN state = 'available' THEN site END) STORED"
            } else {
                ""
            }
        ),
        "CREATE UNIQUE INDEX maas_jobs_chain ON maas_jobs (host_run_id, position)".to_string(),
        // No index by batch: every job update pays for each index, and batch-wide reads and
        // deletes go through the host runs' (batch_id, ordinal) and the chain index.
        "CREATE INDEX maas_jobs_finished ON maas_jobs (finished_at)".to_string(),
        format!(
            "CREATE TABLE maas_claims (
                hostname {key} NOT NULL PRIMARY KEY,
                batch_id VARCHAR(36) NOT NULL,
                host_run_id VARCHAR(36) NOT NULL,
                since BIGINT NOT NULL
            ){engine}"
        ),
        "CREATE INDEX maas_claims_batch ON maas_claims (batch_id)".to_string(),
        // One row whose counter every event-appending transaction bumps: its row lock makes
        // seq order equal commit order, so a cursor never skips a late-committing event.
        format!("CREATE TABLE maas_outbox_seq (id BIGINT NOT NULL PRIMARY KEY, seq BIGINT NOT NULL){engine}"),
        "INSERT INTO maas_outbox_seq (id, seq) VALUES (1, 0)".to_string(),
        format!(
            "CREATE TABLE maas_events (
                seq BIGINT NOT NULL PRIMARY KEY,
                batch_id VARCHAR(36) NOT NULL,
                at BIGINT NOT NULL,
                kind {text} NOT NULL
            ){engine}"
        ),
        "CREATE INDEX maas_events_batch ON maas_events (batch_id, seq)".to_string(),
        format!("CREATE TABLE maas_cursors (consumer {key} NOT NULL PRIMARY KEY, seq BIGINT NOT NULL){engine}"),
        format!(
            "CREATE TABLE maas_audit (
                id {serial},
                at BIGINT NOT NULL,
                principal {key} NOT NULL,
                batch_id VARCHAR(36) NOT NULL,
                action {text} NOT NULL,
                host_count BIGINT NOT NULL,
                hosts {text} NOT NULL,
                force_reason {text} NULL,
                comment {text} NULL
            ){engine}"
        ),
        format!(
            "CREATE TABLE maas_leaders (
                name {key} NOT NULL PRIMARY KEY,
                owner {key} NOT NULL,
                expires_at BIGINT NOT NULL
            ){engine}"
        ),
        format!("CREATE TABLE maas_pool_kinds (pool {key} NOT NULL PRIMARY KEY, kinds {text} NOT NULL){engine}"),
        format!(
            "CREATE TABLE maas_workers (
                id {key} NOT NULL PRIMARY KEY,
                site {key} NOT NULL,
                pool {key} NOT NULL,
                started_at BIGINT NOT NULL,
                last_heartbeat BIGINT NOT NULL
            ){engine}"
        ),
        format!(
            "CREATE TABLE maas_tickets (
                id {serial},
                kind {key} NOT NULL,
                batch_id VARCHAR(36) NOT NULL,
                host {key} NOT NULL,
                step {key} NULL,
                summary {text} NOT NULL,
                at BIGINT NOT NULL
            ){engine}"
        ),
        // `host` is '' for batch-level tickets, so the key is unique on every backend.
        "CREATE UNIQUE INDEX maas_tickets_key ON maas_tickets (kind, batch_id, host)".to_string(),
    ];
    if mysql {
        // Available jobs of a site in key order, so a claim's `ready_site = ? ORDER BY
        // queue_key, id LIMIT n` walks the index and examines (and, under READ COMMITTED,
        // keeps locked) only the rows it takes; unavailable jobs sit under NULL.
        ddl.push("CREATE INDEX maas_jobs_ready ON maas_jobs (ready_site, queue_key, id)".into());
        ddl.push("CREATE INDEX maas_jobs_leased ON maas_jobs (state, lease_expires_at)".into());
        ddl.push("CREATE INDEX maas_jobs_waiting ON maas_jobs (state, wait_deadline)".into());
        ddl.push("CREATE UNIQUE INDEX maas_jobs_token ON maas_jobs (wait_token)".into());
    } else {
        // Key order per site, so a claim walks the index and stops after its LIMIT (an index
        // led by kind made PostgreSQL sort every available job of the site for each claim).
        ddl.push("CREATE INDEX maas_jobs_ready ON maas_jobs (site, queue_key, id) WHERE state = 'available'".into());
        ddl.push("CREATE INDEX maas_jobs_leased ON maas_jobs (lease_expires_at) WHERE state = 'running'".into());
        ddl.push("CREATE INDEX maas_jobs_waiting ON maas_jobs (wait_deadline) WHERE state = 'waiting'".into());
        // Only parked jobs have a token: the rest stay out of the index.
        ddl.push("CREATE UNIQUE INDEX maas_jobs_token ON maas_jobs (wait_token) WHERE wait_token IS NOT NULL".into());
    }
    if backend == DbBackend::Postgres {
        // Queue tables churn: every claim and completion moves rows in and out of the
        // partial indexes. Vacuum and analyze them after 2% changes instead of 20%, so dead
        // index entries do not pile up under the claim scan and a sudden wave of jobs gets
        // fresh statistics (with a table's stats still saying "empty", the planner sorts
        // every available job instead of walking the claim index).
        for table in ["maas_jobs", "maas_host_runs", "maas_claims"] {
            ddl.push(format!(
                "ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.02, \
                 autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0)"
            ));
        }
    }
    ddl
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Initial {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in initial_ddl(db.get_database_backend()) {
            db.execute_unprepared(&statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in [
            "maas_tickets",
            "maas_workers",
            "maas_pool_kinds",
            "maas_leaders",
            "maas_audit",
            "maas_cursors",
            "maas_events",
            "maas_outbox_seq",
            "maas_claims",
            "maas_jobs",
            "maas_host_runs",
            "maas_batches",
            "maas_hosts",
        ] {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}")).await?;
        }
        Ok(())
    }
}

/// Hosts gain the MAC address they network-boot from (the boot service knows them by it):
/// nullable, unique where set.
pub struct M0002HostMac;

impl MigrationName for M0002HostMac {
    fn name(&self) -> &str {
        "m0002_host_mac"
    }
}

/// The DDL of [`M0002HostMac`] for `backend`.
pub fn host_mac_ddl(backend: DbBackend) -> Vec<String> {
    let Types { key, .. } = types(backend);
    vec![
        format!("ALTER TABLE maas_hosts ADD COLUMN mac {key} NULL"),
        // NULLs never collide on any of the three backends.
        "CREATE UNIQUE INDEX maas_hosts_mac ON maas_hosts (mac)".to_string(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for M0002HostMac {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in host_mac_ddl(db.get_database_backend()) {
            db.execute_unprepared(&statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX maas_hosts_mac ON maas_hosts").await.ok();
        db.execute_unprepared("DROP INDEX IF EXISTS maas_hosts_mac").await.ok();
        db.execute_unprepared("ALTER TABLE maas_hosts DROP COLUMN mac").await?;
        Ok(())
    }
}

/// The audit trail records every mutating call, accepted or refused (`maas_audit_log`,
/// which takes over `maas_audit`'s accepted submissions), hosts record who holds an
/// allocated host and since when, batches name their hosts' pools, and retention folds
/// batches into daily rollups (`maas_rollups`) it never removes.
pub struct M0003AuditAndAllocation;

impl MigrationName for M0003AuditAndAllocation {
    fn name(&self) -> &str {
        "m0003_audit_and_allocation"
    }
}

/// The DDL of [`M0003AuditAndAllocation`] for `backend`.
pub fn audit_and_allocation_ddl(backend: DbBackend) -> Vec<String> {
    let Types { key, text, serial } = types(backend);
    let engine = if backend == DbBackend::MySql { MYSQL_ENGINE } else { "" };
    vec![
        format!(
            "CREATE TABLE maas_audit_log (
                id {serial},
                at BIGINT NOT NULL,
                principal {key} NOT NULL,
                op {key} NOT NULL,
                accepted BIGINT NOT NULL,
                batch_id VARCHAR(36) NULL,
                action {text} NULL,
                host_count BIGINT NOT NULL,
                hosts {text} NOT NULL,
                summary {text} NOT NULL,
                reason {text} NULL,
                forced BIGINT NOT NULL,
                comment {text} NULL,
                error {text} NULL
            ){engine}"
        ),
        "CREATE INDEX maas_audit_log_at ON maas_audit_log (at)".to_string(),
        "CREATE INDEX maas_audit_log_principal ON maas_audit_log (principal, id)".to_string(),
        "CREATE INDEX maas_audit_log_batch ON maas_audit_log (batch_id, id)".to_string(),
        "INSERT INTO maas_audit_log \
         (at, principal, op, accepted, batch_id, action, host_count, hosts, summary, reason, forced, comment) \
         SELECT at, principal, 'submit', 1, batch_id, action, host_count, hosts, '', force_reason, \
         CASE WHEN force_reason IS NULL THEN 0 ELSE 1 END, comment FROM maas_audit ORDER BY id"
            .to_string(),
        "DROP TABLE maas_audit".to_string(),
        format!("ALTER TABLE maas_hosts ADD COLUMN allocated_to {text} NULL"),
        "ALTER TABLE maas_hosts ADD COLUMN state_since BIGINT NULL".to_string(),
        // Batches name their hosts' pools (read restrictions go by them); existing ones
        // learn theirs from their host runs.
        format!("ALTER TABLE maas_batches ADD COLUMN pools {text} NULL"),
        // Retention folds a batch into the rollups once, then deletes it in bounded steps.
        "ALTER TABLE maas_batches ADD COLUMN rolled_up BIGINT NOT NULL DEFAULT 0".to_string(),
        {
            // Names are at most 64 characters: MariaDB keys the six columns within its
            // 3072-byte index limit.
            let name = if backend == DbBackend::MySql { "VARCHAR(64)" } else { "TEXT" };
            format!(
                "CREATE TABLE maas_rollups (
                    day BIGINT NOT NULL,
                    action {name} NOT NULL,
                    site {name} NOT NULL,
                    sku {name} NOT NULL,
                    image {name} NOT NULL,
                    step {name} NOT NULL,
                    succeeded BIGINT NOT NULL,
                    failed BIGINT NOT NULL,
                    cancelled BIGINT NOT NULL,
                    durations {text} NOT NULL,
                    PRIMARY KEY (day, action, site, sku, image, step)
                ){engine}"
            )
        },
        match backend {
            DbBackend::Postgres => {
                "UPDATE maas_batches b SET pools = (SELECT string_agg(DISTINCT r.pool, ',' \
                                    ORDER BY r.pool) FROM maas_host_runs r WHERE r.batch_id = b.id)"
            }
            DbBackend::MySql => {
                "UPDATE maas_batches b SET pools = (SELECT GROUP_CONCAT(DISTINCT r.pool ORDER BY \
                                 r.pool SEPARATOR ',') FROM maas_host_runs r WHERE r.batch_id = b.id)"
            }
            _ => {
                "UPDATE maas_batches SET pools = (SELECT group_concat(pool, ',') FROM (SELECT DISTINCT r.pool AS pool \
                  FROM maas_host_runs r WHERE r.batch_id = maas_batches.id ORDER BY r.pool))"
            }
        }
        .to_string(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for M0003AuditAndAllocation {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in audit_and_allocation_ddl(db.get_database_backend()) {
            db.execute_unprepared(&statement).await?;
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // The trail gained refused calls and other operations that the old table cannot
        // hold; going back would lose them.
        Err(DbErr::Migration("m0003_audit_and_allocation cannot be undone without losing audit entries".into()))
    }
}

/// Hosts say which protocol their BMC speaks (`ipmi`, the default every existing host
/// keeps, or `redfish`), the Redfish system id when a BMC manages several, how its TLS
/// certificate is checked, and how the host boots images (`network` or `virtual_media`).
pub struct M0004BmcProtocols;

impl MigrationName for M0004BmcProtocols {
    fn name(&self) -> &str {
        "m0004_bmc_protocols"
    }
}

/// The DDL of [`M0004BmcProtocols`] for `backend`.
pub fn bmc_protocols_ddl(backend: DbBackend) -> Vec<String> {
    let Types { key, text, .. } = types(backend);
    vec![
        format!("ALTER TABLE maas_hosts ADD COLUMN bmc_protocol {key} NOT NULL DEFAULT 'ipmi'"),
        format!("ALTER TABLE maas_hosts ADD COLUMN bmc_system_id {text} NULL"),
        format!("ALTER TABLE maas_hosts ADD COLUMN bmc_tls {text} NULL"),
        format!("ALTER TABLE maas_hosts ADD COLUMN boot_method {key} NOT NULL DEFAULT 'network'"),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for M0004BmcProtocols {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in bmc_protocols_ddl(db.get_database_backend()) {
            db.execute_unprepared(&statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let redfish = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM maas_hosts WHERE bmc_protocol <> 'ipmi'",
            ))
            .await?
            .map(|r| r.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        if redfish > 0 {
            return Err(DbErr::Migration(format!(
                "m0004_bmc_protocols cannot be undone: {redfish} host(s) have a Redfish BMC the older schema cannot hold"
            )));
        }
        for column in ["bmc_protocol", "bmc_system_id", "bmc_tls", "boot_method"] {
            db.execute_unprepared(&format!("ALTER TABLE maas_hosts DROP COLUMN {column}")).await?;
        }
        Ok(())
    }
}

/// Cheaper job-row versions (issue 19). Every job row is written four times (inserted,
/// made available, claimed, completed), each a new row version in every index whose
/// column or predicate it touches.
/// - `maas_jobs_finished` keeps finished jobs only (`WHERE finished_at IS NOT NULL`) on
///   PostgreSQL and SQLite, so three of the four versions stay out of it (the step
///   statistics, its only reader, ask for finished jobs). MariaDB has no partial indexes
///   and keeps the whole index.
/// - PostgreSQL compares every `maas_*` text column bytewise (`COLLATE "C"`): B-tree
///   inserts and lookups on UUID keys no longer go through the locale's `strcoll`, and the
///   three backends order text alike (SQLite's `BINARY`, MariaDB's `utf8mb4_bin`).
pub struct M0005QueueIndexes;

impl MigrationName for M0005QueueIndexes {
    fn name(&self) -> &str {
        "m0005_queue_indexes"
    }
}

/// The `maas_jobs_finished` index, finished jobs only where the backend has partial indexes.
fn finished_index(backend: DbBackend, partial: bool) -> String {
    let filter = if partial && backend != DbBackend::MySql { " WHERE finished_at IS NOT NULL" } else { "" };
    format!("CREATE INDEX maas_jobs_finished ON maas_jobs (finished_at){filter}")
}

/// `ALTER TABLE` statements giving every text column of the `maas_*` tables `collation`
/// (one statement per table, so its text indexes are rebuilt once). PostgreSQL only.
async fn collate_text_columns(db: &SchemaManagerConnection<'_>, collation: &str) -> Result<Vec<String>, DbErr> {
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            DbBackend::Postgres,
            "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS ty, \
             character_maximum_length::bigint AS len FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name LIKE 'maas\\_%' \
             AND data_type IN ('text', 'character varying') ORDER BY table_name, ordinal_position",
        ))
        .await?;
    let mut by_table: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for row in rows {
        let (table, column, ty): (String, String, String) =
            (row.try_get("", "t")?, row.try_get("", "c")?, row.try_get("", "ty")?);
        let len: Option<i64> = row.try_get("", "len")?;
        let ty = match (ty.as_str(), len) {
            ("character varying", Some(n)) => format!("VARCHAR({n})"),
            ("character varying", None) => "VARCHAR".to_string(),
            _ => "TEXT".to_string(),
        };
        by_table.entry(table).or_default().push(format!("ALTER COLUMN {column} TYPE {ty} COLLATE {collation}"));
    }
    Ok(by_table.into_iter().map(|(table, alters)| format!("ALTER TABLE {table} {}", alters.join(", "))).collect())
}

#[async_trait::async_trait]
impl MigrationTrait for M0005QueueIndexes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = db.get_database_backend();
        if backend != DbBackend::MySql {
            db.execute_unprepared("DROP INDEX IF EXISTS maas_jobs_finished").await?;
            db.execute_unprepared(&finished_index(backend, true)).await?;
        }
        if backend == DbBackend::Postgres {
            for statement in collate_text_columns(db, "\"C\"").await? {
                db.execute_unprepared(&statement).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = db.get_database_backend();
        if backend == DbBackend::Postgres {
            for statement in collate_text_columns(db, "\"default\"").await? {
                db.execute_unprepared(&statement).await?;
            }
        }
        if backend != DbBackend::MySql {
            db.execute_unprepared("DROP INDEX IF EXISTS maas_jobs_finished").await?;
            db.execute_unprepared(&finished_index(backend, false)).await?;
        }
        Ok(())
    }
}
