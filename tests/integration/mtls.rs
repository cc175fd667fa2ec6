//! Client certificates (mTLS) through the binary, with curl and openssl s_client: asked for
//! per host (SNI), judged after the handshake as nginx judges them (400, 403, or the error
//! page), and what the client showed handed to the upstream in `ssl-client-*` headers.

use std::{path::Path, time::Duration};

use crate::support::{binary::*, tls::*, *};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A certificate authority for clients, and the certificates it signs.
pub(crate) struct ClientCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl ClientCa {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        ClientCa {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes `<cn>.crt` and `<cn>.key` for a client called `cn`; returns the certificate.
    pub(crate) fn client(&self, dir: &Path, cn: &str) -> String {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap().pem();
        write(dir, &format!("{cn}.crt"), &cert);
        write(dir, &format!("{cn}.key"), &key.serialize_pem());
        cert
    }
}

/// curl to `https://<host>:<port><path>` (resolved to 127.0.0.1, trusting `server-ca.pem`),
/// showing the client certificate `<cert>.crt` if any; the status and the body.
pub(crate) async fn curl(
    dir: &Path,
    port: u16,
    host: &str,
    path: &str,
    cert: Option<&str>,
    extra: &[&str],
) -> (u16, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(dir.join("server-ca.pem"))
    .args(["--resolve", &format!("{host}:{port}:127.0.0.1")]);
    if let Some(cn) = cert {
        cmd.arg("--cert")
            .arg(dir.join(format!("{cn}.crt")))
            .arg("--key")
            .arg(dir.join(format!("{cn}.key")));
    }
    let out = cmd
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .await
        .expect("curl is installed (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    match code.trim().parse() {
        Ok(code) if code > 0 => (code, body.to_owned()),
        _ => panic!(
            "curl {host}{path}: no answer ({})",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// openssl s_client to `sni` on `port`, with `flags`, sending `request` once connected;
/// everything it printed.
async fn s_client(dir: &Path, port: u16, sni: &str, flags: &[&str], request: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("openssl")
        .arg("s_client")
        .args(["-connect", &format!("127.0.0.1:{port}"), "-servername", sni])
        .args(["-CAfile", "server-ca.pem"])
        // With a request, the answer is read until the server closes; without, stdin's end
        // ends the session once the handshake is done.
        .args(if request.is_empty() {
            &[][..]
        } else {
            &["-ign_eof"][..]
        })
        .args(flags)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed (.ci/run installs it)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(request.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("s_client ends once the server closes")
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The server certificate for `hosts`, signed by a CA written as `server-ca.pem`; the
/// `tls:` entry serving it. (Subject and issuer differ: OpenSSL takes a certificate whose
/// subject is its issuer's for self-signed.)
pub(crate) fn server_cert(dir: &Path, hosts: &[&str]) -> String {
    let ca = ClientCa::new("Server CA");
    write(dir, "server-ca.pem", &ca.pem());
    let mut params =
        CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, hosts[0]);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap().pem();
    write(dir, "server.crt", &cert);
    write(dir, "server.key", &key.serialize_pem());
    format!(
        "tls:\n  - {{ cert: \"{}\", key: \"{}\" }}\n",
        dir.join("server.crt").display(),
        dir.join("server.key").display()
    )
}

/// A header the upstream received, from its JSON echo.
fn header(body: &str, name: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    json["headers"][name].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_asked_per_host_and_judged_as_nginx_with_curl_and_openssl() {
    let up = TestUpstream::start("app").await;
    let dir = temp_dir("mtls-file");
    let tls = server_cert(
        &dir,
        &[
            "secure.example.com",
            "optional.example.com",
            "named.example.com",
            "open.example.com",
        ],
    );
    let clients = ClientCa::new("Clients CA");
    write(&dir, "clients-ca.pem", &clients.pem());
    let alice = clients.client(&dir, "alice");
    clients.client(&dir, "bob");
    ClientCa::new("Other CA").client(&dir, "mallory");
    let yaml = format!(
        r#"listen: {{ http: "127.0.0.1:0", https: "127.0.0.1:0", admin: "127.0.0.1:0" }}
access_log: off
services: {{ app: {{ endpoints: ["{up}"] }} }}
{tls}routes:
  - host: secure.example.com
    client_certificates: {{ ca: clients-ca.pem, pass_to_upstream: true }}
    paths: [{{ path: /, service: app }}]
  - host: optional.example.com
    client_certificates: {{ ca: clients-ca.pem, verify: optional }}
    paths: [{{ path: /, service: app }}]
  - host: named.example.com
    client_certificates: {{ ca: clients-ca.pem, match_cn: "CN=alice$", error_page: "https://help.example.com/certificates" }}
    paths: [{{ path: /, service: app }}]
  - host: open.example.com
    paths: [{{ path: /, service: app }}]
"#,
        up = up.addr
    );
    write(&dir, "gatehouse.yaml", &yaml);
    let running = run_with(
        &dir.join("gatehouse.yaml"),
        &[],
        std::process::Stdio::null(),
    )
    .await;
    wait_ready(&running).await;
    let port = running.https.expect("an HTTPS listener").port();
    let get =
        |host: &'static str, cert: Option<&'static str>| curl(&dir, port, host, "/", cert, &[]);

    // The authority's client gets through; the upstream learns who it is.
    let (status, body) = get("secure.example.com", Some("alice")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&body, "ssl-client-verify").as_deref(),
        Some("SUCCESS")
    );
    assert_eq!(
        header(&body, "ssl-client-subject-dn").as_deref(),
        Some("CN=alice")
    );
    assert_eq!(
        header(&body, "ssl-client-issuer-dn").as_deref(),
        Some("CN=Clients CA")
    );
    let passed = header(&body, "ssl-client-cert").expect("the certificate is passed on");
    let decoded = percent_encoding::percent_decode_str(&passed)
        .decode_utf8()
        .unwrap();
    assert_eq!(
        der_of(&decoded),
        der_of(&alice),
        "the very certificate alice showed"
    );

    // Without a certificate, or with one of another authority: nginx's 400s.
    let (status, body) = get("secure.example.com", None).await;
    assert_eq!(
        (status, body.trim()),
        (400, "400 No required SSL certificate was sent")
    );
    let (status, body) = get("secure.example.com", Some("mallory")).await;
    assert_eq!(
        (status, body.trim()),
        (400, "400 The SSL certificate error")
    );

    // optional: no certificate is let in as NONE (whatever the client claims), a foreign one
    // is not.
    let (status, body) = curl(
        &dir,
        port,
        "optional.example.com",
        "/",
        None,
        &[
            "-H",
            "ssl-client-verify: SUCCESS",
            "-H",
            "ssl-client-subject-dn: CN=admin",
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&body, "ssl-client-verify").as_deref(), Some("NONE"));
    assert_eq!(header(&body, "ssl-client-subject-dn"), None);
    assert_eq!(get("optional.example.com", Some("mallory")).await.0, 400);

    // match-cn: alice only; bob is 403; no certificate goes to the error page.
    assert_eq!(get("named.example.com", Some("alice")).await.0, 200);
    let (status, body) = get("named.example.com", Some("bob")).await;
    assert_eq!(
        (status, body.trim()),
        (403, "403 client certificate unauthorized")
    );
    let (status, head) = curl(&dir, port, "named.example.com", "/", None, &["-i"]).await;
    assert_eq!(status, 302);
    assert!(
        head.to_ascii_lowercase()
            .contains("location: https://help.example.com/certificates"),
        "{head}"
    );

    // A host without client certificates on the same listener is unaffected.
    assert_eq!(get("open.example.com", None).await.0, 200);
    // A connection made for it does not reach a host that wants a certificate (421: the
    // client opens one for that host).
    let (status, _) = curl(
        &dir,
        port,
        "open.example.com",
        "/",
        Some("alice"),
        &["-H", "Host: secure.example.com"],
    )
    .await;
    assert_eq!(status, 421);

    // The handshake asks for a certificate, naming the authority, only for such hosts.
    let asked = s_client(&dir, port, "secure.example.com", &[], "").await;
    assert!(
        asked.contains("Acceptable client certificate CA names") && asked.contains("Clients CA"),
        "{asked}"
    );
    let open = s_client(&dir, port, "open.example.com", &[], "").await;
    assert!(
        open.contains("No client certificate CA names sent"),
        "{open}"
    );
    // s_client without a certificate completes the handshake and reads nginx's 400.
    let request = "GET / HTTP/1.1\r\nHost: secure.example.com\r\nConnection: close\r\n\r\n";
    let refused = s_client(&dir, port, "secure.example.com", &[], request).await;
    assert!(refused.contains("HTTP/1.1 400 Bad Request"), "{refused}");
    let served = s_client(
        &dir,
        port,
        "secure.example.com",
        &["-cert", "alice.crt", "-key", "alice.key"],
        request,
    )
    .await;
    assert!(served.contains("HTTP/1.1 200 OK"), "{served}");
    assert!(
        served.contains("\"ssl-client-verify\":\"SUCCESS\""),
        "{served}"
    );
    assert_eq!(running.terminate().await, Some(0));
}

/// An Ingress for `host` served with the TLS Secret `site-tls`.
fn tls_ingress(name: &str, host: &str, annotations: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "metadata": { "namespace": "shop", "name": name, "creationTimestamp": "2026-01-01T00:00:00Z", "annotations": annotations },
        "spec": {
            "ingressClassName": "gatehouse",
            "tls": [{ "hosts": [host], "secretName": "site-tls" }],
            "rules": [{ "host": host, "http": { "paths": [crate::ingress::path("/", "Prefix", "web")] } }],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_tls_of_an_ingress_follows_its_secret_live_and_fails_closed_without_it() {
    use crate::ingress::{opaque_secret, service, start, tls_secret};
    use crate::support::kube_api::{INGRESSES, SECRETS};
    let cluster = start("mtls-ingress", true).await;
    let api = &cluster.api;
    let port = cluster.running.https.expect("an HTTPS listener").port();
    let web = TestUpstream::start("web").await;
    service(api, "shop", "web", &web);
    let dir = temp_dir("mtls-ingress-certs");
    server_cert(&dir, &["secure.example.com", "open.example.com"]);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    api.apply(
        SECRETS,
        tls_secret("shop", "site-tls", &read("server.crt"), &read("server.key")),
    );
    let (first, second) = (ClientCa::new("First CA"), ClientCa::new("Second CA"));
    first.client(&dir, "alice");
    second.client(&dir, "bob");
    api.apply(
        SECRETS,
        opaque_secret("shop", "client-ca", &[("ca.crt", &first.pem())]),
    );
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    api.apply(
        INGRESSES,
        tls_ingress(
            "secure",
            "secure.example.com",
            serde_json::json!({ n("auth-tls-secret"): "shop/client-ca", n("auth-tls-verify-client"): "on", n("auth-tls-verify-depth"): "1" }),
        ),
    );
    api.apply(
        INGRESSES,
        tls_ingress("open", "open.example.com", serde_json::json!({})),
    );
    let status = |host: &'static str, cert: Option<&'static str>| {
        let dir = dir.clone();
        async move { curl(&dir, port, host, "/", cert, &[]).await.0 }
    };
    let wait = Duration::from_secs(15);
    eventually_async("alice gets in with the first CA", wait, || async {
        status("secure.example.com", Some("alice")).await == 200
    })
    .await;
    assert_eq!(status("secure.example.com", None).await, 400);
    assert_eq!(status("secure.example.com", Some("bob")).await, 400);
    assert_eq!(
        status("open.example.com", None).await,
        200,
        "the other host is not asked"
    );

    // The Secret rotated to another authority: the next connection is judged by it.
    api.apply(
        SECRETS,
        opaque_secret("shop", "client-ca", &[("ca.crt", &second.pem())]),
    );
    eventually_async("bob gets in with the second CA", wait, || async {
        status("secure.example.com", Some("bob")).await == 200
    })
    .await;
    assert_eq!(status("secure.example.com", Some("alice")).await, 400);

    // Without its Secret the host fails closed (ingress-nginx would serve it without the
    // check); the other host goes on.
    api.delete(SECRETS, "shop", "client-ca");
    eventually_async(
        "the host without its authorities answers 503",
        wait,
        || async { status("secure.example.com", Some("bob")).await == 503 },
    )
    .await;
    assert_eq!(status("secure.example.com", None).await, 503);
    assert_eq!(status("open.example.com", None).await, 200);
    assert!(
        cluster
            .running
            .logged("auth-tls-secret Secret shop/client-ca does not exist")
            > 0
    );
    assert_eq!(cluster.running.terminate().await, Some(0));
}
