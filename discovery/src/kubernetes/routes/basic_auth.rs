//! Basic authentication's users from the Secret an Ingress names: `auth-file` (an htpasswd
//! text under the key `auth`) or `auth-map` (a key per user, its hash the value). A Secret
//! that is missing or unreadable makes the Ingress's paths answer 503: without its users a
//! protected path must not be served open.

use std::collections::BTreeMap;

use gatehouse_config::{htpasswd, BasicAuth, Htpasswd, Route};
use k8s_openapi::api::core::v1::Secret;

use crate::kubernetes::ingress::BasicAuthRef;

/// A Secret's data, by key.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// The data of `secret`.
pub fn secret_data(secret: &Secret) -> SecretData {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Gives `route` the users `auth` names, read with `read(namespace, name)`; or makes it
/// answer 503 saying why (in `problems` too), when they cannot be read. `source` names the
/// Ingress.
pub(super) fn attach(
    route: &mut Route,
    auth: &BasicAuthRef,
    read: &dyn Fn(&str, &str) -> Option<SecretData>,
    source: &str,
    problems: &mut Vec<String>,
) {
    match users(auth, read) {
        Ok(text) => {
            route.basic_auth = Some(BasicAuth {
                realm: auth.realm.clone(),
                users: Htpasswd::Text(text),
            })
        }
        Err(why) => {
            let why = format!(
                "Ingress {source}: auth-secret {}/{}: {why}; its paths answer 503 until the Secret holds its users",
                auth.namespace, auth.name
            );
            problems.push(why.clone());
            route.unavailable.get_or_insert(why);
        }
    }
}

fn users(
    auth: &BasicAuthRef,
    read: &dyn Fn(&str, &str) -> Option<SecretData>,
) -> Result<String, String> {
    let data = read(&auth.namespace, &auth.name)
        .ok_or("the Secret does not exist (or is not of type Opaque)")?;
    let text = if auth.map {
        let mut lines = String::new();
        for (user, hash) in &data {
            let hash = std::str::from_utf8(hash)
                .map_err(|_| format!("the hash of `{user}` is not text"))?;
            lines.push_str(&format!("{user}:{}\n", hash.trim()));
        }
        lines
    } else {
        let auth = data.get("auth").ok_or("it has no key `auth` (auth-file needs the htpasswd text there; auth-secret-type: auth-map reads a key per user)")?;
        String::from_utf8(auth.clone()).map_err(|_| "`auth` is not text".to_owned())?
    };
    htpasswd::parse(&text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(map: bool) -> BasicAuthRef {
        BasicAuthRef {
            namespace: "shop".into(),
            name: "users".into(),
            map,
            realm: "Staff".into(),
        }
    }

    fn data(pairs: &[(&str, &str)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn auth_file_and_auth_map_read_their_users_and_a_bad_secret_fails_closed() {
        let file = data(&[("auth", "ann:$apr1$abcdefgh$paCto.rW8wn6thJ8b0QQY.\n")]);
        assert!(users(&reference(false), &|_, _| Some(file.clone()))
            .unwrap()
            .starts_with("ann:$apr1$"));
        let map = data(&[
            ("ann", "$apr1$abcdefgh$paCto.rW8wn6thJ8b0QQY."),
            ("bob", "{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M="),
        ]);
        let text = users(&reference(true), &|_, _| Some(map.clone())).unwrap();
        assert_eq!(text.lines().count(), 2);
        for (secret, map, says) in [
            (None, false, "does not exist"),
            (Some(data(&[("users", "x")])), false, "no key `auth`"),
            (
                Some(data(&[("auth", "ann:plain-text")])),
                false,
                "hash format",
            ),
        ] {
            let e = users(&reference(map), &|_, _| secret.clone()).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
