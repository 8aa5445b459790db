//! The durable outbox: every report is appended and fsynced here before it is handed to the
//! MQTT client, and forgotten only after the broker's PUBACK.
//!
//! # Why an append-only log and not an embedded database
//! The access pattern is a FIFO queue: append at the tail, acknowledge (mostly) at the head,
//! replay the unacknowledged tail after a restart. An append-only log does exactly that with
//! one `write` + one `fdatasync` per batch (group commit) and no dependency; redb or sled
//! would add a B-tree, copy-on-write pages and a larger crash-recovery surface for no gain.
//!
//! # Files (in `dir`)
//! - `outbox-<generation>.log`: records, each `magic "MBX1" | len u32 | crc32 u32 | body`, body
//!   `seq u64 | enqueued unix ms u64 | topic len u16 | topic | payload` (little endian). A
//!   record is acknowledged to the producer only after `fdatasync`.
//! - `acked`: `generation u64 | offset u64 | next seq u64 | crc32 u32`: every record of log `generation`
//!   before `offset` is done (acknowledged, expired or dropped). It is replaced by
//!   write-then-rename; it is fsynced only when the generation changes. Losing an update
//!   (power cut) only moves the offset back: records are redelivered, never lost.
//!
//! # Recovery
//! On open, the log is read from `offset`. A torn tail (a crash mid-write: header or body
//! cut short) is truncated with a warning; a record whose CRC does not match is skipped,
//! resynchronising on the next valid record, with a warning. Nothing panics on a bad file.
//!
//! # Compaction
//! When everything is acknowledged and the log has reached [`COMPACT_EMPTY_BYTES`], or the
//! acknowledged head exceeds [`COMPACT_HEAD_BYTES`] and half the log, the unacknowledged tail is copied to `outbox-<generation+1>.log` (fsynced),
//! `acked` is switched to the new generation (fsynced), and the old log is removed. A crash
//! in between leaves `acked` naming the log that is still complete.
//!
//! # Bounds and drop policy
//! - Age: records older than `max_age` are dropped from the head (a stale report is of no
//!   use at the bedside) when the outbox is opened and before each append; counted in
//!   [`OutboxStats::dropped_expired`], logged as a warning.
//! - Size: when the unacknowledged bytes would exceed `max_bytes`, [`FullPolicy::RejectNew`]
//!   (the default) refuses the new report with [`OutboxError::Full`] (nothing accepted is
//!   lost; counted in `rejected_full`); [`FullPolicy::DropOldest`] drops the oldest
//!   unacknowledged reports until it fits (counted in `dropped_full`, logged).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

const MAGIC: [u8; 4] = *b"MBX1";
const HEADER: usize = 12;
const BODY_FIXED: usize = 8 + 8 + 2;
/// Largest payload a record may hold: the bound of `mqtt.max_payload_bytes`, and what
/// [`Outbox::append`] refuses above (a larger record would be written, then read back as
/// corrupt at the next start).
pub const MAX_PAYLOAD: usize = 64 << 20;
/// Largest record body accepted when reading (a larger length field is corruption): the
/// fixed fields, the longest topic, the largest payload.
const MAX_BODY: usize = BODY_FIXED + u16::MAX as usize + MAX_PAYLOAD;
/// Acknowledged bytes at the head of the log above which it is compacted.
pub const COMPACT_HEAD_BYTES: u64 = 16 << 20;
/// Log size from which a fully acknowledged log is compacted (replaced by an empty one);
/// below it, only the acknowledged offset moves (no fsync per acknowledgement).
pub const COMPACT_EMPTY_BYTES: u64 = 1 << 20;
const ACKED_FILE: &str = "acked";
const ACKED_LEN: usize = 8 + 8 + 8 + 4;

/// What to do when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullPolicy {
    /// Refuse the new report with an error; every accepted report is kept.
    #[default]
    RejectNew,
    /// Drop the oldest unacknowledged reports to make room (the freshest matter most).
    DropOldest,
}

/// Outbox location and bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxOptions {
    /// Directory of the log and the acknowledged-offset file.
    pub dir: PathBuf,
    /// Bound on unacknowledged bytes on disk.
    pub max_bytes: u64,
    /// Bound on the age of an unacknowledged record.
    pub max_age: Duration,
    /// What happens at `max_bytes`.
    pub when_full: FullPolicy,
}

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// A file operation failed.
    #[error("outbox {path}: {what}: {cause}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The record does not fit within `max_bytes` under the `reject-new` policy.
    #[error(
        "outbox full: {pending} bytes unacknowledged, a {size}-byte report would exceed the bound of {max} bytes (policy reject-new; the broker has not acknowledged for a while)"
    )]
    Full {
        /// Unacknowledged bytes.
        pending: u64,
        /// Size of the refused record.
        size: u64,
        /// The bound.
        max: u64,
    },
    /// A single record larger than the outbox keeps: its whole size, or the largest record
    /// ([`MAX_PAYLOAD`] of payload).
    #[error("a {size}-byte report is larger than the outbox keeps ({max} bytes)")]
    TooLarge {
        /// Record size.
        size: u64,
        /// The bound.
        max: u64,
    },
    /// The outbox thread has stopped.
    #[error("the outbox has stopped")]
    Closed,
    /// Another process (or publisher) has the outbox open.
    #[error("outbox {0} is in use by another process; give each daemon its own mqtt.outbox.dir")]
    Locked(PathBuf),
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> OutboxError + 'a {
    move |cause| OutboxError::Io {
        path: path.to_path_buf(),
        what,
        cause,
    }
}

/// A record waiting for its PUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number: increasing in append order.
    pub seq: u64,
    /// When it was appended (Unix ms).
    pub enqueued_ms: u64,
    /// MQTT topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// Counters since the outbox was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Records appended durably.
    pub appended: u64,
    /// Records acknowledged by the broker.
    pub acked: u64,
    /// Records dropped for age.
    pub dropped_expired: u64,
    /// Records dropped to make room (`drop-oldest`).
    pub dropped_full: u64,
    /// New records refused (`reject-new`).
    pub rejected_full: u64,
    /// Corrupt or torn records skipped when opening.
    pub corrupt_skipped: u64,
    /// Records recovered (unacknowledged) when opening.
    pub recovered: u64,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    offset: u64,
    len: u64,
    enqueued_ms: u64,
    /// When this process appended it: its age is then monotonic, so a wall clock stepped
    /// forward (NTP on a gateway without a real-time clock) does not expire it. None for a
    /// record recovered from disk, aged by `enqueued_ms`.
    appended_at: Option<Instant>,
    acked: bool,
}

impl Entry {
    /// Age in milliseconds, at wall-clock `now_ms` and monotonic `now`.
    fn age_ms(&self, now_ms: u64, now: Instant) -> u64 {
        match self.appended_at {
            Some(at) => {
                u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX)
            }
            None => now_ms.saturating_sub(self.enqueued_ms),
        }
    }
}

/// The durable queue. Synchronous: drive it from a dedicated thread ([`super::mqtt`] does).
#[derive(Debug)]
pub struct Outbox {
    opts: OutboxOptions,
    generation: u64,
    log: File,
    log_len: u64,
    head: u64,
    next_seq: u64,
    entries: VecDeque<Entry>,
    pending_bytes: u64,
    stats: OutboxStats,
    /// Holds an exclusive advisory lock on `dir/lock` while open.
    _lock: File,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("outbox-{generation}.log"))
}

/// Encodes one record (header and body).
fn encode(seq: u64, enqueued_ms: u64, topic: &str, payload: &[u8]) -> Vec<u8> {
    let topic_len = topic.len().min(u16::MAX as usize);
    let body_len = BODY_FIXED + topic_len + payload.len();
    let mut out = Vec::with_capacity(HEADER + body_len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&enqueued_ms.to_le_bytes());
    out.extend_from_slice(&(topic_len as u16).to_le_bytes());
    out.extend_from_slice(&topic.as_bytes()[..topic_len]);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[HEADER..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Size on disk of a record.
pub fn record_size(topic: &str, payload: &[u8]) -> u64 {
    (HEADER + BODY_FIXED + topic.len() + payload.len()) as u64
}

/// Parses the record at `at` in `data`: `Ok(Some((record, size)))`, `Ok(None)` when the data
/// ends inside it (torn tail), `Err(())` when it is corrupt.
#[allow(clippy::result_unit_err)]
fn decode(data: &[u8], at: usize) -> Result<Option<(Record, usize)>, ()> {
    let Some(header) = data.get(at..at + HEADER) else {
        return Ok(None);
    };
    if header[..4] != MAGIC {
        return Err(());
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if !(BODY_FIXED..=MAX_BODY).contains(&len) {
        return Err(());
    }
    let Some(body) = data.get(at + HEADER..at + HEADER + len) else {
        return Ok(None);
    };
    if crc32fast::hash(body) != crc {
        return Err(());
    }
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().unwrap_or([0; 8]));
    let topic_len = u16::from_le_bytes([body[16], body[17]]) as usize;
    let Some(topic) = body.get(BODY_FIXED..BODY_FIXED + topic_len) else {
        return Err(());
    };
    let Ok(topic) = std::str::from_utf8(topic) else {
        return Err(());
    };
    Ok(Some((
        Record {
            seq: u64_at(0),
            enqueued_ms: u64_at(8),
            topic: topic.to_string(),
            payload: body[BODY_FIXED + topic_len..].to_vec(),
        },
        HEADER + len,
    )))
}

fn read_acked(dir: &Path) -> Option<(u64, u64, u64)> {
    let bytes = fs::read(dir.join(ACKED_FILE)).ok()?;
    if bytes.len() != ACKED_LEN {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[24..28].try_into().ok()?);
    if crc32fast::hash(&bytes[..24]) != crc {
        return None;
    }
    let at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
    Some((at(0), at(8), at(16)))
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "syncing the directory"))
}

impl Outbox {
    /// Opens (or creates) the outbox in `opts.dir` and returns the unacknowledged records, in
    /// order, for redelivery. Torn or corrupt records are skipped with a warning.
    pub fn open(opts: OutboxOptions) -> Result<(Outbox, Vec<Record>), OutboxError> {
        let dir = opts.dir.clone();
        fs::create_dir_all(&dir).map_err(io(&dir, "creating the directory"))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path, "opening the lock file"))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => OutboxError::Locked(dir.clone()),
            fs::TryLockError::Error(cause) => OutboxError::Io {
                path: lock_path.clone(),
                what: "locking",
                cause,
            },
        })?;
        let mut gens: Vec<u64> = fs::read_dir(&dir)
            .map_err(io(&dir, "listing the directory"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("outbox-")?
                    .strip_suffix(".log")?
                    .parse::<u64>()
                    .ok()
            })
            .collect();
        gens.sort_unstable();
        let (generation, mut head, mut next_seq) = match read_acked(&dir) {
            Some(acked) => acked,
            None => {
                if dir.join(ACKED_FILE).exists() {
                    tracing::warn!(dir = %dir.display(), "outbox: acknowledged-offset file is corrupt; redelivering the whole log (duplicates possible)");
                }
                // The oldest log is always complete (a newer one may be an interrupted
                // compaction): redeliver all of it rather than risk losing a record.
                (gens.first().copied().unwrap_or(0), 0, 0)
            }
        };
        // Logs of other generations are leftovers of an interrupted compaction.
        for other in gens.iter().filter(|g| **g != generation) {
            let path = log_path(&dir, *other);
            tracing::info!(file = %path.display(), "outbox: removing a log left by an interrupted compaction");
            fs::remove_file(&path).map_err(io(&path, "removing an old log"))?;
        }
        let path = log_path(&dir, generation);
        let mut log = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path, "opening the log"))?;
        let mut data = Vec::new();
        log.read_to_end(&mut data)
            .map_err(io(&path, "reading the log"))?;
        if head > data.len() as u64 {
            tracing::warn!(file = %path.display(), head, len = data.len(), "outbox: acknowledged offset beyond the end of the log; starting at the end");
            head = data.len() as u64;
        }
        let mut stats = OutboxStats::default();
        let mut records = Vec::new();
        let mut entries = VecDeque::new();
        let mut at = head as usize;
        while at < data.len() {
            match decode(&data, at) {
                Ok(Some((record, size))) => {
                    next_seq = next_seq.max(record.seq + 1);
                    entries.push_back(Entry {
                        seq: record.seq,
                        offset: at as u64,
                        len: size as u64,
                        enqueued_ms: record.enqueued_ms,
                        appended_at: None,
                        acked: false,
                    });
                    records.push(record);
                    at += size;
                }
                Ok(None) => {
                    tracing::warn!(file = %path.display(), offset = at, bytes = data.len() - at, "outbox: torn record at the end of the log (a crash mid-write); truncated");
                    stats.corrupt_skipped += 1;
                    break;
                }
                Err(()) => {
                    // Resynchronise on the next record that decodes completely.
                    let next = (at + 1..data.len())
                        .filter(|&i| data[i..].starts_with(&MAGIC))
                        .find(|&i| matches!(decode(&data, i), Ok(Some(_))));
                    stats.corrupt_skipped += 1;
                    let Some(next) = next else {
                        tracing::warn!(file = %path.display(), offset = at, bytes = data.len() - at, "outbox: corrupt tail skipped and truncated");
                        break;
                    };
                    tracing::warn!(file = %path.display(), offset = at, skipped = next - at, "outbox: corrupt record skipped");
                    // The bad bytes join the previous record (or the done head) so that the
                    // head moves past them with it.
                    match entries.back_mut() {
                        Some(prev) => prev.len += (next - at) as u64,
                        None => head = next as u64,
                    }
                    at = next;
                }
            }
        }
        let log_len = at as u64;
        if log_len < data.len() as u64 {
            log.set_len(log_len)
                .and_then(|_| log.sync_data())
                .map_err(io(&path, "truncating a torn tail"))?;
        }
        log.seek(SeekFrom::Start(log_len))
            .map_err(io(&path, "seeking to the end"))?;
        stats.recovered = records.len() as u64;
        let pending_bytes = entries.iter().map(|e| e.len).sum();
        let mut outbox = Outbox {
            opts,
            generation,
            log,
            log_len,
            head,
            next_seq,
            entries,
            pending_bytes,
            stats,
            _lock: lock,
        };
        let expired = outbox.expire(now_ms());
        records.retain(|r| !expired.contains(&r.seq));
        if !records.is_empty() {
            tracing::info!(dir = %dir.display(), records = records.len(), "outbox: redelivering unacknowledged reports");
        }
        Ok((outbox, records))
    }

    /// Counters since open.
    pub fn stats(&self) -> OutboxStats {
        self.stats
    }

    /// Unacknowledged records.
    pub fn pending(&self) -> usize {
        self.entries.iter().filter(|e| !e.acked).count()
    }

    /// Unacknowledged bytes on disk.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Appends records durably (one write, one fdatasync). Returns, per record, the stored
    /// record or why it was refused, and the sequence numbers dropped to make room or for age.
    #[allow(clippy::type_complexity)]
    pub fn append(
        &mut self,
        batch: Vec<(String, Vec<u8>)>,
    ) -> (Vec<Result<Record, OutboxError>>, Vec<u64>) {
        let now = now_ms();
        let mut dropped = self.expire(now);
        let mut buf = Vec::new();
        let mut results = Vec::with_capacity(batch.len());
        let mut new_entries = Vec::new();
        for (topic, payload) in batch {
            let size = record_size(&topic, &payload);
            if size > self.opts.max_bytes || payload.len() > MAX_PAYLOAD {
                self.stats.rejected_full += 1;
                results.push(Err(OutboxError::TooLarge {
                    size,
                    max: self
                        .opts
                        .max_bytes
                        .min(record_size(&topic, &[]) + MAX_PAYLOAD as u64),
                }));
                continue;
            }
            if self.pending_bytes + size > self.opts.max_bytes {
                match self.opts.when_full {
                    FullPolicy::RejectNew => {
                        self.stats.rejected_full += 1;
                        tracing::warn!(
                            pending_bytes = self.pending_bytes,
                            max_bytes = self.opts.max_bytes,
                            rejected_total = self.stats.rejected_full,
                            "outbox full: new report refused (policy reject-new)"
                        );
                        results.push(Err(OutboxError::Full {
                            pending: self.pending_bytes,
                            size,
                            max: self.opts.max_bytes,
                        }));
                        continue;
                    }
                    FullPolicy::DropOldest => {
                        let before = dropped.len();
                        while self.pending_bytes + size > self.opts.max_bytes
                            && let Some(seq) = self.drop_oldest()
                        {
                            dropped.push(seq);
                        }
                        let n = (dropped.len() - before) as u64;
                        self.stats.dropped_full += n;
                        tracing::warn!(
                            dropped = n,
                            dropped_total = self.stats.dropped_full,
                            max_bytes = self.opts.max_bytes,
                            "outbox full: oldest unacknowledged reports dropped (policy drop-oldest)"
                        );
                    }
                }
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let bytes = encode(seq, now, &topic, &payload);
            new_entries.push(Entry {
                seq,
                offset: self.log_len + buf.len() as u64,
                len: bytes.len() as u64,
                enqueued_ms: now,
                appended_at: Some(Instant::now()),
                acked: false,
            });
            buf.extend_from_slice(&bytes);
            self.pending_bytes += size;
            results.push(Ok(Record {
                seq,
                enqueued_ms: now,
                topic,
                payload,
            }));
        }
        if !buf.is_empty() {
            let path = log_path(&self.opts.dir, self.generation);
            let written = self
                .log
                .write_all(&buf)
                .and_then(|_| self.log.sync_data())
                .map_err(io(&path, "appending"));
            if let Err(e) = written {
                // Undo: the records are refused, and the partial write is cut off.
                let _ = self.log.set_len(self.log_len);
                let _ = self.log.seek(SeekFrom::Start(self.log_len));
                self.pending_bytes -= new_entries.iter().map(|e| e.len).sum::<u64>();
                let msg = e.to_string();
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(OutboxError::Io {
                        path: path.clone(),
                        what: "appending",
                        cause: std::io::Error::other(msg.clone()),
                    });
                }
                return (results, dropped);
            }
            self.log_len += buf.len() as u64;
            self.stats.appended += new_entries.len() as u64;
            self.entries.extend(new_entries);
        }
        if !dropped.is_empty()
            && let Err(e) = self.advance_head()
        {
            tracing::error!(error = %e, "outbox: recording dropped reports failed (they may be redelivered)");
        }
        (results, dropped)
    }

    /// Marks records acknowledged (unknown sequence numbers are ignored) and persists the new
    /// head; compacts the log when worthwhile.
    pub fn ack(&mut self, seqs: &[u64]) -> Result<(), OutboxError> {
        let mut any = false;
        for seq in seqs {
            // Entries are in seq order: binary search, skipping corrupt placeholders.
            if let Ok(i) = self.entries.binary_search_by_key(seq, |e| e.seq)
                && !self.entries[i].acked
            {
                self.entries[i].acked = true;
                self.pending_bytes -= self.entries[i].len;
                self.stats.acked += 1;
                any = true;
            }
        }
        if any {
            self.advance_head()?;
        }
        Ok(())
    }

    /// Drops records older than `max_age` from the head; returns their sequence numbers.
    fn expire(&mut self, now: u64) -> Vec<u64> {
        // Saturating: an age past u64 milliseconds means "never", not a wrapped 384 ms.
        let max_age = u64::try_from(self.opts.max_age.as_millis()).unwrap_or(u64::MAX);
        let monotonic = Instant::now();
        let mut dropped = Vec::new();
        while let Some(front) = self.entries.iter().find(|e| !e.acked)
            && front.age_ms(now, monotonic) > max_age
        {
            if let Some(seq) = self.drop_oldest() {
                dropped.push(seq);
            }
        }
        if !dropped.is_empty() {
            self.stats.dropped_expired += dropped.len() as u64;
            tracing::warn!(
                dropped = dropped.len(),
                dropped_total = self.stats.dropped_expired,
                max_age_s = self.opts.max_age.as_secs(),
                "outbox: unacknowledged reports older than max_age dropped"
            );
            let _ = self.advance_head();
        }
        dropped
    }

    /// Marks the oldest unacknowledged record done without delivery.
    fn drop_oldest(&mut self) -> Option<u64> {
        let entry = self.entries.iter_mut().find(|e| !e.acked)?;
        entry.acked = true;
        self.pending_bytes -= entry.len;
        Some(entry.seq)
    }

    /// Pops done entries from the head, persists the head offset, compacts when worthwhile.
    fn advance_head(&mut self) -> Result<(), OutboxError> {
        while self.entries.front().is_some_and(|e| e.acked) {
            self.entries.pop_front();
        }
        let head = self.entries.front().map_or(self.log_len, |e| e.offset);
        if head == self.head {
            return Ok(());
        }
        self.head = head;
        let everything_done = self.entries.is_empty() && self.log_len >= COMPACT_EMPTY_BYTES;
        let big_head = self.head > COMPACT_HEAD_BYTES && self.head > self.log_len / 2;
        if everything_done || big_head {
            self.compact()
        } else {
            self.write_acked(false)
        }
    }

    fn write_acked(&self, durable: bool) -> Result<(), OutboxError> {
        self.write_acked_as(self.generation, self.head, durable)
            .map_err(|(e, _)| e)
    }

    /// Writes `acked` naming `generation` and `head`. An error comes with whether `acked` was
    /// already replaced (only its directory entry failed to sync) or still names what it did.
    fn write_acked_as(
        &self,
        generation: u64,
        head: u64,
        durable: bool,
    ) -> Result<(), (OutboxError, bool)> {
        let dir = &self.opts.dir;
        let mut bytes = Vec::with_capacity(ACKED_LEN);
        bytes.extend_from_slice(&generation.to_le_bytes());
        bytes.extend_from_slice(&head.to_le_bytes());
        bytes.extend_from_slice(&self.next_seq.to_le_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let tmp = dir.join("acked.tmp");
        let before = |e| (e, false);
        let mut f = File::create(&tmp)
            .map_err(io(&tmp, "writing the acknowledged offset"))
            .map_err(before)?;
        f.write_all(&bytes)
            .map_err(io(&tmp, "writing the acknowledged offset"))
            .map_err(before)?;
        if durable {
            f.sync_all()
                .map_err(io(&tmp, "syncing the acknowledged offset"))
                .map_err(before)?;
        }
        let dst = dir.join(ACKED_FILE);
        fs::rename(&tmp, &dst)
            .map_err(io(&dst, "replacing the acknowledged offset"))
            .map_err(before)?;
        if durable {
            sync_dir(dir).map_err(|e| (e, true))?;
        }
        Ok(())
    }

    /// Copies the unacknowledged tail into a new generation and switches to it.
    fn compact(&mut self) -> Result<(), OutboxError> {
        let dir = self.opts.dir.clone();
        let old = log_path(&dir, self.generation);
        let new = log_path(&dir, self.generation + 1);
        let mut tail = Vec::new();
        if self.head < self.log_len {
            self.log
                .seek(SeekFrom::Start(self.head))
                .and_then(|_| {
                    (&self.log)
                        .take(self.log_len - self.head)
                        .read_to_end(&mut tail)
                })
                .map_err(io(&old, "reading the tail to compact"))?;
        }
        let mut log = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&new)
            .map_err(io(&new, "creating a compacted log"))?;
        log.write_all(&tail)
            .and_then(|_| log.sync_all())
            .map_err(io(&new, "writing a compacted log"))?;
        sync_dir(&dir)?;
        // `acked` names the new generation before this outbox switches to it: should that
        // fail, appends go on into the old log, which a restart keeps (it removes the new
        // one as a leftover), instead of into a log a restart would remove.
        let switched = self.write_acked_as(self.generation + 1, 0, true);
        if let Err((e, false)) = switched {
            let _ = fs::remove_file(&new);
            return Err(e);
        }
        let shift = self.head;
        self.generation += 1;
        self.head = 0;
        self.log_len = tail.len() as u64;
        for e in &mut self.entries {
            e.offset -= shift;
        }
        self.log = log;
        switched.map_err(|(e, _)| e)?;
        fs::remove_file(&old).map_err(io(&old, "removing the compacted log"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> OutboxOptions {
        OutboxOptions {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(3600),
            when_full: FullPolicy::RejectNew,
        }
    }

    fn put(o: &mut Outbox, n: usize) -> Vec<u64> {
        let batch = (0..n)
            .map(|i| (format!("t/{i}"), format!("payload {i}").into_bytes()))
            .collect();
        let (results, _) = o.append(batch);
        results.into_iter().map(|r| r.unwrap().seq).collect()
    }

    #[test]
    fn unacknowledged_records_come_back_in_order_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut o, back) = Outbox::open(opts(dir.path())).unwrap();
        assert!(back.is_empty());
        let seqs = put(&mut o, 5);
        assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
        o.ack(&[0, 1, 3]).unwrap();
        drop(o);
        let (mut o, back) = Outbox::open(opts(dir.path())).unwrap();
        // 3 was acknowledged out of order: it is redelivered (at least once), 0 and 1 are not.
        assert_eq!(
            back.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(back[0].topic, "t/2");
        assert_eq!(back[0].payload, b"payload 2");
        assert_eq!(put(&mut o, 1), vec![5], "sequence numbers continue");
    }

    /// An outbox in `dir` holding two records of half `COMPACT_EMPTY_BYTES` each: acknowledging
    /// both compacts it. Returns it, its options and the two sequence numbers.
    fn log_due_for_compaction(dir: &Path) -> (Outbox, OutboxOptions, Vec<u64>) {
        let mut options = opts(dir);
        options.max_bytes = 4 * COMPACT_EMPTY_BYTES;
        let (mut o, _) = Outbox::open(options.clone()).unwrap();
        let big = vec![7u8; COMPACT_EMPTY_BYTES as usize / 2];
        let (results, _) = o.append(vec![("t/a".into(), big.clone()), ("t/b".into(), big)]);
        let seqs = results.into_iter().map(|r| r.unwrap().seq).collect();
        (o, options, seqs)
    }

    #[test]
    fn everything_acknowledged_compacts_to_an_empty_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut o, options, seqs) = log_due_for_compaction(dir.path());
        o.ack(&seqs[..1]).unwrap();
        assert!(
            dir.path().join("outbox-0.log").exists(),
            "not all acknowledged yet"
        );
        o.ack(&seqs).unwrap();
        let logs: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log"))
            .collect();
        assert_eq!(logs, vec!["outbox-1.log".to_string()]);
        assert_eq!(
            fs::metadata(dir.path().join("outbox-1.log")).unwrap().len(),
            0
        );
        put(&mut o, 2);
        drop(o);
        let (_, back) = Outbox::open(options).unwrap();
        assert_eq!(back.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn a_torn_tail_is_truncated_and_a_corrupt_record_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut o, _) = Outbox::open(opts(dir.path())).unwrap();
        put(&mut o, 4);
        drop(o);
        let path = dir.path().join("outbox-0.log");
        let mut data = fs::read(&path).unwrap();
        let one = data.len() / 4;
        data[one + HEADER + 3] ^= 0xff; // flip a bit in record 1's body
        data.extend_from_slice(&encode(9, 0, "t/torn", b"cut short")[..20]); // torn tail
        fs::write(&path, &data).unwrap();
        let (mut o, back) = Outbox::open(opts(dir.path())).unwrap();
        assert_eq!(
            back.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![0, 2, 3]
        );
        assert_eq!(o.stats().corrupt_skipped, 2);
        assert_eq!(
            fs::metadata(&path).unwrap().len() as usize,
            4 * one,
            "tail cut"
        );
        assert_eq!(put(&mut o, 1), vec![4]);
        o.ack(&[0, 2, 3, 4]).unwrap();
        drop(o);
        let (_, back) = Outbox::open(opts(dir.path())).unwrap();
        assert!(back.is_empty(), "{back:?}");
    }

    #[test]
    fn garbage_files_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        for garbage in [
            vec![],
            b"MBX1".to_vec(),
            b"MBX1\xff\xff\xff\xff\0\0\0\0".to_vec(),
            vec![0u8; 100],
            (0..=255u8).cycle().take(5000).collect(),
        ] {
            fs::write(dir.path().join("outbox-0.log"), &garbage).unwrap();
            fs::write(dir.path().join(ACKED_FILE), b"junk").unwrap();
            let (mut o, back) = Outbox::open(opts(dir.path())).unwrap();
            assert!(back.is_empty());
            assert_eq!(put(&mut o, 1).len(), 1);
            drop(o);
            fs::remove_dir_all(dir.path()).unwrap();
            fs::create_dir_all(dir.path()).unwrap();
        }
    }

    #[test]
    fn a_full_outbox_rejects_new_reports_or_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let size = record_size("t/0", b"payload 0");
        let mut options = opts(dir.path());
        options.max_bytes = 3 * size;
        let (mut o, _) = Outbox::open(options.clone()).unwrap();
        assert_eq!(put(&mut o, 3), vec![0, 1, 2]);
        let (results, dropped) = o.append(vec![("t/0".into(), b"payload 0".to_vec())]);
        assert!(
            matches!(results[0], Err(OutboxError::Full { .. })),
            "{results:?}"
        );
        assert!(dropped.is_empty());
        assert_eq!(o.stats().rejected_full, 1);
        drop(o);
        options.when_full = FullPolicy::DropOldest;
        let (mut o, back) = Outbox::open(options).unwrap();
        assert_eq!(back.len(), 3, "nothing accepted was lost");
        let (results, dropped) = o.append(vec![("t/0".into(), b"payload 0".to_vec())]);
        assert_eq!(results[0].as_ref().unwrap().seq, 3);
        assert_eq!(dropped, vec![0]);
        assert_eq!(o.stats().dropped_full, 1);
        let (results, _) = o.append(vec![("t".into(), vec![0; 4 * size as usize])]);
        assert!(matches!(results[0], Err(OutboxError::TooLarge { .. })));
    }

    /// A payload over [`MAX_PAYLOAD`] is refused even by an outbox large enough for it: it
    /// would be written, then read back as corrupt (and lost) at the next start. The largest
    /// one allowed comes back whole.
    #[test]
    fn a_record_over_the_largest_payload_is_refused_and_the_largest_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = opts(dir.path());
        options.max_bytes = 4 * MAX_PAYLOAD as u64;
        let (mut o, _) = Outbox::open(options.clone()).unwrap();
        let topic = "t".repeat(u16::MAX as usize);
        let (results, _) = o.append(vec![(topic.clone(), vec![7; MAX_PAYLOAD + 1])]);
        let Err(OutboxError::TooLarge { max, .. }) = results[0] else {
            panic!("{:?}", results[0].as_ref().map(|r| r.seq))
        };
        assert_eq!(max, record_size(&topic, &[]) + MAX_PAYLOAD as u64);
        let (results, _) = o.append(vec![(topic.clone(), vec![7; MAX_PAYLOAD])]);
        assert_eq!(results[0].as_ref().unwrap().seq, 0);
        drop(o);
        let (_, back) = Outbox::open(options).unwrap();
        assert_eq!(
            back.len(),
            1,
            "the largest record is read back, not skipped"
        );
        assert_eq!(back[0].payload.len(), MAX_PAYLOAD);
    }

    /// A wall clock stepped forward (here: every record's wall-clock stamp set 50 years back,
    /// as NTP correcting a gateway that booted in 1970 does to records stamped before) does
    /// not expire records this process appended: their age is monotonic (recovered records
    /// have only their stamp, and are aged by it).
    #[test]
    fn a_wall_clock_step_does_not_expire_records_appended_in_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = opts(dir.path());
        options.max_age = Duration::from_secs(3600);
        let (mut o, _) = Outbox::open(options.clone()).unwrap();
        put(&mut o, 3);
        for e in &mut o.entries {
            e.enqueued_ms = e.enqueued_ms.saturating_sub(50 * 365 * 86_400_000);
        }
        let (results, dropped) = o.append(vec![("t/3".into(), b"payload 3".to_vec())]);
        assert!(dropped.is_empty(), "{dropped:?}");
        assert_eq!(results[0].as_ref().unwrap().seq, 3);
        assert_eq!(o.stats().dropped_expired, 0);
        assert_eq!(o.entries.len(), 4);
    }

    #[test]
    fn records_older_than_max_age_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = opts(dir.path());
        let (mut o, _) = Outbox::open(options.clone()).unwrap();
        put(&mut o, 2);
        drop(o);
        std::thread::sleep(Duration::from_millis(30));
        options.max_age = Duration::from_millis(10);
        let (o, back) = Outbox::open(options).unwrap();
        assert!(back.is_empty(), "{back:?}");
        assert_eq!(o.stats().dropped_expired, 2);
    }

    /// An age beyond u64 milliseconds (the outbox API takes any `Duration`) keeps records: it
    /// once wrapped to 384 ms and expired every record recovered at start.
    #[test]
    fn an_age_past_u64_milliseconds_keeps_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = opts(dir.path());
        let (mut o, _) = Outbox::open(options.clone()).unwrap();
        put(&mut o, 2);
        drop(o);
        std::thread::sleep(Duration::from_millis(500));
        options.max_age = Duration::from_secs(18_446_744_073_709_552);
        let (o, back) = Outbox::open(options).unwrap();
        assert_eq!(back.len(), 2, "{back:?}");
        assert_eq!(o.stats().dropped_expired, 0);
    }

    #[test]
    fn a_second_opener_is_refused_while_the_first_holds_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = Outbox::open(opts(dir.path())).unwrap();
        let err = Outbox::open(opts(dir.path())).unwrap_err();
        assert!(matches!(err, OutboxError::Locked(_)), "{err}");
        drop(first);
        assert!(Outbox::open(opts(dir.path())).is_ok());
    }

    #[test]
    fn without_the_offset_file_the_oldest_log_is_redelivered_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut o, _) = Outbox::open(opts(dir.path())).unwrap();
        put(&mut o, 3);
        o.ack(&[0]).unwrap();
        drop(o);
        fs::write(dir.path().join("outbox-1.log"), b"partial").unwrap();
        fs::remove_file(dir.path().join(ACKED_FILE)).unwrap();
        let (_, back) = Outbox::open(opts(dir.path())).unwrap();
        assert_eq!(
            back.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![0, 1, 2],
            "duplicates, never a loss"
        );
    }

    /// A compaction whose `acked` cannot be written (a full disk) leaves the outbox on its old
    /// log: reports appended afterwards survive a restart (they went into the new log, which
    /// the restart removed as a leftover of an interrupted compaction).
    #[test]
    fn a_compaction_that_cannot_switch_keeps_later_reports() {
        let dir = tempfile::tempdir().unwrap();
        let (mut o, options, seqs) = log_due_for_compaction(dir.path());
        // `acked.tmp` cannot be created: the compaction's switch fails.
        fs::create_dir(dir.path().join("acked.tmp")).unwrap();
        assert!(o.ack(&seqs).is_err(), "the failed switch is reported");
        fs::remove_dir(dir.path().join("acked.tmp")).unwrap();
        assert!(!dir.path().join("outbox-1.log").exists());
        let later = put(&mut o, 2);
        drop(o);
        let (_, back) = Outbox::open(options).unwrap();
        let back: Vec<u64> = back.iter().map(|r| r.seq).collect();
        assert!(
            later.iter().all(|s| back.contains(s)),
            "{later:?} in {back:?}"
        );
    }

    #[test]
    fn an_interrupted_compaction_keeps_the_complete_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut o, _) = Outbox::open(opts(dir.path())).unwrap();
        put(&mut o, 3);
        o.ack(&[0]).unwrap();
        drop(o);
        // A crash after the new generation was written but before `acked` switched to it.
        fs::write(dir.path().join("outbox-1.log"), b"partial").unwrap();
        let (_, back) = Outbox::open(opts(dir.path())).unwrap();
        assert_eq!(back.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert!(!dir.path().join("outbox-1.log").exists());
    }
}
