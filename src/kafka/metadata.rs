//! Metadata: this node as the only broker, leader of every partition; topics created with the
//! default partition count when a client asks for one that does not exist (and allows it).

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::errors::code_of;
use super::server::State;
use crate::broker::TopicPartition;

/// This node's broker id in every response.
pub const NODE_ID: i32 = 0;
/// The cluster id Metadata v2+ reports.
pub const CLUSTER_ID: &str = "oncelog";

#[cfg(test)]
pub fn metadata(state: &State, req: MetadataRequest, version: i16) -> MetadataResponse {
    metadata_for(state, req, version, true)
}

/// [`metadata`] for a principal that may (`may_create`) or may not create topics (the ACL,
/// `acl`): a topic it names that does not exist is answered UNKNOWN_TOPIC_OR_PARTITION.
pub fn metadata_for(
    state: &State,
    req: MetadataRequest,
    version: i16,
    may_create: bool,
) -> MetadataResponse {
    let mut r = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(NODE_ID);
    broker.host = StrBytes::from_string(state.host.clone());
    broker.port = i32::from(state.port);
    r.brokers = vec![broker];
    if version >= 2 {
        r.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
    }
    if version >= 1 {
        r.controller_id = BrokerId(NODE_ID);
    }
    // v0 has no null: an empty list asks for every topic, as null does from v1 on.
    let names: Vec<String> = match req.topics {
        Some(t) if !(t.is_empty() && version == 0) => t
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect(),
        _ => {
            let mut all = state.broker.partitions().topics();
            all.retain(|t| !t.starts_with("__"));
            all
        }
    };
    // Auto-creation is asked for explicitly from v4; before, a broker decided (ours: yes).
    let create = (version < 4 || req.allow_auto_topic_creation) && may_create;
    r.topics = names
        .into_iter()
        .map(|name| topic(state, name, create, version))
        .collect();
    r
}

fn topic(state: &State, name: String, create: bool, version: i16) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    let mut parts = state.broker.partitions().of_topic(&name);
    // Created under the lock CreateTopics takes, so the two never both create one topic.
    let creating = (parts.is_empty() && create).then(|| state.topic_creation.lock());
    if creating.is_some() {
        parts = state.broker.partitions().of_topic(&name);
    }
    if parts.is_empty() && !name.starts_with("__") {
        if let Err(e) = TopicPartition::new(&name, 0) {
            t.error_code = code_of(&e);
        } else if !create {
            t.error_code = ResponseError::UnknownTopicOrPartition.code();
        } else {
            match state
                .broker
                .create_topic(&name, state.config.default_partitions)
            {
                Ok(created) => parts = created,
                Err(e) => t.error_code = code_of(&e),
            }
        }
    } else if parts.is_empty() {
        t.error_code = ResponseError::UnknownTopicOrPartition.code();
    }
    if version >= 10 {
        t.topic_id = topic_id(&name);
    }
    t.name = Some(TopicName(StrBytes::from_string(name)));
    t.partitions = parts
        .iter()
        .map(|tp| {
            let mut p = MetadataResponsePartition::default();
            p.partition_index = i32::try_from(tp.partition()).unwrap_or(i32::MAX);
            p.leader_id = BrokerId(NODE_ID);
            if version >= 7 {
                p.leader_epoch = 0;
            }
            p.replica_nodes = vec![BrokerId(NODE_ID)];
            p.isr_nodes = vec![BrokerId(NODE_ID)];
            p
        })
        .collect();
    t
}

/// A stable id for a topic name (Metadata v10+ carries one; nothing we serve takes it back):
/// four CRC-32C hashes of the name, shaped as a version-4 UUID.
pub(super) fn topic_id(name: &str) -> uuid::Uuid {
    let a = crc32c::crc32c(name.as_bytes());
    let b = crc32c::crc32c_append(0x9e37_79b9, name.as_bytes());
    let c = crc32c::crc32c_append(a, b"oncelog");
    let d = crc32c::crc32c_append(b, b"topic");
    let mut bytes = [0u8; 16];
    for (chunk, word) in bytes.chunks_exact_mut(4).zip([a, b, c, d]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}
