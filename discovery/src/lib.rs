//! Gatehouse discovery: where configurations and endpoints come from: the configuration
//! file, watched for changes, Kubernetes, and DNS for endpoints written as names. It publishes; it never serves
//! traffic.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod file;
pub mod kubernetes;
pub mod names;

pub use file::{load_file, FileWatcher};
