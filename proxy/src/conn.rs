//! A client connection's identity and activity, and the watchdog that cuts off slow and idle
//! clients.

use std::{
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use http::HeaderValue;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

use crate::tls::certs::LoadedCert;

/// Who is on the other end of a client connection, fixed at accept.
pub(crate) struct ConnInfo {
    /// The TCP peer, or the source a trusted proxy gave in its PROXY protocol header.
    pub(crate) peer_ip: IpAddr,
    /// `peer_ip` as a header value, formatted once per connection.
    pub(crate) peer_ip_header: HeaderValue,
    pub(crate) local_port_header: HeaderValue,
    /// Set on the HTTPS listener once the handshake is done.
    pub(crate) tls: Option<TlsInfo>,
    pub(crate) state: ConnState,
}

/// What the TLS handshake of a connection settled.
pub(crate) struct TlsInfo {
    /// The certificate SNI chose (none: the handshake used no certificate of ours).
    pub(crate) cert: Option<Arc<LoadedCert>>,
    pub(crate) version: &'static str,
}

impl ConnInfo {
    pub(crate) fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        let peer_ip = canonical_ip(peer.ip());
        ConnInfo {
            peer_ip,
            peer_ip_header: HeaderValue::from_str(&peer_ip.to_string())
                .expect("an IP address is a valid header value"),
            local_port_header: HeaderValue::from(local.port()),
            tls: None,
            state: ConnState::default(),
        }
    }
}

#[cfg(test)]
impl ConnInfo {
    /// A connection from `peer` to `local`, over TLS 1.3 (no certificate of ours) when `tls`.
    pub(crate) fn for_test(peer: &str, local: &str, tls: bool) -> Self {
        let mut conn = ConnInfo::new(peer.parse().unwrap(), local.parse().unwrap());
        if tls {
            conn.tls = Some(TlsInfo {
                cert: None,
                version: "TLSv1.3",
            });
        }
        conn
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as IPv4.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Counters the watchdog samples; bumped by the IO wrapper and the request path.
#[derive(Default)]
pub(crate) struct ConnState {
    reads: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU32,
}

impl ConnState {
    pub(crate) fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the watchdog closed a connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Cutoff {
    /// The request head did not arrive within `request_header`.
    SlowHeader,
    /// No request for `idle`.
    Idle,
}

/// Samples a connection's activity a few times per timeout and says when to close it.
///
/// hyper's own header timer also runs while a keep-alive connection waits for its next
/// request, which would make `idle` and `request_header` one setting; this keeps them apart.
pub(crate) struct Watchdog {
    request_header: Duration,
    idle: Duration,
    last_reads: u64,
    last_requests: u64,
    head_since: Option<Instant>,
    active_at: Instant,
}

impl Watchdog {
    pub(crate) fn new(request_header: Duration, idle: Duration, now: Instant) -> Self {
        Watchdog {
            request_header,
            idle,
            last_reads: 0,
            last_requests: 0,
            head_since: None,
            active_at: now,
        }
    }

    /// How often [`Watchdog::check`] should run: the cut-off comes at most this late.
    pub(crate) fn period(&self) -> Duration {
        (self.request_header.min(self.idle) / 4).max(Duration::from_millis(50))
    }

    /// Looks at the counters; `Some` means close the connection now.
    pub(crate) fn check(&mut self, state: &ConnState, now: Instant) -> Option<Cutoff> {
        let reads = state.reads.load(Ordering::Relaxed);
        let requests = state.requests.load(Ordering::Relaxed);
        let in_flight = state.in_flight.load(Ordering::Relaxed);
        if in_flight > 0 || requests != self.last_requests {
            self.head_since = None;
            self.active_at = now;
        } else if reads != self.last_reads {
            // Bytes arrived but no request was dispatched: a head is on its way.
            self.head_since.get_or_insert(now);
            self.active_at = now;
        }
        self.last_reads = reads;
        self.last_requests = requests;
        match self.head_since {
            Some(since) if now.duration_since(since) >= self.request_header => {
                Some(Cutoff::SlowHeader)
            }
            None if in_flight == 0 && now.duration_since(self.active_at) >= self.idle => {
                Some(Cutoff::Idle)
            }
            _ => None,
        }
    }
}

/// A client stream that counts reads for the watchdog.
pub(crate) struct CountingIo<T> {
    inner: T,
    info: Arc<ConnInfo>,
}

impl<T> CountingIo<T> {
    pub(crate) fn new(inner: T, info: Arc<ConnInfo>) -> Self {
        CountingIo { inner, info }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.info.state.reads.fetch_add(1, Ordering::Relaxed);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_cuts_slow_heads_and_idle_connections_but_not_busy_ones() {
        let t0 = Instant::now();
        let s = ConnState::default();
        let mut w = Watchdog::new(Duration::from_secs(10), Duration::from_secs(60), t0);
        let at = |secs| t0 + Duration::from_secs(secs);
        // Bytes trickle in, no request completes: cut after request_header.
        s.reads.fetch_add(1, Ordering::Relaxed);
        assert_eq!(w.check(&s, at(1)), None);
        s.reads.fetch_add(1, Ordering::Relaxed);
        assert_eq!(w.check(&s, at(6)), None);
        s.reads.fetch_add(1, Ordering::Relaxed);
        assert_eq!(w.check(&s, at(11)), Some(Cutoff::SlowHeader));

        // A request arrives and is in flight for a long time: never cut.
        let s = ConnState::default();
        let mut w = Watchdog::new(Duration::from_secs(10), Duration::from_secs(60), t0);
        s.reads.fetch_add(1, Ordering::Relaxed);
        s.request_started();
        assert_eq!(w.check(&s, at(5)), None);
        assert_eq!(w.check(&s, at(500)), None);
        // It finishes; the connection then idles out after `idle`, not `request_header`.
        s.request_finished();
        assert_eq!(w.check(&s, at(501)), None);
        assert_eq!(w.check(&s, at(530)), None);
        assert_eq!(w.check(&s, at(562)), Some(Cutoff::Idle));
    }

    #[test]
    fn mapped_ipv6_counts_as_ipv4() {
        let ip: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(canonical_ip(ip), "10.1.2.3".parse::<IpAddr>().unwrap());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical_ip(ip), ip);
    }
}
