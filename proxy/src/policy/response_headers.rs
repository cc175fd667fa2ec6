//! The route's response headers: its `response_headers`, each replacing whatever the
//! upstream sent under its name; and the header operations of an Ingress's
//! `configuration-snippet`, with nginx's semantics (see [`HeaderOp`]).

use gatehouse_config::{HeaderOp, Route};
use http::{HeaderMap, StatusCode};

/// On an upstream's answer.
pub(crate) fn apply(headers: &mut HeaderMap, route: &Route, status: StatusCode) {
    for (name, value) in &route.response_headers {
        headers.insert(name.clone(), value.clone());
    }
    apply_ops(headers, route, status);
}

/// The snippet's operations, on any answer of the route (Gatehouse's own errors too).
pub(crate) fn apply_ops(headers: &mut HeaderMap, route: &Route, status: StatusCode) {
    for op in &route.header_ops {
        match op {
            HeaderOp::Add {
                name,
                value,
                always,
            } => {
                if *always || add_header_applies(status) {
                    headers.append(name.clone(), value.clone());
                }
            }
            HeaderOp::Set { name, value } => {
                headers.insert(name.clone(), value.clone());
            }
            HeaderOp::Clear { name } => {
                headers.remove(name);
            }
        }
    }
}

/// The answers nginx's `add_header` (without `always`) applies to.
fn add_header_applies(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_headers_replace_the_upstreams() {
        let mut config = gatehouse_config::parse(
            "listen: { http: \"127.0.0.1:0\" }\nservices: { a: { endpoints: [] } }\nroutes: [{ host: a.test, paths: [{ path: /, service: a }] }]\n",
            "test.yaml",
        )
        .unwrap();
        config.routes[0].response_headers = vec![(
            http::HeaderName::from_static("x-frame-options"),
            http::HeaderValue::from_static("DENY"),
        )];
        let mut headers = HeaderMap::new();
        headers.append("x-frame-options", "SAMEORIGIN".parse().unwrap());
        headers.append("x-frame-options", "ALLOW-FROM x".parse().unwrap());
        headers.insert("x-a", "1".parse().unwrap());
        apply(&mut headers, &config.routes[0], StatusCode::OK);
        assert_eq!(
            headers
                .get_all("x-frame-options")
                .iter()
                .collect::<Vec<_>>(),
            ["DENY"]
        );
        assert_eq!(headers["x-a"], "1");
    }

    #[test]
    fn snippet_operations_follow_nginx_add_header_and_headers_more() {
        let mut config = gatehouse_config::parse(
            "listen: { http: \"127.0.0.1:0\" }\nservices: { a: { endpoints: [] } }\nroutes: [{ host: a.test, paths: [{ path: /, service: a }] }]\n",
            "test.yaml",
        )
        .unwrap();
        let name = http::HeaderName::from_static;
        let value = http::HeaderValue::from_static;
        config.routes[0].header_ops = vec![
            HeaderOp::Add {
                name: name("x-frame-options"),
                value: value("DENY"),
                always: false,
            },
            HeaderOp::Add {
                name: name("strict-transport-security"),
                value: value("max-age=1"),
                always: true,
            },
            HeaderOp::Set {
                name: name("server"),
                value: value("gatehouse"),
            },
            HeaderOp::Clear {
                name: name("x-powered-by"),
            },
        ];
        let route = &config.routes[0];
        let upstream = || {
            let mut h = HeaderMap::new();
            h.insert("x-frame-options", value("SAMEORIGIN"));
            h.insert("server", value("nginx"));
            h.insert("x-powered-by", value("php"));
            h
        };
        // A 200: add_header adds beside the upstream's, the others set and clear.
        let mut h = upstream();
        apply(&mut h, route, StatusCode::OK);
        assert_eq!(h.get_all("x-frame-options").iter().count(), 2);
        assert_eq!(h["strict-transport-security"], "max-age=1");
        assert_eq!(h["server"], "gatehouse");
        assert!(!h.contains_key("x-powered-by"));
        // A 404 from the upstream: add_header only with `always`.
        let mut h = upstream();
        apply(&mut h, route, StatusCode::NOT_FOUND);
        assert_eq!(
            h.get_all("x-frame-options").iter().count(),
            1,
            "the upstream's only"
        );
        assert!(h.contains_key("strict-transport-security"));
        // Gatehouse's own 429.
        let mut h = HeaderMap::new();
        apply_ops(&mut h, route, StatusCode::TOO_MANY_REQUESTS);
        assert!(!h.contains_key("x-frame-options"));
        assert_eq!(h["strict-transport-security"], "max-age=1");
        assert_eq!(h["server"], "gatehouse");
    }
}
