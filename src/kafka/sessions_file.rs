//! The durable part of the wire's transaction sessions (`txn_api`): per transactional id, the
//! client identity handed at its latest InitProducerId, so a restarted server can serve that
//! client again instead of answering INVALID_PRODUCER_ID_MAPPING (docs/kafka-wire.md,
//! "Durable sessions"; byte table in docs/format.md, "Transaction sessions").
//!
//! ```text
//! Format: { magic "OLKS" | version u8 | reserved u8 | reserved u16 | count u32 | crc u32 |
//!           entries }
//! entry:  { tid_len u16 | tid utf-8 | kind u8 | producer_id i64 | producer_epoch i16 }
//! ```
//!
//! Little-endian; the CRC-32 (IEEE) covers every byte but its own field. `kind` 0 is
//! *pending*: an InitProducerId of the id began and its answer may never have been delivered
//! (it is written before the coordinator is asked, so a crash between the coordinator's new
//! epoch and the identity's record leaves no stale identity behind); 1 is *handed*: the
//! identity in the entry was answered. Only a handed identity gets a session back.
//!
//! Invariant: an entry is handed only if the coordinator issued exactly that identity at the
//! id's latest InitProducerId (the writer records pending first, asks the coordinator, then
//! records the answer, each write durable before the next step).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{write_atomic, OpenMode, Storage};
use crate::types::{ProducerEpoch, ProducerId};

/// The file's name in the broker's directory.
pub const SESSIONS_FILE: &str = "kafka-txn-sessions";
/// The magic bytes the file starts with.
pub const MAGIC: [u8; 4] = *b"OLKS";
/// The format version written and read.
pub const VERSION: u8 = 1;
const HEADER_SIZE: usize = 16;
const CRC_OFFSET: usize = 12;

/// What the file says of one transactional id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    /// An InitProducerId began; its answer may not have been delivered.
    Pending,
    /// The identity answered at the latest InitProducerId.
    Identity(ProducerId, ProducerEpoch),
}

/// Every transactional id's entry.
pub type Entries = BTreeMap<String, Handed>;

/// Encodes `entries` (ids longer than `u16::MAX` bytes are not accepted by the wire).
pub fn encode(entries: &Entries) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_SIZE + entries.len() * 32);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(entries.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&[0; 4]);
    for (tid, handed) in entries {
        let len = u16::try_from(tid.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(tid.as_bytes().get(..usize::from(len)).unwrap_or_default());
        let (kind, pid, epoch) = match handed {
            Handed::Pending => (0u8, -1i64, -1i16),
            Handed::Identity(p, e) => (1, p.0, *e),
        };
        out.push(kind);
        out.extend_from_slice(&pid.to_le_bytes());
        out.extend_from_slice(&epoch.to_le_bytes());
    }
    let crc = checksum(&out).to_le_bytes();
    if let Some(dst) = out.get_mut(CRC_OFFSET..HEADER_SIZE) {
        dst.copy_from_slice(&crc);
    }
    out
}

fn checksum(buf: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(buf.get(..CRC_OFFSET).unwrap_or_default());
    h.update(buf.get(HEADER_SIZE..).unwrap_or_default());
    h.finalize()
}

/// Decodes the file; never panics. `Err` names the first thing wrong.
pub fn decode(bytes: &[u8]) -> std::result::Result<Entries, &'static str> {
    let header = bytes.get(..HEADER_SIZE).ok_or("shorter than its header")?;
    if header.get(..4) != Some(&MAGIC[..]) {
        return Err("bad magic");
    }
    if header.get(4) != Some(&VERSION) {
        return Err("unknown version");
    }
    if header.get(5..8) != Some(&[0, 0, 0][..]) {
        return Err("reserved bytes not zero");
    }
    let count = u32::from_le_bytes(fixed(header, 8)?);
    let crc = u32::from_le_bytes(fixed(header, CRC_OFFSET)?);
    if crc != checksum(bytes) {
        return Err("checksum mismatch");
    }
    let mut entries = Entries::new();
    let mut pos = HEADER_SIZE;
    for _ in 0..count {
        let len = usize::from(u16::from_le_bytes(fixed(bytes, pos)?));
        pos += 2;
        let tid = bytes.get(pos..pos + len).ok_or("truncated id")?;
        let tid = std::str::from_utf8(tid).map_err(|_| "an id is not UTF-8")?;
        pos += len;
        let kind = *bytes.get(pos).ok_or("truncated entry")?;
        let pid = i64::from_le_bytes(fixed(bytes, pos + 1)?);
        let epoch = i16::from_le_bytes(fixed(bytes, pos + 9)?);
        pos += 11;
        let handed = match kind {
            0 => Handed::Pending,
            1 if pid >= 0 && epoch >= 0 => Handed::Identity(ProducerId(pid), epoch),
            1 => return Err("negative producer id or epoch"),
            _ => return Err("unknown entry kind"),
        };
        if entries.insert(tid.to_owned(), handed).is_some() {
            return Err("an id appears twice");
        }
    }
    if pos != bytes.len() {
        return Err("trailing bytes");
    }
    Ok(entries)
}

fn fixed<const N: usize>(bytes: &[u8], at: usize) -> std::result::Result<[u8; N], &'static str> {
    bytes
        .get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or("truncated")
}

/// Reads the file in `dir`: empty when there is none. A damaged file is reported and read as
/// empty: no session comes back, and every client initialises again, as without the file.
pub fn load(storage: &dyn Storage, dir: &Path) -> Result<Entries> {
    let path = dir.join(SESSIONS_FILE);
    if !storage.exists(&path) {
        return Ok(Entries::new());
    }
    let bytes = storage
        .open(&path, OpenMode::Read)
        .and_then(|f| f.read_all())
        .map_err(|e| Error::io("read transaction sessions", &path, e))?;
    Ok(decode(&bytes).unwrap_or_else(|why| {
        tracing::warn!(
            "oncelog serve: {} is damaged ({why}); transactional producers must initialise again",
            path.display()
        );
        Entries::new()
    }))
}

/// Replaces the file in `dir` with `entries`, durably (atomic replace).
pub fn store(storage: &dyn Storage, dir: &Path, entries: &Entries) -> Result<()> {
    let path = dir.join(SESSIONS_FILE);
    write_atomic(storage, &path, &encode(entries))
        .map_err(|e| Error::io("write transaction sessions", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Entries {
        let mut e = Entries::new();
        e.insert("a".into(), Handed::Identity(ProducerId(7), 3));
        e.insert("pending".into(), Handed::Pending);
        e.insert("ünï".into(), Handed::Identity(ProducerId(0), 0));
        e
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes), Ok(sample()));
        assert_eq!(decode(&encode(&Entries::new())), Ok(Entries::new()));
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&bad), Err("checksum mismatch"));
        let mut bad = bytes.clone();
        bad[4] = 2;
        assert_eq!(decode(&bad), Err("unknown version"));
        assert_eq!(decode(&bytes[..10]), Err("shorter than its header"));
    }

    #[test]
    fn load_reads_a_damaged_file_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let storage = crate::io::fs::RealStorage;
        assert_eq!(load(&storage, dir.path()).unwrap(), Entries::new());
        store(&storage, dir.path(), &sample()).unwrap();
        assert_eq!(load(&storage, dir.path()).unwrap(), sample());
        std::fs::write(dir.path().join(SESSIONS_FILE), b"OLKS garbage").unwrap();
        assert_eq!(load(&storage, dir.path()).unwrap(), Entries::new());
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            // Resealed, so the decoder gets past the checksum.
            let mut b = bytes;
            if b.len() >= HEADER_SIZE {
                b[..4].copy_from_slice(&MAGIC);
                b[4] = VERSION;
                b[5..8].fill(0);
                let crc = checksum(&b).to_le_bytes();
                b[CRC_OFFSET..HEADER_SIZE].copy_from_slice(&crc);
                if let Ok(e) = decode(&b) {
                    prop_assert_eq!(decode(&encode(&e)), Ok(e));
                }
            }
        }
    }
}
