//! Certificates: loaded from the configuration (files, inline PEM, Kubernetes Secrets),
//! checked, and looked up by host name.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use gatehouse_config::{Config, HostPattern, Location, TlsEntry, TlsSource};
use rustls::{crypto::CryptoProvider, sign::CertifiedKey};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// The crypto provider: aws-lc-rs (see docs/development.md for the measurement behind the choice).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate that could not be loaded, and the `tls` entry it belongs to.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct TlsError {
    pub location: Location,
    pub message: String,
}

/// A loaded certificate with what the proxy needs to know about it.
pub struct LoadedCert {
    /// The certificate file (or where inline PEM came from), for logs and metrics.
    pub label: String,
    pub(crate) key: Arc<CertifiedKey>,
    /// The names it serves: the entry's `hosts`, else its DNS SANs.
    names: Vec<HostPattern>,
    /// Its DNS SANs, whatever `hosts` says (for "is the certificate valid for this host").
    sans: Vec<HostPattern>,
    /// Validity period, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// Digest of the PEM it was parsed from, so an unchanged certificate is not parsed again
    /// when a snapshot is rebuilt (Ingress churn rebuilds often).
    digest: u64,
}

impl LoadedCert {
    /// Whether this certificate serves `host` (a normalised host name).
    pub fn serves(&self, host: &str) -> bool {
        self.names.iter().any(|n| n.matches(host))
    }

    /// Whether a browser would accept this certificate for `host` now: inside its validity
    /// period and with a SAN covering the name.
    pub fn is_valid_for(&self, host: &str, now: SystemTime) -> bool {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.not_before <= now && now <= self.not_after && self.sans.iter().any(|n| n.matches(host))
    }
}

/// Every certificate of a configuration, indexed by the names it serves.
#[derive(Default)]
pub struct CertStore {
    certs: Vec<Arc<LoadedCert>>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    default: Option<usize>,
}

impl CertStore {
    /// The certificate serving a normalised host name: exact names before wildcards.
    pub fn lookup(&self, host: &str) -> Option<&Arc<LoadedCert>> {
        let i = self.exact.get(host).copied().or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.wildcard.get(parent).copied()
        })?;
        self.certs.get(i)
    }

    /// The certificate for a TLS handshake: by SNI, else the default one.
    pub fn for_sni(&self, sni: Option<&str>) -> Option<&Arc<LoadedCert>> {
        sni.and_then(|name| self.lookup(name))
            .or_else(|| self.default.and_then(|i| self.certs.get(i)))
    }

    /// All certificates.
    pub fn certs(&self) -> &[Arc<LoadedCert>] {
        &self.certs
    }

    /// Loads every `tls` entry of a configuration; reports every failure at once.
    /// Certificates whose PEM is unchanged since `previous` are taken from it, not parsed.
    pub fn load(config: &Config, previous: Option<&CertStore>) -> Result<Self, Vec<TlsError>> {
        let provider = provider();
        let known: HashMap<u64, &LoadedCert> = previous
            .into_iter()
            .flat_map(|p| p.certs.iter())
            .map(|c| (c.digest, &**c))
            .collect();
        let mut store = CertStore::default();
        let mut errors = Vec::new();
        for entry in &config.tls {
            let mut problems = Vec::new();
            store.add(entry, &provider, &known, &mut problems);
            if entry.strict {
                errors.extend(problems.into_iter().map(|message| TlsError {
                    location: entry.location.clone(),
                    message,
                }));
            } else {
                for problem in problems {
                    tracing::warn!(
                        "{}: {problem}; the hosts it names get the default certificate (if any) until it is fixed",
                        entry.location
                    );
                }
            }
        }
        if errors.is_empty() {
            Ok(store)
        } else {
            Err(errors)
        }
    }
}

impl CertStore {
    /// Adds one entry; whatever keeps it (or one of its names) out goes to `problems`.
    fn add(
        &mut self,
        entry: &TlsEntry,
        provider: &CryptoProvider,
        known: &HashMap<u64, &LoadedCert>,
        problems: &mut Vec<String>,
    ) {
        let mut cert = match load_entry(entry, provider, known) {
            Ok(c) => c,
            Err(message) => return problems.push(message),
        };
        if cert.names.is_empty() {
            return problems.push(format!(
                "certificate {} has no DNS name to serve; add `hosts:`",
                cert.label
            ));
        }
        let index = self.certs.len();
        let mut served = Vec::with_capacity(cert.names.len());
        for name in &cert.names {
            let (map, key) = match name {
                HostPattern::Exact(h) => (&mut self.exact, h),
                HostPattern::Wildcard(p) => (&mut self.wildcard, p),
                HostPattern::Any => {
                    problems.push("`*` is not a certificate name; use `default: true`".to_owned());
                    continue;
                }
            };
            if let Some(first) = map.get(key) {
                problems.push(format!(
                    "`{name}` is already served by {}; set `hosts:` on one of them to choose",
                    self.certs[*first].label
                ));
            } else {
                map.insert(key.clone(), index);
                served.push(name.clone());
            }
        }
        if served.is_empty() {
            return;
        }
        cert.names = served;
        if entry.default {
            self.default = Some(index);
        }
        self.certs.push(Arc::new(cert));
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A digest of what was loaded (PEM, settings), to know it again without loading it:
/// keyed at random per process, so nobody can craft input that collides with another's.
pub(crate) fn digest(value: &impl std::hash::Hash) -> u64 {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(std::hash::RandomState::new).hash_one(value)
}

fn load_entry(
    entry: &TlsEntry,
    provider: &CryptoProvider,
    known: &HashMap<u64, &LoadedCert>,
) -> Result<LoadedCert, String> {
    let (cert_pem, key_pem, cert_name, key_name) = match &entry.source {
        TlsSource::Files { cert, key } => (
            read(cert)?,
            read(key)?,
            cert.display().to_string(),
            key.display().to_string(),
        ),
        TlsSource::Inline { name, cert, key } => (
            cert.clone().into_bytes(),
            key.clone().into_bytes(),
            format!("the certificate of {name}"),
            format!("the key of {name}"),
        ),
    };
    let digest = digest(&(&cert_pem, &key_pem));
    if let Some(same) = known.get(&digest) {
        return Ok(LoadedCert {
            label: entry.label(),
            key: same.key.clone(),
            names: entry.hosts.clone().unwrap_or_else(|| same.sans.clone()),
            sans: same.sans.clone(),
            not_before: same.not_before,
            not_after: same.not_after,
            digest,
        });
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_name} is not a PEM certificate chain: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("{cert_name} holds no certificate"));
    };
    let (sans, not_before, not_after) = {
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| format!("{cert_name}: the certificate does not parse: {e}"))?;
        let validity = parsed.validity();
        let sans: Vec<HostPattern> = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => {
                            HostPattern::parse(d).ok()
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        (
            sans,
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        )
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!("{key_name} is not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            format!("{key_name} is not the key of {cert_name}")
        }
        e => format!("{key_name}: {e}"),
    })?;
    Ok(LoadedCert {
        label: entry.label(),
        key: Arc::new(certified),
        names: entry.hosts.clone().unwrap_or_else(|| sans.clone()),
        sans,
        not_before,
        not_after,
        digest,
    })
}

/// A self-signed certificate for `localhost` (the embedded demo's), as PEM text.
pub fn self_signed_localhost() -> Result<(String, String), rcgen::Error> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    Ok((generated.cert.pem(), generated.signing_key.serialize_pem()))
}
