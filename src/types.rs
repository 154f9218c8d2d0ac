//! Newtypes for the numbers the engine must never mix up.
//!
//! `Offset` is a logical record position in the partition; `Position` is a byte position inside
//! one segment file. Producer identity and sequence numbers follow Kafka's widths.

use std::fmt;

/// A logical record offset in the partition (Kafka's `offset`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
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
    pub const NONE: ProducerId = ProducerId(-1);

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

/// Sequence `seq` advanced by `delta`, wrapping after `i32::MAX` to 0 (Kafka's
/// `DefaultRecordBatch.incrementSequence`).
pub fn increment_sequence(seq: Sequence, delta: i32) -> Sequence {
    debug_assert!(seq >= 0 && delta >= 0);
    if seq > i32::MAX - delta {
        delta - (i32::MAX - seq) - 1
    } else {
        seq + delta
    }
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
    }
}
