//! The reconnect policy and its backoff schedule, computed without a clock.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// What the client does when its connection is lost.
///
/// ```
/// use std::time::Duration;
/// use tokio_webwire::client::{Backoff, Reconnect};
///
/// let policy = Reconnect::Backoff(
///     Backoff::default().min(Duration::from_millis(200)).max(Duration::from_secs(10)).max_attempts(20),
/// );
/// assert!(policy.is_enabled());
/// assert!(!Reconnect::Off.is_enabled());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconnect {
    /// Stay disconnected. Pending requests fail with
    /// [`RequestError::Disconnected`](crate::RequestError::Disconnected), and so does every
    /// later request or signal.
    Off,
    /// Dial again after exponentially growing, jittered delays. Requests and signals issued
    /// while disconnected wait for the new connection, each up to its own timeout.
    Backoff(Backoff),
}

impl Default for Reconnect {
    /// Reconnect with [`Backoff::default`], as both reference clients do.
    fn default() -> Self {
        Reconnect::Backoff(Backoff::default())
    }
}

impl Reconnect {
    /// Whether the client dials again after losing its connection.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        matches!(self, Reconnect::Backoff(_))
    }
}

/// Exponential backoff with jitter between reconnection attempts.
///
/// Attempt `n` (counted from 0 after each lost connection) waits `min × 2ⁿ` plus a random
/// share of up to that much again, never more than `max`: attempt 0 waits between `min`
/// and `2 × min`, attempt 1 between `2 × min` and `4 × min`, and so on. The jitter spreads
/// the reconnections of many clients after a server restart. Defaults: `min` 500 ms, `max`
/// 30 s, unlimited attempts.
///
/// No delay is shorter than [`Backoff::FLOOR`] (10 ms): a `min` or `max` below it (zero
/// included) counts as the floor. A refused dial fails at once, so without a floor a zero
/// `min` (which doubles to zero for ever) would dial, and log a warning, in a busy loop;
/// with it a client dials at most 100 times a second, and fewer as the delays double.
///
/// ```
/// use std::time::Duration;
/// use tokio_webwire::client::Backoff;
///
/// let backoff = Backoff::default().min(Duration::from_secs(1)).max(Duration::from_secs(5));
/// // `jitter` is a number in [0, 1); the client draws it at random.
/// assert_eq!(backoff.delay(0, 0.0), Duration::from_secs(1));
/// assert_eq!(backoff.delay(1, 0.5), Duration::from_secs(3));
/// assert_eq!(backoff.delay(10, 0.9), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The shortest delay between two attempts, whatever `min` and `max` say.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_webwire::client::Backoff;
    ///
    /// let eager = Backoff::default().min(Duration::ZERO);
    /// assert_eq!(eager.delay(0, 0.0), Backoff::FLOOR);
    /// assert_eq!(eager.delay(1, 0.0), 2 * Backoff::FLOOR);
    /// ```
    pub const FLOOR: Duration = Duration::from_millis(10);

    /// The delay before the first attempt, and the unit the later ones double from
    /// (raised to [`Backoff::FLOOR`] if below it).
    #[must_use]
    pub fn min(mut self, min: Duration) -> Self {
        self.min = min.max(Self::FLOOR);
        self
    }

    /// The longest delay between two attempts (raised to [`Backoff::FLOOR`] if below it).
    #[must_use]
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max.max(Self::FLOOR);
        self
    }

    /// Give up after this many failed attempts in a row; the client then stays
    /// disconnected as with [`Reconnect::Off`]. Unlimited by default.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// The number of attempts after which the client gives up, if limited.
    #[must_use]
    pub fn attempts_limit(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The delay before attempt `attempt` (from 0), for a `jitter` in `[0, 1)`: a pure
    /// function, so the schedule can be checked without a clock.
    ///
    /// `min × 2^attempt × (1 + jitter)`, capped at `max` (and never below `min` when
    /// `min ≤ max`, nor below [`Backoff::FLOOR`]). Values of `jitter` outside `[0, 1]` are
    /// clamped.
    #[must_use]
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        // 2^attempt saturates long before it matters: the cap applies from then on.
        let base = self
            .min
            .saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
            .min(self.max);
        let extra = Duration::try_from_secs_f64(base.as_secs_f64() * jitter).unwrap_or(base);
        base.saturating_add(extra).min(self.max)
    }

    /// Whether attempt `attempt` (from 0) may still be made.
    pub(crate) fn allows(&self, attempt: u32) -> bool {
        self.max_attempts.is_none_or(|limit| attempt < limit)
    }
}

/// A number in `[0, 1)` for the jitter. `RandomState` is seeded from the operating
/// system's randomness once per thread and advanced for each instance, which is plenty to
/// spread clients apart and spares a dependency on `rand`.
pub(crate) fn random_jitter() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    // The top 53 bits make an evenly spread `f64` in [0, 1).
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn schedule_doubles_from_min_and_caps_at_max() {
        let backoff = Backoff::default().min(ms(100)).max(ms(1_000));
        let without_jitter: Vec<_> = (0..6).map(|n| backoff.delay(n, 0.0)).collect();
        assert_eq!(
            without_jitter,
            [ms(100), ms(200), ms(400), ms(800), ms(1_000), ms(1_000)]
        );
        let most_jitter: Vec<_> = (0..4).map(|n| backoff.delay(n, 0.999)).collect();
        assert_eq!(most_jitter[0].as_micros(), 199_900);
        assert_eq!(most_jitter[2].as_micros(), 799_600);
        assert_eq!(most_jitter[3], ms(1_000));
    }

    #[test]
    fn delay_stays_within_its_band_for_every_jitter() {
        let backoff = Backoff::default().min(ms(50)).max(ms(60_000));
        for attempt in 0..12 {
            let base = ms(50) * 2u32.pow(attempt);
            for step in 0..=10 {
                let d = backoff.delay(attempt, f64::from(step) / 10.0);
                assert!(d >= base.min(ms(60_000)), "attempt {attempt}: {d:?}");
                assert!(d <= (base * 2).min(ms(60_000)), "attempt {attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn huge_attempts_and_odd_jitter_do_not_panic() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(u32::MAX, 0.5), Duration::from_secs(30));
        assert_eq!(backoff.delay(0, f64::NAN), ms(500));
        assert_eq!(backoff.delay(0, -3.0), ms(500));
        assert_eq!(backoff.delay(0, 7.0), ms(1_000));
    }

    #[test]
    fn a_zero_minimum_or_maximum_cannot_make_a_hot_loop() {
        // A refused dial fails at once: with no delay the client would dial (and warn)
        // in a loop. Every delay is at least the 10 ms floor, whatever the settings.
        let zero = Duration::ZERO;
        for backoff in [
            Backoff::default().min(zero),
            Backoff::default().max(zero),
            Backoff::default().min(zero).max(zero),
            Backoff::default().min(Duration::from_nanos(1)).max(ms(3)),
        ] {
            for attempt in [0, 1, 2, 10, 40, u32::MAX] {
                for jitter in [0.0, 0.5, 0.999] {
                    let delay = backoff.delay(attempt, jitter);
                    assert!(delay >= ms(10), "{backoff:?} attempt {attempt}: {delay:?}");
                }
            }
        }
        // Still doubling from the floor, and capped by a maximum above it.
        let from_zero = Backoff::default().min(zero).max(ms(50));
        let schedule: Vec<_> = (0..4).map(|n| from_zero.delay(n, 0.0)).collect();
        assert_eq!(schedule, [ms(10), ms(20), ms(40), ms(50)]);
    }

    #[test]
    fn attempts_limit() {
        let limited = Backoff::default().max_attempts(2);
        assert!(limited.allows(0) && limited.allows(1) && !limited.allows(2));
        assert!(Backoff::default().allows(u32::MAX - 1));
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let draws: Vec<f64> = (0..64).map(|_| random_jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(draws.iter().any(|j| *j != draws[0]));
    }
}
