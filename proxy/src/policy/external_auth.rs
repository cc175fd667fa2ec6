//! External authentication (nginx's `auth_request`, ingress-nginx's `auth-url`): before a
//! request goes on, a subrequest asks the route's authentication service (oauth2-proxy and
//! the like). 2xx lets it through, with the listed headers of that answer copied onto the
//! upstream's request; 401 and 403 go back to the client with the service's headers (a
//! 401 becomes a redirect to `signin` when there is one); anything else, or no answer, is
//! 500, as in nginx: a broken authentication service never opens the application.

use gatehouse_config::AuthRequest;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::{
    error::ProxyError,
    headers,
    metrics::Metrics,
    policy::auth_cache::AuthAnswers,
    request_body::RequestBody,
    upstream::{
        forward::{forward, ForwardLimits},
        Preference, Upstream,
    },
    vars::RequestVars,
};

/// The most of the service's answer body read to keep its connection.
const MAX_BODY: usize = 64 * 1024;

/// Asks `service` about the request `vars` describes (or remembers what it said, with
/// `answers`); on 2xx, the listed headers for the upstream's request: the service's value,
/// or `None` to remove what the client sent (a client must not pass for a user by sending
/// `X-Auth-Request-User` itself).
pub(crate) async fn check(
    auth: &AuthRequest,
    service: &Upstream,
    answers: Option<&AuthAnswers>,
    vars: &RequestVars<'_>,
    limits: &ForwardLimits,
    metrics: &Metrics,
) -> Result<Vec<(HeaderName, Option<HeaderValue>)>, ProxyError> {
    let original = original_url(vars);
    let remembered = match (answers, &auth.cache) {
        (Some(answers), Some(cache)) => {
            let mut key = String::new();
            cache.key.write(vars, &mut key);
            Some((answers, cache, key))
        }
        _ => None,
    };
    if let Some((answers, _, key)) = &remembered {
        if let Some((status, headers)) = answers.get(key, Instant::now()) {
            return decide(auth, status, headers, &original);
        }
    }
    let (status, headers) = ask(auth, service, vars, &original, limits, metrics).await?;
    if let Some((answers, cache, key)) = remembered {
        answers.remember(cache, key, status, &headers, Instant::now());
    }
    decide(auth, status, headers, &original)
}

/// The service's answer: its status and headers (hop-by-hop ones removed).
async fn ask(
    auth: &AuthRequest,
    service: &Upstream,
    vars: &RequestVars<'_>,
    original: &str,
    limits: &ForwardLimits,
    metrics: &Metrics,
) -> Result<(StatusCode, HeaderMap), ProxyError> {
    let subrequest = subrequest(auth, vars, original);
    let set = service.endpoints();
    let forwarded = forward(service, &set, Preference::None, subrequest, limits, metrics)
        .await
        .map_err(|e| failed(auth, e.to_string()))?;
    let (mut parts, body) = forwarded.response.into_parts();
    // Read the (small) answer to the end so its connection can serve the next subrequest.
    let read = tokio::time::timeout(
        limits.read,
        http_body_util::Limited::new(body, MAX_BODY).collect(),
    )
    .await;
    forwarded.lease.finish(matches!(read, Ok(Ok(_))));
    headers::remove_hop_by_hop(&mut parts.headers);
    Ok((parts.status, parts.headers))
}

fn failed(auth: &AuthRequest, why: String) -> ProxyError {
    ProxyError::AuthServiceFailed {
        url: auth.url.clone(),
        why,
    }
}

/// What the service's answer means for the request.
fn decide(
    auth: &AuthRequest,
    status: StatusCode,
    mut headers: HeaderMap,
    original: &str,
) -> Result<Vec<(HeaderName, Option<HeaderValue>)>, ProxyError> {
    match status {
        s if s.is_success() => Ok(auth
            .response_headers
            .iter()
            .map(|name| (name.clone(), headers.get(name).cloned()))
            .collect()),
        StatusCode::UNAUTHORIZED if auth.signin.is_some() => {
            let signin = auth.signin.as_deref().unwrap_or_default();
            let joiner = if signin.contains('?') { '&' } else { '?' };
            let rd: String = form_urlencoded::byte_serialize(original.as_bytes()).collect();
            let location = format!("{signin}{joiner}{}={rd}", auth.signin_param);
            Err(ProxyError::Redirect {
                location: HeaderValue::from_str(&location)
                    .map_err(|_| failed(auth, "the signin URL is not a header value".into()))?,
                status: StatusCode::FOUND,
            })
        }
        s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
            headers.remove(header::CONTENT_LENGTH);
            headers.remove(header::CONTENT_TYPE);
            Err(ProxyError::AuthDenied { status: s, headers })
        }
        s => Err(failed(auth, format!("it answered {s}"))),
    }
}

/// The URL the client asked for: `scheme://host/path?query`.
fn original_url(vars: &RequestVars<'_>) -> String {
    let scheme = if vars.tls { "https" } else { "http" };
    let target = vars.uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{}{target}", written_host(vars))
}

/// The host as the client wrote it (with its port), else the routed one.
fn written_host<'a>(vars: &'a RequestVars<'_>) -> &'a str {
    vars.headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| vars.uri.authority().map(|a| a.as_str()))
        .unwrap_or(vars.host)
}

/// The subrequest, with what ingress-nginx's sends: the original URL and method, the
/// forwarded headers, and the client's Cookie and Authorization. No body.
fn subrequest(auth: &AuthRequest, vars: &RequestVars<'_>, original: &str) -> Request<RequestBody> {
    let mut req = Request::new(RequestBody::empty());
    *req.method_mut() = auth.method.clone();
    *req.uri_mut() = auth
        .path
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    let h = req.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).ok();
    let mut set = |name: &'static str, v: Option<HeaderValue>| {
        if let Some(v) = v {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set("host", value(&auth.host));
    set("x-original-url", value(original));
    set("x-original-method", value(vars.method.as_str()));
    set("x-forwarded-host", value(written_host(vars)));
    set(
        "x-forwarded-proto",
        value(if vars.tls { "https" } else { "http" }),
    );
    set("x-forwarded-for", value(&vars.client.to_string()));
    set("x-real-ip", value(&vars.client.to_string()));
    let target = vars.uri.path_and_query().map_or("/", |p| p.as_str());
    set(
        "x-auth-request-redirect",
        value(auth.request_redirect.as_deref().unwrap_or(target)),
    );
    set("x-sent-from", value("gatehouse"));
    set("content-length", value("0"));
    for name in [header::COOKIE, header::AUTHORIZATION] {
        for v in vars.headers.get_all(&name) {
            h.append(name.clone(), v.clone());
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subrequest_carries_the_original_request_and_the_clients_credentials() {
        let uri: http::Uri = "/shop/cart?id=7".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "app.test:8080".parse().unwrap());
        headers.insert(header::COOKIE, "_oauth2_proxy=abc".parse().unwrap());
        headers.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        headers.insert("x-other", "not sent".parse().unwrap());
        let vars = RequestVars {
            method: &http::Method::POST,
            uri: &uri,
            headers: &headers,
            path: "/shop/cart",
            host: "app.test",
            client: "10.1.2.3".parse().unwrap(),
            tls: true,
        };
        let auth = AuthRequest {
            host: "auth.shop.svc:4180".into(),
            path: "/oauth2/auth?allowed_groups=staff".into(),
            url: "http://auth.shop.svc:4180/oauth2/auth?allowed_groups=staff".into(),
            method: http::Method::GET,
            signin: None,
            signin_param: "rd".into(),
            response_headers: Vec::new(),
            request_redirect: None,
            cache: None,
        };
        let original = original_url(&vars);
        assert_eq!(original, "https://app.test:8080/shop/cart?id=7");
        let req = subrequest(&auth, &vars, &original);
        assert_eq!(
            (req.method(), req.uri().to_string()),
            (
                &http::Method::GET,
                "/oauth2/auth?allowed_groups=staff".to_owned()
            )
        );
        let h = req.headers();
        assert_eq!(h["host"], "auth.shop.svc:4180");
        assert_eq!(h["x-original-url"], "https://app.test:8080/shop/cart?id=7");
        assert_eq!(h["x-original-method"], "POST");
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-auth-request-redirect"], "/shop/cart?id=7");
        assert_eq!(h["cookie"], "_oauth2_proxy=abc");
        assert_eq!(h["authorization"], "Bearer t");
        assert!(h.get("x-other").is_none());
    }
}
