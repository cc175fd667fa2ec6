//! Ingress status: the addresses Gatehouse serves on, in `.status.loadBalancer.ingress` of
//! every Ingress of its class, so external-dns, Argo CD and `kubectl get ingress` see them.
//! Which Ingresses need a write is worked out from the watched objects (pure); the writes
//! go through a task of their own, so a slow API server never holds up routing.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use k8s_openapi::api::{
    core::v1::{Node, Pod, Service},
    networking::v1::{Ingress, IngressLoadBalancerIngress},
};
use kube::{
    api::{Api, ListParams, Patch, PatchParams},
    Client,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ingress::ClassSelection;

/// One address as Ingress status carries it: an IP, or a host name.
pub type Address = IngressLoadBalancerIngress;

/// `--publish-status-address` entries: IPs as `ip`, anything else as `hostname`.
pub fn addresses_from(list: &[String]) -> Vec<Address> {
    let mut out: Vec<Address> = list
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
        .map(|a| match a.parse::<IpAddr>() {
            Ok(_) => Address {
                ip: Some(a.to_owned()),
                ..Address::default()
            },
            Err(_) => Address {
                hostname: Some(a.to_owned()),
                ..Address::default()
            },
        })
        .collect();
    normalize(&mut out);
    out
}

/// `--publish-service`: the Service's load-balancer addresses, else its external IPs.
pub fn addresses_of(service: &Service) -> Vec<Address> {
    let mut out: Vec<Address> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .map(|i| Address {
            ip: i.ip.clone(),
            hostname: i.hostname.clone(),
            ..Address::default()
        })
        .collect();
    if out.is_empty() {
        let external = service
            .spec
            .as_ref()
            .and_then(|s| s.external_ips.clone())
            .unwrap_or_default();
        out = addresses_from(&external);
    }
    normalize(&mut out);
    out
}

/// Labels that differ between pods of one DaemonSet or Deployment across rollouts.
const REVISION_LABELS: [&str; 3] = [
    "controller-revision-hash",
    "pod-template-generation",
    "pod-template-hash",
];

/// Without a publish flag, as ingress-nginx does for a DaemonSet: the addresses of the
/// nodes that run pods like `pod` (same labels, revision labels aside) in `namespace` and
/// are running; per node its ExternalIP, else its InternalIP.
pub async fn node_addresses(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<Vec<Address>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let me = pods.get(pod).await?;
    let selector = me
        .metadata
        .labels
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !REVISION_LABELS.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let siblings = pods.list(&ListParams::default().labels(&selector)).await?;
    let mut names: Vec<String> = siblings
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.spec?.node_name)
        .collect();
    names.sort();
    names.dedup();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut out = Vec::new();
    for name in names {
        let node = nodes.get(&name).await?;
        let addresses = node.status.and_then(|s| s.addresses).unwrap_or_default();
        let pick = |kind: &str| {
            addresses
                .iter()
                .find(|a| a.type_ == kind)
                .map(|a| a.address.clone())
        };
        if let Some(address) = pick("ExternalIP").or_else(|| pick("InternalIP")) {
            out.push(address);
        }
    }
    Ok(addresses_from(&out))
}

/// Sorted and without duplicates, so equal sets compare equal.
fn normalize(addresses: &mut Vec<Address>) {
    addresses.sort_by(|a, b| (&a.ip, &a.hostname).cmp(&(&b.ip, &b.hostname)));
    addresses.dedup();
}

/// A status write: the Ingress, and the addresses it should show (empty: none).
#[derive(Clone, Debug, PartialEq)]
pub struct StatusWrite {
    pub namespace: String,
    pub name: String,
    pub addresses: Vec<Address>,
}

/// The writes that bring `ingresses` to: ours show `addresses`; one that is no longer ours
/// but still shows exactly them (we wrote them) shows none.
pub fn writes(
    ingresses: &[Arc<Ingress>],
    classes: &ClassSelection,
    addresses: &[Address],
) -> Vec<StatusWrite> {
    let mut out = Vec::new();
    for ingress in ingresses {
        let mut current: Vec<Address> = ingress
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|a| Address { ports: None, ..a })
            .collect();
        normalize(&mut current);
        let target = if classes.is_ours(ingress) {
            addresses.to_vec()
        } else if !addresses.is_empty() && current == addresses {
            Vec::new()
        } else {
            continue;
        };
        if current != target {
            out.push(StatusWrite {
                namespace: ingress.metadata.namespace.clone().unwrap_or_default(),
                name: ingress.metadata.name.clone().unwrap_or_default(),
                addresses: target,
            });
        }
    }
    out
}

/// Starts the writer; send it writes (it drops repeats of one still waiting).
pub fn spawn_writer(client: Client, stop: CancellationToken) -> mpsc::Sender<Vec<StatusWrite>> {
    let (tx, mut rx) = mpsc::channel::<Vec<StatusWrite>>(4);
    tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => return,
                b = rx.recv() => match b { Some(b) => b, None => return },
            };
            // The newest wish per Ingress.
            let mut pending: BTreeMap<(String, String), Vec<Address>> = BTreeMap::new();
            for w in batch
                .into_iter()
                .chain(std::iter::from_fn(|| rx.try_recv().ok()).flatten())
            {
                pending.insert((w.namespace, w.name), w.addresses);
            }
            for ((namespace, name), addresses) in pending {
                let api: Api<Ingress> = Api::namespaced(client.clone(), &namespace);
                let value = match addresses.is_empty() {
                    true => serde_json::Value::Null,
                    false => serde_json::to_value(&addresses).unwrap_or_default(),
                };
                let patch = json!({ "status": { "loadBalancer": { "ingress": value } } });
                match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => tracing::info!(
                        "Ingress {namespace}/{name}: status set to {}",
                        describe(&addresses)
                    ),
                    Err(e) => tracing::warn!(
                        "Ingress {namespace}/{name}: cannot write its status ({e}); trying again on the next change (check RBAC: patch ingresses/status)"
                    ),
                }
            }
        }
    });
    tx
}

fn describe(addresses: &[Address]) -> String {
    if addresses.is_empty() {
        return "no address".to_owned();
    }
    addresses
        .iter()
        .filter_map(|a| a.ip.clone().or_else(|| a.hostname.clone()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(name: &str, class: &str, shown: &[&str]) -> Arc<Ingress> {
        let shown: Vec<serde_json::Value> = shown.iter().map(|ip| json!({ "ip": ip })).collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": { "namespace": "shop", "name": name },
                "spec": { "ingressClassName": class },
                "status": { "loadBalancer": { "ingress": shown } },
            }))
            .unwrap(),
        )
    }

    #[test]
    fn ours_get_the_addresses_and_ones_that_left_lose_them() {
        let classes = ClassSelection::from_classes([], Some("gatehouse"));
        let addresses = addresses_from(&[
            "192.0.2.2".into(),
            "edge.example.com".into(),
            "192.0.2.1".into(),
        ]);
        assert_eq!(addresses.len(), 3);
        let all = [
            ingress("new", "gatehouse", &[]),
            ingress("done", "gatehouse", &["192.0.2.1", "192.0.2.2"]),
            ingress("left", "nginx", &["192.0.2.1", "192.0.2.2"]),
            ingress("other", "nginx", &["198.51.100.7"]),
        ];
        // `done` shows only the IPs: it needs the host name too.
        let got = writes(&all, &classes, &addresses);
        let names: Vec<_> = got
            .iter()
            .map(|w| (w.name.as_str(), w.addresses.len()))
            .collect();
        assert_eq!(names, [("new", 3), ("done", 3)]);
        let ips = addresses_from(&["192.0.2.2".into(), "192.0.2.1".into()]);
        let got = writes(&all, &classes, &ips);
        let names: Vec<_> = got
            .iter()
            .map(|w| (w.name.as_str(), w.addresses.len()))
            .collect();
        assert_eq!(
            names,
            [("new", 2), ("left", 0)],
            "another controller's status is left alone"
        );
    }

    #[test]
    fn a_service_gives_its_load_balancer_addresses_else_its_external_ips() {
        let lb: Service = serde_json::from_value(json!({
            "spec": { "externalIPs": ["203.0.113.9"] },
            "status": { "loadBalancer": { "ingress": [{ "hostname": "lb.example.com" }] } },
        }))
        .unwrap();
        assert_eq!(
            addresses_of(&lb)[0].hostname.as_deref(),
            Some("lb.example.com")
        );
        let plain: Service =
            serde_json::from_value(json!({ "spec": { "externalIPs": ["203.0.113.9"] } })).unwrap();
        assert_eq!(addresses_of(&plain)[0].ip.as_deref(), Some("203.0.113.9"));
    }
}
