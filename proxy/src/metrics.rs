//! Prometheus metrics, owned by one injected [`Metrics`] value (no global registry), so
//! each test gets its own.

mod service_requests;

use std::{collections::HashMap, sync::OnceLock};

pub(crate) use service_requests::{ServiceRequestTable, ServiceRequests};

use prometheus::{
    core::{Collector, MetricVec, MetricVecBuilder},
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric of the data plane. Clones share the same counters.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub(crate) requests: IntCounterVec,
    pub(crate) service_requests: IntCounterVec,
    pub(crate) duration: HistogramVec,
    pub(crate) connect_errors: IntCounterVec,
    pub(crate) retries: IntCounterVec,
    pub(crate) health_transitions: IntCounterVec,
    pub(crate) endpoints: IntGaugeVec,
    pub(crate) config_reloads: IntCounterVec,
    pub(crate) denied: IntCounterVec,
    pub(crate) incomplete: IntCounterVec,
    pub(crate) limited: IntCounterVec,
    pub(crate) canary: IntCounterVec,
    pub(crate) connections_cut: IntCounterVec,
    pub(crate) tls_handshakes: IntCounterVec,
    pub(crate) cert_expiry: IntGaugeVec,
    kubernetes_events: IntCounterVec,
    pub(crate) l4_connections: IntCounterVec,
    pub(crate) l4_bytes: IntCounterVec,
    pub(crate) l4_active: IntGaugeVec,
    ingresses: IntGaugeVec,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    // Names are fixed and distinct, so registration only fails on a programming error.
    r.register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

impl Metrics {
    /// A fresh registry with every Gatehouse metric registered.
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("gatehouse".into()), None).expect("static prefix is valid");
        let counters = |name: &str, help: &str, labels: &[&str]| {
            let m = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(&registry, m)
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            let m = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(&registry, m)
        };
        let duration = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time from request head to the end of the response body",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0, 60.0,
                ]),
                &["route"],
            )
            .expect("valid metric"),
        );
        let metrics = Metrics {
            requests: counters(
                "http_requests_total",
                "HTTP requests by route and status code",
                &["route", "code"],
            ),
            service_requests: counters(
                "service_requests_total",
                "HTTP requests by the Ingress (namespace, name) that routed them, the Service they went to, and code class",
                &["namespace", "ingress", "service", "code_class"],
            ),
            duration,
            connect_errors: counters(
                "upstream_connect_errors_total",
                "Failed connects to upstream endpoints, by service",
                &["service"],
            ),
            retries: counters(
                "upstream_retries_total",
                "Requests sent to another endpoint after one failed them, by service and failure",
                &["service", "failure"],
            ),
            health_transitions: counters(
                "health_check_transitions_total",
                "Endpoints taken out of rotation (to=\"down\") or brought back (to=\"up\") by active health checks, by service",
                &["service", "to"],
            ),
            endpoints: gauges(
                "endpoints",
                "Endpoints that can receive requests, by service",
                &["service"],
            ),
            config_reloads: counters(
                "config_reloads_total",
                "Configuration reloads by result",
                &["result"],
            ),
            denied: counters(
                "denied_total",
                "Requests and connections refused by policy, by reason",
                &["reason"],
            ),
            incomplete: counters(
                "responses_incomplete_total",
                "Responses that did not reach the client whole, by route and why: upstream_timeout, upstream_error, client_gone",
                &["route", "reason"],
            ),
            limited: counters(
                "requests_limited_total",
                "Requests refused by a client limit, by route and limit: rps, rpm, connections",
                &["route", "kind"],
            ),
            canary: counters(
                "canary_requests_total",
                "Requests of canary paths by route and where they went: canary or main",
                &["route", "to"],
            ),
            connections_cut: counters(
                "client_connections_cut_total",
                "Client connections closed by a timeout, by reason: slow_header, idle, client_not_reading",
                &["reason"],
            ),
            tls_handshakes: counters(
                "tls_handshakes_total",
                "TLS handshakes by result",
                &["result"],
            ),
            cert_expiry: gauges(
                "tls_certificate_expiry_timestamp_seconds",
                "When each loaded certificate expires (Unix time): alert before renewals that never came",
                &["certificate"],
            ),
            kubernetes_events: counters(
                "kubernetes_events_total",
                "Kubernetes objects received from watches (listed, added, changed, deleted), by kind",
                &["kind"],
            ),
            l4_connections: counters(
                "l4_connections_total",
                "TCP connections accepted and UDP sessions started, by L4 listener",
                &["listener"],
            ),
            l4_bytes: counters(
                "l4_bytes_total",
                "Bytes forwarded by L4 listeners: `in` from clients, `out` to clients",
                &["listener", "direction"],
            ),
            l4_active: gauges(
                "l4_active",
                "Open TCP connections and live UDP sessions, by L4 listener",
                &["listener"],
            ),
            ingresses: gauges(
                "ingresses",
                "Ingresses of our class by verdict: ok (served as ingress-nginx serves them), differs, refused (answering 503)",
                &["verdict"],
            ),
            registry,
        };
        let build = IntGaugeVec::new(
            Opts::new("build_info", "Always 1; the version of the running binary"),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        register(&metrics.registry, build);
        #[cfg(target_os = "linux")]
        {
            // CPU seconds, resident memory, open files and threads of this process.
            let process = prometheus::process_collector::ProcessCollector::for_self();
            let _ = metrics.registry.register(Box::new(process));
        }
        metrics
    }

    /// How many Ingresses of our class have each verdict (`ok`, `differs`, `refused`).
    pub fn set_ingress_verdicts(&self, counts: &[(&str, usize)]) {
        for (verdict, n) in counts {
            self.ingresses.with_label_values(&[verdict]).set(*n as i64);
        }
    }

    /// Counts one object event of a Kubernetes watch.
    pub fn kubernetes_event(&self, kind: &str) {
        self.kubernetes_events.with_label_values(&[kind]).inc();
    }

    /// Removes every series of the route label `route` (a host no route has any more).
    pub(crate) fn remove_route(&self, route: &str) {
        remove_where(&self.requests, "route", route);
        remove_where(&self.duration, "route", route);
        remove_where(&self.incomplete, "route", route);
        remove_where(&self.limited, "route", route);
        remove_where(&self.canary, "route", route);
    }

    /// Counts one refusal (`allowlist`, `denylist`, `untrusted_proxy`, `proxy_header`).
    pub(crate) fn deny(&self, reason: &str) {
        self.denied.with_label_values(&[reason]).inc();
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> (String, Vec<u8>) {
        let encoder = TextEncoder::new();
        let mut out = Vec::with_capacity(4096);
        // Encoding into a Vec cannot fail for the text format.
        let _ = encoder.encode(&self.registry.gather(), &mut out);
        (encoder.format_type().to_owned(), out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Status codes whose counters each route keeps a handle to once seen, so the request path
/// hashes label values only on a route's first response with that code.
const COMMON_CODES: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 308, 400, 403, 404, 413, 429, 500, 502, 503, 504,
];

/// A route's metric handles, resolved on first use: a route that is never requested (most
/// of 10,000 Ingress hosts at any moment) costs neither memory nor series of zeros.
pub(crate) struct RouteStats {
    label: String,
    codes: [OnceLock<IntCounter>; COMMON_CODES.len()],
    requests: IntCounterVec,
    durations: HistogramVec,
    duration: OnceLock<Histogram>,
    incomplete: IntCounterVec,
    limited: IntCounterVec,
    canary: IntCounterVec,
    /// `canary_requests_total` for (main, canary), resolved on first use.
    canary_split: [OnceLock<IntCounter>; 2],
}

impl RouteStats {
    pub(crate) fn new(metrics: &Metrics, label: &str) -> Self {
        RouteStats {
            label: label.to_owned(),
            codes: Default::default(),
            requests: metrics.requests.clone(),
            durations: metrics.duration.clone(),
            duration: OnceLock::new(),
            incomplete: metrics.incomplete.clone(),
            limited: metrics.limited.clone(),
            canary: metrics.canary.clone(),
            canary_split: Default::default(),
        }
    }

    /// A request of one of this route's canary paths, and whether it went to the canary.
    pub(crate) fn canary(&self, to_canary: bool) {
        let to = if to_canary { "canary" } else { "main" };
        self.canary_split[usize::from(to_canary)]
            .get_or_init(|| self.canary.with_label_values(&[self.label.as_str(), to]))
            .inc();
    }

    /// A request of this route refused by a client limit.
    pub(crate) fn limited(&self, kind: &str) {
        self.limited
            .with_label_values(&[self.label.as_str(), kind])
            .inc();
    }

    /// A response of this route that did not reach the client whole.
    pub(crate) fn incomplete(&self, reason: &str) {
        self.incomplete
            .with_label_values(&[self.label.as_str(), reason])
            .inc();
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn count(&self, status: u16) {
        let resolve = || {
            self.requests
                .with_label_values(&[self.label.as_str(), itoa(status).as_str()])
        };
        match COMMON_CODES.iter().position(|c| *c == status) {
            Some(i) => self.codes[i].get_or_init(resolve).inc(),
            None => resolve().inc(),
        }
    }

    pub(crate) fn observe(&self, seconds: f64) {
        self.duration
            .get_or_init(|| self.durations.with_label_values(&[self.label.as_str()]))
            .observe(seconds);
    }
}

/// Removes the series of `vec` whose label `name` is `value`, whatever its other labels.
fn remove_where<T: MetricVecBuilder>(vec: &MetricVec<T>, name: &str, value: &str) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get(name) == Some(&value) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

fn itoa(n: u16) -> String {
    n.to_string()
}
