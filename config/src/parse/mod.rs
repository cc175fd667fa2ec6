//! YAML text → validated [`Config`], reporting every error with file:line:column.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use http::{HeaderName, HeaderValue};
use saphyr::{LoadableYamlNode, MarkedYaml};

use crate::{
    auth_cache::AuthCache,
    cidr::{parse_cidr, CidrSet},
    decode::{Fields, Reader},
    error::{ConfigError, ConfigErrors},
    model::*,
    retry::Retry,
    routing::{check_regex, HostPattern, RoutingTable, TableError},
    template::{self, Template},
    units::{parse_duration, parse_size},
};

mod routes;
mod services;

use routes::*;
use services::*;

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
            "hsts",
            "client_limits",
            "resolver",
            "upstream_keepalive",
            "tls_versions",
            "forwarded",
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
    // An https:// authentication URL needs a service that speaks TLS, and the reverse: a
    // secret sent in the clear where the operator wrote https must not happen quietly.
    for (route, node) in routes.iter().zip(&route_nodes) {
        let Some(auth) = &route.external_auth else {
            continue;
        };
        let Some((service, _)) = services.get(auth.service.0) else {
            continue;
        };
        let tls_url = auth
            .request
            .url
            .to_ascii_lowercase()
            .starts_with("https://");
        let tls_service = service.protocol.tls().is_some();
        if tls_url != tls_service {
            r.error(
                node.span,
                format!(
                    "route `{}` auth.external url `{}` is {} but service `{}` is {}; make them agree (`protocol: https` on the service for an https:// URL)",
                    route.host,
                    auth.request.url,
                    if tls_url { "https" } else { "http" },
                    service.name,
                    if tls_service { "`protocol: https`" } else { "plain http" },
                ),
            );
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
    let hsts = top.get("hsts").map(|n| read_hsts(r, n)).unwrap_or_default();
    let upstream_keepalive = top
        .get("upstream_keepalive")
        .map(|n| read_upstream_keepalive(r, n))
        .unwrap_or_default();
    let tls_versions = top
        .get("tls_versions")
        .and_then(|n| r.parsed(n, "tls_versions", parse_tls_versions))
        .unwrap_or_default();
    let forwarded = top
        .get("forwarded")
        .map(|n| read_forwarded(r, n))
        .unwrap_or_default();
    let resolver = top
        .get("resolver")
        .map(|n| read_resolver(r, n))
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
        hsts,
        limits,
        resolver,
        upstream_keepalive,
        tls_versions,
        forwarded,
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

/// `tls_versions: "1.2 1.3"` (or `"1.3"`, or `"1.2"`; commas or spaces between).
fn parse_tls_versions(text: &str) -> Result<TlsVersions, String> {
    let (mut tls12, mut tls13) = (false, false);
    for version in text.split([',', ' ']).filter(|v| !v.is_empty()) {
        match version {
            "1.2" => tls12 = true,
            "1.3" => tls13 = true,
            other => {
                return Err(format!(
                    "`{other}` is not offered: Gatehouse speaks TLS \"1.2\" and \"1.3\" only"
                ))
            }
        }
    }
    match (tls12, tls13) {
        (true, true) => Ok(TlsVersions::Tls12And13),
        (true, false) => Ok(TlsVersions::Tls12Only),
        (false, true) => Ok(TlsVersions::Tls13Only),
        (false, false) => Err("name \"1.2\", \"1.3\" or both".to_owned()),
    }
}

/// `forwarded: { client_header: X-Forwarded-For, full_chain: true }`.
fn read_forwarded(r: &mut Reader<'_>, node: &MarkedYaml<'_>) -> Forwarded {
    let mut f = Forwarded::default();
    let Some(fields) = r.section(node, "forwarded", &["client_header", "full_chain"], &[]) else {
        return f;
    };
    if let Some(header) = fields.get("client_header").and_then(|n| {
        r.parsed(n, "forwarded.client_header", |s| {
            HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("`{s}` is not a header name"))
        })
    }) {
        f.client_header = header;
    }
    if let Some(full) = fields
        .get("full_chain")
        .and_then(|n| r.boolean(n, "forwarded.full_chain"))
    {
        f.full_chain = full;
    }
    f
}

/// `upstream_keepalive: { connections: 256, timeout: 4s, requests: 0 }`.
fn read_upstream_keepalive(r: &mut Reader<'_>, node: &MarkedYaml<'_>) -> UpstreamKeepalive {
    let mut k = UpstreamKeepalive::default();
    let Some(f) = r.section(
        node,
        "upstream_keepalive",
        &["connections", "timeout", "requests"],
        &[],
    ) else {
        return k;
    };
    let number = |r: &mut Reader<'_>, key: &str| {
        f.get(key).and_then(|n| {
            r.parsed(n, &format!("upstream_keepalive {key}"), |s| {
                s.parse::<u32>()
                    .map_err(|_| format!("`{s}` is not a whole number"))
            })
        })
    };
    if let Some(c) = number(r, "connections") {
        k.connections = c as usize;
    }
    if let Some(q) = number(r, "requests") {
        k.requests = q;
    }
    if let Some(t) = f
        .get("timeout")
        .and_then(|n| r.parsed(n, "upstream_keepalive timeout", parse_duration))
    {
        k.timeout = t;
    }
    k
}

/// `resolver: { servers: ["10.96.0.10:53"], valid: 30s }`: name servers (default: the
/// system's) and how long an answer is used whatever its TTL.
fn read_resolver(r: &mut Reader<'_>, node: &MarkedYaml<'_>) -> ResolverSettings {
    let mut settings = ResolverSettings::default();
    let Some(f) = r.section(node, "resolver", &["servers", "valid"], &[]) else {
        return settings;
    };
    if let Some(list) = f
        .get("servers")
        .and_then(|n| r.sequence(n, "resolver servers"))
    {
        for n in list {
            if let Some(addr) = r.parsed(n, "resolver server", |s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| {
                        s.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| {
                        format!("`{s}` is not an address (\"10.96.0.10\", \"127.0.0.1:5353\")")
                    })
            }) {
                settings.servers.push(addr);
            }
        }
    }
    settings.valid = f
        .get("valid")
        .and_then(|n| r.parsed(n, "resolver valid", parse_duration));
    settings
}

/// `hsts: { enabled: true, max_age: 1y, include_subdomains: true, preload: false }`.
fn read_hsts(r: &mut Reader<'_>, node: &MarkedYaml<'_>) -> Hsts {
    let mut h = Hsts::default();
    let Some(f) = r.section(
        node,
        "hsts",
        &["enabled", "max_age", "include_subdomains", "preload"],
        &[],
    ) else {
        return h;
    };
    if let Some(n) = f.get("max_age") {
        h.max_age = r
            .parsed(n, "hsts.max_age", parse_duration)
            .unwrap_or(h.max_age);
    }
    for (key, slot) in [
        ("enabled", &mut h.enabled),
        ("include_subdomains", &mut h.include_subdomains),
        ("preload", &mut h.preload),
    ] {
        if let Some(n) = f.get(key) {
            *slot = r.boolean(n, &format!("hsts.{key}")).unwrap_or(*slot);
        }
    }
    h
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

/// A name a certificate serves: like a route host, but `*` (any host) means nothing here.
fn tls_host(text: &str) -> Result<HostPattern, String> {
    match HostPattern::parse(text)? {
        HostPattern::Any => Err(
            "`*` is not a certificate name; write the names, or set `default: true` to serve this certificate to any other name".to_owned(),
        ),
        host => Ok(host),
    }
}

/// A PEM file named under `key` of a section, relative to the configuration file.
fn pem_file(r: &mut Reader<'_>, f: &Fields<'_, '_>, what: &str, key: &str) -> Option<PemSource> {
    f.get(key)
        .and_then(|n| r.string(n, &format!("{what} {key}")))
        .map(|name| PemSource::File(file_dir(r.file()).join(name)))
}

/// A certificate chain depth under `depth` (1 to 100; nginx's default 1).
fn chain_depth(r: &mut Reader<'_>, f: &Fields<'_, '_>, what: &str) -> u32 {
    f.get("depth")
        .and_then(|n| {
            r.parsed(n, &format!("{what} depth"), |s| match s.parse::<u32>() {
                Ok(d @ 1..=100) => Ok(d),
                _ => Err(format!("`{s}` is not a depth from 1 to 100")),
            })
        })
        .unwrap_or(1)
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
