//! Decompression of the record section of a client's batch, for each codec a Kafka client may
//! use (attributes bits 0-2). Output is bounded: a small compressed batch cannot make the
//! broker allocate more than the limit (a decompression bomb is MESSAGE_TOO_LARGE).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]
#![allow(clippy::big_endian_bytes)]

use std::io::Read;

use super::batch::BatchError;

/// A batch's compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Uncompressed (attribute code 0).
    None,
    /// gzip (code 1).
    Gzip,
    /// Snappy (code 2), also in the Java client's xerial framing.
    Snappy,
    /// LZ4 frames (code 3).
    Lz4,
    /// Zstandard (code 4).
    Zstd,
}

impl Codec {
    /// The codec named by a batch's attributes (bits 0-2).
    pub fn from_attributes(attrs: u16) -> Result<Codec, String> {
        Ok(match attrs & 0x07 {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            other => return Err(format!("unknown compression codec {other}")),
        })
    }
}

/// The records of a batch, decompressed; at most `limit` bytes.
pub fn decompress(codec: Codec, raw: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        BatchError::Corrupt(format!("{what} records do not decompress: {e}"))
    };
    match codec {
        Codec::None => {
            if raw.len() > limit {
                return Err(BatchError::TooLarge { limit });
            }
            Ok(raw.to_vec())
        }
        Codec::Gzip => read_bounded(flate2::read::GzDecoder::new(raw), limit)
            .map_err(|e| e.or(|e| bad("gzip", &e))),
        Codec::Snappy => snappy(raw, limit),
        Codec::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(raw), limit)
            .map_err(|e| e.or(|e| bad("lz4", &e))),
        Codec::Zstd => {
            let decoder =
                ruzstd::decoding::StreamingDecoder::new(raw).map_err(|e| bad("zstd", &e))?;
            read_bounded(decoder, limit).map_err(|e| e.or(|e| bad("zstd", &e)))
        }
    }
}

/// An I/O error of a decoder, or the output limit reached.
enum ReadError {
    Io(std::io::Error),
    TooLarge(usize),
}

impl ReadError {
    fn or(self, io: impl FnOnce(std::io::Error) -> BatchError) -> BatchError {
        match self {
            ReadError::Io(e) => io(e),
            ReadError::TooLarge(limit) => BatchError::TooLarge { limit },
        }
    }
}

fn read_bounded(r: impl Read, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    r.take(cap).read_to_end(&mut out).map_err(ReadError::Io)?;
    if out.len() > limit {
        return Err(ReadError::TooLarge(limit));
    }
    Ok(out)
}

/// The Java client's framing of snappy (xerial's `SnappyOutputStream`): this magic, two
/// big-endian i32 versions, then blocks of `length i32 | raw snappy`. librdkafka sends raw snappy
/// and reads both; so do we.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER: usize = 16;

fn snappy(raw: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    if !raw.starts_with(XERIAL_MAGIC) {
        let mut out = Vec::new();
        snappy_block(raw, limit, &mut out)?;
        return Ok(out);
    }
    let mut rest = raw.get(XERIAL_HEADER..).unwrap_or(&[]);
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| BatchError::Corrupt("xerial snappy block length cut short".into()))?;
        let len = usize::try_from(i32::from_be_bytes(*len))
            .map_err(|_| BatchError::Corrupt("negative xerial snappy block length".into()))?;
        let block = tail
            .get(..len)
            .ok_or_else(|| BatchError::Corrupt("xerial snappy block cut short".into()))?;
        snappy_block(block, limit, &mut out)?;
        rest = tail.get(len..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Appends the decompressed raw snappy `block` to `out`, if `out` stays within `limit` bytes.
fn snappy_block(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), BatchError> {
    let bad =
        |e: snap::Error| BatchError::Corrupt(format!("snappy records do not decompress: {e}"));
    let n = snap::raw::decompress_len(block).map_err(bad)?;
    if n > limit.saturating_sub(out.len()) {
        return Err(BatchError::TooLarge { limit });
    }
    let start = out.len();
    out.resize(start + n, 0);
    let dst = out.get_mut(start..).unwrap_or(&mut []);
    let written = snap::raw::Decoder::new()
        .decompress(block, dst)
        .map_err(bad)?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_codec_round_trips_and_respects_the_limit() {
        let data: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 97).to_le_bytes())
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let sn = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        for chunk in data.chunks(7000) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            xerial.extend_from_slice(&(block.len() as i32).to_be_bytes());
            xerial.extend_from_slice(&block);
        }
        let mut lz = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz.write_all(&data).unwrap();
        let lz = lz.finish().unwrap();
        let zs = ruzstd::encoding::compress_to_vec(
            &data[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        for (codec, raw) in [
            (Codec::None, data.clone()),
            (Codec::Gzip, gz),
            (Codec::Snappy, sn),
            (Codec::Snappy, xerial),
            (Codec::Lz4, lz),
            (Codec::Zstd, zs),
        ] {
            assert_eq!(
                decompress(codec, &raw, data.len()).unwrap(),
                data,
                "{codec:?}"
            );
            assert_eq!(
                decompress(codec, &raw, data.len() - 1),
                Err(BatchError::TooLarge {
                    limit: data.len() - 1
                }),
                "{codec:?}"
            );
            if codec != Codec::None {
                let mut garbage = raw.clone();
                for b in garbage.iter_mut().skip(4).step_by(3) {
                    *b ^= 0x5a;
                }
                assert!(decompress(codec, &garbage, data.len()) != Ok(data.clone()));
            }
        }
    }
}
