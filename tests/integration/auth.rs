//! Basic authentication through the binary: from the file (htpasswd on disk, reloaded) and
//! from an Ingress (its Secret rotated live, removed: fail closed). Hashes are the ones
//! `openssl passwd` writes, so the formats other tools produce are the ones tested.

use std::time::Duration;

use base64::Engine;

use crate::support::{binary::*, *};

/// `openssl passwd -apr1 -salt abcdefgh secret1` and `-6 -salt saltsalt secret2`.
const ANN: &str = "ann:$apr1$abcdefgh$paCto.rW8wn6thJ8b0QQY.";
const BOB: &str = "bob:$6$saltsalt$P2FbZ8c7x7uytMcLIQcIRMWgUZ/Uy48LCuKu.tpI/rYWSp/cKtq.zrD46YIij/l62Sx7404pS7pgqM2usW5AU.";

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

/// Status of a GET with these credentials (none: no Authorization header), and the
/// challenge of a 401.
async fn with_credentials(
    addr: std::net::SocketAddr,
    host: &str,
    who: Option<(&str, &str)>,
) -> (u16, Option<String>) {
    let value = who.map(|(u, p)| basic(u, p));
    let headers: Vec<(&str, &str)> = value
        .iter()
        .map(|v| ("authorization", v.as_str()))
        .collect();
    let got = send(&client(), get_req_at(addr, host, "/", &headers)).await;
    let challenge = got
        .headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (got.status.as_u16(), challenge)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_htpasswd_admits_its_users_and_a_reload_changes_them() {
    let web = TestUpstream::start("web").await;
    let dir = temp_dir("auth-file-users");
    std::fs::write(dir.join("users"), format!("{ANN}\n")).unwrap();
    let yaml = format!(
        "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\naccess_log: stdout\nshutdown: {{ drain_delay: 0s, grace_period: 1s }}\nservices: {{ web: {{ endpoints: [\"{}\"] }} }}\nroutes:\n  - {{ host: private.test, auth: {{ basic: {{ htpasswd: {}, realm: \"Staff only\" }} }}, paths: [{{ path: /, service: web }}] }}\n  - {{ host: open.test, paths: [{{ path: /, service: web }}] }}\n",
        web.addr,
        dir.join("users").display()
    );
    let (running, path) = start_yaml("auth-file", &yaml, &[]).await;
    wait_ready(&running).await;
    let at = running.http;
    assert_eq!(
        with_credentials(at, "private.test", None).await,
        (401, Some("Basic realm=\"Staff only\"".to_owned()))
    );
    assert_eq!(
        with_credentials(at, "private.test", Some(("ann", "wrong")))
            .await
            .0,
        401
    );
    assert_eq!(
        with_credentials(at, "private.test", Some(("ann", "secret1"))).await,
        (200, None)
    );
    assert_eq!(
        with_credentials(at, "private.test", Some(("bob", "secret2")))
            .await
            .0,
        401
    );
    assert_eq!(
        with_credentials(at, "open.test", None).await.0,
        200,
        "other routes stay open"
    );
    let requests = web.requests.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(requests, 2, "refused requests never reach the upstream");

    // The file changes and the configuration reloads: bob in, ann out.
    std::fs::write(dir.join("users"), format!("{BOB}\n")).unwrap();
    signal(&running.child, "-HUP");
    eventually_async("bob's password works", Duration::from_secs(10), || async {
        with_credentials(at, "private.test", Some(("bob", "secret2")))
            .await
            .0
            == 200
    })
    .await;
    assert_eq!(
        with_credentials(at, "private.test", Some(("ann", "secret1")))
            .await
            .0,
        401
    );
    // A file that cannot be read is refused on reload; the running users stay.
    std::fs::write(dir.join("users"), "bob:plain-text-password\n").unwrap();
    signal(&running.child, "-HUP");
    eventually(
        "the reload is refused, naming the line",
        Duration::from_secs(10),
        || running.logged("line 1, user `bob`: the hash format") >= 1,
    )
    .await;
    assert_eq!(
        with_credentials(at, "private.test", Some(("bob", "secret2")))
            .await
            .0,
        200
    );
    assert_eq!(running.logged("secret2"), 0, "no password reaches the log");
    assert_eq!(running.logged("P2FbZ8c7"), 0, "no hash reaches the log");
    // `gatehouse check` reads the file the same way.
    let out = run_to_end(&["check"], &path).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("htpasswd file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(running.terminate().await, Some(0));
}

/// An authentication service: `session=good` → 200 with X-Auth-Request-User, `session=staff`
/// → 403, anything else → 401 with a Bearer challenge. Remembers what the last
/// subrequest carried.
pub(crate) async fn auth_service() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    let (addr, seen, _) = counting_auth_service().await;
    (addr, seen)
}

/// [`auth_service`], with the number of subrequests it answered.
pub(crate) async fn counting_auth_service() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use hyper::{server::conn::http1, service::service_fn};
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (keep, count) = (seen.clone(), asked.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (keep, count) = (keep.clone(), count.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut carried: Vec<(String, String)> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    carried.push((":path".into(), req.uri().to_string()));
                    *keep.lock().unwrap() = carried;
                    let cookie = req
                        .headers()
                        .get("cookie")
                        .and_then(|c| c.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    async move {
                        let mut resp = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"auth"),
                        ));
                        if cookie.contains("session=anon") {
                            // Let in, naming nobody.
                        } else if cookie.contains("session=good") {
                            resp.headers_mut()
                                .insert("x-auth-request-user", "ann".parse().unwrap());
                            resp.headers_mut()
                                .insert("x-not-copied", "1".parse().unwrap());
                        } else if cookie.contains("session=staff") {
                            *resp.status_mut() = http::StatusCode::FORBIDDEN;
                        } else {
                            *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
                            resp.headers_mut().insert(
                                "www-authenticate",
                                "Bearer realm=\"sso\"".parse().unwrap(),
                            );
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_auth_service_decides_and_a_dead_one_lets_nobody_in() {
    let web = TestUpstream::start("web").await;
    let (auth, seen) = auth_service().await;
    let dead = dead_addr().await;
    let yaml = format!(
        r#"listen: {{ http: "127.0.0.1:0", admin: "127.0.0.1:0" }}
access_log: off
shutdown: {{ drain_delay: 0s, grace_period: 1s }}
services: {{ web: {{ endpoints: ["{}"] }}, sso: {{ endpoints: ["{auth}"] }}, gone: {{ endpoints: ["{dead}"] }} }}
routes:
  - {{ host: app.test, auth: {{ external: {{ url: "http://sso/oauth2/auth?group=staff", response_headers: [X-Auth-Request-User] }} }}, paths: [{{ path: /, service: web }}] }}
  - {{ host: login.test, auth: {{ external: {{ url: "http://sso/oauth2/auth", signin: "https://login.example.com/start" }} }}, paths: [{{ path: /, service: web }}] }}
  - {{ host: down.test, auth: {{ external: {{ url: "http://gone/check" }} }}, paths: [{{ path: /, service: web }}] }}
"#,
        web.addr
    );
    let running = start_ready("external-auth", &yaml).await;
    let ask = |host: &'static str, cookie: &'static str| {
        let http = running.http;
        async move {
            send(
                &client(),
                get_req_at(http, host, "/cart?x=1", &[("cookie", cookie)]),
            )
            .await
        }
    };
    // 2xx: through, with the listed header of the answer and not the others.
    let got = ask("app.test", "session=good").await;
    assert_eq!(got.status, 200);
    let echoed = got.json();
    assert_eq!(echoed["headers"]["x-auth-request-user"], "ann", "{echoed}");
    assert!(echoed["headers"].get("x-not-copied").is_none(), "{echoed}");
    let carried: std::collections::HashMap<String, String> =
        seen.lock().unwrap().iter().cloned().collect();
    assert_eq!(carried[":path"], "/oauth2/auth?group=staff");
    assert_eq!(carried["x-original-url"], "http://app.test/cart?x=1");
    assert_eq!(carried["x-original-method"], "GET");
    assert_eq!(carried["cookie"], "session=good");
    assert_eq!(carried["host"], "sso");
    // A client that sends the header itself does not pass for a user: the service's answer
    // decides, and without the header in it the client's is removed.
    for (cookie, want) in [("session=good", Some("ann")), ("session=anon", None)] {
        let spoofed = send(
            &client(),
            get_req_at(
                running.http,
                "app.test",
                "/",
                &[("cookie", cookie), ("x-auth-request-user", "admin")],
            ),
        )
        .await;
        assert_eq!(spoofed.status, 200);
        let user = spoofed.json()["headers"]["x-auth-request-user"]
            .as_str()
            .map(str::to_owned);
        assert_eq!(user.as_deref(), want, "{cookie}");
    }
    // 401 and 403: the service's answer, its headers, and the upstream never asked.
    let before = web.requests.load(std::sync::atomic::Ordering::Relaxed);
    let got = ask("app.test", "session=none").await;
    assert_eq!(got.status, 401);
    assert_eq!(got.headers["www-authenticate"], "Bearer realm=\"sso\"");
    assert_eq!(ask("app.test", "session=staff").await.status, 403);
    assert_eq!(
        web.requests.load(std::sync::atomic::Ordering::Relaxed),
        before
    );
    // With a signin URL a 401 becomes a redirect carrying where the client was going.
    let got = ask("login.test", "session=none").await;
    assert_eq!(got.status, 302);
    assert_eq!(
        got.headers["location"],
        "https://login.example.com/start?rd=http%3A%2F%2Flogin.test%2Fcart%3Fx%3D1"
    );
    // A service that does not answer: 500, never the application; said in the log.
    assert_eq!(ask("down.test", "session=good").await.status, 500);
    eventually("the log says why", Duration::from_secs(5), || {
        running.logged("without an answer from the authentication service nobody is let in") >= 1
    })
    .await;
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_answers_spare_the_auth_service_per_key_and_status() {
    use std::sync::atomic::Ordering::SeqCst;
    let web = TestUpstream::start("web").await;
    let (auth, _, asked) = counting_auth_service().await;
    let yaml = format!(
        r#"listen: {{ http: "127.0.0.1:0", admin: "127.0.0.1:0" }}
access_log: off
services: {{ web: {{ endpoints: ["{}"] }}, sso: {{ endpoints: ["{auth}"] }} }}
routes:
  - {{ host: cached.test, auth: {{ external: {{ url: "http://sso/check", response_headers: [X-Auth-Request-User], cache: {{ key: "$cookie_session", valid: "200 401 1m" }} }} }}, paths: [{{ path: /, service: web }}] }}
  - {{ host: asked.test, auth: {{ external: {{ url: "http://sso/check" }} }}, paths: [{{ path: /, service: web }}] }}
"#,
        web.addr
    );
    let running = start_ready("auth-cache", &yaml).await;
    let ask = |host: &'static str, cookie: &'static str| {
        let http = running.http;
        async move {
            send(
                &client(),
                get_req_at(http, host, "/", &[("cookie", cookie)]),
            )
            .await
        }
    };
    // The first answer for a key is remembered: 200 with its headers, and 401.
    for _ in 0..3 {
        let got = ask("cached.test", "session=good").await;
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["headers"]["x-auth-request-user"], "ann");
    }
    assert_eq!(asked.load(SeqCst), 1, "one question for three requests");
    for _ in 0..2 {
        let got = ask("cached.test", "session=nobody").await;
        assert_eq!(got.status, 401);
        assert_eq!(got.headers["www-authenticate"], "Bearer realm=\"sso\"");
    }
    assert_eq!(asked.load(SeqCst), 2, "another key is another question");
    // 403 is not listed: asked every time. So is every request of a route without a cache.
    for _ in 0..2 {
        assert_eq!(ask("cached.test", "session=staff").await.status, 403);
        assert_eq!(ask("asked.test", "session=good").await.status, 200);
    }
    assert_eq!(asked.load(SeqCst), 6);
    assert_eq!(running.terminate().await, Some(0));
}
