//! Request rates on the ingest URLs: one token bucket per webhook and one per source address.
//!
//! A sender that retries in a tight loop, or a flood aimed at one URL, is answered 429 with
//! `Retry-After` long before it slows down the other webhooks or the calls.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The configured rates, in requests a second; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub per_action: u32,
    pub per_source: u32,
    /// Requests a second from one address that name an unknown webhook URL or runtime token:
    /// each costs a lookup, so beyond this the address is refused before looking.
    pub failed_lookups: u32,
    /// A bucket holds this many seconds' worth of requests: the burst a sender may send at once.
    pub burst_secs: u32,
}

/// Which limit a request ran into, and when a retry can pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: Limit,
    pub per_sec: u32,
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Action,
    Source,
    /// Unknown URLs or tokens from one address.
    Lookups,
}

impl Exceeded {
    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }

    pub fn describe(&self) -> String {
        let whose = match self.limit {
            Limit::Action => "this webhook's limit",
            Limit::Source => "the limit for your address",
            Limit::Lookups => {
                "the limit for unknown URLs (webhook or voice platform) and tokens from your address"
            }
        };
        format!(
            "{whose} of {} requests a second is used up; retry after {} s; nothing was stored",
            self.per_sec,
            self.retry_after_secs()
        )
    }
}

/// Both limits of the ingest URLs.
#[derive(Debug)]
pub struct IngestLimits {
    per_action: Buckets<i64>,
    per_source: Buckets<IpAddr>,
    failed_lookups: Buckets<IpAddr>,
}

impl IngestLimits {
    pub fn new(rates: Rates) -> Self {
        Self {
            per_action: Buckets::new(rates.per_action, rates.burst_secs),
            per_source: Buckets::new(rates.per_source, rates.burst_secs),
            failed_lookups: Buckets::new(rates.failed_lookups, rates.burst_secs),
        }
    }

    /// Whether the address may still have an unknown URL or token looked up: checked before
    /// the lookup, and used up only by lookups that find nothing ([`Self::lookup_failed`]).
    pub fn lookup(&self, ip: IpAddr) -> Result<(), Exceeded> {
        self.failed_lookups
            .peek(ip, Instant::now())
            .map_err(|retry_after| Exceeded {
                limit: Limit::Lookups,
                per_sec: self.failed_lookups.rate,
                retry_after,
            })
    }

    /// A lookup from `ip` found nothing.
    pub fn lookup_failed(&self, ip: IpAddr) {
        let _ = self.failed_lookups.take(ip, Instant::now());
    }

    /// Takes one request from the source's bucket: checked before the key, so that a flood
    /// of unauthenticated requests is limited by where it comes from.
    pub fn source(&self, ip: IpAddr) -> Result<(), Exceeded> {
        self.per_source
            .take(ip, Instant::now())
            .map_err(|retry_after| Exceeded {
                limit: Limit::Source,
                per_sec: self.per_source.rate,
                retry_after,
            })
    }

    /// Takes one request from the webhook's bucket: checked after the key, so that requests
    /// without the key cannot use up the sender's allowance.
    pub fn action(&self, action_id: i64) -> Result<(), Exceeded> {
        self.per_action
            .take(action_id, Instant::now())
            .map_err(|retry_after| Exceeded {
                limit: Limit::Action,
                per_sec: self.per_action.rate,
                retry_after,
            })
    }
}

/// Buckets kept for at least this many keys before full ones are forgotten.
const KEEP: usize = 4096;

#[derive(Debug)]
struct Buckets<K> {
    rate: u32,
    capacity: f64,
    map: Mutex<Sweeping<K>>,
}

#[derive(Debug)]
struct Sweeping<K> {
    buckets: HashMap<K, Bucket>,
    /// Size at which full buckets (indistinguishable from new ones) are dropped.
    sweep_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq> Buckets<K> {
    fn new(rate: u32, burst_secs: u32) -> Self {
        Self {
            rate,
            capacity: f64::from(rate) * f64::from(burst_secs.max(1)),
            map: Mutex::new(Sweeping {
                buckets: HashMap::new(),
                sweep_at: KEEP,
            }),
        }
    }

    /// Whether a token is there, without taking it.
    fn peek(&self, key: K, now: Instant) -> Result<(), Duration> {
        if self.rate == 0 {
            return Ok(());
        }
        let rate = f64::from(self.rate);
        let map = self.map.lock().expect("rate lock");
        let Some(bucket) = map.buckets.get(&key) else {
            return Ok(());
        };
        let tokens = bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate;
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / rate))
        }
    }

    /// One token, or how long until one is there.
    fn take(&self, key: K, now: Instant) -> Result<(), Duration> {
        if self.rate == 0 {
            return Ok(());
        }
        let rate = f64::from(self.rate);
        let capacity = self.capacity;
        let mut map = self.map.lock().expect("rate lock");
        if map.buckets.len() >= map.sweep_at {
            map.buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < capacity);
            map.sweep_at = (map.buckets.len() * 2).max(KEEP);
        }
        let bucket = map.buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refilled = bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = refilled.min(capacity);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_until_it_refills() {
        let b = Buckets::new(10, 2);
        let t0 = Instant::now();
        for _ in 0..20 {
            assert!(b.take(1, t0).is_ok());
        }
        let wait = b.take(1, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        assert!(b.take(2, t0).is_ok(), "another key has its own bucket");
        assert!(b.take(1, t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(1, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn peeking_takes_nothing() {
        let b = Buckets::new(1, 1);
        let t0 = Instant::now();
        assert!(b.peek(1, t0).is_ok());
        assert!(b.peek(1, t0).is_ok());
        b.take(1, t0).unwrap();
        assert!(b.peek(1, t0).is_err());
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let b = Buckets::new(0, 2);
        let t0 = Instant::now();
        assert!((0..100_000).all(|_| b.take(1, t0).is_ok()));
    }

    #[test]
    fn full_buckets_are_forgotten_once_there_are_many() {
        let b = Buckets::new(1, 1);
        let t0 = Instant::now();
        for k in 0..KEEP as u32 {
            b.take(k, t0).unwrap();
        }
        // Much later every bucket is full again: the sweep drops them all.
        b.take(u32::MAX, t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(b.map.lock().unwrap().buckets.len(), 1);
    }
}
