//! The running proxy: the current snapshot, the listeners it needs, reloads and shutdown.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc,
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use gatehouse_config::{Config, ConfigErrors, L4Protocol, Service};
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::{mpsc, Mutex},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    admin,
    l4::{self, key::L4Key, L4Stats},
    listener,
    metrics::Metrics,
    snapshot::{Snapshot, SnapshotError},
    state::{Drain, L4Shared, Live},
    tls,
};

/// Why a configuration could not be started or applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

struct RunningListener {
    /// The address as configured (port 0 stays 0, so reloads compare like with like).
    configured: SocketAddr,
    bound: SocketAddr,
    stop: CancellationToken,
}

#[derive(Default)]
struct Listeners {
    http: Option<RunningListener>,
    https: Option<RunningListener>,
    admin: Option<RunningListener>,
    l4: HashMap<L4Key, RunningListener>,
}

/// A running Gatehouse data plane.
pub struct Gatehouse {
    live: Arc<Live>,
    drain: Arc<Drain>,
    l4: Arc<L4Shared>,
    /// Held while a configuration is applied or endpoints are published, so a rebuilt
    /// snapshot never misses endpoints published while it was being built.
    listeners: Mutex<Listeners>,
    /// The endpoints discovery last published, by service name (read when a snapshot is
    /// built; never on the request path).
    discovered: std::sync::Mutex<HashMap<String, Vec<SocketAddr>>>,
    /// The path rules that can never match, as last said: each is logged when it appears,
    /// not again on every reload that keeps it.
    unreachable: std::sync::Mutex<std::collections::HashSet<String>>,
    maintenance: CancellationToken,
}

/// How a rule that can never match is reported, in the log and by `gatehouse check`.
pub fn unreachable_message(
    routes: &[gatehouse_config::Route],
    u: &gatehouse_config::Unreachable,
) -> String {
    let route = &routes[u.route];
    format!(
        "{}: path `{}` of route `{}` can never match: {}; requests meant for it go elsewhere, so fix or remove the rule",
        route.location, route.paths[u.rule].path, route.host, u.why
    )
}

impl Gatehouse {
    /// Binds the configured listeners and starts serving `config`, not yet ready (see
    /// [`Gatehouse::set_ready`]).
    pub async fn start(config: Config, metrics: Metrics) -> Result<Self, ApplyError> {
        let config = Arc::new(config);
        let snapshot = Snapshot::build(config.clone(), None, &|_| Vec::new(), &metrics)?;
        let live = Arc::new(Live {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            https_port: AtomicU16::new(0),
            ingresses_view: arc_swap::ArcSwapOption::empty(),
        });
        let l4 = Arc::new(L4Shared {
            live: live.clone(),
            sessions: TaskTracker::new(),
            stop: CancellationToken::new(),
        });
        let gatehouse = Gatehouse {
            live: live.clone(),
            drain: Arc::default(),
            l4,
            listeners: Mutex::new(Listeners::default()),
            discovered: std::sync::Mutex::default(),
            unreachable: std::sync::Mutex::default(),
            maintenance: CancellationToken::new(),
        };
        gatehouse.say_unreachable(&gatehouse.live.snapshot.load());
        {
            let mut listeners = gatehouse.listeners.lock().await;
            let changes = bind_changes(&listeners, &config).await?;
            gatehouse.swap_listeners(&mut listeners, changes);
        }
        tokio::spawn(crate::upstream::health::check_endpoints(
            live.clone(),
            gatehouse.maintenance.clone(),
        ));
        tokio::spawn(evict_idle_connections(live, gatehouse.maintenance.clone()));
        Ok(gatehouse)
    }

    /// Marks the proxy ready (/readyz 200) once its sources have synced; it starts unready.
    pub fn set_ready(&self, ready: bool) {
        self.drain.ready.store(ready, Ordering::Relaxed);
    }

    /// The bound address of the HTTP listener.
    pub async fn http_addr(&self) -> Option<SocketAddr> {
        self.listeners.lock().await.http.as_ref().map(|l| l.bound)
    }

    /// The bound address of the HTTPS listener.
    pub async fn https_addr(&self) -> Option<SocketAddr> {
        self.listeners.lock().await.https.as_ref().map(|l| l.bound)
    }

    /// The bound address of the admin listener.
    pub async fn admin_addr(&self) -> Option<SocketAddr> {
        self.listeners.lock().await.admin.as_ref().map(|l| l.bound)
    }

    /// The snapshot requests currently use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.snapshot.load_full()
    }

    /// The metrics registry.
    /// The admin's /ingresses view: JSON rendered by whoever judges the Ingresses.
    pub fn set_ingresses_view(&self, json: String) {
        self.live.ingresses_view.store(Some(Arc::new(json)));
    }

    pub fn metrics(&self) -> &Metrics {
        &self.live.metrics
    }

    /// Replaces the running configuration with a validated one. New listeners are bound
    /// before anything changes, so a port that cannot be bound leaves everything as it was.
    pub async fn apply(&self, config: Config) -> Result<(), ApplyError> {
        self.apply_discovered(config, &|_| None).await
    }

    /// Like [`Gatehouse::apply`], taking the endpoints of the services `discovered` knows
    /// from it (the rest keep what was last published), so a service that appears with the
    /// configuration (a new Ingress backend) has its endpoints from its first request.
    pub async fn apply_discovered(
        &self,
        config: Config,
        discovered: &(dyn Fn(&Service) -> Option<Vec<SocketAddr>> + Sync),
    ) -> Result<(), ApplyError> {
        let result = self.try_apply(config, discovered).await;
        let outcome = if result.is_ok() { "success" } else { "error" };
        self.live
            .metrics
            .config_reloads
            .with_label_values(&[outcome])
            .inc();
        result
    }

    async fn try_apply(
        &self,
        config: Config,
        lookup: &(dyn Fn(&Service) -> Option<Vec<SocketAddr>> + Sync),
    ) -> Result<(), ApplyError> {
        let config = Arc::new(config);
        let mut listeners = self.listeners.lock().await;
        let previous = self.live.snapshot.load_full();
        if previous.config.workers != config.workers {
            tracing::warn!(
                "`workers` changed from {:?} to {:?}; the thread count is fixed at start-up, so this takes effect at the next restart",
                previous.config.workers,
                config.workers
            );
        }
        let mut discovered =
            std::mem::take(&mut *self.discovered.lock().unwrap_or_else(|p| p.into_inner()));
        for service in &config.services {
            if let Some(endpoints) = lookup(service) {
                discovered.insert(service.name.clone(), endpoints);
            }
        }
        let built = Snapshot::build(
            config.clone(),
            Some(&previous),
            &|name| discovered.get(name).cloned().unwrap_or_default(),
            &self.live.metrics,
        );
        let snapshot = match built {
            Ok(s) => {
                // Forget services that are gone, so Ingress churn does not grow the map.
                discovered.retain(|name, _| s.upstream(name).is_some());
                *self.discovered.lock().unwrap_or_else(|p| p.into_inner()) = discovered;
                s
            }
            Err(e) => {
                *self.discovered.lock().unwrap_or_else(|p| p.into_inner()) = discovered;
                return Err(e.into());
            }
        };
        let changes = bind_changes(&listeners, &config).await?;
        self.say_unreachable(&snapshot);
        self.live.snapshot.store(Arc::new(snapshot));
        self.swap_listeners(&mut listeners, changes);
        Ok(())
    }

    /// Warns of each path rule of `snapshot` that can never match and was not said before.
    fn say_unreachable(&self, snapshot: &Snapshot) {
        let routes = &snapshot.config.routes;
        let now: std::collections::HashSet<String> = snapshot
            .table
            .unreachable(routes)
            .into_iter()
            .map(|u| unreachable_message(routes, &u))
            .collect();
        let mut said = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        for message in now.difference(&said) {
            tracing::warn!("{message}");
        }
        *said = now;
    }

    /// Publishes the discovered endpoints of a service (besides its fixed ones). The next
    /// request sees the new set; requests in flight finish on the endpoints they have.
    pub async fn publish_endpoints(&self, service: &str, endpoints: Vec<SocketAddr>) {
        let _serialized = self.listeners.lock().await;
        let snapshot = self.live.snapshot.load_full();
        if let Some(upstream) = snapshot.upstream(service) {
            upstream.set_discovered(&endpoints);
        }
        self.discovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(service.to_owned(), endpoints);
    }

    /// Applies every configuration that arrives, valid or not, until the sender goes away.
    /// A rejected or unappliable one is logged and counted and changes nothing.
    pub async fn follow(&self, updates: &mut mpsc::Receiver<Result<Config, ConfigErrors>>) {
        while let Some(update) = updates.recv().await {
            match update {
                Ok(config) => match self.apply(config).await {
                    Ok(()) => tracing::info!("configuration reloaded"),
                    Err(e) => tracing::error!(
                        "configuration not applied; the previous one keeps serving: {e}"
                    ),
                },
                Err(errors) => self.reload_rejected(&errors),
            }
        }
    }

    /// Counts and logs a configuration that was refused before it reached [`Gatehouse::apply`].
    pub fn reload_rejected(&self, errors: &ConfigErrors) {
        self.live
            .metrics
            .config_reloads
            .with_label_values(&["error"])
            .inc();
        tracing::error!(
            "configuration rejected; the previous configuration keeps serving. Fix these and save again:\n{errors}"
        );
    }

    /// The bound address of each L4 listener, in the order of the configuration's `l4`.
    pub async fn l4_addrs(&self) -> Vec<SocketAddr> {
        let listeners = self.listeners.lock().await;
        let config = self.live.snapshot.load_full().config.clone();
        L4Key::all(&config.l4)
            .iter()
            .filter_map(|k| listeners.l4.get(k).map(|l| l.bound))
            .collect()
    }

    fn swap_listeners(&self, listeners: &mut Listeners, changes: ListenerChanges) {
        // L4 listeners one by one: the others keep serving untouched.
        for key in changes.l4_removed {
            if let Some(old) = listeners.l4.remove(&key) {
                tracing::info!(address = %old.bound, "{} listener removed", key.protocol);
                old.stop.cancel();
            }
        }
        for (key, bound) in changes.l4_added {
            let running = start_l4(&self.l4, key, bound);
            listeners.l4.insert(key, running);
        }
        for (slot, change, kind) in [
            (&mut listeners.http, changes.http, Kind::Http),
            (&mut listeners.https, changes.https, Kind::Https),
            (&mut listeners.admin, changes.admin, Kind::Admin),
        ] {
            if let Some(change) = change {
                if let Some(old) = std::mem::replace(slot, change.start(self, kind)) {
                    old.stop.cancel();
                }
                if matches!(kind, Kind::Https) && slot.is_none() {
                    self.live.https_port.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    /// Stops serving: /readyz turns 503 at once; after `drain_delay` the HTTP listener closes;
    /// in-flight requests and tunnels get up to `grace_period`. Returns whether everything
    /// finished within the grace period.
    pub async fn shutdown(&self) -> bool {
        self.drain.ready.store(false, Ordering::Relaxed);
        self.drain.started.store(true, Ordering::Relaxed);
        let shutdown = self.live.snapshot.load().config.shutdown.clone();
        tracing::info!(
            "shutting down: /readyz now 503; closing listeners in {:?}, then up to {:?} for in-flight requests",
            shutdown.drain_delay,
            shutdown.grace_period
        );
        tokio::time::sleep(shutdown.drain_delay).await;
        let mut listeners = self.listeners.lock().await;
        let l4 = std::mem::take(&mut listeners.l4).into_values();
        for client_listener in [listeners.http.take(), listeners.https.take()]
            .into_iter()
            .flatten()
            .chain(l4)
        {
            client_listener.stop.cancel();
        }
        self.drain.closing.cancel();
        self.drain.connections.close();
        self.drain.tunnels.close();
        self.l4.sessions.close();
        let finished = tokio::time::timeout(shutdown.grace_period, async {
            self.drain.connections.wait().await;
            self.drain.tunnels.wait().await;
            self.l4.sessions.wait().await;
        })
        .await
        .is_ok();
        if !finished {
            tracing::warn!("grace period over; closing the remaining connections");
            self.l4.stop.cancel();
            // L4 sessions log their end on the way out.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.l4.sessions.wait()).await;
        }
        if let Some(admin) = listeners.admin.take() {
            admin.stop.cancel();
        }
        self.maintenance.cancel();
        finished
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Http,
    Https,
    Admin,
}

/// A listener to (re)place: `None` inside means "no listener any more".
struct Change(Option<(SocketAddr, TcpListener)>);

impl Change {
    fn start(self, gatehouse: &Gatehouse, kind: Kind) -> Option<RunningListener> {
        let (live, drain) = (&gatehouse.live, &gatehouse.drain);
        let (configured, listener) = self.0?;
        let bound = listener.local_addr().unwrap_or(configured);
        let stop = CancellationToken::new();
        match kind {
            Kind::Http => {
                tracing::info!(address = %bound, "HTTP listener ready");
                tokio::spawn(listener::accept_loop(
                    listener,
                    live.clone(),
                    drain.clone(),
                    stop.clone(),
                    None,
                ));
            }
            Kind::Https => {
                let acceptor = match tls::acceptor::TlsServer::new(
                    live.clone(),
                    gatehouse.l4.clone(),
                ) {
                    Ok(server) => Arc::new(server),
                    Err(e) => {
                        tracing::error!(address = %bound, error = %e, "cannot set up TLS; the HTTPS listener is not serving");
                        return None;
                    }
                };
                tracing::info!(address = %bound, "HTTPS listener ready");
                live.https_port.store(bound.port(), Ordering::Relaxed);
                tokio::spawn(listener::accept_loop(
                    listener,
                    live.clone(),
                    drain.clone(),
                    stop.clone(),
                    Some(acceptor),
                ));
            }
            Kind::Admin => {
                tracing::info!(address = %bound, "admin listener ready (status page at /; /healthz /readyz /metrics /routes /certificates /ingresses)");
                tokio::spawn(admin::accept_loop(
                    listener,
                    live.clone(),
                    drain.clone(),
                    stop.clone(),
                ));
            }
        }
        Some(RunningListener {
            configured,
            bound,
            stop,
        })
    }
}

/// Listeners to (re)place; `None` means unchanged.
struct ListenerChanges {
    http: Option<Change>,
    https: Option<Change>,
    admin: Option<Change>,
    /// L4 listeners new in the configuration, bound already.
    l4_added: Vec<(L4Key, BoundL4)>,
    /// L4 listeners the configuration no longer has.
    l4_removed: Vec<L4Key>,
}

/// A bound L4 socket, not serving yet.
enum BoundL4 {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Starts serving a bound L4 socket.
fn start_l4(shared: &Arc<L4Shared>, key: L4Key, bound: BoundL4) -> RunningListener {
    let stop = CancellationToken::new();
    let label = format!("{}/{}", key.protocol, key.listen);
    let stats = Arc::new(L4Stats::new(&shared.live.metrics, &label));
    let addr = match &bound {
        BoundL4::Tcp(l) => l.local_addr(),
        BoundL4::Udp(u) => u.local_addr(),
    }
    .unwrap_or(key.listen);
    tracing::info!(address = %addr, listener = label, "{} listener ready", key.protocol);
    match bound {
        BoundL4::Tcp(l) => {
            tokio::spawn(l4::tcp::accept_loop(
                l,
                key,
                shared.clone(),
                stop.clone(),
                stats,
            ));
        }
        BoundL4::Udp(u) => {
            tokio::spawn(l4::udp::serve(u, key, shared.clone(), stop.clone(), stats));
        }
    }
    RunningListener {
        configured: key.listen,
        bound: addr,
        stop,
    }
}

/// Connections the kernel completes and queues while Gatehouse is busy (or out of file
/// descriptors) before it refuses more: the standard library's 128 fills in a burst; nginx
/// uses 511, and the kernel caps it at `net.core.somaxconn` (4096 on current kernels).
const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` with [`LISTEN_BACKLOG`] (and SO_REUSEADDR, as tokio's own).
fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds the listeners whose address changed.
async fn bind_changes(current: &Listeners, config: &Config) -> Result<ListenerChanges, ApplyError> {
    async fn one(
        what: &'static str,
        current: Option<&RunningListener>,
        wanted: Option<SocketAddr>,
    ) -> Result<Option<Change>, ApplyError> {
        if current.map(|l| l.configured) == wanted {
            return Ok(None);
        }
        let Some(addr) = wanted else {
            return Ok(Some(Change(None)));
        };
        // Rebinding the same port a running listener holds is not possible; such a change
        // (e.g. 0.0.0.0:80 → 127.0.0.1:80) needs a restart, and says so.
        let listener = bind_tcp(addr).map_err(|source| ApplyError::Bind { what, addr, source })?;
        Ok(Some(Change(Some((addr, listener)))))
    }
    let wanted = L4Key::all(&config.l4);
    let mut l4_added = Vec::new();
    for key in &wanted {
        if current.l4.contains_key(key) {
            continue;
        }
        let addr = key.listen;
        let bound = match key.protocol {
            L4Protocol::Tcp => bind_tcp(addr).map(BoundL4::Tcp),
            L4Protocol::Udp => UdpSocket::bind(addr).await.map(BoundL4::Udp),
        }
        .map_err(|source| ApplyError::Bind {
            what: match key.protocol {
                L4Protocol::Tcp => "an l4 tcp entry",
                L4Protocol::Udp => "an l4 udp entry",
            },
            addr,
            source,
        })?;
        l4_added.push((*key, bound));
    }
    let l4_removed = current
        .l4
        .keys()
        .filter(|k| !wanted.contains(k))
        .copied()
        .collect();
    Ok(ListenerChanges {
        http: one("listen.http", current.http.as_ref(), config.listen.http).await?,
        https: one("listen.https", current.https.as_ref(), config.listen.https).await?,
        admin: one("listen.admin", current.admin.as_ref(), config.listen.admin).await?,
        l4_added,
        l4_removed,
    })
}

/// Once a second, off the request path: closes pooled upstream connections that sat idle
/// too long, so they do not wait for a request to find them stale, and sweeps the client
/// limit tables.
async fn evict_idle_connections(live: Arc<Live>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let snapshot = live.snapshot.load_full();
        for upstream in snapshot.upstreams.iter() {
            for endpoint in upstream.endpoints().iter() {
                endpoint.evict_idle(snapshot.limits.pool_idle);
            }
        }
        // Clients whose rate buckets are full again are forgotten; the tables stay bounded.
        for limits in snapshot.client_limits.iter().flatten() {
            for rate in &limits.rates {
                rate.sweep();
            }
        }
    }
}
