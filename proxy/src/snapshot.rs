//! The routing snapshot: everything a request needs, built off the request path from a
//! validated configuration and swapped in whole.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use gatehouse_config::{Config, HostPattern, Location, RoutingTable, ServiceId};
use hyper_util::{
    rt::{TokioExecutor, TokioTimer},
    server::conn::auto,
};

use crate::{
    l4::key::L4Key,
    metrics::{Metrics, RouteStats, ServiceRequestTable, ServiceRequests},
    policy::{auth_cache::AuthAnswers, basic_auth::Credentials, client_limits::RouteLimits},
    tls::{
        certs::{CertStore, TlsError},
        client_auth::ClientAuthTable,
        passthrough::PassthroughTable,
    },
    upstream::{forward::ForwardLimits, tls::UpstreamConnector, Endpoint, Upstream},
    warnings::OncePerKey,
};

/// Largest request head (request line and headers) accepted; larger gets 431.
pub const MAX_REQUEST_HEAD: usize = 32 * 1024;

/// An immutable view of the configuration for the request path.
pub struct Snapshot {
    pub(crate) config: Arc<Config>,
    pub(crate) table: RoutingTable,
    /// One per configured service, indexed by `ServiceId`.
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    /// Service name → index in `upstreams`, for publishing endpoints by name.
    by_name: HashMap<String, usize>,
    /// Running L4 listener → its entry in `config.l4`.
    pub(crate) l4_index: HashMap<L4Key, usize>,
    /// One per route, then the default service's, then the no-route stats.
    stats: Vec<Arc<RouteStats>>,
    /// Requests by Ingress and Service, by the same index as `stats`.
    service_requests: ServiceRequestTable,
    pub(crate) limits: ForwardLimits,
    pub(crate) server: auto::Builder<TokioExecutor>,
    /// Certificates of the HTTPS listener, chosen by SNI.
    pub(crate) certs: CertStore,
    /// Hosts warned about an unusable certificate for their forced HTTPS.
    pub(crate) warned: OncePerKey,
    /// Per route (by index), its client limits, if it has any.
    pub(crate) client_limits: Vec<Option<Arc<RouteLimits>>>,
    /// Per route (by index), its basic-authentication users, if it has any.
    pub(crate) basic_auth: Vec<Option<Arc<Credentials>>>,
    /// Per route (by index), the answers of its authentication service it remembers.
    pub(crate) auth_answers: Vec<Option<Arc<AuthAnswers>>>,
    /// Each host's client certificates (mTLS), by SNI and by route.
    pub(crate) client_auth: ClientAuthTable,
    /// Hosts whose TLS passes through unterminated, by SNI.
    pub(crate) passthrough: PassthroughTable,
    /// The Strict-Transport-Security value of the configuration.
    pub(crate) hsts: http::HeaderValue,
}

/// Why a configuration could not become a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The configuration was not validated first.
    #[error("routing table does not compile: {0}")]
    Routing(String),
    /// Certificates that cannot be served.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Tls(Vec<TlsError>),
    /// Users of basic authentication, or client certificate authorities, that cannot be
    /// read.
    #[error("{}", .0.join("\n"))]
    Auth(Vec<String>),
}

/// Each route's basic-authentication users (reading their files), or every route whose
/// users cannot be read.
fn load_credentials(config: &Config) -> Result<Vec<Option<Arc<Credentials>>>, SnapshotError> {
    let mut errors = Vec::new();
    let loaded = config
        .routes
        .iter()
        .map(|route| {
            let auth = route.basic_auth.as_ref()?;
            match Credentials::load(auth) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    errors.push(format!(
                        "{}: route `{}` auth: {e}",
                        route.location, route.host
                    ));
                    None
                }
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(SnapshotError::Auth(errors))
    }
}

/// Each service's TLS to its endpoints, when it has some: the previous snapshot's
/// connector for the same settings (its session cache kept), else a new one.
fn transports(
    config: &Config,
    previous: Option<&Snapshot>,
) -> Result<Vec<Option<Arc<UpstreamConnector>>>, Vec<String>> {
    let kept: HashMap<u64, &Arc<UpstreamConnector>> = previous
        .into_iter()
        .flat_map(|p| p.upstreams.iter())
        .filter_map(|u| u.transport())
        .map(|t| (t.digest, t))
        .collect();
    let mut errors = Vec::new();
    let built = config
        .services
        .iter()
        .map(|s| {
            let tls = s.protocol.tls()?;
            match UpstreamConnector::load(tls, s.protocol.is_h2()) {
                Ok(fresh) => Some(
                    kept.get(&fresh.digest)
                        .map_or_else(|| Arc::new(fresh), |k| Arc::clone(k)),
                ),
                Err(e) => {
                    errors.push(format!("service `{}` tls: {e}", s.name));
                    None
                }
            }
        })
        .collect();
    match errors.is_empty() {
        true => Ok(built),
        false => Err(errors),
    }
}

/// Each route's store of its authentication service's answers, when it caches them: the
/// previous snapshot's for the same route asking the same way, so a reload forgets nothing
/// that is still true.
fn remembered_answers(
    config: &Config,
    previous: Option<&Snapshot>,
) -> Vec<Option<Arc<AuthAnswers>>> {
    let kept: HashMap<
        (&HostPattern, &Location),
        (&gatehouse_config::AuthRequest, &Arc<AuthAnswers>),
    > = previous
        .into_iter()
        .flat_map(|p| p.config.routes.iter().zip(p.auth_answers.iter()))
        .filter_map(|(r, a)| {
            let request = &r.external_auth.as_ref()?.request;
            Some(((&r.host, &r.location), (request, a.as_ref()?)))
        })
        .collect();
    config
        .routes
        .iter()
        .map(|route| {
            let request = &route.external_auth.as_ref()?.request;
            request.cache.as_ref()?;
            match kept.get(&(&route.host, &route.location)) {
                Some((before, answers)) if *before == request => Some(Arc::clone(answers)),
                _ => Some(Arc::new(AuthAnswers::default())),
            }
        })
        .collect()
}

/// Checks what a configuration names outside itself (certificates, htpasswd files), as
/// applying it would: every problem, one line each.
pub fn check_files(config: &Config) -> Result<(), Vec<String>> {
    let mut errors: Vec<String> = match CertStore::load(config, None) {
        Ok(_) => Vec::new(),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    };
    if let Err(SnapshotError::Auth(auth)) = load_credentials(config) {
        errors.extend(auth);
    }
    if let Err(authorities) = ClientAuthTable::build(config) {
        errors.extend(authorities);
    }
    if let Err(upstream_tls) = transports(config, None) {
        errors.extend(upstream_tls);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

impl Snapshot {
    /// Builds a snapshot. `discovered` gives the endpoints discovery last published for a
    /// service. Endpoints at addresses the `previous` snapshot had are carried over with
    /// their pools, in-flight counts and health.
    pub fn build(
        config: Arc<Config>,
        previous: Option<&Snapshot>,
        discovered: &dyn Fn(&str) -> Vec<SocketAddr>,
        metrics: &Metrics,
    ) -> Result<Self, SnapshotError> {
        let table = RoutingTable::compile(&config.routes)
            .map_err(|e| SnapshotError::Routing(format!("{e:?}")))?;
        let certs =
            CertStore::load(&config, previous.map(|p| &p.certs)).map_err(SnapshotError::Tls)?;
        let basic_auth = load_credentials(&config)?;
        let client_auth = ClientAuthTable::build(&config).map_err(SnapshotError::Auth)?;
        // Digits and fixed words: always a valid header value.
        let hsts = http::HeaderValue::from_str(&config.hsts.header_value())
            .unwrap_or_else(|_| http::HeaderValue::from_static("max-age=31536000"));
        if let Some(prev) = previous {
            for cert in prev.certs.certs() {
                let _ = metrics
                    .cert_expiry
                    .remove_label_values(&[cert.label.as_str()]);
            }
        }
        for cert in certs.certs() {
            metrics
                .cert_expiry
                .with_label_values(&[cert.label.as_str()])
                .set(cert.not_after);
        }
        // Endpoints carry over by address and transport: a pooled plaintext connection
        // never serves a service that now wants TLS, nor the reverse.
        let known: HashMap<(SocketAddr, (u64, bool)), Arc<Endpoint>> = previous
            .into_iter()
            .flat_map(|p| p.upstreams.iter())
            .flat_map(|u| u.endpoints().iter().cloned().collect::<Vec<_>>())
            .map(|e| ((e.addr(), e.transport_key()), e))
            .collect();
        let transports = transports(&config, previous).map_err(SnapshotError::Auth)?;
        let previous_upstream = |name: &str| previous.and_then(|p| p.upstream(name));
        let upstreams = config
            .services
            .iter()
            .zip(transports)
            .map(|(s, transport)| {
                let h2 = s.protocol.is_h2();
                let key = (transport.as_ref().map_or(0, |t| t.digest), h2);
                let known = |addr: SocketAddr| known.get(&(addr, key)).cloned();
                let fixed = s
                    .endpoints
                    .iter()
                    .map(|a| {
                        known(*a)
                            .unwrap_or_else(|| Arc::new(Endpoint::over(*a, transport.clone(), h2)))
                    })
                    .collect();
                // Resolving a labelled metric hashes its labels: reuse the handle.
                let gauge = previous_upstream(&s.name).map_or_else(
                    || metrics.endpoints.with_label_values(&[s.name.as_str()]),
                    |u| u.gauge().clone(),
                );
                Arc::new(Upstream::new(
                    s,
                    fixed,
                    &discovered(&s.name),
                    &known,
                    gauge,
                    transport,
                    config.upstream_keepalive,
                ))
            })
            .collect();
        let by_name: HashMap<String, usize> = config
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        if let Some(prev) = previous {
            for u in &prev.upstreams {
                if !by_name.contains_key(u.name()) {
                    let _ = metrics.endpoints.remove_label_values(&[u.name()]);
                }
            }
        }
        // Routes sharing a host share its label; unchanged labels keep their handles.
        let mut known_stats: HashMap<String, Arc<RouteStats>> = previous
            .into_iter()
            .flat_map(|p| p.stats.iter())
            .map(|s| (s.label().to_owned(), s.clone()))
            .collect();
        let mut stats: Vec<Arc<RouteStats>> = config
            .routes
            .iter()
            .map(|r| {
                let label = r.host.to_string();
                match known_stats.get(&label) {
                    Some(s) => s.clone(),
                    None => {
                        let s = Arc::new(RouteStats::new(metrics, &label));
                        known_stats.insert(label, s.clone());
                        s
                    }
                }
            })
            .collect();
        // A host no route has any more takes its series with it: hosts come and go with
        // Ingresses (preview environments), and the series must not pile up.
        if let Some(prev) = previous {
            let kept: std::collections::HashSet<&str> = stats.iter().map(|s| s.label()).collect();
            for gone in prev.stats[..prev.stats.len() - 2]
                .iter()
                .map(|s| s.label())
                .filter(|label| !kept.contains(label))
            {
                metrics.remove_route(gone);
            }
        }
        let service_requests = ServiceRequestTable::build(
            &config,
            &metrics.service_requests,
            previous.map(|p| &p.service_requests),
        );
        stats.push(Arc::new(RouteStats::new(metrics, "default")));
        stats.push(Arc::new(RouteStats::new(metrics, "none")));
        let t = &config.timeouts;
        let limits = ForwardLimits {
            connect: t.connect,
            response: t.upstream_response,
            read: t.upstream_read,
            send: t.upstream_send,
            client_body: t.client_body,
            tunnel_idle: t.tunnel_idle,
            // `upstream_keepalive.timeout` (4 s unless set), or `timeouts.idle` if shorter.
            pool_idle: config.upstream_keepalive.timeout.min(t.idle),
            retry: gatehouse_config::Retry::default(),
        };
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http1()
            .timer(TokioTimer::new())
            // The connection watchdog enforces request_header and idle separately.
            .header_read_timeout(None)
            .max_buf_size(MAX_REQUEST_HEAD)
            .keep_alive(true);
        server
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size(MAX_REQUEST_HEAD as u32)
            .keep_alive_interval(Some(t.idle))
            .keep_alive_timeout(Duration::from_secs(20));
        // A route's limits keep their clients across a rebuild: the route is known by its
        // host and where it was written (an Ingress, or a line of the file).
        let previous_limits: HashMap<(&HostPattern, &Location), &Arc<RouteLimits>> = previous
            .into_iter()
            .flat_map(|p| p.config.routes.iter().zip(p.client_limits.iter()))
            .filter_map(|(r, l)| Some(((&r.host, &r.location), l.as_ref()?)))
            .collect();
        let client_limits = config
            .routes
            .iter()
            .map(|route| {
                let spec = route.limits.as_ref()?;
                let previous = previous_limits.get(&(&route.host, &route.location));
                Some(Arc::new(RouteLimits::new(
                    spec,
                    config.limits.max_clients,
                    previous.map(|p| p.as_ref()),
                )))
            })
            .collect();
        let auth_answers = remembered_answers(&config, previous);
        let passthrough = PassthroughTable::build(&config);
        let l4_index = L4Key::all(&config.l4)
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, i))
            .collect();
        Ok(Snapshot {
            l4_index,
            config,
            table,
            upstreams,
            by_name,
            stats,
            service_requests,
            limits,
            server,
            certs,
            warned: OncePerKey::default(),
            client_limits,
            basic_auth,
            client_auth,
            passthrough,
            auth_answers,
            hsts,
        })
    }

    /// The configuration this snapshot was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The upstream of each configured service.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The upstream of a service, by name.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name).map(|i| &self.upstreams[*i])
    }

    pub(crate) fn stats(&self, i: usize) -> &RouteStats {
        &self.stats[i.min(self.stats.len() - 1)]
    }

    /// The counters of requests that the route of stats index `i` sent to `service`.
    pub(crate) fn service_requests(
        &self,
        i: usize,
        service: ServiceId,
    ) -> Option<&ServiceRequests> {
        self.service_requests.get(i, service)
    }

    pub(crate) fn default_stats(&self) -> usize {
        self.stats.len() - 2
    }

    pub(crate) fn none_stats(&self) -> usize {
        self.stats.len() - 1
    }
}
