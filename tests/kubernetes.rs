//! Kubernetes discovery against the test API server, through the real kube-rs client.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use gatehouse_discovery::kubernetes::{
    endpoints::SERVICE_NAME_LABEL, PortRef, ServiceKey, SliceStore,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use support::{kube_api::*, *};

fn slice(name: &str, ips: &[&str]) -> serde_json::Value {
    json!({
        "metadata": { "namespace": "default", "name": name, "labels": { SERVICE_NAME_LABEL: "web" } },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080 }],
        "endpoints": ips.iter().map(|ip| json!({ "addresses": [ip], "conditions": { "ready": true } })).collect::<Vec<_>>(),
    })
}

async fn client(api: &KubeApi) -> kube::Client {
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
        kube::Api::<EndpointSlice>::all(client(&api).await),
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
