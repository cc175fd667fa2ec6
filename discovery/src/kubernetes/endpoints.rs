//! EndpointSlices → the endpoints of each Service port. Pure: fed kube-runtime watcher
//! events, asked for endpoint sets; no client, no IO.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::runtime::watcher::Event;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service port as a backend names it: by name or by number (the Service's port, not
/// the pods' target port), as Ingress backends do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    Name(String),
    Number(i32),
    /// The Service's first port.
    First,
}

/// The endpoints of one Service port, split by readiness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSet {
    /// Ready endpoints: they get new requests.
    pub ready: Vec<SocketAddr>,
    /// Serving but terminating endpoints: used only when none is ready, so a rollout's last
    /// old pod still drains traffic rather than leaving a 503.
    pub terminating: Vec<SocketAddr>,
}

impl EndpointSet {
    /// The endpoints that receive new requests.
    pub fn serving(&self) -> &[SocketAddr] {
        if self.ready.is_empty() {
            &self.terminating
        } else {
            &self.ready
        }
    }
}

type SliceMap = HashMap<ServiceKey, BTreeMap<String, Arc<EndpointSlice>>>;

/// Every EndpointSlice of the watched namespaces, indexed by Service. A relist (the
/// watcher's `Init` … `InitDone`) is buffered and swapped in whole, as kube's reflector does,
/// so a half-finished relist never removes endpoints.
#[derive(Default)]
pub struct SliceStore {
    slices: SliceMap,
    relist: Option<SliceMap>,
}

fn slice_key(slice: &EndpointSlice) -> Option<(ServiceKey, String)> {
    let meta = &slice.metadata;
    let service = meta.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((
        ServiceKey {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: service.clone(),
        },
        meta.name.clone().unwrap_or_default(),
    ))
}

fn insert(map: &mut SliceMap, slice: EndpointSlice) -> Option<ServiceKey> {
    let (service, name) = slice_key(&slice)?;
    map.entry(service.clone())
        .or_default()
        .insert(name, Arc::new(slice));
    Some(service)
}

impl SliceStore {
    /// Applies one watcher event; returns the Services whose slices changed.
    pub fn apply(&mut self, event: Event<EndpointSlice>) -> BTreeSet<ServiceKey> {
        let mut changed = BTreeSet::new();
        match event {
            Event::Apply(slice) => changed.extend(insert(&mut self.slices, slice)),
            Event::Delete(slice) => {
                if let Some((service, name)) = slice_key(&slice) {
                    if let Some(slices) = self.slices.get_mut(&service) {
                        slices.remove(&name);
                        if slices.is_empty() {
                            self.slices.remove(&service);
                        }
                    }
                    changed.insert(service);
                }
            }
            Event::Init => self.relist = Some(SliceMap::new()),
            Event::InitApply(slice) => {
                let buffer = self.relist.get_or_insert_with(SliceMap::new);
                insert(buffer, slice);
            }
            Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut self.slices, fresh);
                for (service, slices) in &old {
                    if self.slices.get(service) != Some(slices) {
                        changed.insert(service.clone());
                    }
                }
                for service in self.slices.keys() {
                    if !old.contains_key(service) {
                        changed.insert(service.clone());
                    }
                }
            }
        }
        changed
    }

    /// The endpoints of a Service port. `service` (the Service object, if known) maps a port
    /// number to the port's name, which is what EndpointSlices carry.
    pub fn endpoints(
        &self,
        key: &ServiceKey,
        port: &PortRef,
        service: Option<&Service>,
    ) -> EndpointSet {
        let mut set = EndpointSet::default();
        let Some(slices) = self.slices.get(key) else {
            return set;
        };
        let Some(port_name) = port_name(port, service) else {
            return set;
        };
        for slice in slices.values() {
            if slice.address_type == "FQDN" {
                continue;
            }
            let Some(target) = slice_port(slice, &port_name) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let conditions = endpoint.conditions.as_ref();
                // Unset conditions mean "ready" / "serving" (EndpointSlice API semantics).
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
                let bucket = if ready && !terminating {
                    &mut set.ready
                } else if serving && terminating {
                    &mut set.terminating
                } else {
                    continue;
                };
                for address in &endpoint.addresses {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        bucket.push(SocketAddr::new(ip, target));
                    }
                }
            }
        }
        set.ready.sort();
        set.ready.dedup();
        set.terminating.sort();
        set.terminating.dedup();
        set
    }
}

/// The name the Service gives the referenced port (`""` for an unnamed single port).
/// A port number needs the Service to be known: until it is, there are no endpoints
/// (guessing from the slices could pick another port of the same pods).
fn port_name(port: &PortRef, service: Option<&Service>) -> Option<String> {
    match port {
        PortRef::Name(name) => Some(name.clone()),
        PortRef::First => service?
            .spec
            .as_ref()?
            .ports
            .as_ref()?
            .first()
            .map(|p| p.name.clone().unwrap_or_default()),
        PortRef::Number(number) => service?
            .spec
            .as_ref()?
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.port == *number)
            .map(|p| p.name.clone().unwrap_or_default()),
    }
}

/// The pods' port number for the named Service port in one slice.
fn slice_port(slice: &EndpointSlice, name: &str) -> Option<u16> {
    let found = slice
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref().unwrap_or("") == name)?;
    u16::try_from(found.port?).ok()
}

#[cfg(test)]
mod tests;
