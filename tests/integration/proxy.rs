//! The data plane end to end: a real client → Gatehouse → real upstreams, on 127.0.0.1.

use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn routing_matrix_hosts_paths_and_rewrites() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let c = TestUpstream::start("c").await;
    let proxy = Proxy::start(&format!(
        r#"
listen: {{ http: "127.0.0.1:0" }}
access_log: off
services:
  a: {{ endpoints: ["{}"] }}
  b: {{ endpoints: ["{}"] }}
  c: {{ endpoints: ["{}"] }}
routes:
  - host: www.example.com
    paths:
      - {{ path: /, service: a }}
      - {{ path: /api, service: b, rewrite: /v1 }}
      - {{ path: /api/admin, match: exact, service: c }}
      - {{ path: "/users/([0-9]+)/(.*)", match: regex, service: c, rewrite: "/u/$1/$2" }}
  - host: "*.example.com"
    paths: [{{ path: /, service: b }}]
  - host: regex.example.com
    paths:
      - {{ path: "/a+", match: regex, service: a }}
      - {{ path: "/a", match: regex, service: b }}
"#,
        a.addr, b.addr, c.addr
    ))
    .await;
    let client = client();
    let cases: &[(&str, &str, u16, &str, &str)] = &[
        // host, path, status, upstream, uri seen upstream
        ("www.example.com", "/", 200, "a", "/"),
        ("WWW.Example.COM:8080", "/x?q=1", 200, "a", "/x?q=1"),
        ("www.example.com", "/api", 200, "b", "/v1"),
        (
            "www.example.com",
            "/api/users?id=7",
            200,
            "b",
            "/v1/users?id=7",
        ),
        ("www.example.com", "/apix", 200, "a", "/apix"),
        ("www.example.com", "/api/admin", 200, "c", "/api/admin"),
        ("www.example.com", "/api/admin/x", 200, "b", "/v1/admin/x"),
        (
            "www.example.com",
            "/users/42/profile",
            200,
            "a",
            "/users/42/profile",
        ),
        ("shop.example.com", "/anything", 200, "b", "/anything"),
        ("a.shop.example.com", "/", 404, "", ""),
        ("example.com", "/", 404, "", ""),
        ("regex.example.com", "/aaa", 200, "a", "/aaa"),
        ("regex.example.com", "/b", 404, "", ""),
    ];
    for (host, path, status, upstream, uri) in cases {
        let got = get(&client, &proxy, host, path).await;
        assert_eq!(got.status.as_u16(), *status, "{host}{path}");
        if *status == 200 {
            let j = got.json();
            assert_eq!(j["upstream"], *upstream, "{host}{path}");
            assert_eq!(j["uri"], *uri, "{host}{path}");
        }
    }
    // Regex rules only apply when no exact or prefix rule matched; this host has no "/" rule.
    let proxy2 = Proxy::start(&format!(
        r#"
listen: {{ http: "127.0.0.1:0" }}
access_log: off
services: {{ c: {{ endpoints: ["{}"] }} }}
routes:
  - host: www.example.com
    paths: [{{ path: "/users/([0-9]+)/(.*)", match: regex, service: c, rewrite: "/u/$1/$2" }}]
"#,
        c.addr
    ))
    .await;
    let got = get(&client, &proxy2, "www.example.com", "/users/42/profile?x=1").await;
    assert_eq!(got.json()["uri"], "/u/42/profile?x=1");
}

#[tokio::test]
async fn default_service_takes_unrouted_requests() {
    let a = TestUpstream::start("fallback").await;
    let proxy = Proxy::start(&format!(
        r#"
listen: {{ http: "127.0.0.1:0" }}
access_log: off
services: {{ fb: {{ endpoints: ["{}"] }} }}
default_service: fb
routes: []
"#,
        a.addr
    ))
    .await;
    let got = get(&client(), &proxy, "unknown.example", "/z").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["upstream"], "fallback");
}

#[tokio::test]
async fn forwarded_headers_added_and_hop_by_hop_removed() {
    let a = TestUpstream::start("a").await;
    let proxy = Proxy::start(&format!(
        r#"
listen: {{ http: "127.0.0.1:0" }}
access_log: off
services: {{ a: {{ endpoints: ["{}"] }} }}
routes:
  - host: h.example.com
    response_headers: {{ X-Frame-Options: SAMEORIGIN }}
    paths: [{{ path: /, service: a }}]
"#,
        a.addr
    ))
    .await;
    let req = Request::get(proxy.url("/p"))
        .header("host", "h.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-secret-hop")
        .header("x-secret-hop", "1")
        .header("keep-alive", "timeout=100")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = send(&client(), req).await;
    assert_eq!(got.status, 200);
    let h = &got.json()["headers"];
    assert_eq!(h["host"], "h.example.com", "Host preserved");
    // The client is not a trusted proxy: what it claimed is replaced, not appended to.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "h.example.com");
    assert_eq!(h["x-forwarded-port"], proxy.addr.port().to_string());
    assert_eq!(h["x-end-to-end"], "kept");
    for hop in ["x-secret-hop", "keep-alive", "proxy-connection", "te"] {
        assert!(
            h.get(hop).is_none(),
            "{hop} must not reach the upstream: {h}"
        );
    }
    // Upstream's hop-by-hop response header removed, the route's header added.
    assert!(got.headers.get("keep-alive").is_none());
    assert_eq!(got.headers["x-frame-options"], "SAMEORIGIN");
}

#[tokio::test]
async fn http2_prior_knowledge_is_proxied_to_an_http1_upstream() {
    let a = TestUpstream::start("a").await;
    let proxy = Proxy::start(&format!(
        "listen: {{ http: \"127.0.0.1:0\" }}\naccess_log: off\nservices: {{ a: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ host: h2.example.com, paths: [{{ path: /, service: a }}] }}]\n",
        a.addr
    ))
    .await;
    // Connect to the proxy's address but name the virtual host in :authority.
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://h2.example.com/x?y=1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let got = collect(resp).await;
    assert_eq!(got.status, 200);
    let j = got.json();
    assert_eq!(j["uri"], "/x?y=1");
    assert_eq!(j["upstream"], "a");
}

#[tokio::test]
async fn upgrade_requests_are_tunnelled() {
    let a = TestUpstream::start("a").await;
    let proxy = Proxy::start(&format!(
        "listen: {{ http: \"127.0.0.1:0\" }}\naccess_log: off\nservices: {{ a: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ host: ws.example.com, paths: [{{ path: /, service: a }}] }}]\n",
        a.addr
    ))
    .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /upgrade HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for msg in [&b"hello"[..], b"through the tunnel"] {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("echo within 5 s")
            .unwrap();
        assert_eq!(back, msg);
    }
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let a = TestUpstream::start("a").await;
    let proxy = Proxy::start(&format!(
        "listen: {{ http: \"127.0.0.1:0\" }}\naccess_log: off\nservices: {{ a: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ host: p.example.com, paths: [{{ path: /, service: a }}] }}]\n",
        a.addr
    ))
    .await;
    let client = client();
    for _ in 0..50 {
        assert_eq!(get(&client, &proxy, "p.example.com", "/").await.status, 200);
    }
    assert_eq!(a.requests.load(std::sync::atomic::Ordering::Relaxed), 50);
    assert_eq!(
        a.connections.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one pooled connection serves sequential requests"
    );
}
