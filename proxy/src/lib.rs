//! Gatehouse data plane: listeners, HTTP forwarding, balancing, admin endpoints and metrics.
//!
//! Flow of a request: [`listener`] accepts → hyper parses → [`pipeline::handle`] loads the
//! current [`Snapshot`] (lock-free, `arc-swap`) → routing table → [`upstream`] picks an
//! endpoint and forwards over a pooled connection → the response body streams back and,
//! when it ends, [`completion`] returns the connection, counts metrics and writes the access
//! log line.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod access_log;
mod admin;
mod body;
mod client;
mod completion;
mod conn;
pub mod demo;
mod error;
mod headers;
mod l4;
mod listener;
mod metrics;
mod path;
mod pipeline;
mod redirect;
mod runtime;
mod snapshot;
pub mod tls;
pub mod upstream;

pub use error::ProxyError;
pub use metrics::Metrics;
pub use runtime::{ApplyError, Gatehouse};
pub use snapshot::{Snapshot, SnapshotError, MAX_REQUEST_HEAD};
