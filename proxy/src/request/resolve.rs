//! Resolve: what a request is for, decided once. One host (absolute-form wins over Host,
//! RFC 9112 §3.2.2), the normalised path, the route and service they select. Every later
//! step, the upstream and the access log see these and nothing else.

use std::borrow::Cow;

use gatehouse_config::{routing::normalize_host, Route, RouteMatch, ServiceId, DEFAULT_MAX_BODY};
use http::{header, HeaderValue, Request, Version};

use crate::{
    client::Client, conn::ConnInfo, error::ProxyError, policy::canary, snapshot::Snapshot,
    vars::RequestVars,
};

/// One request, resolved: the context every later step reads.
pub(crate) struct Resolved<'s, 'r> {
    pub(crate) snapshot: &'s Snapshot,
    pub(crate) conn: &'r ConnInfo,
    pub(crate) client: &'r Client,
    /// The host the request is for, lowercased, without port.
    pub(crate) host: Cow<'r, str>,
    /// The Host header the upstream gets: the host that was routed, as written.
    pub(crate) host_header: HeaderValue,
    /// The normalised path: what is routed, checked, logged and (unless rewritten) forwarded.
    pub(crate) path: &'r str,
    pub(crate) target: Target<'s>,
}

impl Resolved<'_, '_> {
    /// The request variables of templates, for `req` (the request this was resolved from).
    pub(crate) fn vars<'a, B>(&'a self, req: &'a Request<B>) -> RequestVars<'a> {
        RequestVars {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            path: self.path,
            host: &self.host,
            client: self.client.ip,
            tls: self.conn.tls.is_some(),
        }
    }
}

/// Where a resolved request goes.
pub(crate) struct Target<'s> {
    /// The matched route and rule; `None` for the default service.
    pub(crate) route: Option<(&'s Route, RouteMatch)>,
    pub(crate) service: ServiceId,
    /// Index of the stats the request counts in ([`Snapshot::stats`]).
    pub(crate) stats: usize,
    pub(crate) max_body: u64,
}

/// A step refused the request: why, and the stats it counts in.
pub(crate) struct Refused {
    pub(crate) error: ProxyError,
    pub(crate) stats: usize,
}

impl Refused {
    pub(crate) fn new(error: ProxyError, stats: usize) -> Self {
        Refused { error, stats }
    }
}

/// Resolves `req` on `conn`, whose normalised path is `path`.
pub(crate) fn resolve<'s, 'r, B>(
    snapshot: &'s Snapshot,
    conn: &'r ConnInfo,
    client: &'r Client,
    req: &'r Request<B>,
    path: &'r str,
) -> Result<Resolved<'s, 'r>, Refused> {
    let none = snapshot.none_stats();
    let (raw_host, host_header) = authoritative_host(req).map_err(|e| Refused::new(e, none))?;
    let host = normalize_host(raw_host);
    if let Some(tls) = &conn.tls {
        // A connection whose certificate does not serve this host may not carry requests for
        // a host that another certificate serves (RFC 9110 §15.5.20).
        let presented_serves = tls.cert.as_ref().is_some_and(|c| c.serves(&host));
        if !presented_serves && snapshot.certs.lookup(&host).is_some() {
            let error = ProxyError::Misdirected {
                host: host.into_owned(),
            };
            return Err(Refused::new(error, none));
        }
    }
    let config = &snapshot.config;
    let target = match snapshot.table.find(&host, path) {
        Some(m) => {
            let route = &config.routes[m.route];
            let rule = &route.paths[m.rule];
            let service = match &rule.canary {
                Some(c) => {
                    let to_canary = canary::chooses_canary(c, req.headers());
                    snapshot.stats(m.route).canary(to_canary);
                    if to_canary {
                        c.service
                    } else {
                        rule.service
                    }
                }
                None => rule.service,
            };
            Target {
                route: Some((route, m)),
                service,
                stats: m.route,
                max_body: route.max_body,
            }
        }
        None => match config.default_service {
            Some(service) => Target {
                route: None,
                service,
                stats: snapshot.default_stats(),
                max_body: DEFAULT_MAX_BODY,
            },
            None => {
                let error = ProxyError::NoRoute {
                    host: host.into_owned(),
                };
                return Err(Refused::new(error, none));
            }
        },
    };
    Ok(Resolved {
        snapshot,
        conn,
        client,
        host,
        host_header,
        path,
        target,
    })
}

/// The host a request is for, as written, for the access log of a request that may not
/// resolve: the URI's authority (HTTP/2's `:authority`, or an absolute-form target), else
/// the Host header.
pub(crate) fn written_host<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

/// The one host a request is for and the Host header the upstream gets: what is routed is
/// what is forwarded. Two Host headers, or an HTTP/2 Host that contradicts `:authority`,
/// leave no one host to believe: 400.
fn authoritative_host<B>(req: &Request<B>) -> Result<(&str, HeaderValue), ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(ProxyError::AmbiguousHost {
            why: "more than one Host header",
        });
    }
    match req.uri().authority() {
        Some(authority) => {
            let contradicts = first.is_some_and(|h| {
                !h.as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes())
            });
            if req.version() == Version::HTTP_2 && contradicts {
                return Err(ProxyError::AmbiguousHost {
                    why: "the Host header differs from :authority",
                });
            }
            let forwarded =
                HeaderValue::from_str(authority.as_str()).map_err(|_| ProxyError::MissingHost)?;
            Ok((authority.as_str(), forwarded))
        }
        None => {
            let header = first.ok_or(ProxyError::MissingHost)?;
            let host = header.to_str().map_err(|_| ProxyError::MissingHost)?;
            Ok((host, header.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, target: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri(target);
        for h in hosts {
            builder = builder.header(header::HOST, *h);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn one_host_is_routed_and_forwarded_or_the_request_is_400() {
        const HTTP_11: Version = Version::HTTP_11;
        const HTTP_2: Version = Version::HTTP_2;
        // (version, target, Host headers, routed and forwarded host, or None for 400)
        let cases: &[(Version, &str, &[&str], Option<&str>)] = &[
            (HTTP_11, "/", &["a.test"], Some("a.test")),
            (
                HTTP_11,
                "http://www.test/",
                &["admin.test"],
                Some("www.test"),
            ),
            (
                HTTP_11,
                "http://www.test:8080/x",
                &[],
                Some("www.test:8080"),
            ),
            (HTTP_11, "/", &["a.test", "b.test"], None),
            (HTTP_11, "/", &["a.test", "a.test"], None),
            (HTTP_11, "/", &[], None),
            (HTTP_2, "https://a.test/", &[], Some("a.test")),
            (HTTP_2, "https://a.test/", &["A.TEST"], Some("a.test")),
            (HTTP_2, "https://a.test/", &["admin.test"], None),
        ];
        for (version, target, hosts, want) in cases {
            let req = request(*version, target, hosts);
            let got = authoritative_host(&req);
            match (want, got) {
                (Some(want), Ok((routed, forwarded))) => {
                    assert_eq!(routed, *want, "{target} {hosts:?}");
                    assert_eq!(forwarded, *want, "what is routed is forwarded");
                }
                (None, Err(e)) => assert_eq!(e.status(), http::StatusCode::BAD_REQUEST),
                (want, got) => panic!(
                    "{target} {hosts:?}: want {want:?}, got {:?}",
                    got.map(|g| g.0)
                ),
            }
        }
    }

    proptest::proptest! {
        /// Whatever the client writes, the resolver does not panic, and when it accepts,
        /// the Host the upstream gets names the host that was routed.
        #[test]
        fn the_forwarded_host_is_the_routed_one(
            authority in proptest::option::of("[a-zA-Z0-9.:-]{1,20}"),
            hosts in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..20), 0..3),
            h2 in proptest::bool::ANY,
        ) {
            let target = authority.as_ref().map_or("/".to_owned(), |a| format!("http://{a}/"));
            let Ok(uri) = target.parse::<http::Uri>() else { return Ok(()) };
            let mut req = Request::new(());
            *req.uri_mut() = uri;
            *req.version_mut() = if h2 { Version::HTTP_2 } else { Version::HTTP_11 };
            for h in &hosts {
                if let Ok(v) = HeaderValue::from_bytes(h) {
                    req.headers_mut().append(header::HOST, v);
                }
            }
            if let Ok((routed, forwarded)) = authoritative_host(&req) {
                proptest::prop_assert_eq!(routed.as_bytes(), forwarded.as_bytes());
                proptest::prop_assert!(req.headers().get_all(header::HOST).iter().count() <= 1);
            }
        }
    }
}
