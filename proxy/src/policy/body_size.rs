//! The route's `max_body`: a declared Content-Length above it is 413 before anything is
//! sent upstream; a body without one is cut off as it streams ([`crate::request_body`]).

use http::{header, HeaderMap};

use crate::error::ProxyError;

pub(crate) fn check(headers: &HeaderMap, max_body: u64) -> Result<(), ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > max_body => Err(ProxyError::BodyTooLarge { limit: max_body }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_length_above_the_limit_is_413() {
        let with = |len: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_LENGTH, len.parse().unwrap());
            h
        };
        assert!(check(&with("10"), 10).is_ok());
        let refused = check(&with("11"), 10).unwrap_err();
        assert_eq!(refused.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            check(&HeaderMap::new(), 0).is_ok(),
            "no length: checked as it streams"
        );
    }
}
