//! Error pages from another service (ingress-nginx's `custom-http-errors` with
//! `default-backend`): an upstream answer with a listed status, or a service without
//! endpoints, is answered by the error service instead, asked for `/` with the request's
//! query and told what happened in `X-Code`, `X-Format`, `X-Original-URI`, `X-Namespace`,
//! `X-Ingress-Name`, `X-Service-Name` and `X-Service-Port`, as ingress-nginx tells its
//! default backend.

use gatehouse_config::ErrorPages;
use http::{header, HeaderName, HeaderValue, Method, Request};

use crate::request_body::RequestBody;

/// What the error service is told of the request, kept from before it was sent on.
pub(crate) struct Original {
    method: Method,
    /// Path and query as the client sent them.
    target: String,
    query: Option<String>,
    accept: Option<HeaderValue>,
    host: HeaderValue,
    client: HeaderValue,
}

impl Original {
    pub(crate) fn of<B>(req: &Request<B>, host: &HeaderValue, client: &HeaderValue) -> Original {
        Original {
            method: req.method().clone(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
            query: req.uri().query().map(str::to_owned),
            accept: req.headers().get(header::ACCEPT).cloned(),
            host: host.clone(),
            client: client.clone(),
        }
    }
}

/// Whether an upstream answer with `status` goes to the error service.
pub(crate) fn replaces(pages: &ErrorPages, status: u16) -> bool {
    pages.codes.contains(&status)
}

/// The request the error service gets for an answer with `code`.
pub(crate) fn request(pages: &ErrorPages, code: u16, original: &Original) -> Request<RequestBody> {
    let mut req = Request::new(RequestBody::empty());
    *req.method_mut() = original.method.clone();
    let target = match &original.query {
        Some(q) => format!("/?{q}"),
        None => "/".to_owned(),
    };
    *req.uri_mut() = target
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    let h = req.headers_mut();
    let text = |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""));
    let mut set = |name: &'static str, value: HeaderValue| {
        h.insert(HeaderName::from_static(name), value);
    };
    set("x-code", code.into());
    set(
        "x-format",
        original
            .accept
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static("")),
    );
    set("x-original-uri", text(&original.target));
    set("x-namespace", text(&pages.namespace));
    set("x-ingress-name", text(&pages.ingress));
    set("x-service-name", text(&pages.service_name));
    set("x-service-port", text(&pages.service_port));
    set("x-forwarded-for", original.client.clone());
    set("host", original.host.clone());
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_service_is_told_what_happened() {
        let pages = ErrorPages {
            codes: vec![404, 503],
            service: gatehouse_config::ServiceId(1),
            namespace: "shop".into(),
            ingress: "web".into(),
            service_name: "web".into(),
            service_port: "http".into(),
        };
        assert!(replaces(&pages, 404) && !replaces(&pages, 500));
        let mut client_req = Request::new(());
        *client_req.uri_mut() = "/missing/page?lang=de".parse().unwrap();
        client_req
            .headers_mut()
            .insert(header::ACCEPT, "application/json".parse().unwrap());
        let original = Original::of(
            &client_req,
            &"app.test".parse().unwrap(),
            &"10.0.0.7".parse().unwrap(),
        );
        let req = request(&pages, 404, &original);
        assert_eq!(req.uri(), "/?lang=de");
        let h = req.headers();
        for (name, want) in [
            ("x-code", "404"),
            ("x-format", "application/json"),
            ("x-original-uri", "/missing/page?lang=de"),
            ("x-namespace", "shop"),
            ("x-ingress-name", "web"),
            ("x-service-name", "web"),
            ("x-service-port", "http"),
            ("x-forwarded-for", "10.0.0.7"),
            ("host", "app.test"),
        ] {
            assert_eq!(h[name], want, "{name}");
        }
    }
}
