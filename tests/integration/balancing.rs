//! Which endpoint answers, through the binary, from the configuration file: session
//! affinity by cookie (balanced and persistent) kept across requests and moved when its
//! endpoint leaves, and consistent hashing that stays put across a scale-up.

use std::{collections::HashMap, time::Duration};

use crate::support::{binary::*, *};

/// `n` upstreams named `e0`, `e1`...
async fn endpoints(n: usize) -> Vec<TestUpstream> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(TestUpstream::start(&format!("e{i}")).await);
    }
    out
}

fn config(eps: &[&TestUpstream], service: &str) -> String {
    let list: Vec<String> = eps.iter().map(|e| format!("\"{}\"", e.addr)).collect();
    format!(
        r#"
listen: {{ http: "127.0.0.1:0", admin: "127.0.0.1:0" }}
access_log: off
shutdown: {{ drain_delay: 0s, grace_period: 1s }}
services: {{ app: {{ endpoints: [{}], {service} }} }}
routes:
  - {{ host: app.test, paths: [{{ path: /shop, service: app }}] }}
"#,
        list.join(", ")
    )
}

/// Rewrites the configuration and waits until the reload took.
async fn reload(running: &Running, path: &std::path::Path, yaml: &str, nth: f64) {
    std::fs::write(path, yaml).unwrap();
    signal(&running.child, "-HUP");
    let series = "gatehouse_config_reloads_total{result=\"success\"}";
    eventually_async("the reload", Duration::from_secs(10), || async {
        running.metric(series).await.is_some_and(|n| n >= nth)
    })
    .await;
}

/// Which endpoint answers `path` with these headers, and the Set-Cookie it came with.
async fn answer(
    running: &Running,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, Option<String>) {
    let got = send(
        &client(),
        get_req_at(running.http, "app.test", path, headers),
    )
    .await;
    assert_eq!(got.status, 200, "{path}");
    let cookie = got
        .headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    (got.json()["upstream"].as_str().unwrap().to_owned(), cookie)
}

/// The `name=value` pair of a Set-Cookie, as a client sends it back.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balanced_affinity_cookie_keeps_a_client_on_its_endpoint_until_it_leaves() {
    let eps = endpoints(4).await;
    let all: Vec<&TestUpstream> = eps.iter().collect();
    let affinity = "affinity: { max_age: 1h, samesite: lax }";
    let (running, path) = start_yaml("affinity", &config(&all, affinity), &[]).await;
    wait_ready(&running).await;

    // New clients get a cookie each, and are spread over the endpoints.
    let mut homes = HashMap::new();
    for _ in 0..40 {
        let (home, cookie) = answer(&running, "/shop/cart", &[]).await;
        let cookie = cookie.expect("a new client gets the affinity cookie");
        assert!(
            cookie.starts_with("INGRESSCOOKIE=")
                && cookie.ends_with("; Path=/shop; Max-Age=3600; HttpOnly; SameSite=Lax"),
            "{cookie}"
        );
        for e in &eps {
            let (ip, port) = (e.addr.ip().to_string(), e.addr.port().to_string());
            assert!(
                !cookie.contains(&port) && !cookie.contains(&ip),
                "{cookie} reveals {}",
                e.addr
            );
        }
        homes.insert(pair(&cookie), home);
    }
    let used: std::collections::HashSet<_> = homes.values().collect();
    assert!(used.len() >= 3, "40 clients landed on {used:?}");

    // Each keeps its endpoint, and gets no new cookie.
    for (cookie, home) in homes.iter().take(10) {
        for _ in 0..5 {
            let (answered, again) = answer(&running, "/shop/cart", &[("cookie", cookie)]).await;
            assert_eq!(&answered, home, "{cookie}");
            assert_eq!(again, None);
        }
    }

    // One endpoint leaves: its clients move, each to one new home; the others stay.
    let (gone_cookie, gone) = homes
        .iter()
        .next()
        .map(|(c, h)| (c.clone(), h.clone()))
        .unwrap();
    let remaining: Vec<&TestUpstream> = eps.iter().filter(|e| e.name != gone).collect();
    reload(&running, &path, &config(&remaining, affinity), 1.0).await;
    let (moved_to, _) = answer(&running, "/shop", &[("cookie", &gone_cookie)]).await;
    assert_ne!(moved_to, gone);
    for _ in 0..5 {
        assert_eq!(
            answer(&running, "/shop", &[("cookie", &gone_cookie)])
                .await
                .0,
            moved_to
        );
    }
    for (cookie, home) in homes.iter().filter(|(_, h)| **h != gone).take(10) {
        assert_eq!(
            &answer(&running, "/shop", &[("cookie", cookie)]).await.0,
            home
        );
    }
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_affinity_cookie_survives_a_scale_up_and_moves_when_its_endpoint_goes() {
    let eps = endpoints(4).await;
    let three: Vec<&TestUpstream> = eps.iter().take(3).collect();
    let affinity = "affinity: { mode: persistent, cookie: route, secure: true }";
    let (running, path) = start_yaml("affinity-persistent", &config(&three, affinity), &[]).await;
    wait_ready(&running).await;

    let mut homes = Vec::new();
    for _ in 0..12 {
        let (home, cookie) = answer(&running, "/shop", &[]).await;
        let cookie = cookie.expect("a cookie");
        assert!(
            cookie.starts_with("route=") && cookie.contains("; Secure; HttpOnly"),
            "{cookie}"
        );
        homes.push((pair(&cookie), home));
    }
    // A fourth endpoint joins: no session moves.
    let all: Vec<&TestUpstream> = eps.iter().collect();
    reload(&running, &path, &config(&all, affinity), 1.0).await;
    for (cookie, home) in &homes {
        let (answered, again) = answer(&running, "/shop", &[("cookie", cookie)]).await;
        assert_eq!(&answered, home);
        assert_eq!(again, None);
    }
    // Its endpoint goes: the client lands elsewhere and gets a cookie for its new home.
    let (cookie, home) = homes[0].clone();
    let remaining: Vec<&TestUpstream> = eps.iter().filter(|e| e.name != home).collect();
    reload(&running, &path, &config(&remaining, affinity), 2.0).await;
    let (answered, fresh) = answer(&running, "/shop", &[("cookie", &cookie)]).await;
    assert_ne!(answered, home);
    let fresh = pair(&fresh.expect("a new cookie for the new endpoint"));
    for _ in 0..5 {
        assert_eq!(
            answer(&running, "/shop", &[("cookie", &fresh)]).await.0,
            answered
        );
    }
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_keeps_each_key_on_its_endpoint_and_a_scale_up_moves_only_a_share() {
    let eps = endpoints(5).await;
    let four: Vec<&TestUpstream> = eps.iter().take(4).collect();
    let hashing = "balance: hash, hash_key: \"$arg_user\"";
    let (running, path) = start_yaml("hashing", &config(&four, hashing), &[]).await;
    wait_ready(&running).await;

    let users = 200;
    let mut before = Vec::new();
    for u in 0..users {
        let at = format!("/shop?user={u}");
        let (first, cookie) = answer(&running, &at, &[]).await;
        assert_eq!(cookie, None, "hashing sets no cookie");
        // The same key, the same endpoint, whoever asks.
        assert_eq!(answer(&running, &at, &[("x-other", "1")]).await.0, first);
        before.push(first);
    }
    let spread: std::collections::HashSet<_> = before.iter().collect();
    assert_eq!(spread.len(), 4, "200 keys reach every endpoint");

    let all: Vec<&TestUpstream> = eps.iter().collect();
    reload(&running, &path, &config(&all, hashing), 1.0).await;
    let mut moved = 0;
    for (u, was) in before.iter().enumerate() {
        let now = answer(&running, &format!("/shop?user={u}"), &[]).await.0;
        if &now != was {
            assert_eq!(now, "e4", "a key moves only to the endpoint that joined");
            moved += 1;
        }
    }
    // A fifth endpoint takes about a fifth of the keys.
    assert!((20..=70).contains(&moved), "{moved} of {users} keys moved");
    assert_eq!(running.terminate().await, Some(0));
}

/// An endpoint that answers `{"upstream": name}` after `delay`.
async fn slow(
    name: &'static str,
    delay: Duration,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use hyper::{server::conn::http1, service::service_fn};
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    async move {
                        tokio::time::sleep(delay).await;
                        let body = format!("{{\"upstream\":\"{name}\"}}");
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ewma_sends_most_requests_to_the_endpoint_that_answers_faster() {
    let (fast, fast_seen) = slow("fast", Duration::ZERO).await;
    let (slower, slow_seen) = slow("slow", Duration::from_millis(40)).await;
    let yaml = format!(
        "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\naccess_log: off\nshutdown: {{ drain_delay: 0s, grace_period: 1s }}\nservices: {{ app: {{ endpoints: [\"{fast}\", \"{slower}\"], balance: ewma }} }}\nroutes:\n  - {{ host: app.test, paths: [{{ path: /, service: app }}] }}\n"
    );
    let running = start_ready("ewma", &yaml).await;
    // Four clients at once, 100 requests each.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let http = running.http;
            tokio::spawn(async move {
                let c = client();
                for _ in 0..100 {
                    assert_eq!(
                        send(&c, get_req_at(http, "app.test", "/", &[]))
                            .await
                            .status,
                        200
                    );
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let (f, s) = (
        fast_seen.load(std::sync::atomic::Ordering::Relaxed),
        slow_seen.load(std::sync::atomic::Ordering::Relaxed),
    );
    // Round robin would split 200/200.
    assert!(f > 4 * s, "fast {f}, slow {s}");
    assert!(s > 0, "the slow endpoint is still probed");
    assert_eq!(running.terminate().await, Some(0));
}
