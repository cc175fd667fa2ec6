//! Where an Ingress's error answers come from: its `default-backend` Service (the first
//! port, as ingress-nginx takes it), else the configuration's `default_service`. Without
//! either, `custom-http-errors` cannot be honoured and the Ingress answers 503.

use gatehouse_config::{Config, ErrorPages};

use super::{service_for, Services};
use crate::kubernetes::{
    endpoints::PortRef,
    ingress::{Backend, Balancing, ErrorPagesSpec, IngressPath},
};

/// Gives route `index` (of `p`'s Ingress) its error service, or makes it answer 503.
pub(super) fn attach(
    config: &mut Config,
    services: &mut Services<'_>,
    index: usize,
    p: &IngressPath,
    spec: &ErrorPagesSpec,
    problems: &mut Vec<String>,
) {
    let service = match &spec.backend {
        Some(name) => {
            let backend = Backend {
                namespace: p.backend.namespace.clone(),
                name: name.clone(),
                port: PortRef::First,
            };
            service_for(config, services, &backend, &Balancing::default())
        }
        None => config.default_service,
    };
    let Some(service) = service else {
        let why = format!(
            "Ingress {}: custom-http-errors needs default-backend (and this configuration has no default_service); its paths answer 503",
            p.source
        );
        problems.push(why.clone());
        config.routes[index].unavailable.get_or_insert(why);
        return;
    };
    let (namespace, ingress) = p.source.split_once('/').unwrap_or(("", &p.source));
    let port = match &p.backend.port {
        PortRef::Name(n) => n.clone(),
        PortRef::Number(n) => n.to_string(),
        PortRef::First => String::new(),
    };
    config.routes[index].error_pages = Some(ErrorPages {
        codes: spec.codes.clone(),
        service,
        namespace: namespace.to_owned(),
        ingress: ingress.to_owned(),
        service_name: p.backend.name.clone(),
        service_port: port,
    });
}
