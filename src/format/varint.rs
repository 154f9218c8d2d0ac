//! Kafka's zig-zag varints (protobuf `sint32`/`sint64`), used inside v2 records.

use super::DecodeError;

const BAD: DecodeError = DecodeError::BadRecord {
    index: 0,
    reason: "malformed varint",
};

pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_varlong(out, i64::from(v));
}

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

pub fn varint_len(v: i32) -> usize {
    varlong_len(i64::from(v))
}

/// Reads a varlong at `*pos`, advancing it. At most 10 bytes are read.
pub fn get_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, DecodeError> {
    let mut z: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos).ok_or(BAD)?;
        *pos += 1;
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    Err(BAD)
}

/// Reads a varint; a value outside i32 is an error.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i32, DecodeError> {
    i32::try_from(get_varlong(buf, pos)?).map_err(|_| BAD)
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
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut pos = 0;
            let _ = get_varlong(&bytes, &mut pos);
            prop_assert!(pos <= bytes.len());
        }
    }
}
