//! A small typed reader over saphyr's marked YAML tree that records every error with its
//! location instead of stopping at the first one.

use saphyr::{MarkedYaml, Scalar, YamlData};
use saphyr_parser::Span;

use crate::error::{ConfigError, Location};

/// Collects errors while the document is read.
pub(crate) struct Reader<'f> {
    file: &'f str,
    pub(crate) errors: Vec<ConfigError>,
}

/// A mapping whose keys were checked against the ones the section allows.
pub(crate) struct Fields<'n, 'i> {
    entries: Vec<(&'n str, &'n MarkedYaml<'i>)>,
    pub(crate) span: Span,
}

impl<'n, 'i> Fields<'n, 'i> {
    pub(crate) fn get(&self, key: &str) -> Option<&'n MarkedYaml<'i>> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .filter(|v| !v.data.is_null())
    }

    /// The entries in file order (for maps keyed by user names, such as `services`).
    pub(crate) fn entries(&self) -> &[(&'n str, &'n MarkedYaml<'i>)] {
        &self.entries
    }
}

impl<'f> Reader<'f> {
    pub(crate) fn new(file: &'f str) -> Self {
        Reader {
            file,
            errors: Vec::new(),
        }
    }

    /// The file as errors name it.
    pub(crate) fn file(&self) -> &'f str {
        self.file
    }

    pub(crate) fn location(&self, span: Span) -> Location {
        Location {
            file: self.file.to_owned(),
            line: span.start.line().max(1),
            column: span.start.col() + 1,
        }
    }

    pub(crate) fn error(&mut self, span: Span, message: impl Into<String>) {
        let location = self.location(span);
        self.errors.push(ConfigError {
            location,
            message: message.into(),
        });
    }

    /// Reads a mapping of free-form keys (names chosen by the operator).
    pub(crate) fn map<'n, 'i>(
        &mut self,
        node: &'n MarkedYaml<'i>,
        what: &str,
    ) -> Option<Fields<'n, 'i>> {
        let YamlData::Mapping(map) = &node.data else {
            self.error(
                node.span,
                format!("{what} must be a mapping of `key: value` entries"),
            );
            return None;
        };
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map.iter() {
            match scalar_str(k) {
                Some(key) => entries.push((key, v)),
                None => self.error(k.span, format!("keys in {what} must be plain strings")),
            }
        }
        Some(Fields {
            entries,
            span: node.span,
        })
    }

    /// Reads a mapping whose keys must be among `known`; `pending` lists keys of the
    /// contract whose feature is not built yet, with the reason. Both unknown and pending
    /// keys are errors: a setting must never be accepted and then silently ignored.
    pub(crate) fn section<'n, 'i>(
        &mut self,
        node: &'n MarkedYaml<'i>,
        what: &str,
        known: &[&str],
        pending: &[(&str, &str)],
    ) -> Option<Fields<'n, 'i>> {
        let fields = self.map(node, what)?;
        for (key, value) in fields.entries() {
            if known.contains(key) {
                continue;
            }
            let span = key_span(node, key).unwrap_or(value.span);
            if let Some((_, why)) = pending.iter().find(|(k, _)| k == key) {
                self.error(
                    span,
                    format!("`{key}` in {what} is not supported yet ({why}); remove it"),
                );
            } else {
                let candidates: Vec<&str> = known
                    .iter()
                    .chain(pending.iter().map(|(k, _)| k))
                    .copied()
                    .collect();
                let hint = closest(key, &candidates)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                self.error(
                    span,
                    format!(
                        "unknown key `{key}` in {what}{hint} (allowed: {})",
                        known.join(", ")
                    ),
                );
            }
        }
        Some(fields)
    }

    pub(crate) fn string(&mut self, node: &MarkedYaml<'_>, what: &str) -> Option<String> {
        match &node.data {
            YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
            YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
            YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
            YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
            _ => {
                self.error(node.span, format!("{what} must be a string"));
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, node: &MarkedYaml<'_>, what: &str) -> Option<bool> {
        match &node.data {
            YamlData::Value(Scalar::Boolean(b)) => Some(*b),
            _ => {
                self.error(node.span, format!("{what} must be `true` or `false`"));
                None
            }
        }
    }

    pub(crate) fn sequence<'n, 'i>(
        &mut self,
        node: &'n MarkedYaml<'i>,
        what: &str,
    ) -> Option<&'n [MarkedYaml<'i>]> {
        match &node.data {
            YamlData::Sequence(items) => Some(items.as_slice()),
            _ => {
                self.error(node.span, format!("{what} must be a list"));
                None
            }
        }
    }

    /// Reads a string and converts it, reporting the converter's message at the node.
    pub(crate) fn parsed<T>(
        &mut self,
        node: &MarkedYaml<'_>,
        what: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.string(node, what)?;
        match parse(&text) {
            Ok(v) => Some(v),
            Err(msg) => {
                self.error(node.span, format!("{what}: {msg}"));
                None
            }
        }
    }
}

fn scalar_str<'n>(node: &'n MarkedYaml<'_>) -> Option<&'n str> {
    match &node.data {
        YamlData::Value(Scalar::String(s)) => Some(s.as_ref()),
        _ => None,
    }
}

/// The span of a key (not its value), so "unknown key" points at the key itself.
fn key_span(node: &MarkedYaml<'_>, key: &str) -> Option<Span> {
    let YamlData::Mapping(map) = &node.data else {
        return None;
    };
    map.keys()
        .find(|k| scalar_str(k) == Some(key))
        .map(|k| k.span)
}

/// The allowed key nearest to a typo, if it is close enough to be a likely intent.
pub fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(closest("alow", &["allow", "host"]), Some("allow"));
        assert_eq!(closest("zzzzzz", &["allow", "host"]), None);
        // Long keys tolerate a quarter of their length in typos (4 here), short ones 2.
        assert_eq!(
            closest("upstream_respo", &["upstream_response", "idle"]),
            Some("upstream_response")
        );
        assert_eq!(closest("hsot", &["host", "paths"]), Some("host"));
        assert_eq!(closest("xyz", &["host"]), None);
    }

    #[test]
    fn edit_distances() {
        // (a, b, insertions + deletions + substitutions)
        let cases = [
            ("kitten", "sitting", 3),
            ("", "abc", 3),
            ("abc", "", 3),
            ("flaw", "lawn", 2),
            ("same", "same", 0),
            ("conect", "connect", 1),
            ("ab", "ba", 2),
            // Deletions from the first word, too.
            ("connect", "conect", 1),
            ("sitting", "kitten", 3),
        ];
        for (a, b, d) in cases {
            assert_eq!(edit_distance(a, b), d, "{a} → {b}");
        }
    }
}
