//! Route lookup over 10k hosts and 1k paths, and snapshot compile time for 10k routes.

use std::{hint::black_box, time::Duration};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gatehouse_config::{parse, routing::normalize_host, RoutingTable};

/// A configuration with `hosts` routes (every tenth a wildcard) of `paths` prefix rules each,
/// plus one host with 1,000 paths of every kind.
fn config_text(hosts: usize, paths: usize) -> String {
    let mut y = String::from(
        "listen: { http: \"127.0.0.1:0\" }\nservices: { s: { endpoints: [\"10.0.0.1:80\"] } }\nroutes:\n",
    );
    for h in 0..hosts {
        let host = if h % 10 == 9 {
            format!("\"*.w{h}.example.com\"")
        } else {
            format!("app{h}.example.com")
        };
        y.push_str(&format!(
            "  - host: {host}\n    paths:\n      - {{ path: /, service: s }}\n"
        ));
        for p in 0..paths {
            y.push_str(&format!("      - {{ path: /api/v{p}, service: s }}\n"));
        }
    }
    y.push_str("  - host: big.example.com\n    paths:\n");
    for p in 0..1000 {
        match p % 10 {
            0 => y.push_str(&format!(
                "      - {{ path: /exact/{p}, match: exact, service: s }}\n"
            )),
            9 => y.push_str(&format!(
                "      - {{ path: \"/re{p}/[0-9]+\", match: regex, service: s }}\n"
            )),
            _ => y.push_str(&format!("      - {{ path: /svc/{p}/api, service: s }}\n")),
        }
    }
    y
}

fn lookup(c: &mut Criterion) {
    let config = parse(&config_text(10_000, 3), "bench.yaml").expect("valid");
    let table = RoutingTable::compile(&config.routes).expect("compiles");
    let mut g = c.benchmark_group("route_lookup_10k_hosts");
    let cases = [
        (
            "exact_host_prefix",
            "App5000.Example.com:443",
            "/api/v2/users/42",
        ),
        ("wildcard_host", "tenant.w4999.example.com", "/index.html"),
        ("unknown_host", "nope.example.org", "/"),
        ("1k_paths_exact", "big.example.com", "/exact/500"),
        (
            "1k_paths_longest_prefix",
            "big.example.com",
            "/svc/501/api/deep/path/here",
        ),
        (
            "1k_paths_regex_fallthrough",
            "big.example.com",
            "/re999/12345",
        ),
    ];
    for (name, host, path) in cases {
        g.bench_with_input(
            BenchmarkId::from_parameter(name),
            &(host, path),
            |b, (host, path)| {
                b.iter(|| {
                    let h = normalize_host(black_box(host));
                    black_box(table.find(&h, black_box(path)))
                })
            },
        );
    }
    g.finish();
}

fn compile(c: &mut Criterion) {
    let text = config_text(10_000, 0);
    let config = parse(&text, "bench.yaml").expect("valid");
    let mut g = c.benchmark_group("snapshot_10k_routes");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("compile_routing_table", |b| {
        b.iter(|| RoutingTable::compile(black_box(&config.routes)).expect("compiles"))
    });
    g.bench_function("parse_and_validate_yaml", |b| {
        b.iter(|| parse(black_box(&text), "bench.yaml").expect("valid"))
    });
    g.finish();
}

fn allow_list(c: &mut Criterion) {
    use gatehouse_config::{cidr::parse_cidr, CidrSet};
    // Realistic lists: mostly /24s and single addresses, a few wider ranges, some IPv6.
    let list = |n: u32| {
        CidrSet::new((0..n).map(|i| {
            let text = match i % 10 {
                0 => format!("2001:db8:{:x}::/48", i),
                1 => format!("10.{}.0.0/16", i % 256),
                2..=5 => format!("100.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
                _ => format!("172.{}.{}.0/24", 16 + (i >> 16) % 16, (i >> 8) & 255),
            };
            parse_cidr(&text).expect("valid cidr")
        }))
    };
    let mut g = c.benchmark_group("allow_list_check");
    for n in [10u32, 10_000] {
        let set = list(n);
        for (name, ip) in [
            ("hit", "10.3.4.5"),
            ("miss_v4", "8.8.8.8"),
            ("miss_v6", "2001:db9::1"),
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("ip");
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| black_box(&set).contains(black_box(ip)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, lookup, compile, allow_list);
criterion_main!(benches);
