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
