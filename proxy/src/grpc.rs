//! gRPC over the proxy: the answers Gatehouse makes itself are gRPC statuses a gRPC client
//! understands (a trailers-only response: HTTP 200 with `grpc-status` and `grpc-message`),
//! not HTTP error pages; and a call's `grpc-timeout` bounds how long Gatehouse waits for
//! the upstream's answer.

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::{error::ProxyError, response_body::ResponseBody};

/// Whether a request is a gRPC call (`content-type: application/grpc[+proto|...]`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.len() >= 16
                && v[..16].eq_ignore_ascii_case("application/grpc")
                && matches!(v.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// The call's deadline from its `grpc-timeout` (`100m`, `5S`...: at most 8 digits and a
/// unit of H, M, S, m, u, n), if it has a valid one.
pub(crate) fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// gRPC status codes Gatehouse answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    Unknown = 2,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// The gRPC status of one of Gatehouse's own answers: its cause where that says more
/// than the HTTP status (a timeout is DEADLINE_EXCEEDED, not UNAVAILABLE), else gRPC's
/// mapping of HTTP statuses.
pub(crate) fn code(error: &ProxyError) -> Code {
    match error {
        ProxyError::UpstreamTimeout { .. } | ProxyError::UpstreamSendTimeout { .. } => {
            Code::DeadlineExceeded
        }
        ProxyError::BodyTooLarge { .. } => Code::ResourceExhausted,
        ProxyError::AuthServiceFailed { .. } => Code::Unknown,
        _ => match error.status() {
            StatusCode::BAD_REQUEST => Code::Internal,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::Unimplemented,
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
            _ => Code::Unknown,
        },
    }
}

/// A trailers-only gRPC answer for `error`: HTTP 200, `grpc-status`, and `grpc-message`
/// (percent-encoded, as the gRPC spec asks).
pub(crate) fn error_response(error: &ProxyError) -> Response<ResponseBody> {
    const ENCODE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b'%')
        .add(b'"')
        .add(b'#')
        .add(b'<')
        .add(b'>')
        .add(b'`')
        .add(b'{')
        .add(b'}');
    let mut resp = Response::new(ResponseBody::empty());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code(error) as u16));
    let message = percent_encoding::utf8_percent_encode(&error.to_string(), ENCODE).to_string();
    if let Ok(value) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", value);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn grpc_calls_are_told_by_their_content_type() {
        assert!(is_grpc(&headers(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&headers(&[(
            "content-type",
            "application/grpc+proto"
        )])));
        assert!(!is_grpc(&headers(&[(
            "content-type",
            "application/grpc-web"
        )])));
        assert!(!is_grpc(&headers(&[("content-type", "application/json")])));
        assert!(!is_grpc(&headers(&[])));
    }

    #[test]
    fn timeouts_read_every_unit_and_refuse_the_rest() {
        let t = |v: &'static str| timeout(&headers(&[("grpc-timeout", v)]));
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5u"), Some(Duration::from_micros(5)));
        assert_eq!(t("123456789S"), None, "more than 8 digits");
        assert_eq!(t("10x"), None);
        assert_eq!(t("S"), None);
    }

    #[test]
    fn own_errors_map_to_the_statuses_a_grpc_client_expects() {
        let no_endpoint = ProxyError::NoEndpoint {
            service: "s".into(),
        };
        let resp = error_response(&no_endpoint);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert!(resp.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .contains("has no endpoint"));
        let timeout = ProxyError::UpstreamTimeout {
            service: "s".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            after: Duration::from_secs(1),
        };
        assert_eq!(code(&timeout), Code::DeadlineExceeded);
        let denied = ProxyError::NotAllowed {
            client: "10.0.0.1".parse().unwrap(),
            route: "r".into(),
        };
        assert_eq!(code(&denied), Code::PermissionDenied);
        assert_eq!(
            code(&ProxyError::NoRoute { host: "h".into() }),
            Code::Unimplemented
        );
    }
}
