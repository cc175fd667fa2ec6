//! An endpoint's recent latency for the `ewma` balancer: an exponentially weighted moving
//! average of response-head times that decays with age (10 s, as ingress-nginx), so an
//! endpoint that has not answered for a while looks fast again and gets probed.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// How fast old samples lose weight: after this long a sample weighs 1/e.
const DECAY: Duration = Duration::from_secs(10);

/// The average and when it was last touched. Two atomics, no lock: a sample that races
/// another may be lost, which an average over many does not notice.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    /// Microseconds, as f64 bits.
    average: AtomicU64,
    /// Microseconds on the caller's clock.
    touched: AtomicU64,
}

impl Latency {
    /// Adds a sample `rtt` taken at `now` (time since a fixed origin).
    pub(crate) fn observe(&self, rtt: Duration, now: Duration) {
        let decayed = self.decayed(now);
        let weight = self.weight(now);
        let average = decayed + rtt.as_micros() as f64 * (1.0 - weight);
        self.average.store(average.to_bits(), Ordering::Relaxed);
        self.touched
            .store(now.as_micros() as u64, Ordering::Relaxed);
    }

    /// The average at `now`, decayed toward zero since the last sample.
    pub(crate) fn decayed(&self, now: Duration) -> f64 {
        f64::from_bits(self.average.load(Ordering::Relaxed)) * self.weight(now)
    }

    /// The weight the stored average keeps at `now`.
    fn weight(&self, now: Duration) -> f64 {
        let touched = Duration::from_micros(self.touched.load(Ordering::Relaxed));
        let age = now.saturating_sub(touched);
        (-age.as_secs_f64() / DECAY.as_secs_f64()).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_follows_samples_and_fades_with_age() {
        let ms = Duration::from_millis;
        let l = Latency::default();
        assert_eq!(l.decayed(ms(0)), 0.0);
        // Samples 1 s apart: each weighs 1 - e^(-0.1) ≈ 9.5 %.
        for i in 1..=100 {
            l.observe(ms(100), ms(1000 * i));
        }
        let settled = l.decayed(ms(100_000));
        assert!((99_000.0..=100_000.0).contains(&settled), "{settled}");
        // Ten seconds of silence: down to 1/e.
        let faded = l.decayed(ms(110_000));
        assert!(
            (settled / faded - std::f64::consts::E).abs() < 0.01,
            "{faded}"
        );
        // A slow answer pulls the average up at once.
        l.observe(ms(1000), ms(101_000));
        assert!(l.decayed(ms(101_000)) > 150_000.0);
    }
}
