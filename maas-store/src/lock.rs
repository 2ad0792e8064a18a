//! Exclusive holds that make a process's identity safe to act on.
//!
//! - [`SqliteFileLock`] — one process per SQLite file: an exclusive lock on a file beside
//!   the database for as long as it lives. SQLite's own locking keeps two processes from
//!   corrupting the file, but two maas engines on one file would each run leader
//!   singletons and rescue each other's leases with no shared lease table to arbitrate;
//!   several instances belong on PostgreSQL or MariaDB.
//! - [`InstanceLock`] — one process per instance name: on PostgreSQL a session advisory
//!   lock, on MariaDB a `GET_LOCK`, each held by a dedicated connection for the life of the
//!   process (the server drops it when that connection closes, so a killed process frees
//!   its name at once); on a SQLite file the file lock. Holding its name is what lets a
//!   restarted instance take back its earlier incarnations' leases at once
//!   (maas-core's `policy::instance`).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SqliteLockError {
    /// Another process holds it.
    #[error(
        "{} is in use by another process ({holder}; lock file {}): one SQLite file serves one maas \
         instance; run several instances on PostgreSQL or MariaDB (postgres://... or mysql://...)",
        database.display(), lock.display()
    )]
    Held {
        /// The database file.
        database: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// What the holder wrote in it (its pid), as far as it can be read.
        holder: String,
    },
    /// The lock file could not be opened or locked.
    #[error("{}: {source}", lock.display())]
    Io {
        /// The lock file.
        lock: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// An exclusive hold on a SQLite database file, released when dropped (or when the
/// process dies: the operating system drops the lock, so a killed instance never leaves
/// a stale one).
#[derive(Debug)]
pub struct SqliteFileLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl SqliteFileLock {
    /// Locks the database of `url` (`sqlite://PATH[?...]`); `None` for other backends and
    /// in-memory SQLite, which no other process can open.
    pub fn acquire(url: &str) -> Result<Option<SqliteFileLock>, SqliteLockError> {
        let Some(database) = sqlite_path(url) else { return Ok(None) };
        let mut lock = database.clone().into_os_string();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        let io = |source| SqliteLockError::Io { lock: lock.clone(), source };
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock).unwrap_or_default().trim().to_string();
                let holder = if holder.is_empty() { "unknown".to_string() } else { holder };
                return Err(SqliteLockError::Held { database, lock, holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        write!(file, "pid {}", std::process::id()).map_err(io)?;
        Ok(Some(SqliteFileLock { _file: file, path: lock }))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why an instance name was not taken.
#[derive(Debug, thiserror::Error)]
pub enum InstanceLockError {
    /// Another live process holds the name.
    #[error(
        "instance name {name:?} is held by another running process on {database} (waited {waited:?} for it): \
         give each instance its own name (maasd --instance or `instance` in its config); a restarted instance \
         reuses its old name"
    )]
    Held {
        /// The name.
        name: String,
        /// The database (password redacted).
        database: String,
        /// How long it was asked for.
        waited: std::time::Duration,
    },
    /// The SQLite file is held.
    #[error(transparent)]
    Sqlite(#[from] SqliteLockError),
    /// The lock could not be asked for.
    #[error("could not lock instance name {name:?} on {database}: {source}")]
    Backend {
        /// The name.
        name: String,
        /// The database (password redacted).
        database: String,
        /// Why.
        source: sea_orm::DbErr,
    },
}

/// An exclusive hold on an instance name in one database, for as long as it lives.
#[derive(Debug)]
pub struct InstanceLock {
    hold: InstanceHold,
}

#[derive(Debug)]
enum InstanceHold {
    /// A SQLite file: one process per file holds every name in it.
    File(SqliteFileLock),
    /// An in-memory SQLite database: no other process can open it.
    Private,
    /// PostgreSQL or MariaDB: the connection that holds the server-side lock.
    Session(sea_orm::DatabaseConnection),
}

impl InstanceLock {
    /// Takes instance name `name` in the database of `url`, asking again for up to `wait`
    /// while another session holds it, or says who holds it. A killed holder's lock goes
    /// when the server notices its connection closed — a moment after the kill, so a
    /// restart right after one needs a short `wait` (maasd waits 5 s).
    pub async fn acquire(url: &str, name: &str, wait: std::time::Duration) -> Result<InstanceLock, InstanceLockError> {
        use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, Statement};
        if crate::backend_of(url) == Some(DbBackend::Sqlite) {
            let hold = match SqliteFileLock::acquire(url)? {
                Some(file) => InstanceHold::File(file),
                None => InstanceHold::Private,
            };
            return Ok(InstanceLock { hold });
        }
        let database = crate::redact(url);
        let failed = |source| InstanceLockError::Backend { name: name.to_string(), database: database.clone(), source };
        let mut opts = ConnectOptions::new(crate::driver_url(url));
        // One connection, never recycled: the lock lives exactly as long as it does.
        opts.max_connections(1)
            .min_connections(1)
            .idle_timeout(None::<std::time::Duration>)
            .max_lifetime(None::<std::time::Duration>)
            .sqlx_logging(false);
        let db = Database::connect(opts).await.map_err(failed)?;
        let backend = db.get_database_backend();
        let (sql, values): (&str, Vec<sea_orm::Value>) = match backend {
            DbBackend::Postgres => {
                // Advisory locks are per database; the key is the name's stable hash.
                ("SELECT pg_try_advisory_lock($1) AS held", vec![(instance_key(name) as i64).into()])
            }
            _ => {
                // GET_LOCK names are server-wide (at most 64 characters): scoped by database.
                let row = db
                    .query_one_raw(Statement::from_string(backend, "SELECT DATABASE() AS db"))
                    .await
                    .map_err(failed)?;
                let schema: String = row.and_then(|r| r.try_get("", "db").ok()).unwrap_or_default();
                let lock = format!("maas-instance-{:016x}", instance_key(&format!("{schema}\0{name}")));
                ("SELECT GET_LOCK(?, 0) AS held", vec![lock.into()])
            }
        };
        let started = std::time::Instant::now();
        loop {
            let statement = Statement::from_sql_and_values(backend, sql, values.clone());
            let row = db.query_one_raw(statement).await.map_err(failed)?;
            let held = match (backend, row) {
                (DbBackend::Postgres, Some(r)) => r.try_get::<bool>("", "held").map_err(failed)?,
                (_, Some(r)) => r.try_get::<Option<i64>>("", "held").map_err(failed)? == Some(1),
                (_, None) => false,
            };
            if held {
                return Ok(InstanceLock { hold: InstanceHold::Session(db) });
            }
            if started.elapsed() >= wait {
                let _ = db.close().await;
                return Err(InstanceLockError::Held { name: name.to_string(), database, waited: wait });
            }
            tokio::time::sleep(LOCK_RETRY.min(wait)).await;
        }
    }

    /// The lock file, when the name is held by holding a SQLite file.
    pub fn lock_file(&self) -> Option<&Path> {
        match &self.hold {
            InstanceHold::File(f) => Some(f.path()),
            _ => None,
        }
    }

    /// Gives the name up now (dropping the lock gives it up too, once its connection closes).
    pub async fn release(self) {
        if let InstanceHold::Session(db) = self.hold {
            let _ = db.close().await;
        }
    }
}

/// The pause between two asks for a held instance name.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// FNV-1a: a hash that stays the same across builds and platforms (the lock key must be
/// the same in every process and version).
fn instance_key(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The file of a `sqlite:` URL; `None` for other URLs and in-memory databases.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_hold_on_one_file_is_refused_naming_the_holder_and_the_way_out() {
        let dir = std::env::temp_dir().join(format!("maas-sqlite-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("m.db").display());
        let first = SqliteFileLock::acquire(&url).unwrap().expect("a file database is locked");
        let e = SqliteFileLock::acquire(&url).unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())) && text.contains("PostgreSQL"), "{text}");
        drop(first);
        assert!(SqliteFileLock::acquire(&url).unwrap().is_some(), "released when dropped");
        assert!(SqliteFileLock::acquire("sqlite::memory:").unwrap().is_none());
        assert!(SqliteFileLock::acquire("postgres://maas@db/maas").unwrap().is_none());
        std::fs::remove_dir_all(&dir).ok();
    }
}
