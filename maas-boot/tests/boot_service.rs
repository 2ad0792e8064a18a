//! The boot service over a real socket, in front of an engine on the in-memory store and the
//! simulated fleet: what a MAC is offered at each point of a reimage, the configuration,
//! the callbacks (forged, used, real), the store going away, and the submit-time refusals.
//! The netboot lab (maas-grpc/tests/netboot_lab.rs) does the same with real VMs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use maas_boot::{BootProvisioner, BootService, BootServiceConfig, Catalog, CatalogError, ImageConfig, ImageKind};
use maas_core::host::{BmcEndpoint, Host};
use maas_core::ports::inventory::{HostFilter, Inventory};
use maas_core::ports::power::{BootDevice, PowerDriver, PowerError, PowerOp, PowerReport, PowerState, ProbeReport};
use maas_core::ports::store::StoreError;
use maas_core::validate::Problem;
use maas_core::*;
use maas_engine::{Engine, EngineConfig, EngineError, PoolConfig, SystemClock, WorkerConfig, WorkerPool};
use maas_sim::sim::fleet_hosts;
use maas_sim::{FaultPlan, MemStore, SimFleet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Files {
    dir: std::path::PathBuf,
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sha(path: &std::path::Path) -> String {
    maas_boot::catalog::sha256_file(path).unwrap()
}

/// A catalog of one install image (with a cloud-init template) and a wipe image.
fn catalog(files: &Files) -> Vec<ImageConfig> {
    let write = |name: &str, body: &str| {
        let p = files.dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let (k, i, r) = (write("vmlinuz", "kernel"), write("initrd", "initrd"), write("root.img", "root image"));
    let iso = write("installer.iso", "an installer ISO");
    let t = write(
        "user-data",
        "#cloud-config\nhostname: {{ hostname }}\nphone_home: {url: \"{{ first_boot_url }}\"}\nkey: {{ params.ssh_key }}\n",
    );
    let image = |name: &str, kind: ImageKind| ImageConfig {
        name: name.into(),
        kind,
        kernel: k.display().to_string(),
        kernel_sha256: sha(&k),
        initrd: i.display().to_string(),
        initrd_sha256: sha(&i),
        root: (kind == ImageKind::Install).then(|| r.display().to_string()),
        root_sha256: (kind == ImageKind::Install).then(|| sha(&r)),
        iso: (kind == ImageKind::Install).then(|| iso.display().to_string()),
        iso_sha256: (kind == ImageKind::Install).then(|| sha(&iso)),
        kernel_args: "console=ttyS0".into(),
        firmware: Default::default(),
        config_template: (kind == ImageKind::Install).then(|| t.clone()),
    };
    vec![image("ubuntu-24.04", ImageKind::Install), image("wiper", ImageKind::Wipe)]
}

/// An inventory that can be made to fail, as a database that went away.
struct Flaky {
    inner: Arc<MemStore>,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Inventory for Flaky {
    async fn host_get_many(&self, names: &[Hostname]) -> Result<Vec<Host>, StoreError> {
        self.check()?;
        self.inner.host_get_many(names).await
    }
    async fn host_list(&self, filter: HostFilter) -> Result<Vec<Host>, StoreError> {
        self.check()?;
        self.inner.host_list(filter).await
    }
    async fn host_upsert_many(&self, hosts: Vec<Host>) -> Result<usize, StoreError> {
        self.inner.host_upsert_many(hosts).await
    }
    async fn host_set_state(&self, name: &Hostname, change: maas_core::host::StateChange) -> Result<(), StoreError> {
        self.inner.host_set_state(name, change).await
    }
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Backend { message: "connection refused".into(), source: None });
        }
        Ok(())
    }
}

struct Lab {
    _files: Files,
    engine: Engine,
    store: Arc<MemStore>,
    inventory: Arc<Flaky>,
    addr: std::net::SocketAddr,
}

async fn lab() -> Lab {
    lab_with(|fleet| fleet).await
}

async fn lab_with(power: impl FnOnce(Arc<SimFleet>) -> Arc<dyn PowerDriver>) -> Lab {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("maas-boot-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = Files { dir };
    let catalog = Arc::new(Catalog::load(&catalog(&files)).unwrap());
    let store = Arc::new(MemStore::new(Rules::default()));
    let fleet = Arc::new(SimFleet::new(1, FaultPlan::none()));
    let mut hosts = fleet_hosts(&fleet, 1, 3);
    hosts[2].mac = None;
    store.host_upsert_many(hosts).await.unwrap();
    let inventory = Arc::new(Flaky { inner: store.clone(), down: false.into() });
    let clock = Arc::new(SystemClock::new());
    let engine =
        Engine::builder(store.clone(), inventory.clone(), power(fleet), clock.clone(), IdGenerator::new(clock, 7))
            .provisioner(Arc::new(BootProvisioner::new(catalog.clone())))
            .config(EngineConfig::default())
            .build();
    let service = BootService::new(
        engine.clone(),
        catalog,
        BootServiceConfig { public_url: "http://10.0.2.2:1".into(), retry_secs: 5 },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { service.serve(listener, std::future::pending()).await });
    Lab { _files: files, engine, store, inventory, addr }
}

impl Lab {
    /// One fast-polling worker for the fleet's pool.
    fn workers(&self) -> maas_engine::PoolHandle {
        WorkerPool::start(
            &self.engine,
            PoolConfig {
                site: Site::new("dc1").unwrap(),
                pool: Pool::new("web").unwrap(),
                workers: 1,
                worker: WorkerConfig {
                    idle_poll: Duration::from_millis(20),
                    flush_interval: Duration::from_millis(20),
                    ..WorkerConfig::default()
                },
                restart_delay: Duration::from_millis(100),
                instance: "t".into(),
            },
        )
    }
}

/// One HTTP/1.1 request; the status and the body.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn arg<'a>(script: &'a str, key: &str) -> &'a str {
    let start = script.find(&format!("{key}=")).unwrap_or_else(|| panic!("{key} in {script}")) + key.len() + 1;
    script[start..].split_whitespace().next().unwrap()
}

fn reimage(hosts: &str, params: &[(&str, &str)]) -> BatchRequest {
    let mut r = BatchRequest::new(
        Action::Reimage { os: OsRelease::new("ubuntu-24.04").unwrap(), install_timeout_secs: None },
        [hosts],
    );
    r.params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    r
}

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    for _ in 0..400 {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

const MAC1: &str = "52:54:01:00:00:01";

#[tokio::test]
async fn a_reimage_is_offered_configured_called_back_and_withdrawn() {
    let lab = lab().await;
    let alice = Principal::new("alice", []);
    let (status, script) = http(lab.addr, "GET", &format!("/boot/{MAC1}"), "").await;
    assert_eq!(status, 200);
    assert!(script.contains("boot from local disk: no active batch holds it"), "{script}");
    let (_, script) = http(lab.addr, "GET", "/boot/52:54:00:99:99:99", "").await;
    assert!(script.contains("local disk: unknown MAC 52:54:00:99:99:99") && script.contains("sanboot"), "{script}");
    let (_, script) = http(lab.addr, "GET", "/boot/not-a-mac", "").await;
    assert!(script.contains("local disk: the request names no valid MAC"), "{script}");

    let id = lab.engine.submit(&alice, &reimage("sim000001.dc1", &[("ssh_key", "ssh-ed25519 AAAA")])).await.unwrap();
    let id = id.batch.id;
    let pool = lab.workers();
    let mut script = String::new();
    wait_for("the image offered", async || {
        script = http(lab.addr, "GET", &format!("/boot/{}", MAC1.to_uppercase()), "").await.1;
        script.contains("kernel ")
    })
    .await;
    assert!(script.contains("kernel http://10.0.2.2:1/images/ubuntu-24.04/kernel console=ttyS0"), "{script}");
    assert!(script.contains("initrd http://10.0.2.2:1/images/ubuntu-24.04/initrd"), "{script}");
    assert!(script.contains("maas.image_url=http://10.0.2.2:1/images/ubuntu-24.04/root"), "{script}");
    let callback = arg(&script, "maas.callback").to_string();
    let first_boot = arg(&script, "maas.first_boot").to_string();
    let config = arg(&script, "maas.config").to_string();
    let path = |url: &str| url.trim_start_matches("http://10.0.2.2:1").to_string();

    // The image files, byte for byte.
    assert_eq!(http(lab.addr, "GET", "/images/ubuntu-24.04/root", "").await, (200, "root image".into()));
    assert_eq!(http(lab.addr, "GET", "/images/ubuntu-24.04/nope", "").await.0, 404);
    // The configuration, rendered for this host and guarded by the token.
    let (status, rendered) = http(lab.addr, "GET", &path(&config), "").await;
    assert_eq!(status, 200, "{rendered}");
    assert!(rendered.contains("hostname: sim000001.dc1") && rendered.contains("key: ssh-ed25519 AAAA"), "{rendered}");
    assert!(rendered.contains(&first_boot), "{rendered}");
    let forged_config = format!("{}x", path(&config));
    assert_eq!(http(lab.addr, "GET", &forged_config, "").await.0, 404);

    // Wait until the install step is parked, then: a forged token changes nothing.
    wait_for("the install step waiting", async || {
        let b = lab.engine.get_batch(id).await.unwrap();
        b.hosts[0].step == Some(plan::StepKind::AwaitInstall)
    })
    .await;
    let forged = format!("{}0", path(&callback));
    let (status, body) = http(lab.addr, "POST", &forged, r#"{"succeeded": true}"#).await;
    assert_eq!((status, body.contains("unknown, used or expired token")), (404, true), "{body}");
    let (status, body) = http(lab.addr, "POST", &path(&callback), "succeeded=true").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("must be JSON"), "{body}");
    assert_eq!(lab.engine.get_batch(id).await.unwrap().hosts[0].step, Some(plan::StepKind::AwaitInstall));
    // The real one, as busybox wget posts it.
    let (status, body) = http(lab.addr, "POST", &path(&callback), r#"{"succeeded": true}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"state\":\"succeeded\""), "{body}");
    // Used: refused; and the machine is offered its disk from now on.
    assert_eq!(http(lab.addr, "POST", &path(&callback), r#"{"succeeded": true}"#).await.0, 404);
    let (_, script) = http(lab.addr, "GET", &format!("/boot/{MAC1}"), "").await;
    assert!(script.contains("local disk: its await_install step has ended (succeeded)"), "{script}");
    assert_eq!(http(lab.addr, "GET", &path(&config), "").await.0, 404, "the config dies with its step");
    // The new OS reports its first boot: the reimage is done.
    let mut status = 0;
    wait_for("the first boot accepted", async || {
        status = http(lab.addr, "POST", &path(&first_boot), r#"{"succeeded": true}"#).await.0;
        status == 200
    })
    .await;
    wait_for("the batch done", async || lab.engine.get_batch(id).await.unwrap().batch.state == BatchState::Completed)
        .await;
    pool.shutdown().await;
}

#[tokio::test]
async fn a_failed_install_keeps_its_log_and_ends_the_offer() {
    let lab = lab().await;
    let alice = Principal::new("alice", []);
    let mut req = reimage("sim000001.dc1", &[("ssh_key", "k")]);
    req.rollout.failure_budget = 0;
    let id = lab.engine.submit(&alice, &req).await.unwrap().batch.id;
    let pool = lab.workers();
    let mut callback = String::new();
    wait_for("the install step waiting", async || {
        let script = http(lab.addr, "GET", &format!("/boot/{MAC1}"), "").await.1;
        let b = lab.engine.get_batch(id).await.unwrap();
        if script.contains("maas.callback=") {
            callback = arg(&script, "maas.callback").trim_start_matches("http://10.0.2.2:1").to_string();
        }
        b.hosts[0].step == Some(plan::StepKind::AwaitInstall) && !callback.is_empty()
    })
    .await;
    let report = r#"{"succeeded": false, "error": "sha256 mismatch after writing /dev/vda", "log": "wget: ok\ndd: 2048 blocks"}"#;
    assert_eq!(http(lab.addr, "POST", &callback, report).await.0, 200);
    wait_for("the host failed", async || {
        lab.engine.get_batch(id).await.unwrap().hosts[0].state == HostRunState::Failed
    })
    .await;
    let host = &lab.engine.get_batch(id).await.unwrap().hosts[0];
    let error = host.last_error.clone().unwrap_or_default();
    assert!(error.contains("sha256 mismatch") && error.contains("dd: 2048 blocks"), "{error}");
    let (_, script) = http(lab.addr, "GET", &format!("/boot/{MAC1}"), "").await;
    assert!(script.contains("local disk"), "a failed install is not offered again: {script}");
    pool.shutdown().await;
    let _ = lab.store;
}

#[tokio::test]
async fn a_store_that_cannot_answer_gets_the_machine_to_ask_again() {
    let lab = lab().await;
    lab.inventory.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, script) = http(lab.addr, "GET", &format!("/boot/{MAC1}"), "").await;
    assert_eq!(status, 200, "never an error page a firmware would stop at");
    assert!(script.contains("sleep 5\nchain --replace --autofree http://10.0.2.2:1/boot/${mac}"), "{script}");
    assert!(!script.contains("sanboot"), "a host mid-install must not fall through to its disk: {script}");
    lab.inventory.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(http(lab.addr, "GET", &format!("/boot/{MAC1}"), "").await.1.contains("local disk"));
}

#[tokio::test]
async fn submits_the_boot_service_cannot_serve_are_refused_naming_why() {
    let lab = lab().await;
    let alice = Principal::new("alice", []);
    let mut req = reimage("sim[000001-000003].dc1", &[]);
    req.action = Action::Reimage { os: OsRelease::new("rhel-9").unwrap(), install_timeout_secs: None };
    let Err(EngineError::Rejected(report)) = lab.engine.submit(&alice, &req).await else { panic!("accepted") };
    let text = report.to_string();
    assert!(text.contains("action.os: unknown image rhel-9; known: ubuntu-24.04"), "{text}");
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::NotBootable { host, .. } if host.as_str() == "sim000003.dc1")),
        "{text}"
    );
    let dry = lab.engine.dry_run(&alice, &reimage("sim000001.dc1", &[])).await.unwrap();
    assert!(!dry.acceptable);
    assert!(dry.report.to_string().contains("params.ssh_key"), "{}", dry.report);
    // A wipe uses the catalog's wipe image and needs no parameters.
    let wipe = BatchRequest::new(Action::WipeDisks { method: WipeMethod::Quick }, ["sim000001.dc1"]);
    assert!(lab.engine.dry_run(&alice, &wipe).await.unwrap().acceptable);
    assert_eq!(lab.engine.images().len(), 2);
    assert_eq!(lab.engine.images()[0].template_params, ["ssh_key"]);
    assert!(lab.store.claims_snapshot().is_empty(), "nothing was written");
}

#[tokio::test]
async fn virtual_media_hosts_get_the_images_iso_and_an_image_without_one_is_refused() {
    use maas_core::host::{BmcProtocol, BootMethod};
    use maas_core::plan::BootImage;
    use maas_core::ports::services::Provisioner;
    let files = Files { dir: std::env::temp_dir().join(format!("maas-boot-iso-{}", std::process::id())) };
    std::fs::create_dir_all(&files.dir).unwrap();
    let catalog = Arc::new(Catalog::load(&catalog(&files)).unwrap());
    let fleet = SimFleet::new(1, FaultPlan::none());
    let mut host = fleet_hosts(&fleet, 1, 1).remove(0);
    host.bmc.protocol = BmcProtocol::Redfish;
    host.boot_method = BootMethod::VirtualMedia;
    let install = BootImage::Install { os: OsRelease::new("ubuntu-24.04").unwrap() };
    let wipe = BootImage::Wipe { method: WipeMethod::Quick };
    let served = BootProvisioner::new(catalog.clone()).with_public_url("http://10.0.2.2:8080/");
    assert_eq!(served.media_url(&host, &install).unwrap(), "http://10.0.2.2:8080/images/ubuntu-24.04/iso");
    // The wipe image has no ISO: a virtual-media host is refused at submit, naming it.
    let problems = served.check(&wipe, &[&host], &Default::default());
    assert!(
        problems.iter().any(
            |p| p.to_string() == "sim000001.dc1: boots by virtual media, and image wiper has no iso in the catalog"
        ),
        "{problems:?}"
    );
    assert!(served.check(&install, &[&host], &Default::default()).iter().all(|p| !p.to_string().contains("iso")));
    // A local ISO needs the boot service's public URL to be fetched from.
    let err = BootProvisioner::new(catalog).media_url(&host, &install).unwrap_err();
    assert!(err.message.contains("no boot service URL"), "{}", err.message);
    // The boot service serves it.
    let lab = lab().await;
    let (status, body) = http(lab.addr, "GET", "/images/ubuntu-24.04/iso", "").await;
    assert_eq!((status, body.as_str()), (200, "an installer ISO"));
}

#[test]
fn the_catalog_refuses_a_missing_file_or_a_wrong_checksum_naming_it() {
    let dir = std::env::temp_dir().join(format!("maas-boot-catalog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = Files { dir };
    let mut entries = catalog(&files);
    entries[0].initrd_sha256 = "0".repeat(64);
    let e = Catalog::load(&entries).unwrap_err();
    assert!(matches!(e, CatalogError::Checksum { artifact: "initrd", .. }), "{e}");
    assert!(e.to_string().contains("image ubuntu-24.04: initrd"), "{e}");
    let mut entries = catalog(&files);
    entries[0].kernel = files.dir.join("missing").display().to_string();
    let e = Catalog::load(&entries).unwrap_err().to_string();
    assert!(e.contains("image ubuntu-24.04: kernel") && e.contains("missing"), "{e}");
    let mut entries = catalog(&files);
    entries.push(entries[1].clone());
    entries[2].name = "wiper2".into();
    assert!(Catalog::load(&entries).unwrap_err().to_string().contains("second wipe image"));
    let mut entries = catalog(&files);
    entries[0].kernel = "http://mirror.example/vmlinuz".into();
    let c = Catalog::load(&entries).unwrap();
    assert_eq!(c.install_names(), ["ubuntu-24.04"]);
    let _ = BTreeMap::<String, String>::new();
}

/// A BMC that performs the first power cycle but whose answer is lost (a timeout), and
/// records what it is asked.
struct LostCycleAnswer {
    inner: Arc<SimFleet>,
    calls: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl PowerDriver for LostCycleAnswer {
    async fn power_status(&self, bmc: &BmcEndpoint) -> Result<PowerState, PowerError> {
        self.inner.power_status(bmc).await
    }
    async fn power(&self, bmc: &BmcEndpoint, op: PowerOp) -> Result<PowerReport, PowerError> {
        let report = self.inner.power(bmc, op).await?;
        let mut calls = self.calls.lock().unwrap();
        calls.push(format!("{op:?}"));
        if op == PowerOp::Cycle && calls.iter().filter(|c| *c == "Cycle").count() == 1 {
            return Err(PowerError::Timeout { bmc: bmc.address.clone(), millis: 2000 });
        }
        Ok(report)
    }
    async fn set_boot_device(&self, bmc: &BmcEndpoint, device: BootDevice, persistent: bool) -> Result<(), PowerError> {
        self.calls.lock().unwrap().push(format!("boot {device:?}"));
        self.inner.set_boot_device(bmc, device, persistent).await
    }
    async fn boot_device(&self, bmc: &BmcEndpoint) -> Result<BootDevice, PowerError> {
        self.inner.boot_device(bmc).await
    }
    async fn probe(&self, bmc: &BmcEndpoint) -> Result<ProbeReport, PowerError> {
        self.inner.probe(bmc).await
    }
    async fn insert_media(&self, bmc: &BmcEndpoint, image_url: &str) -> Result<(), PowerError> {
        self.inner.insert_media(bmc, image_url).await
    }
    async fn eject_media(&self, bmc: &BmcEndpoint) -> Result<(), PowerError> {
        self.inner.eject_media(bmc).await
    }
}

#[tokio::test]
async fn a_retried_cycle_after_a_lost_answer_arms_the_network_boot_again() {
    let driver = std::sync::OnceLock::new();
    let lab = lab_with(|fleet| {
        let d = Arc::new(LostCycleAnswer { inner: fleet, calls: Default::default() });
        let _ = driver.set(d.clone());
        d
    })
    .await;
    let alice = Principal::new("alice", []);
    let id = lab.engine.submit(&alice, &reimage("sim000001.dc1", &[("ssh_key", "k")])).await.unwrap().batch.id;
    let pool = lab.workers();
    wait_for("the install step waiting", async || {
        lab.engine.get_batch(id).await.unwrap().hosts[0].step == Some(plan::StepKind::AwaitInstall)
    })
    .await;
    pool.shutdown().await;
    // The first cycle happened (the machine used up its one-time PXE flag) but its answer
    // was lost; the retry sets the flag again before cycling.
    let calls = driver.get().unwrap().calls.lock().unwrap().clone();
    assert_eq!(calls, ["boot Pxe", "Cycle", "boot Pxe", "Cycle"], "{calls:?}");
}
