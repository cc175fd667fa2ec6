//! Which endpoint the request prefers, before it is forwarded: its key's place on the
//! ring when the service hashes, the endpoint its affinity cookie names; and the cookie
//! the answer then carries.

use gatehouse_config::{Balance, PathMatch};
use http::HeaderValue;

use crate::{
    policy::affinity::{self, CookieScope, Sticky},
    upstream::{key_hash, EndpointList, Preference, Upstream},
    {request::resolve::Resolved, vars::RequestVars},
};

/// The request's endpoint set and its preference among them.
pub(crate) struct Choice<'u> {
    /// One consistent set for the whole request, whatever discovery publishes meanwhile.
    pub(crate) set: EndpointList,
    pub(crate) preference: Preference,
    sticky: Option<(Sticky<'u>, &'u str, bool)>,
}

/// The choice for a resolved request with `vars`, to be served by `upstream`.
pub(crate) fn choose<'u>(
    upstream: &'u Upstream,
    r: &Resolved<'u, '_>,
    vars: &RequestVars<'_>,
) -> Choice<'u> {
    let set = upstream.endpoints();
    if let Some(a) = upstream.affinity() {
        let (preference, sticky) = affinity::choose(a, &set, vars.headers);
        // The cookie's default Path: the rule's own, where it is a path; `/` for a regex.
        let path = match r.target.route {
            Some((route, m)) if route.paths[m.rule].kind != PathMatch::Regex => {
                route.paths[m.rule].path.as_str()
            }
            _ => "/",
        };
        let tls = r.conn.tls.is_some();
        return Choice {
            set,
            preference,
            sticky: Some((sticky, path, tls)),
        };
    }
    let preference = match upstream.balance() {
        Balance::Hash(key) => {
            let mut text = String::new();
            key.write(vars, &mut text);
            Preference::Hash(key_hash(text.as_bytes()))
        }
        _ => Preference::None,
    };
    Choice {
        set,
        preference,
        sticky: None,
    }
}

impl Choice<'_> {
    /// The affinity cookie for the answer, now that endpoint `answered` served.
    pub(crate) fn cookie(self, answered: usize) -> Option<HeaderValue> {
        let (sticky, path, tls) = self.sticky?;
        let scope = CookieScope {
            default_path: path,
            tls,
        };
        affinity::set_cookie(sticky, &self.set, answered, scope)
    }
}
