//! InitProducerId and Produce: client batches into partition logs, with the log's producer
//! state deciding duplicates (answered with the original offsets) and sequence/epoch errors.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use std::sync::atomic::Ordering;

use super::batch;
use super::errors::{batch_code, code_of};
use super::server::State;
use super::txn_api;
use crate::broker::TopicPartition;

/// A producer id for an idempotent producer, from the broker's one allocator (a transactional
/// id goes to the coordinator: `txn_api`). A request that
/// names its current id and epoch (v3+, after UNKNOWN_PRODUCER_ID or a fatal sequence error,
/// KIP-360) gets a fresh id at epoch 0 too: a new id is as good as a bumped epoch for a producer
/// without transactions, and needs no per-partition epoch bookkeeping.
pub fn init_producer_id(
    state: &State,
    req: &InitProducerIdRequest,
    version: i16,
) -> InitProducerIdResponse {
    if let Some(tid) = req.transactional_id.as_ref().filter(|t| !t.0.is_empty()) {
        return txn_api::init_transactional(state, tid.0.as_str(), req, version);
    }
    let mut r = InitProducerIdResponse::default();
    match state.broker.init_producer() {
        Ok((pid, epoch)) => {
            r.producer_id = ProducerId(pid.0);
            r.producer_epoch = epoch;
        }
        Err(e) => r.error_code = code_of(&e),
    }
    r
}

/// Appends every partition's batch; also says whether anything was appended (or answered as
/// a duplicate), for the test fault.
pub fn produce(state: &State, req: ProduceRequest, version: i16) -> (ProduceResponse, bool) {
    let mut resp = ProduceResponse::default();
    let mut appended = false;
    let acks_ok = matches!(req.acks, -1..=1);
    let tid = req.transactional_id.as_ref().map(|t| t.0.to_string());
    for topic in req.topic_data {
        let mut t = TopicProduceResponse::default();
        for p in topic.partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = p.index;
            let outcome = if acks_ok {
                append(
                    state,
                    tid.as_deref(),
                    topic.name.0.as_str(),
                    p.index,
                    p.records.as_deref(),
                )
            } else {
                Err((
                    ResponseError::InvalidRequiredAcks.code(),
                    format!("acks must be -1, 0 or 1, got {}", req.acks),
                ))
            };
            match outcome {
                Ok((base, log_start)) => {
                    appended = true;
                    pr.base_offset = base;
                    if version >= 5 {
                        pr.log_start_offset = log_start;
                    }
                }
                Err((code, message)) => {
                    pr.error_code = code;
                    pr.base_offset = -1;
                    if version >= 8 {
                        pr.error_message = Some(StrBytes::from_string(message));
                    }
                }
            }
            t.partition_responses.push(pr);
        }
        t.name = topic.name;
        resp.responses.push(t);
    }
    if appended {
        state.notify_append();
    }
    (resp, appended)
}

/// One partition's batch: (base offset, log start) or (error code, message).
fn append(
    state: &State,
    tid: Option<&str>,
    topic: &str,
    partition: i32,
    records: Option<&[u8]>,
) -> Result<(i64, i64), (i16, String)> {
    let unknown = || {
        (
            ResponseError::UnknownTopicOrPartition.code(),
            format!("no partition {topic}-{partition}"),
        )
    };
    let index = u32::try_from(partition).map_err(|_| unknown())?;
    let tp = TopicPartition::new(topic, index).map_err(|e| (code_of(&e), e.to_string()))?;
    let log = state.broker.partition(&tp).map_err(|_| unknown())?;
    let bytes = records.ok_or_else(|| {
        (
            ResponseError::InvalidRecord.code(),
            "no records".to_string(),
        )
    })?;
    let max = usize::try_from(log.config().max_batch_bytes).unwrap_or(usize::MAX);
    let batch = batch::from_kafka(bytes, max).map_err(|e| (batch_code(&e), e.to_string()))?;
    if state.config.test_ack_without_storing {
        let n = u64::from(batch.record_count());
        let base = state.unstored_offsets.fetch_add(n, Ordering::Relaxed);
        return Ok((i64::try_from(base).unwrap_or(i64::MAX), 0));
    }
    let info = if batch.header().is_transactional() {
        txn_api::produce(state, tid, &tp, batch)?
    } else {
        state
            .broker
            .produce(&tp, &batch)
            .map_err(|e| (code_of(&e), e.to_string()))?
    };
    if info.duplicate {
        let n = state.duplicates.fetch_add(1, Ordering::Relaxed) + 1;
        if state.config.test_drop_after_append.is_some() {
            tracing::warn!(
                "oncelog serve: TEST FAULT: duplicate #{n} answered with offset {} ({tp})",
                info.base_offset.0
            );
        }
    }
    let base = i64::try_from(info.base_offset.0).unwrap_or(i64::MAX);
    let start = i64::try_from(log.log_start_offset().0).unwrap_or(i64::MAX);
    Ok((base, start))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{MetadataRequest, TopicName};

    use super::*;
    use crate::format::batch::BatchBuilder;
    use crate::kafka::server::Server;
    use crate::types::{ProducerEpoch, ProducerId as Pid, Sequence};

    /// Produces one record as (pid, epoch, seq) to t-0: (error code, base offset).
    fn send(state: &State, pid: i64, epoch: ProducerEpoch, seq: Sequence) -> (i16, i64) {
        let mut b = BatchBuilder::new().producer(Pid(pid), epoch, seq);
        b.push(1, None, Some(format!("{pid}/{epoch}/{seq}").as_bytes()));
        let mut kafka = Vec::new();
        batch::append_as_kafka(&b.build().unwrap().view(), &mut kafka).unwrap();
        let mut p = PartitionProduceData::default();
        p.records = Some(Bytes::from(kafka));
        let mut t = TopicProduceData::default();
        t.name = TopicName(StrBytes::from_static_str("t"));
        t.partition_data = vec![p];
        let mut req = ProduceRequest::default();
        req.acks = -1;
        req.topic_data = vec![t];
        let (resp, _) = produce(state, req, 10);
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    #[test]
    fn duplicates_get_their_offsets_and_sequence_errors_their_codes() {
        let (_dir, server) = Server::for_tests();
        let state = server.state();
        let mut topic = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
        topic.name = Some(TopicName(StrBytes::from_static_str("t")));
        let mut req = MetadataRequest::default();
        req.topics = Some(vec![topic]);
        super::super::metadata::metadata(state, req, 12);
        let init = init_producer_id(state, &InitProducerIdRequest::default(), 4);
        assert_eq!(init.error_code, 0);
        let pid = init.producer_id.0;
        assert_eq!(send(state, pid, 0, 0), (0, 0));
        assert_eq!(send(state, pid, 0, 1), (0, 1));
        // A retry of either: NONE with the original offset, nothing appended.
        assert_eq!(send(state, pid, 0, 0), (0, 0));
        assert_eq!(send(state, pid, 0, 1), (0, 1));
        // A gap: OUT_OF_ORDER_SEQUENCE_NUMBER.
        assert_eq!(send(state, pid, 0, 5).0, 45);
        // A new epoch starts at 0; then the old epoch is fenced: INVALID_PRODUCER_EPOCH.
        assert_eq!(send(state, pid, 1, 0), (0, 2));
        assert_eq!(send(state, pid, 0, 2).0, 47);
        // A producer the log does not know, not at sequence 0: UNKNOWN_PRODUCER_ID.
        assert_eq!(send(state, pid + 1000, 0, 3).0, 59);
        // Metadata created the topic with the default 4 partitions.
        assert_eq!(state.broker.partitions().of_topic("t").len(), 4);
        let end = state
            .broker
            .partition(&TopicPartition::new("t", 0).unwrap())
            .unwrap()
            .log_end_offset();
        assert_eq!(end.0, 3, "exactly the three accepted batches are stored");
        let txn = {
            let mut r = InitProducerIdRequest::default();
            r.transactional_id = Some(kafka_protocol::messages::TransactionalId(
                StrBytes::from_static_str("tx"),
            ));
            // No timeout (0): refused before the coordinator sees it.
            init_producer_id(state, &r, 4)
        };
        assert_eq!(
            txn.error_code,
            ResponseError::InvalidTransactionTimeout.code()
        );
    }
}
