//! The Kubernetes watchers: EndpointSlices and Services, in every watched namespace of every
//! cluster, kept in stores that the glue asks for endpoint sets.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use futures_util::StreamExt;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    runtime::{
        reflector::{self, ObjectRef, Store},
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
}

/// Services whose endpoints may have changed; `None` means any of them.
pub type Changed = Option<BTreeSet<ServiceKey>>;

/// EndpointSlice and Service watchers over one or more clusters.
pub struct EndpointDiscovery {
    scopes: Vec<Scope>,
}

/// What the watchers report.
pub struct DiscoveryEvents {
    /// What changed, as it happens.
    pub changes: mpsc::UnboundedReceiver<Changed>,
    /// Turns true once every watch has completed its first list.
    pub synced: watch::Receiver<bool>,
}

impl EndpointDiscovery {
    /// Starts watching, in `namespaces` (all when empty), through every client.
    pub fn spawn(
        clients: Vec<Client>,
        namespaces: &[String],
        stop: CancellationToken,
    ) -> (Self, DiscoveryEvents) {
        let (tx, changes) = mpsc::unbounded_channel();
        let (synced_tx, synced) = watch::channel(false);
        let namespaces: Vec<Option<&str>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let pending = Arc::new(AtomicUsize::new(clients.len() * namespaces.len() * 2));
        let synced_tx = Arc::new(synced_tx);
        let mut scopes = Vec::new();
        for client in &clients {
            for ns in &namespaces {
                let slices = Arc::new(Mutex::new(SliceStore::default()));
                let (services, writer) = reflector::store::<Service>();
                let once = || SyncOnce::new(pending.clone(), synced_tx.clone());
                tokio::spawn(watch_slices(
                    api(client, *ns),
                    slices.clone(),
                    tx.clone(),
                    once(),
                    stop.clone(),
                ));
                tokio::spawn(watch_services(
                    api(client, *ns),
                    writer,
                    tx.clone(),
                    once(),
                    stop.clone(),
                ));
                scopes.push(Scope { slices, services });
            }
        }
        (
            EndpointDiscovery { scopes },
            DiscoveryEvents { changes, synced },
        )
    }

    /// The endpoints that should receive requests for a Service port, merged across
    /// clusters (one application deployed in several).
    pub fn endpoints(&self, key: &ServiceKey, port: &PortRef) -> Vec<SocketAddr> {
        let reference = ObjectRef::<Service>::new(&key.name).within(&key.namespace);
        let mut all: Vec<SocketAddr> = Vec::new();
        for scope in &self.scopes {
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

async fn watch_slices(
    api: Api<EndpointSlice>,
    store: Arc<Mutex<SliceStore>>,
    changes: mpsc::UnboundedSender<Changed>,
    mut once: SyncOnce,
    stop: CancellationToken,
) {
    let events =
        watcher(api, watcher::Config::default().labels(SERVICE_NAME_LABEL)).default_backoff();
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.next() => e,
        };
        match event {
            Some(Ok(event)) => {
                let done = matches!(event, watcher::Event::InitDone);
                let changed = store.lock().unwrap_or_else(|p| p.into_inner()).apply(event);
                if done {
                    once.listed();
                }
                if !changed.is_empty() && changes.send(Some(changed)).is_err() {
                    return;
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "EndpointSlice watch failed; retrying with back-off, the last known endpoints keep serving")
            }
            None => return,
        }
    }
}

async fn watch_services(
    api: Api<Service>,
    writer: reflector::store::Writer<Service>,
    changes: mpsc::UnboundedSender<Changed>,
    mut once: SyncOnce,
    stop: CancellationToken,
) {
    let events = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.next() => e,
        };
        let key = |s: &Service| ServiceKey {
            namespace: s.metadata.namespace.clone().unwrap_or_default(),
            name: s.metadata.name.clone().unwrap_or_default(),
        };
        let changed: Changed = match event {
            Some(Ok(watcher::Event::Apply(s) | watcher::Event::Delete(s))) => {
                Some([key(&s)].into())
            }
            // After a (re)list any Service's port numbers may resolve differently.
            Some(Ok(watcher::Event::InitDone)) => {
                once.listed();
                None
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Service watch failed; retrying with back-off");
                continue;
            }
            None => return,
        };
        if changes.send(changed).is_err() {
            return;
        }
    }
}
