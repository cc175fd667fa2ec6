//! Endpoints written as names, resolved through a DNS server the test runs: the answer's
//! change is followed within its TTL, and a name that stops resolving keeps its last
//! addresses (said once in the log).

use std::time::Duration;

use crate::support::{binary::*, dns::dns_server, *};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_endpoints_follow_their_dns_answers() {
    let first = TestUpstream::start_at("first", "127.0.0.2:0").await;
    let port = first.addr.port();
    let _second = TestUpstream::start_at("second", &format!("127.0.0.3:{port}")).await;
    let (dns, zone) = dns_server().await;
    zone.lock()
        .unwrap()
        .insert("app.internal".into(), vec![[127, 0, 0, 2].into()]);
    let running = start_ready(
        "named-endpoints",
        &format!(
            r#"listen: {{ http: "127.0.0.1:0", admin: "127.0.0.1:0" }}
shutdown: {{ drain_delay: 0s }}
access_log: off
resolver: {{ servers: ["{dns}"] }}
services: {{ app: {{ endpoints: ["app.internal:{port}"] }} }}
routes:
  - {{ host: a.test, paths: [{{ path: /, service: app }}] }}
"#
        ),
    )
    .await;
    let upstream = || async {
        let got = send(&client(), get_req_at(running.http, "a.test", "/", &[])).await;
        serde_json::from_slice::<serde_json::Value>(&got.body)
            .ok()
            .and_then(|v| v["upstream"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("status {}", got.status))
    };
    let wait = Duration::from_secs(10);
    eventually_async("the name's first address serves", wait, || async {
        upstream().await == "first"
    })
    .await;
    // The answer changes: followed once its TTL (1 s) runs out.
    zone.lock()
        .unwrap()
        .insert("app.internal".into(), vec![[127, 0, 0, 3].into()]);
    eventually_async("the new address serves", wait, || async {
        upstream().await == "second"
    })
    .await;
    // The name is gone: the last addresses keep serving, and the log says why once.
    zone.lock().unwrap().clear();
    eventually("the failure is logged", wait, || {
        running.logged("cannot resolve app.internal") >= 1
    })
    .await;
    for _ in 0..3 {
        assert_eq!(upstream().await, "second");
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        running.logged("cannot resolve app.internal"),
        1,
        "said once, not per retry"
    );
    assert_eq!(upstream().await, "second");
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test]
async fn check_reads_names_and_refuses_what_is_neither_address_nor_name() {
    let dir = temp_dir("named-endpoints-check");
    let config = dir.join("gatehouse.yaml");
    std::fs::write(
        &config,
        "listen: { http: \"127.0.0.1:0\" }\nservices: { db: { endpoints: [\"db.internal:5432\", \"bad name:1\"] } }\nroutes:\n  - { host: a.test, paths: [{ path: /, service: db }] }\n",
    )
    .unwrap();
    let out = run_to_end(&["check"], &config).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("gatehouse.yaml:2:51")
            && said.contains("`bad name:1` is not IP:port or name:port"),
        "{said}"
    );
    assert!(
        said.contains("1 error(s)"),
        "the name itself is fine: {said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_name_service_is_its_dns_name_until_it_has_pods() {
    use crate::ingress::{classes, path, plain, run_on, service};
    use crate::support::kube_api::{KubeApi, INGRESSES, SERVICES};
    let first = TestUpstream::start_at("first", "127.0.0.2:0").await;
    let port = first.addr.port();
    let _second = TestUpstream::start_at("second", &format!("127.0.0.3:{port}")).await;
    let pod = TestUpstream::start("pod").await;
    let (dns, zone) = dns_server().await;
    zone.lock().unwrap().insert(
        "legacy.example.internal".into(),
        vec![[127, 0, 0, 2].into()],
    );
    let api = KubeApi::start().await;
    classes(&api);
    let (running, _dir) = run_on(
        "external-name",
        &[&api],
        "",
        &format!("resolver: {{ servers: [\"{dns}\"] }}\n"),
    )
    .await;
    wait_ready(&running).await;
    api.apply(
        SERVICES,
        serde_json::json!({
            "metadata": { "namespace": "shop", "name": "legacy" },
            "spec": { "type": "ExternalName", "externalName": "legacy.example.internal.", "ports": [{ "name": "http", "port": port }] },
        }),
    );
    api.apply(
        INGRESSES,
        plain(
            "shop",
            "legacy",
            "legacy.example.com",
            serde_json::json!([path("/", "Prefix", "legacy")]),
        ),
    );
    let upstream = || async {
        let got = send(
            &client(),
            get_req_at(running.http, "legacy.example.com", "/", &[]),
        )
        .await;
        serde_json::from_slice::<serde_json::Value>(&got.body)
            .ok()
            .and_then(|v| v["upstream"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("status {}", got.status))
    };
    let wait = Duration::from_secs(15);
    eventually_async("the ExternalName's address serves", wait, || async {
        upstream().await == "first"
    })
    .await;
    zone.lock().unwrap().insert(
        "legacy.example.internal".into(),
        vec![[127, 0, 0, 3].into()],
    );
    eventually_async("its new address serves", wait, || async {
        upstream().await == "second"
    })
    .await;
    // The Service becomes an ordinary one with a pod: the routes follow.
    service(&api, "shop", "legacy", &pod);
    eventually_async("the pod serves", wait, || async {
        upstream().await == "pod"
    })
    .await;
    assert_eq!(running.terminate().await, Some(0));
}
