//! Configuration reloads under load: valid files replace the configuration, invalid ones
//! change nothing, and no request fails either way.

use std::{path::Path, sync::Arc, time::Duration};

use crate::support::*;
use gatehouse_discovery::{load_file, FileWatcher};
use gatehouse_proxy::{Gatehouse, Metrics};
use tokio_util::sync::CancellationToken;

fn valid(version: usize, a: std::net::SocketAddr, b: std::net::SocketAddr) -> String {
    // Alternate the endpoint set too, so reloads also swap upstreams under load.
    let endpoints = if version % 4 == 1 {
        format!("\"{a}\"")
    } else {
        format!("\"{a}\", \"{b}\"")
    };
    format!(
        r#"listen: {{ http: "127.0.0.1:0" }}
access_log: off
services: {{ web: {{ endpoints: [{endpoints}] }} }}
routes:
  - host: r.example.com
    response_headers: {{ X-Version: "{version}" }}
    paths: [{{ path: /, service: web }}]
"#
    )
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_valid_and_invalid_under_load_lose_no_request() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let dir = std::env::temp_dir().join(format!("gatehouse-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gatehouse.yaml");
    write_atomically(&file, &valid(0, a.addr, b.addr));

    let gatehouse = Arc::new(
        Gatehouse::start(load_file(&file).unwrap(), Metrics::new())
            .await
            .unwrap(),
    );
    let addr = gatehouse.http_addr().await.unwrap();
    let stop = CancellationToken::new();
    let mut updates = FileWatcher::new(&file)
        .interval(Duration::from_millis(5))
        .spawn(stop.clone());
    let follower = gatehouse.clone();
    tokio::spawn(async move { follower.follow(&mut updates).await });

    // Steady load: four clients sending requests back to back.
    let load = SteadyLoad::start(4, addr, "r.example.com");

    let reloads = |result: &str| {
        let (_, text) = gatehouse.metrics().encode();
        let line = format!("gatehouse_config_reloads_total{{result=\"{result}\"}} ");
        String::from_utf8(text)
            .unwrap()
            .lines()
            .find_map(|l| {
                l.strip_prefix(line.as_str())
                    .map(|v| v.parse::<u64>().unwrap())
            })
            .unwrap_or(0)
    };
    let mut last_valid = 0;
    for i in 1..=100usize {
        if i % 2 == 1 {
            write_atomically(&file, &valid(i, a.addr, b.addr));
            last_valid = i;
        } else {
            write_atomically(
                &file,
                &format!("{}\nroutez: [] # broken {i}\n", valid(i, a.addr, b.addr)),
            );
        }
        let (want_ok, want_err) = (i.div_ceil(2) as u64, (i / 2) as u64);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while reloads("success") < want_ok || reloads("error") < want_err {
            assert!(
                tokio::time::Instant::now() < deadline,
                "reload {i} not observed"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let (ok, failed) = load.stop().await;
    stop.cancel();
    assert_eq!(reloads("success"), 50);
    assert_eq!(reloads("error"), 50);
    assert_eq!(failed, 0, "no request may fail across reloads");
    assert!(ok > 100, "load actually ran: {ok}");
    // The last valid file is what serves, the invalid one after it changed nothing.
    let req = http::Request::get(format!("http://{addr}/"))
        .header("host", "r.example.com")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let got = send(&client(), req).await;
    assert_eq!(got.headers["x-version"], last_valid.to_string());
    let _ = std::fs::remove_dir_all(&dir);
}

fn served_yaml(http: &str, up: std::net::SocketAddr, generation: &str) -> String {
    format!(
        "listen: {{ http: \"{http}\", admin: \"127.0.0.1:0\" }}\naccess_log: off\nshutdown: {{ drain_delay: 0s }}\nservices: {{ web: {{ endpoints: [\"{up}\"] }} }}\nroutes: [{{ host: r.example.com, response_headers: {{ X-Gen: \"{generation}\" }}, paths: [{{ path: /, service: web }}] }}]\n"
    )
}

/// The status of one GET for `r.example.com` over an open connection.
async fn status_over(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
) -> http::StatusCode {
    sender
        .send_request(get_req("r.example.com", "/", &[]))
        .await
        .expect("the connection carries the request")
        .status()
}

/// The X-Gen header of an answer on `port`; `None` while nothing listens there.
async fn generation_on(port: u16) -> Option<String> {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let got = request_from(
        "127.0.0.1",
        ([127, 0, 0, 1], port).into(),
        b"",
        get_req("r.example.com", "/", &[]),
    )
    .await?;
    Some(got.headers.get("x-gen")?.to_str().ok()?.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_an_unbindable_port_is_refused_and_a_moved_listener_moves() {
    use crate::support::binary::*;
    let up = TestUpstream::start("up").await;
    let p1 = free_port().await;
    let (running, file) = start_yaml(
        "move-listener",
        &served_yaml(&format!("127.0.0.1:{p1}"), up.addr, "one"),
        &[],
    )
    .await;
    wait_ready(&running).await;
    assert_eq!(generation_on(p1).await.as_deref(), Some("one"));
    // A keep-alive connection opened on the old port before the move.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", p1))
        .await
        .unwrap();
    let (mut early, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    assert_eq!(status_over(&mut early).await, 200);

    // A port something else holds: the reload is refused, the old listener keeps serving.
    let holder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = holder.local_addr().unwrap();
    write_atomically(&file, &served_yaml(&taken.to_string(), up.addr, "two"));
    let errors = r#"gatehouse_config_reloads_total{result="error"}"#;
    eventually_async(
        "the unbindable reload is refused",
        Duration::from_secs(10),
        || async { running.metric(errors).await == Some(1.0) },
    )
    .await;
    assert_eq!(
        generation_on(p1).await.as_deref(),
        Some("one"),
        "nothing changed"
    );
    eventually("the log names the port", Duration::from_secs(5), || {
        running.logged(&taken.to_string()) >= 1
    })
    .await;

    // A free port: the listener moves; the old port stops accepting new connections.
    let p3 = free_port().await;
    write_atomically(
        &file,
        &served_yaml(&format!("127.0.0.1:{p3}"), up.addr, "three"),
    );
    eventually_async("the new port serves", Duration::from_secs(10), || async {
        generation_on(p3).await.as_deref() == Some("three")
    })
    .await;
    eventually_async(
        "the old port is closed",
        Duration::from_secs(10),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", p1))
                .await
                .is_err()
        },
    )
    .await;
    // The connection accepted before the move still carries requests.
    assert_eq!(status_over(&mut early).await, 200);
    assert_eq!(running.metric(errors).await, Some(1.0));
    assert_eq!(running.terminate().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_by_symlink_swap_is_applied() {
    use crate::support::binary::*;
    use std::os::unix::fs::symlink;
    let up = TestUpstream::start("up").await;
    // The kubelet's layout of a mounted ConfigMap: the file is a link into `..data`, itself
    // a link to a timestamped directory that an update replaces by renaming a new link.
    let dir = temp_dir("configmap-swap");
    let version = |name: &str, generation: &str| {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(
            dir.join(name).join("gatehouse.yaml"),
            served_yaml("127.0.0.1:0", up.addr, generation),
        )
        .unwrap();
    };
    version("..2026_12_01_a", "one");
    symlink("..2026_12_01_a", dir.join("..data")).unwrap();
    symlink("..data/gatehouse.yaml", dir.join("gatehouse.yaml")).unwrap();
    let running = run(&dir.join("gatehouse.yaml")).await;
    wait_ready(&running).await;
    let port = running.http.port();
    assert_eq!(generation_on(port).await.as_deref(), Some("one"));

    version("..2026_12_01_b", "two");
    symlink("..2026_12_01_b", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..2026_12_01_a")).unwrap();
    eventually_async(
        "the swapped file is applied",
        Duration::from_secs(10),
        || async { generation_on(port).await.as_deref() == Some("two") },
    )
    .await;
    assert_eq!(running.terminate().await, Some(0));
}
