//! The route's `response_headers`: each replaces whatever the upstream sent under its name.

use gatehouse_config::Route;
use http::HeaderMap;

pub(crate) fn apply(headers: &mut HeaderMap, route: &Route) {
    for (name, value) in &route.response_headers {
        headers.insert(name.clone(), value.clone());
    }
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
        apply(&mut headers, &config.routes[0]);
        assert_eq!(
            headers
                .get_all("x-frame-options")
                .iter()
                .collect::<Vec<_>>(),
            ["DENY"]
        );
        assert_eq!(headers["x-a"], "1");
    }
}
