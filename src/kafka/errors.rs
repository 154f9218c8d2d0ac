//! Our errors as Kafka error codes (docs/kafka-wire.md, "Errors"). Every producer sequence and
//! epoch error has its own code, so a client reacts to it as it would to a Kafka broker: a
//! duplicate is a success, a gap is fatal, an unknown producer makes it re-initialise.

use kafka_protocol::ResponseError as K;

use super::batch::BatchError;
use crate::error::Error;
use crate::format::DecodeError;

/// The Kafka error code for an error of the broker or a log.
pub fn code_of(e: &Error) -> i16 {
    match e {
        Error::OffsetOutOfRange { .. } => K::OffsetOutOfRange,
        Error::InvalidBatch(DecodeError::ChecksumMismatch { .. }) => K::CorruptMessage,
        Error::InvalidBatch(_) | Error::InvalidRecord { .. } => K::InvalidRecord,
        Error::UnknownPartition { .. } => K::UnknownTopicOrPartition,
        Error::BatchTooLarge { .. } => K::MessageTooLarge,
        Error::NotLeader { .. } => K::NotLeaderOrFollower,
        Error::Timeout => K::RequestTimedOut,
        Error::ProducerFenced { .. } => K::InvalidProducerEpoch,
        Error::OutOfOrderSequence { .. } => K::OutOfOrderSequenceNumber,
        Error::DuplicateSequence { .. } => K::DuplicateSequenceNumber,
        Error::InvalidTxnState { .. } => K::InvalidTxnState,
        Error::UnknownProducerId { .. } => K::UnknownProducerId,
        Error::NotEnoughReplicas { .. } => K::NotEnoughReplicas,
        Error::NotEnoughReplicasAfterAppend { .. } => K::NotEnoughReplicasAfterAppend,
        Error::ConcurrentTransactions { .. } => K::ConcurrentTransactions,
        Error::InvalidProducerIdMapping { .. } => K::InvalidProducerIdMapping,
        Error::InvalidConfig(_) => K::InvalidTopicException,
        Error::Io { .. }
        | Error::Corrupt { .. }
        | Error::CorruptFile { .. }
        | Error::RecoveryPointLost { .. }
        | Error::PreviousIo
        | Error::ReadOnly
        | Error::Locked(_) => K::KafkaStorageError,
        _ => K::UnknownServerError,
    }
    .code()
}

/// The Kafka error code for a client batch we refused before it reached the log.
pub fn batch_code(e: &BatchError) -> i16 {
    match e {
        BatchError::Corrupt(_) => K::CorruptMessage,
        BatchError::Invalid(_) => K::InvalidRecord,
        BatchError::TooLarge { .. } => K::MessageTooLarge,
    }
    .code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ProducerId;

    #[test]
    fn every_sequence_and_epoch_error_has_its_kafka_code() {
        let pid = ProducerId(7);
        let cases = [
            (
                Error::OutOfOrderSequence {
                    producer_id: pid,
                    epoch: 0,
                    first_sequence: 5,
                    expected_sequence: 3,
                },
                45,
            ),
            (
                Error::DuplicateSequence {
                    producer_id: pid,
                    epoch: 0,
                    first_sequence: 0,
                },
                46,
            ),
            (
                Error::ProducerFenced {
                    producer_id: pid,
                    epoch: 0,
                    current_epoch: 1,
                },
                47,
            ),
            (
                Error::InvalidTxnState {
                    producer_id: pid,
                    reason: String::new(),
                },
                48,
            ),
            (
                Error::UnknownProducerId {
                    producer_id: pid,
                    first_sequence: Some(3),
                },
                59,
            ),
            (
                Error::UnknownPartition {
                    partition: "t-9".into(),
                },
                3,
            ),
            (Error::BatchTooLarge { size: 2, max: 1 }, 10),
            (Error::PreviousIo, 56),
        ];
        for (e, code) in cases {
            assert_eq!(code_of(&e), code, "{e:?}");
        }
        assert_eq!(batch_code(&BatchError::Corrupt(String::new())), 2);
        assert_eq!(batch_code(&BatchError::Invalid(String::new())), 87);
        assert_eq!(batch_code(&BatchError::TooLarge { limit: 1 }), 10);
    }
}
