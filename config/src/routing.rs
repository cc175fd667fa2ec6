//! The compiled routing table: Host → route → path rule, built once per configuration and
//! read by every request without locks or allocation.

use std::{borrow::Cow, collections::HashMap};

use regex::Regex;

pub use crate::host::{normalize_host, HostPattern};
use crate::model::{PathMatch, Route};

/// How a request path matched its rule; enough to rewrite the path afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matched {
    Exact,
    /// The number of leading path bytes the prefix covered.
    Prefix(usize),
    Regex,
}

/// The result of a routing lookup: indexes into the configuration's routes and path rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    pub route: usize,
    pub rule: usize,
    pub matched: Matched,
}

/// A rule of the table: the route it belongs to and its index there.
type RuleRef = (usize, usize);

/// The path rules of one host. Several routes may share a host (Ingresses of different
/// teams for one domain, each with its own policy), so rules point back at their route.
#[derive(Debug, Default)]
struct PathMatcher {
    exact: HashMap<Box<str>, RuleRef>,
    /// Prefixes without their trailing slash; the root prefix is stored as "".
    prefix: HashMap<Box<str>, RuleRef>,
    regex: Vec<(Regex, RuleRef)>,
}

/// Why a table could not be built; the parser turns these into located errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    DuplicatePath {
        route: usize,
        rule: usize,
        /// The route and rule that listed it first.
        first: (usize, usize),
    },
    BadRegex {
        route: usize,
        rule: usize,
        message: String,
    },
}

/// Host table (exact, wildcard, any) with a path matcher per host.
#[derive(Debug, Default)]
pub struct RoutingTable {
    exact: HashMap<Box<str>, usize>,
    wildcard: HashMap<Box<str>, usize>,
    any: Option<usize>,
    matchers: Vec<PathMatcher>,
    /// The compiled regex of each rule, by route then rule (None for non-regex rules), for
    /// rewrites.
    rule_regex: Vec<Vec<Option<Regex>>>,
}

impl RoutingTable {
    /// Compiles routes into a table; routes naming the same host share its path table.
    /// Reports every conflict, not just the first.
    pub fn compile(routes: &[Route]) -> Result<Self, Vec<TableError>> {
        let mut table = RoutingTable::default();
        let mut errors = Vec::new();
        for (ri, route) in routes.iter().enumerate() {
            let next = table.matchers.len();
            let host = match &route.host {
                HostPattern::Exact(h) => *table.exact.entry(h.as_str().into()).or_insert(next),
                HostPattern::Wildcard(p) => {
                    *table.wildcard.entry(p.as_str().into()).or_insert(next)
                }
                HostPattern::Any => *table.any.get_or_insert(next),
            };
            if host == next {
                table.matchers.push(PathMatcher::default());
            }
            let m = &mut table.matchers[host];
            let mut compiled_rules = Vec::with_capacity(route.paths.len());
            for (pi, rule) in route.paths.iter().enumerate() {
                let mut compiled = None;
                let existing = match rule.kind {
                    PathMatch::Exact => m.exact.insert(rule.path.as_str().into(), (ri, pi)),
                    PathMatch::Prefix => m.prefix.insert(prefix_key(&rule.path).into(), (ri, pi)),
                    PathMatch::Regex => match compile_regex(&rule.path) {
                        Ok(re) => {
                            let dup = m.regex.iter().find(|(r, _)| r.as_str() == re.as_str());
                            let dup = dup.map(|(_, i)| *i);
                            m.regex.push((re.clone(), (ri, pi)));
                            compiled = Some(re);
                            dup
                        }
                        Err(message) => {
                            errors.push(TableError::BadRegex {
                                route: ri,
                                rule: pi,
                                message,
                            });
                            None
                        }
                    },
                };
                if let Some(first) = existing {
                    errors.push(TableError::DuplicatePath {
                        route: ri,
                        rule: pi,
                        first,
                    });
                }
                compiled_rules.push(compiled);
            }
            table.rule_regex.push(compiled_rules);
        }
        // Longest pattern first, as ingress-nginx orders its regex locations, so
        // `/api(/|$)(.*)` is tried before `/` whichever route carries it; patterns of one
        // length keep the order they were written in.
        for m in &mut table.matchers {
            m.regex
                .sort_by_key(|(re, _)| std::cmp::Reverse(re.as_str().len()));
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }

    /// Finds the path table for a normalised host (see [`normalize_host`]): exact name,
    /// then wildcard, then the any-host routes.
    pub fn find_host(&self, host: &str) -> Option<usize> {
        if let Some(r) = self.exact.get(host) {
            return Some(*r);
        }
        host.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent).copied())
            .or(self.any)
    }

    /// Finds the path rule in a host's path table: exact beats the longest element-wise
    /// prefix, which beats regexes, longest pattern first.
    pub fn find_path(&self, host: usize, path: &str) -> Option<RouteMatch> {
        let m = self.matchers.get(host)?;
        let found = |(route, rule): RuleRef, matched| RouteMatch {
            route,
            rule,
            matched,
        };
        if let Some(rule) = m.exact.get(path) {
            return Some(found(*rule, Matched::Exact));
        }
        if !m.prefix.is_empty() {
            let mut candidate = path.trim_end_matches('/');
            loop {
                if let Some(rule) = m.prefix.get(candidate) {
                    return Some(found(*rule, Matched::Prefix(candidate.len())));
                }
                if candidate.is_empty() {
                    break;
                }
                candidate = candidate.rfind('/').map_or("", |i| &candidate[..i]);
            }
        }
        m.regex
            .iter()
            .find(|(re, _)| re.is_match(path))
            .map(|(_, rule)| found(*rule, Matched::Regex))
    }

    /// Host then path, in one call.
    pub fn find(&self, host: &str, path: &str) -> Option<RouteMatch> {
        self.find_path(self.find_host(host)?, path)
    }

    /// The path to send upstream when the matched rule has a `rewrite`.
    ///
    /// A prefix rule replaces the matched prefix; an exact rule replaces the whole path; a
    /// regex rule's rewrite may use `$1`..`$9` for its capture groups.
    pub fn rewrite(&self, m: &RouteMatch, rewrite: &str, path: &str) -> String {
        match m.matched {
            Matched::Exact => rewrite.to_owned(),
            Matched::Prefix(len) => {
                let rest = &path[len.min(path.len())..];
                let mut out = String::with_capacity(rewrite.len() + rest.len());
                out.push_str(rewrite);
                if out.ends_with('/') && rest.starts_with('/') {
                    out.pop();
                }
                out.push_str(rest);
                if out.is_empty() {
                    out.push('/');
                }
                out
            }
            Matched::Regex => {
                let re = self
                    .rule_regex
                    .get(m.route)
                    .and_then(|rules| rules.get(m.rule))
                    .and_then(Option::as_ref);
                let caps = re.and_then(|re| re.captures(path));
                expand_captures(rewrite, |i| {
                    caps.as_ref()
                        .and_then(|c| c.get(i))
                        .map_or("", |g| g.as_str())
                })
            }
        }
    }

    /// The path rules of `routes` (those the table was compiled from) that no request can
    /// reach, each with why; for `gatehouse check` and the logs.
    pub fn unreachable(&self, routes: &[Route]) -> Vec<crate::reach::Unreachable> {
        let hosts: Vec<crate::reach::HostRules<'_>> = self
            .matchers
            .iter()
            .map(|m| crate::reach::HostRules {
                prefixes: m.prefix.keys().map(|k| &**k).collect(),
                regex: &m.regex,
            })
            .collect();
        crate::reach::unreachable(routes, &hosts)
    }

    /// Number of distinct hosts in the table.
    pub fn len(&self) -> usize {
        self.matchers.len()
    }

    /// Whether the table has no hosts.
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }
}

fn prefix_key(path: &str) -> &str {
    path.trim_end_matches('/')
}

fn compile_regex(pattern: &str) -> Result<Regex, String> {
    let anchored = if pattern.starts_with('^') {
        Cow::Borrowed(pattern)
    } else {
        Cow::Owned(format!("^(?:{pattern})"))
    };
    Regex::new(&anchored).map_err(|e| e.to_string())
}

/// Checks a regex path as the table will compile it.
pub fn check_regex(pattern: &str) -> Result<(), String> {
    compile_regex(pattern).map(|_| ())
}

/// Replaces `$1`..`$9` (exactly one digit, as nginx does) with capture groups.
fn expand_captures<'a>(template: &str, group: impl Fn(usize) -> &'a str) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            if let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
                chars.next();
                out.push_str(group(d as usize));
                continue;
            }
        }
        out.push(c);
    }
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}
