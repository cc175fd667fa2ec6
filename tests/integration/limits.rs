//! Client limits through the binary, with clients on different loopback addresses: a
//! client over its rate or its concurrency is refused while others are served.

use std::time::Duration;

use crate::support::{binary::*, *};

fn config(up: &TestUpstream, settings: &str, limit: &str) -> String {
    format!(
        r#"
listen: {{ http: "127.0.0.1:0", admin: "127.0.0.1:0" }}
access_log: off
shutdown: {{ drain_delay: 0s, grace_period: 1s }}
{settings}
services: {{ main: {{ endpoints: ["{}"] }} }}
routes:
  - {{ host: limited.test, limit: {limit}, paths: [{{ path: /, service: main }}] }}
  - {{ host: open.test, paths: [{{ path: /, service: main }}] }}
"#,
        up.addr
    )
}

/// `n` GETs from `from`, one after another: the statuses, and the last Retry-After seen.
async fn burst(running: &Running, from: &str, host: &str, n: usize) -> (Vec<u16>, Option<String>) {
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..n {
        let got = request_from(from, running.http, b"", get_req(host, "/", &[]))
            .await
            .expect("an answer");
        if let Some(v) = got.headers.get("retry-after") {
            retry_after = Some(v.to_str().unwrap().to_owned());
        }
        statuses.push(got.status.as_u16());
    }
    (statuses, retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_while_others_are_served() {
    let up = TestUpstream::start("up").await;
    // 2 r/s with a multiplier of 5: 11 at once (nginx's burst=10 nodelay), then one per 500 ms.
    let running = start_ready(
        "limit-rps",
        &config(
            &up,
            "",
            "{ rps: 2, burst_multiplier: 5, whitelist: \"127.0.0.4\" }",
        ),
    )
    .await;
    let (statuses, retry_after) = burst(&running, "127.0.0.2", "limited.test", 20).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (11..=12).contains(&ok),
        "the burst, and at most one refilled while it ran: {statuses:?}"
    );
    assert!(statuses[..11].iter().all(|s| *s == 200), "{statuses:?}");
    assert!(statuses[12..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(
        retry_after.as_deref(),
        Some("1"),
        "Retry-After in whole seconds"
    );
    // Another client, the whitelisted one, and another route are not affected.
    let (other, _) = burst(&running, "127.0.0.3", "limited.test", 5).await;
    assert_eq!(other, [200; 5]);
    let (listed, _) = burst(&running, "127.0.0.4", "limited.test", 30).await;
    assert_eq!(listed, [200; 30]);
    let (open, _) = burst(&running, "127.0.0.2", "open.test", 5).await;
    assert_eq!(open, [200; 5]);
    // Then the rate: one request per 500 ms comes back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (after, _) = burst(&running, "127.0.0.2", "limited.test", 4).await;
    assert_eq!(after.iter().filter(|s| **s == 200).count(), 2, "{after:?}");
    let refused = statuses.iter().chain(&after).filter(|s| **s == 429).count();
    let counted = "gatehouse_requests_limited_total{route=\"limited.test\",kind=\"rps\"}";
    assert_eq!(running.metric(counted).await, Some(refused as f64));
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_too_many_requests_in_flight_gets_the_configured_status() {
    let up = TestUpstream::start("up").await;
    let running = start_ready(
        "limit-connections",
        &config(&up, "client_limits: { status: 503 }", "{ connections: 2 }"),
    )
    .await;
    let slow = |from: &'static str| {
        let http = running.http;
        tokio::spawn(async move {
            let req = get_req("limited.test", "/delay/1000", &[]);
            let got = request_from(from, http, b"", req).await.expect("an answer");
            (got.status.as_u16(), std::time::Instant::now())
        })
    };
    let started = std::time::Instant::now();
    let first = [slow("127.0.0.2"), slow("127.0.0.2")];
    // Both are in flight before the third asks.
    eventually(
        "two requests reach the upstream",
        Duration::from_secs(10),
        || up.requests.load(std::sync::atomic::Ordering::Relaxed) == 2,
    )
    .await;
    let third = slow("127.0.0.2").await.unwrap();
    assert_eq!(
        third.0, 503,
        "over limit-connections, with the configured status"
    );
    assert!(
        third.1 - started < Duration::from_millis(900),
        "refused at once"
    );
    let other = slow("127.0.0.3").await.unwrap();
    assert_eq!(other.0, 200, "another client is not affected");
    for handle in first {
        assert_eq!(handle.await.unwrap().0, 200);
    }
    // Their slots came back with their responses.
    let again = slow("127.0.0.2").await.unwrap();
    assert_eq!(again.0, 200);
    let counted = "gatehouse_requests_limited_total{route=\"limited.test\",kind=\"connections\"}";
    assert_eq!(running.metric(counted).await, Some(1.0));
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_each_clients_bucket() {
    let up = TestUpstream::start("up").await;
    // One a minute, burst of one: two at once, then nothing for 30 s.
    let yaml = config(&up, "", "{ rpm: 1, burst_multiplier: 1 }");
    let (running, path) = start_yaml("limit-reload", &yaml, &[]).await;
    wait_ready(&running).await;
    let (statuses, _) = burst(&running, "127.0.0.2", "limited.test", 3).await;
    assert_eq!(statuses, [200, 200, 429]);
    // A reload that adds a route: the limited route is the same, and so is its client's
    // bucket.
    let reloaded = yaml.replace(
        "  - { host: open.test,",
        "  - { host: new.test, paths: [{ path: /, service: main }] }\n  - { host: open.test,",
    );
    std::fs::write(&path, reloaded).unwrap();
    signal(&running.child, "-HUP");
    eventually_async("the reload is applied", Duration::from_secs(10), || async {
        get_at(running.http, "new.test", "/").await.status == 200
    })
    .await;
    let (after, _) = burst(&running, "127.0.0.2", "limited.test", 1).await;
    assert_eq!(
        after,
        [429],
        "a reload must not hand every client a new burst"
    );
    assert_eq!(running.terminate().await, Some(0));
}
