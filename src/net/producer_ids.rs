//! Cluster-wide producer ids, allocated by the controller so that two leaders (or one leader
//! before and after a failover) never hand out the same id.
//!
//! Persisted as the `producer-ids` checkpoint (OLCP kind `ProducerIds`, the layout a log uses
//! for its own counter, `docs/format.md`) in the controller's directory: the end of the reserved
//! block, written atomically and durably (`io::write_atomic`) **before** the first id of a block
//! is handed out.
//!
//! Invariants: `next <= reserved_to`; every id ever returned is below the persisted
//! `reserved_to`; a restart resumes at the persisted `reserved_to`, so no id is returned twice
//! across restarts and crashes (at most one block is skipped). The directory is locked while an
//! allocator holds it, so two controllers cannot share it.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::checkpoint::CheckpointKind;
use crate::io::{DirLock, Storage};
use crate::log::checkpoints::{read_values, write_values};
use crate::types::ProducerId;

/// The checkpoint file inside the controller's directory.
pub const PRODUCER_IDS_FILE: &str = "producer-ids";
/// Ids reserved per durable write.
pub const BLOCK: i64 = 1024;

/// See the module invariants.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    next: i64,
    reserved_to: i64,
    _lock: Box<dyn DirLock>,
}

impl ProducerIdAllocator {
    /// Creates `dir` if needed, locks it and resumes after the last reserved block.
    pub fn open(storage: Arc<dyn Storage>, dir: &Path) -> Result<Self> {
        storage
            .create_dir_all(dir)
            .map_err(|e| Error::io("create controller directory", dir, e))?;
        let lock = storage.lock_dir(dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked(dir.to_path_buf())
            } else {
                Error::io("lock controller directory", dir, e)
            }
        })?;
        let path = dir.join(PRODUCER_IDS_FILE);
        let reserved = read_values(storage.as_ref(), &path, CheckpointKind::ProducerIds)?
            .and_then(|v| v.first().copied())
            .unwrap_or(0);
        let reserved = i64::try_from(reserved).map_err(|_| Error::CorruptFile {
            path: path.clone(),
            reason: format!("reserved producer id {reserved} is above i64::MAX"),
        })?;
        Ok(ProducerIdAllocator {
            storage,
            path,
            next: reserved,
            reserved_to: reserved,
            _lock: lock,
        })
    }

    /// The next id (epoch 0 is the caller's business), reserving a new block durably first
    /// when the current one is used up.
    pub fn allocate(&mut self) -> Result<ProducerId> {
        if self.next >= self.reserved_to {
            let reserved = self
                .next
                .checked_add(BLOCK)
                .ok_or(Error::InvalidConfig("producer ids exhausted".to_string()))?;
            write_values(
                self.storage.as_ref(),
                &self.path,
                CheckpointKind::ProducerIds,
                &[reserved as u64],
            )?;
            self.reserved_to = reserved;
        }
        let id = ProducerId(self.next);
        self.next += 1;
        Ok(id)
    }

    /// The first id a restart would hand out.
    pub fn reserved_to(&self) -> i64 {
        self.reserved_to
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::fs::RealStorage;

    #[test]
    fn ids_are_never_reused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(RealStorage::new());
        let mut seen = std::collections::BTreeSet::new();
        for _life in 0..3 {
            let mut a = ProducerIdAllocator::open(Arc::clone(&storage), dir.path()).unwrap();
            for _ in 0..(BLOCK + 5) {
                assert!(seen.insert(a.allocate().unwrap()));
            }
            assert!(
                matches!(
                    ProducerIdAllocator::open(Arc::clone(&storage), dir.path()),
                    Err(Error::Locked(_))
                ),
                "a second allocator on the same directory is refused"
            );
        }
        assert_eq!(seen.len() as i64, 3 * (BLOCK + 5));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PRODUCER_IDS_FILE), b"garbage").unwrap();
        let e = ProducerIdAllocator::open(Arc::new(RealStorage::new()), dir.path()).unwrap_err();
        assert!(matches!(e, Error::CorruptFile { .. }), "{e}");
    }
}
