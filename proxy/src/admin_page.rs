//! The admin status page at `/`: one HTML page, its script and its style, which draw the
//! JSON views for a person. Served with a Content-Security-Policy that allows only these
//! files and the views, so a name in an Ingress can never run as script on the page.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body_util::Full;

const INDEX: &str = include_str!("admin_page/index.html");
const SCRIPT: &str = include_str!("admin_page/status.js");
const STYLE: &str = include_str!("admin_page/status.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

/// The page's file at `path`, if it is one.
pub(crate) fn file(path: &str) -> Option<Response<Full<Bytes>>> {
    static INDEX_WITH_VERSION: OnceLock<String> = OnceLock::new();
    let (body, content_type) = match path {
        "/" => (
            INDEX_WITH_VERSION
                .get_or_init(|| INDEX.replace("{version}", env!("CARGO_PKG_VERSION")))
                .as_str(),
            "text/html; charset=utf-8",
        ),
        "/status.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "/status.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return None,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_version_and_forbids_inline_script() {
        let page = file("/").unwrap();
        assert_eq!(
            page.headers()[header::CONTENT_SECURITY_POLICY],
            POLICY,
            "the policy is what keeps Ingress text from running as script"
        );
        assert!(POLICY.contains("script-src 'self'") && !POLICY.contains("unsafe-inline"));
        let html = INDEX.replace("{version}", env!("CARGO_PKG_VERSION"));
        assert!(html.contains(env!("CARGO_PKG_VERSION")));
        assert!(
            !html.contains("<script>"),
            "no inline script: the policy would block it"
        );
        assert!(file("/status.js").is_some() && file("/status.css").is_some());
        assert!(file("/nothing").is_none());
    }

    #[test]
    fn the_script_never_parses_text_as_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!SCRIPT.contains(sink), "status.js uses {sink}");
        }
    }
}
