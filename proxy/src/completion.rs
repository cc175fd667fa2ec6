//! What happens when a response ends: the endpoint lease is returned (with its connection,
//! if reusable), metrics are counted and the access log line is written.

use std::{sync::Arc, time::Instant};

use crate::{access_log::LogRecord, conn::ConnInfo, snapshot::Snapshot, upstream::Lease};

/// The bookkeeping of one request, finished exactly once by its response body.
pub(crate) struct Completion {
    pub(crate) snapshot: Arc<Snapshot>,
    /// Index of the route's stats in the snapshot ([`Snapshot::stats`]).
    pub(crate) stats: usize,
    pub(crate) conn: Arc<ConnInfo>,
    pub(crate) status: u16,
    pub(crate) bytes: u64,
    pub(crate) start: Instant,
    pub(crate) lease: Option<Lease>,
    pub(crate) log: Option<Box<LogRecord>>,
}

impl Completion {
    /// `clean` says the whole body went through, so the upstream connection can be reused.
    pub(crate) fn finish(mut self, clean: bool) {
        if let Some(lease) = self.lease.take() {
            lease.finish(clean);
        }
        let elapsed = self.start.elapsed();
        let stats = self.snapshot.stats(self.stats);
        stats.count(self.status);
        stats.observe(elapsed.as_secs_f64());
        if let Some(log) = &self.log {
            log.write(stats.label(), self.status, self.bytes, elapsed);
        }
        self.conn.state.request_finished();
    }
}
