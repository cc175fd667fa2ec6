//! Who the client is: the TCP peer (or the PROXY protocol source), or — only when that peer
//! is a trusted proxy — the right-most untrusted address of X-Forwarded-For.

use std::net::IpAddr;

use gatehouse_config::{CidrSet, Forwarded};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::conn::{canonical_ip, ConnInfo};

pub(crate) static X_FORWARDED_FOR: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-proto");

/// The client of one request, as far as it can be believed.
pub(crate) struct Client {
    pub(crate) ip: IpAddr,
    /// `ip` as a header value (X-Real-IP).
    pub(crate) ip_header: HeaderValue,
    /// The connection's peer is a trusted proxy: its forwarded headers are believed.
    pub(crate) via_trusted_proxy: bool,
    /// The upstream gets the trusted proxy's X-Forwarded-For with the peer appended, not
    /// only the client's address (`compute-full-forwarded-for`).
    pub(crate) pass_chain: bool,
}

impl Client {
    /// Resolves the client of a request on `conn`.
    pub(crate) fn resolve(
        conn: &ConnInfo,
        headers: &HeaderMap,
        trusted: &CidrSet,
        forwarded: &Forwarded,
    ) -> Self {
        let direct = || Client {
            ip: conn.peer_ip,
            ip_header: conn.peer_ip_header.clone(),
            via_trusted_proxy: false,
            pass_chain: false,
        };
        if trusted.is_empty() || !trusted.contains(conn.peer_ip) {
            return direct();
        }
        let mut client = Client {
            via_trusted_proxy: true,
            pass_chain: forwarded.full_chain,
            ..direct()
        };
        if let Some(ip) = right_most_untrusted(headers, &forwarded.client_header, trusted) {
            client.ip = ip;
            client.ip_header = HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value");
        }
        client
    }
}

/// Walks X-Forwarded-For (or the configured header) from the right, skipping trusted proxies; the first untrusted
/// address is the client. If every address is trusted, the left-most is. An entry that is
/// not an address ends the walk: a proxy chain that wrote garbage is not believed, and the
/// connection's peer stays the client.
fn right_most_untrusted(
    headers: &HeaderMap,
    header: &HeaderName,
    trusted: &CidrSet,
) -> Option<IpAddr> {
    let mut last_trusted = None;
    for value in headers.get_all(header).iter().rev() {
        let text = value.to_str().ok()?;
        for entry in text.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            let ip = canonical_ip(parse_forwarded_ip(entry)?);
            if !trusted.contains(ip) {
                return Some(ip);
            }
            last_trusted = Some(ip);
        }
    }
    last_trusted
}

/// Accepts `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` and `[2001:db8::1]:5678`.
fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(sock) = entry.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> CidrSet {
        CidrSet::new(["10.0.0.0/8", "192.168.0.0/16"].map(|c| c.parse().unwrap()))
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&X_FORWARDED_FOR, v.parse().unwrap());
        }
        h
    }

    /// (peer, X-Forwarded-For, trusted proxies, client, via a trusted proxy)
    type Case<'a> = (&'a str, &'a [&'a str], &'a [&'a str], &'a str, bool);

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let cases: [Case<'_>; 6] = [
            ("203.0.113.1:5000", &[], &[], "203.0.113.1", false),
            (
                "203.0.113.1:5000",
                &["198.51.100.7"],
                &[],
                "203.0.113.1",
                false,
            ),
            (
                "203.0.113.1:5000",
                &["198.51.100.7"],
                &["10.0.0.0/8"],
                "203.0.113.1",
                false,
            ),
            (
                "10.0.0.2:5000",
                &["198.51.100.7"],
                &["10.0.0.0/8"],
                "198.51.100.7",
                true,
            ),
            ("10.0.0.2:5000", &[], &["10.0.0.0/8"], "10.0.0.2", true),
            (
                "[::ffff:10.0.0.2]:5000",
                &["198.51.100.7"],
                &["10.0.0.0/8"],
                "198.51.100.7",
                true,
            ),
        ];
        for (peer, forwarded, proxies, want, via) in cases {
            let conn = ConnInfo::new(peer.parse().unwrap(), "127.0.0.1:80".parse().unwrap());
            let trusted = CidrSet::new(proxies.iter().map(|c| c.parse().unwrap()));
            let client = Client::resolve(&conn, &xff(forwarded), &trusted, &Forwarded::default());
            assert_eq!(
                client.ip.to_string(),
                want,
                "{peer} {forwarded:?} {proxies:?}"
            );
            assert_eq!(client.ip_header, want, "X-Real-IP of {peer}");
            assert_eq!(client.via_trusted_proxy, via, "{peer} {proxies:?}");
        }
    }

    #[test]
    fn right_most_untrusted_wins() {
        let t = trusted();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            right_most_untrusted(
                &xff(&["203.0.113.1, 198.51.100.2, 10.0.0.5"]),
                &X_FORWARDED_FOR,
                &t
            ),
            Some(ip("198.51.100.2"))
        );
        assert_eq!(
            right_most_untrusted(
                &xff(&["203.0.113.1", "10.0.0.5, 192.168.1.1"]),
                &X_FORWARDED_FOR,
                &t
            ),
            Some(ip("203.0.113.1"))
        );
        assert_eq!(
            right_most_untrusted(&xff(&["10.0.0.7, 10.0.0.5"]), &X_FORWARDED_FOR, &t),
            Some(ip("10.0.0.7"))
        );
        assert_eq!(
            right_most_untrusted(&xff(&["[2001:db8::1]:443, 10.0.0.5"]), &X_FORWARDED_FOR, &t),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(
            right_most_untrusted(&xff(&["::ffff:203.0.113.9"]), &X_FORWARDED_FOR, &t),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            right_most_untrusted(
                &xff(&["203.0.113.1, garbage, 10.0.0.5"]),
                &X_FORWARDED_FOR,
                &t
            ),
            None
        );
        assert_eq!(right_most_untrusted(&xff(&[]), &X_FORWARDED_FOR, &t), None);
    }
}
