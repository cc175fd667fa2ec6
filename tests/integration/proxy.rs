//! The data plane end to end: a real client → Gatehouse → real upstreams, on 127.0.0.1.

use std::{sync::atomic::Ordering, time::Duration};

use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
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
    let (mut h2, _conn) = h2_connect(proxy.addr).await;
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

fn one_route(up: &TestUpstream, extra: &str) -> String {
    format!(
        "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\naccess_log: off\nshutdown: {{ drain_delay: 0s }}\n{extra}services: {{ a: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ host: h.example.com, paths: [{{ path: /, service: a }}] }}]\n",
        up.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_takes_host_from_authority_and_refuses_header_lists_above_32k() {
    use crate::support::binary::*;
    let up = TestUpstream::start("up").await;
    let (running, _) = start_yaml("h2-headers", &one_route(&up, ""), &[]).await;
    wait_ready(&running).await;
    let (mut h2, _conn) = h2_connect(running.http).await;
    // No Host header at all: HTTP/2 names the host in :authority only.
    let req = Request::get("http://h.example.com/from-authority")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let got = collect(h2.send_request(req).await.unwrap()).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["headers"]["host"], "h.example.com");
    assert_eq!(got.json()["uri"], "/from-authority");

    // 40 KiB of headers: refused (431 or a reset stream), never forwarded.
    let before = up.requests.load(Ordering::Relaxed);
    let req = Request::get("http://h.example.com/big")
        .header("x-big", "b".repeat(40 * 1024))
        .body(Full::new(Bytes::new()))
        .unwrap();
    if let Ok(resp) = h2.send_request(req).await {
        assert_eq!(resp.status(), 431);
    }
    assert_eq!(
        up.requests.load(Ordering::Relaxed),
        before,
        "never forwarded"
    );
    // A 30 KiB header list is fine, on a fresh connection.
    let (mut h2, _conn) = h2_connect(running.http).await;
    let req = Request::get("http://h.example.com/ok")
        .header("x-big", "b".repeat(30 * 1024))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test]
async fn an_upstream_that_switches_protocols_unasked_is_502() {
    use crate::support::binary::*;
    let up = TestUpstream::start("up").await;
    let (running, _) = start_yaml("unasked-upgrade", &one_route(&up, ""), &[]).await;
    wait_ready(&running).await;
    // The upstream answers /upgrade with 101 whether or not the client asked.
    let got = get_at(running.http, "h.example.com", "/upgrade").await;
    assert_eq!(got.status, 502);
    assert_eq!(up.requests.load(Ordering::Relaxed), 1);
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test]
async fn the_default_service_counts_under_route_default() {
    use crate::support::binary::*;
    let up = TestUpstream::start("up").await;
    let yaml = one_route(&up, "").replace("routes:", "default_service: a\nroutes:");
    let (running, _) = start_yaml("route-default", &yaml, &[]).await;
    wait_ready(&running).await;
    for host in ["unrouted.example.com", "other.example.com"] {
        let got = get_at(running.http, host, "/").await;
        assert_eq!(got.status, 200);
    }
    let got = get_at(running.http, "h.example.com", "/").await;
    assert_eq!(got.status, 200);
    let series =
        |route: &str| format!("gatehouse_http_requests_total{{code=\"200\",route=\"{route}\"}}");
    assert_eq!(running.metric(&series("default")).await, Some(2.0));
    assert_eq!(running.metric(&series("h.example.com")).await, Some(1.0));
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_upstream_connections_idle_out_and_the_pool_keeps_at_most_256() {
    use crate::support::binary::*;
    // Idle: with timeouts.idle 1s, a pooled connection is closed about a second after use.
    let up = TestUpstream::start("up").await;
    let (running, _) = start_yaml(
        "pool-idle",
        &one_route(&up, "timeouts: { idle: 1s }\n"),
        &[],
    )
    .await;
    wait_ready(&running).await;
    let got = get_at(running.http, "h.example.com", "/").await;
    assert_eq!(got.status, 200);
    let used = std::time::Instant::now();
    assert_eq!(
        up.open.load(Ordering::Relaxed),
        1,
        "kept in the pool after the answer"
    );
    eventually(
        "the idle pooled connection is closed",
        Duration::from_secs(10),
        || up.open.load(Ordering::Relaxed) == 0,
    )
    .await;
    assert!(
        used.elapsed() >= Duration::from_millis(900),
        "not before idle: {:?}",
        used.elapsed()
    );
    assert_eq!(running.terminate().await, Some(0));

    // Cap: 320 slow requests at once need more than 256 upstream connections; when they
    // are done, 256 go back to the pool and the rest are closed.
    let up = TestUpstream::start("up").await;
    let (running, _) = start_yaml("pool-cap", &one_route(&up, ""), &[]).await;
    wait_ready(&running).await;
    let http = running.http;
    let all: Vec<_> = (0..320)
        .map(|_| {
            tokio::spawn(async move {
                request_from(
                    "127.0.0.1",
                    http,
                    b"",
                    get_req("h.example.com", "/delay/2000", &[]),
                )
                .await
                .map(|g| g.status)
            })
        })
        .collect();
    for one in all {
        assert_eq!(one.await.unwrap(), Some(StatusCode::OK));
    }
    let opened = up.connections.load(Ordering::Relaxed);
    assert!(
        opened > 256,
        "the load needed more than the cap: {opened} connections"
    );
    eventually(
        "the pool keeps 256 and closes the rest",
        Duration::from_secs(3),
        || up.open.load(Ordering::Relaxed) == 256,
    )
    .await;
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_has_one_host_routed_forwarded_and_logged() {
    use crate::support::binary::*;
    use tokio::io::AsyncBufReadExt;
    let up = TestUpstream::start("up").await;
    let yaml = format!(
        "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nshutdown: {{ drain_delay: 0s }}\nservices: {{ a: {{ endpoints: [\"{}\"] }} }}\nroutes:\n  - {{ host: www.example.com, paths: [{{ path: /, service: a }}] }}\n  - {{ host: admin.example.com, allow: \"127.0.0.2/32\", paths: [{{ path: /, service: a }}] }}\n",
        up.addr
    );
    let config = temp_dir("host-identity").join("gatehouse.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut running = run_with(&config, &[], std::process::Stdio::piped()).await;
    wait_ready(&running).await;
    let mut log = tokio::io::BufReader::new(running.child.stdout.take().unwrap()).lines();
    let http = running.http;

    // Absolute-form wins over Host (RFC 9112 §3.2.2): routed, forwarded and logged as www.
    let (status, body) = raw_request(
        http,
        "127.0.0.1",
        "GET http://www.example.com/who HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        echoed["headers"]["host"], "www.example.com",
        "the Host the upstream gets"
    );
    assert_eq!(echoed["uri"], "/who", "origin-form upstream");
    let line = tokio::time::timeout(Duration::from_secs(10), log.next_line())
        .await
        .expect("an access log line")
        .unwrap()
        .unwrap();
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        entry["host"], "www.example.com",
        "the log names the host forwarded"
    );
    // The other way round: the guarded host is reached only as itself, with its policy.
    let (status, _) = raw_request(
        http,
        "127.0.0.1",
        "GET http://admin.example.com/ HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    // Two Host headers: no one host to believe.
    let (status, _) = raw_request(
        http,
        "127.0.0.1",
        "GET / HTTP/1.1\r\nHost: www.example.com\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);

    // HTTP/2: a Host header that contradicts :authority is 400; one that agrees is fine.
    let (mut h2, _conn) = h2_connect(http).await;
    for (host, want) in [("admin.example.com", 400), ("www.example.com", 200)] {
        let req = Request::get("http://www.example.com/")
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let got = collect(h2.send_request(req).await.unwrap()).await;
        assert_eq!(got.status.as_u16(), want, "h2 :authority www, Host {host}");
    }
    assert_eq!(
        up.requests.load(Ordering::Relaxed),
        2,
        "only the two agreeing requests"
    );
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_encoded_slash_refuses_escaped_separators_and_nothing_else() {
    use crate::support::binary::*;
    let up = TestUpstream::start("up").await;
    let (running, _) = start_yaml(
        "encoded-slash",
        &one_route(&up, "reject_encoded_slash: true\n"),
        &[],
    )
    .await;
    wait_ready(&running).await;
    let request = |target: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: h.example.com\r\nConnection: close\r\n\r\n")
    };
    for target in [
        "/files/a%2Fb",
        "/files/a%2fb",
        "/files/a%5Cb",
        "/files/a%5cb",
    ] {
        let (status, _) = raw_request(running.http, "127.0.0.1", &request(target)).await;
        assert_eq!(status, 400, "{target}");
    }
    for target in ["/files/a/b", "/files/a%20b", "/files/%61"] {
        let (status, _) = raw_request(running.http, "127.0.0.1", &request(target)).await;
        assert_eq!(status, 200, "{target}");
    }
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_keepalive_bounds_requests_per_connection_and_idle_connections() {
    use std::sync::atomic::Ordering::SeqCst;
    let up = TestUpstream::start("up").await;
    let other = TestUpstream::start("other").await;
    let running = crate::support::binary::start_ready(
        "upstream-keepalive",
        &format!(
            "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nshutdown: {{ drain_delay: 0s }}\naccess_log: off\nupstream_keepalive: {{ requests: 3 }}\nservices: {{ up: {{ endpoints: [\"{}\"] }} }}\nroutes:\n  - {{ host: a.test, paths: [{{ path: /, service: up }}] }}\n",
            up.addr
        ),
    )
    .await;
    for _ in 0..9 {
        let got = send(&client(), get_req_at(running.http, "a.test", "/", &[])).await;
        assert_eq!(got.status, 200);
    }
    assert_eq!(
        up.connections.load(SeqCst),
        3,
        "three requests per connection"
    );
    assert_eq!(running.terminate().await, Some(0));

    // No idle connection kept: each request opens its own.
    let running = crate::support::binary::start_ready(
        "upstream-keepalive-none",
        &format!(
            "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nshutdown: {{ drain_delay: 0s }}\naccess_log: off\nupstream_keepalive: {{ connections: 0 }}\nservices: {{ up: {{ endpoints: [\"{}\"] }} }}\nroutes:\n  - {{ host: a.test, paths: [{{ path: /, service: up }}] }}\n",
            other.addr
        ),
    )
    .await;
    for _ in 0..4 {
        send(&client(), get_req_at(running.http, "a.test", "/", &[])).await;
    }
    assert_eq!(other.connections.load(SeqCst), 4);
    assert_eq!(running.terminate().await, Some(0));
}
