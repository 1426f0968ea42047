//! The writer's ingest journal: accepted webhooks and started calls that are acknowledged
//! but not yet committed to the database.
//!
//! Under steady traffic the writer keeps one transaction open for up to a few tens of
//! milliseconds and answers each group as soon as the group is appended here, one `write`
//! per group. A commit then carries hundreds of webhooks or calls instead of a dozen, so each
//! table's and index's tail page is written to the WAL once per commit instead of once per
//! group (about a quarter of the WAL bytes a webhook cost; a call, whose row is about
//! 1.3 KiB, wrote about 9 KiB of WAL when committed in small groups), and so is the kernel's
//! write-back and the checkpoints' copying. A call is kept as it was stored
//! ([`StartedCall`]): replaying it claims the same cached data by id and records the same
//! row, whatever the flow would decide now. The journal is emptied after each commit; the database records
//! the last entry it holds (`ingest_journal.applied_seq`, in the same transaction), so an
//! entry is applied exactly once.
//!
//! Durability is the same as a commit's with `synchronous = NORMAL`: an appended entry is in
//! the kernel's page cache, so it survives the process being killed, and at the next start
//! [`super::writer`] applies every entry the database does not hold yet.
//!
//! A frame is the payload's length (u32, little-endian), its CRC-32, and the payload (one
//! [`Entry`] as JSON). Reading stops at the first frame that is incomplete or does not
//! match its checksum: a frame cut short by a crash was never acknowledged. Zeros (a
//! [probe](Journal::probe) that a crash left in place) read as an empty payload, which is
//! no entry, so they end the journal too.
//!
//! When the database does not take the journal's entries (a full disk, at start or after
//! a lost transaction), they stay in the file, and the writer refuses every other write
//! until it has applied them.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::batch::StartedCall;
use super::writer::{Idempotency, IngestWrite};

/// Frame header: payload length and CRC-32.
const HEADER: usize = 8;
/// What a [probe](Journal::probe) writes: a file system block.
const PROBE_BLOCK: usize = 4096;
/// No entry is this large (a group is at most a few hundred webhooks of at most the body
/// limit each); a longer length is a torn or foreign frame.
const MAX_FRAME: usize = 1 << 30;

/// One group as the writer ran it, its webhooks then its calls: replaying it with the same
/// `now` gives the same result.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry<'a> {
    pub seq: i64,
    /// The group's clock (Unix ms), which decides expiries, late data and idempotency.
    pub now: i64,
    #[serde(borrow)]
    pub writes: Vec<Record<'a>>,
    /// The calls it started, as stored.
    #[serde(default)]
    pub calls: Vec<StartedCall>,
}

/// What one group appends: its webhooks and the calls it started.
#[derive(Debug, Default)]
pub struct Group<'r, 'a> {
    pub writes: Vec<Record<'a>>,
    pub calls: &'r [StartedCall],
}

impl Group<'_, '_> {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.calls.is_empty()
    }
}

/// One accepted webhook, as [`IngestWrite`] holds it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record<'a> {
    action_id: i64,
    agent_id: i64,
    #[serde(borrow)]
    phone: Cow<'a, str>,
    #[serde(borrow)]
    fields: Cow<'a, str>,
    #[serde(borrow)]
    field_names: Cow<'a, str>,
    ttl_ms: i64,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_hash: Option<[u8; 32]>,
    received_at: i64,
    /// From the request's arrival to its statements, as its delivery records it.
    latency_us: i64,
}

impl<'a> Record<'a> {
    pub fn of(w: &'a IngestWrite, latency_us: i64) -> Self {
        Self {
            action_id: w.action_id,
            agent_id: w.agent_id,
            phone: Cow::Borrowed(&w.phone),
            fields: Cow::Borrowed(&w.fields),
            field_names: Cow::Borrowed(&w.field_names),
            ttl_ms: w.ttl_ms,
            idempotency_key: w
                .idempotency
                .as_ref()
                .map(|i| Cow::Borrowed(i.key.as_str())),
            body_hash: w.idempotency.as_ref().map(|i| i.body_hash),
            received_at: w.received_at,
            latency_us,
        }
    }

    /// The webhook again, for replay.
    pub fn to_write(&self) -> IngestWrite {
        let latency = Duration::from_micros(u64::try_from(self.latency_us).unwrap_or(0));
        let now = Instant::now();
        IngestWrite {
            action_id: self.action_id,
            agent_id: self.agent_id,
            phone: self.phone.clone().into_owned(),
            fields: self.fields.clone().into_owned(),
            field_names: self.field_names.clone().into_owned(),
            ttl_ms: self.ttl_ms,
            idempotency: match (&self.idempotency_key, self.body_hash) {
                (Some(key), Some(body_hash)) => Some(Idempotency {
                    key: key.clone().into_owned(),
                    body_hash,
                }),
                _ => None,
            },
            received_at: self.received_at,
            started: now.checked_sub(latency).unwrap_or(now),
        }
    }
}

/// The journal file, locked by this process for as long as it is open.
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes of whole frames in the file.
    len: u64,
    /// The last sequence number given to an entry.
    last_seq: i64,
    /// A failed append could not be cut back: until the next [`Journal::clear`] nothing may
    /// be appended after it.
    broken: bool,
    /// The last entry this process appended and acknowledged (not retracted); `None` before
    /// its first append, when every whole entry in the file is taken as acknowledged (by an
    /// earlier run). Entries after it that a failed cut left in the file are skipped.
    acked: Option<i64>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (creating if missing) the journal at `path` and takes an exclusive lock on it,
    /// which fails if another server holds it.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is in use by another server", path.display()),
            ),
            std::fs::TryLockError::Error(e) => e,
        })?;
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            path: path.to_owned(),
            len,
            last_seq: 0,
            broken: false,
            acked: None,
            buf: Vec::new(),
        })
    }

    /// The whole file, to read entries from with [`frames`].
    pub fn contents(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        (&self.file).rewind()?;
        (&self.file).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Sequence numbers go on from `seq` (the last one the database or the file holds).
    pub fn continue_after(&mut self, seq: i64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Whether entries were appended since the journal was last cleared.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Bytes of whole entries in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether `seq`, read from the file, was acknowledged: an entry a failed cut left
    /// behind was not.
    pub fn acknowledged(&self, seq: i64) -> bool {
        self.acked.is_none_or(|acked| seq <= acked)
    }

    /// Where the journal ends now, to [retract](Journal::retract) what is appended after.
    pub fn mark(&self) -> Mark {
        Mark {
            len: self.len,
            acked: self.acked,
        }
    }

    /// Cuts the journal back to a [mark](Journal::mark): what was appended since was not
    /// acknowledged. The sequence numbers given since are not given again.
    pub fn retract(&mut self, mark: Mark) {
        if self.file.set_len(mark.len).is_err() {
            self.broken = true;
        }
        self.len = mark.len;
        self.acked = mark.acked;
    }

    /// Appends one entry per group (all run with the clock `now`), with one `write`. On
    /// failure nothing of it stays in the file (or, if the file cannot be cut back, the
    /// journal takes no more until it is cleared).
    pub fn append(&mut self, now: i64, groups: &[Group<'_, '_>]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("the journal is waiting to be cleared"));
        }
        self.buf.clear();
        let mut seq = self.last_seq;
        for group in groups {
            seq += 1;
            let start = self.buf.len();
            self.buf.extend_from_slice(&[0; HEADER]);
            let entry = EntryRef {
                seq,
                now,
                writes: &group.writes,
                calls: group.calls,
            };
            serde_json::to_writer(&mut self.buf, &entry).map_err(io::Error::other)?;
            let payload = &self.buf[start + HEADER..];
            let len = u32::try_from(payload.len()).map_err(io::Error::other)?;
            let crc = crc32fast::hash(payload);
            self.buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
            self.buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
        }
        match self.file.write_all_at(&self.buf, self.len) {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.last_seq = seq;
                self.acked = Some(seq);
                Ok(())
            }
            Err(e) => {
                // Whatever part of it reached the file is numbered up to `seq`, which the
                // next commit records as applied, so that replay skips it.
                self.last_seq = seq;
                if self.file.set_len(self.len).is_err() {
                    self.broken = true;
                }
                Err(e)
            }
        }
    }

    /// Whether the file can grow now (a full disk refuses it): writes a block of zeros past
    /// its end and cuts it off again.
    pub fn probe(&mut self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("the journal is waiting to be cleared"));
        }
        let written = self.file.write_all_at(&[0; PROBE_BLOCK], self.len);
        if self.file.set_len(self.len).is_err() {
            self.broken = true;
        }
        written
    }

    /// Empties the file, once the database holds every entry. Until it succeeds, nothing
    /// more is appended (it could land after a torn frame, where replay stops reading).
    pub fn clear(&mut self) -> io::Result<()> {
        if let Err(e) = self.file.set_len(0) {
            self.broken = true;
            return Err(e);
        }
        self.len = 0;
        self.broken = false;
        Ok(())
    }
}

/// Where the journal ended, and what it had acknowledged, at a [`Journal::mark`].
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    len: u64,
    acked: Option<i64>,
}

/// [`Entry`] for writing, borrowing its records.
#[derive(Serialize)]
struct EntryRef<'r, 'a> {
    seq: i64,
    now: i64,
    writes: &'r [Record<'a>],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    calls: &'r [StartedCall],
}

/// The whole, intact entries at the start of `bytes`, in order.
pub fn frames(bytes: &[u8]) -> Vec<Entry<'_>> {
    let mut entries = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + HEADER].try_into().expect("4 bytes"));
        let start = at + HEADER;
        if len > MAX_FRAME || bytes.len() - start < len {
            break;
        }
        let payload = &bytes[start..start + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match serde_json::from_slice::<Entry<'_>>(payload) {
            Ok(entry) => entries.push(entry),
            Err(_) => break,
        }
        at = start + len;
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn write(n: i64) -> IngestWrite {
        IngestWrite {
            action_id: 7,
            agent_id: 3,
            phone: format!("+1212555{n:04}"),
            fields: format!(r#"{{"n":{n},"note":"say \"hi\""}}"#),
            field_names: r#"["n","note"]"#.into(),
            ttl_ms: 600_000,
            idempotency: (n % 2 == 0).then(|| Idempotency {
                key: format!("key-{n}"),
                body_hash: [n as u8; 32],
            }),
            received_at: 1_790_000_000_000 + n,
            started: Instant::now(),
        }
    }

    fn started(n: i64) -> StartedCall {
        StartedCall {
            public_id: format!("call{n:016}"),
            agent_id: 3,
            version: 2,
            caller: format!("+1212555{n:04}"),
            called: Some("+12125550000".into()),
            started_at: 1_790_000_000_000 + n,
            waited_ms: 120,
            source: "webhook".into(),
            variables: RawValue::from_string(format!(r#"{{"n":{n}}}"#)).unwrap(),
            trace: RawValue::from_string(r#"{"steps":["a \"b\""]}"#.into()).unwrap(),
            status: "active".into(),
            outcome: None,
            claimed: vec![n, n + 1],
            fell_back: vec![7],
        }
    }

    #[test]
    fn appended_entries_read_back_in_order_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j")).unwrap();
        j.continue_after(41);
        let (a, b, c) = (write(1), write(2), write(3));
        j.append(
            5,
            &[Group {
                writes: vec![Record::of(&a, 10), Record::of(&b, 20)],
                calls: &[],
            }],
        )
        .unwrap();
        let call = started(9);
        j.append(
            6,
            &[
                Group {
                    writes: vec![Record::of(&c, 30)],
                    calls: std::slice::from_ref(&call),
                },
                Group {
                    writes: vec![Record::of(&a, 40)],
                    calls: &[],
                },
            ],
        )
        .unwrap();
        assert_eq!(j.last_seq(), 44);
        let bytes = j.contents().unwrap();
        let entries = frames(&bytes);
        let seqs: Vec<(i64, i64, usize)> = entries
            .iter()
            .map(|e| (e.seq, e.now, e.writes.len()))
            .collect();
        assert_eq!(seqs, [(42, 5, 2), (43, 6, 1), (44, 6, 1)]);
        let back = entries[0].writes[1].to_write();
        assert_eq!(back.phone, b.phone);
        assert_eq!(back.fields, b.fields);
        assert_eq!(back.field_names, b.field_names);
        assert_eq!(back.received_at, b.received_at);
        let idem = back.idempotency.unwrap();
        assert_eq!((idem.key.as_str(), idem.body_hash), ("key-2", [2; 32]));
        assert!(entries[1].writes[0].to_write().idempotency.is_none());
        let calls: Vec<usize> = entries.iter().map(|e| e.calls.len()).collect();
        assert_eq!(calls, [0, 1, 0]);
        let back = &entries[1].calls[0];
        assert_eq!(
            (
                back.public_id.as_str(),
                back.caller.as_str(),
                back.called.as_deref()
            ),
            (
                call.public_id.as_str(),
                call.caller.as_str(),
                Some("+12125550000")
            )
        );
        assert_eq!(
            (back.started_at, back.waited_ms, back.version),
            (call.started_at, 120, 2)
        );
        assert_eq!(
            (back.variables.get(), back.trace.get(), back.status.as_str()),
            (r#"{"n":9}"#, r#"{"steps":["a \"b\""]}"#, "active")
        );
        assert_eq!((&back.claimed, &back.fell_back), (&vec![9, 10], &vec![7]));
    }

    #[test]
    fn a_call_kept_by_an_earlier_version_as_a_string_of_json_reads_back_as_json() {
        let payload = br#"{"seq":1,"now":5,"writes":[],"calls":[{"public_id":"c1","agent_id":3,"version":2,"caller":"+12125550001","called":null,"started_at":7,"waited_ms":0,"source":"webhook","variables":"{\"name\":\"Ann \\\"A\\\"\"}","trace":"{\"steps\":[]}","status":"ended","outcome":null,"claimed":[4],"fell_back":[]}]}"#;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        let entries = frames(&bytes);
        let call = &entries[0].calls[0];
        assert_eq!(call.variables.get(), r#"{"name":"Ann \"A\""}"#);
        assert_eq!(call.trace.get(), r#"{"steps":[]}"#);
        let name: serde_json::Value = serde_json::from_str(call.variables.get()).unwrap();
        assert_eq!(name["name"], "Ann \"A\"");
    }

    #[test]
    fn a_torn_or_corrupt_tail_ends_the_entries_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j")).unwrap();
        let (a, b) = (write(1), write(2));
        j.append(
            5,
            &[
                Group {
                    writes: vec![Record::of(&a, 1)],
                    calls: &[],
                },
                Group {
                    writes: vec![Record::of(&b, 2)],
                    calls: &[],
                },
            ],
        )
        .unwrap();
        let bytes = j.contents().unwrap();
        assert_eq!(frames(&bytes).len(), 2);
        for cut in [bytes.len() - 1, bytes.len() - 40, 3] {
            let kept = frames(&bytes[..cut]).len();
            assert_eq!(kept, usize::from(cut > 3), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 5;
        flipped[last] ^= 1;
        assert_eq!(frames(&flipped).len(), 1);
    }

    #[test]
    fn a_second_server_cannot_open_a_journal_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let _first = Journal::open(&path).unwrap();
        let err = Journal::open(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_retracted_entry_is_gone_and_its_number_is_not_given_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j")).unwrap();
        let (a, b) = (write(1), write(2));
        j.append(
            5,
            &[Group {
                writes: vec![Record::of(&a, 1)],
                calls: &[],
            }],
        )
        .unwrap();
        let mark = j.mark();
        j.append(
            6,
            &[Group {
                writes: vec![Record::of(&b, 1)],
                calls: &[],
            }],
        )
        .unwrap();
        assert!(j.acknowledged(2));
        j.retract(mark);
        assert!(j.acknowledged(1) && !j.acknowledged(2));
        let kept: Vec<i64> = frames(&j.contents().unwrap())
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(kept, [1]);
        j.append(
            7,
            &[Group {
                writes: vec![Record::of(&b, 1)],
                calls: &[],
            }],
        )
        .unwrap();
        let kept: Vec<i64> = frames(&j.contents().unwrap())
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(kept, [1, 3]);
    }

    #[test]
    fn a_probe_leaves_the_journal_as_it_was_and_its_zeros_end_the_entries_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j")).unwrap();
        let (a, b) = (write(1), write(2));
        j.append(
            5,
            &[Group {
                writes: vec![Record::of(&a, 1)],
                calls: &[],
            }],
        )
        .unwrap();
        let before = j.contents().unwrap();
        j.probe().unwrap();
        assert_eq!(j.contents().unwrap(), before);
        j.append(
            6,
            &[Group {
                writes: vec![Record::of(&b, 1)],
                calls: &[],
            }],
        )
        .unwrap();
        assert_eq!(frames(&j.contents().unwrap()).len(), 2);

        // A crash between the probe's write and its cut leaves zeros after the entries.
        let mut left = before.clone();
        left.extend_from_slice(&[0; PROBE_BLOCK]);
        left.extend_from_slice(&j.contents().unwrap()[before.len()..]);
        let seqs: Vec<i64> = frames(&left).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1]);
    }

    #[test]
    fn clearing_empties_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&dir.path().join("j")).unwrap();
        let a = write(1);
        j.append(
            5,
            &[Group {
                writes: vec![Record::of(&a, 1)],
                calls: &[],
            }],
        )
        .unwrap();
        assert!(!j.is_empty());
        j.clear().unwrap();
        assert!(j.is_empty());
        assert!(frames(&j.contents().unwrap()).is_empty());
        j.append(
            6,
            &[Group {
                writes: vec![Record::of(&a, 1)],
                calls: &[],
            }],
        )
        .unwrap();
        assert_eq!(frames(&j.contents().unwrap())[0].seq, 2);
    }
}
