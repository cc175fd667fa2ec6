//! Canary releases from the configuration file, through the binary: by header, by cookie,
//! by weight (the split measured over 10,000 requests), and removed by a reload.

use std::time::Duration;

use crate::support::{binary::*, *};

fn config(v1: &TestUpstream, v2: &TestUpstream, canary: &str) -> String {
    format!(
        r#"
listen: {{ http: "127.0.0.1:0", admin: "127.0.0.1:0" }}
access_log: off
shutdown: {{ drain_delay: 0s, grace_period: 1s }}
services: {{ v1: {{ endpoints: ["{}"] }}, v2: {{ endpoints: ["{}"] }} }}
routes:
  - {{ host: app.test, paths: [{{ path: /, service: v1{canary} }}] }}
"#,
        v1.addr, v2.addr
    )
}

/// Which version answers a GET with these headers.
async fn version(running: &Running, headers: &[(&str, &str)]) -> String {
    let got = send(
        &client(),
        get_req_at(running.http, "app.test", "/", headers),
    )
    .await;
    assert_eq!(got.status, 200);
    got.json()["upstream"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_takes_its_header_its_cookie_and_its_weight_and_goes_with_a_reload() {
    let (v1, v2) = (
        TestUpstream::start("v1").await,
        TestUpstream::start("v2").await,
    );
    let canary = ", canary: { service: v2, weight: 20, header: X-Canary, cookie: canary }";
    let (running, path) = start_yaml("canary", &config(&v1, &v2, canary), &[]).await;
    wait_ready(&running).await;

    // The header first, then the cookie, then the weight.
    for _ in 0..20 {
        assert_eq!(version(&running, &[("x-canary", "always")]).await, "v2");
        assert_eq!(
            version(
                &running,
                &[("x-canary", "never"), ("cookie", "canary=always")]
            )
            .await,
            "v1"
        );
        assert_eq!(
            version(&running, &[("cookie", "canary=always")]).await,
            "v2"
        );
        assert_eq!(version(&running, &[("cookie", "canary=never")]).await, "v1");
    }
    // 10,000 requests, four clients at once: 20 % to the canary, within 2 points.
    let before = v2.requests.load(std::sync::atomic::Ordering::Relaxed);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let http = running.http;
            tokio::spawn(async move {
                let c = client();
                for _ in 0..2_500 {
                    let got = send(&c, get_req_at(http, "app.test", "/", &[])).await;
                    assert_eq!(got.status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let to_canary = v2.requests.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(
        (1_800..=2_200).contains(&to_canary),
        "{to_canary} of 10,000 went to the canary at weight 20"
    );
    let split = "gatehouse_canary_requests_total{route=\"app.test\",to=\"canary\"}";
    assert!(running
        .metric(split)
        .await
        .is_some_and(|n| n >= to_canary as f64));

    // The canary removed: everything to v1 again, headers or not.
    std::fs::write(&path, config(&v1, &v2, "")).unwrap();
    signal(&running.child, "-HUP");
    eventually_async("the canary is gone", Duration::from_secs(10), || async {
        version(&running, &[("x-canary", "always")]).await == "v1"
    })
    .await;
    assert_eq!(running.terminate().await, Some(0));
}
