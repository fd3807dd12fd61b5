//! Capped exponential backoff with full jitter, for reconnecting to Redis.

use std::time::Duration;

use rand::Rng;

const BASE: Duration = Duration::from_millis(50);
const CAP: Duration = Duration::from_secs(5);

/// The delay before retry number `attempt` (1-based): a random duration up
/// to `min(CAP, BASE * 2^attempt)`, so that many processes reconnecting at
/// once spread out.
pub(crate) fn delay(attempt: u32) -> Duration {
    let ceiling = BASE.saturating_mul(1u32 << attempt.min(16)).min(CAP);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(millis / 10..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped() {
        for attempt in 1..40 {
            let d = delay(attempt);
            assert!(d <= CAP, "{attempt}: {d:?}");
        }
        assert!(delay(1) <= Duration::from_millis(100));
    }
}
