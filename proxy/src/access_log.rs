//! The access log: one JSON line per finished request on stdout.

use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime},
};

use http::{Method, Version};

/// What is known about a request when it starts; completed with the outcome at the end.
pub(crate) struct LogRecord {
    pub(crate) time: SystemTime,
    pub(crate) client: IpAddr,
    pub(crate) method: Method,
    pub(crate) host: String,
    /// The path without the query string: queries often carry tokens, and logs must not.
    pub(crate) path: String,
    pub(crate) version: Version,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) upstream_time: Option<Duration>,
    /// The TLS version, on the HTTPS listener.
    pub(crate) tls: Option<&'static str>,
}

impl LogRecord {
    /// `incomplete` says why the response did not reach the client whole.
    pub(crate) fn write(
        &self,
        route: &str,
        status: u16,
        bytes: u64,
        duration: Duration,
        incomplete: Option<&str>,
    ) {
        let line = serde_json::json!({
            "time": humantime::format_rfc3339_millis(self.time).to_string(),
            "client": self.client.to_string(),
            "method": self.method.as_str(),
            "host": self.host,
            "path": self.path,
            "protocol": format!("{:?}", self.version),
            "status": status,
            "bytes": bytes,
            "duration": duration.as_secs_f64(),
            "upstream": self.upstream.map(|a| a.to_string()),
            "upstream_time": self.upstream_time.map(|d| d.as_secs_f64()),
            "route": route,
            "tls": self.tls,
            "incomplete": incomplete,
        });
        let mut buf = serde_json::to_vec(&line).unwrap_or_default();
        buf.push(b'\n');
        // One write per line keeps lines whole when several workers log at once.
        let _ = std::io::stdout().lock().write_all(&buf);
    }
}
