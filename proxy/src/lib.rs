//! Gatehouse data plane: listeners, HTTP forwarding, balancing, admin endpoints and metrics.
//!
//! Flow of a request: [`listener`] accepts → hyper parses → [`request::handle`] loads the
//! current [`Snapshot`] (lock-free, `arc-swap`) and takes the request through its steps:
//! resolve → admit ([`policy`] modules) → rewrite → forward ([`upstream`] picks an endpoint
//! and a pooled connection) → respond. The response body streams back and, when it ends,
//! [`completion`] returns the connection, counts metrics and writes the access log line.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod access_log;
mod admin;
mod admin_page;
mod admin_views;
mod client;
mod completion;
mod conn;
pub mod demo;
mod error;
mod grpc;
mod h2_guard;
mod headers;
mod l4;
mod listener;
mod metrics;
mod path;
mod policy;
mod request;
mod request_body;
mod response_body;
mod runtime;
mod snapshot;
mod state;
pub mod tls;
pub mod upstream;
mod vars;
mod warnings;

pub use error::ProxyError;
pub use metrics::Metrics;
/// A per-client rate, for benchmarks and embedders.
pub use policy::client_limits::{Kind as LimitKind, OverLimit, Rate as ClientRate};
pub use runtime::{unreachable_message, ApplyError, Gatehouse};
pub use snapshot::check_files;
pub use snapshot::{Snapshot, SnapshotError, MAX_REQUEST_HEAD};
