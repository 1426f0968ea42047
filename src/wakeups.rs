//! Wakes a waiting call the moment its caller's data is committed.
//!
//! A call subscribes to (action, caller) *before* it looks for data, so a commit that
//! lands between the look and the wait is never missed. On PostgreSQL every server's
//! listener (see `store::pg::listener`) turns the shared database's notifications into
//! wake-ups of the calls waiting on that server.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

/// Whose data a call is waiting for: a Webhook action and a caller's E.164 number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WakeKey {
    pub action_id: i64,
    pub phone: String,
}

/// Subscribe before looking, then await the subscription.
pub trait Wakeups: Send + Sync + 'static {
    fn subscribe(&self, key: WakeKey) -> Subscription;
    /// Wakes every call waiting on `key`.
    fn notify(&self, key: &WakeKey);
    /// Wakes every waiting call, to look at the store again: after notifications may have
    /// been missed (a listener's connection to a shared database that was lost).
    fn notify_all(&self);
}

/// Resolves when the key is notified. Dropping it withdraws the interest.
pub struct Subscription {
    /// Receives when the key was notified; `None` when every call was woken to look again
    /// ([`Wakeups::notify_all`]), which is no wake-up by data.
    rx: oneshot::Receiver<Option<Instant>>,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl Subscription {
    /// Waits until notified (or the notifier goes away); returns when its key was notified,
    /// so that the time a waiting call takes to resume can be measured (`None` when it was
    /// woken only to look again).
    pub async fn woken(mut self) -> Option<Instant> {
        (&mut self.rx).await.ok().flatten()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

const SHARDS: usize = 16;

type Waiters = HashMap<WakeKey, Vec<(u64, oneshot::Sender<Option<Instant>>)>>;

/// Wake-ups within one process: a sharded map from key to waiting calls.
pub struct InProcessWakeups {
    shards: Vec<Mutex<Waiters>>,
    hasher: RandomState,
    next_id: AtomicU64,
}

impl InProcessWakeups {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            next_id: AtomicU64::new(0),
        })
    }

    fn shard(&self, key: &WakeKey) -> &Mutex<Waiters> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// How many calls are waiting right now.
    pub fn waiting(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().values().map(Vec::len).sum::<usize>())
            .sum()
    }
}

impl Wakeups for Arc<InProcessWakeups> {
    fn subscribe(&self, key: WakeKey) -> Subscription {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.shard(&key)
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .push((id, tx));
        let this = Arc::downgrade(self);
        Subscription {
            rx,
            on_drop: Some(Box::new(move || {
                let Some(this) = this.upgrade() else { return };
                let mut shard = this.shard(&key).lock().unwrap();
                if let Some(list) = shard.get_mut(&key) {
                    list.retain(|(i, _)| *i != id);
                    if list.is_empty() {
                        shard.remove(&key);
                    }
                }
            })),
        }
    }

    fn notify(&self, key: &WakeKey) {
        let waiters = self.shard(key).lock().unwrap().remove(key);
        if let Some(waiters) = waiters {
            let now = Instant::now();
            for (_, tx) in waiters {
                let _ = tx.send(Some(now));
            }
        }
    }

    fn notify_all(&self) {
        for shard in &self.shards {
            let waiters = std::mem::take(&mut *shard.lock().unwrap());
            for (_, tx) in waiters.into_values().flatten() {
                let _ = tx.send(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(phone: &str) -> WakeKey {
        WakeKey {
            action_id: 1,
            phone: phone.into(),
        }
    }

    #[tokio::test]
    async fn notify_wakes_only_its_own_key() {
        let w = InProcessWakeups::new();
        let a = w.subscribe(key("+1"));
        let b = w.subscribe(key("+2"));
        w.notify(&key("+1"));
        let notified = tokio::time::timeout(Duration::from_secs(1), a.woken())
            .await
            .expect("woken");
        assert!(notified.is_some(), "a wake-up by data says when");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), b.woken())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn notify_all_wakes_every_waiting_call() {
        let w = InProcessWakeups::new();
        let subs: Vec<_> = (0..40)
            .map(|i| w.subscribe(key(&format!("+{i}"))))
            .collect();
        w.notify_all();
        for s in subs {
            let notified = tokio::time::timeout(Duration::from_secs(1), s.woken())
                .await
                .expect("woken");
            assert!(notified.is_none(), "woken to look again, not by data");
        }
        assert_eq!(w.waiting(), 0);
    }

    #[tokio::test]
    async fn dropped_subscriptions_leave_nothing_behind() {
        let w = InProcessWakeups::new();
        let subs: Vec<_> = (0..100)
            .map(|i| w.subscribe(key(&format!("+{i}"))))
            .collect();
        assert_eq!(w.waiting(), 100);
        drop(subs);
        assert_eq!(w.waiting(), 0);
    }
}
