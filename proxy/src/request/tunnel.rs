//! Upgraded connections (WebSocket and other `Upgrade`s): bytes relayed both ways once
//! client and upstream have switched protocols, until either side closes (as nginx does),
//! or neither sends a byte for the idle timeout.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::Instant,
};

/// After one side closed, what the other still sends is relayed while it keeps coming;
/// this long without a byte and the tunnel closes.
const LINGER: Duration = Duration::from_secs(1);

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TunnelEnd {
    /// One side closed (or failed) and the other had nothing more to send.
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
}

/// Relays until either side ends or the tunnel is idle for `idle`.
pub(crate) async fn relay(client: OnUpgrade, upstream: OnUpgrade, idle: Duration) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let end = splice(TokioIo::new(client), TokioIo::new(upstream), idle).await;
    tracing::debug!(?end, "tunnel closed");
}

/// Copies both ways between `a` and `b`; see [`relay`].
pub(crate) async fn splice<A, B>(a: A, b: B, idle: Duration) -> TunnelEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let active = Activity::new();
    let a_to_b = pump(&mut a_read, &mut b_write, &active);
    let b_to_a = pump(&mut b_read, &mut a_write, &active);
    tokio::pin!(a_to_b, b_to_a);
    let (mut a_done, mut b_done) = (false, false);
    loop {
        let quiet = if a_done || b_done {
            LINGER.min(idle)
        } else {
            idle
        };
        tokio::select! {
            () = &mut a_to_b, if !a_done => a_done = true,
            () = &mut b_to_a, if !b_done => b_done = true,
            () = tokio::time::sleep_until(active.last() + quiet) => {
                if Instant::now() >= active.last() + quiet {
                    return if a_done || b_done { TunnelEnd::Closed } else { TunnelEnd::Idle };
                }
            }
        }
        if a_done && b_done {
            return TunnelEnd::Closed;
        }
    }
}

/// When a byte last moved either way (the future is `Send`, so no `Cell`).
struct Activity {
    base: Instant,
    /// Milliseconds from `base`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn now(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// Copies `from` to `to` until `from` ends or either fails, then closes `to`'s write side
/// so the peer sees the end too. Every byte moved counts as activity.
async fn pump<R, W>(from: &mut R, to: &mut W, active: &Activity)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        active.now();
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            break;
        }
        active.now();
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_closes_after_its_idle_timeout_and_not_before() {
        let (client, _client_peer) = tokio::io::duplex(64);
        let (upstream, _upstream_peer) = tokio::io::duplex(64);
        let started = Instant::now();
        let end = splice(client, upstream, Duration::from_secs(600)).await;
        assert_eq!(end, TunnelEnd::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(600));
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_a_tunnel_open_and_both_directions_flow() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let tunnel = tokio::spawn(splice(client, upstream, Duration::from_secs(10)));
        let mut buf = [0u8; 4];
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(8)).await;
            client_peer.write_all(b"ping").await.unwrap();
            upstream_peer.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            upstream_peer.write_all(b"pong").await.unwrap();
            client_peer.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"pong");
        }
        assert!(
            !tunnel.is_finished(),
            "40 s of traffic every 8 s kept it open"
        );
        assert_eq!(tunnel.await.unwrap(), TunnelEnd::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_that_closes_closes_the_tunnel_once_the_other_is_quiet() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let tunnel = tokio::spawn(splice(client, upstream, Duration::from_secs(600)));
        // The client sends its last words and closes its side.
        client_peer.write_all(b"bye").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye", "the upstream got the bytes, then the end");
        // The upstream answers once more, then says nothing and never closes.
        upstream_peer.write_all(b"ok").await.unwrap();
        let started = Instant::now();
        assert_eq!(tunnel.await.unwrap(), TunnelEnd::Closed);
        assert!(
            started.elapsed() <= LINGER,
            "closed within {LINGER:?}, not after 600 s"
        );
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got, b"ok",
            "what the upstream still sent reached the client"
        );
    }
}
