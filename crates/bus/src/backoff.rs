//! The one retry schedule of Pulse: capped exponential backoff with jitter,
//! from `backon`. Reconnecting to Redis, filling a subscription from
//! history, connecting a service at start and the heartbeat checker's
//! retries all wait this way, so that many processes retrying at once
//! spread out instead of retrying in step.

use std::time::Duration;

use backon::BackoffBuilder;

/// First delay of the bus's own retries.
const BASE: Duration = Duration::from_millis(50);
/// Longest delay of the bus's own retries (before jitter).
const CAP: Duration = Duration::from_secs(5);

/// Delays from `first`, doubling up to `max`, each with a random jitter
/// that adds up to as much again (so a delay lies between the schedule's
/// value and twice it). Never ends.
pub fn backoff(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    backon::ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(max.max(first))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The delay before the bus's retry number `attempt` (1-based) of
/// [`backoff`] from 50 ms up to 5 s.
pub(crate) fn delay(attempt: u32) -> Duration {
    backoff(BASE, CAP).nth(attempt.clamp(1, 32) as usize - 1).unwrap_or(CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_is_capped_and_jittered() {
        for attempt in 1..40 {
            let d = delay(attempt);
            assert!(d <= CAP * 2, "{attempt}: {d:?}");
        }
        let first = delay(1);
        assert!(first >= BASE && first <= BASE * 2, "{first:?}");
        let delays: Vec<Duration> = backoff(Duration::from_millis(100), Duration::from_secs(1)).take(8).collect();
        assert!(delays[0] >= Duration::from_millis(100) && delays[0] < Duration::from_millis(200), "{delays:?}");
        assert!(delays[7] >= Duration::from_secs(1) && delays[7] < Duration::from_secs(2), "{delays:?}");
        // Jitter: twenty first delays are not all the same.
        let firsts: std::collections::HashSet<Duration> = (0..20).map(|_| delay(1)).collect();
        assert!(firsts.len() > 1, "no jitter: {firsts:?}");
    }
}
