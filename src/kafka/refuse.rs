//! The answers to requests the ACL refuses (`acl`): the request's own response shape, every
//! topic, partition, group or transactional id in it carrying the per-API authorization error
//! (TOPIC_, GROUP_, TRANSACTIONAL_ID_ or CLUSTER_AUTHORIZATION_FAILED), so a client reports
//! the refusal instead of retrying a closed connection.

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_transactions_response::TransactionState;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeTransactionsRequest,
    DescribeTransactionsResponse, FetchRequest, FetchResponse, ListOffsetsRequest,
    ListOffsetsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, ProduceRequest, ProduceResponse, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use kafka_protocol::ResponseError;

/// TOPIC_AUTHORIZATION_FAILED.
pub fn topic() -> i16 {
    ResponseError::TopicAuthorizationFailed.code()
}

/// GROUP_AUTHORIZATION_FAILED.
pub fn group() -> i16 {
    ResponseError::GroupAuthorizationFailed.code()
}

/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
pub fn txn() -> i16 {
    ResponseError::TransactionalIdAuthorizationFailed.code()
}

/// CLUSTER_AUTHORIZATION_FAILED.
pub fn cluster() -> i16 {
    ResponseError::ClusterAuthorizationFailed.code()
}

pub fn produce(req: &ProduceRequest) -> ProduceResponse {
    let mut r = ProduceResponse::default();
    r.responses = req
        .topic_data
        .iter()
        .map(|t| {
            let mut out = TopicProduceResponse::default();
            out.name = t.name.clone();
            out.partition_responses = t
                .partition_data
                .iter()
                .map(|p| {
                    let mut pr = PartitionProduceResponse::default();
                    pr.index = p.index;
                    pr.error_code = topic();
                    pr.base_offset = -1;
                    pr.log_append_time_ms = -1;
                    pr.log_start_offset = -1;
                    pr
                })
                .collect();
            out
        })
        .collect();
    r
}

pub fn fetch(req: &FetchRequest) -> FetchResponse {
    let mut r = FetchResponse::default();
    r.responses = req
        .topics
        .iter()
        .map(|t| {
            let mut out = FetchableTopicResponse::default();
            out.topic = t.topic.clone();
            out.topic_id = t.topic_id;
            out.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut pd = PartitionData::default();
                    pd.partition_index = p.partition;
                    pd.error_code = topic();
                    pd.high_watermark = -1;
                    pd.last_stable_offset = -1;
                    pd.log_start_offset = -1;
                    pd
                })
                .collect();
            out
        })
        .collect();
    r
}

pub fn list_offsets(req: &ListOffsetsRequest) -> ListOffsetsResponse {
    let mut r = ListOffsetsResponse::default();
    r.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut out = ListOffsetsTopicResponse::default();
            out.name = t.name.clone();
            out.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut pr = ListOffsetsPartitionResponse::default();
                    pr.partition_index = p.partition_index;
                    pr.error_code = topic();
                    pr.offset = -1;
                    pr.timestamp = -1;
                    pr
                })
                .collect();
            out
        })
        .collect();
    r
}

pub fn create_topics(req: &CreateTopicsRequest) -> CreateTopicsResponse {
    let mut r = CreateTopicsResponse::default();
    r.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut out = CreatableTopicResult::default();
            out.name = t.name.clone();
            out.error_code = topic();
            out.num_partitions = -1;
            out.replication_factor = -1;
            out
        })
        .collect();
    r
}

pub fn delete_topics(req: &DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let mut r = DeleteTopicsResponse::default();
    let refused = |name, topic_id| {
        let mut out = DeletableTopicResult::default();
        out.name = name;
        out.topic_id = topic_id;
        out.error_code = topic();
        out
    };
    r.responses = if version >= 6 {
        req.topics
            .iter()
            .map(|t| refused(t.name.clone(), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| refused(Some(n.clone()), Default::default()))
            .collect()
    };
    r
}

pub fn offset_commit(req: &OffsetCommitRequest) -> OffsetCommitResponse {
    let mut r = OffsetCommitResponse::default();
    r.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut out = OffsetCommitResponseTopic::default();
            out.name = t.name.clone();
            out.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut pr = OffsetCommitResponsePartition::default();
                    pr.partition_index = p.partition_index;
                    pr.error_code = group();
                    pr
                })
                .collect();
            out
        })
        .collect();
    r
}

/// v2+ carry the error at the top; v1 only per partition.
pub fn offset_fetch(req: &OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let mut r = OffsetFetchResponse::default();
    if version >= 2 {
        r.error_code = group();
    }
    r.topics = req
        .topics
        .iter()
        .flatten()
        .map(|t| {
            let mut out = OffsetFetchResponseTopic::default();
            out.name = t.name.clone();
            out.partitions = t
                .partition_indexes
                .iter()
                .map(|&i| {
                    let mut pr = OffsetFetchResponsePartition::default();
                    pr.partition_index = i;
                    pr.committed_offset = -1;
                    pr.error_code = group();
                    pr
                })
                .collect();
            out
        })
        .collect();
    r
}

pub fn add_partitions(req: &AddPartitionsToTxnRequest) -> AddPartitionsToTxnResponse {
    let mut r = AddPartitionsToTxnResponse::default();
    r.results_by_topic_v3_and_below = req
        .v3_and_below_topics
        .iter()
        .map(|t| {
            let mut out = AddPartitionsToTxnTopicResult::default();
            out.name = t.name.clone();
            out.results_by_partition = t
                .partitions
                .iter()
                .map(|&i| {
                    let mut pr = AddPartitionsToTxnPartitionResult::default();
                    pr.partition_index = i;
                    pr.partition_error_code = txn();
                    pr
                })
                .collect();
            out
        })
        .collect();
    r
}

pub fn txn_offset_commit(req: &TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let mut r = TxnOffsetCommitResponse::default();
    r.topics = req
        .topics
        .iter()
        .map(|t| {
            let mut out = TxnOffsetCommitResponseTopic::default();
            out.name = t.name.clone();
            out.partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut pr = TxnOffsetCommitResponsePartition::default();
                    pr.partition_index = p.partition_index;
                    pr.error_code = txn();
                    pr
                })
                .collect();
            out
        })
        .collect();
    r
}

pub fn describe_transactions(req: &DescribeTransactionsRequest) -> DescribeTransactionsResponse {
    let mut r = DescribeTransactionsResponse::default();
    r.transaction_states = req
        .transactional_ids
        .iter()
        .map(|id| {
            let mut s = TransactionState::default();
            s.transactional_id = id.clone();
            s.error_code = txn();
            s.producer_id = kafka_protocol::messages::ProducerId(-1);
            s.producer_epoch = -1;
            s
        })
        .collect();
    r
}
