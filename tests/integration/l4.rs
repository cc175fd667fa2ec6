//! L4 exposure: raw TCP and UDP through the proxy, with real sockets on loopback
//! addresses (127.0.0.2, 127.0.0.3, ... play different clients).

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use crate::support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream, UdpSocket},
    time::Instant,
};

const WAIT: Duration = Duration::from_secs(10);

/// A TCP echo server: echoes until the client shuts its side, then writes `bye <n>` (the
/// bytes it got) and closes. With `proxy_v2`, it first reads a PROXY v2 header and echoes
/// `from <client address>` instead.
struct TcpEcho {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl TcpEcho {
    async fn start(proxy_v2: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    if proxy_v2 {
                        let mut buf = vec![0u8; 256];
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        let parsed = proxy_header::ProxyHeader::parse(
                            &buf[..n],
                            proxy_header::ParseConfig::default(),
                        );
                        let text = match parsed {
                            Ok((h, _)) => format!(
                                "from {}",
                                h.proxied_address()
                                    .map(|a| a.source.to_string())
                                    .unwrap_or_default()
                            ),
                            Err(e) => format!("no header: {e:?}"),
                        };
                        let _ = s.write_all(text.as_bytes()).await;
                        return;
                    }
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total = 0u64;
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                total += n as u64;
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = s.write_all(format!("bye {total}").as_bytes()).await;
                });
            }
        });
        TcpEcho { addr, connections }
    }
}

/// A UDP echo server: answers each datagram with `<name>:<datagram>` and notes the source
/// addresses it saw (one per proxy session).
struct UdpEcho {
    addr: SocketAddr,
    peers: Arc<Mutex<BTreeSet<SocketAddr>>>,
}

impl UdpEcho {
    async fn start(name: &'static str) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(BTreeSet::new()));
        let seen = peers.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                seen.lock().unwrap().insert(from);
                let mut reply = format!("{name}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, from).await;
            }
        });
        UdpEcho { addr, peers }
    }

    fn sessions(&self) -> usize {
        self.peers.lock().unwrap().len()
    }
}

/// The proxy with one `l4` entry (plus an HTTP listener the harness needs).
async fn proxy_with(l4: &str, endpoints: &[SocketAddr]) -> (Proxy, SocketAddr) {
    proxy_with_top("", l4, endpoints).await
}

/// Like [`proxy_with`], with extra top-level configuration lines.
async fn proxy_with_top(top: &str, l4: &str, endpoints: &[SocketAddr]) -> (Proxy, SocketAddr) {
    let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    let yaml = format!(
        "{top}listen: {{ http: \"127.0.0.1:0\" }}\naccess_log: off\ntimeouts: {{ connect: 1s }}\nshutdown: {{ drain_delay: 0s, grace_period: 300ms }}\nservices: {{ backend: {{ endpoints: [{}] }} }}\nl4:\n  - {{ listen: \"127.0.0.1:0\", service: backend, {l4} }}\n",
        list.join(", ")
    );
    let proxy = Proxy::start(&yaml).await;
    let addr = proxy.gatehouse.l4_addrs().await[0];
    (proxy, addr)
}

async fn tcp_from(local: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the proxy closes the connection and returns what arrived; fails the test
/// if it is still open after `WAIT`. A reset counts as closed.
async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    read_until_closed(s, WAIT).await
}

async fn read_until_closed(s: &mut TcpStream, deadline: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after {deadline:?} (got {:?})",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn tcp_round_trips_with_half_close_and_retries_past_a_refusing_endpoint() {
    let echo = TcpEcho::start(false).await;
    let dead = dead_addr().await;
    let (proxy, addr) = proxy_with("protocol: tcp", &[dead, echo.addr]).await;
    for i in 0..10 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let msg = format!("hello {i}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg.as_bytes());
        // Half-close: our side is done writing, and the rest still comes back.
        s.shutdown().await.unwrap();
        assert_eq!(
            read_to_end(&mut s).await,
            format!("bye {}", msg.len()).as_bytes()
        );
    }
    assert_eq!(echo.connections.load(Ordering::Relaxed), 10);
    let label = "tcp/127.0.0.1:0";
    assert_eq!(
        proxy.metric(&format!(
            "gatehouse_l4_connections_total{{listener=\"{label}\"}}"
        )),
        10.0
    );
    eventually("bytes counted once the connections end", WAIT, || {
        proxy.metric(&format!(
            "gatehouse_l4_bytes_total{{direction=\"out\",listener=\"{label}\"}}"
        )) > 0.0
    })
    .await;
    assert!(
        proxy.metric("gatehouse_upstream_connect_errors_total{service=\"backend\"}") >= 1.0,
        "the refusing endpoint was tried and counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_moves_a_gibibyte_each_way_intact() {
    const TOTAL: u64 = 1 << 30;
    let echo = TcpEcho::start(false).await;
    let (_proxy, addr) = proxy_with("protocol: tcp", &[echo.addr]).await;
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    // A cheap position-dependent checksum: a reordered, lost or repeated chunk changes it.
    fn fold(sum: u64, chunk: &[u8]) -> u64 {
        chunk.chunks(8).fold(sum, |acc, w| {
            let mut word = [0u8; 8];
            word[..w.len()].copy_from_slice(w);
            acc.rotate_left(5) ^ u64::from_le_bytes(word)
        })
    }
    let writer = tokio::spawn(async move {
        let mut sum = 0u64;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        while sent < TOTAL {
            for w in chunk.chunks_mut(8) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                w.copy_from_slice(&seed.to_le_bytes());
            }
            sum = fold(sum, &chunk);
            wr.write_all(&chunk).await.unwrap();
            sent += chunk.len() as u64;
        }
        wr.shutdown().await.unwrap();
        sum
    });
    let mut sum = 0u64;
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    // The echo's reply ends with `bye <n>` after the data; keep whole 8-byte words aligned.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = rd.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        let usable = ((TOTAL - got).min(pending.len() as u64) as usize) / 8 * 8;
        sum = fold(sum, &pending[..usable]);
        got += usable as u64;
        pending.drain(..usable);
    }
    let sent_sum = writer.await.unwrap();
    assert_eq!(got, TOTAL, "every byte came back");
    assert_eq!(sum, sent_sum, "in order and intact");
    assert_eq!(
        pending,
        format!("bye {TOTAL}").as_bytes(),
        "and the upstream got them all"
    );
}

#[tokio::test]
async fn tcp_idle_connections_are_closed_after_idle() {
    let echo = TcpEcho::start(false).await;
    let (_proxy, addr) = proxy_with("protocol: tcp, idle: 300ms", &[echo.addr]).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.unwrap();
    let quiet_from = Instant::now();
    assert!(read_to_end(&mut s).await.is_empty(), "closed without data");
    let after = quiet_from.elapsed();
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_secs(5),
        "closed after the idle timeout, not before: {after:?}"
    );
}

#[tokio::test]
async fn tcp_allow_list_closes_others_before_any_upstream_connect() {
    let echo = TcpEcho::start(false).await;
    let (proxy, addr) = proxy_with("protocol: tcp, allow: \"127.0.0.2/32\"", &[echo.addr]).await;
    let mut denied = tcp_from("127.0.0.3", addr).await;
    let _ = denied.write_all(b"let me in").await;
    assert!(
        read_until_closed(&mut denied, Duration::from_secs(2))
            .await
            .is_empty(),
        "closed at once, without data"
    );
    assert_eq!(
        echo.connections.load(Ordering::Relaxed),
        0,
        "upstream never contacted"
    );
    assert_eq!(
        proxy.metric("gatehouse_denied_total{reason=\"allowlist\"}"),
        1.0
    );

    let mut allowed = tcp_from("127.0.0.2", addr).await;
    allowed.write_all(b"hi").await.unwrap();
    allowed.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut allowed).await, b"hibye 2");
}

#[tokio::test]
async fn tcp_sends_a_proxy_v2_header_the_upstream_can_parse() {
    let upstream = TcpEcho::start(true).await;
    let (_proxy, addr) = proxy_with(
        "protocol: tcp, proxy_protocol_upstream: true",
        &[upstream.addr],
    )
    .await;
    let mut s = tcp_from("127.0.0.2", addr).await;
    let local = s.local_addr().unwrap();
    assert_eq!(
        read_to_end(&mut s).await,
        format!("from {local}").as_bytes()
    );
}

#[tokio::test]
async fn tcp_takes_the_client_from_a_trusted_proxy_header_and_applies_the_allow_list_to_it() {
    let upstream = TcpEcho::start(true).await;
    let (proxy, addr) = proxy_with_top(
        "trusted_proxies: [\"127.0.0.9/32\"]\n",
        "protocol: tcp, proxy_protocol: true, proxy_protocol_upstream: true, allow: \"10.1.0.0/16\"",
        &[upstream.addr],
    )
    .await;
    let header = |source: &str| {
        let mut out = Vec::new();
        proxy_header::ProxyHeader::with_address(proxy_header::ProxiedAddress::stream(
            source.parse().unwrap(),
            addr,
        ))
        .encode_v2(&mut out)
        .unwrap();
        out
    };
    // From the load balancer, for an allowed client: the upstream sees that client.
    let mut s = tcp_from("127.0.0.9", addr).await;
    s.write_all(&header("10.1.2.3:4567")).await.unwrap();
    assert_eq!(read_to_end(&mut s).await, b"from 10.1.2.3:4567");
    // The same load balancer for a client outside the allow-list: closed.
    let mut s = tcp_from("127.0.0.9", addr).await;
    s.write_all(&header("10.2.0.1:4567")).await.unwrap();
    assert!(read_to_end(&mut s).await.is_empty());
    // Anyone else may not claim a source at all.
    let mut s = tcp_from("127.0.0.3", addr).await;
    let _ = s.write_all(&header("10.1.2.3:4567")).await;
    assert!(read_to_end(&mut s).await.is_empty());
    assert_eq!(upstream.connections.load(Ordering::Relaxed), 1);
    assert_eq!(
        proxy.metric("gatehouse_denied_total{reason=\"allowlist\"}"),
        1.0
    );
    assert_eq!(
        proxy.metric("gatehouse_denied_total{reason=\"untrusted_proxy\"}"),
        1.0
    );
}

#[tokio::test]
async fn tcp_connection_limit_holds_further_clients_until_one_leaves() {
    let echo = TcpEcho::start(false).await;
    let (_proxy, addr) = proxy_with("protocol: tcp, max_connections: 2", &[echo.addr]).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"a").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        open.push(s);
    }
    // The kernel completes the third handshake, but Gatehouse does not take it yet.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(b"c").await.unwrap();
    let mut b = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read_exact(&mut b)).await;
    assert!(early.is_err(), "held while two connections are open");
    assert_eq!(echo.connections.load(Ordering::Relaxed), 2);
    drop(open.pop());
    tokio::time::timeout(WAIT, third.read_exact(&mut b))
        .await
        .expect("served once one left")
        .unwrap();
    assert_eq!(&b, b"c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_come_and_go_with_reloads_while_another_carries_traffic() {
    let echo = TcpEcho::start(false).await;
    let (p1, p2) = (free_port().await, free_port().await);
    let config = |with_second: bool| {
        let second = if with_second {
            format!("  - {{ listen: \"127.0.0.1:{p2}\", protocol: tcp, service: backend }}\n")
        } else {
            String::new()
        };
        gatehouse_config::parse(
            &format!(
                "listen: {{ http: \"127.0.0.1:0\" }}\naccess_log: off\nservices: {{ backend: {{ endpoints: [\"{}\"] }} }}\nl4:\n  - {{ listen: \"127.0.0.1:{p1}\", protocol: tcp, service: backend }}\n{second}",
                echo.addr
            ),
            "test.yaml",
        )
        .unwrap()
    };
    let proxy = Proxy::start_with_config(config(false)).await;
    let mut steady = TcpStream::connect(("127.0.0.1", p1)).await.unwrap();
    async fn ping(s: &mut TcpStream) {
        s.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
    }
    ping(&mut steady).await;

    proxy.gatehouse.apply(config(true)).await.unwrap();
    let mut second = TcpStream::connect(("127.0.0.1", p2))
        .await
        .expect("added without a restart");
    ping(&mut second).await;
    ping(&mut steady).await;

    proxy.gatehouse.apply(config(false)).await.unwrap();
    eventually_async("the removed listener refuses new clients", WAIT, || async {
        TcpStream::connect(("127.0.0.1", p2)).await.is_err()
    })
    .await;
    // Connections it had already accepted carry on, and so does the other listener.
    ping(&mut second).await;
    ping(&mut steady).await;
    let mut fresh = TcpStream::connect(("127.0.0.1", p1)).await.unwrap();
    ping(&mut fresh).await;
}

#[tokio::test]
async fn shutdown_gives_tcp_sessions_the_grace_period_then_closes_them() {
    let echo = TcpEcho::start(false).await;
    let (proxy, addr) = proxy_with("protocol: tcp", &[echo.addr]).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    let started = Instant::now();
    let finished = proxy.gatehouse.shutdown().await;
    assert!(!finished, "the session outlived the grace period");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        read_to_end(&mut s).await.is_empty(),
        "closed after the grace period"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is gone"
    );
}

/// Sends `msg` from a fresh socket on `local` and waits for one reply.
async fn udp_ask(local: &str, to: SocketAddr, msg: &str) -> Option<String> {
    let socket = UdpSocket::bind(format!("{local}:0")).await.unwrap();
    udp_ask_on(&socket, to, msg).await
}

/// Sends `msg` and waits up to `WAIT` for one reply (`None`: no reply by then).
async fn udp_ask_on(socket: &UdpSocket, to: SocketAddr, msg: &str) -> Option<String> {
    socket.send_to(msg.as_bytes(), to).await.unwrap();
    udp_reply(socket, WAIT).await
}

async fn udp_reply(socket: &UdpSocket, wait: Duration) -> Option<String> {
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_clients_each_get_their_own_replies() {
    let echo = UdpEcho::start("dns").await;
    let (proxy, addr) = proxy_with("protocol: udp", &[echo.addr]).await;
    let mut clients = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..5 {
            clients.push(UdpSocket::bind(format!("{ip}:0")).await.unwrap());
        }
    }
    // Everyone asks before anyone reads, so replies could cross if sessions were mixed up.
    for (i, c) in clients.iter().enumerate() {
        c.send_to(format!("q{i}").as_bytes(), addr).await.unwrap();
    }
    for (i, c) in clients.iter().enumerate() {
        let mut buf = [0u8; 64];
        let (n, from) = tokio::time::timeout(WAIT, c.recv_from(&mut buf))
            .await
            .expect("a reply")
            .unwrap();
        assert_eq!(from, addr, "replies come from the listener's address");
        assert_eq!(&buf[..n], format!("dns:q{i}").as_bytes());
    }
    // A second question on a session reuses it.
    assert_eq!(
        udp_ask_on(&clients[0], addr, "again").await.as_deref(),
        Some("dns:again")
    );
    assert_eq!(
        echo.sessions(),
        20,
        "one upstream socket per client address"
    );
    assert_eq!(
        proxy.metric("gatehouse_l4_connections_total{listener=\"udp/127.0.0.1:0\"}"),
        20.0
    );
}

#[tokio::test]
async fn udp_sessions_expire_when_idle() {
    let echo = UdpEcho::start("e").await;
    let (proxy, addr) = proxy_with("protocol: udp, idle: 300ms", &[echo.addr]).await;
    let socket = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    assert_eq!(udp_ask_on(&socket, addr, "1").await.as_deref(), Some("e:1"));
    let replied = Instant::now();
    // Counted when it started (the session may already have idled out on a slow machine).
    let started = "gatehouse_l4_connections_total{listener=\"udp/127.0.0.1:0\"}";
    assert_eq!(proxy.metric(started), 1.0);
    let active = "gatehouse_l4_active{listener=\"udp/127.0.0.1:0\"}";
    eventually("the idle session ends", WAIT, || {
        proxy.metric(active) == 0.0
    })
    .await;
    assert!(
        replied.elapsed() >= Duration::from_millis(250),
        "ended by the idle timeout, not before it: {:?}",
        replied.elapsed()
    );
    // The same client starts a new session (a new upstream socket).
    assert_eq!(udp_ask_on(&socket, addr, "2").await.as_deref(), Some("e:2"));
    assert_eq!(echo.sessions(), 2);
    assert_eq!(proxy.metric(started), 2.0);
}

#[tokio::test]
async fn udp_allow_list_drops_datagrams_from_others() {
    let echo = UdpEcho::start("e").await;
    let (proxy, addr) = proxy_with("protocol: udp, allow: \"127.0.0.2/32\"", &[echo.addr]).await;
    assert_eq!(
        udp_ask("127.0.0.2", addr, "ok").await.as_deref(),
        Some("e:ok")
    );
    let denied = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    denied.send_to(b"no", addr).await.unwrap();
    eventually("the drop is counted", WAIT, || {
        proxy.metric("gatehouse_denied_total{reason=\"allowlist\"}") == 1.0
    })
    .await;
    // The drop is decided; a reply, had one been sent, would be on its way by now.
    assert_eq!(
        udp_reply(&denied, Duration::from_millis(200)).await,
        None,
        "dropped"
    );
    assert_eq!(
        echo.sessions(),
        1,
        "nothing reached the upstream from 127.0.0.3"
    );
}

#[tokio::test]
async fn udp_sessions_are_bounded_and_the_least_recent_makes_room() {
    let echo = UdpEcho::start("e").await;
    let (proxy, addr) = proxy_with("protocol: udp, max_sessions: 3", &[echo.addr]).await;
    let mut clients = Vec::new();
    for i in 0..4 {
        let c = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        assert_eq!(
            udp_ask_on(&c, addr, &format!("{i}")).await,
            Some(format!("e:{i}"))
        );
        clients.push(c);
    }
    let active = "gatehouse_l4_active{listener=\"udp/127.0.0.1:0\"}";
    eventually("three sessions at most", WAIT, || {
        proxy.metric(active) == 3.0
    })
    .await;
    assert_eq!(echo.sessions(), 4);
    // The first client's session was evicted: asking again opens a new one.
    assert_eq!(
        udp_ask_on(&clients[0], addr, "back").await.as_deref(),
        Some("e:back")
    );
    assert_eq!(echo.sessions(), 5);
    eventually("still three", WAIT, || proxy.metric(active) == 3.0).await;
}
