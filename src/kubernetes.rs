//! Glue between Kubernetes discovery and the data plane: the configuration served with
//! Kubernetes (the file's plus our Ingresses'), and the endpoints of its Kubernetes-backed
//! services.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
};

use gatehouse_config::{Config, L4Listener, L4Protocol, Service, ServicePort};
use gatehouse_discovery::kubernetes::{
    self,
    audit::{BLOCK_HOLDS, PASSTHROUGH_NEEDS_FLAG},
    controller_config,
    events::{self, Findings, Notice},
    ingress::{translate, ClassSelection, VerdictKind},
    l4::mappings,
    lease::{self, Election},
    routes::{self, secret_data, secret_pem},
    status::{self, Address, StatusWrite},
    ConfigMapRef, Discovery, DiscoveryEvents, PortRef, ServiceKey,
};
use gatehouse_proxy::{ApplyError, Gatehouse};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// `--kubernetes` and its flags.
pub struct KubeOptions {
    pub kubeconfigs: Vec<PathBuf>,
    pub namespaces: Vec<String>,
    /// `--ingress-class`: a class name that is ours besides IngressClasses naming our
    /// controller.
    pub ingress_class: Option<String>,
    /// `--tcp-services-configmap`, `--udp-services-configmap`.
    pub tcp_services: Option<ConfigMapRef>,
    pub udp_services: Option<ConfigMapRef>,
    /// `--enable-ssl-passthrough`: Ingresses may ask for TLS passthrough.
    pub ssl_passthrough: bool,
    /// `--configmap`: the ingress-nginx controller ConfigMap whose global keys apply.
    pub controller_config: Option<ConfigMapRef>,
    /// Where Ingress status comes from, when Gatehouse writes it.
    pub status: Option<StatusOptions>,
    /// The Lease whose holder writes status and Events for all replicas.
    pub election: Election,
}

/// Where the addresses in Ingress status come from.
pub enum StatusOptions {
    /// `--publish-service`: that Service's load-balancer addresses.
    Service(ConfigMapRef),
    /// `--publish-status-address`.
    Addresses(Vec<String>),
    /// Neither, in a pod (POD_NAME): the nodes its replicas run on.
    Nodes { namespace: String, pod: String },
}

/// What this replica writes to the cluster while it leads: Ingress status (when asked
/// for) and Events on the Ingresses and ConfigMaps it cannot serve as written.
pub struct Publisher {
    leading: watch::Receiver<bool>,
    /// The election, which gives the Lease up when stopped.
    election: tokio::task::JoinHandle<()>,
    status: Option<StatusWriter>,
    events: mpsc::UnboundedSender<Notice>,
    /// What the Events said so far, while leading.
    told: Findings,
    class_flag: Option<String>,
}

struct StatusWriter {
    writer: mpsc::Sender<Vec<StatusWrite>>,
    source: AddressSource,
}

enum AddressSource {
    Service(ConfigMapRef),
    Fixed(Vec<Address>),
    /// Refreshed by a task of its own (`None` until first read).
    Nodes(watch::Receiver<Option<Vec<Address>>>),
}

/// How often the nodes' addresses are read again (pods come and go with nodes).
const NODE_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps the addresses of our pods' nodes current while this replica leads.
fn follow_nodes(
    client: kubernetes::Client,
    namespace: String,
    pod: String,
    mut leading: watch::Receiver<bool>,
    stop: CancellationToken,
) -> watch::Receiver<Option<Vec<Address>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            if *leading.borrow_and_update() {
                match status::node_addresses(&client, &namespace, &pod).await {
                    Ok(addresses) => {
                        failing = false;
                        tx.send_if_modified(|old| {
                            let new = Some(addresses);
                            let changed = *old != new;
                            *old = new;
                            changed
                        });
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(
                            "cannot read the addresses of the nodes running pods like {namespace}/{pod} ({e}); Ingress status keeps its addresses (check RBAC: get and list pods in {namespace}, get nodes; or set --publish-status-address)"
                        );
                    }
                    Err(_) => {}
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = leading.changed() => {}
                _ = tokio::time::sleep(NODE_REFRESH) => {}
            }
        }
    });
    rx
}

impl Publisher {
    /// Once stopped: waits (briefly) for a leader to give its Lease up, so another replica
    /// takes over at once rather than after the Lease's duration.
    pub async fn finish(self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.election).await;
    }

    /// Sends the Events and status writes that the watched objects and what is wrong with
    /// them now call for, if this replica leads.
    pub fn sync(&mut self, discovery: &Discovery, findings: &Findings) {
        if !*self.leading.borrow() {
            // A replica that leads again tells the problems of that time afresh.
            self.told.clear();
            return;
        }
        let notices = events::changes(&self.told, findings);
        if !notices.is_empty() {
            for notice in notices {
                let _ = self.events.send(notice);
            }
            self.told = findings.clone();
        }
        let Some(status) = &self.status else { return };
        let addresses = match &status.source {
            AddressSource::Service(s) => match discovery.service(&s.namespace, &s.name) {
                Some(service) => status::addresses_of(&service),
                None => Vec::new(),
            },
            AddressSource::Fixed(addresses) => addresses.clone(),
            AddressSource::Nodes(nodes) => match nodes.borrow().clone() {
                Some(addresses) => addresses,
                // Not read yet: write nothing rather than clear every address.
                None => return,
            },
        };
        let classes = discovery.classes();
        let selection =
            ClassSelection::from_classes(classes.iter().map(|c| &**c), self.class_flag.as_deref());
        let writes = status::writes(&discovery.primary_ingresses(), &selection, &addresses);
        if !writes.is_empty() {
            // Full: the writer is busy; the next sync asks again for what is still needed.
            let _ = status.writer.try_send(writes);
        }
    }
}

/// Reads `NAMESPACE/NAME`.
pub fn config_map_ref(text: &str) -> Result<ConfigMapRef, String> {
    match text.split_once('/') {
        Some((namespace, name))
            if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
        {
            Ok(ConfigMapRef {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        }
        _ => Err(format!("`{text}` is not NAMESPACE/NAME")),
    }
}

/// What a configuration needs from Kubernetes, it must get: a file naming Kubernetes
/// Services, or an HTTPS listener with no certificate of its own (they would come from
/// Ingress TLS Secrets), is refused without `--kubernetes` rather than served broken.
pub fn check(config: &Config, kubernetes: bool) -> Result<(), String> {
    if kubernetes {
        return Ok(());
    }
    if let Some(s) = config.services.iter().find(|s| s.kubernetes.is_some()) {
        return Err(format!(
            "service `{}` takes endpoints from Kubernetes, but Gatehouse runs without --kubernetes; add the flag or remove `kubernetes:`",
            s.name
        ));
    }
    if config.listen.https.is_some() && config.tls.is_empty() {
        return Err("listen.https is set but `tls` lists no certificate (with --kubernetes, Ingress TLS Secrets can provide them); add a `tls` entry or remove listen.https".to_owned());
    }
    Ok(())
}

/// Builds the clients (one per kubeconfig, or in-cluster) and starts the watches.
pub async fn start(
    options: &KubeOptions,
    gatehouse: &Gatehouse,
    stop: CancellationToken,
) -> Result<(Discovery, DiscoveryEvents, Option<Publisher>), kubernetes::ClientError> {
    let mut clients = Vec::new();
    if options.kubeconfigs.is_empty() {
        clients.push(kubernetes::client(None).await?);
    }
    for path in &options.kubeconfigs {
        clients.push(kubernetes::client(Some(path)).await?);
    }
    let metrics = gatehouse.metrics().clone();
    let maps: Vec<ConfigMapRef> = [
        &options.tcp_services,
        &options.udp_services,
        &options.controller_config,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    let publisher = clients.first().map(|client| {
        let (leading, election) =
            lease::spawn(client.clone(), options.election.clone(), stop.clone());
        let status = options.status.as_ref().map(|s| StatusWriter {
            writer: status::spawn_writer(client.clone(), stop.clone()),
            source: match s {
                StatusOptions::Service(service) => AddressSource::Service(service.clone()),
                StatusOptions::Addresses(list) => {
                    AddressSource::Fixed(status::addresses_from(list))
                }
                StatusOptions::Nodes { namespace, pod } => AddressSource::Nodes(follow_nodes(
                    client.clone(),
                    namespace.clone(),
                    pod.clone(),
                    leading.clone(),
                    stop.clone(),
                )),
            },
        });
        Publisher {
            leading,
            election,
            status,
            events: events::spawn_writer(
                client.clone(),
                options.election.identity.clone(),
                stop.clone(),
            ),
            told: Findings::new(),
            class_flag: options.ingress_class.clone(),
        }
    });
    let (discovery, events) = Discovery::spawn(
        clients,
        &options.namespaces,
        &maps,
        Arc::new(move |kind| metrics.kubernetes_event(kind)),
        stop,
    );
    Ok((discovery, events, publisher))
}

/// The Kubernetes side of what is served: builds configurations from the file and the
/// cluster, and publishes endpoint changes to the services that use them.
pub struct KubeRoutes {
    class_flag: Option<String>,
    ssl_passthrough: bool,
    l4_maps: Vec<(ConfigMapRef, L4Protocol)>,
    controller_config: Option<ConfigMapRef>,
    /// Problems reported last time, so each is logged when it appears, not on every rebuild.
    reported: BTreeSet<String>,
    /// What was wrong with which object at the last build (for Events).
    findings: Findings,
    /// Which served services take endpoints from which Service port.
    users: HashMap<ServiceKey, Vec<(String, PortRef)>>,
}

impl KubeRoutes {
    /// What was wrong with which object at the last build.
    pub fn findings(&self) -> &Findings {
        &self.findings
    }

    pub fn new(options: &KubeOptions) -> Self {
        let l4_maps = [
            (&options.tcp_services, L4Protocol::Tcp),
            (&options.udp_services, L4Protocol::Udp),
        ]
        .into_iter()
        .filter_map(|(m, p)| m.clone().map(|m| (m, p)))
        .collect();
        KubeRoutes {
            class_flag: options.ingress_class.clone(),
            ssl_passthrough: options.ssl_passthrough,
            l4_maps,
            controller_config: options.controller_config.clone(),
            reported: BTreeSet::new(),
            findings: Findings::new(),
            users: HashMap::new(),
        }
    }

    /// Serves `file` plus our Ingresses, with the current endpoints of every
    /// Kubernetes-backed service.
    pub async fn apply(
        &mut self,
        gatehouse: &Gatehouse,
        discovery: &Discovery,
        file: &Config,
    ) -> Result<(), ApplyError> {
        let classes = discovery.classes();
        let selection =
            ClassSelection::from_classes(classes.iter().map(|c| &**c), self.class_flag.as_deref());
        let ingresses = discovery.ingresses();
        let translation = translate(ingresses.iter().map(|i| &**i), &selection);
        let mut problems = Vec::new();
        // The controller ConfigMap's global keys, over the file's.
        let mut file = file.clone();
        let mut applied = controller_config::Applied::default();
        if let Some(map) = &self.controller_config {
            let source = format!("{}/{}", map.namespace, map.name);
            match discovery.config_map(map) {
                Some(m) => {
                    let data = m.data.clone().unwrap_or_default();
                    applied = controller_config::apply(&data, &mut file, &source);
                    problems.append(&mut applied.problems);
                }
                None => problems.push(format!(
                    "ConfigMap {source} (--configmap) does not exist; its settings are not applied until it is created"
                )),
            }
        }
        // As `gatehouse audit` judges them, passthrough refusals and the ConfigMap included.
        let mut verdicts = kubernetes::audit::verdicts(&translation, self.ssl_passthrough);
        kubernetes::audit::judge_applied(&applied, &translation, &mut verdicts);
        for v in &verdicts {
            if v.notes.iter().any(|n| n == BLOCK_HOLDS) {
                problems.push(format!("Ingress {}/{}: {BLOCK_HOLDS}", v.namespace, v.name));
            }
        }
        gatehouse.set_ingresses_view(crate::audit::json(&verdicts));
        let count = |k| verdicts.iter().filter(|v| v.kind == k).count();
        gatehouse.metrics().set_ingress_verdicts(&[
            ("ok", count(VerdictKind::Ok)),
            ("differs", count(VerdictKind::Differs)),
            ("refused", count(VerdictKind::Refused)),
        ]);
        let refused: std::collections::BTreeMap<String, String> = verdicts
            .iter()
            .filter(|v| v.kind == VerdictKind::Refused)
            .map(|v| {
                let why = v.notes.first().cloned().unwrap_or_default();
                (format!("{}/{}", v.namespace, v.name), why)
            })
            .collect();
        let mut l4 = Vec::new();
        for (map, protocol) in &self.l4_maps {
            match discovery.config_map(map) {
                Some(m) => l4.extend(mappings(&m, *protocol, &mut problems)),
                None => problems.push(format!(
                    "ConfigMap {}/{} (--{protocol}-services-configmap) does not exist; no {protocol} ports from it until it is created",
                    map.namespace, map.name
                )),
            }
        }
        let (config, merge_problems) = routes::merge(
            &file,
            &translation,
            &l4,
            &|ns, name| discovery.secret(ns, name).map(|s| secret_pem(&s)),
            // Opaque first (basic auth's users, most CA Secrets); a TLS Secret may carry a
            // `ca.crt` too.
            &|ns, name| {
                discovery
                    .auth_secret(ns, name)
                    .or_else(|| discovery.secret(ns, name))
                    .map(|s| secret_data(&s))
            },
            &|ns, name| {
                discovery
                    .service(ns, name)
                    .and_then(|s| routes::external_name(&s))
            },
            &applied.defaults,
        );
        problems.extend(merge_problems);
        let mut config = config;
        if !self.ssl_passthrough {
            refuse_passthrough(&mut config, &mut problems);
        }
        if let Some(why) = applied.fail_closed {
            for route in config.routes.iter_mut().filter(|r| r.location.is_object()) {
                route.unavailable.get_or_insert_with(|| why.clone());
            }
            problems.push(why);
        }
        let problems: BTreeSet<String> = problems.into_iter().collect();
        for problem in problems.difference(&self.reported) {
            tracing::warn!("{problem}");
        }
        self.reported = problems;
        // Ports of TCP/UDP services ConfigMaps that could not be opened.
        let mut unbound = Vec::new();
        let users = users(&config);
        let endpoints = |service: &Service| {
            let reference = service.kubernetes.as_ref()?;
            let key = ServiceKey {
                namespace: reference.namespace.clone(),
                name: reference.name.clone(),
            };
            Some(discovery.endpoints(&key, &port_ref(&reference.port)))
        };
        loop {
            // A ConfigMap port that cannot be bound (taken on this node) must not hold back
            // every other change: drop that port, say so, and apply the rest.
            let fallback = config
                .l4
                .iter()
                .any(|l| l.location.is_object())
                .then(|| config.clone());
            match (
                gatehouse.apply_discovered(config, &endpoints).await,
                fallback,
            ) {
                (Ok(()), _) => break,
                (Err(ApplyError::Bind { what, addr, source }), Some(mut without)) => {
                    let from_map = |l: &L4Listener| l.location.is_object() && l.listen == addr;
                    let Some(map) = without.l4.iter().find(|l| from_map(l)) else {
                        return Err(ApplyError::Bind { what, addr, source });
                    };
                    let map = map.location.to_string();
                    without.l4.retain(|l| !from_map(l));
                    let line = format!("{map}: cannot listen on {addr} ({source}); that port stays closed, everything else is applied. Free the port or change the entry");
                    tracing::error!("{line}");
                    unbound.push(line);
                    config = without;
                }
                (Err(e), _) => return Err(e),
            }
        }
        self.users = users;
        self.findings = events::findings(self.reported.iter().chain(&unbound), &refused);
        Ok(())
    }

    /// Publishes the endpoints of the Services in `changed` (all, when `None`) to the
    /// services that use them.
    pub async fn publish(
        &self,
        gatehouse: &Gatehouse,
        discovery: &Discovery,
        changed: Option<&BTreeSet<ServiceKey>>,
    ) {
        let keys: Vec<&ServiceKey> = match changed {
            Some(c) => c.iter().collect(),
            None => self.users.keys().collect(),
        };
        for key in keys {
            for (service, port) in self.users.get(key).into_iter().flatten() {
                let endpoints: Vec<SocketAddr> = discovery.endpoints(key, port);
                gatehouse.publish_endpoints(service, endpoints).await;
            }
        }
    }
}

fn users(config: &Config) -> HashMap<ServiceKey, Vec<(String, PortRef)>> {
    let mut users: HashMap<ServiceKey, Vec<(String, PortRef)>> = HashMap::new();
    for service in &config.services {
        if let Some(reference) = &service.kubernetes {
            let key = ServiceKey {
                namespace: reference.namespace.clone(),
                name: reference.name.clone(),
            };
            users
                .entry(key)
                .or_default()
                .push((service.name.clone(), port_ref(&reference.port)));
        }
    }
    users
}

fn port_ref(port: &ServicePort) -> PortRef {
    match port {
        ServicePort::Name(n) => PortRef::Name(n.clone()),
        ServicePort::Number(n) => PortRef::Number(i32::from(*n)),
        ServicePort::First => PortRef::First,
    }
}

/// Without `--enable-ssl-passthrough`, an Ingress asking for passthrough answers 503: served
/// terminated, it would not be what its owner asked for (ingress-nginx ignores the
/// annotation then, silently).
fn refuse_passthrough(config: &mut gatehouse_config::Config, problems: &mut Vec<String>) {
    for route in &mut config.routes {
        if route.passthrough && route.location.is_object() {
            let why = format!("{}: {PASSTHROUGH_NEEDS_FLAG}", route.location);
            problems.push(why.clone());
            route.passthrough = false;
            route.unavailable.get_or_insert(why);
        }
    }
}
