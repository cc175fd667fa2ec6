//! Request paths as the upstream will read them, before anything matches on them: the
//! route, rewrite, allow-list and access log all see the path that is served. Without it,
//! `//admin`, `/./admin`, `/x/../admin` and `/%61dmin` reach an upstream that reads
//! `/admin` while Gatehouse applied the policy of `/`.
//!
//! As nginx and Envoy normalise: unreserved characters are percent-decoded (RFC 3986
//! §2.3), repeated slashes merge, `.` and `..` segments resolve (RFC 3986 §5.2.4); other
//! escapes stay encoded with upper-case hex, so `%2F` and `%5C` never split a segment.

use std::borrow::Cow;

/// Why a request target cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("the request target is not a path (origin-form or absolute-form)")]
    NotAPath,
    #[error("the path climbs above the root with `..`")]
    AboveRoot,
    #[error("the path has a `%` that is not followed by two hex digits")]
    BadEscape,
    #[error("the path has an encoded slash or backslash (`%2F`, `%5C`), which reject_encoded_slash refuses")]
    EncodedSlash,
}

/// Whether a normalised path (escapes in upper case) holds an encoded `/` or `\`.
pub fn has_encoded_slash(normalized: &str) -> bool {
    normalized.contains("%2F") || normalized.contains("%5C")
}

/// The normalised form of `raw` (a request's path, without the query); borrowed when it
/// is normalised already, which is the common case and costs no allocation.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, BadPath> {
    if !raw.starts_with('/') {
        return Err(BadPath::NotAPath);
    }
    if is_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw)?;
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    // A path ending in `/`, `/.` or `/..` names a directory: it keeps a trailing slash.
    let trailing = matches!(segments.last(), Some(&"") | Some(&".") | Some(&".."));
    for segment in segments {
        match segment {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(BadPath::AboveRoot);
                }
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for segment in &out {
        path.push('/');
        path.push_str(segment);
    }
    if trailing || out.is_empty() {
        path.push('/');
    }
    Ok(Cow::Owned(path))
}

/// Whether nothing would change: no escape, and no empty, `.` or `..` segment but a final
/// empty one (a trailing slash). One pass over the bytes: this runs for every request.
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut start = 1;
    for i in 1..=bytes.len() {
        if i < bytes.len() && bytes[i] == b'%' {
            return false;
        }
        if i == bytes.len() || bytes[i] == b'/' {
            let segment = &bytes[start..i];
            if (segment.is_empty() && i < bytes.len()) || segment == b"." || segment == b".." {
                return false;
            }
            start = i + 1;
        }
    }
    true
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes `%XX` of unreserved characters; other escapes stay, with upper-case hex.
fn decode_unreserved(path: &str) -> Result<String, BadPath> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // The path is ASCII here: http's URI parser admits no other bytes.
            out.push(bytes[i] as char);
            i += 1;
            continue;
        }
        let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
            return Err(BadPath::BadEscape);
        };
        let byte = (hi * 16 + lo) as u8;
        if unreserved(byte) {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(char::from_digit(hi, 16).unwrap_or('0').to_ascii_uppercase());
            out.push(char::from_digit(lo, 16).unwrap_or('0').to_ascii_uppercase());
        }
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tricks_resolve_to_the_path_the_upstream_reads() {
        // (raw, normalised)
        let cases = [
            ("/", "/"),
            ("/admin", "/admin"),
            ("/admin/", "/admin/"),
            ("//admin", "/admin"),
            ("/admin//x///y", "/admin/x/y"),
            ("/./admin", "/admin"),
            ("/x/../admin", "/admin"),
            ("/x/y/../../admin", "/admin"),
            ("/admin/.", "/admin/"),
            ("/admin/x/..", "/admin/"),
            ("/%61dmin", "/admin"),
            ("/%61%64%6D%69%6e", "/admin"),
            ("/%2e/admin", "/admin"),
            ("/x/%2E%2E/admin", "/admin"),
            ("/%7e/user", "/~/user"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%5cb/..", "/"),
            ("/a%5Cb", "/a%5Cb"),
            ("/sp%20ace", "/sp%20ace"),
            ("/%00", "/%00"),
            ("//", "/"),
            ("/.", "/"),
            ("/x/..", "/"),
            ("/..x/.x./...", "/..x/.x./..."),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn what_cannot_be_served_is_refused() {
        let cases = [
            ("/..", BadPath::AboveRoot),
            ("/../admin", BadPath::AboveRoot),
            ("/x/../../admin", BadPath::AboveRoot),
            ("/%2e%2e/admin", BadPath::AboveRoot),
            ("/a%2", BadPath::BadEscape),
            ("/a%zz", BadPath::BadEscape),
            ("/a%", BadPath::BadEscape),
            ("*", BadPath::NotAPath),
            ("admin", BadPath::NotAPath),
            ("", BadPath::NotAPath),
        ];
        for (raw, why) in cases {
            assert_eq!(normalize(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for raw in ["/", "/admin", "/a/b/c/", "/a.b/c..d/.e", "/~user"] {
            assert!(matches!(normalize(raw), Ok(Cow::Borrowed(_))), "{raw}");
        }
    }

    #[test]
    fn encoded_separators_are_found_after_normalising_in_any_case() {
        for (raw, has) in [
            ("/a%2fb", true),
            ("/a%2Fb", true),
            ("/a%5cb", true),
            ("/a%252Fb", false),
            ("/a/b", false),
            ("/a%20b", false),
        ] {
            let normalized = normalize(raw).unwrap();
            assert_eq!(has_encoded_slash(&normalized), has, "{raw}");
        }
    }

    proptest::proptest! {
        #[test]
        fn normalising_never_panics_and_is_idempotent(
            raw in "/[a-zA-Z0-9%./~_-]{0,40}"
        ) {
            if let Ok(once) = normalize(&raw) {
                let twice = normalize(&once).expect("a normalised path stays valid");
                proptest::prop_assert_eq!(twice.as_ref(), once.as_ref());
                proptest::prop_assert!(once.starts_with('/'));
                proptest::prop_assert!(!once.contains("//"));
            }
        }
    }
}
