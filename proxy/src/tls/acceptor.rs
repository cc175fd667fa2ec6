//! The HTTPS listener's TLS server: certificates chosen by SNI from the snapshot current at
//! each handshake, so a reload swaps certificates with the routes, lock-free; and a client
//! certificate asked for only where the SNI names a host that wants one.

use std::sync::Arc;

use dashmap::DashMap;
use rustls::{
    server::{Acceptor, ClientHello, ResolvesServerCert, ServerSessionMemoryCache},
    sign::CertifiedKey,
    ServerConfig,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{server::TlsStream, LazyConfigAcceptor};

use crate::{
    state::Live,
    tls::{certs::provider, client_auth::ClientAuth},
};

/// Most client-certificate server configurations kept (one per distinct set of
/// authorities); past it the cache starts again.
const MAX_ASKING: usize = 256;

/// Accepts TLS connections with the server configuration the ClientHello's SNI calls for.
pub(crate) struct TlsServer {
    live: Arc<Live>,
    /// Hosts without client certificates.
    plain: Arc<ServerConfig>,
    /// Per client-certificate policy (by digest), a configuration that asks for one. Each
    /// has its own session cache and ticket keys: a session resumed under one policy never
    /// skips another's certificate.
    asking: DashMap<u64, Arc<ServerConfig>>,
}

impl TlsServer {
    pub(crate) fn new(live: Arc<Live>) -> Result<Self, rustls::Error> {
        Ok(TlsServer {
            plain: server_config(live.clone(), None)?,
            live,
            asking: DashMap::new(),
        })
    }

    /// Completes a handshake; with the client-certificate policy it was made under, if its
    /// host has one.
    pub(crate) async fn accept<IO>(
        &self,
        io: IO,
    ) -> std::io::Result<(TlsStream<IO>, Option<Arc<ClientAuth>>)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io).await?;
        let policy = {
            let hello = start.client_hello();
            let sni = hello.server_name().map(str::to_ascii_lowercase);
            let snapshot = self.live.snapshot.load();
            snapshot.client_auth.for_sni(sni.as_deref()).cloned()
        };
        let config = match &policy {
            Some(p) if p.asks() => self.asking(p).map_err(std::io::Error::other)?,
            _ => self.plain.clone(),
        };
        Ok((start.into_stream(config).await?, policy))
    }

    fn asking(&self, policy: &ClientAuth) -> Result<Arc<ServerConfig>, rustls::Error> {
        if let Some(config) = self.asking.get(&policy.digest) {
            return Ok(config.clone());
        }
        if self.asking.len() >= MAX_ASKING {
            self.asking.clear();
        }
        let config = server_config(self.live.clone(), Some(policy))?;
        self.asking.insert(policy.digest, config.clone());
        Ok(config)
    }
}

/// Picks the certificate for a handshake from the snapshot current at that moment.
struct SniResolver {
    live: Arc<Live>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snapshot = self.live.snapshot.load();
        let sni = hello.server_name().map(str::to_ascii_lowercase);
        snapshot
            .certs
            .for_sni(sni.as_deref())
            .map(|c| c.key.clone())
    }
}

/// A server configuration of the HTTPS listener: TLS 1.2 and 1.3, ALPN h2 and
/// http/1.1, session resumption by tickets and by session ID; asking for a client
/// certificate when `client_auth` says so.
fn server_config(
    live: Arc<Live>,
    client_auth: Option<&ClientAuth>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        Some(policy) => builder.with_client_cert_verifier(policy.asker.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { live }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.session_storage = ServerSessionMemoryCache::new(16 * 1024);
    Ok(Arc::new(config))
}
