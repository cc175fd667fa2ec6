//! Header rules toward the upstream and back: hop-by-hop headers out, forwarded headers in.

use http::{
    header::{self, HeaderName},
    HeaderMap, HeaderValue,
};

use crate::{
    client::{Client, X_FORWARDED_FOR, X_FORWARDED_PROTO},
    conn::ConnInfo,
};

static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The `Upgrade` header of a request asking to switch protocols (WebSocket and the like).
pub(crate) fn upgrade_request(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

fn tokens(v: &HeaderValue) -> impl Iterator<Item = &str> {
    v.to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the headers that describe one connection rather than the message (RFC 9110 §7.6.1),
/// including those the `Connection` header names.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(tokens)
            // The common values name no header (keep-alive is removed below anyway).
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
    ] {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
}

/// Rewrites a client request's headers for the upstream.
///
/// X-Forwarded-For and X-Forwarded-Proto from a trusted proxy are kept (the peer is
/// appended to X-Forwarded-For); from anyone else they are replaced, so an upstream that
/// reads the left-most X-Forwarded-For is not fooled by what a client made up.
pub(crate) fn to_upstream(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    client: &Client,
    host: Option<HeaderValue>,
    upgrade: Option<HeaderValue>,
) {
    remove_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
        Some(prev) if client.via_trusted_proxy && !prev.is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + conn.peer_ip_header.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(conn.peer_ip_header.as_bytes());
            HeaderValue::from_bytes(&v).unwrap_or_else(|_| conn.peer_ip_header.clone())
        }
        _ => conn.peer_ip_header.clone(),
    };
    headers.insert(&X_FORWARDED_FOR, forwarded_for);
    if !(client.via_trusted_proxy && headers.contains_key(&X_FORWARDED_PROTO)) {
        let scheme = if conn.tls.is_some() { "https" } else { "http" };
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    headers.insert(&X_FORWARDED_PORT, conn.local_port_header.clone());
    headers.insert(&X_REAL_IP, client.ip_header.clone());
    if let Some(host) = host {
        headers.insert(&X_FORWARDED_HOST, host.clone());
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, host);
        }
    }
}

/// Rewrites an upstream response's headers for the client.
pub(crate) fn to_client(
    headers: &mut HeaderMap,
    switching: bool,
    extra: &[(HeaderName, HeaderValue)],
) {
    let upgrade = if switching {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    remove_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
}
