//! A route that cannot honour its policy (a refused annotation, a missing Secret) serves
//! nothing: it fails closed with 503 instead of serving without its protection.

use gatehouse_config::Route;

use crate::error::ProxyError;

pub(crate) fn check(route: &Route) -> Result<(), ProxyError> {
    match &route.unavailable {
        Some(reason) => Err(ProxyError::Unavailable {
            route: route.host.to_string(),
            reason: reason.clone(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_route_marked_unavailable_is_refused() {
        let mut config = gatehouse_config::parse(
            "listen: { http: \"127.0.0.1:0\" }\nservices: { a: { endpoints: [] } }\nroutes: [{ host: a.test, paths: [{ path: /, service: a }] }]\n",
            "test.yaml",
        )
        .unwrap();
        assert!(check(&config.routes[0]).is_ok());
        config.routes[0].unavailable = Some("annotation `x` is not supported".to_owned());
        let refused = check(&config.routes[0]).unwrap_err();
        assert_eq!(refused.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.to_string().contains("annotation `x`"), "{refused}");
    }
}
