//! The tries of one request (nginx's `proxy_next_upstream`): which endpoints failed it,
//! and whether a failure of some kind may send it to another.

use gatehouse_config::Retry;
use tokio::time::Instant;

/// Why a try failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection, or it broke before the response head.
    Error,
    /// The connect or the response head took too long.
    Timeout,
    /// The upstream answered with this status.
    Status(u16),
}

impl Failure {
    /// As the retry metric labels it: `error`, `timeout`, `http_503`...
    pub(crate) fn label(self) -> &'static str {
        match self {
            Failure::Error => "error",
            Failure::Timeout => "timeout",
            Failure::Status(500) => "http_500",
            Failure::Status(502) => "http_502",
            Failure::Status(503) => "http_503",
            Failure::Status(504) => "http_504",
            Failure::Status(403) => "http_403",
            Failure::Status(404) => "http_404",
            Failure::Status(429) => "http_429",
            Failure::Status(_) => "http_other",
        }
    }
}

/// The tries of one request.
pub(crate) struct Attempts {
    policy: Retry,
    /// Endpoints (indexes of the request's set) that failed it, in order.
    failed: Vec<usize>,
    /// Tries in all: the policy's, and never more than there are endpoints (each is
    /// tried at most once).
    max_tries: usize,
    started: Instant,
}

impl Attempts {
    /// The first try, under `policy`, over a set of `endpoints`.
    pub(crate) fn new(policy: Retry, endpoints: usize) -> Self {
        let max_tries = match policy.tries {
            0 => endpoints,
            n => (n as usize).min(endpoints),
        };
        Attempts {
            policy,
            failed: Vec::new(),
            max_tries,
            started: Instant::now(),
        }
    }

    /// The endpoints that failed the request so far.
    pub(crate) fn tried(&self) -> &[usize] {
        &self.failed
    }

    /// Endpoint `idx` failed the request. Whether the policy sends it to another for this
    /// kind of failure, with tries, time and an untried endpoint left; the caller still
    /// needs a request it can send again.
    pub(crate) fn failed(&mut self, idx: usize, why: Failure) -> bool {
        self.failed.push(idx);
        let p = &self.policy;
        let condition = match why {
            Failure::Error => p.on_error,
            Failure::Timeout => p.on_timeout,
            Failure::Status(code) => p.on_status.contains(code),
        };
        condition
            && self.failed.len() < self.max_tries
            && p.within
                .is_none_or(|within| self.started.elapsed() < within)
    }

    /// Whether an answer with `status` is a failure to retry.
    pub(crate) fn retries_status(&self, status: u16) -> bool {
        self.policy.on_status.contains(status)
    }

    /// Whether a failure after the request was sent could be retried at all: then a
    /// bodiless request is worth a copy.
    pub(crate) fn may_resend(&self) -> bool {
        !self.policy.is_off() && self.max_tries > 1
    }

    /// Non-idempotent requests (POST, PATCH, LOCK) may be sent again.
    pub(crate) fn non_idempotent(&self) -> bool {
        self.policy.non_idempotent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_failure_retries_only_on_its_condition_with_tries_and_time_left() {
        let policy = Retry::default().with_conditions("error http_503").unwrap();
        let mut a = Attempts::new(policy, 10);
        assert!(
            !a.failed(0, Failure::Timeout),
            "timeout is not a condition here"
        );
        assert!(a.failed(1, Failure::Status(503)));
        assert!(!a.failed(2, Failure::Error), "three tries are all");
        assert_eq!(a.tried(), [0, 1, 2]);

        let unbounded = Retry {
            tries: 0,
            ..Retry::default()
        };
        let mut a = Attempts::new(unbounded, 4);
        assert!(
            a.failed(0, Failure::Error)
                && a.failed(1, Failure::Error)
                && a.failed(2, Failure::Error)
        );
        assert!(
            !a.failed(3, Failure::Error),
            "0 tries: as many as there are endpoints"
        );

        let off = Retry::default().with_conditions("off").unwrap();
        let mut a = Attempts::new(off, 4);
        assert!(!a.may_resend());
        assert!(!a.failed(0, Failure::Error));

        // Each endpoint is tried once: with two, one retry whatever the tries.
        let mut a = Attempts::new(
            Retry {
                tries: 5,
                ..Retry::default()
            },
            2,
        );
        assert!(a.failed(0, Failure::Error));
        assert!(!a.failed(1, Failure::Error));
        assert!(!Attempts::new(Retry::default(), 1).may_resend());
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_starts_past_the_time_bound() {
        let policy = Retry {
            within: Some(Duration::from_secs(2)),
            ..Retry::default()
        };
        let mut a = Attempts::new(policy, 5);
        assert!(a.failed(0, Failure::Error));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!a.failed(1, Failure::Error));
    }
}
