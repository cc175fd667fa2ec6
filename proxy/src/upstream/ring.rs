//! A consistent-hash ring over a service's endpoints (ketama-style points per endpoint).
//! A key lands on the first point at or after its hash; an endpoint that leaves takes
//! only its own points with it, so only the keys it held move, and one that joins takes
//! a fair share from all the others.

use std::net::SocketAddr;

use xxhash_rust::xxh3::xxh3_64;

/// Points per endpoint: enough that ten endpoints share keys within a few percent.
const POINTS_PER_ENDPOINT: usize = 160;

/// The ring of one endpoint set. Indexes refer to that set.
#[derive(Debug)]
pub(crate) struct Ring {
    /// (point, endpoint index), sorted by point.
    points: Vec<(u64, u32)>,
    endpoints: usize,
}

/// The hash a request key is placed on the ring by.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

impl Ring {
    /// The ring of `addrs`. Points depend on the address alone, so every replica (and every
    /// snapshot) with the same endpoints builds the same ring.
    pub(crate) fn new(addrs: impl ExactSizeIterator<Item = SocketAddr>) -> Ring {
        let endpoints = addrs.len();
        let mut points = Vec::with_capacity(endpoints * POINTS_PER_ENDPOINT);
        let mut label = String::new();
        for (i, addr) in addrs.enumerate() {
            for point in 0..POINTS_PER_ENDPOINT {
                use std::fmt::Write;
                label.clear();
                let _ = write!(label, "{addr}-{point}");
                points.push((xxh3_64(label.as_bytes()), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points, endpoints }
    }

    /// Endpoint indexes in ring order from `hash`: the key's endpoint first, then each other
    /// endpoint once, in the order its keys would move to when those before it are gone.
    pub(crate) fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|(p, _)| *p < hash);
        let mut seen = Vec::new();
        let n = self.points.len();
        (0..n)
            .map(move |k| self.points[(start + k) % n].1 as usize)
            .filter(move |i| {
                if seen.contains(i) {
                    false
                } else {
                    seen.push(*i);
                    true
                }
            })
            .take(self.endpoints)
    }

    /// The endpoint a key lands on, when there is any.
    pub(crate) fn find(&self, hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let at = self.points.partition_point(|(p, _)| *p < hash);
        Some(self.points[at % self.points.len()].1 as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(range: std::ops::Range<u16>) -> Vec<SocketAddr> {
        range
            .map(|i| SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 8080)))
            .collect()
    }

    fn owners(ring: &Ring, set: &[SocketAddr], keys: u32) -> Vec<SocketAddr> {
        (0..keys)
            .map(|k| {
                set[ring
                    .find(key_hash(format!("client-{k}").as_bytes()))
                    .unwrap()]
            })
            .collect()
    }

    #[test]
    fn one_endpoint_of_ten_leaving_moves_about_a_tenth_of_keys_and_only_its_own() {
        let ten = addrs(0..10);
        let nine: Vec<_> = ten.iter().copied().filter(|a| *a != ten[3]).collect();
        let before = owners(&Ring::new(ten.iter().copied()), &ten, 100_000);
        let after = owners(&Ring::new(nine.iter().copied()), &nine, 100_000);
        let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        assert!(
            moved.iter().all(|(b, _)| **b == ten[3]),
            "only the leaving endpoint's keys move"
        );
        let fraction = moved.len() as f64 / 100_000.0;
        // The figure docs/behaviour.md quotes (`cargo test -p gatehouse-proxy ring -- --nocapture`).
        eprintln!(
            "one endpoint of ten leaving moved {:.2} % of 100,000 keys",
            fraction * 100.0
        );
        assert!((0.07..0.13).contains(&fraction), "moved {fraction}");
    }

    #[test]
    fn keys_spread_over_endpoints_and_walks_visit_each_once() {
        let set = addrs(0..10);
        let ring = Ring::new(set.iter().copied());
        let mut counts = std::collections::HashMap::new();
        for owner in owners(&ring, &set, 100_000) {
            *counts.entry(owner).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 10);
        assert!(
            counts.values().all(|c| (7_000..13_000).contains(c)),
            "{counts:?}"
        );
        let hash = key_hash(b"k");
        let walk: Vec<_> = ring.walk(hash).collect();
        assert_eq!(walk[0], ring.find(hash).unwrap());
        let mut sorted = walk.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(Ring::new(std::iter::empty()).find(hash), None);
    }
}
