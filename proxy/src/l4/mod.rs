//! L4 exposure: raw TCP and UDP ports forwarded to a service's endpoints. Each listener
//! reads its `l4` entry from the current snapshot per connection (TCP) or per new session
//! (UDP), so allow-lists, limits and endpoints change without rebinding; listeners
//! themselves come and go with the configuration (see `runtime`).

pub(crate) mod key;
pub(crate) mod tcp;
pub(crate) mod udp;

use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime},
};

use gatehouse_config::{AccessLog, L4Listener};
use prometheus::{IntCounter, IntGauge};

use crate::{l4::key::L4Key, metrics::Metrics, snapshot::Snapshot};

impl Snapshot {
    /// The `l4` entry a running listener serves, if the configuration still has it.
    pub(crate) fn l4_entry(&self, key: &L4Key) -> Option<&L4Listener> {
        self.l4_index.get(key).map(|i| &self.config.l4[*i])
    }
}

/// A listener's metric handles, resolved once when it starts.
pub(crate) struct L4Stats {
    pub(crate) label: String,
    pub(crate) connections: IntCounter,
    pub(crate) bytes_in: IntCounter,
    pub(crate) bytes_out: IntCounter,
    pub(crate) active: IntGauge,
}

impl L4Stats {
    pub(crate) fn new(metrics: &Metrics, label: &str) -> Self {
        L4Stats {
            label: label.to_owned(),
            connections: metrics.l4_connections.with_label_values(&[label]),
            bytes_in: metrics.l4_bytes.with_label_values(&[label, "in"]),
            bytes_out: metrics.l4_bytes.with_label_values(&[label, "out"]),
            active: metrics.l4_active.with_label_values(&[label]),
        }
    }
}

/// How a TCP connection or UDP session ended, for the access log.
#[derive(Clone, Copy, Debug)]
pub(crate) enum End {
    /// Both sides finished (TCP) or the session idled out (UDP).
    Closed,
    Idle,
    /// No endpoint could be reached.
    NoUpstream,
    /// Evicted for a newer session (UDP), or the listener was removed.
    Evicted,
    Error,
    Shutdown,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle",
            End::NoUpstream => "no_upstream",
            End::Evicted => "evicted",
            End::Error => "error",
            End::Shutdown => "shutdown",
        }
    }
}

/// One finished TCP connection or UDP session.
pub(crate) struct L4Record<'a> {
    pub(crate) started: SystemTime,
    pub(crate) listener: &'a str,
    pub(crate) client: SocketAddr,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) duration: Duration,
    pub(crate) end: End,
}

impl L4Record<'_> {
    /// Writes the access log line (one write, so lines stay whole).
    pub(crate) fn write(&self, access_log: AccessLog) {
        if access_log == AccessLog::Off {
            return;
        }
        let line = serde_json::json!({
            "time": humantime::format_rfc3339_millis(self.started).to_string(),
            "listener": self.listener,
            "client": self.client.to_string(),
            "upstream": self.upstream.map(|a| a.to_string()),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "duration": self.duration.as_secs_f64(),
            "end": self.end.as_str(),
        });
        let mut buf = serde_json::to_vec(&line).unwrap_or_default();
        buf.push(b'\n');
        let _ = std::io::stdout().lock().write_all(&buf);
    }
}

/// Whether the entry's allow-list lets `ip` in (IPv4-mapped addresses count as IPv4).
pub(crate) fn allowed(entry: &L4Listener, ip: IpAddr) -> bool {
    entry.allow.is_empty() || entry.allow.contains(crate::conn::canonical_ip(ip))
}
