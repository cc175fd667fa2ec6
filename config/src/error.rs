//! Configuration errors: every one carries the place in the file it is about.

use std::fmt;

/// A place in a configuration file, as an operator's editor shows it (1-based).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file as the operator named it.
    pub file: String,
    /// Line, from 1 (0: the place is an object, not a line of a file).
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl Location {
    /// Whether this names a Kubernetes object (a ConfigMap, an Ingress) rather than a
    /// place in the configuration file.
    pub fn is_object(&self) -> bool {
        self.line == 0
    }

    /// The place of what the Ingress `namespace/name` defines.
    pub fn ingress(source: &str) -> Location {
        Location {
            file: format!("{INGRESS}{source}"),
            line: 0,
            column: 0,
        }
    }

    /// The namespace and name of the Ingress this is the place of, if it is one's.
    pub fn ingress_name(&self) -> Option<(&str, &str)> {
        match self.is_object() {
            true => self.file.strip_prefix(INGRESS)?.split_once('/'),
            false => None,
        }
    }
}

const INGRESS: &str = "Ingress ";

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_object() {
            // Not from a file (a Kubernetes object): the name says it all.
            f.write_str(&self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// One thing wrong with a configuration, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    /// Where the problem is.
    pub location: Location,
    /// What is wrong and, where we can tell, what to do about it.
    pub message: String,
}

/// Every error found in one configuration: validation never stops at the first.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// A single error that is about the whole file (it cannot be read, say).
    pub fn whole_file(file: &str, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            location: Location {
                file: file.to_owned(),
                line: 1,
                column: 1,
            },
            message: message.into(),
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::Location;

    #[test]
    fn an_ingress_place_names_its_ingress_and_a_file_place_none() {
        let place = Location::ingress("shop/web");
        assert_eq!(place.to_string(), "Ingress shop/web");
        assert_eq!(place.ingress_name(), Some(("shop", "web")));
        let file = Location {
            file: "Ingress shop/web".into(),
            line: 3,
            column: 1,
        };
        assert_eq!(file.ingress_name(), None, "a file may be called anything");
    }
}
