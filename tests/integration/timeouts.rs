//! Timeouts after the request head, through the binary: an upstream that stalls
//! mid-response, a client that stops reading, an upload that stops, an upstream that takes
//! no body, idle and half-closed tunnels, and slow heads. Each is cut on time, counted, and
//! releases what it held.

use std::time::{Duration, Instant};

use crate::support::{binary::*, *};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const WAIT: Duration = Duration::from_secs(10);

/// Two routes to `up`: `global.test` with the configuration's `timeouts`, `own.test` with
/// the route's own.
fn config(up: &TestUpstream, timeouts: &str, route_timeouts: &str) -> String {
    format!(
        r#"
listen: {{ http: "127.0.0.1:0", admin: "127.0.0.1:0" }}
access_log: off
shutdown: {{ drain_delay: 0s, grace_period: 1s }}
timeouts: {{ {timeouts} }}
services: {{ main: {{ endpoints: ["{}"] }} }}
routes:
  - {{ host: global.test, max_body: 1g, paths: [{{ path: /, service: main }}] }}
  - {{ host: own.test, max_body: 1g, timeouts: {{ {route_timeouts} }}, paths: [{{ path: /, service: main }}] }}
"#,
        up.addr
    )
}

/// Sends a GET for `path` on `host` and reads everything until the proxy closes:
/// (the bytes, how long after the request the connection closed).
async fn get_until_closed(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{host}{path}: still open after {WAIT:?}");
    (got, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stalls_mid_response_is_cut_after_its_read_timeout() {
    let up = TestUpstream::start("up").await;
    let running = start_ready(
        "stall-read",
        &config(&up, "upstream_read: 2s", "upstream_read: 300ms"),
    )
    .await;
    // 64 KiB of a promised 128, then silence. The route's own 300 ms applies to own.test.
    let (got, took) = get_until_closed(running.http, "own.test", "/stall/65536").await;
    let head = String::from_utf8_lossy(&got[..got.len().min(200)]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(got.len() < 2 * 65536, "the client did not get a whole body");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "cut after the route's upstream_read of 300 ms: {took:?}"
    );
    // The configuration's 2 s applies elsewhere.
    let (_, took) = get_until_closed(running.http, "global.test", "/stall/65536").await;
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "cut after the global upstream_read of 2 s: {took:?}"
    );
    for route in ["own.test", "global.test"] {
        let series = format!(
            "gatehouse_responses_incomplete_total{{route=\"{route}\",reason=\"upstream_timeout\"}}"
        );
        assert_eq!(running.metric(&series).await, Some(1.0), "{series}");
    }
    eventually("the stalled upstream connections are closed", WAIT, || {
        up.open.load(std::sync::atomic::Ordering::Relaxed) == 0
    })
    .await;
    eventually("the operator is told once", WAIT, || {
        running.logged("the upstream sent nothing mid-response") == 1
    })
    .await;
    assert_eq!(running.terminate().await, Some(0));
}

/// A client socket with a small receive buffer that requests `path` and reads nothing.
async fn non_reading_client(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: global.test\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_are_cut_and_release_their_upstreams_in_flat_memory() {
    let up = TestUpstream::start("up").await;
    let running = start_ready(
        "not-reading",
        &config(&up, "client_write: 1s, upstream_read: 60s", ""),
    )
    .await;
    let pid = running.child.id().unwrap();
    let (before, _) = rss_kib(pid);
    // Twenty clients ask for a gigabyte each and read none of it.
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(non_reading_client(running.http, "/bytes/1073741824").await);
    }
    let started = Instant::now();
    eventually("every upstream connection is open", WAIT, || {
        up.open.load(std::sync::atomic::Ordering::Relaxed) == 20
    })
    .await;
    let cut = "gatehouse_client_connections_cut_total{reason=\"client_not_reading\"}";
    let peak = std::sync::atomic::AtomicU64::new(before);
    let (watched, high) = (&running, &peak);
    eventually_async("the twenty are cut for not reading", WAIT, || async move {
        high.fetch_max(rss_kib(pid).0, std::sync::atomic::Ordering::Relaxed);
        watched.metric(cut).await == Some(20.0)
    })
    .await;
    let peak = peak.into_inner();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "cut before client_write: {took:?}"
    );
    eventually("their upstream connections are released", WAIT, || {
        up.open.load(std::sync::atomic::Ordering::Relaxed) == 0
    })
    .await;
    assert!(
        peak < before + 64 * 1024,
        "memory grew from {before} KiB to {peak} KiB while 20 clients did not read"
    );
    let gone = "gatehouse_responses_incomplete_total{route=\"global.test\",reason=\"client_gone\"}";
    assert_eq!(running.metric(gone).await, Some(20.0));
    drop(clients);
    assert_eq!(running.terminate().await, Some(0));
}

/// An upstream that reads request heads and never a byte of a body, then answers nothing.
async fn upstream_not_reading() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                std::future::pending::<()>().await;
            });
        }
    });
    addr
}

/// Sends `head` and then `body` (as fast as the proxy takes it, or `pause` between parts),
/// reading the answer at the same time: (the status line, when it came).
async fn upload(
    addr: std::net::SocketAddr,
    head: &str,
    parts: usize,
    pause: Duration,
) -> (String, Duration) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = s.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let part = vec![b'u'; 64 * 1024];
        for _ in 0..parts {
            if write.write_all(&part).await.is_err() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        // Hold the connection open without finishing the body.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(WAIT, async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    sender.abort();
    assert!(read.is_ok(), "no answer within {WAIT:?}");
    let line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    (line, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_408_and_an_upstream_that_takes_no_body_is_504() {
    let up = TestUpstream::start("up").await;
    let deaf = upstream_not_reading().await;
    let yaml = config(
        &up,
        "client_body: 500ms, upstream_send: 500ms, upstream_response: 60s",
        "",
    )
    .replace(
        "services: {",
        &format!("services: {{ deaf: {{ endpoints: [\"{deaf}\"] }}, "),
    )
    .replace(
        "routes:\n",
        "routes:\n  - { host: deaf.test, max_body: 1g, paths: [{ path: /, service: deaf }] }\n",
    );
    let running = start_ready("upload-stalls", &yaml).await;
    let head = |host: &str| {
        format!("POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1073741824\r\n\r\n")
    };
    // Two parts, then the client goes quiet: the client's fault, 408 after client_body.
    let (status, took) = upload(running.http, &head("global.test"), 2, Duration::ZERO).await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "408 after client_body: {took:?}"
    );
    // A client that keeps sending slowly (every 200 ms) is within client_body: no 408 for
    // the 2 s it sends, however long the whole upload takes.
    let (status, took) = upload(
        running.http,
        &head("global.test"),
        10,
        Duration::from_millis(200),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert!(
        took >= Duration::from_secs(2),
        "a moving upload was cut at {took:?}"
    );
    // The upstream reads no body: the proxy stops taking the client's once the socket
    // buffers fill, and answers 504 after upstream_send.
    let (status, took) = upload(running.http, &head("deaf.test"), 16 * 1024, Duration::ZERO).await;
    assert!(status.starts_with("HTTP/1.1 504"), "{status}");
    assert!(
        took < Duration::from_secs(5),
        "504 after upstream_send: {took:?}"
    );
    assert_eq!(running.terminate().await, Some(0));
}

/// Opens a tunnel to the upstream's echo protocol at `path` and checks that it echoes.
async fn tunnel(addr: std::net::SocketAddr, host: &str, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).await.unwrap(),
            1,
            "closed during the upgrade"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"hello").await.unwrap();
    let mut echo = [0u8; 5];
    s.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hello");
    s
}

/// Reads until the peer closes: how long that took, or `None` if it did not within `WAIT`.
async fn closed_after(s: &mut TcpStream) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_close_when_idle_and_when_one_side_has_closed() {
    let up = TestUpstream::start("up").await;
    let running = start_ready(
        "tunnels",
        &config(&up, "tunnel_idle: 1s", "tunnel_idle: 60s"),
    )
    .await;
    // Silent for tunnel_idle: closed, not before.
    let mut s = tunnel(running.http, "global.test", "/upgrade").await;
    let took = closed_after(&mut s)
        .await
        .expect("an idle tunnel is closed");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after tunnel_idle: {took:?}"
    );
    // Traffic keeps one open past tunnel_idle.
    let mut s = tunnel(running.http, "global.test", "/upgrade").await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(b"still").await.unwrap();
        let mut echo = [0u8; 5];
        s.read_exact(&mut echo).await.unwrap();
    }
    // The client closes its side; the upstream neither answers nor closes. Its route's
    // tunnel_idle is a minute, yet the tunnel closes both ways at once.
    let mut s = tunnel(running.http, "own.test", "/upgrade-linger").await;
    s.shutdown().await.unwrap();
    let took = closed_after(&mut s)
        .await
        .expect("a half-closed tunnel is closed");
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    eventually("the upstream side is closed too", WAIT, || {
        up.open.load(std::sync::atomic::Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_is_cut_within_request_header_and_a_second() {
    let up = TestUpstream::start("up").await;
    let running = start_ready("slow-head", &config(&up, "request_header: 2s", "")).await;
    let mut s = TcpStream::connect(running.http).await.unwrap();
    let (mut read, mut write) = s.split();
    let started = Instant::now();
    // One header byte every 100 ms: the socket is busy, the head never ends.
    let trickle = async {
        for b in b"GET / HTTP/1.1\r\nHost: global.test\r\nX-Slow: "
            .iter()
            .chain([b'a'; 200].iter())
        {
            if write.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 64];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        started.elapsed()
    };
    let took = tokio::select! {
        took = closed => took,
        () = trickle => panic!("the slow head was never cut"),
    };
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "cut {took:?} after its first byte; request_header is 2 s"
    );
    let cut = "gatehouse_client_connections_cut_total{reason=\"slow_header\"}";
    assert_eq!(running.metric(cut).await, Some(1.0));
    assert_eq!(up.requests.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_client_abandons_is_logged_and_counted_as_499() {
    use tokio::io::AsyncBufReadExt;
    let up = TestUpstream::start("up").await;
    let yaml =
        config(&up, "upstream_response: 60s", "").replace("access_log: off", "access_log: stdout");
    let config = temp_dir("abandoned").join("gatehouse.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut running = run_with(&config, &[], std::process::Stdio::piped()).await;
    wait_ready(&running).await;
    let mut lines = tokio::io::BufReader::new(running.child.stdout.take().unwrap()).lines();
    let requests = || up.requests.load(std::sync::atomic::Ordering::Relaxed);

    // HTTP/1.1: the client closes its connection while the upstream is still working.
    let mut s = TcpStream::connect(running.http).await.unwrap();
    s.write_all(b"GET /delay/3000 HTTP/1.1\r\nHost: global.test\r\n\r\n")
        .await
        .unwrap();
    eventually("the request reached the upstream", WAIT, || requests() == 1).await;
    drop(s);
    // HTTP/2: the client resets its stream (drops the response future).
    let (mut h2, _conn) = h2_connect(running.http).await;
    let req = http::Request::get("http://global.test/delay/3000")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let sent = tokio::spawn(async move { h2.send_request(req).await.map(|_| ()) });
    eventually("the h2 request reached the upstream", WAIT, || {
        requests() == 2
    })
    .await;
    sent.abort();

    for protocol in ["HTTP/1.1", "HTTP/2.0"] {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("an access log line for the abandoned request")
            .unwrap()
            .unwrap();
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(entry["status"], 499, "{line}");
        assert_eq!(entry["incomplete"], "client_gone", "{line}");
        assert_eq!(entry["route"], "global.test", "{line}");
        assert_eq!(entry["protocol"], protocol, "{line}");
        assert!(
            entry["duration"].as_f64().unwrap() < 2.5,
            "logged when abandoned: {line}"
        );
    }
    let counted = "gatehouse_http_requests_total{route=\"global.test\",code=\"499\"}";
    assert_eq!(running.metric(counted).await, Some(2.0));
    let gone = "gatehouse_responses_incomplete_total{route=\"global.test\",reason=\"client_gone\"}";
    assert_eq!(running.metric(gone).await, Some(2.0));
    assert_eq!(running.terminate().await, Some(0));
}
