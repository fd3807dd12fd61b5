//! Limits: connections per instance, connection attempts per IP, messages
//! per second per client.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    tokens: f32,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn full(burst: u32) -> Self {
        Self { tokens: burst as f32, last: Instant::now() }
    }

    /// Takes a token if one is there.
    pub(crate) fn try_take(&mut self, rate: u32, burst: u32) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f32() * rate as f32;
        self.tokens = (self.tokens + refill).min(burst as f32);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Connection attempts per client IP per second, shared by every worker.
#[derive(Debug)]
pub(crate) struct IpLimiter {
    rate: u32,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

/// Above this many tracked IPs, idle ones are forgotten (a full bucket is
/// the same as no bucket).
const IP_PRUNE_AT: usize = 10_000;

impl IpLimiter {
    pub(crate) fn new(rate: u32) -> Self {
        Self { rate, buckets: Mutex::default() }
    }

    /// Whether `ip` may open one more connection now. A rate of 0 disables
    /// the limit.
    pub(crate) fn allow(&self, ip: IpAddr) -> bool {
        if self.rate == 0 {
            return true;
        }
        let burst = self.rate.saturating_mul(2);
        let mut buckets = self.buckets.lock();
        if buckets.len() >= IP_PRUNE_AT {
            let idle = Duration::from_secs_f32(burst as f32 / self.rate as f32);
            buckets.retain(|_, bucket| bucket.last.elapsed() < idle);
        }
        buckets.entry(ip).or_insert_with(|| TokenBucket::full(burst)).try_take(self.rate, burst)
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
    fn bucket_allows_the_burst_then_refuses() {
        let mut bucket = TokenBucket::full(3);
        assert!((0..3).all(|_| bucket.try_take(1, 3)));
        assert!(!bucket.try_take(1, 3));
    }

    #[test]
    fn ip_limiter_is_per_ip() {
        let limiter = IpLimiter::new(1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.allow(a) && limiter.allow(a));
        assert!(!limiter.allow(a));
        assert!(limiter.allow(b));
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
