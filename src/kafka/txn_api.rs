//! The transaction APIs on the wire: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit, EndTxn and transactional Produce, all on the broker's one
//! [`TxnCoordinator`](crate::coordinator::TxnCoordinator) and `OffsetStore`.
//!
//! **Client identity and coordinator identity.** Kafka's classic transaction protocol (EndTxn
//! v0-3, what librdkafka and kafka-python speak) keeps one producer epoch for every transaction
//! of an instance, and its sequence numbers run on across transactions (0, 10, 20 ...). Our
//! coordinator bumps the epoch at every end (its markers carry `epoch + 1`, which fences a late
//! batch of the ended transaction in the log), and a log starts every epoch at sequence 0. So
//! each transactional id has a [`Session`]: the identity the client was handed at
//! InitProducerId (`client`), the coordinator's current one (`internal`), and per partition the
//! client's first sequence at the current internal epoch. A request carrying the client's
//! identity is served under the internal one; a transactional batch is rewritten to the
//! internal producer id, epoch and `client sequence - first sequence` (mod 2^31), so a retry
//! maps to the same sequence and is answered as a duplicate. Any other identity is an older
//! instance (fenced) or unknown.
//!
//! **Durable sessions.** The client identity handed at each InitProducerId is recorded in the
//! broker's directory (`sessions_file`: *pending* before the coordinator is asked, the identity
//! once it answered, each durable before the next step). A restarted server rebuilds the
//! session of every id whose entry is an identity ([`TxnSessions::rebuild`]): from the
//! coordinator's durable state for an id between transactions (`Empty`, `Complete*`: exact,
//! as no sequence base is needed before a transaction's first batch); an `Ongoing` transaction
//! cannot continue (its sequence bases were in memory, and without them a retry could not be
//! told from a new batch), so it is aborted and the session rebuilt as after an abort. Only a
//! request naming exactly the recorded identity gets the session; any other is fenced or gets
//! INVALID_PRODUCER_ID_MAPPING, as before.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ProducerId as KPid, TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};
use kafka_protocol::ResponseError as K;
use parking_lot::Mutex;

use super::errors::code_of;
use super::group_api::offset_metadata;
use super::server::State;
use super::sessions_file::{self, Entries, Handed};
use crate::broker::{offsets_partition, Broker, TopicPartition};
use crate::coordinator::{TxnState, MAX_TXN_TIMEOUT_MS};
use crate::error::Error;
use crate::format::batch::RecordBatch;
use crate::io::Storage;
use crate::log::AppendInfo;
use crate::offsets::OffsetAndMetadata;
use crate::types::{increment_sequence, Offset, ProducerEpoch, ProducerId, Sequence};

/// One transactional id as the wire sees it (module doc).
#[derive(Debug)]
struct Session {
    client: (ProducerId, ProducerEpoch),
    internal: (ProducerId, ProducerEpoch),
    /// The client's first sequence per partition at the current internal epoch.
    seq_base: HashMap<TopicPartition, Sequence>,
    /// The next sequence of our own offsets batches at the current internal epoch.
    offsets_seq: Sequence,
    /// How the last transaction ended, until the next one starts: a retried EndTxn of the same
    /// kind is answered NONE.
    ended: Option<bool>,
}

/// Every session, by transactional id, and the durable record of the identities handed.
#[derive(Debug)]
pub struct TxnSessions {
    by_tid: Mutex<HashMap<String, Session>>,
    /// What `sessions_file` holds (locked after `by_tid`).
    handed: Mutex<Entries>,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
}

/// The longest transaction timeout a client may ask for: Kafka's default
/// `transaction.max.timeout.ms` (15 minutes); longer gets INVALID_TRANSACTION_TIMEOUT. An open
/// transaction holds its partitions' last stable offsets, so read_committed consumers wait for
/// at most this long behind a dead producer.
pub const MAX_CLIENT_TXN_TIMEOUT_MS: i64 = 900_000;

/// A refused request: its Kafka error code.
type Code = i16;

/// The fencing code for `api` at `version`: PRODUCER_FENCED from the version that knows it
/// (KIP-588), INVALID_PRODUCER_EPOCH before.
fn fenced(version: i16, knows_fenced_from: i16) -> Code {
    if version >= knows_fenced_from {
        K::ProducerFenced.code()
    } else {
        K::InvalidProducerEpoch.code()
    }
}

/// A coordinator error as a Kafka code, with fencing per version.
fn coordinator_code(e: &Error, version: i16, knows_fenced_from: i16) -> Code {
    match e {
        Error::ProducerFenced { .. } => fenced(version, knows_fenced_from),
        other => code_of(other),
    }
}

impl TxnSessions {
    /// The sessions a restarted server can serve again: for every id whose latest
    /// InitProducerId answer is recorded, from the coordinator's durable state (module doc).
    /// Transactions the coordinator left `Prepare*` are finished first; an `Ongoing` one is
    /// aborted (markers written). An id whose state does not fit the record gets no session.
    pub fn rebuild(broker: &Broker) -> crate::error::Result<TxnSessions> {
        let storage = Arc::clone(&broker.config().log.storage);
        let dir = broker.dir().to_path_buf();
        let mut handed = sessions_file::load(storage.as_ref(), &dir)?;
        let coordinator = broker.coordinator();
        if let Err(e) = coordinator.tick(broker.partitions()) {
            tracing::warn!("oncelog serve: finishing transactions at start: {e}");
        }
        let mut by_tid = HashMap::new();
        // Ids the coordinator no longer knows (expired, or an init that never reached it) can
        // get no session back: their entries go, so the file does not grow with dead ids.
        let mut unknown = Vec::new();
        for (tid, h) in &handed {
            let Some(md) = coordinator.describe(tid) else {
                unknown.push(tid.clone());
                continue;
            };
            let Handed::Identity(pid, epoch) = *h else {
                continue;
            };
            let current = (md.producer_id, md.producer_epoch);
            let (internal, ended) = match md.state {
                TxnState::Empty if current == (pid, epoch) => (current, None),
                TxnState::CompleteCommit => (current, Some(true)),
                TxnState::CompleteAbort => (current, Some(false)),
                TxnState::Ongoing => {
                    let aborted = coordinator.end_transaction(
                        tid,
                        md.producer_id,
                        md.producer_epoch,
                        false,
                        broker.partitions(),
                    );
                    match aborted {
                        Ok(next) => {
                            tracing::info!(
                                "oncelog serve: aborted the open transaction of {tid:?} \
                                 (its sequence bases did not survive the restart)"
                            );
                            (next, Some(false))
                        }
                        Err(e) => {
                            tracing::warn!("oncelog serve: cannot abort {tid:?} at start: {e}");
                            continue;
                        }
                    }
                }
                _ => continue,
            };
            by_tid.insert(
                tid.clone(),
                Session {
                    client: (pid, epoch),
                    internal,
                    seq_base: HashMap::new(),
                    offsets_seq: 0,
                    ended,
                },
            );
        }
        if !unknown.is_empty() {
            for tid in &unknown {
                handed.remove(tid);
            }
            if let Err(e) = sessions_file::store(storage.as_ref(), &dir, &handed) {
                tracing::warn!("oncelog serve: pruning the transaction sessions: {e}");
            }
        }
        if !by_tid.is_empty() {
            tracing::info!(
                "oncelog serve: {} transactional session(s) rebuilt",
                by_tid.len()
            );
        }
        Ok(TxnSessions {
            by_tid: Mutex::new(by_tid),
            handed: Mutex::new(handed),
            storage,
            dir,
        })
    }

    /// Records `handed` for `tid` durably.
    fn record(&self, tid: &str, handed: Handed) -> crate::error::Result<()> {
        let mut all = self.handed.lock();
        all.insert(tid.to_string(), handed);
        let stored = sessions_file::store(self.storage.as_ref(), &self.dir, &all);
        if stored.is_err() {
            // The caller answers an error; pending is the safe reading of this id from here
            // on (a later write records it so; an identity that did land was never answered,
            // and the client's next InitProducerId fences it).
            all.insert(tid.to_string(), Handed::Pending);
        }
        stored
    }

    /// The coordinator identity for a request of `tid` carrying the client identity
    /// `(pid, epoch)`.
    fn internal(
        &self,
        tid: &str,
        pid: i64,
        epoch: ProducerEpoch,
        version: i16,
        knows_fenced_from: i16,
    ) -> Result<(ProducerId, ProducerEpoch), Code> {
        let sessions = self.by_tid.lock();
        let s = sessions
            .get(tid)
            .ok_or(K::InvalidProducerIdMapping.code())?;
        check_client(s, pid, epoch, version, knows_fenced_from)?;
        Ok(s.internal)
    }
}

fn check_client(
    s: &Session,
    pid: i64,
    epoch: ProducerEpoch,
    version: i16,
    knows_fenced_from: i16,
) -> Result<(), Code> {
    let (cpid, cepoch) = s.client;
    if pid != cpid.0 {
        return Err(K::InvalidProducerIdMapping.code());
    }
    if epoch < cepoch {
        return Err(fenced(version, knows_fenced_from));
    }
    if epoch > cepoch {
        return Err(K::InvalidProducerIdMapping.code());
    }
    Ok(())
}

fn tid_of(t: &kafka_protocol::messages::TransactionalId) -> String {
    t.0.to_string()
}

/// InitProducerId with a transactional id: the coordinator's `init_transactions` (an older
/// instance's open transaction is aborted, its epoch fenced), and a fresh session.
pub fn init_transactional(
    state: &State,
    tid: &str,
    req: &InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    r.producer_id = KPid(-1);
    r.producer_epoch = -1;
    let timeout = i64::from(req.transaction_timeout_ms);
    if !(1..=MAX_CLIENT_TXN_TIMEOUT_MS.min(MAX_TXN_TIMEOUT_MS)).contains(&timeout) {
        r.error_code = K::InvalidTransactionTimeout.code();
        return r;
    }
    let mut sessions = state.txn.by_tid.lock();
    // KIP-360: a producer naming its current identity may only re-initialise if it is the
    // current instance.
    if req.producer_id.0 >= 0 {
        if let Some(s) = sessions.get(tid) {
            if let Err(code) = check_client(s, req.producer_id.0, req.producer_epoch, version, 4) {
                r.error_code = code;
                return r;
            }
        }
    }
    // Pending first: the coordinator's new epoch fences the session this id had, and a crash
    // before its answer is recorded must not bring that session back.
    if let Err(e) = state.txn.record(tid, Handed::Pending) {
        tracing::warn!("oncelog serve: InitProducerId of {tid:?}: {e}");
        r.error_code = K::CoordinatorNotAvailable.code();
        return r;
    }
    let timeout = Duration::from_millis(u64::try_from(timeout).unwrap_or(0));
    let answer =
        state
            .broker
            .coordinator()
            .init_transactions(tid, timeout, state.broker.partitions());
    // An abort of the previous instance's transaction moved last stable offsets.
    state.notify_append();
    match answer {
        Ok((pid, epoch)) => {
            if let Err(e) = state.txn.record(tid, Handed::Identity(pid, epoch)) {
                // The client retries; its next InitProducerId fences this identity.
                tracing::warn!("oncelog serve: InitProducerId of {tid:?}: {e}");
                r.error_code = K::CoordinatorNotAvailable.code();
                return r;
            }
            sessions.insert(
                tid.to_string(),
                Session {
                    client: (pid, epoch),
                    internal: (pid, epoch),
                    seq_base: HashMap::new(),
                    offsets_seq: 0,
                    ended: None,
                },
            );
            r.producer_id = KPid(pid.0);
            r.producer_epoch = epoch;
        }
        Err(Error::InvalidConfig(_)) => r.error_code = K::InvalidRequest.code(),
        Err(e) => r.error_code = coordinator_code(&e, version, 4),
    }
    r
}

/// The partitions of a request as ours: `Err(code)` for one that does not exist.
fn partition(state: &State, topic: &str, index: i32) -> Result<TopicPartition, Code> {
    let unknown = K::UnknownTopicOrPartition.code();
    let index = u32::try_from(index).map_err(|_| unknown)?;
    let tp = TopicPartition::new(topic, index).map_err(|_| K::InvalidTopicException.code())?;
    state.broker.partition(&tp).map_err(|_| unknown)?;
    Ok(tp)
}

pub fn add_partitions(
    state: &State,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let tid = tid_of(&req.v3_and_below_transactional_id);
    let mut wanted = Vec::new();
    let mut bad = false;
    let mut results: Vec<(kafka_protocol::messages::TopicName, Vec<(i32, Code)>)> = Vec::new();
    for t in &req.v3_and_below_topics {
        let mut rs = Vec::new();
        for &p in &t.partitions {
            match partition(state, t.name.0.as_str(), p) {
                Ok(tp) => {
                    wanted.push(tp);
                    rs.push((p, 0));
                }
                Err(code) => {
                    bad = true;
                    rs.push((p, code));
                }
            }
        }
        results.push((t.name.clone(), rs));
    }
    // Kafka adds none if one is bad: the others get OPERATION_NOT_ATTEMPTED.
    let outcome: Code = if bad {
        K::OperationNotAttempted.code()
    } else {
        match state.txn.internal(
            &tid,
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            version,
            2,
        ) {
            Err(code) => code,
            Ok((pid, epoch)) => {
                match state
                    .broker
                    .coordinator()
                    .add_partitions(&tid, pid, epoch, &wanted)
                {
                    Ok(()) => {
                        mark_started(state, &tid);
                        0
                    }
                    Err(e) => coordinator_code(&e, version, 2),
                }
            }
        }
    };
    let mut r = AddPartitionsToTxnResponse::default();
    for (name, rs) in results {
        let mut t = AddPartitionsToTxnTopicResult::default();
        t.name = name;
        for (p, code) in rs {
            let mut pr = AddPartitionsToTxnPartitionResult::default();
            pr.partition_index = p;
            pr.partition_error_code = if code == 0 { outcome } else { code };
            t.results_by_partition.push(pr);
        }
        r.results_by_topic_v3_and_below.push(t);
    }
    r
}

fn mark_started(state: &State, tid: &str) {
    if let Some(s) = state.txn.by_tid.lock().get_mut(tid) {
        s.ended = None;
    }
}

pub fn add_offsets(
    state: &State,
    req: &AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let tid = tid_of(&req.transactional_id);
    let mut r = AddOffsetsToTxnResponse::default();
    r.error_code = match state
        .txn
        .internal(&tid, req.producer_id.0, req.producer_epoch, version, 2)
    {
        Err(code) => code,
        Ok((pid, epoch)) => match state.broker.coordinator().add_partitions(
            &tid,
            pid,
            epoch,
            &[offsets_partition()],
        ) {
            Ok(()) => {
                mark_started(state, &tid);
                0
            }
            Err(e) => coordinator_code(&e, version, 2),
        },
    };
    r
}

pub fn txn_offset_commit(
    state: &State,
    req: TxnOffsetCommitRequest,
    version: i16,
) -> TxnOffsetCommitResponse {
    let tid = tid_of(&req.transactional_id);
    let group = req.group_id.0.to_string();
    // Generation and member (v3+, KIP-447): -1 (a producer without a group member) passes.
    let mut outcome = state
        .groups
        .check_commit(&group, req.generation_id, req.member_id.as_str());
    let mut offsets = Vec::new();
    let mut results = Vec::new();
    for t in &req.topics {
        let mut rs = Vec::new();
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_ref().map_or("", |m| m.as_str());
            let code = match (
                partition(state, t.name.0.as_str(), p.partition_index),
                u64::try_from(p.committed_offset),
            ) {
                (Ok(tp), Ok(o)) => match offset_metadata(Offset(o), metadata) {
                    Ok(commit) => {
                        offsets.push((tp, commit));
                        0
                    }
                    Err(code) => code,
                },
                (Err(code), _) => code,
                (Ok(_), Err(_)) => K::InvalidCommitOffsetSize.code(),
            };
            rs.push((p.partition_index, code));
        }
        results.push((t.name.clone(), rs));
    }
    if outcome == 0 && !offsets.is_empty() {
        outcome = match state
            .txn
            .internal(&tid, req.producer_id.0, req.producer_epoch, version, 2)
        {
            Err(code) => code,
            Ok(identity) => append_offsets(state, &tid, &group, &offsets, identity)
                .unwrap_or_else(|e| coordinator_code(&e, version, 2)),
        };
    }
    let mut r = TxnOffsetCommitResponse::default();
    for (name, rs) in results {
        let mut t = TxnOffsetCommitResponseTopic::default();
        t.name = name;
        for (p, code) in rs {
            let mut pr = TxnOffsetCommitResponsePartition::default();
            pr.partition_index = p;
            pr.error_code = if code == 0 { outcome } else { code };
            t.partitions.push(pr);
        }
        r.topics.push(t);
    }
    r
}

/// Appends the pending offsets batch to the offsets partition under the coordinator identity
/// (the partition must have been added with AddOffsetsToTxn: the broker checks it).
fn append_offsets(
    state: &State,
    tid: &str,
    group: &str,
    offsets: &[(TopicPartition, OffsetAndMetadata)],
    (pid, epoch): (ProducerId, ProducerEpoch),
) -> Result<Code, Error> {
    let mut sessions = state.txn.by_tid.lock();
    let Some(s) = sessions.get_mut(tid).filter(|s| s.internal == (pid, epoch)) else {
        return Ok(K::ConcurrentTransactions.code());
    };
    let batch = state.broker.offsets().txn_offsets_batch_with_metadata(
        group,
        offsets,
        pid,
        epoch,
        s.offsets_seq,
    )?;
    state.broker.produce(&offsets_partition(), &batch)?;
    let count = i32::try_from(offsets.len()).unwrap_or(i32::MAX);
    s.offsets_seq = increment_sequence(s.offsets_seq, count);
    Ok(0)
}

pub fn end_txn(state: &State, req: &EndTxnRequest, version: i16) -> EndTxnResponse {
    let tid = tid_of(&req.transactional_id);
    let mut r = EndTxnResponse::default();
    r.error_code = match end(state, &tid, req, version) {
        Ok(()) => 0,
        Err(code) => code,
    };
    state.notify_append();
    r
}

fn end(state: &State, tid: &str, req: &EndTxnRequest, version: i16) -> Result<(), Code> {
    let mut sessions = state.txn.by_tid.lock();
    let s = sessions
        .get_mut(tid)
        .ok_or(K::InvalidProducerIdMapping.code())?;
    check_client(s, req.producer_id.0, req.producer_epoch, version, 2)?;
    match s.ended {
        Some(kind) if kind == req.committed => return Ok(()),
        Some(_) => return Err(K::InvalidTxnState.code()),
        None => {}
    }
    let (pid, epoch) = s.internal;
    let coordinator = state.broker.coordinator();
    if req.committed {
        // The commit decision is written only once what it commits cannot be lost.
        let parts = coordinator
            .describe(tid)
            .map(|m| m.partitions)
            .unwrap_or_default();
        for tp in &parts {
            state
                .broker
                .partitions()
                .make_durable(tp)
                .map_err(|e| code_of(&e))?;
        }
    }
    let next = coordinator
        .end_transaction(tid, pid, epoch, req.committed, state.broker.partitions())
        .map_err(|e| coordinator_code(&e, version, 2))?;
    s.internal = next;
    s.seq_base.clear();
    s.offsets_seq = 0;
    s.ended = Some(req.committed);
    Ok(())
}

/// A transactional batch of a Produce request: rewritten to the coordinator identity (module
/// doc) and appended through `Broker::produce`, which checks that the partition is in the
/// transaction. The producer is found by `tid` (Produce v3+ carries it) or by its id.
pub fn produce(
    state: &State,
    tid: Option<&str>,
    tp: &TopicPartition,
    mut batch: RecordBatch,
) -> Result<AppendInfo, (Code, String)> {
    let h = *batch.header();
    let mut sessions = state.txn.by_tid.lock();
    let s = match tid {
        Some(tid) => sessions.get_mut(tid),
        None => sessions.values_mut().find(|s| s.client.0 == h.producer_id),
    }
    .ok_or_else(|| {
        (
            K::InvalidProducerIdMapping.code(),
            "no transactional producer with this id: call InitProducerId".to_string(),
        )
    })?;
    check_client(s, h.producer_id.0, h.producer_epoch, 0, i16::MAX).map_err(|code| {
        (
            code,
            "not the current producer of this transactional id".into(),
        )
    })?;
    let base = s.seq_base.get(tp).copied().unwrap_or(h.base_sequence);
    let seq = i32::try_from((i64::from(h.base_sequence) - i64::from(base)).rem_euclid(1 << 31))
        .unwrap_or(0);
    let (pid, epoch) = s.internal;
    batch
        .set_producer(pid, epoch, seq)
        .map_err(|e| (K::InvalidRecord.code(), e.to_string()))?;
    let info = state
        .broker
        .produce(tp, &batch)
        .map_err(|e| (code_of(&e), e.to_string()))?;
    s.seq_base.entry(tp.clone()).or_insert(base);
    Ok(info)
}

#[cfg(test)]
mod tests {
    //! The transaction APIs through their handlers, at every advertised version: a committed
    //! and an aborted transaction of one client instance (one epoch, sequences running on
    //! across them, as librdkafka sends them), retries, fencing, and every response encodes.
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::{ApiKey, GroupId, ProduceRequest, TopicName, TransactionalId};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;
    use crate::format::batch::BatchBuilder;
    use crate::kafka::server::Server;
    use crate::kafka::{batch, produce, versions};

    /// A restart's rebuild serves the recorded identity of an id the coordinator knows, and
    /// drops the entries of ids it does not (expired, or never initialised) from the file.
    #[test]
    fn the_rebuild_serves_recorded_identities_and_prunes_unknown_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::broker::BrokerConfig::default();
        cfg.log = cfg.log.with_segment_bytes(1 << 20);
        let broker = Broker::open(dir.path(), cfg.clone()).unwrap();
        let id = broker
            .coordinator()
            .init_transactions("real", Duration::from_secs(60), broker.partitions())
            .unwrap();
        let mut entries = Entries::new();
        entries.insert("real".into(), Handed::Identity(id.0, id.1));
        entries.insert("ghost".into(), Handed::Identity(ProducerId(99), 3));
        entries.insert("half".into(), Handed::Pending);
        let storage = Arc::clone(&cfg.log.storage);
        sessions_file::store(storage.as_ref(), dir.path(), &entries).unwrap();
        let sessions = TxnSessions::rebuild(&broker).unwrap();
        assert_eq!(sessions.internal("real", id.0 .0, id.1, 4, 4), Ok(id));
        assert_eq!(
            sessions.internal("ghost", 99, 3, 4, 4),
            Err(K::InvalidProducerIdMapping.code())
        );
        let left = sessions_file::load(storage.as_ref(), dir.path()).unwrap();
        assert_eq!(left.keys().collect::<Vec<_>>(), ["real"]);
    }

    fn encodes<R: Encodable>(what: &str, v: i16, r: &R) {
        if let Err(e) = r.encode(&mut BytesMut::new(), v) {
            panic!("{what} v{v}: {e}");
        }
    }

    fn range(key: ApiKey) -> std::ops::RangeInclusive<i16> {
        versions::advertised(key).unwrap()
    }

    fn name(s: &str) -> TopicName {
        TopicName(StrBytes::from_string(s.into()))
    }

    fn tid(s: &str) -> TransactionalId {
        TransactionalId(StrBytes::from_string(s.into()))
    }

    fn init(state: &State, t: &str, timeout_ms: i32, v: i16) -> InitProducerIdResponse {
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = Some(tid(t));
        req.transaction_timeout_ms = timeout_ms;
        let r = produce::init_producer_id(state, &req, v);
        encodes("InitProducerId", v, &r);
        r
    }

    fn add(state: &State, t: &str, (pid, epoch): (i64, i16), parts: &[i32], v: i16) -> Vec<i16> {
        let mut req = AddPartitionsToTxnRequest::default();
        req.v3_and_below_transactional_id = tid(t);
        req.v3_and_below_producer_id = KPid(pid);
        req.v3_and_below_producer_epoch = epoch;
        let mut topic = AddPartitionsToTxnTopic::default();
        topic.name = name("t");
        topic.partitions = parts.to_vec();
        req.v3_and_below_topics = vec![topic];
        let r = add_partitions(state, req, v);
        encodes("AddPartitionsToTxn", v, &r);
        r.results_by_topic_v3_and_below[0]
            .results_by_partition
            .iter()
            .map(|p| p.partition_error_code)
            .collect()
    }

    /// One transactional record to t-0 as (pid, epoch, seq): (error code, base offset).
    fn send(state: &State, t: &str, (pid, epoch): (i64, i16), seq: i32) -> (i16, i64) {
        let mut b = BatchBuilder::new()
            .producer(crate::types::ProducerId(pid), epoch, seq)
            .transactional();
        b.push(1, None, Some(format!("{t}/{epoch}/{seq}").as_bytes()));
        let mut kafka = Vec::new();
        batch::append_as_kafka(&b.build().unwrap().view(), &mut kafka).unwrap();
        let mut p = PartitionProduceData::default();
        p.records = Some(Bytes::from(kafka));
        let mut topic = TopicProduceData::default();
        topic.name = name("t");
        topic.partition_data = vec![p];
        let mut req = ProduceRequest::default();
        req.acks = -1;
        req.transactional_id = Some(tid(t));
        req.topic_data = vec![topic];
        let (resp, _) = produce::produce(state, req, 10);
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    fn end(state: &State, t: &str, (pid, epoch): (i64, i16), commit: bool, v: i16) -> i16 {
        let mut req = EndTxnRequest::default();
        req.transactional_id = tid(t);
        req.producer_id = KPid(pid);
        req.producer_epoch = epoch;
        req.committed = commit;
        let r = end_txn(state, &req, v);
        encodes("EndTxn", v, &r);
        r.error_code
    }

    /// AddOffsetsToTxn, then TxnOffsetCommit of `offset` with `metadata` for t-0.
    fn offsets(
        state: &State,
        t: &str,
        (pid, epoch): (i64, i16),
        (offset, metadata): (i64, Option<&str>),
        v: i16,
    ) -> i16 {
        let mut req = AddOffsetsToTxnRequest::default();
        req.transactional_id = tid(t);
        req.producer_id = KPid(pid);
        req.producer_epoch = epoch;
        req.group_id = GroupId(StrBytes::from_string(format!("g-{t}")));
        let r = add_offsets(state, &req, v);
        encodes("AddOffsetsToTxn", v, &r);
        if r.error_code != 0 {
            return r.error_code;
        }
        let mut req = TxnOffsetCommitRequest::default();
        req.transactional_id = tid(t);
        req.group_id = GroupId(StrBytes::from_string(format!("g-{t}")));
        req.producer_id = KPid(pid);
        req.producer_epoch = epoch;
        req.generation_id = -1;
        let mut p = TxnOffsetCommitRequestPartition::default();
        p.partition_index = 0;
        p.committed_offset = offset;
        p.committed_metadata = metadata.map(|m| StrBytes::from_string(m.to_string()));
        let mut topic = TxnOffsetCommitRequestTopic::default();
        topic.name = name("t");
        topic.partitions = vec![p];
        req.topics = vec![topic];
        let r = txn_offset_commit(state, req, v);
        encodes("TxnOffsetCommit", v, &r);
        r.topics[0].partitions[0].error_code
    }

    /// OffsetFetch v7 of t-0 for the group of `t`: (error code, offset).
    fn stable_fetch(state: &State, t: &str, require_stable: bool) -> (i16, i64) {
        let mut req = kafka_protocol::messages::OffsetFetchRequest::default();
        req.group_id = GroupId(StrBytes::from_string(format!("g-{t}")));
        req.require_stable = require_stable;
        let mut topic =
            kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default();
        topic.name = name("t");
        topic.partition_indexes = vec![0];
        req.topics = Some(vec![topic]);
        let r = crate::kafka::group_api::offset_fetch(state, req, 7);
        let p = &r.topics[0].partitions[0];
        if p.committed_offset >= 0 {
            let stored = state
                .broker
                .offsets()
                .fetch_committed_with_metadata(
                    &format!("g-{t}"),
                    &TopicPartition::new("t", 0).unwrap(),
                )
                .unwrap()
                .unwrap();
            assert_eq!(
                p.metadata.as_deref(),
                Some(stored.metadata.as_str()),
                "OffsetFetch answers the stored metadata"
            );
        }
        (p.error_code, p.committed_offset)
    }

    fn committed_metadata(state: &State, t: &str) -> Option<String> {
        let tp = TopicPartition::new("t", 0).unwrap();
        let got = state
            .broker
            .offsets()
            .fetch_committed_with_metadata(&format!("g-{t}"), &tp);
        got.unwrap().map(|o| o.metadata.as_str().to_string())
    }

    fn committed(state: &State, t: &str) -> Option<u64> {
        let tp = TopicPartition::new("t", 0).unwrap();
        let got = state
            .broker
            .offsets()
            .fetch_committed(&format!("g-{t}"), &tp);
        got.unwrap().map(|o| o.0)
    }

    #[test]
    fn transactions_on_the_wire_at_every_version() {
        let (_dir, server) = Server::for_tests();
        let state = server.state();
        state.broker.create_topic("t", 4).unwrap();
        let t0 = TopicPartition::new("t", 0).unwrap();
        let log = state.broker.partition(&t0).unwrap();
        for v in range(ApiKey::EndTxn) {
            assert_eq!(range(ApiKey::AddPartitionsToTxn), range(ApiKey::EndTxn));
            let t = format!("tx{v}");
            let t = t.as_str();
            let r = init(state, t, 60_000, v.min(4));
            assert_eq!(r.error_code, 0);
            let me = (r.producer_id.0, r.producer_epoch);

            // Transaction 1: a record and offset 5, committed.
            assert_eq!(add(state, t, me, &[0], v), [0]);
            let (code, first) = send(state, t, me, 0);
            assert_eq!(code, 0);
            assert_eq!(log.last_stable_offset().0, u64::try_from(first).unwrap());
            let meta = format!("meta of v{v}");
            assert_eq!(offsets(state, t, me, (5, Some(&meta)), v), 0);
            assert_eq!(committed(state, t), None, "pending until the commit");
            assert_eq!(
                stable_fetch(state, t, true),
                (88, -1),
                "UNSTABLE_OFFSET_COMMIT"
            );
            assert_eq!(stable_fetch(state, t, false), (0, -1));
            assert_eq!(end(state, t, me, true, v), 0);
            assert_eq!(committed(state, t), Some(5));
            assert_eq!(committed_metadata(state, t), Some(meta.clone()));
            assert_eq!(stable_fetch(state, t, true), (0, 5));
            assert_eq!(log.last_stable_offset(), log.log_end_offset());
            // A retried EndTxn is answered as before; the other kind is refused.
            assert_eq!(end(state, t, me, true, v), 0);
            assert_eq!(end(state, t, me, false, v), 48);

            // Transaction 2, same client epoch, its sequence running on: aborted, offsets too.
            assert_eq!(add(state, t, me, &[0], v), [0]);
            let (code, second) = send(state, t, me, 1);
            assert_eq!(code, 0);
            assert!(second > first);
            assert_eq!(send(state, t, me, 1), (0, second), "a retry is a duplicate");
            assert_eq!(send(state, t, me, 3).0, 45, "a gap");
            let too_large = "m".repeat(4097);
            assert_eq!(
                offsets(state, t, me, (7, Some(&too_large)), v),
                12,
                "OFFSET_METADATA_TOO_LARGE"
            );
            assert_eq!(offsets(state, t, me, (9, None), v), 0);
            assert_eq!(end(state, t, me, false, v), 0);
            assert_eq!(committed(state, t), Some(5), "aborted offsets are dropped");
            assert_eq!(
                committed_metadata(state, t),
                Some(meta),
                "and their metadata"
            );
            assert_eq!(log.last_stable_offset(), log.log_end_offset());

            // An unknown partition: nothing is added.
            assert_eq!(add(state, t, me, &[0, 99], v), [55, 3]);

            // A new instance fences this one.
            let r = init(state, t, 60_000, v.min(4));
            assert_eq!(r.error_code, 0);
            assert_eq!(r.producer_id.0, me.0);
            assert!(r.producer_epoch > me.1);
            let fenced = if v >= 2 { 90 } else { 47 };
            assert_eq!(add(state, t, me, &[0], v), [fenced]);
            assert_eq!(send(state, t, me, 2).0, 47);
            assert_eq!(end(state, t, me, true, v), fenced);
            // ... also when it tries to re-initialise with its old identity (KIP-360).
            let mut req = InitProducerIdRequest::default();
            req.transactional_id = Some(tid(t));
            req.transaction_timeout_ms = 1000;
            req.producer_id = KPid(me.0);
            req.producer_epoch = me.1;
            let r = produce::init_producer_id(state, &req, 4);
            assert_eq!(r.error_code, 90);
            // A record before its partition was added is refused.
            let new = (r.producer_id.0, r.producer_epoch);
            let cur = init(state, t, 60_000, 4);
            let cur = (cur.producer_id.0, cur.producer_epoch);
            assert_ne!(cur, new);
            assert_eq!(send(state, t, cur, 0).0, 48);
        }
        // A timeout above the coordinator's maximum, an unknown transactional id.
        assert_eq!(init(state, "big", 900_001, 4).error_code, 50);
        assert_eq!(end(state, "nobody", (1, 0), true, 3), 49);
        assert_eq!(send(state, "nobody", (1, 0), 0).0, 49);
    }
}
