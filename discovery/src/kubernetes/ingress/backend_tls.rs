//! `backend-protocol: HTTPS` and the `proxy-ssl-*` annotations, as ingress-nginx reads
//! them: TLS to the pods, not verified and without SNI unless asked; `proxy-ssl-secret`
//! (`ca.crt`, and `tls.crt`/`tls.key` to show the pods) is what the other settings need,
//! and without it they do nothing, as there.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;

/// What an Ingress asks of TLS to its pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendTls {
    /// `proxy-ssl-secret`: namespace and name.
    pub secret: Option<(String, String)>,
    /// `proxy-ssl-verify: on`.
    pub verify: bool,
    /// `proxy-ssl-verify-depth` (default 1).
    pub depth: u32,
    /// `proxy-ssl-name`: the name verified (and sent with `proxy-ssl-server-name: on`).
    pub name: Option<String>,
    /// `proxy-ssl-server-name: on`.
    pub sni: bool,
}

/// The TLS an Ingress with `backend-protocol: HTTPS` asks for. Values that do not parse
/// fall back to ingress-nginx's defaults (said in the log), as there.
pub(super) fn backend_tls(
    found: &BTreeMap<&str, &str>,
    ingress: &Ingress,
    problems: &mut Vec<String>,
    source: &str,
) -> Result<BackendTls, String> {
    let mut tls = BackendTls {
        depth: 1,
        ..BackendTls::default()
    };
    let Some(secret) = found
        .get("proxy-ssl-secret")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    else {
        return Ok(tls);
    };
    let own = ingress.metadata.namespace.clone().unwrap_or_default();
    let (namespace, name) = match secret.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (own.clone(), secret.to_owned()),
    };
    if namespace != own {
        return Err(format!("annotation proxy-ssl-secret: `{secret}` is in another namespace; a Secret of namespace {own} is needed, as ingress-nginx requires"));
    }
    tls.secret = Some((namespace, name));
    let mut on_off = |key: &str| match found.get(key).map(|v| v.trim()) {
        None => false,
        Some("on") => true,
        Some("off") => false,
        Some(other) => {
            problems.push(format!("Ingress {source}: annotation {key}: `{other}` is not on or off; off applies, as in ingress-nginx"));
            false
        }
    };
    tls.verify = on_off("proxy-ssl-verify");
    tls.sni = on_off("proxy-ssl-server-name");
    if let Some(depth) = found.get("proxy-ssl-verify-depth").map(|v| v.trim()) {
        match depth.parse::<u32>() {
            Ok(d @ 1..=100) => tls.depth = d,
            _ => problems.push(format!("Ingress {source}: annotation proxy-ssl-verify-depth: `{depth}` is not a depth from 1 to 100; 1 applies, as in ingress-nginx")),
        }
    }
    tls.name = found
        .get("proxy-ssl-name")
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> (Result<BackendTls, String>, Vec<String>) {
        let found: BTreeMap<&str, &str> = pairs.iter().copied().collect();
        let mut ingress = Ingress::default();
        ingress.metadata.namespace = Some("shop".into());
        let mut problems = Vec::new();
        (
            backend_tls(&found, &ingress, &mut problems, "shop/web"),
            problems,
        )
    }

    #[test]
    fn without_the_secret_the_others_do_nothing() {
        let (tls, _) = read(&[("proxy-ssl-verify", "on"), ("proxy-ssl-name", "x")]);
        assert_eq!(
            tls.unwrap(),
            BackendTls {
                depth: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn with_the_secret_they_apply_and_bad_values_fall_back() {
        let (tls, problems) = read(&[
            ("proxy-ssl-secret", "pods-ca"),
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-server-name", "yes"),
            ("proxy-ssl-verify-depth", "2"),
            ("proxy-ssl-name", "web.shop.svc"),
        ]);
        let tls = tls.unwrap();
        assert_eq!(tls.secret, Some(("shop".into(), "pods-ca".into())));
        assert!(tls.verify && !tls.sni);
        assert_eq!((tls.depth, tls.name.as_deref()), (2, Some("web.shop.svc")));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(read(&[("proxy-ssl-secret", "other/ca")]).0.is_err());
    }
}
