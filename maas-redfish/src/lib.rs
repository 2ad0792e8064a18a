//! maas-redfish: maas's `PowerDriver` over DMTF Redfish, on hyper and rustls.
//!
//! - [`driver`]: [`RedfishPowerDriver`] — sessions (basic auth as the fallback), reset
//!   types as the system advertises them, boot override with ETags, task monitors,
//!   virtual media, per-BMC pacing and deadlines, errors in `PowerError`'s classes.
//! - [`tls`]: whom a BMC's certificate must satisfy (a CA bundle, a pinned fingerprint,
//!   or, opted into per host and logged, nothing).
//! - [`harness`]: real emulators for tests and benchmarks (`sushy-emulator`, the Redfish
//!   emulator OpenStack tests Ironic with) and a small stand-in service for what the
//!   emulator does not do (sessions, ETags, task monitors, slowness).
//!
//! Tested against `sushy-emulator` over HTTPS with and without authentication, and the
//! stand-in (`tests/`, started by `./scripts/test`).

pub mod driver;
pub mod harness;
mod http;
pub mod tls;

pub use driver::{BootMode, RedfishConfig, RedfishPowerDriver};
pub use tls::{TrustConfig, TrustError, fingerprint};
