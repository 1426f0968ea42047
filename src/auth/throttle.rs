//! Slows down repeated failed sign-ins, per account and per address.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before waits begin.
const FREE_FAILURES: u32 = 5;
/// Longest wait imposed.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// Failures older than this are forgotten.
const MEMORY: Duration = Duration::from_secs(900);
/// Most keys remembered (older ones are dropped first), so that a flood cannot grow it.
const MAX_KEYS: usize = 100_000;

#[derive(Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
}

/// Failed attempts by key (`account:<email>`, `address:<ip>`).
#[derive(Default)]
pub struct Throttle {
    records: Mutex<HashMap<String, Record>>,
}

impl Throttle {
    /// How long `key` must still wait before trying again, if at all.
    pub fn wait(&self, key: &str) -> Option<Duration> {
        let records = self.records.lock().expect("throttle lock");
        let r = records.get(key)?;
        if r.failures < FREE_FAILURES || r.last.elapsed() > MEMORY {
            return None;
        }
        let exp = (r.failures - FREE_FAILURES).min(16);
        let wait = Duration::from_secs(1u64 << exp).min(MAX_WAIT);
        wait.checked_sub(r.last.elapsed())
    }

    pub fn failed(&self, key: &str) {
        let mut records = self.records.lock().expect("throttle lock");
        if records.len() >= MAX_KEYS {
            records.retain(|_, r| r.last.elapsed() < MEMORY);
        }
        let r = records.entry(key.to_owned()).or_insert(Record {
            failures: 0,
            last: Instant::now(),
        });
        if r.last.elapsed() > MEMORY {
            r.failures = 0;
        }
        r.failures += 1;
        r.last = Instant::now();
    }

    pub fn succeeded(&self, key: &str) {
        self.records.lock().expect("throttle lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_begin_after_the_free_failures_and_grow() {
        let t = Throttle::default();
        for _ in 0..FREE_FAILURES - 1 {
            t.failed("account:a");
        }
        assert!(t.wait("account:a").is_none());
        t.failed("account:a");
        let first = t.wait("account:a").expect("now waiting");
        t.failed("account:a");
        let second = t.wait("account:a").expect("still waiting");
        assert!(second > first);
        assert!(t.wait("account:b").is_none(), "other keys are not affected");
        t.succeeded("account:a");
        assert!(t.wait("account:a").is_none());
    }
}
