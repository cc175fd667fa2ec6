//! `configuration-snippet` and `server-snippet`: the part of raw nginx configuration that
//! Ingresses use to set headers, read as nginx reads it, and nothing else. `add_header NAME
//! VALUE [always]`, `more_set_headers "NAME: VALUE" ...` and `more_clear_headers NAME ...`
//! become response header operations, `proxy_set_header NAME VALUE` (with request
//! variables) a header of the upstream's request; any other directive (Lua, `rewrite`,
//! `if`, `return`, blocks...) refuses the whole snippet, naming the directive, so the
//! Ingress fails closed instead of losing what the snippet did.

use gatehouse_config::{HeaderOp, Template};
use http::{HeaderName, HeaderValue};

/// What a snippet does, in order.
#[derive(Clone, Debug, Default)]
pub struct Snippet {
    /// Operations on the responses.
    pub response: Vec<HeaderOp>,
    /// Headers set on the upstream's request (`proxy_set_header`).
    pub request: Vec<(HeaderName, Template)>,
}

/// The response header operations of a snippet, in order, or why it cannot be served.
#[cfg(test)]
pub fn header_ops(snippet: &str) -> Result<Vec<HeaderOp>, String> {
    read(snippet).map(|s| s.response)
}

/// What a snippet does, or why it cannot be served.
pub fn read(snippet: &str) -> Result<Snippet, String> {
    let mut ops = Vec::new();
    let mut request = Vec::new();
    for directive in directives(snippet)? {
        let (name, args) = directive.split_first().ok_or("an empty directive")?;
        match name.as_str() {
            "add_header" => {
                let always = match args {
                    [_, _] => false,
                    [_, _, flag] if flag == "always" => true,
                    _ => return Err("add_header takes a name, a value and optionally `always`".into()),
                };
                let (name, value) = (header_name(&args[0])?, header_value(&args[1])?);
                ops.push(HeaderOp::Add { name, value, always });
            }
            "more_set_headers" => {
                if args.is_empty() {
                    return Err("more_set_headers needs at least one \"Name: value\"".into());
                }
                for arg in args {
                    if arg.starts_with('-') {
                        return Err(format!("more_set_headers option `{arg}` is not supported"));
                    }
                    let (name, value) = arg
                        .split_once(':')
                        .ok_or_else(|| format!("more_set_headers `{arg}` is not \"Name: value\""))?;
                    ops.push(HeaderOp::Set {
                        name: header_name(name.trim())?,
                        value: header_value(value.trim())?,
                    });
                }
            }
            "more_clear_headers" => {
                if args.is_empty() {
                    return Err("more_clear_headers needs at least one header name".into());
                }
                for arg in args {
                    if arg.starts_with('-') || arg.contains('*') {
                        return Err(format!("more_clear_headers `{arg}`: options and wildcards are not supported"));
                    }
                    ops.push(HeaderOp::Clear {
                        name: header_name(arg)?,
                    });
                }
            }
            "proxy_set_header" => {
                let [name, value] = args else {
                    return Err("proxy_set_header takes a name and a value".into());
                };
                let value = Template::parse(value)
                    .map_err(|e| format!("proxy_set_header {name}: {e}"))?;
                request.push((header_name(name)?, value));
            }
            other => {
                return Err(format!(
                    "directive `{other}` is not supported; only add_header, more_set_headers, more_clear_headers and proxy_set_header are"
                ))
            }
        }
    }
    Ok(Snippet {
        response: ops,
        request,
    })
}

fn header_name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.as_bytes()).map_err(|_| format!("`{text}` is not a header name"))
}

fn header_value(text: &str) -> Result<HeaderValue, String> {
    if text.contains('$') {
        return Err(format!(
            "`{text}`: nginx variables in header values are not supported"
        ));
    }
    HeaderValue::from_str(text).map_err(|_| format!("`{text}` is not a header value"))
}

/// The snippet's directives, each as its words, as nginx splits them: words separated by
/// blanks, `"…"` and `'…'` quoting with `\` escapes, `#` comments to the end of the line,
/// `;` ending a directive. A block (`{`) is refused.
fn directives(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            ';' => {
                if !words.is_empty() {
                    out.push(std::mem::take(&mut words));
                }
            }
            '{' | '}' => {
                let name = words.first().map_or("a block", String::as_str);
                return Err(format!(
                    "directive `{name}` opens a block; blocks are not supported"
                ));
            }
            '"' | '\'' => {
                let mut word = String::new();
                loop {
                    match chars.next() {
                        None => return Err("a quoted string is not closed".into()),
                        Some('\\') => match chars.next() {
                            Some(escaped) => word.push(escaped),
                            None => return Err("a quoted string is not closed".into()),
                        },
                        Some(q) if q == c => break,
                        Some(other) => word.push(other),
                    }
                }
                words.push(word);
            }
            first => {
                let mut word = String::from(first);
                while let Some(&next) = chars.peek() {
                    if next.is_whitespace() || matches!(next, ';' | '{' | '}' | '"' | '\'') {
                        break;
                    }
                    word.push(next);
                    chars.next();
                }
                words.push(word);
            }
        }
    }
    if !words.is_empty() {
        return Err(format!("directive `{}` has no closing `;`", words[0]));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(op: &HeaderOp) -> &str {
        match op {
            HeaderOp::Add { name, .. } | HeaderOp::Set { name, .. } | HeaderOp::Clear { name } => {
                name.as_str()
            }
        }
    }

    #[test]
    fn the_header_directives_of_a_real_snippet_are_read_as_nginx_reads_them() {
        // openEuler's CLA service Ingress, as published.
        let snippet = r#"
            add_header X-XSS-Protection "1; mode=block";
            add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;
            add_header X-Frame-Options DENY;  # no framing
            add_header Content-Security-Policy 'default-src \'self\'';
            more_set_headers "Server: gatehouse" "X-A:1";
            more_clear_headers X-Powered-By;
        "#;
        let ops = header_ops(snippet).unwrap();
        let names: Vec<&str> = ops.iter().map(name).collect();
        assert_eq!(
            names,
            [
                "x-xss-protection",
                "strict-transport-security",
                "x-frame-options",
                "content-security-policy",
                "server",
                "x-a",
                "x-powered-by"
            ]
        );
        let HeaderOp::Add { value, always, .. } = &ops[0] else {
            panic!("{:?}", ops[0])
        };
        assert_eq!((value.to_str().unwrap(), *always), ("1; mode=block", false));
        let HeaderOp::Add { always, .. } = &ops[1] else {
            panic!()
        };
        assert!(*always);
        let HeaderOp::Add { value, .. } = &ops[3] else {
            panic!()
        };
        assert_eq!(value, "default-src 'self'");
        let HeaderOp::Set { value, .. } = &ops[5] else {
            panic!()
        };
        assert_eq!(value, "1");
    }

    #[test]
    fn anything_else_is_refused_naming_it() {
        for (snippet, says) in [
            ("rewrite ^/old /new permanent;", "`rewrite`"),
            ("return 301 https://example.com;", "`return`"),
            ("if ($host = a) { return 403; }", "`if` opens a block"),
            ("access_by_lua_block { ngx.exit(403) }", "opens a block"),
            ("proxy_set_header X-A;", "takes a name and a value"),
            (
                "proxy_set_header X-A $upstream_addr;",
                "`$upstream_addr` is not a variable",
            ),
            ("add_header X-A $host;", "variables"),
            ("add_header X-A;", "add_header takes"),
            ("add_header X-A b", "no closing `;`"),
            ("add_header X-A \"b;", "not closed"),
            ("more_set_headers -s 404 \"X-A: b\";", "option `-s`"),
            ("more_clear_headers X-*;", "wildcards"),
        ] {
            let why = header_ops(snippet).unwrap_err();
            assert!(why.contains(says), "{snippet}: {why}");
        }
        assert_eq!(header_ops("# only a comment\n").unwrap().len(), 0);
    }

    #[test]
    fn proxy_set_header_sets_request_headers_from_variables() {
        let s = read("proxy_set_header X-User $http_x_user; proxy_set_header X-Src \"$remote_addr:$scheme\"; add_header X-A b;").unwrap();
        assert_eq!(s.response.len(), 1);
        let names: Vec<(&str, String)> = s
            .request
            .iter()
            .map(|(n, t)| (n.as_str(), t.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("x-user", "$http_x_user".to_owned()),
                ("x-src", "$remote_addr:$scheme".to_owned())
            ]
        );
    }

    proptest::proptest! {
        #[test]
        fn no_snippet_panics(text in "[ -~\n\t]{0,200}") {
            let _ = read(&text);
        }
    }
}
