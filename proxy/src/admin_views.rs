//! The admin listener's JSON views of what is served, for a person or a script asking
//! "what does this proxy do right now": routes with their endpoints and health, the
//! certificates with their expiry, and (with Kubernetes) the Ingresses' verdicts.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::snapshot::Snapshot;

/// Hosts → paths → service → endpoints, in routing order.
pub(crate) fn routes(snapshot: &Snapshot) -> Value {
    let config = &snapshot.config;
    let service = |id: gatehouse_config::ServiceId| {
        let upstream = &snapshot.upstreams[id.0];
        let endpoints: Vec<Value> = upstream
            .endpoints()
            .iter()
            .map(|e| json!({ "address": e.addr().to_string(), "in_rotation": !e.is_ejected() }))
            .collect();
        json!({ "name": upstream.name(), "endpoints": endpoints })
    };
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|route| {
            let paths: Vec<Value> = route
                .paths
                .iter()
                .map(|p| {
                    json!({
                        "path": p.path,
                        "match": format!("{:?}", p.kind).to_lowercase(),
                        "service": service(p.service),
                        "canary": p.canary.as_ref().map(|c| service(c.service)),
                    })
                })
                .collect();
            json!({
                "host": route.host.to_string(),
                "source": route.location.to_string(),
                "unavailable": route.unavailable,
                "paths": paths,
            })
        })
        .collect();
    json!({
        "routes": routes,
        "default_service": config.default_service.map(service),
    })
}

/// Every certificate, soonest expiry first.
pub(crate) fn certificates(snapshot: &Snapshot, now: SystemTime) -> Value {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut all: Vec<_> = snapshot.certs.certs().iter().collect();
    all.sort_by_key(|c| c.not_after);
    let certs: Vec<Value> = all
        .into_iter()
        .map(|c| {
            json!({
                "certificate": c.label,
                "not_before": c.not_before,
                "not_after": c.not_after,
                "expires_in_days": (c.not_after - now).div_euclid(86_400),
                "expired": c.not_after <= now,
            })
        })
        .collect();
    Value::Array(certs)
}
