//! Per-route retries through the binary (nginx's proxy_next_upstream): which failures go to
//! another endpoint, how many tries, and that a request whose body reached the upstream is
//! never sent twice.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use tokio::{io::AsyncReadExt, net::TcpListener};

use crate::support::{binary::*, *};

/// How a broken endpoint treats each request (after reading its head).
#[derive(Clone, Copy)]
enum Broken {
    /// Answers with this status.
    Status(u16),
    /// Closes the connection without an answer.
    Reset,
    /// Never answers.
    Hang,
}

/// A broken endpoint, and how many requests reached it.
async fn broken(how: Broken) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut head = Vec::new();
                // Requests one after another on the connection, bounded by its life.
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    if !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    match how {
                        Broken::Reset => return,
                        Broken::Hang => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                        Broken::Status(code) => {
                            // Close after answering: what a request carried does not matter.
                            let answer = format!("HTTP/1.1 {code} Broken\r\ncontent-length: 6\r\nconnection: close\r\n\r\nbroken");
                            use tokio::io::AsyncWriteExt;
                            let _ = stream.write_all(answer.as_bytes()).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn route(host: &str, service: &str, extra: &str) -> String {
    format!("  - {{ host: {host}, paths: [{{ path: /, service: {service} }}]{extra} }}\n")
}

/// Statuses of `n` requests (GET, or POST with a body) to `host`.
async fn statuses(running: &Running, host: &str, n: usize, post: bool) -> Vec<u16> {
    let c = client();
    let mut out = Vec::new();
    for _ in 0..n {
        let mut req = get_req_at(running.http, host, "/", &[]);
        if post {
            *req.method_mut() = http::Method::POST;
            *req.body_mut() = Full::new(Bytes::from_static(b"order=1"));
        }
        out.push(send(&c, req).await.status.as_u16());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_go_to_another_endpoint_as_the_route_says_and_bodies_are_never_sent_twice() {
    let good = TestUpstream::start("good").await;
    let (unavailable, unavailable_seen) = broken(Broken::Status(503)).await;
    let (reset, reset_seen) = broken(Broken::Reset).await;
    let (hang, _) = broken(Broken::Hang).await;
    let service = |name: &str, bad: SocketAddr| {
        format!(
            "  {name}: {{ endpoints: [\"{bad}\", \"{}\"] }}\n",
            good.addr
        )
    };
    let yaml = format!(
        "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\naccess_log: off\nshutdown: {{ drain_delay: 0s, grace_period: 1s }}\nservices:\n{}{}{}routes:\n{}{}{}{}{}",
        service("unavailable", unavailable),
        service("reset", reset),
        service("hang", hang),
        route("status.test", "unavailable", ", retry: { on: \"error timeout http_503\" }"),
        route("default.test", "unavailable", ""),
        route("reset.test", "reset", ""),
        route("off.test", "reset", ", retry: off"),
        route("hang.test", "hang", ", timeouts: { upstream_response: 300ms }"),
    );
    let running = start_ready("retries", &yaml).await;

    // http_503 listed: every GET ends on the good endpoint; the bad one saw its share.
    let got = statuses(&running, "status.test", 10, false).await;
    assert!(got.iter().all(|s| *s == 200), "{got:?}");
    let tried = unavailable_seen.load(Ordering::Relaxed);
    assert!(tried >= 3, "the 503 endpoint was tried {tried} times");
    let retried = "gatehouse_upstream_retries_total{failure=\"http_503\",service=\"unavailable\"}";
    assert_eq!(running.metric(retried).await, Some(tried as f64));
    // A POST's body reached the 503 endpoint: its answer is the client's, not a resend.
    let posts = statuses(&running, "status.test", 10, true).await;
    assert!(posts.contains(&503) && posts.contains(&200), "{posts:?}");
    assert_eq!(
        unavailable_seen.load(Ordering::Relaxed) - tried,
        posts.iter().filter(|s| **s == 503).count(),
        "each POST reached the bad endpoint at most once"
    );

    // By default (error timeout, as ingress-nginx) a 503 answer is not retried...
    let got = statuses(&running, "default.test", 10, false).await;
    assert!(got.contains(&503), "{got:?}");
    // ...but a connection the endpoint breaks is, for a GET.
    let got = statuses(&running, "reset.test", 10, false).await;
    assert!(got.iter().all(|s| *s == 200), "{got:?}");
    assert!(reset_seen.load(Ordering::Relaxed) >= 3);
    // A POST whose body was sent is not: 502.
    let posts = statuses(&running, "reset.test", 10, true).await;
    assert!(posts.contains(&502) && posts.contains(&200), "{posts:?}");
    // `retry: off`: the broken connection is the client's 502, GET or not.
    let got = statuses(&running, "off.test", 10, false).await;
    assert!(got.contains(&502), "{got:?}");
    // A response head later than the route's timeout: the GET moves on, the POST is 504.
    let got = statuses(&running, "hang.test", 4, false).await;
    assert!(got.iter().all(|s| *s == 200), "{got:?}");
    let posts = statuses(&running, "hang.test", 4, true).await;
    assert!(posts.contains(&504), "{posts:?}");
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tries_bound_how_many_endpoints_one_request_reaches() {
    let good = TestUpstream::start("good").await;
    let mut bad = Vec::new();
    for _ in 0..3 {
        bad.push(broken(Broken::Status(502)).await);
    }
    let endpoints: Vec<String> = bad
        .iter()
        .map(|(a, _)| format!("\"{a}\""))
        .chain([format!("\"{}\"", good.addr)])
        .collect();
    let yaml = format!(
        "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\naccess_log: off\nshutdown: {{ drain_delay: 0s, grace_period: 1s }}\nservices:\n  app: {{ endpoints: [{}] }}\nroutes:\n{}{}",
        endpoints.join(", "),
        route("two.test", "app", ", retry: { on: \"http_502\", tries: 2 }"),
        route("all.test", "app", ", retry: { on: \"http_502\", tries: 0 }"),
    );
    let running = start_ready("retry-tries", &yaml).await;
    let reached = || {
        bad.iter()
            .map(|(_, n)| n.load(Ordering::Relaxed))
            .sum::<usize>()
    };
    // Two tries over three bad endpoints of four: some requests end on two bad ones.
    let got = statuses(&running, "two.test", 20, false).await;
    assert!(got.contains(&502) && got.contains(&200), "{got:?}");
    // tries: 0 reaches every endpoint if need be: all succeed.
    let before = reached();
    let got = statuses(&running, "all.test", 20, false).await;
    assert!(got.iter().all(|s| *s == 200), "{got:?}");
    assert!(
        reached() > before,
        "the bad endpoints were tried first at times"
    );
    assert_eq!(running.terminate().await, Some(0));
}
