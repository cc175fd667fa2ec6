//! Client-certificate authorities from the Secret an Ingress's `auth-tls-secret` names:
//! `ca.crt` (PEM certificates) and optionally `ca.crl`, in a Secret of any type. A Secret
//! that is missing or has no `ca.crt` does not switch client certificates off, as
//! ingress-nginx does: the host answers 503 until it is fixed.

use std::collections::HashMap;

use gatehouse_config::{ClientCerts, Config, HostPattern, PemSource, Route};

use super::SecretData;
use crate::kubernetes::ingress::ClientCertRef;

/// Gives `route` the client-certificate policy `spec` names, read with `read(namespace,
/// name)`; when the Secret cannot give it, a policy that fails its whole host closed, and a
/// problem saying why. `source` names the Ingress.
pub(super) fn attach(
    route: &mut Route,
    spec: &ClientCertRef,
    read: &dyn Fn(&str, &str) -> Option<SecretData>,
    source: &str,
    problems: &mut Vec<String>,
) {
    let secret = format!("Secret {}/{}", spec.namespace, spec.name);
    let pem = |data: &SecretData, key: &str| -> Result<Option<String>, String> {
        data.get(key)
            .map(|v| String::from_utf8(v.clone()).map_err(|_| format!("`{key}` is not PEM text")))
            .transpose()
    };
    let sources = match read(&spec.namespace, &spec.name) {
        None => Err("does not exist".to_owned()),
        Some(data) => match (pem(&data, "ca.crt"), pem(&data, "ca.crl")) {
            (Ok(None), _) => {
                Err("has no `ca.crt`, the authorities client certificates must chain to".to_owned())
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(Some(ca)), Ok(crl)) => Ok((
                PemSource::Text {
                    origin: format!("{secret} ca.crt"),
                    pem: ca,
                },
                crl.map(|pem| PemSource::Text {
                    origin: format!("{secret} ca.crl"),
                    pem,
                }),
            )),
        },
    };
    let (ca, crl) = sources.unwrap_or_else(|why| {
        let why = format!("Ingress {source}: auth-tls-secret {secret} {why}; its hosts answer 503 until it is fixed");
        problems.push(why.clone());
        (PemSource::Unreadable { why }, None)
    });
    route.client_certs = Some(ClientCerts {
        ca,
        crl,
        verify: spec.verify,
        depth: spec.depth,
        pass_to_upstream: spec.pass_to_upstream,
        error_page: spec.error_page.clone(),
        match_cn: spec.match_cn.clone(),
    });
}

/// A host asks for the client certificates of its first route that has some (the file's,
/// else the oldest Ingress's), as ingress-nginx configures them per server: every later
/// route of the host whose own differ is named, since its settings do not apply.
pub(super) fn report_overruled(config: &Config, problems: &mut Vec<String>) {
    let mut first: HashMap<&HostPattern, &Route> = HashMap::new();
    for route in &config.routes {
        let Some(mine) = &route.client_certs else {
            continue;
        };
        let Some(winner) = first.get(&route.host) else {
            first.insert(&route.host, route);
            continue;
        };
        let theirs = winner.client_certs.as_ref();
        let same = theirs.is_some_and(|t| {
            t.ca == mine.ca && t.crl == mine.crl && t.verify == mine.verify && t.depth == mine.depth
        });
        if !same {
            problems.push(format!(
                "{}: host `{}` already asks for the client certificates of {}; these auth-tls-* settings do not apply (one policy per host, as in ingress-nginx)",
                route.location, route.host, winner.location
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::VerifyClient;

    fn spec() -> ClientCertRef {
        ClientCertRef {
            namespace: "ns".into(),
            name: "ca".into(),
            verify: VerifyClient::On,
            depth: 1,
            pass_to_upstream: false,
            error_page: None,
            match_cn: None,
        }
    }

    fn route() -> Route {
        let config = gatehouse_config::parse(
            "listen: { http: \"127.0.0.1:0\" }\nservices: { a: { endpoints: [] } }\nroutes: [{ host: a.test, paths: [{ path: /, service: a }] }]\n",
            "test.yaml",
        )
        .unwrap();
        config.routes[0].clone()
    }

    #[test]
    fn ca_crt_and_ca_crl_become_the_policy() {
        let mut r = route();
        let mut problems = Vec::new();
        let read = |_: &str, _: &str| {
            Some(SecretData::from([
                ("ca.crt".to_owned(), b"CA PEM".to_vec()),
                ("ca.crl".to_owned(), b"CRL PEM".to_vec()),
            ]))
        };
        attach(&mut r, &spec(), &read, "ns/web", &mut problems);
        let certs = r.client_certs.unwrap();
        assert_eq!(certs.ca.read().unwrap().0, b"CA PEM");
        assert_eq!(certs.crl.unwrap().read().unwrap().0, b"CRL PEM");
        assert!(problems.is_empty());
    }

    #[test]
    fn a_missing_secret_or_ca_crt_fails_the_host_closed() {
        for data in [
            None,
            Some(SecretData::from([("tls.crt".to_owned(), b"x".to_vec())])),
        ] {
            let mut r = route();
            let mut problems = Vec::new();
            attach(
                &mut r,
                &spec(),
                &|_, _| data.clone(),
                "ns/web",
                &mut problems,
            );
            let why = r.client_certs.unwrap().ca.read().unwrap_err();
            assert!(why.contains("Secret ns/ca") && why.contains("503"), "{why}");
            assert_eq!(problems, [why]);
        }
    }
}
