//! The HTTPS listener's TLS server: certificates chosen by SNI from the snapshot current at
//! each handshake, so a reload swaps certificates with the routes, lock-free.

use std::sync::Arc;

use rustls::{
    server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache},
    sign::CertifiedKey,
    ServerConfig,
};

use crate::{state::Live, tls::certs::provider};

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

/// The server configuration of the HTTPS listener: TLS 1.2 and 1.3, ALPN h2 and
/// http/1.1, session resumption by tickets and by session ID.
pub(crate) fn server_config(live: Arc<Live>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { live }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.session_storage = ServerSessionMemoryCache::new(16 * 1024);
    Ok(Arc::new(config))
}
