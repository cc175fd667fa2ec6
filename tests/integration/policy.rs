//! Allow-lists and the real client IP: clients bound to different loopback addresses,
//! X-Forwarded-For from trusted and untrusted peers, PROXY protocol v1 and v2.

use std::{net::SocketAddr, time::Duration};

use crate::support::*;
use proxy_header::{ProxiedAddress, ProxyHeader};

/// `listen` is the inline mapping of the `listen` section.
fn config(up: SocketAddr, listen: &str, extra: &str) -> String {
    format!(
        r#"
listen: {listen}
access_log: off
{extra}
services: {{ a: {{ endpoints: ["{up}"] }} }}
routes:
  - host: locked.example.com
    allow: "127.0.0.2/32, ::1, 198.51.100.0/24, 203.0.113.7"
    paths: [{{ path: /, service: a }}]
  - host: open.example.com
    paths: [{{ path: /, service: a }}]
"#
    )
}

#[tokio::test]
async fn allow_list_matrix_over_loopback_addresses_ipv6_and_mapped() {
    let up = TestUpstream::start("a").await;
    // A dual-stack listener, so IPv4 clients arrive as IPv4-mapped IPv6 addresses.
    let proxy = Proxy::start(&config(up.addr, r#"{ http: "[::]:0" }"#, "")).await;
    let port = proxy.addr.port();
    let v4: SocketAddr = ([127, 0, 0, 1], port).into();
    let v6: SocketAddr = "[::1]:0"
        .parse::<SocketAddr>()
        .map(|mut a| {
            a.set_port(port);
            a
        })
        .unwrap();
    let cases = [
        ("127.0.0.2", v4, "locked.example.com", Some(200)),
        ("127.0.0.3", v4, "locked.example.com", Some(403)),
        ("::1", v6, "locked.example.com", Some(200)),
        ("127.0.0.3", v4, "open.example.com", Some(200)),
    ];
    for (from, to, host, want) in cases {
        let got = request_from(from, to, b"", get_req(host, "/", &[])).await;
        assert_eq!(got.map(|g| g.status.as_u16()), want, "{from} → {host}");
    }
    assert_eq!(
        proxy.metric(r#"gatehouse_denied_total{reason="allowlist"}"#),
        1.0
    );
    assert_eq!(
        proxy.metric(r#"gatehouse_http_requests_total{code="403",route="locked.example.com"}"#),
        1.0
    );
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_not_believed() {
    let up = TestUpstream::start("a").await;
    let proxy = Proxy::start(&config(
        up.addr,
        r#"{ http: "127.0.0.1:0" }"#,
        "trusted_proxies: [\"127.0.0.4\"]",
    ))
    .await;
    // 127.0.0.3 claims to be 127.0.0.2: still denied.
    let spoof = [
        ("x-forwarded-for", "127.0.0.2"),
        ("x-forwarded-proto", "https"),
    ];
    let got = get_from(&proxy, "127.0.0.3", "locked.example.com", &spoof).await;
    assert_eq!(got.unwrap().status, 403);
    // On an open route the upstream sees the real peer only, and the real scheme.
    let got = get_from(&proxy, "127.0.0.3", "open.example.com", &spoof)
        .await
        .unwrap();
    let h = &got.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.3");
    assert_eq!(h["x-real-ip"], "127.0.0.3");
    assert_eq!(h["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_right_most_untrusted_first() {
    let up = TestUpstream::start("a").await;
    let proxy = Proxy::start(&config(
        up.addr,
        r#"{ http: "127.0.0.1:0" }"#,
        "trusted_proxies: [\"127.0.0.4\", \"10.0.0.0/8\"]",
    ))
    .await;
    // The client put a fake address first; our trusted proxy chain appended the real one.
    let chain = [
        ("x-forwarded-for", "127.0.0.2, 203.0.113.7, 10.1.1.1"),
        ("x-forwarded-proto", "https"),
    ];
    let got = get_from(&proxy, "127.0.0.4", "locked.example.com", &chain)
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    let h = &got.json()["headers"];
    assert_eq!(h["x-real-ip"], "203.0.113.7");
    assert_eq!(
        h["x-forwarded-for"],
        "127.0.0.2, 203.0.113.7, 10.1.1.1, 127.0.0.4"
    );
    assert_eq!(
        h["x-forwarded-proto"], "https",
        "a trusted proxy's scheme is kept"
    );
    // The same chain with an untrusted right-most address: that one is the client.
    let chain = [("x-forwarded-for", "203.0.113.7, 192.0.2.1")];
    let got = get_from(&proxy, "127.0.0.4", "locked.example.com", &chain)
        .await
        .unwrap();
    assert_eq!(got.status, 403);
}

/// A GET for `host` from local address `from`, without a PROXY header.
async fn get_from(proxy: &Proxy, from: &str, host: &str, headers: &[(&str, &str)]) -> Option<Got> {
    request_from(from, proxy.addr, b"", get_req(host, "/", headers)).await
}

fn proxy_v1(source: &str, dest: SocketAddr) -> Vec<u8> {
    let header = ProxyHeader::with_address(ProxiedAddress::stream(source.parse().unwrap(), dest));
    let mut buf = Vec::new();
    header.encode_v1(&mut buf).unwrap();
    buf
}

fn proxy_v2(source: &str, dest: SocketAddr) -> Vec<u8> {
    let header = ProxyHeader::with_address(ProxiedAddress::stream(source.parse().unwrap(), dest));
    let mut buf = Vec::new();
    header.encode_v2(&mut buf).unwrap();
    buf
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_only_from_trusted_peers() {
    let up = TestUpstream::start("a").await;
    let proxy = Proxy::start(&config(
        up.addr,
        r#"{ http: "127.0.0.1:0", proxy_protocol: true }"#,
        "trusted_proxies: [\"127.0.0.4\"]",
    ))
    .await;
    let dest = proxy.addr;
    for (version, preface) in [
        ("v1", proxy_v1("198.51.100.9:5555", dest)),
        ("v2", proxy_v2("198.51.100.9:5555", dest)),
    ] {
        let got = request_from(
            "127.0.0.4",
            dest,
            &preface,
            get_req("locked.example.com", "/", &[]),
        )
        .await
        .unwrap_or_else(|| panic!("PROXY {version} from a trusted peer is served"));
        assert_eq!(got.status, 200, "{version}");
        let h = &got.json()["headers"];
        assert_eq!(h["x-real-ip"], "198.51.100.9", "{version}");
        assert_eq!(h["x-forwarded-for"], "198.51.100.9", "{version}");
    }
    // A PROXY source outside the allow-list is denied like a direct client.
    let preface = proxy_v2("192.0.2.50:5555", dest);
    let got = request_from(
        "127.0.0.4",
        dest,
        &preface,
        get_req("locked.example.com", "/", &[]),
    )
    .await;
    assert_eq!(got.unwrap().status, 403);
    // An untrusted peer is refused even with a valid header: it could name any source.
    let preface = proxy_v1("198.51.100.9:5555", dest);
    assert!(request_from(
        "127.0.0.5",
        dest,
        &preface,
        get_req("locked.example.com", "/", &[])
    )
    .await
    .is_none());
    assert_eq!(
        proxy.metric(r#"gatehouse_denied_total{reason="untrusted_proxy"}"#),
        1.0
    );
    // A trusted peer without a header is refused too.
    assert!(request_from(
        "127.0.0.4",
        dest,
        b"",
        get_req("open.example.com", "/", &[])
    )
    .await
    .is_none());
    assert_eq!(
        proxy.metric(r#"gatehouse_denied_total{reason="proxy_header"}"#),
        1.0
    );
}

/// A PROXY v2 LOCAL header: what a load balancer's own health check sends.
const PROXY_V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_local_headers_keep_the_peer_and_a_missing_header_times_out() {
    use crate::support::binary::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = TestUpstream::start("a").await;
    let yaml = config(
        up.addr,
        r#"{ http: "127.0.0.1:0", admin: "127.0.0.1:0", proxy_protocol: true }"#,
        "trusted_proxies: [\"127.0.0.4\"]\ntimeouts: { request_header: 500ms }\nshutdown: { drain_delay: 0s }",
    );
    let (running, _) = start_yaml("proxy-local", &yaml, &[]).await;
    wait_ready(&running).await;
    let http = running.http;

    // LOCAL: no address in the header, so the client is the (trusted) peer itself.
    let got = request_from(
        "127.0.0.4",
        http,
        PROXY_V2_LOCAL,
        get_req("open.example.com", "/", &[]),
    )
    .await
    .expect("a LOCAL header is served");
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["headers"]["x-real-ip"], "127.0.0.4");
    let got = request_from(
        "127.0.0.4",
        http,
        PROXY_V2_LOCAL,
        get_req("locked.example.com", "/", &[]),
    )
    .await
    .expect("an answer");
    assert_eq!(got.status, 403, "the allow-list sees the peer");

    // No header at all, or half of one: closed once request_header has passed.
    for (what, sent) in [
        ("nothing", &b""[..]),
        ("half a header", &b"PROXY TCP4 198.51"[..]),
    ] {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.4:0".parse().unwrap()).unwrap();
        let mut s = socket.connect(http).await.unwrap();
        s.write_all(sent).await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: still open after 5 s"));
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "{what}: closed without an answer"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "{what}: not before request_header: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        running
            .metric(r#"gatehouse_denied_total{reason="proxy_header"}"#)
            .await,
        Some(2.0)
    );
    assert_eq!(running.terminate().await, Some(0));
}
