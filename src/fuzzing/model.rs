//! `log_model`: a sequence of log operations decoded from the input, checked against a model.
//!
//! The model is a `Vec` of acknowledged record values (index = offset), the synced boundary
//! (everything below it survived the last successful flush, `EveryAppend` append, clean close
//! or reopen), a floor for the log start, the batch boundaries (for `truncate_to`), and a
//! reference dedup model per producer (its batches in log order). Operations: client appends
//! from up to 3 idempotent producers and a plain one, retries of recent batches, wrong
//! sequences, roll-inducing large batches, flush, `truncate_to`, `advance_log_start`,
//! `apply_retention` on a manual clock, clean close + reopen, crash (process or power loss) +
//! reopen, armed I/O faults (`SimStorage::fail_after`), and a transactional producer's batches
//! and COMMIT/ABORT markers (`Log::append_marker`). After an error while a fault is
//! armed the log is crashed and reopened, and the model allows the outcome of the failed
//! operation either way.
//!
//! After every reopen: every record below the synced boundary is present and equal, nothing
//! past the written end exists, offsets are contiguous, `check_invariants()` holds, no value
//! appears twice (no idempotent batch was written twice), without retention the producer
//! table equals a replay of the log, and the last stable offset and a read_committed read from
//! the log start equal the model (no record of an aborted or open transaction, every committed
//! one whole). These are also checked after every transactional operation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use super::reader::ByteReader;
use super::recover::{
    assert_producers_replay, durable_recovery_point, read_from_start, sim_config, DIR,
};
use crate::clock::ManualClock;
use crate::config::{LogConfig, SyncMode};
use crate::error::Error;
use crate::format::batch::{BatchBuilder, RecordBatch};
use crate::io::sim::{CrashMode, FaultKind, SimStorage};
use crate::log::{AppendInfo, Isolation, Log};
use crate::producer::{Marker, MarkerKind};
use crate::types::{Offset, ProducerId};

/// A batch the harness sent, kept for retries.
#[derive(Debug, Clone)]
struct Sent {
    first_seq: i32,
    last_seq: i32,
    first_offset: u64,
    last_offset: u64,
    batch: RecordBatch,
    /// How many batches this producer had appended before this one.
    ordinal: u64,
}

#[derive(Debug, Clone, Default)]
struct Producer {
    /// Bumped when the log answers `UnknownProducerId`, as a client does (the `Producer`
    /// handle too): the log no longer knows where the producer's sequence stands.
    epoch: i16,
    next_seq: i32,
    /// Batches of this producer in the log, in log order.
    batches: Vec<Sent>,
    /// Batches appended so far (not lowered by truncation): a batch with
    /// `BATCHES_RETAINED` newer ones left the log's dedup window for good, whatever was cut
    /// since.
    appended: u64,
}

impl Producer {
    /// `BATCHES_RETAINED` newer batches were appended after `b`: it left the log's dedup
    /// window for good, whatever was cut since.
    fn left_window(&self, b: &Sent) -> bool {
        self.appended - b.ordinal > crate::producer::BATCHES_RETAINED as u64
    }
}

/// The transactional producer's id, and the `Pending::slot` of its batches and markers.
const TXN_PID: i64 = 10;
const TXN_SLOT: usize = 4;

/// One batch of the transactional producer in the log.
#[derive(Debug, Clone, Copy)]
struct TxnEvent {
    /// `Some(commit)` for a marker.
    marker: Option<bool>,
    epoch: i16,
    seq: i32,
    count: u64,
}

/// The transactional producer's batches by offset; its epoch, next sequence and open
/// transaction follow from them (what survives a cut is what the log has).
#[derive(Debug, Default)]
struct TxnModel {
    events: BTreeMap<u64, TxnEvent>,
    /// Retention made the log forget the producer: it writes no more.
    retired: bool,
}

impl TxnModel {
    /// (epoch, next sequence, first offset of the open transaction).
    fn state(&self) -> (i16, i32, Option<u64>) {
        let (mut epoch, mut seq, mut open) = (0, 0, None);
        for (&o, e) in &self.events {
            match e.marker {
                Some(_) => {
                    if e.epoch != epoch {
                        seq = 0;
                    }
                    epoch = e.epoch;
                    open = None;
                }
                None => {
                    epoch = e.epoch;
                    seq = e.seq + e.count as i32;
                    open = open.or(Some(o));
                }
            }
        }
        (epoch, seq, open)
    }

    /// Offsets a read_committed reader must not see: markers, and records of transactions
    /// aborted or still open.
    fn hidden(&self) -> BTreeSet<u64> {
        let mut hidden = BTreeSet::new();
        let mut txn: Vec<u64> = Vec::new();
        for (&o, e) in &self.events {
            match e.marker {
                Some(commit) => {
                    hidden.insert(o);
                    if !commit {
                        hidden.extend(txn.iter().copied());
                    }
                    txn.clear();
                }
                None => txn.extend(o..o + e.count),
            }
        }
        hidden.extend(txn);
        hidden
    }
}

/// An operation whose outcome is unknown (it failed while a fault was armed).
#[derive(Debug, Clone)]
struct Pending {
    values: Vec<Vec<u8>>,
    slot: usize,
    batch: RecordBatch,
}

struct Harness {
    sim: SimStorage,
    clock: Arc<ManualClock>,
    cfg: LogConfig,
    log: Option<Log>,
    values: Vec<Vec<u8>>,
    /// Offsets where batches start (the model's batch boundaries).
    starts: BTreeSet<u64>,
    synced: u64,
    start_floor: u64,
    /// Data was ever deleted from the front (the producer table may then keep more than a
    /// replay of the log shows).
    deleted: bool,
    producers: [Producer; 4],
    pending: Option<Pending>,
    /// A fault was armed since the last reopen: errors are expected.
    armed: bool,
    /// Why the log was poisoned, read before a close (diagnostics).
    poison_reason: Option<String>,
    /// A truncation failed since the last reopen: even a process crash may end the log
    /// anywhere down to the synced boundary.
    uncertain_end: bool,
    tag: u64,
    txn: TxnModel,
    /// `ONCELOG_FUZZ_TRACE` is set: print each step (to debug a finding).
    trace: bool,
}

/// Runs the model. It tolerates no finding: the three it once stepped around
/// (`regression_log_model_*` in `tests/fuzz_bodies.rs`) are fixed, and stepping around them
/// would hide a regression.
pub fn log_model(data: &[u8]) {
    let mut r = ByteReader::new(data);
    let sim = SimStorage::new(r.u64());
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let sync = match r.below(3) {
        0 => SyncMode::Os,
        1 => SyncMode::EveryAppend,
        _ => SyncMode::Interval { ms: 5, bytes: 1500 },
    };
    let mut cfg = sim_config(&sim, &clock, sync);
    if r.bool() {
        cfg.retention_bytes = Some(r.range(4096, 24_000));
    }
    if r.bool() {
        cfg.retention_ms = Some(r.range(1, 60_000));
    }
    let log = Log::open(DIR, cfg.clone()).expect("open an empty log");
    let mut h = Harness {
        sim,
        clock,
        cfg,
        log: Some(log),
        values: Vec::new(),
        starts: BTreeSet::new(),
        synced: 0,
        start_floor: 0,
        deleted: false,
        producers: Default::default(),
        pending: None,
        armed: false,
        poison_reason: None,
        uncertain_end: false,
        tag: 0,
        txn: TxnModel::default(),
        trace: std::env::var_os("ONCELOG_FUZZ_TRACE").is_some(),
    };
    let mut steps = 0;
    while !r.is_empty() && steps < 200 {
        steps += 1;
        h.step(&mut r);
    }
    // A clean close always leaves everything, and the next open needs no scan.
    if h.armed {
        h.crash_and_reopen(CrashMode::Process, 0);
    }
    let log = h.log.take().expect("open");
    log.close().expect("final clean close");
    h.reopen(true);
    h.log.take().expect("open").close().expect("close");
}

impl Harness {
    fn log(&self) -> &Log {
        self.log
            .as_ref()
            .expect("the harness keeps the log open between steps")
    }

    fn step(&mut self, r: &mut ByteReader<'_>) {
        let op = r.below(23);
        if self.trace {
            eprintln!(
                "op {op}: end {} synced {} start {}/{} armed {} txn {:?}",
                self.end(),
                self.synced,
                self.log().log_start_offset().0,
                self.start_floor,
                self.armed,
                self.txn.events
            );
        }
        match op {
            0..=6 => {
                let slot = r.below(4) as usize;
                self.append_new(r, slot, false);
            }
            7 => {
                let slot = r.below(4) as usize;
                self.append_new(r, slot, true);
            }
            8 | 9 => self.retry(r),
            10 => self.wrong_sequence(r),
            11 => self.flush(),
            12 => self.truncate(r),
            13 => self.advance_start(r),
            14 => {
                self.clock.advance(r.below(40_000) as i64);
                self.retention();
            }
            15 => self.close_and_reopen(),
            16 | 17 => {
                let mode = if r.bool() {
                    CrashMode::PowerLoss
                } else {
                    CrashMode::Process
                };
                self.crash_and_reopen(mode, r.u64());
            }
            20 | 21 => self.txn_data(r),
            22 => self.txn_marker(r),
            _ => {
                let kind = if r.bool() {
                    FaultKind::Eio
                } else {
                    FaultKind::Enospc
                };
                self.sim.fail_after(r.below(24), kind, r.bool());
                self.armed = true;
            }
        }
    }

    fn end(&self) -> u64 {
        self.values.len() as u64
    }

    /// A transactional batch of producer `TXN_PID` (opening or continuing its transaction).
    /// The transactional producer stops once its whole history is below the log start (the
    /// log may have forgotten it, see `check_read_committed`).
    fn txn_active(&mut self) -> bool {
        let start = self.log().log_start_offset().0;
        if !self.txn.events.is_empty() && self.txn.events.iter().all(|(o, e)| o + e.count <= start)
        {
            self.txn.retired = true;
        }
        !self.txn.retired
    }

    fn txn_data(&mut self, r: &mut ByteReader<'_>) {
        if !self.txn_active() {
            return;
        }
        self.tag += 1;
        let (epoch, seq, _) = self.txn.state();
        let mut b = BatchBuilder::new()
            .producer(ProducerId(TXN_PID), epoch, seq)
            .transactional();
        let mut values = Vec::new();
        for i in 0..r.range(1, 3) {
            let mut v = format!("T.t{}.{i}:", self.tag).into_bytes();
            v.resize((r.below(40) as usize).max(v.len()), b'-');
            b.push(self.clock_ms(), None, Some(&v));
            values.push(v);
        }
        let batch = b.build().expect("generated batch builds");
        match self.log().append(&batch) {
            Ok(info) => {
                assert!(!info.duplicate, "a new transactional batch was a duplicate");
                assert_eq!(info.base_offset.0, self.end(), "offsets are contiguous");
                self.record_append(TXN_SLOT, values, batch);
                self.check_read_committed(self.log());
            }
            Err(Error::UnknownProducerId { .. } | Error::OutOfOrderSequence { .. })
                if self.deleted
                    && self
                        .txn
                        .events
                        .keys()
                        .all(|&o| o < self.log().log_start_offset().0) =>
            {
                // Retention deleted every batch of the producer and the log forgot it.
                self.txn.retired = true;
            }
            Err(e) => self.failed(
                &e,
                Some(Pending {
                    values,
                    slot: TXN_SLOT,
                    batch,
                }),
            ),
        }
    }

    /// A COMMIT or ABORT marker ending the open transaction (with the epoch bump), its
    /// coordinator epoch the tag, so every marker's record value is unique.
    fn txn_marker(&mut self, r: &mut ByteReader<'_>) {
        let (epoch, _, open) = self.txn.state();
        if !self.txn_active() || open.is_none() {
            return;
        }
        self.tag += 1;
        let m = Marker {
            producer_id: ProducerId(TXN_PID),
            producer_epoch: epoch + 1,
            coordinator_epoch: i32::try_from(self.tag).unwrap_or(i32::MAX),
            kind: if r.bool() {
                MarkerKind::Commit
            } else {
                MarkerKind::Abort
            },
        };
        let batch = m.to_batch(self.clock_ms()).expect("a marker builds");
        let values: Vec<Vec<u8>> = batch
            .view()
            .records()
            .map(|rec| rec.expect("decodes").value.unwrap_or_default().to_vec())
            .collect();
        match self.log().append_marker(&m) {
            Ok(info) => {
                assert_eq!(info.base_offset.0, self.end(), "offsets are contiguous");
                self.record_append(TXN_SLOT, values, batch);
                self.check_read_committed(self.log());
            }
            Err(e) => self.failed(
                &e,
                Some(Pending {
                    values,
                    slot: TXN_SLOT,
                    batch,
                }),
            ),
        }
    }

    /// The last stable offset and a read_committed read from the log start equal the model.
    /// The background retention pass may move the log start meanwhile: then it starts over.
    fn check_read_committed(&self, log: &Log) {
        let hidden = self.txn.hidden();
        let (_, _, open) = self.txn.state();
        'again: for _ in 0..100 {
            let start = log.log_start_offset().0;
            let end = log.log_end_offset().0;
            let got_lso = log.last_stable_offset().0;
            // Once the producer's whole history lies below the log start, a rebuild after
            // power loss may know it only from snapshots that missed its newest batches or
            // markers (retention deleted them, power loss cut the snapshots that came after):
            // nothing of it can be read, and the log may hold the LSO at the log start for a
            // transaction it still thinks open, or not. The producer writes no more then.
            let below = !self.txn.events.is_empty()
                && self.txn.events.iter().all(|(o, e)| o + e.count <= start);
            let model_lso = open.map_or(end, |f| f.clamp(start, end));
            let tolerated = below && (got_lso == start || got_lso == end);
            let lso = if tolerated { got_lso } else { model_lso };
            if log.log_start_offset().0 != start {
                continue;
            }
            if got_lso != lso {
                eprintln!(
                    "txn model: {:?}\nlog producer: {:?}\nsnapshot load: {:?} report {:?}\nfiles {:?}",
                    self.txn.events,
                    log.producer_state().get(ProducerId(TXN_PID)),
                    log.snapshot_load(),
                    log.recovery_report(),
                    self.sim.file_names(Path::new(DIR))
                );
            }
            assert_eq!(
                got_lso, lso,
                "last stable offset (start {start}, end {end})"
            );
            let mut got = Vec::new();
            let mut aborted = Vec::new();
            let mut next = start;
            while next < lso {
                let f = match log.read_with(Offset(next), 1 << 16, Isolation::ReadCommitted) {
                    Ok(f) => f,
                    Err(Error::OffsetOutOfRange { .. }) => continue 'again,
                    Err(e) => panic!("read_committed at {next}: {e}"),
                };
                let Some(to) = f.fetch.end_offset() else {
                    break;
                };
                aborted.extend(f.aborted.iter().cloned());
                for rec in f.committed_records() {
                    let rec = rec.expect("a committed record decodes");
                    // The first batch may begin below the log start (a start inside a batch).
                    if rec.offset >= start {
                        got.push((rec.offset, rec.record.value.unwrap_or_default().to_vec()));
                    }
                }
                next = to;
            }
            let want: Vec<(u64, Vec<u8>)> = (start..lso)
                .filter(|o| !hidden.contains(o))
                .filter_map(|o| self.values.get(o as usize).map(|v| (o, v.clone())))
                .collect();
            if got != want {
                eprintln!(
                    "txn model: {:?}\naborted in the fetches: {aborted:?}\nlog producer: {:?}\n\
                     report {:?}\nfiles {:?}",
                    self.txn.events,
                    log.producer_state().get(ProducerId(TXN_PID)),
                    log.recovery_report(),
                    self.sim.file_names(Path::new(DIR))
                );
            }
            assert_eq!(got, want, "read_committed from {start} (LSO {lso})");
            return;
        }
        panic!("the log start kept moving");
    }

    fn build(
        &mut self,
        r: &mut ByteReader<'_>,
        slot: usize,
        big: bool,
    ) -> (Vec<Vec<u8>>, RecordBatch) {
        self.tag += 1;
        let records = if big { r.range(1, 2) } else { r.range(1, 4) } as i32;
        let value_len = if big {
            r.range(500, 900) as usize
        } else {
            r.below(40) as usize
        };
        let mut b = BatchBuilder::new();
        let mut values = Vec::new();
        for i in 0..records {
            let mut v = format!("p{slot}.t{}.{i}:", self.tag).into_bytes();
            v.resize(value_len.max(v.len()), b'.');
            b.push(self.clock_ms(), None, Some(&v));
            values.push(v);
        }
        if slot > 0 {
            let p = &self.producers[slot];
            b.set_producer(ProducerId(slot as i64), p.epoch, p.next_seq);
        }
        (values, b.build().expect("generated batch builds"))
    }

    fn clock_ms(&self) -> i64 {
        use crate::clock::Clock;
        self.clock.now_ms()
    }

    /// A producer whose newest batch is below the log start: after a rebuild the log may have
    /// forgotten it (only snapshots keep producers whose batches were deleted).
    fn fragile(&self, slot: usize) -> bool {
        let start = self.log().log_start_offset().0;
        self.producers[slot]
            .batches
            .last()
            .is_some_and(|b| b.last_offset < start)
    }

    /// Whether a rebuild may rightly have forgotten this producer's batches from sequence
    /// `expected` on: they all lie below the log start (only the dedup window and snapshots
    /// remember them) and each left the 5-batch window before (so neither has to). A batch still
    /// in the window must never be forgotten (finding 2).
    fn forgotten_tail(&self, slot: usize, expected: i32) -> bool {
        let p = &self.producers[slot];
        expected < p.next_seq
            && self.fragile(slot)
            && p.batches
                .iter()
                .filter(|b| b.last_seq >= expected)
                .all(|b| b.first_seq >= expected && p.left_window(b))
    }

    fn record_append(&mut self, slot: usize, values: Vec<Vec<u8>>, batch: RecordBatch) {
        let first = self.end();
        self.starts.insert(first);
        let n = values.len() as i32;
        self.values.extend(values);
        if slot == TXN_SLOT {
            let h = batch.header();
            let marker = Marker::of(&batch.view()).expect("a built marker decodes");
            self.txn.events.insert(
                first,
                TxnEvent {
                    marker: marker.map(|m| m.kind == MarkerKind::Commit),
                    epoch: h.producer_epoch,
                    seq: h.base_sequence,
                    count: n as u64,
                },
            );
        } else if slot > 0 {
            let p = &mut self.producers[slot];
            let first_seq = batch.header().base_sequence;
            p.batches.push(Sent {
                first_seq,
                last_seq: first_seq + n - 1,
                first_offset: first,
                last_offset: first + n as u64 - 1,
                batch,
                ordinal: p.appended,
            });
            p.appended += 1;
            p.next_seq = first_seq + n;
        }
        if self.cfg.sync == SyncMode::EveryAppend {
            self.synced = self.end();
        }
    }

    fn append_new(&mut self, r: &mut ByteReader<'_>, slot: usize, big: bool) {
        let (values, batch) = self.build(r, slot, big);
        let result = self.log().append(&batch);
        match result {
            Ok(info) => {
                if info.duplicate {
                    self.dump();
                }
                assert!(
                    !info.duplicate,
                    "a new batch was answered as a duplicate: {info:?}"
                );
                assert_eq!(info.base_offset.0, self.end(), "offsets are contiguous");
                assert_eq!(info.last_offset.0, self.end() + values.len() as u64 - 1);
                self.record_append(slot, values, batch);
                assert_eq!(self.log().log_end_offset().0, self.end());
            }
            Err(Error::UnknownProducerId { .. }) if slot > 0 && self.fragile(slot) => {
                // Forgotten after a rebuild, or its window's tail is unverified: start the
                // producer over at sequence 0 of a new epoch.
                let epoch = self.producers[slot].epoch + 1;
                self.producers[slot] = Producer {
                    epoch,
                    ..Producer::default()
                };
            }
            Err(Error::OutOfOrderSequence {
                expected_sequence, ..
            }) if slot > 0 && self.forgotten_tail(slot, expected_sequence) => {
                // The rebuild knew the producer only up to an older batch: continue from there.
                assert_eq!(self.log().log_end_offset().0, self.end());
                let p = &mut self.producers[slot];
                p.batches.retain(|b| b.last_seq < expected_sequence);
                p.next_seq = expected_sequence;
            }
            Err(e) => self.failed(
                &e,
                Some(Pending {
                    values,
                    slot,
                    batch,
                }),
            ),
        }
    }

    fn retry(&mut self, r: &mut ByteReader<'_>) {
        let slot = r.range(1, 3) as usize;
        let n = self.producers[slot].batches.len();
        if n == 0 {
            return;
        }
        let back = r.below(n.min(7) as u64) as usize;
        let sent = self.producers[slot].batches[n - 1 - back].clone();
        let start = self.log().log_start_offset().0;
        // Left the dedup window once: a rebuild (truncation, recovery) may or may not find it
        // again in an older snapshot.
        let evicted = self.producers[slot].left_window(&sent);
        let in_window =
            !evicted && back < crate::producer::BATCHES_RETAINED && sent.first_offset >= start;
        // The log may have forgotten the producer: its remaining batches all lie below the log
        // start and the batch left the window before, so no rebuild must remember it. Then a
        // retry at sequence 0 is a new producer's first batch (Kafka accepts it too), and its
        // first copy is unreadable.
        let may_restart = evicted && sent.first_seq == 0 && self.fragile(slot);
        let end_before = self.log().log_end_offset();
        match self.log().append(&sent.batch) {
            Ok(AppendInfo {
                duplicate: true,
                base_offset,
                last_offset,
                ..
            }) => {
                assert_eq!(
                    (base_offset.0, last_offset.0),
                    (sent.first_offset, sent.last_offset),
                    "a retry was answered with other offsets"
                );
                assert_eq!(self.log().log_end_offset(), end_before);
            }
            Ok(info) if may_restart => {
                assert_eq!(info.base_offset.0, self.end(), "offsets are contiguous");
                let values = sent
                    .batch
                    .view()
                    .records()
                    .map(|rec| {
                        let rec = rec.expect("a built batch decodes");
                        rec.value.unwrap_or_default().to_vec()
                    })
                    .collect();
                self.producers[slot].batches.clear();
                self.record_append(slot, values, sent.batch);
            }
            Ok(info) => panic!(
                "a retry of producer {slot} seq {}..={} (offsets {}..={}) was appended again \
                 at {:?}",
                sent.first_seq, sent.last_seq, sent.first_offset, sent.last_offset, info
            ),
            Err(
                Error::DuplicateSequence { .. }
                | Error::OutOfOrderSequence { .. }
                | Error::UnknownProducerId { .. },
            ) if !in_window => {
                assert_eq!(self.log().log_end_offset(), end_before);
            }
            Err(e) if in_window && !self.armed => panic!(
                "retry of a retained batch of producer {slot} (offsets {}..={}, back {back}) \
                 failed: {e}",
                sent.first_offset, sent.last_offset
            ),
            Err(e) => self.failed(&e, None),
        }
    }

    fn wrong_sequence(&mut self, r: &mut ByteReader<'_>) {
        let slot = r.range(1, 3) as usize;
        let gap = r.range(1, 5) as i32;
        let (_, batch) = self.build(r, slot, false);
        let h = *batch.header();
        let mut b = BatchBuilder::new();
        for rec in batch.view().records() {
            let rec = rec.expect("decodes");
            b.push(rec.timestamp, rec.key, rec.value);
        }
        b.set_producer(h.producer_id, h.producer_epoch, h.base_sequence + gap);
        let batch = b.build().expect("builds");
        let end_before = self.log().log_end_offset();
        match self.log().append(&batch) {
            Ok(info) => {
                panic!("producer {slot} batch with a sequence gap of {gap} was accepted: {info:?}")
            }
            Err(Error::OutOfOrderSequence { .. } | Error::UnknownProducerId { .. }) => {
                assert_eq!(self.log().log_end_offset(), end_before);
            }
            Err(e) => self.failed(&e, None),
        }
    }

    fn flush(&mut self) {
        match self.log().flush() {
            Ok(()) => {
                self.synced = self.end();
                assert!(self.log().recovery_point().0 >= self.end());
            }
            Err(e) => {
                if matches!(e, Error::Io { .. }) {
                    assert!(
                        self.log().is_poisoned(),
                        "a failed sync must poison the log: {e}"
                    );
                }
                self.failed(&e, None);
            }
        }
    }

    fn truncate(&mut self, r: &mut ByteReader<'_>) {
        let start = self.log().log_start_offset().0;
        let end = self.end();
        let target = r.range(start, end.max(start));
        let expect = if target >= end {
            end
        } else {
            *self.starts.range(..=target).next_back().unwrap_or(&0)
        };
        match self.log().truncate_to(Offset(target)) {
            Ok(new_end) => {
                // Background retention may have deleted the segment holding `target` between
                // choosing it and the call; below every segment the log starts exactly at the
                // target (it no longer knows the batch boundaries there).
                let below_all = new_end.0 == target
                    && self
                        .log()
                        .segments()
                        .first()
                        .is_some_and(|s| s.base_offset() == target);
                assert!(
                    new_end.0 == expect || below_all,
                    "truncate_to({target}) ended the log at {} instead of {expect}",
                    new_end.0
                );
                // Truncating into the batch that holds the log start lowers the start with it.
                let now = self.log().log_start_offset().0;
                assert!(now <= new_end.0, "log start {now} above the truncated end");
                self.start_floor = self.start_floor.min(now);
                self.cut(new_end.0);
                assert_eq!(self.log().log_end_offset().0, self.end());
            }
            Err(e) => {
                // The cut may or may not have happened; the synced boundary is lowered first.
                self.synced = self.synced.min(expect);
                self.start_floor = self.start_floor.min(expect);
                self.uncertain_end = true;
                self.failed(&e, None);
            }
        }
    }

    /// Forgets everything at or past `end` (truncation, or a recovery that ended there).
    fn cut(&mut self, end: u64) {
        self.values.truncate(end as usize);
        // A batch reaching past the end is gone whole (a truncation below every segment ends
        // the log at the exact target, possibly inside a batch that retention deleted).
        self.txn.events.retain(|o, e| o + e.count <= end);
        self.synced = self.synced.min(end);
        self.starts = self.starts.range(..end).copied().collect();
        for p in &mut self.producers[1..] {
            p.batches.retain(|b| b.last_offset < end);
            p.next_seq = p.batches.last().map_or(0, |b| b.last_seq + 1);
        }
    }

    fn advance_start(&mut self, r: &mut ByteReader<'_>) {
        let start = self.log().log_start_offset().0;
        let target = r.range(start, self.end().max(start));
        match self.log().advance_log_start(Offset(target)) {
            Ok(_) => {
                let now = self.log().log_start_offset().0;
                assert!(
                    now >= target,
                    "log start {now} below the requested {target}"
                );
                self.start_floor = now;
                self.deleted |= now > 0;
            }
            Err(e) => self.failed(&e, None),
        }
    }

    fn retention(&mut self) {
        match self.log().apply_retention() {
            Ok(_) => {
                let now = self.log().log_start_offset().0;
                assert!(now >= self.start_floor);
                self.start_floor = now;
                self.deleted |= now > 0;
            }
            Err(e) => self.failed(&e, None),
        }
    }

    /// An operation failed with `e`. Without an armed fault that is a bug; with one, the log
    /// is crashed and reopened and the model allows the failed operation either way.
    fn failed(&mut self, e: &Error, pending: Option<Pending>) {
        self.dump();
        assert!(
            self.armed,
            "operation failed without an injected fault: {e}"
        );
        if self.log().is_poisoned() {
            let (_, batch) = {
                let mut b = BatchBuilder::new();
                b.push(0, None, Some(b"poisoned"));
                ((), b.build().expect("builds"))
            };
            assert!(
                self.log().append(&batch).is_err(),
                "a poisoned log accepted an append"
            );
        }
        self.pending = pending;
        self.crash_and_reopen(CrashMode::Process, 0);
    }

    /// With `ONCELOG_FUZZ_TRACE`: the model's and the log's producers, batches and files.
    fn dump(&self) {
        if self.trace {
            eprintln!(
                "model producers: {:#?}",
                self.producers.each_ref().map(|p| p
                    .batches
                    .iter()
                    .map(|b| (b.first_seq, b.last_seq, b.first_offset, b.last_offset))
                    .collect::<Vec<_>>())
            );
            eprintln!("log producers: {:?}", self.log().producer_state());
            for h in super::recover::read_headers(self.log()) {
                eprintln!(
                    "  batch {}..={} pid {} seq {}",
                    h.base_offset,
                    h.last_offset(),
                    h.producer_id.0,
                    h.base_sequence
                );
            }
            eprintln!(
                "snapshot load: {:?} files {:?}",
                self.log().snapshot_load(),
                self.sim.file_names(Path::new(DIR))
            );
        }
    }

    fn close_and_reopen(&mut self) {
        let log = self.log.take().expect("open");
        let handle = log.clone();
        let result = log.close();
        self.poison_reason = handle.poison_reason();
        drop(handle);
        match result {
            Ok(()) => {
                self.synced = self.end();
                self.reopen(true);
            }
            Err(e) => {
                assert!(
                    self.armed,
                    "clean close failed without an injected fault: {e} (poisoned by: {:?})",
                    self.poison_reason
                );
                self.sim.crash_with_seed(CrashMode::Process, 0);
                self.reopen(false);
            }
        }
    }

    fn crash_and_reopen(&mut self, mode: CrashMode, seed: u64) {
        let log = self.log.take().expect("open");
        log.simulate_crash();
        self.sim.crash_with_seed(mode, seed);
        let exact = mode == CrashMode::Process && !self.uncertain_end;
        self.reopen_after_crash(exact);
    }

    fn reopen(&mut self, clean: bool) {
        let exact = !self.uncertain_end;
        self.reopen_after_crash(exact);
        if clean {
            let sizes: Vec<(String, Option<u64>)> = self
                .sim
                .file_names(Path::new(DIR))
                .into_iter()
                .map(|n| {
                    let len = crate::io::Storage::open(
                        &self.sim,
                        &Path::new(DIR).join(&n),
                        crate::io::OpenMode::Read,
                    )
                    .and_then(|f| f.len())
                    .ok();
                    (n, len)
                })
                .collect();
            assert!(
                self.log().recovery_report().clean_shutdown,
                "a clean close was not recognised: {:?}, files {sizes:?}",
                self.log().recovery_report()
            );
        }
    }

    /// Reopens and checks the recovered log against the model; `exact` when nothing written
    /// can have been lost (a clean close or a process crash).
    fn reopen_after_crash(&mut self, exact: bool) {
        self.sim.clear_fault();
        self.armed = false;
        self.uncertain_end = false;
        let rp = durable_recovery_point(&self.sim, Path::new(DIR));
        let log = match Log::open(DIR, self.cfg.clone()) {
            Ok(log) => log,
            Err(e) => panic!(
                "reopen failed (model end {}, synced {}, durable recovery point {rp}): {e}",
                self.end(),
                self.synced
            ),
        };
        log.check_invariants();
        let end = log.log_end_offset().0;
        let start = log.log_start_offset().0;
        if self.trace {
            eprintln!(
                "reopened: start {start} end {end} txn producer {:?} snapshots {:?} files {:?}",
                log.producer_state().get(ProducerId(TXN_PID)),
                log.snapshot_load(),
                self.sim.file_names(Path::new(DIR))
            );
        }
        let pending = self.pending.take();
        let written = self.end() + pending.as_ref().map_or(0, |p| p.values.len() as u64);
        assert!(
            end >= self.synced,
            "recovered end {end} below the synced boundary {} (recovery point {rp})",
            self.synced
        );
        assert!(
            end <= written,
            "recovered end {end} past the written end {written}"
        );
        if exact {
            assert!(
                end >= self.end(),
                "a process crash lost acknowledged records: {end} < {}",
                self.end()
            );
        }
        assert!(
            start >= self.start_floor.min(end),
            "log start went back: {start} < {}",
            self.start_floor
        );
        // Adopt the pending batch if it made it, then forget whatever did not.
        if let Some(p) = pending {
            if end >= self.end() + p.values.len() as u64 {
                self.record_append(p.slot, p.values, p.batch);
            }
        }
        self.cut(end);
        // The background retention pass may move the log start meanwhile (never backwards).
        let (start, got) = read_from_start(&log);
        assert!(start >= self.start_floor.min(end), "log start went back");
        assert_eq!(
            got.len() as u64,
            end - start,
            "offsets are contiguous from the log start"
        );
        let mut seen = BTreeSet::new();
        for (o, v) in &got {
            assert_eq!(Some(v), self.values.get(*o as usize), "value at offset {o}");
            assert!(seen.insert(v.clone()), "value at offset {o} appears twice");
        }
        if !self.deleted && start == 0 {
            assert_producers_replay(&log);
        } else {
            log.producer_state().check_invariants();
        }
        self.check_read_committed(&log);
        self.synced = end;
        self.start_floor = start;
        self.deleted |= start > 0;
        self.log = Some(log);
    }
}
