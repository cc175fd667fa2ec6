//! The TLS an Ingress's pods are reached with (`backend-protocol: HTTPS`), from its
//! `proxy-ssl-secret`: `ca.crt` to verify them with, `tls.crt` and `tls.key` to show them.
//! A Secret that is missing or has no `ca.crt` fails the Ingress closed (ingress-nginx
//! denies the location too).

use gatehouse_config::{PemSource, UpstreamProtocol, UpstreamTls};

use super::SecretData;
use crate::kubernetes::ingress::{Backend, BackendTls};

/// The protocol for `backend` as `spec` asks, its Secret read with `read`.
pub(super) fn protocol(
    spec: &BackendTls,
    backend: &Backend,
    read: &dyn Fn(&str, &str) -> Option<SecretData>,
) -> Result<UpstreamProtocol, String> {
    // nginx verifies against $proxy_host, a name no pod certificate carries; the Service's
    // in-cluster name is what one does. (A departure, said in docs/kubernetes.md.)
    let name = spec
        .name
        .clone()
        .unwrap_or_else(|| format!("{}.{}.svc", backend.name, backend.namespace));
    let mut tls = UpstreamTls {
        server_name: Some(name),
        sni: spec.sni,
        depth: spec.depth,
        ..UpstreamTls::default()
    };
    let Some((namespace, secret)) = &spec.secret else {
        return Ok(UpstreamProtocol::Https(tls));
    };
    let what = format!("proxy-ssl-secret {namespace}/{secret}");
    let data = read(namespace, secret).ok_or_else(|| format!("{what} does not exist"))?;
    let text = |key: &str| -> Result<Option<PemSource>, String> {
        data.get(key)
            .map(|v| {
                String::from_utf8(v.clone())
                    .map(|pem| PemSource::Text {
                        origin: format!("{what} {key}"),
                        pem,
                    })
                    .map_err(|_| format!("{what}: `{key}` is not PEM text"))
            })
            .transpose()
    };
    let ca = text("ca.crt")?.ok_or_else(|| format!("{what} has no `ca.crt`"))?;
    if spec.verify {
        tls.verify = Some(ca);
    }
    tls.client_cert = match (text("tls.crt")?, text("tls.key")?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => None,
    };
    Ok(UpstreamProtocol::Https(tls))
}
