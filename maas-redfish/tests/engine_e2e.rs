//! End to end: one engine drives a mixed fleet — an OpenIPMI `ipmi_sim` BMC and two
//! `sushy-emulator` Redfish systems — through `ByProtocol`; it reboots them all in one
//! batch, and reimages a Redfish host by virtual media (the ISO mounted, booted from
//! the CD, ejected before the disk boots) and another by PXE. An install that fails leaves
//! no media in the drive. The test plays the installer and delivers the callbacks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use maas_core::host::{BmcTls, BootMethod, Host, HostState};
use maas_core::machine::JobOutcome;
use maas_core::names::{Hostname, OsRelease, Pool, Site, Sku};
use maas_core::plan::BootImage;
use maas_core::ports::inventory::Inventory;
use maas_core::ports::power::{BootDevice, ByProtocol, PowerDriver, PowerState};
use maas_core::ports::services::{
    Credentials, ImageSummary, PreparedBoot, ProvisionError, Provisioner, Secrets, SecretsError,
};
use maas_core::validate::Problem;
use maas_core::*;
use maas_engine::{Engine, EngineConfig, PoolConfig, SystemClock, VerifyPolicy, WorkerConfig, WorkerPool};
use maas_ipmi::harness::SimFleet;
use maas_ipmi::{IpmiConfig, IpmiPowerDriver};
use maas_redfish::harness::{BmcPki, Sushy, serve_files};
use maas_redfish::{RedfishConfig, RedfishPowerDriver, TrustConfig};
use maas_sim::MemStore;

/// The IPMI and the Redfish credentials, by reference.
struct FleetSecrets;

#[async_trait]
impl Secrets for FleetSecrets {
    async fn credentials(&self, reference: &str) -> Result<Credentials, SecretsError> {
        match reference {
            "ipmi" => Ok(Credentials::new(maas_ipmi::harness::USER, maas_ipmi::harness::PASSWORD)),
            "redfish" => Ok(Credentials::new(maas_redfish::harness::USER, maas_redfish::harness::PASSWORD)),
            _ => Err(SecretsError { reference: reference.into(), detail: "unknown".into() }),
        }
    }
}

/// Records each prepared boot; serves one ISO URL for virtual media.
struct Installer {
    iso: String,
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
    fn media_url(&self, _host: &Host, _image: &BootImage) -> Result<String, ProvisionError> {
        Ok(self.iso.clone())
    }
}

fn host(name: &str, bmc: maas_core::host::BmcEndpoint, boot_method: BootMethod) -> Host {
    Host {
        hostname: Hostname::new(name).unwrap(),
        site: Site::new("dc1").unwrap(),
        rack: None,
        pool: Pool::new("web").unwrap(),
        owner_group: None,
        sku: Sku::new("mixed").unwrap(),
        bmc,
        state: HostState::Ready,
        mac: None,
        allocated_to: None,
        state_since: None,
        boot_method,
    }
}

/// Waits for every batch in `ids` to end, answering each prepared boot's callbacks: a
/// failed install for the hosts in `failing`, else the install and the first boot.
async fn finish(engine: &Engine, ids: &[BatchId], installer: &Installer, failing: &[&str]) -> Vec<BatchState> {
    let mut delivered = 0;
    for _ in 0..3000 {
        let ready: Vec<(Hostname, PreparedBoot)> = installer.prepared.lock().unwrap().clone();
        for (host, boot) in &ready[delivered..] {
            let (outcome, tokens): (JobOutcome, Vec<&String>) = if failing.contains(&host.as_str()) {
                let failed = JobOutcome::Failed { error: "the installer could not partition".into(), retryable: false };
                (failed, vec![&boot.token])
            } else {
                (JobOutcome::Succeeded, std::iter::once(&boot.token).chain(&boot.first_boot_token).collect())
            };
            for token in tokens {
                // The job parks once the host was cycled (the emulator takes seconds).
                for _ in 0..1200 {
                    if engine.report_wait_result(token, outcome.clone()).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        delivered = ready.len();
        let mut states = Vec::new();
        for id in ids {
            states.push(engine.get_batch(*id).await.unwrap().batch.state);
        }
        if states.iter().all(|s| s.is_terminal()) {
            return states;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("batches {ids:?} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_engine_drives_a_mixed_ipmi_and_redfish_fleet() {
    let fleet = SimFleet::start_local(1).unwrap_or_else(|e| panic!("{e}"));
    let pki = BmcPki::new(&std::env::temp_dir().join(format!("maas-redfish-e2e-{}", std::process::id()))).unwrap();
    let sushy = Sushy::start(&pki, 3, true).unwrap_or_else(|e| panic!("{e}"));
    let iso_dir = pki.dir.join("iso");
    std::fs::create_dir_all(&iso_dir).unwrap();
    std::fs::write(iso_dir.join("ubuntu-24.04.iso"), b"an installer ISO").unwrap();
    let (base, files) = serve_files(iso_dir).await.unwrap();
    let iso = format!("{base}/ubuntu-24.04.iso");

    let store = Arc::new(MemStore::default());
    let media_host = sushy.endpoint(0, "redfish", BmcTls::Verify);
    let pxe_host = sushy.endpoint(1, "redfish", BmcTls::Verify);
    let failing_host = sushy.endpoint(2, "redfish", BmcTls::Verify);
    store
        .host_upsert_many(vec![
            host("n0.dc1", fleet.bmcs[0].endpoint("ipmi"), BootMethod::Network),
            host("n1.dc1", media_host.clone(), BootMethod::VirtualMedia),
            host("n2.dc1", pxe_host.clone(), BootMethod::Network),
            host("n3.dc1", failing_host.clone(), BootMethod::VirtualMedia),
        ])
        .await
        .unwrap();
    let ipmi = Arc::new(
        IpmiPowerDriver::new(
            Arc::new(FleetSecrets),
            IpmiConfig { packet_timeout: Duration::from_millis(500), ..IpmiConfig::default() },
        )
        .unwrap(),
    );
    let redfish = Arc::new(
        RedfishPowerDriver::new(
            Arc::new(FleetSecrets),
            RedfishConfig {
                trust: TrustConfig { ca_file: Some(pki.ca_file.clone()), bundles: HashMap::new() },
                poll_interval: Duration::from_millis(200),
                ..RedfishConfig::default()
            },
        )
        .unwrap(),
    );
    let power = Arc::new(
        ByProtocol::new()
            .with(maas_core::host::BmcProtocol::Ipmi, ipmi.clone())
            .with(maas_core::host::BmcProtocol::Redfish, redfish.clone()),
    );
    let installer = Arc::new(Installer { iso: iso.clone(), prepared: Mutex::default() });
    let clock = Arc::new(SystemClock::new());
    let config = EngineConfig {
        console_check: true,
        // The emulator's systems change power 1 to 11 s after a reset.
        verify: VerifyPolicy {
            interval: Duration::from_millis(250),
            deadline: Duration::from_secs(40),
            soft_deadline: Duration::from_secs(40),
        },
        ..EngineConfig::default()
    };
    let engine =
        Engine::builder(store.clone(), store.clone(), power.clone(), clock.clone(), IdGenerator::new(clock, 9))
            .provisioner(installer.clone())
            .config(config)
            .build();
    let pool = WorkerPool::start(
        &engine,
        PoolConfig {
            site: Site::new("dc1").unwrap(),
            pool: Pool::new("web").unwrap(),
            workers: 3,
            worker: WorkerConfig {
                idle_poll: Duration::from_millis(20),
                flush_interval: Duration::from_millis(10),
                ..Default::default()
            },
            restart_delay: Duration::from_millis(50),
            instance: "mixed".into(),
        },
    );
    let alice = Principal::new("alice", []);

    // One reboot batch across both protocols (the console check probes each BMC its way).
    let reboot = engine.submit(&alice, &BatchRequest::new(Action::Reboot { soft: false }, ["n[0-2].dc1"])).await;
    let id = reboot.unwrap_or_else(|e| panic!("{e}")).batch.id;
    assert_eq!(finish(&engine, &[id], &installer, &[]).await, [BatchState::Completed]);
    let batch = engine.get_batch(id).await.unwrap();
    assert_eq!(batch.batch.counts.succeeded, 3, "{batch:?}");
    assert!(fleet.bmcs[0].recorded_power(), "the IPMI host is on");
    for bmc in [&media_host, &pxe_host] {
        assert_eq!(redfish.power_status(bmc).await.unwrap(), PowerState::On);
    }

    // Reimage: n1 by virtual media, n2 by PXE; and at the same time n3 by virtual media,
    // whose install fails: its host run ends without boot_disk, and the outbox's ejector
    // takes the ISO out.
    let os = OsRelease::new("ubuntu-24.04").unwrap();
    let reimage =
        |hosts: &str| BatchRequest::new(Action::Reimage { os: os.clone(), install_timeout_secs: None }, [hosts]);
    let ok = engine.submit(&alice, &reimage("n[1-2].dc1")).await.unwrap_or_else(|e| panic!("{e}")).batch.id;
    let bad = engine.submit(&alice, &reimage("n3.dc1")).await.unwrap_or_else(|e| panic!("{e}")).batch.id;
    finish(&engine, &[ok, bad], &installer, &["n3.dc1"]).await;
    assert_eq!(engine.get_batch(ok).await.unwrap().batch.counts.succeeded, 2);
    let view = engine.get_batch(bad).await.unwrap();
    assert_eq!(view.batch.counts.failed, 1);
    assert_eq!(view.hosts[0].step, Some(maas_core::plan::StepKind::AwaitInstall), "{:?}", view.hosts[0]);
    let log = sushy.log_text();
    let media_lines: Vec<&str> = log.lines().filter(|l| l.contains("VirtualMedia")).collect();
    assert_eq!(
        log.matches("VirtualMedia.InsertMedia").count(),
        2,
        "two hosts booted by virtual media: {media_lines:#?}"
    );
    assert_eq!(redfish.media_inserted(&media_host).await.unwrap(), None, "ejected before the disk booted");
    assert_eq!(redfish.boot_device(&media_host).await.unwrap(), BootDevice::Disk);
    assert_eq!(redfish.boot_device(&pxe_host).await.unwrap(), BootDevice::Disk);
    assert!(redfish.media_inserted(&failing_host).await.unwrap().is_some(), "no step ejects after a failed install");
    let singletons = maas_engine::Singletons::new(engine.clone(), "mixed");
    let mut ejected = false;
    for _ in 0..100 {
        let _ = singletons.deliver_outbox().await;
        if redfish.media_inserted(&failing_host).await.unwrap().is_none() {
            ejected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ejected, "the ISO stayed in the drive of a failed install");

    pool.shutdown().await;
    redfish.close_all().await;
    ipmi.close_all().await;
    files.abort();
    println!("mixed fleet: 1 IPMI and 3 Redfish hosts rebooted, reimaged by virtual media and PXE, media ejected");
}
