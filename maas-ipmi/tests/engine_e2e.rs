//! End to end: the engine reboots and reimages a batch of real `ipmi_sim` BMCs through
//! `IpmiPowerDriver`, with workers on the real runtime; the test plays the installer and
//! delivers each host's install callback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use maas_core::host::{Host, HostState};
use maas_core::machine::JobOutcome;
use maas_core::names::{Hostname, OsRelease, Pool, Site, Sku};
use maas_core::plan::BootImage;
use maas_core::ports::inventory::Inventory;
use maas_core::ports::services::{ImageSummary, PreparedBoot, ProvisionError, Provisioner};
use maas_core::validate::Problem;
use maas_core::*;
use maas_engine::{Engine, EngineConfig, PoolConfig, SystemClock, VerifyPolicy, WorkerConfig, WorkerPool};
use maas_ipmi::harness::{PASSWORD, SimFleet, USER};
use maas_ipmi::{IpmiConfig, IpmiPowerDriver, StaticSecrets};
use maas_sim::MemStore;
use std::collections::BTreeMap;

/// Records which host was told to install, with its callback token.
#[derive(Default)]
struct Installer {
    prepared: Mutex<Vec<(Hostname, PreparedBoot)>>,
}

#[async_trait]
impl Provisioner for Installer {
    fn check(&self, _image: &BootImage, _hosts: &[&Host], _params: &BTreeMap<String, String>) -> Vec<Problem> {
        Vec::new()
    }
    fn images(&self) -> Vec<ImageSummary> {
        Vec::new()
    }
    async fn prepare(&self, host: &Host, boot: &PreparedBoot) -> Result<(), ProvisionError> {
        self.prepared.lock().unwrap().push((host.hostname.clone(), boot.clone()));
        Ok(())
    }
    async fn clear(&self, _host: &Hostname) -> Result<(), ProvisionError> {
        Ok(())
    }
}

async fn wait_terminal(engine: &Engine, id: BatchId, installer: Option<&Installer>) -> BatchState {
    let mut delivered = 0;
    for _ in 0..600 {
        if let Some(installer) = installer {
            let ready: Vec<(Hostname, PreparedBoot)> = installer.prepared.lock().unwrap().clone();
            for (_, boot) in &ready[delivered..] {
                // The installer reports once the host has booted the image, then the new OS
                // its first boot; each retries while its job is not yet parked.
                for token in std::iter::once(&boot.token).chain(&boot.first_boot_token) {
                    for _ in 0..100 {
                        if engine.report_wait_result(token, JobOutcome::Succeeded).await.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            delivered = ready.len();
        }
        let state = engine.get_batch(id).await.unwrap().batch.state;
        if state.is_terminal() {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("batch {id} did not finish in 30 s: {:?}", engine.get_batch(id).await.unwrap().batch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_reboots_and_reimages_ipmi_sim_hosts() {
    let fleet = SimFleet::start_local(4).unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(MemStore::default());
    let hosts: Vec<Host> = fleet
        .bmcs
        .iter()
        .enumerate()
        .map(|(i, b)| Host {
            hostname: Hostname::new(&format!("n{i}.dc1")).unwrap(),
            site: Site::new("dc1").unwrap(),
            rack: None,
            pool: Pool::new("web").unwrap(),
            owner_group: None,
            sku: Sku::new("sim").unwrap(),
            bmc: b.endpoint("sim"),
            state: HostState::Ready,
            mac: None,
            allocated_to: None,
            state_since: None,
            boot_method: Default::default(),
        })
        .collect();
    store.host_upsert_many(hosts).await.unwrap();
    let driver = Arc::new(
        IpmiPowerDriver::new(
            Arc::new(StaticSecrets::new(USER, PASSWORD)),
            IpmiConfig { packet_timeout: Duration::from_millis(500), ..IpmiConfig::default() },
        )
        .unwrap(),
    );
    let installer = Arc::new(Installer::default());
    let clock = Arc::new(SystemClock::new());
    let config = EngineConfig {
        console_check: true,
        verify: VerifyPolicy {
            interval: Duration::from_millis(100),
            deadline: Duration::from_secs(10),
            soft_deadline: Duration::from_secs(10),
        },
        ..EngineConfig::default()
    };
    let engine =
        Engine::builder(store.clone(), store.clone(), driver.clone(), clock.clone(), IdGenerator::new(clock, 7))
            .provisioner(installer.clone())
            .config(config)
            .build();
    let pool = WorkerPool::start(
        &engine,
        PoolConfig {
            site: Site::new("dc1").unwrap(),
            pool: Pool::new("web").unwrap(),
            workers: 2,
            worker: WorkerConfig {
                idle_poll: Duration::from_millis(20),
                flush_interval: Duration::from_millis(10),
                ..Default::default()
            },
            restart_delay: Duration::from_millis(50),
            instance: "e2e".into(),
        },
    );
    let alice = Principal::new("alice", []);

    // Reboot: ipmi_sim runs a cycle as power off, then on.
    let reboot = engine.submit(&alice, &BatchRequest::new(Action::Reboot { soft: false }, ["n[0-3].dc1"])).await;
    let id = reboot.unwrap_or_else(|e| panic!("{e}")).batch.id;
    assert_eq!(wait_terminal(&engine, id, None).await, BatchState::Completed);
    let batch = engine.get_batch(id).await.unwrap();
    assert_eq!(batch.batch.counts.succeeded, 4, "{batch:?}");
    for bmc in &fleet.bmcs {
        assert!(bmc.recorded_power(), "every host ends powered on");
        let calls = bmc.calls();
        assert!(calls.iter().any(|c| c == "set power 1"), "{calls:?}");
    }

    // Reimage: PXE next boot, cycle, the installer's callback, verify, release.
    let os = OsRelease::new("ubuntu-24.04").unwrap();
    let req = BatchRequest::new(Action::Reimage { os, install_timeout_secs: None }, ["n[0-3].dc1"]);
    let id = engine.submit(&alice, &req).await.unwrap_or_else(|e| panic!("{e}")).batch.id;
    assert_eq!(wait_terminal(&engine, id, Some(&installer)).await, BatchState::Completed);
    let batch = engine.get_batch(id).await.unwrap();
    assert_eq!(batch.batch.counts.succeeded, 4, "{batch:?}");
    assert_eq!(installer.prepared.lock().unwrap().len(), 4);
    for bmc in &fleet.bmcs {
        assert!(bmc.calls().iter().any(|c| c == "set boot pxe"), "{:?}", bmc.calls());
        assert!(bmc.recorded_power());
    }
    pool.shutdown().await;
    driver.close_all().await;
    println!("ipmi_sim: the engine rebooted and reimaged {} simulated BMCs", fleet.bmcs.len());
}
