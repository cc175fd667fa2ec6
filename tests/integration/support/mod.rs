//! Test harness: real upstream servers, the proxy under test and an HTTP client, all on
//! 127.0.0.1 with ports chosen by the kernel.
#![allow(dead_code)]

pub mod h2raw;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use gatehouse_proxy::{Gatehouse, Metrics};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// A real HTTP/1.1 upstream. Paths:
/// - `/delay/<ms>`: waits, then answers like the default;
/// - `/bytes/<n>`: streams n bytes of body;
/// - `/stall/<n>`: promises 2n bytes, sends n, then nothing, never ending;
/// - `/upgrade`: switches to an echo protocol;
/// - `/upgrade-linger`: the same, but once the client's side ends it neither sends nor
///   closes;
/// - anything else: JSON echo of method, uri, headers, body size and the upstream's name.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub name: String,
    pub connections: Arc<AtomicUsize>,
    /// Connections open now (accepted and not yet closed by either side).
    pub open: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
}

impl TestUpstream {
    pub async fn start(name: &str) -> Self {
        Self::start_at(name, "127.0.0.1:0").await
    }

    /// A test upstream listening on `bind` (another loopback address plays another pod).
    pub async fn start_at(name: &str, bind: &str) -> Self {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (conns, reqs, n) = (connections.clone(), requests.clone(), name.to_owned());
        let now_open = open.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::Relaxed);
                now_open.fetch_add(1, Ordering::Relaxed);
                let (reqs, n, now_open) = (reqs.clone(), n.clone(), now_open.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        reqs.fetch_add(1, Ordering::Relaxed);
                        upstream_handler(n.clone(), req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                    now_open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        TestUpstream {
            addr,
            name: name.to_owned(),
            connections,
            open,
            requests,
        }
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn upstream_handler(
    name: String,
    mut req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if let Some(ms) = path.strip_prefix("/delay/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let total: u64 = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_stream(total, chunk);
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        resp.headers_mut().insert("content-length", total.into());
        return Ok(resp);
    }
    if let Some(n) = path.strip_prefix("/stall/") {
        let sent: u64 = n.parse().unwrap_or(0);
        let stream = futures_stream(sent, Bytes::from(vec![b'x'; 64 * 1024]));
        let stalled = futures_util::StreamExt::chain(stream, futures_util::stream::pending());
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stalled)));
        resp.headers_mut()
            .insert("content-length", (2 * sent).into());
        return Ok(resp);
    }
    if path == "/upgrade" || path == "/upgrade-linger" {
        let on = hyper::upgrade::on(&mut req);
        let linger = path == "/upgrade-linger";
        tokio::spawn(async move {
            if let Ok(upgraded) = on.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                if linger {
                    std::future::pending::<()>().await;
                }
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()).boxed());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        resp.headers_mut()
            .insert("upgrade", "echo".parse().unwrap());
        return Ok(resp);
    }
    let (parts, body) = req.into_parts();
    let mut size = 0usize;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => size += f.data_ref().map_or(0, |d| d.len()),
            Err(_) => break,
        }
    }
    let headers = gatehouse_proxy::demo::headers_json(&parts.headers);
    let json = serde_json::json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body_bytes": size,
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())).boxed());
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    Ok(resp)
}

fn futures_stream(
    total: u64,
    chunk: Bytes,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    struct Chunks {
        left: u64,
        chunk: Bytes,
    }
    impl futures_core::Stream for Chunks {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            let n = self.left.min(self.chunk.len() as u64) as usize;
            self.left -= n as u64;
            std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
        }
    }
    Chunks { left: total, chunk }
}

/// The proxy under test, started in-process from YAML (listen on port 0).
pub struct Proxy {
    pub gatehouse: Gatehouse,
    pub addr: SocketAddr,
}

impl Proxy {
    pub async fn start(yaml: &str) -> Self {
        Self::start_on(yaml, false).await
    }

    /// Starts the proxy; `Proxy::addr` is its HTTPS listener if `https`, else its HTTP one.
    pub async fn start_on(yaml: &str, https: bool) -> Self {
        let config = gatehouse_config::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
        Self::start_config(config, https).await
    }

    /// Starts the proxy from a parsed configuration (its HTTP listener is `addr`).
    pub async fn start_with_config(config: gatehouse_config::Config) -> Self {
        Self::start_config(config, false).await
    }

    async fn start_config(config: gatehouse_config::Config, https: bool) -> Self {
        let gatehouse = Gatehouse::start(config, Metrics::new())
            .await
            .expect("starts");
        gatehouse.set_ready(true);
        let addr = if https {
            gatehouse.https_addr().await
        } else {
            gatehouse.http_addr().await
        };
        Proxy {
            gatehouse,
            addr: addr.expect("listener"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The value of one series (`name{label="value",...}`, labels in any order), 0 when
    /// the proxy has not exported it yet (a labelled counter that never counted).
    pub fn metric(&self, series: &str) -> f64 {
        self.metric_opt(series).unwrap_or(0.0)
    }

    /// The value of one series, `None` when it is not exported.
    pub fn metric_opt(&self, series: &str) -> Option<f64> {
        let (_, text) = self.gatehouse.metrics().encode();
        metric_value(&String::from_utf8(text).unwrap(), series)
    }
}

/// The value of `series` in Prometheus text, `None` when absent. The series is parsed
/// whole (a malformed one, such as a bare prefix, fails the test rather than matching
/// nothing), labels compare in any order, and a value that does not parse fails the test.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    let want = parse_series(series).unwrap_or_else(|| panic!("not a metric series: {series}"));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            let got =
                parse_series(name).unwrap_or_else(|| panic!("unparsable line in /metrics: {line}"));
            (got == want).then(|| {
                value
                    .parse::<f64>()
                    .unwrap_or_else(|e| panic!("{line}: value does not parse: {e}"))
            })
        })
}

/// `name{k="v",...}` as (name, labels); `None` when it is not that shape.
fn parse_series(s: &str) -> Option<(String, std::collections::BTreeMap<String, String>)> {
    let (name, rest) = match s.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}')?),
        None => (s, ""),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut labels = std::collections::BTreeMap::new();
    let mut rest = rest;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => value.push(chars.next()?.1),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Some((name.to_owned(), labels))
}

/// A fresh directory for one test's files (configurations, certificates, kubeconfigs).
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gatehouse-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A finished response: status, headers and the whole body.
pub struct Got {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends a request with the given Host and returns the whole response.
pub async fn get(client: &TestClient, proxy: &Proxy, host: &str, path: &str) -> Got {
    let req = Request::get(proxy.url(path))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(client, req).await
}

pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Got {
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("response within 20 s")
        .expect("request succeeds");
    collect(resp).await
}

pub async fn collect(resp: Response<Incoming>) -> Got {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Waits for `cond` to hold, polling, or fails after `deadline`.
pub async fn eventually(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for an async condition to hold, polling, or fails after `deadline`.
pub async fn eventually_async<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An address nothing listens on (bound, then closed).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Sends one request from a chosen local address (127.0.0.2, 127.0.0.3, ::1, ... play
/// different clients), after `preface` bytes (a PROXY protocol header, say). `None` means
/// the proxy closed the connection without answering.
pub async fn request_from(
    local_ip: &str,
    proxy: SocketAddr,
    preface: &[u8],
    req: Request<Full<Bytes>>,
) -> Option<Got> {
    let local: std::net::IpAddr = local_ip.parse().unwrap();
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4().unwrap()
    } else {
        tokio::net::TcpSocket::new_v6().unwrap()
    };
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    if !preface.is_empty() {
        stream.write_all(preface).await.ok()?;
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("an answer or a close within 10 s")
        .ok()?;
    Some(collect(resp).await)
}

/// A plain GET for `host` from 127.0.0.1 on a fresh connection; fails the test if the
/// proxy closes without answering.
pub async fn get_at(addr: SocketAddr, host: &str, path: &str) -> Got {
    request_from("127.0.0.1", addr, b"", get_req(host, path, &[]))
        .await
        .unwrap_or_else(|| panic!("no answer for {host}{path}"))
}

/// A request written by hand (so the target and headers go out exactly as given; clients
/// normalise `//` and `..` themselves) from a chosen local address on a fresh connection,
/// read until the proxy closes it: the status code and the body.
pub async fn raw_request(addr: SocketAddr, from: &str, request: &str) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer and a close within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// A GET for `host` with extra headers.
/// A GET for `path` at the proxy `addr`, naming `host`, for the pooled [`client`].
pub fn get_req_at(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut req = get_req(host, path, headers);
    *req.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
    req
}

pub fn get_req(host: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

pub mod dns;
pub mod tls;

pub mod kube_api;

pub mod binary;

/// Steady load: `clients` HTTP clients sending GETs for `host` to `addr` back to back,
/// counting answers that were 200 and those that were not (or did not come within 5 s).
pub struct SteadyLoad {
    running: Arc<std::sync::atomic::AtomicBool>,
    pub ok: Arc<AtomicUsize>,
    pub failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SteadyLoad {
    pub fn start(clients: usize, addr: SocketAddr, host: &'static str) -> Self {
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (running, ok, failed) = (running.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let c = client();
                    while running.load(Ordering::Relaxed) {
                        let req = Request::get(format!("http://{addr}/"))
                            .header("host", host)
                            .body(Full::new(Bytes::new()))
                            .unwrap();
                        match tokio::time::timeout(Duration::from_secs(5), c.request(req)).await {
                            Ok(Ok(r)) if r.status() == 200 => {
                                let _ = r.into_body().collect().await;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        SteadyLoad {
            running,
            ok,
            failed,
            tasks,
        }
    }

    /// Stops the clients and waits for their last requests; returns (ok, failed).
    pub async fn stop(self) -> (usize, usize) {
        self.running.store(false, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The resident set size of a process now (VmRSS) and its peak so far (VmHWM), in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A cleartext HTTP/2 (prior knowledge) client connection to `addr`, and its running
/// connection task.
pub async fn h2_connect<B>(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<B>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (h2, tokio::spawn(conn))
}
