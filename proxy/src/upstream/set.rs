//! One consistent set of a service's endpoints, with what balancing derives from it: the
//! consistent-hash ring and the persistent-affinity cookie value of each endpoint.

use std::{fmt, hash::BuildHasher, ops::Deref, sync::Arc};

use siphasher::sip128::{Hasher128, SipHasher13};

use super::{ring::Ring, Endpoint};

/// The endpoints one request works with, swapped whole when discovery publishes.
#[derive(Debug)]
pub struct EndpointSet {
    list: Vec<Arc<Endpoint>>,
    ring: Option<Ring>,
    /// Each endpoint's persistent cookie value (empty without persistent affinity).
    tokens: Vec<Token>,
}

impl EndpointSet {
    pub(crate) fn new(list: Vec<Arc<Endpoint>>, ring: bool, tokens: Option<&TokenKey>) -> Self {
        let ring = ring.then(|| Ring::new(list.iter().map(|e| e.addr())));
        let tokens = tokens.map_or_else(Vec::new, |key| {
            list.iter().map(|e| key.token(e.addr())).collect()
        });
        EndpointSet { list, ring, tokens }
    }

    pub(crate) fn ring(&self) -> Option<&Ring> {
        self.ring.as_ref()
    }

    /// The endpoint whose persistent cookie value is `token`.
    pub(crate) fn by_token(&self, token: Token) -> Option<usize> {
        self.tokens.iter().position(|t| *t == token)
    }

    /// The persistent cookie value of endpoint `i`.
    pub(crate) fn token(&self, i: usize) -> Option<Token> {
        self.tokens.get(i).copied()
    }
}

impl Deref for EndpointSet {
    type Target = [Arc<Endpoint>];

    fn deref(&self) -> &[Arc<Endpoint>] {
        &self.list
    }
}

/// A persistent-affinity cookie value: a keyed hash (SipHash) of the endpoint's address,
/// which names the endpoint to whoever holds the key and reveals nothing of its address
/// to the client who carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token(u128);

impl Token {
    /// Reads a cookie value; anything else than 32 hex digits is no token.
    pub(crate) fn parse(text: &str) -> Option<Token> {
        (text.len() == 32)
            .then(|| u128::from_str_radix(text, 16).ok())
            .flatten()
            .map(Token)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The key of a service's persistent cookie values.
#[derive(Clone, Debug)]
pub(crate) struct TokenKey(u64, u64);

impl TokenKey {
    /// From the configured secret, so replicas agree; without one, random for this process
    /// (the same across reloads, so sessions survive them).
    pub(crate) fn new(secret: Option<&str>) -> TokenKey {
        static PROCESS: std::sync::OnceLock<TokenKey> = std::sync::OnceLock::new();
        match secret {
            Some(secret) => {
                let h = SipHasher13::new().hash(secret.as_bytes());
                TokenKey(h.h1, h.h2)
            }
            None => PROCESS
                .get_or_init(|| {
                    // std seeds each RandomState from the operating system's randomness.
                    let random = || std::collections::hash_map::RandomState::new().hash_one(0u8);
                    TokenKey(random(), random())
                })
                .clone(),
        }
    }

    fn token(&self, addr: std::net::SocketAddr) -> Token {
        let mut hasher = SipHasher13::new_with_keys(self.0, self.1);
        std::hash::Hash::hash(&addr, &mut hasher);
        Token(hasher.finish128().as_u128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_endpoints_under_one_key_only_and_hide_the_address() {
        let addrs: Vec<std::net::SocketAddr> = vec![
            "10.1.2.3:8080".parse().unwrap(),
            "10.1.2.4:8080".parse().unwrap(),
        ];
        let list: Vec<_> = addrs.iter().map(|a| Arc::new(Endpoint::new(*a))).collect();
        let key = TokenKey::new(Some("shared secret"));
        let set = EndpointSet::new(list.clone(), false, Some(&key));
        let token = set.token(1).unwrap();
        assert_eq!(set.by_token(token), Some(1));
        let text = token.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(Token::parse(&text), Some(token));
        assert!(!text.contains("10.1.2.4") && !text.contains("0a010204"));
        // Another replica with the same secret agrees; another key does not.
        let again = EndpointSet::new(
            list.clone(),
            false,
            Some(&TokenKey::new(Some("shared secret"))),
        );
        assert_eq!(again.by_token(token), Some(1));
        let other = EndpointSet::new(list.clone(), false, Some(&TokenKey::new(None)));
        assert_eq!(other.by_token(token), None);
        // Without a secret, one key for the process: a reload keeps the sessions.
        let reloaded = EndpointSet::new(list, false, Some(&TokenKey::new(None)));
        assert_eq!(reloaded.token(0), other.token(0));
        assert_eq!(Token::parse("10.1.2.4:8080"), None);
    }
}
