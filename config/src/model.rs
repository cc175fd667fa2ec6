//! The validated configuration: what a file says, in domain types, with nothing left to check.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use http::{HeaderName, HeaderValue};

use crate::{cidr::CidrSet, error::Location, host::HostPattern, retry::Retry, template::Template};

/// A whole, valid configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: Listen,
    /// Peers whose PROXY header, X-Forwarded-For and X-Forwarded-Proto are believed.
    pub trusted_proxies: CidrSet,
    /// Certificates for the HTTPS listener.
    pub tls: Vec<TlsEntry>,
    pub timeouts: Timeouts,
    pub shutdown: Shutdown,
    pub access_log: AccessLog,
    pub workers: Workers,
    /// Services in file order; routes refer to them by index.
    pub services: Vec<Service>,
    pub default_service: Option<ServiceId>,
    pub routes: Vec<Route>,
    /// Raw TCP and UDP ports forwarded to services.
    pub l4: Vec<L4Listener>,
    /// Paths with an encoded slash or backslash (`%2F`, `%5C`) get 400, for upstreams that
    /// decode them into separators after Gatehouse matched (Envoy's
    /// `path_with_escaped_slashes_action: REJECT_REQUEST`).
    pub reject_encoded_slash: bool,
    pub limits: LimitSettings,
    /// The Strict-Transport-Security of redirected hosts' HTTPS answers.
    pub hsts: Hsts,
    /// How endpoint names are resolved.
    pub resolver: ResolverSettings,
    /// Idle connections to upstream endpoints, kept for the next request.
    pub upstream_keepalive: UpstreamKeepalive,
    /// The TLS versions the HTTPS listener speaks.
    pub tls_versions: TlsVersions,
    /// How trusted proxies' forwarded headers are read and passed on.
    pub forwarded: Forwarded,
}

/// The TLS versions the HTTPS listener speaks (ingress-nginx's `ssl-protocols`, within
/// what is still safe).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TlsVersions {
    #[default]
    Tls12And13,
    Tls12Only,
    Tls13Only,
}

/// How a trusted proxy's forwarded headers are read and passed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// The header the client's address is read from (ingress-nginx's
    /// `forwarded-for-header`): X-Forwarded-For, or a CDN's single-address header.
    pub client_header: http::HeaderName,
    /// X-Forwarded-For to the upstream carries the whole chain with the peer appended
    /// (`compute-full-forwarded-for: true`), or only the client's address.
    pub full_chain: bool,
}

impl Default for Forwarded {
    fn default() -> Self {
        Forwarded {
            client_header: http::HeaderName::from_static("x-forwarded-for"),
            full_chain: true,
        }
    }
}

/// The sockets Gatehouse listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listen {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// Expect a PROXY protocol (v1 or v2) header on client connections.
    pub proxy_protocol: bool,
}

/// Where a certificate and its key come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files, relative paths already resolved against the configuration file.
    Files { cert: PathBuf, key: PathBuf },
    /// PEM text held in memory: the embedded demo's generated certificate, or a TLS Secret.
    /// `name` says where it came from, for logs and metrics.
    Inline {
        name: String,
        cert: String,
        key: String,
    },
}

/// One `tls` entry.
#[derive(Clone, Debug)]
pub struct TlsEntry {
    pub source: TlsSource,
    /// Names this certificate serves; `None` means the certificate's DNS SANs.
    pub hosts: Option<Vec<HostPattern>>,
    /// Served when the client sends no SNI or an unknown name.
    pub default: bool,
    /// A broken certificate fails the whole configuration (a file's), or only drops this
    /// entry with a warning (a TLS Secret's: it must not take other hosts down).
    pub strict: bool,
    pub location: Location,
}

impl TlsEntry {
    /// How the entry is named in logs and metrics: its certificate file, or `inline`.
    pub fn label(&self) -> String {
        match &self.source {
            TlsSource::Files { cert, .. } => cert.display().to_string(),
            TlsSource::Inline { name, .. } => name.clone(),
        }
    }
}

impl Config {
    /// Every file the configuration reads besides itself (certificates and keys, htpasswd
    /// files, client certificate authorities), so a watcher can reload when one changes.
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        let certs = self.tls.iter().filter_map(|t| match &t.source {
            TlsSource::Files { cert, key } => Some([cert.clone(), key.clone()]),
            TlsSource::Inline { .. } => None,
        });
        let users = self.routes.iter().filter_map(|r| match &r.basic_auth {
            Some(BasicAuth {
                users: Htpasswd::File(path),
                ..
            }) => Some(path.clone()),
            _ => None,
        });
        let authorities = self
            .routes
            .iter()
            .filter_map(|r| r.client_certs.as_ref())
            .flat_map(|c| [Some(&c.ca), c.crl.as_ref()])
            .filter_map(|source| match source {
                Some(PemSource::File(path)) => Some(path.clone()),
                _ => None,
            });
        let upstream_authorities = self
            .services
            .iter()
            .filter_map(|s| s.protocol.tls())
            .flat_map(|tls| {
                let identity = tls.client_cert.as_ref();
                [
                    tls.verify.as_ref(),
                    identity.map(|c| &c.0),
                    identity.map(|c| &c.1),
                ]
            })
            .filter_map(|source| match source {
                Some(PemSource::File(path)) => Some(path.clone()),
                _ => None,
            });
        certs
            .flatten()
            .chain(users)
            .chain(authorities)
            .chain(upstream_authorities)
            .collect()
    }
}

/// Time bounds on clients and upstreams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Upstream TCP connect.
    pub connect: Duration,
    /// The whole request head from the client (slowloris bound).
    pub request_header: Duration,
    /// First response byte from the upstream once the request is sent, else 504.
    pub upstream_response: Duration,
    /// Between two reads of the upstream's response body; past it the response is cut
    /// (nginx's proxy_read_timeout).
    pub upstream_read: Duration,
    /// The upstream takes no more of the request body for this long: 504 (nginx's
    /// proxy_send_timeout).
    pub upstream_send: Duration,
    /// The client sends no more of its request body for this long: 408 (nginx's
    /// client_body_timeout).
    pub client_body: Duration,
    /// The client takes no more of the response for this long: its connection is closed
    /// (nginx's send_timeout).
    pub client_write: Duration,
    /// An upgraded connection (WebSocket) with no byte either way for this long is closed.
    pub tunnel_idle: Duration,
    /// Keep-alive idle, both sides.
    pub idle: Duration,
}

/// CORS as ingress-nginx answers it: `Access-Control-*` headers on the answers for allowed
/// origins, and `OPTIONS` requests answered 204 by Gatehouse.
#[derive(Clone, Debug)]
pub struct Cors {
    /// `None`: any origin (`*`); else the request's `Origin` must match one of these.
    pub origins: Option<regex::Regex>,
    pub methods: String,
    pub headers: String,
    pub expose_headers: String,
    pub credentials: bool,
    /// Seconds.
    pub max_age: u64,
}

impl Cors {
    /// ingress-nginx's defaults.
    pub const DEFAULT_METHODS: &'static str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
    pub const DEFAULT_HEADERS: &'static str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
    pub const DEFAULT_MAX_AGE: u64 = 1_728_000;

    /// CORS for `origins` (a comma-separated list: `*`, or origins such as
    /// `https://app.example.com` and `https://*.example.com`, with optional ports), with
    /// ingress-nginx's defaults for the rest.
    pub fn new(origins: &str) -> Result<Cors, String> {
        let mut patterns = Vec::new();
        for origin in origins.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            if origin == "*" {
                patterns.clear();
                break;
            }
            let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty()
                    && scheme.chars().all(|c| c.is_ascii_alphabetic())
                    && !rest.is_empty()
                    && rest
                        .trim_start_matches("*.")
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
            }) || origin == "null";
            if !valid {
                return Err(format!("`{origin}` is not an origin (`https://app.example.com`, `https://*.example.com`, `*`)"));
            }
            // `*.` stands for one label, as in ingress-nginx.
            patterns.push(regex::escape(origin).replace(r"\*\.", r"[a-z0-9-]+\."));
        }
        let origins = if patterns.is_empty() {
            None
        } else {
            Some(
                regex::Regex::new(&format!("(?i)^(?:{})$", patterns.join("|")))
                    .map_err(|e| e.to_string())?,
            )
        };
        Ok(Cors {
            origins,
            methods: Self::DEFAULT_METHODS.to_owned(),
            headers: Self::DEFAULT_HEADERS.to_owned(),
            expose_headers: String::new(),
            credentials: true,
            max_age: Self::DEFAULT_MAX_AGE,
        })
    }
}

/// Error pages from another service, as ingress-nginx asks its default backend: the
/// request goes there as `/` (with its query), carrying what happened in `X-Code`,
/// `X-Format`, `X-Original-URI`, `X-Namespace`, `X-Ingress-Name`, `X-Service-Name` and
/// `X-Service-Port`; its answer is the client's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorPages {
    pub codes: Vec<u16>,
    pub service: ServiceId,
    /// What the `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`
    /// headers say (empty for a route of the file).
    pub namespace: String,
    pub ingress: String,
    pub service_name: String,
    pub service_port: String,
}

/// External authentication: a subrequest to a service (oauth2-proxy and the like) decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalAuth {
    /// The service the subrequest goes to.
    pub service: ServiceId,
    pub request: AuthRequest,
}

/// What the subrequest to an authentication service is, and what is done with its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRequest {
    /// As written, for messages.
    pub url: String,
    /// Its Host header (the URL's authority).
    pub host: String,
    /// Path and query of the URL.
    pub path: String,
    /// The subrequest's method (GET unless set).
    pub method: http::Method,
    /// On 401, redirect (302) here instead, with the original URL in `signin_param`.
    pub signin: Option<String>,
    pub signin_param: String,
    /// Headers of the service's 2xx answer copied onto the upstream's request.
    pub response_headers: Vec<HeaderName>,
    /// `X-Auth-Request-Redirect` of the subrequest (the request URI unless set).
    pub request_redirect: Option<String>,
    /// Answers remembered per key, so the service is not asked for every request.
    pub cache: Option<crate::AuthCache>,
}

/// An authentication service's URL, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthUrl {
    /// The host without port (a service name, an IP, a `name.namespace.svc` name).
    pub host: String,
    pub port: u16,
    /// `https://`: the service is reached over TLS (with SNI, not verified, as nginx).
    pub tls: bool,
    /// The Host header: the URL's authority.
    pub authority: String,
    /// Path and query.
    pub path: String,
}

impl AuthUrl {
    /// Reads an `http://` or `https://` URL.
    pub fn parse(url: &str) -> Result<AuthUrl, String> {
        let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("`{url}` is not an http:// or https:// URL")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        Ok(AuthUrl {
            host: authority
                .host()
                .trim_matches(['[', ']'])
                .to_ascii_lowercase(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            tls,
            authority: authority.as_str().to_owned(),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// Client certificates a host asks for in the TLS handshake (nginx's `ssl_verify_client`,
/// ingress-nginx's `auth-tls-*`). A host has one: it is asked for before the request, so
/// before any route is known.
#[derive(Clone, Debug)]
pub struct ClientCerts {
    /// The certificate authorities a client certificate must chain to (PEM).
    pub ca: PemSource,
    /// Certificates revoked by those authorities (PEM CRLs).
    pub crl: Option<PemSource>,
    pub verify: VerifyClient,
    /// At most this many certificates above the client's own up to a trusted authority
    /// (nginx's `ssl_verify_depth`; 1: signed by the authority itself).
    pub depth: u32,
    /// The client's certificate goes to the upstream, URL-encoded PEM, in `ssl-client-cert`.
    pub pass_to_upstream: bool,
    /// A client without a valid certificate is redirected (302) here instead of getting 400.
    pub error_page: Option<String>,
    /// The subject (RFC 2253 form, `CN=...,O=...`) must match this (else 403).
    pub match_cn: Option<regex::Regex>,
}

/// Whether a client must show a certificate, as nginx's `ssl_verify_client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerifyClient {
    /// A valid certificate is required (400 without).
    On,
    /// Asked for; a client without one gets in, one with an invalid certificate does not.
    Optional,
    /// Asked for; an unknown issuer is passed on to the upstream (`ssl-client-verify:
    /// FAILED:...`), other failures are refused.
    OptionalNoCa,
    /// Not asked for; the upstream still hears `ssl-client-verify: NONE`.
    Off,
}

impl VerifyClient {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "on" => Ok(VerifyClient::On),
            "optional" => Ok(VerifyClient::Optional),
            "optional_no_ca" => Ok(VerifyClient::OptionalNoCa),
            "off" => Ok(VerifyClient::Off),
            _ => Err(format!(
                "`{s}` is not one of on, optional, optional_no_ca, off"
            )),
        }
    }
}

/// PEM text named by the configuration: a file, or the text itself (from a Secret).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PemSource {
    /// A file, read when the configuration is applied.
    File(PathBuf),
    /// The text, and where it came from (for messages).
    Text { origin: String, pem: String },
    /// It could not be had (an Ingress's Secret that does not exist): the host it protects
    /// fails closed, saying why.
    Unreadable { why: String },
}

impl PemSource {
    /// The text, and what to call it in a message.
    pub fn read(&self) -> Result<(Vec<u8>, String), String> {
        match self {
            PemSource::File(path) => std::fs::read(path)
                .map(|pem| (pem, path.display().to_string()))
                .map_err(|e| format!("cannot read {}: {e}", path.display())),
            PemSource::Text { origin, pem } => Ok((pem.clone().into_bytes(), origin.clone())),
            PemSource::Unreadable { why } => Err(why.clone()),
        }
    }
}

impl std::fmt::Debug for PemSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemSource::File(path) => f.debug_tuple("File").field(path).finish(),
            PemSource::Text { origin, .. } => f.debug_tuple("Text").field(origin).finish(),
            PemSource::Unreadable { why } => f.debug_tuple("Unreadable").field(why).finish(),
        }
    }
}

/// HTTP basic authentication for a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuth {
    /// The realm the browser shows (`WWW-Authenticate: Basic realm="..."`).
    pub realm: String,
    pub users: Htpasswd,
}

/// Where the users and their password hashes are: htpasswd lines (`user:hash`).
#[derive(Clone, PartialEq, Eq)]
pub enum Htpasswd {
    /// A file, read when the configuration is applied.
    File(PathBuf),
    /// The text itself (from a Kubernetes Secret).
    Text(String),
}

impl std::fmt::Debug for Htpasswd {
    /// Never the hashes: configurations are printed in logs and tests.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Htpasswd::File(path) => f.debug_tuple("File").field(path).finish(),
            Htpasswd::Text(text) => write!(f, "Text(<{} lines>)", text.lines().count()),
        }
    }
}

/// A redirect a route answers with (nginx's `return CODE URL`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// Where to: literals and request variables (`https://new.example.com$request_uri`).
    pub to: Template,
    /// 301, 302, 303, 307 or 308 (or another 3xx).
    pub code: u16,
}

impl Redirect {
    /// A redirect to `to` (an absolute `http(s)://` URL or a `/path`, with variables) with
    /// `code`, a 3xx status.
    pub fn new(to: &str, code: u16) -> Result<Redirect, String> {
        if !(300..=308).contains(&code) || code == 304 || code == 305 || code == 306 {
            return Err(format!(
                "`{code}` is not a redirect status; use 301, 302, 303, 307 or 308"
            ));
        }
        let to_lower = to.to_ascii_lowercase();
        let absolute = to_lower.starts_with("http://") || to_lower.starts_with("https://");
        if !absolute && !to.starts_with('/') && !to.starts_with('$') {
            return Err(format!(
                "`{to}` is not a URL; write `https://host/path` or `/path`"
            ));
        }
        Ok(Redirect {
            to: Template::parse(to)?,
            code,
        })
    }
}

/// A response header operation, with nginx's semantics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderOp {
    /// `add_header`: added beside what the upstream sent, on 200, 201, 204, 206, 301, 302,
    /// 303, 304, 307 and 308 answers; with `always`, on every answer, Gatehouse's own
    /// errors included.
    Add {
        name: HeaderName,
        value: HeaderValue,
        always: bool,
    },
    /// `more_set_headers`: replaces the header on every answer.
    Set {
        name: HeaderName,
        value: HeaderValue,
    },
    /// `more_clear_headers`: removes the header from every answer.
    Clear { name: HeaderName },
}

/// What `Strict-Transport-Security` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hsts {
    /// Sent at all (ingress-nginx's `hsts: "false"` turns it off).
    pub enabled: bool,
    pub max_age: Duration,
    pub include_subdomains: bool,
    pub preload: bool,
}

impl Default for Hsts {
    /// SPEC.md's: a year, this host only.
    fn default() -> Self {
        Hsts {
            enabled: true,
            max_age: Duration::from_secs(31_536_000),
            include_subdomains: false,
            preload: false,
        }
    }
}

impl Hsts {
    /// The header's value.
    pub fn header_value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age.as_secs());
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

/// Limits per client address on one route, counted per replica (as in ingress-nginx).
#[derive(Clone, Debug)]
pub struct ClientLimits {
    /// Requests per second, with `rps × burst_multiplier` more at once (nginx `nodelay`).
    pub rps: Option<u32>,
    /// Requests per minute, with `rpm × burst_multiplier` more at once; both may apply.
    pub rpm: Option<u32>,
    pub burst_multiplier: u32,
    /// Requests of one client in flight at once.
    pub connections: Option<u32>,
    /// Clients no limit applies to.
    pub whitelist: CidrSet,
}

impl ClientLimits {
    /// ingress-nginx's `limit-burst-multiplier` default.
    pub const DEFAULT_BURST_MULTIPLIER: u32 = 5;
}

/// How limited clients are answered, and how many are remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitSettings {
    /// 429 (with Retry-After), or 503 as ingress-nginx answers by default.
    pub status: u16,
    /// Client addresses one route's rate limits remember at most; idle ones go first.
    pub max_clients: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            status: 429,
            max_clients: 100_000,
        }
    }
}

/// A route's own timeouts; `None` takes the configuration's [`Timeouts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteTimeouts {
    pub connect: Option<Duration>,
    pub upstream_response: Option<Duration>,
    pub upstream_read: Option<Duration>,
    pub upstream_send: Option<Duration>,
    pub tunnel_idle: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(3),
            request_header: Duration::from_secs(10),
            upstream_response: Duration::from_secs(60),
            upstream_read: Duration::from_secs(60),
            upstream_send: Duration::from_secs(60),
            client_body: Duration::from_secs(60),
            client_write: Duration::from_secs(60),
            tunnel_idle: Duration::from_secs(600),
            idle: Duration::from_secs(60),
        }
    }
}

/// How a SIGTERM is turned into a clean exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shutdown {
    /// Time between /readyz turning 503 and the listeners closing.
    pub drain_delay: Duration,
    /// Time in-flight requests get after the listeners close.
    pub grace_period: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            drain_delay: Duration::from_secs(5),
            grace_period: Duration::from_secs(30),
        }
    }
}

/// Where access log lines go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLog {
    #[default]
    Stdout,
    Off,
}

/// Worker threads of the data plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Workers {
    /// As many as the CPUs this process may use.
    #[default]
    Auto,
    Count(usize),
}

/// Index of a service in [`Config::services`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub usize);

/// A named pool of endpoints.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    /// Fixed endpoints (VMs, bare metal).
    pub endpoints: Vec<SocketAddr>,
    /// Endpoints written as names: their addresses, resolved and re-resolved by their
    /// TTL, are published like discovered endpoints.
    pub names: Vec<NamedEndpoint>,
    /// Endpoints from a Kubernetes Service's EndpointSlices, besides the fixed ones.
    pub kubernetes: Option<KubernetesRef>,
    pub balance: Balance,
    /// Session affinity by cookie; it decides before `balance` for clients with a cookie.
    pub affinity: Option<Affinity>,
    pub limits: ConnectionLimits,
    /// How requests reach the endpoints: HTTP/1.1, in the clear or over TLS.
    pub protocol: UpstreamProtocol,
    /// Active checks of every endpoint: one that fails them leaves rotation until it
    /// passes them again.
    pub health: Option<HealthCheck>,
}

/// An active health check (HAProxy's `check`, Envoy's health checking).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    /// Between two checks of one endpoint.
    pub interval: Duration,
    /// A check without an answer within this fails.
    pub timeout: Duration,
    /// Consecutive passes that bring a failed endpoint back.
    pub rise: u32,
    /// Consecutive failures that take an endpoint out.
    pub fall: u32,
}

/// What a health check asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection (and the TLS handshake, for `protocol: https`) opens.
    Tcp,
    /// `GET path` answers a status within `expect` (inclusive).
    Http {
        path: String,
        /// The Host header; the endpoint's address without one.
        host: Option<String>,
        expect: (u16, u16),
    },
}

/// An endpoint written as a DNS name and a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedEndpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for NamedEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl NamedEndpoint {
    /// Reads `name:port`, the name a DNS name (letters, digits, `-`, `.`).
    pub fn parse(text: &str) -> Result<NamedEndpoint, String> {
        let bad = || {
            format!(
                "`{text}` is not IP:port or name:port (\"10.1.2.3:8080\", \"db.internal:5432\")"
            )
        };
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(bad)?;
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !l.starts_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(bad());
        }
        Ok(NamedEndpoint { host, port })
    }
}

/// Connections to upstream endpoints kept for reuse (nginx's `keepalive`,
/// `keepalive_timeout`, `keepalive_requests`; ingress-nginx's `upstream-keepalive-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamKeepalive {
    /// Idle connections kept per endpoint.
    pub connections: usize,
    /// An idle connection older than this is closed (and never reused).
    pub timeout: Duration,
    /// A connection that carried this many requests is closed (0: no bound).
    pub requests: u32,
}

impl Default for UpstreamKeepalive {
    fn default() -> Self {
        // 4 s idle: below the keep-alive timeouts of common upstream servers (Node.js 5 s),
        // so Gatehouse closes first instead of racing the upstream's close.
        UpstreamKeepalive {
            connections: 256,
            timeout: Duration::from_secs(4),
            requests: 0,
        }
    }
}

/// How endpoint names are resolved (nginx's `resolver`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Name servers to ask; empty: the system's (`/etc/resolv.conf`, `/etc/hosts`).
    pub servers: Vec<SocketAddr>,
    /// How long an answer is used, whatever its TTL says (nginx's `valid=`).
    pub valid: Option<Duration>,
}

/// The protocol spoken to a service's endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/1.1 over TLS.
    Https(UpstreamTls),
    /// HTTP/2 in the clear, prior knowledge (`h2c`, gRPC without TLS).
    H2c,
    /// HTTP/2 over TLS, ALPN `h2` (`h2`, gRPC over TLS).
    H2(UpstreamTls),
}

impl UpstreamProtocol {
    /// The TLS settings, when the endpoints are reached over TLS.
    pub fn tls(&self) -> Option<&UpstreamTls> {
        match self {
            UpstreamProtocol::Https(tls) | UpstreamProtocol::H2(tls) => Some(tls),
            UpstreamProtocol::Http1 | UpstreamProtocol::H2c => None,
        }
    }

    /// Whether requests go over HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self, UpstreamProtocol::H2c | UpstreamProtocol::H2(_))
    }
}

/// TLS to a service's endpoints (nginx's `proxy_ssl_*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// The name checked against the certificate when verifying, and sent as SNI with
    /// `sni`.
    pub server_name: Option<String>,
    /// Send `server_name` as SNI (nginx's `proxy_ssl_server_name`).
    pub sni: bool,
    /// Authorities the endpoints' certificates must chain to; `None` verifies nothing, as
    /// nginx's `proxy_ssl_verify off` (its default).
    pub verify: Option<PemSource>,
    /// At most this many certificates above the endpoint's up to a trusted authority
    /// (nginx's `proxy_ssl_verify_depth`, default 1).
    pub depth: u32,
    /// The certificate and key Gatehouse shows the endpoints (mTLS to the pod).
    pub client_cert: Option<(PemSource, PemSource)>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            server_name: None,
            sni: false,
            verify: None,
            depth: 1,
            client_cert: None,
        }
    }
}

/// How much of each endpoint one service may take (Envoy's circuit breakers): beyond
/// them a request waits briefly, then gets 503, instead of opening ever more connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open to one endpoint, busy and idle.
    pub max_connections: usize,
    /// Requests waiting for a connection to one endpoint at `max_connections`.
    pub max_pending: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        // Envoy's defaults.
        ConnectionLimits {
            max_connections: 1024,
            max_pending: 1024,
        }
    }
}

/// A Kubernetes Service port whose ready endpoints join a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KubernetesRef {
    pub namespace: String,
    pub name: String,
    pub port: ServicePort,
}

/// A Service port, by name or by number (the Service's port, not the pods').
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServicePort {
    Name(String),
    Number(u16),
    /// The Service's first port (ingress-nginx's `default-backend` takes that one).
    First,
}

/// How a service picks an endpoint for a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Power of two random choices on in-flight requests.
    LeastRequest,
    /// Power of two random choices on each endpoint's recent latency (an exponentially
    /// weighted moving average, 10 s decay) times its requests in flight.
    Ewma,
    /// Consistent hashing of a request key (ingress-nginx's `upstream-hash-by`): the same
    /// key reaches the same endpoint, and an endpoint leaving moves only its own keys.
    Hash(Template),
}

/// Session affinity by cookie (ingress-nginx's `affinity: cookie`): a client that carries
/// the cookie returns to the endpoint that served it first.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Affinity {
    /// The cookie's name (ingress-nginx's default `INGRESSCOOKIE`).
    pub cookie: String,
    /// The cookie's Path; by default the path of the rule that served the request.
    pub path: Option<String>,
    pub domain: Option<String>,
    /// Max-Age, in seconds.
    pub max_age: Option<u64>,
    /// Expires, as seconds from the response.
    pub expires: Option<u64>,
    pub samesite: Option<SameSite>,
    /// Secure; by default only on requests that came over TLS.
    pub secure: Option<bool>,
    /// When the cookie's endpoint fails, the cookie moves to the endpoint that answered.
    pub change_on_failure: bool,
    pub mode: AffinityMode,
    /// Keys the persistent mode's cookie values; replicas that share it understand each
    /// other's cookies. `None`: a random key per process.
    pub key: Option<String>,
}

impl Affinity {
    /// ingress-nginx's default cookie name.
    pub const DEFAULT_COOKIE: &'static str = "INGRESSCOOKIE";

    /// Affinity with ingress-nginx's defaults.
    pub fn new() -> Self {
        Affinity {
            cookie: Self::DEFAULT_COOKIE.to_owned(),
            path: None,
            domain: None,
            max_age: None,
            expires: None,
            samesite: None,
            secure: None,
            change_on_failure: false,
            mode: AffinityMode::Balanced,
            key: None,
        }
    }
}

impl Default for Affinity {
    fn default() -> Self {
        Self::new()
    }
}

/// How sticky a session is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AffinityMode {
    /// The cookie holds a random key, consistently hashed over the endpoints: when they
    /// scale, a share of sessions moves so new endpoints get their part.
    #[default]
    Balanced,
    /// The cookie names its endpoint (keyed, so it reveals no address): a session stays
    /// while the endpoint exists.
    Persistent,
}

/// A cookie's SameSite attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    /// Parses `Strict`, `Lax` or `None`, in any case.
    pub fn parse(text: &str) -> Result<SameSite, String> {
        match text.to_ascii_lowercase().as_str() {
            "strict" => Ok(SameSite::Strict),
            "lax" => Ok(SameSite::Lax),
            "none" => Ok(SameSite::None),
            _ => Err(format!("`{text}` is not one of `Strict`, `Lax`, `None`")),
        }
    }

    /// As the attribute is written.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// Requests above this body size get 413 unless a route says otherwise (nginx's default).
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

/// Everything that applies to one host.
#[derive(Clone, Debug)]
pub struct Route {
    pub host: HostPattern,
    /// Client networks allowed; empty allows everyone.
    pub allow: CidrSet,
    /// Client networks refused (403), whatever `allow` says.
    pub deny: CidrSet,
    /// Every request of the route is answered with this redirect instead of being served.
    pub redirect: Option<Redirect>,
    /// A request for `/` is redirected (302) to this path (ingress-nginx's `app-root`).
    pub app_root: Option<String>,
    /// Requests need a user and password of this list (HTTP basic authentication).
    pub basic_auth: Option<BasicAuth>,
    /// Cross-origin requests the route answers for browsers (ingress-nginx's `enable-cors`).
    pub cors: Option<Cors>,
    /// Upstream answers with these statuses are replaced by an error service's (ingress-nginx's
    /// `custom-http-errors` with `default-backend`).
    pub error_pages: Option<ErrorPages>,
    /// Each request is first asked of an authentication service (nginx's `auth_request`,
    /// ingress-nginx's `auth-url`).
    pub external_auth: Option<ExternalAuth>,
    /// Client certificates the route's host asks for in the TLS handshake.
    pub client_certs: Option<ClientCerts>,
    /// TLS connections whose SNI names the host go unterminated to the service of its `/`
    /// path (ingress-nginx's `ssl-passthrough`).
    pub passthrough: bool,
    /// Plaintext requests are redirected to HTTPS (when the host has a valid certificate).
    pub https_redirect: bool,
    /// Redirect even without a certificate here: TLS ends at a load balancer in front
    /// (ingress-nginx's `force-ssl-redirect`).
    pub force_https_redirect: bool,
    /// The HTTPS redirect keeps a trailing `/` of the request URI: always from the file;
    /// from an Ingress only with `preserve-trailing-slash`, as ingress-nginx.
    pub redirect_keeps_trailing_slash: bool,
    /// Why this route answers 503 instead of serving (an Ingress whose annotations cannot be
    /// honoured fails closed); `None` for a route that serves.
    pub unavailable: Option<String>,
    pub max_body: u64,
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Header operations from an Ingress's `configuration-snippet`, in order.
    pub header_ops: Vec<HeaderOp>,
    /// Headers set on the upstream's request (nginx's `proxy_set_header`), values built
    /// from request variables; an empty value removes the header.
    pub request_headers: Vec<(HeaderName, Template)>,
    pub timeouts: RouteTimeouts,
    /// When a failed request goes to another endpoint.
    pub retry: Retry,
    /// Per-client rate and concurrency limits (ingress-nginx's limit-* annotations).
    pub limits: Option<ClientLimits>,
    pub paths: Vec<PathRule>,
    /// Where the route is written, for messages about it.
    pub location: Location,
}

/// How a path rule compares with the request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathMatch {
    Exact,
    /// By path element, as in the Ingress API.
    Prefix,
    /// A regular expression anchored at the start of the path.
    Regex,
}

/// One `paths` entry of a route.
#[derive(Clone, Debug)]
pub struct PathRule {
    pub path: String,
    pub kind: PathMatch,
    pub service: ServiceId,
    pub rewrite: Option<String>,
    /// A share of the path's requests for another service (a gray release).
    pub canary: Option<Canary>,
}

/// Which requests of a path go to the canary service instead, as ingress-nginx decides:
/// the header first, then the cookie, then the weight.
#[derive(Clone, Debug)]
pub struct Canary {
    pub service: ServiceId,
    /// `header: always` sends to the canary, `never` keeps the main service; with `value`
    /// (or `pattern`) only that value does, and any other falls through to the cookie.
    pub header: Option<CanaryHeader>,
    /// A cookie whose value `always` or `never` decides; other values fall through.
    pub cookie: Option<String>,
    /// `weight` out of `weight_total` of the rest go to the canary.
    pub weight: u32,
    pub weight_total: u32,
}

/// The header a canary is chosen by.
#[derive(Clone, Debug)]
pub struct CanaryHeader {
    pub name: HeaderName,
    pub value: Option<String>,
    /// Matched against the whole value.
    pub pattern: Option<regex::Regex>,
}

/// The transport an L4 listener forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for L4Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            L4Protocol::Tcp => "tcp",
            L4Protocol::Udp => "udp",
        })
    }
}

/// Connections (TCP) or sessions (UDP) an L4 listener holds at once, unless it says.
pub const DEFAULT_L4_MAX: usize = 10_000;
/// A TCP connection with no byte either way for this long is closed (nginx's stream
/// `proxy_timeout` default).
pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(600);
/// A UDP session with no datagram either way for this long ends.
pub const DEFAULT_UDP_IDLE: Duration = Duration::from_secs(30);

/// One `l4` entry: a raw TCP or UDP port forwarded to a service's endpoints.
#[derive(Clone, Debug)]
pub struct L4Listener {
    pub listen: SocketAddr,
    pub protocol: L4Protocol,
    pub service: ServiceId,
    /// Client networks allowed; empty allows everyone.
    pub allow: CidrSet,
    /// Expect a PROXY v1/v2 header from the peer (a load balancer in `trusted_proxies`),
    /// whose source address is then the client (TCP only).
    pub proxy_protocol: bool,
    /// Send a PROXY v2 header to the upstream so it sees the real client (TCP only).
    pub proxy_protocol_upstream: bool,
    /// Most concurrent TCP connections (further ones wait in the kernel's accept queue), or
    /// most UDP sessions (the least recently active is evicted for a new one).
    pub max: usize,
    /// No traffic either way for this long ends a connection or session.
    pub idle: Duration,
    /// Where the entry is written (or the ConfigMap it came from).
    pub location: Location,
}

impl L4Listener {
    /// How the listener is named in logs and metrics: `tcp/0.0.0.0:5432`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.protocol, self.listen)
    }
}
