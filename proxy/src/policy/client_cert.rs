//! Client certificates at the request (ingress-nginx's `auth-tls-*`): the certificate the
//! handshake asked for is judged by the host's mode, its subject matched, and what it
//! says handed to the upstream in `ssl-client-*` headers, which a client can never set
//! itself on such a host.

use gatehouse_config::VerifyClient;
use http::{header::HeaderName, HeaderMap, HeaderValue, StatusCode};

use crate::{
    conn::ConnInfo,
    error::ProxyError,
    metrics::Metrics,
    tls::client_auth::{ClientAuth, ClientCert, HostPolicy, Verdict},
};

const VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
const SUBJECT: HeaderName = HeaderName::from_static("ssl-client-subject-dn");
const ISSUER: HeaderName = HeaderName::from_static("ssl-client-issuer-dn");
const CERT: HeaderName = HeaderName::from_static("ssl-client-cert");

/// Whether the connection's client certificate lets the request reach `host`, whose
/// policy is `policy`. A connection whose handshake was made for a host with other
/// authorities gets 421, so the client makes one for this host (nginx does the same).
pub(crate) fn check(
    policy: &HostPolicy,
    host: &str,
    conn: &ConnInfo,
    metrics: &Metrics,
) -> Result<(), ProxyError> {
    let policy = match policy {
        Ok(p) => p,
        Err(why) => {
            return Err(ProxyError::Unavailable {
                route: host.to_owned(),
                reason: why.to_string(),
            })
        }
    };
    let shown = match shown(policy, conn) {
        Ok(shown) => shown,
        Err(()) => {
            return Err(ProxyError::Misdirected {
                host: host.to_owned(),
            })
        }
    };
    let verdict = shown.map_or(&Verdict::None, |c| &c.verdict);
    let refused = match (policy.spec.verify, verdict) {
        (VerifyClient::Off, _) | (_, Verdict::Success) => None,
        (VerifyClient::On, Verdict::None) => Some(true),
        (VerifyClient::Optional | VerifyClient::OptionalNoCa, Verdict::None) => None,
        (
            VerifyClient::OptionalNoCa,
            Verdict::Failed {
                untrusted: true, ..
            },
        ) => None,
        (_, Verdict::Failed { .. }) => Some(false),
    };
    if let Some(missing) = refused {
        metrics.deny("client_certificate");
        return Err(match &policy.spec.error_page {
            Some(page) => ProxyError::Redirect {
                location: HeaderValue::from_str(page)
                    .unwrap_or_else(|_| HeaderValue::from_static("/")),
                status: StatusCode::FOUND,
            },
            None => ProxyError::ClientCertificate {
                host: host.to_owned(),
                missing,
            },
        });
    }
    if let Some(pattern) = &policy.spec.match_cn {
        let subject = shown.map_or("", |c| c.subject.as_str());
        if !pattern.is_match(subject) {
            metrics.deny("client_certificate");
            return Err(ProxyError::ClientCertificateUnauthorized {
                host: host.to_owned(),
            });
        }
    }
    Ok(())
}

/// The certificate the connection's client showed under `policy`: `Ok(None)` when it
/// showed none (or plaintext), `Err` when its handshake was made under another policy.
fn shown<'c>(policy: &ClientAuth, conn: &'c ConnInfo) -> Result<Option<&'c ClientCert>, ()> {
    let Some(tls) = &conn.tls else {
        return Ok(None);
    };
    match &tls.client_cert {
        Some(c) if c.policy == policy.digest => Ok(Some(c)),
        // Nothing was asked for, and nothing is needed.
        _ if !policy.asks() => Ok(None),
        _ => Err(()),
    }
}

/// The upstream request's `ssl-client-*` headers, as ingress-nginx sets them on a host
/// with client certificates: whatever the client sent under those names is dropped first.
pub(crate) fn upstream_headers(policy: &HostPolicy, conn: &ConnInfo, headers: &mut HeaderMap) {
    let Ok(policy) = policy else {
        return;
    };
    for name in [&VERIFY, &SUBJECT, &ISSUER, &CERT] {
        headers.remove(name);
    }
    let shown = shown(policy, conn).ok().flatten();
    let verdict = shown.map_or(Verdict::None, |c| c.verdict.clone());
    if let Ok(v) = HeaderValue::from_str(&verdict.header()) {
        headers.insert(VERIFY, v);
    }
    let Some(cert) = shown else {
        return;
    };
    for (name, value) in [(SUBJECT, &cert.subject), (ISSUER, &cert.issuer)] {
        if let Ok(v) = HeaderValue::from_str(value) {
            if !value.is_empty() {
                headers.insert(name, v);
            }
        }
    }
    if let Some(pem) = cert.escaped_pem.as_deref() {
        if let Ok(v) = HeaderValue::from_str(pem) {
            headers.insert(CERT, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gatehouse_config::{ClientCerts, PemSource};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls_pki_types::{CertificateDer, UnixTime};

    use super::*;
    use crate::conn::TlsInfo;

    struct Fixture {
        authority: CertifiedIssuer<'static, KeyPair>,
    }

    impl Fixture {
        fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            Fixture {
                authority: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap())
                    .unwrap(),
            }
        }

        fn policy(&self, verify: VerifyClient, match_cn: Option<&str>) -> HostPolicy {
            Ok(Arc::new(
                ClientAuth::load(&ClientCerts {
                    ca: PemSource::Text {
                        origin: "test".into(),
                        pem: self.authority.pem(),
                    },
                    crl: None,
                    verify,
                    depth: 1,
                    pass_to_upstream: false,
                    error_page: None,
                    match_cn: match_cn.map(|p| regex::Regex::new(p).unwrap()),
                })
                .unwrap(),
            ))
        }

        fn client(
            &self,
            cn: &str,
            issuer: &CertifiedIssuer<'_, KeyPair>,
        ) -> CertificateDer<'static> {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params
                .signed_by(&KeyPair::generate().unwrap(), issuer)
                .unwrap()
                .der()
                .clone()
        }
    }

    fn conn(policy: &HostPolicy, chain: &[CertificateDer<'_>]) -> ConnInfo {
        let mut conn = ConnInfo::for_test("127.0.0.1:1000", "127.0.0.1:443", true);
        let checked = policy.as_ref().unwrap().check(chain, UnixTime::now());
        conn.tls = Some(TlsInfo {
            cert: None,
            version: "TLSv1.3",
            client_cert: Some(checked),
        });
        conn
    }

    fn status(r: Result<(), ProxyError>) -> u16 {
        r.err().map_or(200, |e| e.status().as_u16())
    }

    #[test]
    fn each_mode_judges_none_good_and_foreign_certificates_as_nginx() {
        let f = Fixture::new("CA");
        let other = Fixture::new("Other CA");
        let good = [f.client("alice", &f.authority)];
        let foreign = [f.client("mallory", &other.authority)];
        let m = Metrics::new();
        let cases = [
            (VerifyClient::On, [400, 200, 400]),
            (VerifyClient::Optional, [200, 200, 400]),
            (VerifyClient::OptionalNoCa, [200, 200, 200]),
            (VerifyClient::Off, [200, 200, 200]),
        ];
        for (mode, want) in cases {
            let p = f.policy(mode, None);
            let got = [&[][..], &good[..], &foreign[..]]
                .map(|chain| status(check(&p, "h", &conn(&p, chain), &m)));
            assert_eq!(got, want, "{mode:?}");
        }
    }

    #[test]
    fn a_connection_made_for_other_authorities_is_misdirected_and_plaintext_has_none() {
        let f = Fixture::new("CA");
        let here = f.policy(VerifyClient::Optional, None);
        let elsewhere = Fixture::new("Other CA").policy(VerifyClient::Optional, None);
        let m = Metrics::new();
        assert_eq!(status(check(&here, "h", &conn(&elsewhere, &[]), &m)), 421);
        let plain = ConnInfo::for_test("127.0.0.1:1000", "127.0.0.1:80", false);
        assert_eq!(status(check(&here, "h", &plain, &m)), 200);
        let required = f.policy(VerifyClient::On, None);
        assert_eq!(status(check(&required, "h", &plain, &m)), 400);
    }

    #[test]
    fn match_cn_searches_the_subject_and_refuses_with_403() {
        let f = Fixture::new("CA");
        let p = f.policy(VerifyClient::On, Some("CN=(alice|bob)$"));
        let m = Metrics::new();
        let alice = [f.client("alice", &f.authority)];
        let carol = [f.client("carol", &f.authority)];
        assert_eq!(status(check(&p, "h", &conn(&p, &alice), &m)), 200);
        assert_eq!(status(check(&p, "h", &conn(&p, &carol), &m)), 403);
    }

    #[test]
    fn upstream_headers_replace_what_the_client_sent() {
        let f = Fixture::new("CA");
        let p = f.policy(VerifyClient::Optional, None);
        let mut headers = HeaderMap::new();
        headers.insert("ssl-client-verify", HeaderValue::from_static("SUCCESS"));
        headers.insert(
            "ssl-client-subject-dn",
            HeaderValue::from_static("CN=admin"),
        );
        upstream_headers(&p, &conn(&p, &[]), &mut headers);
        assert_eq!(headers["ssl-client-verify"], "NONE");
        assert!(headers.get("ssl-client-subject-dn").is_none());
        let alice = [f.client("alice", &f.authority)];
        upstream_headers(&p, &conn(&p, &alice), &mut headers);
        assert_eq!(headers["ssl-client-verify"], "SUCCESS");
        assert_eq!(headers["ssl-client-subject-dn"], "CN=alice");
        assert_eq!(headers["ssl-client-issuer-dn"], "CN=CA");
        assert!(headers.get("ssl-client-cert").is_none());
    }
}
