//! The route's allow-list and deny-list, in one place: a client in the deny-list, or outside
//! a non-empty allow-list, gets 403. The client is the one [`crate::client`] resolved
//! (forwarded headers only from trusted proxies), so a spoofed X-Forwarded-For cannot get
//! in or dodge a deny.

use std::net::IpAddr;

use gatehouse_config::Route;

use crate::{error::ProxyError, metrics::Metrics};

pub(crate) fn check(route: &Route, client: IpAddr, metrics: &Metrics) -> Result<(), ProxyError> {
    let reason = if !route.deny.is_empty() && route.deny.contains(client) {
        "denylist"
    } else if route.allow.is_empty() || route.allow.contains(client) {
        return Ok(());
    } else {
        "allowlist"
    };
    metrics.deny(reason);
    Err(ProxyError::NotAllowed {
        client,
        route: route.host.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(allow: &str) -> Route {
        route_with(&format!("allow: \"{allow}\""))
    }

    fn route_with(lists: &str) -> Route {
        let config = gatehouse_config::parse(
            &format!("listen: {{ http: \"127.0.0.1:0\" }}\nservices: {{ a: {{ endpoints: [] }} }}\nroutes: [{{ host: a.test, {lists}, paths: [{{ path: /, service: a }}] }}]\n"),
            "test.yaml",
        )
        .unwrap();
        config.routes[0].clone()
    }

    #[test]
    fn a_listed_client_passes_an_unlisted_one_is_403_and_counted() {
        let metrics = Metrics::new();
        let route = route("10.0.0.0/8,2001:db8::/32");
        for listed in ["10.1.2.3", "2001:db8::1"] {
            assert!(check(&route, listed.parse().unwrap(), &metrics).is_ok());
        }
        let denied = check(&route, "11.0.0.1".parse().unwrap(), &metrics).unwrap_err();
        assert_eq!(denied.status(), http::StatusCode::FORBIDDEN);
        let text = String::from_utf8(metrics.encode().1).unwrap();
        assert!(
            text.contains("gatehouse_denied_total{reason=\"allowlist\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_list_admits_everyone() {
        let metrics = Metrics::new();
        assert!(check(&route(""), "203.0.113.9".parse().unwrap(), &metrics).is_ok());
    }

    #[test]
    fn the_deny_list_wins_over_the_allow_list_and_alone_admits_the_rest() {
        let metrics = Metrics::new();
        let route = route_with("allow: \"10.0.0.0/8\", deny: \"10.9.0.0/16\"");
        assert!(check(&route, "10.1.0.1".parse().unwrap(), &metrics).is_ok());
        assert!(check(&route, "10.9.0.1".parse().unwrap(), &metrics).is_err());
        let deny_only = route_with("deny: \"10.9.0.0/16\"");
        assert!(check(&deny_only, "192.0.2.1".parse().unwrap(), &metrics).is_ok());
        assert!(check(&deny_only, "10.9.3.4".parse().unwrap(), &metrics).is_err());
        let text = String::from_utf8(metrics.encode().1).unwrap();
        assert!(text.contains("reason=\"denylist\"} 2"), "{text}");
    }
}
