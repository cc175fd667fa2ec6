//! HTTPS upstreams through the binary: a service with `protocol: https`, verified against
//! its authorities or (nginx's default) not, with SNI, resumed sessions for new pooled
//! connections, and an `https://` authentication service.

use crate::support::{binary::*, tls::*, *};

/// The binary serving `a.test` from service `up` (`up_settings` inside its braces).
async fn proxy_to(name: &str, up_settings: &str, extra_routes: &str) -> Running {
    start_ready(
        name,
        &format!(
            "listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nshutdown: {{ drain_delay: 0s }}\naccess_log: off\nservices: {{ up: {{ {up_settings} }} }}\nroutes:\n  - {{ host: a.test, paths: [{{ path: /, service: up }}] }}\n{extra_routes}"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_verify_when_told_send_sni_and_resume_sessions() {
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["backend.internal"], (-1, 30));
    let (addr, handshakes) = tls_upstream(&cert, &key).await;
    let dir = temp_dir("upstream-tls-cas");
    write(&dir, "right-ca.pem", &ca.pem);
    write(&dir, "other-ca.pem", &TestCa::new().pem);
    let get = |running: &Running, path: &'static str| {
        let http = running.http;
        async move { send(&client(), get_req_at(http, "a.test", path, &[])).await }
    };

    // Not verified (nginx's default), no SNI without a server_name.
    let running = proxy_to(
        "upstream-tls-plain",
        &format!("endpoints: [\"{addr}\"], protocol: https"),
        "",
    )
    .await;
    let got = get(&running, "/").await;
    assert_eq!((got.status.as_u16(), &got.body[..]), (200, &b"tls-up"[..]));
    assert_eq!(handshakes.lock().unwrap().last().unwrap().0, None, "no SNI");
    assert_eq!(running.terminate().await, Some(0));

    // Verified against the right authority, with SNI; a new connection resumes the session.
    let settings = |ca: &str| {
        format!(
            "endpoints: [\"{addr}\"], protocol: https, tls: {{ server_name: backend.internal, ca: \"{}\" }}",
            dir.join(ca).display()
        )
    };
    let running = proxy_to("upstream-tls-verified", &settings("right-ca.pem"), "").await;
    handshakes.lock().unwrap().clear();
    for _ in 0..3 {
        assert_eq!(get(&running, "/close").await.status, 200);
    }
    let seen = handshakes.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "each answer closed its connection: {seen:?}");
    assert!(seen
        .iter()
        .all(|(sni, _)| sni.as_deref() == Some("backend.internal")));
    assert_eq!(
        seen.iter().map(|(_, resumed)| *resumed).collect::<Vec<_>>(),
        [false, true, true],
        "later connections resume the first one's session"
    );
    assert_eq!(running.terminate().await, Some(0));

    // A certificate of another authority: 502, never the answer of an unverified peer.
    let running = proxy_to("upstream-tls-wrong-ca", &settings("other-ca.pem"), "").await;
    assert_eq!(get(&running, "/").await.status, 502);
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_authentication_service_decides_and_the_url_and_service_must_agree() {
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["sso.internal"], (-1, 30));
    let (sso, handshakes) = tls_upstream(&cert, &key).await;
    let web = TestUpstream::start("web").await;
    let running = start_ready(
        "upstream-tls-auth",
        &format!(
            r#"listen: {{ http: "127.0.0.1:0", admin: "127.0.0.1:0" }}
shutdown: {{ drain_delay: 0s }}
access_log: off
services: {{ web: {{ endpoints: ["{}"] }}, sso: {{ endpoints: ["{sso}"], protocol: https, tls: {{ server_name: sso.internal }} }} }}
routes:
  - {{ host: app.test, auth: {{ external: {{ url: "https://sso/check", response_headers: [X-Auth-Request-User] }} }}, paths: [{{ path: /, service: web }}] }}
"#,
            web.addr
        ),
    )
    .await;
    let ask = |cookie: &'static str| {
        let http = running.http;
        async move {
            send(
                &client(),
                get_req_at(http, "app.test", "/", &[("cookie", cookie)]),
            )
            .await
        }
    };
    let got = ask("session=good").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["headers"]["x-auth-request-user"], "tls-ann");
    assert_eq!(ask("session=bad").await.status, 401);
    assert_eq!(
        handshakes.lock().unwrap().first().unwrap().0.as_deref(),
        Some("sso.internal"),
        "the subrequest went over TLS with SNI"
    );
    assert_eq!(running.terminate().await, Some(0));

    // An https:// URL on a plaintext service is refused, with where and why.
    let dir = temp_dir("upstream-tls-mismatch");
    write(
        &dir,
        "gatehouse.yaml",
        &format!(
            "listen: {{ http: \"127.0.0.1:0\" }}\nservices: {{ web: {{ endpoints: [\"{}\"] }}, sso: {{ endpoints: [\"{sso}\"] }} }}\nroutes:\n  - {{ host: app.test, auth: {{ external: {{ url: \"https://sso/check\" }} }}, paths: [{{ path: /, service: web }}] }}\n",
            web.addr
        ),
    );
    let out = run_to_end(&["check"], &dir.join("gatehouse.yaml")).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("gatehouse.yaml:4:5") && said.contains("protocol: https"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_protocol_https_with_proxy_ssl_verifies_and_shows_a_certificate_to_the_pod() {
    use crate::ingress::{ingress, opaque_secret, path, service_of_pods, start};
    use crate::support::kube_api::{INGRESSES, SECRETS};
    let cluster = start("upstream-tls-ingress", false).await;
    let api = &cluster.api;
    let (pods_ca, gatehouse_ca) = (TestCa::new(), TestCa::new());
    let (cert, key) = pods_ca.leaf(&["web.shop.svc", "backend.internal"], (-1, 30));
    // One pod that anyone may reach over TLS, one that wants Gatehouse's certificate.
    let (open_pod, open_seen) = tls_upstream(&cert, &key).await;
    let (mtls_pod, mtls_seen) = tls_upstream_for(&cert, &key, Some(&gatehouse_ca.pem)).await;
    service_of_pods(api, "shop", "web", &[open_pod]);
    service_of_pods(api, "shop", "secure", &[mtls_pod]);
    let (client_cert, client_key) = gatehouse_ca.leaf(&["gatehouse"], (-1, 30));
    api.apply(
        SECRETS,
        opaque_secret(
            "shop",
            "pods-tls",
            &[
                ("ca.crt", &pods_ca.pem),
                ("tls.crt", &client_cert),
                ("tls.key", &client_key),
            ],
        ),
    );
    api.apply(
        SECRETS,
        opaque_secret("shop", "other-ca", &[("ca.crt", &TestCa::new().pem)]),
    );
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    let verified = |secret: &str| {
        serde_json::json!({
            n("backend-protocol"): "HTTPS",
            n("proxy-ssl-secret"): format!("shop/{secret}"),
            n("proxy-ssl-verify"): "on",
            n("proxy-ssl-name"): "backend.internal",
            n("proxy-ssl-server-name"): "on",
        })
    };
    for (name, host, annotations, backend) in [
        (
            "plain",
            "plain.example.com",
            serde_json::json!({ n("backend-protocol"): "HTTPS" }),
            "web",
        ),
        (
            "verified",
            "verified.example.com",
            verified("pods-tls"),
            "web",
        ),
        ("mtls", "mtls.example.com", verified("pods-tls"), "secure"),
        (
            "mtls-without",
            "mtls-without.example.com",
            serde_json::json!({ n("backend-protocol"): "HTTPS" }),
            "secure",
        ),
        (
            "wrong-ca",
            "wrong-ca.example.com",
            verified("other-ca"),
            "web",
        ),
        (
            "no-secret",
            "no-secret.example.com",
            verified("absent"),
            "web",
        ),
    ] {
        api.apply(
            INGRESSES,
            ingress(
                "shop",
                name,
                "2026-01-01T00:00:00Z",
                "gatehouse",
                annotations,
                host,
                serde_json::json!([path("/", "Prefix", backend)]),
            ),
        );
    }
    let http = cluster.running.http;
    let status = |host: &'static str| async move {
        send(&client(), get_req_at(http, host, "/", &[]))
            .await
            .status
            .as_u16()
    };
    eventually_async(
        "the last Ingress is served",
        std::time::Duration::from_secs(15),
        || async { status("no-secret.example.com").await == 503 },
    )
    .await;
    // Not verified and no SNI by default, as ingress-nginx.
    assert_eq!(status("plain.example.com").await, 200);
    assert_eq!(open_seen.lock().unwrap().last().unwrap().0, None);
    // Verified against the Secret's ca.crt, with the name as SNI.
    open_seen.lock().unwrap().clear();
    assert_eq!(status("verified.example.com").await, 200);
    assert_eq!(
        open_seen.lock().unwrap().last().unwrap().0.as_deref(),
        Some("backend.internal")
    );
    // The pod that wants a client certificate gets the Secret's tls.crt; without it, 502.
    assert_eq!(status("mtls.example.com").await, 200);
    assert_eq!(mtls_seen.lock().unwrap().len(), 1);
    assert_eq!(status("mtls-without.example.com").await, 502);
    // A pod certificate of another authority is refused: 502, never its answer.
    assert_eq!(status("wrong-ca.example.com").await, 502);
    assert_eq!(cluster.running.terminate().await, Some(0));
}

/// One HTTP/1.1 GET for `host` over a TLS stream; the status and the body.
async fn get_over(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    host: &str,
) -> (u16, String) {
    use hyper_util::rt::TokioIo;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", host)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let got = collect(sender.send_request(req).await.unwrap()).await;
    (
        got.status.as_u16(),
        String::from_utf8_lossy(&got.body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_host_shows_the_backends_certificate_beside_a_terminated_host() {
    let (backend_ca, edge_ca) = (TestCa::new(), TestCa::new());
    let (backend_cert, backend_key) =
        backend_ca.leaf(&["pass.example.com", "denied.example.com"], (-1, 30));
    let (backend, seen) = tls_upstream(&backend_cert, &backend_key).await;
    let web = TestUpstream::start("web").await;
    let dir = temp_dir("passthrough-file");
    let (edge_cert, edge_key) = edge_ca.leaf(&["term.example.com"], (-1, 30));
    write(&dir, "edge.crt", &edge_cert);
    write(&dir, "edge.key", &edge_key);
    let running = start_ready(
        "passthrough",
        &format!(
            r#"listen: {{ http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0" }}
shutdown: {{ drain_delay: 0s }}
access_log: off
tls:
  - {{ cert: "{}", key: "{}" }}
services: {{ web: {{ endpoints: ["{}"] }}, backend: {{ endpoints: ["{backend}"] }} }}
routes:
  - {{ host: term.example.com, paths: [{{ path: /, service: web }}] }}
  - {{ host: pass.example.com, passthrough: true, paths: [{{ path: /, service: backend }}] }}
  - {{ host: denied.example.com, passthrough: true, deny: "127.0.0.1/32", paths: [{{ path: /, service: backend }}] }}
"#,
            dir.join("edge.crt").display(),
            dir.join("edge.key").display(),
            web.addr
        ),
    )
    .await;
    let https = running.https.expect("an HTTPS listener");
    // The passthrough host: the backend's own certificate, its own answer, its SNI.
    let stream = connect_verified(&backend_ca, https, "pass.example.com").await;
    assert_eq!(presented(&stream), der_of(&backend_cert));
    assert_eq!(
        get_over(stream, "pass.example.com").await,
        (200, "tls-up".to_owned())
    );
    assert_eq!(
        seen.lock().unwrap().last().unwrap().0.as_deref(),
        Some("pass.example.com")
    );
    // The terminated host on the same port: Gatehouse's certificate and its upstream.
    let stream = connect_verified(&edge_ca, https, "term.example.com").await;
    assert_eq!(presented(&stream), der_of(&edge_cert));
    let (status, body) = get_over(stream, "term.example.com").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"upstream\":\"web\""), "{body}");
    // The deny-list applies to the client's address before anything is passed on.
    let before = seen.lock().unwrap().len();
    assert!(connect(
        backend_ca.client(&[]),
        https,
        Some("denied.example.com"),
        "denied.example.com"
    )
    .await
    .is_err());
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "the backend never heard of it"
    );
    assert_eq!(
        running
            .metric("gatehouse_denied_total{reason=\"denylist\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_passthrough_ingresses_need_the_flag() {
    use crate::ingress::{classes, path, run_on_with, service_of_pods};
    use crate::support::kube_api::{KubeApi, INGRESSES};
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["pass.example.com"], (-1, 30));
    let (backend, _) = tls_upstream(&cert, &key).await;
    for (flags, passes) in [(&["--enable-ssl-passthrough"][..], true), (&[][..], false)] {
        let api = KubeApi::start().await;
        classes(&api);
        let (running, _dir) = run_on_with(
            "ingress-passthrough",
            &[&api],
            ", https: \"127.0.0.1:0\"",
            "",
            flags,
            std::process::Stdio::null(),
        )
        .await;
        wait_ready(&running).await;
        service_of_pods(&api, "shop", "secure", &[backend]);
        api.apply(
            INGRESSES,
            crate::ingress::ingress(
                "shop",
                "secure",
                "2026-01-01T00:00:00Z",
                "gatehouse",
                serde_json::json!({ "nginx.ingress.kubernetes.io/ssl-passthrough": "true" }),
                "pass.example.com",
                serde_json::json!([path("/", "Prefix", "secure")]),
            ),
        );
        let https = running.https.unwrap();
        if passes {
            eventually_async(
                "the pod's certificate is shown",
                std::time::Duration::from_secs(15),
                || async {
                    match connect(
                        ca.client(&[]),
                        https,
                        Some("pass.example.com"),
                        "pass.example.com",
                    )
                    .await
                    {
                        Ok(stream) => presented(&stream) == der_of(&cert),
                        Err(_) => false,
                    }
                },
            )
            .await;
        } else {
            eventually_async(
                "the Ingress answers 503",
                std::time::Duration::from_secs(15),
                || async {
                    send(
                        &client(),
                        get_req_at(running.http, "pass.example.com", "/", &[]),
                    )
                    .await
                    .status
                        == 503
                },
            )
            .await;
            assert!(running.logged("ssl-passthrough needs --enable-ssl-passthrough") >= 1);
        }
        assert_eq!(running.terminate().await, Some(0));
    }
}
