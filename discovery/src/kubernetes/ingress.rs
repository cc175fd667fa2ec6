//! Ingress objects → the paths they route, the way ingress-nginx reads them: class
//! selection, pathType, defaultBackend, the older Ingress winning a conflict, and
//! annotations under both `gatehouse.io/` and `nginx.ingress.kubernetes.io/`. An Ingress
//! whose annotations cannot be honoured fails closed for its own paths only. Pure.

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_config::{
    cidr::{parse_cidr, CidrSet},
    units::parse_size,
    ClientLimits, Retry, RouteTimeouts,
};
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

use super::endpoints::PortRef;
use access::{basic_auth_ref, client_cert_ref, cors, external_auth};
pub use access::{BasicAuthRef, ClientCertRef, ExternalAuthSpec};
pub use backend_tls::BackendTls;
pub use balancing::Balancing;
pub use redirects::www_twin;
pub use snippet::Snippet;

/// The controller name our IngressClass carries.
pub const CONTROLLER: &str = "gatehouse.io/ingress";
const PREFIXES: [&str; 2] = ["gatehouse.io/", "nginx.ingress.kubernetes.io/"];
const LEGACY_CLASS: &str = "kubernetes.io/ingress.class";
pub(crate) const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";

/// Which Ingresses are ours.
#[derive(Clone, Debug, Default)]
pub struct ClassSelection {
    /// Names of IngressClasses whose controller is ours (plus `--ingress-class`).
    pub names: BTreeSet<String>,
    /// Our class is the cluster default: Ingresses without a class are ours.
    pub default: bool,
}

impl ClassSelection {
    /// Reads the IngressClasses of a cluster; `flag` is `--ingress-class`.
    pub fn from_classes<'a>(
        classes: impl IntoIterator<Item = &'a IngressClass>,
        flag: Option<&str>,
    ) -> Self {
        let mut s = ClassSelection::default();
        for class in classes {
            let ours =
                class.spec.as_ref().and_then(|sp| sp.controller.as_deref()) == Some(CONTROLLER);
            if !ours {
                continue;
            }
            if let Some(name) = &class.metadata.name {
                s.names.insert(name.clone());
            }
            let annotations = class.metadata.annotations.as_ref();
            if annotations
                .and_then(|a| a.get(DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
            {
                s.default = true;
            }
        }
        s.names.extend(flag.map(str::to_owned));
        s
    }

    /// Whether an Ingress is ours: its class (field, or the legacy annotation) names one of
    /// our classes, or it has none and our class is the default.
    pub fn is_ours(&self, ingress: &Ingress) -> bool {
        let class = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
            .or_else(|| {
                ingress
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(LEGACY_CLASS))
                    .map(String::as_str)
            });
        match class {
            Some(name) => self.names.contains(name),
            None => self.default,
        }
    }
}

/// How a path matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKind {
    Exact,
    Prefix,
    Regex,
}

/// A Service port an Ingress sends traffic to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub namespace: String,
    pub name: String,
    pub port: PortRef,
}

/// What an Ingress's annotations ask for.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub allow: CidrSet,
    /// `denylist-source-range`.
    pub deny: CidrSet,
    /// `temporal-redirect` or `permanent-redirect` (with `-code`).
    pub redirect: Option<gatehouse_config::Redirect>,
    /// `app-root`.
    pub app_root: Option<String>,
    /// `from-to-www-redirect`.
    pub from_to_www: bool,
    /// `server-alias`: more names for the Ingress's paths.
    pub aliases: Vec<String>,
    /// `auth-type: basic` with `auth-secret`, `auth-secret-type`, `auth-realm`.
    pub basic_auth: Option<BasicAuthRef>,
    /// `ssl-passthrough`: TLS for the hosts goes unterminated to the `/` path's pods.
    pub passthrough: bool,
    /// `backend-protocol: HTTPS` or `GRPCS` with its `proxy-ssl-*`.
    pub backend_tls: Option<BackendTls>,
    /// `backend-protocol: GRPC`, `GRPCS` or `H2C`: HTTP/2 to the pods.
    pub h2: bool,
    /// `auth-tls-secret` with its `auth-tls-*`: client certificates for the Ingress's hosts.
    pub client_certs: Option<ClientCertRef>,
    /// `custom-http-errors` (unless `disable-proxy-intercept-errors`) with `default-backend`.
    pub error_pages: Option<ErrorPagesSpec>,
    /// `disable-proxy-intercept-errors`: the ConfigMap's `custom-http-errors` do not apply.
    pub intercept_disabled: bool,
    /// `upstream-vhost` (the upstream's Host) and `x-forwarded-prefix`.
    pub request_headers: Vec<(HeaderName, gatehouse_config::Template)>,
    /// `enable-cors` with its `cors-*`.
    pub cors: Option<gatehouse_config::Cors>,
    /// `auth-url` with its `auth-method`, `auth-signin` (`-redirect-param`),
    /// `auth-response-headers`, `auth-request-redirect`.
    pub external_auth: Option<ExternalAuthSpec>,
    /// `ssl-redirect`: `None` means the default (redirect when the host has a certificate).
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect`: redirect even without a certificate here (TLS ends earlier).
    pub force_ssl_redirect: bool,
    /// `preserve-trailing-slash`: the HTTPS redirect keeps a trailing `/`.
    pub preserve_trailing_slash: bool,
    pub max_body: Option<u64>,
    pub rewrite: Option<String>,
    /// `gatehouse.io/response-headers`: `Name: value` lines added to every response.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// `proxy-read-timeout` (the response, between reads, and tunnels) and
    /// `proxy-send-timeout` (the request body to the upstream).
    pub timeouts: RouteTimeouts,
    /// `limit-rps`, `limit-rpm`, `limit-connections` (with `limit-burst-multiplier` and
    /// `limit-whitelist`).
    pub limits: Option<ClientLimits>,
    /// The header directives of `configuration-snippet`.
    pub snippet: Snippet,
    /// The header directives of `server-snippet`: for every path of the host.
    pub server_snippet: Option<Snippet>,
    /// `proxy-next-upstream`, `-tries`, `-timeout`.
    pub retry: Retry,
    /// `canary: "true"`: this Ingress's paths are canaries of the same paths of another.
    pub canary: Option<CanarySpec>,
    /// `affinity`, `upstream-hash-by`, `load-balance`: how its Services pick a pod.
    pub balancing: Balancing,
}

/// Where an Ingress's error answers come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorPagesSpec {
    /// Upstream statuses replaced (none: only a Service without endpoints sends there).
    pub codes: Vec<u16>,
    /// `default-backend`: a Service of the Ingress's namespace (its first port); `None`: the
    /// configuration's `default_service`.
    pub backend: Option<String>,
}

/// What a canary Ingress's annotations say (its backend is the canary service).
#[derive(Clone, Debug, Default)]
pub struct CanarySpec {
    pub header: Option<HeaderName>,
    pub header_value: Option<String>,
    pub header_pattern: Option<regex::Regex>,
    pub cookie: Option<String>,
    pub weight: u32,
    pub weight_total: u32,
}

/// One routed path of an Ingress.
#[derive(Clone, Debug)]
pub struct IngressPath {
    /// `None`: the rule has no host and applies to any.
    pub host: Option<String>,
    pub path: String,
    pub kind: PathKind,
    pub backend: Backend,
    pub policy: Policy,
    /// `namespace/name` of the Ingress.
    pub source: String,
    /// Why this path is served 503 instead (a broken annotation), if it is.
    pub broken: Option<String>,
}

/// A `spec.tls` entry: the Secret whose certificate serves some hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressTls {
    pub namespace: String,
    pub secret: String,
    /// The names it serves (lower-case); when `spec.tls` lists none, the Ingress's rule hosts.
    pub hosts: Vec<String>,
    /// `namespace/name` of the Ingress.
    pub source: String,
}

/// Every path of our Ingresses, after conflicts.
#[derive(Clone, Debug, Default)]
pub struct Translation {
    pub paths: Vec<IngressPath>,
    /// Certificates to load, oldest Ingress first.
    pub tls: Vec<IngressTls>,
    /// The oldest Ingress's `defaultBackend`, with its source.
    pub default_backend: Option<(Backend, String)>,
    /// For the operator's log: conflicts lost, annotations refused or ignored.
    pub problems: Vec<String>,
    /// How each of our Ingresses is served, oldest first (what `gatehouse audit` prints).
    pub verdicts: Vec<Verdict>,
}

/// Translates Ingresses (all of them; `classes` picks ours).
pub fn translate<'a>(
    ingresses: impl IntoIterator<Item = &'a Ingress>,
    classes: &ClassSelection,
) -> Translation {
    let mut ours: Vec<&Ingress> = ingresses
        .into_iter()
        .filter(|i| classes.is_ours(i))
        .collect();
    // The older Ingress wins a conflict: creation time, then namespace/name.
    ours.sort_by_key(|i| {
        (
            i.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            i.metadata.namespace.clone().unwrap_or_default(),
            i.metadata.name.clone().unwrap_or_default(),
        )
    });
    let mut out = Translation::default();
    let sources: Vec<(String, String)> = ours
        .iter()
        .map(|i| {
            let namespace = i.metadata.namespace.clone().unwrap_or_default();
            let name = i.metadata.name.clone().unwrap_or_default();
            (namespace, name)
        })
        .collect();
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    let mut taken: BTreeMap<(Option<String>, String, PathKind), String> = BTreeMap::new();
    for ingress in ours {
        let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
        let source = format!(
            "{namespace}/{}",
            ingress.metadata.name.clone().unwrap_or_default()
        );
        let (policy, regex, broken) = match annotations(ingress, &mut out.problems, &source) {
            Ok((policy, regex)) => (policy, regex, None),
            Err(why) => {
                out.problems.push(format!(
                    "Ingress {source}: {why}; its paths answer 503 until it is fixed"
                ));
                refused.insert(source.clone(), why.clone());
                (Policy::default(), false, Some(why))
            }
        };
        let Some(spec) = &ingress.spec else { continue };
        if let Some(default) = spec
            .default_backend
            .as_ref()
            .and_then(|b| backend(&namespace, b))
        {
            match &out.default_backend {
                None => out.default_backend = Some((default, source.clone())),
                Some((_, first)) => out.problems.push(format!(
                    "Ingress {source}: defaultBackend ignored, {first} is older and sets one"
                )),
            }
        }
        let rule_hosts: Vec<String> = spec
            .rules
            .iter()
            .flatten()
            .filter_map(|r| r.host.as_ref().map(|h| h.to_ascii_lowercase()))
            .collect();
        for tls in spec.tls.iter().flatten() {
            let Some(secret) = tls.secret_name.clone() else {
                out.problems.push(format!(
                    "Ingress {source}: a tls entry names no secretName; its hosts get the default certificate"
                ));
                continue;
            };
            let hosts: Vec<String> = match &tls.hosts {
                Some(h) if !h.is_empty() => h.iter().map(|h| h.to_ascii_lowercase()).collect(),
                _ => rule_hosts.clone(),
            };
            out.tls.push(IngressTls {
                namespace: namespace.clone(),
                secret,
                hosts,
                source: source.clone(),
            });
        }
        // `server-alias` names get the rule's paths too.
        let names = |rule_host: Option<String>| {
            std::iter::once(rule_host).chain(policy.aliases.iter().map(|a| Some(a.clone())))
        };
        let rules = spec.rules.iter().flatten();
        for (rule, host) in rules.flat_map(|r| {
            names(r.host.as_ref().map(|h| h.to_ascii_lowercase())).map(move |h| (r, h))
        }) {
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let Some(backend) = backend(&namespace, &p.backend) else {
                    out.problems.push(format!(
                        "Ingress {source}: a path has no Service backend; skipped"
                    ));
                    continue;
                };
                let path = p.path.clone().unwrap_or_else(|| "/".to_owned());
                let kind = if regex {
                    PathKind::Regex
                } else if p.path_type == "Exact" {
                    PathKind::Exact
                } else {
                    // Prefix, and ImplementationSpecific read as Prefix.
                    PathKind::Prefix
                };
                let key = (host.clone(), path.clone(), kind);
                let is_canary = policy.canary.is_some();
                // A canary shares its main Ingress's paths: the merge joins them.
                if let (Some(winner), false) = (taken.get(&key), is_canary) {
                    out.problems.push(format!(
                        "Ingress {source}: {}{path} is already routed by the older {winner}; this path is ignored",
                        host.as_deref().unwrap_or("*")
                    ));
                    continue;
                }
                if !is_canary {
                    taken.insert(key, source.clone());
                }
                out.paths.push(IngressPath {
                    host: host.clone(),
                    path,
                    kind,
                    backend,
                    policy: policy.clone(),
                    source: source.clone(),
                    broken: broken.clone(),
                });
            }
        }
    }
    out.verdicts = sources
        .into_iter()
        .map(|(namespace, name)| verdict::judge(namespace, name, &out.problems, &mut refused))
        .collect();
    out
}

/// A boolean as ingress-nginx reads one (Go's strconv.ParseBool).
pub fn go_bool(value: &str) -> Option<bool> {
    match value.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn backend(namespace: &str, b: &IngressBackend) -> Option<Backend> {
    let service = b.service.as_ref()?;
    let port = service.port.as_ref()?;
    let port = match (&port.name, port.number) {
        (Some(name), _) => PortRef::Name(name.clone()),
        (None, Some(n)) => PortRef::Number(n),
        (None, None) => return None,
    };
    Some(Backend {
        namespace: namespace.to_owned(),
        name: service.name.clone(),
        port,
    })
}

/// Reads the annotations under both prefixes (`gatehouse.io/` wins over the nginx one).
/// Returns the policy and whether paths are regexes, or why the Ingress must fail closed.
fn annotations(
    ingress: &Ingress,
    problems: &mut Vec<String>,
    source: &str,
) -> Result<(Policy, bool), String> {
    let mut found: BTreeMap<&str, &str> = BTreeMap::new();
    let mut gatehouse_only = BTreeSet::new();
    // The nginx prefix first, so the same name under `gatehouse.io/` overrides it.
    for prefix in PREFIXES.iter().rev() {
        for (key, value) in ingress.metadata.annotations.iter().flatten() {
            if let Some(name) = key.strip_prefix(prefix) {
                found.insert(name, value);
                if *prefix == PREFIXES[0] {
                    gatehouse_only.insert(name);
                }
            }
        }
    }
    let flag = |name: &str| -> Result<Option<bool>, String> {
        match found.get(name) {
            None => Ok(None),
            Some(v) => go_bool(v)
                .map(Some)
                .ok_or_else(|| format!("annotation {name}: `{}` is not true or false", v.trim())),
        }
    };
    let mut policy = Policy::default();
    let mut limits: Option<ClientLimits> = None;
    let mut whitelist = CidrSet::default();
    for (name, value) in &found {
        match *name {
            "whitelist-source-range" | "allowlist-source-range" => {
                policy.allow = annotation_cidrs(value, name, source, problems)?;
            }
            "denylist-source-range" => {
                policy.deny = annotation_cidrs(value, name, source, problems)?;
            }
            n if redirects::NAMES.contains(&n) => {}
            "auth-type" | "auth-secret" | "auth-secret-type" | "auth-realm" => {}
            "auth-url" | "auth-method" | "auth-signin" | "auth-signin-redirect-param"
            | "auth-response-headers" | "auth-request-redirect" => {}
            // Headers of the upstream's request, as ingress-nginx's proxy_set_header lines.
            "custom-http-errors" | "default-backend" | "disable-proxy-intercept-errors" => {}
            "upstream-vhost" | "x-forwarded-prefix" => {
                let header = if *name == "upstream-vhost" {
                    http::header::HOST
                } else {
                    HeaderName::from_static("x-forwarded-prefix")
                };
                let value = gatehouse_config::Template::parse(value.trim())
                    .map_err(|e| format!("annotation {name}: {e}"))?;
                policy.request_headers.push((header, value));
            }
            n if n == "enable-cors" || n.starts_with("cors-") => {}
            "proxy-body-size" => {
                let size = parse_size(value).map_err(|e| format!("annotation {name}: {e}"))?;
                // nginx: 0 turns the limit off.
                policy.max_body = Some(if size == 0 { u64::MAX } else { size });
            }
            "rewrite-target" => policy.rewrite = Some((*value).to_owned()),
            "limit-rps" | "limit-rpm" | "limit-connections" | "limit-burst-multiplier" => {
                // ingress-nginx reads whole numbers; 0 (or less) sets no limit.
                let n = value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| format!("annotation {name}: `{value}` is not a whole number"))?;
                let n = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
                let limit = (n > 0).then_some(n);
                let l = limits.get_or_insert_with(|| ClientLimits {
                    rps: None,
                    rpm: None,
                    burst_multiplier: ClientLimits::DEFAULT_BURST_MULTIPLIER,
                    connections: None,
                    whitelist: CidrSet::default(),
                });
                match *name {
                    "limit-rps" => l.rps = limit,
                    "limit-rpm" => l.rpm = limit,
                    "limit-connections" => l.connections = limit,
                    _ => l.burst_multiplier = limit.unwrap_or(ClientLimits::DEFAULT_BURST_MULTIPLIER),
                }
            }
            "configuration-snippet" | "server-snippet" => {
                let read = snippet::read(value)
                    .map_err(|e| format!("annotation {name}: {e}; the Ingress answers 503 until the snippet holds only header directives"))?;
                if *name == "server-snippet" {
                    policy.server_snippet = Some(read);
                } else {
                    policy.snippet = read;
                }
            }
            // Gatehouse decides main or canary per request, which is ingress-nginx's `legacy`.
            "affinity-canary-behavior" if value.trim() == "legacy" => {}
            "affinity-canary-behavior" => {
                return Err(format!("annotation {name}: `{value}` is not supported; only `legacy` is (main or canary decided per request, whatever the affinity cookie)"))
            }
            "proxy-next-upstream" => {
                policy.retry = policy
                    .retry
                    .with_conditions(value)
                    .map_err(|e| format!("annotation {name}: {e}"))?;
            }
            "proxy-next-upstream-tries" | "proxy-next-upstream-timeout" => {
                // Whole numbers as ingress-nginx reads them; 0 lifts the bound.
                let n = value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| format!("annotation {name}: `{value}` is not a whole number"))?;
                if *name == "proxy-next-upstream-tries" {
                    policy.retry.tries = n;
                } else {
                    policy.retry.within = (n > 0).then(|| std::time::Duration::from_secs(n.into()));
                }
            }
            "limit-whitelist" | "limit-allowlist" => {
                whitelist = annotation_cidrs(value, name, source, problems)?;
            }
            "proxy-read-timeout" | "proxy-send-timeout" | "proxy-connect-timeout" => {
                // ingress-nginx reads whole seconds and falls back to its default on
                // anything else; so does Gatehouse, saying so.
                let Some(secs) = value.trim().parse::<u64>().ok().filter(|s| *s > 0) else {
                    problems.push(format!("Ingress {source}: annotation {name}: `{value}` is not a whole number of seconds; the default timeout applies, as with ingress-nginx"));
                    continue;
                };
                let after = Some(std::time::Duration::from_secs(secs));
                let t = &mut policy.timeouts;
                match *name {
                    // nginx's proxy_read_timeout bounds the wait for the head, every read
                    // of the body, and an upgraded connection's silence.
                    "proxy-read-timeout" => {
                        (t.upstream_response, t.upstream_read, t.tunnel_idle) = (after, after, after)
                    }
                    "proxy-send-timeout" => t.upstream_send = after,
                    _ => t.connect = after,
                }
            }
            "backend-protocol" if value.trim().eq_ignore_ascii_case("HTTP") => {}
            "backend-protocol" => {
                let protocol = value.trim().to_ascii_uppercase();
                // gRPC is HTTP/2: GRPC and H2C in the clear, GRPCS over TLS.
                policy.h2 = matches!(protocol.as_str(), "GRPC" | "GRPCS" | "H2C");
                match protocol.as_str() {
                    "HTTP" | "GRPC" | "H2C" => {}
                    "HTTPS" | "GRPCS" => {
                        policy.backend_tls = Some(backend_tls::backend_tls(&found, ingress, problems, source)?);
                    }
                    _ => return Err(format!("annotation {name}: `{value}` upstreams are not supported (HTTP, HTTPS, GRPC, GRPCS and H2C are)")),
                }
            }
            "ssl-redirect" | "force-ssl-redirect" | "use-regex" | "preserve-trailing-slash" => {}
            "response-headers" if gatehouse_only.contains(name) => {
                policy.response_headers = response_headers(value).map_err(|e| format!("annotation {name}: {e}"))?;
            }
            "response-headers" => problems.push(format!("Ingress {source}: annotation {name} is not supported and is ignored: it is read under gatehouse.io/ only")),
            // Read below, with the others of their family.
            "affinity" | "affinity-mode" | "upstream-hash-by" | "load-balance" => {}
            n if n.starts_with("session-cookie-") && fates::fate(n) == Some(Fate::Built) => {}
            "canary" | "canary-by-header" | "canary-by-header-value" | "canary-by-header-pattern"
            | "canary-by-cookie" | "canary-weight" | "canary-weight-total" => {}
            other => match fates::fate(other) {
                Some(Fate::Refused(what)) => {
                    return Err(format!("annotation {other} is not supported yet ({what}); serving without it would drop that policy"))
                }
                Some(Fate::Ignored(loses)) => problems.push(format!("Ingress {source}: annotation {other} is not supported and is ignored: {loses}")),
                // Built ones are read above.
                Some(Fate::Built) => {}
                None => {
                    let names: Vec<&str> = fates::FATES.iter().map(|(n, _)| *n).collect();
                    let hint = gatehouse_config::did_you_mean(other, &names)
                        .map(|n| format!(" (did you mean {n}?)"))
                        .unwrap_or_default();
                    return Err(format!("annotation {other} is unknown to ingress-nginx and Gatehouse{hint}; a mistyped policy must not be dropped silently"));
                }
            },
        }
    }
    // The whitelist and the multiplier alone limit nothing, as in ingress-nginx.
    policy.limits = limits
        .filter(|l| l.rps.is_some() || l.rpm.is_some() || l.connections.is_some())
        .map(|l| ClientLimits { whitelist, ..l });
    policy.passthrough = flag("ssl-passthrough")? == Some(true);
    policy.basic_auth = basic_auth_ref(&found, ingress)?;
    policy.client_certs = client_cert_ref(&found, ingress, &flag, problems, source)?;
    policy.external_auth = external_auth(&found)?;
    policy.error_pages = error_pages(&found, &flag)?;
    policy.intercept_disabled = flag("disable-proxy-intercept-errors")? == Some(true);
    if flag("enable-cors")? == Some(true) {
        policy.cors = Some(cors(&found, &flag, problems, source)?);
    }
    let family = redirects::redirects(&found, &flag)?;
    (policy.redirect, policy.app_root) = (family.redirect, family.app_root);
    (policy.from_to_www, policy.aliases) = (family.from_to_www, family.aliases);
    let uid = ingress.metadata.uid.as_deref();
    policy.balancing = balancing::balancing(&found, uid, &flag, problems, source)?;
    if flag("canary")? == Some(true) {
        policy.canary = Some(canary_spec(&found)?);
    }
    policy.ssl_redirect = flag("ssl-redirect")?;
    policy.force_ssl_redirect = flag("force-ssl-redirect")?.unwrap_or(false);
    policy.preserve_trailing_slash = flag("preserve-trailing-slash")?.unwrap_or(false);
    // As in ingress-nginx, a rewrite-target makes the paths regexes.
    let regex = flag("use-regex")?.unwrap_or(false) || policy.rewrite.is_some();
    Ok((policy, regex))
}

/// `custom-http-errors` and `default-backend` as ingress-nginx reads them: the codes are
/// statuses (a bad one refuses the Ingress, as a page would silently go missing);
/// `disable-proxy-intercept-errors` keeps the upstream's own error answers.
fn error_pages(
    found: &BTreeMap<&str, &str>,
    flag: &dyn Fn(&str) -> Result<Option<bool>, String>,
) -> Result<Option<ErrorPagesSpec>, String> {
    let backend = found
        .get("default-backend")
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    let mut codes = Vec::new();
    if flag("disable-proxy-intercept-errors")? != Some(true) {
        for code in found
            .get("custom-http-errors")
            .iter()
            .flat_map(|v| v.split(','))
        {
            let code = code.trim();
            if code.is_empty() {
                continue;
            }
            match code.parse::<u16>() {
                Ok(c) if (400..=599).contains(&c) => codes.push(c),
                _ => {
                    return Err(format!(
                        "annotation custom-http-errors: `{code}` is not an error status (400-599)"
                    ))
                }
            }
        }
    }
    Ok((!codes.is_empty() || backend.is_some()).then_some(ErrorPagesSpec { codes, backend }))
}

/// An allow-list entry as ingress-nginx reads it: a range with host bits set below its
/// prefix is masked (Go's net.ParseCIDR), and the masking is reported.
fn annotation_cidr(
    entry: &str,
    name: &str,
    source: &str,
    problems: &mut Vec<String>,
) -> Result<IpNet, String> {
    parse_cidr(entry).or_else(|e| match entry.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => {
            problems.push(format!(
                "Ingress {source}: annotation {name}: `{entry}` has host bits set; read as `{}`, as ingress-nginx does",
                net.trunc()
            ));
            parse_cidr(&net.trunc().to_string())
        }
        _ => Err(e),
    })
}

/// Reads `Name: value` lines, one header per line, as `gatehouse.io/response-headers` holds
/// them. A `;` belongs to the value (`X-XSS-Protection: 1; mode=block`).
fn response_headers(text: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("`{line}` is not `Name: value`"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("`{}` is not a header name", name.trim()))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("`{}` is not a header value", value.trim()))?;
            Ok((name, value))
        })
        .collect()
}

/// A comma-separated list of CIDRs, as ingress-nginx reads its `*-source-range` and
/// `limit-whitelist` annotations.
fn annotation_cidrs(
    value: &str,
    name: &str,
    source: &str,
    problems: &mut Vec<String>,
) -> Result<CidrSet, String> {
    let nets = value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| annotation_cidr(entry, name, source, problems))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("annotation {name}: {e}"))?;
    Ok(CidrSet::new(nets))
}

/// The canary-* annotations of a canary Ingress, read as ingress-nginx reads them; a value
/// it cannot read fails the Ingress closed.
fn canary_spec(found: &BTreeMap<&str, &str>) -> Result<CanarySpec, String> {
    let text = |name: &str| {
        found
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let number = |name: &str, default: u32| -> Result<u32, String> {
        match text(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .map_err(|_| format!("annotation {name}: `{v}` is not a whole number")),
        }
    };
    let weight_total = number("canary-weight-total", 100)?;
    let weight = number("canary-weight", 0)?;
    if weight_total == 0 || weight > weight_total {
        return Err(format!(
            "annotation canary-weight: {weight} is not between 0 and canary-weight-total ({weight_total})"
        ));
    }
    let header = text("canary-by-header")
        .map(|h| {
            HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("annotation canary-by-header: `{h}` is not a header name"))
        })
        .transpose()?;
    let header_pattern = text("canary-by-header-pattern")
        .map(|p| {
            regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                format!("annotation canary-by-header-pattern: `{p}` is not a valid regex: {e}")
            })
        })
        .transpose()?;
    Ok(CanarySpec {
        header,
        header_value: text("canary-by-header-value"),
        header_pattern,
        cookie: text("canary-by-cookie"),
        weight,
        weight_total,
    })
}

mod access;
mod backend_tls;
mod balancing;
mod fates;
pub mod legacy;
mod redirects;
mod snippet;
mod verdict;
pub use fates::{Fate, FATES};
pub use verdict::{Verdict, VerdictKind};

#[cfg(test)]
mod tests;
