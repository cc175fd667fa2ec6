//! Routes that answer with a redirect instead of serving: a route's `redirect` (nginx's
//! `return CODE URL`, ingress-nginx's `permanent-redirect` and `temporal-redirect`, and the
//! `from-to-www-redirect` twin) for every request, and `app_root` for `/` alone.

use gatehouse_config::{
    template::{Variable, Variables},
    Route,
};
use http::{HeaderValue, StatusCode};

use crate::error::ProxyError;

/// The redirect `route` answers this request with, if any. `path` is the normalised path;
/// `vars` the request's variables for the redirect's URL.
pub(crate) fn check(route: &Route, path: &str, vars: &dyn Variables) -> Result<(), ProxyError> {
    if let Some(redirect) = &route.redirect {
        let mut to = String::new();
        redirect.to.write(vars, &mut to);
        return Err(redirect_to(&to, redirect.code));
    }
    if let (Some(root), "/") = (&route.app_root, path) {
        // As ingress-nginx: `$scheme://$http_host` + the root; HTTP/2 has no Host header,
        // so its authority stands in.
        let mut to = String::new();
        vars.write(&Variable::Scheme, &mut to);
        to.push_str("://");
        let before = to.len();
        vars.write(&Variable::Header("host".to_owned()), &mut to);
        if to.len() == before {
            vars.write(&Variable::Host, &mut to);
        }
        to.push_str(root);
        return Err(redirect_to(&to, 302));
    }
    Ok(())
}

fn redirect_to(to: &str, code: u16) -> ProxyError {
    // A Location built from what the client sent may hold bytes a header cannot: encode.
    let location = HeaderValue::from_str(to).unwrap_or_else(|_| {
        let encoded: String = to
            .bytes()
            .map(|b| match b {
                0x21..=0x7e => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        HeaderValue::from_str(&encoded).unwrap_or(HeaderValue::from_static("/"))
    });
    ProxyError::Redirect {
        location,
        status: StatusCode::from_u16(code).unwrap_or(StatusCode::MOVED_PERMANENTLY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vars;
    impl Variables for Vars {
        fn write(&self, v: &Variable, out: &mut String) {
            match v {
                Variable::Scheme => out.push_str("https"),
                Variable::Header(h) if h == "host" => out.push_str("app.test:8443"),
                Variable::RequestUri => out.push_str("/a?b=1"),
                _ => {}
            }
        }
    }

    fn route(extra: &str) -> Route {
        let yaml = format!("listen: {{ http: \"127.0.0.1:0\" }}\nservices: {{ a: {{ endpoints: [] }} }}\nroutes: [{{ host: a.test, {extra}, paths: [{{ path: /, service: a }}] }}]\n");
        gatehouse_config::parse(&yaml, "t.yaml")
            .unwrap()
            .routes
            .remove(0)
    }

    fn answer(route: &Route, path: &str) -> Option<(u16, String)> {
        match check(route, path, &Vars) {
            Ok(()) => None,
            Err(ProxyError::Redirect { location, status }) => {
                Some((status.as_u16(), location.to_str().unwrap().to_owned()))
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_redirect_answers_every_request_with_its_variables_filled_in() {
        let r = route("redirect: { to: \"https://new.test$request_uri\", code: 308 }");
        assert_eq!(
            answer(&r, "/a"),
            Some((308, "https://new.test/a?b=1".to_owned()))
        );
        let r = route("redirect: { to: \"https://new.test/\" }");
        assert_eq!(
            answer(&r, "/x"),
            Some((301, "https://new.test/".to_owned()))
        );
    }

    #[test]
    fn app_root_redirects_the_root_alone() {
        let r = route("app_root: /app1");
        assert_eq!(
            answer(&r, "/"),
            Some((302, "https://app.test:8443/app1".to_owned()))
        );
        assert_eq!(answer(&r, "/app1"), None);
        assert_eq!(answer(&r, "/x"), None);
    }
}
