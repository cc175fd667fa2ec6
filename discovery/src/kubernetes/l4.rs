//! ingress-nginx's TCP/UDP services ConfigMaps → L4 port mappings. Pure.
//!
//! Each key is the port to expose, each value `namespace/service:port[:PROXY[:PROXY]]`:
//! the first `PROXY` expects a PROXY header from the client side (a load balancer), the
//! second sends one to the upstream, as ingress-nginx documents.

use gatehouse_config::L4Protocol;
use k8s_openapi::api::core::v1::ConfigMap;

use super::{endpoints::PortRef, ingress::Backend};

/// One exposed port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4Mapping {
    pub protocol: L4Protocol,
    pub port: u16,
    pub backend: Backend,
    /// Expect a PROXY header from the peer.
    pub decode_proxy: bool,
    /// Send a PROXY v2 header to the upstream.
    pub encode_proxy: bool,
    /// `ConfigMap namespace/name`, for messages.
    pub source: String,
}

/// The mappings of one ConfigMap; entries that do not parse go to `problems`.
pub fn mappings(
    map: &ConfigMap,
    protocol: L4Protocol,
    problems: &mut Vec<String>,
) -> Vec<L4Mapping> {
    let source = format!(
        "ConfigMap {}/{}",
        map.metadata.namespace.as_deref().unwrap_or_default(),
        map.metadata.name.as_deref().unwrap_or_default()
    );
    let mut out = Vec::new();
    for (key, value) in map.data.iter().flatten() {
        match mapping(key, value, protocol) {
            Ok(m) => out.push(L4Mapping {
                source: source.clone(),
                ..m
            }),
            Err(why) => problems.push(format!(
                "{source}: entry \"{key}\": \"{value}\" {why}; write \"<port>\": \"<namespace>/<service>:<port>[:PROXY[:PROXY]]\". Entry skipped"
            )),
        }
    }
    out
}

fn mapping(key: &str, value: &str, protocol: L4Protocol) -> Result<L4Mapping, String> {
    let port: u16 = key
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or("has a key that is not a port")?;
    let mut fields = value.trim().split(':');
    let service = fields.next().unwrap_or_default();
    let (namespace, name) = service
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
        .ok_or("does not name namespace/service")?;
    let service_port = fields.next().ok_or("names no service port")?;
    let port_ref = match service_port.parse::<i32>() {
        Ok(n) if n > 0 => PortRef::Number(n),
        Ok(_) => return Err("has a service port that is not positive".into()),
        Err(_) if !service_port.is_empty() => PortRef::Name(service_port.to_owned()),
        Err(_) => return Err("names no service port".into()),
    };
    let mut flag = |which: &str| match fields.next() {
        None | Some("") => Ok(false),
        Some(f) if f.eq_ignore_ascii_case("PROXY") => Ok(true),
        Some(f) => Err(format!("has `{f}` where {which} PROXY or nothing belongs")),
    };
    let decode_proxy = flag("the first")?;
    let encode_proxy = flag("the second")?;
    if fields.next().is_some() {
        return Err("has more than two PROXY fields".into());
    }
    if protocol == L4Protocol::Udp && (decode_proxy || encode_proxy) {
        return Err("asks for PROXY on UDP, which carries no PROXY header".into());
    }
    Ok(L4Mapping {
        protocol,
        port,
        backend: Backend {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port: port_ref,
        },
        decode_proxy,
        encode_proxy,
        source: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(data: serde_json::Value) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": { "namespace": "edge", "name": "tcp-services" }, "data": data,
        }))
        .unwrap()
    }

    #[test]
    fn ingress_nginx_entries_parse_and_bad_ones_are_reported() {
        let mut problems = Vec::new();
        let got = mappings(
            &map(serde_json::json!({
                "5432": "db/postgres:5432",
                "6379": "cache/redis:redis::PROXY",
                "9000": "default/app:8080:PROXY",
                "abc": "db/postgres:5432",
                "7000": "postgres:5432",
                "7001": "db/postgres:5432:SOMETHING",
            })),
            L4Protocol::Tcp,
            &mut problems,
        );
        let by_port = |p: u16| got.iter().find(|m| m.port == p).cloned();
        let pg = by_port(5432).unwrap();
        assert_eq!(pg.backend.port, PortRef::Number(5432));
        assert_eq!((pg.decode_proxy, pg.encode_proxy), (false, false));
        assert_eq!(pg.source, "ConfigMap edge/tcp-services");
        let redis = by_port(6379).unwrap();
        assert_eq!(redis.backend.port, PortRef::Name("redis".into()));
        assert_eq!((redis.decode_proxy, redis.encode_proxy), (false, true));
        assert!(by_port(9000).unwrap().decode_proxy);
        assert_eq!(got.len(), 3);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("\"abc\"") && p.contains("not a port")));
        assert!(problems.iter().any(|p| p.contains("SOMETHING")));
    }

    #[test]
    fn udp_entries_take_no_proxy_fields() {
        let mut problems = Vec::new();
        let got = mappings(
            &map(
                serde_json::json!({ "53": "kube-system/dns:53", "54": "kube-system/dns:53:PROXY" }),
            ),
            L4Protocol::Udp,
            &mut problems,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].protocol, L4Protocol::Udp);
        assert!(problems[0].contains("PROXY on UDP"), "{problems:?}");
    }
}
