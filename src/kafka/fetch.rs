//! Fetch (long-polling, whole batches in Kafka's format, HW / LSO / log start, aborted
//! transactions for read_committed) and ListOffsets.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, ProducerId,
};
use kafka_protocol::ResponseError;

use super::batch::append_as_kafka;
use super::errors::code_of;
use super::server::State;
use crate::broker::TopicPartition;
use crate::error::Error;
use crate::log::{Isolation, Log};
use crate::types::Offset;

/// The longest a Fetch waits for data, whatever `max_wait_ms` asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

fn isolation(level: i8) -> Isolation {
    if level == 1 {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    }
}

fn as_i64(o: Offset) -> i64 {
    i64::try_from(o.0).unwrap_or(i64::MAX)
}

/// The log of `topic`/`partition`, or the Kafka error code for its absence.
fn partition_log(state: &State, topic: &str, partition: i32) -> Result<std::sync::Arc<Log>, i16> {
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    let index = u32::try_from(partition).map_err(|_| unknown)?;
    let tp = TopicPartition::new(topic, index).map_err(|e| code_of(&e))?;
    state.broker.partition(&tp).map_err(|_| unknown)
}

/// Answers once at least `min_bytes` are available, or after `max_wait_ms` (capped at
/// [`MAX_WAIT`]), or at once when a partition has an error; re-reads after every append.
pub fn fetch(state: &State, req: FetchRequest, version: i16) -> FetchResponse {
    let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    loop {
        let seen = state.append_count();
        let (resp, bytes, errors) = fetch_once(state, &req, version);
        if bytes >= min_bytes || errors || Instant::now() >= deadline {
            return resp;
        }
        state.wait_for_append(seen, deadline);
        if state.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return resp;
        }
    }
}

/// One pass over the requested partitions: the response, its record bytes, any error.
fn fetch_once(state: &State, req: &FetchRequest, version: i16) -> (FetchResponse, usize, bool) {
    let mut resp = FetchResponse::default();
    let mut budget = usize::try_from(req.max_bytes).unwrap_or(0);
    let mut total = 0usize;
    let mut errors = false;
    let iso = isolation(req.isolation_level);
    for topic in &req.topics {
        let mut t = FetchableTopicResponse::default();
        t.topic = topic.topic.clone();
        for p in &topic.partitions {
            let mut pd = PartitionData::default();
            pd.partition_index = p.partition;
            // Kafka returns at least one whole batch per response even above max_bytes.
            let room = if total == 0 {
                usize::try_from(p.partition_max_bytes).unwrap_or(0)
            } else {
                budget.min(usize::try_from(p.partition_max_bytes).unwrap_or(0))
            };
            match read_partition(
                state,
                topic.topic.0.as_str(),
                p.partition,
                p.fetch_offset,
                room,
                iso,
            ) {
                Ok(read) => {
                    pd.high_watermark = read.high_watermark;
                    pd.last_stable_offset = read.last_stable_offset;
                    if version >= 5 {
                        pd.log_start_offset = read.log_start;
                    }
                    pd.aborted_transactions =
                        (iso == Isolation::ReadCommitted).then_some(read.aborted);
                    total += read.records.len();
                    budget = budget.saturating_sub(read.records.len());
                    pd.records = Some(Bytes::from(read.records));
                }
                Err(code) => {
                    errors = true;
                    pd.error_code = code;
                    pd.high_watermark = -1;
                    pd.records = Some(Bytes::new());
                }
            }
            t.partitions.push(pd);
        }
        resp.responses.push(t);
    }
    (resp, total, errors)
}

struct PartitionRead {
    records: Vec<u8>,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start: i64,
    aborted: Vec<AbortedTransaction>,
}

fn read_partition(
    state: &State,
    topic: &str,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    iso: Isolation,
) -> Result<PartitionRead, i16> {
    let log = partition_log(state, topic, partition)?;
    let out_of_range = ResponseError::OffsetOutOfRange.code();
    let offset = u64::try_from(offset).map_err(|_| out_of_range)?;
    let read = log
        .read_with(Offset(offset), max_bytes.max(1), iso)
        .map_err(|e| code_of(&e))?;
    let mut records = Vec::with_capacity(read.fetch.bytes().len());
    for view in read.fetch.batches() {
        let view = view.map_err(|e| code_of(&e))?;
        append_as_kafka(&view, &mut records).map_err(|e| code_of(&Error::InvalidBatch(e)))?;
    }
    let aborted = read
        .aborted
        .iter()
        .map(|a| {
            let mut t = AbortedTransaction::default();
            t.producer_id = ProducerId(a.producer_id.0);
            t.first_offset = i64::try_from(a.first_offset).unwrap_or(i64::MAX);
            t
        })
        .collect();
    Ok(PartitionRead {
        records,
        high_watermark: as_i64(read.high_watermark),
        last_stable_offset: as_i64(read.last_stable_offset),
        log_start: as_i64(log.log_start_offset()),
        aborted,
    })
}

/// Earliest (-2) is the log start, latest (-1) the high-water mark (the last stable offset for
/// read_committed), a timestamp the first offset whose record is at or after it (-1 if none).
pub fn list_offsets(state: &State, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    let iso = isolation(req.isolation_level);
    for topic in req.topics {
        let mut t = ListOffsetsTopicResponse::default();
        for p in topic.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            match offset_for(
                state,
                topic.name.0.as_str(),
                p.partition_index,
                p.timestamp,
                iso,
            ) {
                Ok(offset) => {
                    pr.offset = offset;
                    pr.timestamp = -1;
                    if version >= 4 {
                        pr.leader_epoch = 0;
                    }
                }
                Err(code) => {
                    pr.error_code = code;
                    pr.offset = -1;
                    pr.timestamp = -1;
                }
            }
            t.partitions.push(pr);
        }
        t.name = topic.name;
        resp.topics.push(t);
    }
    resp
}

fn offset_for(
    state: &State,
    topic: &str,
    partition: i32,
    timestamp: i64,
    iso: Isolation,
) -> Result<i64, i16> {
    let log = partition_log(state, topic, partition)?;
    match timestamp {
        EARLIEST => Ok(as_i64(log.log_start_offset())),
        LATEST => Ok(match iso {
            Isolation::ReadCommitted => as_i64(log.last_stable_offset()),
            Isolation::ReadUncommitted => as_i64(log.log_end_offset()),
        }),
        ts if ts >= 0 => match log.offset_for_timestamp(ts) {
            Ok(Some(o)) => Ok(as_i64(o)),
            Ok(None) => Ok(-1),
            Err(e) => Err(code_of(&e)),
        },
        // -3 (the offset of the largest timestamp) and the other special values.
        _ => Err(ResponseError::UnsupportedVersion.code()),
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::format::batch::BatchBuilder;
    use crate::kafka::server::Server;

    fn request(max_wait_ms: i32, offset: i64) -> FetchRequest {
        let mut p = FetchPartition::default();
        p.fetch_offset = offset;
        p.partition_max_bytes = 1 << 20;
        let mut t = FetchTopic::default();
        t.topic = TopicName(StrBytes::from_static_str("t"));
        t.partitions = vec![p];
        let mut req = FetchRequest::default();
        req.max_wait_ms = max_wait_ms;
        req.min_bytes = 1;
        req.max_bytes = 1 << 20;
        req.topics = vec![t];
        req
    }

    /// A fetch at the log end with `min_bytes` 1 waits for the next append and returns it; with
    /// `max_wait_ms` 0 it returns empty at once.
    #[test]
    fn a_fetch_at_the_end_long_polls_until_an_append() {
        let (_dir, server) = Server::for_tests();
        let state = server.state();
        state.broker.create_topic("t", 1).unwrap();
        let log = state
            .broker
            .partition(&TopicPartition::new("t", 0).unwrap())
            .unwrap();
        let empty = fetch(state, request(0, 0), 12);
        let p = &empty.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 0));
        assert!(p.records.as_ref().unwrap().is_empty());

        let resp = std::thread::scope(|s| {
            let fetcher = s.spawn(|| fetch(state, request(30_000, 0), 12));
            // Appended while the fetch waits (or, on a slow machine, before it starts: then
            // the first read finds it; either way the answer must carry it).
            std::thread::sleep(std::time::Duration::from_millis(50));
            let mut b = BatchBuilder::new();
            b.push(1, None, Some(b"late"));
            log.append(&b.build().unwrap()).unwrap();
            state.notify_append();
            fetcher.join().unwrap()
        });
        let p = &resp.responses[0].partitions[0];
        assert_eq!(
            (p.error_code, p.high_watermark, p.last_stable_offset),
            (0, 1, 1)
        );
        assert!(!p.records.as_ref().unwrap().is_empty());
        assert_eq!(
            p.aborted_transactions, None,
            "read_uncommitted carries none"
        );
    }
}
