//! Ingress status through the binary against the Kubernetes API test server: two replicas
//! elect one writer through a Lease, the addresses reach every Ingress of the class, leave
//! one that changes class, and a survivor takes over when the writer dies.

use std::{collections::BTreeSet, process::Stdio, time::Duration};

use serde_json::{json, Value};

use crate::{
    ingress::{classes, ingress, path, run_on_with},
    support::{binary::*, kube_api::*, *},
};

const WAIT: Duration = Duration::from_secs(20);

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
    assert!(leader.logged("status set to") >= 2);
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
