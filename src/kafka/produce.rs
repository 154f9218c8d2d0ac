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
use crate::broker::TopicPartition;

/// A producer id for an idempotent producer, from the broker's one allocator. A request that
/// names its current id and epoch (v3+, after UNKNOWN_PRODUCER_ID or a fatal sequence error,
/// KIP-360) gets a fresh id at epoch 0 too: a new id is as good as a bumped epoch for a producer
/// without transactions, and needs no per-partition epoch bookkeeping.
pub fn init_producer_id(state: &State, req: &InitProducerIdRequest) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default();
    if req
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty())
    {
        // Transactions are not served yet (docs/kafka-wire.md).
        r.error_code = ResponseError::InvalidRequest.code();
        return r;
    }
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
    for topic in req.topic_data {
        let mut t = TopicProduceResponse::default();
        for p in topic.partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = p.index;
            let outcome = if acks_ok {
                append(state, topic.name.0.as_str(), p.index, p.records.as_deref())
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
    let info = state
        .broker
        .produce(&tp, &batch)
        .map_err(|e| (code_of(&e), e.to_string()))?;
    if info.duplicate {
        let n = state.duplicates.fetch_add(1, Ordering::Relaxed) + 1;
        if state.config.test_drop_after_append.is_some() {
            eprintln!(
                "oncelog serve: TEST FAULT: duplicate #{n} answered with offset {} ({tp})",
                info.base_offset.0
            );
        }
    }
    let base = i64::try_from(info.base_offset.0).unwrap_or(i64::MAX);
    let start = i64::try_from(log.log_start_offset().0).unwrap_or(i64::MAX);
    Ok((base, start))
}
