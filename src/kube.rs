//! Glue between Kubernetes discovery and the data plane: which configured services are
//! Kubernetes-backed, and publishing their endpoints when they change.

use std::{collections::BTreeSet, path::PathBuf};

use gatehouse_config::{Config, ServicePort};
use gatehouse_discovery::kubernetes::{
    self, DiscoveryEvents, EndpointDiscovery, PortRef, ServiceKey,
};
use gatehouse_proxy::Gatehouse;
use tokio_util::sync::CancellationToken;

/// `--kubernetes` and its flags.
pub struct KubeOptions {
    pub kubeconfigs: Vec<PathBuf>,
    pub namespaces: Vec<String>,
}

/// A configuration naming Kubernetes Services needs `--kubernetes`: never accept one and
/// then serve those services without endpoints.
pub fn check(config: &Config, kubernetes: bool) -> Result<(), String> {
    match config.services.iter().find(|s| s.kubernetes.is_some()) {
        Some(s) if !kubernetes => Err(format!(
            "service `{}` takes endpoints from Kubernetes, but Gatehouse runs without --kubernetes; add the flag or remove `kubernetes:`",
            s.name
        )),
        _ => Ok(()),
    }
}

/// Builds the clients (one per kubeconfig, or in-cluster) and starts the watches.
pub async fn start(
    options: &KubeOptions,
    stop: CancellationToken,
) -> Result<(EndpointDiscovery, DiscoveryEvents), kubernetes::ClientError> {
    let mut clients = Vec::new();
    if options.kubeconfigs.is_empty() {
        clients.push(kubernetes::client(None).await?);
    }
    for path in &options.kubeconfigs {
        clients.push(kubernetes::client(Some(path)).await?);
    }
    Ok(EndpointDiscovery::spawn(clients, &options.namespaces, stop))
}

/// Publishes the endpoints of the configured Kubernetes-backed services (only those in
/// `changed`, when given).
pub async fn publish(
    gatehouse: &Gatehouse,
    discovery: &EndpointDiscovery,
    changed: Option<&BTreeSet<ServiceKey>>,
) {
    let snapshot = gatehouse.snapshot();
    for service in &snapshot.config().services {
        let Some(reference) = &service.kubernetes else {
            continue;
        };
        let key = ServiceKey {
            namespace: reference.namespace.clone(),
            name: reference.name.clone(),
        };
        if changed.is_some_and(|c| !c.contains(&key)) {
            continue;
        }
        let port = match &reference.port {
            ServicePort::Name(n) => PortRef::Name(n.clone()),
            ServicePort::Number(n) => PortRef::Number(i32::from(*n)),
        };
        let endpoints = discovery.endpoints(&key, &port);
        gatehouse.publish_endpoints(&service.name, endpoints).await;
    }
}
