//! Ingress status through the binary against the Kubernetes API test server: two replicas
//! elect one writer through a Lease, the addresses reach every Ingress of the class, leave
//! one that changes class, and a survivor takes over when the writer dies.

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use serde_json::{json, Value};

use crate::{
    ingress::{classes, ingress, path, run_on_with, tls_secret},
    support::{binary::*, kube_api::*, *},
};

const WAIT: Duration = Duration::from_secs(20);

/// The API test server with our IngressClasses and the Service shop/web of one pod (the
/// returned upstream).
async fn api_with_web() -> (KubeApi, TestUpstream) {
    let api = KubeApi::start().await;
    classes(&api);
    let web = TestUpstream::start("web").await;
    crate::ingress::service(&api, "shop", "web", &web);
    (api, web)
}

/// The controller ConfigMap gatehouse/controller with `data`.
fn controller_map(data: Value) -> Value {
    json!({ "metadata": { "namespace": "gatehouse", "name": "controller" }, "data": data })
}

/// The addresses an Ingress's status shows, as `ip` or `hostname` strings.
fn shown(api: &KubeApi, name: &str) -> BTreeSet<String> {
    let Some(object) = api.get(INGRESSES, "shop", name) else {
        return BTreeSet::new();
    };
    object["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            a["ip"]
                .as_str()
                .or(a["hostname"].as_str())
                .map(str::to_owned)
        })
        .collect()
}

fn app(name: &str, class: &str) -> Value {
    ingress(
        "shop",
        name,
        "2026-01-01T00:00:00Z",
        class,
        json!({}),
        &format!("{name}.example.com"),
        json!([path("/", "Prefix", "web")]),
    )
}

async fn replica(api: &KubeApi, name: &str) -> (Running, std::path::PathBuf) {
    let (running, dir) = run_on_with(
        name,
        &[api],
        "",
        "",
        &[
            "--publish-status-address=192.0.2.10,edge.example.com",
            "--election-ttl=2s",
            "--election-id=edge",
        ],
        Stdio::null(),
    )
    .await;
    wait_ready(&running).await;
    (running, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_writes_ingress_status_and_another_takes_over_when_it_dies() {
    let api = KubeApi::start().await;
    classes(&api);
    api.apply(INGRESSES, app("shop", "gatehouse"));
    api.apply(INGRESSES, app("moving", "gatehouse"));
    let mut other = app("other", "nginx");
    other["status"] = json!({ "loadBalancer": { "ingress": [{ "ip": "198.51.100.7" }] } });
    api.apply(INGRESSES, other);

    let (a, _a_dir) = replica(&api, "status-a").await;
    let (b, _b_dir) = replica(&api, "status-b").await;
    let want: BTreeSet<String> = ["192.0.2.10".into(), "edge.example.com".into()].into();
    eventually("our Ingresses show the addresses", WAIT, || {
        shown(&api, "shop") == want && shown(&api, "moving") == want
    })
    .await;
    assert_eq!(
        shown(&api, "other"),
        ["198.51.100.7".to_owned()].into(),
        "another class's status is left alone"
    );

    // One leader, named in the Lease; only it writes.
    let leading = "leading: this replica";
    eventually("one replica leads", WAIT, || {
        a.logged(leading) + b.logged(leading) == 1
    })
    .await;
    let (leader, follower) = if a.logged(leading) == 1 {
        (a, b)
    } else {
        (b, a)
    };
    let lease = api.get(LEASES, "gatehouse", "edge").expect("the Lease");
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap().to_owned();
    assert!(
        leader.logged(&format!("({holder})")) >= 1,
        "the Lease names the leader: {holder}"
    );
    // (Its log lines may trail the writes the API server has.)
    eventually("the leader logs its writes", WAIT, || {
        leader.logged("status set to") >= 2
    })
    .await;
    assert_eq!(
        follower.logged("status set to"),
        0,
        "the follower writes nothing"
    );

    // An Ingress that leaves the class loses the address.
    api.apply(INGRESSES, app("moving", "nginx"));
    eventually(
        "the address leaves an Ingress of another class",
        WAIT,
        || shown(&api, "moving").is_empty(),
    )
    .await;

    // The leader dies without giving the Lease up: the follower takes over once the Lease
    // is unrenewed for its 2 s, and writes what changes from then on.
    let mut leader = leader;
    leader.child.kill().await.unwrap();
    eventually("the follower takes over", WAIT, || {
        follower.logged(leading) == 1
    })
    .await;
    api.apply(INGRESSES, app("late", "gatehouse"));
    eventually("the new leader writes status", WAIT, || {
        shown(&api, "late") == want
    })
    .await;
    let lease = api.get(LEASES, "gatehouse", "edge").unwrap();
    assert_ne!(lease["spec"]["holderIdentity"].as_str().unwrap(), holder);
    assert!(lease["spec"]["leaseTransitions"].as_i64().unwrap() >= 1);

    // A leader stopping cleanly gives the Lease up.
    assert_eq!(follower.terminate().await, Some(0));
    let lease = api.get(LEASES, "gatehouse", "edge").unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
}

/// Events on the Ingress `name`: (type, reason, note), oldest first.
fn events_on(api: &KubeApi, name: &str) -> Vec<(String, String, String)> {
    events_of(api, "Ingress", name)
}

/// Events on the object of `kind` named `name`: (type, reason, note), oldest first.
fn events_of(api: &KubeApi, kind: &str, name: &str) -> Vec<(String, String, String)> {
    let mut all: Vec<(u64, (String, String, String))> = api
        .objects(EVENTS)
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name && e["regarding"]["kind"] == kind)
        .map(|e| {
            let rv = e["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (rv, (s("type"), s("reason"), s("note")))
        })
        .collect();
    all.sort();
    all.into_iter().map(|(_, e)| e).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_ingress_gets_one_warning_event_and_a_normal_one_when_served_again() {
    let (api, _web) = api_with_web().await;
    let typo = |annotations: Value| {
        ingress(
            "shop",
            "admin",
            "2026-01-01T00:00:00Z",
            "gatehouse",
            annotations,
            "admin.example.com",
            json!([path("/", "Prefix", "web")]),
        )
    };
    let n = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");
    api.apply(
        INGRESSES,
        typo(json!({ n("whitelist-soruce-range"): "10.0.0.0/8" })),
    );
    let (running, _dir) = run_on_with(
        "events",
        &[&api],
        "",
        "",
        &["--election-ttl=2s"],
        Stdio::null(),
    )
    .await;
    wait_ready(&running).await;
    eventually("a Warning Event on the refused Ingress", WAIT, || {
        !events_on(&api, "admin").is_empty()
    })
    .await;
    let (kind, reason, note) = events_on(&api, "admin")[0].clone();
    assert_eq!((kind.as_str(), reason.as_str()), ("Warning", "Refused"));
    assert!(
        note.contains("did you mean whitelist-source-range?"),
        "{note}"
    );
    assert!(note.contains("answer 503"), "{note}");

    // Other changes rebuild the routes; the refusal is not told again. Another refused
    // Ingress's Event, written later, shows the syncs after those rebuilds have run.
    api.apply(INGRESSES, app("shop", "gatehouse"));
    let served = || async {
        send(
            &client(),
            get_req_at(running.http, "shop.example.com", "/", &[]),
        )
        .await
        .status
            == 200
    };
    eventually_async("the other Ingress is served", WAIT, served).await;
    let mut later = app("later", "gatehouse");
    later["metadata"]["annotations"] = json!({ n("auth-snippet"): "return 200;" });
    api.apply(INGRESSES, later);
    eventually("the later refusal's Event", WAIT, || {
        !events_on(&api, "later").is_empty()
    })
    .await;
    assert_eq!(events_on(&api, "admin").len(), 1, "one Event per refusal");

    // Fixed: a Normal Event says it is served again.
    api.apply(
        INGRESSES,
        typo(json!({ n("whitelist-source-range"): "10.0.0.0/8" })),
    );
    eventually("a Normal Event when served again", WAIT, || {
        events_on(&api, "admin").len() == 2
    })
    .await;
    let (kind, reason, _) = events_on(&api, "admin")[1].clone();
    assert_eq!((kind.as_str(), reason.as_str()), ("Normal", "Served"));
    assert_eq!(running.terminate().await, Some(0));
}

fn pod(name: &str, labels: Value, node: &str, phase: &str) -> Value {
    json!({
        "metadata": { "namespace": "gatehouse", "name": name, "labels": labels },
        "spec": { "nodeName": node },
        "status": { "phase": phase },
    })
}

fn node(name: &str, addresses: &[(&str, &str)]) -> Value {
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|(kind, address)| json!({ "type": kind, "address": address }))
        .collect();
    json!({ "metadata": { "name": name }, "status": { "addresses": addresses } })
}

/// Without a publish flag, in a pod: the addresses of the nodes its replicas run on, as
/// ingress-nginx publishes them for a DaemonSet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_publish_flag_the_status_shows_the_nodes_the_replicas_run_on() {
    let api = KubeApi::start().await;
    classes(&api);
    api.apply(INGRESSES, app("shop", "gatehouse"));
    let ours = |revision: &str| json!({ "app.kubernetes.io/name": "gatehouse", "controller-revision-hash": revision });
    api.apply(PODS, pod("gatehouse-a", ours("1"), "n1", "Running"));
    // Another revision of the same DaemonSet, mid-rollout: still ours.
    api.apply(PODS, pod("gatehouse-b", ours("2"), "n2", "Running"));
    api.apply(PODS, pod("gatehouse-c", ours("2"), "n3", "Pending"));
    api.apply(
        PODS,
        pod(
            "other",
            json!({ "app.kubernetes.io/name": "web" }),
            "n4",
            "Running",
        ),
    );
    api.apply(
        NODES,
        node(
            "n1",
            &[("InternalIP", "10.0.0.1"), ("ExternalIP", "203.0.113.1")],
        ),
    );
    api.apply(NODES, node("n2", &[("InternalIP", "10.0.0.2")]));
    api.apply(NODES, node("n3", &[("ExternalIP", "203.0.113.3")]));
    api.apply(NODES, node("n4", &[("ExternalIP", "203.0.113.4")]));

    let dir = temp_dir("status-nodes");
    let config = dir.join("gatehouse.yaml");
    std::fs::write(
        &config,
        "listen: { http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\naccess_log: off\nshutdown: { drain_delay: 0s }\n",
    )
    .unwrap();
    let kubeconfig = api.kubeconfig(&dir);
    let running = run_with_env(
        &config,
        &["--kubernetes", "--kubeconfig", kubeconfig.to_str().unwrap()],
        &[("POD_NAME", "gatehouse-a"), ("POD_NAMESPACE", "gatehouse")],
        Stdio::null(),
    )
    .await;
    wait_ready(&running).await;
    let want: BTreeSet<String> = ["203.0.113.1".into(), "10.0.0.2".into()].into();
    eventually("the status shows our running pods' nodes", WAIT, || {
        shown(&api, "shop") == want
    })
    .await;
    // The Lease is named after the pod.
    let lease = api
        .get(LEASES, "gatehouse", "gatehouse-leader")
        .expect("the Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "gatehouse-a");

    // A replica starts on another node: its address joins.
    api.apply(PODS, pod("gatehouse-c", ours("2"), "n3", "Running"));
    let want: BTreeSet<String> = [
        "203.0.113.1".into(),
        "10.0.0.2".into(),
        "203.0.113.3".into(),
    ]
    .into();
    eventually(
        "a new node's address joins",
        Duration::from_secs(30),
        || shown(&api, "shop") == want,
    )
    .await;
    assert_eq!(running.terminate().await, Some(0));
}

/// The controller ConfigMap (`--configmap`): global keys apply live (allow and block lists,
/// body size, forwarded headers), an access key that cannot be read makes Ingress paths
/// answer 503, keys not applied are reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_configmap_applies_live_and_fails_closed_on_unreadable_access_keys() {
    let (api, _web) = api_with_web().await;
    api.apply(INGRESSES, app("shop", "gatehouse"));
    // A Service without endpoints, for the ConfigMap's custom-http-errors.
    api.apply(
        SERVICES,
        json!({ "metadata": { "namespace": "shop", "name": "gone" },
                "spec": { "ports": [{ "name": "http", "port": 80 }] } }),
    );
    api.apply(
        INGRESSES,
        ingress(
            "shop",
            "gone",
            "2026-01-01T00:00:00Z",
            "gatehouse",
            json!({}),
            "gone.example.com",
            json!([path("/", "Prefix", "gone")]),
        ),
    );
    let fallback = TestUpstream::start("fallback").await;
    let map = controller_map;
    api.apply(
        CONFIG_MAPS,
        map(json!({
            "use-forwarded-headers": "true",
            "proxy-real-ip-cidr": "127.0.0.2/32",
            "enable-brotli": "true",
        })),
    );
    let (running, _dir) = run_on_with(
        "configmap",
        &[&api],
        "",
        &format!(
            "services: {{ fallback: {{ endpoints: [\"{}\"] }} }}\ndefault_service: fallback\n",
            fallback.addr
        ),
        &["--configmap=gatehouse/controller"],
        Stdio::null(),
    )
    .await;
    wait_ready(&running).await;
    let client_seen = |from: &'static str| {
        let http = running.http;
        async move {
            let req = get_req(
                "shop.example.com",
                "/",
                &[("x-forwarded-for", "203.0.113.9")],
            );
            let got = request_from(from, http, b"", req).await.expect("an answer");
            let echoed: Value = serde_json::from_slice(&got.body).unwrap_or(Value::Null);
            (
                got.status.as_u16(),
                echoed["headers"]["x-real-ip"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        }
    };
    // Believed from the listed proxy only.
    assert_eq!(
        client_seen("127.0.0.2").await,
        (200, "203.0.113.9".to_owned())
    );
    assert_eq!(
        client_seen("127.0.0.3").await,
        (200, "127.0.0.3".to_owned())
    );
    eventually("the key Gatehouse does not apply is reported", WAIT, || {
        running.logged("key enable-brotli: is not applied") == 1
    })
    .await;

    // The access lists, live: (key, value, a client and its answer, a client still served).
    for (key, value, client, answer, served) in [
        // block-cidrs refuses its clients on every Ingress.
        (
            "block-cidrs",
            "127.0.0.3/32",
            "127.0.0.3",
            403,
            Some("127.0.0.4"),
        ),
        // whitelist-source-range: the allow-list of Ingresses without their own.
        (
            "whitelist-source-range",
            "127.0.0.4/32",
            "127.0.0.3",
            403,
            Some("127.0.0.4"),
        ),
        // A list that cannot be read fails closed.
        (
            "whitelist-source-range",
            "127.0.0.4/33",
            "127.0.0.4",
            503,
            None,
        ),
    ] {
        api.apply(
            CONFIG_MAPS,
            map(json!({ (key): value, "enable-brotli": "true" })),
        );
        eventually_async(&format!("{key}: {value} applies"), WAIT, || async {
            client_seen(client).await.0 == answer
        })
        .await;
        if let Some(other) = served {
            assert_eq!(client_seen(other).await.0, 200, "{key}: {value}");
        }
    }
    assert!(running.logged("whitelist-source-range (") >= 1);
    // The admin view says so of every Ingress, as `gatehouse audit --configmap` would.
    let view = admin_get(&client(), running.admin, "/ingresses").await;
    let all: Value = serde_json::from_slice(&view.body).unwrap();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    for v in all {
        assert_eq!(v["verdict"], "refused", "{v}");
        assert!(
            v["notes"][0]
                .as_str()
                .unwrap()
                .contains("whitelist-source-range (`127.0.0.4/33`"),
            "{v}"
        );
    }
    let gone = || async {
        let got = send(
            &client(),
            get_req_at(running.http, "gone.example.com", "/", &[]),
        )
        .await;
        let echoed: Value = serde_json::from_slice(&got.body).unwrap_or(Value::Null);
        (
            got.status.as_u16(),
            echoed["upstream"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(gone().await.0, 503, "no endpoints, no error pages yet");
    // proxy-body-size, X-Forwarded-For passed on as the client only, the client read from
    // another header, and error pages for every Ingress from the default service.
    api.apply(
        CONFIG_MAPS,
        map(json!({
            "proxy-body-size": "1k",
            "use-forwarded-headers": "true",
            "proxy-real-ip-cidr": "127.0.0.2/32",
            "compute-full-forwarded-for": "false",
            "custom-http-errors": "503",
            "enable-brotli": "true",
        })),
    );
    let post = |size: usize| {
        let http = running.http;
        async move {
            let req = http::Request::post("/")
                .header("host", "shop.example.com")
                .body(http_body_util::Full::new(bytes::Bytes::from(vec![
                    b'x';
                    size
                ])))
                .unwrap();
            request_from("127.0.0.3", http, b"", req)
                .await
                .expect("an answer")
                .status
                .as_u16()
        }
    };
    eventually_async("proxy-body-size applies", WAIT, || async {
        post(4096).await == 413
    })
    .await;
    assert_eq!(post(512).await, 200);
    assert_eq!(
        gone().await.1,
        "fallback",
        "custom-http-errors: the default service answers"
    );
    let req = get_req(
        "shop.example.com",
        "/",
        &[("x-forwarded-for", "203.0.113.9")],
    );
    let got = request_from("127.0.0.2", running.http, b"", req)
        .await
        .expect("an answer");
    let echoed: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(
        echoed["headers"]["x-forwarded-for"], "203.0.113.9",
        "{echoed}"
    );
    // forwarded-for-header: a CDN's single-address header names the client.
    api.apply(
        CONFIG_MAPS,
        map(json!({
            "use-forwarded-headers": "true",
            "proxy-real-ip-cidr": "127.0.0.2/32",
            "forwarded-for-header": "X-Client-IP",
            "enable-brotli": "true",
        })),
    );
    let from_cdn = || async {
        let req = get_req("shop.example.com", "/", &[("x-client-ip", "198.51.100.7")]);
        let got = request_from("127.0.0.2", running.http, b"", req)
            .await
            .expect("an answer");
        let echoed: Value = serde_json::from_slice(&got.body).unwrap_or(Value::Null);
        echoed["headers"]["x-real-ip"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    eventually_async("the client is read from X-Client-IP", WAIT, || async {
        from_cdn().await == "198.51.100.7"
    })
    .await;
    api.apply(CONFIG_MAPS, map(json!({ "enable-brotli": "true" })));
    eventually_async("served again without it", WAIT, || async {
        client_seen("127.0.0.3").await.0 == 200 && post(4096).await == 200
    })
    .await;
    // Forwarded headers are no longer believed once the key is gone.
    assert_eq!(
        client_seen("127.0.0.2").await,
        (200, "127.0.0.2".to_owned())
    );
    assert_eq!(
        running.logged("key enable-brotli: is not applied"),
        1,
        "reported once"
    );
    assert_eq!(running.terminate().await, Some(0));
}

/// The ConfigMap's TLS keys, live: ssl-protocols narrows the versions spoken, hsts and
/// ssl-redirect turn the header and the redirect off for Ingresses that do not say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_configmap_sets_tls_versions_hsts_and_the_https_redirect_live() {
    use crate::support::tls::*;
    let (api, _web) = api_with_web().await;
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["secure.test"], (-1, 30));
    api.apply(SECRETS, tls_secret("shop", "secure-tls", &cert, &key));
    api.apply(
        INGRESSES,
        json!({
            "metadata": { "namespace": "shop", "name": "secure", "creationTimestamp": "2026-01-01T00:00:00Z" },
            "spec": {
                "ingressClassName": "gatehouse",
                "tls": [{ "hosts": ["secure.test"], "secretName": "secure-tls" }],
                "rules": [{ "host": "secure.test", "http": { "paths": [path("/", "Prefix", "web")] } }],
            },
        }),
    );
    let map = controller_map;
    api.apply(CONFIG_MAPS, map(json!({})));
    let (running, _dir) = run_on_with(
        "configmap-tls",
        &[&api],
        ", https: \"127.0.0.1:0\"",
        "",
        &["--configmap=gatehouse/controller"],
        Stdio::null(),
    )
    .await;
    wait_ready(&running).await;
    let https = running.https.expect("an HTTPS listener");
    let speaks = |version: &'static rustls::SupportedProtocolVersion| {
        let ca = &ca;
        async move {
            connect(
                ca.client_speaking(&[version], &[]),
                https,
                Some("secure.test"),
                "secure.test",
            )
            .await
            .ok()
        }
    };
    let plain_status = || async {
        let req = get_req_at(running.http, "secure.test", "/", &[]);
        send(&client(), req).await.status.as_u16()
    };
    eventually_async(
        "the certificate is served, HTTP redirected",
        WAIT,
        || async { plain_status().await == 308 },
    )
    .await;
    let tls12 = speaks(&rustls::version::TLS12)
        .await
        .expect("TLS 1.2 by default");
    let got = h1_over(tls12, "secure.test").await;
    assert!(got.headers.contains_key("strict-transport-security"));

    api.apply(
        CONFIG_MAPS,
        map(json!({ "ssl-protocols": "TLSv1.3", "hsts": "false", "ssl-redirect": "false" })),
    );
    eventually_async("TLS 1.2 is no longer spoken", WAIT, || async {
        speaks(&rustls::version::TLS12).await.is_none()
    })
    .await;
    let tls13 = speaks(&rustls::version::TLS13)
        .await
        .expect("TLS 1.3 still");
    let got = h1_over(tls13, "secure.test").await;
    assert_eq!(got.status, 200);
    assert!(
        !got.headers.contains_key("strict-transport-security"),
        "hsts: false"
    );
    assert_eq!(plain_status().await, 200, "ssl-redirect: false");

    api.apply(CONFIG_MAPS, map(json!({})));
    eventually_async("TLS 1.2 again once the key is gone", WAIT, || async {
        speaks(&rustls::version::TLS12).await.is_some()
    })
    .await;
    assert_eq!(plain_status().await, 308);
    assert_eq!(running.terminate().await, Some(0));
}

/// Besides refusals: an annotation ignored and a TLS Secret missing (Warning `Differs` on
/// the Ingress), a ConfigMap key not applied and a TCP port that cannot be opened (Warning
/// `NotApplied` on the ConfigMap), each told once; a Normal `Applied` once fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_name_ignored_annotations_missing_secrets_unapplied_keys_and_closed_ports() {
    let (api, _web) = api_with_web().await;
    api.apply(
        INGRESSES,
        json!({
            "metadata": {
                "namespace": "shop", "name": "uploads", "creationTimestamp": "2026-01-01T00:00:00Z",
                "annotations": { "nginx.ingress.kubernetes.io/proxy-buffer-size": "16k" },
            },
            "spec": {
                "ingressClassName": "gatehouse",
                "tls": [{ "hosts": ["uploads.test"], "secretName": "absent-tls" }],
                "rules": [{ "host": "uploads.test", "http": { "paths": [path("/", "Prefix", "web")] } }],
            },
        }),
    );
    api.apply(
        CONFIG_MAPS,
        controller_map(json!({ "enable-brotli": "true" })),
    );
    let holder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = holder.local_addr().unwrap().port();
    api.apply(
        CONFIG_MAPS,
        json!({ "metadata": { "namespace": "gatehouse", "name": "tcp-services" },
                "data": { taken.to_string(): "shop/web:http" } }),
    );
    let (running, _dir) = run_on_with(
        "events-kinds",
        &[&api],
        "",
        "",
        &[
            "--configmap=gatehouse/controller",
            "--tcp-services-configmap=gatehouse/tcp-services",
        ],
        Stdio::null(),
    )
    .await;
    wait_ready(&running).await;
    let has = |events: &[(String, String, String)], reason: &str, words: &str| {
        events
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == reason && n.contains(words))
    };
    eventually("the Ingress's differences are told", WAIT, || {
        let events = events_on(&api, "uploads");
        has(&events, "Differs", "proxy-buffer-size is not supported")
            && has(&events, "Differs", "Secret shop/absent-tls does not exist")
    })
    .await;
    eventually("the ConfigMaps' problems are told", WAIT, || {
        has(
            &events_of(&api, "ConfigMap", "controller"),
            "NotApplied",
            "key enable-brotli: is not applied",
        ) && has(
            &events_of(&api, "ConfigMap", "tcp-services"),
            "NotApplied",
            &format!("cannot listen on 127.0.0.1:{taken}"),
        )
    })
    .await;
    // Rebuilds for other reasons tell nothing again.
    let told = api.objects(EVENTS).len();
    api.apply(INGRESSES, app("shop", "gatehouse"));
    eventually_async("the other Ingress is served", WAIT, || async {
        send(
            &client(),
            get_req_at(running.http, "shop.example.com", "/", &[]),
        )
        .await
        .status
            == 200
    })
    .await;
    assert_eq!(api.objects(EVENTS).len(), told, "{:?}", api.objects(EVENTS));
    // Fixed: the key removed and the port freed; the next build applies both, and each
    // ConfigMap gets a Normal Event.
    drop(holder);
    api.apply(CONFIG_MAPS, controller_map(json!({})));
    let applied = |name: &str| {
        events_of(&api, "ConfigMap", name)
            .iter()
            .any(|(t, r, _)| t == "Normal" && r == "Applied")
    };
    eventually("Normal Events once applied whole", WAIT, || {
        applied("controller") && applied("tcp-services")
    })
    .await;
    assert_eq!(running.terminate().await, Some(0));
}
