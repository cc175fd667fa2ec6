//! TCP forwarding: accept, check the allow-list, connect to an endpoint (retrying others),
//! optionally send a PROXY v2 header, then copy both ways with half-close until both sides
//! are done or the connection idles out.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use proxy_header::{io::ProxiedStream, ParseConfig, ProxiedAddress, ProxyHeader};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Notify,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{allowed, End, L4Key, L4Record, L4Stats};
use crate::{
    conn::canonical_ip,
    snapshot::Snapshot,
    state::L4Shared,
    upstream::{Lease, Upstream, MAX_TRIES},
};

/// Open connections of one listener, and a wake-up when one ends.
#[derive(Default)]
struct Active {
    count: AtomicUsize,
    freed: Notify,
}

/// Accepts until `stop` fires. At the entry's `max` connections it stops accepting until
/// one ends: further clients wait in the kernel's accept queue, as with HAProxy's maxconn.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    key: L4Key,
    shared: Arc<L4Shared>,
    stop: CancellationToken,
    stats: Arc<L4Stats>,
) {
    let active = Arc::new(Active::default());
    loop {
        let max = shared
            .live
            .snapshot
            .load()
            .l4_entry(&key)
            .map_or(usize::MAX, |e| e.max);
        while active.count.load(Ordering::Acquire) >= max {
            let freed = active.freed.notified();
            if active.count.load(Ordering::Acquire) < max {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = freed => {}
            }
        }
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = stats.label, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let snapshot = shared.live.snapshot.load_full();
        let Some(entry) = snapshot.l4_entry(&key) else {
            return;
        };
        if entry.proxy_protocol {
            // Anyone could claim any source: only trusted load balancers may send one.
            if !snapshot
                .config
                .trusted_proxies
                .contains(canonical_ip(client.ip()))
            {
                shared.live.metrics.deny("untrusted_proxy");
                continue;
            }
        } else if !allowed(entry, client.ip()) {
            shared.live.metrics.deny("allowlist");
            // Closed at once, before any upstream is contacted.
            continue;
        }
        let _ = stream.set_nodelay(true);
        active.count.fetch_add(1, Ordering::AcqRel);
        stats.connections.inc();
        stats.active.inc();
        let (shared, stats, active) = (shared.clone(), stats.clone(), active.clone());
        let tracker = shared.sessions.clone();
        tracker.spawn(async move {
            serve(&shared, &stats, snapshot, key, stream, client).await;
            stats.active.dec();
            active.count.fetch_sub(1, Ordering::AcqRel);
            active.freed.notify_one();
        });
    }
}

/// One client connection, start to end: the PROXY header first when the entry expects
/// one (its source is the client, and the allow-list applies to it).
async fn serve(
    shared: &L4Shared,
    stats: &L4Stats,
    snapshot: Arc<Snapshot>,
    key: L4Key,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let Some(entry) = snapshot.l4_entry(&key) else {
        return;
    };
    if !entry.proxy_protocol {
        return forward(shared, stats, snapshot, key, stream, peer).await;
    }
    let limit = snapshot.config.timeouts.request_header;
    let parse = ParseConfig::default();
    match tokio::time::timeout(limit, ProxiedStream::create_from_tokio(stream, parse)).await {
        Ok(Ok(proxied)) => {
            let client = proxied
                .proxy_header()
                .proxied_address()
                .map_or(peer, |a| a.source);
            if allowed(entry, client.ip()) {
                forward(shared, stats, snapshot, key, proxied, client).await;
            } else {
                shared.live.metrics.deny("allowlist");
            }
        }
        Ok(Err(_)) | Err(_) => {
            shared.live.metrics.deny("proxy_header");
            tracing::warn!(listener = stats.label, proxy = %peer, "closed a connection without a valid PROXY protocol header; check that the load balancer sends PROXY v1 or v2");
        }
    }
}

/// Forwards one admitted client connection, with the snapshot current when it arrived.
async fn forward<S>(
    shared: &L4Shared,
    stats: &L4Stats,
    snapshot: Arc<Snapshot>,
    key: L4Key,
    client: S,
    peer: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Local,
{
    let Some(entry) = snapshot.l4_entry(&key) else {
        return;
    };
    let upstream = snapshot.upstreams[entry.service.0].clone();
    let (idle, send_proxy, listen) = (entry.idle, entry.proxy_protocol_upstream, entry.listen);
    let (connect, access_log) = (snapshot.limits.connect, snapshot.config.access_log);
    // A connection may last for days: it must not keep this snapshot (every route and
    // certificate of it) alive through later reloads.
    drop(snapshot);
    let header = send_proxy
        .then(|| proxy_v2(peer, client.local().unwrap_or(listen)))
        .flatten()
        .unwrap_or_default();
    let first = First {
        bytes: header,
        from_client: false,
    };
    let times = (connect, idle);
    relay_to(
        shared, stats, upstream, first, client, peer, times, access_log,
    )
    .await;
}

/// What goes to the endpoint before the client's bytes: a PROXY header, or a ClientHello
/// already read from the client (counted as its bytes).
pub(crate) struct First {
    pub(crate) bytes: Vec<u8>,
    pub(crate) from_client: bool,
}

/// Connects to one of `upstream`'s endpoints, sends `first`, then copies both ways until
/// the connection ends; writes its access-log line. `times` are the connect timeout and the
/// idle bound.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn relay_to<S>(
    shared: &L4Shared,
    stats: &L4Stats,
    upstream: Arc<Upstream>,
    first: First,
    client: S,
    peer: SocketAddr,
    (connect_timeout, idle): (Duration, Duration),
    access_log: gatehouse_config::AccessLog,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut record = L4Record {
        started,
        listener: &stats.label,
        client: peer,
        upstream: None,
        bytes_in: 0,
        bytes_out: 0,
        duration: Duration::ZERO,
        end: End::NoUpstream,
    };
    match connect(shared, &upstream, connect_timeout, peer).await {
        Some((mut server, lease)) => {
            record.upstream = Some(lease.addr());
            record.end = match server.write_all(&first.bytes).await {
                Ok(()) => {
                    let (end, bytes_in, bytes_out) =
                        relay(shared, stats, client, server, idle).await;
                    let sent_first = if first.from_client {
                        first.bytes.len()
                    } else {
                        0
                    };
                    record.bytes_in = bytes_in + sent_first as u64;
                    record.bytes_out = bytes_out;
                    end
                }
                Err(_) => End::Error,
            };
            drop(lease);
        }
        None => tracing::warn!(
            listener = stats.label,
            service = upstream.name(),
            "no endpoint of the service accepted a connection; closing the client's"
        ),
    }
    record.duration = clock.elapsed();
    record.write(access_log);
}

/// Connects to one of the service's endpoints, trying up to [`MAX_TRIES`].
async fn connect(
    shared: &L4Shared,
    upstream: &Upstream,
    timeout: Duration,
    peer: SocketAddr,
) -> Option<(TcpStream, Lease)> {
    let endpoints = upstream.endpoints();
    let preference = upstream.l4_preference(peer.ip());
    let mut tried = [usize::MAX; MAX_TRIES];
    for tries in 0..MAX_TRIES {
        let idx = upstream.pick(&endpoints, &tried[..tries], preference)?;
        tried[tries] = idx;
        let endpoint = &endpoints[idx];
        let lease = Lease::new(endpoint.clone());
        let connected = tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr())).await;
        match connected {
            Ok(Ok(stream)) => {
                endpoint.connect_succeeded();
                let _ = stream.set_nodelay(true);
                return Some((stream, lease));
            }
            Ok(Err(e)) => upstream.connect_failed(endpoint, &shared.live.metrics, &e),
            Err(_) => {
                let timed_out =
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                upstream.connect_failed(endpoint, &shared.live.metrics, &timed_out)
            }
        }
    }
    None
}

/// A PROXY v2 header saying the connection came from `client` to `local`.
fn proxy_v2(client: SocketAddr, local: SocketAddr) -> Option<Vec<u8>> {
    let same_family = |a: SocketAddr, b: SocketAddr| {
        let (a, b) = (
            SocketAddr::new(canonical_ip(a.ip()), a.port()),
            SocketAddr::new(canonical_ip(b.ip()), b.port()),
        );
        match (a, b) {
            (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
                (a, b)
            }
            // One side IPv4, the other IPv6: express both as IPv6.
            _ => (v6(a), v6(b)),
        }
    };
    let (source, destination) = same_family(client, local);
    let mut out = Vec::with_capacity(52);
    ProxyHeader::with_address(ProxiedAddress::stream(source, destination))
        .encode_v2(&mut out)
        .ok()?;
    Some(out)
}

fn v6(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    }
}

/// Copies both ways until both directions are done (a shutdown of one direction passes
/// through to the other side), no byte moves for `idle`, or the grace period after a
/// shutdown ends. Returns how it ended and the bytes moved in and out.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &L4Shared,
    stats: &L4Stats,
    client: S,
    server: TcpStream,
    idle: Duration,
) -> (End, u64, u64) {
    let last = Arc::new(AtomicU64::new(0));
    let origin = Instant::now();
    let mut client = Touching::new(client, last.clone(), origin);
    let mut server = Touching::new(server, last.clone(), origin);
    let end = {
        // 64 KiB buffers: fewer syscalls on bulk transfers than the default 8 KiB.
        let copy =
            tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, 1 << 14, 1 << 14);
        tokio::pin!(copy);
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = origin + since + idle;
            tokio::select! {
                done = &mut copy => break match done {
                    Ok(_) => End::Closed,
                    Err(_) => End::Error,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let quiet = origin.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                    if quiet >= idle {
                        break End::Idle;
                    }
                }
                _ = shared.stop.cancelled() => break End::Shutdown,
            }
        }
    };
    let (bytes_in, bytes_out) = (client.read, server.read);
    stats.bytes_in.inc_by(bytes_in);
    stats.bytes_out.inc_by(bytes_out);
    (end, bytes_in, bytes_out)
}

/// The local address of a client stream (where it connected to), for PROXY headers.
trait Local {
    fn local(&self) -> io::Result<SocketAddr>;
}

impl Local for TcpStream {
    fn local(&self) -> io::Result<SocketAddr> {
        self.local_addr()
    }
}

impl Local for ProxiedStream<TcpStream> {
    fn local(&self) -> io::Result<SocketAddr> {
        // What the client connected to, as the load balancer reports it.
        match self.proxy_header().proxied_address() {
            Some(a) => Ok(a.destination),
            None => self.get_ref().local_addr(),
        }
    }
}

/// A stream that notes when bytes last moved through it and counts what it read.
struct Touching<T> {
    inner: T,
    last: Arc<AtomicU64>,
    origin: Instant,
    read: u64,
}

impl<T> Touching<T> {
    fn new(inner: T, last: Arc<AtomicU64>, origin: Instant) -> Self {
        Touching {
            inner,
            last,
            origin,
            read: 0,
        }
    }

    fn touch(&self) {
        self.last
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Touching<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read += n as u64;
            this.touch();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touching<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        res
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
