//! The cost of a client-limit check, with one client and with 1,000,000 remembered, and
//! the memory those 1,000,000 take.
//!
//!   cargo bench --bench client_limits

use std::{hint::black_box, net::IpAddr, time::Duration};

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse_proxy::{ClientRate, LimitKind};

const CLIENTS: u32 = 1_000_000;

fn client(n: u32) -> IpAddr {
    IpAddr::from((0x0a00_0000 + n).to_be_bytes())
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A rate no client of the bench exceeds, so every check takes the path of a request
/// that passes (a refused one costs the same and returns earlier).
fn rate(max_clients: usize) -> ClientRate {
    ClientRate::new(
        LimitKind::Rps,
        1_000_000,
        Duration::from_secs(1),
        5,
        max_clients,
    )
}

fn checks(c: &mut Criterion) {
    let one = rate(1000);
    c.bench_function("rate check, 1 client", |b| {
        b.iter(|| one.check(black_box(client(1))))
    });

    let before = rss_kib();
    let many = rate(CLIENTS as usize);
    for n in 0..CLIENTS {
        let _ = many.check(client(n));
    }
    let after = rss_kib();
    eprintln!(
        "{} clients remembered: RSS +{} MiB ({} bytes each)",
        many.clients(),
        (after - before) / 1024,
        (after - before) * 1024 / u64::from(CLIENTS)
    );
    let mut n = 0u32;
    c.bench_function("rate check, 1,000,000 clients", |b| {
        b.iter(|| {
            n = (n + 7919) % CLIENTS;
            many.check(black_box(client(n)))
        })
    });
}

criterion_group!(benches, checks);
criterion_main!(benches);
