//! The `gatehouse` binary run as an operator runs it, for end-to-end tests.
#![allow(dead_code)]

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use super::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

pub struct Running {
    pub child: Child,
    pub http: std::net::SocketAddr,
    /// The HTTPS listener, when the configuration has one.
    pub https: Option<std::net::SocketAddr>,
    pub admin: std::net::SocketAddr,
    /// Every line the binary wrote to stderr (its diagnostics) so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Starts the binary and reads the bound addresses from its start-up log.
pub async fn run(config: &std::path::Path) -> Running {
    run_with(config, &[], Stdio::null()).await
}

/// Starts the binary with extra arguments and reads the bound addresses from its log.
pub async fn run_with(config: &std::path::Path, extra: &[&str], stdout: Stdio) -> Running {
    let mut command = Command::new(BIN);
    command.args(["run", "--config"]).arg(config).args(extra);
    start(command, stdout).await
}

/// The same, with environment variables set for it (POD_NAME and the like).
pub async fn run_with_env(
    config: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
    stdout: Stdio,
) -> Running {
    let mut command = Command::new(BIN);
    command.args(["run", "--config"]).arg(config).args(extra);
    command.envs(env.iter().copied());
    start(command, stdout).await
}

/// Starts the binary with at most `open_files` file descriptors (soft and hard limit).
pub async fn run_limited(config: &std::path::Path, open_files: u64) -> Running {
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={open_files}:{open_files}"))
        .arg(BIN)
        .args(["run", "--config"])
        .arg(config);
    start(command, Stdio::null()).await
}

/// Spawns `command` (the binary, or a wrapper that execs it) and reads the bound addresses
/// from its start-up log.
async fn start(mut command: Command, stdout: Stdio) -> Running {
    let mut child = command
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut http, mut https, mut admin) = (None, None, None);
    let mut start_up = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            start_up.push(line.clone());
            let addr = line
                .split("address=")
                .nth(1)
                .and_then(|a| a.split_whitespace().next()?.parse().ok());
            if line.contains("HTTP listener ready") {
                http = addr;
            } else if line.contains("HTTPS listener ready") {
                // Listeners start in order: HTTP, HTTPS, admin.
                https = addr;
            } else if line.contains("admin listener ready") {
                admin = addr;
            }
            if http.is_some() && admin.is_some() {
                break;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "the binary announced its listeners");
    // Keep draining stderr so the child never blocks on a full pipe.
    let log = std::sync::Arc::new(std::sync::Mutex::new(start_up));
    let keep = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keep.lock().unwrap().push(line);
        }
    });
    Running {
        child,
        http: http.unwrap(),
        https,
        admin: admin.unwrap(),
        log,
    }
}

pub async fn admin_get(c: &TestClient, admin: std::net::SocketAddr, path: &str) -> Got {
    let req = http::Request::get(format!("http://{admin}{path}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    send(c, req).await
}

pub fn signal(child: &Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A failing test shows what the binary said: its diagnostics are the first thing to read.
impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            eprintln!(
                "--- gatehouse (pid {:?}) stderr ---\n{}\n---",
                self.child.id(),
                log.join("\n")
            );
        }
    }
}

/// The binary on `yaml`, ready (see [`start_yaml`]).
pub async fn start_ready(name: &str, yaml: &str) -> Running {
    let (running, _) = start_yaml(name, yaml, &[]).await;
    wait_ready(&running).await;
    running
}

impl Running {
    /// How many stderr lines so far contain `needle`.
    pub fn logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Sends SIGTERM and returns the exit code, failing if the process outlives 15 s.
    pub async fn terminate(mut self) -> Option<i32> {
        signal(&self.child, "-TERM");
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .expect("exits within 15 s of SIGTERM")
            .expect("wait for the process")
            .code()
    }
}

/// Writes `yaml` as `gatehouse.yaml` in a fresh directory and runs the binary on it (with
/// `extra` arguments); returns the running binary and the file.
pub async fn start_yaml(name: &str, yaml: &str, extra: &[&str]) -> (Running, std::path::PathBuf) {
    let config = temp_dir(name).join("gatehouse.yaml");
    std::fs::write(&config, yaml).unwrap();
    (run_with(&config, extra, Stdio::null()).await, config)
}

impl Running {
    /// The value of one metric series from the admin listener (`None`: not exported).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let got = admin_get(&client(), self.admin, "/metrics").await;
        metric_value(&String::from_utf8_lossy(&got.body), series)
    }
}

/// Runs the binary to completion with `args` (and `config` after `--config`).
pub async fn run_to_end(args: &[&str], config: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .await
        .expect("the binary runs")
}

/// Waits for `/readyz` to answer 200 (with Kubernetes: after every watch's first list).
pub async fn wait_ready(running: &Running) {
    let c = client();
    eventually_async("/readyz 200", Duration::from_secs(20), || async {
        admin_get(&c, running.admin, "/readyz").await.status == 200
    })
    .await;
}
