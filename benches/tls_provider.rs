//! ring vs aws-lc-rs for what the HTTPS listener does: full handshakes (ECDSA P-256 and
//! RSA 2048, TLS 1.3 and 1.2) and bulk record encryption + decryption, in memory.
//!
//!     cargo bench --bench tls_provider --features bench-ring

use std::{hint::black_box, io::Read, io::Write, sync::Arc};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rustls::{
    crypto::CryptoProvider, pki_types::ServerName, ClientConfig, ClientConnection, RootCertStore,
    ServerConfig, ServerConnection, SupportedProtocolVersion,
};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

fn providers() -> [(&'static str, Arc<CryptoProvider>); 2] {
    [
        ("ring", Arc::new(rustls::crypto::ring::default_provider())),
        (
            "aws-lc-rs",
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        ),
    ]
}

/// (certificate PEM, key PEM) for bench.example.com.
fn ecdsa() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["bench.example.com".into()]).expect("rcgen");
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn rsa() -> (String, String) {
    // ring cannot generate RSA keys; openssl makes one, rcgen signs the certificate.
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let key_pem = String::from_utf8(out.stdout).expect("pem");
    let key =
        rcgen::KeyPair::from_pem_and_sign_algo(&key_pem, &rcgen::PKCS_RSA_SHA256).expect("rsa key");
    let params =
        rcgen::CertificateParams::new(vec!["bench.example.com".to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("self-signed");
    (cert.pem(), key_pem)
}

struct Pair {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn pair(
    provider: &Arc<CryptoProvider>,
    (cert, key): &(String, String),
    version: &'static SupportedProtocolVersion,
) -> Pair {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
    let mut roots = RootCertStore::empty();
    roots.add(chain[0].clone()).expect("root");
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every handshake a full one: no resumption.
    client.resumption = rustls::client::Resumption::disabled();
    Pair {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

fn pump(from: &mut dyn Side, to: &mut dyn Side, buf: &mut Vec<u8>) {
    buf.clear();
    while from.has_output() {
        from.output(buf);
    }
    let mut slice = &buf[..];
    while !slice.is_empty() {
        to.input(&mut slice);
    }
}

/// One end of an in-memory TLS connection.
trait Side {
    fn has_output(&self) -> bool;
    fn output(&mut self, out: &mut Vec<u8>);
    fn input(&mut self, input: &mut &[u8]);
    fn handshaking(&self) -> bool;
}

macro_rules! side {
    ($t:ty) => {
        impl Side for $t {
            fn has_output(&self) -> bool {
                self.wants_write()
            }
            fn output(&mut self, out: &mut Vec<u8>) {
                self.write_tls(out).expect("write_tls");
            }
            fn input(&mut self, input: &mut &[u8]) {
                self.read_tls(input).expect("read_tls");
                self.process_new_packets().expect("tls");
            }
            fn handshaking(&self) -> bool {
                self.is_handshaking()
            }
        }
    };
}
side!(ClientConnection);
side!(ServerConnection);

fn connect(p: &Pair, buf: &mut Vec<u8>) -> (ClientConnection, ServerConnection) {
    let name = ServerName::try_from("bench.example.com").expect("name");
    let mut c = ClientConnection::new(p.client.clone(), name).expect("client");
    let mut s = ServerConnection::new(p.server.clone()).expect("server");
    while c.handshaking() || s.handshaking() {
        pump(&mut c, &mut s, buf);
        pump(&mut s, &mut c, buf);
    }
    (c, s)
}

fn handshakes(cr: &mut Criterion) {
    let keys = [("ecdsa_p256", ecdsa()), ("rsa_2048", rsa())];
    let versions = [
        ("tls13", &rustls::version::TLS13),
        ("tls12", &rustls::version::TLS12),
    ];
    let mut g = cr.benchmark_group("tls_full_handshake");
    for (kname, key) in &keys {
        for (vname, version) in versions {
            for (pname, provider) in providers() {
                let p = pair(&provider, key, version);
                let mut buf = Vec::with_capacity(1 << 16);
                g.bench_function(BenchmarkId::new(format!("{kname}/{vname}"), pname), |b| {
                    b.iter(|| black_box(connect(&p, &mut buf)))
                });
            }
        }
    }
    g.finish();
}

fn bulk(cr: &mut Criterion) {
    const SIZE: usize = 1 << 20;
    let key = ecdsa();
    let data = vec![0x5a_u8; 16 * 1024];
    let mut g = cr.benchmark_group("tls_bulk_1MiB");
    g.throughput(Throughput::Bytes(SIZE as u64));
    for (pname, provider) in providers() {
        let p = pair(&provider, &key, &rustls::version::TLS13);
        let mut buf = Vec::with_capacity(1 << 21);
        let (mut c, mut s) = connect(&p, &mut buf);
        let mut sink = vec![0u8; 64 * 1024];
        g.bench_function(pname, |b| {
            b.iter(|| {
                for _ in 0..SIZE / data.len() {
                    c.writer().write_all(&data).expect("write");
                    pump(&mut c, &mut s, &mut buf);
                    let mut got = 0;
                    while got < data.len() {
                        got += s.reader().read(&mut sink).expect("read");
                    }
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, handshakes, bulk);
criterion_main!(benches);
