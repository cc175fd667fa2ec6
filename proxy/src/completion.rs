//! What happens when a response ends: the endpoint lease is returned (with its connection,
//! if reusable), metrics are counted and the access log line is written. A response that
//! did not end cleanly is counted and logged as such, never silently.

use std::{sync::Arc, time::Instant};

use crate::{
    access_log::LogRecord, conn::ConnInfo, policy::client_limits::Slot, snapshot::Snapshot,
    upstream::Lease, warnings::RateLimited,
};

/// An upstream that stalls every response must not flood the log.
static STALL_WARNINGS: RateLimited = RateLimited::per(std::time::Duration::from_secs(10));

/// How a response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// All of it reached hyper for the client.
    Complete,
    /// The upstream sent nothing for its read timeout mid-body; the client's response was
    /// cut.
    UpstreamStalled,
    /// The upstream's body failed (reset, closed early); the client's response was cut.
    UpstreamFailed,
    /// The client went away, or was cut off for not reading, before the end.
    ClientGone,
}

impl Ending {
    /// The name in the access log and the metric; `None` for a complete response.
    pub(crate) fn incomplete(self) -> Option<&'static str> {
        match self {
            Ending::Complete => None,
            Ending::UpstreamStalled => Some("upstream_timeout"),
            Ending::UpstreamFailed => Some("upstream_error"),
            Ending::ClientGone => Some("client_gone"),
        }
    }
}

/// The status an abandoned request is logged and counted with: nginx's 499, "client
/// closed request", which no response carries.
pub(crate) const CLIENT_CLOSED_REQUEST: u16 = 499;

/// A request's bookkeeping before its response exists. A request dropped in the meantime
/// (the client reset its stream or closed its connection while the upstream was still
/// working) is finished as abandoned, so it is logged, counted and its connection's count
/// of requests in flight goes down: it leaves a trace, as in nginx.
pub(crate) struct Pending(Option<Box<Completion>>);

impl Pending {
    pub(crate) fn new(completion: Completion) -> Self {
        Pending(Some(Box::new(completion)))
    }

    pub(crate) fn get(&mut self) -> &mut Completion {
        self.0.as_mut().expect("a pending request is answered once")
    }

    /// The bookkeeping, for the response body to finish.
    pub(crate) fn answered(mut self) -> Box<Completion> {
        self.0.take().expect("a pending request is answered once")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut abandoned) = self.0.take() {
            abandoned.status = CLIENT_CLOSED_REQUEST;
            abandoned.finish(Ending::ClientGone);
        }
    }
}

/// The bookkeeping of one request, finished exactly once by its response body.
pub(crate) struct Completion {
    pub(crate) snapshot: Arc<Snapshot>,
    /// Index of the route's stats in the snapshot ([`Snapshot::stats`]).
    pub(crate) stats: usize,
    /// The service the request was sent to (or would have been), once resolved.
    pub(crate) service: Option<gatehouse_config::ServiceId>,
    pub(crate) conn: Arc<ConnInfo>,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) start: Instant,
    pub(crate) lease: Option<Lease>,
    pub(crate) log: Option<Box<LogRecord>>,
    /// The request's place among its client's requests in flight (limit-connections),
    /// given back when the response ends.
    pub(crate) slot: Option<Slot>,
}

impl Completion {
    pub(crate) fn finish(mut self, ending: Ending) {
        let upstream = self.lease.as_ref().map(Lease::addr);
        if let Some(lease) = self.lease.take() {
            // Only a connection whose response was read to the end can carry another.
            lease.finish(ending == Ending::Complete);
        }
        let elapsed = self.start.elapsed();
        let stats = self.snapshot.stats(self.stats);
        stats.count(self.status);
        if let Some(service) = self.service {
            if let Some(counters) = self.snapshot.service_requests(self.stats, service) {
                counters.count(self.status);
            }
        }
        stats.observe(elapsed.as_secs_f64());
        let incomplete = ending.incomplete();
        if let Some(reason) = incomplete {
            stats.incomplete(reason);
            if let (Ending::UpstreamStalled, Some(addr)) = (ending, upstream) {
                if let Some(more) = STALL_WARNINGS.allow() {
                    tracing::warn!(route = stats.label(), upstream = %addr, similar_since_last = more, "the upstream sent nothing mid-response for its read timeout; the response was cut and the client got it truncated. If it streams slowly on purpose, raise timeouts.upstream_read (or the route's, or proxy-read-timeout)");
                }
            }
        }
        if let Some(log) = &self.log {
            log.write(stats.label(), self.status, self.bytes, elapsed, incomplete);
        }
        self.conn.state.request_finished();
    }
}
