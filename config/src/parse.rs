//! YAML text → validated [`Config`], reporting every error with file:line:column.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use http::{HeaderName, HeaderValue};
use saphyr::{LoadableYamlNode, MarkedYaml};

use crate::{
    cidr::{parse_cidr, CidrSet},
    decode::{Fields, Reader},
    error::{ConfigError, ConfigErrors},
    model::*,
    retry::Retry,
    routing::{check_regex, HostPattern, RoutingTable, TableError},
    template::{self, Template},
    units::{parse_duration, parse_size},
};

/// Parses and validates a configuration. `file` is how errors name the source.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            location: crate::error::Location {
                file: file.to_owned(),
                line: e.marker().line().max(1),
                column: e.marker().col() + 1,
            },
            message: format!("YAML syntax error: {}", e.info()),
        }])
    })?;
    let mut r = Reader::new(file);
    let config = match docs.as_slice() {
        [] => {
            return Err(ConfigErrors::whole_file(file, "the configuration is empty"));
        }
        [doc] => read_config(&mut r, doc),
        [_, second, ..] => {
            r.error(second.span, "only one YAML document is allowed");
            None
        }
    };
    match config {
        Some(c) if r.errors.is_empty() => Ok(c),
        _ => {
            let mut errors = r.errors;
            errors.sort_by_key(|e| (e.location.line, e.location.column));
            Err(ConfigErrors(errors))
        }
    }
}

fn read_config(r: &mut Reader<'_>, doc: &MarkedYaml<'_>) -> Option<Config> {
    let top = r.section(
        doc,
        "the configuration",
        &[
            "listen",
            "timeouts",
            "shutdown",
            "access_log",
            "workers",
            "services",
            "default_service",
            "routes",
            "trusted_proxies",
            "tls",
            "l4",
            "reject_encoded_slash",
            "client_limits",
        ],
        &[],
    )?;
    let (listen, http_given) = top
        .get("listen")
        .map(|n| read_listen(r, n))
        .unwrap_or_default();
    let trusted_proxies = top
        .get("trusted_proxies")
        .map(|n| read_cidrs(r, n, "trusted_proxies"))
        .unwrap_or_default();
    if listen.proxy_protocol && trusted_proxies.is_empty() {
        r.error(
            top.span,
            "listen.proxy_protocol is on but trusted_proxies is empty, so every connection would be refused; list the load balancers' addresses under trusted_proxies",
        );
    }
    if !http_given && top.get("l4").is_none() {
        r.error(
            top.span,
            "no listener: set `listen.http` and/or `listen.https` (for example \"0.0.0.0:80\"), or `l4` ports",
        );
    }
    let timeouts = top
        .get("timeouts")
        .map(|n| read_timeouts(r, n))
        .unwrap_or_default();
    let shutdown = top
        .get("shutdown")
        .map(|n| read_shutdown(r, n))
        .unwrap_or_default();
    let access_log = top.get("access_log").map_or(AccessLog::Stdout, |n| {
        r.parsed(n, "access_log", |s| match s {
            "stdout" => Ok(AccessLog::Stdout),
            "off" => Ok(AccessLog::Off),
            _ => Err(format!("`{s}` is not one of `stdout`, `off`")),
        })
        .unwrap_or_default()
    });
    let workers = top.get("workers").map_or(Workers::Auto, |n| {
        r.parsed(n, "workers", |s| match s {
            "auto" => Ok(Workers::Auto),
            n => match n.parse::<usize>() {
                Ok(c) if (1..=1024).contains(&c) => Ok(Workers::Count(c)),
                _ => Err(format!("`{n}` is not `auto` or a number from 1 to 1024")),
            },
        })
        .unwrap_or_default()
    });
    let services = top
        .get("services")
        .map(|n| read_services(r, n))
        .unwrap_or_default();
    let service_id = |r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str| {
        let name = r.string(node, what)?;
        match services.iter().position(|(s, _)| s.name == name) {
            Some(i) => Some(ServiceId(i)),
            None => {
                let known: Vec<&str> = services.iter().map(|(s, _)| s.name.as_str()).collect();
                r.error(
                    node.span,
                    format!(
                        "{what} names service `{name}`, which is not defined under `services` (defined: {})",
                        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                    ),
                );
                None
            }
        }
    };
    let default_service = top
        .get("default_service")
        .and_then(|n| service_id(r, n, "default_service"));
    let mut routes = Vec::new();
    let mut route_nodes = Vec::new();
    if let Some(list) = top.get("routes").and_then(|n| r.sequence(n, "routes")) {
        for node in list {
            if let Some(route) = read_route(r, node, &service_id) {
                routes.push(route);
                route_nodes.push(node);
            }
        }
    }
    // In a file, one host is one route; several routes share a host only when they come
    // from different Ingresses.
    let mut hosts = std::collections::HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        if let Some(first) = hosts.insert(&route.host, i) {
            r.error(
                route_nodes[i].span,
                format!(
                    "host `{}` is already routed at {}; merge the two routes",
                    route.host, routes[first].location
                ),
            );
        }
    }
    if let Err(errors) = RoutingTable::compile(&routes) {
        for e in errors {
            report_table_error(r, &routes, &route_nodes, e);
        }
    }
    let l4 = top
        .get("l4")
        .map(|n| read_l4(r, n, &listen, trusted_proxies.is_empty(), &service_id))
        .unwrap_or_default();
    check_l4_balancing(r, &l4, &services);
    let tls = top
        .get("tls")
        .map(|n| read_tls(r, n, file_dir(r.file())))
        .unwrap_or_default();
    let limits = top
        .get("client_limits")
        .map(|n| read_limit_settings(r, n))
        .unwrap_or_default();
    let reject_encoded_slash = top
        .get("reject_encoded_slash")
        .and_then(|n| r.boolean(n, "reject_encoded_slash"))
        .unwrap_or(false);
    if tls.iter().filter(|t| t.default).count() > 1 {
        r.error(top.span, "more than one `tls` entry says `default: true`");
    }
    Some(Config {
        listen,
        trusted_proxies,
        tls,
        timeouts,
        shutdown,
        access_log,
        workers,
        services: services.into_iter().map(|(s, _)| s).collect(),
        default_service,
        routes,
        l4,
        reject_encoded_slash,
        limits,
    })
}

fn read_l4(
    r: &mut Reader<'_>,
    node: &MarkedYaml<'_>,
    listen: &Listen,
    trusted_empty: bool,
    service_id: &dyn Fn(&mut Reader<'_>, &MarkedYaml<'_>, &str) -> Option<ServiceId>,
) -> Vec<L4Listener> {
    let Some(list) = r.sequence(node, "l4") else {
        return Vec::new();
    };
    let mut out: Vec<L4Listener> = Vec::new();
    for item in list {
        let Some(f) = r.section(
            item,
            "an l4 entry",
            &[
                "listen",
                "protocol",
                "service",
                "allow",
                "proxy_protocol",
                "proxy_protocol_upstream",
                "max_connections",
                "max_sessions",
                "idle",
            ],
            &[],
        ) else {
            continue;
        };
        let location = r.location(item.span);
        let addr = match f.get("listen") {
            Some(n) => r.parsed(n, "l4 listen", parse_socket_addr),
            None => {
                r.error(item.span, "an l4 entry needs `listen` (IP:port)");
                None
            }
        };
        let what = addr.map_or_else(|| "l4 entry".to_owned(), |a| format!("l4 {a}"));
        let protocol = f.get("protocol").map_or(Some(L4Protocol::Tcp), |n| {
            r.parsed(n, &format!("{what} protocol"), |s| match s {
                "tcp" => Ok(L4Protocol::Tcp),
                "udp" => Ok(L4Protocol::Udp),
                _ => Err(format!("`{s}` is not one of `tcp`, `udp`")),
            })
        });
        let service = match f.get("service") {
            Some(n) => service_id(r, n, &format!("{what} service")),
            None => {
                r.error(item.span, format!("{what} needs a `service`"));
                None
            }
        };
        let allow = f
            .get("allow")
            .map(|n| read_cidrs(r, n, &format!("{what} allow")))
            .unwrap_or_default();
        let flag = |r: &mut Reader<'_>, key: &str| {
            f.get(key)
                .and_then(|n| r.boolean(n, &format!("{what} {key}")))
                .unwrap_or(false)
        };
        let proxy_protocol = flag(r, "proxy_protocol");
        let proxy_protocol_upstream = flag(r, "proxy_protocol_upstream");
        // The limit's name says what it counts, so it must match the protocol.
        let (limit_key, wrong_key) = match protocol {
            Some(L4Protocol::Udp) => ("max_sessions", "max_connections"),
            _ => ("max_connections", "max_sessions"),
        };
        if let Some(n) = f.get(wrong_key) {
            r.error(
                n.span,
                format!("{what}: `{wrong_key}` does not apply to this protocol; use `{limit_key}`"),
            );
        }
        let max = f.get(limit_key).map_or(Some(DEFAULT_L4_MAX), |n| {
            r.parsed(n, &format!("{what} {limit_key}"), |s| {
                match s.parse::<usize>() {
                    Ok(m) if m > 0 => Ok(m),
                    _ => Err(format!("`{s}` is not a positive number")),
                }
            })
        });
        let idle = match f.get("idle") {
            Some(n) => r.parsed(n, &format!("{what} idle"), positive_duration),
            None => Some(match protocol {
                Some(L4Protocol::Udp) => DEFAULT_UDP_IDLE,
                _ => DEFAULT_TCP_IDLE,
            }),
        };
        if (proxy_protocol || proxy_protocol_upstream) && protocol == Some(L4Protocol::Udp) {
            r.error(
                item.span,
                format!("{what}: proxy_protocol and proxy_protocol_upstream are for TCP; UDP datagrams pass as sent"),
            );
        }
        if proxy_protocol && trusted_empty {
            r.error(
                item.span,
                format!("{what}: proxy_protocol is on but trusted_proxies is empty, so every connection would be refused; list the load balancers' addresses under trusted_proxies"),
            );
        }
        let (Some(addr), Some(protocol), Some(service), Some(max), Some(idle)) =
            (addr, protocol, service, max, idle)
        else {
            continue;
        };
        let taken_by_http = protocol == L4Protocol::Tcp
            && addr.port() != 0
            && [listen.http, listen.https, listen.admin].contains(&Some(addr));
        let duplicate = addr.port() != 0
            && out
                .iter()
                .any(|o| o.listen == addr && o.protocol == protocol);
        if taken_by_http || duplicate {
            r.error(
                item.span,
                format!("{protocol}/{addr} is already a listener of this configuration"),
            );
            continue;
        }
        out.push(L4Listener {
            listen: addr,
            protocol,
            service,
            allow,
            proxy_protocol,
            proxy_protocol_upstream,
            max,
            idle,
            location,
        });
    }
    out
}

/// The listeners, and whether `http` was written at all (a bad address is its own error).
fn read_listen(r: &mut Reader<'_>, node: &MarkedYaml<'_>) -> (Listen, bool) {
    let Some(f) = r.section(
        node,
        "listen",
        &["http", "https", "admin", "proxy_protocol"],
        &[],
    ) else {
        return (Listen::default(), true);
    };
    let addr = |r: &mut Reader<'_>, key: &str| {
        f.get(key)
            .and_then(|n| r.parsed(n, &format!("listen.{key}"), parse_socket_addr))
    };
    let listen = Listen {
        http: addr(r, "http"),
        https: addr(r, "https"),
        admin: addr(r, "admin"),
        proxy_protocol: f
            .get("proxy_protocol")
            .and_then(|n| r.boolean(n, "listen.proxy_protocol"))
            .unwrap_or(false),
    };
    let named = [
        ("http", listen.http),
        ("https", listen.https),
        ("admin", listen.admin),
    ];
    for (i, (a_name, a)) in named.iter().enumerate() {
        for (b_name, b) in &named[i + 1..] {
            if let (Some(a), Some(b)) = (a, b) {
                if a == b && a.port() != 0 {
                    r.error(
                        f.span,
                        format!("listen.{a_name} and listen.{b_name} are both {a}"),
                    );
                }
            }
        }
    }
    let http_given = f.get("http").is_some() || f.get("https").is_some();
    (listen, http_given)
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("`{s}` is not an address; write IP:port, e.g. \"0.0.0.0:80\" or \"[::]:80\"")
    })
}

fn read_timeouts(r: &mut Reader<'_>, node: &MarkedYaml<'_>) -> Timeouts {
    let mut t = Timeouts::default();
    let Some(f) = r.section(
        node,
        "timeouts",
        &[
            "connect",
            "request_header",
            "upstream_response",
            "upstream_read",
            "upstream_send",
            "client_body",
            "client_write",
            "tunnel_idle",
            "idle",
        ],
        &[],
    ) else {
        return t;
    };
    for (key, slot) in [
        ("connect", &mut t.connect),
        ("request_header", &mut t.request_header),
        ("upstream_response", &mut t.upstream_response),
        ("upstream_read", &mut t.upstream_read),
        ("upstream_send", &mut t.upstream_send),
        ("client_body", &mut t.client_body),
        ("client_write", &mut t.client_write),
        ("tunnel_idle", &mut t.tunnel_idle),
        ("idle", &mut t.idle),
    ] {
        if let Some(n) = f.get(key) {
            if let Some(d) = r.parsed(n, &format!("timeouts.{key}"), positive_duration) {
                *slot = d;
            }
        }
    }
    t
}

fn positive_duration(s: &str) -> Result<std::time::Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be longer than zero".to_owned()),
        d => Ok(d),
    }
}

fn read_shutdown(r: &mut Reader<'_>, node: &MarkedYaml<'_>) -> Shutdown {
    let mut s = Shutdown::default();
    let Some(f) = r.section(node, "shutdown", &["drain_delay", "grace_period"], &[]) else {
        return s;
    };
    for (key, slot) in [
        ("drain_delay", &mut s.drain_delay),
        ("grace_period", &mut s.grace_period),
    ] {
        if let Some(n) = f.get(key) {
            if let Some(d) = r.parsed(n, &format!("shutdown.{key}"), parse_duration) {
                *slot = d;
            }
        }
    }
    s
}

fn read_services<'n, 'i>(
    r: &mut Reader<'_>,
    node: &'n MarkedYaml<'i>,
) -> Vec<(Service, &'n MarkedYaml<'i>)> {
    let Some(map) = r.map(node, "services") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, body) in map.entries() {
        let what = format!("service `{name}`");
        let Some(f) = r.section(
            body,
            &what,
            &[
                "endpoints",
                "kubernetes",
                "balance",
                "hash_key",
                "affinity",
                "protocol",
                "max_connections",
                "max_pending",
            ],
            &[],
        ) else {
            continue;
        };
        let mut limits = ConnectionLimits::default();
        for (key, slot) in [
            ("max_connections", &mut limits.max_connections),
            ("max_pending", &mut limits.max_pending),
        ] {
            if let Some(n) = f.get(key) {
                let parsed = r.parsed(n, &format!("{what} {key}"), |s| match s.parse::<usize>() {
                    Ok(m) if m > 0 => Ok(m),
                    _ => Err(format!("`{s}` is not a positive number")),
                });
                *slot = parsed.unwrap_or(*slot);
            }
        }
        let endpoints = read_endpoints(r, &f, &what);
        let kubernetes = f
            .get("kubernetes")
            .and_then(|n| read_kubernetes_ref(r, n, &what));
        let balance = read_balance(r, &f, &what);
        let affinity = f
            .get("affinity")
            .and_then(|n| read_affinity(r, n, &format!("{what} affinity")));
        if let Some(n) = f.get("protocol") {
            r.parsed(n, &format!("{what} protocol"), |s| match s {
                "http1" => Ok(()),
                "h2" | "https" => Err(format!(
                    "`{s}` upstreams are not supported yet; only `http1` is"
                )),
                s => Err(format!("`{s}` is not one of `http1`, `h2`, `https`")),
            });
        }
        out.push((
            Service {
                name: (*name).to_owned(),
                endpoints,
                kubernetes,
                balance,
                affinity,
                limits,
            },
            *body,
        ));
    }
    out
}

fn read_balance(r: &mut Reader<'_>, f: &Fields<'_, '_>, what: &str) -> Balance {
    let hash_key = f.get("hash_key").and_then(|n| {
        r.parsed(n, &format!("{what} hash_key"), Template::parse)
            .map(|t| (t, n))
    });
    let balance = f.get("balance").map_or(Balance::RoundRobin, |n| {
        r.parsed(n, &format!("{what} balance"), |s| match s {
            "round_robin" => Ok(Balance::RoundRobin),
            "least_request" => Ok(Balance::LeastRequest),
            "ewma" => Ok(Balance::Ewma),
            "hash" => match &hash_key {
                Some((key, _)) => Ok(Balance::Hash(key.clone())),
                None => Err(format!(
                    "`hash` needs `hash_key`, the request value to hash (e.g. `$remote_addr`; variables: {})",
                    template::KNOWN_VARIABLES
                )),
            },
            s if s.starts_with("hash(") && s.ends_with(')') => {
                spec_hash_key(&s[5..s.len() - 1]).map(Balance::Hash)
            }
            s => Err(format!(
                "`{s}` is not one of `round_robin`, `least_request`, `ewma`, `hash`"
            )),
        })
        .unwrap_or_default()
    });
    if let (Some((_, node)), false) = (&hash_key, matches!(balance, Balance::Hash(_))) {
        // A key that hashes nothing would look like hashing and not be.
        r.error(
            node.span,
            format!(
                "{what} hash_key is only used with `balance: hash`; add that or remove the key"
            ),
        );
    }
    balance
}

/// An L4 listener's service balances on what L4 knows: no cookie to keep a session by,
/// and of the hash variables only the client address. Anything else would look like
/// stickiness and send every client to one endpoint.
fn check_l4_balancing(
    r: &mut Reader<'_>,
    l4: &[L4Listener],
    services: &[(Service, &MarkedYaml<'_>)],
) {
    use crate::template::{Part, Variable};
    for listener in l4 {
        let (service, node) = &services[listener.service.0];
        let what = format!(
            "service `{}` (used by l4 listener {})",
            service.name,
            listener.label()
        );
        if service.affinity.is_some() {
            r.error(node.span, format!("{what}: affinity keeps sessions by an HTTP cookie, which L4 traffic has none of; use `balance: hash` with `hash_key: $remote_addr`, or a separate service"));
        }
        if let Balance::Hash(key) = &service.balance {
            let other = key
                .parts()
                .iter()
                .any(|p| matches!(p, Part::Variable(v) if *v != Variable::RemoteAddr));
            if other {
                r.error(node.span, format!("{what}: hash_key `{key}` uses request variables L4 traffic has none of; only `$remote_addr` is known there"));
            }
        }
    }
}

/// SPEC.md's short forms: `hash(client_ip)`, `hash(header:X-User)`, `hash(cookie:sid)`.
fn spec_hash_key(inner: &str) -> Result<Template, String> {
    let variable = match inner.split_once(':') {
        None if inner == "client_ip" => "$remote_addr".to_owned(),
        Some(("header", name)) if !name.is_empty() => {
            format!("${{http_{}}}", name.to_ascii_lowercase().replace('-', "_"))
        }
        Some(("cookie", name)) if !name.is_empty() => format!("${{cookie_{name}}}"),
        _ => {
            return Err(format!(
                "`hash({inner})` is not one of `hash(client_ip)`, `hash(header:NAME)`, `hash(cookie:NAME)`; or write `balance: hash` with a `hash_key`"
            ))
        }
    };
    Template::parse(&variable)
}

fn read_affinity(r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str) -> Option<Affinity> {
    let f = r.section(
        node,
        what,
        &[
            "cookie",
            "path",
            "domain",
            "max_age",
            "expires",
            "samesite",
            "secure",
            "change_on_failure",
            "mode",
            "key",
        ],
        &[],
    )?;
    let mut a = Affinity::new();
    let text = |r: &mut Reader<'_>, key: &str| {
        f.get(key)
            .and_then(|n| r.string(n, &format!("{what} {key}")))
    };
    if let Some(cookie) = text(r, "cookie") {
        match http::HeaderValue::from_str(&cookie) {
            Ok(_) if !cookie.is_empty() && !cookie.contains(['=', ';', ',', ' ']) => {
                a.cookie = cookie
            }
            _ => r.error(
                f.get("cookie").map_or(f.span, |n| n.span),
                format!("{what} cookie: `{cookie}` is not a cookie name"),
            ),
        }
    }
    a.path = text(r, "path");
    a.domain = text(r, "domain");
    a.key = text(r, "key");
    for (key, slot) in [("max_age", &mut a.max_age), ("expires", &mut a.expires)] {
        if let Some(n) = f.get(key) {
            *slot = r
                .parsed(n, &format!("{what} {key}"), parse_duration)
                .map(|d| d.as_secs());
        }
    }
    if let Some(n) = f.get("samesite") {
        a.samesite = r.parsed(n, &format!("{what} samesite"), SameSite::parse);
    }
    if let Some(n) = f.get("secure") {
        a.secure = r.boolean(n, &format!("{what} secure"));
    }
    if let Some(n) = f.get("change_on_failure") {
        a.change_on_failure = r
            .boolean(n, &format!("{what} change_on_failure"))
            .unwrap_or_default();
    }
    if let Some(n) = f.get("mode") {
        a.mode = r
            .parsed(n, &format!("{what} mode"), |s| match s {
                "balanced" => Ok(AffinityMode::Balanced),
                "persistent" => Ok(AffinityMode::Persistent),
                s => Err(format!("`{s}` is not one of `balanced`, `persistent`")),
            })
            .unwrap_or_default();
    }
    Some(a)
}

fn read_kubernetes_ref(
    r: &mut Reader<'_>,
    node: &MarkedYaml<'_>,
    what: &str,
) -> Option<KubernetesRef> {
    let what = format!("{what} kubernetes");
    let f = r.section(node, &what, &["namespace", "name", "port"], &[])?;
    let field = |r: &mut Reader<'_>, key: &str| match f.get(key) {
        Some(n) => r.string(n, &format!("{what} {key}")),
        None => {
            r.error(f.span, format!("{what} needs `{key}`"));
            None
        }
    };
    let namespace = field(r, "namespace");
    let name = field(r, "name");
    let port = field(r, "port").and_then(|p| match p.parse::<u16>() {
        Ok(n) => Some(ServicePort::Number(n)),
        Err(_) if !p.is_empty() => Some(ServicePort::Name(p)),
        Err(_) => {
            // Never dropped quietly: the service would run without its endpoints.
            let span = f.get("port").map_or(f.span, |n| n.span);
            r.error(
                span,
                format!("{what} port is empty; give the Service port's name or number"),
            );
            None
        }
    });
    Some(KubernetesRef {
        namespace: namespace?,
        name: name?,
        port: port?,
    })
}

fn read_endpoints(r: &mut Reader<'_>, f: &Fields<'_, '_>, what: &str) -> Vec<SocketAddr> {
    let Some(list) = f
        .get("endpoints")
        .and_then(|n| r.sequence(n, &format!("{what} endpoints")))
    else {
        return Vec::new();
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for n in list {
        let parsed = r.parsed(n, &format!("{what} endpoint"), |s| {
            s.parse::<SocketAddr>().map_err(|_| {
                format!("`{s}` is not IP:port (host names are not resolved; write the address, e.g. \"10.1.2.3:8080\")")
            })
        });
        if let Some(addr) = parsed {
            if out.contains(&addr) {
                r.error(n.span, format!("{what} lists endpoint {addr} twice"));
            } else {
                out.push(addr);
            }
        }
    }
    out
}

fn read_route(
    r: &mut Reader<'_>,
    node: &MarkedYaml<'_>,
    service_id: &dyn Fn(&mut Reader<'_>, &MarkedYaml<'_>, &str) -> Option<ServiceId>,
) -> Option<Route> {
    let f = r.section(
        node,
        "a route",
        &[
            "host",
            "allow",
            "https_redirect",
            "max_body",
            "response_headers",
            "request_headers",
            "timeouts",
            "retry",
            "limit",
            "paths",
        ],
        &[
            ("limit_rps", "write `limit: { rps: N }`"),
            ("limit_connections", "write `limit: { connections: N }`"),
        ],
    )?;
    let location = r.location(node.span);
    let Some(host_node) = f.get("host") else {
        r.error(node.span, "a route needs a `host`");
        return None;
    };
    let host = r.parsed(host_node, "route host", HostPattern::parse);
    let what = match &host {
        Some(h) => format!("route `{h}`"),
        None => "route".to_owned(),
    };
    let allow = f
        .get("allow")
        .map(|n| read_cidrs(r, n, &format!("{what} allow")))
        .unwrap_or_default();
    let https_redirect = f
        .get("https_redirect")
        .and_then(|n| r.boolean(n, &format!("{what} https_redirect")))
        .unwrap_or(false);
    let max_body = f.get("max_body").map_or(Some(DEFAULT_MAX_BODY), |n| {
        r.parsed(n, &format!("{what} max_body"), parse_size)
    });
    let mut response_headers = Vec::new();
    if let Some(n) = f.get("response_headers") {
        if let Some(map) = r.map(n, &format!("{what} response_headers")) {
            for (name, value) in map.entries() {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a valid header name"));
                let value = r.string(value, "a header value").map(|v| {
                    HeaderValue::from_str(&v)
                        .map_err(|_| format!("`{v}` is not a valid header value"))
                });
                match (name, value) {
                    (Ok(n), Some(Ok(v))) => response_headers.push((n, v)),
                    (Err(msg), _) | (_, Some(Err(msg))) => {
                        r.error(map.span, format!("{what} response_headers: {msg}"))
                    }
                    _ => {}
                }
            }
        }
    }
    let timeouts = f
        .get("timeouts")
        .map(|n| read_route_timeouts(r, n, &what))
        .unwrap_or_default();
    let retry = f
        .get("retry")
        .map(|n| read_retry(r, n, &what))
        .unwrap_or_default();
    let request_headers = f
        .get("request_headers")
        .map(|n| read_request_headers(r, n, &what))
        .unwrap_or_default();
    let limits = f.get("limit").and_then(|n| read_client_limits(r, n, &what));
    let mut paths = Vec::new();
    match f
        .get("paths")
        .and_then(|n| r.sequence(n, &format!("{what} paths")))
    {
        Some([]) | None => r.error(
            node.span,
            format!("{what} needs at least one entry under `paths`"),
        ),
        Some(list) => {
            for p in list {
                if let Some(rule) = read_path_rule(r, p, &what, service_id) {
                    paths.push(rule);
                }
            }
        }
    }
    Some(Route {
        host: host?,
        allow,
        https_redirect,
        force_https_redirect: false,
        unavailable: None,
        max_body: max_body?,
        response_headers,
        header_ops: Vec::new(),
        request_headers,
        timeouts,
        retry,
        limits,
        paths,
        location,
    })
}

/// A route's `retry`: `off`, or `{ on: "error timeout http_502", tries: 3, timeout: 10s }`.
fn read_retry(r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str) -> Retry {
    let what = format!("{what} retry");
    if let saphyr::YamlData::Value(_) = &node.data {
        return r
            .parsed(node, &what, |s| match s {
                "off" => Retry::default().with_conditions("off"),
                s => Err(format!(
                    "`{s}` is not `off` or a mapping with `on`, `tries`, `timeout`"
                )),
            })
            .unwrap_or_default();
    }
    let mut retry = Retry::default();
    let Some(f) = r.section(node, &what, &["on", "tries", "timeout"], &[]) else {
        return retry;
    };
    if let Some(n) = f.get("on") {
        if let Some(with) = r.parsed(n, &format!("{what} on"), |s| retry.with_conditions(s)) {
            retry = with;
        }
    }
    if let Some(n) = f.get("tries") {
        retry.tries = r
            .parsed(n, &format!("{what} tries"), |s| {
                s.parse::<u32>().map_err(|_| {
                    format!("`{s}` is not a whole number (0: as many as there are endpoints)")
                })
            })
            .unwrap_or(retry.tries);
    }
    if let Some(n) = f.get("timeout") {
        retry.within = r.parsed(n, &format!("{what} timeout"), positive_duration);
    }
    retry
}

/// A route's `request_headers`: `Name: value` set on the upstream's request, the value an
/// nginx-style template (`$remote_addr`, `$http_x_user`); an empty value removes the header.
fn read_request_headers(
    r: &mut Reader<'_>,
    node: &MarkedYaml<'_>,
    what: &str,
) -> Vec<(HeaderName, Template)> {
    let what = format!("{what} request_headers");
    let Some(map) = r.map(node, &what) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, value) in map.entries() {
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            r.error(
                value.span,
                format!("{what}: `{name}` is not a valid header name"),
            );
            continue;
        };
        if let Some(t) = r.parsed(value, &format!("{what} {name}"), Template::parse) {
            out.push((header, t));
        }
    }
    out
}

/// A route's `limit`: per-client rates and concurrency.
fn read_client_limits(
    r: &mut Reader<'_>,
    node: &MarkedYaml<'_>,
    what: &str,
) -> Option<ClientLimits> {
    let what = format!("{what} limit");
    let f = r.section(
        node,
        &what,
        &["rps", "rpm", "burst_multiplier", "connections", "whitelist"],
        &[],
    )?;
    let count = |r: &mut Reader<'_>, key: &str| -> Option<u32> {
        let n = f.get(key)?;
        r.parsed(n, &format!("{what} {key}"), |s| match s.parse::<u32>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(format!("`{s}` is not a positive whole number")),
        })
    };
    let limits = ClientLimits {
        rps: count(r, "rps"),
        rpm: count(r, "rpm"),
        burst_multiplier: count(r, "burst_multiplier")
            .unwrap_or(ClientLimits::DEFAULT_BURST_MULTIPLIER),
        connections: count(r, "connections"),
        whitelist: f
            .get("whitelist")
            .map(|n| read_cidrs(r, n, &format!("{what} whitelist")))
            .unwrap_or_default(),
    };
    if limits.rps.is_none() && limits.rpm.is_none() && limits.connections.is_none() {
        r.error(
            node.span,
            format!("{what} sets no limit; give `rps`, `rpm` or `connections`"),
        );
        return None;
    }
    Some(limits)
}

/// `client_limits`: how limited clients are answered, and how many are remembered.
fn read_limit_settings(r: &mut Reader<'_>, node: &MarkedYaml<'_>) -> LimitSettings {
    let mut settings = LimitSettings::default();
    let Some(f) = r.section(node, "client_limits", &["status", "max_clients"], &[]) else {
        return settings;
    };
    if let Some(n) = f.get("status") {
        if let Some(status) = r.parsed(n, "client_limits status", |s| match s {
            "429" => Ok(429),
            "503" => Ok(503),
            s => Err(format!("`{s}` is not 429 or 503")),
        }) {
            settings.status = status;
        }
    }
    if let Some(n) = f.get("max_clients") {
        if let Some(max) = r.parsed(n, "client_limits max_clients", |s| {
            match s.parse::<usize>() {
                Ok(v) if v >= 1000 => Ok(v),
                _ => Err(format!("`{s}` is not a number of at least 1000")),
            }
        }) {
            settings.max_clients = max;
        }
    }
    settings
}

/// A route's `timeouts`: the ones that concern its upstream and its tunnels.
fn read_route_timeouts(r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str) -> RouteTimeouts {
    let mut t = RouteTimeouts::default();
    let keys = [
        "connect",
        "upstream_response",
        "upstream_read",
        "upstream_send",
        "tunnel_idle",
    ];
    let Some(f) = r.section(node, &format!("{what} timeouts"), &keys, &[]) else {
        return t;
    };
    for (key, slot) in keys.into_iter().zip([
        &mut t.connect,
        &mut t.upstream_response,
        &mut t.upstream_read,
        &mut t.upstream_send,
        &mut t.tunnel_idle,
    ]) {
        if let Some(n) = f.get(key) {
            *slot = r.parsed(n, &format!("{what} timeouts.{key}"), positive_duration);
        }
    }
    t
}

/// A name a certificate serves: like a route host, but `*` (any host) means nothing here.
fn tls_host(text: &str) -> Result<HostPattern, String> {
    match HostPattern::parse(text)? {
        HostPattern::Any => Err(
            "`*` is not a certificate name; write the names, or set `default: true` to serve this certificate to any other name".to_owned(),
        ),
        host => Ok(host),
    }
}

fn file_dir(file: &str) -> PathBuf {
    Path::new(file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn read_tls(r: &mut Reader<'_>, node: &MarkedYaml<'_>, dir: PathBuf) -> Vec<TlsEntry> {
    let Some(list) = r.sequence(node, "tls") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in list {
        let Some(f) = r.section(
            item,
            "a tls entry",
            &["cert", "key", "hosts", "default"],
            &[],
        ) else {
            continue;
        };
        let path = |r: &mut Reader<'_>, key: &str| match f.get(key) {
            Some(n) => r.string(n, &format!("tls {key}")).map(|p| dir.join(p)),
            None => {
                r.error(item.span, format!("a tls entry needs `{key}` (a PEM file)"));
                None
            }
        };
        let (cert, key) = (path(r, "cert"), path(r, "key"));
        let hosts = f
            .get("hosts")
            .and_then(|n| r.sequence(n, "tls hosts"))
            .map(|items| {
                items
                    .iter()
                    .filter_map(|h| r.parsed(h, "tls host", tls_host))
                    .collect()
            });
        let default = f
            .get("default")
            .and_then(|n| r.boolean(n, "tls default"))
            .unwrap_or(false);
        if let (Some(cert), Some(key)) = (cert, key) {
            out.push(TlsEntry {
                source: TlsSource::Files { cert, key },
                hosts,
                default,
                strict: true,
                location: r.location(item.span),
            });
        }
    }
    out
}

/// A CIDR list: a comma-separated string ("10.0.0.0/8,192.0.2.7") or a YAML list. Empty
/// means "everyone"; every malformed entry is an error at its place.
fn read_cidrs(r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str) -> CidrSet {
    let mut nets = Vec::new();
    let mut one = |r: &mut Reader<'_>, text: &str, n: &MarkedYaml<'_>| {
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match parse_cidr(entry) {
                Ok(net) => nets.push(net),
                Err(msg) => r.error(n.span, format!("{what}: {msg}")),
            }
        }
    };
    match &node.data {
        saphyr::YamlData::Sequence(items) => {
            for item in items {
                if let Some(text) = r.string(item, what) {
                    one(r, &text, item);
                }
            }
        }
        _ => {
            if let Some(text) = r.string(node, what) {
                one(r, &text, node);
            }
        }
    }
    CidrSet::new(nets)
}

fn read_path_rule(
    r: &mut Reader<'_>,
    node: &MarkedYaml<'_>,
    what: &str,
    service_id: &dyn Fn(&mut Reader<'_>, &MarkedYaml<'_>, &str) -> Option<ServiceId>,
) -> Option<PathRule> {
    let f = r.section(
        node,
        &format!("a path of {what}"),
        &["path", "match", "service", "rewrite", "canary"],
        &[],
    )?;
    let kind = f.get("match").map_or(Some(PathMatch::Prefix), |n| {
        r.parsed(n, "match", |s| match s {
            "exact" => Ok(PathMatch::Exact),
            "prefix" => Ok(PathMatch::Prefix),
            "regex" => Ok(PathMatch::Regex),
            s => Err(format!("`{s}` is not one of `exact`, `prefix`, `regex`")),
        })
    });
    let path = match f.get("path") {
        Some(n) => r.parsed(n, "path", |s| match kind {
            Some(PathMatch::Regex) => check_regex(s)
                .map(|_| s.to_owned())
                .map_err(|e| format!("`{s}` is not a valid regex: {e}")),
            _ if !s.starts_with('/') => Err(format!("`{s}` must start with `/`")),
            _ => Ok(s.to_owned()),
        }),
        None => {
            r.error(node.span, format!("a path of {what} needs `path`"));
            None
        }
    };
    let service = match f.get("service") {
        Some(n) => service_id(r, n, "path"),
        None => {
            r.error(node.span, format!("a path of {what} needs `service`"));
            None
        }
    };
    let rewrite = f.get("rewrite").and_then(|n| {
        r.parsed(n, "rewrite", |s| {
            if s.starts_with('/') || s.starts_with('$') {
                Ok(s.to_owned())
            } else {
                Err(format!("`{s}` must start with `/`"))
            }
        })
    });
    let canary = match f.get("canary") {
        Some(n) => Some(read_canary(r, n, what, service_id)?),
        None => None,
    };
    Some(PathRule {
        path: path?,
        kind: kind?,
        service: service?,
        rewrite,
        canary,
    })
}

/// A path's `canary`: which requests go to another service.
fn read_canary(
    r: &mut Reader<'_>,
    node: &MarkedYaml<'_>,
    what: &str,
    service_id: &dyn Fn(&mut Reader<'_>, &MarkedYaml<'_>, &str) -> Option<ServiceId>,
) -> Option<Canary> {
    let what = format!("a canary of {what}");
    let f = r.section(
        node,
        &what,
        &[
            "service",
            "weight",
            "weight_total",
            "header",
            "header_value",
            "header_pattern",
            "cookie",
        ],
        &[],
    )?;
    let Some(service) = f.get("service").and_then(|n| service_id(r, n, "canary")) else {
        r.error(node.span, format!("{what} needs `service`"));
        return None;
    };
    let number = |r: &mut Reader<'_>, key: &str, default: u32| -> Option<u32> {
        match f.get(key) {
            None => Some(default),
            Some(n) => r.parsed(n, &format!("{what} {key}"), |s| {
                s.parse::<u32>()
                    .map_err(|_| format!("`{s}` is not a whole number"))
            }),
        }
    };
    let weight_total = number(r, "weight_total", 100)?;
    let weight = number(r, "weight", 0)?;
    if weight_total == 0 || weight > weight_total {
        r.error(
            node.span,
            format!("{what}: weight must be between 0 and weight_total ({weight_total}), which must not be 0"),
        );
        return None;
    }
    let text = |r: &mut Reader<'_>, key: &str| f.get(key).and_then(|n| r.string(n, key));
    let header = match text(r, "header") {
        Some(name) => {
            let name = r.parsed(f.get("header")?, &format!("{what} header"), |_| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a header name"))
            })?;
            let pattern = match f.get("header_pattern") {
                Some(n) => Some(r.parsed(n, &format!("{what} header_pattern"), |s| {
                    regex::Regex::new(&format!("^(?:{s})$"))
                        .map_err(|e| format!("`{s}` is not a valid regex: {e}"))
                })?),
                None => None,
            };
            Some(CanaryHeader {
                name,
                value: text(r, "header_value"),
                pattern,
            })
        }
        None => None,
    };
    Some(Canary {
        service,
        header,
        cookie: text(r, "cookie"),
        weight,
        weight_total,
    })
}

fn report_table_error(
    r: &mut Reader<'_>,
    routes: &[Route],
    nodes: &[&MarkedYaml<'_>],
    e: TableError,
) {
    match e {
        // Across routes it is the duplicate host, reported already.
        TableError::DuplicatePath { route, first, .. } if first.0 != route => {}
        TableError::DuplicatePath { route, rule, first } => {
            let p = &routes[route].paths[rule];
            let f = &routes[first.0].paths[first.1];
            r.error(
                nodes[route].span,
                format!(
                    "route `{}` lists path `{}` ({:?}) twice (the first is `{}`)",
                    routes[route].host, p.path, p.kind, f.path
                ),
            )
        }
        TableError::BadRegex { route, message, .. } => {
            r.error(nodes[route].span, format!("bad regex: {message}"))
        }
    }
}
