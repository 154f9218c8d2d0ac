//! One connection: read a request, answer it, repeat. Requests are handled one at a time, so
//! responses leave in request order; a frame that does not decode closes the connection (as a
//! Kafka broker does), never the server.
#![allow(clippy::big_endian_bytes)]

use std::fmt;
use std::io;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, InitProducerIdRequest, ListOffsetsRequest,
    MetadataRequest, ProduceRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use super::frame::{self, FrameError};
use super::server::State;
use super::{fetch, metadata, produce, versions};

/// Why a connection was closed by the server.
#[derive(Debug)]
pub enum ConnError {
    Frame(FrameError),
    /// A request we cannot answer: unknown API or version, or bytes that do not decode.
    BadRequest(String),
    /// A response that would not encode (a bug: logged loudly, the connection closed).
    Encode(String),
    Io(io::Error),
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Frame(FrameError::Closed) => f.write_str("closed"),
            ConnError::Frame(FrameError::BadSize(n)) => write!(f, "bad frame size {n}"),
            ConnError::Frame(FrameError::Io(e)) | ConnError::Io(e) => write!(f, "I/O: {e}"),
            ConnError::BadRequest(m) => write!(f, "bad request: {m}"),
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
}

/// Serves `stream` until the peer closes it, a bad request or shutdown. A clean end is `Ok`.
pub fn serve_connection(state: &State, mut stream: TcpStream) -> Result<(), ConnError> {
    stream.set_nonblocking(false).map_err(ConnError::Io)?;
    // The read timeout only lets the thread notice shutdown between requests.
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(ConnError::Io)?;
    stream.set_nodelay(true).map_err(ConnError::Io)?;
    loop {
        let request =
            match frame::read_frame(&mut stream, state.config.max_frame_bytes, &state.stop) {
                Ok(f) => f,
                Err(FrameError::Closed) => return Ok(()),
                Err(e) => return Err(ConnError::Frame(e)),
            };
        match handle(state, request)? {
            Reply::Send(body) => frame::write_frame(&mut stream, &body).map_err(ConnError::Io)?,
            Reply::Nothing => {}
            Reply::Drop => return Ok(()),
        }
    }
}

/// Decodes, dispatches and encodes one request.
fn handle(state: &State, request: Vec<u8>) -> Result<Reply, ConnError> {
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
    if !versions::is_supported(api, version) {
        if api == ApiKey::ApiVersions {
            // KIP-511: a v0 body with UNSUPPORTED_VERSION and our list; the client retries.
            return respond(correlation, 0, &versions::api_versions(false));
        }
        return Err(ConnError::BadRequest(format!(
            "{api:?} v{version} is not supported (ApiVersions lists what is)"
        )));
    }
    let mut body = Bytes::from(request);
    RequestHeader::decode(&mut body, api.request_header_version(version))
        .map_err(|e| ConnError::BadRequest(format!("{api:?} v{version} header: {e}")))?;
    let bad = |e: Box<dyn std::error::Error + Send + Sync>| {
        ConnError::BadRequest(format!("{api:?} v{version}: {e}"))
    };
    match api {
        ApiKey::ApiVersions => {
            ApiVersionsRequest::decode(&mut body, version).map_err(|e| bad(e.into()))?;
            respond(correlation, version, &versions::api_versions(true))
        }
        ApiKey::Metadata => {
            let req = MetadataRequest::decode(&mut body, version).map_err(|e| bad(e.into()))?;
            respond(
                correlation,
                version,
                &metadata::metadata(state, req, version),
            )
        }
        ApiKey::InitProducerId => {
            let req =
                InitProducerIdRequest::decode(&mut body, version).map_err(|e| bad(e.into()))?;
            respond(
                correlation,
                version,
                &produce::init_producer_id(state, &req),
            )
        }
        ApiKey::Produce => {
            let req = ProduceRequest::decode(&mut body, version).map_err(|e| bad(e.into()))?;
            let acks = req.acks;
            let (resp, appended) = produce::produce(state, req, version);
            if appended {
                let n = state.produces.fetch_add(1, Ordering::SeqCst) + 1;
                if state
                    .config
                    .test_drop_after_append
                    .is_some_and(|every| every > 0 && n.is_multiple_of(every))
                {
                    eprintln!(
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
            let req = ListOffsetsRequest::decode(&mut body, version).map_err(|e| bad(e.into()))?;
            respond(
                correlation,
                version,
                &fetch::list_offsets(state, req, version),
            )
        }
        ApiKey::Fetch => {
            let req = FetchRequest::decode(&mut body, version).map_err(|e| bad(e.into()))?;
            respond(correlation, version, &fetch::fetch(state, req, version))
        }
        other => Err(ConnError::BadRequest(format!("{other:?} is not served"))),
    }
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
    use crate::broker::{Broker, BrokerConfig};
    use crate::format::batch::{BatchBuilder, HEADER_SIZE};
    use crate::kafka::{ServeConfig, Server};
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
        let &(_, lo, hi) = versions::ADVERTISED
            .iter()
            .find(|(k, ..)| *k == key)
            .unwrap();
        lo..=hi
    }

    fn name(s: &str) -> TopicName {
        TopicName(StrBytes::from_string(s.into()))
    }

    #[test]
    fn every_response_encodes_at_every_advertised_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut bc = BrokerConfig::default();
        bc.log = bc.log.with_segment_bytes(1 << 20);
        let broker = Broker::open(dir.path(), bc).unwrap();
        let sc = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServeConfig::default()
        };
        let server = Server::bind(broker, sc).unwrap();
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
            let resp = produce::init_producer_id(state, &InitProducerIdRequest::default());
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
}
