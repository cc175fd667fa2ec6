//! How an Ingress's backends pick a pod: `affinity: cookie` with its `session-cookie-*`
//! and `affinity-mode`, else `upstream-hash-by`, else `load-balance` (ingress-nginx's
//! order of precedence).

use std::collections::BTreeMap;

use gatehouse_config::{Affinity, AffinityMode, Balance, SameSite, Template};

/// The balancing an Ingress asks of its Services.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Balancing {
    pub balance: Balance,
    pub affinity: Option<Affinity>,
}

impl Balancing {
    /// How a Service with this balancing is told apart from the plain one in names.
    pub fn label(&self) -> Option<String> {
        match (&self.affinity, &self.balance) {
            (Some(a), _) => Some(format!("affinity {}", a.cookie)),
            (None, Balance::RoundRobin) => None,
            (None, Balance::LeastRequest) => Some("least_request".to_owned()),
            (None, Balance::Ewma) => Some("ewma".to_owned()),
            (None, Balance::Hash(key)) => Some(format!("hash {key}")),
        }
    }
}

/// Reads the balancing annotations of `found` (names without prefix). `secret` keys the
/// persistent cookies (the Ingress's uid: the same on every replica, unknown to clients).
/// `flag` reads a boolean as ingress-nginx does. Unreadable values are errors: each
/// decides where a client's requests go.
pub fn balancing(
    found: &BTreeMap<&str, &str>,
    secret: Option<&str>,
    flag: &dyn Fn(&str) -> Result<Option<bool>, String>,
    problems: &mut Vec<String>,
    source: &str,
) -> Result<Balancing, String> {
    let mut out = Balancing::default();
    if let Some(lb) = found.get("load-balance") {
        out.balance = match lb.trim() {
            "round_robin" => Balance::RoundRobin,
            "ewma" => Balance::Ewma,
            "least_request" => Balance::LeastRequest,
            other => {
                return Err(format!(
                "annotation load-balance: `{other}` is not one of round_robin, ewma, least_request"
            ))
            }
        };
    }
    if let Some(key) = found.get("upstream-hash-by") {
        let key =
            Template::parse(key.trim()).map_err(|e| format!("annotation upstream-hash-by: {e}"))?;
        out.balance = Balance::Hash(key);
    }
    match found.get("affinity").map(|v| v.trim()) {
        None => return Ok(out),
        Some("cookie") => {}
        Some(other) => {
            return Err(format!(
                "annotation affinity: `{other}` is not supported; only `cookie` is (as in ingress-nginx)"
            ))
        }
    }
    let mut a = Affinity::new();
    let text = |name: &str| found.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    let seconds = |name: &str| -> Result<Option<u64>, String> {
        text(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    format!("annotation {name}: `{v}` is not a whole number of seconds")
                })
            })
            .transpose()
    };
    if let Some(name) = text("session-cookie-name") {
        if name.contains(['=', ';', ',', ' ']) {
            return Err(format!(
                "annotation session-cookie-name: `{name}` is not a cookie name"
            ));
        }
        a.cookie = name.to_owned();
    }
    a.path = text("session-cookie-path").map(str::to_owned);
    a.domain = text("session-cookie-domain").map(str::to_owned);
    a.max_age = seconds("session-cookie-max-age")?;
    a.expires = seconds("session-cookie-expires")?;
    a.samesite = text("session-cookie-samesite")
        .map(SameSite::parse)
        .transpose()
        .map_err(|e| format!("annotation session-cookie-samesite: {e}"))?;
    a.secure = flag("session-cookie-secure")?;
    a.change_on_failure = flag("session-cookie-change-on-failure")?.unwrap_or(false);
    a.mode = match text("affinity-mode") {
        None | Some("balanced") => AffinityMode::Balanced,
        Some("persistent") => AffinityMode::Persistent,
        Some(other) => {
            return Err(format!(
            "annotation affinity-mode: `{other}` is not supported; `balanced` and `persistent` are"
        ))
        }
    };
    if flag("session-cookie-conditional-samesite-none")? == Some(true) {
        problems.push(format!(
            "Ingress {source}: annotation session-cookie-conditional-samesite-none is ignored: SameSite=None is sent to every browser"
        ));
    }
    a.key = secret.map(str::to_owned);
    out.affinity = Some(a);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<(Balancing, Vec<String>), String> {
        let found: BTreeMap<&str, &str> = pairs.iter().copied().collect();
        let flag = |name: &str| -> Result<Option<bool>, String> {
            Ok(found.get(name).map(|v| *v == "true"))
        };
        let mut problems = Vec::new();
        balancing(&found, Some("uid-1"), &flag, &mut problems, "ns/app").map(|b| (b, problems))
    }

    #[test]
    fn affinity_wins_over_hashing_which_wins_over_the_algorithm() {
        let (b, _) = read(&[("load-balance", "ewma")]).unwrap();
        assert_eq!(b.balance, Balance::Ewma);
        let (b, _) = read(&[
            ("load-balance", "ewma"),
            ("upstream-hash-by", "$request_uri"),
        ])
        .unwrap();
        assert_eq!(
            b.balance,
            Balance::Hash(Template::parse("$request_uri").unwrap())
        );
        assert_eq!(b.label().as_deref(), Some("hash $request_uri"));
        let (b, _) = read(&[("upstream-hash-by", "$remote_addr"), ("affinity", "cookie")]).unwrap();
        let a = b.affinity.expect("affinity");
        assert_eq!(
            (a.cookie.as_str(), a.mode),
            ("INGRESSCOOKIE", AffinityMode::Balanced)
        );
        assert_eq!(a.key.as_deref(), Some("uid-1"));
    }

    #[test]
    fn session_cookie_annotations_shape_the_cookie() {
        let (b, problems) = read(&[
            ("affinity", "cookie"),
            ("affinity-mode", "persistent"),
            ("session-cookie-name", "route"),
            ("session-cookie-path", "/shop"),
            ("session-cookie-max-age", "172800"),
            ("session-cookie-expires", "3600"),
            ("session-cookie-samesite", "None"),
            ("session-cookie-secure", "true"),
            ("session-cookie-change-on-failure", "true"),
            ("session-cookie-conditional-samesite-none", "true"),
        ])
        .unwrap();
        let a = b.affinity.unwrap();
        assert_eq!(
            (a.cookie.as_str(), a.path.as_deref()),
            ("route", Some("/shop"))
        );
        assert_eq!((a.max_age, a.expires), (Some(172_800), Some(3600)));
        assert_eq!(
            (a.samesite, a.secure, a.change_on_failure),
            (Some(SameSite::None), Some(true), true)
        );
        assert_eq!(a.mode, AffinityMode::Persistent);
        assert!(
            problems[0].contains("conditional-samesite-none is ignored"),
            "{problems:?}"
        );
    }

    #[test]
    fn values_that_cannot_be_honoured_are_refused() {
        for (pairs, says) in [
            (vec![("affinity", "ip")], "only `cookie`"),
            (
                vec![("affinity", "cookie"), ("affinity-mode", "sticky")],
                "`sticky` is not supported",
            ),
            (
                vec![("affinity", "cookie"), ("session-cookie-max-age", "1d")],
                "not a whole number of seconds",
            ),
            (
                vec![
                    ("affinity", "cookie"),
                    ("session-cookie-samesite", "Sometimes"),
                ],
                "not one of",
            ),
            (
                vec![("upstream-hash-by", "$upstream_addr")],
                "`$upstream_addr` is not a variable",
            ),
            (vec![("load-balance", "chash")], "not one of round_robin"),
        ] {
            let e = read(&pairs).unwrap_err();
            assert!(e.contains(says), "{pairs:?}: {e}");
        }
    }
}
