//! The transaction-state log: an oncelog [`Log`] of state records (`record.rs`), replayed at
//! open into [`TxnStates`], appended to before every decision is acted on, and kept short by
//! rewriting the live records ("key-latest by rewrite").
//!
//! Forced settings: `SyncMode::EveryAppend` (a decision is durable before the coordinator acts
//! on it or answers), and no size or time retention (only a rewrite may delete records, and
//! only records whose key has a later copy).
//!
//! **Rewrite rule.** When the log holds more than `REWRITE_RATIO` × live keys +
//! `REWRITE_MIN_RECORDS` records, every live record is appended again and then the log start
//! moves to the first of those copies (`Log::advance_log_start`). A crash anywhere in between
//! replays to the same state: the copies equal the latest records they copy, and the latest
//! record of a key wins.

use std::path::{Path, PathBuf};

use super::record::{self, TxnRecord};
use super::state::TxnStates;
use crate::config::{LogConfig, SyncMode};
use crate::error::{Error, Result};
use crate::format::batch::{BatchBuilder, RecordBatch};
use crate::log::Log;
use crate::types::{Offset, ProducerId};

/// Records per live key allowed to pile up before a rewrite.
pub const REWRITE_RATIO: u64 = 4;
/// Records always allowed before a rewrite (so a small state is not rewritten constantly).
pub const REWRITE_MIN_RECORDS: u64 = 1000;

/// Bytes a record adds to a batch beyond its key and value (length, attributes, deltas, key and
/// value lengths, header count; varints of at most 5 or 10 bytes).
const RECORD_OVERHEAD: usize = 32;

/// True when a log of `records` records over `live` live keys is due for a rewrite.
pub fn needs_rewrite(records: u64, live: u64) -> bool {
    records
        > REWRITE_RATIO
            .saturating_mul(live)
            .saturating_add(REWRITE_MIN_RECORDS)
}

/// The state log and how many records it holds from its start.
#[derive(Debug)]
pub(super) struct StateLog {
    log: Log,
    dir: PathBuf,
    records: u64,
}

impl StateLog {
    /// Opens the log at `dir` with the forced settings and replays it.
    pub fn open(dir: &Path, mut config: LogConfig) -> Result<(StateLog, TxnStates)> {
        config.sync = SyncMode::EveryAppend;
        config.retention_ms = None;
        config.retention_bytes = None;
        let log = Log::open(dir, config)?;
        let mut states = TxnStates::new();
        let mut this = StateLog {
            log,
            dir: dir.to_path_buf(),
            records: 0,
        };
        this.records = this.replay(&mut states)?;
        states.check_invariants();
        Ok((this, states))
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn into_log(self) -> Log {
        self.log
    }

    /// Records in the log from its start.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Applies every record from the log start to `states`; returns how many there were.
    fn replay(&self, states: &mut TxnStates) -> Result<u64> {
        let start = self.log.log_start_offset().0;
        let end = self.log.log_end_offset().0;
        let mut next = start;
        let mut count = 0;
        while next < end {
            let fetch = self.log.read(Offset(next), 1 << 20)?;
            let Some(fetch_end) = fetch.end_offset() else {
                break;
            };
            for batch in fetch.batches() {
                let batch = batch?;
                for (i, rec) in batch.records().enumerate() {
                    let offset = batch.base_offset() + i as u64;
                    let corrupt = |reason: String| Error::CorruptFile {
                        path: self.dir.clone(),
                        reason: format!("transaction-state record at offset {offset}: {reason}"),
                    };
                    let rec = rec.map_err(|e| corrupt(e.to_string()))?;
                    if offset < start {
                        continue;
                    }
                    let rec =
                        record::decode(rec.key, rec.value).map_err(|e| corrupt(e.to_string()))?;
                    states.apply(&rec);
                    count += 1;
                }
            }
            next = fetch_end;
        }
        Ok(count)
    }

    /// Appends `recs` as one batch (all or nothing), durable before it returns. The caller
    /// applies them after.
    pub fn append(&mut self, recs: &[TxnRecord], now_ms: i64) -> Result<()> {
        let mut b = BatchBuilder::new();
        for rec in recs {
            // Paired with the decoder's check after every read (`record::decode`).
            if let TxnRecord::Txn(m) = rec {
                if let Err(why) = m.validate() {
                    panic!(
                        "writing an invalid record for {:?}: {why}",
                        m.transactional_id
                    );
                }
            }
            push(&mut b, rec, now_ms);
        }
        self.append_batch(b.build()?, recs.len())
    }

    fn append_batch(&mut self, batch: RecordBatch, count: usize) -> Result<()> {
        self.log.append(&batch)?;
        self.records += count as u64;
        Ok(())
    }

    /// Rewrites the live records of `states` if the log is due (the rewrite rule), or always
    /// with `force`. Returns whether it rewrote.
    pub fn maybe_rewrite(&mut self, states: &TxnStates, now_ms: i64, force: bool) -> Result<bool> {
        if !force && !needs_rewrite(self.records, states.live_keys() as u64) {
            return Ok(false);
        }
        let first = self.log.log_end_offset();
        let max = self.log.config().max_batch_bytes as usize;
        let live = states.live_records();
        let mut b = BatchBuilder::new();
        let mut in_batch = 0;
        for rec in &live {
            let (key, value) = record::encode(rec);
            let value_len = value.as_ref().map_or(0, Vec::len);
            if in_batch > 0 && b.size() + key.len() + value_len + RECORD_OVERHEAD > max {
                let full = std::mem::take(&mut b);
                self.append_batch(full.build()?, in_batch)?;
                in_batch = 0;
            }
            b.push(now_ms, Some(&key), value.as_deref());
            in_batch += 1;
        }
        if in_batch > 0 {
            self.append_batch(b.build()?, in_batch)?;
        }
        self.log.advance_log_start(first)?;
        self.records = live.len() as u64;
        Ok(true)
    }

    /// A producer id from the state log's durable allocator (`Log::init_producer`).
    pub fn allocate_producer_id(&self) -> Result<ProducerId> {
        self.log.init_producer().map(|(pid, _)| pid)
    }
}

fn push(b: &mut BatchBuilder, rec: &TxnRecord, now_ms: i64) {
    let (key, value) = record::encode(rec);
    b.push(now_ms, Some(&key), value.as_deref());
}
