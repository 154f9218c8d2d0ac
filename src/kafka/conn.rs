//! One connection: read a request, answer it, repeat. Requests are handled one at a time, so
//! responses leave in request order; a frame that does not decode closes the connection (as a
//! Kafka broker does), never the server.
#![allow(clippy::big_endian_bytes)]

use std::fmt;
use std::io;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, ApiVersionsRequest,
    CreateTopicsRequest, DeleteTopicsRequest, DescribeTransactionsRequest, EndTxnRequest,
    FetchRequest, FindCoordinatorRequest, HeartbeatRequest, InitProducerIdRequest,
    JoinGroupRequest, LeaveGroupRequest, ListOffsetsRequest, ListTransactionsRequest,
    MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, RequestHeader,
    ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse, SyncGroupRequest, TxnOffsetCommitRequest,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnResponse, BrokerId, EndTxnResponse, FindCoordinatorResponse, HeartbeatResponse,
    InitProducerIdResponse, JoinGroupResponse, LeaveGroupResponse, ListTransactionsResponse,
    ProducerId, SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::ResponseError;

use super::acl::{self, KafkaOp};
use super::frame::{self, FrameError, FrameLimits};
use super::sasl::{self, SaslStep};
use super::server::State;
use super::{
    delete_topics, fetch, group_api, metadata, produce, refuse, topics, txn_admin, txn_api,
    versions,
};
use crate::net::stream::NetStream;

/// Why a connection was closed by the server.
#[derive(Debug)]
pub enum ConnError {
    /// Framing: a bad size, a frame past its deadline, an idle connection, a socket error.
    Frame(FrameError),
    /// A request we cannot answer: unknown API or version, or bytes that do not decode, or a
    /// request before SASL authentication.
    BadRequest(String),
    /// The TLS handshake failed or missed its deadline.
    Handshake(io::Error),
    /// SASL authentication failed (the answer, if any, was sent).
    Authentication(String),
    /// A response that would not encode (a bug: logged loudly, the connection closed).
    Encode(String),
    /// Writing a response failed or missed the deadline.
    Io(io::Error),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Frame(FrameError::Closed) => f.write_str("closed"),
            ConnError::Frame(FrameError::BadSize(n)) => write!(f, "bad frame size {n}"),
            ConnError::Frame(FrameError::Idle(t)) => {
                write!(f, "idle for {} ms (--idle-timeout-ms)", t.as_millis())
            }
            ConnError::Frame(FrameError::Deadline(t)) => write!(
                f,
                "a request frame did not arrive whole within {} ms (--frame-deadline-ms)",
                t.as_millis()
            ),
            ConnError::Frame(FrameError::Io(e)) | ConnError::Io(e) => write!(f, "I/O: {e}"),
            ConnError::BadRequest(m) => write!(f, "bad request: {m}"),
            ConnError::Handshake(e) => write!(f, "TLS handshake: {e}"),
            ConnError::Authentication(m) => write!(f, "SASL authentication failed: {m}"),
            ConnError::Encode(m) => write!(f, "response does not encode (a bug): {m}"),
        }
    }
}

/// What to do after a request.
enum Reply {
    Send(Vec<u8>),
    /// acks=0 Produce: no response.
    Nothing,
    /// Test fault: close without answering.
    Drop,
    /// Send, then close the connection for this reason (a failed authentication).
    Close(Vec<u8>, String),
}

/// Who is on the other end of one connection, and how far its SASL exchange got.
#[derive(Debug)]
struct Session {
    /// The SASL user, else the client certificate's first DNS name or its common name, else
    /// `ANONYMOUS`.
    principal: String,
    /// `None` when SASL is off.
    sasl: Option<SaslStep>,
}

impl Session {
    /// True once nothing stands between the client and its requests.
    fn authenticated(&self) -> bool {
        matches!(self.sasl, None | Some(SaslStep::Done(_)))
    }

    /// True when the next frame is a bare SASL token (after a v0 handshake).
    fn awaits_raw_token(&self) -> bool {
        self.sasl == Some(SaslStep::Token { raw: true })
    }

    /// Whether the ACL (if any) grants this connection `op`.
    fn may(&self, state: &State, op: KafkaOp) -> bool {
        state
            .acl
            .as_ref()
            .is_none_or(|acl| acl.allows(&self.principal, op))
    }

    /// Checks a PLAIN token; on success the connection is authenticated as its user.
    fn authenticate(&mut self, state: &State, token: &[u8]) -> Result<(), String> {
        let Some(users) = &state.users else {
            return Err("SASL is off".into());
        };
        let (user, password) = sasl::plain_token(token).ok_or("not a PLAIN token")?;
        if !users.check(user, password) {
            return Err(format!("wrong user or password (user '{user}')"));
        }
        self.principal = user.to_string();
        self.sasl = Some(SaslStep::Done(user.to_string()));
        Ok(())
    }
}

/// The largest bare SASL token read (a PLAIN token is a user name and a password).
const MAX_RAW_TOKEN: usize = 64 << 10;

/// Serves `tcp` until the peer closes it, a bad request, a limit or shutdown: over TLS when
/// the server has TLS material (handshaken within the frame deadline). A clean end is `Ok`.
pub fn serve_connection(state: &State, tcp: TcpStream) -> Result<(), ConnError> {
    tcp.set_nonblocking(false).map_err(ConnError::Io)?;
    tcp.set_nodelay(true).map_err(ConnError::Io)?;
    let deadline = state.config.frame_deadline;
    let (mut stream, name) = match &state.tls {
        None => (NetStream::Plain(tcp), None),
        Some(tls) => tls
            .accept_named(tcp, Instant::now() + deadline)
            .map_err(ConnError::Handshake)?,
    };
    let mut session = Session {
        principal: name.unwrap_or_else(|| acl::ANONYMOUS.to_string()),
        sasl: state.users.as_ref().map(|_| SaslStep::Handshake),
    };
    loop {
        let raw = session.awaits_raw_token();
        let limits = FrameLimits {
            min: if raw { 0 } else { frame::MIN_REQUEST },
            max: if raw {
                MAX_RAW_TOKEN
            } else {
                state.config.max_frame_bytes
            },
            deadline,
            idle: state.config.idle_timeout,
        };
        let request = match frame::read_frame(&mut stream, limits, &state.stop) {
            Ok(f) => f,
            Err(FrameError::Closed) => return Ok(()),
            Err(e) => return Err(ConnError::Frame(e)),
        };
        let reply = if raw {
            // KIP-43's v0 exchange: an empty frame answers a good token; a bad one is
            // answered by closing the connection.
            session
                .authenticate(state, &request)
                .map_err(ConnError::Authentication)?;
            Reply::Send(Vec::new())
        } else {
            handle(state, &mut session, request)?
        };
        match reply {
            Reply::Send(body) => {
                frame::write_frame(&mut stream, &body, deadline).map_err(ConnError::Io)?
            }
            Reply::Nothing => {}
            Reply::Drop => return Ok(()),
            Reply::Close(body, why) => {
                // The answer is best effort: the connection closes either way.
                let _ = frame::write_frame(&mut stream, &body, deadline);
                return Err(ConnError::Authentication(why));
            }
        }
    }
}

/// SaslHandshake: PLAIN is chosen (the token comes next), another mechanism is refused with
/// the list; a handshake out of turn is ILLEGAL_SASL_STATE and closes the connection.
fn sasl_handshake(
    session: &mut Session,
    req: &SaslHandshakeRequest,
    correlation: i32,
    version: i16,
) -> Result<Reply, ConnError> {
    let mut resp = SaslHandshakeResponse::default();
    resp.mechanisms = vec![StrBytes::from_static_str(sasl::PLAIN)];
    if session.sasl != Some(SaslStep::Handshake) {
        resp.error_code = ResponseError::IllegalSaslState.code();
        return close_after(
            respond(correlation, version, &resp)?,
            "a SaslHandshake out of turn (no re-authentication)".into(),
        );
    }
    if req.mechanism.as_str() == sasl::PLAIN {
        session.sasl = Some(SaslStep::Token { raw: version == 0 });
    } else {
        resp.error_code = ResponseError::UnsupportedSaslMechanism.code();
    }
    respond(correlation, version, &resp)
}

/// SaslAuthenticate after a v1 handshake: the PLAIN token checked; a failure is answered
/// SASL_AUTHENTICATION_FAILED and closes the connection.
fn sasl_authenticate(
    state: &State,
    session: &mut Session,
    req: &SaslAuthenticateRequest,
    correlation: i32,
    version: i16,
) -> Result<Reply, ConnError> {
    let mut resp = SaslAuthenticateResponse::default();
    if session.sasl != Some(SaslStep::Token { raw: false }) {
        resp.error_code = ResponseError::IllegalSaslState.code();
        resp.error_message = Some(StrBytes::from_static_str(
            "SaslAuthenticate without a v1 SaslHandshake choosing PLAIN",
        ));
        return close_after(
            respond(correlation, version, &resp)?,
            "a SaslAuthenticate out of turn".into(),
        );
    }
    match session.authenticate(state, &req.auth_bytes) {
        Ok(()) => respond(correlation, version, &resp),
        Err(why) => {
            resp.error_code = ResponseError::SaslAuthenticationFailed.code();
            resp.error_message = Some(StrBytes::from_static_str(
                "Authentication failed: invalid username or password",
            ));
            close_after(respond(correlation, version, &resp)?, why)
        }
    }
}

/// `reply`, sent and then the connection closed for `why`.
fn close_after(reply: Reply, why: String) -> Result<Reply, ConnError> {
    Ok(match reply {
        Reply::Send(body) => Reply::Close(body, why),
        other => other,
    })
}

/// Decodes, dispatches and encodes one request.
fn handle(state: &State, session: &mut Session, request: Vec<u8>) -> Result<Reply, ConnError> {
    let (Some(key), Some(version), Some(correlation)) = (
        request
            .get(0..2)
            .and_then(|b| b.try_into().ok())
            .map(i16::from_be_bytes),
        request
            .get(2..4)
            .and_then(|b| b.try_into().ok())
            .map(i16::from_be_bytes),
        request
            .get(4..8)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes),
    ) else {
        return Err(ConnError::BadRequest(
            "shorter than a request header".into(),
        ));
    };
    let api = ApiKey::try_from(key)
        .map_err(|()| ConnError::BadRequest(format!("unknown API key {key}")))?;
    let sasl = state.users.is_some();
    if !versions::is_supported_with(api, version, sasl) {
        if api == ApiKey::ApiVersions {
            // KIP-511: a v0 body with UNSUPPORTED_VERSION and our list; the client retries.
            return respond(correlation, 0, &versions::api_versions_with(false, sasl));
        }
        return Err(ConnError::BadRequest(format!(
            "{api:?} v{version} is not supported (ApiVersions lists what is)"
        )));
    }
    if !session.authenticated()
        && !matches!(
            api,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        )
    {
        // Kafka's behaviour: nothing else is answered before authentication.
        return Err(ConnError::BadRequest(format!(
            "{api:?} before SASL authentication"
        )));
    }
    let mut body = Bytes::from(request);
    RequestHeader::decode(&mut body, api.request_header_version(version))
        .map_err(|e| ConnError::BadRequest(format!("{api:?} v{version} header: {e}")))?;
    match api {
        ApiKey::ApiVersions => {
            decode::<ApiVersionsRequest>(&mut body, api, version)?;
            respond(
                correlation,
                version,
                &versions::api_versions_with(true, sasl),
            )
        }
        ApiKey::SaslHandshake => {
            let req: SaslHandshakeRequest = decode(&mut body, api, version)?;
            sasl_handshake(session, &req, correlation, version)
        }
        ApiKey::SaslAuthenticate => {
            let req: SaslAuthenticateRequest = decode(&mut body, api, version)?;
            sasl_authenticate(state, session, &req, correlation, version)
        }
        ApiKey::Metadata => {
            let req: MetadataRequest = decode(&mut body, api, version)?;
            let may_create =
                session.may(state, KafkaOp::Produce) || session.may(state, KafkaOp::Admin);
            respond(
                correlation,
                version,
                &metadata::metadata_for(state, req, version, may_create),
            )
        }
        ApiKey::InitProducerId => {
            let req = decode::<InitProducerIdRequest>(&mut body, api, version)?;
            let (op, code) = match req.transactional_id {
                Some(_) => (KafkaOp::Txn, refuse::txn()),
                None => (KafkaOp::Produce, refuse::cluster()),
            };
            if !session.may(state, op) {
                let mut r = InitProducerIdResponse::default();
                r.error_code = code;
                r.producer_id = ProducerId(-1);
                r.producer_epoch = -1;
                return respond(correlation, version, &r);
            }
            respond(
                correlation,
                version,
                &produce::init_producer_id(state, &req, version),
            )
        }
        ApiKey::AddPartitionsToTxn => {
            let req: AddPartitionsToTxnRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Txn) {
                return respond(correlation, version, &refuse::add_partitions(&req));
            }
            respond(
                correlation,
                version,
                &txn_api::add_partitions(state, req, version),
            )
        }
        ApiKey::AddOffsetsToTxn => {
            let req: AddOffsetsToTxnRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Txn) {
                let mut r = AddOffsetsToTxnResponse::default();
                r.error_code = refuse::txn();
                return respond(correlation, version, &r);
            }
            respond(
                correlation,
                version,
                &txn_api::add_offsets(state, &req, version),
            )
        }
        ApiKey::TxnOffsetCommit => {
            let req: TxnOffsetCommitRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Txn) {
                return respond(correlation, version, &refuse::txn_offset_commit(&req));
            }
            respond(
                correlation,
                version,
                &txn_api::txn_offset_commit(state, req, version),
            )
        }
        ApiKey::EndTxn => {
            let req: EndTxnRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Txn) {
                let mut r = EndTxnResponse::default();
                r.error_code = refuse::txn();
                return respond(correlation, version, &r);
            }
            respond(
                correlation,
                version,
                &txn_api::end_txn(state, &req, version),
            )
        }
        ApiKey::Produce => {
            let req: ProduceRequest = decode(&mut body, api, version)?;
            let acks = req.acks;
            if !session.may(state, KafkaOp::Produce) {
                if acks == 0 {
                    // No answer to carry the error: the connection is closed, as Kafka does.
                    return Err(ConnError::BadRequest(format!(
                        "acks=0 Produce refused to '{}' by the ACL",
                        session.principal
                    )));
                }
                return respond(correlation, version, &refuse::produce(&req));
            }
            let (resp, appended) = produce::produce(state, req, version);
            if appended {
                let n = state.produces.fetch_add(1, Ordering::SeqCst) + 1;
                if state
                    .config
                    .test_drop_after_append
                    .is_some_and(|every| every > 0 && n.is_multiple_of(every))
                {
                    tracing::warn!(
                        "oncelog serve: TEST FAULT: dropping the connection after append #{n}"
                    );
                    return Ok(Reply::Drop);
                }
            }
            if acks == 0 {
                return Ok(Reply::Nothing);
            }
            respond(correlation, version, &resp)
        }
        ApiKey::ListOffsets => {
            let req: ListOffsetsRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Read) {
                return respond(correlation, version, &refuse::list_offsets(&req));
            }
            respond(
                correlation,
                version,
                &fetch::list_offsets(state, req, version),
            )
        }
        ApiKey::Fetch => {
            let req: FetchRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Read) {
                return respond(correlation, version, &refuse::fetch(&req));
            }
            respond(correlation, version, &fetch::fetch(state, req, version))
        }
        ApiKey::FindCoordinator => {
            let req = decode::<FindCoordinatorRequest>(&mut body, api, version)?;
            let (op, code) = match req.key_type {
                1 => (KafkaOp::Txn, refuse::txn()),
                _ => (KafkaOp::Group, refuse::group()),
            };
            if !session.may(state, op) {
                let mut r = FindCoordinatorResponse::default();
                r.error_code = code;
                r.node_id = BrokerId(-1);
                r.port = -1;
                return respond(correlation, version, &r);
            }
            respond(
                correlation,
                version,
                &group_api::find_coordinator(state, &req, version),
            )
        }
        ApiKey::JoinGroup => {
            let req: JoinGroupRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Group) {
                let mut r = JoinGroupResponse::default();
                r.error_code = refuse::group();
                r.generation_id = -1;
                return respond(correlation, version, &r);
            }
            respond(
                correlation,
                version,
                &group_api::join_group(state, req, version),
            )
        }
        ApiKey::SyncGroup => {
            let req: SyncGroupRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Group) {
                let mut r = SyncGroupResponse::default();
                r.error_code = refuse::group();
                return respond(correlation, version, &r);
            }
            respond(
                correlation,
                version,
                &group_api::sync_group(state, req, version),
            )
        }
        ApiKey::Heartbeat => {
            let req: HeartbeatRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Group) {
                let mut r = HeartbeatResponse::default();
                r.error_code = refuse::group();
                return respond(correlation, version, &r);
            }
            respond(correlation, version, &group_api::heartbeat(state, &req))
        }
        ApiKey::LeaveGroup => {
            let req: LeaveGroupRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Group) {
                let mut r = LeaveGroupResponse::default();
                r.error_code = refuse::group();
                return respond(correlation, version, &r);
            }
            respond(
                correlation,
                version,
                &group_api::leave_group(state, &req, version),
            )
        }
        ApiKey::OffsetCommit => {
            let req: OffsetCommitRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Group) {
                return respond(correlation, version, &refuse::offset_commit(&req));
            }
            respond(correlation, version, &group_api::offset_commit(state, req))
        }
        ApiKey::OffsetFetch => {
            let req: OffsetFetchRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Group) {
                return respond(correlation, version, &refuse::offset_fetch(&req, version));
            }
            respond(
                correlation,
                version,
                &group_api::offset_fetch(state, req, version),
            )
        }
        ApiKey::CreateTopics => {
            let req: CreateTopicsRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Admin) {
                return respond(correlation, version, &refuse::create_topics(&req));
            }
            respond(
                correlation,
                version,
                &topics::create_topics(state, req, version),
            )
        }
        ApiKey::DeleteTopics => {
            let req: DeleteTopicsRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Admin) {
                return respond(correlation, version, &refuse::delete_topics(&req, version));
            }
            respond(
                correlation,
                version,
                &delete_topics::delete_topics(state, req, version),
            )
        }
        ApiKey::DescribeTransactions => {
            let req: DescribeTransactionsRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Txn) {
                return respond(correlation, version, &refuse::describe_transactions(&req));
            }
            respond(
                correlation,
                version,
                &txn_admin::describe_transactions(state, &req),
            )
        }
        ApiKey::ListTransactions => {
            let req: ListTransactionsRequest = decode(&mut body, api, version)?;
            if !session.may(state, KafkaOp::Txn) {
                let mut r = ListTransactionsResponse::default();
                r.error_code = refuse::cluster();
                return respond(correlation, version, &r);
            }
            respond(
                correlation,
                version,
                &txn_admin::list_transactions(state, &req),
            )
        }
        other => Err(ConnError::BadRequest(format!("{other:?} is not served"))),
    }
}

/// Decodes the body of an `api` request at `version`.
fn decode<R: Decodable>(body: &mut Bytes, api: ApiKey, version: i16) -> Result<R, ConnError> {
    R::decode(body, version).map_err(|e| ConnError::BadRequest(format!("{api:?} v{version}: {e}")))
}

/// Encodes the response header and `body` at `version`.
fn respond<R: Encodable + HeaderVersion>(
    correlation: i32,
    version: i16,
    body: &R,
) -> Result<Reply, ConnError> {
    let mut buf = BytesMut::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation;
    header
        .encode(&mut buf, R::header_version(version))
        .and_then(|()| body.encode(&mut buf, version))
        .map_err(|e| ConnError::Encode(e.to_string()))?;
    Ok(Reply::Send(buf.to_vec()))
}

#[cfg(test)]
mod tests {
    //! Every response at every advertised version encodes: the codec refuses a field set that
    //! the version lacks, so a response built for the wrong version would close the client's
    //! connection instead of answering it.
    use super::*;
    use crate::format::batch::{BatchBuilder, HEADER_SIZE};
    use crate::kafka::Server;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;

    fn encodes<R: Encodable + HeaderVersion>(what: &str, v: i16, r: &R) {
        match respond(1, v, r) {
            Ok(Reply::Send(b)) => assert!(b.len() >= 4),
            Err(e) => panic!("{what} v{v}: {e}"),
            Ok(_) => unreachable!(),
        }
    }

    fn range(key: ApiKey) -> std::ops::RangeInclusive<i16> {
        versions::advertised(key).unwrap()
    }

    fn name(s: &str) -> TopicName {
        TopicName(StrBytes::from_string(s.into()))
    }

    #[test]
    fn every_response_encodes_at_every_advertised_version() {
        let (_dir, server) = Server::for_tests();
        let state = server.state();

        for v in range(ApiKey::ApiVersions) {
            encodes("ApiVersions", v, &versions::api_versions(true));
        }
        encodes("ApiVersions fallback", 0, &versions::api_versions(false));
        for v in range(ApiKey::Metadata) {
            let mut req = MetadataRequest::default();
            let mut t = MetadataRequestTopic::default();
            t.name = Some(name("t"));
            let mut bad = MetadataRequestTopic::default();
            bad.name = Some(name("no/slash"));
            req.topics = Some(vec![t, bad]);
            let resp = metadata::metadata(state, req, v);
            assert_eq!(resp.topics[0].partitions.len(), 4);
            assert_eq!(resp.topics[1].error_code, 17);
            encodes("Metadata", v, &resp);
            encodes(
                "Metadata all",
                v,
                &metadata::metadata(state, MetadataRequest::default(), v),
            );
        }
        for v in range(ApiKey::InitProducerId) {
            let resp = produce::init_producer_id(state, &InitProducerIdRequest::default(), v);
            assert_eq!(resp.error_code, 0);
            encodes("InitProducerId", v, &resp);
        }
        let mut b = BatchBuilder::new();
        b.push(5, Some(b"k"), Some(b"v"));
        let ours = b.build().unwrap();
        let mut kafka = Vec::new();
        crate::kafka::batch::append_as_kafka(&ours.view(), &mut kafka).unwrap();
        assert!(kafka.len() > HEADER_SIZE - 8);
        for v in range(ApiKey::Produce) {
            let mut req = ProduceRequest::default();
            req.acks = -1;
            let mut p = PartitionProduceData::default();
            p.index = 0;
            p.records = Some(Bytes::from(kafka.clone()));
            let mut missing = PartitionProduceData::default();
            missing.index = 9;
            missing.records = Some(Bytes::from(kafka.clone()));
            let mut t = TopicProduceData::default();
            t.name = name("t");
            t.partition_data = vec![p, missing];
            req.topic_data = vec![t];
            let (resp, appended) = produce::produce(state, req, v);
            assert!(appended);
            let parts = &resp.responses[0].partition_responses;
            assert_eq!(parts[0].error_code, 0);
            assert_eq!(parts[1].error_code, 3);
            encodes("Produce", v, &resp);
        }
        for v in range(ApiKey::ListOffsets) {
            let mut req = ListOffsetsRequest::default();
            let mut t = ListOffsetsTopic::default();
            t.name = name("t");
            t.partitions = [-2, -1, 0, -3]
                .into_iter()
                .map(|ts| {
                    let mut p = ListOffsetsPartition::default();
                    p.timestamp = ts;
                    p
                })
                .collect();
            req.topics = vec![t];
            let resp = fetch::list_offsets(state, req, v);
            let offsets: Vec<i64> = resp.topics[0].partitions.iter().map(|p| p.offset).collect();
            // Earliest, latest (one record per Produce version above), by timestamp, and -3
            // (not served).
            assert_eq!(offsets, [0, 8, 0, -1], "v{v}");
            encodes("ListOffsets", v, &resp);
        }
        groups_encode(state);
        for v in range(ApiKey::CreateTopics) {
            use kafka_protocol::messages::create_topics_request::CreatableTopic;
            let mut req = CreateTopicsRequest::default();
            let mut t = CreatableTopic::default();
            t.name = name(&format!("created{v}"));
            t.num_partitions = 2;
            t.replication_factor = 1;
            let mut exists = t.clone();
            exists.name = name("t");
            req.topics = vec![t, exists];
            let r = topics::create_topics(state, req, v);
            let codes: Vec<i16> = r.topics.iter().map(|t| t.error_code).collect();
            assert_eq!(codes, [0, 36], "v{v}");
            encodes("CreateTopics", v, &r);
        }
        for v in range(ApiKey::DeleteTopics) {
            use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
            let mut req = DeleteTopicsRequest::default();
            let topics = [format!("deleted{v}"), "never".to_string()];
            state.broker.create_topic(&topics[0], 2).unwrap();
            if v >= 6 {
                req.topics = topics
                    .iter()
                    .map(|n| {
                        let mut s = DeleteTopicState::default();
                        s.name = Some(name(n));
                        s
                    })
                    .collect();
            } else {
                req.topic_names = topics.iter().map(|n| name(n)).collect();
            }
            let r = delete_topics::delete_topics(state, req, v);
            let codes: Vec<i16> = r.responses.iter().map(|t| t.error_code).collect();
            assert_eq!(codes, [0, 3], "v{v}");
            encodes("DeleteTopics", v, &r);
        }
        for v in range(ApiKey::Fetch) {
            for isolation in [0, 1] {
                let mut req = FetchRequest::default();
                req.isolation_level = isolation;
                req.max_bytes = 1 << 20;
                let mut t = FetchTopic::default();
                t.topic = name("t");
                t.partitions = [0, 99]
                    .into_iter()
                    .map(|offset| {
                        let mut p = FetchPartition::default();
                        p.fetch_offset = offset;
                        p.partition_max_bytes = 1 << 20;
                        p
                    })
                    .collect();
                req.topics = vec![t];
                let resp = fetch::fetch(state, req, v);
                let parts = &resp.responses[0].partitions;
                assert_eq!(parts[0].error_code, 0);
                assert_eq!(parts[0].high_watermark, 8);
                assert_eq!(parts[0].records.as_ref().unwrap().len(), 8 * kafka.len());
                assert_eq!(parts[1].error_code, 1, "offset out of range");
                encodes("Fetch", v, &resp);
            }
        }
    }

    /// The ACL's refusals (`refuse`, and the top-level ones built in `handle`) encode at every
    /// advertised version with the request's items in them.
    #[test]
    fn refused_answers_encode_at_every_advertised_version() {
        use kafka_protocol::messages::create_topics_request::CreatableTopic;
        use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::TransactionalId;

        let mut produce = ProduceRequest::default();
        let mut t = TopicProduceData::default();
        t.name = name("t");
        t.partition_data = vec![PartitionProduceData::default()];
        produce.topic_data = vec![t];
        let r = refuse::produce(&produce);
        assert_eq!(r.responses[0].partition_responses[0].error_code, 29);
        for v in range(ApiKey::Produce) {
            encodes("refused Produce", v, &r);
        }
        let mut fetch = FetchRequest::default();
        let mut t = FetchTopic::default();
        t.topic = name("t");
        t.partitions = vec![FetchPartition::default()];
        fetch.topics = vec![t];
        let r = refuse::fetch(&fetch);
        assert_eq!(r.responses[0].partitions[0].error_code, 29);
        for v in range(ApiKey::Fetch) {
            encodes("refused Fetch", v, &r);
        }
        let mut lo = ListOffsetsRequest::default();
        let mut t = ListOffsetsTopic::default();
        t.name = name("t");
        t.partitions = vec![ListOffsetsPartition::default()];
        lo.topics = vec![t];
        for v in range(ApiKey::ListOffsets) {
            encodes("refused ListOffsets", v, &refuse::list_offsets(&lo));
        }
        let mut ct = CreateTopicsRequest::default();
        let mut t = CreatableTopic::default();
        t.name = name("t");
        ct.topics = vec![t];
        for v in range(ApiKey::CreateTopics) {
            encodes("refused CreateTopics", v, &refuse::create_topics(&ct));
        }
        let mut dt = DeleteTopicsRequest::default();
        dt.topic_names = vec![name("t")];
        let mut st = DeleteTopicState::default();
        st.name = Some(name("t"));
        dt.topics = vec![st];
        for v in range(ApiKey::DeleteTopics) {
            let r = refuse::delete_topics(&dt, v);
            assert_eq!(r.responses.len(), 1);
            encodes("refused DeleteTopics", v, &r);
        }
        let mut oc = OffsetCommitRequest::default();
        let mut t = OffsetCommitRequestTopic::default();
        t.name = name("t");
        t.partitions = vec![OffsetCommitRequestPartition::default()];
        oc.topics = vec![t];
        for v in range(ApiKey::OffsetCommit) {
            encodes("refused OffsetCommit", v, &refuse::offset_commit(&oc));
        }
        let mut of = OffsetFetchRequest::default();
        let mut t = OffsetFetchRequestTopic::default();
        t.name = name("t");
        t.partition_indexes = vec![0];
        of.topics = Some(vec![t]);
        for v in range(ApiKey::OffsetFetch) {
            encodes("refused OffsetFetch", v, &refuse::offset_fetch(&of, v));
        }
        let mut ap = AddPartitionsToTxnRequest::default();
        let mut t = kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic::default();
        t.name = name("t");
        t.partitions = vec![0];
        ap.v3_and_below_topics = vec![t];
        for v in range(ApiKey::AddPartitionsToTxn) {
            encodes(
                "refused AddPartitionsToTxn",
                v,
                &refuse::add_partitions(&ap),
            );
        }
        let mut to = TxnOffsetCommitRequest::default();
        let mut t = kafka_protocol::messages::txn_offset_commit_request::TxnOffsetCommitRequestTopic::default();
        t.name = name("t");
        t.partitions = vec![Default::default()];
        to.topics = vec![t];
        for v in range(ApiKey::TxnOffsetCommit) {
            encodes(
                "refused TxnOffsetCommit",
                v,
                &refuse::txn_offset_commit(&to),
            );
        }
        let mut dtx = DescribeTransactionsRequest::default();
        dtx.transactional_ids = vec![TransactionalId(StrBytes::from_static_str("x"))];
        for v in range(ApiKey::DescribeTransactions) {
            encodes(
                "refused DescribeTransactions",
                v,
                &refuse::describe_transactions(&dtx),
            );
        }
        // The top-level refusals built in `handle`.
        let mut ip = InitProducerIdResponse::default();
        ip.error_code = refuse::cluster();
        ip.producer_id = ProducerId(-1);
        ip.producer_epoch = -1;
        for v in range(ApiKey::InitProducerId) {
            encodes("refused InitProducerId", v, &ip);
        }
        let mut fc = FindCoordinatorResponse::default();
        fc.error_code = refuse::group();
        fc.node_id = BrokerId(-1);
        fc.port = -1;
        for v in range(ApiKey::FindCoordinator) {
            encodes("refused FindCoordinator", v, &fc);
        }
        let mut jg = JoinGroupResponse::default();
        jg.error_code = refuse::group();
        jg.generation_id = -1;
        for v in range(ApiKey::JoinGroup) {
            encodes("refused JoinGroup", v, &jg);
        }
    }

    /// The group APIs at every version: a one-member group per version (so no join waits),
    /// its sync, heartbeat, commit, fetch and leave.
    fn groups_encode(state: &State) {
        use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
        use kafka_protocol::messages::leave_group_request::MemberIdentity;
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
        use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
        use kafka_protocol::messages::GroupId;

        for v in range(ApiKey::FindCoordinator) {
            let mut req = FindCoordinatorRequest::default();
            req.key = StrBytes::from_static_str("g");
            encodes(
                "FindCoordinator",
                v,
                &group_api::find_coordinator(state, &req, v),
            );
            if v >= 1 {
                req.key_type = 1;
                let r = group_api::find_coordinator(state, &req, v);
                assert_eq!((r.error_code, r.node_id.0), (0, 0), "this node");
                encodes("FindCoordinator txn", v, &r);
            }
        }
        let mut members = Vec::new();
        for v in range(ApiKey::JoinGroup) {
            let group = GroupId(StrBytes::from_string(format!("g{v}")));
            let mut req = JoinGroupRequest::default();
            req.group_id = group.clone();
            req.session_timeout_ms = 10_000;
            req.rebalance_timeout_ms = 10_000;
            req.protocol_type = StrBytes::from_static_str("consumer");
            let mut p = JoinGroupRequestProtocol::default();
            p.name = StrBytes::from_static_str("range");
            p.metadata = Bytes::from_static(b"m");
            req.protocols = vec![p];
            let r = group_api::join_group(state, req, v);
            assert_eq!((r.error_code, r.generation_id, r.members.len()), (0, 1, 1));
            encodes("JoinGroup", v, &r);
            members.push((group, r.member_id));
        }
        for v in range(ApiKey::SyncGroup) {
            let (group, member) = members[v as usize].clone();
            let mut req = SyncGroupRequest::default();
            req.group_id = group;
            req.generation_id = 1;
            req.member_id = member.clone();
            let mut a = SyncGroupRequestAssignment::default();
            a.member_id = member;
            a.assignment = Bytes::from_static(b"a");
            req.assignments = vec![a];
            let r = group_api::sync_group(state, req, v);
            assert_eq!((r.error_code, &r.assignment[..]), (0, &b"a"[..]));
            encodes("SyncGroup", v, &r);
        }
        for v in range(ApiKey::Heartbeat) {
            let (group, member) = members[v as usize].clone();
            let mut req = HeartbeatRequest::default();
            req.group_id = group;
            req.generation_id = 1;
            req.member_id = member;
            let r = group_api::heartbeat(state, &req);
            assert_eq!(r.error_code, 0);
            encodes("Heartbeat", v, &r);
        }
        for v in range(ApiKey::OffsetCommit) {
            // Groups 0-5 are synced (stable); 6 and 7 joined but never synced.
            let (group, member) = members[(v as usize).min(5)].clone();
            let mut req = OffsetCommitRequest::default();
            req.group_id = group;
            req.generation_id_or_member_epoch = 1;
            req.member_id = member;
            let mut p = OffsetCommitRequestPartition::default();
            p.committed_offset = 5;
            let mut missing = OffsetCommitRequestPartition::default();
            missing.partition_index = 77;
            let mut t = OffsetCommitRequestTopic::default();
            t.name = name("t");
            t.partitions = vec![p, missing];
            req.topics = vec![t];
            let r = group_api::offset_commit(state, req);
            let codes: Vec<i16> = r.topics[0]
                .partitions
                .iter()
                .map(|p| p.error_code)
                .collect();
            assert_eq!(codes, [0, 3]);
            encodes("OffsetCommit", v, &r);
        }
        // Between its join and the leader's SyncGroup a group takes no commits.
        assert_eq!(
            state.groups.check_commit("g6", 1, members[6].1.as_str()),
            27
        );
        for v in range(ApiKey::OffsetFetch) {
            let (group, _) = members[2].clone();
            let mut req = OffsetFetchRequest::default();
            req.group_id = group.clone();
            let mut t = OffsetFetchRequestTopic::default();
            t.name = name("t");
            t.partition_indexes = vec![0, 1];
            req.topics = Some(vec![t]);
            let r = group_api::offset_fetch(state, req, v);
            let offsets: Vec<i64> = r.topics[0]
                .partitions
                .iter()
                .map(|p| p.committed_offset)
                .collect();
            assert_eq!(offsets, [5, -1]);
            encodes("OffsetFetch", v, &r);
            if v >= 2 {
                let mut all = OffsetFetchRequest::default();
                all.group_id = group;
                all.topics = None;
                let r = group_api::offset_fetch(state, all, v);
                assert_eq!(r.topics.len(), 1);
                encodes("OffsetFetch all", v, &r);
            }
        }
        for v in range(ApiKey::LeaveGroup) {
            let (group, member) = members[v as usize].clone();
            let mut req = LeaveGroupRequest::default();
            req.group_id = group;
            if v >= 3 {
                let mut m = MemberIdentity::default();
                m.member_id = member;
                req.members = vec![m];
            } else {
                req.member_id = member;
            }
            let r = group_api::leave_group(state, &req, v);
            encodes("LeaveGroup", v, &r);
        }
    }
}
