//! Forced HTTPS: a 308 to `https://` on the plaintext listener and HSTS on HTTPS responses,
//! both only for a host whose certificate is valid, so forcing HTTPS never makes a site
//! unreachable.

use std::time::SystemTime;

use gatehouse_config::Route;
use http::{HeaderMap, HeaderValue, Uri};

use crate::{
    client::{Client, X_FORWARDED_PROTO},
    conn::ConnInfo,
    snapshot::Snapshot,
};

const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// Whether `host` has a certificate that a browser would accept now.
fn valid_certificate(snapshot: &Snapshot, host: &str) -> bool {
    snapshot
        .certs
        .lookup(host)
        .is_some_and(|c| c.is_valid_for(host, SystemTime::now()))
}

/// The `Location` to redirect a plaintext request to, if it must be redirected.
/// `https_port` is where the HTTPS listener is bound (0: none here, so 443 behind a
/// load balancer).
#[allow(clippy::too_many_arguments)]
pub(crate) fn https_location(
    snapshot: &Snapshot,
    https_port: u16,
    route: &Route,
    host: &str,
    conn: &ConnInfo,
    client: &Client,
    headers: &HeaderMap,
    uri: &Uri,
) -> Option<HeaderValue> {
    let wanted = route.https_redirect || route.force_https_redirect;
    if !wanted || conn.tls.is_some() || uri.path().starts_with(ACME_CHALLENGE) {
        return None;
    }
    let already_https = client.via_trusted_proxy
        && headers
            .get(&X_FORWARDED_PROTO)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    if already_https {
        return None;
    }
    // Forced: TLS ends at a load balancer in front, whose certificate we cannot see.
    if !route.force_https_redirect && !valid_certificate(snapshot, host) {
        warn_once(snapshot, host);
        return None;
    }
    let port = match https_port {
        0 | 443 => String::new(),
        p => format!(":{p}"),
    };
    let mut path = uri.path_and_query().map_or("/", |p| p.as_str());
    if !route.redirect_keeps_trailing_slash {
        // ingress-nginx's default: one trailing `/` of the request URI is dropped.
        path = path.strip_suffix('/').unwrap_or(path);
    }
    HeaderValue::from_str(&format!("https://{host}{port}{path}")).ok()
}

/// Adds HSTS to a response that [`wants_hsts`].
pub(crate) fn add_hsts(headers: &mut HeaderMap, value: &HeaderValue) {
    headers.insert(http::header::STRICT_TRANSPORT_SECURITY, value.clone());
}

/// Whether an HTTPS response for `route` gets HSTS.
pub(crate) fn wants_hsts(snapshot: &Snapshot, route: &Route, host: &str, conn: &ConnInfo) -> bool {
    snapshot.config.hsts.enabled
        && (route.https_redirect || route.force_https_redirect)
        && conn.tls.is_some()
        && valid_certificate(snapshot, host)
}

fn warn_once(snapshot: &Snapshot, host: &str) {
    if snapshot.warned.first(host) {
        let why = match snapshot.certs.lookup(host) {
            None => "no certificate in `tls` serves it".to_owned(),
            Some(c) => format!(
                "its certificate {} is expired, not yet valid, or has no SAN for it",
                c.label
            ),
        };
        tracing::warn!(
            host,
            "https_redirect is on but {why}; serving plain HTTP instead of redirecting to a broken site. Fix the certificate and the redirect starts by itself"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gatehouse_config::{Location, TlsEntry, TlsSource};

    use super::*;
    use crate::{client::Client, metrics::Metrics};

    /// Routes for `localhost` (which a valid certificate serves), `nocert.test` (none) and
    /// `forced.test` (forced: TLS ends before Gatehouse), each with `https_redirect`, and
    /// `plain.test` without.
    fn snapshot() -> Snapshot {
        let mut config = gatehouse_config::parse(
            "listen: { http: \"127.0.0.1:0\" }\nservices: { a: { endpoints: [] } }\nroutes:\n  - { host: localhost, https_redirect: true, paths: [{ path: /, service: a }] }\n  - { host: nocert.test, https_redirect: true, paths: [{ path: /, service: a }] }\n  - { host: plain.test, paths: [{ path: /, service: a }] }\n  - { host: forced.test, paths: [{ path: /, service: a }] }\n",
            "test.yaml",
        )
        .unwrap();
        config.routes[3].force_https_redirect = true;
        let (cert, key) = crate::tls::certs::self_signed_localhost().unwrap();
        config.tls.push(TlsEntry {
            source: TlsSource::Inline {
                name: "localhost".into(),
                cert,
                key,
            },
            hosts: None,
            default: false,
            strict: true,
            location: Location {
                file: "test.yaml".into(),
                line: 1,
                column: 1,
            },
        });
        Snapshot::build(Arc::new(config), None, &|_| Vec::new(), &Metrics::new()).unwrap()
    }

    fn conn(tls: bool) -> ConnInfo {
        ConnInfo::for_test("192.0.2.1:4000", "127.0.0.1:80", tls)
    }

    /// (route, host, target, https port, TLS, peer trusted, X-Forwarded-Proto, Location)
    type Case<'a> = (
        usize,
        &'a str,
        &'a str,
        u16,
        bool,
        bool,
        Option<&'a str>,
        Option<&'a str>,
    );

    #[test]
    fn redirects_only_plaintext_requests_for_hosts_with_a_valid_certificate() {
        let snapshot = snapshot();
        let cases: &[Case<'_>] = &[
            (
                0,
                "localhost",
                "/a?b=1",
                443,
                false,
                false,
                None,
                Some("https://localhost/a?b=1"),
            ),
            (
                0,
                "localhost",
                "/",
                8443,
                false,
                false,
                None,
                Some("https://localhost:8443/"),
            ),
            (
                0,
                "localhost",
                "/",
                0,
                false,
                false,
                None,
                Some("https://localhost/"),
            ),
            (0, "localhost", "/", 443, true, false, None, None),
            (
                0,
                "localhost",
                "/.well-known/acme-challenge/t",
                443,
                false,
                false,
                None,
                None,
            ),
            (0, "localhost", "/", 443, false, true, Some("https"), None),
            (0, "localhost", "/", 443, false, true, Some("HTTPS"), None),
            (
                0,
                "localhost",
                "/",
                443,
                false,
                false,
                Some("https"),
                Some("https://localhost/"),
            ),
            (
                0,
                "localhost",
                "/",
                443,
                false,
                true,
                Some("http"),
                Some("https://localhost/"),
            ),
            (1, "nocert.test", "/", 443, false, false, None, None),
            (2, "plain.test", "/", 443, false, false, None, None),
            (
                3,
                "forced.test",
                "/x",
                443,
                false,
                false,
                None,
                Some("https://forced.test/x"),
            ),
        ];
        for &(route, host, target, port, tls, trusted, xfp, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(v) = xfp {
                headers.insert(&X_FORWARDED_PROTO, v.parse().unwrap());
            }
            let client = Client {
                ip: "192.0.2.1".parse().unwrap(),
                ip_header: HeaderValue::from_static("192.0.2.1"),
                via_trusted_proxy: trusted,
                pass_chain: trusted,
            };
            let got = https_location(
                &snapshot,
                port,
                &snapshot.config.routes[route],
                host,
                &conn(tls),
                &client,
                &headers,
                &target.parse().unwrap(),
            );
            assert_eq!(
                got.as_ref().map(|v| v.to_str().unwrap()),
                want,
                "{host}{target} port={port} tls={tls} trusted={trusted} xfp={xfp:?}"
            );
        }
    }

    #[test]
    fn hsts_goes_on_https_answers_of_redirected_hosts_with_a_valid_certificate() {
        let snapshot = snapshot();
        let routes = &snapshot.config.routes;
        assert!(wants_hsts(&snapshot, &routes[0], "localhost", &conn(true)));
        assert!(!wants_hsts(
            &snapshot,
            &routes[0],
            "localhost",
            &conn(false)
        ));
        assert!(!wants_hsts(
            &snapshot,
            &routes[1],
            "nocert.test",
            &conn(true)
        ));
        assert!(!wants_hsts(
            &snapshot,
            &routes[2],
            "plain.test",
            &conn(true)
        ));
        assert!(
            !wants_hsts(&snapshot, &routes[3], "forced.test", &conn(true)),
            "no certificate here"
        );
    }
}
