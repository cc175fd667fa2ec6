//! Where an Ingress's error answers come from: its `default-backend` Service (the first
//! port, as ingress-nginx takes it), else the configuration's `default_service`. Without
//! either, `custom-http-errors` cannot be honoured and the Ingress answers 503.

use gatehouse_config::{Config, ErrorPages};

use super::{service_for, Services};
use crate::kubernetes::{
    controller_config::IngressDefaults,
    endpoints::PortRef,
    ingress::{Backend, Balancing, ErrorPagesSpec, IngressPath},
};

/// The error pages of `p`'s Ingress: its own `custom-http-errors`, else the ConfigMap's
/// (unless it disables intercepting errors), answered by its `default-backend` or the
/// default service. The ConfigMap's codes with nothing to answer them are reported, not
/// fatal: they are a global nicety, not the Ingress's own ask.
pub(super) fn spec(
    p: &IngressPath,
    defaults: &IngressDefaults,
    config: &Config,
    problems: &mut Vec<String>,
) -> Option<ErrorPagesSpec> {
    let own = p.policy.error_pages.clone();
    if p.policy.intercept_disabled || defaults.error_codes.is_empty() {
        return own;
    }
    match own {
        Some(spec) if !spec.codes.is_empty() => Some(spec),
        Some(spec) => Some(ErrorPagesSpec {
            codes: defaults.error_codes.clone(),
            backend: spec.backend,
        }),
        None if config.default_service.is_some() => Some(ErrorPagesSpec {
            codes: defaults.error_codes.clone(),
            backend: None,
        }),
        None => {
            problems.push(format!(
                "Ingress {}: the ConfigMap's custom-http-errors need a default backend (default_service, or an Ingress defaultBackend); its upstream's error answers pass unchanged",
                p.source
            ));
            None
        }
    }
}

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
