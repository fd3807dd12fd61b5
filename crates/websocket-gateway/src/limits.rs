//! Limits: connections per instance, connection attempts per IP, messages
//! per second per client.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// `rate` per second with bursts of twice that (the generic cell rate
/// algorithm of `governor`); `None` for a rate of 0, which is no limit.
fn quota(rate: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    Some(Quota::per_second(rate).allow_burst(rate.saturating_mul(NonZeroU32::MIN.saturating_add(1))))
}

/// The clock of the limiters: monotonic time since the first use in this
/// process, as a `Nanos` (8 bytes). A connection keeps one limiter for its
/// whole life, so its size is memory per connection; with `std`'s
/// `Instant` (16 bytes) each limiter would be 8 bytes bigger.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcessClock;

impl Clock for ProcessClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        static START: OnceLock<Instant> = OnceLock::new();
        let elapsed = START.get_or_init(Instant::now).elapsed();
        Nanos::from(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }
}

const _: () = assert!(std::mem::size_of::<Nanos>() == 8);

/// The messages one connection may send: `messages_per_sec`, bursts of
/// twice that; 0 means no limit (a limit of `u32::MAX` a second: no
/// `Option` around it, which would cost every connection 8 bytes).
#[derive(Debug)]
pub(crate) struct MessageRate(RateLimiter<NotKeyed, InMemoryState, ProcessClock, NoOpMiddleware<Nanos>>);

impl MessageRate {
    pub(crate) fn new(rate: u32) -> Self {
        let quota = quota(rate).unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX).allow_burst(NonZeroU32::MAX));
        Self(RateLimiter::direct_with_clock(quota, ProcessClock))
    }

    /// Whether one more message may go through now (and counts it).
    pub(crate) fn allow(&self) -> bool {
        self.0.check().is_ok()
    }
}

/// Connection attempts per client IP per second, shared by every worker.
#[derive(Debug)]
pub(crate) struct IpLimiter(
    Option<RateLimiter<IpAddr, DashMapStateStore<IpAddr>, ProcessClock, NoOpMiddleware<Nanos>>>,
);

/// Above this many tracked IPs, those whose limit has fully recovered are
/// forgotten (a recovered limit is the same as none).
const IP_PRUNE_AT: usize = 10_000;

impl IpLimiter {
    pub(crate) fn new(rate: u32) -> Self {
        Self(quota(rate).map(|quota| RateLimiter::dashmap_with_clock(quota, ProcessClock)))
    }

    /// Whether `ip` may open one more connection now. A rate of 0 disables
    /// the limit.
    pub(crate) fn allow(&self, ip: IpAddr) -> bool {
        let Some(limiter) = &self.0 else { return true };
        if limiter.len() >= IP_PRUNE_AT {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).is_ok()
    }
}

/// Counts open connections against `max_connections`.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCount {
    open: AtomicUsize,
    /// Woken when the last connection closes.
    none_open: tokio::sync::Notify,
}

impl ConnectionCount {
    /// A permit if fewer than `max` connections are open; dropping it frees
    /// the slot.
    pub(crate) fn try_acquire(self: &Arc<Self>, max: usize) -> Option<ConnectionPermit> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= max {
                return None;
            }
            match self.open.compare_exchange_weak(open, open + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(ConnectionPermit(self.clone())),
                Err(current) => open = current,
            }
        }
    }

    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Completes once no connection is open.
    pub(crate) async fn none_open(&self) {
        loop {
            let notified = self.none_open.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One open connection; see [`ConnectionCount::try_acquire`].
#[derive(Debug)]
pub(crate) struct ConnectionPermit(Arc<ConnectionCount>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_open.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_gets_its_burst_then_is_refused() {
        let rate = MessageRate::new(2);
        assert!((0..4).all(|_| rate.allow()), "a burst of twice the rate");
        assert!(!rate.allow());
        let unlimited = MessageRate::new(0);
        assert!((0..1000).all(|_| unlimited.allow()), "0 is no limit");
    }

    #[test]
    fn ip_limiter_is_per_ip() {
        let limiter = IpLimiter::new(1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.allow(a) && limiter.allow(a));
        assert!(!limiter.allow(a));
        assert!(limiter.allow(b));
        assert!((0..100).all(|_| IpLimiter::new(0).allow(a)), "0 is no limit");
    }

    #[tokio::test]
    async fn none_open_completes_when_the_last_permit_is_dropped() {
        let count = Arc::new(ConnectionCount::default());
        count.none_open().await;
        let (a, b) = (count.try_acquire(2).unwrap(), count.try_acquire(2).unwrap());
        let waiter = tokio::spawn({
            let count = count.clone();
            async move { count.none_open().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is still open");
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await.unwrap().unwrap();
    }

    #[test]
    fn permits_count_connections() {
        let count = Arc::new(ConnectionCount::default());
        let first = count.try_acquire(1).unwrap();
        assert!(count.try_acquire(1).is_none());
        drop(first);
        assert!(count.try_acquire(1).is_some());
        assert_eq!(count.open(), 0);
    }
}
