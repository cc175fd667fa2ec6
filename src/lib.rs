//! Gatehouse as a library: what keeps the data plane serving what its sources say. The
//! binary (`src/main.rs`) adds the command line, logging and signals; the integration tests
//! drive the same [`reconcile`] loop in-process.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod audit;
pub mod kubernetes;
mod reconcile;

pub use reconcile::{reconcile, ReconcileError, Sources};
