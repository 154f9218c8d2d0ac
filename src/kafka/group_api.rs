//! The consumer-group APIs on the wire: FindCoordinator (this node), JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup (on `groups::Groups`), OffsetCommit and OffsetFetch (on the broker's
//! durable `OffsetStore`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::errors::code_of;
use super::groups::JoinRequest;
use super::metadata::NODE_ID;
use super::server::State;
use crate::broker::TopicPartition;
use crate::offsets::OffsetAndMetadata;
use crate::types::Offset;

fn ms(v: i32) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub fn find_coordinator(
    state: &State,
    req: &FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let mut r = FindCoordinatorResponse::default();
    // Key type 0 (group) and 1 (transaction): this node coordinates both.
    if !matches!(req.key_type, 0 | 1) {
        r.error_code = ResponseError::InvalidRequest.code();
        r.node_id = BrokerId(-1);
        r.port = -1;
        if version >= 1 {
            r.error_message = Some(s("key type must be 0 (group) or 1 (transaction)"));
        }
        return r;
    }
    r.node_id = BrokerId(NODE_ID);
    r.host = s(&state.host);
    r.port = i32::from(state.port);
    r
}

pub fn join_group(state: &State, req: JoinGroupRequest, version: i16) -> JoinGroupResponse {
    // Before v1 there is no rebalance timeout: Kafka uses the session timeout.
    let rebalance = if version >= 1 {
        req.rebalance_timeout_ms
    } else {
        req.session_timeout_ms
    };
    let joined = state.groups.join(
        JoinRequest {
            group: req.group_id.0.to_string(),
            member_id: req.member_id.to_string(),
            protocol_type: req.protocol_type.to_string(),
            protocols: req
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            session_timeout: ms(req.session_timeout_ms),
            rebalance_timeout: ms(rebalance),
        },
        &|| state.stop.load(Ordering::Relaxed),
    );
    let mut r = JoinGroupResponse::default();
    r.error_code = joined.error;
    r.generation_id = if joined.error == 0 {
        joined.generation
    } else {
        -1
    };
    if version >= 7 {
        r.protocol_type = Some(s(&joined.protocol_type));
    }
    r.protocol_name = Some(s(&joined.protocol));
    r.leader = s(&joined.leader);
    r.member_id = s(&joined.member_id);
    r.members = joined
        .members
        .into_iter()
        .map(|(id, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = s(&id);
            m.metadata = metadata;
            m
        })
        .collect();
    r
}

pub fn sync_group(state: &State, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let (code, protocol_type, protocol, assignment) = state.groups.sync(
        req.group_id.0.as_str(),
        req.generation_id,
        req.member_id.as_str(),
        req.assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
        &|| state.stop.load(Ordering::Relaxed),
    );
    let mut r = SyncGroupResponse::default();
    r.error_code = code;
    if version >= 5 && code == 0 {
        r.protocol_type = Some(s(&protocol_type));
        r.protocol_name = Some(s(&protocol));
    }
    r.assignment = assignment;
    r
}

pub fn heartbeat(state: &State, req: &HeartbeatRequest) -> HeartbeatResponse {
    let mut r = HeartbeatResponse::default();
    r.error_code = state.groups.heartbeat(
        req.group_id.0.as_str(),
        req.generation_id,
        req.member_id.as_str(),
    );
    r
}

pub fn leave_group(state: &State, req: &LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let ids: Vec<String> = if version >= 3 {
        req.members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect()
    } else {
        vec![req.member_id.to_string()]
    };
    let codes = state.groups.leave(req.group_id.0.as_str(), &ids);
    let mut r = LeaveGroupResponse::default();
    if version >= 3 {
        r.members = ids
            .iter()
            .zip(&codes)
            .map(|(id, &code)| {
                let mut m = MemberResponse::default();
                m.member_id = s(id);
                m.error_code = code;
                m
            })
            .collect();
    } else {
        r.error_code = codes.first().copied().unwrap_or(0);
    }
    r
}

/// Commits every partition's offset with its metadata string (null is kept as "", as Kafka
/// does; above 4096 bytes the partition gets OFFSET_METADATA_TOO_LARGE).
pub fn offset_commit(state: &State, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let allowed = state.groups.check_commit(
        &group,
        req.generation_id_or_member_epoch,
        req.member_id.as_str(),
    );
    let mut r = OffsetCommitResponse::default();
    for topic in req.topics {
        let mut t = OffsetCommitResponseTopic::default();
        for p in topic.partitions {
            let mut pr = OffsetCommitResponsePartition::default();
            pr.partition_index = p.partition_index;
            pr.error_code = if allowed != 0 {
                allowed
            } else {
                commit_one(
                    state,
                    &group,
                    topic.name.0.as_str(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_metadata.as_ref().map_or("", |m| m.as_str()),
                )
            };
            t.partitions.push(pr);
        }
        t.name = topic.name;
        r.topics.push(t);
    }
    r
}

/// Kafka's metadata string of a committed offset, OFFSET_METADATA_TOO_LARGE above the limit.
pub fn offset_metadata(offset: Offset, metadata: &str) -> Result<OffsetAndMetadata, i16> {
    OffsetAndMetadata::with_metadata(offset, metadata)
        .map_err(|_| ResponseError::OffsetMetadataTooLarge.code())
}

fn commit_one(
    state: &State,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    metadata: &str,
) -> i16 {
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    let (Ok(index), Ok(offset)) = (u32::try_from(partition), u64::try_from(offset)) else {
        return if partition < 0 {
            unknown
        } else {
            ResponseError::InvalidCommitOffsetSize.code()
        };
    };
    let Ok(tp) = TopicPartition::new(topic, index) else {
        return ResponseError::InvalidTopicException.code();
    };
    if state.broker.partition(&tp).is_err() {
        return unknown;
    }
    let commit = match offset_metadata(Offset(offset), metadata) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match state
        .broker
        .offsets()
        .commit_offsets_with_metadata(group, &[(tp, commit)])
    {
        Ok(()) => 0,
        Err(e) => code_of(&e),
    }
}

/// The committed offset of each asked partition (-1: none). Null topics (v2+): every
/// partition the group committed.
pub fn offset_fetch(state: &State, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let group = req.group_id.0.to_string();
    let offsets = state.broker.offsets();
    let mut r = OffsetFetchResponse::default();
    let asked: Vec<(String, Vec<i32>)> = match req.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect(),
        None => match offsets.committed_offsets(&group) {
            Ok(all) => {
                let mut by_topic: Vec<(String, Vec<i32>)> = Vec::new();
                for tp in all.keys() {
                    let p = i32::try_from(tp.partition()).unwrap_or(i32::MAX);
                    match by_topic.last_mut() {
                        Some((t, ps)) if t == tp.topic() => ps.push(p),
                        _ => by_topic.push((tp.topic().to_string(), vec![p])),
                    }
                }
                by_topic
            }
            Err(e) => {
                if version >= 2 {
                    r.error_code = code_of(&e);
                }
                Vec::new()
            }
        },
    };
    for (topic, partitions) in asked {
        let mut t = OffsetFetchResponseTopic::default();
        for p in partitions {
            let mut pr = OffsetFetchResponsePartition::default();
            pr.partition_index = p;
            pr.committed_offset = -1;
            pr.metadata = Some(StrBytes::default());
            let committed = u32::try_from(p)
                .ok()
                .and_then(|i| TopicPartition::new(&topic, i).ok())
                .map(|tp| {
                    // A transactional commit not ended yet: the client asked for stable
                    // offsets (v7+), so it must retry rather than start from the older one.
                    match offsets.has_pending(&group, &tp) {
                        Ok(true) if req.require_stable => {
                            Err(ResponseError::UnstableOffsetCommit.code())
                        }
                        Err(e) => Err(code_of(&e)),
                        Ok(_) => offsets
                            .fetch_committed_with_metadata(&group, &tp)
                            .map_err(|e| code_of(&e)),
                    }
                });
            match committed {
                Some(Ok(Some(o))) => {
                    pr.committed_offset = i64::try_from(o.offset.0).unwrap_or(i64::MAX);
                    pr.metadata = Some(s(o.metadata.as_str()));
                }
                Some(Ok(None)) => {}
                Some(Err(code)) => pr.error_code = code,
                None => pr.error_code = ResponseError::UnknownTopicOrPartition.code(),
            }
            t.partitions.push(pr);
        }
        t.name = TopicName(s(&topic));
        r.topics.push(t);
    }
    r
}
