//! Admit: whether the resolved request may go on, policy by policy, in a fixed order. A
//! route that cannot honour its policy fails closed first; who the client is decides next;
//! then the route's own redirects, forced HTTPS, then the size of what it sends. Limits and auth plug in here.
//! A client certificate is judged first over TLS, and after the redirect to HTTPS in
//! plaintext.

use std::sync::atomic::Ordering;

use crate::{
    error::ProxyError,
    policy::{
        allow_list, basic_auth, body_size, client_cert,
        client_limits::{self, Slot},
        cors, external_auth, https_redirect, redirect, unavailable,
    },
    state::Live,
    {request::resolve::Resolved, vars::RequestVars},
};

/// What admission decided beyond "go on".
pub(crate) struct Admitted {
    /// The response's Strict-Transport-Security, when it gets one.
    pub(crate) hsts: Option<http::HeaderValue>,
    /// The request's place among its client's requests in flight, while it lasts.
    pub(crate) slot: Option<Slot>,
    /// The `Access-Control-Allow-Origin` of the answer, when the route's CORS applies.
    pub(crate) cors_origin: Option<http::HeaderValue>,
}

pub(crate) fn admit(
    r: &Resolved<'_, '_>,
    live: &Live,
    vars: &RequestVars<'_>,
) -> Result<Admitted, ProxyError> {
    let (headers, uri) = (vars.headers, vars.uri);
    let mut hsts = None;
    let mut slot = None;
    let mut cors_origin = None;
    if let Some((route, m)) = r.target.route {
        unavailable::check(route)?;
        let client_cert = r.snapshot.client_auth.for_route(m.route);
        let check_client_cert = |policy| client_cert::check(policy, &r.host, r.conn, &live.metrics);
        // Over TLS before anything else, as nginx checks the certificate before any phase;
        // in plaintext (nothing to show) after the redirect to HTTPS, which may fix it.
        if let (Some(policy), Some(_)) = (client_cert, &r.conn.tls) {
            check_client_cert(policy)?;
        }
        allow_list::check(route, r.client.ip, &live.metrics)?;
        if let Some(limits) = &r.snapshot.client_limits[m.route] {
            slot = client_limits::admit(limits, r.client.ip).map_err(|over| {
                r.snapshot.stats(m.route).limited(over.kind.as_str());
                ProxyError::Limited {
                    route: route.host.to_string(),
                    kind: over.kind.as_str(),
                    retry_after: over.retry_after,
                    status: r.snapshot.config.limits.status,
                }
            })?;
        }
        redirect::check(route, r.path, vars)?;
        if let Some(c) = &route.cors {
            cors_origin = cors::allowed_origin(c, vars.headers.get(http::header::ORIGIN));
            cors::preflight(vars.method, cors_origin.as_ref())?;
        }
        let https_port = live.https_port.load(Ordering::Relaxed);
        if let Some(location) = https_redirect::https_location(
            r.snapshot, https_port, route, &r.host, r.conn, r.client, headers, uri,
        ) {
            return Err(ProxyError::RedirectToHttps { location });
        }
        if let (Some(policy), None) = (client_cert, &r.conn.tls) {
            check_client_cert(policy)?;
        }
        hsts = https_redirect::wants_hsts(r.snapshot, route, &r.host, r.conn)
            .then(|| r.snapshot.hsts.clone());
    }
    body_size::check(headers, r.target.max_body)?;
    Ok(Admitted {
        hsts,
        slot,
        cors_origin,
    })
}

/// Who the client is, for routes that ask: basic authentication, then the external
/// authentication service. After admission, since checking a password or asking a service
/// costs far more than any policy above, and a client the allow-list or its limits refuse
/// must not get to spend it. On success, the headers the authentication service gives
/// the upstream's request.
pub(crate) async fn authenticate(
    r: &Resolved<'_, '_>,
    vars: &RequestVars<'_>,
    live: &Live,
) -> Result<Vec<(http::HeaderName, Option<http::HeaderValue>)>, ProxyError> {
    let Some((route, m)) = r.target.route else {
        return Ok(Vec::new());
    };
    if let Some(creds) = &r.snapshot.basic_auth[m.route] {
        Box::pin(basic_auth::check(creds, vars.headers, &route.host)).await?;
    }
    match &route.external_auth {
        Some(auth) => {
            let service = &r.snapshot.upstreams[auth.service.0];
            // Boxed: its subrequest's state would otherwise enlarge every request's.
            Box::pin(external_auth::check(
                &auth.request,
                service,
                r.snapshot.auth_answers[m.route].as_deref(),
                vars,
                &r.snapshot.limits,
                &live.metrics,
            ))
            .await
        }
        None => Ok(Vec::new()),
    }
}
