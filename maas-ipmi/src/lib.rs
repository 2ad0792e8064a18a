//! maas-ipmi: maas's `PowerDriver` over IPMI v2.0 RMCP+ (cipher suite 3), on ipmi-rs.
//!
//! - [`commands`]: the chassis, boot-option and session commands ipmi-rs 0.6 lacks, as its
//!   `IpmiCommand` codecs, one file each, with byte-level tests.
//! - [`session`]: one blocking RMCP+ session, raised to administrator, closable.
//! - [`driver`]: [`IpmiPowerDriver`] — blocking calls on tokio's blocking threads, a global
//!   concurrency limit, one serialized session per BMC with a minimum command interval,
//!   deadlines, retries with backoff, classified errors, credentials from `Secrets`.
//! - [`secrets`]: credentials from environment variables, a file, or one fixed pair.
//!
//! Tested against real OpenIPMI `ipmi_sim` BMCs, `ipmitool` and `ipmipower`
//! (`tests/`, started by `./scripts/test`).

pub mod commands;
pub mod driver;
mod errors;
pub mod harness;
pub mod secrets;
pub mod session;

pub use driver::{CIPHER_SUITE, IpmiConfig, IpmiPowerDriver};
pub use secrets::{EnvSecrets, FileSecrets, StaticSecrets};
