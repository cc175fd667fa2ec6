//! Active health checks through the binary: a static endpoint that fails its checks
//! leaves rotation, and comes back once it passes them again; a TCP check takes out an
//! endpoint that refuses connections.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::support::{binary::*, *};

/// An endpoint whose `/healthz` answers 200 while `healthy`, else 503; any other path
/// answers its name. Counts the checks it gets.
async fn checked_endpoint(name: &'static str) -> (SocketAddr, Arc<AtomicBool>, Arc<AtomicUsize>) {
    use hyper::{server::conn::http1, service::service_fn};
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let healthy = Arc::new(AtomicBool::new(true));
    let checks = Arc::new(AtomicUsize::new(0));
    let (h, c) = (healthy.clone(), checks.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (h, c) = (h.clone(), c.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let mut resp = http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(name.as_bytes()),
                    ));
                    if req.uri().path() == "/healthz" {
                        c.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(req.headers()["user-agent"], "gatehouse-health-check");
                        if !h.load(Ordering::SeqCst) {
                            *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                    }
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, healthy, checks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_its_checks_leaves_rotation_and_comes_back_after_rising() {
    let (a, a_healthy, a_checks) = checked_endpoint("a").await;
    let (b, _, _) = checked_endpoint("b").await;
    let dead = dead_addr().await;
    let running = start_ready(
        "health-checks",
        &format!(
            r#"listen: {{ http: "127.0.0.1:0", admin: "127.0.0.1:0" }}
shutdown: {{ drain_delay: 0s }}
access_log: off
services:
  app: {{ endpoints: ["{a}", "{b}"], health: {{ http: /healthz, expect: "200-299", interval: 100ms, timeout: 1s, rise: 2, fall: 2 }} }}
  raw: {{ endpoints: ["{dead}", "{b}"], health: {{ tcp: true, interval: 100ms, fall: 1 }} }}
routes:
  - {{ host: app.test, paths: [{{ path: /, service: app }}] }}
  - {{ host: raw.test, paths: [{{ path: /, service: raw }}] }}
"#
        ),
    )
    .await;
    let served_by = |host: &'static str| async move {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            let got = send(&client(), get_req_at(running.http, host, "/", &[])).await;
            seen.insert(String::from_utf8_lossy(&got.body).into_owned());
        }
        seen.into_iter().collect::<Vec<_>>().join(",")
    };
    let wait = Duration::from_secs(10);
    eventually_async("both endpoints serve", wait, || async {
        served_by("app.test").await == "a,b"
    })
    .await;
    assert!(
        a_checks.load(Ordering::SeqCst) >= 1,
        "the endpoint is checked"
    );
    // a fails its checks: out of rotation, said once.
    a_healthy.store(false, Ordering::SeqCst);
    eventually_async("a leaves rotation", wait, || async {
        served_by("app.test").await == "b"
    })
    .await;
    assert_eq!(running.logged("failed 2 health checks in a row"), 1);
    assert_eq!(
        running
            .metric("gatehouse_health_check_transitions_total{service=\"app\",to=\"down\"}")
            .await,
        Some(1.0)
    );
    for _ in 0..3 {
        assert_eq!(served_by("app.test").await, "b");
    }
    // It passes again: back after two passes.
    a_healthy.store(true, Ordering::SeqCst);
    eventually_async("a is back", wait, || async {
        served_by("app.test").await == "a,b"
    })
    .await;
    eventually("the log says so", wait, || {
        running.logged("back in rotation") >= 1
    })
    .await;
    // A TCP check: the endpoint that refuses connections never gets a request once out.
    eventually_async("the dead endpoint is out", wait, || async {
        running
            .metric("gatehouse_health_check_transitions_total{service=\"raw\",to=\"down\"}")
            .await
            == Some(1.0)
    })
    .await;
    let retries = |running: &Running| {
        let admin = running.admin;
        async move {
            let got = admin_get(&client(), admin, "/metrics").await;
            metric_value(
                &String::from_utf8_lossy(&got.body),
                "gatehouse_upstream_connect_errors_total{service=\"raw\"}",
            )
            .unwrap_or(0.0)
        }
    };
    let before = retries(&running).await;
    assert_eq!(served_by("raw.test").await, "b");
    assert_eq!(
        retries(&running).await,
        before,
        "no request tried the dead endpoint"
    );
    assert_eq!(running.terminate().await, Some(0));
}
