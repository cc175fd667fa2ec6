//! Rewrite: the request the upstream gets. Origin-form target with the served path (the
//! rule's rewrite of the normalised path, or that path), the client's query, HTTP/1.1,
//! the authoritative Host and the forwarded headers; the body under the route's limit.

use http::{HeaderName, HeaderValue, Request, Uri, Version};
use hyper::{body::Incoming, upgrade::OnUpgrade};

use crate::{
    client::Client,
    conn::ConnInfo,
    headers,
    request::resolve::{Resolved, Target},
    request_body::RequestBody,
};

/// What the rewrite needs of a resolved request, kept while the request is taken apart.
pub(crate) struct Plan {
    /// The rule's rewrite of the normalised path.
    rewritten: Option<String>,
    host_header: http::HeaderValue,
    max_body: u64,
    /// The route's `proxy_set_header`s, evaluated: `None` removes the header.
    set_headers: Vec<(HeaderName, Option<HeaderValue>)>,
}

impl Plan {
    /// The plan for `r`, resolved from `req`, and where it goes.
    pub(crate) fn new<'s, B>(r: Resolved<'s, '_>, req: &Request<B>) -> (Plan, Target<'s>) {
        let rewritten = r.target.route.and_then(|(route, m)| {
            let rewrite = route.paths[m.rule].rewrite.as_deref()?;
            Some(r.snapshot.table.rewrite(&m, rewrite, r.path))
        });
        let set_headers = match r.target.route {
            Some((route, _)) if !route.request_headers.is_empty() => {
                let vars = r.vars(req);
                route
                    .request_headers
                    .iter()
                    .map(|(name, template)| {
                        let mut value = String::new();
                        template.write(&vars, &mut value);
                        // As nginx: an empty value sends no header.
                        let value = (!value.is_empty())
                            .then(|| HeaderValue::from_str(&value).ok())
                            .flatten();
                        (name.clone(), value)
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let plan = Plan {
            rewritten,
            host_header: r.host_header,
            max_body: r.target.max_body,
            set_headers,
        };
        (plan, r.target)
    }
}

/// The upstream's request, and the client's side of an upgrade it asks for. `normalized`
/// is the normalised path when it differs from the request target's.
pub(crate) fn rewrite(
    plan: Plan,
    normalized: Option<String>,
    mut req: Request<Incoming>,
    conn: &ConnInfo,
    client: &Client,
) -> (Request<RequestBody>, Option<OnUpgrade>) {
    let upgrade = headers::upgrade_request(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = upstream_uri(parts.uri, plan.rewritten.or(normalized).as_deref());
    parts.version = Version::HTTP_11;
    headers::to_upstream(&mut parts.headers, conn, client, plan.host_header, upgrade);
    for (name, value) in plan.set_headers {
        match value {
            Some(value) => parts.headers.insert(name, value),
            None => parts.headers.remove(name),
        };
    }
    let upstream_req = Request::from_parts(parts, RequestBody::new(body, plan.max_body));
    (upstream_req, client_upgrade)
}

/// The origin-form URI for the upstream, with `path` if the served path differs from the
/// target's. A rewrite that brings its own query (`/user?id=$1`) keeps the client's after
/// it, joined with `&`, as nginx does.
fn upstream_uri(uri: Uri, path: Option<&str>) -> Uri {
    if path.is_none() && uri.scheme().is_none() {
        return uri;
    }
    let path = path.unwrap_or_else(|| uri.path());
    let built = match uri.query() {
        Some(q) if path.contains('?') => format!("{path}&{q}"),
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    built.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_gets_origin_form_with_the_served_path_and_the_query() {
        // (request target, served path, upstream target)
        let cases = [
            ("/a?x=1", None, "/a?x=1"),
            ("http://h.test/a?x=1", None, "/a?x=1"),
            ("/a?x=1", Some("/b"), "/b?x=1"),
            ("/a", Some("/b"), "/b"),
            ("/user/5?x=1", Some("/user?id=5"), "/user?id=5&x=1"),
            ("/user/5", Some("/user?id=5"), "/user?id=5"),
        ];
        for (target, path, want) in cases {
            let uri: Uri = target.parse().unwrap();
            assert_eq!(
                upstream_uri(uri, path).to_string(),
                want,
                "{target} {path:?}"
            );
        }
    }
}
