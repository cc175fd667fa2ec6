//! `gatehouse audit` through the binary: a set of real-world Ingresses (the openEuler CLA
//! pair in its v1beta1 forms among them) judged from a file, from standard input and from
//! the Kubernetes API test server, and the verdicts held against what `run` serves.

use std::{collections::BTreeMap, process::Stdio};

use serde_json::Value;
use tokio::{io::AsyncWriteExt, process::Command};

use crate::{
    ingress::{classes, fetch, run_on_with, service, until, Cluster},
    support::{binary::*, kube_api::*, *},
};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/audit-ingresses.yaml"
);

/// Runs `gatehouse audit ARGS` with `stdin`: exit code, stdout, stderr.
async fn audit(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .arg("audit")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("audit ends")
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `namespace/name` → (verdict, notes) from `--output json`.
fn verdicts(json: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let all: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    all.as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let notes = v["notes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect();
            (
                format!(
                    "{}/{}",
                    v["namespace"].as_str().unwrap(),
                    v["name"].as_str().unwrap()
                ),
                (v["verdict"].as_str().unwrap().to_owned(), notes),
            )
        })
        .collect()
}

fn kinds(all: &BTreeMap<String, (String, Vec<String>)>) -> Vec<(&str, &str)> {
    all.iter()
        .map(|(k, (v, _))| (k.as_str(), v.as_str()))
        .collect()
}

const EXPECTED: [(&str, &str); 6] = [
    ("cla/cla-api", "ok"),
    ("cla/cla-web", "ok"),
    ("shop/admin", "refused"),
    ("shop/storefront", "ok"),
    ("shop/uploads", "differs"),
    ("shop/vault", "refused"),
];

#[tokio::test]
async fn audit_judges_a_file_of_ingresses_of_every_version() {
    let (code, out, err) = audit(
        &[
            "--ingresses",
            FIXTURE,
            "--ingress-class",
            "nginx",
            "--output",
            "json",
        ],
        None,
    )
    .await;
    assert_eq!(code, 1, "a refused Ingress makes the exit code 1: {err}");
    let all = verdicts(&out);
    assert_eq!(kinds(&all), EXPECTED);
    let (_, admin) = &all["shop/admin"];
    assert!(
        admin[0].contains("did you mean whitelist-source-range?"),
        "{admin:?}"
    );
    let (_, uploads) = &all["shop/uploads"];
    assert!(uploads[0].contains("proxy-buffer-size"), "{uploads:?}");
    assert!(all["shop/vault"].1[0].contains("--enable-ssl-passthrough"));

    // The table, from standard input; every class when none is named.
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    let (code, table, _) = audit(&["--ingresses", "-"], Some(&text)).await;
    assert_eq!(code, 1);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "VERDICT  INGRESS");
    assert!(lines[1].starts_with("refused  shop/admin"), "{table}");
    assert!(table.contains("ok       other/dashboard"), "{table}");
    assert!(
        table.ends_with("7 Ingresses: 4 ok, 1 differ, 2 refused\n"),
        "{table}"
    );

    // With passthrough allowed, and without the refused admin site: nothing refused, exit 0.
    let without_admin: String = text
        .split("\n---\n")
        .filter(|doc| !doc.contains("name: admin"))
        .collect::<Vec<_>>()
        .join("\n---\n");
    let (code, out, _) = audit(
        &[
            "--ingresses",
            "-",
            "--enable-ssl-passthrough",
            "--output",
            "json",
        ],
        Some(&without_admin),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(verdicts(&out)["shop/vault"].0, "ok");

    // With the controller ConfigMap: its keys Gatehouse does not apply are listed; one that
    // would make every Ingress fail closed refuses them all.
    let dir = temp_dir("audit-configmap");
    let map = |data: &str| {
        let path = dir.join("controller.yaml");
        std::fs::write(&path, format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: ingress-nginx-controller, namespace: ingress-nginx }}\ndata:\n{data}")).unwrap();
        path
    };
    let tuned = map("  hsts-max-age: \"600\"\n  enable-brotli: \"true\"\n");
    let (_, table, _) = audit(
        &[
            "--ingresses",
            FIXTURE,
            "--ingress-class",
            "nginx",
            "--configmap",
            tuned.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(table.contains("The controller ConfigMap:\n  - ConfigMap ingress-nginx/ingress-nginx-controller: key enable-brotli: is not applied"), "{table}");
    assert!(!table.contains("hsts-max-age"), "{table}");
    // A block list that cannot be read refuses every Ingress (a readable one is applied).
    let blocking = map("  block-cidrs: 192.0.2.0/33\n");
    let (code, out, _) = audit(
        &[
            "--ingresses",
            FIXTURE,
            "--ingress-class",
            "nginx",
            "--output",
            "json",
            "--configmap",
            blocking.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert_eq!(code, 1);
    let all = verdicts(&out);
    assert!(
        all.values()
            .all(|(v, notes)| v == "refused" && notes[0].contains("block-cidrs")),
        "{all:?}"
    );

    // Unreadable input: exit 2, naming where.
    let (code, _, err) = audit(&["--ingresses", "-"], Some("{\"items\": [")).await;
    assert_eq!(code, 2);
    assert!(err.contains("not JSON") && err.contains("line 1"), "{err}");
    let (code, _, err) = audit(&["--ingresses", "/nonexistent/ingresses.yaml"], None).await;
    assert_eq!(
        (code, err.contains("/nonexistent/ingresses.yaml")),
        (2, true),
        "{err}"
    );
}

/// Where each fixture Ingress is served, and its answer when served: status and upstream
/// (the storefront forces HTTPS, even on a plain listener, as ingress-nginx does).
const SERVED: [(&str, &str, &str, (u16, &str)); 6] = [
    ("cla/cla-api", "cla.test", "/api/v1", (200, "backend")),
    ("cla/cla-web", "cla.test", "/", (200, "web")),
    ("shop/admin", "admin.test", "/", (200, "web")),
    ("shop/storefront", "shop.test", "/", (308, "")),
    ("shop/uploads", "uploads.test", "/", (200, "web")),
    ("shop/vault", "vault.test", "/", (200, "web")),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_of_a_live_cluster_agrees_with_what_run_serves() {
    let api = KubeApi::start().await;
    classes(&api);
    let (web, backend) = (
        TestUpstream::start("web").await,
        TestUpstream::start("backend").await,
    );
    for ns in ["cla", "shop", "other"] {
        service(&api, ns, "web", &web);
        service(&api, ns, "backend", &backend);
    }
    // The fixture as the API server holds it (v1: it converts the old versions).
    let input =
        gatehouse_discovery::kubernetes::audit::read(&std::fs::read_to_string(FIXTURE).unwrap())
            .unwrap();
    for ingress in &input.ingresses {
        let mut object = serde_json::to_value(ingress).unwrap();
        object["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z".into();
        api.apply(INGRESSES, object);
    }
    let (running, dir) = run_on_with(
        "audit-agrees",
        &[&api],
        "",
        "",
        &["--ingress-class", "nginx"],
        Stdio::null(),
    )
    .await;
    wait_ready(&running).await;
    let cluster = Cluster {
        api,
        running,
        _dir: dir.clone(),
    };
    let kubeconfig = cluster.api.kubeconfig(&dir);
    let (code, out, err) = audit(
        &[
            "--kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--ingress-class",
            "nginx",
            "--output",
            "json",
        ],
        None,
    )
    .await;
    assert_eq!(code, 1, "{err}");
    let all = verdicts(&out);
    assert_eq!(kinds(&all), EXPECTED, "the live cluster reads as the file");
    for (ingress, host, path, served) in SERVED {
        let want = match all[ingress].0.as_str() {
            "refused" => (503, ""),
            _ => served,
        };
        until(
            &cluster,
            &format!("{ingress} is served as audited"),
            host,
            path,
            want,
        )
        .await;
        assert_eq!(
            fetch(&cluster, host, path).await,
            (want.0, want.1.to_owned()),
            "{ingress}"
        );
    }
    // The admin's /ingresses view says what `gatehouse audit` says.
    let view = admin_get(&client(), cluster.running.admin, "/ingresses").await;
    assert_eq!(view.headers["content-type"], "application/json");
    let served = verdicts(&String::from_utf8_lossy(&view.body));
    assert_eq!(served, all, "the admin view and the audit agree");
    // The verdicts as metrics, beside the build and the process.
    for (verdict, n) in [("ok", 3.0), ("differs", 1.0), ("refused", 2.0)] {
        let series = format!("gatehouse_ingresses{{verdict=\"{verdict}\"}}");
        assert_eq!(cluster.running.metric(&series).await, Some(n), "{series}");
    }
    let version = format!(
        "gatehouse_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(cluster.running.metric(&version).await, Some(1.0));
    assert!(
        cluster
            .running
            .metric("gatehouse_process_resident_memory_bytes")
            .await
            .unwrap_or(0.0)
            > 1e6
    );
    assert_eq!(cluster.running.terminate().await, Some(0));
}
