//! Every way a request can fail gets the right status, fast, and never a hang.

use std::{sync::atomic::Ordering, time::Duration};

use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

fn config(services: &str, extra: &str) -> String {
    format!(
        r#"
listen: {{ http: "127.0.0.1:0" }}
access_log: off
timeouts: {{ connect: 500ms, request_header: 400ms, upstream_response: 300ms, idle: 3s }}
services:
{services}
routes:
  - host: t.example.com
    max_body: 1k
    paths:
      - {{ path: /, service: main }}
{extra}
"#
    )
}

/// The configuration whose one route goes to `up`.
fn config_yaml(up: &TestUpstream) -> String {
    config(&format!("  main: {{ endpoints: [\"{}\"] }}", up.addr), "")
}

/// The binary serving `up` with at most `open_files` descriptors, its client timeouts long
/// enough that idle connections hold their descriptors for the whole test.
async fn limited_binary(
    name: &str,
    up: &TestUpstream,
    open_files: u64,
) -> crate::support::binary::Running {
    let config = temp_dir(name).join("gatehouse.yaml");
    std::fs::write(
        &config,
        config_yaml(up)
            .replace(
                "listen: { http: \"127.0.0.1:0\" }",
                "listen: { http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }",
            )
            .replace(
                "access_log: off",
                "access_log: off\nshutdown: { drain_delay: 0s, grace_period: 1s }",
            )
            .replace("request_header: 400ms", "request_header: 30s")
            .replace("idle: 3s", "idle: 30s"),
    )
    .unwrap();
    let running = crate::support::binary::run_limited(&config, open_files).await;
    crate::support::binary::wait_ready(&running).await;
    running
}

/// A proxy whose one route goes to `up`.
async fn proxy_to(up: &TestUpstream) -> Proxy {
    Proxy::start(&config(
        &format!("  main: {{ endpoints: [\"{}\"] }}", up.addr),
        "",
    ))
    .await
}

#[tokio::test]
async fn no_route_is_404_and_no_endpoint_is_503() {
    let proxy = Proxy::start(&config("  main: { endpoints: [] }", "")).await;
    let c = client();
    assert_eq!(get(&c, &proxy, "other.example.com", "/").await.status, 404);
    assert_eq!(get(&c, &proxy, "t.example.com", "/").await.status, 503);
    assert_eq!(
        proxy.metric(r#"gatehouse_http_requests_total{code="503",route="t.example.com"}"#),
        1.0
    );
    assert_eq!(
        proxy.metric(r#"gatehouse_http_requests_total{code="404",route="none"}"#),
        1.0
    );
}

#[tokio::test]
async fn connect_failure_on_every_endpoint_is_502_after_retries() {
    let (d1, d2, d3, d4) = (
        dead_addr().await,
        dead_addr().await,
        dead_addr().await,
        dead_addr().await,
    );
    let proxy = Proxy::start(&config(
        &format!("  main: {{ endpoints: [\"{d1}\", \"{d2}\", \"{d3}\", \"{d4}\"] }}"),
        "",
    ))
    .await;
    let got = get(&client(), &proxy, "t.example.com", "/").await;
    assert_eq!(got.status, 502);
    // One try and at most two retries.
    assert_eq!(
        proxy.metric(r#"gatehouse_upstream_connect_errors_total{service="main"}"#),
        3.0
    );
}

#[tokio::test]
async fn a_dead_endpoint_is_retried_elsewhere_and_then_ejected() {
    let live = TestUpstream::start("live").await;
    let dead = dead_addr().await;
    let proxy = Proxy::start(&config(
        &format!("  main: {{ endpoints: [\"{dead}\", \"{}\"] }}", live.addr),
        "",
    ))
    .await;
    let c = client();
    let errors =
        || proxy.metric(r#"gatehouse_upstream_connect_errors_total{service="main"}"#) as u32;
    let mut ejected_at = None;
    for _ in 0..40 {
        let got = get(&c, &proxy, "t.example.com", "/").await;
        assert_eq!(got.status, 200, "every request reaches the live endpoint");
        assert_eq!(got.json()["upstream"], "live");
        if errors() == 3 && ejected_at.is_none() {
            ejected_at = Some(std::time::Instant::now());
        }
    }
    // After three failures the dead endpoint is ejected for 1 s, then 2 s, 4 s...: over
    // `t` seconds it is tried again at most log2(t + 1) times, so a slow machine that
    // needs longer for 40 requests may see a retry, never one per request.
    let ejected_at = ejected_at.expect("three connect failures eject the endpoint");
    let t = ejected_at.elapsed().as_secs_f64();
    let allowed = 3 + (t + 1.0).log2().floor() as u32;
    assert!(
        errors() <= allowed,
        "ejection stops the connect attempts: {} errors in {t:.1} s after ejection",
        errors()
    );
    if ejected_at.elapsed() < Duration::from_millis(900) {
        let snap = proxy.gatehouse.snapshot();
        assert!(snap.upstreams()[0].endpoints()[0].is_ejected());
    }
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let slow = TestUpstream::start("slow").await;
    let proxy = proxy_to(&slow).await;
    let started = std::time::Instant::now();
    let got = get(&client(), &proxy, "t.example.com", "/delay/3000").await;
    assert_eq!(got.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "504 comes at upstream_response, not later"
    );
    // A fast request still works afterwards.
    assert_eq!(
        get(&client(), &proxy, "t.example.com", "/delay/10")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn bodies_above_max_body_are_413_whether_declared_or_streamed() {
    let up = TestUpstream::start("up").await;
    let proxy = proxy_to(&up).await;
    let c = client();
    // Declared with Content-Length: refused before the upstream is contacted.
    let req = Request::post(proxy.url("/"))
        .header("host", "t.example.com")
        .body(Full::new(Bytes::from(vec![b'a'; 2048])))
        .unwrap();
    assert_eq!(send(&c, req).await.status, 413);
    assert_eq!(up.requests.load(Ordering::Relaxed), 0);
    // Within the limit: passes.
    let req = Request::post(proxy.url("/"))
        .header("host", "t.example.com")
        .body(Full::new(Bytes::from(vec![b'a'; 1000])))
        .unwrap();
    let got = send(&c, req).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["body_bytes"], 1000);
    // Chunked, no length: cut off when it passes the limit.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: t.example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..4 {
        s.write_all(b"200\r\n").await.unwrap();
        s.write_all(&[b'b'; 0x200]).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[tokio::test]
async fn request_heads_above_32k_are_431_and_missing_host_is_400() {
    let up = TestUpstream::start("up").await;
    let proxy = proxy_to(&up).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let big = "x".repeat(40 * 1024);
    s.write_all(
        format!("GET / HTTP/1.1\r\nHost: t.example.com\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap_or(());
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // A 30 KiB head is still fine.
    let ok = "y".repeat(30 * 1024);
    let req = Request::get(proxy.url("/"))
        .header("host", "t.example.com")
        .header("x-big", ok)
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(&client(), req).await.status, 200);

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.0 400"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// Reads until the peer closes, or fails after `deadline`.
async fn closed_within(s: &mut TcpStream, deadline: Duration) -> bool {
    let mut buf = [0u8; 256];
    let end = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn slowloris_clients_are_cut_off_at_request_header() {
    let up = TestUpstream::start("up").await;
    let proxy = proxy_to(&up).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let started = std::time::Instant::now();
    // One header byte every 100 ms keeps the socket busy but never finishes the head.
    let trickle = async {
        for b in
            b"GET / HTTP/1.1\r\nHost: t.example.com\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    trickle.await;
    assert!(
        closed_within(&mut s, Duration::from_secs(3)).await,
        "slow head must be cut off"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "cut off after {took:?}");
    assert_eq!(up.requests.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn idle_keepalive_connections_close_after_idle_not_request_header() {
    let up = TestUpstream::start("up").await;
    let proxy = proxy_to(&up).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t.example.com\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // request_header is 400 ms, idle 3 s: still open after 1 s, closed by ~4 s.
    tokio::time::sleep(Duration::from_secs(1)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: t.example.com\r\n\r\n")
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "keep-alive connection still usable after 1 s idle"
    );
    assert!(
        closed_within(&mut s, Duration::from_secs(4)).await,
        "idle connection closed"
    );
}

/// An upstream that answers one request per connection without saying it will close, then
/// closes as soon as the next request arrives: the race of an upstream keep-alive timeout.
async fn one_shot_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = answered.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let a = a.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                a.fetch_add(1, Ordering::Relaxed);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Wait for the next request, then drop the connection without answering.
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (addr, answered)
}

#[tokio::test]
async fn a_request_that_hits_a_stale_pooled_connection_is_replayed_once() {
    let (addr, answered) = one_shot_upstream().await;
    let proxy = Proxy::start(&config(
        &format!("  main: {{ endpoints: [\"{addr}\"] }}"),
        "",
    ))
    .await;
    let c = client();
    // Replays are prepared for connections idle a second or more (see REPLAY_AFTER_IDLE).
    for i in 0..3 {
        let got = get(&c, &proxy, "t.example.com", "/").await;
        assert_eq!(got.status, 200, "GET {i} replayed on a fresh connection");
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert_eq!(answered.load(Ordering::Relaxed), 3);
    // A POST with a body that was already sent is not replayed: 502, never a duplicate.
    let req = Request::post(proxy.url("/"))
        .header("host", "t.example.com")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    assert_eq!(send(&c, req).await.status, 502);
    assert_eq!(answered.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_blamed_on_the_upstream() {
    use crate::support::binary::*;
    let up = TestUpstream::start("up").await;
    let (running, _) = start_yaml(
        "slow-upload",
        &config(&format!("  main: {{ endpoints: [\"{}\"] }}", up.addr), "")
            .replace(
                "listen: { http: \"127.0.0.1:0\" }",
                "listen: { http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }",
            )
            .replace("max_body: 1k", "max_body: 1m")
            .replace("request_header: 400ms", "request_header: 5s")
            .replace(
                "access_log: off",
                "access_log: off\nshutdown: { drain_delay: 0s, grace_period: 1s }",
            ),
        &[],
    )
    .await;
    wait_ready(&running).await;
    let chunked_head = "POST /upload HTTP/1.1\r\nHost: t.example.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

    // Five chunks 250 ms apart: the upload takes four times upstream_response (300 ms).
    let mut s = TcpStream::connect(running.http).await.unwrap();
    s.write_all(chunked_head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    for _ in 0..5 {
        s.write_all(b"100\r\n").await.unwrap();
        s.write_all(&[b'u'; 0x100]).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "after {:?}: {answer}",
        started.elapsed()
    );
    assert!(answer.contains("\"body_bytes\":1280"), "{answer}");

    // An upload that stops is the client's fault: see timeouts::a_stalled_upload_is_408...
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_is_our_fault_not_the_endpoints() {
    let up = TestUpstream::start("up").await;
    let running = limited_binary("emfile", &up, 48).await;
    // Accepted while descriptors are plentiful, before the flood.
    let mut early = Vec::new();
    for _ in 0..5 {
        early.push(TcpStream::connect(running.http).await.unwrap());
    }
    let mut flood = Vec::new();
    for _ in 0..80 {
        flood.push(TcpStream::connect(running.http).await.unwrap());
    }
    eventually(
        "the proxy runs out of descriptors",
        Duration::from_secs(10),
        || running.logged("accept failed") > 0,
    )
    .await;
    // Five slow requests at once need five upstream connections the proxy cannot open
    // (a descriptor freed at the wrong moment may let one through).
    let answers: Vec<_> = early
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                s.write_all(b"GET /delay/150 HTTP/1.1\r\nHost: t.example.com\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = vec![0u8; 4096];
                let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                    .await
                    .expect("an answer")
                    .unwrap();
                String::from_utf8_lossy(&buf[..n]).into_owned()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for answer in answers {
        let head = answer.await.unwrap();
        statuses.push(head.get(9..12).unwrap_or("").to_owned());
    }
    assert!(
        statuses.iter().all(|s| s == "503" || s == "200") && statuses.iter().any(|s| s == "503"),
        "503 for want of descriptors, never 502 blaming the upstream: {statuses:?}"
    );
    eventually(
        "the shortage is logged for the operator",
        Duration::from_secs(5),
        || running.logged("out of file descriptors") > 0,
    )
    .await;
    // Descriptors back: the endpoint was never blamed, so it serves at once.
    drop(flood);
    eventually_async(
        "served again once descriptors are back",
        Duration::from_secs(10),
        || async {
            request_from(
                "127.0.0.1",
                running.http,
                b"",
                get_req("t.example.com", "/", &[]),
            )
            .await
            .is_some_and(|g| g.status == 200)
        },
    )
    .await;
    assert_eq!(
        running
            .metric(r#"gatehouse_upstream_connect_errors_total{service="main"}"#)
            .await,
        None,
        "no connect error counted against the endpoint"
    );
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_waits_in_a_deep_accept_queue_while_the_proxy_cannot_accept() {
    let up = TestUpstream::start("up").await;
    // Out of descriptors after a few dozen connections, the proxy stops accepting: the
    // rest of a burst of 400 must still complete their handshakes in the kernel's queue
    // (with the standard library's backlog of 128 they would hang in SYN retries).
    let running = limited_binary("backlog", &up, 48).await;
    let http = running.http;
    let burst: Vec<_> = (0..400)
        .map(|_| {
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(http))
                    .await
                    .ok()
                    .and_then(Result::ok)
            })
        })
        .collect();
    let mut connected = Vec::new();
    for one in burst {
        if let Some(s) = one.await.unwrap() {
            connected.push(s);
        }
    }
    assert_eq!(
        connected.len(),
        400,
        "every handshake of the burst completed"
    );
    eventually(
        "the proxy ran out of descriptors",
        Duration::from_secs(5),
        || running.logged("accept failed") > 0,
    )
    .await;
    drop(connected);
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_gets_at_most_max_connections_and_the_overflow_is_503_at_once() {
    use crate::support::binary::*;
    let up = TestUpstream::start("up").await;
    let yaml = config(
        &format!(
            "  main: {{ endpoints: [\"{}\"], max_connections: 8, max_pending: 4 }}",
            up.addr
        ),
        "",
    )
    .replace(
        "listen: { http: \"127.0.0.1:0\" }",
        "listen: { http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }",
    )
    .replace("upstream_response: 300ms", "upstream_response: 10s")
    .replace("connect: 500ms", "connect: 3s")
    .replace("request_header: 400ms", "request_header: 10s");
    let (running, _) = start_yaml("max-connections", &yaml, &[]).await;
    wait_ready(&running).await;
    // Twenty clients at once, each waiting a second on the upstream.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = {
        let (peak, open) = (peak.clone(), up.open.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(open.load(Ordering::Relaxed), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let started = std::time::Instant::now();
    let answers = futures_iter_join((0..20).map(|_| {
        let addr = running.http;
        async move {
            let got = get_at(addr, "t.example.com", "/delay/1000").await;
            (got.status, std::time::Instant::now())
        }
    }))
    .await;
    watch.abort();
    let ok: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    let overflow: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(
        (ok.len(), overflow.len()),
        (12, 8),
        "8 served at once, 4 waited for a connection, 8 refused: {:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    assert!(
        overflow
            .iter()
            .all(|(_, at)| at.duration_since(started) < Duration::from_millis(900)),
        "the overflow is answered at once, not after waiting"
    );
    assert!(
        ok.iter()
            .filter(|(_, at)| at.duration_since(started) >= Duration::from_millis(1900))
            .count()
            == 4,
        "the four that waited were served on connections that came back"
    );
    let most = peak.load(Ordering::Relaxed);
    assert!(most <= 8, "at most 8 upstream connections, saw {most}");
    assert_eq!(
        up.connections.load(Ordering::Relaxed),
        8,
        "and no more were opened"
    );
    assert_eq!(running.terminate().await, Some(0));
}

/// Runs the futures at once and collects their outputs in order.
async fn futures_iter_join<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
