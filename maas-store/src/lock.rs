//! One process per SQLite file: [`SqliteFileLock`] holds an exclusive lock on a file beside
//! the database for as long as it lives. SQLite's own locking keeps two processes from
//! corrupting the file, but two maas engines on one file would each run leader singletons
//! and rescue each other's leases with no shared lease table to arbitrate; several
//! instances belong on PostgreSQL or MariaDB.

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
