//! Kubernetes discovery at work, through the release binary and the Kubernetes API test
//! server the tests use (real kube-rs watches over HTTP):
//!
//! 1. propagation: from an EndpointSlice event leaving the API server to the first request
//!    that reaches the new endpoint (p50/p99 over many rounds);
//! 2. scale: initial sync, memory and CPU with N Services (one Ingress, one host and 10
//!    endpoints each; N = 10,000 by default, `GATEHOUSE_BENCH_SERVICES` to change), then the
//!    proxy's CPU and the propagation of marker changes under 1,000 endpoint changes/s.
//!
//! `cargo bench --bench kubernetes`. Proxy and load share the machine's two cores; figures
//! are medians and percentiles, never one run.

#[path = "../tests/integration/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use gatehouse_discovery::kubernetes::endpoints::SERVICE_NAME_LABEL;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::{
    binary::{admin_get, run_with, Running},
    kube_api::*,
    TestUpstream,
};

const PROPAGATION_ROUNDS: usize = 200;
const CHURN_PER_SECOND: usize = 1000;
const CHURN_SECONDS: u64 = 10;

fn slice(ns: &str, service: &str, port: u16, ips: &[String]) -> Value {
    json!({
        "metadata": { "namespace": ns, "name": format!("{service}-1"), "labels": { SERVICE_NAME_LABEL: service } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": port }],
        "endpoints": ips.iter().map(|ip| json!({ "addresses": [ip], "conditions": { "ready": true } })).collect::<Vec<_>>(),
    })
}

fn service(ns: &str, name: &str) -> Value {
    json!({
        "metadata": { "namespace": ns, "name": name },
        "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] },
    })
}

fn ingress(ns: &str, name: &str, host: &str) -> Value {
    json!({
        "metadata": { "namespace": ns, "name": name, "creationTimestamp": "2026-01-01T00:00:00Z" },
        "spec": { "ingressClassName": "gatehouse", "rules": [{ "host": host, "http": { "paths": [
            { "path": "/", "pathType": "Prefix", "backend": { "service": { "name": name, "port": { "name": "http" } } } }
        ] } }] },
    })
}

/// One keep-alive connection that asks `host` which upstream answers.
struct Prober {
    sender: hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>,
    host: String,
}

impl Prober {
    async fn new(proxy: std::net::SocketAddr, host: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Prober {
            sender,
            host: host.to_owned(),
        }
    }

    /// The name of the upstream that answered, or "" for a proxy error.
    async fn upstream(&mut self) -> String {
        let req = http::Request::get("/")
            .header("host", &self.host)
            .body(Full::new(bytes::Bytes::new()))
            .unwrap();
        self.sender
            .ready()
            .await
            .expect("the proxy keeps the connection open");
        let resp = self.sender.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["upstream"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Sends requests until `name` answers; returns when that happened.
    async fn until(&mut self, name: &str, deadline: Duration) -> Instant {
        let end = Instant::now() + deadline;
        loop {
            if self.upstream().await == name {
                return Instant::now();
            }
            assert!(Instant::now() < end, "{name} never answered");
        }
    }
}

/// Switches `ns/svc` between two real upstreams `rounds` times; the time from the slice
/// event leaving the API server to the first request answered by the new one.
async fn propagation(
    api: &KubeApi,
    prober: &mut Prober,
    ns: &str,
    svc: &str,
    pods: &[TestUpstream; 2],
    rounds: usize,
    pause: Duration,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let pod = &pods[(round + 1) % 2];
        let rv = api.apply(
            ENDPOINT_SLICES,
            slice(ns, svc, pod.addr.port(), &["127.0.0.1".to_owned()]),
        );
        let seen = prober.until(&pod.name, Duration::from_secs(10)).await;
        let sent = api.sent_at(rv).expect("the event went out on a watch");
        samples.push(seen.saturating_duration_since(sent));
        tokio::time::sleep(pause).await;
    }
    samples
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// (user+system CPU seconds, RSS MiB) of a process, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kib / 1024.0)
}

async fn start_gatehouse(api: &KubeApi, dir: &std::path::Path) -> Running {
    let kubeconfig = api.kubeconfig(dir);
    let config = dir.join("gatehouse.yaml");
    std::fs::write(
        &config,
        "listen: { http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\naccess_log: off\nshutdown: { drain_delay: 0s }\n",
    )
    .unwrap();
    run_with(
        &config,
        &["--kubernetes", "--kubeconfig", kubeconfig.to_str().unwrap()],
        std::process::Stdio::null(),
    )
    .await
}

/// Polls /readyz every 5 ms (the shared test helper polls every 20 ms, too coarse for
/// timing the initial sync).
async fn wait_ready(running: &Running) {
    let c = support::client();
    loop {
        if admin_get(&c, running.admin, "/readyz").await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The `probe.bench` host, its Service and one endpoint: the pod the prober watches for.
fn probe(api: &KubeApi, pod: &TestUpstream) {
    api.apply(SERVICES, service("bench", "probe"));
    api.apply(INGRESSES, ingress("bench", "probe", "probe.bench"));
    api.apply(
        ENDPOINT_SLICES,
        slice("bench", "probe", pod.addr.port(), &["127.0.0.1".to_owned()]),
    );
}

/// The j-th made-up pod address of Service i (never connected to).
fn ip(i: usize, j: usize) -> String {
    format!("10.{}.{}.{}", (i >> 8) & 255, i & 255, j + 1)
}

fn class(api: &KubeApi) {
    api.apply(
        INGRESS_CLASSES,
        json!({ "metadata": { "name": "gatehouse" }, "spec": { "controller": "gatehouse.io/ingress" } }),
    );
}

/// One round of 1,000 endpoint changes per second for `CHURN_SECONDS`.
async fn churn(
    api: &KubeApi,
    prober: &mut Prober,
    pods: &[TestUpstream; 2],
    pid: u32,
    services: usize,
    round: usize,
) {
    let churn_api = api.clone();
    let (cpu_before, _) = usage(pid);
    let churn_start = Instant::now();
    let churn = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let total = CHURN_PER_SECOND * CHURN_SECONDS as usize;
        let mut n = 0usize;
        while n < total {
            tick.tick().await;
            for _ in 0..CHURN_PER_SECOND / 100 {
                let i = n % services;
                let ns = format!("ns{}", i % 100);
                // A different set every time a Service comes round again.
                let shift = 10 * (round * total / services + n / services + 1);
                let ips: Vec<String> = (0..10).map(|j| ip(i, (j + shift) % 250)).collect();
                churn_api.apply(ENDPOINT_SLICES, slice(&ns, &format!("svc{i}"), 8080, &ips));
                n += 1;
            }
        }
        n
    });
    let mut under_churn = propagation(
        api,
        prober,
        "bench",
        "probe",
        pods,
        40,
        Duration::from_millis(200),
    )
    .await;
    let changes = churn.await.unwrap();
    let churn_time = churn_start.elapsed();
    let (cpu_after, rss_after) = usage(pid);
    println!(
        "churn round {round}: {changes} endpoint changes in {:.1} s ({:.0}/s): proxy CPU {:.0}% of one core, RSS {:.1} MiB; marker propagation p50 {}, p99 {}, max {} (API lists/watches so far: {:?})",
        churn_time.as_secs_f64(),
        changes as f64 / churn_time.as_secs_f64(),
        (cpu_after - cpu_before) / churn_time.as_secs_f64() * 100.0,
        rss_after,
        ms(percentile(&mut under_churn, 0.5)),
        ms(percentile(&mut under_churn, 0.99)),
        ms(percentile(&mut under_churn, 1.0)),
        api.requests(),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let services: usize = std::env::var("GATEHOUSE_BENCH_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pods = [
        TestUpstream::start("pod-a").await,
        TestUpstream::start("pod-b").await,
    ];

    // 1. Propagation on a small cluster.
    {
        let api = KubeApi::start().await;
        class(&api);
        probe(&api, &pods[0]);
        let running = start_gatehouse(&api, &dir).await;
        wait_ready(&running).await;
        let mut prober = Prober::new(running.http, "probe.bench").await;
        prober.until("pod-a", Duration::from_secs(10)).await;
        let mut samples = propagation(
            &api,
            &mut prober,
            "bench",
            "probe",
            &pods,
            PROPAGATION_ROUNDS,
            Duration::from_millis(5),
        )
        .await;
        println!(
            "propagation, 1 service: {} rounds, p50 {}, p99 {}, max {}",
            samples.len(),
            ms(percentile(&mut samples, 0.5)),
            ms(percentile(&mut samples, 0.99)),
            ms(percentile(&mut samples, 1.0)),
        );
        running.terminate().await;
    }

    // 2. Scale.
    let api = KubeApi::start().await;
    class(&api);
    for i in 0..services {
        let name = format!("svc{i}");
        let ns = format!("ns{}", i % 100);
        api.apply(SERVICES, service(&ns, &name));
        api.apply(INGRESSES, ingress(&ns, &name, &format!("{name}.bench")));
        let ips: Vec<String> = (0..10).map(|j| ip(i, j)).collect();
        api.apply(ENDPOINT_SLICES, slice(&ns, &name, 8080, &ips));
    }
    probe(&api, &pods[0]);
    let started = Instant::now();
    let running = start_gatehouse(&api, &dir).await;
    let pid = running.child.id().unwrap();
    wait_ready(&running).await;
    let sync = started.elapsed();
    let mut prober = Prober::new(running.http, "probe.bench").await;
    prober.until("pod-a", Duration::from_secs(30)).await;
    let routed = started.elapsed();
    let (cpu_sync, rss_sync) = usage(pid);
    println!(
        "scale: {services} Services / {} endpoints / {services} Ingresses: ready after {}, routing after {}, CPU {:.2} s, RSS {:.1} MiB",
        services * 10,
        ms(sync),
        ms(routed),
        cpu_sync,
        rss_sync
    );

    // Idle propagation at this scale (endpoint changes do not rebuild routes).
    let mut idle = propagation(
        &api,
        &mut prober,
        "bench",
        "probe",
        &pods,
        50,
        Duration::from_millis(20),
    )
    .await;
    println!(
        "propagation at scale, idle: p50 {}, p99 {}",
        ms(percentile(&mut idle, 0.5)),
        ms(percentile(&mut idle, 0.99))
    );

    // An Ingress change rebuilds every route: time to the first request on a new host.
    let mut rebuilds = Vec::new();
    for round in 0..10 {
        let host = format!("new{round}.bench");
        let name = format!("new{round}");
        api.apply(SERVICES, service("bench", &name));
        api.apply(
            ENDPOINT_SLICES,
            slice(
                "bench",
                &name,
                pods[1].addr.port(),
                &["127.0.0.1".to_owned()],
            ),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rv = api.apply(INGRESSES, ingress("bench", &name, &host));
        let mut p = Prober::new(running.http, &host).await;
        let seen = p.until("pod-b", Duration::from_secs(30)).await;
        rebuilds.push(seen.saturating_duration_since(api.sent_at(rv).unwrap_or(seen)));
    }
    println!(
        "Ingress added at scale (full route rebuild): p50 {}, max {}",
        ms(percentile(&mut rebuilds, 0.5)),
        ms(percentile(&mut rebuilds, 1.0))
    );

    // Churn: 1,000 endpoint changes per second, with marker changes measured meanwhile;
    // three rounds, so memory that keeps growing would show.
    for round in 0..3 {
        churn(&api, &mut prober, &pods, pid, services, round).await;
    }
    running.terminate().await;
}
