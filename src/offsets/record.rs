//! Consumer-offset records: the key and value of one committed offset in the consumer-offsets
//! log (docs/format.md, "Consumer-offset records"). They travel as the key and value of an
//! ordinary record in an ordinary batch, so the batch's CRC covers them.
//!
//! ```text
//! Format: key:   { version u16 = 0 | group_len u8 | group (UTF-8, 1..=255 bytes) |
//!                  topic_len u8 | topic (1..=249 bytes of [A-Za-z0-9._-]) | partition u32 }
//!         value: { version u16 = 1 | flags u8 | offset u64 | commit_timestamp i64 |
//!                  as_of u64 (present iff flags bit 0: a compaction rewrite) |
//!                  metadata_len u16 | metadata (UTF-8, 0..=4096 bytes) }
//! ```
//!
//! Value version 0 (no `metadata_len` and no metadata) is still decoded, with an empty metadata
//! string; every value written is version 1.
//!
//! Little-endian. Decoding is strict and total: exact lengths, no unknown version or flag, the
//! group and the metadata valid UTF-8, the metadata at most [`MAX_METADATA_LEN`] bytes and the
//! topic a valid topic name; hostile bytes are a `DecodeError`, never a panic, and whatever
//! decodes re-encodes to the same bytes (a version 0 value re-encodes as version 1, which
//! decodes to the same value).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::fmt;

use crate::broker::TopicPartition;
use crate::error::{Error, Result};
use crate::format::{le, DecodeError};

/// The longest consumer group name, in bytes.
pub const MAX_GROUP_LEN: usize = 255;

/// The key format version this build writes.
pub const KEY_VERSION: u16 = 0;
/// The value format version this build writes.
pub const VALUE_VERSION: u16 = 1;
/// The first value format version, without a metadata string (still decoded).
pub const VALUE_VERSION_0: u16 = 0;
/// The longest metadata string of a committed offset, in bytes (Kafka's default
/// `offset.metadata.max.bytes`).
pub const MAX_METADATA_LEN: usize = 4096;
/// Value flag bit 0: the record is a compaction rewrite and carries `as_of`.
pub const FLAG_REWRITE: u8 = 0x01;

// Key fields: version, group length, group, topic length, topic, partition.
/// Byte position of the key's version (u16).
pub const KEY_VERSION_OFFSET: usize = 0;
/// Byte position of the key's group length (u8).
pub const KEY_GROUP_LEN_OFFSET: usize = KEY_VERSION_OFFSET + 2;
/// Byte position of the key's group name.
pub const KEY_GROUP_OFFSET: usize = KEY_GROUP_LEN_OFFSET + 1;
/// Bytes of a key besides the group and topic names.
pub const KEY_FIXED_LEN: usize = 2 + 1 + 1 + 4;

// Value fields.
/// Byte position of the value's version (u16).
pub const VALUE_VERSION_OFFSET: usize = 0;
/// Byte position of the value's flags (u8).
pub const VALUE_FLAGS_OFFSET: usize = VALUE_VERSION_OFFSET + 2;
/// Byte position of the committed offset (u64).
pub const VALUE_OFFSET_OFFSET: usize = VALUE_FLAGS_OFFSET + 1;
/// Byte position of the commit timestamp (i64, ms).
pub const VALUE_TIMESTAMP_OFFSET: usize = VALUE_OFFSET_OFFSET + 8;
/// Byte position of the rewrite's `as_of` offset (u64; only with [`FLAG_REWRITE`]).
pub const VALUE_AS_OF_OFFSET: usize = VALUE_TIMESTAMP_OFFSET + 8;
/// A plain commit's value in version 0 (the fixed fields of every version).
pub const V0_VALUE_LEN: usize = VALUE_AS_OF_OFFSET;
/// A rewrite's value in version 0.
pub const V0_REWRITE_VALUE_LEN: usize = VALUE_AS_OF_OFFSET + 8;
/// Bytes of the metadata length (u16) of a version 1 value.
pub const METADATA_LEN_LEN: usize = 2;

/// A metadata string longer than [`MAX_METADATA_LEN`] bytes (Kafka's
/// OFFSET_METADATA_TOO_LARGE). Nothing was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataTooLarge {
    /// The string's length in bytes.
    pub len: usize,
    /// The limit, [`MAX_METADATA_LEN`].
    pub max: usize,
}

impl fmt::Display for MetadataTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "offset metadata of {} bytes exceeds the maximum of {} bytes",
            self.len, self.max
        )
    }
}

impl std::error::Error for MetadataTooLarge {}

/// Kafka's metadata string of a committed offset: whatever the consumer attached to it.
///
/// Invariant: at most [`MAX_METADATA_LEN`] bytes (checked by [`OffsetMetadata::new`] and the
/// decoder, the only constructors besides the empty default).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OffsetMetadata(String);

impl OffsetMetadata {
    /// [`MetadataTooLarge`] for a string longer than [`MAX_METADATA_LEN`] bytes.
    pub fn new(s: impl Into<String>) -> Result<OffsetMetadata, MetadataTooLarge> {
        let s = s.into();
        if s.len() > MAX_METADATA_LEN {
            return Err(MetadataTooLarge {
                len: s.len(),
                max: MAX_METADATA_LEN,
            });
        }
        Ok(OffsetMetadata(s))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is the empty string (what a commit without metadata stores).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Bytes of a version 1 value besides the metadata string: `rewrite` adds `as_of`.
pub fn value_fixed_len(rewrite: bool) -> usize {
    if rewrite {
        V0_REWRITE_VALUE_LEN + METADATA_LEN_LEN
    } else {
        V0_VALUE_LEN + METADATA_LEN_LEN
    }
}

/// Checks a consumer group name: 1..=255 bytes (a `&str` is UTF-8 already).
pub fn validate_group(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > MAX_GROUP_LEN {
        return Err(Error::InvalidConfig(format!(
            "consumer group name must be 1 to {MAX_GROUP_LEN} bytes, got {}",
            group.len()
        )));
    }
    Ok(())
}

/// Whose offset: a consumer group and a partition.
///
/// Invariant: `group` is 1..=255 bytes (checked by [`OffsetKey::new`] and the decoder, the
/// only constructors); the partition's topic is valid by `TopicPartition`'s own invariant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OffsetKey {
    group: String,
    partition: TopicPartition,
}

impl OffsetKey {
    /// `InvalidConfig` for a group name that is empty or longer than 255 bytes.
    pub fn new(group: &str, partition: TopicPartition) -> Result<OffsetKey> {
        validate_group(group)?;
        Ok(OffsetKey {
            group: group.to_string(),
            partition,
        })
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The partition whose offset is committed.
    pub fn partition(&self) -> &TopicPartition {
        &self.partition
    }

    /// The key and its partition, by value.
    pub fn into_parts(self) -> (String, TopicPartition) {
        (self.group, self.partition)
    }

    /// Bytes of the encoded key.
    pub fn encoded_len(&self) -> usize {
        KEY_FIXED_LEN + self.group.len() + self.partition.topic().len()
    }
}

/// A committed offset as a record value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    /// The offset the group will consume next in the partition.
    pub offset: u64,
    /// When the offset was committed (ms, the offsets log's clock).
    pub commit_timestamp: i64,
    /// `Some(s)`: a compaction rewrite of the offset committed as of log offset `s`; it applies
    /// only to a key not changed at or after `s` (docs/transactions.md, "Consumer offsets").
    pub as_of: Option<u64>,
    /// Kafka's metadata string (empty when the commit carried none, and for version 0).
    pub metadata: OffsetMetadata,
}

impl OffsetValue {
    /// A plain commit without metadata.
    pub fn commit(offset: u64, commit_timestamp: i64) -> OffsetValue {
        OffsetValue {
            offset,
            commit_timestamp,
            as_of: None,
            metadata: OffsetMetadata::default(),
        }
    }

    /// Bytes of the encoded value (version 1).
    pub fn encoded_len(&self) -> usize {
        value_fixed_len(self.as_of.is_some()) + self.metadata.len()
    }
}

/// Encodes a key (docs/format.md).
pub fn encode_key(key: &OffsetKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.encoded_len());
    out.extend_from_slice(&KEY_VERSION.to_le_bytes());
    // Both lengths fit a u8 by the invariants (255, 249).
    out.push(u8::try_from(key.group.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(key.group.as_bytes());
    let topic = key.partition.topic();
    out.push(u8::try_from(topic.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(&key.partition.partition().to_le_bytes());
    debug_assert_eq!(out.len(), key.encoded_len());
    out
}

/// Encodes a value (docs/format.md).
pub fn encode_value(value: &OffsetValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.encoded_len());
    out.extend_from_slice(&VALUE_VERSION.to_le_bytes());
    out.push(if value.as_of.is_some() {
        FLAG_REWRITE
    } else {
        0
    });
    out.extend_from_slice(&value.offset.to_le_bytes());
    out.extend_from_slice(&value.commit_timestamp.to_le_bytes());
    if let Some(s) = value.as_of {
        out.extend_from_slice(&s.to_le_bytes());
    }
    // Fits a u16 by the invariant (4096).
    let len = u16::try_from(value.metadata.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value.metadata.as_str().as_bytes());
    debug_assert_eq!(out.len(), value.encoded_len());
    out
}

fn bad(field: &'static str, value: u64) -> DecodeError {
    DecodeError::BadField {
        field,
        value: i64::try_from(value).unwrap_or(i64::MAX),
    }
}

/// `len` bytes at `at`, checked.
fn take(bytes: &[u8], at: usize, len: usize) -> Result<&[u8], DecodeError> {
    bytes
        .get(at..at.saturating_add(len))
        .ok_or(DecodeError::TooShort {
            need: at as u64 + len as u64,
            have: bytes.len() as u64,
        })
}

/// Decodes a key; a malformed or unknown-version key is a [`DecodeError`].
pub fn decode_key(bytes: &[u8]) -> Result<OffsetKey, DecodeError> {
    let version = le::u16_at(bytes, KEY_VERSION_OFFSET)?;
    if version != KEY_VERSION {
        return Err(bad("offsets key version", u64::from(version)));
    }
    let group_len = usize::from(le::u8_at(bytes, KEY_GROUP_LEN_OFFSET)?);
    let group = take(bytes, KEY_GROUP_OFFSET, group_len)?;
    let group = std::str::from_utf8(group).map_err(|_| bad("offsets key group", 0))?;
    let topic_len_at = KEY_GROUP_OFFSET + group_len;
    let topic_len = usize::from(le::u8_at(bytes, topic_len_at)?);
    let topic = take(bytes, topic_len_at + 1, topic_len)?;
    let partition_at = topic_len_at + 1 + topic_len;
    let partition = le::u32_at(bytes, partition_at)?;
    if bytes.len() != partition_at + 4 {
        return Err(DecodeError::BadLength {
            length: bytes.len() as u64,
        });
    }
    let topic = std::str::from_utf8(topic).map_err(|_| bad("offsets key topic", 0))?;
    let partition = TopicPartition::new(topic, partition)
        .map_err(|_| bad("offsets key topic", topic_len as u64))?;
    OffsetKey::new(group, partition).map_err(|_| bad("offsets key group", group_len as u64))
}

/// Decodes a value of version 0 or 1; a malformed or unknown-version value is a
/// [`DecodeError`].
pub fn decode_value(bytes: &[u8]) -> Result<OffsetValue, DecodeError> {
    let version = le::u16_at(bytes, VALUE_VERSION_OFFSET)?;
    if version != VALUE_VERSION && version != VALUE_VERSION_0 {
        return Err(bad("offsets value version", u64::from(version)));
    }
    let flags = le::u8_at(bytes, VALUE_FLAGS_OFFSET)?;
    if flags & !FLAG_REWRITE != 0 {
        return Err(bad("offsets value flags", u64::from(flags)));
    }
    let offset = le::u64_at(bytes, VALUE_OFFSET_OFFSET)?;
    let commit_timestamp = le::i64_at(bytes, VALUE_TIMESTAMP_OFFSET)?;
    let rewrite = flags & FLAG_REWRITE != 0;
    let as_of = if rewrite {
        Some(le::u64_at(bytes, VALUE_AS_OF_OFFSET)?)
    } else {
        None
    };
    let fixed = if rewrite {
        V0_REWRITE_VALUE_LEN
    } else {
        V0_VALUE_LEN
    };
    let metadata = if version == VALUE_VERSION_0 {
        OffsetMetadata::default()
    } else {
        let len = usize::from(le::u16_at(bytes, fixed)?);
        if len > MAX_METADATA_LEN {
            return Err(bad("offsets value metadata length", len as u64));
        }
        let text = take(bytes, fixed + METADATA_LEN_LEN, len)?;
        let text =
            std::str::from_utf8(text).map_err(|_| bad("offsets value metadata", len as u64))?;
        OffsetMetadata::new(text).map_err(|_| bad("offsets value metadata length", len as u64))?
    };
    let want = if version == VALUE_VERSION_0 {
        fixed
    } else {
        fixed + METADATA_LEN_LEN + metadata.len()
    };
    if bytes.len() != want {
        return Err(DecodeError::BadLength {
            length: bytes.len() as u64,
        });
    }
    Ok(OffsetValue {
        offset,
        commit_timestamp,
        as_of,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(s: &str) -> OffsetMetadata {
        OffsetMetadata::new(s).unwrap()
    }

    /// A version 0 value, as builds before the metadata string wrote it.
    fn v0(offset: u64, ts: i64, as_of: Option<u64>) -> Vec<u8> {
        let mut out = vec![0, 0, if as_of.is_some() { FLAG_REWRITE } else { 0 }];
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&ts.to_le_bytes());
        if let Some(s) = as_of {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out
    }

    #[test]
    fn version_0_values_decode_with_empty_metadata() {
        for as_of in [None, Some(9)] {
            let bytes = v0(42, 1_000, as_of);
            let v = decode_value(&bytes).unwrap();
            assert_eq!(
                v,
                OffsetValue {
                    as_of,
                    ..OffsetValue::commit(42, 1_000)
                }
            );
            assert!(v.metadata.is_empty());
            // Re-encoded as version 1, which decodes to the same value.
            let again = encode_value(&v);
            assert_eq!(le::u16_at(&again, 0).unwrap(), VALUE_VERSION);
            assert_eq!(decode_value(&again).unwrap(), v);
            // A version 0 value with a metadata length is trailing bytes.
            assert!(decode_value(&[bytes, vec![0, 0]].concat()).is_err());
        }
    }

    #[test]
    fn unknown_value_versions_are_typed_errors() {
        for version in [2u16, 3, 0x0100, u16::MAX] {
            let mut bytes = encode_value(&OffsetValue::commit(1, 2));
            bytes[..2].copy_from_slice(&version.to_le_bytes());
            assert!(matches!(
                decode_value(&bytes),
                Err(DecodeError::BadField {
                    field: "offsets value version",
                    ..
                })
            ));
        }
    }

    #[test]
    fn metadata_is_bounded_like_kafka() {
        let at_limit = "é".repeat(MAX_METADATA_LEN / 2);
        assert_eq!(meta(&at_limit).as_str(), at_limit);
        for len in [MAX_METADATA_LEN + 1, 10_000, 70_000] {
            assert_eq!(
                OffsetMetadata::new("m".repeat(len)),
                Err(MetadataTooLarge {
                    len,
                    max: MAX_METADATA_LEN
                })
            );
        }
        // On disk: a length above the limit is refused even when the bytes are there.
        let mut bytes = encode_value(&OffsetValue::commit(1, 2));
        let len = MAX_METADATA_LEN + 1;
        let at = bytes.len() - METADATA_LEN_LEN;
        bytes[at..].copy_from_slice(&(len as u16).to_le_bytes());
        bytes.extend(std::iter::repeat_n(b'm', len));
        assert!(decode_value(&bytes).is_err());
    }

    fn key(group: &str, topic: &str, p: u32) -> OffsetKey {
        OffsetKey::new(group, TopicPartition::new(topic, p).unwrap()).unwrap()
    }

    #[test]
    fn keys_and_values_round_trip() {
        for k in [
            key("g", "t", 0),
            key(&"é".repeat(127), &"x".repeat(249), u32::MAX),
            key("group-1", "__consumer_offsets", 7),
        ] {
            let bytes = encode_key(&k);
            assert_eq!(bytes.len(), k.encoded_len());
            assert_eq!(decode_key(&bytes).unwrap(), k);
        }
        for v in [
            OffsetValue::commit(0, -1),
            OffsetValue::commit(u64::MAX, i64::MIN),
            OffsetValue {
                offset: 42,
                commit_timestamp: 1_000,
                as_of: Some(17),
                metadata: meta("é"),
            },
            OffsetValue {
                metadata: meta(&"m".repeat(MAX_METADATA_LEN)),
                ..OffsetValue::commit(1, 2)
            },
        ] {
            let bytes = encode_value(&v);
            assert_eq!(bytes.len(), v.encoded_len());
            assert_eq!(decode_value(&bytes).unwrap(), v);
        }
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let k = encode_key(&key("ab", "t", 0x0102_0304));
        assert_eq!(k, [0, 0, 2, b'a', b'b', 1, b't', 4, 3, 2, 1]);
        let v = encode_value(&OffsetValue {
            offset: 5,
            commit_timestamp: 6,
            as_of: Some(7),
            metadata: meta("xy"),
        });
        let mut want = vec![1, 0, FLAG_REWRITE];
        want.extend_from_slice(&5u64.to_le_bytes());
        want.extend_from_slice(&6i64.to_le_bytes());
        want.extend_from_slice(&7u64.to_le_bytes());
        want.extend_from_slice(&[2, 0, b'x', b'y']);
        assert_eq!(v, want);
    }

    #[test]
    fn group_names_are_checked() {
        let tp = TopicPartition::new("t", 0).unwrap();
        for bad in [String::new(), "x".repeat(256), "é".repeat(128)] {
            assert!(matches!(
                OffsetKey::new(&bad, tp.clone()),
                Err(Error::InvalidConfig(_))
            ));
        }
        assert!(OffsetKey::new(&"x".repeat(255), tp).is_ok());
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = encode_key(&key("g", "t", 1));
        let with = |at: usize, b: u8| {
            let mut v = good.clone();
            v[at] = b;
            v
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty"),
            (with(0, 1), "unknown version"),
            (with(2, 0), "empty group"),
            (with(3, 0xff), "group not UTF-8"),
            (with(4, 0), "empty topic"),
            (with(5, b'/'), "bad topic character"),
            (good[..good.len() - 1].to_vec(), "truncated"),
            ([good.clone(), vec![0]].concat(), "trailing byte"),
        ];
        for (bytes, what) in cases {
            assert!(decode_key(&bytes).is_err(), "{what}");
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        let plain = encode_value(&OffsetValue::commit(1, 2));
        let rewrite = encode_value(&OffsetValue {
            offset: 1,
            commit_timestamp: 2,
            as_of: Some(3),
            metadata: meta("ab"),
        });
        let with = |v: &[u8], at: usize, b: u8| {
            let mut v = v.to_vec();
            v[at] = b;
            v
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty"),
            (with(&plain, 1, 1), "unknown version"),
            (with(&plain, 2, 2), "unknown flag"),
            (with(&plain, 2, FLAG_REWRITE), "rewrite flag without as_of"),
            (with(&rewrite, 2, 0), "as_of without the rewrite flag"),
            (with(&rewrite, 29, 0xff), "metadata not UTF-8"),
            (with(&rewrite, 27, 3), "metadata longer than its bytes"),
            (with(&rewrite, 27, 1), "metadata shorter than its bytes"),
            (plain[..plain.len() - 1].to_vec(), "truncated"),
            ([rewrite.clone(), vec![0]].concat(), "trailing byte"),
        ];
        for (bytes, what) in cases {
            assert!(decode_value(&bytes).is_err(), "{what}");
        }
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic_and_what_decodes_re_encodes(
            bytes in proptest::collection::vec(any::<u8>(), 0..64)
        ) {
            if let Ok(k) = decode_key(&bytes) {
                prop_assert_eq!(encode_key(&k), bytes.clone());
            }
            if let Ok(v) = decode_value(&bytes) {
                if bytes[0] == 0 {
                    prop_assert_eq!(bytes.clone(), v0(v.offset, v.commit_timestamp, v.as_of));
                    prop_assert_eq!(decode_value(&encode_value(&v)).unwrap(), v);
                } else {
                    prop_assert_eq!(encode_value(&v), bytes);
                }
            }
        }

        #[test]
        fn every_truncation_of_a_valid_encoding_is_refused(
            group in "[a-z]{1,8}", p in any::<u32>(), offset in any::<u64>(),
            ts in any::<i64>(), as_of in proptest::option::of(any::<u64>()),
            metadata in "[a-zé]{0,8}",
        ) {
            let k = encode_key(&key(&group, "topic", p));
            let v = encode_value(&OffsetValue {
                offset, commit_timestamp: ts, as_of, metadata: meta(&metadata),
            });
            for n in 0..k.len() {
                prop_assert!(decode_key(&k[..n]).is_err());
            }
            for n in 0..v.len() {
                prop_assert!(decode_value(&v[..n]).is_err());
            }
        }
    }
}
