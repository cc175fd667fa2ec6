//! Ingresses, IngressClasses and TLS Secrets through the binary, against the Kubernetes API
//! test server: what an operator sees when they `kubectl apply` these objects.

use std::time::Duration;

use crate::support::{binary::*, kube_api::*, *};
use base64::Engine;
use gatehouse_discovery::kubernetes::endpoints::SERVICE_NAME_LABEL;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// A Service with a named port and one ready pod behind it (a test upstream).
pub(crate) fn service(api: &KubeApi, ns: &str, name: &str, pod: &TestUpstream) {
    api.apply(
        SERVICES,
        json!({
            "metadata": { "namespace": ns, "name": name },
            "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] },
        }),
    );
    api.apply(
        ENDPOINT_SLICES,
        json!({
            "metadata": { "namespace": ns, "name": format!("{name}-1"), "labels": { SERVICE_NAME_LABEL: name } },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": pod.addr.port() }],
            "endpoints": [{ "addresses": ["127.0.0.1"], "conditions": { "ready": true } }],
        }),
    );
}

fn class(api: &KubeApi, name: &str, controller: &str) {
    api.apply(
        INGRESS_CLASSES,
        json!({ "metadata": { "name": name }, "spec": { "controller": controller } }),
    );
}

pub(crate) fn path(p: &str, kind: &str, service: &str) -> Value {
    json!({ "path": p, "pathType": kind, "backend": { "service": { "name": service, "port": { "name": "http" } } } })
}

/// An Ingress of class `class` with one rule.
pub(crate) fn ingress(
    ns: &str,
    name: &str,
    created: &str,
    class: &str,
    annotations: Value,
    host: &str,
    paths: Value,
) -> Value {
    json!({
        "metadata": { "namespace": ns, "name": name, "creationTimestamp": created, "annotations": annotations },
        "spec": { "ingressClassName": class, "rules": [{ "host": host, "http": { "paths": paths } }] },
    })
}

/// An Ingress of our class with no annotations, created at the same moment as the others.
pub(crate) fn plain(ns: &str, name: &str, host: &str, paths: Value) -> Value {
    ingress(
        ns,
        name,
        "2026-01-01T00:00:00Z",
        "gatehouse",
        json!({}),
        host,
        paths,
    )
}

pub(crate) fn tls_secret(ns: &str, name: &str, cert: &str, key: &str) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "metadata": { "namespace": ns, "name": name },
        "type": "kubernetes.io/tls",
        "data": { "tls.crt": b64(cert), "tls.key": b64(key) },
    })
}

pub(crate) struct Cluster {
    pub(crate) api: KubeApi,
    pub(crate) running: Running,
    pub(crate) _dir: std::path::PathBuf,
}

/// The test API server and the binary watching it, ready.
pub(crate) async fn start(name: &str, https: bool) -> Cluster {
    let api = KubeApi::start().await;
    classes(&api);
    let https = if https {
        ", https: \"127.0.0.1:0\""
    } else {
        ""
    };
    let (running, dir) = run_on(name, &[&api], https, "").await;
    wait_ready(&running).await;
    Cluster {
        api,
        running,
        _dir: dir,
    }
}

pub(crate) fn classes(api: &KubeApi) {
    class(api, "gatehouse", "gatehouse.io/ingress");
    class(api, "nginx", "k8s.io/ingress-nginx");
}

/// Runs the binary with a file (`listen` extras, then `rest`) against these API servers.
pub(crate) async fn run_on(
    name: &str,
    apis: &[&KubeApi],
    listen: &str,
    rest: &str,
) -> (Running, std::path::PathBuf) {
    run_on_with(name, apis, listen, rest, &[], std::process::Stdio::null()).await
}

pub(crate) async fn run_on_with(
    name: &str,
    apis: &[&KubeApi],
    listen: &str,
    rest: &str,
    flags: &[&str],
    stdout: std::process::Stdio,
) -> (Running, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("gatehouse-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gatehouse.yaml");
    // Access logs only where a test reads them.
    let rest = if rest.contains("access_log") {
        rest.to_owned()
    } else {
        format!("access_log: off\n{rest}")
    };
    std::fs::write(
        &config,
        format!("listen: {{ http: \"127.0.0.1:0\"{listen}, admin: \"127.0.0.1:0\" }}\nshutdown: {{ drain_delay: 0s }}\n{rest}"),
    )
    .unwrap();
    let mut args = vec!["--kubernetes".to_owned()];
    for api in apis {
        args.push("--kubeconfig".to_owned());
        args.push(api.kubeconfig(&dir).to_str().unwrap().to_owned());
    }
    args.extend(flags.iter().map(|f| f.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let running = run_with(&config, &args, stdout).await;
    (running, dir)
}

/// Status and answering upstream of a GET from 127.0.0.1.
pub(crate) async fn fetch(cluster: &Cluster, host: &str, path: &str) -> (u16, String) {
    fetch_from(cluster, "127.0.0.1", host, path).await
}

/// A plain-HTTP GET from a chosen client address.
async fn get_from(cluster: &Cluster, from: &str, host: &str, path: &str) -> Got {
    request_from(from, cluster.running.http, b"", get_req(host, path, &[]))
        .await
        .expect("an answer")
}

async fn fetch_from(cluster: &Cluster, from: &str, host: &str, path: &str) -> (u16, String) {
    let got = get_from(cluster, from, host, path).await;
    let upstream = serde_json::from_slice::<Value>(&got.body)
        .ok()
        .and_then(|v| v["upstream"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (got.status.as_u16(), upstream)
}

pub(crate) async fn until(
    cluster: &Cluster,
    what: &str,
    host: &str,
    path: &str,
    want: (u16, &str),
) {
    eventually_async(what, WAIT, || async {
        let (status, upstream) = fetch(cluster, host, path).await;
        status == want.0 && upstream == want.1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingresses_are_added_changed_deleted_and_conflicts_go_to_the_older() {
    let cluster = start("ingress-crud", false).await;
    let api = &cluster.api;
    let (web, api_pod) = (
        TestUpstream::start("web").await,
        TestUpstream::start("api").await,
    );
    service(api, "shop", "web", &web);
    service(api, "shop", "api", &api_pod);
    assert_eq!(fetch(&cluster, "app.example.com", "/").await.0, 404);

    // Added.
    api.apply(
        INGRESSES,
        plain(
            "shop",
            "app",
            "app.example.com",
            json!([path("/", "Prefix", "web")]),
        ),
    );
    until(
        &cluster,
        "the new Ingress routes",
        "app.example.com",
        "/x",
        (200, "web"),
    )
    .await;

    // Changed: a path is added.
    api.apply(
        INGRESSES,
        plain(
            "shop",
            "app",
            "app.example.com",
            json!([path("/", "Prefix", "web"), path("/api", "Prefix", "api")]),
        ),
    );
    until(
        &cluster,
        "the changed Ingress routes /api",
        "app.example.com",
        "/api/v1",
        (200, "api"),
    )
    .await;

    // A newer Ingress claims the same host and path: the older keeps it; its other path works.
    api.apply(
        INGRESSES,
        ingress(
            "intruder",
            "newer",
            "2026-02-01T00:00:00Z",
            "gatehouse",
            json!({}),
            "app.example.com",
            json!([path("/", "Prefix", "web"), path("/extra", "Exact", "web")]),
        ),
    );
    service(api, "intruder", "web", &api_pod);
    until(
        &cluster,
        "the newer Ingress's own path",
        "app.example.com",
        "/extra",
        (200, "api"),
    )
    .await;
    assert_eq!(
        fetch(&cluster, "app.example.com", "/").await,
        (200, "web".to_owned()),
        "the older Ingress keeps the contested path"
    );

    // Another controller's Ingress is not ours.
    api.apply(
        INGRESSES,
        ingress(
            "shop",
            "theirs",
            "2026-01-01T00:00:00Z",
            "nginx",
            json!({}),
            "theirs.example.com",
            json!([path("/", "Prefix", "web")]),
        ),
    );

    // Deleted: the contested path passes to the newer Ingress, then nothing routes.
    api.delete(INGRESSES, "shop", "app");
    until(
        &cluster,
        "the loser takes over",
        "app.example.com",
        "/",
        (200, "api"),
    )
    .await;
    api.delete(INGRESSES, "intruder", "newer");
    until(
        &cluster,
        "no route once deleted",
        "app.example.com",
        "/",
        (404, ""),
    )
    .await;
    assert_eq!(fetch(&cluster, "theirs.example.com", "/").await.0, 404);
    assert_eq!(cluster.running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_apply_per_ingress_and_a_bad_one_fails_closed_alone() {
    let cluster = start("ingress-annotations", false).await;
    let api = &cluster.api;
    let web = TestUpstream::start("web").await;
    service(api, "shop", "web", &web);
    let with = |name: &str, annotations: Value, p: &str| {
        ingress(
            "shop",
            name,
            "2026-01-01T00:00:00Z",
            "gatehouse",
            annotations,
            "app.example.com",
            json!([path(p, "Prefix", "web")]),
        )
    };
    // Two Ingresses share a host; only one has an allow-list (nginx prefix) and a rewrite.
    api.apply(INGRESSES, with("open", json!({}), "/public"));
    api.apply(
        INGRESSES,
        with(
            "office",
            json!({
                "nginx.ingress.kubernetes.io/whitelist-source-range": "127.0.0.2/32",
                "nginx.ingress.kubernetes.io/rewrite-target": "/$2",
            }),
            "/office(/|$)(.*)",
        ),
    );
    // Broken: an allow-list that does not parse must not serve without it.
    let allowing = |range: &str| {
        ingress(
            "shop",
            "broken",
            "2026-01-01T00:00:00Z",
            "gatehouse",
            json!({ "gatehouse.io/whitelist-source-range": range }),
            "broken.example.com",
            json!([path("/", "Prefix", "web")]),
        )
    };
    api.apply(INGRESSES, allowing("10.0.0.0/33"));
    until(
        &cluster,
        "the broken Ingress fails closed",
        "broken.example.com",
        "/",
        (503, ""),
    )
    .await;
    assert_eq!(
        fetch(&cluster, "app.example.com", "/public").await,
        (200, "web".to_owned())
    );
    assert_eq!(
        fetch_from(&cluster, "127.0.0.1", "app.example.com", "/office/x")
            .await
            .0,
        403
    );
    let got = get_from(&cluster, "127.0.0.2", "app.example.com", "/OFFICE/reports").await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.json()["uri"],
        "/reports",
        "case-insensitive regex, rewritten"
    );

    // Fixed: the same Ingress serves again.
    api.apply(INGRESSES, allowing("127.0.0.0/8"));
    until(
        &cluster,
        "the fixed Ingress serves",
        "broken.example.com",
        "/",
        (200, "web"),
    )
    .await;
    assert_eq!(cluster.running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secrets_serve_rotate_redirect_and_a_missing_one_affects_only_its_hosts() {
    use crate::support::tls::*;
    let cluster = start("ingress-tls", true).await;
    let api = &cluster.api;
    let https = cluster.running.https.expect("an HTTPS listener");
    let web = TestUpstream::start("web").await;
    service(api, "shop", "web", &web);
    let ca = TestCa::new();
    let (cert1, key1) = ca.leaf(&["secure.example.com"], (-1, 30));
    api.apply(SECRETS, tls_secret("shop", "secure-tls", &cert1, &key1));
    // A Secret of another type, even with the same name elsewhere, is never read.
    api.apply(
        SECRETS,
        json!({ "metadata": { "namespace": "shop", "name": "opaque" }, "type": "Opaque", "data": {} }),
    );
    let with_tls = |name: &str, host: &str, secret: &str| {
        json!({
            "metadata": { "namespace": "shop", "name": name, "creationTimestamp": "2026-01-01T00:00:00Z" },
            "spec": {
                "ingressClassName": "gatehouse",
                "tls": [{ "hosts": [host], "secretName": secret }],
                "rules": [{ "host": host, "http": { "paths": [path("/", "Prefix", "web")] } }],
            },
        })
    };
    api.apply(
        INGRESSES,
        with_tls("secure", "secure.example.com", "secure-tls"),
    );
    api.apply(
        INGRESSES,
        with_tls("nosecret", "plain.example.com", "absent-tls"),
    );

    let presented_der = || async {
        let stream = connect(
            ca.client(&[b"http/1.1"]),
            https,
            Some("secure.example.com"),
            "secure.example.com",
        )
        .await
        .ok()?;
        Some(presented(&stream))
    };
    let first = der_of(&cert1);
    eventually_async("the Secret's certificate is served", WAIT, || async {
        presented_der().await.as_deref() == Some(&first[..])
    })
    .await;
    // ssl-redirect defaults to true for a host with a valid certificate...
    let got = get_from(&cluster, "127.0.0.1", "secure.example.com", "/a?b=1").await;
    assert_eq!(got.status, 308);
    assert_eq!(
        got.headers["location"],
        format!("https://secure.example.com:{}/a?b=1", https.port())
    );
    // ...and a host whose Secret is missing is served over HTTP, not redirected.
    assert_eq!(
        fetch(&cluster, "plain.example.com", "/").await,
        (200, "web".to_owned())
    );

    // Rotation: new handshakes get the new certificate.
    let (cert2, key2) = ca.leaf(&["secure.example.com"], (-1, 60));
    api.apply(SECRETS, tls_secret("shop", "secure-tls", &cert2, &key2));
    let second = der_of(&cert2);
    eventually_async("the rotated certificate is served", WAIT, || async {
        presented_der().await.as_deref() == Some(&second[..])
    })
    .await;

    // A broken rotation (key of another certificate) drops only this Secret's hosts' certificate.
    api.apply(SECRETS, tls_secret("shop", "secure-tls", &cert1, &key2));
    eventually_async("the broken Secret is no longer served", WAIT, || async {
        presented_der().await.is_none()
    })
    .await;
    assert_eq!(
        fetch(&cluster, "secure.example.com", "/").await,
        (200, "web".to_owned()),
        "no redirect to a broken certificate"
    );
    assert_eq!(
        fetch(&cluster, "plain.example.com", "/").await,
        (200, "web".to_owned())
    );
    assert_eq!(cluster.running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_and_a_vm_serve_one_service_and_readiness_waits_for_both() {
    let (east, west) = (KubeApi::start().await, KubeApi::start().await);
    let pods = [
        TestUpstream::start("east-pod").await,
        TestUpstream::start("west-pod").await,
        TestUpstream::start("vm").await,
    ];
    for (api, pod) in [(&east, &pods[0]), (&west, &pods[1])] {
        classes(api);
        service(api, "shop", "web", pod);
        // The same Ingress in both clusters is one Ingress, not a conflict.
        api.apply(
            INGRESSES,
            plain(
                "shop",
                "app",
                "app.example.com",
                json!([path("/", "Prefix", "web")]),
            ),
        );
    }
    west.set_down(true);
    // A file service mixing a VM with the pods (a migration in progress).
    let file = format!(
        "services:\n  migrating:\n    endpoints: [\"{}\"]\n    kubernetes: {{ namespace: shop, name: web, port: http }}\nroutes: [{{ host: vm.example.com, paths: [{{ path: /, service: migrating }}] }}]\n",
        pods[2].addr
    );
    let (running, _dir) = run_on("two-clusters", &[&east, &west], "", &file).await;
    let c = client();
    assert_eq!(
        admin_get(&c, running.admin, "/readyz").await.status,
        503,
        "not ready while one cluster has not been listed"
    );
    west.set_down(false);
    wait_ready(&running).await;

    let cluster = Cluster {
        api: east.clone(),
        running,
        _dir,
    };
    // Round robin over every endpoint: a bounded number of requests reaches them all.
    async fn answered(cluster: &Cluster, host: &str, want: &[&str]) {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let (status, upstream) = fetch(cluster, host, "/").await;
            assert_eq!(status, 200);
            seen.insert(upstream);
            if want.iter().all(|w| seen.contains(*w)) {
                return;
            }
        }
        panic!("{host}: wanted {want:?}, saw {seen:?}");
    }
    answered(&cluster, "app.example.com", &["east-pod", "west-pod"]).await;
    answered(&cluster, "vm.example.com", &["east-pod", "west-pod", "vm"]).await;

    // The requests Gatehouse makes for what it serves are exactly list and watch of the
    // SPEC §4 kinds: what its RBAC role must allow, and nothing more.
    let mut expected = std::collections::BTreeSet::new();
    for resource in [
        "endpointslices",
        "services",
        "ingresses",
        "ingressclasses",
        "secrets",
    ] {
        expected.insert(("list", resource.to_owned()));
        expected.insert(("watch", resource.to_owned()));
    }
    // Besides the leader election's Lease (the RBAC test holds that one to account).
    let seen: std::collections::BTreeSet<_> = east
        .verbs_seen()
        .into_iter()
        .filter(|(_, r)| r != "leases")
        .collect();
    assert_eq!(seen, expected);
    let metrics = admin_get(&c, cluster.running.admin, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("gatehouse_kubernetes_events_total{kind=\"Ingress\"}"),
        "{text}"
    );
    assert_eq!(cluster.running.terminate().await, Some(0));
}

/// An HTTP request written by hand over a raw TCP connection: what came back.
async fn raw_http(port: u16) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /raw HTTP/1.1\r\nHost: l4\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("timed out"))??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_services_configmap_ports_follow_the_configmap() {
    use tokio::io::AsyncBufReadExt;
    let api = KubeApi::start().await;
    classes(&api);
    let web = TestUpstream::start("web").await;
    service(&api, "shop", "web", &web);
    let (p1, p2) = (free_port().await, free_port().await);
    let tcp_map = |port: u16| json!({ "metadata": { "namespace": "edge", "name": "tcp-services" }, "data": { port.to_string(): "shop/web:http" } });
    api.apply(CONFIG_MAPS, tcp_map(p1));
    let (mut running, _dir) = run_on_with(
        "tcp-services",
        &[&api],
        "",
        "access_log: stdout\n",
        &[
            "--tcp-services-configmap",
            "edge/tcp-services",
            "--udp-services-configmap",
            "edge/udp-services",
        ],
        std::process::Stdio::piped(),
    )
    .await;
    wait_ready(&running).await;
    let mut stdout = tokio::io::BufReader::new(running.child.stdout.take().unwrap()).lines();

    // Any TCP protocol passes; HTTP written by hand shows which pod answered.
    let answer = raw_http(p1).await.expect("the ConfigMap's port is open");
    assert!(answer.contains("\"upstream\":\"web\""), "{answer}");
    let line = tokio::time::timeout(WAIT, stdout.next_line())
        .await
        .expect("an access log line")
        .unwrap()
        .unwrap();
    let logged: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(logged["listener"], format!("tcp/127.0.0.1:{p1}"));
    assert_eq!(logged["end"], "closed");
    assert_eq!(logged["upstream"], web.addr.to_string());
    assert!(logged["bytes_in"].as_u64().unwrap() > 0 && logged["bytes_out"].as_u64().unwrap() > 0);

    // The port moves: the old one closes, the new one opens, without a restart.
    api.apply(CONFIG_MAPS, tcp_map(p2));
    eventually_async("the new port serves", WAIT, || async {
        raw_http(p2)
            .await
            .is_ok_and(|a| a.contains("\"upstream\":\"web\""))
    })
    .await;
    eventually_async("the old port is closed", WAIT, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", p1))
            .await
            .is_err()
    })
    .await;
    // A port something else holds on the node: that entry stays closed, and nothing else
    // is held back (the other port, a new Ingress).
    let holder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = holder.local_addr().unwrap().port();
    api.apply(
        CONFIG_MAPS,
        json!({ "metadata": { "namespace": "edge", "name": "tcp-services" },
                "data": { p2.to_string(): "shop/web:http", taken.to_string(): "shop/web:http" } }),
    );
    api.apply(
        INGRESSES,
        plain(
            "shop",
            "late",
            "late.example.com",
            json!([path("/", "Prefix", "web")]),
        ),
    );
    let cluster = Cluster {
        api: api.clone(),
        running,
        _dir,
    };
    until(
        &cluster,
        "the Ingress after the bad port",
        "late.example.com",
        "/",
        (200, "web"),
    )
    .await;
    assert!(raw_http(p2)
        .await
        .is_ok_and(|a| a.contains("\"upstream\":\"web\"")));
    drop(holder);
    assert!(api
        .verbs_seen()
        .contains(&("watch", "configmaps".to_owned())));
    assert_eq!(cluster.running.terminate().await, Some(0));
}

/// An Ingress of ours for `host` → web, with `annotations`.
fn annotated(name: &str, host: &str, annotations: Value, path_kind: (&str, &str)) -> Value {
    ingress(
        "shop",
        name,
        "2026-01-01T00:00:00Z",
        "gatehouse",
        annotations,
        host,
        json!([path(path_kind.0, path_kind.1, "web")]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_not_built_yet_fail_closed_and_the_built_ones_work_end_to_end() {
    let cluster = start("ingress-fates", false).await;
    let api = &cluster.api;
    let web = TestUpstream::start("web").await;
    service(api, "shop", "web", &web);

    // Each changes who may reach what or where a request goes: served without it, the
    // Ingress would silently lose a policy, so it answers 503 instead.
    let refused: &[(&str, &str)] = &[
        ("backend-protocol", "FCGI"),
        ("auth-type", "basic"),
        ("auth-type", "digest"),
        // A client-certificate Secret that does not exist fails the host closed.
        ("auth-tls-secret", "shop/client-ca"),
        (
            "configuration-snippet",
            "more_set_headers \"X-A: b\";\nlua_code_cache off;",
        ),
        ("server-snippet", "location /admin { return 200; }"),
        ("canary", "maybe"),
        ("affinity", "ip"),
        ("affinity-canary-behavior", "sticky"),
        ("upstream-hash-by-subset", "true"),
        ("proxy-next-upstream", "error sometimes"),
        ("limit-rate", "100"),
        ("limit-rate-after", "10m"),
        ("global-rate-limit", "10"),
        ("upstream-hash-by", "$upstream_addr"),
        ("denylist-source-range", "10.0.0.0/33"),
    ];
    for (i, (name, value)) in refused.iter().enumerate() {
        // Alternate the prefixes: both are read.
        let prefix = if i % 2 == 0 {
            "nginx.ingress.kubernetes.io"
        } else {
            "gatehouse.io"
        };
        api.apply(
            INGRESSES,
            annotated(
                &format!("refused-{i}"),
                &format!("r{i}.example.com"),
                json!({ format!("{prefix}/{name}"): value }),
                ("/", "Prefix"),
            ),
        );
    }
    // Cosmetic (buffer sizes): served, the annotation logged as ignored.
    api.apply(
        INGRESSES,
        annotated(
            "cosmetic",
            "cosmetic.example.com",
            json!({ "nginx.ingress.kubernetes.io/proxy-buffer-size": "16k" }),
            ("/", "Prefix"),
        ),
    );
    // use-regex alone: a case-insensitive regex anchored at the start, nothing rewritten.
    api.apply(
        INGRESSES,
        annotated(
            "regex",
            "regex.example.com",
            json!({ "nginx.ingress.kubernetes.io/use-regex": "true" }),
            ("/v[0-9]+/items", "ImplementationSpecific"),
        ),
    );
    // gatehouse.io/response-headers: `;` or newline separated.
    api.apply(
        INGRESSES,
        annotated(
            "headers",
            "headers.example.com",
            json!({ "gatehouse.io/response-headers": "X-Frame-Options: DENY\nX-XSS-Protection: 1; mode=block\nX-Env: prod" }),
            ("/", "Prefix"),
        ),
    );
    // force-ssl-redirect without a certificate here (TLS ends at a load balancer).
    api.apply(
        INGRESSES,
        annotated(
            "forced",
            "forced.example.com",
            json!({ "nginx.ingress.kubernetes.io/force-ssl-redirect": "true" }),
            ("/", "Prefix"),
        ),
    );
    until(
        &cluster,
        "the last Ingress is served",
        "forced.example.com",
        "/",
        (308, ""),
    )
    .await;

    for (i, (name, value)) in refused.iter().enumerate() {
        let host = format!("r{i}.example.com");
        assert_eq!(
            fetch(&cluster, &host, "/").await,
            (503, String::new()),
            "{name}: {value} must fail closed"
        );
    }
    assert_eq!(
        web.requests.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no refused Ingress reached the pod"
    );
    // A built limit: one request a second with a burst of one, per client.
    api.apply(
        INGRESSES,
        annotated(
            "limited",
            "limited.example.com",
            json!({
                "nginx.ingress.kubernetes.io/limit-rps": "1",
                "nginx.ingress.kubernetes.io/limit-burst-multiplier": "1",
            }),
            ("/", "Prefix"),
        ),
    );
    until(
        &cluster,
        "the limited Ingress is served",
        "limited.example.com",
        "/",
        (200, "web"),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(fetch(&cluster, "limited.example.com", "/").await.0);
    }
    assert!(statuses.contains(&429), "limit-rps applies: {statuses:?}");

    assert_eq!(
        fetch(&cluster, "cosmetic.example.com", "/").await,
        (200, "web".to_owned())
    );
    eventually("the ignored annotation is logged", WAIT, || {
        cluster
            .running
            .logged("proxy-buffer-size is not supported and is ignored")
            >= 1
    })
    .await;

    let got = get_from(&cluster, "127.0.0.1", "regex.example.com", "/V2/items?x=1").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["uri"], "/V2/items?x=1", "matched, not rewritten");
    assert_eq!(
        fetch(&cluster, "regex.example.com", "/api/v2/items")
            .await
            .0,
        404,
        "anchored"
    );
    assert_eq!(
        fetch(&cluster, "regex.example.com", "/vx/items").await.0,
        404
    );

    let got = get_from(&cluster, "127.0.0.1", "headers.example.com", "/").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["x-frame-options"], "DENY");
    assert_eq!(got.headers["x-xss-protection"], "1; mode=block");
    assert_eq!(got.headers["x-env"], "prod");

    let got = get_from(&cluster, "127.0.0.1", "forced.example.com", "/p?q=1").await;
    assert_eq!(got.status, 308);
    assert_eq!(got.headers["location"], "https://forced.example.com/p?q=1");
    assert_eq!(cluster.running.terminate().await, Some(0));
}

/// A GET written by hand from `from`, so the target goes out exactly as given.
async fn raw_get(
    addr: std::net::SocketAddr,
    from: &str,
    host: &str,
    target: &str,
) -> (u16, String) {
    raw_request(
        addr,
        from,
        &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Request targets that name `/admin` to an upstream that normalises paths.
const PATH_TRICKS: [&str; 11] = [
    "/admin",
    "//admin",
    "/./admin",
    "/x/../admin",
    "/%61dmin",
    "/%61%64%6d%69%6e/",
    "/admin/./",
    "//admin//settings",
    "/x/%2e%2e/admin",
    "/../admin",
    "/%2e%2e/admin",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_meet_the_policy_of_the_path_the_upstream_serves() {
    let cluster = start("path-tricks", false).await;
    let api = &cluster.api;
    let web = TestUpstream::start("web").await;
    service(api, "shop", "web", &web);
    // One Service, one host: `/admin` for one address only, `/` for everyone.
    api.apply(
        INGRESSES,
        annotated(
            "admin",
            "app.example.com",
            json!({ "nginx.ingress.kubernetes.io/whitelist-source-range": "127.0.0.2/32" }),
            ("/admin", "Prefix"),
        ),
    );
    api.apply(
        INGRESSES,
        annotated("open", "app.example.com", json!({}), ("/", "Prefix")),
    );
    until(
        &cluster,
        "the open Ingress serves",
        "app.example.com",
        "/",
        (200, "web"),
    )
    .await;
    until(
        &cluster,
        "the admin Ingress is guarded",
        "app.example.com",
        "/admin",
        (403, ""),
    )
    .await;
    let http = cluster.running.http;

    // None may get the open route's policy.
    for target in PATH_TRICKS {
        let (status, _) = raw_get(http, "127.0.0.1", "app.example.com", target).await;
        assert!(
            status == 403 || status == 400,
            "{target} from an unlisted client: {status}, must be 403 or 400"
        );
    }
    // The listed client gets the admin area, and the upstream gets the path that matched.
    for (target, served) in [
        ("//admin", "/admin"),
        ("/x/../admin/settings?tab=1", "/admin/settings?tab=1"),
        ("/%61dmin", "/admin"),
    ] {
        let (status, body) = raw_get(http, "127.0.0.2", "app.example.com", target).await;
        assert_eq!(status, 200, "{target}");
        let echoed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(echoed["uri"], served, "{target}");
    }
    // Encoded slashes stay encoded and do not split the path.
    let (status, body) = raw_get(http, "127.0.0.1", "app.example.com", "/files/a%2fb").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["uri"],
        "/files/a%2Fb"
    );
    assert_eq!(cluster.running.terminate().await, Some(0));
}

/// The docs' table of annotation fates says what the code's table says, row for row.
#[test]
fn the_docs_list_every_annotation_with_its_fate() {
    use gatehouse_discovery::kubernetes::ingress::{Fate, FATES};
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/kubernetes.md"))
        .unwrap();
    let section = docs
        .split("## Every ingress-nginx annotation")
        .nth(1)
        .expect("docs/kubernetes.md has the annotation table");
    let documented: Vec<(String, String)> = section
        .lines()
        .skip_while(|l| !l.starts_with("| `"))
        .take_while(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (cells[0].trim_matches('`').to_owned(), cells[1].to_owned())
        })
        .collect();
    let coded: Vec<(String, String)> = FATES
        .iter()
        .map(|(name, fate)| {
            let said = match fate {
                Fate::Built => "built".to_owned(),
                Fate::Ignored(what) => format!("ignored: {what}"),
                Fate::Refused(why) => format!("refused (503): {why}"),
            };
            (name.to_string(), said)
        })
        .collect();
    assert_eq!(documented, coded);
}

/// The loop the binary runs, driven in-process through the library: it serves what the
/// cluster holds, follows a change, and returns when told to stop, after which changes no
/// longer reach the data plane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_loop_runs_in_process_and_stops_when_told() {
    use gatehouse::kubernetes::KubeOptions;
    use gatehouse_proxy::{Gatehouse, Metrics};
    use std::sync::Arc;
    use tokio_util::sync::CancellationToken;

    let api = KubeApi::start().await;
    let pod = TestUpstream::start("pod").await;
    class(&api, "gatehouse", "gatehouse.io/ingress");
    service(&api, "shop", "web", &pod);
    let web = || json!([path("/", "Prefix", "web")]);
    api.apply(INGRESSES, plain("shop", "a", "a.test", web()));
    let config = gatehouse_config::parse(
        "listen: { http: \"127.0.0.1:0\" }\naccess_log: off\n",
        "in-process.yaml",
    )
    .unwrap();
    let gatehouse = Arc::new(Gatehouse::start(config, Metrics::new()).await.unwrap());
    let http = gatehouse.http_addr().await.unwrap();
    let sources = gatehouse::Sources {
        file: None,
        admin_listen: None,
        kubernetes: Some(KubeOptions {
            kubeconfigs: vec![api.kubeconfig(&temp_dir("in-process"))],
            namespaces: vec!["shop".to_owned()],
            ingress_class: None,
            tcp_services: None,
            udp_services: None,
            ssl_passthrough: false,
            status: None,
            controller_config: None,
            election: gatehouse_discovery::kubernetes::lease::Election {
                namespace: "gatehouse".to_owned(),
                name: "in-process".to_owned(),
                identity: "in-process".to_owned(),
                duration: std::time::Duration::from_secs(15),
            },
        }),
    };
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (gatehouse, stop) = (gatehouse.clone(), stop.clone());
        async move { gatehouse::reconcile(&gatehouse, sources, stop).await }
    });
    let answers = |host: &'static str| async move { get_at(http, host, "/").await.status };
    eventually_async("a.test is served", WAIT, || async {
        answers("a.test").await == 200
    })
    .await;
    api.apply(INGRESSES, plain("shop", "b", "b.test", web()));
    eventually_async("b.test is served", WAIT, || async {
        answers("b.test").await == 200
    })
    .await;

    stop.cancel();
    let ended = tokio::time::timeout(WAIT, running)
        .await
        .expect("the loop returns once stopped");
    assert!(matches!(ended, Ok(Ok(()))), "a clean stop: {ended:?}");
    // Stopped means the watches are gone: a new Ingress is not served.
    let watches = api.count("watch", "ingresses");
    api.apply(INGRESSES, plain("shop", "c", "c.test", web()));
    api.drop_watches();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        answers("c.test").await,
        404,
        "served after the loop stopped"
    );
    assert_eq!(
        api.count("watch", "ingresses"),
        watches,
        "watched again after stop"
    );
}

/// openEuler's CLA service as published: one Ingress with limits and a snippet of security
/// headers on `/`, another on the same host with a regex path and a rewrite for the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openeuler_cla_pair_is_served_with_its_limits_headers_and_rewrite() {
    let cluster = start("ingress-cla", false).await;
    let api = &cluster.api;
    let web = TestUpstream::start("web").await;
    let backend = TestUpstream::start("backend").await;
    service(api, "cla", "web", &web);
    service(api, "cla", "backend", &backend);
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    api.apply(
        INGRESSES,
        ingress(
            "cla",
            "cla-web",
            "2026-01-01T00:00:00Z",
            "gatehouse",
            json!({
                n("limit-connections"): "400",
                n("limit-rps"): "400",
                n("configuration-snippet"): "add_header X-XSS-Protection \"1; mode=block\";\nadd_header Strict-Transport-Security \"max-age=31536000\" always;\nadd_header X-Frame-Options DENY;\nadd_header Content-Security-Policy \"default-src 'self'\";\n",
            }),
            "cla.test",
            json!([path("/", "Prefix", "web")]),
        ),
    );
    api.apply(
        INGRESSES,
        ingress(
            "cla",
            "cla-api",
            "2026-01-01T00:00:00Z",
            "gatehouse",
            json!({
                n("use-regex"): "true",
                n("rewrite-target"): "/$2",
                n("configuration-snippet"): "proxy_set_header X-Client-Addr $remote_addr;\nproxy_set_header X-Tenant \"cla-$http_x_team\";",
                n("server-snippet"): "more_set_headers \"X-Served-By: edge\";\nadd_header X-Server-Wide yes;",
            }),
            "cla.test",
            json!([path("/api(/|$)(.*)", "ImplementationSpecific", "backend")]),
        ),
    );
    until(
        &cluster,
        "the web Ingress is served",
        "cla.test",
        "/",
        (200, "web"),
    )
    .await;
    until(
        &cluster,
        "the API Ingress is served",
        "cla.test",
        "/api/v1/x",
        (200, "backend"),
    )
    .await;

    let page = get_from(&cluster, "127.0.0.2", "cla.test", "/index.html").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["x-xss-protection"], "1; mode=block");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(
        page.headers["content-security-policy"],
        "default-src 'self'"
    );
    assert_eq!(
        page.headers["strict-transport-security"],
        "max-age=31536000"
    );
    let api_call = get_from(&cluster, "127.0.0.2", "cla.test", "/api/v1/x?y=1").await;
    assert_eq!(api_call.status, 200);
    let echoed: Value = serde_json::from_slice(&api_call.body).unwrap();
    assert_eq!(
        echoed["uri"], "/v1/x?y=1",
        "the API reaches its backend rewritten"
    );
    // proxy_set_header: the API's backend gets the client and a value built from a header.
    assert_eq!(echoed["headers"]["x-client-addr"], "127.0.0.2", "{echoed}");
    assert_eq!(echoed["headers"]["x-tenant"], "cla-", "{echoed}");
    // The server-snippet reaches every path of the host: more_set_headers everywhere, its
    // add_header only where the path has no add_header of its own (nginx's inheritance).
    assert_eq!(page.headers["x-served-by"], "edge");
    assert_eq!(api_call.headers["x-served-by"], "edge");
    assert_eq!(api_call.headers["x-server-wide"], "yes");
    assert!(page.headers.get("x-server-wide").is_none());
    assert!(
        api_call.headers.get("x-frame-options").is_none(),
        "the other Ingress's snippet stays on its own paths"
    );
    // A forbidden directive refuses its Ingress alone.
    api.apply(
        INGRESSES,
        ingress(
            "cla",
            "cla-web",
            "2026-01-01T00:00:00Z",
            "gatehouse",
            json!({ n("configuration-snippet"): "add_header X-A b;\nrewrite ^/old /new permanent;\n" }),
            "cla.test",
            json!([path("/", "Prefix", "web")]),
        ),
    );
    until(
        &cluster,
        "the snippet with `rewrite` fails closed",
        "cla.test",
        "/",
        (503, ""),
    )
    .await;
    assert_eq!(
        fetch(&cluster, "cla.test", "/api/v1/x").await,
        (200, "backend".to_owned())
    );
    eventually("the refusal names the directive", WAIT, || {
        cluster
            .running
            .logged("directive `rewrite` is not supported")
            >= 1
    })
    .await;
    assert_eq!(cluster.running.terminate().await, Some(0));
}

/// A canary Ingress joins the main Ingress of its host and path: by header, by cookie and by
/// weight; without its main Ingress it has no effect, as in ingress-nginx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_ingress_joins_its_main_ingress_and_has_no_effect_alone() {
    let cluster = start("ingress-canary", false).await;
    let api = &cluster.api;
    let (v1, v2) = (
        TestUpstream::start("v1").await,
        TestUpstream::start("v2").await,
    );
    service(api, "shop", "v1", &v1);
    service(api, "shop", "v2", &v2);
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    let main = plain(
        "shop",
        "main",
        "app.example.com",
        json!([path("/", "Prefix", "v1")]),
    );
    api.apply(INGRESSES, main.clone());
    api.apply(
        INGRESSES,
        ingress(
            "shop",
            "canary",
            "2026-01-02T00:00:00Z",
            "gatehouse",
            json!({
                n("canary"): "true",
                n("canary-by-header"): "X-Canary",
                n("canary-by-cookie"): "canary",
                n("canary-weight"): "0",
            }),
            "app.example.com",
            json!([path("/", "Prefix", "v2")]),
        ),
    );
    let with = |header: &'static str, value: &'static str| {
        let http = cluster.running.http;
        async move {
            let got = send(
                &client(),
                get_req_at(http, "app.example.com", "/", &[(header, value)]),
            )
            .await;
            let upstream = serde_json::from_slice::<Value>(&got.body)
                .ok()
                .and_then(|v| v["upstream"].as_str().map(str::to_owned))
                .unwrap_or_default();
            (got.status.as_u16(), upstream)
        }
    };
    eventually_async("the canary joins", WAIT, || async {
        with("x-canary", "always").await == (200, "v2".to_owned())
    })
    .await;
    assert_eq!(with("x-canary", "never").await, (200, "v1".to_owned()));
    assert_eq!(
        with("cookie", "canary=always").await,
        (200, "v2".to_owned())
    );
    assert_eq!(
        with("x-other", "1").await,
        (200, "v1".to_owned()),
        "weight 0"
    );
    // The main Ingress goes: the canary alone serves nothing.
    api.delete(INGRESSES, "shop", "main");
    eventually_async("the host goes with its main Ingress", WAIT, || async {
        with("x-canary", "always").await.0 == 404
    })
    .await;
    eventually("the lone canary is reported", WAIT, || {
        cluster
            .running
            .logged("has no main Ingress serving that host and path")
            >= 1
    })
    .await;
    api.apply(INGRESSES, main);
    eventually_async("the canary joins again", WAIT, || async {
        with("x-canary", "always").await == (200, "v2".to_owned())
    })
    .await;
    assert_eq!(cluster.running.terminate().await, Some(0));
}

/// A Service whose ready pods listen at these addresses, all on one port.
pub(crate) fn service_of_pods(api: &KubeApi, ns: &str, name: &str, pods: &[std::net::SocketAddr]) {
    api.apply(
        SERVICES,
        json!({
            "metadata": { "namespace": ns, "name": name },
            "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] },
        }),
    );
    let addresses: Vec<Value> = pods
        .iter()
        .map(|p| json!({ "addresses": [p.ip().to_string()], "conditions": { "ready": true } }))
        .collect();
    api.apply(
        ENDPOINT_SLICES,
        json!({
            "metadata": { "namespace": ns, "name": format!("{name}-1"), "labels": { SERVICE_NAME_LABEL: name } },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": pods[0].port() }],
            "endpoints": addresses,
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_affinity_ingress_keeps_sessions_on_their_pod_and_moves_them_when_it_goes() {
    let cluster = start("ingress-affinity", false).await;
    let api = &cluster.api;
    let first = TestUpstream::start_at("127.0.0.2", "127.0.0.2:0").await;
    let port = first.addr.port();
    let mut pods = vec![first];
    for ip in ["127.0.0.3", "127.0.0.4"] {
        pods.push(TestUpstream::start_at(ip, &format!("{ip}:{port}")).await);
    }
    service_of_pods(
        api,
        "shop",
        "web",
        &pods.iter().map(|p| p.addr).collect::<Vec<_>>(),
    );
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    api.apply(
        INGRESSES,
        ingress(
            "shop",
            "sticky",
            "2026-01-01T00:00:00Z",
            "gatehouse",
            json!({
                n("affinity"): "cookie",
                n("session-cookie-name"): "route",
                n("session-cookie-max-age"): "172800",
            }),
            "sticky.example.com",
            json!([path("/", "Prefix", "web")]),
        ),
    );
    let http = cluster.running.http;
    let visit = |cookie: Option<String>| async move {
        let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("cookie", c.as_str())).collect();
        let got = send(
            &client(),
            get_req_at(http, "sticky.example.com", "/", &headers),
        )
        .await;
        let set = got
            .headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        let pod = serde_json::from_slice::<Value>(&got.body)
            .ok()
            .and_then(|v| v["upstream"].as_str().map(str::to_owned))
            .unwrap_or_default();
        (got.status.as_u16(), pod, set)
    };
    eventually_async("the Ingress serves", WAIT, || async {
        visit(None).await.0 == 200
    })
    .await;
    let (_, home, set) = visit(None).await;
    let set = set.expect("a new session gets the cookie");
    assert!(
        set.starts_with("route=") && set.contains("; Max-Age=172800"),
        "{set}"
    );
    assert!(!set.contains("127.0.0"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    for _ in 0..10 {
        assert_eq!(visit(Some(cookie.clone())).await, (200, home.clone(), None));
    }
    // Its pod leaves the EndpointSlice: the session moves to one other pod and stays.
    let rest: Vec<_> = pods
        .iter()
        .filter(|p| p.name != home)
        .map(|p| p.addr)
        .collect();
    service_of_pods(api, "shop", "web", &rest);
    eventually_async("the session moves", WAIT, || async {
        let (status, pod, _) = visit(Some(cookie.clone())).await;
        status == 200 && pod != home
    })
    .await;
    let (_, new_home, _) = visit(Some(cookie.clone())).await;
    for _ in 0..5 {
        assert_eq!(visit(Some(cookie.clone())).await.1, new_home);
    }
    assert_eq!(cluster.running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ingress_timeouts_and_retries_decide_what_a_hung_pod_costs() {
    let cluster = start("ingress-retries", false).await;
    let api = &cluster.api;
    // One pod never answers (it reads the request and holds the connection); one answers.
    let hung = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = hung.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hung.accept().await {
            held.push(stream);
        }
    });
    let good = TestUpstream::start_at("good", &format!("127.0.0.3:{port}")).await;
    let hung_pod = format!("127.0.0.2:{port}").parse().unwrap();
    service_of_pods(api, "shop", "web", &[hung_pod, good.addr]);
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    for (name, host, annotations) in [
        (
            "retried",
            "retried.example.com",
            json!({ n("proxy-read-timeout"): "1" }),
        ),
        (
            "unretried",
            "unretried.example.com",
            json!({ n("proxy-read-timeout"): "1", n("proxy-next-upstream"): "off" }),
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
                json!([path("/", "Prefix", "web")]),
            ),
        );
    }
    for host in ["retried.example.com", "unretried.example.com"] {
        eventually_async("the Ingress serves", WAIT, || async {
            fetch(&cluster, host, "/").await.0 != 404
        })
        .await;
    }
    // Default retries (error timeout): a GET the hung pod holds for the Ingress's one
    // second goes on to the good pod.
    for _ in 0..4 {
        let started = std::time::Instant::now();
        assert_eq!(
            fetch(&cluster, "retried.example.com", "/").await,
            (200, "good".to_owned())
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
    // `proxy-next-upstream: off`: the hung pod's requests end in 504 after one second.
    let mut timed_out = 0;
    for _ in 0..4 {
        let started = std::time::Instant::now();
        let (status, _) = fetch(&cluster, "unretried.example.com", "/").await;
        if status == 504 {
            timed_out += 1;
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(900) && took < Duration::from_secs(3),
                "{took:?}"
            );
        } else {
            assert_eq!(status, 200);
        }
    }
    assert!(timed_out >= 1, "the hung pod got some of four requests");
    assert_eq!(cluster.running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_aliases_and_deny_lists_from_annotations() {
    let cluster = start("ingress-redirects", false).await;
    let api = &cluster.api;
    let web = TestUpstream::start("web").await;
    service(api, "shop", "web", &web);
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    let apply = |name: &str, host: &str, annotations: Value| {
        api.apply(
            INGRESSES,
            ingress(
                "shop",
                name,
                "2026-01-01T00:00:00Z",
                "gatehouse",
                annotations,
                host,
                json!([path("/", "Prefix", "web")]),
            ),
        );
    };
    apply(
        "moved",
        "moved.example.com",
        json!({ n("permanent-redirect"): "https://new.example.com$request_uri" }),
    );
    apply(
        "temp",
        "temp.example.com",
        json!({ n("temporal-redirect"): "https://elsewhere.example.com/", n("temporal-redirect-code"): "307", n("permanent-redirect"): "https://ignored.example.com/" }),
    );
    apply(
        "root",
        "root.example.com",
        json!({ n("app-root"): "/app1" }),
    );
    apply(
        "www",
        "shop.example.com",
        json!({ n("from-to-www-redirect"): "true" }),
    );
    apply(
        "alias",
        "main.example.com",
        json!({ n("server-alias"): "other.example.com, *.wild.example.com" }),
    );
    apply(
        "deny",
        "deny.example.com",
        json!({ n("denylist-source-range"): "127.0.0.3/32" }),
    );
    apply(
        "slash",
        "slash.example.com",
        json!({ n("force-ssl-redirect"): "true" }),
    );
    apply(
        "keep-slash",
        "keep-slash.example.com",
        json!({ n("force-ssl-redirect"): "true", n("preserve-trailing-slash"): "true" }),
    );
    apply(
        "vhost",
        "vhost.example.com",
        json!({ n("upstream-vhost"): "internal.$host", n("x-forwarded-prefix"): "/shop" }),
    );
    eventually_async("the Ingresses are served", WAIT, || async {
        fetch(&cluster, "deny.example.com", "/").await.0 == 200
    })
    .await;
    let location = |got: &Got| {
        got.headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    let got = get_from(&cluster, "127.0.0.2", "moved.example.com", "/a/b?c=1").await;
    assert_eq!(
        (got.status.as_u16(), location(&got).as_deref()),
        (301, Some("https://new.example.com/a/b?c=1"))
    );
    let got = get_from(&cluster, "127.0.0.2", "temp.example.com", "/x").await;
    assert_eq!(
        (got.status.as_u16(), location(&got).as_deref()),
        (307, Some("https://elsewhere.example.com/"))
    );
    let got = get_from(&cluster, "127.0.0.2", "root.example.com", "/").await;
    assert_eq!(got.status, 302);
    assert!(
        location(&got)
            .is_some_and(|l| l.starts_with("http://root.example.com") && l.ends_with("/app1")),
        "{:?}",
        location(&got)
    );
    assert_eq!(
        fetch(&cluster, "root.example.com", "/app1").await,
        (200, "web".to_owned())
    );
    // from-to-www: the www name answers 308 to the host, path and query kept.
    let got = get_from(&cluster, "127.0.0.2", "www.shop.example.com", "/p?q=1").await;
    assert_eq!(
        (got.status.as_u16(), location(&got).as_deref()),
        (308, Some("http://shop.example.com/p?q=1"))
    );
    assert_eq!(
        fetch(&cluster, "shop.example.com", "/p").await,
        (200, "web".to_owned())
    );
    // server-alias: the other names serve the same paths.
    assert_eq!(
        fetch(&cluster, "other.example.com", "/").await,
        (200, "web".to_owned())
    );
    assert_eq!(
        fetch(&cluster, "a.wild.example.com", "/").await,
        (200, "web".to_owned())
    );
    // The HTTPS redirect drops a trailing slash unless preserve-trailing-slash says not to.
    let got = get_from(&cluster, "127.0.0.2", "slash.example.com", "/docs/").await;
    assert_eq!(
        (got.status.as_u16(), location(&got).as_deref()),
        (308, Some("https://slash.example.com/docs"))
    );
    let got = get_from(&cluster, "127.0.0.2", "keep-slash.example.com", "/docs/").await;
    assert_eq!(
        (got.status.as_u16(), location(&got).as_deref()),
        (308, Some("https://keep-slash.example.com/docs/"))
    );
    // upstream-vhost and x-forwarded-prefix: the upstream's Host and prefix header.
    eventually_async("the vhost Ingress is served", WAIT, || async {
        fetch(&cluster, "vhost.example.com", "/").await.0 == 200
    })
    .await;
    let got = get_from(&cluster, "127.0.0.2", "vhost.example.com", "/p").await;
    let echoed: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(
        echoed["headers"]["host"], "internal.vhost.example.com",
        "{echoed}"
    );
    assert_eq!(echoed["headers"]["x-forwarded-prefix"], "/shop", "{echoed}");
    // denylist-source-range: 127.0.0.3 is refused, others served.
    assert_eq!(
        fetch_from(&cluster, "127.0.0.3", "deny.example.com", "/")
            .await
            .0,
        403
    );
    assert_eq!(
        fetch_from(&cluster, "127.0.0.2", "deny.example.com", "/").await,
        (200, "web".to_owned())
    );
    assert_eq!(cluster.running.terminate().await, Some(0));
}

/// An Opaque Secret with these keys (values as written).
pub(crate) fn opaque_secret(ns: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), b64(v).into()))
        .collect();
    json!({ "metadata": { "namespace": ns, "name": name }, "type": "Opaque", "data": data })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_ingresses_follow_their_secret_and_fail_closed_without_it() {
    let cluster = start("ingress-basic-auth", false).await;
    let api = &cluster.api;
    let web = TestUpstream::start("web").await;
    service(api, "shop", "web", &web);
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    // `openssl passwd -apr1 -salt abcdefgh secret1` and `-5 -salt saltsalt secret3`.
    let ann = "$apr1$abcdefgh$paCto.rW8wn6thJ8b0QQY.";
    let cid = "$5$saltsalt$ZfIYlhmI00KtX.OgJ3KQOS7qiwyKs.IsgQL6lLgsnnD";
    api.apply(
        SECRETS,
        opaque_secret("shop", "users", &[("auth", &format!("ann:{ann}\n"))]),
    );
    api.apply(SECRETS, opaque_secret("shop", "user-map", &[("cid", cid)]));
    for (name, host, annotations) in [
        (
            "file",
            "file.example.com",
            json!({ n("auth-type"): "basic", n("auth-secret"): "users", n("auth-realm"): "Shop staff" }),
        ),
        (
            "map",
            "map.example.com",
            json!({ n("auth-type"): "basic", n("auth-secret"): "shop/user-map", n("auth-secret-type"): "auth-map" }),
        ),
        (
            "elsewhere",
            "elsewhere.example.com",
            json!({ n("auth-type"): "basic", n("auth-secret"): "other/users" }),
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
                json!([path("/", "Prefix", "web")]),
            ),
        );
    }
    let http = cluster.running.http;
    let status = |host: &'static str, who: Option<(&'static str, &'static str)>| async move {
        let value = who.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let headers: Vec<(&str, &str)> = value
            .iter()
            .map(|v| ("authorization", v.as_str()))
            .collect();
        let got = send(&client(), get_req_at(http, host, "/", &headers)).await;
        (
            got.status.as_u16(),
            got.headers
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned()),
        )
    };
    eventually_async("the Ingress asks for credentials", WAIT, || async {
        status("file.example.com", None).await.0 == 401
    })
    .await;
    assert_eq!(
        status("file.example.com", None).await.1.as_deref(),
        Some("Basic realm=\"Shop staff\"")
    );
    assert_eq!(
        status("file.example.com", Some(("ann", "secret1"))).await.0,
        200
    );
    assert_eq!(
        status("file.example.com", Some(("ann", "secret2"))).await.0,
        401
    );
    assert_eq!(
        status("map.example.com", Some(("cid", "secret3"))).await.0,
        200
    );
    assert_eq!(
        status("map.example.com", Some(("ann", "secret1"))).await.0,
        401
    );
    // A Secret of another namespace is refused: 503, never the application.
    assert_eq!(
        status("elsewhere.example.com", Some(("ann", "secret1")))
            .await
            .0,
        503
    );

    // Rotated live: the next request sees the new users.
    let bob = "$6$saltsalt$P2FbZ8c7x7uytMcLIQcIRMWgUZ/Uy48LCuKu.tpI/rYWSp/cKtq.zrD46YIij/l62Sx7404pS7pgqM2usW5AU.";
    api.apply(
        SECRETS,
        opaque_secret("shop", "users", &[("auth", &format!("bob:{bob}\n"))]),
    );
    eventually_async("the rotated Secret applies", WAIT, || async {
        status("file.example.com", Some(("bob", "secret2"))).await.0 == 200
    })
    .await;
    assert_eq!(
        status("file.example.com", Some(("ann", "secret1"))).await.0,
        401
    );
    // The Secret goes: the Ingress fails closed, with a log line naming it.
    api.delete(SECRETS, "shop", "users");
    eventually_async("no Secret, no service", WAIT, || async {
        status("file.example.com", Some(("bob", "secret2"))).await.0 == 503
    })
    .await;
    eventually("the log names the Secret", WAIT, || {
        cluster
            .running
            .logged("auth-secret shop/users: the Secret does not exist")
            >= 1
    })
    .await;
    assert_eq!(
        status("map.example.com", Some(("cid", "secret3"))).await.0,
        200,
        "other Ingresses unaffected"
    );
    assert_eq!(cluster.running.logged("secret3"), 0);
    assert_eq!(cluster.running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_ingresses_answer_preflights_and_mark_answers_for_allowed_origins() {
    let cluster = start("ingress-cors", false).await;
    let api = &cluster.api;
    let web = TestUpstream::start("web").await;
    service(api, "shop", "web", &web);
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    api.apply(
        INGRESSES,
        ingress(
            "shop",
            "api",
            "2026-01-01T00:00:00Z",
            "gatehouse",
            json!({
                n("enable-cors"): "true",
                n("cors-allow-origin"): "https://app.example.com, https://*.example.org",
                n("cors-allow-methods"): "GET, POST",
                n("cors-expose-headers"): "X-Total",
                n("cors-max-age"): "600",
                n("limit-rps"): "1",
                n("limit-burst-multiplier"): "1",
            }),
            "api.example.com",
            json!([path("/", "Prefix", "web")]),
        ),
    );
    let http = cluster.running.http;
    let ask = |method: &'static str, origin: &'static str, from: &'static str| async move {
        let mut req = get_req("api.example.com", "/items", &[("origin", origin)]);
        *req.method_mut() = method.parse().unwrap();
        request_from(from, http, b"", req).await.expect("an answer")
    };
    eventually_async("the Ingress serves", WAIT, || async {
        ask("GET", "https://app.example.com", "127.0.0.2")
            .await
            .status
            == 200
    })
    .await;
    let before = web.requests.load(std::sync::atomic::Ordering::Relaxed);
    // A preflight from a listed origin is answered here, 204, never reaching the upstream.
    let pre = ask("OPTIONS", "https://eu.example.org", "127.0.0.3").await;
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.headers["access-control-allow-origin"],
        "https://eu.example.org"
    );
    assert_eq!(pre.headers["access-control-allow-methods"], "GET, POST");
    assert_eq!(pre.headers["access-control-max-age"], "600");
    assert_eq!(pre.headers["access-control-allow-credentials"], "true");
    assert!(pre.body.is_empty());
    assert_eq!(
        web.requests.load(std::sync::atomic::Ordering::Relaxed),
        before
    );
    // A simple request: the upstream's answer with the headers and Vary: Origin.
    let got = ask("GET", "https://app.example.com", "127.0.0.4").await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(got.headers["access-control-expose-headers"], "X-Total");
    assert!(got.headers.get_all("vary").iter().any(|v| v == "Origin"));
    // An origin not listed gets no CORS header, and its OPTIONS goes to the upstream.
    let other = ask("GET", "https://evil.example.com", "127.0.0.5").await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
    let options = ask("OPTIONS", "https://evil.example.com", "127.0.0.6").await;
    assert_eq!(options.status, 200, "the upstream answered it");
    // Gatehouse's own errors carry the headers too (a browser can read the 429).
    let mut limited = ask("GET", "https://app.example.com", "127.0.0.7").await;
    for _ in 0..5 {
        if limited.status == 429 {
            break;
        }
        limited = ask("GET", "https://app.example.com", "127.0.0.7").await;
    }
    assert_eq!(limited.status, 429, "one request a second, a burst of one");
    assert_eq!(
        limited.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(cluster.running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_url_naming_a_service_is_reached_through_its_endpoint_slices() {
    let cluster = start("ingress-external-auth", false).await;
    let api = &cluster.api;
    let web = TestUpstream::start("web").await;
    service(api, "shop", "web", &web);
    let (auth, _) = crate::auth::auth_service().await;
    service_of_pods(api, "sso", "oauth2", &[auth]);
    // The same kind of service over TLS (not verified, with SNI, as ingress-nginx).
    let ca = crate::support::tls::TestCa::new();
    let (cert, key) = ca.leaf(&["tls-sso.sso.svc"], (-1, 30));
    let (tls_auth, handshakes) = crate::support::tls::tls_upstream(&cert, &key).await;
    service_of_pods(api, "sso", "tls-sso", &[tls_auth]);
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    for (name, host, url) in [
        (
            "protected",
            "protected.example.com",
            "http://oauth2.sso.svc.cluster.local/oauth2/auth",
        ),
        (
            "over-tls",
            "tls.example.com",
            "https://tls-sso.sso.svc:80/check",
        ),
        (
            "nowhere",
            "nowhere.example.com",
            "http://auth.example.com/check",
        ),
    ] {
        api.apply(
            INGRESSES,
            ingress(
                "shop",
                name,
                "2026-01-01T00:00:00Z",
                "gatehouse",
                json!({ n("auth-url"): url, n("auth-response-headers"): "X-Auth-Request-User", n("auth-signin"): "https://login.example.com/start" }),
                host,
                json!([path("/", "Prefix", "web")]),
            ),
        );
    }
    let http = cluster.running.http;
    let ask = |host: &'static str, cookie: &'static str| async move {
        send(
            &client(),
            get_req_at(http, host, "/", &[("cookie", cookie)]),
        )
        .await
    };
    eventually_async("the protected Ingress is served", WAIT, || async {
        ask("protected.example.com", "session=good").await.status == 200
    })
    .await;
    let got = ask("protected.example.com", "session=good").await;
    assert_eq!(got.json()["headers"]["x-auth-request-user"], "ann");
    let got = ask("protected.example.com", "session=none").await;
    assert_eq!(got.status, 302);
    assert!(got.headers["location"]
        .to_str()
        .unwrap()
        .starts_with("https://login.example.com/start?rd=http%3A%2F%2Fprotected.example.com"));
    let got = ask("tls.example.com", "session=good").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["headers"]["x-auth-request-user"], "tls-ann");
    // Refused: to the signin page, as for the plaintext service.
    assert_eq!(ask("tls.example.com", "session=none").await.status, 302);
    assert_eq!(
        handshakes.lock().unwrap().first().unwrap().0.as_deref(),
        Some("tls-sso.sso.svc")
    );
    // A name that is not a Service is resolved through DNS; while it cannot be, nobody
    // is let in (500, as nginx answers without its authentication service).
    assert_eq!(ask("nowhere.example.com", "session=good").await.status, 500);
    assert_eq!(cluster.running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_http_errors_are_answered_by_the_default_backend() {
    let cluster = start("ingress-error-pages", false).await;
    let api = &cluster.api;
    // The application answers 401 without a session (the test authentication service).
    let (app, _) = crate::auth::auth_service().await;
    service_of_pods(api, "shop", "app", &[app]);
    let errors = TestUpstream::start("errors").await;
    service(api, "shop", "errors", &errors);
    // A Service with no ready endpoint.
    api.apply(
        SERVICES,
        json!({ "metadata": { "namespace": "shop", "name": "empty" }, "spec": { "ports": [{ "name": "http", "port": 80 }] } }),
    );
    // A Service whose pod refuses connections: Gatehouse's own 502.
    service_of_pods(api, "shop", "dead", &[dead_addr().await]);
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    for (name, host, service_name) in [
        ("pages", "pages.example.com", "app"),
        ("empty", "empty.example.com", "empty"),
        ("dead", "dead.example.com", "dead"),
    ] {
        api.apply(
            INGRESSES,
            ingress(
                "shop",
                name,
                "2026-01-01T00:00:00Z",
                "gatehouse",
                json!({ n("custom-http-errors"): "401,502,503", n("default-backend"): "errors" }),
                host,
                json!([path("/", "Prefix", service_name)]),
            ),
        );
    }
    let http = cluster.running.http;
    let ask = |host: &'static str, cookie: &'static str| async move {
        send(
            &client(),
            get_req_at(
                http,
                host,
                "/account?tab=2",
                &[("cookie", cookie), ("accept", "text/html")],
            ),
        )
        .await
    };
    eventually_async("the error backend answers the 401", WAIT, || async {
        let got = ask("pages.example.com", "none").await;
        got.status == 200 && got.body.starts_with(b"{")
    })
    .await;
    let page = ask("pages.example.com", "none").await.json();
    assert_eq!(page["upstream"], "errors");
    assert_eq!(page["uri"], "/?tab=2", "{page}");
    for (name, want) in [
        ("x-code", "401"),
        ("x-format", "text/html"),
        ("x-original-uri", "/account?tab=2"),
        ("x-namespace", "shop"),
        ("x-ingress-name", "pages"),
        ("x-service-name", "app"),
        ("x-service-port", "http"),
        ("host", "pages.example.com"),
    ] {
        assert_eq!(page["headers"][name], want, "{name}: {page}");
    }
    // An answer not listed passes as the application gave it.
    let ok = ask("pages.example.com", "session=good").await;
    assert_eq!((ok.status.as_u16(), &ok.body[..]), (200, &b"auth"[..]));
    // No endpoint: the error backend answers with X-Code 503.
    let empty = ask("empty.example.com", "none").await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json()["headers"]["x-code"], "503");
    // Gatehouse's own 502 (the pod refuses): the error backend answers it too, as nginx's
    // error_page takes its own errors.
    let dead = ask("dead.example.com", "none").await;
    assert_eq!(dead.status, 200);
    assert_eq!(dead.json()["headers"]["x-code"], "502");
    assert_eq!(dead.json()["headers"]["x-service-name"], "dead");
    assert_eq!(cluster.running.terminate().await, Some(0));
}

/// A change made while the API server is away is served soon after it answers again: the
/// watches retry within a second, whatever the outage's length (kube-rs's default back-off
/// grows to 30 s and left such a change waiting 6-8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_during_an_api_outage_is_served_within_a_second_of_its_end() {
    let cluster = start("ingress-outage", false).await;
    let api = &cluster.api;
    let (v1, v2) = (
        TestUpstream::start("v1").await,
        TestUpstream::start("v2").await,
    );
    service(api, "shop", "v1", &v1);
    service(api, "shop", "v2", &v2);
    let app = |to: &str| {
        plain(
            "shop",
            "app",
            "app.example.com",
            json!([path("/", "Prefix", to)]),
        )
    };
    api.apply(INGRESSES, app("v1"));
    until(
        &cluster,
        "served by v1",
        "app.example.com",
        "/",
        (200, "v1"),
    )
    .await;

    let failed = "Kubernetes watch of";
    let before = cluster.running.logged(failed);
    api.set_down(true);
    eventually("the watches notice the outage", WAIT, || {
        cluster.running.logged(failed) > before
    })
    .await;
    // An outage of some seconds: long enough for an exponential back-off to reach 3-6 s.
    api.apply(INGRESSES, app("v2"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        fetch(&cluster, "app.example.com", "/").await,
        (200, "v1".to_owned()),
        "the last known routes serve through the outage"
    );
    api.set_down(false);
    let back = std::time::Instant::now();
    until(
        &cluster,
        "served by v2 after the outage",
        "app.example.com",
        "/",
        (200, "v2"),
    )
    .await;
    let took = back.elapsed();
    eprintln!(
        "change served {} ms after the API answered again",
        took.as_millis()
    );
    // 0.7 s at most by the back-off, and the rebuild; the margin is for a loaded machine.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(cluster.running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_ingress_and_service_and_a_deleted_ingress_takes_its_series() {
    let cluster = start("ingress-requests-metric", false).await;
    let api = &cluster.api;
    let (web, canary) = (
        TestUpstream::start("web").await,
        TestUpstream::start("canary").await,
    );
    service(api, "shop", "web", &web);
    service(api, "shop", "web-canary", &canary);
    api.apply(
        INGRESSES,
        plain(
            "shop",
            "app",
            "app.test",
            json!([path("/", "Prefix", "web")]),
        ),
    );
    api.apply(
        INGRESSES,
        ingress(
            "shop",
            "app-canary",
            "2026-01-01T00:00:01Z",
            "gatehouse",
            json!({ "nginx.ingress.kubernetes.io/canary": "true", "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary" }),
            "app.test",
            json!([path("/", "Prefix", "web-canary")]),
        ),
    );
    until(&cluster, "the app is served", "app.test", "/", (200, "web")).await;
    let canary_req = || {
        get_req_at(
            cluster.running.http,
            "app.test",
            "/",
            &[("x-canary", "always")],
        )
    };
    assert_eq!(send(&client(), canary_req()).await.status, 200);
    for _ in 0..2 {
        fetch(&cluster, "app.test", "/").await;
    }
    let series = |service: &str| {
        format!("gatehouse_service_requests_total{{code_class=\"2xx\",ingress=\"app\",namespace=\"shop\",service=\"{service}\"}}")
    };
    // The main Service's requests (the wait's included) and the canary's, under the Ingress
    // whose path they took; a host nobody routes counts nowhere here.
    fetch(&cluster, "nobody.test", "/").await;
    let web_count = cluster.running.metric(&series("web")).await.unwrap_or(0.0);
    assert!(web_count >= 3.0, "{web_count}");
    assert_eq!(
        cluster.running.metric(&series("web-canary")).await,
        Some(1.0)
    );
    let metrics = admin_get(&client(), cluster.running.admin, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(!text.contains("nobody.test"), "{text}");

    api.delete(INGRESSES, "shop", "app");
    until(&cluster, "the app is gone", "app.test", "/", (404, "")).await;
    assert!(
        text.contains("route=\"app.test\""),
        "the host's own series: {text}"
    );
    eventually_async("the deleted Ingress's series are gone", WAIT, || async {
        cluster.running.metric(&series("web")).await.is_none()
    })
    .await;
    // ...and so are its host's, every metric with that route label.
    let metrics = admin_get(&client(), cluster.running.admin, "/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(!text.contains("route=\"app.test\""), "{text}");
    assert_eq!(cluster.running.terminate().await, Some(0));
}
