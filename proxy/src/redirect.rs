//! Forced HTTPS: a 308 to `https://` on the plaintext listener and HSTS on HTTPS responses,
//! both only for a host whose certificate is valid, so forcing HTTPS never makes a site
//! unreachable.

use std::{collections::HashSet, sync::Mutex, time::SystemTime};

use gatehouse_config::Route;
use http::{HeaderMap, HeaderValue, Uri};

use crate::{
    client::{Client, X_FORWARDED_PROTO},
    conn::ConnInfo,
    snapshot::Snapshot,
};

/// `Strict-Transport-Security` for hosts that are redirected to HTTPS.
pub(crate) static HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000");

const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// Hosts already warned about, so the log says it once per host and configuration.
#[derive(Default)]
pub(crate) struct Warned(Mutex<HashSet<String>>);

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
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    HeaderValue::from_str(&format!("https://{host}{port}{path}")).ok()
}

/// Whether an HTTPS response for `route` gets HSTS.
pub(crate) fn wants_hsts(snapshot: &Snapshot, route: &Route, host: &str, conn: &ConnInfo) -> bool {
    (route.https_redirect || route.force_https_redirect)
        && conn.tls.is_some()
        && valid_certificate(snapshot, host)
}

fn warn_once(snapshot: &Snapshot, host: &str) {
    let mut warned = snapshot.warned.0.lock().unwrap_or_else(|p| p.into_inner());
    if warned.insert(host.to_owned()) {
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
