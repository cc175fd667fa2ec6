//! The reconcile loop: the configuration file and the Kubernetes watches in, snapshots and
//! endpoint sets out, until told to stop.

use gatehouse_config::ConfigErrors;
use gatehouse_discovery::{
    kubernetes::{Change, Changed, ClientError},
    names::NameResolution,
    FileWatcher,
};
use gatehouse_proxy::{ApplyError, Gatehouse};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::kubernetes::{self, KubeOptions, KubeRoutes};

/// Where the served configuration comes from besides the one `gatehouse` started with.
pub struct Sources {
    /// The configuration file, reloaded on change (and when its reload handle is notified).
    pub file: Option<FileWatcher>,
    /// `--kubernetes`: Ingresses of our class and EndpointSlices.
    pub kubernetes: Option<KubeOptions>,
    /// `--admin-listen`: the admin listener's address, whatever the file says.
    pub admin_listen: Option<std::net::SocketAddr>,
}

/// Why the loop could not keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("cannot start Kubernetes discovery: {0}")]
    Discovery(#[from] ClientError),
    #[error("cannot serve what Kubernetes holds: {0}")]
    FirstSync(ApplyError),
}

/// Keeps `gatehouse` serving its starting configuration plus what `sources` say, until
/// `stop` fires. Marks it ready once every source has been read once: at once for a file,
/// after the first list of every watch with Kubernetes. A bad update is logged and counted
/// and leaves what is served as it was.
pub async fn reconcile(
    gatehouse: &Gatehouse,
    sources: Sources,
    stop: CancellationToken,
) -> Result<(), ReconcileError> {
    // Discovery tasks stop with the loop, whichever way it ends.
    let _stop_discovery = stop.clone().drop_guard();
    let (discovery, mut changes, mut synced_rx, mut publisher) = match &sources.kubernetes {
        Some(options) => {
            let (d, events, publisher) =
                kubernetes::start(options, gatehouse, stop.clone()).await?;
            (
                Some(d),
                Some(events.changes),
                Some(events.synced),
                publisher,
            )
        }
        None => (None, None, None, None),
    };
    // Ingress status and Events follow the watched objects within a second; the check is
    // cheap and writes only what differs.
    let mut status_ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    status_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut kube_routes = sources.kubernetes.as_ref().map(KubeRoutes::new);
    // What the file (or the demo) says; with Kubernetes, the served configuration is this
    // plus our Ingresses.
    let mut file_config = gatehouse.snapshot().config().clone();
    let mut synced = false;
    if discovery.is_none() {
        gatehouse.set_ready(true);
    }
    let mut updates = sources.file.map(|w| w.spawn(stop.clone()));
    // Endpoints written as names, resolved for whatever configuration is served.
    let (mut names, mut resolved) = NameResolution::new();
    names.follow(gatehouse.snapshot().config());
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = status_ticks.tick(), if synced && publisher.is_some() => {
                if let (Some(p), Some(d), Some(k)) = (publisher.as_mut(), &discovery, &kube_routes) {
                    p.sync(d, k.findings());
                }
                continue;
            }
            Some(r) = resolved.recv() => {
                gatehouse.publish_endpoints(&r.service, r.addrs).await;
                continue;
            }
            Some(update) = async { updates.as_mut()?.recv().await } => {
                let update = update.and_then(|mut c| match kubernetes::check(&c, discovery.is_some()) {
                    Ok(()) => {
                        if let Some(admin) = sources.admin_listen {
                            c.listen.admin = Some(admin);
                        }
                        Ok(c)
                    }
                    Err(e) => Err(ConfigErrors::whole_file("the configuration", e)),
                });
                match update {
                    Ok(config) => {
                        let applied = match (&discovery, kube_routes.as_mut()) {
                            (Some(d), Some(k)) if synced => k.apply(gatehouse, d, &config).await,
                            _ => gatehouse.apply(config.clone()).await,
                        };
                        match applied {
                            Ok(()) => {
                                tracing::info!("configuration reloaded");
                                file_config = config;
                            }
                            Err(e) => tracing::error!("configuration not applied; the previous one keeps serving: {e}"),
                        }
                    }
                    Err(errors) => gatehouse.reload_rejected(&errors),
                }
            }
            Some(first) = async { changes.as_mut()?.recv().await } => {
                let (Some(d), Some(k), Some(rx)) = (&discovery, kube_routes.as_mut(), changes.as_mut()) else { continue };
                // Until every watch has listed, the sync below builds everything once.
                if !synced {
                    continue;
                }
                // Take the whole burst waiting now and act on it once.
                let burst = coalesce(first, rx);
                if burst.routes {
                    if let Err(e) = k.apply(gatehouse, d, &file_config).await {
                        tracing::error!("Kubernetes changes not applied; the previous routes keep serving: {e}");
                    }
                } else {
                    k.publish(gatehouse, d, burst.endpoints.as_ref()).await;
                }
            }
            Some(()) = async { synced_rx.as_mut()?.wait_for(|s| *s).await.ok().map(|_| ()) }, if !synced && synced_rx.is_some() => {
                synced = true;
                if let (Some(d), Some(k)) = (&discovery, kube_routes.as_mut()) {
                    k.apply(gatehouse, d, &file_config).await.map_err(ReconcileError::FirstSync)?;
                }
                tracing::info!("Kubernetes watches synced; ready");
                gatehouse.set_ready(true);
            }
        }
        names.follow(gatehouse.snapshot().config());
    }
    if let Some(p) = publisher {
        p.finish().await;
    }
    Ok(())
}

/// A burst of watch changes, merged.
struct Burst {
    /// Routes must be rebuilt (which republishes every endpoint too).
    routes: bool,
    /// Services whose endpoints changed; `None`: any.
    endpoints: Changed,
}

/// Merges `first` with every change already waiting, so a burst (a rollout, a relist)
/// costs one rebuild or one publish pass, not one per event.
fn coalesce(first: Change, rx: &mut mpsc::UnboundedReceiver<Change>) -> Burst {
    let mut burst = Burst {
        routes: false,
        endpoints: Some(Default::default()),
    };
    let mut next = Some(first);
    while let Some(change) = next {
        match change {
            Change::Routes => burst.routes = true,
            Change::Endpoints(None) => burst.endpoints = None,
            Change::Endpoints(Some(keys)) => {
                if let Some(all) = burst.endpoints.as_mut() {
                    all.extend(keys);
                }
            }
        }
        next = rx.try_recv().ok();
    }
    burst
}
