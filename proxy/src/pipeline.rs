//! The request pipeline, in order: find the host and path, check the body size, rewrite
//! the request for the upstream, forward it, fix up the response.

use std::{borrow::Cow, convert::Infallible, sync::Arc, time::SystemTime};

use gatehouse_config::{routing::normalize_host, AccessLog, DEFAULT_MAX_BODY};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::{
    access_log::LogRecord,
    body::{RequestBody, ResponseBody},
    client::Client,
    completion::Completion,
    conn::ConnInfo,
    error::ProxyError,
    headers, path, redirect,
    runtime::Shared,
    snapshot::Snapshot,
    upstream::{forward::forward, Lease},
};

/// Serves one request from a client connection. Never fails: every error becomes a response.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    conn.state.request_started();
    let start = Instant::now();
    let snapshot = shared.snapshot.load_full();
    let client = Client::resolve(&conn, req.headers(), &snapshot.config.trusted_proxies);
    // Normalised once, here: routing, policy, the upstream and the log all see this path.
    // `None` while the path is normal already (no allocation).
    let normalized = path::normalize(req.uri().path()).map(|p| match p {
        Cow::Borrowed(_) => None,
        Cow::Owned(p) => Some(p),
    });
    let mut log = (snapshot.config.access_log == AccessLog::Stdout).then(|| {
        Box::new(LogRecord {
            time: SystemTime::now(),
            client: client.ip,
            method: req.method().clone(),
            host: request_host(&req).unwrap_or_default().to_owned(),
            path: match &normalized {
                Ok(Some(p)) => p.clone(),
                _ => req.uri().path().to_owned(),
            },
            version: req.version(),
            upstream: None,
            upstream_time: None,
            tls: conn.tls.as_ref().map(|t| t.version),
        })
    });
    let version = req.version();
    let proxied = match normalized {
        Ok(normalized) => proxy(&shared, &snapshot, &conn, &client, normalized, req).await,
        Err(bad) => Err((ProxyError::BadPath(bad), snapshot.none_stats())),
    };
    let (mut response, stats, lease) = match proxied {
        Ok(Proxied {
            response,
            stats,
            lease,
            upstream_time,
        }) => {
            if let Some(log) = log.as_mut() {
                log.upstream = Some(lease.addr());
                log.upstream_time = Some(upstream_time);
            }
            (response, stats, Some(lease))
        }
        Err((error, stats)) => {
            if error.is_upstream() {
                tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), "upstream failed; answering {}", error.status());
            } else if let ProxyError::OutOfDescriptors { .. } = error {
                tracing::warn!(error = %error, "no upstream connection could be opened here; answering 503, no endpoint blamed");
            }
            (error_response(&error), stats, None)
        }
    };
    // From the start of the drain every HTTP/1 answer closes its connection, so keep-alive
    // clients move on now instead of losing a request when the listener closes.
    if version < Version::HTTP_2
        && response.status() != StatusCode::SWITCHING_PROTOCOLS
        && shared
            .drain_started
            .load(std::sync::atomic::Ordering::Relaxed)
    {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = response.status().as_u16();
    response.body_mut().complete_with(Box::new(Completion {
        snapshot,
        stats,
        conn,
        status,
        bytes: 0,
        start: start.into_std(),
        lease,
        log,
    }));
    Ok(response)
}

struct Proxied {
    response: Response<ResponseBody>,
    stats: usize,
    lease: Lease,
    upstream_time: std::time::Duration,
}

/// The host a request is for, as written: the URI's authority (HTTP/2's `:authority`, or
/// an absolute-form target, which wins over Host: RFC 9112 §3.2.2), else the Host header.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
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

async fn proxy(
    shared: &Shared,
    snapshot: &Snapshot,
    conn: &ConnInfo,
    client: &Client,
    normalized: Option<String>,
    mut req: Request<Incoming>,
) -> Result<Proxied, (ProxyError, usize)> {
    let none = snapshot.none_stats();
    let (raw_host, host_header) = authoritative_host(&req).map_err(|e| (e, none))?;
    let host = normalize_host(raw_host);
    if let Some(tls) = &conn.tls {
        // A connection whose certificate does not serve this host may not carry requests for
        // a host that another certificate serves (RFC 9110 §15.5.20).
        let presented_serves = tls.cert.as_ref().is_some_and(|c| c.serves(&host));
        if !presented_serves && snapshot.certs.lookup(&host).is_some() {
            return Err((
                ProxyError::Misdirected {
                    host: host.into_owned(),
                },
                none,
            ));
        }
    }
    let path = normalized.as_deref().unwrap_or_else(|| req.uri().path());
    let found = snapshot.table.find(&host, path);
    let config = &snapshot.config;
    let (service, stats, max_body, rewritten) = match found {
        Some(m) => {
            let route = &config.routes[m.route];
            // A route that cannot honour its policy serves nothing (fails closed).
            if let Some(reason) = &route.unavailable {
                return Err((
                    ProxyError::Unavailable {
                        route: route.host.to_string(),
                        reason: reason.clone(),
                    },
                    m.route,
                ));
            }
            // The allow-list comes before anything else the route does.
            if !route.allow.is_empty() && !route.allow.contains(client.ip) {
                shared.metrics.deny("allowlist");
                return Err((
                    ProxyError::NotAllowed {
                        client: client.ip,
                        route: route.host.to_string(),
                    },
                    m.route,
                ));
            }
            if let Some(location) = redirect::https_location(
                snapshot,
                shared.https_port.load(std::sync::atomic::Ordering::Relaxed),
                route,
                &host,
                conn,
                client,
                req.headers(),
                req.uri(),
            ) {
                return Err((ProxyError::RedirectToHttps { location }, m.route));
            }
            let rule = &route.paths[m.rule];
            let rewritten = rule
                .rewrite
                .as_deref()
                .map(|rw| snapshot.table.rewrite(&m, rw, path));
            (rule.service, m.route, route.max_body, rewritten)
        }
        None => match config.default_service {
            Some(s) => (s, snapshot.default_stats(), DEFAULT_MAX_BODY, None),
            None => {
                return Err((
                    ProxyError::NoRoute {
                        host: host.into_owned(),
                    },
                    none,
                ))
            }
        },
    };
    let hsts =
        found.is_some_and(|m| redirect::wants_hsts(snapshot, &config.routes[m.route], &host, conn));
    let too_large = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > max_body);
    if too_large {
        return Err((ProxyError::BodyTooLarge { limit: max_body }, stats));
    }

    // The request for the upstream: origin-form URI, HTTP/1.1, forwarded headers.
    let upgrade = headers::upgrade_request(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // What was matched is what is served: the rewrite of the normalised path, or that path.
    parts.uri = upstream_uri(parts.uri, rewritten.or(normalized).as_deref());
    parts.version = Version::HTTP_11;
    headers::to_upstream(&mut parts.headers, conn, client, host_header, upgrade);
    let upstream_req = Request::from_parts(parts, RequestBody::new(body, max_body));

    let upstream = &snapshot.upstreams[service.0];
    let forwarded = forward(upstream, upstream_req, &snapshot.limits, &shared.metrics)
        .await
        .map_err(|e| (e, stats))?;
    let (mut parts, body) = forwarded.response.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    let extra = found.map_or(&[][..], |m| &config.routes[m.route].response_headers[..]);
    headers::to_client(&mut parts.headers, switching, extra);
    if hsts {
        parts
            .headers
            .insert(header::STRICT_TRANSPORT_SECURITY, redirect::HSTS.clone());
    }
    let mut lease = forwarded.lease;
    if switching {
        let mut upstream_response = Response::from_parts(parts.clone(), body);
        match client_upgrade {
            Some(client) => {
                let upstream_upgrade = hyper::upgrade::on(&mut upstream_response);
                shared.tunnels.spawn(tunnel(client, upstream_upgrade));
            }
            None => {
                return Err((
                    ProxyError::UnaskedUpgrade {
                        service: upstream.name().to_owned(),
                        addr: lease.addr(),
                    },
                    stats,
                ));
            }
        }
        // The upstream connection now belongs to the tunnel; nothing returns to the pool.
        lease.drop_connection();
        return Ok(Proxied {
            response: Response::from_parts(parts, ResponseBody::empty()),
            stats,
            lease,
            upstream_time: forwarded.upstream_time,
        });
    }
    Ok(Proxied {
        response: Response::from_parts(parts, ResponseBody::upstream(body)),
        stats,
        lease,
        upstream_time: forwarded.upstream_time,
    })
}

/// Relays bytes both ways once client and upstream have switched protocols.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// The origin-form URI for the upstream, with the rewritten path if the rule has one. A
/// rewrite that brings its own query (`/user?id=$1`) keeps the client's after it, joined
/// with `&`, as nginx does.
fn upstream_uri(uri: Uri, rewritten: Option<&str>) -> Uri {
    if rewritten.is_none() && uri.scheme().is_none() {
        return uri;
    }
    let path = rewritten.unwrap_or_else(|| uri.path());
    let built = match uri.query() {
        Some(q) if path.contains('?') => format!("{path}&{q}"),
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    built.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// A response made by the proxy itself.
pub(crate) fn error_response(error: &ProxyError) -> Response<ResponseBody> {
    let status = error.status();
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(ResponseBody::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let ProxyError::RedirectToHttps { location } = error {
        resp.headers_mut()
            .insert(header::LOCATION, location.clone());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_gets_origin_form_with_the_served_path_and_the_query() {
        // (request target, rewritten path, upstream target)
        let cases = [
            ("/a?x=1", None, "/a?x=1"),
            ("http://h.test/a?x=1", None, "/a?x=1"),
            ("/a?x=1", Some("/b"), "/b?x=1"),
            ("/a", Some("/b"), "/b"),
            ("/user/5?x=1", Some("/user?id=5"), "/user?id=5&x=1"),
            ("/user/5", Some("/user?id=5"), "/user?id=5"),
        ];
        for (target, rewritten, want) in cases {
            let uri: Uri = target.parse().unwrap();
            assert_eq!(
                upstream_uri(uri, rewritten).to_string(),
                want,
                "{target} {rewritten:?}"
            );
        }
    }
}
