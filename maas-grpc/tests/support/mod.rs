//! What the maasd integration tests share: a real `maasd` process on loopback ports (gRPC,
//! metrics, and the HTTPS listener for REST and the console), with certificates and a
//! policy made for the test, and gRPC clients for its users.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use maas_grpc::devcerts::write_dev_certs;
use maas_grpc::pb::maas_client::MaasClient;
use maas_grpc::pb::{self, action::Kind};
use maas_grpc::tls::TlsFiles;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// A maasd process; killed on drop.
pub(crate) struct Maasd {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) metrics_port: u16,
    /// The HTTPS listener (REST and console).
    pub(crate) http_port: u16,
    pub(crate) dir: PathBuf,
    /// Its database URL.
    pub(crate) db: String,
    /// Remove `dir` when dropped (off for an instance that another will replace).
    pub(crate) owns_dir: bool,
}

impl Drop for Maasd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) const POLICY: &str = r#"{"members": {"alice": ["web-sre"], "bob": ["db-sre"], "olga": ["ops"]},
  "grants": [{"group": "web-sre", "pools": ["web"]}, {"group": "db-sre", "pools": ["db"]},
             {"group": "ops", "admin": true}]}"#;

pub(crate) fn start(name: &str) -> Maasd {
    let dir = std::env::temp_dir().join(format!("maasd-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_dev_certs(&dir.join("certs"), &["alice", "bob", "olga"]).unwrap();
    std::fs::write(dir.join("policy.json"), POLICY).unwrap();
    spawn(&dir, name, &sim_hosts())
}

/// The flags that register 40 simulated hosts (sim000001.dc1 ...).
pub(crate) fn sim_hosts() -> Vec<String> {
    vec!["--sim-hosts".into(), "40".into()]
}

/// Starts maasd on the database, certificates and policy in `dir`, with `extra` flags.
pub(crate) fn spawn(dir: &Path, name: &str, extra: &[String]) -> Maasd {
    spawn_on(dir, name, &format!("sqlite://{}", dir.join("maasd.db").display()), extra)
}

/// Starts maasd on the database at `db`, with the certificates and policy in `dir`.
pub(crate) fn spawn_on(dir: &Path, name: &str, db: &str, extra: &[String]) -> Maasd {
    let (port, metrics_port, http_port) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_maasd"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{metrics_port}"))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{http_port}"))
        .arg("--db")
        .arg(db)
        .arg("--certs")
        .arg(dir.join("certs"))
        .arg("--policy")
        .arg(dir.join("policy.json"))
        .args(["--workers", "2", "--instance", name])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(dir.join("maasd.log")).unwrap())
        .spawn()
        .expect("maasd runs");
    let d = Maasd { child, port, metrics_port, http_port, dir: dir.to_path_buf(), db: db.to_string(), owns_dir: true };
    // A worker-only instance serves no API: its metrics port says it is up.
    let worker_only = extra.windows(2).any(|w| w[0] == "--role" && w[1] == "worker");
    let awaited = if worker_only { metrics_port } else { port };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", awaited)).is_ok() {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("maasd did not listen: {}", std::fs::read_to_string(d.dir.join("maasd.log")).unwrap_or_default());
}

pub(crate) async fn client_with(
    port: u16,
    tls: ClientTlsConfig,
) -> Result<MaasClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(MaasClient::new(channel))
}

pub(crate) async fn client(d: &Maasd, user: &str) -> MaasClient<Channel> {
    let certs = d.dir.join("certs");
    let files = TlsFiles {
        cert: certs.join(format!("{user}.pem")),
        key: certs.join(format!("{user}-key.pem")),
        ca: Some(certs.join("ca.pem")),
    };
    client_with(d.port, files.client("localhost").unwrap()).await.unwrap()
}

pub(crate) fn reboot(hosts: &str) -> pb::SubmitBatchRequest {
    pb::SubmitBatchRequest {
        action: Some(pb::Action { kind: Some(Kind::Reboot(pb::action::Reboot { soft: false })) }),
        hosts: vec![hosts.into()],
        ..Default::default()
    }
}

pub(crate) fn reimage(hosts: &str) -> pb::SubmitBatchRequest {
    pb::SubmitBatchRequest {
        action: Some(pb::Action {
            kind: Some(Kind::Reimage(pb::action::Reimage { os: "ubuntu-24.04".into(), install_timeout_secs: None })),
        }),
        hosts: vec![hosts.into()],
        ..Default::default()
    }
}

pub(crate) async fn batch_count(c: &mut MaasClient<Channel>) -> usize {
    c.list_batches(pb::ListBatchesRequest::default()).await.unwrap().into_inner().batches.len()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

pub(crate) fn host(name: &str, pool: &str) -> pb::Host {
    pb::Host {
        hostname: name.into(),
        site: "dc2".into(),
        pool: pool.into(),
        sku: "gen10".into(),
        bmc_address: "10.9.0.1".into(),
        credentials_ref: "rack-9".into(),
        ..Default::default()
    }
}
