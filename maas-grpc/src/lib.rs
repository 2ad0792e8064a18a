//! maas-grpc: the `maas.v1` gRPC API, `maasd` and `maasctl`.
//!
//! Not built yet: this crate is a placeholder in the workspace layout until issue 6 lands.
