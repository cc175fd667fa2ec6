//! Kubernetes endpoint discovery through the binary, against the test API server.

use std::{collections::BTreeSet, time::Duration};

use crate::support::{binary::*, kube_api::*, *};
use gatehouse_discovery::kubernetes::endpoints::SERVICE_NAME_LABEL;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// A file serving `k.example.com` from the Service `shop/web` at `port` (a name, or a
/// number that only the Service object can resolve).
fn k8s_config(dir: &std::path::Path, port: &str) -> std::path::PathBuf {
    let config = dir.join("gatehouse.yaml");
    std::fs::write(&config, format!("listen: {{ http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\naccess_log: off\nshutdown: {{ drain_delay: 0s }}\nservices: {{ web: {{ kubernetes: {{ namespace: shop, name: web, port: {port} }} }} }}\nroutes: [{{ host: k.example.com, paths: [{{ path: /, service: web }}] }}]\n")).unwrap();
    config
}

/// The binary on `config`, watching `api` for the `shop` namespace, ready.
async fn run_binary(api: &KubeApi, config: &std::path::Path) -> Running {
    let kubeconfig = api.kubeconfig(config.parent().unwrap());
    let running = run_with(
        config,
        &[
            "--kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--namespace",
            "shop",
        ],
        std::process::Stdio::null(),
    )
    .await;
    wait_ready(&running).await;
    running
}

/// Which pods answer `k.example.com` now: enough requests to go round every endpoint
/// (round robin) a few times.
async fn answering(running: &Running) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        let got = get_at(running.http, "k.example.com", "/").await;
        if got.status == 200 {
            seen.insert(got.json()["upstream"].as_str().unwrap().to_owned());
        }
    }
    seen
}

async fn until_answering(running: &Running, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|w| w.to_string()).collect();
    eventually_async(&format!("pods {want:?} answer"), WAIT, || async {
        answering(running).await == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_pages_lists_resumes_watches_relists_after_410_and_serves_through_outages() {
    // Over TLS with a bearer token, as in a cluster.
    let api = KubeApi::start_tls().await;
    let pods = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    ];
    // 1,100 slices of other Services first: kube-rs lists in pages of 500, and web's slices
    // sort after them, so serving pod a needs the third page.
    for i in 0..1100 {
        api.apply(
            ENDPOINT_SLICES,
            json!({
                "metadata": { "namespace": "shop", "name": format!("bulk-{i:04}"), "labels": { SERVICE_NAME_LABEL: format!("bulk-{i}") } },
                "addressType": "IPv4",
                "ports": [{ "name": "http", "port": 9 }],
                "endpoints": [{ "addresses": ["127.0.0.1"], "conditions": { "ready": true } }],
            }),
        );
    }
    api.apply(ENDPOINT_SLICES, pod_slice(&pods[0], true, false));
    let running = run_binary(&api, &k8s_config(&temp_dir("k8s-watch"), "http")).await;
    until_answering(&running, &["a"]).await;
    let lists = || api.count("list", "endpointslices");
    let watches = || api.count("watch", "endpointslices");
    assert_eq!(lists(), 3, "the first list came in three pages of 500");

    // A change arrives over the watch.
    api.apply(ENDPOINT_SLICES, pod_slice(&pods[1], true, false));
    until_answering(&running, &["a", "b"]).await;

    // The watch stream drops: the watcher resumes from its resourceVersion, no relist.
    let watched = watches();
    api.drop_watches();
    api.apply(ENDPOINT_SLICES, pod_slice(&pods[2], true, false));
    until_answering(&running, &["a", "b", "c"]).await;
    assert!(watches() > watched, "watched again");
    assert_eq!(lists(), 3, "resumed, not relisted");

    // History compacted while the watch was away: 410 Gone, then a relist (in pages).
    api.compact();
    api.drop_watches();
    api.delete(ENDPOINT_SLICES, "shop", "web-c");
    until_answering(&running, &["a", "b"]).await;
    eventually("a relist after 410, in pages", WAIT, || lists() >= 6).await;

    // The API server goes away: readiness and the last known endpoints stay.
    let c = client();
    let failed = "Kubernetes watch of EndpointSlices failed";
    let before = running.logged(failed);
    api.set_down(true);
    eventually("the EndpointSlice watcher reports the outage", WAIT, || {
        running.logged(failed) > before
    })
    .await;
    assert_eq!(
        admin_get(&c, running.admin, "/readyz").await.status,
        200,
        "ready through an API outage"
    );
    assert_eq!(
        answering(&running).await,
        BTreeSet::from(["a".into(), "b".into()])
    );
    // Back: changes flow again.
    api.set_down(false);
    api.apply(ENDPOINT_SLICES, pod_slice(&pods[2], true, false));
    until_answering(&running, &["a", "b", "c"]).await;
    assert_eq!(admin_get(&c, running.admin, "/readyz").await.status, 200);
    // For what it serves the binary only ever listed and watched (its leader election's
    // Lease aside: the RBAC test holds that to account).
    let verbs: BTreeSet<&str> = api
        .seen()
        .iter()
        .filter(|s| s.resource != "leases")
        .map(|s| s.verb)
        .collect();
    assert_eq!(verbs, BTreeSet::from(["list", "watch"]));
    assert_eq!(running.terminate().await, Some(0));
}

/// One EndpointSlice per pod: test upstreams listen on different ports of 127.0.0.1, and a
/// slice carries one port for all its endpoints.
fn pod_slice(pod: &TestUpstream, ready: bool, terminating: bool) -> serde_json::Value {
    json!({
        "metadata": { "namespace": "shop", "name": format!("web-{}", pod.name), "labels": { SERVICE_NAME_LABEL: "web" } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": pod.addr.port() }],
        "endpoints": [{ "addresses": ["127.0.0.1"], "conditions": { "ready": ready, "serving": true, "terminating": terminating } }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_follows_endpointslices_under_load() {
    use crate::support::binary::*;
    use std::sync::atomic::Ordering;

    let api = KubeApi::start().await;
    let mut pods = Vec::new();
    for i in 0..4 {
        pods.push(TestUpstream::start(&format!("pod{i}")).await);
    }
    api.apply(ENDPOINT_SLICES, pod_slice(&pods[0], true, false));
    api.apply(
        SERVICES,
        json!({
            "metadata": { "namespace": "shop", "name": "web" },
            "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": "http" }] },
        }),
    );
    // By port number, so the Service watch is needed to resolve it.
    let config = k8s_config(&temp_dir("k8s-under-load"), "80");

    // Without --kubernetes such a file is refused, not served without endpoints.
    let out = run_to_end(&["run"], &config).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kubernetes"));

    let running = run_binary(&api, &config).await;

    let load = SteadyLoad::start(3, running.http, "k.example.com");
    let served = |pod: &TestUpstream| pod.requests.load(Ordering::Relaxed);
    eventually("pod0 serves", Duration::from_secs(10), || {
        served(&pods[0]) > 0
    })
    .await;

    // Scale up: every pod gets traffic.
    for pod in &pods[1..] {
        api.apply(ENDPOINT_SLICES, pod_slice(pod, true, false));
    }
    eventually("all four pods serve", Duration::from_secs(10), || {
        pods.iter().all(|p| served(p) > 0)
    })
    .await;

    // Rolling update: pod0..2 terminate (still serving) while pod3 stays ready, then leave.
    for pod in &pods[..3] {
        api.apply(ENDPOINT_SLICES, pod_slice(pod, false, true));
    }
    // Once the change has arrived, pod3 gets every new request: a window in which pod3
    // served 50 requests and the terminating pods none. Then a second such window, strict.
    let window = || async {
        let marks: Vec<usize> = pods.iter().map(served).collect();
        eventually("pod3 serves 50 more", Duration::from_secs(10), || {
            served(&pods[3]) >= marks[3] + 50
        })
        .await;
        pods[..3]
            .iter()
            .zip(&marks)
            .filter(|(pod, mark)| served(pod) != **mark)
            .map(|(pod, _)| pod.name.clone())
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !window().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the terminating pods kept getting new requests"
        );
    }
    assert_eq!(
        window().await,
        Vec::<String>::new(),
        "terminating pods get no new request while a ready one exists"
    );
    for pod in &pods[..3] {
        api.delete(ENDPOINT_SLICES, "shop", &format!("web-{}", pod.name));
    }
    // The API server goes away: the last known endpoint keeps serving.
    api.set_down(true);
    let mark = served(&pods[3]);
    eventually(
        "traffic continues during the outage",
        Duration::from_secs(10),
        || served(&pods[3]) > mark + 50,
    )
    .await;
    api.set_down(false);

    let (ok, failed) = load.stop().await;
    assert_eq!(failed, 0, "no request failed while an endpoint was ready");
    assert!(ok >= 100, "the load ran through every phase");
    assert_eq!(running.terminate().await, Some(0));
}

/// A kube-rs client from a kubeconfig file.
async fn kube_client(kubeconfig: &std::path::Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// The harness itself: the test API server answers get, writes, Events, Leases and pages
/// as the real one does, and records each request with its method, so a test that lists
/// what the binary requested would see any of them.
#[tokio::test]
async fn the_test_api_server_answers_and_records_every_verb() {
    use k8s_openapi::api::{coordination::v1::Lease, core::v1::ConfigMap, events::v1::Event};
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
    let api = KubeApi::start_tls().await;
    let dir = temp_dir("api-server-verbs");
    let client = kube_client(&api.kubeconfig(&dir)).await;

    let leases: Api<Lease> = Api::namespaced(client.clone(), "edge");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": { "name": "gatehouse-leader" },
        "spec": { "holderIdentity": "pod-a", "leaseDurationSeconds": 15 },
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    assert!(
        leases.create(&PostParams::default(), &lease).await.is_err(),
        "409 AlreadyExists"
    );
    let got = leases.get("gatehouse-leader").await.unwrap();
    assert_eq!(got.spec.unwrap().holder_identity.as_deref(), Some("pod-a"));
    let patched = leases
        .patch(
            "gatehouse-leader",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "holderIdentity": "pod-b" } })),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("pod-b")
    );
    assert_eq!(
        patched.spec.as_ref().unwrap().lease_duration_seconds,
        Some(15),
        "merged"
    );
    // An update from a stale copy is a conflict, as optimistic locking requires.
    let stale = leases
        .replace("gatehouse-leader", &PostParams::default(), &created)
        .await;
    assert!(
        matches!(stale, Err(kube::Error::Api(ref e)) if e.code == 409),
        "{stale:?}"
    );
    leases
        .delete("gatehouse-leader", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        matches!(leases.get("gatehouse-leader").await, Err(kube::Error::Api(ref e)) if e.code == 404)
    );

    let events: Api<Event> = Api::namespaced(client.clone(), "shop");
    let event: Event = serde_json::from_value(json!({
        "metadata": { "generateName": "web." },
        "eventTime": "2026-12-01T00:00:00.000000Z",
        "reason": "Refused", "note": "annotation auth-url is not supported yet",
        "type": "Warning", "action": "Serve", "reportingController": "gatehouse.io/ingress",
        "reportingInstance": "pod-a",
        "regarding": { "kind": "Ingress", "namespace": "shop", "name": "web" },
    }))
    .unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
    assert_eq!(api.objects(EVENTS).len(), 1);

    // Pages: five ConfigMaps, two a page.
    for i in 0..5 {
        api.apply(
            CONFIG_MAPS,
            json!({ "metadata": { "namespace": "edge", "name": format!("m{i}") } }),
        );
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "edge");
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(2);
    loop {
        let page = maps.list(&params).await.unwrap();
        names.extend(page.items.iter().filter_map(|m| m.metadata.name.clone()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(names, ["m0", "m1", "m2", "m3", "m4"]);

    let verbs: Vec<(String, &str, String)> = api
        .seen()
        .into_iter()
        .map(|s| (s.method, s.verb, s.resource))
        .collect();
    let had = |method: &str, verb: &str, resource: &str| {
        verbs
            .iter()
            .filter(|(m, v, r)| m == method && *v == verb && r == resource)
            .count()
    };
    assert_eq!(had("POST", "create", "leases"), 2);
    assert_eq!(had("GET", "get", "leases"), 2);
    assert_eq!(had("PATCH", "patch", "leases"), 1);
    assert_eq!(had("PUT", "update", "leases"), 1);
    assert_eq!(had("DELETE", "delete", "leases"), 1);
    assert_eq!(had("POST", "create", "events"), 1);
    assert_eq!(had("GET", "list", "configmaps"), 3, "three pages");
    assert!(api.seen().iter().all(|s| s.verb != "unauthorized"));

    // A client without the bearer token is refused, and that is recorded too.
    let anonymous = dir.join("anonymous");
    std::fs::write(
        &anonymous,
        std::fs::read_to_string(api.kubeconfig(&dir))
            .unwrap()
            .replace(TOKEN, "wrong-token"),
    )
    .unwrap();
    let intruder: Api<ConfigMap> = Api::namespaced(kube_client(&anonymous).await, "edge");
    assert!(
        matches!(intruder.list(&ListParams::default()).await, Err(kube::Error::Api(ref e)) if e.code == 401)
    );
    assert_eq!(api.seen().last().unwrap().verb, "unauthorized");
}
