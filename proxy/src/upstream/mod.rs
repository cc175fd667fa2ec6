//! Upstreams: a service's endpoints, how one is picked, and how requests reach it.

mod endpoint;
pub(crate) mod forward;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use gatehouse_config::Balance;

pub use endpoint::Endpoint;
pub(crate) use endpoint::Sender;

/// A service as the data plane sees it: a name, its endpoints and a balancing policy.
pub struct Upstream {
    name: String,
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    balance: Balance,
    next: AtomicUsize,
}

/// At most this many endpoints are tried for one request (the first try plus two retries).
pub(crate) const MAX_TRIES: usize = 3;

impl Upstream {
    pub(crate) fn new(name: String, endpoints: Vec<Arc<Endpoint>>, balance: Balance) -> Self {
        Upstream {
            name,
            endpoints,
            // Start replicas at different offsets so they do not all hit endpoint 0 first.
            next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            balance,
        }
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service's endpoints.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Picks an endpoint not in `tried`, preferring endpoints that are not ejected. When every
    /// remaining endpoint is ejected one is still returned: a guess beats a certain 502.
    pub(crate) fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 || tried.len() >= n {
            return None;
        }
        let usable = |i: usize, allow_ejected: bool| {
            !tried.contains(&i) && (allow_ejected || !self.endpoints[i].is_ejected())
        };
        if self.balance == Balance::LeastRequest && n > 1 {
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            match (usable(a, false), usable(b, false)) {
                (true, true) => {
                    let (ia, ib) = (self.endpoints[a].in_flight(), self.endpoints[b].in_flight());
                    return Some(if ib < ia { b } else { a });
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
            return [false, true].into_iter().find_map(|allow_ejected| {
                (0..n)
                    .filter(|i| usable(*i, allow_ejected))
                    .min_by_key(|i| self.endpoints[*i].in_flight())
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
        Upstream::new("t".into(), eps, balance)
    }

    #[test]
    fn round_robin_spreads_evenly_and_skips_tried() {
        let u = upstream(3, Balance::RoundRobin);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[u.pick(&[]).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        for _ in 0..10 {
            assert_ne!(u.pick(&[1]), Some(1));
        }
        assert_eq!(u.pick(&[0, 1, 2]), None);
    }

    #[test]
    fn ejected_endpoints_are_skipped_until_nothing_else_is_left() {
        let u = upstream(2, Balance::RoundRobin);
        for _ in 0..3 {
            u.endpoints[0].connect_failed();
        }
        assert!(u.endpoints[0].is_ejected());
        for _ in 0..10 {
            assert_eq!(u.pick(&[]), Some(1));
        }
        assert_eq!(u.pick(&[1]), Some(0));
        u.endpoints[0].connect_succeeded();
        assert!(!u.endpoints[0].is_ejected());
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let u = upstream(2, Balance::LeastRequest);
        for _ in 0..5 {
            u.endpoints[0].begin();
        }
        for _ in 0..50 {
            assert_eq!(u.pick(&[]), Some(1));
        }
        assert_eq!(u.pick(&[1]), Some(0));
    }
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
