//! Upstreams: a service's endpoints, how one is picked, and how requests reach it.

mod attempts;
mod connection;
mod endpoint;
pub(crate) mod forward;
mod h2;
pub(crate) mod health;
mod latency;
mod ring;
mod sender;
mod set;
pub(crate) mod tls;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use arc_swap::ArcSwap;
use gatehouse_config::{Affinity, Balance, ConnectionLimits, Service};

use crate::warnings::RateLimited;

pub use endpoint::Endpoint;
pub(crate) use ring::key_hash;
pub(crate) use sender::Sender;
pub use set::EndpointSet;
pub(crate) use set::Token;
#[cfg(test)]
pub(crate) use set::TokenKey;

/// A service as the data plane sees it: a name, its endpoints and a balancing policy.
pub struct Upstream {
    name: String,
    /// Endpoints written in the configuration file.
    fixed: Vec<Arc<Endpoint>>,
    /// The current set: the fixed endpoints and those discovery published, swapped whole,
    /// so a request sees one consistent set and never waits for a lock.
    endpoints: ArcSwap<EndpointSet>,
    balance: Balance,
    /// Session affinity by cookie, with the key of its persistent cookie values.
    affinity: Option<(Affinity, set::TokenKey)>,
    /// How much of each endpoint this service may take.
    pub(crate) limits: ConnectionLimits,
    next: AtomicUsize,
    /// `gatehouse_endpoints{service}`, resolved once (snapshots carry it over).
    gauge: prometheus::IntGauge,
    /// TLS around connections to its endpoints, if the service wants it.
    transport: Option<Arc<tls::UpstreamConnector>>,
    /// Active checks of its endpoints, if the service has them.
    pub(crate) health: Option<gatehouse_config::HealthCheck>,
    /// How its endpoints keep idle connections.
    keepalive: gatehouse_config::UpstreamKeepalive,
    /// Requests go over HTTP/2.
    h2: bool,
}

/// Whether a connect failed for want of local file descriptors (EMFILE, ENFILE): the
/// proxy's shortage, which says nothing about the endpoint.
pub(crate) fn out_of_descriptors(error: &std::io::Error) -> bool {
    // Linux's EMFILE and ENFILE.
    matches!(error.raw_os_error(), Some(24) | Some(23))
}

/// The endpoints one request works with (a consistent copy of the upstream's current set).
pub(crate) type EndpointList = Arc<EndpointSet>;

/// What a request brings to the choice of its endpoint, besides the balancing policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Preference {
    /// Nothing: the policy decides.
    None,
    /// A key's place on the consistent-hash ring: its endpoint, else the next one.
    Hash(u64),
    /// This endpoint (of the request's set), while it can serve.
    Endpoint(usize),
}

/// At most this many endpoints are tried for one request (the first try plus two retries).
pub(crate) const MAX_TRIES: usize = 3;

impl Upstream {
    /// An upstream with the configuration's `fixed` endpoints plus `discovered` ones;
    /// `known` supplies existing endpoints by address so pools and health carry over.
    pub(crate) fn new(
        service: &Service,
        fixed: Vec<Arc<Endpoint>>,
        discovered: &[SocketAddr],
        known: &dyn Fn(SocketAddr) -> Option<Arc<Endpoint>>,
        gauge: prometheus::IntGauge,
        transport: Option<Arc<tls::UpstreamConnector>>,
        keepalive: gatehouse_config::UpstreamKeepalive,
    ) -> Self {
        let h2 = service.protocol.is_h2();
        let all = merge(&fixed, discovered, known, &transport, h2);
        for endpoint in &all {
            endpoint.set_keepalive(&keepalive);
        }
        gauge.set(all.len() as i64);
        let affinity = service.affinity.clone().map(|a| {
            let key = set::TokenKey::new(a.key.as_deref());
            (a, key)
        });
        let balance = service.balance.clone();
        let set = EndpointSet::new(all, needs_ring(&balance, &affinity), token_key(&affinity));
        Upstream {
            name: service.name.clone(),
            fixed,
            endpoints: ArcSwap::from_pointee(set),
            affinity,
            // Start replicas at different offsets so they do not all hit endpoint 0 first.
            next: AtomicUsize::new(fastrand::usize(..usize::MAX / 2)),
            balance,
            limits: service.limits,
            gauge,
            transport,
            health: service.health.clone(),
            keepalive,
            h2,
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

    /// TLS around connections to its endpoints, if any.
    pub(crate) fn transport(&self) -> Option<&Arc<tls::UpstreamConnector>> {
        self.transport.as_ref()
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
        let all = merge(&self.fixed, discovered, &known, &self.transport, self.h2);
        for endpoint in &all {
            endpoint.set_keepalive(&self.keepalive);
        }
        self.gauge.set(all.len() as i64);
        let ring = needs_ring(&self.balance, &self.affinity);
        let set = EndpointSet::new(all, ring, token_key(&self.affinity));
        self.endpoints.store(Arc::new(set));
    }

    /// The balancing policy.
    pub(crate) fn balance(&self) -> &Balance {
        &self.balance
    }

    /// Session affinity, when the service has it.
    pub(crate) fn affinity(&self) -> Option<&Affinity> {
        self.affinity.as_ref().map(|(a, _)| a)
    }

    /// The preference of an L4 client at `peer`: its address's place on the ring when the
    /// service hashes; no other request variable exists below HTTP.
    pub(crate) fn l4_preference(&self, peer: std::net::IpAddr) -> Preference {
        let Balance::Hash(key) = &self.balance else {
            return Preference::None;
        };
        struct Peer(std::net::IpAddr);
        impl gatehouse_config::template::Variables for Peer {
            fn write(&self, v: &gatehouse_config::template::Variable, out: &mut String) {
                use std::fmt::Write;
                if *v == gatehouse_config::template::Variable::RemoteAddr {
                    let _ = write!(out, "{}", self.0);
                }
            }
        }
        let mut text = String::new();
        key.write(&Peer(peer), &mut text);
        Preference::Hash(key_hash(text.as_bytes()))
    }

    /// Picks an endpoint of `set` (this upstream's, loaded once for the request) not in
    /// `tried`, preferring endpoints that are not ejected: the preferred one while it can
    /// serve, else by the policy. When every remaining endpoint is ejected one is still
    /// returned: a guess beats a certain 502.
    pub(crate) fn pick(
        &self,
        set: &EndpointSet,
        tried: &[usize],
        preference: Preference,
    ) -> Option<usize> {
        let n = set.len();
        if n == 0 || tried.len() >= n {
            return None;
        }
        let usable = |i: usize, allow_ejected: bool| {
            !tried.contains(&i) && (allow_ejected || !set[i].is_ejected())
        };
        match preference {
            Preference::Endpoint(i) if i < n && usable(i, false) => return Some(i),
            Preference::Hash(hash) => {
                if let Some(ring) = set.ring() {
                    return [false, true].into_iter().find_map(|allow_ejected| {
                        ring.walk(hash).find(|i| usable(*i, allow_ejected))
                    });
                }
            }
            _ => {}
        }
        let score: Option<fn(&Endpoint) -> f64> = match self.balance {
            _ if n == 1 => None,
            Balance::LeastRequest => Some(|e| e.in_flight() as f64),
            Balance::Ewma => Some(Endpoint::ewma_score),
            Balance::RoundRobin | Balance::Hash(_) => None,
        };
        if let Some(score) = score {
            // Power of two random choices: the better of two, never the worst of all.
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            match (usable(a, false), usable(b, false)) {
                (true, true) => {
                    return Some(if score(&set[b]) < score(&set[a]) {
                        b
                    } else {
                        a
                    })
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
            return [false, true].into_iter().find_map(|allow_ejected| {
                (0..n)
                    .filter(|i| usable(*i, allow_ejected))
                    .min_by(|x, y| score(&set[*x]).total_cmp(&score(&set[*y])))
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

/// Whether endpoint sets need the consistent-hash ring.
fn needs_ring(balance: &Balance, affinity: &Option<(Affinity, set::TokenKey)>) -> bool {
    matches!(balance, Balance::Hash(_))
        || matches!(affinity, Some((a, _)) if a.mode == gatehouse_config::AffinityMode::Balanced)
}

/// The key of persistent cookie values, when the service's affinity is persistent.
fn token_key(affinity: &Option<(Affinity, set::TokenKey)>) -> Option<&set::TokenKey> {
    match affinity {
        Some((a, key)) if a.mode == gatehouse_config::AffinityMode::Persistent => Some(key),
        _ => None,
    }
}

fn merge(
    fixed: &[Arc<Endpoint>],
    discovered: &[SocketAddr],
    known: &dyn Fn(SocketAddr) -> Option<Arc<Endpoint>>,
    transport: &Option<Arc<tls::UpstreamConnector>>,
    h2: bool,
) -> Vec<Arc<Endpoint>> {
    let mut all = fixed.to_vec();
    for addr in discovered {
        if !all.iter().any(|e| e.addr() == *addr) {
            all.push(
                known(*addr)
                    .unwrap_or_else(|| Arc::new(Endpoint::over(*addr, transport.clone(), h2))),
            );
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
        let service = Service {
            name: "t".into(),
            endpoints: Vec::new(),
            names: Vec::new(),
            kubernetes: None,
            balance,
            affinity: None,
            limits: ConnectionLimits::default(),
            protocol: Default::default(),
            health: None,
        };
        Upstream::new(
            &service,
            eps,
            &[],
            &|_| None,
            prometheus::IntGauge::new("t", "test gauge").expect("valid name"),
            None,
            Default::default(),
        )
    }

    #[test]
    fn round_robin_spreads_evenly_and_skips_tried() {
        let u = upstream(3, Balance::RoundRobin);
        let eps = u.endpoints();
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[u.pick(&eps, &[], Preference::None).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
        for _ in 0..10 {
            assert_ne!(u.pick(&eps, &[1], Preference::None), Some(1));
        }
        assert_eq!(u.pick(&eps, &[0, 1, 2], Preference::None), None);
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
            assert_eq!(u.pick(&eps, &[], Preference::None), Some(1));
        }
        assert_eq!(u.pick(&eps, &[1], Preference::None), Some(0));
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
            assert_eq!(u.pick(&eps, &[], Preference::None), Some(1));
        }
        assert_eq!(u.pick(&eps, &[1], Preference::None), Some(0));
    }

    #[test]
    fn ewma_prefers_the_endpoint_that_answers_faster() {
        let u = upstream(2, Balance::Ewma);
        let eps = u.endpoints();
        for _ in 0..20 {
            eps[0].observe_latency(std::time::Duration::from_millis(200));
            eps[1].observe_latency(std::time::Duration::from_millis(5));
        }
        for _ in 0..50 {
            assert_eq!(u.pick(&eps, &[], Preference::None), Some(1));
        }
        assert_eq!(u.pick(&eps, &[1], Preference::None), Some(0));
    }

    #[test]
    fn a_hash_or_an_endpoint_preference_wins_while_its_endpoint_can_serve() {
        let u = upstream(
            5,
            Balance::Hash(gatehouse_config::Template::parse("$remote_addr").unwrap()),
        );
        let eps = u.endpoints();
        let hash = key_hash(b"client");
        let home = eps.ring().unwrap().find(hash).unwrap();
        for _ in 0..10 {
            assert_eq!(u.pick(&eps, &[], Preference::Hash(hash)), Some(home));
        }
        // Ejected or tried: the next endpoint on the ring, the same one each time.
        for _ in 0..3 {
            eps[home].connect_failed();
        }
        let next = u.pick(&eps, &[], Preference::Hash(hash)).unwrap();
        assert_ne!(next, home);
        assert_eq!(u.pick(&eps, &[home], Preference::Hash(hash)), Some(next));
        assert_eq!(u.pick(&eps, &[], Preference::Endpoint(3)), Some(3));
        assert_ne!(u.pick(&eps, &[3], Preference::Endpoint(3)), Some(3));
        // L4 clients hash by address.
        let peer: std::net::IpAddr = "10.9.9.9".parse().unwrap();
        assert_eq!(
            u.l4_preference(peer),
            Preference::Hash(key_hash(b"10.9.9.9"))
        );
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
