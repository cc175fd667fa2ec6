//! Path rules that no request can reach: a regex that cannot match a path (paths start
//! with `/`), or one whose every match an earlier rule takes first (the root prefix on the
//! same host, a covering prefix, or a regex tried before it). Sound, not complete: what it
//! reports can never match; some unreachable rules go unnoticed.

use regex::Regex;
use regex_syntax::hir::literal::{ExtractKind, Extractor};

use crate::model::{PathMatch, Route};

/// A rule no request reaches, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreachable {
    pub route: usize,
    pub rule: usize,
    pub why: String,
}

/// What every match of a regex begins with: one of these literals. `None` when it
/// could begin with anything.
fn starts(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::parse(pattern).ok()?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    seq.literals()
        .map(|lits| lits.iter().map(|l| l.as_bytes().to_vec()).collect())
}

/// The rules of `routes` that can never match, given the regexes as the table compiled
/// them (`anchored`) in the order it tries them, per host.
pub(crate) fn unreachable(routes: &[Route], hosts: &[HostRules<'_>]) -> Vec<Unreachable> {
    let mut out = Vec::new();
    for host in hosts {
        for (i, (re, (ri, pi))) in host.regex.iter().enumerate() {
            let rule = &routes[*ri].paths[*pi];
            let Some(starts) = starts(re.as_str()) else {
                continue;
            };
            let texts: Vec<&str> = starts
                .iter()
                .filter_map(|s| std::str::from_utf8(s).ok())
                .collect();
            if texts.len() != starts.len() || texts.is_empty() {
                continue;
            }
            let why = if texts.iter().all(|t| !t.is_empty() && !t.starts_with('/')) {
                Some("request paths begin with `/` and it never does".to_owned())
            } else if let Some(prefix) = host
                .prefixes
                .iter()
                .find(|p| texts.iter().all(|t| covers(p, t)))
            {
                Some(match *prefix {
                    "" => "the prefix `/` on this host takes every request first (prefixes are tried before regexes)".to_owned(),
                    p => format!("the prefix `{p}` takes every request it could match first (prefixes are tried before regexes)"),
                })
            } else {
                host.regex[..i]
                    .iter()
                    .find(|(earlier, _)| texts.iter().all(|t| earlier.is_match(t)))
                    .map(|(_, (er, ep))| {
                        format!(
                            "`{}` of route `{}` is tried first (longer patterns first) and matches every path it could",
                            routes[*er].paths[*ep].path, routes[*er].host
                        )
                    })
            };
            if let (Some(why), PathMatch::Regex) = (why, rule.kind) {
                out.push(Unreachable {
                    route: *ri,
                    rule: *pi,
                    why,
                });
            }
        }
    }
    out
}

/// Whether prefix rule `prefix` (stored without its trailing slash) takes every path that
/// begins with `start`.
fn covers(prefix: &str, start: &str) -> bool {
    prefix.is_empty()
        || start
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// One host's rules as the table tries them.
pub(crate) struct HostRules<'t> {
    /// Prefix rules, without trailing slash (`""` is the root).
    pub(crate) prefixes: Vec<&'t str>,
    pub(crate) regex: &'t [(Regex, (usize, usize))],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_starts_of_patterns() {
        let api = starts("^(?:/api(/|$)(.*))").unwrap();
        assert!(api.iter().all(|s| s.starts_with(b"/api")), "{api:?}");
        assert_eq!(starts("^(?:.*)"), None);
        assert!(starts("^(?:(?i)/a)").unwrap().len() >= 2, "case variants");
        assert!(covers("", "/x") && covers("/api", "/api/") && !covers("/api", "/apix"));
    }
}
