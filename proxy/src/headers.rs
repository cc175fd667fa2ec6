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
/// The value of cookie `name` in the request's Cookie headers.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

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
/// appended to X-Forwarded-For, unless only the client's address is to be passed on);
/// from anyone else they are replaced, so an upstream that
/// reads the left-most X-Forwarded-For is not fooled by what a client made up.
pub(crate) fn to_upstream(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    client: &Client,
    host: HeaderValue,
    upgrade: Option<HeaderValue>,
) {
    remove_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
        Some(prev) if client.pass_chain && !prev.is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + conn.peer_ip_header.len());
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(conn.peer_ip_header.as_bytes());
            HeaderValue::from_bytes(&v).unwrap_or_else(|_| conn.peer_ip_header.clone())
        }
        // The peer itself, or the client a trusted proxy named.
        _ => client.ip_header.clone(),
    };
    headers.insert(&X_FORWARDED_FOR, forwarded_for);
    if !(client.via_trusted_proxy && headers.contains_key(&X_FORWARDED_PROTO)) {
        let scheme = if conn.tls.is_some() { "https" } else { "http" };
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
    }
    headers.insert(&X_FORWARDED_PORT, conn.local_port_header.clone());
    headers.insert(&X_REAL_IP, client.ip_header.clone());
    // The host that was routed by, and no other: an absolute-form target's authority
    // replaces the client's Host header (RFC 9112 §3.2.2).
    headers.insert(&X_FORWARDED_HOST, host.clone());
    headers.insert(header::HOST, host);
}

/// Rewrites an upstream response's headers for the client.
pub(crate) fn to_client(headers: &mut HeaderMap, switching: bool) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headers as written in a case: (name, value) pairs.
    type Written<'a> = &'a [(&'a str, &'a str)];

    fn map(pairs: Written<'_>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        // (headers in, names left)
        let cases: &[(Written<'_>, &[&str])] = &[
            (&[("connection", "close"), ("x-a", "1")], &["x-a"]),
            (
                &[
                    ("connection", "keep-alive, X-Secret"),
                    ("x-secret", "s"),
                    ("x-a", "1"),
                ],
                &["x-a"],
            ),
            (
                &[
                    ("connection", "x-one"),
                    ("connection", "x-two"),
                    ("x-one", "1"),
                    ("x-two", "2"),
                ],
                &[],
            ),
            (
                &[
                    ("keep-alive", "timeout=5"),
                    ("proxy-connection", "keep-alive"),
                ],
                &[],
            ),
            (
                &[
                    ("te", "trailers"),
                    ("trailer", "x-sum"),
                    ("transfer-encoding", "chunked"),
                ],
                &[],
            ),
            (&[("upgrade", "websocket"), ("host", "a")], &["host"]),
            (
                &[("x-a", "1"), ("content-length", "3")],
                &["content-length", "x-a"],
            ),
        ];
        for (input, left) in cases {
            let mut h = map(input);
            remove_hop_by_hop(&mut h);
            assert_eq!(names(&h), left.to_vec(), "{input:?}");
        }
    }

    #[test]
    fn an_upgrade_is_a_request_only_when_connection_says_so() {
        let cases: &[(Written<'_>, Option<&str>)] = &[
            (
                &[("connection", "Upgrade"), ("upgrade", "websocket")],
                Some("websocket"),
            ),
            (
                &[("connection", "keep-alive, upgrade"), ("upgrade", "h2c")],
                Some("h2c"),
            ),
            (&[("upgrade", "websocket")], None),
            (&[("connection", "upgrade")], None),
            (&[("connection", "close"), ("upgrade", "websocket")], None),
        ];
        for (input, want) in cases {
            let got = upgrade_request(&map(input));
            assert_eq!(
                got.as_ref().map(|v| v.to_str().unwrap()),
                *want,
                "{input:?}"
            );
        }
    }

    fn conn(tls: bool) -> ConnInfo {
        ConnInfo::for_test("192.0.2.10:40000", "127.0.0.1:8443", tls)
    }

    fn client(ip: &str, trusted: bool) -> Client {
        Client {
            ip: ip.parse().unwrap(),
            ip_header: ip.parse().unwrap(),
            via_trusted_proxy: trusted,
            pass_chain: trusted,
        }
    }

    /// The client as the request path resolves it from `headers` on `conn`.
    fn resolved(conn: &ConnInfo, headers: &HeaderMap, trusted: bool, full_chain: bool) -> Client {
        let proxies = match trusted {
            true => gatehouse_config::CidrSet::new(["192.0.2.0/24".parse().unwrap()]),
            false => gatehouse_config::CidrSet::default(),
        };
        let forwarded = gatehouse_config::Forwarded {
            full_chain,
            ..Default::default()
        };
        Client::resolve(conn, headers, &proxies, &forwarded)
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_proxies() {
        // (incoming, peer trusted, TLS, X-Forwarded-For, X-Forwarded-Proto)
        let cases: &[(Written<'_>, bool, bool, &str, &str)] = &[
            (&[], false, false, "192.0.2.10", "http"),
            (&[], false, true, "192.0.2.10", "https"),
            (
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-proto", "https"),
                ],
                false,
                false,
                "192.0.2.10",
                "http",
            ),
            (
                &[
                    ("x-forwarded-for", "203.0.113.5"),
                    ("x-forwarded-proto", "https"),
                ],
                true,
                false,
                "203.0.113.5, 192.0.2.10",
                "https",
            ),
            (
                &[("x-forwarded-for", "")],
                true,
                false,
                "192.0.2.10",
                "http",
            ),
            (
                &[("x-forwarded-proto", "http")],
                true,
                true,
                "192.0.2.10",
                "http",
            ),
        ];
        for (incoming, trusted, tls, xff, xfp) in cases {
            let mut h = map(incoming);
            let conn = conn(*tls);
            let client = resolved(&conn, &h, *trusted, true);
            to_upstream(
                &mut h,
                &conn,
                &client,
                HeaderValue::from_static("a.example.com"),
                None,
            );
            assert_eq!(h["x-forwarded-for"], *xff, "{incoming:?} trusted={trusted}");
            assert_eq!(
                h["x-forwarded-proto"], *xfp,
                "{incoming:?} trusted={trusted} tls={tls}"
            );
            assert_eq!(h["x-real-ip"], client.ip.to_string().as_str());
            assert_eq!(h["x-forwarded-port"], "8443");
        }
    }

    #[test]
    fn without_the_full_chain_the_upstream_gets_only_the_client_a_trusted_proxy_named() {
        let mut h = map(&[("x-forwarded-for", "198.51.100.1, 203.0.113.5")]);
        let conn = conn(false);
        let client = resolved(&conn, &h, true, false);
        to_upstream(
            &mut h,
            &conn,
            &client,
            HeaderValue::from_static("a.test"),
            None,
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.5");
        assert_eq!(h["x-real-ip"], "203.0.113.5");
    }

    #[test]
    fn host_is_the_routed_one_and_upgrades_survive_the_hop_by_hop_pass() {
        // An absolute-form request for a.example.com that also says `Host: admin.example.com`.
        let mut h = map(&[
            ("host", "admin.example.com"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
        ]);
        to_upstream(
            &mut h,
            &conn(false),
            &client("192.0.2.10", false),
            HeaderValue::from_static("a.example.com"),
            Some("websocket".parse().unwrap()),
        );
        assert_eq!(
            h["host"], "a.example.com",
            "the routed host replaces the client's"
        );
        assert_eq!(h.get_all("host").iter().count(), 1);
        assert_eq!(h["x-forwarded-host"], "a.example.com");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        // HTTP/2 has no Host header: the authority becomes one.
        let mut h = HeaderMap::new();
        to_upstream(
            &mut h,
            &conn(false),
            &client("192.0.2.10", false),
            HeaderValue::from_static("b.example.com"),
            None,
        );
        assert_eq!(h["host"], "b.example.com");
        assert!(h.get("connection").is_none() && h.get("upgrade").is_none());
    }

    #[test]
    fn responses_lose_hop_by_hop_headers_and_keep_an_accepted_upgrade() {
        // (upstream headers, switching, left)
        let cases: &[(Written<'_>, bool, &[&str])] = &[
            (
                &[
                    ("connection", "keep-alive"),
                    ("keep-alive", "timeout=5"),
                    ("x-a", "1"),
                ],
                false,
                &["x-a"],
            ),
            (
                &[("connection", "upgrade"), ("upgrade", "websocket")],
                true,
                &["connection", "upgrade"],
            ),
            (
                &[("connection", "upgrade"), ("upgrade", "websocket")],
                false,
                &[],
            ),
            (
                &[
                    ("connection", "close, x-frame-options"),
                    ("x-frame-options", "SAMEORIGIN"),
                ],
                false,
                &[],
            ),
        ];
        for (input, switching, left) in cases {
            let mut h = map(input);
            to_client(&mut h, *switching);
            assert_eq!(names(&h), left.to_vec(), "{input:?} switching={switching}");
        }
    }
}
