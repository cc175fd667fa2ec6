//! The request variables of nginx-style templates (`$remote_addr`, `$http_x_user`...),
//! read from one resolved request, for hash keys and `proxy_set_header` values.

use std::fmt::Write;

use gatehouse_config::template::{Variable, Variables};
use http::{HeaderMap, Method, Uri};

use crate::headers;

/// What a template may read of one request.
pub(crate) struct RequestVars<'a> {
    pub(crate) method: &'a Method,
    /// The request target as the client sent it.
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    /// The normalised path.
    pub(crate) path: &'a str,
    /// The authoritative host, lowercased, without port.
    pub(crate) host: &'a str,
    pub(crate) client: std::net::IpAddr,
    pub(crate) tls: bool,
}

impl Variables for RequestVars<'_> {
    fn write(&self, variable: &Variable, out: &mut String) {
        match variable {
            Variable::RequestUri => match self.uri.path_and_query() {
                Some(pq) => out.push_str(pq.as_str()),
                None => out.push('/'),
            },
            Variable::Uri => out.push_str(self.path),
            Variable::Args => out.push_str(self.uri.query().unwrap_or("")),
            Variable::Host => out.push_str(self.host),
            Variable::RemoteAddr => {
                let _ = write!(out, "{}", self.client);
            }
            Variable::Scheme => out.push_str(if self.tls { "https" } else { "http" }),
            Variable::RequestMethod => out.push_str(self.method.as_str()),
            Variable::Header(name) => {
                // nginx joins repeated headers (Cookie with "; ", others with ", ").
                let mut first = true;
                for value in self.headers.get_all(name.as_str()) {
                    if !first {
                        out.push_str(", ");
                    }
                    first = false;
                    out.push_str(value.to_str().unwrap_or(""));
                }
            }
            Variable::Cookie(name) => {
                out.push_str(headers::cookie(self.headers, name).unwrap_or(""));
            }
            Variable::Arg(name) => {
                // As nginx: the first argument of that name, in any case, as sent.
                let found = self
                    .uri
                    .query()
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .find_map(|pair| {
                        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
                        n.eq_ignore_ascii_case(name).then_some(v)
                    });
                out.push_str(found.unwrap_or(""));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::Template;

    #[test]
    fn each_variable_reads_its_part_of_the_request() {
        let uri: Uri = "/a/b?id=7&ID=8&x".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "ann".parse().unwrap());
        headers.append("x-user", "bob".parse().unwrap());
        headers.insert("cookie", "sid=42; other=1".parse().unwrap());
        let vars = RequestVars {
            method: &Method::POST,
            uri: &uri,
            headers: &headers,
            path: "/a/b",
            host: "app.test",
            client: "10.0.0.9".parse().unwrap(),
            tls: true,
        };
        let eval = |text: &str| {
            let mut out = String::new();
            Template::parse(text).unwrap().write(&vars, &mut out);
            out
        };
        assert_eq!(eval("$request_uri"), "/a/b?id=7&ID=8&x");
        assert_eq!(eval("$uri|$args"), "/a/b|id=7&ID=8&x");
        assert_eq!(
            eval("$scheme://$host $request_method"),
            "https://app.test POST"
        );
        assert_eq!(eval("$remote_addr"), "10.0.0.9");
        assert_eq!(eval("$http_x_user"), "ann, bob");
        assert_eq!(eval("$cookie_sid|$cookie_none"), "42|");
        assert_eq!(eval("$arg_id|$arg_x|$arg_y"), "7||");
    }
}
