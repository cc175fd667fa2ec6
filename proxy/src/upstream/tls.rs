//! TLS to an upstream's endpoints (a service's `protocol: https`, an `https://`
//! authentication service): one client configuration per set of settings, shared by the
//! service's endpoints, so its session cache lets a new pooled connection resume instead of
//! paying a full handshake. As nginx, the endpoint's certificate is verified only when the
//! settings give authorities to verify it with; a client certificate may be shown (mTLS to
//! the pod).

use std::{io, net::SocketAddr, sync::Arc};

use gatehouse_config::UpstreamTls;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

use rustls_pki_types::TrustAnchor;

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
    pub(crate) fn load(tls: &UpstreamTls, h2: bool) -> Result<Self, String> {
        let digest = digest(&(tls, h2));
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
        let verifier = match &tls.verify {
            Some(source) => EndpointCertificates::trusting(source, tls.depth)?,
            None => EndpointCertificates::unverified(),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match &tls.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let (cert_pem, cert_name) = cert.read()?;
                let (key_pem, key_name) = key.read()?;
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{cert_name} is not a PEM certificate chain: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| format!("{key_name} is not a PEM private key: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("{key_name} does not go with {cert_name}: {e}"))?
            }
        };
        config.alpn_protocols = vec![if h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        config.enable_sni = tls.sni && server_name.is_some();
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

/// The signature algorithms of our crypto provider.
fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// How an endpoint's certificate is judged. With `proxy_ssl_verify on` (authorities given)
/// it must chain to them within `depth` (nginx's `proxy_ssl_verify_depth`; rustls's own
/// verifier has no depth) and name the server name; with nginx's default `off` any
/// certificate is taken. Either way the endpoint must prove it holds the certificate's key
/// (the handshake signature is checked).
#[derive(Debug)]
struct EndpointCertificates {
    /// The authorities and the depth; `None`: not verified.
    trust: Option<(Vec<TrustAnchor<'static>>, usize)>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl EndpointCertificates {
    fn unverified() -> Self {
        EndpointCertificates {
            trust: None,
            algorithms: algorithms(),
        }
    }

    fn trusting(source: &gatehouse_config::PemSource, depth: u32) -> Result<Self, String> {
        let (pem, name) = source.read()?;
        let anchors = CertificateDer::pem_slice_iter(&pem)
            .map(|cert| {
                let cert = cert.map_err(|e| format!("{name} is not PEM certificates: {e}"))?;
                webpki::anchor_from_trusted_cert(&cert)
                    .map(|a| a.to_owned())
                    .map_err(|e| format!("{name}: an authority does not parse: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if anchors.is_empty() {
            return Err(format!("{name} holds no certificate"));
        }
        Ok(EndpointCertificates {
            trust: Some((anchors, depth as usize)),
            algorithms: algorithms(),
        })
    }
}

impl ServerCertVerifier for EndpointCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some((anchors, depth)) = &self.trust else {
            return Ok(ServerCertVerified::assertion());
        };
        let invalid = |e: webpki::Error| {
            rustls::Error::InvalidCertificate(match e {
                webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
                webpki::Error::CertExpired { .. } => CertificateError::Expired,
                webpki::Error::CertNotValidYet { .. } => CertificateError::NotValidYet,
                webpki::Error::CertNotValidForName(_) => CertificateError::NotValidForName,
                e => CertificateError::Other(OtherError(Arc::new(e))),
            })
        };
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(invalid)?;
        let within_depth =
            |path: &webpki::VerifiedPath<'_>| match path.intermediate_certificates().count()
                < *depth
            {
                true => Ok(()),
                false => Err(webpki::Error::MaximumPathDepthExceeded),
            };
        cert.verify_for_usage(
            self.algorithms.all,
            anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            Some(&within_depth),
        )
        .map_err(invalid)?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(invalid)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
