//! TLS to an upstream's endpoints (a service's `protocol: https`, an `https://`
//! authentication service): one client configuration per set of settings, shared by the
//! service's endpoints, so its session cache lets a new pooled connection resume instead of
//! paying a full handshake. As nginx, the endpoint's certificate is verified only when the
//! settings give authorities to verify it with.

use std::{io, net::SocketAddr, sync::Arc};

use gatehouse_config::UpstreamTls;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use crate::tls::{certs::digest, provider};

/// How connections to the endpoints of one service are wrapped in TLS.
pub struct UpstreamConnector {
    /// Of the settings: endpoints are shared across snapshots only with the same digest, so
    /// a pooled connection never serves a service that wants another transport.
    pub(crate) digest: u64,
    connector: TlsConnector,
    /// SNI and the name verified; `None`: no SNI (the endpoint's address stands in).
    server_name: Option<ServerName<'static>>,
}

impl UpstreamConnector {
    /// The connector for `tls`; the authorities it names must load.
    pub(crate) fn load(tls: &UpstreamTls) -> Result<Self, String> {
        let digest = digest(tls);
        let server_name = tls
            .server_name
            .as_deref()
            .map(|n| {
                ServerName::try_from(n.to_owned())
                    .map_err(|_| format!("`{n}` is not a server name"))
            })
            .transpose()?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &tls.verify {
            Some(source) => {
                let (pem, name) = source.read()?;
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| format!("{name} is not PEM certificates: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("{name}: an authority does not parse: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!("{name} holds no certificate"));
                }
                builder.with_root_certificates(roots)
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(
                    provider().signature_verification_algorithms,
                ))),
        };
        let mut config = builder.with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.enable_sni = server_name.is_some();
        Ok(UpstreamConnector {
            digest,
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Wraps a connection to `addr` in TLS.
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        self.connector.connect(name, tcp).await
    }
}

/// nginx's `proxy_ssl_verify off`: any certificate is taken, but the endpoint must still
/// prove it holds its key (the handshake signature is checked).
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
