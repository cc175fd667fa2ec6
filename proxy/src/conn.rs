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

use crate::{
    h2_guard::ControlFrames,
    tls::{certs::LoadedCert, client_auth::ClientCert},
};

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
    /// Asks the connection to finish gracefully (HTTP/2: GOAWAY) once what it carries is
    /// answered: an HTTP/2 request during the shutdown drain rings it.
    pub(crate) goaway: tokio::sync::Notify,
    /// Rung when the client floods the connection with control frames: it is cut off.
    pub(crate) flood: tokio::sync::Notify,
}

/// What the TLS handshake of a connection settled.
pub(crate) struct TlsInfo {
    /// The certificate SNI chose (none: the handshake used no certificate of ours).
    pub(crate) cert: Option<Arc<LoadedCert>>,
    pub(crate) version: &'static str,
    /// What the client showed, when the SNI named a host with client certificates.
    pub(crate) client_cert: Option<ClientCert>,
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
            goaway: tokio::sync::Notify::new(),
            flood: tokio::sync::Notify::new(),
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
                client_cert: None,
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

/// What the watchdog reads of a connection; written by the IO wrapper and the request
/// path. Moments are milliseconds since `base`, plus one (0: not now).
pub(crate) struct ConnState {
    base: Instant,
    requests: AtomicU64,
    in_flight: AtomicU32,
    /// When the first byte of a request head arrived with no request in flight.
    head_since: AtomicU64,
    /// When the last request finished (or the connection opened).
    done_at: AtomicU64,
    /// Since when writes to the client have been blocked (it is not reading).
    blocked_since: AtomicU64,
    /// Upstream response bodies being relayed on this connection, and how many of them
    /// wait for their upstream: the others wait for the client (HTTP/2 flow control).
    bodies: AtomicU32,
    bodies_awaiting_upstream: AtomicU32,
    /// When a relayed body last moved (or the first one opened).
    body_moved: AtomicU64,
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState::new(Instant::now())
    }
}

impl ConnState {
    fn new(base: Instant) -> Self {
        ConnState {
            base,
            requests: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            head_since: AtomicU64::new(0),
            done_at: AtomicU64::new(1),
            blocked_since: AtomicU64::new(0),
            bodies: AtomicU32::new(0),
            bodies_awaiting_upstream: AtomicU32::new(0),
            body_moved: AtomicU64::new(0),
        }
    }

    /// An upstream body starts being relayed to the client.
    pub(crate) fn body_opened(&self) {
        if self.bodies.fetch_add(1, Ordering::Relaxed) == 0 {
            self.body_moved.store(self.stamp(), Ordering::Relaxed);
        }
    }

    /// A relayed body ended; `awaiting_upstream` as last reported.
    pub(crate) fn body_closed(&self, awaiting_upstream: bool) {
        if awaiting_upstream {
            self.bodies_awaiting_upstream
                .fetch_sub(1, Ordering::Relaxed);
        }
        self.bodies.fetch_sub(1, Ordering::Relaxed);
    }

    /// A relayed body passed a part to the client's side.
    pub(crate) fn body_moved(&self) {
        self.body_moved.store(self.stamp(), Ordering::Relaxed);
    }

    /// A relayed body now waits (`true`) or no longer waits for its upstream.
    pub(crate) fn body_awaits_upstream(&self, waits: bool) {
        if waits {
            self.bodies_awaiting_upstream
                .fetch_add(1, Ordering::Relaxed);
        } else {
            self.bodies_awaiting_upstream
                .fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn stamp(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    fn moment(&self, stamp: u64) -> Option<Instant> {
        (stamp != 0).then(|| self.base + Duration::from_millis(stamp - 1))
    }

    pub(crate) fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
    }

    pub(crate) fn request_finished(&self) {
        self.done_at.store(self.stamp(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Bytes arrived from the client.
    fn read(&self) {
        let idle = self.in_flight.load(Ordering::Relaxed) == 0;
        if idle && self.head_since.load(Ordering::Relaxed) == 0 {
            self.head_since.store(self.stamp(), Ordering::Relaxed);
        }
    }

    /// A write to the client did (`true`) or could not (`false`) go through.
    fn wrote(&self, went_through: bool) {
        let blocked = self.blocked_since.load(Ordering::Relaxed);
        if went_through && blocked != 0 {
            self.blocked_since.store(0, Ordering::Relaxed);
        } else if !went_through && blocked == 0 {
            self.blocked_since.store(self.stamp(), Ordering::Relaxed);
        }
    }
}

/// Why the watchdog closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cutoff {
    /// The request head did not arrive within `request_header`.
    SlowHeader,
    /// No request for `idle`.
    Idle,
    /// The client took none of its response for `client_write`.
    NotReading,
}

impl Cutoff {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Cutoff::SlowHeader => "slow_header",
            Cutoff::Idle => "idle",
            Cutoff::NotReading => "client_not_reading",
        }
    }
}

/// Says when a connection must be closed, and when to look next: exactly at the earliest
/// deadline that applies, and at least once per the shortest timeout (a head may start,
/// writes block, a request end, at any moment), so a cut-off comes on time without a
/// timer per event.
///
/// hyper's own header timer also runs while a keep-alive connection waits for its next
/// request, which would make `idle` and `request_header` one setting; this keeps them apart.
pub(crate) struct Watchdog {
    request_header: Duration,
    idle: Duration,
    client_write: Duration,
}

impl Watchdog {
    pub(crate) fn new(request_header: Duration, idle: Duration, client_write: Duration) -> Self {
        Watchdog {
            request_header,
            idle,
            client_write,
        }
    }

    /// `Err` means close the connection now; `Ok` is when to look again.
    pub(crate) fn check(&self, state: &ConnState, now: Instant) -> Result<Instant, Cutoff> {
        let mut next = now + self.request_header.min(self.client_write).min(self.idle);
        let mut deadline = |since: Option<Instant>, limit: Duration, cutoff| match since {
            Some(since) if now >= since + limit => Err(cutoff),
            Some(since) => {
                next = next.min(since + limit);
                Ok(())
            }
            None => Ok(()),
        };
        let load = |a: &AtomicU64| state.moment(a.load(Ordering::Relaxed));
        let head = load(&state.head_since);
        deadline(head, self.request_header, Cutoff::SlowHeader)?;
        deadline(
            load(&state.blocked_since),
            self.client_write,
            Cutoff::NotReading,
        )?;
        // A body that waits for the client rather than its upstream, and none moved: the
        // client takes nothing (an HTTP/2 client can do that with a zero window, writes
        // never block).
        let bodies = state.bodies.load(Ordering::Relaxed);
        if bodies > state.bodies_awaiting_upstream.load(Ordering::Relaxed) {
            deadline(
                load(&state.body_moved),
                self.client_write,
                Cutoff::NotReading,
            )?;
        }
        let idle = head.is_none() && state.in_flight.load(Ordering::Relaxed) == 0;
        if idle {
            deadline(load(&state.done_at), self.idle, Cutoff::Idle)?;
        }
        Ok(next)
    }
}

/// A client stream that tells the watchdog when heads start and writes block, and stops
/// reading from an HTTP/2 client that floods it with control frames.
pub(crate) struct CountingIo<T> {
    inner: T,
    info: Arc<ConnInfo>,
    control: ControlFrames,
    flooded: bool,
}

impl<T> CountingIo<T> {
    pub(crate) fn new(inner: T, info: Arc<ConnInfo>) -> Self {
        CountingIo {
            inner,
            info,
            control: ControlFrames::default(),
            flooded: false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.flooded {
            // Nothing more is read from a flooding client; the connection is being closed.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let state = &this.info.state;
            state.read();
            if this
                .control
                .flooded(&buf.filled()[before..], || state.stamp())
            {
                this.flooded = true;
                this.info.flood.notify_one();
            }
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
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.info.state.wrote(res.is_ready());
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.info.state.wrote(res.is_ready());
        res
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
    fn watchdog_cuts_slow_heads_idle_connections_and_clients_that_stop_reading() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let secs = Duration::from_secs;
        let w = Watchdog::new(secs(10), secs(60), secs(30));
        let s = ConnState::new(t0);
        // A fresh connection: looked at again within request_header.
        assert_eq!(w.check(&s, at(0)), Ok(at(10_000)));
        // Bytes of a head arrive at about 2 s; no request completes: cut at 12 s, to the
        // millisecond, whenever the watchdog last looked.
        let mut s = ConnState::new(t0);
        s.head_since.store(2_001, Ordering::Relaxed);
        assert_eq!(w.check(&s, at(5_000)), Ok(at(12_000)));
        assert_eq!(w.check(&s, at(11_999)), Ok(at(12_000)));
        assert_eq!(w.check(&s, at(12_000)), Err(Cutoff::SlowHeader));

        // A request arrives and is in flight for a long time: never cut while it reads.
        s = ConnState::new(t0);
        s.head_since.store(1, Ordering::Relaxed);
        s.request_started();
        assert!(w.check(&s, at(500_000)).is_ok());
        // It finishes at about 500 s; the connection idles out 60 s later, not 10.
        s.done_at.store(500_001, Ordering::Relaxed);
        s.in_flight.store(0, Ordering::Relaxed);
        assert_eq!(w.check(&s, at(530_000)), Ok(at(540_000)));
        assert_eq!(w.check(&s, at(555_000)), Ok(at(560_000)));
        assert_eq!(w.check(&s, at(560_000)), Err(Cutoff::Idle));

        // A response is being written but the client stopped reading at 100 s: cut at 130 s.
        s = ConnState::new(t0);
        s.request_started();
        s.blocked_since.store(100_001, Ordering::Relaxed);
        assert_eq!(w.check(&s, at(125_000)), Ok(at(130_000)));
        assert_eq!(w.check(&s, at(130_000)), Err(Cutoff::NotReading));
        // A write went through in time: no cut.
        s.wrote(true);
        assert!(w.check(&s, at(130_000)).is_ok());

        // HTTP/2 with a zero window: writes never block, but a body that waits for the
        // client has not moved since 200 s: cut at 230 s...
        s = ConnState::new(t0);
        s.request_started();
        s.bodies.store(1, Ordering::Relaxed);
        s.body_moved.store(200_001, Ordering::Relaxed);
        assert_eq!(w.check(&s, at(229_000)), Ok(at(230_000)));
        assert_eq!(w.check(&s, at(230_000)), Err(Cutoff::NotReading));
        // ...unless it waits for its upstream (upstream_read covers that).
        s.body_awaits_upstream(true);
        assert!(w.check(&s, at(230_000)).is_ok());
    }

    #[test]
    fn the_state_marks_heads_and_blocked_writes_from_what_the_io_sees() {
        let s = ConnState::default();
        s.read();
        assert_ne!(s.head_since.load(Ordering::Relaxed), 0, "a head started");
        s.request_started();
        assert_eq!(
            s.head_since.load(Ordering::Relaxed),
            0,
            "it became a request"
        );
        s.read();
        assert_eq!(
            s.head_since.load(Ordering::Relaxed),
            0,
            "bytes while a request is in flight are its body, not a head"
        );
        s.wrote(false);
        let blocked = s.blocked_since.load(Ordering::Relaxed);
        assert_ne!(blocked, 0);
        s.wrote(false);
        assert_eq!(
            s.blocked_since.load(Ordering::Relaxed),
            blocked,
            "since the first"
        );
        s.wrote(true);
        assert_eq!(s.blocked_since.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn mapped_ipv6_counts_as_ipv4() {
        let ip: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(canonical_ip(ip), "10.1.2.3".parse::<IpAddr>().unwrap());
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical_ip(ip), ip);
    }
}
