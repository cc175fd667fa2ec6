//! One request through the proxy, step by step around one resolved context:
//! resolve (one host, the normalised path, the route, the client) → admit (the route's
//! policies) → rewrite (the upstream's request) → forward (an endpoint, over a pooled
//! connection) → respond (the client's answer). Every error becomes a response; the
//! response body finishes the request's bookkeeping when it ends ([`crate::completion`]).

mod admit;
mod balance;
mod resolve;
mod respond;
mod rewrite;
mod tunnel;

use std::{
    borrow::Cow,
    convert::Infallible,
    sync::Arc,
    time::{Duration, SystemTime},
};

use gatehouse_config::{AccessLog, Config};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::{
    access_log::LogRecord,
    client::Client,
    completion::{Completion, Pending, CLIENT_CLOSED_REQUEST},
    conn::ConnInfo,
    error::ProxyError,
    grpc, path,
    policy::{client_cert, cors, error_pages, response_headers},
    response_body::ResponseBody,
    snapshot::Snapshot,
    state::{Drain, Live},
    upstream::{
        forward::{forward, Forwarded},
        Lease, Preference,
    },
    warnings::RateLimited,
};
use resolve::Refused;

pub(crate) use respond::error_response;

/// Serves one request from a client connection. Never fails: every error becomes a response.
pub(crate) async fn handle(
    live: Arc<Live>,
    drain: Arc<Drain>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    conn.state.request_started();
    let start = Instant::now();
    let snapshot = live.snapshot.load_full();
    let config = &snapshot.config;
    let client = Client::resolve(
        &conn,
        req.headers(),
        &config.trusted_proxies,
        &config.forwarded,
    );
    // Normalised once, here: routing, policy, the upstream and the log all see this path.
    let normalized = normalized_path(&req, &snapshot.config);
    let log = log_record(&snapshot.config, &conn, &client, &req, &normalized);
    let version = req.version();
    // For the CORS headers of an error answer, once the request is gone.
    let origin = req.headers().get(http::header::ORIGIN).cloned();
    // A gRPC client gets Gatehouse's own answers as gRPC statuses.
    let grpc = grpc::is_grpc(req.headers());
    let mut pending = Pending::new(Completion {
        snapshot: snapshot.clone(),
        stats: snapshot.none_stats(),
        service: None,
        conn: conn.clone(),
        status: CLIENT_CLOSED_REQUEST,
        bytes: 0,
        start: start.into_std(),
        lease: None,
        log,
        slot: None,
    });
    let served = match normalized {
        Ok(normalized) => {
            let completion = pending.get();
            serve(
                &live, &drain, &snapshot, &conn, &client, normalized, req, completion,
            )
            .await
        }
        Err(bad) => Err(Refused::new(
            ProxyError::BadPath(bad),
            snapshot.none_stats(),
        )),
    };
    let completion = pending.get();
    let (mut response, stats, lease) = match served {
        Ok(served) => {
            if let Some(log) = completion.log.as_mut() {
                log.upstream = Some(served.lease.addr());
                log.upstream_time = Some(served.upstream_time);
            }
            (served.response, served.stats, Some(served.lease))
        }
        Err(Refused { error, stats }) => {
            warn_operator(&error);
            let redirect = matches!(
                error,
                ProxyError::Redirect { .. } | ProxyError::RedirectToHttps { .. }
            );
            let mut response = match grpc && !redirect {
                true => grpc::error_response(&error),
                false => error_response(&error),
            };
            // The route's snippet headers go on its errors too (add_header: with `always`),
            // and so do its CORS headers, as with ingress-nginx's more_set_headers.
            if let Some(route) = snapshot.config.routes.get(stats) {
                let status = response.status();
                response_headers::apply_ops(response.headers_mut(), route, status);
                if let Some(c) = &route.cors {
                    if let Some(allowed) = cors::allowed_origin(c, origin.as_ref()) {
                        cors::add_headers(response.headers_mut(), c, &allowed);
                    }
                }
            }
            (response, stats, None)
        }
    };
    let draining = drain.started.load(std::sync::atomic::Ordering::Relaxed);
    respond::close_when_draining(&mut response, version, &conn, draining);
    completion.status = response.status().as_u16();
    completion.stats = stats;
    completion.lease = lease;
    response.body_mut().complete_with(pending.answered());
    Ok(response)
}

/// The request's path normalised; `Ok(None)` while it is normal already (no allocation).
fn normalized_path<B>(req: &Request<B>, config: &Config) -> Result<Option<String>, path::BadPath> {
    let normalized = path::normalize(req.uri().path())?;
    if config.reject_encoded_slash && path::has_encoded_slash(&normalized) {
        return Err(path::BadPath::EncodedSlash);
    }
    Ok(match normalized {
        Cow::Borrowed(_) => None,
        Cow::Owned(p) => Some(p),
    })
}

/// What the access log will say of the request, when there is an access log.
fn log_record<B>(
    config: &Config,
    conn: &ConnInfo,
    client: &Client,
    req: &Request<B>,
    normalized: &Result<Option<String>, path::BadPath>,
) -> Option<Box<LogRecord>> {
    (config.access_log == AccessLog::Stdout).then(|| {
        Box::new(LogRecord {
            time: SystemTime::now(),
            client: client.ip,
            method: req.method().clone(),
            host: resolve::written_host(req).unwrap_or_default().to_owned(),
            path: match normalized {
                Ok(Some(p)) => p.clone(),
                _ => req.uri().path().to_owned(),
            },
            version: req.version(),
            upstream: None,
            upstream_time: None,
            tls: conn.tls.as_ref().map(|t| t.version),
        })
    })
}

/// Failures an operator must hear of, each kind at most once per 10 s (with how many were
/// held back): clients can cause them at will, and must not be able to flood the log.
fn warn_operator(error: &ProxyError) {
    static UPSTREAM: RateLimited = RateLimited::per(Duration::from_secs(10));
    static DESCRIPTORS: RateLimited = RateLimited::per(Duration::from_secs(10));
    static OVERLOADED: RateLimited = RateLimited::per(Duration::from_secs(10));
    static AUTH: RateLimited = RateLimited::per(Duration::from_secs(10));
    let status = error.status();
    if error.is_upstream() {
        if let Some(more) = UPSTREAM.allow() {
            tracing::warn!(error = %error, cause = ?std::error::Error::source(error), similar_since_last = more, "upstream failed; answering {status}");
        }
    } else if let ProxyError::OutOfDescriptors { .. } = error {
        if let Some(more) = DESCRIPTORS.allow() {
            tracing::warn!(error = %error, similar_since_last = more, "no upstream connection could be opened here; answering 503, no endpoint blamed");
        }
    } else if let ProxyError::AuthServiceFailed { .. } = error {
        if let Some(more) = AUTH.allow() {
            tracing::warn!(error = %error, similar_since_last = more, "answering 500: without an answer from the authentication service nobody is let in; check that service");
        }
    } else if let ProxyError::Overloaded { .. } = error {
        if let Some(more) = OVERLOADED.allow() {
            tracing::warn!(error = %error, similar_since_last = more, "answering 503 instead of opening more connections to the endpoint");
        }
    }
}

/// A request the upstream answered.
struct Served {
    response: Response<ResponseBody>,
    stats: usize,
    lease: Lease,
    upstream_time: std::time::Duration,
}

/// An upstream answer with a status the route's error pages list, answered by the error
/// service instead (and whether it was); the upstream's own answer when that service
/// cannot answer.
async fn replace_error(
    snapshot: &Snapshot,
    pages: &gatehouse_config::ErrorPages,
    original: &error_pages::Original,
    forwarded: Forwarded,
    limits: &crate::upstream::forward::ForwardLimits,
    metrics: &crate::metrics::Metrics,
) -> (Forwarded, bool) {
    let status = forwarded.response.status().as_u16();
    if !error_pages::replaces(pages, status) {
        return (forwarded, false);
    }
    match error_page(snapshot, pages, status, original, limits, metrics).await {
        Ok(page) => (page, true),
        Err(_) => (forwarded, false),
    }
}

/// The error service's answer for a request that got `code`.
async fn error_page(
    snapshot: &Snapshot,
    pages: &gatehouse_config::ErrorPages,
    code: u16,
    original: &error_pages::Original,
    limits: &crate::upstream::forward::ForwardLimits,
    metrics: &crate::metrics::Metrics,
) -> Result<Forwarded, ProxyError> {
    let req = error_pages::request(pages, code, original);
    let service = &snapshot.upstreams[pages.service.0];
    // Boxed: a rare second forward would otherwise double every request's state.
    Box::pin(forward(
        service,
        &service.endpoints(),
        Preference::None,
        req,
        limits,
        metrics,
    ))
    .await
}

/// The steps, in order. `normalized` is the normalised path when it differs from the
/// request target's; `completion` learns which route the request counts in and holds its
/// limit slot as soon as they are known, for a request the client abandons.
#[allow(clippy::too_many_arguments)]
async fn serve(
    live: &Live,
    drain: &Drain,
    snapshot: &Snapshot,
    conn: &ConnInfo,
    client: &Client,
    normalized: Option<String>,
    req: Request<Incoming>,
    completion: &mut Completion,
) -> Result<Served, Refused> {
    let path = normalized.as_deref().unwrap_or_else(|| req.uri().path());
    let resolved = resolve::resolve(snapshot, conn, client, &req, path)?;
    let stats = resolved.target.stats;
    completion.stats = stats;
    completion.service = Some(resolved.target.service);
    let refused = |error| Refused::new(error, stats);
    let vars = resolved.vars(&req);
    let mut admitted = admit::admit(&resolved, live, &vars).map_err(refused)?;
    completion.slot = admitted.slot.take();
    let from_auth = admit::authenticate(&resolved, &vars, live)
        .await
        .map_err(refused)?;
    let upstream = &snapshot.upstreams[resolved.target.service.0];
    let choice = balance::choose(upstream, &resolved, &vars);
    let pages = resolved
        .target
        .route
        .and_then(|(route, _)| route.error_pages.as_ref());
    let original =
        pages.map(|_| error_pages::Original::of(&req, &resolved.host_header, &client.ip_header));
    // A gRPC call's own deadline bounds the wait for its answer.
    let deadline = grpc::is_grpc(req.headers())
        .then(|| grpc::timeout(req.headers()))
        .flatten();
    let (plan, target) = rewrite::Plan::new(resolved, &req);
    let (mut upstream_req, client_upgrade) = rewrite::rewrite(plan, normalized, req, conn, client);
    for (name, value) in from_auth {
        match value {
            Some(value) => upstream_req.headers_mut().insert(name, value),
            None => upstream_req.headers_mut().remove(name),
        };
    }
    if let Some(policy) = target
        .route
        .and_then(|(_, m)| snapshot.client_auth.for_route(m.route))
    {
        client_cert::upstream_headers(policy, conn, upstream_req.headers_mut());
    }
    let mut limits = match target.route {
        Some((route, _)) => snapshot.limits.for_route(route),
        None => snapshot.limits,
    };
    if let Some(deadline) = deadline {
        limits.response = limits.response.min(deadline);
    }
    let (set, preference) = (&choice.set, choice.preference);
    let no_endpoints = set.is_empty();
    let forwarded = match (pages, &original) {
        // A Service without endpoints: its error service answers (X-Code 503).
        (Some(pages), Some(original)) if no_endpoints => {
            error_page(snapshot, pages, 503, original, &limits, &live.metrics).await
        }
        _ => {
            forward(
                upstream,
                set,
                preference,
                upstream_req,
                &limits,
                &live.metrics,
            )
            .await
        }
    };
    // Gatehouse's own failure (502, 504...) with a listed status is answered by the error
    // service too, as nginx's error_page takes over the errors nginx makes itself.
    let (forwarded, own_error_replaced) = match (forwarded, pages, &original) {
        (Ok(f), ..) => (f, false),
        (Err(e), Some(pages), Some(original))
            if !no_endpoints && error_pages::replaces(pages, e.status().as_u16()) =>
        {
            warn_operator(&e);
            let code = e.status().as_u16();
            match error_page(snapshot, pages, code, original, &limits, &live.metrics).await {
                Ok(page) => (page, true),
                Err(_) => return Err(refused(e)),
            }
        }
        (Err(e), ..) => return Err(refused(e)),
    };
    let (forwarded, replaced) = match (pages, &original) {
        (Some(pages), Some(original)) if !no_endpoints && !own_error_replaced => {
            replace_error(snapshot, pages, original, forwarded, &limits, &live.metrics).await
        }
        _ => (
            forwarded,
            pages.is_some() && (no_endpoints || own_error_replaced),
        ),
    };
    let mut lease = forwarded.lease;
    let answering = respond::Answering {
        target: &target,
        admitted: &admitted,
        limits: &limits,
        tunnels: &drain.tunnels,
        // An error page comes from another service: no affinity to its endpoints.
        set_cookie: if replaced {
            None
        } else {
            choice.cookie(forwarded.endpoint)
        },
    };
    let response = respond::upstream_response(
        answering,
        forwarded.response,
        client_upgrade,
        upstream.name(),
        &mut lease,
    )
    .map_err(refused)?;
    Ok(Served {
        response,
        stats,
        lease,
        upstream_time: forwarded.upstream_time,
    })
}
