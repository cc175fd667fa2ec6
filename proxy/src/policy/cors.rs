//! CORS as ingress-nginx answers it (`enable-cors`): answers for an allowed origin carry
//! the `Access-Control-*` headers, errors included, and an `OPTIONS` request from one is
//! answered 204 by Gatehouse. With a list of origins the answer depends on the request's
//! `Origin`, so it says `Vary: Origin` (which ingress-nginx omits, letting caches mix them).

use gatehouse_config::Cors;
use http::{header, HeaderMap, HeaderValue, Method};

use crate::error::ProxyError;

/// The `Access-Control-Allow-Origin` for a request with `origin`, when CORS applies to it:
/// `*` for any origin (even without an `Origin` header, as ingress-nginx), else the
/// request's own origin when it is listed.
pub(crate) fn allowed_origin(cors: &Cors, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    match &cors.origins {
        None => Some(HeaderValue::from_static("*")),
        Some(listed) => {
            let origin = origin?;
            listed
                .is_match(origin.to_str().ok()?)
                .then(|| origin.clone())
        }
    }
}

/// An `OPTIONS` request from an allowed origin is answered here (204).
pub(crate) fn preflight(method: &Method, allowed: Option<&HeaderValue>) -> Result<(), ProxyError> {
    match allowed {
        Some(_) if method == Method::OPTIONS => Err(ProxyError::Preflight),
        _ => Ok(()),
    }
}

/// The CORS headers of an answer to an allowed origin.
pub(crate) fn add_headers(headers: &mut HeaderMap, cors: &Cors, allowed: &HeaderValue) {
    let value = |s: &str| HeaderValue::from_str(s).ok();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed.clone());
    if cors.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    let lists = [
        (header::ACCESS_CONTROL_ALLOW_METHODS, &cors.methods),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, &cors.headers),
        (header::ACCESS_CONTROL_EXPOSE_HEADERS, &cors.expose_headers),
    ];
    for (name, list) in lists {
        if let Some(v) = value(list).filter(|v| !v.is_empty()) {
            headers.insert(name, v);
        }
    }
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, cors.max_age.into());
    if cors.origins.is_some() {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn listed_origins_and_wildcard_subdomains_are_echoed_others_get_nothing() {
        let cors = Cors::new("https://app.example.com, https://*.shop.test:8443").unwrap();
        for allowed in [
            "https://app.example.com",
            "HTTPS://APP.example.com",
            "https://eu.shop.test:8443",
        ] {
            assert_eq!(
                allowed_origin(&cors, Some(&origin(allowed))),
                Some(origin(allowed)),
                "{allowed}"
            );
        }
        for refused in [
            "https://evil.com",
            "https://app.example.com.evil.com",
            "http://app.example.com",
            "https://a.b.shop.test:8443",
            "https://shop.test:8443",
        ] {
            assert_eq!(
                allowed_origin(&cors, Some(&origin(refused))),
                None,
                "{refused}"
            );
        }
        assert_eq!(allowed_origin(&cors, None), None);
        let any = Cors::new("*").unwrap();
        assert_eq!(allowed_origin(&any, None), Some(origin("*")));
        assert!(
            Cors::new("app.example.com").is_err(),
            "an origin has a scheme"
        );
    }

    #[test]
    fn the_headers_and_the_preflight() {
        let mut cors = Cors::new("https://app.example.com").unwrap();
        cors.expose_headers = "X-Total".into();
        let allowed = origin("https://app.example.com");
        let mut h = HeaderMap::new();
        h.insert(header::VARY, "Accept-Encoding".parse().unwrap());
        add_headers(&mut h, &cors, &allowed);
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_METHODS],
            Cors::DEFAULT_METHODS
        );
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "X-Total");
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "1728000");
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        assert!(preflight(&Method::OPTIONS, Some(&allowed)).is_err());
        assert!(preflight(&Method::GET, Some(&allowed)).is_ok());
        assert!(
            preflight(&Method::OPTIONS, None).is_ok(),
            "an OPTIONS from elsewhere goes to the upstream"
        );
    }
}
