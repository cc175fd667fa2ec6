//! Respond: the answer the client gets. The upstream's response without hop-by-hop
//! headers, with the route's response policies; an accepted upgrade becomes a tunnel;
//! errors become the proxy's own short answers.

use http::{header, response, HeaderValue, Response, StatusCode, Version};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use tokio_util::task::TaskTracker;

use crate::{
    conn::ConnInfo,
    error::ProxyError,
    headers,
    policy::{cors, https_redirect, response_headers},
    request::{admit::Admitted, resolve::Target, tunnel},
    response_body::ResponseBody,
    upstream::{forward::ForwardLimits, Lease},
};

/// What the respond step knows of the request it answers.
pub(crate) struct Answering<'a> {
    pub(crate) target: &'a Target<'a>,
    pub(crate) admitted: &'a Admitted,
    pub(crate) limits: &'a ForwardLimits,
    /// Where upgraded connections are tracked (for the shutdown's grace period).
    pub(crate) tunnels: &'a TaskTracker,
    /// The session-affinity cookie the answer hands out.
    pub(crate) set_cookie: Option<HeaderValue>,
}

/// The upstream's response, for the client. `service` and `lease` are where it came from.
pub(crate) fn upstream_response(
    answering: Answering<'_>,
    response: Response<Incoming>,
    client_upgrade: Option<OnUpgrade>,
    service: &str,
    lease: &mut Lease,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Answering {
        target,
        admitted,
        limits,
        tunnels,
        set_cookie,
    } = answering;
    let (mut parts, body) = response.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    headers::to_client(&mut parts.headers, switching);
    respond_policies(&mut parts, target, admitted);
    if let Some(cookie) = set_cookie {
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    if !switching {
        let body = ResponseBody::upstream(body, limits.read);
        return Ok(Response::from_parts(parts, body));
    }
    let Some(client) = client_upgrade else {
        return Err(ProxyError::UnaskedUpgrade {
            service: service.to_owned(),
            addr: lease.addr(),
        });
    };
    let mut upstream_response = Response::from_parts(parts.clone(), body);
    let upstream = hyper::upgrade::on(&mut upstream_response);
    tunnels.spawn(tunnel::relay(client, upstream, limits.tunnel_idle));
    // The upstream connection now belongs to the tunnel; nothing returns to the pool.
    lease.drop_connection();
    Ok(Response::from_parts(parts, ResponseBody::empty()))
}

/// The response policies of the route, in order.
fn respond_policies(parts: &mut response::Parts, target: &Target<'_>, admitted: &Admitted) {
    if let Some((route, _)) = target.route {
        response_headers::apply(&mut parts.headers, route, parts.status);
    }
    if let Some(hsts) = &admitted.hsts {
        https_redirect::add_hsts(&mut parts.headers, hsts);
    }
    if let (Some((route, _)), Some(origin)) = (target.route, &admitted.cors_origin) {
        if let Some(c) = &route.cors {
            cors::add_headers(&mut parts.headers, c, origin);
        }
    }
}

/// From the start of the drain every answer ends its connection: HTTP/1 answers say
/// `Connection: close`, an HTTP/2 connection gets GOAWAY. Clients move on now instead of
/// losing a request when the listener closes.
pub(crate) fn close_when_draining(
    response: &mut Response<ResponseBody>,
    version: Version,
    conn: &ConnInfo,
    draining: bool,
) {
    if !draining {
        return;
    }
    if version >= Version::HTTP_2 {
        conn.goaway.notify_one();
    } else if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// A response made by the proxy itself.
pub(crate) fn error_response(error: &ProxyError) -> Response<ResponseBody> {
    let status = error.status();
    if let ProxyError::Preflight = error {
        // As ingress-nginx answers a CORS preflight: no body.
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain charset=UTF-8"),
        );
        return resp;
    }
    // nginx's own words for its 495, 496 (both answered 400) and ingress-nginx's match-cn.
    let reason = match error {
        ProxyError::ClientCertificate { missing: true, .. } => {
            "No required SSL certificate was sent"
        }
        ProxyError::ClientCertificate { missing: false, .. } => "The SSL certificate error",
        ProxyError::ClientCertificateUnauthorized { .. } => "client certificate unauthorized",
        _ => status.canonical_reason().unwrap_or(""),
    };
    let text = format!("{} {reason}\n", status.as_u16());
    let mut resp = Response::new(ResponseBody::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    match error {
        ProxyError::AuthDenied { headers, .. } => {
            for (name, value) in headers {
                resp.headers_mut().append(name.clone(), value.clone());
            }
        }
        ProxyError::Unauthorized { challenge, .. } => {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge.clone());
        }
        ProxyError::RedirectToHttps { location } | ProxyError::Redirect { location, .. } => {
            resp.headers_mut()
                .insert(header::LOCATION, location.clone());
        }
        ProxyError::Limited { retry_after, .. } => {
            // Whole seconds, rounded up: a client retrying at once would be refused again.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        _ => {}
    }
    resp
}
