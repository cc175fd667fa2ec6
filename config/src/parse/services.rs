//! The `services` section: endpoints, Kubernetes references, balancing and affinity.

use super::*;
pub(super) fn read_services<'n, 'i>(
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
                "tls",
                "health",
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
        let (endpoints, names) = read_endpoints(r, &f, &what);
        let kubernetes = f
            .get("kubernetes")
            .and_then(|n| read_kubernetes_ref(r, n, &what));
        let balance = read_balance(r, &f, &what);
        let affinity = f
            .get("affinity")
            .and_then(|n| read_affinity(r, n, &format!("{what} affinity")));
        let tls = f.get("tls").and_then(|n| read_upstream_tls(r, n, &what));
        let health = f.get("health").and_then(|n| read_health(r, n, &what));
        let protocol = match f.get("protocol") {
            None => None,
            Some(n) => r.parsed(n, &format!("{what} protocol"), |s| match s {
                "http1" | "https" | "h2c" | "h2" | "grpc" | "grpcs" => Ok(s.to_owned()),
                s => Err(format!(
                    "`{s}` is not one of `http1`, `https`, `h2c`, `h2`, `grpc`, `grpcs`"
                )),
            }),
        };
        let protocol = match (protocol.as_deref(), tls) {
            (Some("https"), tls) => UpstreamProtocol::Https(tls.unwrap_or_default()),
            // gRPC is HTTP/2: grpc in the clear, grpcs over TLS.
            (Some("h2" | "grpcs"), tls) => UpstreamProtocol::H2(tls.unwrap_or_default()),
            (Some("h2c" | "grpc"), None) => UpstreamProtocol::H2c,
            (_, Some(_)) => {
                r.error(
                    body.span,
                    format!("{what} has `tls` but its protocol is not over TLS; use `protocol: https`, `h2` or `grpcs`, or drop `tls`"),
                );
                UpstreamProtocol::Http1
            }
            _ => UpstreamProtocol::Http1,
        };
        out.push((
            Service {
                name: (*name).to_owned(),
                endpoints,
                names,
                kubernetes,
                balance,
                affinity,
                limits,
                protocol,
                health,
            },
            *body,
        ));
    }
    out
}

pub(super) fn read_balance(r: &mut Reader<'_>, f: &Fields<'_, '_>, what: &str) -> Balance {
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
pub(super) fn check_l4_balancing(
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
pub(super) fn spec_hash_key(inner: &str) -> Result<Template, String> {
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

pub(super) fn read_affinity(
    r: &mut Reader<'_>,
    node: &MarkedYaml<'_>,
    what: &str,
) -> Option<Affinity> {
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

pub(super) fn read_kubernetes_ref(
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

pub(super) fn read_endpoints(
    r: &mut Reader<'_>,
    f: &Fields<'_, '_>,
    what: &str,
) -> (Vec<SocketAddr>, Vec<NamedEndpoint>) {
    let Some(list) = f
        .get("endpoints")
        .and_then(|n| r.sequence(n, &format!("{what} endpoints")))
    else {
        return Default::default();
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    let mut names: Vec<NamedEndpoint> = Vec::new();
    for n in list {
        let parsed = r.parsed(n, &format!("{what} endpoint"), |s| {
            match s.parse::<SocketAddr>() {
                Ok(addr) => Ok(Ok(addr)),
                Err(_) => NamedEndpoint::parse(s).map(Err),
            }
        });
        match parsed {
            Some(Ok(addr)) if out.contains(&addr) => {
                r.error(n.span, format!("{what} lists endpoint {addr} twice"))
            }
            Some(Ok(addr)) => out.push(addr),
            Some(Err(name)) if names.contains(&name) => {
                r.error(n.span, format!("{what} lists endpoint {name} twice"))
            }
            Some(Err(name)) => names.push(name),
            None => {}
        }
    }
    (out, names)
}

/// A service's `tls: { server_name: NAME, sni: BOOL, ca: FILE, depth: N, cert: FILE,
/// key: FILE }`: the name verified (and sent as SNI unless `sni: false`), the authorities
/// that verify the endpoints' certificates (none: not verified, as nginx's default), and
/// the certificate Gatehouse shows them.
fn read_upstream_tls(r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str) -> Option<UpstreamTls> {
    let what = format!("{what} tls");
    let t = r.section(
        node,
        &what,
        &["server_name", "sni", "ca", "depth", "cert", "key"],
        &[],
    )?;
    let server_name = t
        .get("server_name")
        .and_then(|n| r.string(n, &format!("{what} server_name")));
    let file = |r: &mut Reader<'_>, key: &str| pem_file(r, &t, &what, key);
    let verify = file(r, "ca");
    if verify.is_some() && server_name.is_none() {
        r.error(
            t.span,
            format!("{what}: `ca` verifies the endpoints' certificates against a name; add `server_name`"),
        );
        return None;
    }
    let sni = t
        .get("sni")
        .and_then(|n| r.boolean(n, &format!("{what} sni")))
        .unwrap_or(server_name.is_some());
    let depth = chain_depth(r, &t, &what);
    let client_cert = match (file(r, "cert"), file(r, "key")) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            r.error(t.span, format!("{what}: `cert` and `key` go together"));
            return None;
        }
    };
    Some(UpstreamTls {
        server_name,
        sni,
        verify,
        depth,
        client_cert,
    })
}

/// A service's `health: { http: /healthz, expect: "200-399", host: NAME, interval: 5s,
/// timeout: 2s, rise: 2, fall: 3 }`, or `tcp: true` instead of `http`. HAProxy's
/// defaults: checks every 2 s, 2 passes to rise, 3 failures to fall.
fn read_health(r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str) -> Option<HealthCheck> {
    let what = format!("{what} health");
    let h = r.section(
        node,
        &what,
        &[
            "http", "tcp", "expect", "host", "interval", "timeout", "rise", "fall",
        ],
        &[],
    )?;
    let text = |r: &mut Reader<'_>, key: &str| {
        h.get(key)
            .and_then(|n| r.string(n, &format!("{what} {key}")))
    };
    let tcp = h
        .get("tcp")
        .and_then(|n| r.boolean(n, &format!("{what} tcp")))
        .unwrap_or(false);
    let probe = match (text(r, "http"), tcp) {
        (Some(path), false) if path.starts_with('/') => {
            let expect = match text(r, "expect") {
                None => (200, 399),
                Some(e) => {
                    let (low, high) = e.split_once('-').unwrap_or((&e, &e));
                    match (low.trim().parse::<u16>(), high.trim().parse::<u16>()) {
                        (Ok(l @ 100..=599), Ok(h @ 100..=599)) if l <= h => (l, h),
                        _ => {
                            r.error(h.span, format!("{what} expect: `{e}` is not a status or a range (`200`, `200-399`)"));
                            return None;
                        }
                    }
                }
            };
            Probe::Http {
                path,
                host: text(r, "host"),
                expect,
            }
        }
        (None, true) => Probe::Tcp,
        _ => {
            r.error(
                h.span,
                format!("{what} needs one of `http: /path` (a path from `/`) or `tcp: true`"),
            );
            return None;
        }
    };
    let duration = |r: &mut Reader<'_>, key: &str, default: u64| {
        h.get(key)
            .and_then(|n| r.parsed(n, &format!("{what} {key}"), parse_duration))
            .unwrap_or(std::time::Duration::from_secs(default))
    };
    let (interval, timeout) = (duration(r, "interval", 2), duration(r, "timeout", 1));
    let count = |r: &mut Reader<'_>, key: &str, default: u32| {
        h.get(key)
            .and_then(|n| {
                r.parsed(n, &format!("{what} {key}"), |s| match s.parse::<u32>() {
                    Ok(c @ 1..=100) => Ok(c),
                    _ => Err(format!("`{s}` is not a count from 1 to 100")),
                })
            })
            .unwrap_or(default)
    };
    let (rise, fall) = (count(r, "rise", 2), count(r, "fall", 3));
    if interval.is_zero() || timeout.is_zero() {
        r.error(
            h.span,
            format!("{what}: interval and timeout must be above zero"),
        );
        return None;
    }
    Some(HealthCheck {
        probe,
        interval,
        timeout,
        rise,
        fall,
    })
}
