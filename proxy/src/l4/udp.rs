//! UDP forwarding: one session per client address, each with its own upstream socket
//! (connected to one endpoint, chosen when the session starts), replies relayed back to
//! that client from the listener's socket. Sessions end after `idle` without a datagram
//! either way; at `max` sessions the least recently active one makes room for a new client.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use tokio::{net::UdpSocket, sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{allowed, End, L4Key, L4Record, L4Stats};
use crate::state::L4Shared;

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

struct Session {
    id: u64,
    upstream: Arc<UdpSocket>,
    /// Milliseconds since the listener's clock origin of the last datagram either way.
    last: Arc<AtomicU64>,
    bytes_in: Arc<AtomicU64>,
    end: CancellationToken,
}

/// Receives client datagrams until `stop` fires; existing sessions keep relaying replies
/// until they idle out or the shutdown's grace period ends.
pub(crate) async fn serve(
    socket: UdpSocket,
    key: L4Key,
    shared: Arc<L4Shared>,
    stop: CancellationToken,
    stats: Arc<L4Stats>,
) {
    let socket = Arc::new(socket);
    let origin = Instant::now();
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let mut next_id = 0u64;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, client) = tokio::select! {
            _ = stop.cancelled() => break,
            Some((client, id)) = ended.recv() => {
                if sessions.get(&client).is_some_and(|s| s.id == id) {
                    sessions.remove(&client);
                }
                continue;
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors surface here on some systems; they concern one peer only.
                    tracing::debug!(listener = stats.label, error = %e, "recv failed");
                    continue;
                }
            },
        };
        // Every datagram: a guard, not an Arc clone, released before any await.
        let admitted = {
            let snapshot = shared.live.snapshot.load();
            snapshot
                .l4_entry(&key)
                .map(|entry| allowed(entry, client.ip()))
        };
        match admitted {
            None => break,
            Some(false) => {
                shared.live.metrics.deny("allowlist");
                continue;
            }
            Some(true) => {}
        }
        let now_ms = origin.elapsed().as_millis() as u64;
        if !sessions.contains_key(&client) {
            let snapshot = shared.live.snapshot.load_full();
            let Some(entry) = snapshot.l4_entry(&key) else {
                break;
            };
            if sessions.len() >= entry.max {
                evict_least_recent(&mut sessions);
            }
            let upstream = &snapshot.upstreams[entry.service.0];
            let endpoints = upstream.endpoints();
            let preference = upstream.l4_preference(client.ip());
            let Some(idx) = upstream.pick(&endpoints, &[], preference) else {
                tracing::warn!(
                    listener = stats.label,
                    service = upstream.name(),
                    "service has no endpoint; datagram dropped"
                );
                continue;
            };
            let target = endpoints[idx].addr();
            let Ok(upstream_socket) = open(target).await else {
                tracing::warn!(listener = stats.label, endpoint = %target, "cannot open a socket to the endpoint; datagram dropped");
                continue;
            };
            next_id += 1;
            let session = Session {
                id: next_id,
                upstream: Arc::new(upstream_socket),
                last: Arc::new(AtomicU64::new(now_ms)),
                bytes_in: Arc::new(AtomicU64::new(0)),
                end: CancellationToken::new(),
            };
            stats.connections.inc();
            stats.active.inc();
            let replies = Replies {
                listener: socket.clone(),
                upstream: session.upstream.clone(),
                client,
                target,
                last: session.last.clone(),
                bytes_in: session.bytes_in.clone(),
                end: session.end.clone(),
                idle: entry.idle,
                origin,
                shared: shared.clone(),
                stats: stats.clone(),
                done: (ended_tx.clone(), session.id),
            };
            shared.sessions.spawn(replies.relay());
            sessions.insert(client, session);
        }
        let Some(session) = sessions.get(&client) else {
            continue;
        };
        session.last.store(now_ms, Ordering::Relaxed);
        if session.upstream.send(&buf[..len]).await.is_ok() {
            session.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
            stats.bytes_in.inc_by(len as u64);
        }
    }
}

/// A socket of the endpoint's family, connected to it, so only its replies arrive.
async fn open(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Ends the session that has been quiet longest. A scan, paid only when the table is full.
fn evict_least_recent(sessions: &mut HashMap<SocketAddr, Session>) {
    let oldest = sessions
        .iter()
        // Ties (same millisecond) go to the older session.
        .min_by_key(|(_, s)| (s.last.load(Ordering::Relaxed), s.id))
        .map(|(client, _)| *client);
    if let Some(session) = oldest.and_then(|c| sessions.remove(&c)) {
        session.end.cancel();
    }
}

/// The reply side of one session.
struct Replies {
    listener: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddr,
    last: Arc<AtomicU64>,
    bytes_in: Arc<AtomicU64>,
    end: CancellationToken,
    idle: Duration,
    origin: Instant,
    shared: Arc<L4Shared>,
    stats: Arc<L4Stats>,
    done: (mpsc::UnboundedSender<(SocketAddr, u64)>, u64),
}

impl Replies {
    async fn relay(self) {
        let started = SystemTime::now();
        let clock = Instant::now();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut bytes_out = 0u64;
        let end = loop {
            let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = self.origin + last + self.idle;
            tokio::select! {
                _ = self.end.cancelled() => break End::Evicted,
                _ = self.shared.stop.cancelled() => break End::Shutdown,
                _ = tokio::time::sleep_until(deadline) => {
                    let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
                    if self.origin.elapsed().saturating_sub(last) >= self.idle {
                        break End::Idle;
                    }
                }
                r = self.upstream.recv(&mut buf) => match r {
                    Ok(n) => {
                        self.last.store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
                        if self.listener.send_to(&buf[..n], self.client).await.is_ok() {
                            bytes_out += n as u64;
                            self.stats.bytes_out.inc_by(n as u64);
                        }
                    }
                    // The endpoint is unreachable (ICMP): later datagrams may still pass.
                    Err(_) => continue,
                },
            }
        };
        self.stats.active.dec();
        let _ = self.done.0.send((self.client, self.done.1));
        L4Record {
            started,
            listener: &self.stats.label,
            client: self.client,
            upstream: Some(self.target),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out,
            duration: clock.elapsed(),
            end,
        }
        .write(self.shared.live.snapshot.load().config.access_log);
    }
}
