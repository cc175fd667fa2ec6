//! Kubernetes endpoint discovery through the binary, against the test API server.

use std::{collections::BTreeSet, time::Duration};

use crate::support::{binary::*, kube_api::*, *};
use gatehouse_discovery::kubernetes::endpoints::SERVICE_NAME_LABEL;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

/// The binary watching `api` for the `shop` namespace, serving `k.example.com` from the
/// Service `web` (port by name, so no Service object is needed).
async fn run_binary(api: &KubeApi, dir: &std::path::Path) -> Running {
    let config = dir.join("gatehouse.yaml");
    std::fs::write(&config, "listen: { http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\naccess_log: off\nshutdown: { drain_delay: 0s }\nservices: { web: { kubernetes: { namespace: shop, name: web, port: http } } }\nroutes: [{ host: k.example.com, paths: [{ path: /, service: web }] }]\n").unwrap();
    let kubeconfig = api.kubeconfig(dir);
    let running = run_with(
        &config,
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
        let got = request_from(
            "127.0.0.1",
            running.http,
            b"",
            get_req("k.example.com", "/", &[]),
        )
        .await
        .expect("an answer");
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
    let dir = temp_dir("k8s-watch");
    let running = run_binary(&api, &dir).await;
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
    // The binary only ever listed and watched; nothing else reached the API server.
    let verbs: BTreeSet<&str> = api.seen().iter().map(|s| s.verb).collect();
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
    let dir = std::env::temp_dir().join(format!("gatehouse-k8s-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = api.kubeconfig(&dir);
    let config = dir.join("gatehouse.yaml");
    // By port number, so the Service watch is needed to resolve it.
    std::fs::write(&config, "listen: { http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }\naccess_log: off\nshutdown: { drain_delay: 0s }\nservices: { web: { kubernetes: { namespace: shop, name: web, port: 80 } } }\nroutes: [{ host: k.example.com, paths: [{ path: /, service: web }] }]\n").unwrap();

    // Without --kubernetes such a file is refused, not served without endpoints.
    let out = run_to_end(&["run"], &config).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kubernetes"));

    let running = run_with(
        &config,
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
