//! The recovery plan: from what is on disk (the listing, the checkpoints, the marker and what the
//! segments' bytes say) to what open does, row by row (docs/recovery.md). Deciding reads and
//! never writes; `Log::open` executes a plan only once the whole of it is known, and
//! `oncelog verify` and `oncelog stat` print the same plan, so the three reach one verdict.
//!
//! The planner is pure given its inputs: [`DirFacts`] and a [`SegmentSource`] that answers for
//! each segment either "the bytes as a trusted load sees them" or "the bytes as a scan sees
//! them". Open's source maps files and uses their index files; `inspect`'s source reads and scans
//! every byte, and a test's source is a table of byte vectors.

use std::fmt;
use std::path::PathBuf;

use super::survey::{chain_checksum, DirFacts, Found};
use crate::config::RecoveryMode;
use crate::error::{Error, Result};
use crate::format::file_name::{file_name, FileKind};
use crate::format::DecodeError;
use crate::segment::index::IndexEntries;
use crate::segment::load::{self, tail_of, Trusted};
use crate::segment::scan::ScanOutcome;
use crate::segment::{segment_path, SegmentTail};
use crate::types::Offset;

/// A row of the decision table (docs/recovery.md), named in every step and cut a plan reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// Clean-shutdown marker valid and matching the files: no scan.
    R1,
    /// Segment entirely below the recovery point: trusted, indexes and tail loaded.
    R2,
    /// Trusted segment with a missing, damaged or foreign index: rebuilt by a scan.
    R3,
    /// Damage in trusted (synced) data: corruption.
    R4,
    /// Segment at or past the recovery point: scanned from position 0.
    R5,
    /// Scan stops below the recovery point: corruption.
    R6,
    /// A segment whose batches reach the next segment's base: a crash between roll and seal, not damage.
    R7,
    /// Scan stops at or past the recovery point: torn tail, truncated there.
    R8,
    /// Recovery point beyond the recovered end, or a break in the segment chain below it: corruption.
    R9,
    /// Segments entirely below the log start checkpoint: deleted (a crash during retention).
    R10,
    /// No segments: an empty one is created at the log start.
    R11,
    /// Temporary files and index files without a `.log`: deleted.
    R12,
    /// No valid recovery point beside segments, and no clean-shutdown marker: refused.
    R13,
    /// Row R14, salvage mode: damage or missing checkpoints in synced data, cut on the operator's word.
    Salvage,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Salvage => f.write_str("salvage"),
            r => write!(f, "{r:?}"),
        }
    }
}

/// Bytes open removes from a segment file that held data (never preallocated zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The segment file cut (or deleted).
    pub file: PathBuf,
    /// Byte position in the file where the cut begins (0 for a deleted file).
    pub position: u64,
    /// Offsets removed: `[from, to)`; empty when only non-batch bytes go (row R7's junk after
    /// the last batch).
    pub offsets: (u64, u64),
    /// Non-zero bytes removed (a deleted file counts its whole length).
    pub bytes: u64,
    /// The row that decided the cut.
    pub rule: Rule,
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = self.offsets;
        let offsets = if b == u64::MAX {
            format!("offsets from {a}")
        } else if b > a {
            format!("offsets {a}..{b}")
        } else {
            "no offsets".to_string()
        };
        write!(
            f,
            "{} at byte {}: {} bytes, {offsets} ({})",
            self.file.display(),
            self.position,
            self.bytes,
            self.rule
        )
    }
}

/// How the planner looked at a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Examined {
    /// Row R1: not read at all; its index loads on first use.
    Deferred,
    /// Rows R2-R4: every byte synced; loaded from its index files or rebuilt by a scan.
    Trusted,
    /// Row R5: scanned batch by batch.
    Scanned,
    /// Not read: an earlier segment ended the log (R8) or held damage.
    NotRead,
}

/// What open does with one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Kept as it is.
    Keep,
    /// Kept; open writes its index files (R3: rebuilt; R5/R7: scanned) and trims the file to
    /// its batches if it is longer.
    Reseal,
    /// The last segment: cut to its batches and re-reserved for appends.
    Active,
    /// Cut at a torn tail: kept up to `valid_len`.
    CutAt {
        /// Bytes of valid batches kept from position 0.
        valid_len: u64,
    },
    /// Deleted.
    Delete,
    /// Damage: the verdict.
    Damaged,
}

/// One segment in the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentStep {
    /// The segment's base offset.
    pub base: u64,
    /// Length of the segment file in bytes.
    pub file_len: u64,
    /// How much of the file the planner read.
    pub examined: Examined,
    /// What open does with the file.
    pub fate: Fate,
    /// The row that decided the fate.
    pub rule: Rule,
    /// The offset after its last valid batch (the next segment's base when deferred; the base
    /// when not read).
    pub next_offset: u64,
}

/// What open will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Open read-write after the steps.
    Open,
    /// Damage in synced data: `FailOnCorruption` refuses, `ReadOnlyOnCorruption` serves the
    /// prefix before it.
    Corrupt(String),
    /// The recovery point is missing or damaged beside segments: nothing says which bytes were
    /// synced, so no cut can be told from damage. Open refuses in every mode but `Salvage`.
    RecoveryPointLost(String),
}

/// A whole plan. `Display` prints it (verify, stat).
#[derive(Debug)]
pub struct Plan {
    /// The recovery mode the plan was made for.
    pub mode: RecoveryMode,
    /// A valid clean-shutdown marker matched the files (row R1).
    pub clean: bool,
    /// The recovery point the plan trusts (0 when lost and salvaging).
    pub recovery_point: u64,
    /// Whether the recovery-point checkpoint had a valid slot.
    pub recovery_point_found: bool,
    /// The log-start-offset checkpoint's value, if valid.
    pub log_start: Option<u64>,
    /// The log-start checkpoint's witness of the transactions open at the first segment's base
    /// (`DirFacts::first_open`).
    pub first_open: Option<crate::log::log_start::FirstOpen>,
    /// Every segment file, ascending by base offset.
    pub segments: Vec<SegmentStep>,
    /// Files removed before anything else (row R12).
    pub remove: Vec<(String, Rule)>,
    /// Row R11: the first segment created at this offset.
    pub create_first: Option<u64>,
    /// Every cut open makes to a segment file that held data.
    pub cuts: Vec<Cut>,
    /// Whether open proceeds, and why not.
    pub verdict: Verdict,
    /// The error `FailOnCorruption` returns for the verdict.
    pub(super) error: Option<Error>,
    /// What the planner loaded, for open to build segments from (not in the public view).
    pub(super) loaded: Vec<Loaded>,
    pub(super) indexes_rebuilt: usize,
    pub(super) indexes_deferred: usize,
    pub(super) segments_scanned: usize,
    pub(super) bytes_scanned: u64,
    pub(super) truncated_at: Option<u64>,
    pub(super) bytes_truncated: u64,
    /// A second refusal after the first (the verdict names only the first).
    refused_again: bool,
}

impl Plan {
    /// Records a refusal decided by `rule`: the first one found decides both the verdict and
    /// the error open returns (later damage, past the first, is not what open reports). The
    /// verdict's text is the error's own, with the row and `why` after it, so open, verify
    /// and stat word one verdict one way.
    fn refuse(&mut self, e: Error, rule: Rule, why: &str) {
        if self.error.is_some() {
            self.refused_again = true;
            return;
        }
        let sep = if why.is_empty() { "" } else { ": " };
        let text = format!("{e} (row {rule}{sep}{why})");
        self.verdict = match e {
            Error::RecoveryPointLost { .. } => Verdict::RecoveryPointLost(text),
            _ => Verdict::Corrupt(text),
        };
        self.error = Some(e);
    }

    /// The recovered log end: the offset after the last kept batch, or the log start when
    /// the plan creates the first segment (R11); `None` when there is nothing to open.
    pub fn log_end(&self) -> Option<u64> {
        self.create_first
            .or_else(|| self.loaded.last().map(|l| l.tail.next_offset))
    }

    /// Whether opening in `mode` succeeds read-write.
    pub fn opens_writable(&self) -> bool {
        self.verdict == Verdict::Open
    }

    /// The mode whose open makes [`Plan::cuts`]: the plan's own when it opens read-write;
    /// `Salvage` when the only refusal is a lost recovery point (R13: the planner goes on as a
    /// salvage would, to show what it would cut); `None` when open refuses (or opens
    /// read-only) and nothing makes these cuts.
    pub fn cuts_made_in(&self) -> Option<RecoveryMode> {
        match self.verdict {
            Verdict::Open => Some(self.mode),
            Verdict::RecoveryPointLost(_) if !self.refused_again => Some(RecoveryMode::Salvage),
            _ => None,
        }
    }
}

/// One segment as recovery sees it before it is opened for use.
#[derive(Debug, Clone)]
pub(super) struct Loaded {
    pub base: u64,
    /// For a deferred index only `next_offset` is known (the next segment's base); the other
    /// fields are placeholders that nothing reads (`Segment::open_deferred` does not take them).
    pub tail: SegmentTail,
    pub index: LoadedIndex,
}

#[derive(Debug, Clone)]
pub(super) enum LoadedIndex {
    /// Loaded (or rebuilt) at open.
    Now {
        valid_len: u64,
        entries: IndexEntries,
        /// The file's bytes past `valid_len` must go, or index files must be (re)written.
        needs_reseal: bool,
    },
    /// A sealed segment of a cleanly closed log: index, length and tail are loaded on first use.
    Deferred,
}

impl Loaded {
    fn now(base: u64, t: Trusted, needs_reseal: bool) -> Loaded {
        Loaded {
            base,
            tail: t.tail,
            index: LoadedIndex::Now {
                valid_len: t.valid_len,
                entries: t.entries,
                needs_reseal,
            },
        }
    }
}

/// A scan of a segment's bytes, with the tail facts recovery needs.
#[derive(Debug)]
pub struct Scanned {
    /// Where and why the scan stopped.
    pub outcome: ScanOutcome,
    /// The segment's tail: the offset, position and timestamps after its last valid batch.
    pub tail: SegmentTail,
    /// Non-zero bytes after the stop (`garbage_len`).
    pub garbage: u64,
}

/// Where the planner's segment facts come from.
pub trait SegmentSource {
    /// Rows R2-R4: the segment at `base` with every byte synced; `next_base` is the next
    /// segment's base (row R7).
    fn trusted(&mut self, base: u64, next_base: Option<u64>) -> Result<TrustedFacts>;
    /// Row R5: a scan from position 0.
    fn scan(&mut self, base: u64) -> Result<Scanned>;
    /// Whether clean sealed segments are deferred (open) or loaded like trusted ones (a deep
    /// inspection).
    fn defers(&self) -> bool;
}

/// A trusted load: the segment, or damage with the prefix before it.
pub type TrustedLoad = std::result::Result<Trusted, load::Damaged>;

/// A trusted load and the non-zero bytes after its last batch (row R7's junk, cut when the
/// segment is trimmed).
#[derive(Debug)]
pub struct TrustedFacts {
    /// The segment as loaded, or the damage found and the prefix before it.
    pub load: TrustedLoad,
    /// Non-zero bytes after the last valid batch.
    pub garbage: u64,
}

impl TrustedFacts {
    /// The facts of `load` over `bytes`.
    pub fn of(load: TrustedLoad, bytes: &[u8]) -> TrustedFacts {
        let garbage = match &load {
            Ok(t) => t
                .stop
                .as_ref()
                .map_or(0, |(pos, _)| garbage_len(bytes.get(*pos..).unwrap_or(&[]))),
            Err(_) => 0,
        };
        TrustedFacts { load, garbage }
    }
}

/// The clean-shutdown marker's layout: log end, active base, active length, segment count and
/// the chain checksum of every base offset (format.md).
pub const MARKER_VALUES: usize = 5;

/// The marker values close writes for these segments.
pub fn marker_values(log_end: u64, bases: &[u64], active_len: u64) -> [u64; MARKER_VALUES] {
    let active = bases.last().copied().unwrap_or(0);
    [
        log_end,
        active,
        active_len,
        bases.len() as u64,
        chain_checksum(bases),
    ]
}

/// Row R1: the marker describes the files exactly as they are.
fn marker_matches(facts: &DirFacts) -> bool {
    let (Some(v), Some(&len)) = (facts.marker.valid(), facts.log_lens.last()) else {
        return false;
    };
    v.len() == MARKER_VALUES && marker_values(v[0], &facts.bases, len).as_slice() == v.as_slice()
}

fn corrupt(facts: &DirFacts, base: u64, position: u64, reason: DecodeError) -> Error {
    Error::Corrupt {
        path: segment_path(&facts.dir, base, FileKind::Log),
        position,
        reason,
    }
}

/// Computes the plan. Reads segments through `source`; changes nothing.
pub fn plan(facts: &DirFacts, source: &mut dyn SegmentSource, mode: RecoveryMode) -> Result<Plan> {
    // A directory that holds files and none of a log's is not a log: a wrong path. Opening it
    // would write segments and checkpoints among someone else's files.
    if let (false, Some(file)) = (facts.holds_a_log, facts.foreign.first()) {
        return Err(Error::ForeignDirectory {
            dir: facts.dir.clone(),
            file: file.clone(),
        });
    }
    let clean = marker_matches(facts);
    let salvage_mode = mode == RecoveryMode::Salvage;
    let mut p = Plan {
        mode,
        clean,
        recovery_point: 0,
        recovery_point_found: facts.recovery_point.valid().is_some(),
        log_start: facts.log_start.valid().copied(),
        first_open: facts.first_open.clone(),
        segments: Vec::new(),
        remove: Vec::new(),
        create_first: None,
        cuts: Vec::new(),
        verdict: Verdict::Open,
        error: None,
        loaded: Vec::new(),
        indexes_rebuilt: 0,
        indexes_deferred: 0,
        segments_scanned: 0,
        bytes_scanned: 0,
        truncated_at: None,
        bytes_truncated: 0,
        refused_again: false,
    };
    for t in &facts.temps {
        p.remove.push((t.clone(), Rule::R12));
    }
    for o in &facts.orphan_indexes {
        p.remove.push((o.clone(), Rule::R12));
    }
    let rp_path = facts.dir.join(crate::log::checkpoints::RECOVERY_POINT_FILE);
    // The recovery point decides what may be cut. Without one beside segments nothing does:
    // open refuses unless told to salvage, and the plan shows what salvage would cut.
    let mut salvage = salvage_mode;
    p.recovery_point = match &facts.recovery_point {
        Found::Valid(v) => *v,
        Found::Missing | Found::Damaged(_) if !clean && !facts.bases.is_empty() => {
            let why = match &facts.recovery_point {
                Found::Damaged(r) => format!("no valid slot ({r})"),
                _ => "the file is missing".to_string(),
            };
            if !salvage {
                p.refuse(
                    Error::RecoveryPointLost {
                        path: rp_path.clone(),
                        reason: why,
                    },
                    Rule::R13,
                    &format!("beside {} segment file(s)", facts.bases.len()),
                );
            }
            salvage = true;
            0
        }
        _ => 0,
    };
    // Checkpoints written by atomic replace cannot be torn: damage in one is corruption (R4).
    let damaged_ckpts = [
        (
            &facts.log_start.damage(),
            crate::log::checkpoints::LOG_START_FILE,
        ),
        (
            &facts.producer_ids.damage(),
            crate::log::producers::PRODUCER_IDS_FILE,
        ),
        (
            &facts.producer_epochs.damage(),
            crate::log::producers::PRODUCER_EPOCHS_FILE,
        ),
    ];
    for (damage, name) in damaged_ckpts {
        if let Some(reason) = damage {
            let e = Error::CorruptFile {
                path: facts.dir.join(name),
                reason: reason.clone(),
            };
            p.refuse(
                e,
                Rule::R4,
                "written by atomic replace, so damage, never a torn write",
            );
        }
    }
    let recovery_point = p.recovery_point;
    // Without a recovery point every cut is a salvage cut: a torn tail cannot be told from
    // damage.
    let torn = if salvage && !p.recovery_point_found {
        Rule::Salvage
    } else {
        Rule::R8
    };
    let start_ckpt = p.log_start.unwrap_or(0);

    // Row R10 first: a segment whose successor starts at or below the log start holds only
    // deleted records; it is never loaded, so neither damage in it nor a gap after it can fail
    // the open (one retention pass's unlinks may survive a crash in any subset).
    let below_start = facts
        .bases
        .windows(2)
        .take_while(|w| w[1] <= start_ckpt)
        .count();
    for i in 0..below_start {
        p.segments.push(SegmentStep {
            base: facts.bases[i],
            file_len: facts.log_lens[i],
            examined: Examined::NotRead,
            fate: Fate::Delete,
            rule: Rule::R10,
            next_offset: facts.bases[i],
        });
    }
    let mut stopped = false;
    // The stop was damage the verdict reports (later segments stay as they are).
    let mut stop_damage = false;
    // The rule of the cuts that delete segments after the stop.
    let mut later = torn;
    for (i, &base) in facts.bases.iter().enumerate().skip(below_start) {
        let next_base = facts.bases.get(i + 1).copied();
        let file_len = facts.log_lens[i];
        let file = segment_path(&facts.dir, base, FileKind::Log);
        if !stopped {
            if let Some(prev_end) = p.loaded.last().map(|l| l.tail.next_offset) {
                if prev_end != base {
                    // A gap (or overlap) between segments: legal only past the recovery point
                    // (an unsynced segment whose predecessor lost its tail); below it, synced
                    // data is missing.
                    let damage = prev_end < recovery_point;
                    if damage && !salvage {
                        // Row R9: synced offsets are missing from the chain.
                        let e =
                            corrupt(facts, base, 0, DecodeError::SegmentChain { base, prev_end });
                        p.refuse(
                            e,
                            Rule::R9,
                            &format!(
                                "synced data missing, below the recovery point {recovery_point}"
                            ),
                        );
                        later = Rule::R9;
                    } else {
                        p.truncated_at = Some(prev_end);
                        if damage {
                            later = Rule::Salvage;
                        }
                    }
                    stopped = true;
                    stop_damage = damage && !salvage;
                }
            }
        }
        if stopped {
            // After a torn tail, a gap or damage: everything later goes (R8, or salvage) or,
            // after damage, stays untouched (the verdict); the step names the row that decided.
            let fate = if stop_damage {
                Fate::Damaged
            } else {
                p.cuts.push(Cut {
                    file,
                    position: 0,
                    offsets: (base, next_base.unwrap_or(u64::MAX)),
                    bytes: file_len,
                    rule: later,
                });
                Fate::Delete
            };
            p.segments.push(SegmentStep {
                base,
                file_len,
                examined: Examined::NotRead,
                fate,
                rule: later,
                next_offset: base,
            });
            continue;
        }
        let last = next_base.is_none();
        let trusted = clean || next_base.is_some_and(|nb| nb <= recovery_point);
        if let (true, Some(nb), true) = (clean, next_base, source.defers()) {
            // Row R1, sealed segment: close sealed it before the marker; its index loads on
            // first use.
            p.indexes_deferred += 1;
            let mut tail = SegmentTail::empty(base);
            tail.next_offset = nb;
            p.loaded.push(Loaded {
                base,
                tail,
                index: LoadedIndex::Deferred,
            });
            p.segments.push(SegmentStep {
                base,
                file_len,
                examined: Examined::Deferred,
                fate: Fate::Keep,
                rule: Rule::R1,
                next_offset: nb,
            });
            continue;
        }
        if trusted {
            let TrustedFacts { load: t, garbage } = source.trusted(base, next_base)?;
            let rebuilt_bytes = match &t {
                Ok(t) => t.rebuilt.then_some(t.bytes_scanned),
                Err(d) => Some(d.prefix.bytes_scanned),
            };
            if let Some(b) = rebuilt_bytes {
                p.indexes_rebuilt += 1;
                p.bytes_scanned += b;
            }
            match t {
                Ok(t) => {
                    let rule = if t.stop.is_some() {
                        Rule::R7
                    } else if t.rebuilt {
                        Rule::R3
                    } else if clean {
                        Rule::R1
                    } else {
                        Rule::R2
                    };
                    let reseal = t.rebuilt;
                    let next_offset = t.tail.next_offset;
                    if t.stop.is_some() && garbage > 0 {
                        // R7: the bytes of a failed write after the last batch go.
                        p.cuts.push(Cut {
                            file: file.clone(),
                            position: t.valid_len,
                            offsets: (next_offset, next_offset),
                            bytes: garbage,
                            rule: Rule::R7,
                        });
                    }
                    p.loaded.push(Loaded::now(base, t, reseal));
                    p.segments.push(SegmentStep {
                        base,
                        file_len,
                        examined: Examined::Trusted,
                        fate: if last {
                            Fate::Active
                        } else if reseal {
                            Fate::Reseal
                        } else {
                            Fate::Keep
                        },
                        rule,
                        next_offset,
                    });
                }
                Err(d) => {
                    let prefix = *d.prefix;
                    let next_offset = prefix.tail.next_offset;
                    let valid_len = prefix.valid_len;
                    stopped = true;
                    if salvage {
                        p.cuts.push(Cut {
                            file: file.clone(),
                            position: d.position,
                            offsets: (next_offset, next_base.unwrap_or(u64::MAX)),
                            bytes: file_len.saturating_sub(valid_len),
                            rule: Rule::Salvage,
                        });
                        p.truncated_at = Some(next_offset);
                        later = Rule::Salvage;
                        p.loaded.push(Loaded::now(base, prefix, true));
                        p.segments.push(SegmentStep {
                            base,
                            file_len,
                            examined: Examined::Trusted,
                            fate: Fate::CutAt { valid_len },
                            rule: Rule::Salvage,
                            next_offset,
                        });
                    } else {
                        stop_damage = true;
                        later = Rule::R4;
                        let e = corrupt(facts, base, d.position, d.reason);
                        p.refuse(
                            e,
                            Rule::R4,
                            &format!(
                                "damage in synced data, below the recovery point \
                                 {recovery_point}"
                            ),
                        );
                        // Read-only opens serve the valid prefix of the damaged segment.
                        p.loaded.push(Loaded::now(base, prefix, true));
                        p.segments.push(SegmentStep {
                            base,
                            file_len,
                            examined: Examined::Trusted,
                            fate: Fate::Damaged,
                            rule: Rule::R4,
                            next_offset,
                        });
                    }
                }
            }
            continue;
        }
        // Row R5: scan.
        p.segments_scanned += 1;
        let s = source.scan(base)?;
        p.bytes_scanned += s.outcome.valid_len as u64;
        let out = &s.outcome;
        let valid_len = out.valid_len as u64;
        let next_offset = out.next_offset;
        let loaded = |needs_reseal| Loaded {
            base,
            tail: s.tail,
            index: LoadedIndex::Now {
                valid_len,
                entries: out.entries.clone(),
                needs_reseal,
            },
        };
        let step = |fate, rule| SegmentStep {
            base,
            file_len,
            examined: Examined::Scanned,
            fate,
            rule,
            next_offset,
        };
        let Some((pos, reason)) = out.stop.clone() else {
            // Consumed to the end of the file. A sealed segment (its seal trimmed it) still
            // gets its index files written: open cannot tell whether the seal wrote them
            // before the crash, and scanning has just built them.
            p.loaded.push(loaded(!last));
            p.segments.push(step(
                if last { Fate::Active } else { Fate::Reseal },
                Rule::R5,
            ));
            if !last {
                p.indexes_rebuilt += 1;
            }
            continue;
        };
        if next_offset < recovery_point {
            // Row R6: the batch at `pos` was durable, so this is damage, not a torn write.
            stopped = true;
            if salvage {
                p.cuts.push(Cut {
                    file: file.clone(),
                    position: pos as u64,
                    offsets: (next_offset, next_base.unwrap_or(u64::MAX)),
                    bytes: s.garbage,
                    rule: Rule::Salvage,
                });
                p.truncated_at = Some(next_offset);
                later = Rule::Salvage;
                p.bytes_truncated += s.garbage;
                p.loaded.push(loaded(true));
                p.segments
                    .push(step(Fate::CutAt { valid_len }, Rule::Salvage));
            } else {
                stop_damage = true;
                later = Rule::R6;
                let e = corrupt(facts, base, pos as u64, reason);
                p.refuse(
                    e,
                    Rule::R6,
                    &format!("below the recovery point {recovery_point}"),
                );
                p.loaded.push(loaded(true));
                p.segments.push(step(Fate::Damaged, Rule::R6));
            }
            continue;
        }
        if next_base == Some(next_offset) {
            // Row R7: every offset up to the next segment is here; the segment was rolled but
            // its seal (trim, index files) did not finish. What follows its last batch is never
            // data.
            if s.garbage > 0 {
                p.cuts.push(Cut {
                    file: file.clone(),
                    position: pos as u64,
                    offsets: (next_offset, next_offset),
                    bytes: s.garbage,
                    rule: Rule::R7,
                });
            }
            p.indexes_rebuilt += 1;
            p.loaded.push(loaded(true));
            p.segments.push(step(Fate::Reseal, Rule::R7));
            continue;
        }
        if last && s.garbage == 0 {
            // The active segment simply ends at its preallocated zeros: nothing is cut.
            p.loaded.push(loaded(true));
            p.segments.push(step(Fate::Active, Rule::R5));
            continue;
        }
        // Row R8: a torn tail, past the recovery point.
        p.truncated_at = Some(next_offset);
        p.bytes_truncated += s.garbage;
        p.cuts.push(Cut {
            file: file.clone(),
            position: pos as u64,
            offsets: (next_offset, next_base.unwrap_or(u64::MAX)),
            bytes: s.garbage,
            rule: torn,
        });
        p.loaded.push(loaded(true));
        p.segments.push(step(
            if last {
                Fate::Active
            } else {
                Fate::CutAt { valid_len }
            },
            torn,
        ));
        stopped = true;
    }

    let leo = p.loaded.last().map_or(0, |l| l.tail.next_offset);
    // Row R9: offsets below the recovery point were durable; those at or past the log start must
    // still be here. Offsets below the log start were deleted on purpose (the log restarts empty
    // at the log start, R11), but a recovery point above the log start vouches for records the
    // log must still hold, so it may not pass the recovered end even then: accepting it would
    // keep it durable past the data, and the open after the next crash would fail on the new
    // segment's preallocated zeros (R6).
    if p.error.is_none() && recovery_point > leo.max(start_ckpt) {
        if salvage {
            p.cuts.push(Cut {
                file: rp_path.clone(),
                position: 0,
                offsets: (leo, recovery_point),
                bytes: 0,
                rule: Rule::Salvage,
            });
        } else {
            let reason = format!(
                "recovery point {recovery_point} is beyond the recovered log end {leo}: synced \
                 data is missing"
            );
            p.refuse(
                Error::CorruptFile {
                    path: rp_path.clone(),
                    reason,
                },
                Rule::R9,
                "",
            );
        }
    }
    // Row R10 for loaded segments that end at or below the log start (all but the last).
    let count = p.loaded.len();
    for (i, l) in p.loaded.iter().enumerate() {
        if l.tail.next_offset <= start_ckpt && i + 1 < count {
            if let Some(s) = p.segments.iter_mut().find(|s| s.base == l.base) {
                s.fate = Fate::Delete;
                s.rule = Rule::R10;
            }
        }
    }
    if p.loaded.is_empty()
        || p.loaded
            .last()
            .is_some_and(|l| l.tail.next_offset < start_ckpt)
    {
        // Row R11 (and a log start past every segment): start empty at the log start.
        if p.error.is_none() {
            p.create_first = Some(start_ckpt);
            for s in p.segments.iter_mut().filter(|s| s.fate != Fate::Delete) {
                s.fate = Fate::Delete;
                s.rule = Rule::R11;
            }
        }
    }
    // Every cut of a non-salvage plan lies at or past the recovery point (or removes no
    // offset): synced data is never cut silently.
    if !salvage_mode {
        for c in &p.cuts {
            assert!(
                c.offsets.0 >= recovery_point || c.offsets.0 == c.offsets.1,
                "plan cuts synced offsets: {c} below the recovery point {recovery_point}"
            );
        }
    }
    Ok(p)
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "recovery plan ({:?}): {}, recovery point {}{}, log start {}",
            self.mode,
            if self.clean {
                "clean shutdown (R1)"
            } else {
                "unclean"
            },
            self.recovery_point,
            if self.recovery_point_found {
                ""
            } else {
                " (no valid checkpoint)"
            },
            self.log_start
                .map_or("from the first segment".to_string(), |s| s.to_string()),
        )?;
        for (name, rule) in &self.remove {
            writeln!(f, "  remove {name} ({rule})")?;
        }
        for s in &self.segments {
            let name = file_name(Offset(s.base), FileKind::Log);
            let how = match s.examined {
                Examined::Deferred => "deferred",
                Examined::Trusted => "trusted",
                Examined::Scanned => "scanned",
                Examined::NotRead => "not read",
            };
            let what = match &s.fate {
                Fate::Keep => "keep".to_string(),
                Fate::Reseal => "keep, write index files, trim to the last batch".to_string(),
                Fate::Active => "keep as the active segment".to_string(),
                Fate::CutAt { valid_len } => format!("cut at byte {valid_len}"),
                Fate::Delete => "delete".to_string(),
                Fate::Damaged => "damaged: left as it is".to_string(),
            };
            writeln!(
                f,
                "  {name}: {how}, ends at offset {}, {what} ({})",
                s.next_offset, s.rule
            )?;
        }
        if let Some(start) = self.create_first {
            writeln!(f, "  create the first segment at offset {start} (R11)")?;
        }
        let cut = match self.cuts_made_in() {
            Some(m) if m == self.mode => "cut:".to_string(),
            Some(m) => format!("open refuses; RecoveryMode::{m:?} would cut"),
            None => "not cut (no read-write open):".to_string(),
        };
        for c in &self.cuts {
            writeln!(f, "  {cut} {c}")?;
        }
        match &self.verdict {
            Verdict::Open => write!(
                f,
                "verdict: opens read-write, log end {}",
                self.log_end().unwrap_or(0)
            ),
            Verdict::Corrupt(why) => write!(f, "verdict: corruption: {why}"),
            Verdict::RecoveryPointLost(why) => write!(f, "verdict: open refuses: {why}"),
        }
    }
}

/// Re-exported for the scan source: the tail facts of a scan.
pub(super) fn scanned(base: u64, outcome: ScanOutcome, bytes: &[u8]) -> Scanned {
    let tail = tail_of(base, &outcome, bytes);
    let garbage = outcome
        .stop
        .as_ref()
        .map_or(0, |(pos, _)| garbage_len(bytes.get(*pos..).unwrap_or(&[])));
    Scanned {
        outcome,
        tail,
        garbage,
    }
}

/// Bytes of non-zero data at the start of `rest`, looking no further than 64 KiB of zeros past
/// the last non-zero byte (the report figure must not cost a scan of a preallocated gigabyte;
/// the cut itself is done by truncating the file).
pub(super) fn garbage_len(rest: &[u8]) -> u64 {
    const QUIET: usize = 64 << 10;
    let mut last_nonzero = None;
    for (i, &b) in rest.iter().enumerate() {
        if b != 0 {
            last_nonzero = Some(i);
        } else if i - last_nonzero.map_or(0, |l| l + 1) >= QUIET {
            break;
        }
    }
    last_nonzero.map_or(0, |i| i as u64 + 1)
}
