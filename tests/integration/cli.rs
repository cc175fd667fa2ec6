//! The `gatehouse` binary as an operator runs it: `check`, exit codes, SIGHUP, SIGTERM.

use std::{process::Stdio, time::Duration};

use crate::support::{binary::*, *};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gatehouse.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn check_accepts_a_valid_file_and_lists_every_error_of_a_bad_one() {
    let good = temp_file(
        "good",
        "listen: { http: \"127.0.0.1:0\" }\nservices: {}\nroutes: []\n",
    );
    let out = run_to_end(&["check"], &good).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    let bad = temp_file("bad", "listen: { http: \"nowhere\" }\ntimeouts: { conect: 1s }\nroutes: [{ host: a.example.com, paths: [{ path: /, service: nope }] }]\n");
    let out = run_to_end(&["check"], &bad).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = bad.display().to_string();
    assert!(err.contains(&format!("{name}:1:")), "{err}");
    assert!(err.contains(&format!("{name}:2:")), "{err}");
    assert!(err.contains(&format!("{name}:3:")), "{err}");
    assert!(err.contains("3 error(s)"), "{err}");

    // `run` with a bad file refuses to start, with the same exit code.
    let out = run_to_end(&["run"], &bad).await;
    assert_eq!(out.status.code(), Some(2));
    // Usage errors exit 2 as well.
    let out = Command::new(BIN)
        .args(["run", "--no-such-flag"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

async fn wait_for_metric(c: &TestClient, admin: std::net::SocketAddr, line: &str, what: &str) {
    eventually_async(what, Duration::from_secs(10), || async {
        let metrics = admin_get(c, admin, "/metrics").await;
        String::from_utf8_lossy(&metrics.body).contains(line)
    })
    .await;
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    let up = TestUpstream::start("up").await;
    let config = temp_file(
        "term",
        &format!(
            "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\naccess_log: off\nshutdown: {{ drain_delay: 300ms, grace_period: 10s }}\nservices: {{ a: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ host: s.example.com, paths: [{{ path: /, service: a }}] }}]\n",
            up.addr
        ),
    );
    let mut running = run(&config).await;
    let c = client();
    // Ready once every listener serves (the admin one answers a moment before that).
    eventually_async("/readyz turns 200", Duration::from_secs(10), || async {
        admin_get(&c, running.admin, "/readyz").await.status == 200
    })
    .await;
    assert_eq!(admin_get(&c, running.admin, "/healthz").await.status, 200);

    let http = running.http;
    let slow = tokio::spawn(async move {
        let req = http::Request::get(format!("http://{http}/delay/1500"))
            .header("host", "s.example.com")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        send(&client(), req).await
    });
    eventually(
        "the slow request reached the upstream",
        Duration::from_secs(10),
        || up.requests.load(std::sync::atomic::Ordering::Relaxed) == 1,
    )
    .await;
    signal(&running.child, "-TERM");
    // Readiness drops at once so load balancers stop sending.
    eventually_async("/readyz turns 503", Duration::from_secs(5), || async {
        admin_get(&client(), running.admin, "/readyz").await.status == 503
    })
    .await;
    let got = slow.await.unwrap();
    assert_eq!(got.status, 200, "the in-flight request completed");
    let status = tokio::time::timeout(Duration::from_secs(15), running.child.wait())
        .await
        .expect("exits within the grace period")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sighup_reloads_the_file_and_a_bad_file_keeps_the_old_config() {
    let up = TestUpstream::start("up").await;
    let text = |header: &str, extra: &str| {
        format!(
            "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\naccess_log: off\nshutdown: {{ drain_delay: 0s }}\nservices: {{ a: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ host: h.example.com, response_headers: {{ X-Gen: \"{header}\" }}, paths: [{{ path: /, service: a }}] }}]\n{extra}",
            up.addr
        )
    };
    let config = temp_file("hup", &text("one", ""));
    let running = run(&config).await;
    let c = client();
    let proxy_get = |c: TestClient, http| async move {
        let req = http::Request::get(format!("http://{http}/"))
            .header("host", "h.example.com")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        send(&c, req).await
    };
    assert_eq!(
        proxy_get(c.clone(), running.http).await.headers["x-gen"],
        "one"
    );

    // SIGHUP reloads even an unchanged file.
    signal(&running.child, "-HUP");
    wait_for_metric(
        &c,
        running.admin,
        "gatehouse_config_reloads_total{result=\"success\"} 1",
        "SIGHUP reload not counted",
    )
    .await;

    // A broken file is refused; the running configuration keeps serving.
    std::fs::write(&config, text("two", "bogus: true\n")).unwrap();
    wait_for_metric(
        &c,
        running.admin,
        "gatehouse_config_reloads_total{result=\"error\"} 1",
        "bad file not noticed",
    )
    .await;
    assert_eq!(
        proxy_get(c.clone(), running.http).await.headers["x-gen"],
        "one"
    );

    // Fixing the file applies it.
    std::fs::write(&config, text("three", "")).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while proxy_get(c.clone(), running.http).await.headers["x-gen"] != "three" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fixed file not applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test]
async fn access_log_is_one_json_line_per_request_on_stdout_without_query_strings() {
    let up = TestUpstream::start("up").await;
    let config = temp_file(
        "log",
        &format!(
            "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nshutdown: {{ drain_delay: 0s }}\nservices: {{ a: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ host: log.example.com, paths: [{{ path: /, service: a }}] }}]\n",
            up.addr
        ),
    );
    let mut running = run_with(&config, &[], Stdio::piped()).await;
    let mut stdout = BufReader::new(running.child.stdout.take().unwrap()).lines();
    let req = http::Request::post(format!("http://{}/login?token=s3cret", running.http))
        .header("host", "log.example.com")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"hello",
        )))
        .unwrap();
    let got = send(&client(), req).await;
    assert_eq!(got.status, 200);
    let line = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
        .await
        .expect("an access log line within 10 s")
        .unwrap()
        .unwrap();
    assert!(
        !line.contains("s3cret"),
        "query strings must not reach the log: {line}"
    );
    let entry: serde_json::Value = serde_json::from_str(&line).expect("the line is JSON");
    assert_eq!(entry["client"], "127.0.0.1");
    assert_eq!(entry["method"], "POST");
    assert_eq!(entry["host"], "log.example.com");
    assert_eq!(entry["path"], "/login");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["bytes"].as_u64(), Some(got.body.len() as u64));
    assert_eq!(entry["upstream"], up.addr.to_string());
    assert_eq!(entry["route"], "log.example.com");
    assert!(entry["duration"].as_f64().is_some_and(|d| d > 0.0));
    assert!(entry["upstream_time"].as_f64().is_some_and(|d| d > 0.0));
    assert!(entry["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test]
async fn a_port_that_cannot_be_bound_at_start_exits_1_naming_it() {
    let holder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = holder.local_addr().unwrap();
    let config = temp_file(
        "taken",
        &format!("listen: {{ http: \"{taken}\" }}\nservices: {{}}\nroutes: []\n"),
    );
    let out = run_to_end(&["run"], &config).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a runtime failure, not a bad file"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&taken.to_string()), "names the address: {err}");
}

fn slow_config(up: &TestUpstream, grace: &str) -> String {
    format!(
        "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\naccess_log: off\nshutdown: {{ drain_delay: 0s, grace_period: {grace} }}\nservices: {{ a: {{ endpoints: [\"{}\"] }} }}\nroutes: [{{ host: s.example.com, paths: [{{ path: /, service: a }}] }}]\n",
        up.addr
    )
}

#[tokio::test]
async fn sigint_drains_like_sigterm_and_a_second_signal_exits_1_at_once() {
    let up = TestUpstream::start("up").await;
    let (mut running, _) = start_yaml("sigint", &slow_config(&up, "30s"), &[]).await;
    wait_ready(&running).await;
    let http = running.http;
    let _slow = tokio::spawn(async move {
        request_from(
            "127.0.0.1",
            http,
            b"",
            get_req("s.example.com", "/delay/20000", &[]),
        )
        .await
    });
    eventually(
        "the slow request reached the upstream",
        Duration::from_secs(10),
        || up.requests.load(std::sync::atomic::Ordering::Relaxed) == 1,
    )
    .await;
    signal(&running.child, "-INT");
    let c = client();
    eventually_async(
        "/readyz turns 503 on SIGINT",
        Duration::from_secs(5),
        || async { admin_get(&c, running.admin, "/readyz").await.status == 503 },
    )
    .await;
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "still draining: the in-flight request has 30 s"
    );
    let second = std::time::Instant::now();
    signal(&running.child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(5), running.child.wait())
        .await
        .expect("a second signal exits at once")
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(second.elapsed() < Duration::from_secs(3));
    // The log line may still be in the pipe when the exit is seen.
    eventually(
        "the second signal is logged",
        Duration::from_secs(5),
        || running.logged("second signal: exiting now") == 1,
    )
    .await;
}

/// One round trip through an echo tunnel, within 5 s.
async fn echo(tunnel: &mut tokio::net::TcpStream) -> [u8; 4] {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let round_trip = async {
        tunnel.write_all(b"ping").await?;
        let mut b = [0u8; 4];
        tunnel.read_exact(&mut b).await?;
        Ok::<_, std::io::Error>(b)
    };
    tokio::time::timeout(Duration::from_secs(5), round_trip)
        .await
        .expect("an echo within 5 s")
        .expect("the tunnel is open")
}

/// Reads HTTP/2 frames (9-byte header, then the payload) until a GOAWAY (type 7) arrives;
/// answers the server's SETTINGS. `false` when the connection ends without one.
async fn until_goaway(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut head = [0u8; 9];
        if stream.read_exact(&mut head).await.is_err() {
            return false;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if stream.read_exact(&mut payload).await.is_err() {
            return false;
        }
        match (head[3], head[4]) {
            (7, _) => return true,
            // SETTINGS without ACK: acknowledge it.
            (4, 0) => {
                let _ = stream.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_http2_goaway_and_gives_websocket_tunnels_the_grace_period() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = TestUpstream::start("up").await;
    let (mut running, _) = start_yaml("goaway", &slow_config(&up, "2s"), &[]).await;
    wait_ready(&running).await;

    // An idle HTTP/2 connection (prior knowledge): preface and an empty SETTINGS frame.
    let mut h2 = tokio::net::TcpStream::connect(running.http).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    // A WebSocket-style tunnel through the proxy to the upstream's echo protocol.
    let mut tunnel = tokio::net::TcpStream::connect(running.http).await.unwrap();
    tunnel
        .write_all(b"GET /upgrade HTTP/1.1\r\nHost: s.example.com\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tunnel.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_eq!(&echo(&mut tunnel).await, b"ping");

    let started = std::time::Instant::now();
    signal(&running.child, "-TERM");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), until_goaway(&mut h2))
            .await
            .expect("GOAWAY within 5 s"),
        "the HTTP/2 connection is told to go away"
    );
    // The tunnel keeps working during the grace period...
    assert_eq!(
        &echo(&mut tunnel).await,
        b"ping",
        "a tunnel works on after SIGTERM"
    );
    // ...and is closed when it ends; the process then exits 0.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), tunnel.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the tunnel is closed after the grace period"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "not before the grace period: {waited:?}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), running.child.wait())
        .await
        .expect("exits after the grace period")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_the_line_the_readme_shows_and_serves_it() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let documented = readme
        .lines()
        .find(|l| l.starts_with("Gatehouse demo is running."))
        .expect("the README shows the demo's line");
    let mut child = Command::new(BIN)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let printed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("Gatehouse demo is running.") {
                return line;
            }
        }
        panic!("the demo exited without its line");
    })
    .await
    .expect("the demo's line within 20 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    assert_eq!(
        printed, documented,
        "the README shows the line the demo prints"
    );

    // What the line says to run works: plain HTTP, HTTPS with the generated certificate,
    // and the metrics.
    let got = request_from(
        "127.0.0.1",
        "127.0.0.1:8080".parse().unwrap(),
        b"",
        get_req("localhost:8080", "/hello", &[]),
    )
    .await
    .expect("the demo answers on 8080");
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["x-served-by"], "gatehouse-demo");
    assert_eq!(got.json()["uri"], "/hello");
    let tls = crate::support::tls::connect(
        crate::support::tls::any_certificate_client(),
        "127.0.0.1:8443".parse().unwrap(),
        Some("localhost"),
        "localhost",
    )
    .await
    .expect("TLS on 8443");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(get_req("localhost", "/hello", &[]))
        .await
        .unwrap();
    assert_eq!(
        collect(resp).await.json()["headers"]["x-forwarded-proto"],
        "https"
    );
    let metrics = admin_get(&client(), "127.0.0.1:9901".parse().unwrap(), "/metrics").await;
    assert_eq!(metrics.status, 200);
    signal(&child, "-INT");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("SIGINT stops the demo")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_the_start_of_the_drain_http1_answers_close_and_http2_connections_get_goaway() {
    let up = TestUpstream::start("up").await;
    let yaml = slow_config(&up, "5s").replace("drain_delay: 0s", "drain_delay: 2s");
    let (mut running, _) = start_yaml("drain-close", &yaml, &[]).await;
    wait_ready(&running).await;
    // A keep-alive connection from before the signal.
    let stream = tokio::net::TcpStream::connect(running.http).await.unwrap();
    let (mut keep_alive, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let first = keep_alive
        .send_request(get_req("s.example.com", "/", &[]))
        .await
        .unwrap();
    assert!(
        first.headers().get("connection").is_none(),
        "kept alive while serving"
    );
    collect(first).await;
    // And an HTTP/2 one.
    let (mut h2, h2_conn) = h2_connect(running.http).await;
    let h2_get = || {
        http::Request::get("http://s.example.com/")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    collect(h2.send_request(h2_get()).await.unwrap()).await;

    signal(&running.child, "-TERM");
    let c = client();
    eventually_async("the drain starts", Duration::from_secs(5), || async {
        admin_get(&c, running.admin, "/readyz").await.status == 503
    })
    .await;
    // Its next answer says close, and the connection ends after it...
    let next = keep_alive
        .send_request(get_req("s.example.com", "/", &[]))
        .await
        .unwrap();
    assert_eq!(next.status(), 200);
    assert_eq!(next.headers()["connection"], "close");
    collect(next).await;
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the connection ends after the answer that said close")
        .unwrap()
        .unwrap();
    // The HTTP/2 connection's next request is served, then GOAWAY ends the connection,
    // long before the listener closes (drain_delay is 2 s from the signal).
    let drained = std::time::Instant::now();
    let next = h2.send_request(h2_get()).await.unwrap();
    assert_eq!(next.status(), 200);
    collect(next).await;
    tokio::time::timeout(Duration::from_millis(1500), h2_conn)
        .await
        .expect("GOAWAY ends the HTTP/2 connection once its request is answered")
        .unwrap()
        .unwrap();
    assert!(drained.elapsed() < Duration::from_millis(1500));
    // ...while the listener still takes new clients until drain_delay is over.
    let got = get_at(running.http, "s.example.com", "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["connection"], "close");
    let status = tokio::time::timeout(Duration::from_secs(15), running.child.wait())
        .await
        .expect("exits after the drain")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_rule_that_can_never_match_is_flagged_by_check_and_in_the_log() {
    let yaml = "listen: { http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\nservices: { s: { endpoints: [\"127.0.0.1:9\"] } }\nshutdown: { drain_delay: 0s }\nroutes:\n  - host: a.example.com\n    paths:\n      - { path: /, service: s }\n      - { path: \"/api/(.*)\", match: regex, service: s }\n";
    let file = temp_file("unreachable", yaml);
    let out = run_to_end(&["check"], &file).await;
    assert_eq!(out.status.code(), Some(0), "a warning, not an error");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("warning: {}:5:", file.display()))
            && err.contains("path `/api/(.*)` of route `a.example.com` can never match: the prefix `/` on this host takes every request first"),
        "{err}"
    );
    let running = start_ready("unreachable", yaml).await;
    eventually("the log flags the rule", Duration::from_secs(10), || {
        running.logged("can never match") == 1
    })
    .await;
    assert_eq!(running.terminate().await, Some(0));
}

/// `--admin-listen` puts the admin listener where the file does not say, and keeps it
/// there across reloads (the host-network overlay gives it the pod's own address).
#[tokio::test]
async fn admin_listen_overrides_the_files_admin_address_across_reloads() {
    let port = free_port().await;
    let text = |extra: &str| {
        format!("listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\naccess_log: off\nshutdown: {{ drain_delay: 0s }}\n{extra}")
    };
    let config = temp_file("admin-listen", &text(""));
    let address = format!("127.0.0.3:{port}");
    let running = run_with(&config, &["--admin-listen", &address], Stdio::null()).await;
    assert_eq!(
        running.admin.to_string(),
        address,
        "the flag wins over the file"
    );
    let c = client();
    assert_eq!(admin_get(&c, running.admin, "/healthz").await.status, 200);
    std::fs::write(&config, text("reject_encoded_slash: true\n")).unwrap();
    wait_for_metric(
        &c,
        running.admin,
        "gatehouse_config_reloads_total{result=\"success\"} 1",
        "the reload on the flag's address",
    )
    .await;
    assert_eq!(running.terminate().await, Some(0));
}
