//! The one re-send policy of the clients that produce to a replicated partition
//! (`cluster::ClusterClient` over threads, `node::PartitionClient` over TCP).
//!
//! A failed attempt says one of three things about the batch:
//!
//! | attempt ended with                                   | the batch is      | re-send the same bytes?     |
//! |------------------------------------------------------|-------------------|-----------------------------|
//! | nothing sent (no leader known, cannot connect)       | not written       | yes                         |
//! | `NotLeader` answer (refused before appending)        | not written       | yes                         |
//! | `Timeout` (no answer, leader died or stepped down)   | unknown           | only if idempotent          |
//! | any other answer                                     | answered          | no: returned to the caller  |
//!
//! An idempotent batch (producer id and sequence) re-sent after an unknown outcome is answered
//! as a duplicate with its original offsets if it was written; a plain batch would be written a
//! second time, so its unknown outcome goes back to the caller as `Timeout` at once.
//!
//! `NotLeader` proves "not written" only because a replica never answers it for a batch it
//! appended: an acks=all request still waiting when its replica stops leading is answered
//! `Timeout` (`Replica::fail_pending`).

use crate::error::Error;

/// What a failed produce attempt says about its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The batch was not appended anywhere (not sent, or refused before appending).
    NotWritten,
    /// The batch may or may not have been appended.
    Unknown,
    /// A definite answer the caller must see (fencing, sequence errors, not enough replicas,
    /// a storage failure at the leader, ...).
    Answered,
}

impl AttemptOutcome {
    /// The outcome of an attempt whose request reached (or may have reached) a replica and
    /// ended with `e`.
    pub fn of(e: &Error) -> AttemptOutcome {
        match e {
            Error::NotLeader { .. } => AttemptOutcome::NotWritten,
            Error::Timeout => AttemptOutcome::Unknown,
            _ => AttemptOutcome::Answered,
        }
    }

    /// Whether the client may send the same bytes again.
    pub fn may_resend(self, idempotent: bool) -> bool {
        match self {
            AttemptOutcome::NotWritten => true,
            AttemptOutcome::Unknown => idempotent,
            AttemptOutcome::Answered => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_not_written_or_idempotent_unknown_outcomes_are_resent() {
        let not_leader = Error::NotLeader {
            leader: Some(2),
            leader_epoch: 3,
        };
        let after_append = Error::NotEnoughReplicasAfterAppend {
            maximal_isr: 1,
            min_isr: 2,
        };
        let cases = [
            (not_leader, AttemptOutcome::NotWritten, true, true),
            (Error::Timeout, AttemptOutcome::Unknown, false, true),
            (after_append, AttemptOutcome::Answered, false, false),
            (Error::Closed, AttemptOutcome::Answered, false, false),
        ];
        for (e, outcome, plain, idempotent) in cases {
            assert_eq!(AttemptOutcome::of(&e), outcome, "{e}");
            assert_eq!(outcome.may_resend(false), plain, "{e}: plain batch");
            assert_eq!(
                outcome.may_resend(true),
                idempotent,
                "{e}: idempotent batch"
            );
        }
    }
}
