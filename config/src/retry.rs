//! When a request goes to another endpoint after its first fails (nginx's
//! `proxy_next_upstream`, `_tries`, `_timeout`): the conditions, how many tries, how long.

use std::time::Duration;

/// A route's retry policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Retry {
    /// A connection could not be made, or broke before the response head.
    pub on_error: bool,
    /// A connect, or the response head, took longer than its timeout.
    pub on_timeout: bool,
    /// The upstream answered with one of these.
    pub on_status: RetryStatuses,
    /// POST, PATCH and LOCK are retried too (never once their body was sent).
    pub non_idempotent: bool,
    /// Tries in all, the first included; 0 means as many as there are endpoints.
    pub tries: u32,
    /// No retry starts later than this after the first try; `None`: no bound.
    pub within: Option<Duration>,
}

impl Default for Retry {
    /// ingress-nginx's defaults: `error timeout`, 3 tries, no time bound.
    fn default() -> Self {
        Retry {
            on_error: true,
            on_timeout: true,
            on_status: RetryStatuses::default(),
            non_idempotent: false,
            tries: 3,
            within: None,
        }
    }
}

/// The upstream statuses a retry may be made on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RetryStatuses(u8);

impl RetryStatuses {
    /// The statuses nginx can retry on (`http_500` ... `http_429`).
    pub const CODES: [u16; 7] = [500, 502, 503, 504, 403, 404, 429];

    pub fn contains(self, status: u16) -> bool {
        Self::bit(status).is_some_and(|b| self.0 & b != 0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn bit(status: u16) -> Option<u8> {
        Self::CODES
            .iter()
            .position(|c| *c == status)
            .map(|i| 1 << i)
    }
}

impl Retry {
    /// Reads nginx's `proxy_next_upstream` list (`error timeout http_502`, or `off`) onto
    /// this policy's conditions.
    pub fn with_conditions(mut self, text: &str) -> Result<Retry, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            return Err("an empty list; write e.g. `error timeout http_502`, or `off`".to_owned());
        }
        (self.on_error, self.on_timeout) = (false, false);
        self.on_status = RetryStatuses::default();
        self.non_idempotent = false;
        for word in &words {
            match *word {
                "off" if words.len() == 1 => {}
                "off" => return Err("`off` cannot be combined with other conditions".to_owned()),
                "error" => self.on_error = true,
                "timeout" => self.on_timeout = true,
                "non_idempotent" => self.non_idempotent = true,
                // nginx's `invalid_header` is a broken head: an error here.
                "invalid_header" => self.on_error = true,
                w => {
                    let bit = w
                        .strip_prefix("http_")
                        .and_then(|c| c.parse::<u16>().ok())
                        .and_then(RetryStatuses::bit)
                        .ok_or_else(|| {
                            format!("`{w}` is not one of error, timeout, invalid_header, http_500, http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent, off")
                        })?;
                    self.on_status.0 |= bit;
                }
            }
        }
        Ok(self)
    }

    /// Whether any condition can retry at all.
    pub fn is_off(&self) -> bool {
        !self.on_error && !self.on_timeout && self.on_status.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_read_as_nginx_writes_them() {
        let r = Retry::default()
            .with_conditions("error http_502 http_429 non_idempotent")
            .unwrap();
        assert!(r.on_error && !r.on_timeout && r.non_idempotent);
        assert!(r.on_status.contains(502) && r.on_status.contains(429));
        assert!(!r.on_status.contains(503) && !r.on_status.contains(200));
        assert!(Retry::default().with_conditions("off").unwrap().is_off());
        assert!(!Retry::default().is_off());
        for (text, says) in [
            ("", "empty"),
            ("off error", "cannot be combined"),
            ("http_501", "`http_501` is not one of"),
            ("errors", "`errors` is not one of"),
        ] {
            let e = Retry::default().with_conditions(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
