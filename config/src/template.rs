//! nginx-style values built from request variables: `$remote_addr`, `$http_x_user`,
//! `${cookie_session}-$arg_id`. Used for hash keys (`upstream-hash-by`) and for request
//! headers set by `proxy_set_header`. Parsed once; evaluated per request by the proxy,
//! which knows the request ([`Variables`]).

use std::fmt;

/// A request variable a template may use.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Variable {
    /// The request target as the client sent it, path and query.
    RequestUri,
    /// The normalised path, without the query.
    Uri,
    /// The query string (`$args`, `$query_string`).
    Args,
    /// The host the request is for, lowercased, without the port.
    Host,
    /// The client address (after trusted-proxy resolution).
    RemoteAddr,
    /// `http` or `https`.
    Scheme,
    RequestMethod,
    /// A request header, by its lowercased name (`$http_x_user` is `x-user`).
    Header(String),
    /// A cookie of the request, by name as written.
    Cookie(String),
    /// A query argument, by name as written.
    Arg(String),
}

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    Literal(String),
    Variable(Variable),
}

/// A value made of literals and request variables, as nginx writes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Template {
    parts: Vec<Part>,
    /// As written, for messages and the admin view.
    source: String,
}

/// What a template reads of one request. A variable the request lacks writes nothing, as
/// in nginx.
pub trait Variables {
    /// Appends the value of `variable` to `out`.
    fn write(&self, variable: &Variable, out: &mut String);
}

/// The variables a template may use, for messages.
pub const KNOWN_VARIABLES: &str = "$request_uri, $uri, $args, $host, $remote_addr, $scheme, \
     $request_method, $http_NAME, $cookie_NAME, $arg_NAME";

impl Template {
    /// Parses `text`: `$name` or `${name}` for a variable, anything else literal.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            let (name, next) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("`{text}`: `${{` is never closed with `}}`"))?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            if name.is_empty() {
                return Err(format!(
                    "`{text}`: a `$` must be followed by a variable name"
                ));
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Variable(variable(name).ok_or_else(|| {
                format!("`${name}` is not a variable Gatehouse knows; it knows {KNOWN_VARIABLES}")
            })?));
            rest = next;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template {
            parts,
            source: text.to_owned(),
        })
    }

    /// The template's value for one request, appended to `out`.
    pub fn write(&self, vars: &dyn Variables, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Variable(v) => vars.write(v, out),
            }
        }
    }

    /// The variables and literals, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn variable(name: &str) -> Option<Variable> {
    let prefixed = |prefix: &str| name.strip_prefix(prefix).filter(|rest| !rest.is_empty());
    Some(match name {
        "request_uri" => Variable::RequestUri,
        "uri" | "document_uri" => Variable::Uri,
        "args" | "query_string" => Variable::Args,
        "host" => Variable::Host,
        "remote_addr" => Variable::RemoteAddr,
        "scheme" => Variable::Scheme,
        "request_method" => Variable::RequestMethod,
        _ => {
            if let Some(header) = prefixed("http_") {
                Variable::Header(header.to_ascii_lowercase().replace('_', "-"))
            } else if let Some(cookie) = prefixed("cookie_") {
                Variable::Cookie(cookie.to_owned())
            } else if let Some(arg) = prefixed("arg_") {
                Variable::Arg(arg.to_owned())
            } else {
                return None;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Variables for Fixed {
        fn write(&self, v: &Variable, out: &mut String) {
            match v {
                Variable::RemoteAddr => out.push_str("10.0.0.1"),
                Variable::Header(h) => out.push_str(&format!("<{h}>")),
                Variable::Cookie(c) => out.push_str(&format!("[{c}]")),
                _ => {}
            }
        }
    }

    fn eval(text: &str) -> String {
        let mut out = String::new();
        Template::parse(text).unwrap().write(&Fixed, &mut out);
        out
    }

    #[test]
    fn variables_and_literals_concatenate_as_nginx_writes_them() {
        assert_eq!(eval("$remote_addr"), "10.0.0.1");
        assert_eq!(eval("$http_X_User-$remote_addr"), "<x-user>-10.0.0.1");
        assert_eq!(eval("${cookie_sid}x$request_uri"), "[sid]x");
        assert_eq!(eval("plain"), "plain");
        assert_eq!(Template::parse("plain").unwrap().parts().len(), 1);
    }

    #[test]
    fn unknown_variables_and_bad_syntax_are_named() {
        for (text, says) in [
            ("$upstream_addr", "`$upstream_addr` is not a variable"),
            ("${host", "never closed"),
            ("a$", "followed by a variable name"),
            ("$http_", "`$http_` is not a variable"),
        ] {
            let e = Template::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
