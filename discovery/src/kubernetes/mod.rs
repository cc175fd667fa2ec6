//! Kubernetes discovery: EndpointSlices (and, to come, Services, Ingresses and Secrets)
//! turned into what the data plane serves.

pub mod endpoints;
mod watch;

pub use endpoints::{EndpointSet, PortRef, ServiceKey, SliceStore};
pub use watch::{client, Changed, ClientError, DiscoveryEvents, EndpointDiscovery};
