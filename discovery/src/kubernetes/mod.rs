//! Kubernetes discovery: EndpointSlices (and, to come, Services, Ingresses and Secrets)
//! turned into what the data plane serves.

pub mod endpoints;
pub mod ingress;
mod watch;

pub use endpoints::{EndpointSet, PortRef, ServiceKey, SliceStore};
pub use watch::{client, Changed, ClientError, DiscoveryEvents, EndpointDiscovery};
