//! Kubernetes discovery: EndpointSlices, Services, Ingresses, IngressClasses and TLS Secrets
//! turned into what the data plane serves.

pub mod audit;
pub mod controller_config;
pub mod endpoints;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod ingress;
pub mod l4;
pub mod lease;
pub mod routes;
pub mod status;
mod watch;

pub use endpoints::{EndpointSet, PortRef, ServiceKey, SliceStore};
pub use kube::Client;
pub use watch::{
    client, Change, Changed, ClientError, ConfigMapRef, Discovery, DiscoveryEvents, EventHook,
    TLS_SECRET_TYPE,
};
