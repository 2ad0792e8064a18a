//! `InstanceLock`: one process per instance name, on every backend. A killed holder's
//! release is shown by multiprocess.rs (a restarted instance takes its name at once).

mod common;

use common::server_url;
use std::time::Duration;

use maas_store::{InstanceLock, InstanceLockError};

/// Refuse a held name at once.
const NOW: Duration = Duration::ZERO;

/// Two holds of one name in one database: the second is refused naming the way out; other
/// names and other databases are independent; a release frees the name.
async fn one_holder_per_name(server: &str, tag: &str) {
    let (url, _store) =
        common::fresh_server_db(&server_url(server), &format!("maas_il_{tag}_{}", std::process::id())).await;
    let (other, _other_store) =
        common::fresh_server_db(&server_url(server), &format!("maas_il2_{tag}_{}", std::process::id())).await;
    let first = InstanceLock::acquire(&url, "maasd-a", NOW).await.unwrap();
    let e = InstanceLock::acquire(&url, "maasd-a", NOW).await.unwrap_err();
    assert!(matches!(e, InstanceLockError::Held { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("\"maasd-a\"") && text.contains("--instance"), "{text}");
    let b = InstanceLock::acquire(&url, "maasd-b", NOW).await.expect("another name is free");
    let elsewhere = InstanceLock::acquire(&other, "maasd-a", NOW).await.expect("names are per database");
    // A holder that lets go while another waits: the waiter gets the name (as a restart
    // right after a kill does, once the server notices the dead connection).
    let waiter = tokio::spawn({
        let url = url.clone();
        async move { InstanceLock::acquire(&url, "maasd-a", Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "the name is still held");
    first.release().await;
    let again = waiter.await.unwrap().expect("the waiter gets the name once it is let go");
    for l in [again, b, elsewhere] {
        l.release().await;
    }
}

#[tokio::test]
async fn postgres_holds_one_process_per_instance_name() {
    one_holder_per_name("MAAS_TEST_POSTGRES_URL", "pg").await;
}

#[tokio::test]
async fn mariadb_holds_one_process_per_instance_name() {
    one_holder_per_name("MAAS_TEST_MYSQL_URL", "my").await;
}

#[tokio::test]
async fn sqlite_holds_its_file() {
    let dir = std::env::temp_dir().join(format!("maas-il-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("m.db").display());
    let first = InstanceLock::acquire(&url, "a", NOW).await.unwrap();
    assert!(first.lock_file().is_some());
    let e = InstanceLock::acquire(&url, "b", NOW).await.unwrap_err();
    assert!(e.to_string().contains("PostgreSQL"), "one process per SQLite file, whatever its name: {e}");
    first.release().await;
    drop(InstanceLock::acquire(&url, "b", NOW).await.unwrap());
    assert!(InstanceLock::acquire("sqlite::memory:", "a", NOW).await.unwrap().lock_file().is_none());
    std::fs::remove_dir_all(&dir).ok();
}
