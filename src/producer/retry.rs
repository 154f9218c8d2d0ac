//! The one re-send policy of the clients that produce to a replicated partition
//! (`cluster::ClusterClient` over threads, `node::PartitionClient` over TCP).
//!
//! A failed attempt says one of three things about the batch:
//!
//! | attempt ended with                                   | the batch is      | re-send the same bytes?     |
//! |------------------------------------------------------|-------------------|-----------------------------|
//! | nothing sent (no leader known, cannot connect)       | not written       | yes                         |
//! | `NotLeader` answer (refused before appending)        | not written       | yes                         |
//! | `NotEnoughReplicas` (ISR below min, refused before appending) | not written | yes, until the deadline; then that answer |
//! | `Timeout` (no answer, leader died or stepped down)   | unknown           | only if idempotent          |
//! | any other answer                                     | answered          | no: returned to the caller  |
//!
//! An idempotent batch (producer id and sequence) re-sent after an unknown outcome is answered
//! as a duplicate with its original offsets if it was written; a plain batch would be written a
//! second time, so its unknown outcome goes back to the caller as `Timeout` at once.
//!
//! When the deadline passes, the caller gets the last answer if every attempt provably wrote
//! nothing (`NotEnoughReplicas` stays `NotEnoughReplicas`: a persistent ISR below the minimum
//! is reported as such), and `Timeout` if any attempt's outcome was unknown
//! ([`Attempts::give_up`]). Re-sending `NotEnoughReplicas` rides out the moment after a leader
//! change when the new leader's ISR has not grown back yet, as Kafka's clients do.
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
            Error::NotLeader { .. } | Error::NotEnoughReplicas { .. } => AttemptOutcome::NotWritten,
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

/// The attempts of one request so far: what to answer when the deadline passes.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Some attempt's outcome was unknown: the batch may be in the log.
    unknown: bool,
    /// The last error of an attempt that provably wrote nothing.
    last_not_written: Option<Error>,
}

impl Attempts {
    /// Records a failed attempt that will be re-sent.
    pub fn failed(&mut self, e: Error, outcome: AttemptOutcome) {
        match outcome {
            AttemptOutcome::Unknown => self.unknown = true,
            AttemptOutcome::NotWritten => self.last_not_written = Some(e),
            AttemptOutcome::Answered => {}
        }
    }

    /// The answer at the deadline: `Timeout` if any attempt's outcome was unknown (or none
    /// failed with a definite answer), else the last definite "not written" answer.
    pub fn give_up(self) -> Error {
        match (self.unknown, self.last_not_written) {
            (false, Some(e @ Error::NotEnoughReplicas { .. })) => e,
            _ => Error::Timeout,
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
        let below_min = Error::NotEnoughReplicas { isr: 1, min_isr: 2 };
        let cases = [
            (not_leader, AttemptOutcome::NotWritten, true, true),
            (below_min, AttemptOutcome::NotWritten, true, true),
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

    #[test]
    fn the_deadline_answer_is_timeout_once_any_outcome_was_unknown() {
        let below_min = || Error::NotEnoughReplicas { isr: 1, min_isr: 2 };
        let mut a = Attempts::default();
        a.failed(below_min(), AttemptOutcome::NotWritten);
        assert!(matches!(a.give_up(), Error::NotEnoughReplicas { .. }));
        let mut a = Attempts::default();
        a.failed(Error::Timeout, AttemptOutcome::Unknown);
        a.failed(below_min(), AttemptOutcome::NotWritten);
        assert!(
            matches!(a.give_up(), Error::Timeout),
            "an earlier attempt may have written"
        );
        assert!(matches!(Attempts::default().give_up(), Error::Timeout));
    }
}
