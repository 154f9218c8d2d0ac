//! DescribeTransactions and ListTransactions (KIP-664, what `kafka-transactions.sh` and admin
//! clients send): answered from the transaction coordinator's state, which is durable, so they
//! list every transactional id the coordinator holds, also after a restart. The producer id and
//! epoch reported are the coordinator's: the identity stored batches and markers carry (a live
//! client's own epoch can be lower, docs/kafka-wire.md "Transactions").

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_transactions_response::{self as describe, TopicData};
use kafka_protocol::messages::list_transactions_response as list;
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId as KPid, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::server::State;
use crate::coordinator::{TxnMetadata, TxnState};

/// Kafka's name of a state (`TransactionState.stateName`), which ListTransactions filters by.
pub fn state_name(s: TxnState) -> &'static str {
    match s {
        TxnState::Empty => "Empty",
        TxnState::Ongoing => "Ongoing",
        TxnState::PrepareCommit => "PrepareCommit",
        TxnState::PrepareAbort => "PrepareAbort",
        TxnState::CompleteCommit => "CompleteCommit",
        TxnState::CompleteAbort => "CompleteAbort",
    }
}

/// Kafka's state names our coordinator never enters (it removes no id and fences by bumping
/// the epoch at once): a filter naming them is known and matches nothing.
const NEVER_ENTERED: [&str; 2] = ["Dead", "PrepareEpochFence"];

pub fn describe_transactions(
    state: &State,
    req: &DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut r = DescribeTransactionsResponse::default();
    r.transaction_states = req
        .transactional_ids
        .iter()
        .map(|tid| {
            let mut t = describe::TransactionState::default();
            t.transactional_id = tid.clone();
            match state.broker.coordinator().describe(tid.0.as_str()) {
                None => {
                    t.error_code = ResponseError::TransactionalIdNotFound.code();
                    t.transaction_state = StrBytes::from_static_str("Dead");
                    t.producer_id = KPid(-1);
                    t.producer_epoch = -1;
                    t.transaction_start_time_ms = -1;
                }
                Some(m) => {
                    t.transaction_state = StrBytes::from_static_str(state_name(m.state));
                    t.transaction_timeout_ms = i32::try_from(m.timeout_ms).unwrap_or(i32::MAX);
                    t.transaction_start_time_ms = m.txn_start_ms;
                    t.producer_id = KPid(m.producer_id.0);
                    t.producer_epoch = m.producer_epoch;
                    t.topics = topics(&m);
                }
            }
            t
        })
        .collect();
    r
}

/// The partitions of the current transaction, grouped by topic in name order.
fn topics(m: &TxnMetadata) -> Vec<TopicData> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in &m.partitions {
        by_topic
            .entry(tp.topic())
            .or_default()
            .push(i32::try_from(tp.partition()).unwrap_or(i32::MAX));
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            let mut d = TopicData::default();
            d.topic = TopicName(StrBytes::from_string(topic.to_string()));
            d.partitions = partitions;
            d
        })
        .collect()
}

/// Every transactional id matching every filter given: states by Kafka's names (an unknown
/// name is echoed in `unknown_state_filters`), producer ids, and (v1+) `duration_filter` ≥ 0:
/// only transactions started (a first partition added) more than that many ms ago.
pub fn list_transactions(state: &State, req: &ListTransactionsRequest) -> ListTransactionsResponse {
    let mut r = ListTransactionsResponse::default();
    let pattern = match id_pattern(req.transactional_id_pattern.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!("oncelog serve: ListTransactions pattern refused: {e}");
            r.error_code = ResponseError::InvalidRegularExpression.code();
            return r;
        }
    };
    let mut wanted: Vec<TxnState> = Vec::new();
    let mut known_filter = false;
    for f in &req.state_filters {
        match TxnState::ALL
            .into_iter()
            .find(|&s| state_name(s) == f.as_str())
        {
            Some(s) => wanted.push(s),
            None if NEVER_ENTERED.contains(&f.as_str()) => known_filter = true,
            None => r.unknown_state_filters.push(f.clone()),
        }
    }
    let by_state = !wanted.is_empty() || known_filter;
    let now = state.broker.config().log.clock.now_ms();
    r.transaction_states = state
        .broker
        .coordinator()
        .list()
        .into_iter()
        .filter(|m| !by_state || wanted.contains(&m.state))
        .filter(|m| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.contains(&KPid(m.producer_id.0))
        })
        .filter(|m| {
            pattern
                .as_ref()
                .is_none_or(|p| p.is_match(&m.transactional_id))
        })
        .filter(|m| {
            req.duration_filter < 0
                || (m.txn_start_ms >= 0 && now.saturating_sub(m.txn_start_ms) > req.duration_filter)
        })
        .map(|m| {
            let mut t = list::TransactionState::default();
            t.transactional_id = TransactionalId(StrBytes::from_string(m.transactional_id));
            t.producer_id = KPid(m.producer_id.0);
            t.transaction_state = StrBytes::from_static_str(state_name(m.state));
            t
        })
        .collect();
    r
}

/// ListTransactions v2's `transactional_id_pattern`: none or empty lists every id; otherwise
/// an id is listed when the whole id matches (Kafka uses Java's `Matcher.matches`). The syntax
/// is the `regex` crate's, which shares Java's common core (classes, alternation, repetition,
/// anchors); Java-only constructs (look-around, back-references, possessive quantifiers) are
/// refused as invalid.
fn id_pattern(pattern: Option<&str>) -> Result<Option<regex::Regex>, regex::Error> {
    match pattern {
        None | Some("") => Ok(None),
        Some(p) => regex::Regex::new(&format!("^(?:{p})$")).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, ApiKey, EndTxnRequest, InitProducerIdRequest,
    };
    use kafka_protocol::protocol::Encodable;

    use super::*;
    use crate::kafka::server::Server;
    use crate::kafka::{produce, txn_api, versions};

    fn tid(s: &str) -> TransactionalId {
        TransactionalId(StrBytes::from_string(s.into()))
    }

    /// InitProducerId for `t`: its (producer id, epoch) as the client holds them.
    fn init(state: &State, t: &str) -> (i64, i16) {
        let mut req = InitProducerIdRequest::default();
        req.transactional_id = Some(tid(t));
        req.transaction_timeout_ms = 60_000;
        let r = produce::init_producer_id(state, &req, 4);
        assert_eq!(r.error_code, 0);
        (r.producer_id.0, r.producer_epoch)
    }

    fn add(state: &State, t: &str, (pid, epoch): (i64, i16), topic: &str, parts: &[i32]) {
        let mut req = AddPartitionsToTxnRequest::default();
        req.v3_and_below_transactional_id = tid(t);
        req.v3_and_below_producer_id = KPid(pid);
        req.v3_and_below_producer_epoch = epoch;
        let mut tp = AddPartitionsToTxnTopic::default();
        tp.name = TopicName(StrBytes::from_string(topic.into()));
        tp.partitions = parts.to_vec();
        req.v3_and_below_topics = vec![tp];
        let r = txn_api::add_partitions(state, req, 3);
        for p in &r.results_by_topic_v3_and_below[0].results_by_partition {
            assert_eq!(p.partition_error_code, 0);
        }
    }

    fn list(state: &State, states: &[&str], pids: &[i64], duration: i64) -> Vec<(String, String)> {
        let mut req = ListTransactionsRequest::default();
        req.state_filters = states
            .iter()
            .map(|s| StrBytes::from_string(s.to_string()))
            .collect();
        req.producer_id_filters = pids.iter().map(|&p| KPid(p)).collect();
        req.duration_filter = duration;
        let r = list_transactions(state, &req);
        for v in versions::advertised(ApiKey::ListTransactions).unwrap() {
            r.encode(&mut BytesMut::new(), v).unwrap();
        }
        r.transaction_states
            .iter()
            .map(|t| {
                (
                    t.transactional_id.0.to_string(),
                    t.transaction_state.to_string(),
                )
            })
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|&(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn describe_and_list_answer_from_the_coordinator() {
        let (_dir, server) = Server::for_tests();
        let state = server.state();
        state.broker.create_topic("t", 4).unwrap();
        state.broker.create_topic("u", 1).unwrap();
        init(state, "idle");
        let open = init(state, "open");
        add(state, "open", open, "u", &[0]);
        add(state, "open", open, "t", &[2, 0]);
        let done = init(state, "done");
        add(state, "done", done, "t", &[1]);
        let mut end = EndTxnRequest::default();
        end.transactional_id = tid("done");
        end.producer_id = KPid(done.0);
        end.producer_epoch = done.1;
        end.committed = true;
        assert_eq!(txn_api::end_txn(state, &end, 3).error_code, 0);

        let mut req = DescribeTransactionsRequest::default();
        req.transactional_ids = vec![tid("open"), tid("idle"), tid("nope"), tid("done")];
        let r = describe_transactions(state, &req);
        r.encode(&mut BytesMut::new(), 0).unwrap();
        let [o, i, n, d] = &r.transaction_states[..] else {
            panic!("{r:?}")
        };
        assert_eq!((o.error_code, o.transaction_state.as_str()), (0, "Ongoing"));
        assert_eq!(
            (o.producer_id.0, o.transaction_timeout_ms),
            (open.0, 60_000)
        );
        assert!(o.transaction_start_time_ms > 0);
        let topics: Vec<(String, Vec<i32>)> = o
            .topics
            .iter()
            .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
            .collect();
        assert_eq!(topics, [("t".into(), vec![0, 2]), ("u".into(), vec![0])]);
        assert_eq!((i.error_code, i.transaction_state.as_str()), (0, "Empty"));
        assert_eq!((i.transaction_start_time_ms, i.topics.len()), (-1, 0));
        assert_eq!(n.error_code, ResponseError::TransactionalIdNotFound.code());
        assert_eq!((n.producer_id.0, n.producer_epoch), (-1, -1));
        assert_eq!(d.transaction_state.as_str(), "CompleteCommit");
        // The coordinator's epoch: the markers' (one above the client's).
        assert_eq!((d.producer_id.0, d.producer_epoch), (done.0, done.1 + 1));
        assert!(d.topics.is_empty());

        let all = pairs(&[
            ("done", "CompleteCommit"),
            ("idle", "Empty"),
            ("open", "Ongoing"),
        ]);
        assert_eq!(list(state, &[], &[], -1), all);
        assert_eq!(
            list(state, &["Ongoing"], &[], -1),
            pairs(&[("open", "Ongoing")])
        );
        assert_eq!(list(state, &["Dead"], &[], -1), []);
        assert_eq!(
            list(state, &[], &[open.0, 12345], -1),
            pairs(&[("open", "Ongoing")])
        );
        let mut req = ListTransactionsRequest::default();
        req.state_filters = vec![
            StrBytes::from_static_str("Bogus"),
            StrBytes::from_static_str("Empty"),
        ];
        let r = list_transactions(state, &req);
        assert_eq!(
            r.unknown_state_filters,
            [StrBytes::from_static_str("Bogus")]
        );
        assert_eq!(r.transaction_states.len(), 1);
        // Started more than an hour ago: none; more than 0 ms ago (after a few ms): the two
        // that started one.
        assert_eq!(list(state, &[], &[], 3_600_000), []);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(
            list(state, &[], &[], 0),
            pairs(&[("done", "CompleteCommit"), ("open", "Ongoing")])
        );

        // v2: the whole id must match the pattern; empty lists all; a bad one is refused.
        let by_pattern = |p: Option<&str>| {
            let mut req = ListTransactionsRequest::default();
            req.transactional_id_pattern = p.map(|p| StrBytes::from_string(p.into()));
            let r = list_transactions(state, &req);
            let ids: Vec<String> = r
                .transaction_states
                .iter()
                .map(|t| t.transactional_id.0.to_string())
                .collect();
            (r.error_code, ids)
        };
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(by_pattern(Some("o.*")), (0, ids(&["open"])));
        assert_eq!(by_pattern(Some("d|i.*")), (0, ids(&["idle"])), "whole id");
        assert_eq!(by_pattern(Some("[di].*")), (0, ids(&["done", "idle"])));
        assert_eq!(by_pattern(Some("pen")), (0, ids(&[])), "not a substring");
        assert_eq!(by_pattern(Some("")), (0, ids(&["done", "idle", "open"])));
        assert_eq!(by_pattern(None), (0, ids(&["done", "idle", "open"])));
        let (code, listed) = by_pattern(Some("(open"));
        assert_eq!(code, ResponseError::InvalidRegularExpression.code());
        assert!(listed.is_empty());
        assert_eq!(
            by_pattern(Some("(?=o)open")).0,
            128,
            "look-ahead: Java-only"
        );
    }
}
