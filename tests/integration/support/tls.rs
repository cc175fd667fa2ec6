//! Certificates for tests (a private CA and leaves it signs) and a rustls client.
#![allow(dead_code)]

use std::{net::SocketAddr, path::Path, sync::Arc};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A leaf for `names`, valid from `days_from_now.0` to `days_from_now.1` days from now.
    pub fn leaf(&self, names: &[&str], valid_days: (i64, i64)) -> (String, String) {
        self.leaf_between(names, time_days(valid_days.0), time_days(valid_days.1))
    }

    /// A leaf for `names` that expires `seconds` from now.
    pub fn leaf_expiring_in(&self, names: &[&str], seconds: i64) -> (String, String) {
        self.leaf_between(names, time_days(-1), time::Duration::seconds(seconds))
    }

    fn leaf_between(
        &self,
        names: &[&str],
        from: time::Duration,
        to: time::Duration,
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = time_now();
        params.not_before = now + from;
        params.not_after = now + to;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A client configuration that trusts this CA.
    pub fn client(&self, alpn: &[&[u8]]) -> ClientConfig {
        self.client_speaking(rustls::DEFAULT_VERSIONS, alpn)
    }

    /// A client configuration that trusts this CA and speaks only `versions`.
    pub fn client_speaking(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut config = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn time_days(d: i64) -> time::Duration {
    time::Duration::days(d)
}

pub fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// A client that accepts any certificate, to look at which one the server picked for an
/// SNI name the certificate does not cover. Tests only.
pub fn any_certificate_client() -> ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connects with TLS, naming `sni` (or none), verifying against the client's roots as
/// `verify_as`.
pub async fn connect(
    config: ClientConfig,
    addr: SocketAddr,
    sni: Option<&str>,
    verify_as: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = config;
    config.enable_sni = sni.is_some();
    // rustls sends the name it verifies as its SNI; with SNI off it still verifies that name.
    let name = ServerName::try_from(sni.unwrap_or(verify_as).to_owned()).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// A TLS connection to `addr` for `host` (as SNI) from a client that trusts `ca`.
pub async fn connect_verified(ca: &TestCa, addr: SocketAddr, host: &str) -> TlsStream<TcpStream> {
    connect(ca.client(&[]), addr, Some(host), host)
        .await
        .unwrap_or_else(|e| panic!("TLS to {addr} as {host}: {e}"))
}

/// The DER of the certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The certificate's notAfter, in seconds since the epoch.
pub fn not_after(pem: &str) -> i64 {
    let der = der_of(pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.validity().not_after.timestamp()
}

pub fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// What a [`TlsUpstream`] saw of each TLS connection: the SNI and whether the session was
/// resumed.
pub type Handshakes = Arc<std::sync::Mutex<Vec<(Option<String>, bool)>>>;

/// An HTTPS upstream with the certificate `cert`/`key`. `/check` plays an authentication
/// service (`session=good` in the Cookie → 200 with `X-Auth-Request-User: tls-ann`, else
/// 401); any other path answers `tls-up`. `/close` closes the connection after the answer,
/// so the next request needs a new handshake.
pub async fn tls_upstream(cert: &str, key: &str) -> (SocketAddr, Handshakes) {
    tls_upstream_for(cert, key, None).await
}

/// [`tls_upstream`], requiring a client certificate of `clients` (a CA's PEM) when given.
pub async fn tls_upstream_for(
    cert: &str,
    key: &str,
    clients: Option<&str>,
) -> (SocketAddr, Handshakes) {
    use hyper::{server::conn::http1, service::service_fn};
    use hyper_util::rt::TokioIo;
    use rustls_pki_types::PrivateKeyDer;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Handshakes = Arc::default();
    let keep = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, keep) = (acceptor.clone(), keep.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, session) = stream.get_ref();
                let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                keep.lock()
                    .unwrap()
                    .push((session.server_name().map(str::to_owned), resumed));
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let cookie = req
                        .headers()
                        .get("cookie")
                        .and_then(|c| c.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let mut resp = http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"tls-up"),
                    ));
                    match req.uri().path() {
                        "/check" if cookie.contains("session=good") => {
                            resp.headers_mut()
                                .insert("x-auth-request-user", "tls-ann".parse().unwrap());
                        }
                        "/check" => *resp.status_mut() = http::StatusCode::UNAUTHORIZED,
                        "/close" => {
                            resp.headers_mut()
                                .insert("connection", "close".parse().unwrap());
                        }
                        _ => {}
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// One HTTP/1.1 GET of `/` over an established TLS stream.
pub async fn h1_over(
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    host: &str,
) -> super::Got {
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", host)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    super::collect(sender.send_request(req).await.unwrap()).await
}
