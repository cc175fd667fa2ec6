//! The configuration Gatehouse serves with Kubernetes: the file's, plus the routes,
//! services and certificates of our Ingresses and the ports of the TCP/UDP ConfigMaps. Pure: the glue hands in the translation and
//! a way to read TLS Secrets.
//!
//! What the file says wins over an Ingress (an operator's explicit routes are not
//! overridden by any namespace's object); among Ingresses the translation already put the
//! oldest first.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use gatehouse_config::{
    routing::check_regex, Canary, CanaryHeader, CidrSet, Config, ConnectionLimits, HeaderOp,
    HostPattern, KubernetesRef, L4Listener, L4Protocol, Location, NamedEndpoint, PathMatch,
    PathRule, Redirect, Route, Service, ServiceId, ServicePort, TlsEntry, TlsSource,
    UpstreamProtocol, DEFAULT_L4_MAX, DEFAULT_MAX_BODY, DEFAULT_TCP_IDLE, DEFAULT_UDP_IDLE,
};

use k8s_openapi::api::core::v1::Secret;

use super::{
    controller_config::IngressDefaults,
    endpoints::PortRef,
    ingress::{www_twin, Backend, Balancing, IngressPath, PathKind, Translation},
    l4::L4Mapping,
};

/// A TLS Secret's PEM certificate chain and key, or why it cannot be used.
pub type SecretPem = Result<(String, String), String>;

/// A TLS Secret's certificate chain and key (`tls.crt`, `tls.key`). Their content never
/// goes into a message.
pub fn secret_pem(secret: &Secret) -> SecretPem {
    let field = |name: &str| -> Result<String, String> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(name))
            .ok_or_else(|| format!("has no `{name}`"))?;
        String::from_utf8(bytes.0.clone()).map_err(|_| format!("`{name}` is not PEM text"))
    };
    Ok((field("tls.crt")?, field("tls.key")?))
}

/// A Service of type ExternalName: the name it stands for, and its ports (name, number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalName {
    pub host: String,
    pub ports: Vec<(Option<String>, i32)>,
}

/// The ExternalName a Service object stands for, if it is of that type.
pub fn external_name(service: &k8s_openapi::api::core::v1::Service) -> Option<ExternalName> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() != Some("ExternalName") {
        return None;
    }
    Some(ExternalName {
        host: spec.external_name.clone()?,
        ports: spec
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.port))
            .collect(),
    })
}

/// The file's configuration with our Ingresses merged in, and what was left out and why
/// (for the operator's log). `secret(namespace, name)` reads a TLS Secret, `auth_secret`
/// the data of any Secret, `external` a Service of type ExternalName: `None` when there is
/// no such object.
pub fn merge(
    file: &Config,
    translation: &Translation,
    l4: &[L4Mapping],
    secret: &dyn Fn(&str, &str) -> Option<SecretPem>,
    auth_secret: &dyn Fn(&str, &str) -> Option<SecretData>,
    external: &dyn Fn(&str, &str) -> Option<ExternalName>,
    defaults: &IngressDefaults,
) -> (Config, Vec<String>) {
    let mut config = file.clone();
    let mut problems = translation.problems.clone();
    let mut taken: HashMap<(HostPattern, PathMatch, String), String> = HashMap::new();
    for route in &file.routes {
        for rule in &route.paths {
            let key = path_key(&route.host, rule.kind, &rule.path);
            taken.insert(key, "the configuration file".to_owned());
        }
    }
    let tls_hosts: HashSet<&str> = translation
        .tls
        .iter()
        .flat_map(|t| t.hosts.iter().map(String::as_str))
        .collect();
    let mut services = Services {
        external,
        ids: HashMap::new(),
        file_names: file.services.iter().map(|s| s.name.clone()).collect(),
    };
    // The oldest Ingress's defaultBackend first: the error pages of the Ingresses placed
    // below are answered by it when they name no default-backend of their own.
    if config.default_service.is_none() {
        if let Some((backend, source)) = &translation.default_backend {
            match service_for(&mut config, &mut services, backend, &Balancing::default()) {
                Some(id) => config.default_service = Some(id),
                None => problems.push(format!(
                    "Ingress {source}: defaultBackend port {:?} is not a valid port; ignored",
                    backend.port
                )),
            }
        }
    }
    let mut routes: HashMap<(String, HostPattern), usize> = HashMap::new();
    // As ingress-nginx: once any Ingress of a host uses regex paths (use-regex or
    // rewrite-target), every prefix path of that host is a case-insensitive regex too,
    // and the longest is tried first, so a regex path is never shadowed by a `/` prefix.
    let regex_hosts: HashSet<Option<&str>> = translation
        .paths
        .iter()
        .filter(|p| p.kind == PathKind::Regex)
        .map(|p| p.host.as_deref())
        .collect();
    // Where each Ingress path landed, so a canary can join the main path it shadows.
    let mut rule_at: HashMap<(HostPattern, PathMatch, String), (usize, usize)> = HashMap::new();
    let mut canaries = Vec::new();
    for p in &translation.paths {
        let host = match &p.host {
            Some(h) => match HostPattern::parse(h) {
                Ok(host) => host,
                Err(e) => {
                    problems.push(format!("Ingress {}: {e}; rule skipped", p.source));
                    continue;
                }
            },
            None => HostPattern::Any,
        };
        let (kind, path) = match p.kind {
            PathKind::Exact => (PathMatch::Exact, p.path.clone()),
            PathKind::Prefix if regex_hosts.contains(&p.host.as_deref()) => {
                (PathMatch::Regex, format!("(?i){}", regex::escape(&p.path)))
            }
            PathKind::Prefix => (PathMatch::Prefix, p.path.clone()),
            // ingress-nginx's regex locations are case-insensitive (`~*`).
            PathKind::Regex => (PathMatch::Regex, format!("(?i){}", p.path)),
        };
        if kind == PathMatch::Regex {
            if let Err(e) = check_regex(&path) {
                problems.push(format!(
                    "Ingress {}: path `{}` is not a valid regular expression ({e}); path skipped",
                    p.source, p.path
                ));
                continue;
            }
        }
        let key = path_key(&host, kind, &path);
        if p.policy.canary.is_some() {
            // Joined to its main path once every main path is placed.
            canaries.push((p, key));
            continue;
        }
        if let Some(winner) = taken.get(&key) {
            problems.push(format!(
                "Ingress {}: {host}{} is already routed by {winner}; this path is ignored",
                p.source, p.path
            ));
            continue;
        }
        let protocol = match (&p.policy.backend_tls, p.policy.h2) {
            (None, false) => Ok(UpstreamProtocol::Http1),
            (None, true) => Ok(UpstreamProtocol::H2c),
            (Some(spec), h2) => {
                backend_tls::protocol(spec, &p.backend, auth_secret).map(|protocol| {
                    match (protocol, h2) {
                        (UpstreamProtocol::Https(tls), true) => UpstreamProtocol::H2(tls),
                        (protocol, _) => protocol,
                    }
                })
            }
        };
        let (protocol, tls_broken) = match protocol {
            Ok(protocol) => (protocol, None),
            Err(why) => {
                let why = format!(
                    "Ingress {}: {why}; its paths answer 503 until it is fixed",
                    p.source
                );
                problems.push(why.clone());
                (UpstreamProtocol::Http1, Some(why))
            }
        };
        let Some(service) = service_over(
            &mut config,
            &mut services,
            &p.backend,
            &p.policy.balancing,
            &protocol,
        ) else {
            problems.push(format!(
                "Ingress {}: backend port {:?} of Service {}/{} is not a valid port; path skipped",
                p.source, p.backend.port, p.backend.namespace, p.backend.name
            ));
            continue;
        };
        taken.insert(key.clone(), format!("the older Ingress {}", p.source));
        let index = *routes
            .entry((p.source.clone(), host.clone()))
            .or_insert_with(|| {
                let mut route = route_for(p, host, &tls_hosts, defaults);
                if let Some(auth) = &p.policy.basic_auth {
                    basic_auth::attach(&mut route, auth, auth_secret, &p.source, &mut problems);
                }
                if let Some(spec) = &p.policy.client_certs {
                    client_certs::attach(&mut route, spec, auth_secret, &p.source, &mut problems);
                }
                config.routes.push(route);
                let index = config.routes.len() - 1;
                if let Some(spec) = &p.policy.external_auth {
                    external_auth::attach(
                        &mut config,
                        &mut services,
                        index,
                        spec,
                        &p.source,
                        &mut problems,
                    );
                }
                if let Some(spec) = error_pages::spec(p, defaults, &config, &mut problems) {
                    error_pages::attach(&mut config, &mut services, index, p, &spec, &mut problems);
                }
                index
            });
        if let Some(why) = tls_broken {
            config.routes[index].unavailable.get_or_insert(why);
        }
        config.routes[index].paths.push(PathRule {
            path,
            kind,
            service,
            rewrite: p.policy.rewrite.clone(),
            canary: None,
        });
        rule_at.insert(key, (index, config.routes[index].paths.len() - 1));
    }
    for (p, key) in canaries {
        join_canary(&mut config, &mut services, &rule_at, p, &key, &mut problems);
    }
    apply_server_snippets(&mut config, translation, &routes, &mut problems);
    client_certs::report_overruled(&config, &mut problems);
    add_www_twins(&mut config, translation, &routes, &tls_hosts, defaults);
    add_l4(&mut config, &mut services, l4, &mut problems);
    let mut claimed: HashMap<&str, String> = HashMap::new();
    for tls in &translation.tls {
        let name = format!("Secret {}/{}", tls.namespace, tls.secret);
        let (cert, key) = match secret(&tls.namespace, &tls.secret) {
            Some(Ok(pem)) => pem,
            Some(Err(why)) => {
                problems.push(format!("Ingress {}: {name} {why}; its hosts ({}) get the default certificate, and no redirect to HTTPS, until it is fixed", tls.source, tls.hosts.join(", ")));
                continue;
            }
            None => {
                problems.push(format!("Ingress {}: {name} does not exist (or is not of type kubernetes.io/tls); its hosts ({}) get the default certificate, and no redirect to HTTPS, until it is created", tls.source, tls.hosts.join(", ")));
                continue;
            }
        };
        let mut hosts = Vec::new();
        for host in &tls.hosts {
            match claimed.get(host.as_str()) {
                Some(first) if *first != name => problems.push(format!(
                    "Ingress {}: {host} already gets its certificate from {first} (an older Ingress); {name} is not used for it",
                    tls.source
                )),
                Some(_) => {}
                None => match HostPattern::parse(host) {
                    Ok(HostPattern::Any) | Err(_) => problems.push(format!(
                        "Ingress {}: tls host `{host}` is not a DNS name; ignored",
                        tls.source
                    )),
                    Ok(pattern) => {
                        claimed.insert(host, name.clone());
                        hosts.push(pattern);
                    }
                },
            }
        }
        if hosts.is_empty() {
            continue;
        }
        config.tls.push(TlsEntry {
            source: TlsSource::Inline {
                name: name.clone(),
                cert,
                key,
            },
            hosts: Some(hosts),
            default: false,
            strict: false,
            location: Location::ingress(&tls.source),
        });
    }
    (config, problems)
}

/// The ConfigMaps' ports, on the address of the HTTP (else HTTPS) listener (the proxy IP
/// the platform exposes), else on every address. The file's listeners win a port.
fn add_l4(
    config: &mut Config,
    services: &mut Services<'_>,
    l4: &[L4Mapping],
    problems: &mut Vec<String>,
) {
    let ip = config
        .listen
        .http
        .or(config.listen.https)
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    for m in l4 {
        let listen = SocketAddr::new(ip, m.port);
        let http_ports = [config.listen.http, config.listen.https, config.listen.admin];
        let taken = config
            .l4
            .iter()
            .any(|e| e.protocol == m.protocol && e.listen.port() == m.port)
            || (m.protocol == L4Protocol::Tcp
                && http_ports.iter().flatten().any(|a| a.port() == m.port));
        if taken {
            problems.push(format!(
                "{}: {}/{} is already a listener of the configuration file; entry ignored",
                m.source, m.protocol, m.port
            ));
            continue;
        }
        let Some(service) = service_for(config, services, &m.backend, &Balancing::default()) else {
            problems.push(format!(
                "{}: port {}: {:?} is not a valid Service port; entry ignored",
                m.source, m.port, m.backend.port
            ));
            continue;
        };
        config.l4.push(L4Listener {
            listen,
            protocol: m.protocol,
            service,
            allow: CidrSet::default(),
            proxy_protocol: m.decode_proxy,
            proxy_protocol_upstream: m.encode_proxy,
            max: DEFAULT_L4_MAX,
            idle: match m.protocol {
                L4Protocol::Tcp => DEFAULT_TCP_IDLE,
                L4Protocol::Udp => DEFAULT_UDP_IDLE,
            },
            location: Location {
                file: m.source.clone(),
                line: 0,
                column: 0,
            },
        });
    }
}

/// What makes two path rules of a host the same rule, as the routing table sees it.
fn path_key(host: &HostPattern, kind: PathMatch, path: &str) -> (HostPattern, PathMatch, String) {
    let path = match kind {
        PathMatch::Prefix => path.trim_end_matches('/'),
        PathMatch::Exact | PathMatch::Regex => path,
    };
    (host.clone(), kind, path.to_owned())
}

/// The service of a backend, added to the configuration on first use. Named
/// `namespace/name:port`, the way operators name Service ports.
/// The services added for backends so far, and the names the file took.
struct Services<'a> {
    /// Services of type ExternalName, reached by their name through DNS.
    external: &'a dyn Fn(&str, &str) -> Option<ExternalName>,
    ids: HashMap<(String, String, ServicePort, Balancing, UpstreamProtocol), ServiceId>,
    file_names: HashSet<String>,
}

fn service_for(
    config: &mut Config,
    services: &mut Services<'_>,
    backend: &Backend,
    balancing: &Balancing,
) -> Option<ServiceId> {
    service_over(
        config,
        services,
        backend,
        balancing,
        &UpstreamProtocol::Http1,
    )
}

/// [`service_for`], reached over `protocol`: a Service reached over TLS by one Ingress
/// and in the clear by another gets an upstream each.
fn service_over(
    config: &mut Config,
    services: &mut Services<'_>,
    backend: &Backend,
    balancing: &Balancing,
    protocol: &UpstreamProtocol,
) -> Option<ServiceId> {
    let port = match &backend.port {
        PortRef::Name(n) => ServicePort::Name(n.clone()),
        PortRef::Number(n) => ServicePort::Number(u16::try_from(*n).ok().filter(|n| *n > 0)?),
        PortRef::First => ServicePort::First,
    };
    let key = (
        backend.namespace.clone(),
        backend.name.clone(),
        port,
        balancing.clone(),
        protocol.clone(),
    );
    if let Some(id) = services.ids.get(&key) {
        return Some(*id);
    }
    let port_text = match &key.2 {
        ServicePort::Name(n) => n.clone(),
        ServicePort::Number(n) => n.to_string(),
        ServicePort::First => "first".to_owned(),
    };
    let mut name = format!("{}/{}:{port_text}", key.0, key.1);
    // Ingresses that balance one Service differently get an upstream each.
    if let Some(label) = balancing.label() {
        name.push_str(&format!(" ({label})"));
    }
    match protocol {
        UpstreamProtocol::Http1 => {}
        UpstreamProtocol::Https(_) => name.push_str(" (https)"),
        UpstreamProtocol::H2c => name.push_str(" (h2c)"),
        UpstreamProtocol::H2(_) => name.push_str(" (h2)"),
    }
    if services.file_names.contains(&name) {
        // The file uses the same name for its own service; keep both apart.
        name.push_str(" (ingress)");
    }
    let id = ServiceId(config.services.len());
    // An ExternalName Service is its name, resolved through DNS, at the Ingress's port
    // (a port name is looked up among the Service's ports).
    let (names, kubernetes) = match (services.external)(&key.0, &key.1) {
        Some(external) => {
            let port = match &key.2 {
                ServicePort::Number(n) => Some(*n),
                ServicePort::Name(wanted) => external
                    .ports
                    .iter()
                    .find(|(name, _)| name.as_deref() == Some(wanted.as_str()))
                    .and_then(|(_, n)| u16::try_from(*n).ok()),
                ServicePort::First => external
                    .ports
                    .first()
                    .and_then(|(_, n)| u16::try_from(*n).ok()),
            };
            let named = port.map(|port| NamedEndpoint {
                host: external.host.trim_end_matches('.').to_ascii_lowercase(),
                port,
            });
            (named.into_iter().collect(), None)
        }
        None => (
            Vec::new(),
            Some(KubernetesRef {
                namespace: key.0.clone(),
                name: key.1.clone(),
                port: key.2.clone(),
            }),
        ),
    };
    config.services.push(Service {
        name,
        endpoints: Vec::new(),
        names,
        kubernetes,
        balance: balancing.balance.clone(),
        affinity: balancing.affinity.clone(),
        limits: ConnectionLimits::default(),
        protocol: protocol.clone(),
        health: None,
    });
    services.ids.insert(key, id);
    Some(id)
}

/// Makes the canary Ingress path `p` the canary of the main path at `key`. As in
/// ingress-nginx, a canary without a main Ingress has no effect, and a path has one canary.
fn join_canary(
    config: &mut Config,
    services: &mut Services<'_>,
    rule_at: &HashMap<(HostPattern, PathMatch, String), (usize, usize)>,
    p: &IngressPath,
    key: &(HostPattern, PathMatch, String),
    problems: &mut Vec<String>,
) {
    let (Some(spec), None) = (&p.policy.canary, &p.broken) else {
        return;
    };
    let Some(&(route, rule)) = rule_at.get(key) else {
        problems.push(format!(
            "Ingress {}: canary for {}{} has no main Ingress serving that host and path; it has no effect until one does",
            p.source, key.0, p.path
        ));
        return;
    };
    if config.routes[route].paths[rule].canary.is_some() {
        problems.push(format!(
            "Ingress {}: {}{} has a canary already; this one is ignored",
            p.source, key.0, p.path
        ));
        return;
    }
    let main = config.routes[route].paths[rule].service;
    if config.services[main.0].affinity.is_some() {
        problems.push(format!(
            "Ingress {}: the main Ingress of {}{} keeps sessions by cookie; ingress-nginx would also keep a session on the side (main or canary) it first reached, Gatehouse decides main or canary per request",
            p.source, key.0, p.path
        ));
    }
    let Some(service) = service_for(config, services, &p.backend, &p.policy.balancing) else {
        problems.push(format!(
            "Ingress {}: backend port {:?} of Service {}/{} is not a valid port; canary skipped",
            p.source, p.backend.port, p.backend.namespace, p.backend.name
        ));
        return;
    };
    config.routes[route].paths[rule].canary = Some(Canary {
        service,
        header: spec.header.clone().map(|name| CanaryHeader {
            name,
            value: spec.header_value.clone(),
            pattern: spec.header_pattern.clone(),
        }),
        cookie: spec.cookie.clone(),
        weight: spec.weight,
        weight_total: spec.weight_total,
    });
}

/// Each host's `server-snippet` (the oldest Ingress's, as ingress-nginx keeps one per
/// server) goes to every Ingress route of the host, with nginx's inheritance: its
/// `add_header`s reach only routes without `add_header`s of their own, its
/// `more_*_headers` reach all of them first, and its `proxy_set_header`s reach none, since
/// every ingress-nginx location sets proxy headers of its own.
fn apply_server_snippets(
    config: &mut Config,
    translation: &Translation,
    routes: &HashMap<(String, HostPattern), usize>,
    problems: &mut Vec<String>,
) {
    let mut chosen: HashMap<&Option<String>, &IngressPath> = HashMap::new();
    for p in &translation.paths {
        let (Some(snippet), None) = (&p.policy.server_snippet, &p.broken) else {
            continue;
        };
        match chosen.get(&p.host) {
            Some(first) if first.source != p.source => problems.push(format!(
                "Ingress {}: server-snippet ignored: host {} takes the server-snippet of the older Ingress {}, as ingress-nginx keeps one per host",
                p.source,
                p.host.as_deref().unwrap_or("*"),
                first.source
            )),
            Some(_) => {}
            None => {
                if !snippet.request.is_empty() {
                    problems.push(format!(
                        "Ingress {}: proxy_set_header in server-snippet has no effect, as in ingress-nginx, whose locations set proxy headers of their own; put it in configuration-snippet",
                        p.source
                    ));
                }
                chosen.insert(&p.host, p);
            }
        }
    }
    for ((_, host), index) in routes {
        let host_text = match host {
            HostPattern::Any => None,
            h => Some(h.to_string()),
        };
        let Some(p) = chosen.get(&host_text) else {
            continue;
        };
        let Some(snippet) = &p.policy.server_snippet else {
            continue;
        };
        let route = &mut config.routes[*index];
        let own_adds = route
            .header_ops
            .iter()
            .any(|op| matches!(op, HeaderOp::Add { .. }));
        let inherited = snippet
            .response
            .iter()
            .filter(|op| !(own_adds && matches!(op, HeaderOp::Add { .. })))
            .cloned();
        route.header_ops = inherited.chain(route.header_ops.drain(..)).collect();
    }
}

/// `from-to-www-redirect`: the other name of the host (`www.` added or removed) answers
/// every request with a 308 to the same path on the host, unless something routes that
/// name already (as ingress-nginx does).
fn add_www_twins(
    config: &mut Config,
    translation: &Translation,
    routes: &HashMap<(String, HostPattern), usize>,
    tls_hosts: &HashSet<&str>,
    defaults: &IngressDefaults,
) {
    for p in &translation.paths {
        let (true, None, Some(host)) = (p.policy.from_to_www, &p.broken, &p.host) else {
            continue;
        };
        let (Some(twin), Ok(main)) = (www_twin(host), HostPattern::parse(host)) else {
            continue;
        };
        let Ok(twin_host) = HostPattern::parse(&twin) else {
            continue;
        };
        if config.routes.iter().any(|r| r.host == twin_host) {
            continue;
        }
        let Some(service) = routes
            .get(&(p.source.clone(), main))
            .and_then(|i| config.routes[*i].paths.first())
            .map(|rule| rule.service)
        else {
            continue;
        };
        let Ok(redirect) = Redirect::new(&format!("$scheme://{host}$request_uri"), 308) else {
            continue;
        };
        let mut route = route_for(p, twin_host, tls_hosts, defaults);
        route.redirect = Some(redirect);
        route.app_root = None;
        route.paths.push(PathRule {
            path: "/".to_owned(),
            kind: PathMatch::Prefix,
            service,
            rewrite: None,
            canary: None,
        });
        config.routes.push(route);
    }
}

/// The route of one Ingress for one host, with that Ingress's policy over the ConfigMap's
/// defaults.
fn route_for(
    p: &IngressPath,
    host: HostPattern,
    tls_hosts: &HashSet<&str>,
    defaults: &IngressDefaults,
) -> Route {
    let has_tls = p.host.as_deref().is_some_and(|h| tls_hosts.contains(h));
    let or_default = |own: &CidrSet, default: &CidrSet| match own.is_empty() {
        true => default.clone(),
        false => own.clone(),
    };
    // block-cidrs holds whatever the Ingress allows (stricter than nginx, where a location's
    // own allow/deny replaces the http-level deny).
    let deny = or_default(&p.policy.deny, &defaults.deny);
    let deny = CidrSet::new(
        deny.entries()
            .iter()
            .chain(defaults.block.entries())
            .copied(),
    );
    Route {
        // ssl-redirect defaults to true (or the ConfigMap's) where spec.tls gives the host
        // a certificate; the data plane still redirects only while that certificate is valid.
        https_redirect: p
            .policy
            .ssl_redirect
            .unwrap_or(has_tls && defaults.ssl_redirect),
        force_https_redirect: p.policy.force_ssl_redirect,
        redirect_keeps_trailing_slash: p.policy.preserve_trailing_slash,
        allow: or_default(&p.policy.allow, &defaults.allow),
        deny,
        redirect: p.policy.redirect.clone(),
        app_root: p.policy.app_root.clone(),
        // Filled in by the merge, which reads the Secret.
        basic_auth: None,
        cors: p.policy.cors.clone(),
        // Filled in by the merge, which adds the service it asks.
        external_auth: None,
        // Filled in by the merge, which reads the Secret.
        client_certs: None,
        passthrough: p.policy.passthrough,
        error_pages: None,
        max_body: p
            .policy
            .max_body
            .or(defaults.max_body)
            .unwrap_or(DEFAULT_MAX_BODY),
        response_headers: p.policy.response_headers.clone(),
        header_ops: p.policy.snippet.response.clone(),
        request_headers: p
            .policy
            .request_headers
            .iter()
            .chain(&p.policy.snippet.request)
            .cloned()
            .collect(),
        timeouts: p.policy.timeouts,
        retry: p.policy.retry,
        limits: p.policy.limits.clone(),
        unavailable: p.broken.clone(),
        host,
        paths: Vec::new(),
        location: Location::ingress(&p.source),
    }
}

mod backend_tls;
mod basic_auth;
mod client_certs;
mod error_pages;
mod external_auth;
#[cfg(test)]
mod tests;

pub use basic_auth::{secret_data, SecretData};
