//! The one list of the files oncelog writes in a log directory, and what each is. `open` uses it
//! to refuse a directory none of whose files is a log's (a wrong `--data` path, a home
//! directory), `dump` to describe files, and `demo` to decide what it may delete.

use crate::format::file_name::{parse_file_name, FileKind};
use crate::io::fs::LOCK_FILE;
use crate::log::checkpoints::{CLEAN_SHUTDOWN_FILE, LOG_START_FILE, RECOVERY_POINT_FILE};
use crate::log::producers::{PRODUCER_EPOCHS_FILE, PRODUCER_IDS_FILE};
use crate::log::spare::SPARE_FILE;
use crate::replica::{BOOT_ID_FILE, EPOCH_CHECKPOINT_FILE, HW_CHECKPOINT_FILE};

/// What the file `name` of a log directory is, if oncelog writes files under that name; `None`
/// for a file oncelog never writes.
pub fn describe_file(name: &str) -> Option<&'static str> {
    if let Some((_, kind)) = parse_file_name(name) {
        return Some(match kind {
            FileKind::Log => "segment",
            FileKind::Index => "offset index",
            FileKind::TimeIndex => "time index",
            FileKind::Snapshot => "producer snapshot",
            FileKind::TxnIndex => "transaction index",
        });
    }
    Some(match name {
        RECOVERY_POINT_FILE => "recovery-point checkpoint",
        LOG_START_FILE => "log-start-offset checkpoint",
        CLEAN_SHUTDOWN_FILE => "clean-shutdown marker",
        PRODUCER_IDS_FILE => "producer-id checkpoint",
        PRODUCER_EPOCHS_FILE => "issued producer epochs checkpoint",
        LOCK_FILE => "directory lock",
        EPOCH_CHECKPOINT_FILE => "leader-epoch checkpoint (replica)",
        HW_CHECKPOINT_FILE => "high-water mark checkpoint (replica)",
        BOOT_ID_FILE => "boot id of the last open (replica)",
        SPARE_FILE => "next segment prepared ahead (removed by recovery)",
        n if n.ends_with(".tmp") => "temp file (removed by recovery)",
        _ => return None,
    })
}

/// Whether `name` shows that its directory holds a log: a segment, index, snapshot or
/// checkpoint. Not the directory lock (open creates it before it looks) and not a temp file
/// (any program may leave `*.tmp` files).
pub fn marks_a_log(name: &str) -> bool {
    name != LOCK_FILE && !name.ends_with(".tmp") && describe_file(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::file_name::file_name;
    use crate::types::Offset;

    #[test]
    fn every_kind_of_file_is_described_and_others_are_not() {
        for kind in FileKind::ALL {
            assert!(describe_file(&file_name(Offset(7), kind)).is_some());
        }
        for name in [RECOVERY_POINT_FILE, LOG_START_FILE, PRODUCER_IDS_FILE] {
            assert!(marks_a_log(name), "{name}");
        }
        for name in [LOCK_FILE, SPARE_FILE, "x.tmp"] {
            assert!(
                describe_file(name).is_some() && !marks_a_log(name),
                "{name}"
            );
        }
        for name in [
            "notes.txt",
            ".bashrc",
            "7.log",
            "00000000000000000007.log.bak",
        ] {
            assert_eq!(describe_file(name), None, "{name}");
        }
    }
}
