//! The authentication service an Ingress's `auth-url` names, as a service of the served
//! configuration: a `name.namespace.svc[.cluster.local]` host is that Service's ready
//! endpoints (from the EndpointSlices already watched, no DNS), an address is itself, and
//! any other name is resolved through DNS like the file's named endpoints.

use std::net::IpAddr;

use gatehouse_config::{
    Config, ExternalAuth, NamedEndpoint, Route, Service, ServiceId, UpstreamProtocol, UpstreamTls,
};

use super::{service_over, Services};
use crate::kubernetes::{
    endpoints::PortRef,
    ingress::{Backend, Balancing, ExternalAuthSpec},
};

/// Gives route `index` its authentication service, or makes it answer 503 saying why.
pub(super) fn attach(
    config: &mut Config,
    services: &mut Services<'_>,
    index: usize,
    spec: &ExternalAuthSpec,
    source: &str,
    problems: &mut Vec<String>,
) {
    match service_of(config, services, spec) {
        Ok(service) => {
            config.routes[index].external_auth = Some(ExternalAuth {
                service,
                request: spec.request.clone(),
            })
        }
        Err(why) => {
            let why = format!(
                "Ingress {source}: auth-url {}: {why}; its paths answer 503",
                spec.request.url
            );
            problems.push(why.clone());
            fail_closed(&mut config.routes[index], why);
        }
    }
}

fn fail_closed(route: &mut Route, why: String) {
    route.unavailable.get_or_insert(why);
}

fn service_of(
    config: &mut Config,
    services: &mut Services<'_>,
    spec: &ExternalAuthSpec,
) -> Result<ServiceId, String> {
    let url = &spec.parsed;
    let ip = url.host.parse::<IpAddr>().ok();
    // As ingress-nginx's auth location: SNI on (a name only), the certificate not verified.
    let protocol = match url.tls {
        false => UpstreamProtocol::Http1,
        true => UpstreamProtocol::Https(UpstreamTls {
            server_name: ip.is_none().then(|| url.host.clone()),
            sni: ip.is_none(),
            ..UpstreamTls::default()
        }),
    };
    let scheme = if url.tls { "https" } else { "http" };
    let in_cluster = url
        .host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| url.host.strip_suffix(".svc"))
        .and_then(|h| h.split_once('.'));
    let Some((name, namespace)) = in_cluster else {
        // An address, or a name resolved through DNS (re-resolved by its TTL).
        let (endpoints, names) = match ip {
            Some(ip) => (vec![std::net::SocketAddr::new(ip, url.port)], Vec::new()),
            None => (
                Vec::new(),
                vec![NamedEndpoint {
                    host: url.host.clone(),
                    port: url.port,
                }],
            ),
        };
        let name = format!("auth {scheme}://{}:{}", url.host, url.port);
        if let Some(i) = config.services.iter().position(|s| s.name == name) {
            return Ok(ServiceId(i));
        }
        config.services.push(Service {
            name,
            endpoints,
            names,
            kubernetes: None,
            balance: Default::default(),
            affinity: None,
            limits: Default::default(),
            protocol,
            health: None,
        });
        return Ok(ServiceId(config.services.len() - 1));
    };
    let backend = Backend {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port: PortRef::Number(i32::from(url.port)),
    };
    service_over(config, services, &backend, &Balancing::default(), &protocol)
        .ok_or_else(|| format!("port {} is not a Service port", url.port))
}
