//! Upstreams: a service's endpoints, how one is picked, and how requests reach it.

mod endpoint;
pub(crate) mod forward;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use arc_swap::ArcSwap;
use gatehouse_config::{Balance, ConnectionLimits};

use crate::warnings::RateLimited;

pub use endpoint::Endpoint;
pub(crate) use endpoint::Sender;

/// A service as the data plane sees it: a name, its endpoints and a balancing policy.
pub struct Upstream {
    name: String,
    /// Endpoints written in the configuration file.
    fixed: Vec<Arc<Endpoint>>,
    /// The current set: the fixed endpoints and those discovery published, swapped whole,
    /// so a request sees one consistent set and never waits for a lock.
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    balance: Balance,
    /// How much of each endpoint this service may take.
    pub(crate) limits: ConnectionLimits,
    next: AtomicUsize,
    /// `gatehouse_endpoints{service}`, resolved once (snapshots carry it over).
    gauge: prometheus::IntGauge,
}

/// Whether a connect failed for want of local file descriptors (EMFILE, ENFILE): the
/// proxy's shortage, which says nothing about the endpoint.
pub(crate) fn out_of_descriptors(error: &std::io::Error) -> bool {
    // Linux's EMFILE and ENFILE.
    matches!(error.raw_os_error(), Some(24) | Some(23))
}

/// The endpoints one request works with (a consistent copy of the upstream's current set).
pub(crate) type EndpointList = Arc<Vec<Arc<Endpoint>>>;

/// At most this many endpoints are tried for one request (the first try plus two retries).
pub(crate) const MAX_TRIES: usize = 3;

impl Upstream {
    /// An upstream with the configuration's `fixed` endpoints plus `discovered` ones;
    /// `known` supplies existing endpoints by address so pools and health carry over.
    pub(crate) fn new(
        name: String,
        fixed: Vec<Arc<Endpoint>>,
        discovered: &[SocketAddr],
        known: &dyn Fn(SocketAddr) -> Option<Arc<Endpoint>>,
        balance: Balance,
        limits: ConnectionLimits,
        gauge: prometheus::IntGauge,
    ) -> Self {
        let all = merge(&fixed, discovered, known);
        gauge.set(all.len() as i64);
        Upstream {
            name,
            fixed,
            endpoints: ArcSwap::from_pointee(all),
            // Start replicas at different offsets so they do not all hit endpoint 0 first.
            next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            balance,
            limits,
            gauge,
        }
    }

    /// Counts a failed connect to one of this service's endpoints, and says so when it gets
    /// the endpoint ejected.
    pub(crate) fn connect_failed(
        &self,
        endpoint: &Endpoint,
        metrics: &crate::metrics::Metrics,
        error: &std::io::Error,
    ) {
        if out_of_descriptors(error) {
            // Our own shortage, not the endpoint's: ejecting it would punish a healthy pod.
            return;
        }
        metrics
            .connect_errors
            .with_label_values(&[&self.name])
            .inc();
        static EJECTIONS: RateLimited = RateLimited::per(std::time::Duration::from_secs(10));
        if let Some(ejected) = endpoint.connect_failed() {
            if let Some(more) = EJECTIONS.allow() {
                tracing::warn!(
                    service = self.name,
                    endpoint = %endpoint.addr(),
                    error = %error,
                    similar_since_last = more,
                    "endpoint keeps refusing connections; ejected for {ejected:?}"
                );
            }
        }
    }

    /// The endpoint-count gauge of this service.
    pub(crate) fn gauge(&self) -> &prometheus::IntGauge {
        &self.gauge
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service's current endpoints.
    pub fn endpoints(&self) -> EndpointList {
        self.endpoints.load_full()
    }

    /// Replaces the discovered endpoints (the fixed ones stay). Endpoints that remain keep
    /// their pool and health; removed ones get no new request and close when idle.
    pub(crate) fn set_discovered(&self, discovered: &[SocketAddr]) {
        let current = self.endpoints.load();
        let known = |addr: SocketAddr| current.iter().find(|e| e.addr() == addr).cloned();
        let all = merge(&self.fixed, discovered, &known);
        self.gauge.set(all.len() as i64);
        self.endpoints.store(Arc::new(all));
    }

    /// Picks an endpoint of `endpoints` (this upstream's set, loaded once for the request)
    /// not in `tried`, preferring endpoints that are not ejected. When every remaining
    /// endpoint is ejected one is still returned: a guess beats a certain 502.
    pub(crate) fn pick(&self, endpoints: &[Arc<Endpoint>], tried: &[usize]) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 || tried.len() >= n {
            return None;
        }
        let usable = |i: usize, allow_ejected: bool| {
            !tried.contains(&i) && (allow_ejected || !endpoints[i].is_ejected())
        };
        if self.balance == Balance::LeastRequest && n > 1 {
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            match (usable(a, false), usable(b, false)) {
                (true, true) => {
                    let (ia, ib) = (endpoints[a].in_flight(), endpoints[b].in_flight());
                    return Some(if ib < ia { b } else { a });
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
            return [false, true].into_iter().find_map(|allow_ejected| {
                (0..n)
                    .filter(|i| usable(*i, allow_ejected))
                    .min_by_key(|i| endpoints[*i].in_flight())
            });
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        [false, true].into_iter().find_map(|allow_ejected| {
            (0..n)
                .map(|k| (start + k) % n)
                .find(|i| usable(*i, allow_ejected))
        })
    }
}

fn merge(
    fixed: &[Arc<Endpoint>],
    discovered: &[SocketAddr],
    known: &dyn Fn(SocketAddr) -> Option<Arc<Endpoint>>,
) -> Vec<Arc<Endpoint>> {
    let mut all = fixed.to_vec();
    for addr in discovered {
        if !all.iter().any(|e| e.addr() == *addr) {
            all.push(known(*addr).unwrap_or_else(|| Arc::new(Endpoint::new(*addr))));
        }
    }
    all
}

/// A request's hold on an endpoint: counts as in flight until dropped, and carries the
/// connection back to the pool when the response was read completely.
pub(crate) struct Lease {
    endpoint: Arc<Endpoint>,
    sender: Option<Sender>,
}

impl Lease {
    pub(crate) fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.begin();
        Lease {
            endpoint,
            sender: None,
        }
    }

    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.endpoint.addr()
    }

    pub(crate) fn keep(&mut self, sender: Sender) {
        self.sender = Some(sender);
    }

    /// The connection was handed to a tunnel and must not return to the pool.
    pub(crate) fn drop_connection(&mut self) {
        self.sender = None;
    }

    /// Ends the request on this endpoint; `reusable` returns the connection to the pool.
    pub(crate) fn finish(mut self, reusable: bool) {
        if let (true, Some(sender)) = (reusable, self.sender.take()) {
            self.endpoint.release(sender);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(n: usize, balance: Balance) -> Upstream {
        let eps = (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(
                    format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                ))
            })
            .collect();
        Upstream::new(
            "t".into(),
            eps,
            &[],
            &|_| None,
            balance,
            ConnectionLimits::default(),
            prometheus::IntGauge::new("t", "test gauge").expect("valid name"),
        )
    }

    #[test]
    fn round_robin_spreads_evenly_and_skips_tried() {
        let u = upstream(3, Balance::RoundRobin);
        let eps = u.endpoints();
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[u.pick(&eps, &[]).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        for _ in 0..10 {
            assert_ne!(u.pick(&eps, &[1]), Some(1));
        }
        assert_eq!(u.pick(&eps, &[0, 1, 2]), None);
    }

    #[test]
    fn ejected_endpoints_are_skipped_until_nothing_else_is_left() {
        let u = upstream(2, Balance::RoundRobin);
        let eps = u.endpoints();
        for _ in 0..3 {
            eps[0].connect_failed();
        }
        assert!(eps[0].is_ejected());
        for _ in 0..10 {
            assert_eq!(u.pick(&eps, &[]), Some(1));
        }
        assert_eq!(u.pick(&eps, &[1]), Some(0));
        eps[0].connect_succeeded();
        assert!(!eps[0].is_ejected());
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let u = upstream(2, Balance::LeastRequest);
        let eps = u.endpoints();
        for _ in 0..5 {
            eps[0].begin();
        }
        for _ in 0..50 {
            assert_eq!(u.pick(&eps, &[]), Some(1));
        }
        assert_eq!(u.pick(&eps, &[1]), Some(0));
    }

    #[test]
    fn discovered_endpoints_join_the_fixed_ones_and_keep_their_state() {
        let u = upstream(1, Balance::RoundRobin);
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        u.set_discovered(&[a, b]);
        let first = u.endpoints();
        assert_eq!(first.len(), 3);
        first[1].begin();
        u.set_discovered(&[a]);
        let second = u.endpoints();
        assert_eq!(second.len(), 2);
        assert!(
            Arc::ptr_eq(&first[1], &second[1]),
            "a remaining endpoint is the same object"
        );
        assert_eq!(second[1].in_flight(), 1);
        u.set_discovered(&[]);
        assert_eq!(u.endpoints().len(), 1, "the fixed endpoint stays");
    }
}
