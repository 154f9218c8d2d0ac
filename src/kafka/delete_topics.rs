//! DeleteTopics: every partition of a topic closed and its directory removed, crash-safe
//! (`Broker::delete_topic`). v1-v5 name topics; v6 names each by name or by topic id (the
//! id Metadata reports). Afterwards Metadata no longer lists the topic, and a produce to it
//! creates it anew when Metadata auto-creates it.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::errors::code_of;
use super::metadata::topic_id;
use super::server::State;

/// Why a topic was not deleted: a Kafka error code and a message for the client.
type Refusal = (ResponseError, String);

pub fn delete_topics(
    state: &State,
    req: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    let wanted: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut deleted_any = false;
    let mut r = DeleteTopicsResponse::default();
    r.responses = wanted
        .into_iter()
        .map(|(name, id)| {
            let outcome = resolve(state, name.as_deref(), id).and_then(|n| {
                delete_one(state, &n)?;
                Ok(n)
            });
            deleted_any |= outcome.is_ok();
            result(name, id, outcome, version)
        })
        .collect();
    if deleted_any {
        // Long-polling fetches of a deleted partition wake up and find it gone.
        state.notify_append();
    }
    r
}

/// The topic a request entry names: by name, or (v6) by id; not both.
fn resolve(state: &State, name: Option<&str>, id: Uuid) -> Result<String, Refusal> {
    match (name, id.is_nil()) {
        (Some(n), true) => Ok(n.to_string()),
        (Some(n), false) => Err((
            ResponseError::InvalidRequest,
            format!("topic {n:?} is named by both a name and an id: give one"),
        )),
        (None, true) => Err((
            ResponseError::InvalidRequest,
            "a topic with neither a name nor an id".into(),
        )),
        (None, false) => {
            let topics = state.broker.partitions().topics();
            topics.into_iter().find(|n| topic_id(n) == id).ok_or((
                ResponseError::UnknownTopicId,
                format!("no topic has the id {id}"),
            ))
        }
    }
}

fn delete_one(state: &State, name: &str) -> Result<(), Refusal> {
    // One at a time with creation, so Metadata auto-creation never races a deletion.
    let _one_at_a_time = state.topic_creation.lock();
    match state.broker.delete_topic(name) {
        Ok(deleted) if deleted.is_empty() => Err((
            ResponseError::UnknownTopicOrPartition,
            format!("no topic {name:?}"),
        )),
        Ok(deleted) => {
            tracing::info!(
                "oncelog serve: deleted topic {name:?} ({} partitions)",
                deleted.len()
            );
            Ok(())
        }
        Err(e) => Err((
            ResponseError::try_from_code(code_of(&e)).unwrap_or(ResponseError::UnknownServerError),
            e.to_string(),
        )),
    }
}

fn result(
    name: Option<String>,
    id: Uuid,
    outcome: Result<String, Refusal>,
    version: i16,
) -> DeletableTopicResult {
    let mut r = DeletableTopicResult::default();
    let name = match outcome {
        Ok(n) => Some(n),
        Err((code, message)) => {
            tracing::info!("oncelog serve: DeleteTopics {name:?}/{id} refused: {message}");
            r.error_code = code.code();
            if version >= 5 {
                r.error_message = Some(StrBytes::from_string(message));
            }
            name
        }
    };
    if version >= 6 {
        r.topic_id = name.as_deref().map_or(id, topic_id);
    }
    // Nullable from v6 on; before, an entry always had its name.
    r.name = name
        .or_else(|| (version < 6).then(String::new))
        .map(|n| TopicName(StrBytes::from_string(n)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::Server;
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;

    fn by_name(names: &[&str]) -> DeleteTopicsRequest {
        let mut r = DeleteTopicsRequest::default();
        r.topic_names = names
            .iter()
            .map(|n| TopicName(StrBytes::from_string((*n).into())))
            .collect();
        r.timeout_ms = 1000;
        r
    }

    #[test]
    fn deletes_by_name_and_id_and_refuses_as_kafka_does() {
        let (_dir, server) = Server::for_tests();
        let state = server.state();
        let parts = |name: &str| state.broker.partitions().of_topic(name).len();
        for t in ["a", "b", "c"] {
            state.broker.create_topic(t, 2).unwrap();
        }
        let r = delete_topics(state, by_name(&["a", "nope", "__consumer_offsets"]), 5);
        let codes: Vec<(String, i16)> = r
            .responses
            .iter()
            .map(|t| (t.name.as_ref().unwrap().0.to_string(), t.error_code))
            .collect();
        let want: Vec<(String, i16)> = [("a", 0), ("nope", 3), ("__consumer_offsets", 17)]
            .iter()
            .map(|&(n, c)| (n.to_string(), c))
            .collect();
        assert_eq!(codes, want);
        assert!(r.responses[1].error_message.is_some());
        assert_eq!((parts("a"), parts("b")), (0, 2));
        assert!(!state.broker.dir().join("a-0").exists());
        assert!(state.broker.dir().join("b-0").exists());

        // v6: by id, an unknown id, and both a name and an id.
        let entry = |name: Option<&str>, id: Uuid| {
            let mut s = DeleteTopicState::default();
            s.name = name.map(|n| TopicName(StrBytes::from_string(n.into())));
            s.topic_id = id;
            s
        };
        let mut req = DeleteTopicsRequest::default();
        req.topics = vec![
            entry(None, topic_id("b")),
            entry(None, topic_id("gone")),
            entry(Some("c"), topic_id("c")),
        ];
        let r = delete_topics(state, req, 6);
        let codes: Vec<i16> = r.responses.iter().map(|t| t.error_code).collect();
        assert_eq!(codes, [0, 100, 42]);
        assert_eq!(r.responses[0].name.as_ref().unwrap().0.as_str(), "b");
        assert_eq!(r.responses[0].topic_id, topic_id("b"));
        assert_eq!(r.responses[1].name, None);
        assert_eq!((parts("b"), parts("c")), (0, 2));
        // A deleted name can be created again, empty.
        state.broker.create_topic("a", 1).unwrap();
        assert_eq!(parts("a"), 1);
    }
}
