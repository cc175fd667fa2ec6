//! State the running parts share, split by who needs it: what a request or handshake reads
//! ([`Live`]), how HTTP connections are drained ([`Drain`]), and what L4 listeners need
//! ([`L4Shared`]). The runtime owns them all; each part gets only its own.

use std::sync::{
    atomic::{AtomicBool, AtomicU16},
    Arc,
};

use arc_swap::ArcSwap;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{metrics::Metrics, snapshot::Snapshot};

/// What every request, handshake and L4 connection reads.
pub(crate) struct Live {
    /// The routing snapshot; readers `load` it once and never lock.
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) metrics: Metrics,
    /// The port the HTTPS listener is bound to (0: none), for redirects.
    pub(crate) https_port: AtomicU16,
    /// The admin's /ingresses view, as discovery last rendered it (none without Kubernetes).
    pub(crate) ingresses_view: arc_swap::ArcSwapOption<String>,
}

/// The lifecycle of HTTP client connections: readiness and the shutdown drain.
#[derive(Default)]
pub(crate) struct Drain {
    pub(crate) ready: AtomicBool,
    /// Set when shutdown starts: HTTP/1 answers then close their connections.
    pub(crate) started: AtomicBool,
    /// Fires when the listeners have closed and connections are asked to finish.
    pub(crate) closing: CancellationToken,
    /// Client connection tasks, waited for at shutdown.
    pub(crate) connections: TaskTracker,
    /// Upgraded (WebSocket) tunnels, waited for at shutdown.
    pub(crate) tunnels: TaskTracker,
}

/// What L4 listeners read, and their TCP connections and UDP sessions.
pub(crate) struct L4Shared {
    pub(crate) live: Arc<Live>,
    /// Sessions, waited for at shutdown.
    pub(crate) sessions: TaskTracker,
    /// Fires when the shutdown's grace period is over: sessions close.
    pub(crate) stop: CancellationToken,
}
