//! maas-py: the Python module `maas` (pyo3 + maturin).
//!
//! Not built yet: this crate is a placeholder in the workspace layout until issue 7 lands.
//! It is not a default member, so `cargo test` needs no Python.
