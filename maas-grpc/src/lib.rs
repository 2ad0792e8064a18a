//! maas-grpc: the self-service API `maas.v1` over mTLS, and the `maasd` daemon and `maasctl`
//! CLI built on it.
//!
//! - [`pb`]: the generated protobuf and tonic code (compiled by protox in build.rs).
//! - [`service`]: the `Maas` service — each RPC converts at the edge and calls the engine
//!   as the principal of the client certificate.
//! - [`server`]: the service with health, reflection, size limits and RPC metrics.
//! - [`rest`]: the same service as HTTPS + JSON resources (`/v1/...`), server-sent events,
//!   and [`openapi`], its OpenAPI document generated from the route table and the proto.
//! - [`console`]: the web console (`/ui/...`), pages rendered from the same service calls.
//! - [`https`]: the HTTPS listener serving both, with the client certificate's principal.
//! - [`client`]: one client type for a remote `maasd` or an in-process service, and the
//!   shared request vocabulary (action and priority names, rejection details).
//! - `embedded` (feature `sim`): maas in one process on a simulated fleet, behind an
//!   in-process client.
//! - [`identity`]: principals from client certificates and the policy file.
//! - [`tls`]: certificates and keys loaded (and checked) at startup.
//! - [`devcerts`]: a development CA with server and client certificates.
//! - [`metrics`]: Prometheus metrics, `/healthz` and `/readyz`.
//! - [`webhook`]: outbox events (all, a team's, or tickets) POSTed with an HMAC-SHA256
//!   signature.
//! - [`config`]: `maasd`'s TOML configuration, its defaults and its checks.
//! - [`logging`]: tracing output, text or JSON.

pub mod client;
pub mod config;
pub mod console;
pub mod convert;
pub mod devcerts;
#[cfg(feature = "sim")]
pub mod embedded;
pub mod errors;
pub mod https;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod rest;
pub mod server;
pub mod service;
mod status;
pub mod subscriptions;
pub mod tls;
pub mod webhook;

/// The generated `maas.v1` code.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("maas.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("maas_v1_descriptor");
}
