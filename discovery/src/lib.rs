//! Gatehouse discovery: where configurations come from. For now, the configuration file,
//! watched for changes. It publishes; it never serves traffic.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod file;

pub use file::{load_file, FileWatcher};
