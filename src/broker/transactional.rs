//! The transactional producer: Kafka's transactional client over a broker's partitions, with
//! every error sorted into what the caller must do.
//!
//! ```text
//! new ──► begin ──► send* / send_offsets* ──► commit ──► begin ...
//!                         │                     └─ Abortable ─► abort ──► begin ...
//!                         └─ Abortable ─► abort
//! any call ── Fenced ──► drop the producer (another instance owns the transactional id)
//! ```
//!
//! | error           | meaning                                                         | do                                  |
//! |-----------------|-----------------------------------------------------------------|-------------------------------------|
//! | `Retriable`     | nothing changed (the coordinator is finishing a transaction)    | call the same method again          |
//! | `Abortable`     | this transaction cannot commit (a send failed, or it timed out) | `abort()`, then run it again        |
//! | `Fenced`        | a newer instance of this transactional id exists                | stop; only a new instance may write |
//! | `Fatal`         | misuse (send outside a transaction) or a storage failure        | stop and report                     |
//!
//! **Durability.** `commit` first makes every batch of the transaction durable in its
//! partition (`Log::flush` unless the partition syncs every append), then asks the coordinator
//! to commit: the commit decision is written only when the records it commits cannot be lost,
//! so power loss after a commit never exposes a transaction with a batch missing.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::time::Duration;

use crate::broker::{offsets_partition, Broker, TopicPartition};
use crate::coordinator::TxnState;
use crate::error::Error;
use crate::format::batch::BatchBuilder;
use crate::log::AppendInfo;
use crate::offsets::OffsetAndMetadata;
use crate::types::{increment_sequence, Offset, ProducerEpoch, ProducerId, Sequence};

/// What a failed call of a [`TransactionalProducer`] asks of its caller (see the module doc).
#[derive(Debug)]
pub enum TxnError {
    /// Nothing changed; call the same method again.
    Retriable(Error),
    /// The transaction cannot commit: call [`TransactionalProducer::abort`] and start over.
    Abortable(Error),
    /// Another instance of this transactional id took over, or its epochs ran out without a
    /// new id: this producer can do nothing more.
    Fenced(Error),
    /// Misuse of the API, or a storage failure that neither a retry nor an abort repairs.
    Fatal(Error),
}

impl TxnError {
    /// The underlying error.
    pub fn error(&self) -> &Error {
        match self {
            TxnError::Retriable(e)
            | TxnError::Abortable(e)
            | TxnError::Fenced(e)
            | TxnError::Fatal(e) => e,
        }
    }

    /// The one place errors are sorted into actions.
    pub fn classify(error: Error) -> TxnError {
        match error {
            Error::ProducerFenced { .. }
            | Error::InvalidProducerIdMapping { .. }
            | Error::CoordinatorFenced { .. } => TxnError::Fenced(error),
            Error::ConcurrentTransactions { .. }
            | Error::Timeout
            | Error::NotLeader { .. }
            | Error::NotEnoughReplicas { .. } => TxnError::Retriable(error),
            Error::OutOfOrderSequence { .. }
            | Error::DuplicateSequence { .. }
            | Error::UnknownProducerId { .. }
            | Error::InvalidTxnState { .. }
            | Error::InvalidRecord { .. }
            | Error::InvalidBatch(_)
            | Error::BatchTooLarge { .. }
            | Error::UnknownPartition { .. }
            | Error::NotEnoughReplicasAfterAppend { .. } => TxnError::Abortable(error),
            _ => TxnError::Fatal(error),
        }
    }
}

impl std::fmt::Display for TxnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            TxnError::Retriable(_) => "retriable",
            TxnError::Abortable(_) => "abort the transaction",
            TxnError::Fenced(_) => "fenced",
            TxnError::Fatal(_) => "fatal",
        };
        write!(f, "{what}: {}", self.error())
    }
}

impl std::error::Error for TxnError {}

impl From<Error> for TxnError {
    fn from(e: Error) -> TxnError {
        TxnError::classify(e)
    }
}

/// The transaction a producer has begun.
#[derive(Debug, Default)]
struct OpenTxn {
    /// Partitions the coordinator knows to be in the transaction (added before the first write).
    partitions: BTreeSet<TopicPartition>,
    /// The next sequence per partition, from 0 at every epoch.
    next_sequence: BTreeMap<TopicPartition, Sequence>,
    /// The first error of a send: the transaction can no longer commit.
    failed: Option<String>,
}

/// A transactional producer over a broker's partitions (see the module doc). `B` is how it
/// holds the broker: `&Broker`, or `Arc<Broker>` for a producer that outlives a scope.
///
/// Invariant: `epoch` is the epoch the coordinator handed this instance last (at `new` or the
/// last `commit`/`abort`); every batch of the open transaction carries it, with sequences from
/// 0 per partition.
#[derive(Debug)]
pub struct TransactionalProducer<B: Deref<Target = Broker>> {
    broker: B,
    transactional_id: String,
    timeout: Duration,
    producer_id: ProducerId,
    epoch: ProducerEpoch,
    txn: Option<OpenTxn>,
    fenced: bool,
}

impl<B: Deref<Target = Broker>> TransactionalProducer<B> {
    /// Registers `transactional_id` with the coordinator (Kafka's `initTransactions`): an older
    /// instance of the same id is fenced and its open transaction aborted.
    pub fn new(
        broker: B,
        transactional_id: &str,
        timeout: Option<Duration>,
    ) -> Result<TransactionalProducer<B>, TxnError> {
        let timeout = timeout.unwrap_or(broker.config().default_txn_timeout);
        let (producer_id, epoch) = broker.coordinator().init_transactions(
            transactional_id,
            timeout,
            broker.partitions(),
        )?;
        Ok(TransactionalProducer {
            broker,
            transactional_id: transactional_id.to_string(),
            timeout,
            producer_id,
            epoch,
            txn: None,
            fenced: false,
        })
    }

    /// The transactional id this producer was initialised with.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// The producer id and epoch the next batch carries.
    pub fn identity(&self) -> (ProducerId, ProducerEpoch) {
        (self.producer_id, self.epoch)
    }

    /// The transaction timeout given to the coordinator: an open transaction older than this is aborted.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// True between `begin` and the end of `commit`/`abort`.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Starts a transaction (no request: the coordinator hears of it with the first partition).
    pub fn begin(&mut self) -> Result<(), TxnError> {
        self.usable()?;
        if self.txn.is_some() {
            return Err(self.misuse("begin: a transaction is already open"));
        }
        self.txn = Some(OpenTxn::default());
        Ok(())
    }

    /// Appends `records` to `tp` inside the open transaction. The builder's records are kept;
    /// its producer fields are set here.
    pub fn send(
        &mut self,
        tp: &TopicPartition,
        records: BatchBuilder,
    ) -> Result<AppendInfo, TxnError> {
        let count = records.record_count();
        self.write(tp, count, |_, pid, epoch, seq| {
            records
                .producer(pid, epoch, seq)
                .transactional()
                .build()
                .map_err(Error::InvalidBatch)
        })
    }

    /// Commits `offsets` of consumer group `group` inside the open transaction (Kafka's
    /// `sendOffsetsToTransaction`): they become the group's committed offsets exactly when the
    /// transaction commits.
    pub fn send_offsets(
        &mut self,
        group: &str,
        offsets: &[(TopicPartition, Offset)],
    ) -> Result<AppendInfo, TxnError> {
        self.send_offsets_with_metadata(group, &crate::offsets::without_metadata(offsets))
    }

    /// [`TransactionalProducer::send_offsets`] with Kafka's metadata string per partition
    /// (returned by the group's committed offsets once the transaction commits).
    pub fn send_offsets_with_metadata(
        &mut self,
        group: &str,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<AppendInfo, TxnError> {
        let count = i32::try_from(offsets.len()).unwrap_or(i32::MAX);
        self.write(&offsets_partition(), count, |broker, pid, epoch, seq| {
            broker
                .offsets()
                .txn_offsets_batch_with_metadata(group, offsets, pid, epoch, seq)
        })
    }

    /// Adds `tp` to the transaction if needed, builds the batch at the next sequence, appends it.
    fn write(
        &mut self,
        tp: &TopicPartition,
        count: i32,
        build: impl FnOnce(
            &Broker,
            ProducerId,
            ProducerEpoch,
            Sequence,
        ) -> crate::Result<crate::RecordBatch>,
    ) -> Result<AppendInfo, TxnError> {
        self.usable()?;
        let (pid, epoch) = (self.producer_id, self.epoch);
        let TransactionalProducer {
            broker,
            transactional_id: tid,
            txn: Some(txn),
            ..
        } = self
        else {
            return Err(self.misuse("send outside a transaction: call begin first"));
        };
        let broker: &Broker = broker;
        if let Some(reason) = &txn.failed {
            return Err(TxnError::Abortable(Error::InvalidTxnState {
                producer_id: pid,
                reason: format!("an earlier send of this transaction failed ({reason}); abort it"),
            }));
        }
        let result = (|| {
            // A partition the broker does not have must never reach the coordinator: its
            // markers could not be written, and the transaction could not end.
            broker.partition(tp)?;
            if !txn.partitions.contains(tp) {
                broker
                    .coordinator()
                    .add_partitions(tid, pid, epoch, std::slice::from_ref(tp))?;
                txn.partitions.insert(tp.clone());
            }
            let seq = txn.next_sequence.get(tp).copied().unwrap_or(0);
            let batch = build(broker, pid, epoch, seq)?;
            let info = broker.produce(tp, &batch)?;
            txn.next_sequence
                .insert(tp.clone(), increment_sequence(seq, count.max(1)));
            Ok(info)
        })();
        result.map_err(|e: Error| {
            let e = self.timed_out_or(TxnError::classify(e));
            match &e {
                TxnError::Fenced(_) => self.fenced = true,
                // A retriable coordinator answer wrote nothing: the send may be repeated.
                TxnError::Retriable(_) => {}
                _ => {
                    if let Some(txn) = self.txn.as_mut() {
                        txn.failed.get_or_insert_with(|| e.error().to_string());
                    }
                }
            }
            e
        })
    }

    /// Commits the open transaction: its batches become visible to `read_committed` readers on
    /// every partition, and offsets sent with `send_offsets` become the group's.
    pub fn commit(&mut self) -> Result<(), TxnError> {
        self.end(true)
    }

    /// Aborts the open transaction: none of its batches or offsets will ever be visible.
    pub fn abort(&mut self) -> Result<(), TxnError> {
        self.end(false)
    }

    fn end(&mut self, commit: bool) -> Result<(), TxnError> {
        self.usable()?;
        let Some(txn) = self.txn.as_ref() else {
            return Err(self.misuse("commit/abort without a transaction: call begin first"));
        };
        if commit {
            if let Some(reason) = &txn.failed {
                return Err(TxnError::Abortable(Error::InvalidTxnState {
                    producer_id: self.producer_id,
                    reason: format!("a send of this transaction failed ({reason}); abort it"),
                }));
            }
        }
        if txn.partitions.is_empty() {
            // Nothing was written: the coordinator never heard of it.
            self.txn = None;
            return Ok(());
        }
        if commit {
            for tp in &txn.partitions {
                self.broker
                    .partitions()
                    .make_durable(tp)
                    .map_err(TxnError::classify)?;
            }
        }
        let answer = self.broker.coordinator().end_transaction(
            &self.transactional_id,
            self.producer_id,
            self.epoch,
            commit,
            self.broker.partitions(),
        );
        match answer {
            Ok((pid, epoch)) => {
                self.producer_id = pid;
                self.epoch = epoch;
                self.txn = None;
                Ok(())
            }
            Err(e) => {
                let e = self.timed_out_or(TxnError::classify(e));
                if let TxnError::Fenced(_) = e {
                    self.fenced = true;
                }
                Err(e)
            }
        }
    }

    /// A fencing answer for a transaction the coordinator aborted itself (its timeout) is not
    /// the end of this producer: no other instance exists, and `abort` hands it the epoch the
    /// abort bumped to (the coordinator answers a retried end of the same kind). Everything
    /// else stays as classified.
    fn timed_out_or(&self, e: TxnError) -> TxnError {
        let TxnError::Fenced(error) = e else { return e };
        let aborted_under_us = self
            .broker
            .coordinator()
            .describe(&self.transactional_id)
            .is_some_and(|m| {
                m.state == TxnState::CompleteAbort
                    && (m.last_producer_id, m.last_producer_epoch) == (self.producer_id, self.epoch)
            });
        if aborted_under_us {
            TxnError::Abortable(Error::InvalidTxnState {
                producer_id: self.producer_id,
                reason: format!(
                    "the coordinator aborted this transaction (its timeout of {} ms passed): {error}",
                    self.timeout.as_millis()
                ),
            })
        } else {
            TxnError::Fenced(error)
        }
    }

    fn usable(&self) -> Result<(), TxnError> {
        if self.fenced {
            return Err(TxnError::Fenced(Error::ProducerFenced {
                producer_id: self.producer_id,
                epoch: self.epoch,
                current_epoch: self.epoch,
            }));
        }
        Ok(())
    }

    fn misuse(&self, reason: &str) -> TxnError {
        TxnError::Fatal(Error::InvalidTxnState {
            producer_id: self.producer_id,
            reason: reason.to_string(),
        })
    }
}
