//! Newtypes for the numbers the engine must never mix up.
//!
//! `Offset` is a logical record position in the partition; `Position` is a byte position inside
//! one segment file. Producer identity and sequence numbers follow Kafka's widths.

use std::fmt;

/// A logical record offset in the partition (Kafka's `offset`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    /// Offset 0, the first offset of a new log.
    pub const ZERO: Offset = Offset(0);

    /// The offset `n` records later. Offsets are u63 in practice; overflow is a bug.
    #[must_use]
    pub fn plus(self, n: u64) -> Offset {
        Offset(self.0.checked_add(n).expect("offset overflow"))
    }
}

impl fmt::Debug for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A byte position inside one segment's log file.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Position(pub u64);

/// The epoch of the partition leader that wrote a batch. `-1` = none (Kafka's convention).
pub type LeaderEpoch = i32;

/// A producer id allocated by `init_producer`; `-1` means "not an idempotent batch".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ProducerId(pub i64);

impl ProducerId {
    /// "Not an idempotent producer": batches with this id are never deduplicated.
    pub const NONE: ProducerId = ProducerId(-1);

    /// Whether this is an allocated id (non-negative), not [`ProducerId::NONE`].
    pub fn is_some(self) -> bool {
        self.0 >= 0
    }
}

/// A producer's epoch (incarnation); a higher epoch fences lower ones.
pub type ProducerEpoch = i16;

/// A producer sequence number: 0..=i32::MAX, wrapping to 0.
pub type Sequence = i32;

/// Milliseconds since the Unix epoch (Kafka's timestamp unit).
pub type TimestampMs = i64;

/// Sequence numbers live on a ring of 2^31 values (0..=i32::MAX, then 0 again). Every piece of
/// sequence arithmetic goes through [`seq_distance`] and [`seq_add`]; nothing compares or
/// subtracts sequences as plain integers (a batch may straddle the wrap, and a window of
/// retained batches may sit anywhere on the ring).
pub const SEQ_RING: i64 = 1 << 31;

/// `(to - from) mod 2^31`: how far `to` is ahead of `from` on the sequence ring (0..2^31).
pub fn seq_distance(from: Sequence, to: Sequence) -> i64 {
    (i64::from(to) - i64::from(from)).rem_euclid(SEQ_RING)
}

/// `seq` moved by `delta` (any sign) on the sequence ring.
pub fn seq_add(seq: Sequence, delta: i64) -> Sequence {
    let v = (i64::from(seq) + delta.rem_euclid(SEQ_RING)).rem_euclid(SEQ_RING);
    // v < 2^31 by construction.
    i32::try_from(v).unwrap_or(0)
}

/// Sequence `seq` advanced by `delta`, wrapping after `i32::MAX` to 0 (Kafka's
/// `DefaultRecordBatch.incrementSequence`).
pub fn increment_sequence(seq: Sequence, delta: i32) -> Sequence {
    debug_assert!(seq >= 0 && delta >= 0);
    seq_add(seq, i64::from(delta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_wraps_after_i32_max() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 0), 5);
        assert_eq!(increment_sequence(5, 4), 9);
        assert_eq!(seq_distance(i32::MAX, 0), 1);
        assert_eq!(seq_distance(0, i32::MAX), SEQ_RING - 1);
        assert_eq!(seq_add(0, -1), i32::MAX);
        assert_eq!(seq_add(i32::MAX, SEQ_RING + 2), 1);
    }
}
