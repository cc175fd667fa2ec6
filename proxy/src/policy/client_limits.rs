//! Limits per client address on a route, as ingress-nginx's `limit-rps`, `limit-rpm` and
//! `limit-connections` (nginx's `limit_req ... nodelay` and `limit_conn`): a client over its
//! rate, or with too many requests in flight, is refused at once; other clients are not
//! affected. Counted per replica, as in ingress-nginx.
//!
//! Rates are a GCRA (a token bucket kept as one timestamp per client): a client may send
//! `burst + 1` requests at once, then one per `1 / rate`, exactly nginx's arithmetic. The
//! table of clients is bounded: clients whose bucket is full again are forgotten by the
//! periodic sweep (nothing is lost, a full bucket is what a new client gets), and when more
//! than `max_clients` are remembered the ones nearest to full go first. While the table is
//! full, a client seen for the first time is let through untracked until the next sweep:
//! a spray from that many addresses gets one burst per address whatever the table does.

use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use dashmap::DashMap;
use gatehouse_config::ClientLimits;

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rps,
    Rpm,
    Connections,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Rps => "rps",
            Kind::Rpm => "rpm",
            Kind::Connections => "connections",
        }
    }
}

/// A refusal: which limit, and when the client may try again.
#[derive(Debug, PartialEq, Eq)]
pub struct OverLimit {
    pub kind: Kind,
    pub retry_after: Duration,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// One rate (per second or per minute) for every client of a route.
pub struct Rate {
    kind: Kind,
    /// Time one request uses up.
    interval: u64,
    /// How far ahead of now a client's bucket may run: `burst × interval`.
    tolerance: u64,
    /// Per client: when its bucket is full again (GCRA's theoretical arrival time).
    full_at: DashMap<IpAddr, AtomicU64>,
    max_clients: usize,
}

impl Rate {
    /// `per_period` requests per `period`, with `per_period × burst_multiplier` at once.
    pub fn new(
        kind: Kind,
        per_period: u32,
        period: Duration,
        burst_multiplier: u32,
        max_clients: usize,
    ) -> Self {
        let interval = (period.as_nanos() as u64 / u64::from(per_period.max(1))).max(1);
        let burst = u64::from(per_period) * u64::from(burst_multiplier);
        Rate {
            kind,
            interval,
            tolerance: interval.saturating_mul(burst),
            full_at: DashMap::new(),
            max_clients,
        }
    }

    /// Whether the same limit applies (so its state can carry over a reload).
    pub(crate) fn same_as(&self, other: &Rate) -> bool {
        (self.kind, self.interval, self.tolerance) == (other.kind, other.interval, other.tolerance)
    }

    pub fn check(&self, client: IpAddr) -> Result<(), OverLimit> {
        self.check_at(client, now_ns())
    }

    fn check_at(&self, client: IpAddr, now: u64) -> Result<(), OverLimit> {
        if let Some(full_at) = self.full_at.get(&client) {
            return self.take(&full_at, now);
        }
        if self.full_at.len() >= self.max_clients {
            // Full until the next sweep: see the module's note.
            return Ok(());
        }
        let entry = self.full_at.entry(client).or_insert(AtomicU64::new(0));
        self.take(entry.value(), now)
    }

    /// Takes one request's worth from a client's bucket.
    fn take(&self, full_at: &AtomicU64, now: u64) -> Result<(), OverLimit> {
        let mut current = full_at.load(Ordering::Acquire);
        loop {
            let start = current.max(now);
            if start - now > self.tolerance {
                return Err(OverLimit {
                    kind: self.kind,
                    retry_after: Duration::from_nanos(start - now - self.tolerance),
                });
            }
            match full_at.compare_exchange_weak(
                current,
                start + self.interval,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }

    /// Forgets clients whose bucket is full again, then, above `max_clients`, the ones
    /// nearest to full, down to nine tenths of it. Runs off the request path.
    pub fn sweep(&self) {
        self.sweep_at(now_ns());
    }

    fn sweep_at(&self, now: u64) {
        self.full_at
            .retain(|_, full_at| full_at.load(Ordering::Relaxed) > now);
        let len = self.full_at.len();
        if len <= self.max_clients {
            return;
        }
        let mut times: Vec<u64> = self
            .full_at
            .iter()
            .map(|e| e.value().load(Ordering::Relaxed))
            .collect();
        let keep = self.max_clients / 10 * 9;
        let cut = len - keep;
        let (_, nth, _) = times.select_nth_unstable(cut - 1);
        let cutoff = *nth;
        self.full_at
            .retain(|_, full_at| full_at.load(Ordering::Relaxed) > cutoff);
    }

    /// Clients remembered now.
    pub fn clients(&self) -> usize {
        self.full_at.len()
    }
}

/// Requests in flight per client.
pub(crate) struct Concurrency {
    max: u32,
    in_flight: DashMap<IpAddr, AtomicU32>,
}

/// One request's place in its client's count; given back when dropped (when the response
/// ends, however it ends).
pub(crate) struct Slot {
    limits: std::sync::Arc<RouteLimits>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(c) = &self.limits.connections {
            c.release(self.client);
        }
    }
}

impl Concurrency {
    fn acquire(&self, client: IpAddr) -> Result<(), OverLimit> {
        let entry = self.in_flight.entry(client).or_insert(AtomicU32::new(0));
        let counted = entry
            .value()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        drop(entry);
        match counted {
            Ok(_) => Ok(()),
            Err(_) => Err(OverLimit {
                kind: Kind::Connections,
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    fn release(&self, client: IpAddr) {
        if let Some(entry) = self.in_flight.get(&client) {
            entry.value().fetch_sub(1, Ordering::AcqRel);
        }
        // A client with nothing in flight is not remembered.
        self.in_flight
            .remove_if(&client, |_, n| n.load(Ordering::Acquire) == 0);
    }
}

/// Every limit of one route.
pub(crate) struct RouteLimits {
    whitelist: gatehouse_config::CidrSet,
    pub(crate) rates: Vec<Rate>,
    connections: Option<Concurrency>,
}

impl RouteLimits {
    /// The limits `spec` asks for, keeping the state of `previous` for a rate that stays.
    pub(crate) fn new(
        spec: &ClientLimits,
        max_clients: usize,
        previous: Option<&RouteLimits>,
    ) -> Self {
        let wanted = [
            (Kind::Rps, spec.rps, Duration::from_secs(1)),
            (Kind::Rpm, spec.rpm, Duration::from_secs(60)),
        ];
        let rates = wanted
            .into_iter()
            .filter_map(|(kind, n, period)| {
                let rate = Rate::new(kind, n?, period, spec.burst_multiplier, max_clients);
                // Carry the clients over: a reload must not hand everyone a new burst.
                if let Some(old) = previous.and_then(|p| p.rates.iter().find(|r| r.same_as(&rate)))
                {
                    for e in old.full_at.iter() {
                        let full_at = e.value().load(Ordering::Relaxed);
                        rate.full_at.insert(*e.key(), AtomicU64::new(full_at));
                    }
                }
                Some(rate)
            })
            .collect();
        RouteLimits {
            whitelist: spec.whitelist.clone(),
            rates,
            connections: spec.connections.map(|max| Concurrency {
                max,
                in_flight: DashMap::new(),
            }),
        }
    }
}

/// Admits one request of `client`, or says which limit it is over. The returned slot, if
/// any, must live as long as the request.
pub(crate) fn admit(
    limits: &std::sync::Arc<RouteLimits>,
    client: IpAddr,
) -> Result<Option<Slot>, OverLimit> {
    if limits.whitelist.contains(client) {
        return Ok(None);
    }
    for rate in &limits.rates {
        rate.check(client)?;
    }
    match &limits.connections {
        Some(c) => {
            c.acquire(client)?;
            Ok(Some(Slot {
                limits: limits.clone(),
                client,
            }))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SECOND: u64 = 1_000_000_000;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_burst_then_the_rate_as_nginx_counts_it() {
        // 10 r/s with a multiplier of 5: nginx's burst=50 nodelay lets 51 through at once.
        let rate = Rate::new(Kind::Rps, 10, Duration::from_secs(1), 5, 1000);
        let t0 = 100 * SECOND;
        let allowed = (0..100)
            .filter(|_| rate.check_at(ip(1), t0).is_ok())
            .count();
        assert_eq!(allowed, 51);
        let refused = rate.check_at(ip(1), t0).unwrap_err();
        assert_eq!(refused.kind, Kind::Rps);
        assert_eq!(
            refused.retry_after,
            Duration::from_millis(100),
            "the next slot"
        );
        // Another client is not affected.
        assert!(rate.check_at(ip(2), t0).is_ok());
        // Then one every 100 ms.
        assert!(rate.check_at(ip(1), t0 + SECOND / 10).is_ok());
        assert!(rate.check_at(ip(1), t0 + SECOND / 10).is_err());
        // After five idle seconds the whole burst is back.
        let later = t0 + 6 * SECOND;
        assert_eq!(
            (0..100)
                .filter(|_| rate.check_at(ip(1), later).is_ok())
                .count(),
            51
        );
    }

    #[test]
    fn per_minute_rates_count_in_minutes() {
        let rate = Rate::new(Kind::Rpm, 60, Duration::from_secs(60), 1, 1000);
        let t0 = 100 * SECOND;
        assert_eq!(
            (0..200)
                .filter(|_| rate.check_at(ip(1), t0).is_ok())
                .count(),
            61
        );
        assert!(rate.check_at(ip(1), t0 + SECOND / 2).is_err());
        assert!(rate.check_at(ip(1), t0 + SECOND).is_ok(), "one a second");
    }

    #[test]
    fn the_sweep_forgets_full_buckets_and_keeps_the_table_under_its_cap() {
        let mut rate = Rate::new(Kind::Rps, 1, Duration::from_secs(1), 1, 1000);
        let t0 = 100 * SECOND;
        for n in 0..1000u32 {
            let client = IpAddr::from(n.to_be_bytes());
            // Clients seen a little later each: the first ones are nearest to full.
            assert!(rate.check_at(client, t0 + u64::from(n) * 1000).is_ok());
        }
        assert_eq!(rate.clients(), 1000);
        // Full: a new client passes untracked until the sweep.
        assert!(rate.check_at(ip(250), t0).is_ok());
        assert_eq!(rate.clients(), 1000);
        // Above the cap the ones nearest to full go, down to nine tenths.
        rate.max_clients = 800;
        rate.sweep_at(t0);
        assert_eq!(rate.clients(), 720);
        assert!(rate
            .full_at
            .contains_key(&IpAddr::from(999u32.to_be_bytes())));
        assert!(!rate.full_at.contains_key(&IpAddr::from(0u32.to_be_bytes())));
        // Once every bucket is full again, none is remembered.
        rate.sweep_at(t0 + 10 * SECOND);
        assert_eq!(rate.clients(), 0);
    }

    fn limits(spec: ClientLimits) -> Arc<RouteLimits> {
        Arc::new(RouteLimits::new(&spec, 1000, None))
    }

    fn spec() -> ClientLimits {
        ClientLimits {
            rps: None,
            rpm: None,
            burst_multiplier: 5,
            connections: None,
            whitelist: gatehouse_config::CidrSet::default(),
        }
    }

    #[test]
    fn connections_are_counted_until_each_request_ends() {
        let limits = limits(ClientLimits {
            connections: Some(2),
            ..spec()
        });
        let first = admit(&limits, ip(1)).unwrap();
        let second = admit(&limits, ip(1)).unwrap();
        let third = admit(&limits, ip(1)).map(|_| ()).unwrap_err();
        assert_eq!(third.kind, Kind::Connections);
        assert!(
            admit(&limits, ip(2)).is_ok(),
            "another client is not affected"
        );
        drop(first);
        let again = admit(&limits, ip(1)).unwrap();
        drop((second, again));
        let c = limits.connections.as_ref().unwrap();
        assert!(
            c.in_flight.is_empty(),
            "nothing in flight, nothing remembered"
        );
    }

    #[test]
    fn the_whitelist_is_exempt_and_both_rates_apply() {
        let limits = limits(ClientLimits {
            rps: Some(100),
            rpm: Some(2),
            burst_multiplier: 1,
            whitelist: gatehouse_config::CidrSet::new(vec!["10.0.0.9/32".parse().unwrap()]),
            ..spec()
        });
        // rpm 2 with a burst of 2: three at once, then the per-minute limit speaks.
        for _ in 0..3 {
            assert!(admit(&limits, ip(1)).is_ok());
        }
        let refused = admit(&limits, ip(1)).map(|_| ()).unwrap_err();
        assert_eq!(refused.kind, Kind::Rpm);
        assert!(
            (0..1000).all(|_| admit(&limits, ip(9)).is_ok()),
            "whitelisted"
        );
    }

    #[test]
    fn a_reload_with_the_same_rate_keeps_each_clients_bucket() {
        let spec = ClientLimits {
            rps: Some(1),
            burst_multiplier: 1,
            ..spec()
        };
        let before = limits(spec.clone());
        while admit(&before, ip(1)).is_ok() {}
        let after = RouteLimits::new(&spec, 1000, Some(&before));
        assert!(after.rates[0].check(ip(1)).is_err(), "still over its rate");
        let changed = RouteLimits::new(
            &ClientLimits {
                rps: Some(50),
                ..spec
            },
            1000,
            Some(&before),
        );
        assert!(
            changed.rates[0].check(ip(1)).is_ok(),
            "a new rate starts afresh"
        );
    }
}
