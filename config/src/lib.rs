//! Gatehouse configuration: the model, its YAML parser and validator, and the compiled
//! routing table. Pure data and pure functions: no sockets, no files, no clocks.
//!
//! Flow: YAML text → [`parse`] (every error with file:line:column) → [`Config`] →
//! [`RoutingTable::compile`] → lookups on the request path.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod auth_cache;
pub mod cidr;
mod decode;
mod error;
mod host;
pub mod htpasswd;
mod model;
mod parse;
mod reach;
mod retry;
pub mod routing;
pub mod template;
pub mod units;

pub use auth_cache::AuthCache;
pub use cidr::CidrSet;
/// The allowed name nearest to a typo, if it is close enough to be a likely intent.
pub use decode::closest as did_you_mean;
pub use error::{ConfigError, ConfigErrors, Location};
pub use model::*;
pub use parse::parse;
pub use reach::Unreachable;
pub use retry::{Retry, RetryStatuses};
pub use routing::{HostPattern, RouteMatch, RoutingTable};
pub use template::Template;
