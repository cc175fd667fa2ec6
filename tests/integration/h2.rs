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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_client_is_cut_after_client_write_and_its_upstreams_released() {
    let up = TestUpstream::start("up").await;
    let running = start_ready("h2-zero-window", &config(&up, "client_write: 1s")).await;
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
    let running = start_ready("h2-idle", &config(&up, "idle: 1s")).await;
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

/// The proxy's CPU time so far (user + system, in seconds) and its resident set (KiB).
fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces, so split after its ')').
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    (ticks / 100.0, rss_kib(pid).0)
}

/// The median and 99th percentile latency of sequential GETs on one keep-alive HTTP/1.1
/// connection, for at least `n` requests and two seconds.
async fn latency(addr: std::net::SocketAddr, n: usize) -> (Duration, Duration) {
    let c = client();
    let mut samples = Vec::with_capacity(n);
    let started = std::time::Instant::now();
    while samples.len() < n || started.elapsed() < Duration::from_secs(2) {
        let sent = std::time::Instant::now();
        let got = send(&c, get_req_at(addr, "h2.test", "/", &[])).await;
        assert_eq!(got.status, 200, "the second client is served");
        samples.push(sent.elapsed());
    }
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

/// One attacking connection's outcome: the frames it got back before the close.
type Outcome = Vec<Frame>;
type Attack = std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;
type Attacker = fn(std::net::SocketAddr) -> Attack;

/// Rapid reset (CVE-2023-44487): open a stream and cancel it at once, over and over.
async fn rapid_reset(addr: std::net::SocketAddr) -> Outcome {
    let mut h2 = RawH2::connect(addr, &[]).await;
    for id in (1..4000u32).step_by(2) {
        if h2.get(id, "h2.test", "/").await.is_err()
            || h2
                .send(RST_STREAM, 0, id, &CANCEL.to_be_bytes())
                .await
                .is_err()
        {
            break;
        }
    }
    h2.until_closed(WAIT).await.unwrap_or_default()
}

/// A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION frames.
async fn continuation_flood(addr: std::net::SocketAddr) -> Outcome {
    let mut h2 = RawH2::connect(addr, &[]).await;
    let _ = h2.send(HEADERS, 0, 1, &request_block("h2.test", "/")).await;
    for _ in 0..10_000 {
        if h2
            .send(CONTINUATION, 0, 1, &literal("x-more", "y"))
            .await
            .is_err()
        {
            break;
        }
    }
    h2.until_closed(WAIT).await.unwrap_or_default()
}

/// An HPACK bomb: one 4,000-byte header put in the dynamic table, then referenced 10,000
/// times in the same block (one byte each): 40 MB of headers from 14 KB.
async fn hpack_bomb(addr: std::net::SocketAddr) -> Outcome {
    let mut h2 = RawH2::connect(addr, &[]).await;
    let mut block = request_block("h2.test", "/");
    // Literal with incremental indexing, new name `x-bomb`, value length 4000 (HPACK
    // integer: 127 + 3873 = 0x7f, 0xa1, 0x1e).
    block.extend_from_slice(&[0x40, 6]);
    block.extend_from_slice(b"x-bomb");
    block.extend_from_slice(&[0x7f, 0xa1, 0x1e]);
    block.extend(std::iter::repeat_n(b'a', 4000));
    // Indexed: dynamic entry 62.
    block.extend(std::iter::repeat_n(0xbe, 10_000));
    let _ = h2.send(HEADERS, END_HEADERS | END_STREAM, 1, &block).await;
    h2.until_closed(WAIT).await.unwrap_or_default()
}

/// More streams than the server allows (256), each waiting 1.5 s on the upstream: the
/// frames until every stream beyond the limit is refused and the others are answered.
async fn too_many_streams(addr: std::net::SocketAddr) -> Outcome {
    let opened = std::time::Instant::now();
    let mut h2 = RawH2::connect(addr, &[]).await;
    h2.ack_settings().await;
    for id in (1..=599u32).step_by(2) {
        if h2.get(id, "h2.test", "/delay/1500").await.is_err() {
            break;
        }
    }
    let mut frames = Vec::new();
    let refused = |frames: &[Frame]| {
        frames
            .iter()
            .filter(|f| f.kind == RST_STREAM && f.error_code() == Some(REFUSED_STREAM))
            .count()
    };
    let answered = |frames: &[Frame]| frames.iter().filter(|f| f.kind == HEADERS).count();
    while refused(&frames) < 44 || (answered(&frames) < 256 && opened.elapsed() < WAIT) {
        match h2.next(Duration::from_secs(3)).await {
            Some(f) => frames.push(f),
            None => break,
        }
    }
    frames
}

/// `kind` frames (SETTINGS or PING) as fast as the server takes them, reading its answers.
async fn control_flood(addr: std::net::SocketAddr, kind: u8) -> Outcome {
    let h2 = RawH2::connect(addr, &[]).await;
    let (read, mut write) = h2.stream.into_split();
    let payload: &[u8] = if kind == PING { &[0; 8] } else { &[] };
    let one = frame(kind, 0, 0, payload).repeat(64);
    let writer = tokio::spawn(async move {
        for _ in 0..100_000 {
            if tokio::io::AsyncWriteExt::write_all(&mut write, &one)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut reader = RawH2::from_read_half(read);
    // Well before request_header (10 s), which would close a connection without requests.
    let frames = reader
        .until_closed(Duration::from_secs(3))
        .await
        .unwrap_or_default();
    writer.abort();
    frames
}

/// What each attack must end with.
fn judge(attack: &str, frames: &[Frame]) {
    let goaway = frames.iter().find(|f| f.kind == GOAWAY);
    let refused = frames
        .iter()
        .filter(|f| f.kind == RST_STREAM && f.error_code() == Some(REFUSED_STREAM))
        .count();
    let ok_heads = frames.iter().filter(|f| f.kind == HEADERS).count();
    match attack {
        "rapid reset" => assert_eq!(
            goaway.and_then(Frame::error_code),
            Some(ENHANCE_YOUR_CALM),
            "{attack}: GOAWAY ENHANCE_YOUR_CALM"
        ),
        "CONTINUATION flood" | "SETTINGS flood" | "PING flood" => {
            assert!(goaway.is_some(), "{attack}: GOAWAY, then closed")
        }
        "HPACK bomb" => {
            assert_eq!(ok_heads, 0, "{attack}: never answered as a request");
            assert!(
                goaway.is_some() || frames.iter().any(|f| f.kind == RST_STREAM),
                "{attack}: refused"
            );
        }
        "300 streams" => assert!(
            refused >= 44,
            "{attack}: {refused} streams refused beyond 256"
        ),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_attacks_are_cut_and_a_second_client_stays_fast() {
    let up = TestUpstream::start("up").await;
    let running = start_ready("h2-attacks", &config(&up, "request_header: 10s")).await;
    let pid = running.child.id().unwrap();
    let addr = running.http;
    // A first round warms caches and pools, so the baseline is not inflated by them.
    latency(addr, 300).await;
    let (baseline, baseline_p99) = latency(addr, 300).await;
    let attacks: [(&str, Attacker); 6] = [
        ("rapid reset", |a| Box::pin(rapid_reset(a))),
        ("CONTINUATION flood", |a| Box::pin(continuation_flood(a))),
        ("HPACK bomb", |a| Box::pin(hpack_bomb(a))),
        ("300 streams", |a| Box::pin(too_many_streams(a))),
        ("SETTINGS flood", |a| Box::pin(control_flood(a, SETTINGS))),
        ("PING flood", |a| Box::pin(control_flood(a, PING))),
    ];
    for (name, attack) in attacks {
        // The first connection's outcome is judged; then the attack repeats on new
        // connections while the second client measures its latency.
        judge(name, &attack(addr).await);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let attacker = tokio::spawn({
            let stop = stop.clone();
            async move {
                // One attacking connection every 20 ms, each run to its end: the attack
                // goes on for the whole measurement, without this test's own two cores
                // spent on the attacker instead of the client it measures.
                let mut connections = 0;
                let mut pace = tokio::time::interval(Duration::from_millis(20));
                while !stop.load(Ordering::Relaxed) {
                    pace.tick().await;
                    attack(addr).await;
                    connections += 1;
                }
                connections
            }
        });
        let (cpu_before, _) = cpu_and_rss(pid);
        let started = std::time::Instant::now();
        let (during, during_p99) = latency(addr, 300).await;
        let (cpu_after, rss) = cpu_and_rss(pid);
        stop.store(true, Ordering::Relaxed);
        let connections = attacker.await.unwrap();
        let cpu = (cpu_after - cpu_before) / started.elapsed().as_secs_f64();
        eprintln!(
            "{name}: second client median {during:?} (baseline {baseline:?}, {:.2}x), p99 {during_p99:?} (baseline {baseline_p99:?}, {:.2}x); proxy CPU {:.0}% of a core, RSS {} MiB; {connections} attacking connections",
            during.as_secs_f64() / baseline.as_secs_f64(),
            during_p99.as_secs_f64() / baseline_p99.as_secs_f64(),
            cpu * 100.0,
            rss / 1024
        );
        assert!(
            during <= baseline * 2,
            "{name}: the second client's median went from {baseline:?} to {during:?}"
        );
    }
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_after_they_are_accepted_do_not_churn_upstream_connections() {
    let up = TestUpstream::start("up").await;
    let yaml = config(&up, "request_header: 10s")
        .replace("endpoints: [\"", "max_connections: 32, endpoints: [\"");
    let running = start_ready("h2-reset-churn", &yaml).await;
    // Batches of 64 streams whose upstream answers after 200 ms, reset once their requests
    // reached the upstream (32 at a time: the others wait for a connection), then the
    // connection closed.
    let requests = || up.requests.load(Ordering::Relaxed);
    for _ in 0..10 {
        let before = requests();
        let mut h2 = RawH2::connect(running.http, &[]).await;
        let ids: Vec<u32> = (1..128u32).step_by(2).collect();
        for id in &ids {
            h2.get(*id, "h2.test", "/delay/200").await.unwrap();
        }
        eventually("a batch reached the upstream", WAIT, || {
            requests() >= before + 32
        })
        .await;
        for id in &ids {
            let _ = h2.send(RST_STREAM, 0, *id, &CANCEL.to_be_bytes()).await;
        }
        drop(h2);
    }
    let requests = requests();
    eventually("the abandoned exchanges finish", WAIT, || {
        up.open.load(Ordering::Relaxed) <= 32
    })
    .await;
    let opened = up.connections.load(Ordering::Relaxed);
    assert!(requests >= 320, "streams reached the upstream: {requests}");
    assert!(
        opened <= 32,
        "{requests} abandoned requests opened {opened} upstream connections (max_connections is 32)"
    );
    // And the upstream still serves a normal client at once.
    let got = get_at(running.http, "h2.test", "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(running.terminate().await, Some(0));
}
