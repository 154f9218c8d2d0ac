//! Kafka's zig-zag varints (protobuf `sint32`/`sint64`), used inside v2 records.

use super::DecodeError;

const BAD: DecodeError = DecodeError::BadRecord {
    index: 0,
    reason: "malformed varint",
};

/// Appends `v` as a zigzag varint (Kafka's record encoding).
pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_varlong(out, i64::from(v));
}

/// Appends `v` as a zigzag varlong (Kafka's record encoding).
pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Encoded size of `v` as a varlong.
pub fn varlong_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    let bits = 64 - (z | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Encoded size of `v` as a varint.
pub fn varint_len(v: i32) -> usize {
    varlong_len(i64::from(v))
}

#[inline(always)]
fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// Reads a varlong at `*pos`, advancing it. At most 10 bytes are read.
///
/// One- and two-byte encodings (-8192..=8191: the deltas, counts and lengths of records under
/// 8 KiB) are decoded inline; longer ones, and every malformed or truncated one, by
/// `get_varlong_slow`. Both give the same value and the same `*pos` for the same bytes
/// (`fast_path_matches_the_loop` below).
#[inline]
pub fn get_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, DecodeError> {
    match buf.get(*pos..) {
        Some(&[b0, ..]) if b0 < 0x80 => {
            *pos += 1;
            Ok(unzigzag(u64::from(b0)))
        }
        Some(&[b0, b1, ..]) if b1 < 0x80 => {
            *pos += 2;
            Ok(unzigzag(u64::from(b0 & 0x7f) | u64::from(b1) << 7))
        }
        _ => get_varlong_slow(buf, pos),
    }
}

/// The byte-at-a-time loop behind [`get_varlong`]: at most 10 bytes, `*pos` advanced past every
/// byte read, even on error.
#[inline(never)]
fn get_varlong_slow(buf: &[u8], pos: &mut usize) -> Result<i64, DecodeError> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos).ok_or(BAD)?;
        *pos += 1;
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(unzigzag(z));
        }
    }
    Err(BAD)
}

/// Reads a varint; a value outside i32 is an error. One- and two-byte encodings always fit and
/// are decoded inline, as in [`get_varlong`].
#[inline]
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i32, DecodeError> {
    match buf.get(*pos..) {
        Some(&[b0, ..]) if b0 < 0x80 => {
            *pos += 1;
            Ok(unzigzag(u64::from(b0)) as i32)
        }
        Some(&[b0, b1, ..]) if b1 < 0x80 => {
            *pos += 2;
            Ok(unzigzag(u64::from(b0 & 0x7f) | u64::from(b1) << 7) as i32)
        }
        _ => get_varint_slow(buf, pos),
    }
}

/// [`get_varlong`] from the front of `*buf`, which is advanced past the bytes read: the form
/// the record decoder uses, one length check per field and no position arithmetic.
#[inline(always)]
pub fn read_varlong(buf: &mut &[u8]) -> Result<i64, DecodeError> {
    match **buf {
        [b0, ref rest @ ..] if b0 < 0x80 => {
            *buf = rest;
            Ok(unzigzag(u64::from(b0)))
        }
        [b0, b1, ref rest @ ..] if b1 < 0x80 => {
            *buf = rest;
            Ok(unzigzag(u64::from(b0 & 0x7f) | u64::from(b1) << 7))
        }
        _ => {
            let mut pos = 0;
            let v = get_varlong_slow(buf, &mut pos);
            *buf = buf.get(pos..).unwrap_or_default();
            v
        }
    }
}

/// [`get_varint`] from the front of `*buf`, as [`read_varlong`].
#[inline(always)]
pub fn read_varint(buf: &mut &[u8]) -> Result<i32, DecodeError> {
    match **buf {
        [b0, ref rest @ ..] if b0 < 0x80 => {
            *buf = rest;
            Ok(unzigzag(u64::from(b0)) as i32)
        }
        [b0, b1, ref rest @ ..] if b1 < 0x80 => {
            *buf = rest;
            Ok(unzigzag(u64::from(b0 & 0x7f) | u64::from(b1) << 7) as i32)
        }
        _ => {
            let mut pos = 0;
            let v = get_varint_slow(buf, &mut pos);
            *buf = buf.get(pos..).unwrap_or_default();
            v
        }
    }
}

#[inline(never)]
fn get_varint_slow(buf: &[u8], pos: &mut usize) -> Result<i32, DecodeError> {
    i32::try_from(get_varlong_slow(buf, pos)?).map_err(|_| BAD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varlong_round_trips(v in any::<i64>()) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            prop_assert_eq!(out.len(), varlong_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varlong(&out, &mut pos).unwrap(), v);
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn varint_round_trips(v in any::<i32>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(out.len(), varint_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varint(&out, &mut pos).unwrap(), v);
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut pos = 0;
            let _ = get_varlong(&bytes, &mut pos);
            prop_assert!(pos <= bytes.len());
            let mut pos = 0;
            let _ = get_varint(&bytes, &mut pos);
            prop_assert!(pos <= bytes.len());
        }

        /// The inline fast paths decode exactly what the loop decodes (value or error, and the
        /// position after), from any start, including past the end of the buffer.
        #[test]
        fn fast_path_matches_the_loop(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), 0x80u8..=0xff, 0u8..0x80], 0..14),
            start in 0usize..16,
        ) {
            let (mut fast, mut slow) = (start, start);
            prop_assert_eq!(get_varlong(&bytes, &mut fast), get_varlong_slow(&bytes, &mut slow));
            prop_assert_eq!(fast, slow);
            let (mut fast, mut slow) = (start, start);
            prop_assert_eq!(get_varint(&bytes, &mut fast), get_varint_slow(&bytes, &mut slow));
            prop_assert_eq!(fast, slow);
            // The slice forms: the same value, the rest starting where the loop stopped.
            let from = bytes.get(start..).unwrap_or_default();
            let (mut rest, mut slow) = (from, 0);
            prop_assert_eq!(read_varlong(&mut rest), get_varlong_slow(from, &mut slow));
            prop_assert_eq!(rest.len(), from.len() - slow);
            let (mut rest, mut slow) = (from, 0);
            prop_assert_eq!(read_varint(&mut rest), get_varint_slow(from, &mut slow));
            prop_assert_eq!(rest.len(), from.len() - slow);
        }
    }
}
