//! One upstream endpoint (a pod or a VM address): its idle connection pool, in-flight count
//! and passive health.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use super::{
    h2::{H2Conn, SharedH2},
    latency::Latency,
    sender::Sender,
    tls::UpstreamConnector,
};

/// Consecutive connect failures after which an endpoint is ejected.
const EJECT_AFTER: u32 = 3;
/// Longest ejection; doubles from one second per further failure.
const MAX_EJECTION: Duration = Duration::from_secs(30);
struct IdleConn {
    sender: Sender,
    since: Instant,
}

/// An upstream endpoint shared by every snapshot that lists its address, so its pool and
/// health survive reloads; it is freed when no snapshot and no request holds it.
pub struct Endpoint {
    addr: SocketAddr,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    /// Milliseconds since [`clock_origin`] until which the endpoint is ejected.
    ejected_until: AtomicU64,
    // A short critical section (push or pop); uncontended with one worker, and not the
    // routing snapshot, which is read lock-free.
    idle: Mutex<Vec<IdleConn>>,
    /// Connections open to it, busy and idle (bounded by the service's `max_connections`).
    open: AtomicUsize,
    /// Requests waiting for one of them (bounded by `max_pending`).
    waiting: AtomicUsize,
    /// Rung when a connection returns to the pool or closes.
    freed: tokio::sync::Notify,
    /// Recent response-head latency, for the `ewma` balancer.
    latency: Latency,
    /// TLS around its connections, for a service that wants it.
    transport: Option<Arc<UpstreamConnector>>,
    /// Requests go over HTTP/2, on shared connections.
    h2: bool,
    /// Those connections, while they are open.
    shared: SharedH2,
    /// Active health: out of rotation since it failed its checks `fall` times in a row.
    checked_down: AtomicBool,
    /// Checks in a row whose result disagrees with `checked_down`.
    streak: AtomicU32,
    /// Milliseconds since [`clock_origin`] of its next check; a check in flight holds
    /// `u64::MAX`.
    next_check: AtomicU64,
    /// `upstream_keepalive.connections`: idle connections kept; more are closed.
    max_idle: AtomicUsize,
    /// `upstream_keepalive.requests`: a connection that carried this many is closed
    /// (0: no bound).
    max_requests: AtomicU32,
}

/// A place among the requests waiting for a connection; left when dropped.
pub(crate) struct Waiting<'a>(&'a Endpoint);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    clock_origin().elapsed().as_millis() as u64
}

impl Endpoint {
    #[cfg(test)]
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Self::over(addr, None, false)
    }

    /// An endpoint whose connections are wrapped by `transport` (TLS), if any.
    pub(crate) fn over(
        addr: SocketAddr,
        transport: Option<Arc<UpstreamConnector>>,
        h2: bool,
    ) -> Self {
        Endpoint {
            transport,
            h2,
            shared: SharedH2::default(),
            checked_down: AtomicBool::new(false),
            streak: AtomicU32::new(0),
            next_check: AtomicU64::new(0),
            max_idle: AtomicUsize::new(gatehouse_config::UpstreamKeepalive::default().connections),
            max_requests: AtomicU32::new(0),
            addr,
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            idle: Mutex::new(Vec::new()),
            open: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: tokio::sync::Notify::new(),
            latency: Latency::default(),
        }
    }

    /// TLS around its connections, if any.
    pub(crate) fn transport(&self) -> Option<&Arc<UpstreamConnector>> {
        self.transport.as_ref()
    }

    /// What tells its transport apart: TLS settings (0: plain TCP), HTTP/2.
    pub(crate) fn transport_key(&self) -> (u64, bool) {
        (self.transport.as_ref().map_or(0, |t| t.digest), self.h2)
    }

    /// Whether requests go over HTTP/2.
    pub(crate) fn is_h2(&self) -> bool {
        self.h2
    }

    /// A stream on a shared HTTP/2 connection with room for it; when all are full, `None`
    /// while fewer than `max_connections` are open (open another), else a stream on the
    /// least loaded one.
    pub(crate) fn shared_h2(&self, max_connections: usize) -> Option<Sender> {
        self.shared
            .stream(self.open_connections() < max_connections)
    }

    /// A new HTTP/2 connection is shared from now on.
    pub(crate) fn share_h2(&self, conn: Arc<H2Conn>) {
        self.shared.add(conn);
    }

    /// Counts a new connection about to be opened, if fewer than `max` are open.
    pub(crate) fn reserve_connection(&self, max: usize) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// A connection (reserved, then opened or not) is gone.
    pub(crate) fn connection_closed(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_one();
    }

    /// Connections open now, busy and idle.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Joins the requests waiting for a connection, if fewer than `max` wait.
    pub(crate) fn wait_in_line(&self, max: usize) -> Option<Waiting<'_>> {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Waiting(self))
    }

    /// Resolves when a connection returns to the pool or closes. Enabled before the caller
    /// looks again, so a release in between is not missed.
    pub(crate) fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Records how long a response head took (for the `ewma` balancer).
    pub(crate) fn observe_latency(&self, rtt: Duration) {
        self.latency.observe(rtt, clock_origin().elapsed());
    }

    /// The `ewma` balancer's cost of sending here: recent latency times the requests
    /// already waiting on it (one more counted, so an idle endpoint's latency still counts).
    pub(crate) fn ewma_score(&self) -> f64 {
        self.latency.decayed(clock_origin().elapsed()) * (self.in_flight() + 1) as f64
    }

    /// Whether health checking, passive (connect failures) or active (its service's
    /// checks), has taken the endpoint out of rotation.
    pub fn is_ejected(&self) -> bool {
        if self.checked_down.load(Ordering::Relaxed) {
            return true;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Claims the endpoint's next active check when it is due (at most one in flight).
    pub(crate) fn check_due(&self) -> bool {
        let now = now_ms();
        let next = self.next_check.load(Ordering::Relaxed);
        next <= now
            && self
                .next_check
                .compare_exchange(next, u64::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Records an active check's result, the next one due after `interval`: `Some(up)`
    /// when it changes whether the endpoint is in rotation (`rise` passes in a row bring
    /// it back, `fall` failures take it out).
    pub(crate) fn checked(
        &self,
        passed: bool,
        rise: u32,
        fall: u32,
        interval: Duration,
    ) -> Option<bool> {
        self.next_check
            .store(now_ms() + interval.as_millis() as u64, Ordering::Relaxed);
        let down = self.checked_down.load(Ordering::Relaxed);
        if passed != down {
            self.streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.streak.fetch_add(1, Ordering::Relaxed) + 1;
        if streak < if down { rise } else { fall } {
            return None;
        }
        self.streak.store(0, Ordering::Relaxed);
        self.checked_down.store(!down, Ordering::Relaxed);
        Some(down)
    }

    /// Records a failed connect; returns the ejection time if this failure ejects it.
    pub(crate) fn connect_failed(&self) -> Option<Duration> {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n < EJECT_AFTER {
            return None;
        }
        let doublings = (n - EJECT_AFTER).min(5);
        let ejection = Duration::from_secs(1 << doublings).min(MAX_EJECTION);
        self.ejected_until
            .store(now_ms() + ejection.as_millis() as u64, Ordering::Relaxed);
        Some(ejection)
    }

    pub(crate) fn connect_succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Relaxed);
        }
    }

    /// Takes the most recently used idle connection that is still open and not older than
    /// `max_idle`, with how long it sat idle; stale ones are closed on the way.
    pub(crate) fn checkout(&self, max_idle: Duration) -> Option<(Sender, Duration)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            let idle_for = conn.since.elapsed();
            if !conn.sender.is_closed() && idle_for < max_idle {
                return Some((conn.sender, idle_for));
            }
        }
        None
    }

    /// Applies the configuration's `upstream_keepalive` (from the next release on).
    pub(crate) fn set_keepalive(&self, keepalive: &gatehouse_config::UpstreamKeepalive) {
        self.max_idle
            .store(keepalive.connections, Ordering::Relaxed);
        self.max_requests
            .store(keepalive.requests, Ordering::Relaxed);
    }

    /// Returns a connection whose response was read completely; one that carried
    /// `max_requests` is closed instead (nginx's `keepalive_requests`).
    pub(crate) fn release(&self, mut sender: Sender) {
        if sender.is_multiplexed() {
            // The HTTP/2 connection stays shared by the endpoint; this was a handle on it.
            return;
        }
        sender.served += 1;
        let max_requests = self.max_requests.load(Ordering::Relaxed);
        if max_requests != 0 && sender.served >= max_requests {
            return;
        }
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle.load(Ordering::Relaxed) {
            idle.push(IdleConn {
                sender,
                since: Instant::now(),
            });
            drop(idle);
            self.freed.notify_one();
        }
    }

    /// Closes idle connections older than `max_idle` (run periodically, off the request path).
    pub(crate) fn evict_idle(&self, max_idle: Duration) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|c| !c.sender.is_closed() && c.since.elapsed() < max_idle);
        self.shared.shrink();
    }

    /// Number of idle pooled connections (for tests and debugging).
    pub fn idle_connections(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("in_flight", &self.in_flight())
            .field("ejected", &self.is_ejected())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_count_checks_in_a_row() {
        let e = Endpoint::new(([127, 0, 0, 1], 1).into());
        let (rise, fall, every) = (2, 3, Duration::from_secs(1));
        assert!(
            e.check_due() && !e.check_due(),
            "one check in flight at a time"
        );
        assert_eq!(e.checked(false, rise, fall, every), None);
        assert_eq!(e.checked(false, rise, fall, every), None);
        assert_eq!(
            e.checked(true, rise, fall, every),
            None,
            "a pass breaks the streak"
        );
        assert!(!e.check_due(), "the next check waits for the interval");
        for _ in 0..2 {
            assert_eq!(e.checked(false, rise, fall, every), None);
        }
        assert_eq!(e.checked(false, rise, fall, every), Some(false), "down");
        assert!(e.is_ejected());
        assert_eq!(e.checked(true, rise, fall, every), None);
        assert_eq!(e.checked(true, rise, fall, every), Some(true), "up");
        assert!(!e.is_ejected());
    }

    #[test]
    fn ejection_starts_after_three_failures_and_doubles_up_to_thirty_seconds() {
        let endpoint = Endpoint::new(([127, 0, 0, 1], 1).into());
        assert_eq!(endpoint.connect_failed(), None);
        assert_eq!(endpoint.connect_failed(), None);
        assert!(!endpoint.is_ejected(), "two failures are not enough");
        let secs: Vec<u64> = (0..8)
            .map(|_| endpoint.connect_failed().expect("ejected").as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert!(endpoint.is_ejected());
        // One successful connect restores it, and the count starts over.
        endpoint.connect_succeeded();
        assert!(!endpoint.is_ejected());
        assert_eq!(endpoint.connect_failed(), None);
    }

    #[test]
    fn an_ejection_ends_when_its_time_is_up() {
        let endpoint = Endpoint::new(([127, 0, 0, 1], 1).into());
        for _ in 0..3 {
            endpoint.connect_failed();
        }
        assert!(endpoint.is_ejected());
        // Pretend the ejection began a second ago.
        endpoint.ejected_until.store(now_ms(), Ordering::Relaxed);
        assert!(!endpoint.is_ejected());
    }
}
