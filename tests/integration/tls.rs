//! TLS termination with real handshakes: a rustls client, curl and openssl s_client.

use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::support::{tls::*, *};
use bytes::Bytes;
use gatehouse_discovery::{load_file, FileWatcher};
use gatehouse_proxy::{Gatehouse, Metrics};
use http::Request;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `<stem>.crt` and `<stem>.key` for `names` and returns the certificate PEM.
fn cert_files(
    ca: &TestCa,
    dir: &std::path::Path,
    stem: &str,
    names: &[&str],
    days: (i64, i64),
) -> String {
    let (cert, key) = ca.leaf(names, days);
    write(dir, &format!("{stem}.crt"), &cert);
    write(dir, &format!("{stem}.key"), &key);
    cert
}

fn tls_entry(dir: &std::path::Path, stem: &str, extra: &str) -> String {
    format!(
        "  - {{ cert: \"{}\", key: \"{}\"{extra} }}\n",
        dir.join(format!("{stem}.crt")).display(),
        dir.join(format!("{stem}.key")).display()
    )
}

fn config(up: std::net::SocketAddr, tls: &str) -> String {
    format!(
        r#"listen: {{ http: "127.0.0.1:0", https: "127.0.0.1:0" }}
access_log: off
services: {{ a: {{ endpoints: ["{up}"] }} }}
tls:
{tls}routes:
  - host: a.example.com
    paths: [{{ path: /, service: a }}]
  - host: "*.w.example.com"
    paths: [{{ path: /, service: a }}]
  - host: nocert.example.com
    paths: [{{ path: /, service: a }}]
"#
    )
}

async fn https(proxy: &Proxy) -> std::net::SocketAddr {
    proxy.gatehouse.https_addr().await.expect("https listener")
}

#[tokio::test]
async fn sni_picks_exact_then_wildcard_then_default() {
    let up = TestUpstream::start("a").await;
    let dir = temp_dir("sni");
    let ca = TestCa::new();
    let a = cert_files(&ca, &dir, "a", &["a.example.com"], (-1, 30));
    let w = cert_files(&ca, &dir, "w", &["*.w.example.com"], (-1, 30));
    let d = cert_files(&ca, &dir, "d", &["default.example.com"], (-1, 30));
    let tls = tls_entry(&dir, "a", "")
        + &tls_entry(&dir, "w", "")
        + &tls_entry(&dir, "d", ", default: true");
    let proxy = Proxy::start(&config(up.addr, &tls)).await;
    let addr = https(&proxy).await;
    let cases = [
        (Some("a.example.com"), "a.example.com", &a),
        (Some("x.w.example.com"), "x.w.example.com", &w),
        (Some("unknown.example.com"), "default.example.com", &d),
        (None, "default.example.com", &d),
    ];
    for (sni, verify_as, want) in cases {
        let s = connect(any_certificate_client(), addr, sni, verify_as)
            .await
            .unwrap();
        assert_eq!(presented(&s), der_of(want), "SNI {sni:?}");
    }
    // A verifying client accepts what it is given for a name it asked for.
    let s = connect_verified(&ca, addr, "x.w.example.com").await;
    assert_eq!(h1_over(s, "x.w.example.com").await.status, 200);
    assert!(proxy.metric(r#"gatehouse_tls_handshakes_total{result="success"}"#) >= 4.0);
    // Each certificate's expiry gauge is its notAfter, read from the certificate itself.
    for (stem, pem) in [("a", &a), ("w", &w), ("d", &d)] {
        let series = format!(
            "gatehouse_tls_certificate_expiry_timestamp_seconds{{certificate=\"{}\"}}",
            dir.join(format!("{stem}.crt")).display()
        );
        assert_eq!(
            proxy.metric_opt(&series),
            Some(not_after(pem) as f64),
            "{series}"
        );
    }

    // Without a default certificate an unknown name fails the handshake cleanly.
    let tls = tls_entry(&dir, "a", "");
    let strict = Proxy::start(&config(up.addr, &tls)).await;
    let addr = https(&strict).await;
    assert!(connect(
        any_certificate_client(),
        addr,
        Some("unknown.example.com"),
        "unknown.example.com"
    )
    .await
    .is_err());
    assert!(
        connect(any_certificate_client(), addr, None, "a.example.com")
            .await
            .is_err()
    );
    let ok = connect_verified(&ca, addr, "a.example.com").await;
    assert_eq!(h1_over(ok, "a.example.com").await.status, 200);
}

#[tokio::test]
async fn alpn_h2_and_misdirected_requests() {
    let up = TestUpstream::start("a").await;
    let dir = temp_dir("alpn");
    let ca = TestCa::new();
    cert_files(&ca, &dir, "a", &["a.example.com"], (-1, 30));
    cert_files(&ca, &dir, "w", &["*.w.example.com"], (-1, 30));
    let tls = tls_entry(&dir, "a", "") + &tls_entry(&dir, "w", "");
    let proxy = Proxy::start(&config(up.addr, &tls)).await;
    let addr = https(&proxy).await;

    let s = connect(
        ca.client(&[b"h2", b"http/1.1"]),
        addr,
        Some("a.example.com"),
        "a.example.com",
    )
    .await
    .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let send = |uri: &'static str| Request::get(uri).body(Full::new(Bytes::new())).unwrap();
    let resp = h2
        .send_request(send("https://a.example.com/h2"))
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let got = collect(resp).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["headers"]["x-forwarded-proto"], "https");
    // Same connection, a host another certificate serves: 421.
    let got = collect(
        h2.send_request(send("https://x.w.example.com/"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 421);
    // A host no certificate serves is not misdirected (nothing better to send it to).
    let got = collect(
        h2.send_request(send("https://nocert.example.com/"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn certificates_reload_while_connections_stay_open_and_broken_files_keep_the_old_one() {
    let up = TestUpstream::start("a").await;
    let dir = temp_dir("reload");
    let ca = TestCa::new();
    let v1 = cert_files(&ca, &dir, "a", &["a.example.com"], (-1, 30));
    let file = dir.join("gatehouse.yaml");
    write(
        &dir,
        "gatehouse.yaml",
        &config(up.addr, &tls_entry(&dir, "a", "")),
    );
    let watcher = FileWatcher::new(&file).interval(Duration::from_millis(20));
    let gatehouse = Arc::new(
        Gatehouse::start(load_file(&file).unwrap(), Metrics::new())
            .await
            .unwrap(),
    );
    let addr = gatehouse.https_addr().await.unwrap();
    let stop = CancellationToken::new();
    let mut updates = watcher.spawn(stop.clone());
    let follower = gatehouse.clone();
    tokio::spawn(async move { follower.follow(&mut updates).await });

    // A connection opened before the renewal...
    let old = connect_verified(&ca, addr, "a.example.com").await;
    assert_eq!(presented(&old), der_of(&v1));
    let (mut old_sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(old))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = || {
        Request::get("/")
            .header("host", "a.example.com")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    assert_eq!(old_sender.send_request(req()).await.unwrap().status(), 200);

    // ...the certificate is renewed on disk: new handshakes get it at once.
    let v2 = cert_files(&ca, &dir, "a", &["a.example.com"], (-1, 60));
    let want = der_of(&v2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = connect_verified(&ca, addr, "a.example.com").await;
        if presented(&s) == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "renewed certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connection from before still works.
    assert_eq!(old_sender.send_request(req()).await.unwrap().status(), 200);

    // A broken renewal is refused; the last good certificate keeps serving.
    write(
        &dir,
        "a.crt",
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    let metrics = || {
        let (_, text) = gatehouse.metrics().encode();
        String::from_utf8(text).unwrap()
    };
    eventually(
        "the broken certificate is refused",
        Duration::from_secs(10),
        || metrics().contains("gatehouse_config_reloads_total{result=\"error\"} "),
    )
    .await;
    let s = connect_verified(&ca, addr, "a.example.com").await;
    assert_eq!(presented(&s), want);
    stop.cancel();
}

fn openssl(args: &[&str], dir: &std::path::Path) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(status.success(), "openssl {args:?}");
}

/// `openssl req -x509` for `<name>.example.com` into `<name>.crt`, with `key` saying
/// which key to make or use.
fn self_signed(dir: &std::path::Path, name: &str, key: &[&str]) {
    let (crt, subj, san) = (
        format!("{name}.crt"),
        format!("/CN={name}.example.com"),
        format!("subjectAltName=DNS:{name}.example.com"),
    );
    let mut args = vec!["req", "-x509"];
    args.extend_from_slice(key);
    args.extend_from_slice(&["-out", &crt, "-days", "2", "-subj", &subj, "-addext", &san]);
    openssl(&args, dir);
}

#[tokio::test]
async fn rsa_and_ecdsa_keys_in_pkcs8_pkcs1_and_sec1_with_curl_and_openssl() {
    let up = TestUpstream::start("a").await;
    let dir = temp_dir("keys");
    // RSA, PKCS#8 key.
    self_signed(
        &dir,
        "rsa8",
        &["-newkey", "rsa:2048", "-nodes", "-keyout", "rsa8.key"],
    );
    // RSA, PKCS#1 key.
    self_signed(
        &dir,
        "rsa1",
        &["-newkey", "rsa:2048", "-nodes", "-keyout", "rsa1.pem"],
    );
    openssl(
        &["rsa", "-in", "rsa1.pem", "-out", "rsa1.key", "-traditional"],
        &dir,
    );
    // ECDSA P-256, SEC1 key.
    openssl(
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.key",
        ],
        &dir,
    );
    self_signed(&dir, "ec", &["-key", "ec.key"]);
    assert!(std::fs::read_to_string(dir.join("rsa1.key"))
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    assert!(std::fs::read_to_string(dir.join("ec.key"))
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    let tls =
        tls_entry(&dir, "rsa8", "") + &tls_entry(&dir, "rsa1", "") + &tls_entry(&dir, "ec", "");
    let text = config(up.addr, &tls).replace(
        "routes:\n",
        "routes:\n  - { host: rsa8.example.com, paths: [{ path: /, service: a }] }\n  - { host: rsa1.example.com, paths: [{ path: /, service: a }] }\n  - { host: ec.example.com, paths: [{ path: /, service: a }] }\n",
    );
    let proxy = Proxy::start(&text).await;
    let port = https(&proxy).await.port();
    for name in ["rsa8", "rsa1", "ec"] {
        let host = format!("{name}.example.com");
        // Async: the proxy runs on this test's runtime and must keep serving meanwhile.
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                "--cacert",
            ])
            .arg(dir.join(format!("{name}.crt")))
            .args([
                "--resolve",
                &format!("{host}:{port}:127.0.0.1"),
                &format!("https://{host}:{port}/"),
            ])
            .output()
            .await
            .expect("curl is installed");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200 2",
            "{host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // TLS 1.1 and older are refused; 1.2 and 1.3 are served.
    let s_client = |flags: Vec<&'static str>| {
        tokio::process::Command::new("openssl")
            .arg("s_client")
            .args(flags)
            .args([
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-servername",
                "ec.example.com",
            ])
            .stdin(std::process::Stdio::null())
            .output()
    };
    // OpenSSL 3 will not offer TLS 1.0/1.1 at its default security level; at level 0 it
    // does, so the refusal is the server's: an alert it sent (protocol_version or
    // handshake_failure), not a client that gave up before sending a ClientHello.
    for old in ["-tls1", "-tls1_1"] {
        let out = s_client(vec![old, "-cipher", "DEFAULT@SECLEVEL=0"])
            .await
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{old} must be refused");
        assert!(
            said.contains("SSL alert number"),
            "{old}: the server must refuse with an alert: {said}"
        );
    }
    for flag in ["-tls1_2", "-tls1_3"] {
        let out = s_client(vec![flag]).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("BEGIN CERTIFICATE") || text.contains("Server certificate"),
            "{flag}: {text}"
        );
    }
}

#[tokio::test]
async fn sessions_resume() {
    let up = TestUpstream::start("a").await;
    let dir = temp_dir("resume");
    let ca = TestCa::new();
    cert_files(&ca, &dir, "a", &["a.example.com"], (-1, 30));
    let proxy = Proxy::start(&config(up.addr, &tls_entry(&dir, "a", ""))).await;
    let addr = https(&proxy).await;
    // One client configuration keeps its session cache across connections.
    let client = ca.client(&[]);
    let first = connect(client.clone(), addr, Some("a.example.com"), "a.example.com")
        .await
        .unwrap();
    assert_eq!(
        first.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    // TLS 1.3 tickets arrive after the handshake; let the client read them.
    assert_eq!(h1_over(first, "a.example.com").await.status, 200);
    let second = connect(client, addr, Some("a.example.com"), "a.example.com")
        .await
        .unwrap();
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
}

#[tokio::test]
async fn forced_https_only_with_a_valid_certificate_and_hsts_on_https() {
    let up = TestUpstream::start("a").await;
    let dir = temp_dir("redirect");
    let ca = TestCa::new();
    cert_files(&ca, &dir, "a", &["a.example.com"], (-1, 30));
    cert_files(&ca, &dir, "plain", &["plain.example.com"], (-1, 30));
    cert_files(&ca, &dir, "expired", &["expired.example.com"], (-30, -1));
    cert_files(&ca, &dir, "wrong", &["other.example.com"], (-1, 30));
    let tls = tls_entry(&dir, "a", "")
        + &tls_entry(&dir, "plain", "")
        + &tls_entry(&dir, "expired", "")
        + &tls_entry(&dir, "wrong", ", hosts: [wrong.example.com]");
    let mut routes = String::new();
    for host in ["a", "expired", "wrong", "nocert"] {
        routes += &format!("  - {{ host: {host}.example.com, https_redirect: true, paths: [{{ path: /, service: a }}] }}\n");
    }
    routes += "  - { host: plain.example.com, paths: [{ path: /, service: a }] }\n";
    let text = format!(
        r#"listen: {{ http: "127.0.0.1:0", https: "127.0.0.1:0" }}
access_log: off
trusted_proxies: ["127.0.0.4"]
hsts: {{ max_age: 2d, include_subdomains: true, preload: true }}
services: {{ a: {{ endpoints: ["{}"] }} }}
tls:
{tls}routes:
{routes}"#,
        up.addr
    );
    let proxy = Proxy::start(&text).await;
    let https_port = https(&proxy).await.port();
    let plain = |from: &'static str,
                 host: &'static str,
                 path: &'static str,
                 headers: &'static [(&'static str, &'static str)]| {
        let addr = proxy.addr;
        async move {
            request_from(from, addr, b"", get_req(host, path, headers))
                .await
                .unwrap()
        }
    };

    let got = plain("127.0.0.3", "a.example.com", "/p?q=1", &[]).await;
    assert_eq!(got.status, 308);
    assert_eq!(
        got.headers["location"],
        format!("https://a.example.com:{https_port}/p?q=1")
    );
    // ACME HTTP-01 challenges stay on plain HTTP.
    let got = plain(
        "127.0.0.3",
        "a.example.com",
        "/.well-known/acme-challenge/token",
        &[],
    )
    .await;
    assert_eq!(got.status, 200);
    // A trusted proxy that terminated TLS already: no redirect loop. An untrusted claim: redirect.
    let xfp = &[("x-forwarded-proto", "https")];
    assert_eq!(
        plain("127.0.0.4", "a.example.com", "/", xfp).await.status,
        200
    );
    assert_eq!(
        plain("127.0.0.3", "a.example.com", "/", xfp).await.status,
        308
    );
    // Expired, wrong-name, or no certificate: served over HTTP, never redirected to a broken site.
    for host in [
        "expired.example.com",
        "wrong.example.com",
        "nocert.example.com",
    ] {
        assert_eq!(
            plain("127.0.0.3", host, "/", &[]).await.status,
            200,
            "{host}"
        );
    }

    // HSTS on HTTPS responses of redirected hosts only.
    let addr = https(&proxy).await;
    let over_tls = |host: &'static str| {
        let client = ca.client(&[]);
        async move {
            let s = connect(client, addr, Some(host), host).await.unwrap();
            h1_over(s, host).await
        }
    };
    let got = over_tls("a.example.com").await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.headers["strict-transport-security"],
        "max-age=172800; includeSubDomains; preload"
    );
    let got = over_tls("plain.example.com").await;
    assert_eq!(got.status, 200);
    assert!(got.headers.get("strict-transport-security").is_none());
}

#[tokio::test]
async fn proxy_protocol_before_tls_on_the_https_listener() {
    use tokio::io::AsyncWriteExt;
    let up = TestUpstream::start("a").await;
    let dir = temp_dir("pp-tls");
    let ca = TestCa::new();
    cert_files(&ca, &dir, "a", &["a.example.com"], (-1, 30));
    let text = config(up.addr, &tls_entry(&dir, "a", ""))
        .replace(
            r#"listen: { http: "127.0.0.1:0", https: "127.0.0.1:0" }"#,
            r#"listen: { https: "127.0.0.1:0", proxy_protocol: true }
trusted_proxies: ["127.0.0.1"]"#,
        )
        .replace(
            "  - host: a.example.com\n",
            "  - host: a.example.com\n    allow: \"198.51.100.0/24\"\n",
        );
    let proxy = Proxy::start_on(&text, true).await;
    let addr = proxy.addr;
    let header = proxy_header::ProxyHeader::with_address(proxy_header::ProxiedAddress::stream(
        "198.51.100.9:4444".parse().unwrap(),
        addr,
    ));
    let mut preface = Vec::new();
    header.encode_v2(&mut preface).unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&preface).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("a.example.com").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(ca.client(&[])))
        .connect(name, tcp)
        .await
        .expect("TLS after the PROXY header");
    let got = h1_over(tls, "a.example.com").await;
    assert_eq!(
        got.status, 200,
        "the PROXY source is the client the allow-list sees"
    );
    assert_eq!(got.json()["headers"]["x-real-ip"], "198.51.100.9");
    assert_eq!(got.json()["headers"]["x-forwarded-proto"], "https");
}

/// The binary with an HTTP and an HTTPS listener serving `tls` entries, for `a.example.com`
/// (with forced HTTPS) and `nocert.example.com`.
async fn binary_with_tls(
    name: &str,
    up: std::net::SocketAddr,
    tls: &str,
    extra: &str,
    stdout: std::process::Stdio,
) -> (crate::support::binary::Running, PathBuf) {
    let dir = temp_dir(name);
    let config = dir.join("gatehouse.yaml");
    write(
        &dir,
        "gatehouse.yaml",
        &format!(
            "listen: {{ http: \"127.0.0.1:0\", https: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\nshutdown: {{ drain_delay: 0s }}\n{extra}services: {{ a: {{ endpoints: [\"{up}\"] }} }}\ntls:\n{tls}routes:\n  - {{ host: a.example.com, https_redirect: true, paths: [{{ path: /, service: a }}] }}\n  - {{ host: nocert.example.com, paths: [{{ path: /, service: a }}] }}\n"
        ),
    );
    let running = crate::support::binary::run_with(&config, &[], stdout).await;
    crate::support::binary::wait_ready(&running).await;
    (running, dir)
}

#[tokio::test]
async fn check_refuses_duplicate_names_mismatched_keys_and_nameless_certificates() {
    let dir = temp_dir("tls-refusals");
    let ca = TestCa::new();
    cert_files(&ca, &dir, "one", &["dup.example.com"], (-1, 30));
    cert_files(&ca, &dir, "two", &["dup.example.com"], (-1, 30));
    cert_files(&ca, &dir, "mine", &["m.example.com"], (-1, 30));
    let (_, other_key) = ca.leaf(&["other.example.com"], (-1, 30));
    write(&dir, "mine.key", &other_key);
    cert_files(&ca, &dir, "nameless", &[], (-1, 30));
    let tls = tls_entry(&dir, "one", "")
        + &tls_entry(&dir, "two", "")
        + &tls_entry(&dir, "mine", "")
        + &tls_entry(&dir, "nameless", "");
    write(
        &dir,
        "gatehouse.yaml",
        &format!("listen: {{ https: \"127.0.0.1:0\" }}\nservices: {{}}\ntls:\n{tls}routes: []\n"),
    );
    let config = dir.join("gatehouse.yaml");
    let out = crate::support::binary::run_to_end(&["check"], &config).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = config.display().to_string();
    // Each refusal points at its entry (lines 4..=7 of the file).
    for (line, says) in [
        (5, "`dup.example.com` is already served by"),
        (6, "is not the key of"),
        (7, "has no DNS name to serve; add `hosts:`"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{file}:{line}:")) && l.contains(says)),
            "line {line} should say `{says}`:\n{err}"
        );
    }
    assert!(err.contains("3 error(s)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_renewal_is_refused_once_and_the_finished_pair_is_served() {
    let up = TestUpstream::start("a").await;
    let ca = TestCa::new();
    let dir = temp_dir("half-renewal-certs");
    let v1 = cert_files(&ca, &dir, "a", &["a.example.com"], (-1, 30));
    let (running, _) = binary_with_tls(
        "half-renewal",
        up.addr,
        &tls_entry(&dir, "a", ""),
        "access_log: off\n",
        std::process::Stdio::null(),
    )
    .await;
    let https = running.https.unwrap();
    let served = || async {
        let s = connect_verified(&ca, https, "a.example.com").await;
        presented(&s)
    };
    assert_eq!(served().await, der_of(&v1));
    // cert-manager writes the certificate, then the key: in between they do not match.
    let (v2, key2) = ca.leaf(&["a.example.com"], (-1, 60));
    write(&dir, "a.crt", &v2);
    let errors = r#"gatehouse_config_reloads_total{result="error"}"#;
    eventually_async(
        "the half-written pair is refused",
        Duration::from_secs(10),
        || async { running.metric(errors).await == Some(1.0) },
    )
    .await;
    assert_eq!(
        served().await,
        der_of(&v1),
        "the last good certificate serves"
    );
    // The file is checked every second; two more checks must not refuse (or log) it again.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(running.metric(errors).await, Some(1.0));
    assert_eq!(running.logged("is not the key of"), 1, "logged once");
    write(&dir, "a.key", &key2);
    let want = der_of(&v2);
    eventually_async(
        "the finished pair is served",
        Duration::from_secs(10),
        || async { served().await == want },
    )
    .await;
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_stops_when_the_certificate_expires_while_running() {
    let up = TestUpstream::start("a").await;
    let ca = TestCa::new();
    let dir = temp_dir("expiring-certs");
    let (cert, key) = ca.leaf_expiring_in(&["a.example.com"], 8);
    write(&dir, "a.crt", &cert);
    write(&dir, "a.key", &key);
    let (running, _) = binary_with_tls(
        "expiring",
        up.addr,
        &tls_entry(&dir, "a", ""),
        "access_log: off\n",
        std::process::Stdio::null(),
    )
    .await;
    let plain = || async { get_at(running.http, "a.example.com", "/").await.status };
    assert_eq!(
        plain().await,
        308,
        "redirected while the certificate is valid"
    );
    let expires = std::time::UNIX_EPOCH + Duration::from_secs(not_after(&cert) as u64);
    eventually_async(
        "served over HTTP once it expired",
        Duration::from_secs(15),
        || async { plain().await == 200 },
    )
    .await;
    assert!(
        std::time::SystemTime::now() >= expires,
        "the redirect stopped at the expiry, not before"
    );
    assert_eq!(running.terminate().await, Some(0));
}

/// The next access log line, parsed.
async fn next_entry(
    log: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> serde_json::Value {
    let line = tokio::time::timeout(Duration::from_secs(10), log.next_line())
        .await
        .expect("an access log line")
        .unwrap()
        .unwrap();
    serde_json::from_str(&line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_are_counted_by_result_and_the_access_log_names_protocol_and_tls() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let up = TestUpstream::start("a").await;
    let ca = TestCa::new();
    let dir = temp_dir("handshake-certs");
    cert_files(&ca, &dir, "a", &["a.example.com"], (-1, 30));
    let (mut running, _) = binary_with_tls(
        "handshakes",
        up.addr,
        &tls_entry(&dir, "a", ""),
        "access_log: stdout\ntimeouts: { request_header: 500ms }\n",
        std::process::Stdio::piped(),
    )
    .await;
    let https = running.https.unwrap();
    let mut log = tokio::io::BufReader::new(running.child.stdout.take().unwrap()).lines();
    // A success over HTTP/2, logged with its protocol and TLS version.
    let s = connect(
        ca.client(&[b"h2"]),
        https,
        Some("a.example.com"),
        "a.example.com",
    )
    .await
    .unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = h2
        .send_request(
            Request::get("https://a.example.com/")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(collect(resp).await.status, 200);
    let entry = next_entry(&mut log).await;
    assert_eq!(entry["protocol"], "HTTP/2.0");
    assert_eq!(entry["tls"], "TLSv1.3");
    // Plain HTTP/1.1: no TLS.
    let got = get_at(running.http, "nocert.example.com", "/").await;
    assert_eq!(got.status, 200);
    let entry = next_entry(&mut log).await;
    assert_eq!(entry["protocol"], "HTTP/1.1");
    assert!(entry["tls"].is_null(), "{entry}");

    // A failure: a name no certificate serves, and no default.
    assert!(connect(
        any_certificate_client(),
        https,
        Some("unknown.example.com"),
        "unknown.example.com"
    )
    .await
    .is_err());
    // A timeout: a connection that never says hello.
    let mut silent = tokio::net::TcpStream::connect(https).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed after request_header");
    assert!(matches!(read, Ok(0) | Err(_)));
    let count = |result: &'static str| {
        let running = &running;
        async move {
            running
                .metric(&format!(
                    "gatehouse_tls_handshakes_total{{result=\"{result}\"}}"
                ))
                .await
        }
    };
    eventually_async("the timeout is counted", Duration::from_secs(5), || async {
        count("timeout").await == Some(1.0)
    })
    .await;
    assert_eq!(count("failure").await, Some(1.0));
    assert_eq!(count("success").await, Some(1.0));
    assert_eq!(running.terminate().await, Some(0));
}
