//! Database errors classified by kind — SQLSTATE on PostgreSQL, the server's error number
//! on MySQL/MariaDB, the extended result code on SQLite — never by their message text.
//! What a transaction does about an error (retry it whole, read the holder of a unique key,
//! give up) follows from the [`Fault`].

use std::fmt;
use std::ops::Deref;

use maas_core::ports::store::StoreError;
use sea_orm::{DbErr, RuntimeErr, SqlErr, sqlx};

/// What kind of failure a database error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Lost a race with another transaction (deadlock, serialization failure, lock
    /// timeout, busy database): the whole transaction may be retried.
    Contention,
    /// A unique key already holds the value.
    UniqueViolation,
    /// Anything else: give up and report it.
    Other,
}

/// PostgreSQL SQLSTATEs of lost races: serialization_failure, deadlock_detected,
/// lock_not_available.
const PG_CONTENTION: [&str; 3] = ["40001", "40P01", "55P03"];
/// MySQL/MariaDB error numbers of lost races: ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT.
const MYSQL_CONTENTION: [u16; 2] = [1213, 1205];
/// SQLite primary result codes of lost races: SQLITE_BUSY, SQLITE_LOCKED (the extended
/// codes, e.g. SQLITE_BUSY_SNAPSHOT = 517, carry them in their low byte).
const SQLITE_CONTENTION: [i64; 2] = [5, 6];

/// Classifies a sea-orm error by its driver's code.
pub(crate) fn classify(e: &DbErr) -> Fault {
    if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
        return Fault::UniqueViolation;
    }
    let (DbErr::Exec(RuntimeErr::SqlxError(e))
    | DbErr::Query(RuntimeErr::SqlxError(e))
    | DbErr::Conn(RuntimeErr::SqlxError(e))) = e
    else {
        return Fault::Other;
    };
    let sqlx::Error::Database(db) = e.deref() else { return Fault::Other };
    let contention = if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        MYSQL_CONTENTION.contains(&my.number())
    } else if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
        db.code().is_some_and(|c| PG_CONTENTION.contains(&c.deref()))
    } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        db.code().and_then(|c| c.parse::<i64>().ok()).is_some_and(|c| SQLITE_CONTENTION.contains(&(c & 0xff)))
    } else {
        false
    };
    if contention { Fault::Contention } else { Fault::Other }
}

/// A guarded write found its row changed since it was read (a claim or hand-back won):
/// the transaction decides again from fresh rows.
#[derive(Debug)]
pub(crate) struct Raced {
    /// What was being written.
    pub(crate) what: &'static str,
    /// Rows the guards let through.
    pub(crate) wrote: u64,
    /// Rows expected.
    pub(crate) expected: u64,
}

impl fmt::Display for Raced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} raced a concurrent change (wrote {} of {} guarded rows)", self.what, self.wrote, self.expected)
    }
}

impl std::error::Error for Raced {}

impl From<Raced> for StoreError {
    fn from(r: Raced) -> Self {
        StoreError::Backend { message: r.to_string(), source: Some(Box::new(r)) }
    }
}

/// A database error as the store reports it (classified later from its source).
pub(crate) fn backend(e: DbErr) -> StoreError {
    StoreError::Backend { message: e.to_string(), source: Some(Box::new(e)) }
}

/// The fault behind a store error: its database error's kind, or contention for a raced
/// guard.
pub(crate) fn fault(e: &StoreError) -> Fault {
    let StoreError::Backend { source: Some(source), .. } = e else { return Fault::Other };
    if source.downcast_ref::<Raced>().is_some() {
        return Fault::Contention;
    }
    source.downcast_ref::<DbErr>().map_or(Fault::Other, classify)
}

/// Whether retrying the whole transaction may succeed.
pub(crate) fn transient(e: &StoreError) -> bool {
    fault(e) == Fault::Contention
}

/// Whether a unique key refused the write.
pub(crate) fn is_unique_violation(e: &StoreError) -> bool {
    fault(e) == Fault::UniqueViolation
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_without_a_driver_code_are_not_retried_whatever_their_text_says() {
        for text in ["deadlock detected", "database is locked", "UNIQUE constraint failed"] {
            let e = backend(DbErr::Custom(text.into()));
            assert_eq!(fault(&e), Fault::Other, "{text}");
        }
        let plain = StoreError::Backend { message: "raced a concurrent change".into(), source: None };
        assert!(!transient(&plain), "a message is not a kind");
    }

    use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, TransactionTrait};

    async fn connect(url: &str) -> DatabaseConnection {
        let mut opts = ConnectOptions::new(url);
        opts.max_connections(1);
        Database::connect(opts).await.unwrap()
    }

    /// On a real server: a duplicate key is a unique violation, and losing a lock race is
    /// contention, by the driver's code. `lose` makes the second connection give up at once.
    async fn check_backend(url: &str, lose: &str, lock: &str) {
        let table = format!("maas_fault_probe_{}", std::process::id());
        let (a, b) = (connect(url).await, connect(url).await);
        a.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}")).await.unwrap();
        a.execute_unprepared(&format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY)")).await.unwrap();
        a.execute_unprepared(&format!("INSERT INTO {table} (id) VALUES (1)")).await.unwrap();
        let dup = a.execute_unprepared(&format!("INSERT INTO {table} (id) VALUES (1)")).await.unwrap_err();
        assert_eq!(classify(&dup), Fault::UniqueViolation, "{url}: {dup}");
        let holder = a.begin().await.unwrap();
        holder.execute_unprepared(&lock.replace("{table}", &table)).await.unwrap();
        let loser = b.begin().await.unwrap();
        if !lose.is_empty() {
            loser.execute_unprepared(lose).await.unwrap();
        }
        let lost = loser.execute_unprepared(&lock.replace("{table}", &table)).await.unwrap_err();
        assert_eq!(classify(&lost), Fault::Contention, "{url}: {lost}");
        assert!(transient(&backend(lost)));
        let _ = loser.rollback().await;
        holder.rollback().await.unwrap();
        a.execute_unprepared(&format!("DROP TABLE {table}")).await.unwrap();
    }

    #[tokio::test]
    async fn sqlite_busy_and_duplicate_keys_are_classified_by_code() {
        let path = std::env::temp_dir().join(format!("maas-fault-probe-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let url = format!("sqlite://{}?mode=rwc", path.display());
        // A write lock held by one connection; the other's busy timeout is zero.
        check_backend(&url, "PRAGMA busy_timeout = 0", "INSERT INTO {table} (id) VALUES (2)").await;
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn postgres_lock_timeouts_and_duplicate_keys_are_classified_by_sqlstate() {
        let Ok(url) = std::env::var("MAAS_TEST_POSTGRES_URL") else { return };
        check_backend(&url, "SET LOCAL lock_timeout = '20ms'", "SELECT id FROM {table} WHERE id = 1 FOR UPDATE").await;
    }

    #[tokio::test]
    async fn mariadb_lock_timeouts_and_duplicate_keys_are_classified_by_error_number() {
        let Ok(url) = std::env::var("MAAS_TEST_MYSQL_URL") else { return };
        check_backend(
            &url,
            "SET SESSION innodb_lock_wait_timeout = 1",
            "SELECT id FROM {table} WHERE id = 1 FOR UPDATE",
        )
        .await;
    }

    #[test]
    fn a_raced_guard_is_contention() {
        let e: StoreError = Raced { what: "completion", wrote: 3, expected: 4 }.into();
        assert!(transient(&e));
        assert!(e.to_string().contains("wrote 3 of 4"));
    }
}
