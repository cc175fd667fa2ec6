//! The HTTPS listener's TLS server: certificates chosen by SNI from the snapshot current at
//! each handshake, so a reload swaps certificates with the routes, lock-free; and a client
//! certificate asked for only where the SNI names a host that wants one.

use std::sync::Arc;

use dashmap::DashMap;
use rustls::{
    server::{Acceptor, ClientHello, ResolvesServerCert, ServerSessionMemoryCache},
    sign::CertifiedKey,
    ServerConfig, SupportedProtocolVersion,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{server::TlsStream, LazyConfigAcceptor};

use gatehouse_config::{ServiceId, TlsVersions};

use crate::{
    l4::L4Stats,
    state::{L4Shared, Live},
    tls::{certs::provider, client_auth::ClientAuth, passthrough::Replay},
};

/// Most client-certificate server configurations kept (one per distinct set of
/// authorities); past it the cache starts again.
const MAX_ASKING: usize = 256;

/// What became of a TLS connection's start.
pub(crate) enum Accepted<IO> {
    /// Terminated here, with the client-certificate policy of its host, if any.
    Terminated(Box<TlsStream<Replay<IO>>>, Option<Arc<ClientAuth>>),
    /// For a passthrough host: the ClientHello read, the connection, the route and service.
    Passthrough {
        hello: Vec<u8>,
        io: IO,
        route: usize,
        service: ServiceId,
    },
}

/// Accepts TLS connections with the server configuration the ClientHello's SNI calls for.
pub(crate) struct TlsServer {
    live: Arc<Live>,
    /// Passthrough connections are L4 sessions: they end with the grace period.
    pub(crate) l4: Arc<L4Shared>,
    pub(crate) passthrough_stats: L4Stats,
    /// Hosts without client certificates, by the TLS versions spoken (`VERSIONS`' order).
    plain: [Arc<ServerConfig>; 3],
    /// Per client-certificate policy (by digest) and TLS versions, a configuration that asks
    /// for one. Each has its own session cache and ticket keys: a session resumed under one
    /// policy never skips another's certificate.
    asking: DashMap<(u64, TlsVersions), Arc<ServerConfig>>,
}

const VERSIONS: [TlsVersions; 3] = [
    TlsVersions::Tls12And13,
    TlsVersions::Tls12Only,
    TlsVersions::Tls13Only,
];

static TLS12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
static TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn protocol_versions(versions: TlsVersions) -> &'static [&'static SupportedProtocolVersion] {
    match versions {
        TlsVersions::Tls12And13 => rustls::DEFAULT_VERSIONS,
        TlsVersions::Tls12Only => &TLS12,
        TlsVersions::Tls13Only => &TLS13,
    }
}

impl TlsServer {
    pub(crate) fn new(live: Arc<Live>, l4: Arc<L4Shared>) -> Result<Self, rustls::Error> {
        Ok(TlsServer {
            plain: [
                server_config(live.clone(), None, VERSIONS[0])?,
                server_config(live.clone(), None, VERSIONS[1])?,
                server_config(live.clone(), None, VERSIONS[2])?,
            ],
            passthrough_stats: L4Stats::new(&live.metrics, "tls-passthrough"),
            l4,
            live,
            asking: DashMap::new(),
        })
    }

    /// Completes a handshake, with the client-certificate policy it was made under if its
    /// host has one; or, when passthrough hosts exist and the SNI names one, hands the
    /// connection back unterminated.
    pub(crate) async fn accept<IO>(&self, mut io: IO) -> std::io::Result<Accepted<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let mut hello = Vec::new();
        if !self.live.snapshot.load().passthrough.is_empty() {
            let sni = read_client_hello(&mut io, &mut hello).await?;
            let target = sni.and_then(|sni| self.live.snapshot.load().passthrough.for_sni(&sni));
            if let Some((route, service)) = target {
                return Ok(Accepted::Passthrough {
                    hello,
                    io,
                    route,
                    service,
                });
            }
        }
        let start = LazyConfigAcceptor::new(Acceptor::default(), Replay::new(hello, io)).await?;
        let (policy, versions) = {
            let hello = start.client_hello();
            let sni = hello.server_name().map(str::to_ascii_lowercase);
            let snapshot = self.live.snapshot.load();
            let policy = snapshot.client_auth.for_sni(sni.as_deref()).cloned();
            (policy, snapshot.config.tls_versions)
        };
        let config = match &policy {
            Some(p) if p.asks() => self.asking(p, versions).map_err(std::io::Error::other)?,
            _ => {
                let i = VERSIONS.iter().position(|v| *v == versions).unwrap_or(0);
                self.plain[i].clone()
            }
        };
        Ok(Accepted::Terminated(
            Box::new(start.into_stream(config).await?),
            policy,
        ))
    }

    fn asking(
        &self,
        policy: &ClientAuth,
        versions: TlsVersions,
    ) -> Result<Arc<ServerConfig>, rustls::Error> {
        let key = (policy.digest, versions);
        if let Some(config) = self.asking.get(&key) {
            return Ok(config.clone());
        }
        if self.asking.len() >= MAX_ASKING {
            self.asking.clear();
        }
        let config = server_config(self.live.clone(), Some(policy), versions)?;
        self.asking.insert(key, config.clone());
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

/// Reads from `io` into `read` until a whole ClientHello is in; its SNI (lowercase).
async fn read_client_hello<IO>(io: &mut IO, read: &mut Vec<u8>) -> std::io::Result<Option<String>>
where
    IO: AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    // rustls's own parser decides when the ClientHello is complete and what it says.
    let mut acceptor = Acceptor::default();
    let mut chunk = [0u8; 4096];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        read.extend_from_slice(&chunk[..n]);
        acceptor.read_tls(&mut &chunk[..n])?;
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                return Ok(hello.server_name().map(str::to_ascii_lowercase));
            }
            Ok(None) => continue,
            Err((e, _)) => return Err(std::io::Error::other(e)),
        }
    }
}

/// A server configuration of the HTTPS listener: TLS 1.2 and/or 1.3, ALPN h2 and
/// http/1.1, session resumption by tickets and by session ID; asking for a client
/// certificate when `client_auth` says so.
fn server_config(
    live: Arc<Live>,
    client_auth: Option<&ClientAuth>,
    versions: TlsVersions,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(protocol_versions(versions))?;
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
