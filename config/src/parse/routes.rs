//! The `routes` section: hosts, their policies (headers, timeouts, retries, limits) and
//! path rules with their canaries.

use super::*;
pub(super) fn read_route(
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
            "deny",
            "redirect",
            "app_root",
            "auth",
            "client_certificates",
            "passthrough",
            "cors",
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
    let deny = f
        .get("deny")
        .map(|n| read_cidrs(r, n, &format!("{what} deny")))
        .unwrap_or_default();
    let redirect = f.get("redirect").and_then(|n| read_redirect(r, n, &what));
    let app_root = f.get("app_root").and_then(|n| {
        r.parsed(n, &format!("{what} app_root"), |s| {
            match s.starts_with('/') && s.len() > 1 {
                true => Ok(s.to_owned()),
                false => Err(format!("`{s}` is not a path other than `/`")),
            }
        })
    });
    let (basic_auth, external_auth) = f
        .get("auth")
        .map(|n| read_auth(r, n, &what, service_id))
        .unwrap_or_default();
    let cors = f.get("cors").and_then(|n| read_cors(r, n, &what));
    let client_certs = f
        .get("client_certificates")
        .and_then(|n| read_client_certs(r, n, &what));
    let passthrough = f
        .get("passthrough")
        .and_then(|n| r.boolean(n, &format!("{what} passthrough")))
        .unwrap_or(false);
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
    if passthrough
        && !paths
            .iter()
            .any(|p: &PathRule| p.kind == PathMatch::Prefix && p.path == "/")
    {
        r.error(
            node.span,
            format!("{what} passthrough: TLS goes unterminated to the service of the `/` path; add `{{ path: /, service: ... }}`"),
        );
    }
    Some(Route {
        host: host?,
        allow,
        deny,
        redirect,
        app_root,
        basic_auth,
        cors,
        external_auth,
        client_certs,
        passthrough,
        error_pages: None,
        https_redirect,
        force_https_redirect: false,
        redirect_keeps_trailing_slash: true,
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

/// A route's `auth`: `{ basic: { htpasswd: FILE, realm: TEXT } }` (FILE relative to this
/// file) and/or `{ external: { url, method, signin, signin_redirect_param,
/// response_headers, request_redirect } }` (the URL's host a service of this file).
fn read_auth(
    r: &mut Reader<'_>,
    node: &MarkedYaml<'_>,
    what: &str,
    service_id: &dyn Fn(&mut Reader<'_>, &MarkedYaml<'_>, &str) -> Option<ServiceId>,
) -> (Option<BasicAuth>, Option<ExternalAuth>) {
    let what = format!("{what} auth");
    let Some(f) = r.section(node, &what, &["basic", "external"], &[]) else {
        return (None, None);
    };
    let basic = f.get("basic").and_then(|n| read_basic_auth(r, n, &what));
    let external = f
        .get("external")
        .and_then(|n| read_external_auth(r, n, &what, service_id));
    (basic, external)
}

/// A route's `client_certificates: { ca: FILE, crl: FILE, verify: on | optional |
/// optional_no_ca | off, depth: N, pass_to_upstream: BOOL, error_page: URL, match_cn: REGEX }`
/// (files relative to this file).
fn read_client_certs(r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str) -> Option<ClientCerts> {
    let what = format!("{what} client_certificates");
    let keys = [
        "ca",
        "crl",
        "verify",
        "depth",
        "pass_to_upstream",
        "error_page",
        "match_cn",
    ];
    let c = r.section(node, &what, &keys, &[])?;
    let file = |r: &mut Reader<'_>, key: &str| pem_file(r, &c, &what, key);
    let Some(ca) = file(r, "ca") else {
        r.error(
            c.span,
            format!("{what} needs `ca`, the PEM file of the authorities client certificates must chain to"),
        );
        return None;
    };
    let crl = file(r, "crl");
    let verify = c
        .get("verify")
        .and_then(|n| r.parsed(n, &format!("{what} verify"), VerifyClient::parse))
        .unwrap_or(VerifyClient::On);
    let depth = chain_depth(r, &c, &what);
    let pass_to_upstream = c
        .get("pass_to_upstream")
        .and_then(|n| r.boolean(n, &format!("{what} pass_to_upstream")))
        .unwrap_or(false);
    let error_page = c
        .get("error_page")
        .and_then(|n| r.string(n, &format!("{what} error_page")));
    let match_cn = c.get("match_cn").and_then(|n| {
        r.parsed(n, &format!("{what} match_cn"), |s| {
            regex::Regex::new(s).map_err(|e| format!("`{s}` is not a regular expression: {e}"))
        })
    });
    Some(ClientCerts {
        ca,
        crl,
        verify,
        depth,
        pass_to_upstream,
        error_page,
        match_cn,
    })
}

fn read_basic_auth(r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str) -> Option<BasicAuth> {
    let what = format!("{what}.basic");
    let b = r.section(node, &what, &["htpasswd", "realm"], &[])?;
    let realm = b
        .get("realm")
        .and_then(|n| r.string(n, &format!("{what} realm")))
        .unwrap_or_default();
    let Some(file) = b
        .get("htpasswd")
        .and_then(|n| r.string(n, &format!("{what} htpasswd")))
    else {
        r.error(
            b.span,
            format!("{what} needs `htpasswd`, the file of `user:hash` lines"),
        );
        return None;
    };
    Some(BasicAuth {
        realm,
        users: Htpasswd::File(file_dir(r.file()).join(file)),
    })
}

fn read_external_auth(
    r: &mut Reader<'_>,
    node: &MarkedYaml<'_>,
    what: &str,
    service_id: &dyn Fn(&mut Reader<'_>, &MarkedYaml<'_>, &str) -> Option<ServiceId>,
) -> Option<ExternalAuth> {
    let what = format!("{what}.external");
    let keys = [
        "url",
        "method",
        "signin",
        "signin_redirect_param",
        "response_headers",
        "request_redirect",
        "cache",
    ];
    let e = r.section(node, &what, &keys, &[])?;
    let Some(url_node) = e.get("url") else {
        r.error(
            e.span,
            format!("{what} needs `url`, the authentication service's URL"),
        );
        return None;
    };
    let url = r.string(url_node, &format!("{what} url"))?;
    let parsed = r.parsed(url_node, &format!("{what} url"), AuthUrl::parse)?;
    // The URL's host names a service of this file: its endpoints, pools and health.
    let host_node = MarkedYaml::value_from_str(&parsed.host);
    let host_node = MarkedYaml {
        span: url_node.span,
        ..host_node
    };
    let service = service_id(r, &host_node, &format!("{what} url host"))?;
    let text = |r: &mut Reader<'_>, key: &str| {
        e.get(key)
            .and_then(|n| r.string(n, &format!("{what} {key}")))
    };
    let method = match text(r, "method") {
        None => http::Method::GET,
        Some(m) => match m.parse::<http::Method>() {
            Ok(m) => m,
            Err(_) => {
                r.error(e.span, format!("{what} method: `{m}` is not a method"));
                return None;
            }
        },
    };
    let mut response_headers = Vec::new();
    if let Some(list) = e
        .get("response_headers")
        .and_then(|n| r.sequence(n, &format!("{what} response_headers")))
    {
        for item in list {
            if let Some(h) = r.parsed(item, &format!("{what} response_headers"), |s| {
                HeaderName::from_bytes(s.as_bytes())
                    .map_err(|_| format!("`{s}` is not a header name"))
            }) {
                response_headers.push(h);
            }
        }
    }
    Some(ExternalAuth {
        service,
        request: AuthRequest {
            host: parsed.authority,
            path: parsed.path,
            url,
            method,
            signin: text(r, "signin"),
            signin_param: text(r, "signin_redirect_param").unwrap_or_else(|| "rd".to_owned()),
            response_headers,
            request_redirect: text(r, "request_redirect"),
            cache: e.get("cache").and_then(|n| read_auth_cache(r, n, &what)),
        },
    })
}

/// An external authentication's `cache: { key: TEMPLATE, valid: "200 202 401 5m" }`
/// (`valid` optional, ingress-nginx's default shown).
fn read_auth_cache(r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str) -> Option<AuthCache> {
    let what = format!("{what}.cache");
    let c = r.section(node, &what, &["key", "valid"], &[])?;
    let Some(key) = c
        .get("key")
        .and_then(|n| r.string(n, &format!("{what} key")))
    else {
        r.error(
            c.span,
            format!("{what} needs `key`, the request variables that say who asks (`$http_authorization`)"),
        );
        return None;
    };
    let valid = c
        .get("valid")
        .and_then(|n| r.string(n, &format!("{what} valid")))
        .unwrap_or_else(|| crate::auth_cache::DEFAULT_AUTH_CACHE_DURATION.to_owned());
    match AuthCache::parse(&key, &valid) {
        Ok(cache) => Some(cache),
        Err(e) => {
            r.error(c.span, format!("{what}: {e}"));
            None
        }
    }
}

/// A route's `cors`: `{ origins, methods, headers, expose_headers, credentials, max_age }`,
/// each optional (ingress-nginx's defaults; `origins` defaults to `*`).
fn read_cors(r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str) -> Option<Cors> {
    let what = format!("{what} cors");
    let keys = [
        "origins",
        "methods",
        "headers",
        "expose_headers",
        "credentials",
        "max_age",
    ];
    let f = r.section(node, &what, &keys, &[])?;
    let origins = f.get("origins").map_or(Some("*".to_owned()), |n| {
        r.string(n, &format!("{what} origins"))
    })?;
    let mut cors = match Cors::new(&origins) {
        Ok(c) => c,
        Err(e) => {
            r.error(
                f.get("origins").map_or(f.span, |n| n.span),
                format!("{what} origins: {e}"),
            );
            return None;
        }
    };
    for (key, slot) in [
        ("methods", &mut cors.methods),
        ("headers", &mut cors.headers),
        ("expose_headers", &mut cors.expose_headers),
    ] {
        if let Some(n) = f.get(key) {
            if let Some(v) = r.parsed(n, &format!("{what} {key}"), |s| {
                HeaderValue::from_str(s)
                    .map(|_| s.to_owned())
                    .map_err(|_| format!("`{s}` cannot be sent in a header"))
            }) {
                *slot = v;
            }
        }
    }
    if let Some(n) = f.get("credentials") {
        cors.credentials = r
            .boolean(n, &format!("{what} credentials"))
            .unwrap_or(cors.credentials);
    }
    if let Some(n) = f.get("max_age") {
        cors.max_age = r
            .parsed(n, &format!("{what} max_age"), parse_duration)
            .map_or(cors.max_age, |d| d.as_secs());
    }
    Some(cors)
}

/// A route's `redirect`: `{ to: URL, code: 301 }` (code defaults to 301).
fn read_redirect(r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str) -> Option<Redirect> {
    let what = format!("{what} redirect");
    let f = r.section(node, &what, &["to", "code"], &[])?;
    let Some(to_node) = f.get("to") else {
        r.error(f.span, format!("{what} needs `to`"));
        return None;
    };
    let code = match f.get("code") {
        None => 301,
        Some(n) => r.parsed(n, &format!("{what} code"), |s| {
            s.parse::<u16>()
                .map_err(|_| format!("`{s}` is not a status code"))
        })?,
    };
    r.parsed(to_node, &what, |to| Redirect::new(to, code))
}

/// A route's `retry`: `off`, or `{ on: "error timeout http_502", tries: 3, timeout: 10s }`.
pub(super) fn read_retry(r: &mut Reader<'_>, node: &MarkedYaml<'_>, what: &str) -> Retry {
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
pub(super) fn read_request_headers(
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
pub(super) fn read_client_limits(
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
pub(super) fn read_limit_settings(r: &mut Reader<'_>, node: &MarkedYaml<'_>) -> LimitSettings {
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
pub(super) fn read_route_timeouts(
    r: &mut Reader<'_>,
    node: &MarkedYaml<'_>,
    what: &str,
) -> RouteTimeouts {
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

pub(super) fn read_path_rule(
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
pub(super) fn read_canary(
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
