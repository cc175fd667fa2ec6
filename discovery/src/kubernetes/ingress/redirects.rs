//! Where an Ingress sends clients instead of serving them, and the other names it answers
//! to: `temporal-redirect` (wins) or `permanent-redirect` with their `-code`, `app-root`,
//! `from-to-www-redirect` and `server-alias`, read as ingress-nginx reads them.

use std::collections::BTreeMap;

use gatehouse_config::Redirect;

/// The annotations of this family, by name without prefix.
pub const NAMES: &[&str] = &[
    "app-root",
    "from-to-www-redirect",
    "permanent-redirect",
    "permanent-redirect-code",
    "server-alias",
    "temporal-redirect",
    "temporal-redirect-code",
];

/// What the family asks for.
#[derive(Clone, Debug, Default)]
pub struct Redirects {
    pub redirect: Option<Redirect>,
    pub app_root: Option<String>,
    /// Answer for `www.` + host (or host without `www.`) with a 308 to the host.
    pub from_to_www: bool,
    /// More names the Ingress's paths answer to (wildcards allowed).
    pub aliases: Vec<String>,
}

/// Reads the family from `found`; `flag` reads a boolean as ingress-nginx does. A value
/// that cannot be honoured is an error: each decides where clients go.
pub fn redirects(
    found: &BTreeMap<&str, &str>,
    flag: &dyn Fn(&str) -> Result<Option<bool>, String>,
) -> Result<Redirects, String> {
    let text = |name: &str| found.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
    // An unreadable or out-of-range code falls back to the default, as in ingress-nginx.
    let code = |name: &str, range: std::ops::RangeInclusive<u16>, default: u16| {
        text(name)
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|c| range.contains(c))
            .unwrap_or(default)
    };
    let mut out = Redirects::default();
    let redirect = match (text("temporal-redirect"), text("permanent-redirect")) {
        (Some(to), _) => Some((
            to,
            code("temporal-redirect-code", 300..=307, 302),
            "temporal-redirect",
        )),
        (None, Some(to)) => Some((
            to,
            code("permanent-redirect-code", 300..=308, 301),
            "permanent-redirect",
        )),
        (None, None) => None,
    };
    if let Some((to, code, name)) = redirect {
        out.redirect =
            Some(Redirect::new(to, code).map_err(|e| format!("annotation {name}: {e}"))?);
    }
    if let Some(root) = text("app-root") {
        if !root.starts_with('/') || root == "/" {
            return Err(format!(
                "annotation app-root: `{root}` is not a path other than `/`"
            ));
        }
        out.app_root = Some(root.to_owned());
    }
    out.from_to_www = flag("from-to-www-redirect")?.unwrap_or(false);
    if let Some(list) = text("server-alias") {
        for alias in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            gatehouse_config::HostPattern::parse(alias)
                .map_err(|e| format!("annotation server-alias: `{alias}`: {e}"))?;
            out.aliases.push(alias.to_ascii_lowercase());
        }
    }
    Ok(out)
}

/// The other name of `host` for `from-to-www-redirect`: with `www.` or without it.
pub fn www_twin(host: &str) -> Option<String> {
    match host.strip_prefix("www.") {
        Some(bare) if bare.contains('.') => Some(bare.to_owned()),
        Some(_) => None,
        None if host.starts_with("*.") => None,
        None => Some(format!("www.{host}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Redirects, String> {
        let found: BTreeMap<&str, &str> = pairs.iter().copied().collect();
        let flag =
            |n: &str| -> Result<Option<bool>, String> { Ok(found.get(n).map(|v| *v == "true")) };
        redirects(&found, &flag)
    }

    #[test]
    fn temporal_wins_over_permanent_and_codes_fall_back_as_ingress_nginx_does() {
        let r = read(&[
            ("permanent-redirect", "https://a.test/x"),
            ("temporal-redirect", "https://b.test$request_uri"),
        ])
        .unwrap();
        let redirect = r.redirect.unwrap();
        assert_eq!(
            (redirect.to.to_string(), redirect.code),
            ("https://b.test$request_uri".to_owned(), 302)
        );
        let r = read(&[
            ("permanent-redirect", "https://a.test/"),
            ("permanent-redirect-code", "308"),
        ])
        .unwrap();
        assert_eq!(r.redirect.unwrap().code, 308);
        let r = read(&[
            ("permanent-redirect", "https://a.test/"),
            ("permanent-redirect-code", "200"),
        ])
        .unwrap();
        assert_eq!(r.redirect.unwrap().code, 301, "out of range: the default");
        let r = read(&[
            ("temporal-redirect", "https://a.test/"),
            ("temporal-redirect-code", "308"),
        ])
        .unwrap();
        assert_eq!(r.redirect.unwrap().code, 302, "308 is not temporal");
    }

    #[test]
    fn app_root_aliases_and_www() {
        let r = read(&[
            ("app-root", "/app1"),
            ("server-alias", "Alias.test, *.more.test"),
            ("from-to-www-redirect", "true"),
        ])
        .unwrap();
        assert_eq!(r.app_root.as_deref(), Some("/app1"));
        assert_eq!(r.aliases, ["alias.test", "*.more.test"]);
        assert!(r.from_to_www);
        for (pairs, says) in [
            (vec![("app-root", "app1")], "not a path"),
            (vec![("permanent-redirect", "example.com")], "is not a URL"),
            (vec![("server-alias", "a..b")], "server-alias"),
        ] {
            let e = read(&pairs).unwrap_err();
            assert!(e.contains(says), "{pairs:?}: {e}");
        }
        assert_eq!(www_twin("www.a.test").as_deref(), Some("a.test"));
        assert_eq!(www_twin("a.test").as_deref(), Some("www.a.test"));
        assert_eq!(www_twin("www.test"), None);
        assert_eq!(www_twin("*.a.test"), None);
    }
}
