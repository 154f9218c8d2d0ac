//! A `read_committed` consumer of a broker's partitions for one consumer group: it tracks a
//! position per partition, starts from the group's committed offsets, and never returns a
//! record of an aborted or undecided transaction.
//!
//! Positions are offsets of the next record to read. After [`Consumer::poll`] a partition's
//! position is past every batch the poll returned, control batches and aborted batches
//! included, so committing [`Consumer::positions`] (plainly with [`Consumer::commit`], or inside
//! a transaction with `TransactionalProducer::send_offsets`) resumes exactly after the last
//! record handed out.

use std::collections::BTreeMap;
use std::ops::Deref;

use crate::broker::{Broker, TopicPartition};
use crate::error::{Error, Result};
use crate::log::Isolation;
use crate::types::Offset;

/// A record a consumer handed out, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// The partition the record was read from.
    pub partition: TopicPartition,
    /// The record's offset in that partition.
    pub offset: u64,
    /// The record's timestamp (ms since the epoch, as the producer set it).
    pub timestamp: i64,
    /// The key; `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for a null value (a tombstone).
    pub value: Option<Vec<u8>>,
}

/// A consumer of some partitions for a group (see the module doc). `B` is how it holds the
/// broker: `&Broker`, or `Arc<Broker>`.
#[derive(Debug)]
pub struct Consumer<B: Deref<Target = Broker>> {
    broker: B,
    group: String,
    positions: BTreeMap<TopicPartition, Offset>,
    isolation: Isolation,
    /// The partition the next poll starts with (round robin, so one busy partition cannot
    /// starve the others).
    next_first: usize,
}

impl<B: Deref<Target = Broker>> Consumer<B> {
    /// A `read_committed` consumer of `partitions` for `group`, positioned at the group's
    /// committed offset of each partition, or at the partition's log start if it has none.
    pub fn new(broker: B, group: &str, partitions: &[TopicPartition]) -> Result<Consumer<B>> {
        let committed = broker.offsets().committed_offsets(group)?;
        let mut positions = BTreeMap::new();
        for tp in partitions {
            let log = broker.partition(tp)?;
            let start = committed.get(tp).copied().unwrap_or(log.log_start_offset());
            positions.insert(tp.clone(), start);
        }
        Ok(Consumer {
            broker,
            group: group.to_string(),
            positions,
            isolation: Isolation::ReadCommitted,
            next_first: 0,
        })
    }

    /// Reads records of every aborted and undecided transaction too (Kafka's
    /// `read_uncommitted`). For diagnostics; exactly-once pipelines never use it.
    pub fn read_uncommitted(mut self) -> Self {
        self.isolation = Isolation::ReadUncommitted;
        self
    }

    /// The consumer group whose committed offsets this consumer reads and writes.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The next offset to read of every partition, ascending by partition.
    pub fn positions(&self) -> Vec<(TopicPartition, Offset)> {
        self.positions
            .iter()
            .map(|(tp, o)| (tp.clone(), *o))
            .collect()
    }

    /// Moves a partition's position (`UnknownPartition` if it is not assigned).
    pub fn seek(&mut self, tp: &TopicPartition, offset: Offset) -> Result<()> {
        match self.positions.get_mut(tp) {
            Some(p) => {
                *p = offset;
                Ok(())
            }
            None => Err(Error::UnknownPartition {
                partition: tp.to_string(),
            }),
        }
    }

    /// Reads up to about `max_bytes` per partition from every assigned partition, starting at
    /// the positions, and advances them. Returns an empty vector when nothing new is stable.
    /// A position below a partition's log start (retention deleted it) moves to the log start.
    pub fn poll(&mut self, max_bytes: usize) -> Result<Vec<ConsumedRecord>> {
        let mut out = Vec::new();
        let tps: Vec<TopicPartition> = self.positions.keys().cloned().collect();
        let n = tps.len();
        for i in 0..n {
            let Some(tp) = tps.get((self.next_first + i) % n) else {
                continue;
            };
            self.poll_one(tp, max_bytes, &mut out)?;
        }
        self.next_first = (self.next_first + 1) % n.max(1);
        Ok(out)
    }

    fn poll_one(
        &mut self,
        tp: &TopicPartition,
        max_bytes: usize,
        out: &mut Vec<ConsumedRecord>,
    ) -> Result<()> {
        let log = self.broker.partition(tp)?;
        let Some(position) = self.positions.get_mut(tp) else {
            return Ok(());
        };
        if *position < log.log_start_offset() {
            *position = log.log_start_offset();
        }
        let fetch = log.read_with(*position, max_bytes, self.isolation)?;
        let Some(end) = fetch.fetch.end_offset() else {
            return Ok(());
        };
        for r in fetch.committed_records() {
            let r = r?;
            // A batch that starts below the position (the fetch returns whole batches) holds
            // records already handed out.
            if r.offset < position.0 {
                continue;
            }
            out.push(ConsumedRecord {
                partition: tp.clone(),
                offset: r.offset,
                timestamp: r.record.timestamp,
                key: r.record.key.map(<[u8]>::to_vec),
                value: r.record.value.map(<[u8]>::to_vec),
            });
        }
        debug_assert!(end > position.0, "a non-empty fetch ends past its start");
        *position = Offset(end.max(position.0));
        Ok(())
    }

    /// Commits the current positions for the group, plainly (outside any transaction).
    pub fn commit(&self) -> Result<()> {
        self.broker
            .offsets()
            .commit_offsets(&self.group, &self.positions())
    }
}
