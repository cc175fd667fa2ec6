//! `gatehouse_service_requests_total{namespace, ingress, service, code_class}`: requests by
//! the objects that route them, as ingress-nginx's dashboards group them. The cardinality is
//! bounded by the configuration, never by traffic: labels come from the snapshot (no host,
//! path or method of a request), codes are counted by class, and the series of an Ingress or
//! Service that goes away go with it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, OnceLock},
};

use gatehouse_config::{Config, ServiceId};
use prometheus::{IntCounter, IntCounterVec};

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// namespace, ingress, service.
type Labels = [String; 3];

/// The counters of one (namespace, ingress, service), each class resolved on first use.
pub(crate) struct ServiceRequests {
    labels: Labels,
    classes: [OnceLock<IntCounter>; CLASSES.len()],
    vec: IntCounterVec,
}

impl ServiceRequests {
    pub(crate) fn count(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, CLASSES.len()) - 1;
        self.classes[class]
            .get_or_init(|| {
                let [ns, ingress, service] = &self.labels;
                self.vec
                    .with_label_values(&[ns, ingress, service, CLASSES[class]])
            })
            .inc();
    }

    fn remove(&self) {
        let [ns, ingress, service] = &self.labels;
        for class in CLASSES {
            let _ = self.vec.remove_label_values(&[ns, ingress, service, class]);
        }
    }
}

/// One snapshot's counters, by route (the routes' order, then the default service) and the
/// services each route sends to (its paths' and their canaries').
pub(crate) struct ServiceRequestTable {
    by_route: Vec<Vec<(ServiceId, Arc<ServiceRequests>)>>,
}

impl ServiceRequestTable {
    /// The table for `config`, keeping `previous`'s counters whose labels remain and
    /// removing the series of those whose labels are gone.
    pub(crate) fn build(
        config: &Config,
        vec: &IntCounterVec,
        previous: Option<&ServiceRequestTable>,
    ) -> Self {
        let mut known: HashMap<Labels, Arc<ServiceRequests>> = previous
            .into_iter()
            .flat_map(|p| p.by_route.iter().flatten())
            .map(|(_, c)| (c.labels.clone(), c.clone()))
            .collect();
        let mut kept: HashSet<Labels> = HashSet::new();
        let mut entry = |ingress: Option<(&str, &str)>, id: ServiceId| {
            let labels = labels(config, ingress, id);
            kept.insert(labels.clone());
            let counters = known.entry(labels.clone()).or_insert_with(|| {
                Arc::new(ServiceRequests {
                    labels,
                    classes: Default::default(),
                    vec: vec.clone(),
                })
            });
            (id, counters.clone())
        };
        let mut by_route: Vec<Vec<(ServiceId, Arc<ServiceRequests>)>> = Vec::new();
        for route in &config.routes {
            let ingress = route.location.ingress_name();
            let mut services: Vec<ServiceId> = route
                .paths
                .iter()
                .flat_map(|p| {
                    std::iter::once(p.service).chain(p.canary.as_ref().map(|c| c.service))
                })
                .collect();
            services.sort_unstable();
            services.dedup();
            by_route.push(services.into_iter().map(|id| entry(ingress, id)).collect());
        }
        by_route.push(
            config
                .default_service
                .map(|id| entry(None, id))
                .into_iter()
                .collect(),
        );
        for (labels, counters) in known {
            if !kept.contains(&labels) {
                counters.remove();
            }
        }
        ServiceRequestTable { by_route }
    }

    /// The counters of requests that `route` (a stats index) sent to `service`.
    pub(crate) fn get(&self, route: usize, service: ServiceId) -> Option<&ServiceRequests> {
        let services = self.by_route.get(route)?;
        services
            .iter()
            .find(|(id, _)| *id == service)
            .map(|(_, c)| c.as_ref())
    }
}

/// An Ingress's namespace and name; the Service's name (a file's service: its name), and its
/// namespace when no Ingress routes to it.
fn labels(config: &Config, ingress: Option<(&str, &str)>, id: ServiceId) -> Labels {
    let service = &config.services[id.0];
    let (service_namespace, service_name) = match &service.kubernetes {
        Some(k) => (k.namespace.as_str(), k.name.as_str()),
        None => ("", service.name.as_str()),
    };
    let (namespace, ingress) = ingress.unwrap_or((service_namespace, ""));
    [
        namespace.to_owned(),
        ingress.to_owned(),
        service_name.to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Opts, Registry};

    fn config(yaml: &str) -> Config {
        gatehouse_config::parse(yaml, "test.yaml").expect("valid config")
    }

    fn vec() -> (Registry, IntCounterVec) {
        let registry = Registry::new();
        let vec = IntCounterVec::new(
            Opts::new("service_requests_total", "test"),
            &["namespace", "ingress", "service", "code_class"],
        )
        .unwrap();
        registry.register(Box::new(vec.clone())).unwrap();
        (registry, vec)
    }

    fn series(registry: &Registry) -> Vec<(String, u64)> {
        let mut all = Vec::new();
        for family in registry.gather() {
            for m in family.get_metric() {
                let labels: Vec<String> = m
                    .get_label()
                    .iter()
                    .filter(|l| !l.value().is_empty())
                    .map(|l| format!("{}={}", l.name(), l.value()))
                    .collect();
                all.push((labels.join(","), m.get_counter().get_value() as u64));
            }
        }
        all.sort();
        all
    }

    const TWO: &str = "listen: { http: \"127.0.0.1:0\" }\nservices: { web: { endpoints: [\"127.0.0.1:1\"] }, api: { endpoints: [\"127.0.0.1:2\"] } }\nroutes:\n  - { host: a.test, paths: [{ path: /, service: web }, { path: /api, service: api }] }\n";
    const ONE: &str = "listen: { http: \"127.0.0.1:0\" }\nservices: { web: { endpoints: [\"127.0.0.1:1\"] } }\nroutes:\n  - { host: a.test, paths: [{ path: /, service: web }] }\n";

    #[test]
    fn codes_count_by_class_and_a_service_that_goes_takes_its_series() {
        let (registry, vec) = vec();
        let two = config(TWO);
        let table = ServiceRequestTable::build(&two, &vec, None);
        let web = ServiceId(two.services.iter().position(|s| s.name == "web").unwrap());
        let api = ServiceId(two.services.iter().position(|s| s.name == "api").unwrap());
        for status in [200, 204, 404, 502, 999] {
            table.get(0, web).unwrap().count(status);
        }
        table.get(0, api).unwrap().count(200);
        assert!(table.get(1, web).is_none(), "no default service");
        assert_eq!(
            series(&registry),
            vec![
                ("code_class=2xx,service=api".to_owned(), 1),
                ("code_class=2xx,service=web".to_owned(), 2),
                ("code_class=4xx,service=web".to_owned(), 1),
                ("code_class=5xx,service=web".to_owned(), 2),
            ]
        );
        // The next snapshot keeps web's counters and drops api's series.
        let one = config(ONE);
        let next = ServiceRequestTable::build(&one, &vec, Some(&table));
        next.get(0, ServiceId(0)).unwrap().count(200);
        assert_eq!(
            series(&registry),
            vec![
                ("code_class=2xx,service=web".to_owned(), 3),
                ("code_class=4xx,service=web".to_owned(), 1),
                ("code_class=5xx,service=web".to_owned(), 2),
            ]
        );
    }
}
