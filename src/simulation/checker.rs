//! The invariants a simulation run must keep (docs/replication.md; INV-1, 2, 6, 7, 8 as defined
//! in docs/invariants.md), checked while it runs and at its end:
//!
//! 1. no acknowledged (acks=all) record is lost: it is in the final log at the offsets the
//!    acknowledgement named — and every acknowledgement of one batch names the same offsets;
//! 2. nothing a consumer saw below a high-water mark ever changes or disappears;
//! 3. a leader's high-water mark never moves backwards within its leader epoch;
//! 4. no (producer, sequence) appears twice in the log, and each producer's records are in
//!    sequence order;
//! 5. the replicas hold identical batches below their high-water marks;
//! 6. a read_committed consumer (at the leader's last stable offset) never sees a record of an
//!    aborted transaction nor of an undecided one, and at the end sees every committed
//!    transaction whole, in order, once.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::client::SimClient;
use crate::log::AppendInfo;
use crate::replica::Replica;
use crate::replication::LeaderAndIsr;
use crate::types::{increment_sequence, Offset, ProducerId, Sequence};

/// Whether the leader's LSO is below its HW (a transaction still undecided).
fn f_lso_below_hw(leader: &Replica) -> bool {
    let hw = leader.high_watermark();
    leader.log().last_stable_offset_at(hw) < hw
}

#[derive(Debug, Default)]
pub struct Checker {
    /// (producer, first sequence of the batch) -> acknowledged (base, last) offsets.
    acked: HashMap<(i64, Sequence), (u64, u64)>,
    /// offset -> (producer, sequence) of every record seen below a leader's HW.
    committed: BTreeMap<u64, (i64, Sequence)>,
    scan_from: u64,
    /// (replica, leader epoch) -> the highest HW it had while leading in that epoch.
    leader_hw: HashMap<(u32, i32), u64>,
    last_epoch: Option<i32>,
    /// (producer, transaction) -> its records' counters, and its decision once made.
    txns: HashMap<(i64, u64), (Vec<Sequence>, Option<bool>)>,
    /// Where the read_committed consumer reads next.
    rc_from: u64,
    /// read_committed records checked while running.
    pub rc_records_checked: u64,
}

fn parse_value(v: &[u8]) -> Option<(i64, Sequence)> {
    let s = std::str::from_utf8(v).ok()?;
    let s = s.split_once(":x").map_or(s, |(a, _)| a);
    let (p, q) = s.strip_prefix('p')?.split_once(":s")?;
    Some((p.parse().ok()?, q.parse().ok()?))
}

/// The transaction number of a transactional record's value.
fn parse_txn(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    s.split_once(":x")?.1.parse().ok()
}

/// Every record of `r` below `limit`: (offset, producer, sequence), plus each batch's bytes.
type Records = Vec<(u64, (i64, Sequence))>;
type Batches = Vec<(u64, Vec<u8>)>;
fn read_log(r: &Replica, limit: Offset) -> Result<(Records, Batches), String> {
    let mut records = Vec::new();
    let mut batches = Vec::new();
    let mut next = r.log().log_start_offset();
    while next < limit {
        let fetch = r
            .log()
            .read_bounded(next, 1 << 20, limit)
            .map_err(|e| format!("r{} read at {next:?}: {e}", r.id().0))?;
        if fetch.is_empty() {
            break;
        }
        let before = next;
        for view in fetch.batches() {
            let view = view.map_err(|e| format!("r{} read: {e}", r.id().0))?;
            let base = view.base_offset();
            batches.push((base, view.as_bytes().to_vec()));
            next = next.max(Offset(view.last_offset() + 1));
            if view.header().is_control() {
                continue;
            }
            for rec in view.records() {
                let rec = rec.map_err(|e| format!("r{} record at {base}: {e}", r.id().0))?;
                let v = rec
                    .value
                    .and_then(parse_value)
                    .ok_or_else(|| format!("r{} foreign record at {base}", r.id().0))?;
                records.push((base + rec.offset_delta as u64, v));
            }
        }
        if next == before {
            return Err(format!("r{} read makes no progress at {next:?}", r.id().0));
        }
    }
    Ok((records, batches))
}

impl Checker {
    /// Returns whether the record names a new leader epoch.
    pub fn note_record(&mut self, rec: &LeaderAndIsr) -> bool {
        let new = self.last_epoch != Some(rec.leader_epoch);
        self.last_epoch = Some(rec.leader_epoch);
        new
    }

    /// A producer got an acknowledgement for the batch starting at `seq`.
    pub fn acked(
        &mut self,
        pid: ProducerId,
        seq: Sequence,
        count: u32,
        info: AppendInfo,
    ) -> Result<(), String> {
        let (base, last) = (info.base_offset.0, info.last_offset.0);
        if last + 1 - base != u64::from(count) {
            return Err(format!(
                "producer {} seq {seq}: acknowledged {base}..={last} for {count} records",
                pid.0
            ));
        }
        match self.acked.insert((pid.0, seq), (base, last)) {
            Some(prev) if prev != (base, last) => Err(format!(
                "producer {} seq {seq}: acknowledged at {prev:?} and again at {:?}: written twice",
                pid.0,
                (base, last)
            )),
            _ => Ok(()),
        }
    }

    /// A consumer reads the leader's committed data; what it saw must never change.
    pub fn observe_committed(&mut self, leader: &Replica) -> Result<(), String> {
        let hw = leader.high_watermark();
        if self.scan_from >= hw.0 || self.scan_from < leader.log().log_start_offset().0 {
            return Ok(());
        }
        let fetch = match leader.read_committed(Offset(self.scan_from), 64 << 10) {
            Ok(f) => f,
            Err(_) => return Ok(()),
        };
        for view in fetch.batches() {
            let view = view.map_err(|e| format!("committed read: {e}"))?;
            let base = view.base_offset();
            self.scan_from = self.scan_from.max(view.last_offset() + 1);
            if view.header().is_control() {
                continue;
            }
            for rec in view.records() {
                let rec = rec.map_err(|e| format!("committed record at {base}: {e}"))?;
                let off = base + rec.offset_delta as u64;
                let v = rec.value.and_then(parse_value).ok_or("foreign record")?;
                if let Some(prev) = self.committed.insert(off, v) {
                    if prev != v {
                        return Err(format!(
                            "committed offset {off} held {prev:?} and now {v:?} (leader r{})",
                            leader.id().0
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// A transactional client created records `first..first + count` in transaction `txn`.
    pub fn txn_records(&mut self, pid: ProducerId, txn: u64, first: Sequence, count: u32) {
        let e = self.txns.entry((pid.0, txn)).or_default();
        e.0.extend((0..count as i32).map(|i| first + i));
    }

    /// A transactional client decided its transaction (before sending the marker).
    pub fn txn_decided(&mut self, pid: ProducerId, txn: u64, commit: bool) {
        self.txns.entry((pid.0, txn)).or_default().1 = Some(commit);
    }

    /// A read_committed consumer reads the leader from where it stopped, up to the LSO: every
    /// transactional record it sees must be of a transaction decided COMMIT.
    pub fn observe_read_committed(&mut self, leader: &Replica) -> Result<(), String> {
        let start = leader.log().log_start_offset().0;
        let from = Offset(self.rc_from.max(start));
        let Ok(f) = leader.read_isolated(from, 64 << 10, crate::log::Isolation::ReadCommitted)
        else {
            return Ok(());
        };
        if f.last_stable_offset > f.high_watermark {
            return Err(format!(
                "r{} LSO {:?} above its HW {:?}",
                leader.id().0,
                f.last_stable_offset,
                f.high_watermark
            ));
        }
        for r in f.committed_records() {
            let r = r.map_err(|e| format!("read_committed: {e}"))?;
            self.rc_records_checked += 1;
            self.check_visible(r.record.value)?;
            self.rc_from = self.rc_from.max(r.offset + 1);
        }
        if let Some(end) = f.fetch.end_offset() {
            self.rc_from = self.rc_from.max(end);
        }
        Ok(())
    }

    fn check_visible(&self, value: Option<&[u8]>) -> Result<(), String> {
        let v = value.ok_or("record without a value")?;
        let Some(txn) = parse_txn(v) else {
            return Ok(());
        };
        let (pid, n) = parse_value(v).ok_or("foreign record")?;
        match self.txns.get(&(pid, txn)).and_then(|t| t.1) {
            Some(true) => Ok(()),
            Some(false) => Err(format!(
                "read_committed saw record {n} of producer {pid}'s aborted transaction {txn}"
            )),
            None => Err(format!(
                "read_committed saw record {n} of producer {pid}'s undecided transaction {txn}"
            )),
        }
    }

    /// Check 6 at the end: a read_committed read of the whole log sees exactly the records of
    /// committed transactions (and the plain ones), each once, in each producer's order.
    fn final_read_committed(&self, leader: &Replica) -> Result<(), String> {
        let mut next = leader.log().log_start_offset();
        let mut seen: HashMap<(i64, u64), Vec<Sequence>> = HashMap::new();
        loop {
            let f = leader
                .read_isolated(next, 1 << 20, crate::log::Isolation::ReadCommitted)
                .map_err(|e| format!("final read_committed: {e}"))?;
            let Some(end) = f.fetch.end_offset() else {
                break;
            };
            for r in f.committed_records() {
                let r = r.map_err(|e| format!("final read_committed: {e}"))?;
                self.check_visible(r.record.value)?;
                let v = r.record.value.unwrap_or_default();
                if let (Some(txn), Some((pid, n))) = (parse_txn(v), parse_value(v)) {
                    seen.entry((pid, txn)).or_default().push(n);
                }
            }
            next = Offset(end);
        }
        if f_lso_below_hw(leader) {
            return Err("a transaction is still open at the end".into());
        }
        for (key, (records, decided)) in &self.txns {
            let got = seen.get(key).map(Vec::as_slice).unwrap_or(&[]);
            match decided {
                Some(true) if got != records.as_slice() => {
                    return Err(format!(
                    "committed transaction {key:?}: read_committed saw {got:?}, wrote {records:?}"
                ))
                }
                Some(false) | None if !got.is_empty() => {
                    return Err(format!("transaction {key:?} ({decided:?}) seen: {got:?}"))
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn observe_leader_hw(&mut self, r: &Replica) -> Result<(), String> {
        if !r.is_leader() {
            return Ok(());
        }
        let key = (r.id().0, r.leader_epoch());
        let hw = r.high_watermark().0;
        let prev = self.leader_hw.entry(key).or_insert(hw);
        if hw < *prev {
            return Err(format!(
                "leader r{} HW moved backwards in epoch {}: {} -> {hw}",
                key.0, key.1, *prev
            ));
        }
        *prev = hw;
        Ok(())
    }

    pub fn final_check(
        &self,
        leader: &Replica,
        replicas: &[&Replica],
        clients: &[SimClient],
    ) -> Result<(), String> {
        let (records, batches) = read_log(leader, leader.high_watermark())?;
        let at: HashMap<u64, (i64, Sequence)> = records.iter().copied().collect();
        // 1. acknowledged records
        for (&(pid, seq), &(base, last)) in &self.acked {
            for (i, off) in (base..=last).enumerate() {
                let want = (pid, increment_sequence(seq, i as i32));
                if at.get(&off) != Some(&want) {
                    return Err(format!(
                        "acknowledged record {want:?} at offset {off} lost: the log has {:?}",
                        at.get(&off)
                    ));
                }
            }
        }
        // 2. what consumers saw
        for (off, v) in &self.committed {
            if at.get(off) != Some(v) {
                return Err(format!(
                    "committed offset {off} ({v:?}) is now {:?}",
                    at.get(off)
                ));
            }
        }
        // 4. no duplicates, per-producer order, nothing missing
        let mut seen = HashSet::new();
        let mut last_seq: HashMap<i64, Sequence> = HashMap::new();
        for (off, (pid, seq)) in &records {
            if !seen.insert((*pid, *seq)) {
                return Err(format!(
                    "producer {pid} sequence {seq} twice (again at {off})"
                ));
            }
            if let Some(prev) = last_seq.insert(*pid, *seq) {
                if *seq != increment_sequence(prev, 1) {
                    return Err(format!(
                        "producer {pid}: sequence {seq} at {off} follows {prev}"
                    ));
                }
            }
        }
        for c in clients {
            let n = c.sent_records();
            let have = last_seq.get(&c.pid().0).map_or(0, |s| s + 1);
            if have != n {
                return Err(format!(
                    "producer {}: {n} records sent and acknowledged, {have} in the log",
                    c.pid().0
                ));
            }
        }
        // 6. read_committed
        self.final_read_committed(leader)?;
        // 5. replicas agree below their HW
        let by_base: HashMap<u64, &Vec<u8>> = batches.iter().map(|(b, v)| (*b, v)).collect();
        for r in replicas {
            let (_, theirs) = read_log(r, r.high_watermark())?;
            for (base, bytes) in &theirs {
                if by_base.get(base) != Some(&bytes) {
                    return Err(format!(
                        "r{} batch at {base} differs from the leader's below its HW",
                        r.id().0
                    ));
                }
            }
        }
        Ok(())
    }
}
