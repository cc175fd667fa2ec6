//! TLS passthrough (a route's `passthrough`, ingress-nginx's `ssl-passthrough`): the
//! hosts whose TLS goes unterminated to a service, found by the ClientHello's SNI; and the
//! stream that replays the ClientHello read to find out, so a terminated connection's
//! handshake sees every byte.

use std::{
    collections::HashMap,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use gatehouse_config::{Config, HostPattern, PathMatch, ServiceId};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Passthrough hosts: SNI → (route, the service of its `/` path).
#[derive(Default)]
pub(crate) struct PassthroughTable {
    exact: HashMap<String, (usize, ServiceId)>,
    wildcard: HashMap<String, (usize, ServiceId)>,
}

impl PassthroughTable {
    pub(crate) fn build(config: &Config) -> Self {
        let mut table = PassthroughTable::default();
        for (i, route) in config.routes.iter().enumerate() {
            if !route.passthrough {
                continue;
            }
            let Some(root) = route
                .paths
                .iter()
                .find(|p| p.kind == PathMatch::Prefix && p.path == "/")
            else {
                continue;
            };
            let target = (i, root.service);
            match &route.host {
                HostPattern::Exact(h) => table.exact.entry(h.clone()).or_insert(target),
                HostPattern::Wildcard(p) => table.wildcard.entry(p.clone()).or_insert(target),
                // Passthrough is by SNI: a route for any host has no name to match.
                HostPattern::Any => continue,
            };
        }
        table
    }

    /// Whether any host passes through (else no ClientHello needs reading first).
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }

    /// The route and service a ClientHello naming `sni` passes through to.
    pub(crate) fn for_sni(&self, sni: &str) -> Option<(usize, ServiceId)> {
        self.exact.get(sni).copied().or_else(|| {
            let (_, parent) = sni.split_once('.')?;
            self.wildcard.get(parent).copied()
        })
    }
}

/// A stream that first yields bytes already read from it.
pub(crate) struct Replay<IO> {
    read: Vec<u8>,
    at: usize,
    inner: IO,
}

impl<IO> Replay<IO> {
    pub(crate) fn new(read: Vec<u8>, inner: IO) -> Self {
        Replay { read, at: 0, inner }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Replay<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.read.len() {
            let n = buf.remaining().min(self.read.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.read[at..at + n]);
            self.at += n;
            if self.at == self.read.len() {
                self.read = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Replay<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_bytes_read_come_first_then_the_stream() {
        let (mut far, near) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut far, b" world")
            .await
            .unwrap();
        drop(far);
        let mut replay = Replay::new(b"hello".to_vec(), near);
        let mut all = String::new();
        replay.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
