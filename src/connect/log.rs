//! What the connections remember in memory: the latest requests of each (for its Test
//! step's live viewer, with their verdicts) and the requests already taken (to refuse a
//! replay). Neither is written to the database: a request refused as unverified keeps
//! nothing, and anyone who knows a connection's URL could otherwise fill the disk.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Requests each connection's viewer keeps.
pub const KEPT_PER_CONNECTION: usize = 100;
/// How long a request taken is remembered at least: twice the signed timestamps' tolerance,
/// so that a replay is refused by its timestamp or by this memory. (It is forgotten after
/// one to two windows: memory is kept in two generations, and the older is dropped whole.)
pub const REPLAY_WINDOW: Duration = Duration::from_secs(2 * super::verify::TOLERANCE_SECS as u64);
/// Most requests remembered at once; past it the oldest generation is forgotten early.
const REPLAY_CAP: usize = 1_000_000;
/// The replay memory is split by digest, so that requests seldom wait on one another and a
/// table that grows copies a sixteenth of the whole.
const REPLAY_SHARDS: usize = 16;

/// One request as the Test viewer shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its place among its connection's requests (1 for the first since the server started):
    /// a gap says how many were forgotten before a viewer saw them.
    pub id: u64,
    /// Unix ms.
    pub received_at: i64,
    pub status: u16,
    pub accepted: bool,
    /// Answered, but the answer turns the call away: a pre-call End Call refused it, or no
    /// platform agent is mapped to take it.
    pub declined: bool,
    /// Why it was refused, or what was answered, in words.
    pub verdict: String,
    pub caller: Option<String>,
    pub called: Option<String>,
    pub platform_call_id: Option<String>,
    /// The Precall call it started or continued.
    pub call_id: Option<String>,
    /// The answer, shortened.
    pub answer: Answer,
    pub latency_ms: u64,
}

/// An answer as sent, kept without a copy (it shares the response's buffer) and shown
/// shortened: its first [`Answer::SHOWN`] bytes.
#[derive(Debug, Clone, Default)]
pub struct Answer(bytes::Bytes);

impl Answer {
    pub const SHOWN: usize = 600;

    pub fn new(sent: bytes::Bytes) -> Self {
        Self(sent)
    }

    /// The answer as the viewer shows it.
    pub fn text(&self) -> String {
        crate::http::body::excerpt(&self.0[..self.0.len().min(Self::SHOWN)])
    }
}

impl Serialize for Answer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

#[derive(Default)]
struct Requests {
    by_connection: HashMap<i64, Kept>,
}

/// One connection's newest requests, and how many it has had.
#[derive(Default)]
struct Kept {
    entries: VecDeque<Entry>,
    recorded: u64,
}

/// Digests are SHA-256: any eight of their bytes are already a uniform hash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Digests = HashSet<u64, BuildHasherDefault<DigestHasher>>;

/// One shard of the replay memory: the digests taken in the current generation and in the
/// one before.
#[derive(Default)]
struct Seen {
    current: Digests,
    previous: Digests,
    since: Option<Instant>,
}

impl Seen {
    fn first_time(&mut self, key: u64, now: Instant) -> bool {
        let since = *self.since.get_or_insert(now);
        let age = now.saturating_duration_since(since);
        if age >= REPLAY_WINDOW || self.current.len() >= REPLAY_CAP / REPLAY_SHARDS / 2 {
            self.previous = if age >= 2 * REPLAY_WINDOW {
                Digests::default()
            } else {
                std::mem::take(&mut self.current)
            };
            self.current.clear();
            self.since = Some(now);
        }
        !self.previous.contains(&key) && self.current.insert(key)
    }
}

/// Platform calls remembered at once with their answers (see [`ConnectState::claim_call`]);
/// past it the oldest generation is forgotten early.
const CALLS_CAP: usize = 20_000;

/// An answer given to a platform about one of its calls, to give again if it asks again.
#[derive(Debug, Clone)]
pub struct Given {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// The Precall call it started.
    pub call_id: Option<String>,
    pub declined: bool,
}

type Answering = tokio::sync::watch::Receiver<Option<Given>>;

/// The platform calls asked about, by connection and the platform's call id, in two
/// generations as [`Seen`] keeps digests.
#[derive(Default)]
struct Calls {
    current: HashMap<(i64, String), Answering>,
    previous: HashMap<(i64, String), Answering>,
    since: Option<Instant>,
}

/// What a request about a platform call is: the first (it starts the call, and promises its
/// answer to those that ask again), or the same call asked about again.
pub enum CallClaim {
    First(Promise),
    Again(Answering),
}

/// The first request's promise of its answer; dropped unkept (the request was refused, or
/// went away), those asking again start the call themselves.
pub struct Promise(tokio::sync::watch::Sender<Option<Given>>);

impl Promise {
    pub fn keep(self, given: Given) {
        self.0.send_replace(Some(given));
    }
}

/// Shared by the connection endpoints and the console.
#[derive(Default)]
pub struct ConnectState {
    requests: Mutex<Requests>,
    seen: [Mutex<Seen>; REPLAY_SHARDS],
    calls: Mutex<Calls>,
}

impl ConnectState {
    /// Keeps a request for its connection's viewer (the newest [`KEPT_PER_CONNECTION`]).
    pub fn record(&self, connection: i64, mut entry: Entry) {
        let mut r = self.requests.lock().expect("connect log");
        let kept = r.by_connection.entry(connection).or_default();
        kept.recorded += 1;
        entry.id = kept.recorded;
        if kept.entries.len() == KEPT_PER_CONNECTION {
            kept.entries.pop_front();
        }
        kept.entries.push_back(entry);
    }

    /// The connection's requests after `after` (by id), oldest first, and how many came
    /// after it but are forgotten already (more than [`KEPT_PER_CONNECTION`] came at once).
    /// An `after` past every request the connection has had is from before the server
    /// started: all are new.
    pub fn since(&self, connection: i64, after: u64) -> (Vec<Entry>, u64) {
        let r = self.requests.lock().expect("connect log");
        let Some(k) = r.by_connection.get(&connection) else {
            return (Vec::new(), 0);
        };
        let after = if after > k.recorded { 0 } else { after };
        let new: Vec<Entry> = k.entries.iter().filter(|e| e.id > after).cloned().collect();
        let forgotten = new.first().map_or(0, |e| e.id - after - 1);
        (new, forgotten)
    }

    /// Forgets a deleted connection's requests.
    pub fn forget(&self, connection: i64) {
        self.requests
            .lock()
            .expect("connect log")
            .by_connection
            .remove(&connection);
    }

    /// Whether a platform's call (`call_id`, on this connection) is asked about for the first
    /// time within [`REPLAY_WINDOW`]. A platform that asks again (it retries, signed anew)
    /// must get the answer the first request gave, not a second call started without the
    /// data the first one took.
    pub fn claim_call(&self, connection: i64, call_id: &str, now: Instant) -> CallClaim {
        let mut guard = self.calls.lock().expect("platform calls");
        let c = &mut *guard;
        let since = *c.since.get_or_insert(now);
        let age = now.saturating_duration_since(since);
        if age >= REPLAY_WINDOW || c.current.len() >= CALLS_CAP / 2 {
            let older = if age >= 2 * REPLAY_WINDOW {
                c.current.clear();
                std::mem::take(&mut c.previous)
            } else {
                let current = std::mem::take(&mut c.current);
                std::mem::replace(&mut c.previous, current)
            };
            // Forgotten early (past the cap), a call still being answered would start anew
            // when asked again: those stay.
            let answering = older
                .into_iter()
                .filter(|(_, a)| a.borrow().is_none() && a.has_changed().is_ok());
            c.previous.extend(answering);
            c.since = Some(now);
        }
        let key = (connection, call_id.to_owned());
        if let Some(known) = c.current.get(&key).or_else(|| c.previous.get(&key)) {
            // Answered, or still being answered. A promise dropped unkept leaves nothing to
            // wait for: this request is the first now.
            if known.borrow().is_some() || known.has_changed().is_ok() {
                return CallClaim::Again(known.clone());
            }
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        c.previous.remove(&key);
        c.current.insert(key, rx);
        CallClaim::First(Promise(tx))
    }

    /// Whether a request (its digest) is seen for the first time within [`REPLAY_WINDOW`];
    /// it is remembered from now on.
    pub fn first_time(&self, digest: [u8; 32], now: Instant) -> bool {
        let key = u64::from_le_bytes(digest[..8].try_into().expect("eight bytes"));
        let shard = usize::from(digest[8]) % REPLAY_SHARDS;
        self.seen[shard]
            .lock()
            .expect("replay memory")
            .first_time(key, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            id: 0,
            received_at: 0,
            status: 200,
            accepted: true,
            declined: false,
            verdict: String::new(),
            caller: None,
            called: None,
            platform_call_id: None,
            call_id: None,
            answer: Answer::default(),
            latency_ms: 0,
        }
    }

    #[test]
    fn keeps_the_newest_requests_of_each_connection_and_counts_those_it_forgot() {
        let s = ConnectState::default();
        let count = |(new, forgotten): (Vec<Entry>, u64)| (new.len(), forgotten);
        s.record(1, entry());
        assert_eq!(count(s.since(1, 1)), (0, 0));
        for _ in 0..KEPT_PER_CONNECTION + 7 {
            s.record(1, entry());
            s.record(2, entry());
        }
        // A viewer at the first request: the 100 newest, and 7 it will never see.
        let (new, forgotten) = s.since(1, 1);
        assert_eq!((new.len(), forgotten), (KEPT_PER_CONNECTION, 7));
        assert_eq!(new.first().unwrap().id, 9);
        assert_eq!(new.last().unwrap().id, 108);
        assert_eq!(count(s.since(1, 108)), (0, 0));
        // A page that had none yet: the newest it can have, all forgotten before counted.
        assert_eq!(count(s.since(1, 0)), (KEPT_PER_CONNECTION, 8));
        // A viewer from before a restart (its place is past every request): all are new.
        assert_eq!(count(s.since(2, 500)).0, KEPT_PER_CONNECTION);
        assert_eq!(count(s.since(3, 0)), (0, 0));
    }

    #[tokio::test]
    async fn a_platform_call_asked_about_again_waits_for_the_first_answer() {
        let s = ConnectState::default();
        let t = Instant::now();
        let CallClaim::First(promise) = s.claim_call(1, "c1", t) else {
            panic!("the first request is first");
        };
        // Another connection's call with the same id is another call.
        assert!(matches!(s.claim_call(2, "c1", t), CallClaim::First(_)));
        let CallClaim::Again(mut again) = s.claim_call(1, "c1", t) else {
            panic!("asked again while the first is answered");
        };
        let waiting =
            tokio::spawn(async move { again.wait_for(Option::is_some).await.unwrap().clone() });
        promise.keep(Given {
            status: 200,
            content_type: "application/json",
            body: "{}".into(),
            call_id: Some("x".into()),
            declined: false,
        });
        assert_eq!(
            waiting.await.unwrap().unwrap().call_id.as_deref(),
            Some("x")
        );
        // Answered: asked again later, the same answer at once.
        let CallClaim::Again(later) = s.claim_call(1, "c1", t + Duration::from_secs(1)) else {
            panic!("asked again after the answer");
        };
        assert_eq!(later.borrow().as_ref().unwrap().status, 200);
        // A promise dropped unkept: the next request is the first.
        let CallClaim::First(dropped) = s.claim_call(1, "c2", t) else {
            panic!("first");
        };
        drop(dropped);
        assert!(matches!(s.claim_call(1, "c2", t), CallClaim::First(_)));
        // Past the cap, calls are forgotten early, but not one still being answered.
        let CallClaim::First(_in_flight) = s.claim_call(1, "slow", t) else {
            panic!("first");
        };
        for i in 0..CALLS_CAP + 1 {
            let _ = s.claim_call(1, &format!("flood-{i}"), t);
        }
        assert!(matches!(s.claim_call(1, "slow", t), CallClaim::Again(_)));
        // Forgotten after two windows.
        assert!(matches!(
            s.claim_call(1, "c1", t + 2 * REPLAY_WINDOW + Duration::from_secs(2)),
            CallClaim::First(_)
        ));
    }

    #[test]
    fn a_request_seen_again_within_the_window_is_a_replay() {
        let s = ConnectState::default();
        let t = Instant::now();
        assert!(s.first_time([1; 32], t));
        assert!(!s.first_time([1; 32], t + Duration::from_secs(1)));
        assert!(s.first_time([2; 32], t));
        // Remembered for one window at least, and forgotten after two.
        assert!(!s.first_time([1; 32], t + REPLAY_WINDOW + Duration::from_secs(1)));
        assert!(s.first_time([1; 32], t + 2 * REPLAY_WINDOW + Duration::from_secs(2)));
    }

    #[test]
    fn a_flood_of_requests_is_remembered_within_its_cap() {
        let s = ConnectState::default();
        let t = Instant::now();
        let digest = |i: u32| {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_le_bytes());
            d[8] = (i % 251) as u8;
            d
        };
        for i in 0..200_000 {
            assert!(s.first_time(digest(i), t));
        }
        assert!(!s.first_time(digest(199_999), t));
        assert!(!s.first_time(digest(0), t));
        let kept: usize = s
            .seen
            .iter()
            .map(|m| {
                let m = m.lock().unwrap();
                m.current.len() + m.previous.len()
            })
            .sum();
        assert!(kept <= REPLAY_CAP, "{kept}");
    }
}
