//! Database servers a test owns alone, so it may stop and start them under a running
//! maasd without disturbing the suite's shared servers (`./scripts/test` starts those).
//! PostgreSQL 15 runs as the unprivileged `maas-pg` user (initdb refuses root), MariaDB as
//! root with its own data directory; both listen on 127.0.0.1 on a free port. Dropping one
//! stops it and removes its files.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (at most 60 s) until 127.0.0.1:`port` accepts connections.
fn await_port(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "{what} did not listen on {port} within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A server the test can stop and start again, keeping its data.
pub(crate) trait PrivateDb {
    /// The URL of its `maas_test` database's server (maasd tests make their own database).
    fn server_url(&self) -> String;
    /// Stops it (connections are cut; nothing answers on its port).
    fn stop(&mut self);
    /// Starts it again on the same port and data.
    fn start(&mut self);
}

/// A PostgreSQL 15 cluster of its own.
pub(crate) struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// initdb, configure, start, create `maas_test`.
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("maas-private-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if !Command::new("id").arg("maas-pg").stdout(Stdio::null()).status().unwrap().success() {
            run(Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "maas-pg",
            ]));
        }
        run(Command::new("chown").arg("maas-pg").arg(&dir));
        let data = dir.join("data");
        run(Command::new("runuser")
            .args(["-u", "maas-pg", "--", &format!("{PG_BIN}/initdb"), "-U", "maas", "--auth=trust", "-D"])
            .arg(&data));
        let port = free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nmax_connections = 100\n",
            dir.display()
        );
        let mut text = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        text.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), text).unwrap();
        let mut pg = PrivatePostgres { dir, port };
        pg.start();
        run(Command::new("runuser").args(["-u", "maas-pg", "--", &format!("{PG_BIN}/createdb")]).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "maas",
            "maas_test",
        ]));
        pg
    }

    fn pg_ctl(&self, args: &[&str]) {
        run(Command::new("runuser")
            .args(["-u", "maas-pg", "--", &format!("{PG_BIN}/pg_ctl"), "-D"])
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(args));
    }
}

impl PrivateDb for PrivatePostgres {
    fn server_url(&self) -> String {
        format!("postgres://maas@127.0.0.1:{}/maas_test", self.port)
    }

    fn stop(&mut self) {
        // Fast: every session is cut at once, as when the server goes away.
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
    }

    fn start(&mut self) {
        self.pg_ctl(&["-w", "-t", "60", "start"]);
        await_port(self.port, "PostgreSQL");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.dir.join("data/postmaster.pid").exists() {
            let _ = Command::new("runuser")
                .args(["-u", "maas-pg", "--", &format!("{PG_BIN}/pg_ctl"), "-D"])
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A MariaDB server of its own.
pub(crate) struct PrivateMariadb {
    dir: PathBuf,
    port: u16,
    server: Option<Child>,
}

impl PrivateMariadb {
    /// mariadb-install-db, start, create `maas_test`.
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("maas-private-mariadb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args(["--user=root", "--auth-root-authentication-method=normal"]));
        let mut db = PrivateMariadb { dir, port: free_port(), server: None };
        db.start();
        run(Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", db.dir.join("sock").display()))
            .args(["-uroot", "-e", "CREATE DATABASE maas_test"]));
        db
    }
}

impl PrivateDb for PrivateMariadb {
    fn server_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/maas_test", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            // SIGTERM: a normal shutdown, connections cut.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    fn start(&mut self) {
        let d = &self.dir;
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .args(["--user=root", "--bind-address=127.0.0.1", "--max-connections=200"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .stdout(Stdio::null())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(d.join("server.log")).unwrap())
            .spawn()
            .expect("mariadbd runs");
        self.server = Some(child);
        await_port(self.port, "MariaDB");
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
