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
