//! Kubernetes discovery against the test API server, through the real kube-rs client.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::support::{kube_api::*, *};
use futures_util::StreamExt;
use gatehouse_discovery::kubernetes::{
    endpoints::SERVICE_NAME_LABEL, PortRef, ServiceKey, SliceStore,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

fn slice(name: &str, ips: &[&str]) -> serde_json::Value {
    json!({
        "metadata": { "namespace": "default", "name": name, "labels": { SERVICE_NAME_LABEL: "web" } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080 }],
        "endpoints": ips.iter().map(|ip| json!({ "addresses": [ip], "conditions": { "ready": true } })).collect::<Vec<_>>(),
    })
}

async fn kube_client(api: &KubeApi) -> kube::Client {
    let dir = std::env::temp_dir().join(format!("gatehouse-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(api.kubeconfig(&dir)).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn endpointslice_watch_resumes_relists_after_410_and_keeps_state_through_outages() {
    let api = KubeApi::start().await;
    api.apply(ENDPOINT_SLICES, slice("web-a", &["10.0.0.1"]));
    let store = Arc::new(Mutex::new(SliceStore::default()));
    let events = watcher(
        kube::Api::<EndpointSlice>::all(kube_client(&api).await),
        watcher::Config::default()
            .labels(SERVICE_NAME_LABEL)
            .timeout(30),
    )
    .default_backoff();
    let feed = store.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            if let Ok(event) = event {
                feed.lock().unwrap().apply(event);
            }
        }
    });
    let web = ServiceKey {
        namespace: "default".into(),
        name: "web".into(),
    };
    let ready = |store: &Arc<Mutex<SliceStore>>| {
        let mut v: Vec<String> = store
            .lock()
            .unwrap()
            .endpoints(&web, &PortRef::Name("http".into()), None)
            .ready
            .iter()
            .map(|a| a.to_string())
            .collect();
        v.sort();
        v
    };
    let wait_for = |want: &'static [&'static str]| {
        let store = store.clone();
        async move {
            eventually(
                &format!("endpoints {want:?}"),
                Duration::from_secs(20),
                || ready(&store) == want,
            )
            .await;
        }
    };

    wait_for(&["10.0.0.1:8080"]).await;
    assert_eq!(api.requests().0, 1, "one initial list");

    // A change arrives over the watch.
    api.apply(ENDPOINT_SLICES, slice("web-a", &["10.0.0.1", "10.0.0.2"]));
    wait_for(&["10.0.0.1:8080", "10.0.0.2:8080"]).await;

    // The watch stream drops: the watcher resumes from its resourceVersion, no relist.
    api.drop_watches();
    api.apply(ENDPOINT_SLICES, slice("web-b", &["10.0.0.3"]));
    wait_for(&["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]).await;
    assert_eq!(api.requests().0, 1, "resumed, not relisted");

    // History compacted while the watch was away: 410 Gone, then a relist.
    api.compact();
    api.drop_watches();
    api.delete(ENDPOINT_SLICES, "default", "web-b");
    wait_for(&["10.0.0.1:8080", "10.0.0.2:8080"]).await;
    assert!(api.requests().0 >= 2, "relisted after 410");

    // The API server goes away: the last known endpoints stay; back, changes flow again.
    api.set_down(true);
    let watches_before = api.requests().1;
    assert_eq!(ready(&store), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    api.set_down(false);
    api.apply(ENDPOINT_SLICES, slice("web-a", &["10.0.0.9"]));
    wait_for(&["10.0.0.9:8080"]).await;
    assert!(api.requests().1 > watches_before);
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
    let marks: Vec<usize> = pods.iter().map(served).collect();
    eventually(
        "only pod3 gets new requests",
        Duration::from_secs(10),
        || {
            let now = served(&pods[3]);
            now > marks[3] + 50
        },
    )
    .await;
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
