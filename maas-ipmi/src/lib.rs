//! maas-ipmi: a `maas_core::PowerDriver` over IPMI v2.0 RMCP+ (ipmi-rs).
//!
//! Not built yet: this crate is a placeholder in the workspace layout until issue 5 lands.
//! Until then the only `PowerDriver` is maas-core's simulated fleet.
