//! A broker: named partition logs in one data directory, with the transaction coordinator and
//! the consumer-offsets log that make exactly-once work across them.

pub mod topic_partition;

pub use topic_partition::{TopicPartition, MAX_TOPIC_LEN};
