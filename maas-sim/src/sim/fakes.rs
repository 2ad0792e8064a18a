//! The simulated world around the engine: a provisioner that remembers what it served, a
//! notifier that records deliveries and fails on demand, and the fleet's host records.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use maas_core::host::{BmcEndpoint, Host, HostState, MacAddr};
use maas_core::model::*;
use maas_core::names::{Hostname, Pool, Site, Sku};
use maas_core::plan::BootImage;
use maas_core::ports::power::PowerState;
use maas_core::ports::services::{ImageSummary, Notifier, NotifyError, PreparedBoot, ProvisionError, Provisioner};
use maas_core::validate::Problem;

use crate::simfleet::SimFleet;

/// A provisioner that remembers what it was asked to serve, so the simulator can play the
/// installer calling back.
#[derive(Debug, Default)]
pub struct SimProvisioner {
    prepared: Mutex<Vec<(Hostname, PreparedBoot)>>,
}

impl SimProvisioner {
    /// Preparations since the last call.
    pub fn take_prepared(&self) -> Vec<(Hostname, PreparedBoot)> {
        std::mem::take(&mut *self.prepared.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl Provisioner for SimProvisioner {
    fn check(&self, _image: &BootImage, _hosts: &[&Host], _params: &BTreeMap<String, String>) -> Vec<Problem> {
        Vec::new()
    }

    fn images(&self) -> Vec<ImageSummary> {
        Vec::new()
    }

    async fn prepare(&self, host: &Host, boot: &PreparedBoot) -> Result<(), ProvisionError> {
        self.prepared.lock().unwrap_or_else(|p| p.into_inner()).push((host.hostname.clone(), boot.clone()));
        Ok(())
    }

    async fn clear(&self, _host: &Hostname) -> Result<(), ProvisionError> {
        Ok(())
    }

    fn media_url(&self, _host: &Host, image: &BootImage) -> Result<String, ProvisionError> {
        Ok(sim_iso_url(image))
    }
}

/// The ISO URL the simulated provisioners give virtual-media hosts.
pub fn sim_iso_url(image: &BootImage) -> String {
    match image {
        BootImage::Install { os } => format!("http://boot.sim/images/{os}/iso"),
        BootImage::Wipe { .. } => "http://boot.sim/images/wipe/iso".into(),
    }
}

/// A notifier that records deliveries and fails on demand.
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    delivered: Mutex<Vec<Event>>,
    failing: Mutex<bool>,
}

impl RecordingNotifier {
    /// Every event delivered, in delivery order (with repeats).
    pub fn delivered(&self) -> Vec<Event> {
        self.delivered.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes deliveries fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = failing;
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    async fn deliver(&self, events: &[Event]) -> Result<(), NotifyError> {
        if *self.failing.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(NotifyError::Refused { receiver: "webhook".into(), answer: "HTTP 503".into() });
        }
        self.delivered.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(events);
        Ok(())
    }
}

/// The hosts of a simulated fleet: `per_site` hosts `sim001.dc1` ... in each of `sites`
/// sites, pool `web`, two SKUs, every BMC powered on in `fleet`.
pub fn fleet_hosts(fleet: &SimFleet, sites: usize, per_site: usize) -> Vec<Host> {
    let mut hosts = Vec::with_capacity(sites * per_site);
    for s in 1..=sites {
        for i in 1..=per_site {
            let bmc = BmcEndpoint::ipmi(format!("10.{}.{}.{}", s, i / 250, i % 250), 623, "bmc-default");
            fleet.add_bmc(&bmc, PowerState::On);
            hosts.push(Host {
                hostname: Hostname::new(&host_name(s, i)).unwrap_or_else(|_| unreachable!("valid by construction")),
                site: site(s),
                rack: None,
                pool: Pool::new("web").unwrap_or_else(|_| unreachable!()),
                owner_group: None,
                sku: Sku::new(if i % 2 == 0 { "gen10" } else { "gen11" }).unwrap_or_else(|_| unreachable!()),
                bmc,
                state: HostState::Ready,
                mac: Some(MacAddr::from_octets([0x52, 0x54, s as u8, (i >> 16) as u8, (i >> 8) as u8, i as u8])),
                allocated_to: None,
                state_since: None,
                boot_method: Default::default(),
            });
        }
    }
    hosts
}

fn host_name(site: usize, i: usize) -> String {
    format!("sim{i:06}.dc{site}")
}

pub(super) fn site(s: usize) -> Site {
    Site::new(&format!("dc{s}")).unwrap_or_else(|_| unreachable!("valid by construction"))
}
