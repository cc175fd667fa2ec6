//! Kubernetes discovery: EndpointSlices (and, to come, Services, Ingresses and Secrets)
//! turned into what the data plane serves.

pub mod endpoints;

pub use endpoints::{EndpointSet, PortRef, ServiceKey, SliceStore};
