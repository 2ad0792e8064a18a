//! maas-boot: the boot service. Hosts network-boot from it: their firmware (iPXE, chained
//! from the site's DHCP) asks `GET /boot/{mac}` and gets a script — the image's kernel and
//! initrd with kernel arguments carrying the image URL and checksum, the per-host
//! configuration URL and the callback URLs with their tokens while the host's chain has a
//! pending install or wipe, otherwise "boot from local disk". Installers fetch
//! `GET /config/{host_run}/{token}` (the image's template rendered for the host) and report
//! with `POST /callback/{token}` (JSON: `succeeded`, `error`, `log`).
//!
//! What a host is offered is decided by maas-core's [`maas_core::netboot`] from the job
//! chain the store holds, so every exit path (success, failure, timeout, cancel) withdraws
//! the offer with no clean-up step, and several maasd serve boots consistently.
//!
//! - [`catalog`] — the image catalog, checked at startup.
//! - [`BootProvisioner`] — maas-core's `Provisioner`: submit-time checks, prepare.
//! - [`BootService`] — the HTTP endpoint (axum).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod catalog;
mod provisioner;
mod service;

pub use catalog::{Catalog, CatalogError, ImageConfig, ImageKind};
pub use provisioner::BootProvisioner;
pub use service::{BootService, BootServiceConfig};
