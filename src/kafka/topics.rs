//! CreateTopics: a topic of N partitions on this node, checked as a Kafka broker checks it
//! (name, partition count, replication factor, duplicates, an existing topic), or only checked
//! with `validate_only`. Topics are also created on first use by Metadata (`metadata.rs`);
//! both go through [`create`], under one lock, so a topic is reported created exactly once.

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::errors::code_of;
use super::server::State;
use crate::broker::TopicPartition;

/// The most partitions one CreateTopics may ask for: every partition is a directory with a
/// preallocated active segment (`--segment-bytes`), so a typo like 100000 must not fill the disk.
pub const MAX_CREATE_PARTITIONS: i32 = 1024;

/// Why a topic was not created: a Kafka error code and a message for the client.
type Refusal = (ResponseError, String);

pub fn create_topics(
    state: &State,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut r = CreateTopicsResponse::default();
    let names: Vec<String> = req.topics.iter().map(|t| t.name.0.to_string()).collect();
    r.topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            // Kafka answers every copy of a name listed twice with INVALID_REQUEST.
            let outcome = if names.iter().filter(|n| **n == name).count() > 1 {
                Err((
                    ResponseError::InvalidRequest,
                    format!("topic {name:?} is listed more than once"),
                ))
            } else {
                create_one(state, &t, req.validate_only)
            };
            result(t, outcome, version)
        })
        .collect();
    r
}

/// Checks one topic and, unless `validate_only`, creates it; the partition count it has or
/// would have.
fn create_one(state: &State, t: &CreatableTopic, validate_only: bool) -> Result<i32, Refusal> {
    let name = t.name.0.as_str();
    if let Err(e) = TopicPartition::new(name, 0) {
        return Err((ResponseError::InvalidTopicException, e.to_string()));
    }
    if name.starts_with("__") {
        return Err((
            ResponseError::InvalidTopicException,
            format!("topic names starting with \"__\" are reserved for the broker ({name:?})"),
        ));
    }
    if !t.assignments.is_empty() {
        return Err((
            ResponseError::InvalidRequest,
            "manual replica assignments are not supported: leave them out".into(),
        ));
    }
    let partitions = match t.num_partitions {
        -1 => i32::try_from(state.config.default_partitions).unwrap_or(i32::MAX),
        n if (1..=MAX_CREATE_PARTITIONS).contains(&n) => n,
        n => {
            return Err((
                ResponseError::InvalidPartitions,
                format!(
                "{n} partitions: the count must be -1 (default) or 1 to {MAX_CREATE_PARTITIONS}"
            ),
            ))
        }
    };
    if !matches!(t.replication_factor, -1 | 1) {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {}: this node is the only broker (use 1 or -1)",
                t.replication_factor
            ),
        ));
    }
    if let Some(c) = t.configs.first() {
        return Err((
            ResponseError::InvalidConfig,
            format!(
                "topic configs are not supported (got {:?})",
                c.name.as_str()
            ),
        ));
    }
    let _one_at_a_time = state.topic_creation.lock();
    if !state.broker.partitions().of_topic(name).is_empty() {
        return Err((
            ResponseError::TopicAlreadyExists,
            format!("topic {name:?} already exists"),
        ));
    }
    if !validate_only {
        let count = u32::try_from(partitions).unwrap_or(1);
        state.broker.create_topic(name, count).map_err(|e| {
            let code = ResponseError::try_from_code(code_of(&e));
            (
                code.unwrap_or(ResponseError::UnknownServerError),
                e.to_string(),
            )
        })?;
    }
    Ok(partitions)
}

fn result(t: CreatableTopic, outcome: Result<i32, Refusal>, version: i16) -> CreatableTopicResult {
    let mut r = CreatableTopicResult::default();
    match outcome {
        Ok(partitions) => {
            if version >= 5 {
                r.num_partitions = partitions;
                r.replication_factor = 1;
                r.configs = Some(Vec::new());
            }
        }
        Err((code, message)) => {
            tracing::info!(
                "oncelog serve: CreateTopics {:?} refused: {message}",
                t.name.0.as_str()
            );
            r.error_code = code.code();
            r.error_message = Some(StrBytes::from_string(message));
            if version >= 5 {
                r.num_partitions = -1;
                r.replication_factor = -1;
                r.configs = None;
            }
        }
    }
    if version >= 7 {
        r.topic_id = super::metadata::topic_id(t.name.0.as_str());
    }
    r.name = t.name;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::Server;
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopicConfig,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};

    fn topic(name: &str, partitions: i32, replication: i16) -> CreatableTopic {
        let mut t = CreatableTopic::default();
        t.name = TopicName(StrBytes::from_string(name.into()));
        t.num_partitions = partitions;
        t.replication_factor = replication;
        t
    }

    fn request(topics: Vec<CreatableTopic>, validate_only: bool) -> CreateTopicsRequest {
        let mut r = CreateTopicsRequest::default();
        r.topics = topics;
        r.validate_only = validate_only;
        r.timeout_ms = 1000;
        r
    }

    fn codes(r: &CreateTopicsResponse) -> Vec<(String, i16)> {
        r.topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.error_code))
            .collect()
    }

    fn pairs(v: &[(&str, i16)]) -> Vec<(String, i16)> {
        v.iter().map(|&(n, c)| (n.to_string(), c)).collect()
    }

    #[test]
    fn creates_checks_and_refuses_topics_as_kafka_does() {
        let (_dir, server) = Server::for_tests();
        let state = server.state();
        let parts = |name: &str| state.broker.partitions().of_topic(name).len();

        let mut with_config = topic("cfg", 1, 1);
        let mut c = CreatableTopicConfig::default();
        c.name = StrBytes::from_static_str("cleanup.policy");
        with_config.configs = vec![c];
        let mut assigned = topic("assigned", 1, -1);
        let mut a = CreatableReplicaAssignment::default();
        a.broker_ids = vec![BrokerId(0)];
        assigned.assignments = vec![a];
        let r = create_topics(
            state,
            request(
                vec![
                    topic("three", 3, 1),
                    topic("default", -1, -1),
                    topic("zero", 0, 1),
                    topic("huge", MAX_CREATE_PARTITIONS + 1, 1),
                    topic("replicated", 2, 3),
                    topic("__internal", 1, 1),
                    topic("bad/name", 1, 1),
                    topic("twice", 1, 1),
                    topic("twice", 1, 1),
                    with_config,
                    assigned,
                ],
                false,
            ),
            7,
        );
        assert_eq!(
            codes(&r),
            pairs(&[
                ("three", 0),
                ("default", 0),
                ("zero", 37),
                ("huge", 37),
                ("replicated", 38),
                ("__internal", 17),
                ("bad/name", 17),
                ("twice", 42),
                ("twice", 42),
                ("cfg", 40),
                ("assigned", 42),
            ])
        );
        assert_eq!(
            (r.topics[0].num_partitions, r.topics[0].replication_factor),
            (3, 1)
        );
        assert_eq!(r.topics[1].num_partitions, 4, "-1 takes --partitions");
        assert!(r.topics[2].error_message.is_some());
        assert_eq!(r.topics[2].num_partitions, -1);
        assert_eq!(
            r.topics[0].topic_id,
            super::super::metadata::topic_id("three")
        );
        assert_eq!((parts("three"), parts("default")), (3, 4));
        for refused in ["zero", "huge", "replicated", "twice", "cfg", "assigned"] {
            assert_eq!(parts(refused), 0, "{refused}");
        }

        // An existing topic, whatever its count; validate_only checks without creating.
        let r = create_topics(
            state,
            request(vec![topic("three", 5, 1), topic("later", 2, 1)], true),
            4,
        );
        assert_eq!(codes(&r), pairs(&[("three", 36), ("later", 0)]));
        assert_eq!((parts("three"), parts("later")), (3, 0));
        let r = create_topics(state, request(vec![topic("later", 2, 1)], false), 2);
        assert_eq!(codes(&r), pairs(&[("later", 0)]));
        assert_eq!(parts("later"), 2);
    }
}
