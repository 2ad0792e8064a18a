//! The PowerDriver conformance suite: the simulated fleet and real IPMI pass the same one.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use maas_core::host::BmcEndpoint;
use maas_core::ports::power::{BootDevice, PowerDriver, PowerError, PowerOp, PowerState};

/// What each behaviour gets.
pub struct PowerFixture {
    /// The driver under test.
    pub driver: Arc<dyn PowerDriver>,
    /// At least two reachable BMCs, powered off.
    pub hosts: Vec<BmcEndpoint>,
    /// An endpoint where no BMC answers.
    pub unreachable: BmcEndpoint,
    /// A real BMC addressed with credentials it refuses.
    pub bad_credentials: BmcEndpoint,
}

/// Polls until the BMC reports `target` (BMCs report late: the Redfish emulator's fake
/// systems change up to 11 s after a reset); panics after ~30 s.
pub async fn wait_for(driver: &dyn PowerDriver, bmc: &BmcEndpoint, target: PowerState) {
    for _ in 0..300 {
        if driver.power_status(bmc).await.ok() == Some(target) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{}:{} never reported {target:?}", bmc.address, bmc.port);
}

/// Status follows power on and off.
pub async fn status_follows_power_on_and_off(f: PowerFixture) {
    let (d, b) = (f.driver.as_ref(), &f.hosts[0]);
    assert_eq!(d.power_status(b).await.unwrap(), PowerState::Off);
    let r = d.power(b, PowerOp::On).await.unwrap();
    assert_eq!((r.before, r.sent), (PowerState::Off, Some(PowerOp::On)));
    wait_for(d, b, PowerState::On).await;
    // Only that BMC (or system, behind a BMC that manages several) changed.
    assert_eq!(d.power_status(&f.hosts[1]).await.unwrap(), PowerState::Off, "another host changed too");
    let r = d.power(b, PowerOp::Off).await.unwrap();
    assert_eq!((r.before, r.sent), (PowerState::On, Some(PowerOp::Off)));
    wait_for(d, b, PowerState::Off).await;
    // The other BMC was never touched.
    assert_eq!(d.power_status(&f.hosts[1]).await.unwrap(), PowerState::Off);
}

/// Powering on a host that is on (or off one that is off) sends nothing.
pub async fn redundant_power_requests_send_nothing(f: PowerFixture) {
    let (d, b) = (f.driver.as_ref(), &f.hosts[0]);
    let r = d.power(b, PowerOp::Off).await.unwrap();
    assert_eq!((r.before, r.sent), (PowerState::Off, None));
    d.power(b, PowerOp::On).await.unwrap();
    wait_for(d, b, PowerState::On).await;
    let r = d.power(b, PowerOp::On).await.unwrap();
    assert_eq!((r.before, r.sent), (PowerState::On, None));
}

/// A cycle of a host that is off powers it on, and says so; of a host that is on, cycles.
pub async fn cycle_of_an_off_host_powers_it_on(f: PowerFixture) {
    let (d, b) = (f.driver.as_ref(), &f.hosts[0]);
    let r = d.power(b, PowerOp::Cycle).await.unwrap();
    assert_eq!((r.before, r.sent), (PowerState::Off, Some(PowerOp::On)));
    wait_for(d, b, PowerState::On).await;
    let r = d.power(b, PowerOp::Cycle).await.unwrap();
    assert_eq!((r.before, r.sent), (PowerState::On, Some(PowerOp::Cycle)));
    wait_for(d, b, PowerState::On).await;
}

/// Hard reset leaves the host on.
pub async fn reset_leaves_the_host_on(f: PowerFixture) {
    let (d, b) = (f.driver.as_ref(), &f.hosts[0]);
    d.power(b, PowerOp::On).await.unwrap();
    wait_for(d, b, PowerState::On).await;
    let r = d.power(b, PowerOp::Reset).await.unwrap();
    assert_eq!(r.sent, Some(PowerOp::Reset));
    wait_for(d, b, PowerState::On).await;
}

/// The next boot device reads back as set.
pub async fn boot_device_reads_back(f: PowerFixture) {
    let (d, b) = (f.driver.as_ref(), &f.hosts[0]);
    d.set_boot_device(b, BootDevice::Pxe, false).await.unwrap();
    assert_eq!(d.boot_device(b).await.unwrap(), BootDevice::Pxe);
    d.set_boot_device(b, BootDevice::Disk, true).await.unwrap();
    assert_eq!(d.boot_device(b).await.unwrap(), BootDevice::Disk);
}

/// A probe answers with the power state.
pub async fn probe_reports_power(f: PowerFixture) {
    let (d, b) = (f.driver.as_ref(), &f.hosts[1]);
    assert_eq!(d.probe(b).await.unwrap().power, PowerState::Off);
}

/// A silent BMC is `Unreachable` or `Timeout` (retryable), within the driver's deadline.
pub async fn silent_bmc_is_a_retryable_error(f: PowerFixture) {
    let err = f.driver.power_status(&f.unreachable).await.unwrap_err();
    assert!(matches!(err, PowerError::Unreachable { .. } | PowerError::Timeout { .. }), "{err}");
    assert!(err.is_retryable());
}

/// Refused credentials are an `Authentication` error (not retryable), naming no secret.
pub async fn refused_credentials_are_an_authentication_error(f: PowerFixture) {
    let err = f.driver.power(&f.bad_credentials, PowerOp::On).await.unwrap_err();
    assert!(matches!(err, PowerError::Authentication { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(!err.to_string().contains(&f.bad_credentials.credentials_ref));
}

macro_rules! run_all {
    ($factory:ident, $report:ident, $($name:ident),* $(,)?) => {
        $(
            $name($factory().await).await;
            $report(stringify!($name));
        )*
    };
}

/// Runs every PowerDriver behaviour, each on a fresh fixture from `factory`.
pub async fn exercise<F, Fut>(factory: F, report: impl Fn(&str))
where
    F: Fn() -> Fut,
    Fut: Future<Output = PowerFixture>,
{
    run_all!(
        factory,
        report,
        status_follows_power_on_and_off,
        redundant_power_requests_send_nothing,
        cycle_of_an_off_host_powers_it_on,
        reset_leaves_the_host_on,
        boot_device_reads_back,
        probe_reports_power,
        silent_bmc_is_a_retryable_error,
        refused_credentials_are_an_authentication_error,
    );
}
