//! The bytes of a controller's partition record when it is stored outside the process (the
//! `partition` key of the controller on etcd; `docs/format.md`, "Controller record").
//!
//! Version 1, little-endian, the codec of the wire format:
//! `version u8 = 1 | leader Option<u32> | leader_epoch i32 | partition_epoch i32 |
//! replicas list of (id u32 | incarnation u64 | flags u8)`, flags bit 0 in the ISR, bit 1
//! alive, bit 2 needs catch-up, other bits zero.
//!
//! Invariants: `decode(encode(c)) == c` for every [`InProcessController`]; decoding never
//! panics, and accepts only canonical bytes of a controller that keeps the module invariants
//! of `replication::controller` (anything else is a `DecodeError`).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use super::codec::{Reader, Writer};
use crate::format::DecodeError;
use crate::replication::controller::{ControllerSnapshot, ReplicaSnapshot};
use crate::replication::{InProcessController, ReplicaId};

/// The version this code writes (and the only one it reads).
pub const RECORD_VERSION: u8 = 1;

const IN_ISR: u8 = 1;
const ALIVE: u8 = 2;
const NEEDS_CATCH_UP: u8 = 4;

/// The stored bytes of `c`.
pub fn encode(c: &InProcessController) -> Vec<u8> {
    let s = c.snapshot();
    let mut w = Writer::default();
    w.u8(RECORD_VERSION);
    w.option(s.leader, |w, l| w.u32(l.0));
    w.i32(s.leader_epoch);
    w.i32(s.partition_epoch);
    w.list(&s.replicas, |w, r| {
        w.u32(r.replica.0);
        w.u64(r.incarnation);
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        w.u8(flag(r.in_isr, IN_ISR)
            | flag(r.alive, ALIVE)
            | flag(r.needs_catch_up, NEEDS_CATCH_UP));
    });
    w.buf
}

/// The controller stored as `bytes`.
pub fn decode(bytes: &[u8]) -> Result<InProcessController, DecodeError> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != RECORD_VERSION {
        return Err(DecodeError::BadMagic { magic: version });
    }
    let leader = r.option("controller record leader", |r| r.u32().map(ReplicaId))?;
    let leader_epoch = r.i32()?;
    let partition_epoch = r.i32()?;
    let replicas = r.list(|r| {
        let replica = ReplicaId(r.u32()?);
        let incarnation = r.u64()?;
        let flags = r.u8()?;
        if flags & !(IN_ISR | ALIVE | NEEDS_CATCH_UP) != 0 {
            return Err(DecodeError::BadField {
                field: "controller record replica flags",
                value: i64::from(flags),
            });
        }
        Ok(ReplicaSnapshot {
            replica,
            incarnation,
            in_isr: flags & IN_ISR != 0,
            alive: flags & ALIVE != 0,
            needs_catch_up: flags & NEEDS_CATCH_UP != 0,
        })
    })?;
    r.finish()?;
    let snapshot = ControllerSnapshot {
        leader,
        leader_epoch,
        partition_epoch,
        replicas,
    };
    let c = InProcessController::from_snapshot(&snapshot).map_err(|_| DecodeError::BadField {
        field: "controller record (breaks a controller invariant)",
        value: i64::from(partition_epoch),
    })?;
    // Canonical: replicas sorted, so the same controller has one encoding.
    if c.snapshot() != snapshot {
        return Err(DecodeError::BadField {
            field: "controller record replica order",
            value: 0,
        });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::{Controller, LogRecovery};

    #[test]
    fn round_trips_and_rejects_damage_without_panicking() {
        let mut c = InProcessController::new(&[ReplicaId(3), ReplicaId(1), ReplicaId(2)]);
        c.replica_failed(ReplicaId(1));
        c.replica_restarted(ReplicaId(1), 7, LogRecovery::EmptyOrDamaged);
        let bytes = encode(&c);
        assert_eq!(bytes.len(), 1 + 5 + 4 + 4 + 4 + 3 * 13);
        assert_eq!(decode(&bytes).unwrap(), c);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(matches!(
            decode(&v2),
            Err(DecodeError::BadMagic { magic: 2 })
        ));
        // Every single-bit change and random bytes: decoded into a valid controller that
        // re-encodes to the same bytes, or refused (the stable fuzz body).
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                crate::fuzzing::decode_controller_record(&b);
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2_000 {
            let mut b = bytes.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x % b.len() as u64) as usize;
                b[at] = (x >> 32) as u8;
            }
            b.truncate(((x >> 40) as usize % (bytes.len() + 4)).max(1));
            crate::fuzzing::decode_controller_record(&b);
        }
    }

    #[test]
    fn a_record_breaking_an_invariant_is_refused() {
        let c = InProcessController::new(&[ReplicaId(1), ReplicaId(2)]);
        let mut s = c.snapshot();
        s.replicas[0].alive = false; // the leader, r1, dead
        let mut w = Writer::default();
        w.u8(RECORD_VERSION);
        w.option(s.leader, |w, l| w.u32(l.0));
        w.i32(0);
        w.i32(0);
        w.list(&s.replicas, |w, r| {
            w.u32(r.replica.0);
            w.u64(0);
            w.u8(if r.alive { IN_ISR | ALIVE } else { IN_ISR });
        });
        assert!(decode(&w.buf).is_err());
    }
}
