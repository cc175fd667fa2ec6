//! htpasswd text (`user:hash` lines) read and checked, without verifying anything: which
//! hash formats a line uses, so a file or Secret with a format Gatehouse cannot verify is
//! refused when it is loaded, not when a user fails to log in. Messages name the line and
//! the user, never the hash.

/// The hash formats htpasswd and common tools write, that Gatehouse verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `$apr1$`: Apache's MD5 (htpasswd's default).
    Apr1,
    /// `$2a$`, `$2b$`, `$2y$`: bcrypt (`htpasswd -B`).
    Bcrypt,
    /// `$5$`: SHA-256 crypt.
    Sha256Crypt,
    /// `$6$`: SHA-512 crypt.
    Sha512Crypt,
    /// `{SHA}`: base64 of the password's SHA-1 (`htpasswd -s`).
    Sha1,
    /// `{PLAIN}`: the password itself, as nginx accepts it.
    Plain,
}

impl Scheme {
    /// The format of `hash`, if Gatehouse can verify it.
    pub fn of(hash: &str) -> Option<Scheme> {
        let prefixed = |p: &str| hash.starts_with(p);
        Some(if prefixed("$apr1$") {
            Scheme::Apr1
        } else if prefixed("$2a$") || prefixed("$2b$") || prefixed("$2y$") {
            Scheme::Bcrypt
        } else if prefixed("$5$") {
            Scheme::Sha256Crypt
        } else if prefixed("$6$") {
            Scheme::Sha512Crypt
        } else if prefixed("{SHA}") {
            Scheme::Sha1
        } else if prefixed("{PLAIN}") {
            Scheme::Plain
        } else {
            return None;
        })
    }
}

/// One user of an htpasswd text.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub user: String,
    pub hash: String,
    pub scheme: Scheme,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Entry({}, {:?})", self.user, self.scheme)
    }
}

/// The users of an htpasswd text: `user:hash` per line (anything after a second `:` is a
/// comment), blank lines and `#` comments skipped.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line_no = n + 1;
        let Some((user, rest)) = line.split_once(':') else {
            return Err(format!("line {line_no} is not `user:hash`"));
        };
        let hash = rest.split(':').next().unwrap_or_default();
        if user.is_empty() {
            return Err(format!("line {line_no} has no user name"));
        }
        let scheme = Scheme::of(hash).ok_or_else(|| {
            format!("line {line_no}, user `{user}`: the hash format is not one Gatehouse verifies (apr1 `$apr1$`, bcrypt `$2y$`, SHA-256/512 crypt `$5$`/`$6$`, `{{SHA}}`); rewrite it with `htpasswd -B` (bcrypt)")
        })?;
        out.push(Entry {
            user: user.to_owned(),
            hash: hash.to_owned(),
            scheme,
        });
    }
    if out.is_empty() {
        return Err("no users in it; nobody could log in".to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_users_and_formats() {
        let text = "# team\nann:$apr1$abc$def\n\nbob:$2y$05$x:comment\ncid:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\ndee:$6$salt$h\n";
        let users = parse(text).unwrap();
        let got: Vec<(&str, Scheme)> = users.iter().map(|e| (e.user.as_str(), e.scheme)).collect();
        assert_eq!(
            got,
            [
                ("ann", Scheme::Apr1),
                ("bob", Scheme::Bcrypt),
                ("cid", Scheme::Sha1),
                ("dee", Scheme::Sha512Crypt)
            ]
        );
        assert_eq!(users[1].hash, "$2y$05$x");
        for (text, says) in [
            ("ann", "line 1 is not `user:hash`"),
            (
                "ann:$apr1$a$b\nbob:abDES0123456",
                "line 2, user `bob`: the hash format",
            ),
            (":$apr1$a$b", "no user name"),
            ("# nobody\n", "no users"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
            assert!(
                !e.contains("abDES0123456"),
                "the hash stays out of the message: {e}"
            );
        }
    }
}
