//! HTTP/2 connections to an endpoint, shared by the requests on them. Each carries as
//! many streams at once as the upstream allows (its SETTINGS_MAX_CONCURRENT_STREAMS,
//! capped by [`MAX_STREAMS`]); a request that finds every connection full opens another,
//! within the service's `max_connections`.
//!
//! Flow-control windows are fixed, not adaptive: the connection's window covers every
//! stream's, so a stream whose client stops reading fills its own window and never the
//! connection's (adaptive windows grow both alike, and one stalled stream then stalls all).
//! What a connection buffers is bounded by streams × [`STREAM_WINDOW`].

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use hyper::client::conn::http2;

use super::sender::{Sender, StreamSlot};
use crate::request_body::RequestBody;

/// The most streams Gatehouse opens at once on one connection (nginx's
/// `http2_max_concurrent_streams` is 128 too).
pub(crate) const MAX_STREAMS: usize = 128;
/// Response bytes of one stream taken ahead of its client. 256 KiB moves hundreds of
/// megabytes a second at in-cluster round trips.
pub(crate) const STREAM_WINDOW: u32 = 256 * 1024;
/// Room for every stream's window at once.
pub(crate) const CONNECTION_WINDOW: u32 = STREAM_WINDOW * MAX_STREAMS as u32;

/// One HTTP/2 connection and the streams open on it.
pub(crate) struct H2Conn {
    send: http2::SendRequest<RequestBody>,
    /// The scheme its requests carry (`https` over TLS).
    scheme: &'static str,
    /// Streams open on it now (one per [`StreamSlot`]).
    streams: Arc<AtomicUsize>,
    /// What the upstream allows now, capped by ours; kept current by the connection task.
    max_streams: Arc<AtomicUsize>,
}

impl H2Conn {
    /// The connection, and the limit its task keeps current (see [`H2Conn::allowed`]).
    pub(crate) fn new(
        send: http2::SendRequest<RequestBody>,
        tls: bool,
    ) -> (Arc<Self>, Arc<AtomicUsize>) {
        let max_streams = Arc::new(AtomicUsize::new(MAX_STREAMS));
        let conn = H2Conn {
            send,
            scheme: if tls { "https" } else { "http" },
            streams: Arc::new(AtomicUsize::new(0)),
            max_streams: max_streams.clone(),
        };
        (Arc::new(conn), max_streams)
    }

    /// Streams the upstream allows now, from its latest SETTINGS, as our limit.
    pub(crate) fn allowed(upstream_max: usize) -> usize {
        upstream_max.clamp(1, MAX_STREAMS)
    }

    /// A handle for one more stream, counted until the handle is dropped.
    pub(crate) fn stream(&self) -> Sender {
        Sender::h2(
            self.send.clone(),
            StreamSlot::take(&self.streams, self.scheme),
        )
    }

    fn load(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    fn has_room(&self) -> bool {
        self.load() < self.max_streams.load(Ordering::Acquire)
    }
}

/// The open HTTP/2 connections of one endpoint.
#[derive(Default)]
pub(crate) struct SharedH2(Mutex<Vec<Arc<H2Conn>>>);

impl SharedH2 {
    /// A stream on the first open connection with room. When all are full: `None` if
    /// another may be opened, else a stream on the least loaded one (it waits there for a
    /// stream to end). `None` too when none is open.
    pub(crate) fn stream(&self, may_open: bool) -> Option<Sender> {
        let mut conns = self.0.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| !c.send.is_closed());
        if let Some(conn) = conns.iter().find(|c| c.has_room()) {
            return Some(conn.stream());
        }
        if may_open {
            return None;
        }
        conns.iter().min_by_key(|c| c.load()).map(|c| c.stream())
    }

    /// A new connection joins the others.
    pub(crate) fn add(&self, conn: Arc<H2Conn>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
    }

    /// Lets go of the connections beyond the first that carry no stream (a burst's extra
    /// ones) and of closed ones; a connection closes when no handle is left.
    pub(crate) fn shrink(&self) {
        let mut conns = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = 0;
        conns.retain(|c| {
            let keep = !c.send.is_closed() && (kept == 0 || c.load() > 0);
            kept += usize::from(keep);
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstreams_limit_is_kept_within_ours() {
        assert_eq!(H2Conn::allowed(2), 2);
        assert_eq!(H2Conn::allowed(usize::MAX), MAX_STREAMS);
        // SETTINGS_MAX_CONCURRENT_STREAMS 0 is a pause; one stream still waits its turn.
        assert_eq!(H2Conn::allowed(0), 1);
        assert!(CONNECTION_WINDOW as usize >= STREAM_WINDOW as usize * MAX_STREAMS);
    }
}
