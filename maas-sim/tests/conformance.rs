//! maas-core's own implementations against the conformance suites.

use std::sync::Arc;

use maas_core::host::BmcEndpoint;
use maas_core::ports::PowerState;
use maas_sim::testkit::{power, store};
use maas_sim::{FaultPlan, MemStore, SimFleet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memstore_passes_the_store_conformance_suite() {
    store::exercise(
        || async { Arc::new(MemStore::default()) as Arc<dyn store::Backend> },
        |name| println!("store conformance [memory]: {name} ok"),
    )
    .await;
}

fn bmc(i: u16, creds: &str) -> BmcEndpoint {
    BmcEndpoint::ipmi("127.0.1.1", 9000 + i, creds)
}

#[tokio::test]
async fn simulated_fleet_passes_the_power_driver_suite() {
    power::exercise(
        || async {
            let fleet = SimFleet::new(1, FaultPlan::none());
            let hosts = vec![bmc(1, "ok"), bmc(2, "ok")];
            for h in &hosts {
                fleet.add_bmc(h, PowerState::Off);
            }
            power::PowerFixture {
                driver: Arc::new(fleet),
                hosts: hosts.clone(),
                unreachable: bmc(99, "ok"),
                bad_credentials: bmc(1, "wrong"),
            }
        },
        |name| println!("power driver suite [simulated]: {name} ok"),
    )
    .await;
}
