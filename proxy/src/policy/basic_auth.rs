//! HTTP basic authentication (nginx's `auth_basic`, ingress-nginx's `auth-type: basic`).
//! A request without a user and password of the route's list gets 401 with the route's
//! realm. Hashes are verified off the request threads, a few at a time, since bcrypt's cost
//! is the operator's choice and a client can send wrong passwords at will; a header that
//! verified is remembered (by a keyed hash of it, never in clear) until the users change.

use std::{
    collections::{HashMap, HashSet},
    hash::BuildHasher,
    sync::{Arc, Mutex},
};

use base64::Engine;
use gatehouse_config::{
    htpasswd::{self, Entry, Scheme},
    BasicAuth, Htpasswd,
};
use http::{header, HeaderMap, HeaderValue};
use siphasher::sip128::{Hasher128, SipHasher13};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::error::ProxyError;

/// Verifications running at once; more wait their turn.
const AT_ONCE: usize = 4;
/// Verified headers remembered per route; past it the memory starts over.
const REMEMBERED: usize = 4096;

/// One route's users, ready for requests.
pub(crate) struct Credentials {
    /// `Basic realm="..."`, for 401 answers.
    challenge: HeaderValue,
    users: HashMap<String, Entry>,
    verified: Mutex<HashSet<u128>>,
    key: (u64, u64),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} users)", self.users.len())
    }
}

impl Credentials {
    /// The users of `auth`, reading its file if it names one.
    pub(crate) fn load(auth: &BasicAuth) -> Result<Credentials, String> {
        let text = match &auth.users {
            Htpasswd::Text(text) => text.clone(),
            Htpasswd::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the htpasswd file {}: {e}", path.display()))?,
        };
        let entries = htpasswd::parse(&text).map_err(|e| match &auth.users {
            Htpasswd::File(path) => format!("htpasswd file {}: {e}", path.display()),
            Htpasswd::Text(_) => e,
        })?;
        let realm = auth.realm.replace(['"', '\\'], "");
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .map_err(|_| format!("the realm `{realm}` cannot be sent in a header"))?;
        let random = || std::collections::hash_map::RandomState::new().hash_one(0u8);
        Ok(Credentials {
            challenge,
            users: entries.into_iter().map(|e| (e.user.clone(), e)).collect(),
            verified: Mutex::new(HashSet::new()),
            key: (random(), random()),
        })
    }

    fn remembered(&self, authorization: &[u8]) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.key.0, self.key.1);
        std::hash::Hasher::write(&mut h, authorization);
        h.finish128().as_u128()
    }
}

/// Lets the request in when its Authorization header names a user of `creds` with the
/// right password; else 401 for `route`.
pub(crate) async fn check(
    creds: &Arc<Credentials>,
    headers: &HeaderMap,
    route: &(dyn std::fmt::Display + Sync),
) -> Result<(), ProxyError> {
    // The route's name is written out only for a refusal, not for every request let in.
    let refuse = || ProxyError::Unauthorized {
        route: route.to_string(),
        challenge: creds.challenge.clone(),
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(refuse());
    };
    let mark = creds.remembered(value.as_bytes());
    if lock(&creds.verified).contains(&mark) {
        return Ok(());
    }
    let Some((user, password)) = basic_credentials(value) else {
        return Err(refuse());
    };
    static TURNS: Semaphore = Semaphore::const_new(AT_ONCE);
    let Ok(_turn) = TURNS.acquire().await else {
        return Err(refuse());
    };
    let c = creds.clone();
    let ok = tokio::task::spawn_blocking(move || verify(&c, &user, &password))
        .await
        .unwrap_or(false);
    if !ok {
        return Err(refuse());
    }
    let mut verified = lock(&creds.verified);
    if verified.len() >= REMEMBERED {
        verified.clear();
    }
    verified.insert(mark);
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Basic base64(user:password)`, the scheme in any case.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Whether `password` is `user`'s. An unknown user costs a verification too, so timing
/// does not tell which users exist.
fn verify(creds: &Credentials, user: &str, password: &str) -> bool {
    match creds.users.get(user) {
        Some(entry) => matches(entry, password),
        None => {
            if let Some(any) = creds.users.values().next() {
                let _ = matches(any, password);
            }
            false
        }
    }
}

fn matches(entry: &Entry, password: &str) -> bool {
    use crypt3_rs::crypt::{apr1, bcrypt, sha256, sha512};
    let hash = entry.hash.as_str();
    match entry.scheme {
        Scheme::Apr1 => apr1::verify(password, hash),
        Scheme::Bcrypt => bcrypt::verify(password, hash),
        Scheme::Sha256Crypt => sha256::verify(password, hash),
        Scheme::Sha512Crypt => sha512::verify(password, hash),
        Scheme::Sha1 => {
            use sha1::Digest;
            let digest = sha1::Sha1::digest(password.as_bytes());
            let encoded = base64::engine::general_purpose::STANDARD.encode(digest);
            let stored = hash.trim_start_matches("{SHA}");
            encoded.as_bytes().ct_eq(stored.as_bytes()).into()
        }
        Scheme::Plain => {
            let stored = hash.trim_start_matches("{PLAIN}");
            password.as_bytes().ct_eq(stored.as_bytes()).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by `htpasswd -nbm`, `-nbB -C 5`, `-nbs`, and `mkpasswd -m sha-512`/`sha-256`
    // (the password is the user's name backwards).
    const USERS: &str = "ann:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\n";

    fn creds(text: &str) -> Arc<Credentials> {
        Arc::new(
            Credentials::load(&BasicAuth {
                realm: "Shop \"staff\"".to_owned(),
                users: Htpasswd::Text(text.to_owned()),
            })
            .unwrap(),
        )
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {token}").parse().unwrap(),
        );
        h
    }

    fn hashed(scheme: &str, password: &str) -> String {
        use crypt3_rs::crypt::{apr1, bcrypt, sha256, sha512};
        #[allow(deprecated)]
        match scheme {
            "apr1" => apr1::hash(password).unwrap().to_string(),
            "bcrypt" => bcrypt::hash_with(
                bcrypt::BcryptSetup {
                    cost: Some(5),
                    ..Default::default()
                },
                password,
            )
            .unwrap()
            .to_string(),
            "sha256" => sha256::hash(password).unwrap().to_string(),
            "sha512" => sha512::hash(password).unwrap().to_string(),
            _ => unreachable!(),
        }
    }

    #[tokio::test]
    async fn every_hash_format_lets_its_user_in_and_nobody_else() {
        let text = format!(
            "{USERS}bob:{}\ncid:{}\ndee:{}\neve:{}\nfay:{{SHA}}qUqP5cyxm6YcTAhz05Hph5gvu9M=\ngus:{{PLAIN}}sug\n",
            hashed("bcrypt", "bob-pw"),
            hashed("sha256", "cid-pw"),
            hashed("sha512", "dee-pw"),
            hashed("apr1", "eve-pw"),
        );
        let c = creds(&text);
        // "password" is ann's (the apr1 example of htpasswd's docs); fay's {SHA} is "test".
        for (user, password) in [
            ("ann", "password"),
            ("bob", "bob-pw"),
            ("cid", "cid-pw"),
            ("dee", "dee-pw"),
            ("eve", "eve-pw"),
            ("fay", "test"),
            ("gus", "sug"),
        ] {
            assert!(
                check(&c, &basic(user, password), &"r").await.is_ok(),
                "{user}"
            );
            assert!(
                check(&c, &basic(user, "wrong"), &"r").await.is_err(),
                "{user} wrong"
            );
        }
        assert!(
            check(&c, &basic("zed", "password"), &"r").await.is_err(),
            "unknown user"
        );
        let Err(ProxyError::Unauthorized { challenge, .. }) =
            check(&c, &HeaderMap::new(), &"r").await
        else {
            panic!("no header is 401")
        };
        assert_eq!(challenge, "Basic realm=\"Shop staff\"");
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(check(&c, &bearer, &"r").await.is_err());
    }

    #[tokio::test]
    async fn hashes_written_by_other_tools_verify() {
        // openssl passwd -apr1 / -6 / -5, and bcrypt's reference `$2y$` vector.
        let text = "a:$apr1$abcdefgh$paCto.rW8wn6thJ8b0QQY.\n\
            b:$6$saltsalt$P2FbZ8c7x7uytMcLIQcIRMWgUZ/Uy48LCuKu.tpI/rYWSp/cKtq.zrD46YIij/l62Sx7404pS7pgqM2usW5AU.\n\
            c:$5$saltsalt$ZfIYlhmI00KtX.OgJ3KQOS7qiwyKs.IsgQL6lLgsnnD\n\
            d:$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe\n";
        let c = creds(text);
        for (user, password) in [
            ("a", "secret1"),
            ("b", "secret2"),
            ("c", "secret3"),
            ("d", "password"),
        ] {
            assert!(
                check(&c, &basic(user, password), &"r").await.is_ok(),
                "{user}"
            );
            assert!(
                check(&c, &basic(user, "secret"), &"r").await.is_err(),
                "{user}"
            );
        }
    }

    #[tokio::test]
    async fn a_verified_header_is_remembered_until_the_users_change() {
        let c = creds(&format!("bob:{}\n", hashed("bcrypt", "pw")));
        assert!(check(&c, &basic("bob", "pw"), &"r").await.is_ok());
        assert_eq!(lock(&c.verified).len(), 1);
        assert!(check(&c, &basic("bob", "pw"), &"r").await.is_ok());
        // New users (a reloaded Secret) start with nothing remembered.
        let changed = creds(&format!("bob:{}\n", hashed("bcrypt", "new")));
        assert!(check(&changed, &basic("bob", "pw"), &"r").await.is_err());
        assert!(format!("{changed:?}").contains("1 users"));
    }
}
