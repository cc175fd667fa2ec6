//! The Kubernetes watchers: EndpointSlices, Services, Ingresses, IngressClasses, TLS
//! Secrets and the L4 ConfigMaps, in every watched namespace of every cluster, kept in stores that the glue reads
//! endpoint sets and routes from.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures_util::StreamExt;
use k8s_openapi::api::{
    core::v1::{ConfigMap, Secret, Service},
    discovery::v1::EndpointSlice,
    networking::v1::{Ingress, IngressClass},
};
use kube::{
    runtime::{
        reflector::{self, ObjectRef, Store},
        utils::ResetTimerBackoff,
        watcher, WatchStreamExt,
    },
    Api, Client,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::endpoints::{PortRef, ServiceKey, SliceStore, SERVICE_NAME_LABEL};

/// A Kubernetes client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("cannot use the Kubernetes credentials: {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from a kubeconfig file, or from the in-cluster service account when `None`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ClientError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// One watched namespace (or all) of one cluster. Each has its own stores, since a relist
/// replaces a store's whole content.
struct Scope {
    slices: Arc<Mutex<SliceStore>>,
    services: Store<Service>,
    ingresses: Store<Ingress>,
    secrets: Store<Secret>,
    /// Opaque Secrets, for basic authentication's users.
    auth_secrets: Store<Secret>,
}

/// One cluster: its namespaces, its IngressClasses (cluster-scoped), and the L4
/// ConfigMaps named on the command line.
struct Cluster {
    scopes: Vec<Scope>,
    classes: Store<IngressClass>,
    maps: Vec<(ConfigMapRef, Store<ConfigMap>)>,
}

/// A ConfigMap named on the command line (`--tcp-services-configmap NS/NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMapRef {
    pub namespace: String,
    pub name: String,
}

/// Services whose endpoints may have changed; `None` means any of them.
pub type Changed = Option<BTreeSet<ServiceKey>>;

/// What a watcher reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Endpoints changed: republish the endpoint sets of these Services.
    Endpoints(Changed),
    /// An Ingress, IngressClass or TLS Secret changed: rebuild the routes.
    Routes,
}

/// Called with the kind of every object event a watch receives (for metrics).
pub type EventHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// The Kubernetes watchers over one or more clusters: EndpointSlices, Services, Ingresses,
/// IngressClasses and TLS Secrets.
pub struct Discovery {
    clusters: Vec<Cluster>,
}

/// What the watchers report.
pub struct DiscoveryEvents {
    /// What changed, as it happens.
    pub changes: mpsc::UnboundedReceiver<Change>,
    /// Turns true once every watch has completed its first list.
    pub synced: watch::Receiver<bool>,
}

/// The type of the Secrets Gatehouse reads certificates from.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// The type of the Secrets Gatehouse reads basic authentication's users from.
pub const AUTH_SECRET_TYPE: &str = "Opaque";

impl Discovery {
    /// Starts watching, in `namespaces` (all when empty), through every client.
    pub fn spawn(
        clients: Vec<Client>,
        namespaces: &[String],
        config_maps: &[ConfigMapRef],
        on_event: EventHook,
        stop: CancellationToken,
    ) -> (Self, DiscoveryEvents) {
        let (tx, changes) = mpsc::unbounded_channel();
        let (synced_tx, synced) = watch::channel(false);
        let namespaces: Vec<Option<&str>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        // Five namespaced watches per scope, the cluster's IngressClasses, and one per
        // named ConfigMap.
        let per_cluster = namespaces.len() * 5 + 1 + config_maps.len();
        let pending = Arc::new(AtomicUsize::new(clients.len() * per_cluster));
        let synced_tx = Arc::new(synced_tx);
        let once = || SyncOnce::new(pending.clone(), synced_tx.clone());
        let mut clusters = Vec::new();
        for client in &clients {
            let mut scopes = Vec::new();
            for ns in &namespaces {
                let slices = Arc::new(Mutex::new(SliceStore::default()));
                let (services, services_writer) = reflector::store::<Service>();
                let (ingresses, ingresses_writer) = reflector::store::<Ingress>();
                let (secrets, secrets_writer) = reflector::store::<Secret>();
                let (auth_secrets, auth_secrets_writer) = reflector::store::<Secret>();
                tokio::spawn(watch_slices(
                    api(client, *ns),
                    slices.clone(),
                    Reporter::new(&tx, &on_event, once(), "EndpointSlice"),
                    stop.clone(),
                ));
                tokio::spawn(reflect(
                    api(client, *ns),
                    watcher::Config::default(),
                    services_writer,
                    Reporter::new(&tx, &on_event, once(), "Service"),
                    service_change(),
                    stop.clone(),
                ));
                tokio::spawn(reflect(
                    api(client, *ns),
                    watcher::Config::default(),
                    ingresses_writer,
                    Reporter::new(&tx, &on_event, once(), "Ingress"),
                    |_: Option<&Ingress>| Change::Routes,
                    stop.clone(),
                ));
                tokio::spawn(reflect(
                    api(client, *ns),
                    watcher::Config::default().fields(&format!("type={TLS_SECRET_TYPE}")),
                    secrets_writer,
                    Reporter::new(&tx, &on_event, once(), "Secret"),
                    |_: Option<&Secret>| Change::Routes,
                    stop.clone(),
                ));
                tokio::spawn(reflect(
                    api(client, *ns),
                    watcher::Config::default().fields(&format!("type={AUTH_SECRET_TYPE}")),
                    auth_secrets_writer,
                    Reporter::new(&tx, &on_event, once(), "Secret"),
                    |_: Option<&Secret>| Change::Routes,
                    stop.clone(),
                ));
                scopes.push(Scope {
                    slices,
                    services,
                    ingresses,
                    secrets,
                    auth_secrets,
                });
            }
            let (classes, classes_writer) = reflector::store::<IngressClass>();
            tokio::spawn(reflect(
                Api::all(client.clone()),
                watcher::Config::default(),
                classes_writer,
                Reporter::new(&tx, &on_event, once(), "IngressClass"),
                |_: Option<&IngressClass>| Change::Routes,
                stop.clone(),
            ));
            let mut maps = Vec::new();
            for map in config_maps {
                let (store, writer) = reflector::store::<ConfigMap>();
                tokio::spawn(reflect(
                    Api::namespaced(client.clone(), &map.namespace),
                    watcher::Config::default().fields(&format!("metadata.name={}", map.name)),
                    writer,
                    Reporter::new(&tx, &on_event, once(), "ConfigMap"),
                    |_: Option<&ConfigMap>| Change::Routes,
                    stop.clone(),
                ));
                maps.push((map.clone(), store));
            }
            clusters.push(Cluster {
                scopes,
                classes,
                maps,
            });
        }
        (Discovery { clusters }, DiscoveryEvents { changes, synced })
    }

    fn scopes(&self) -> impl Iterator<Item = &Scope> {
        self.clusters.iter().flat_map(|c| c.scopes.iter())
    }

    /// The endpoints that should receive requests for a Service port, merged across
    /// clusters (one application deployed in several).
    pub fn endpoints(&self, key: &ServiceKey, port: &PortRef) -> Vec<SocketAddr> {
        let reference = ObjectRef::<Service>::new(&key.name).within(&key.namespace);
        let mut all: Vec<SocketAddr> = Vec::new();
        for scope in self.scopes() {
            let service = scope.services.get(&reference);
            let set = scope
                .slices
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .endpoints(key, port, service.as_deref());
            all.extend_from_slice(set.serving());
        }
        all.sort();
        all.dedup();
        all
    }

    /// Every Ingress, once: an Ingress present in several clusters (the same application
    /// deployed in each) is taken from the first cluster that has it.
    pub fn ingresses(&self) -> Vec<Arc<Ingress>> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for scope in self.scopes() {
            for ingress in scope.ingresses.state() {
                let key = (
                    ingress.metadata.namespace.clone(),
                    ingress.metadata.name.clone(),
                );
                if seen.insert(key) {
                    out.push(ingress);
                }
            }
        }
        out
    }

    /// The Ingresses of the first cluster (whose API Gatehouse writes status to).
    pub fn primary_ingresses(&self) -> Vec<Arc<Ingress>> {
        let mut out = Vec::new();
        for scope in self.clusters.iter().take(1).flat_map(|c| c.scopes.iter()) {
            out.extend(scope.ingresses.state());
        }
        out
    }

    /// Every IngressClass of every cluster.
    pub fn classes(&self) -> Vec<Arc<IngressClass>> {
        self.clusters
            .iter()
            .flat_map(|c| c.classes.state())
            .collect()
    }

    /// A ConfigMap named on the command line, from the first cluster that has it.
    pub fn config_map(&self, map: &ConfigMapRef) -> Option<Arc<ConfigMap>> {
        let reference = ObjectRef::<ConfigMap>::new(&map.name).within(&map.namespace);
        self.clusters.iter().find_map(|c| {
            c.maps
                .iter()
                .filter(|(r, _)| r == map)
                .find_map(|(_, store)| store.get(&reference))
        })
    }

    /// A Service, from the first cluster that has it.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        let reference = ObjectRef::<Service>::new(name).within(namespace);
        self.scopes()
            .find_map(|scope| scope.services.get(&reference))
    }

    /// An Opaque Secret (basic authentication's users), from the first cluster that has it.
    pub fn auth_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        let reference = ObjectRef::<Secret>::new(name).within(namespace);
        self.scopes()
            .find_map(|scope| scope.auth_secrets.get(&reference))
    }

    /// A TLS Secret, from the first cluster that has it.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        let reference = ObjectRef::<Secret>::new(name).within(namespace);
        self.scopes()
            .find_map(|scope| scope.secrets.get(&reference))
            .filter(|s| s.type_.as_deref() == Some(TLS_SECRET_TYPE))
    }
}

/// Drops what Gatehouse never reads and what often outweighs the rest of an object
/// (server-side apply bookkeeping, kubectl's copy of the last applied object), before it
/// is stored.
fn slim<K: kube::Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// What a Service event changes: an ExternalName Service (or one that just stopped being
/// one) is part of the routes, so they are rebuilt; any other changes only how port
/// numbers map to EndpointSlice ports, so its endpoints are published again. After a
/// (re)list, both may have changed.
fn service_change() -> impl Fn(Option<&Service>) -> Change + Send + 'static {
    let external = Mutex::new(BTreeSet::new());
    move |service: Option<&Service>| {
        let Some(service) = service else {
            return Change::Routes;
        };
        let key = service_key(service);
        let is = super::routes::external_name(service).is_some();
        let mut known = external.lock().unwrap_or_else(|p| p.into_inner());
        let was = match is {
            true => !known.insert(key.clone()),
            false => known.remove(&key),
        };
        match is || was {
            true => Change::Routes,
            false => Change::Endpoints(Some([key].into())),
        }
    }
}

fn service_key(s: &Service) -> ServiceKey {
    ServiceKey {
        namespace: s.metadata.namespace.clone().unwrap_or_default(),
        name: s.metadata.name.clone().unwrap_or_default(),
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Counts a watch's first complete list towards "synced", once.
struct SyncOnce {
    pending: Arc<AtomicUsize>,
    synced: Arc<watch::Sender<bool>>,
    done: bool,
}

impl SyncOnce {
    fn new(pending: Arc<AtomicUsize>, synced: Arc<watch::Sender<bool>>) -> Self {
        SyncOnce {
            pending,
            synced,
            done: false,
        }
    }

    fn listed(&mut self) {
        if !self.done {
            self.done = true;
            if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
                let _ = self.synced.send(true);
            }
        }
    }
}

/// What a watcher event was, for counting and for "synced".
#[derive(Clone, Copy)]
enum Seen {
    /// An object arrived (listed, added, changed or deleted).
    Object,
    /// A (re)list is complete.
    Listed,
    Other,
}

impl Seen {
    fn of<K>(event: &watcher::Event<K>) -> Self {
        match event {
            watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitApply(_) => {
                Seen::Object
            }
            watcher::Event::InitDone => Seen::Listed,
            watcher::Event::Init => Seen::Other,
        }
    }
}

/// How one watch tells the rest what happened.
struct Reporter {
    changes: mpsc::UnboundedSender<Change>,
    on_event: EventHook,
    once: SyncOnce,
    kind: &'static str,
}

impl Reporter {
    fn new(
        changes: &mpsc::UnboundedSender<Change>,
        on_event: &EventHook,
        once: SyncOnce,
        kind: &'static str,
    ) -> Self {
        Reporter {
            changes: changes.clone(),
            on_event: on_event.clone(),
            once,
            kind,
        }
    }

    /// Counts and forwards one watcher event; false when nobody listens any more.
    fn event(&mut self, seen: Seen, change: Option<Change>) -> bool {
        match seen {
            Seen::Object => (self.on_event)(self.kind),
            Seen::Listed => self.once.listed(),
            Seen::Other => {}
        }
        match change {
            Some(change) => self.changes.send(change).is_ok(),
            None => true,
        }
    }

    fn failed(&self, error: &watcher::Error) {
        tracing::warn!(
            kind = self.kind,
            error = %error,
            "Kubernetes watch of {}s failed; retrying with back-off. The last known state keeps serving",
            self.kind
        );
    }
}

/// How long a watch waits before it tries again after an error: 200 ms, doubling up to
/// 500 ms, plus up to 200 ms of jitter, so a change made while the API server was away is
/// served within 0.7 s (and its processing) of its answering again. client-go's default
/// (and kube-rs's) grows to 30 s, which left such changes waiting 6-8 s after short
/// outages; a handful of watches per replica retrying about twice a second is a light load
/// for an API server, and the jitter spreads the replicas of a DaemonSet.
fn retry_backoff() -> ResetTimerBackoff<watcher::ExponentialBackoff> {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_millis(500))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(builder.into(), Duration::from_secs(120))
}

async fn watch_slices(
    api: Api<EndpointSlice>,
    store: Arc<Mutex<SliceStore>>,
    mut reporter: Reporter,
    stop: CancellationToken,
) {
    let events = watcher(api, watcher::Config::default().labels(SERVICE_NAME_LABEL))
        .backoff(retry_backoff())
        .modify(slim);
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.next() => e,
        };
        match event {
            Some(Ok(event)) => {
                // The store takes the event first, so "synced" is only said once it holds
                // the whole list.
                let seen = Seen::of(&event);
                let changed = store.lock().unwrap_or_else(|p| p.into_inner()).apply(event);
                let change = (!changed.is_empty()).then_some(Change::Endpoints(Some(changed)));
                if !reporter.event(seen, change) {
                    return;
                }
            }
            Some(Err(e)) => reporter.failed(&e),
            None => return,
        }
    }
}

/// Keeps a reflector store of one kind up to date and reports each change as `change`
/// says: with the object for an applied or deleted one, `None` after a (re)list.
async fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    mut reporter: Reporter,
    change: impl Fn(Option<&K>) -> Change,
    stop: CancellationToken,
) where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let events = reflector::reflector(
        writer,
        watcher(api, config).backoff(retry_backoff()).modify(slim),
    );
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.next() => e,
        };
        let keep_going = match &event {
            Some(Ok(event)) => {
                let what = match event {
                    watcher::Event::Apply(o) | watcher::Event::Delete(o) => Some(change(Some(o))),
                    watcher::Event::InitDone => Some(change(None)),
                    watcher::Event::Init | watcher::Event::InitApply(_) => None,
                };
                reporter.event(Seen::of(event), what)
            }
            Some(Err(e)) => {
                reporter.failed(e);
                true
            }
            None => false,
        };
        if !keep_going {
            return;
        }
    }
}
