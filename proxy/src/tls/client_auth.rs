//! Client certificates (mTLS, ingress-nginx's `auth-tls-*`): a host's authorities, asked
//! for in the handshake of connections whose SNI names that host, and the certificate
//! checked once the handshake is done. As nginx, the handshake succeeds whatever the client
//! shows (its signature over the handshake excepted): the request then gets 400, or the
//! error page, which a person can read; a failed handshake tells nobody anything.

use std::{collections::HashMap, sync::Arc};

use gatehouse_config::{ClientCerts, Config, HostPattern, PemSource, VerifyClient};
use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::WebPkiSupportedAlgorithms,
    server::danger::{ClientCertVerified, ClientCertVerifier},
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
};
use rustls_pki_types::{
    pem::PemObject, CertificateDer, CertificateRevocationListDer, TrustAnchor, UnixTime,
};
use webpki::{CertRevocationList, EndEntityCert, KeyUsage, VerifiedPath};

use crate::tls::certs::digest;

/// A host's client-certificate policy, loaded.
pub(crate) struct ClientAuth {
    /// Of the authorities, revocations, mode and depth: two hosts with the same digest
    /// accept the same clients, so a connection made for one may carry requests for the
    /// other.
    pub(crate) digest: u64,
    pub(crate) spec: ClientCerts,
    anchors: Vec<TrustAnchor<'static>>,
    crls: Vec<CertRevocationList<'static>>,
    /// Asks for the certificate in the handshake; checks only its signature there.
    pub(crate) asker: Arc<AskForCertificate>,
}

/// What the client of a connection showed, checked against the policy of the host its SNI
/// named.
pub(crate) struct ClientCert {
    /// The digest of the policy it was checked against.
    pub(crate) policy: u64,
    pub(crate) verdict: Verdict,
    /// RFC 2253 subject and issuer (`CN=client,O=Example`), empty without a certificate.
    pub(crate) subject: String,
    pub(crate) issuer: String,
    /// The certificate as URL-encoded PEM (nginx's `$ssl_client_escaped_cert`), when the
    /// policy passes it to the upstream.
    pub(crate) escaped_pem: Option<String>,
}

/// nginx's `$ssl_client_verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    /// No certificate.
    None,
    /// OpenSSL's words for why; `untrusted` when only the issuer is unknown (which
    /// `optional_no_ca` lets through).
    Failed {
        reason: &'static str,
        untrusted: bool,
    },
}

impl Verdict {
    /// The `ssl-client-verify` header's value.
    pub(crate) fn header(&self) -> String {
        match self {
            Verdict::Success => "SUCCESS".to_owned(),
            Verdict::None => "NONE".to_owned(),
            Verdict::Failed { reason, .. } => format!("FAILED:{reason}"),
        }
    }
}

impl ClientAuth {
    /// Loads a policy: its authorities must parse as trust anchors, its CRLs as CRLs.
    pub(crate) fn load(spec: &ClientCerts) -> Result<Self, String> {
        let (ca_pem, ca_name) = spec.ca.read()?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{ca_name} is not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{ca_name} holds no certificate"));
        }
        let anchors = certs
            .iter()
            .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{ca_name}: an authority does not parse: {e}"))?;
        let mut crl_pem = Vec::new();
        let mut crls = Vec::new();
        if let Some(source) = &spec.crl {
            let (pem, name) = source.read()?;
            for der in CertificateRevocationListDer::pem_slice_iter(&pem) {
                let der = der.map_err(|e| format!("{name} is not PEM CRLs: {e}"))?;
                let crl = webpki::OwnedCertRevocationList::from_der(&der)
                    .map_err(|e| format!("{name}: a CRL does not parse: {e}"))?;
                crls.push(CertRevocationList::Owned(crl));
            }
            crl_pem = pem;
        }
        let digest = digest(&(&ca_pem, &crl_pem, spec.verify, spec.depth));
        let hints = anchors
            .iter()
            .map(|a| DistinguishedName::in_sequence(&a.subject))
            .collect();
        Ok(ClientAuth {
            digest,
            spec: spec.clone(),
            anchors,
            crls,
            asker: Arc::new(AskForCertificate {
                hints,
                algorithms: algorithms(),
            }),
        })
    }

    /// Whether the handshake asks for a certificate (every mode but `off`).
    pub(crate) fn asks(&self) -> bool {
        self.spec.verify != VerifyClient::Off
    }

    /// Checks the chain a client sent (leaf first) at `now`.
    pub(crate) fn check(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> ClientCert {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return ClientCert {
                policy: self.digest,
                verdict: Verdict::None,
                subject: String::new(),
                issuer: String::new(),
                escaped_pem: None,
            };
        };
        let verdict = match self.verify(leaf, intermediates, now) {
            Ok(()) => Verdict::Success,
            Err(e) => Verdict::Failed {
                reason: openssl_reason(&e),
                untrusted: e == webpki::Error::UnknownIssuer,
            },
        };
        let (subject, issuer) = names(leaf);
        ClientCert {
            policy: self.digest,
            verdict,
            subject,
            issuer,
            escaped_pem: self.spec.pass_to_upstream.then(|| escaped_pem(leaf)),
        }
    }

    fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), webpki::Error> {
        let cert = EndEntityCert::try_from(leaf)?;
        let crls: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = webpki::RevocationOptionsBuilder::new(&crls).ok().map(|b| {
            b.with_depth(webpki::RevocationCheckDepth::Chain)
                .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                .build()
        });
        // nginx's ssl_verify_depth: 1 is a certificate the authority signed itself.
        let depth = self.spec.depth as usize;
        let within_depth =
            |path: &VerifiedPath<'_>| match path.intermediate_certificates().count() < depth {
                true => Ok(()),
                false => Err(webpki::Error::MaximumPathDepthExceeded),
            };
        cert.verify_for_usage(
            algorithms().all,
            &self.anchors,
            intermediates,
            now,
            KeyUsage::client_auth(),
            revocation,
            Some(&within_depth),
        )
        .map(|_| ())
    }
}

/// The signature algorithms of our crypto provider.
fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}

/// What nginx (OpenSSL) says in `FAILED:...` for each failure.
fn openssl_reason(e: &webpki::Error) -> &'static str {
    match e {
        webpki::Error::UnknownIssuer => "unable to get local issuer certificate",
        webpki::Error::CertExpired { .. } => "certificate has expired",
        webpki::Error::CertNotValidYet { .. } => "certificate is not yet valid",
        webpki::Error::CertRevoked => "certificate revoked",
        webpki::Error::MaximumPathDepthExceeded => "certificate chain too long",
        webpki::Error::RequiredEkuNotFoundContext(_) => "unsupported certificate purpose",
        webpki::Error::InvalidSignatureForPublicKey => "certificate signature failure",
        webpki::Error::CaUsedAsEndEntity => "invalid CA certificate",
        _ => "certificate verify failed",
    }
}

/// Subject and issuer of a certificate in RFC 2253 form (most specific first), as nginx's
/// `$ssl_client_s_dn` and `$ssl_client_i_dn`.
fn names(leaf: &CertificateDer<'_>) -> (String, String) {
    match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, cert)) => (rfc2253(cert.subject()), rfc2253(cert.issuer())),
        Err(_) => (String::new(), String::new()),
    }
}

fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type();
                    let kind = match oid.to_id_string().as_str() {
                        "1.2.840.113549.1.9.1" => "emailAddress".to_owned(),
                        id => x509_parser::objects::oid2abbrev(oid, registry)
                            .map_or_else(|_| id.to_owned(), str::to_owned),
                    };
                    let value = attr.as_str().map_or_else(|_| "#".to_owned(), escape_value);
                    format!("{kind}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 2253's escaping of an attribute value.
fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, ' ' | '#'))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The certificate as PEM, URL-encoded (all but `A-Za-z0-9-._~`), as nginx's
/// `$ssl_client_escaped_cert`.
fn escaped_pem(leaf: &CertificateDer<'_>) -> String {
    use base64::Engine;
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let body = base64::engine::general_purpose::STANDARD.encode(leaf.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    percent_encoding::utf8_percent_encode(&pem, KEEP).to_string()
}

/// The handshake's side of a policy: asks for a certificate, naming the authorities, and
/// checks the client's signature over the handshake (so nobody can show a certificate
/// whose key they do not hold). Whether the certificate itself is trusted is decided after
/// the handshake, by [`ClientAuth::check`].
#[derive(Debug)]
pub(crate) struct AskForCertificate {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AskForCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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

/// A host's policy: loaded, or why it could not be (an Ingress's authorities that do not
/// parse: that host answers 503 until they do).
pub(crate) type HostPolicy = Result<Arc<ClientAuth>, Arc<str>>;

/// Every host's client-certificate policy, found by SNI for the handshake and by route for
/// the request: the first route of a host that has one sets it for the whole host, as
/// nginx asks per server.
#[derive(Default)]
pub(crate) struct ClientAuthTable {
    exact: HashMap<String, Option<HostPolicy>>,
    wildcard: HashMap<String, Option<HostPolicy>>,
    any: Option<Option<HostPolicy>>,
    /// Per route (by index), its host's policy.
    per_route: Vec<Option<HostPolicy>>,
    /// Whether any host has a policy (most configurations: none, nothing to look up).
    any_policy: bool,
}

impl ClientAuthTable {
    /// Loads every host's policy. Authorities named by files that cannot be loaded are
    /// errors (the configuration is not applied); those from objects make their host 503.
    pub(crate) fn build(config: &Config) -> Result<Self, Vec<String>> {
        let mut table = ClientAuthTable::default();
        let mut errors = Vec::new();
        for route in &config.routes {
            // Every host has a slot: an exact host without client certificates is not
            // covered by a wildcard's.
            let slot = table.slot(&route.host);
            let (Some(spec), None) = (&route.client_certs, &slot) else {
                continue;
            };
            let policy = match ClientAuth::load(spec) {
                Ok(p) => Ok(Arc::new(p)),
                Err(e) if matches!(spec.ca, PemSource::File(_)) => {
                    errors.push(format!(
                        "{}: route `{}` client_certificates: {e}",
                        route.location, route.host
                    ));
                    continue;
                }
                Err(e) => Err(Arc::from(e.as_str())),
            };
            *slot = Some(policy);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        table.per_route = config
            .routes
            .iter()
            .map(|route| table.for_host(&route.host).cloned())
            .collect();
        table.any_policy = table.per_route.iter().any(Option::is_some);
        Ok(table)
    }

    fn slot(&mut self, host: &HostPattern) -> &mut Option<HostPolicy> {
        match host {
            HostPattern::Exact(h) => self.exact.entry(h.clone()).or_default(),
            HostPattern::Wildcard(p) => self.wildcard.entry(p.clone()).or_default(),
            HostPattern::Any => self.any.get_or_insert(None),
        }
    }

    fn for_host(&self, host: &HostPattern) -> Option<&HostPolicy> {
        match host {
            HostPattern::Exact(h) => self.exact.get(h),
            HostPattern::Wildcard(p) => self.wildcard.get(p),
            HostPattern::Any => self.any.as_ref(),
        }?
        .as_ref()
    }

    /// The policy for a handshake: of the host the SNI names (exact names before
    /// wildcards), else of the routes for any host.
    pub(crate) fn for_sni(&self, sni: Option<&str>) -> Option<&Arc<ClientAuth>> {
        if !self.any_policy {
            return None;
        }
        let by_name = sni.and_then(|name| {
            self.exact.get(name).or_else(|| {
                let (_, parent) = name.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        match by_name {
            Some(policy) => policy.as_ref()?.as_ref().ok(),
            None => self.any.as_ref()?.as_ref()?.as_ref().ok(),
        }
    }

    /// The policy of a route's host.
    pub(crate) fn for_route(&self, route: usize) -> Option<&HostPolicy> {
        self.per_route.get(route)?.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };

    fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn client(cn: &str, issuer: &CertifiedIssuer<'_, KeyPair>) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example, Inc");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
            .signed_by(&KeyPair::generate().unwrap(), issuer)
            .unwrap()
            .der()
            .clone()
    }

    fn policy(ca_pem: String, verify: VerifyClient, depth: u32) -> ClientAuth {
        ClientAuth::load(&ClientCerts {
            ca: PemSource::Text {
                origin: "test".into(),
                pem: ca_pem,
            },
            crl: None,
            verify,
            depth,
            pass_to_upstream: true,
            error_page: None,
            match_cn: None,
        })
        .unwrap()
    }

    #[test]
    fn a_certificate_of_the_authority_succeeds_and_names_its_subject_most_specific_first() {
        let authority = ca("Test CA");
        let p = policy(authority.pem(), VerifyClient::On, 1);
        let got = p.check(&[client("alice", &authority)], UnixTime::now());
        assert_eq!(got.verdict, Verdict::Success);
        assert_eq!(got.subject, "O=Example\\, Inc,CN=alice");
        assert_eq!(got.issuer, "CN=Test CA");
        let pem = got.escaped_pem.unwrap();
        assert!(pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{pem}");
        assert!(!pem.contains('/') && !pem.contains('+') && !pem.contains('\n'));
    }

    #[test]
    fn another_authority_is_an_unknown_issuer_and_no_certificate_is_none() {
        let p = policy(ca("Test CA").pem(), VerifyClient::On, 1);
        let got = p.check(&[client("mallory", &ca("Other CA"))], UnixTime::now());
        assert_eq!(
            got.verdict,
            Verdict::Failed {
                reason: "unable to get local issuer certificate",
                untrusted: true
            }
        );
        assert_eq!(
            got.verdict.header(),
            "FAILED:unable to get local issuer certificate"
        );
        assert_eq!(p.check(&[], UnixTime::now()).verdict, Verdict::None);
    }

    #[test]
    fn depth_counts_the_intermediates() {
        let root = ca("Root");
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Intermediate");
        let inter =
            CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &root).unwrap();
        let chain = [client("bob", &inter), inter.der().clone()];
        let shallow = policy(root.pem(), VerifyClient::On, 1);
        assert_eq!(
            shallow.check(&chain, UnixTime::now()).verdict,
            Verdict::Failed {
                reason: "certificate chain too long",
                untrusted: false
            }
        );
        let deep = policy(root.pem(), VerifyClient::On, 2);
        assert_eq!(
            deep.check(&chain, UnixTime::now()).verdict,
            Verdict::Success
        );
    }

    #[test]
    fn an_expired_certificate_says_so() {
        let authority = ca("Test CA");
        let p = policy(authority.pem(), VerifyClient::On, 1);
        let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(100_000_000_000));
        let got = p.check(&[client("alice", &authority)], later);
        assert!(matches!(
            got.verdict,
            Verdict::Failed {
                reason: "certificate has expired",
                ..
            }
        ));
    }

    #[test]
    fn a_certificate_the_crl_revokes_is_refused_and_its_siblings_are_not() {
        use rcgen::{
            CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams,
            SerialNumber,
        };
        let authority = ca("Test CA");
        let issue = |serial: u64| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, "client");
            params.serial_number = Some(SerialNumber::from(serial));
            params
                .signed_by(&KeyPair::generate().unwrap(), &authority)
                .unwrap()
                .der()
                .clone()
        };
        let (revoked, kept) = (issue(42), issue(43));
        let now = time::OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(42u64),
                revocation_time: now - time::Duration::hours(1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&authority)
        .unwrap();
        let p = ClientAuth::load(&ClientCerts {
            ca: PemSource::Text {
                origin: "test".into(),
                pem: authority.pem(),
            },
            crl: Some(PemSource::Text {
                origin: "test crl".into(),
                pem: crl.pem().unwrap(),
            }),
            verify: VerifyClient::On,
            depth: 1,
            pass_to_upstream: false,
            error_page: None,
            match_cn: None,
        })
        .unwrap();
        assert_eq!(
            p.check(&[revoked], UnixTime::now()).verdict,
            Verdict::Failed {
                reason: "certificate revoked",
                untrusted: false
            }
        );
        assert_eq!(p.check(&[kept], UnixTime::now()).verdict, Verdict::Success);
    }

    #[test]
    fn values_are_escaped_as_rfc_2253_says() {
        assert_eq!(escape_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_value(" #x "), "\\ #x\\ ");
        assert_eq!(escape_value("#x"), "\\#x");
    }

    #[test]
    fn sni_finds_the_host_policy_exact_before_wildcard() {
        let authority = ca("Test CA");
        let yaml = "listen: { http: \"127.0.0.1:0\" }\nservices: { app: { endpoints: [\"127.0.0.1:1\"] } }\nroutes:\n  - host: \"*.example.com\"\n    client_certificates: { ca: ca.pem }\n    paths: [{ path: /, service: app }]\n  - host: open.example.com\n    paths: [{ path: /, service: app }]\n";
        let dir = std::env::temp_dir().join(format!("gh-client-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), authority.pem()).unwrap();
        let file = dir.join("gatehouse.yaml");
        std::fs::write(&file, yaml).unwrap();
        let config = gatehouse_config::parse(yaml, file.to_str().unwrap()).unwrap();
        let table = ClientAuthTable::build(&config).unwrap();
        assert!(table.for_sni(Some("a.example.com")).is_some());
        assert!(table.for_sni(Some("open.example.com")).is_none());
        assert!(table.for_sni(None).is_none());
        assert!(table.for_route(0).is_some());
        assert!(table.for_route(1).is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
