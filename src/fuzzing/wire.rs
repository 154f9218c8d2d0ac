//! Wire-format targets: hostile bytes never panic the frame decoder (nor the controller
//! record's, its neighbour in `net`), and whatever they accept re-encodes to the same bytes
//! (the decoders are canonical).

use crate::net::wire::{decode_frame, encode_frame, open_envelope, DEFAULT_MAX_FRAME_BYTES};

/// `decode_wire`: `decode_frame` and `open_envelope` never panic on arbitrary bytes; an
/// accepted frame re-encodes byte for byte.
pub fn decode_wire(data: &[u8]) {
    if let Ok(frame) = decode_frame(data, DEFAULT_MAX_FRAME_BYTES) {
        let again = encode_frame(
            frame.correlation_id,
            &frame.message,
            DEFAULT_MAX_FRAME_BYTES,
        )
        .expect("a decoded frame fits the limit it was decoded under");
        assert_eq!(again, data, "wire frame does not round-trip: {frame:?}");
    }
    // A body without its length prefix, as a server sees it after reading the length.
    let _ = open_envelope(data);
    if let Some(body) = data.get(4..) {
        let _ = crate::net::wire::decode_body(body);
    }
}

/// The controller record of the controller on etcd (`net::controller_record`): whatever
/// decodes keeps the controller invariants and re-encodes to the same bytes (canonical).
pub fn decode_controller_record(data: &[u8]) {
    if let Ok(c) = crate::net::controller_record::decode(data) {
        c.check_invariants();
        assert_eq!(
            crate::net::controller_record::encode(&c),
            data,
            "controller record does not round-trip: {c:?}"
        );
    }
}
