//! HTTP/2 clients that misbehave, through the binary with a raw frame writer: zero
//! windows, idling, floods, resets, endless header blocks. Each gets GOAWAY or a refused
//! stream, releases what it held, and leaves other clients served.

use std::{sync::atomic::Ordering, time::Duration};

use crate::support::{binary::*, h2raw::*, *};

const WAIT: Duration = Duration::from_secs(10);

fn config(up: &TestUpstream, timeouts: &str) -> String {
    format!(
        r#"
listen: {{ http: "127.0.0.1:0", admin: "127.0.0.1:0" }}
access_log: off
shutdown: {{ drain_delay: 0s, grace_period: 1s }}
timeouts: {{ {timeouts} }}
services: {{ main: {{ endpoints: ["{}"] }} }}
routes: [{{ host: h2.test, paths: [{{ path: /, service: main }}] }}]
"#,
        up.addr
    )
}

async fn binary(name: &str, yaml: &str) -> Running {
    let (running, _) = start_yaml(name, yaml, &[]).await;
    wait_ready(&running).await;
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_client_is_cut_after_client_write_and_its_upstreams_released() {
    let up = TestUpstream::start("up").await;
    let running = binary("h2-zero-window", &config(&up, "client_write: 1s")).await;
    // A window of zero: response heads can come, no byte of a body can.
    let mut h2 = RawH2::connect(running.http, &[(INITIAL_WINDOW_SIZE, 0)]).await;
    for id in [1, 3, 5, 7, 9] {
        h2.get(id, "h2.test", "/bytes/1000000").await.unwrap();
    }
    eventually("five upstream connections are open", WAIT, || {
        up.open.load(Ordering::Relaxed) == 5
    })
    .await;
    let started = std::time::Instant::now();
    let frames = h2
        .until_closed(WAIT)
        .await
        .expect("the connection is closed");
    let took = started.elapsed();
    let heads = frames.iter().filter(|f| f.kind == HEADERS).count();
    assert_eq!(heads, 5, "the response heads came: {frames:?}");
    assert!(
        frames.iter().all(|f| f.kind != DATA),
        "no body with a zero window"
    );
    assert!(
        frames.iter().any(|f| f.kind == GOAWAY),
        "told with GOAWAY, not a bare close: {frames:?}"
    );
    assert!(took < Duration::from_secs(4), "cut after {took:?}");
    eventually("the upstream connections are released", WAIT, || {
        up.open.load(Ordering::Relaxed) == 0
    })
    .await;
    let cut = "gatehouse_client_connections_cut_total{reason=\"client_not_reading\"}";
    assert_eq!(running.metric(cut).await, Some(1.0));
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_with_goaway() {
    let up = TestUpstream::start("up").await;
    let running = binary("h2-idle", &config(&up, "idle: 1s")).await;
    let mut h2 = RawH2::connect(running.http, &[]).await;
    h2.get(1, "h2.test", "/").await.unwrap();
    let started = std::time::Instant::now();
    let frames = h2.until_closed(WAIT).await.expect("closed when idle");
    let took = started.elapsed();
    assert!(
        frames.iter().any(|f| f.kind == HEADERS && f.stream == 1),
        "answered first: {frames:?}"
    );
    let goaway = frames.iter().find(|f| f.kind == GOAWAY);
    assert!(goaway.is_some(), "GOAWAY before the close: {frames:?}");
    assert_eq!(goaway.and_then(Frame::error_code), Some(0), "NO_ERROR");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "closed after idle: {took:?}"
    );
    assert_eq!(running.terminate().await, Some(0));
}
