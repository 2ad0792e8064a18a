//! The conformance suites: one `pub async fn` per behaviour, named as
//! a sentence, and an `exercise` entry point per seam that runs them all on fresh
//! instances from a factory. maas-core runs them on [`crate::MemStore`] and
//! [`crate::SimFleet`]; every other backend and driver runs the same functions.

pub mod power;
pub mod store;
