//! Why a request could not be proxied, and the one place that maps that to a status code.

use std::{net::SocketAddr, time::Duration};

use http::StatusCode;

/// A request that did not get an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route for host `{host}` and no default_service")]
    NoRoute { host: String },
    #[error("client {client} is not in the allow-list of `{route}`")]
    NotAllowed {
        client: std::net::IpAddr,
        route: String,
    },
    #[error("host `{host}` is served by another certificate than this connection's")]
    Misdirected { host: String },
    #[error("plaintext request for a host with forced HTTPS")]
    RedirectToHttps { location: http::HeaderValue },
    #[error("route `{route}` needs a user and password")]
    Unauthorized {
        route: String,
        challenge: http::HeaderValue,
    },
    #[error("host `{host}` needs a valid client certificate ({})", if *.missing { "none was sent" } else { "the one sent is not valid" })]
    ClientCertificate { host: String, missing: bool },
    #[error("the client certificate's subject is not one host `{host}` accepts")]
    ClientCertificateUnauthorized { host: String },
    #[error("the authentication service refused the request ({status})")]
    AuthDenied {
        status: StatusCode,
        headers: http::HeaderMap,
    },
    #[error("authentication service {url} failed: {why}")]
    AuthServiceFailed { url: String, why: String },
    #[error("a CORS preflight, answered here")]
    Preflight,
    #[error("the route redirects")]
    Redirect {
        location: http::HeaderValue,
        status: StatusCode,
    },
    #[error("route `{route}` is out of service: {reason}")]
    Unavailable { route: String, reason: String },
    #[error("request has no Host header")]
    MissingHost,
    #[error("no single host to route by: {why}")]
    AmbiguousHost { why: &'static str },
    #[error("bad request path: {0}")]
    BadPath(#[from] crate::path::BadPath),
    #[error("service `{service}` has no endpoint")]
    NoEndpoint { service: String },
    #[error("could not connect to any endpoint of service `{service}` (last: {addr})")]
    ConnectFailed {
        service: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("endpoint {addr} of service `{service}` sent no response head within {after:?}")]
    UpstreamTimeout {
        service: String,
        addr: SocketAddr,
        after: Duration,
    },
    #[error("endpoint {addr} of service `{service}` took none of the request body for {after:?}")]
    UpstreamSendTimeout {
        service: String,
        addr: SocketAddr,
        after: Duration,
    },
    #[error("the client sent none of its request body for {after:?}")]
    ClientBodyTimeout { after: Duration },
    #[error("endpoint {addr} of service `{service}` failed the request")]
    Upstream {
        service: String,
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("endpoint {addr} of service `{service}` switched protocols without being asked")]
    UnaskedUpgrade { service: String, addr: SocketAddr },
    #[error("request body is larger than the route's max_body of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("endpoint {addr} of service `{service}` has all its {max_connections} connections busy and as many requests waiting as allowed (raise the service's max_connections or max_pending if it can take more)")]
    Overloaded {
        service: String,
        addr: SocketAddr,
        max_connections: usize,
    },
    #[error("client over the {kind} limit of `{route}`; may retry after {retry_after:?}")]
    Limited {
        route: String,
        kind: &'static str,
        retry_after: Duration,
        /// 429, or 503 as ingress-nginx answers.
        status: u16,
    },
    #[error("out of file descriptors for a new upstream connection (raise the open-files limit, ulimit -n)")]
    OutOfDescriptors {
        #[source]
        source: std::io::Error,
    },
}

impl ProxyError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::MissingHost | ProxyError::AmbiguousHost { .. } | ProxyError::BadPath(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::RedirectToHttps { .. } => StatusCode::PERMANENT_REDIRECT,
            ProxyError::Redirect { status, .. } => *status,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::Preflight => StatusCode::NO_CONTENT,
            ProxyError::AuthDenied { status, .. } => *status,
            ProxyError::AuthServiceFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::ClientCertificate { .. } => StatusCode::BAD_REQUEST,
            ProxyError::ClientCertificateUnauthorized { .. } => StatusCode::FORBIDDEN,
            ProxyError::NotAllowed { .. } => StatusCode::FORBIDDEN,
            ProxyError::NoEndpoint { .. }
            | ProxyError::Unavailable { .. }
            | ProxyError::OutOfDescriptors { .. }
            | ProxyError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectFailed { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UnaskedUpgrade { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } | ProxyError::UpstreamSendTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::ClientBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Limited { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::TOO_MANY_REQUESTS)
            }
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// Whether the failure is the upstream's (worth a warning to the operator) rather than
    /// the client's.
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            ProxyError::NoEndpoint { .. }
                | ProxyError::ConnectFailed { .. }
                | ProxyError::UpstreamTimeout { .. }
                | ProxyError::UpstreamSendTimeout { .. }
                | ProxyError::Upstream { .. }
                | ProxyError::UnaskedUpgrade { .. }
        )
    }
}
