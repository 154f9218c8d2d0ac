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
                    .is_some_and(|every| every > 0 && n % every == 0)
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
