//! maas-store: the `maas_core::Store` on sea-orm — SQLite (the embedded default),
//! PostgreSQL and MySQL/MariaDB, chosen by URL.
//!
//! [`open`] connects by URL with the right per-backend settings, runs the migrations in
//! [`schema`] and refuses a newer schema; [`entity`] has a sea-orm entity per table;
//! [`SqlStore`] is the Store and Inventory, held to maas-core's conformance suite on every
//! backend, with single-statement claims and set-based completion groups (see
//! ARCHITECTURE.md for the statements and the lock order).

pub mod entity;
mod errors;
mod lock;
mod rows;
pub mod schema;
mod store;

pub use lock::{InstanceLock, InstanceLockError, SqliteFileLock, SqliteLockError};
/// The sea-orm this crate is built on, for embedders sharing [`SqlStore::connection`].
pub use sea_orm;
pub use store::SqlStore;

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement};
use sea_orm_migration::MigratorTrait;

use crate::schema::{Migrator, known_migrations};

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL names no supported backend.
    #[error("unsupported database URL {url:?}: use sqlite://PATH, postgres://... or mysql://...")]
    UnsupportedUrl {
        /// The URL, without its password.
        url: String,
    },
    /// The database refused the connection.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, without its password.
        url: String,
        /// The driver's error.
        source: DbErr,
    },
    /// The database has migrations this build does not know: a newer maas wrote it.
    #[error(
        "the database schema is newer than this build of maas (unknown migrations: {}); upgrade maas or use another database",
        unknown.join(", ")
    )]
    NewerSchema {
        /// The migrations applied in the database that this build lacks.
        unknown: Vec<String>,
    },
    /// A migration failed.
    #[error("migrating the schema failed: {0}")]
    Migrate(DbErr),
}

/// How to open a database.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Apply pending migrations (the default). Off, a database with pending migrations is
    /// refused instead.
    pub migrate: bool,
    /// Connection pool size.
    pub max_connections: u32,
    /// SQLite: how long a writer waits for the lock before failing.
    pub busy_timeout: Duration,
    /// How long a call waits for a pooled connection (including connecting one) before it
    /// fails as unavailable: bounds how long callers hang while the database is away.
    pub acquire_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            migrate: true,
            max_connections: 16,
            busy_timeout: Duration::from_secs(10),
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A URL with its password replaced, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &userinfo[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The database a URL names: `sqlite:`, `postgres://` / `postgresql://`, or `mysql://` /
/// `mariadb://`; `None` for anything else.
pub(crate) fn backend_of(url: &str) -> Option<DbBackend> {
    if url.starts_with("sqlite:") {
        Some(DbBackend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(DbBackend::Postgres)
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        Some(DbBackend::MySql)
    } else {
        None
    }
}

/// The URL as the driver takes it (sqlx knows MariaDB as `mysql://`).
pub(crate) fn driver_url(url: &str) -> String {
    url.replacen("mariadb://", "mysql://", 1)
}

/// Opens (and by default migrates) the database at `url`.
///
/// SQLite files are created on first use and run in WAL mode with a busy timeout and
/// `synchronous = FULL`, so an acknowledged write survives a power loss.
pub async fn open(url: &str, options: &OpenOptions) -> Result<DatabaseConnection, OpenError> {
    let shown = redact(url);
    let Some(backend) = backend_of(url) else { return Err(OpenError::UnsupportedUrl { url: shown }) };
    let mut opts = ConnectOptions::new(driver_url(url));
    opts.max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect_timeout(options.acquire_timeout)
        .sqlx_logging(false);
    if backend == DbBackend::Sqlite {
        let busy = options.busy_timeout;
        opts.map_sqlx_sqlite_opts(move |o| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(busy)
                .foreign_keys(false)
        });
    }
    if backend == DbBackend::Postgres {
        // Plan every execution with its parameters: a prepared statement's generic plan for
        // `id IN ($1, ..., $128)` or a joined VALUES list guesses the row counts and
        // scans whole tables (measured: the completion's host-run lock went from 0.6 ms to
        // 6.5 ms once PostgreSQL switched it to a generic plan).
        opts.map_sqlx_postgres_opts(|o| o.options([("plan_cache_mode", "force_custom_plan")]));
    }
    let db = Database::connect(opts).await.map_err(|source| OpenError::Connect { url: shown.clone(), source })?;
    // Instances starting together race to migrate a fresh database: the loser's DDL fails
    // ("already exists"); it waits and re-checks, and finds the winner's schema.
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        match check_schema(&db, options.migrate).await {
            Ok(()) => return Ok(db),
            Err(OpenError::Migrate(_)) if attempt < 10 => {
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Refuses a database written by a newer build; applies or demands pending migrations.
async fn check_schema(db: &DatabaseConnection, migrate: bool) -> Result<(), OpenError> {
    // Read the migration table directly: sea-orm-migration itself errors on unknown rows
    // without saying that the schema is newer.
    Migrator::install(db).await.map_err(OpenError::Migrate)?;
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), "SELECT version FROM seaql_migrations"))
        .await
        .map_err(OpenError::Migrate)?;
    let applied: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "version"))
        .collect::<Result<_, _>>()
        .map_err(OpenError::Migrate)?;
    let known = known_migrations();
    let unknown: Vec<String> = applied.iter().filter(|a| !known.contains(a)).cloned().collect();
    if !unknown.is_empty() {
        return Err(OpenError::NewerSchema { unknown });
    }
    let pending: Vec<&String> = known.iter().filter(|k| !applied.contains(k)).collect();
    if !pending.is_empty() {
        if !migrate {
            let pending = pending.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            return Err(OpenError::Migrate(DbErr::Custom(format!("pending migrations: {pending}"))));
        }
        Migrator::up(db, None).await.map_err(OpenError::Migrate)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_messages() {
        assert_eq!(redact("postgres://maas:s3cret@db:5432/maas"), "postgres://maas:***@db:5432/maas");
        assert_eq!(redact("mysql://root@127.0.0.1:3306/x"), "mysql://root@127.0.0.1:3306/x");
        assert_eq!(redact("sqlite://maas.db"), "sqlite://maas.db");
    }
}
