//! Where a coordinator's COMMIT/ABORT markers go.

use crate::broker::TopicPartition;
use crate::error::Result;
use crate::producer::Marker;

/// The partitions a transaction coordinator writes markers to. A broker implements it over its
/// partition logs (`Log::append_marker`); tests implement it over a map of logs or a recorder.
///
/// Contract: `write_marker` returns `Ok` only once the marker is in the partition's log (durable
/// as that log's sync mode makes appends durable). Writing the same marker again is allowed and
/// harmless: a marker for a producer with no open transaction completes nothing.
pub trait MarkerSink {
    /// Writes `marker` to `partition`'s log; `Ok` only once it is in that log (see the trait's contract).
    fn write_marker(&self, partition: &TopicPartition, marker: &Marker) -> Result<()>;
}
