//! A deep, read-only inspection of a log directory: the plan `Log::open` would execute, computed
//! by the same planner, plus a walk of every byte of every segment (`oncelog verify`, `oncelog
//! stat`). It takes no lock and changes nothing, so it can look at a directory another process
//! has open; segment bytes are read, not mapped, because that process may trim a file meanwhile.
//!
//! Where open trusts a segment (its index files, the bytes after the last index entry), the
//! inspection also scans every byte: damage that open would find only on first use is reported
//! here as the corruption it is.

use std::collections::BTreeMap;
use std::path::Path;

use super::plan::{self, Plan, Scanned, SegmentSource, TrustedFacts};
use super::survey::{self, ByteAccess, DirFacts};
use crate::config::RecoveryMode;
use crate::error::{Error, Result};
use crate::io::Storage;
use crate::segment::load;
use crate::segment::scan::scan_segment;

/// Where one valid batch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStart {
    /// Byte position of the batch in its segment file.
    pub pos: u64,
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// The largest record timestamp of this batch and every earlier one in the segment.
    pub running_max_ts: i64,
}

/// What the walk of one segment found (every byte, from position 0).
#[derive(Debug, Clone)]
pub struct SegmentWalk {
    /// The segment's base offset (its file name).
    pub base: u64,
    /// Length of the segment file in bytes (preallocated zeros included).
    pub file_len: u64,
    /// Every valid batch from position 0, in file order.
    pub batches: Vec<BatchStart>,
    /// Records in those batches.
    pub records: u64,
    /// Bytes of valid batches from position 0.
    pub valid_len: u64,
    /// The offset after the last valid batch.
    pub next_offset: u64,
    /// Why the walk stopped before the end of the file, and where.
    pub stop: Option<(u64, String)>,
    /// Non-zero bytes after the stop.
    pub garbage: u64,
    /// Batches whose checksum is valid but whose records do not decode: (position, reason).
    pub record_errors: Vec<(u64, String)>,
}

/// The plan open would execute, and the walk of every segment.
#[derive(Debug)]
pub struct Inspection {
    /// The directory listing, checkpoints and marker the plan was made from.
    pub facts: DirFacts,
    /// What open would do.
    pub plan: Plan,
    /// The walks, by base offset: of every segment at [`Depth::Deep`], of the segments open
    /// scans at [`Depth::Shallow`].
    pub walks: Vec<SegmentWalk>,
}

/// How much of the segments an inspection reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every byte of every segment (`oncelog verify`): a walk of each, and trusted segments
    /// scanned whole besides open's own load.
    Deep,
    /// What open itself reads (`oncelog stat`): a clean log's sealed segments are deferred (not
    /// read), trusted ones load as open loads them; only the segments open scans are walked.
    /// Same planner and same rules; damage open would meet only on first use is not seen.
    Shallow,
}

/// Inspects `dir` as `Log::open` in `mode` would see it, every byte read
/// ([`Depth::Deep`]). A file that vanishes meanwhile (a live log's retention or snapshot
/// rotation) restarts the inspection, at most three times; every error names its file.
pub fn inspect(storage: &dyn Storage, dir: &Path, mode: RecoveryMode) -> Result<Inspection> {
    inspect_at(storage, dir, mode, Depth::Deep)
}

/// [`inspect`] at a chosen depth.
pub fn inspect_at(
    storage: &dyn Storage,
    dir: &Path,
    mode: RecoveryMode,
    depth: Depth,
) -> Result<Inspection> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match inspect_once(storage, dir, mode, depth) {
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && attempt < 3 => {}
            other => return other,
        }
    }
}

fn inspect_once(
    storage: &dyn Storage,
    dir: &Path,
    mode: RecoveryMode,
    depth: Depth,
) -> Result<Inspection> {
    let facts = survey::read_dir_facts(storage, dir)?;
    let mut source = InspectSource {
        storage,
        dir,
        index_interval: crate::config::LogConfig::default().index_interval_bytes,
        scans: BTreeMap::new(),
        depth,
        walks: BTreeMap::new(),
    };
    if depth == Depth::Deep {
        for (&base, &file_len) in facts.bases.iter().zip(&facts.log_lens) {
            let (walk, scanned) = source.walk(base, file_len)?;
            source.walks.insert(base, walk);
            source.scans.insert(base, scanned);
        }
    }
    let plan = plan::plan(&facts, &mut source, mode)?;
    let walks = source.walks.into_values().collect();
    Ok(Inspection { facts, plan, walks })
}

struct InspectSource<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    index_interval: u32,
    /// The full scan of every segment, from the walk.
    scans: BTreeMap<u64, Scanned>,
    depth: Depth,
    /// The walks made so far (every segment when deep; the scanned ones when shallow).
    walks: BTreeMap<u64, SegmentWalk>,
}

impl InspectSource<'_> {
    fn read(&self, base: u64) -> Result<Vec<u8>> {
        match survey::segment_bytes(self.storage, self.dir, base, ByteAccess::Read)? {
            survey::SegmentBytes::Owned(v) => Ok(v),
            survey::SegmentBytes::Mapped(m) => Ok(m.published_bytes().to_vec()),
        }
    }

    fn walk(&self, base: u64, file_len: u64) -> Result<(SegmentWalk, Scanned)> {
        let bytes = self.read(base)?;
        let mut batches = Vec::new();
        let mut records = 0u64;
        let mut record_errors = Vec::new();
        let mut running_max = i64::MIN;
        let out = scan_segment(&bytes, base, self.index_interval, |pos, view| {
            let h = view.header();
            running_max = running_max.max(h.max_timestamp);
            batches.push(BatchStart {
                pos: pos as u64,
                base_offset: h.base_offset,
                running_max_ts: running_max,
            });
            records += u64::from(h.record_count.max(0) as u32);
            if let Err(e) = view.verify_records() {
                record_errors.push((pos as u64, e.to_string()));
            }
        });
        let scanned = plan::scanned(base, out, &bytes);
        let o = &scanned.outcome;
        let walk = SegmentWalk {
            base,
            file_len: file_len.max(bytes.len() as u64),
            batches,
            records,
            valid_len: o.valid_len as u64,
            next_offset: o.next_offset,
            stop: o.stop.as_ref().map(|(p, r)| (*p as u64, r.to_string())),
            garbage: scanned.garbage,
            record_errors,
        };
        Ok((walk, scanned))
    }
}

impl SegmentSource for InspectSource<'_> {
    fn trusted(&mut self, base: u64, next_base: Option<u64>) -> Result<TrustedFacts> {
        let bytes = self.read(base)?;
        // Open's view (index files, tail walk) says whether it would rebuild the index (R3);
        // the full scan says whether any byte is damaged (R4), wherever it is.
        let shallow = load::load_trusted(
            self.storage,
            self.dir,
            base,
            &bytes,
            next_base,
            self.index_interval,
        );
        let load = match self.depth {
            Depth::Shallow => shallow,
            Depth::Deep => match (
                shallow,
                load::rebuild(&bytes, base, next_base, self.index_interval),
            ) {
                (_, Err(d)) => Err(d),
                (Err(d), _) => Err(d),
                (Ok(t), Ok(_)) => Ok(t),
            },
        };
        Ok(TrustedFacts::of(load, &bytes))
    }

    fn scan(&mut self, base: u64) -> Result<Scanned> {
        match self.scans.remove(&base) {
            Some(s) => Ok(s),
            None => {
                // The walk reads the file and takes its length from the bytes.
                let (walk, scanned) = self.walk(base, 0)?;
                self.walks.insert(base, walk);
                Ok(scanned)
            }
        }
    }

    fn defers(&self) -> bool {
        self.depth == Depth::Shallow
    }
}
