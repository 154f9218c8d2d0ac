//! The name of a partition: a topic and a partition number, as Kafka names them.

use std::fmt;

use crate::error::{Error, Result};

/// The longest topic name (Kafka's limit: 249 characters, so `<topic>-<partition>` fits a
/// 255-byte file name).
pub const MAX_TOPIC_LEN: usize = 249;

/// A topic and a partition number. Its directory name is `<topic>-<partition>`, as in Kafka.
///
/// Invariant: `topic` is 1..=249 characters of `[A-Za-z0-9._-]` and is neither `.` nor `..`
/// (checked by [`TopicPartition::new`], the only constructor), so a directory name can never
/// escape its parent or collide with another partition's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    topic: String,
    partition: u32,
}

impl TopicPartition {
    /// Checks the topic name; `InvalidConfig` names what is wrong with it.
    pub fn new(topic: &str, partition: u32) -> Result<TopicPartition> {
        validate_topic(topic)?;
        Ok(TopicPartition {
            topic: topic.to_string(),
            partition,
        })
    }

    /// A broker's own partition (a constant name known to pass the rules).
    pub(crate) fn internal(topic: &'static str, partition: u32) -> TopicPartition {
        debug_assert!(validate_topic(topic).is_ok(), "{topic}");
        TopicPartition {
            topic: topic.to_string(),
            partition,
        }
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition index within the topic (from 0).
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// `<topic>-<partition>`: the partition's directory under a broker's data directory.
    pub fn dir_name(&self) -> String {
        self.to_string()
    }

    /// The inverse of [`TopicPartition::dir_name`]; `None` for a name that is not one.
    pub fn parse_dir_name(name: &str) -> Option<TopicPartition> {
        let (topic, partition) = name.rsplit_once('-')?;
        if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let partition: u32 = partition.parse().ok()?;
        let tp = TopicPartition::new(topic, partition).ok()?;
        // Only the canonical spelling (no leading zeros) names a partition.
        (tp.dir_name() == name).then_some(tp)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

fn validate_topic(topic: &str) -> Result<()> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(Error::InvalidConfig(format!(
            "topic name must be 1 to {MAX_TOPIC_LEN} characters, got {}",
            topic.len()
        )));
    }
    if topic == "." || topic == ".." {
        return Err(Error::InvalidConfig(format!(
            "topic name {topic:?} is not allowed"
        )));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::InvalidConfig(format!(
            "topic name {topic:?} holds {c:?}; allowed: ASCII letters, digits, '.', '_', '-'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_their_directory_name() {
        for (topic, p) in [
            ("orders", 0),
            ("a.b_c-d", 7),
            ("x-1", 12),
            ("__consumer_offsets", 0),
        ] {
            let tp = TopicPartition::new(topic, p).unwrap();
            assert_eq!(TopicPartition::parse_dir_name(&tp.dir_name()), Some(tp));
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for topic in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(250)] {
            assert!(
                matches!(TopicPartition::new(topic, 0), Err(Error::InvalidConfig(_))),
                "{topic:?}"
            );
        }
        for name in [
            "orders",
            "orders-",
            "orders-01",
            "orders-x",
            "-1",
            "a/b-0",
            "orders-99999999999",
        ] {
            assert_eq!(TopicPartition::parse_dir_name(name), None, "{name}");
        }
    }
}
