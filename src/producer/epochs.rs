//! Issued producer epochs: which epoch `Log::reinit_producer` may hand out next, so that every
//! epoch handed out for a producer id is strictly above every epoch handed out for it before,
//! across clean close, process crash and power loss.
//!
//! Pure (no I/O). The log persists the table in the `producer-epochs` checkpoint (an OLCP record
//! of kind `ProducerEpochs`, byte table in `docs/format.md`) with an atomic replace *before* it
//! returns an epoch, and adopts the new table only once that write succeeded.
//!
//! The table lists, per producer id, the newest epoch issued for it by `reinit_producer`. It is
//! bounded: beyond `kept` ids the entry with the lowest epoch (then the lowest id) is dropped and
//! `unlisted_next` rises above it, so an id that is not listed still gets an epoch above every
//! epoch it was ever issued. Listed entries are never dropped for any other reason: expiry,
//! eviction from the producer table, retention and truncation cannot make an issued epoch
//! forgettable.
//!
//! # Invariants (checked by [`IssuedEpochs::validate`]: after every change and on load)
//!
//! - **E1** at most `kept` ids are listed, every listed id is `>= 0` and every listed epoch is in
//!   `1..=i16::MAX` (epoch 0 comes from `init_producer`, never from this table).
//! - **E2** `1 <= unlisted_next <= i16::MAX + 1`: every epoch ever issued for an id that is not
//!   listed is below it (epoch 0 by `init_producer`; dropping an entry raises it above the
//!   dropped epoch).
//! - **E3** for every id, [`IssuedEpochs::next_epoch`] never decreases through
//!   [`IssuedEpochs::with_issued`] (listing an epoch raises it; dropping an entry keeps it, by
//!   E2).

use std::collections::BTreeMap;

use crate::types::{ProducerEpoch, ProducerId};

/// How many producer ids the `producer-epochs` checkpoint lists (the file is at most
/// `encoded_len(1 + 2 * 1024)` = 16,412 bytes).
pub const ISSUED_EPOCHS_KEPT: usize = 1024;

/// The smallest `unlisted_next`: epoch 0 of every id is issued by `init_producer`.
const FIRST_REINIT_EPOCH: i32 = 1;

/// The newest epoch issued per producer id, bounded (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedEpochs {
    kept: usize,
    /// Invariant E1.
    listed: BTreeMap<ProducerId, ProducerEpoch>,
    /// Invariant E2.
    unlisted_next: i32,
}

impl IssuedEpochs {
    /// An empty table that lists at most `kept` ids (at least 1).
    pub fn new(kept: usize) -> IssuedEpochs {
        IssuedEpochs {
            kept: kept.max(1),
            listed: BTreeMap::new(),
            unlisted_next: FIRST_REINIT_EPOCH,
        }
    }

    /// The newest epoch issued for `pid` by `reinit_producer`, if it is listed: a client batch
    /// of `pid` with a lower epoch comes from a fenced incarnation.
    pub fn issued(&self, pid: ProducerId) -> Option<ProducerEpoch> {
        self.listed.get(&pid).copied()
    }

    /// The epoch to hand out next for `pid`: above every epoch issued for it and above `seen`,
    /// the epoch the producer table holds for it (replicated or replayed batches may carry an
    /// epoch another leader issued). `None` when that would exceed `i16::MAX` (exhausted).
    pub fn next_epoch(
        &self,
        pid: ProducerId,
        seen: Option<ProducerEpoch>,
    ) -> Option<ProducerEpoch> {
        let floor = self
            .listed
            .get(&pid)
            .map_or(self.unlisted_next, |&e| i32::from(e) + 1);
        let next = floor.max(seen.map_or(0, |e| i32::from(e) + 1));
        ProducerEpoch::try_from(next).ok()
    }

    /// A copy with `epoch` listed as issued for `pid` (dropping the lowest-epoch entries beyond
    /// `kept`). The caller persists the copy, then adopts it, then returns the epoch.
    ///
    /// Panics if `epoch` is below `next_epoch(pid, None)`: issuing an epoch twice is a
    /// programmer error.
    #[must_use]
    pub fn with_issued(&self, pid: ProducerId, epoch: ProducerEpoch) -> IssuedEpochs {
        assert!(pid.is_some(), "epoch issued for a negative producer id");
        assert!(
            self.next_epoch(pid, None).is_some_and(|n| epoch >= n),
            "producer {}: epoch {epoch} issued again",
            pid.0
        );
        let mut next = self.clone();
        next.listed.insert(pid, epoch);
        next.shrink_to_kept(Some(pid));
        debug_assert_eq!(next.validate(), Ok(()));
        next
    }

    /// Drops the lowest-epoch entries (then lowest id), never `protect`, until at most `kept`
    /// are listed; `unlisted_next` rises above each dropped epoch (E2).
    fn shrink_to_kept(&mut self, protect: Option<ProducerId>) {
        while self.listed.len() > self.kept {
            let victim = self
                .listed
                .iter()
                .filter(|(p, _)| Some(**p) != protect)
                .min_by_key(|(p, e)| (**e, **p))
                .map(|(p, e)| (*p, *e));
            let Some((pid, epoch)) = victim else { break };
            self.listed.remove(&pid);
            self.unlisted_next = self.unlisted_next.max(i32::from(epoch) + 1);
        }
    }

    /// Listed ids, ascending, with their newest issued epoch.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (ProducerId, ProducerEpoch)> + '_ {
        self.listed.iter().map(|(p, e)| (*p, *e))
    }

    /// The lowest epoch an id that is not listed may be issued (E2).
    pub fn unlisted_next(&self) -> i32 {
        self.unlisted_next
    }

    /// The checkpoint values: `[unlisted_next, id_0, epoch_0, id_1, epoch_1, ...]`, ids
    /// ascending.
    pub fn to_values(&self) -> Vec<u64> {
        debug_assert_eq!(self.validate(), Ok(()));
        let mut values = Vec::with_capacity(1 + 2 * self.listed.len());
        values.push(u64::try_from(self.unlisted_next).unwrap_or(0));
        for (pid, epoch) in &self.listed {
            values.push(u64::try_from(pid.0).unwrap_or(0));
            values.push(u64::try_from(*epoch).unwrap_or(0));
        }
        values
    }

    /// Decodes checkpoint values (never panics). The error names the first bad value by its
    /// index. A table listing more than `kept` ids (written with a larger bound) is shrunk.
    pub fn from_values(values: &[u64], kept: usize) -> Result<IssuedEpochs, String> {
        let (&first, pairs) = values
            .split_first()
            .ok_or_else(|| "no values (expected unlisted_next first)".to_string())?;
        let mut table = IssuedEpochs::new(kept);
        table.unlisted_next = i32::try_from(first)
            .ok()
            .filter(|n| (FIRST_REINIT_EPOCH..=i32::from(i16::MAX) + 1).contains(n))
            .ok_or_else(|| format!("value 0: unlisted_next {first} outside 1..=32768"))?;
        if pairs.len() % 2 != 0 {
            return Err(format!(
                "{} values: expected unlisted_next and (id, epoch) pairs",
                values.len()
            ));
        }
        let mut previous: Option<i64> = None;
        for (i, pair) in pairs.chunks_exact(2).enumerate() {
            let (raw_pid, raw_epoch) = match pair {
                [p, e] => (*p, *e),
                _ => continue,
            };
            let at = 1 + 2 * i;
            let pid = i64::try_from(raw_pid)
                .map_err(|_| format!("value {at}: producer id {raw_pid} above i64::MAX"))?;
            if previous.is_some_and(|p| p >= pid) {
                return Err(format!("value {at}: producer id {pid} not ascending"));
            }
            previous = Some(pid);
            let epoch = ProducerEpoch::try_from(raw_epoch)
                .ok()
                .filter(|e| *e >= 1)
                .ok_or_else(|| format!("value {}: epoch {raw_epoch} outside 1..=32767", at + 1))?;
            table.listed.insert(ProducerId(pid), epoch);
        }
        table.shrink_to_kept(None);
        table.validate().map_err(str::to_string)?;
        Ok(table)
    }

    /// Invariants E1 and E2.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.listed.len() > self.kept {
            return Err("E1: more ids listed than kept");
        }
        if self.listed.keys().any(|p| !p.is_some()) {
            return Err("E1: negative producer id listed");
        }
        if self.listed.values().any(|e| *e < 1) {
            return Err("E1: listed epoch below 1");
        }
        if !(FIRST_REINIT_EPOCH..=i32::from(i16::MAX) + 1).contains(&self.unlisted_next) {
            return Err("E2: unlisted_next outside 1..=32768");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ProducerId = ProducerId(4);

    #[test]
    fn next_epoch_is_above_issued_and_seen() {
        let t = IssuedEpochs::new(8);
        assert_eq!(t.next_epoch(P, None), Some(1));
        assert_eq!(t.next_epoch(P, Some(0)), Some(1));
        assert_eq!(t.next_epoch(P, Some(6)), Some(7));
        let t = t.with_issued(P, 1);
        assert_eq!(t.issued(P), Some(1));
        assert_eq!(t.next_epoch(P, Some(0)), Some(2));
        assert_eq!(t.next_epoch(P, Some(i16::MAX - 1)), Some(i16::MAX));
        assert_eq!(t.next_epoch(P, Some(i16::MAX)), None);
        let t = t.with_issued(P, i16::MAX);
        assert_eq!(t.next_epoch(P, None), None);
    }

    #[test]
    fn dropping_an_entry_raises_the_unlisted_floor() {
        let mut t = IssuedEpochs::new(2);
        t = t.with_issued(ProducerId(1), 5);
        t = t.with_issued(ProducerId(2), 3);
        t = t.with_issued(ProducerId(3), 1);
        // Id 3 is protected; id 2 (epoch 3) is the lowest other entry.
        assert_eq!(t.issued(ProducerId(2)), None);
        assert_eq!(t.unlisted_next(), 4);
        assert_eq!(t.next_epoch(ProducerId(2), None), Some(4));
        assert_eq!(t.next_epoch(ProducerId(9), None), Some(4));
        assert_eq!(t.next_epoch(ProducerId(1), None), Some(6));
        t.validate().unwrap();
    }

    #[test]
    fn values_round_trip_and_bad_values_are_errors() {
        let t = IssuedEpochs::new(8)
            .with_issued(ProducerId(9), 2)
            .with_issued(ProducerId(0), 7);
        let v = t.to_values();
        assert_eq!(v, vec![1, 0, 7, 9, 2]);
        assert_eq!(IssuedEpochs::from_values(&v, 8), Ok(t));
        for bad in [
            vec![],
            vec![0],
            vec![40_000],
            vec![1, 3],
            vec![1, 3, 0],
            vec![1, 3, 40_000],
            vec![1, 9, 2, 9, 3],
            vec![1, 9, 2, 4, 3],
            vec![1, u64::MAX, 2],
        ] {
            assert!(IssuedEpochs::from_values(&bad, 8).is_err(), "{bad:?}");
        }
        // A table written with a larger bound is shrunk on load, raising the floor.
        let small = IssuedEpochs::from_values(&v, 1).unwrap();
        assert_eq!(
            small.entries().collect::<Vec<_>>(),
            vec![(ProducerId(0), 7)]
        );
        assert_eq!(small.unlisted_next(), 3);
    }
}
