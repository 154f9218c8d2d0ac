//! The commands of the `oncelog` binary, and what they share: reading a log directory without
//! opening the `Log` (listing, walking batches, decoding checkpoints) and small formatting helpers.
//!
//! Nothing here writes to a log directory except `demo`, which uses the library's `Log`;
//! `produce` and `consume` are clients of a running cluster.

#[cfg(feature = "net")]
pub mod cluster;
#[cfg(feature = "net")]
pub mod consume;
pub mod demo;
#[cfg(feature = "cluster")]
pub mod demo_cluster;
pub mod dump;
#[cfg(feature = "net")]
mod etcd;
pub mod help;
#[cfg(feature = "net")]
pub mod metrics;
#[cfg(feature = "net")]
pub mod produce;
pub mod serve;
pub mod stat;
pub mod verify;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use oncelog::format::batch::BatchView;
use oncelog::format::file_name::{parse_file_name, FileKind};
use oncelog::format::DecodeError;

/// The most a command reads of one file of a log directory: no file oncelog writes is larger
/// (segment positions are u32, so `segment_bytes <= u32::MAX`, and every other file is
/// smaller). A larger file is reported instead of read.
pub const MAX_FILE_BYTES: u64 = u32::MAX as u64;

/// The bytes of one file of a log directory, read with [`MAX_FILE_BYTES`] as the bound.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    oncelog::io::read_bounded(path, MAX_FILE_BYTES).map_err(|e| match e {
        oncelog::io::BoundedReadError::Io(e) => e,
        too_large => std::io::Error::new(std::io::ErrorKind::InvalidData, too_large.to_string()),
    })
}

/// Why a command did not run to completion.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments: usage goes to stderr, exit status 2.
    Usage(String),
    /// The command failed: the message goes to stderr, exit status 1.
    Failed(String),
    /// Whoever read our output went away (`oncelog dump DIR | head`): stop quietly.
    BrokenPipe,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
            CliError::BrokenPipe => f.write_str("broken pipe"),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return CliError::BrokenPipe;
        }
        CliError::Failed(e.to_string())
    }
}

impl From<oncelog::Error> for CliError {
    fn from(e: oncelog::Error) -> Self {
        CliError::Failed(e.to_string())
    }
}

pub type CliResult = Result<ExitCode, CliError>;

/// Splits `args` into `--flags` (checked against `known`) and positional arguments.
pub fn parse_args<'a>(
    args: &'a [String],
    known: &[&str],
) -> Result<(Vec<&'a str>, Vec<&'a str>), CliError> {
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    for a in args {
        if a.starts_with("--") {
            if !known.contains(&a.as_str()) {
                return Err(CliError::Usage(format!("unknown option '{a}'")));
            }
            flags.push(a.as_str());
        } else {
            positional.push(a.as_str());
        }
    }
    Ok((flags, positional))
}

/// The single `DIR` argument of `dump`, `verify` and `stat`; it must be an existing directory.
pub fn one_dir(command: &str, positional: &[&str]) -> Result<PathBuf, CliError> {
    let [dir] = positional else {
        return Err(CliError::Usage(format!("{command} needs exactly one DIR")));
    };
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        return Err(CliError::Failed(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    Ok(dir)
}

/// One regular file of a log directory.
#[derive(Debug, Clone)]
pub struct DirFile {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Base offset and kind, for the per-offset files (`.log`, `.index`, ...).
    pub kind: Option<(u64, FileKind)>,
}

/// The regular files of a log directory, sorted by name (the zero-padded offsets sort
/// numerically, so segments come in base-offset order).
#[derive(Debug)]
pub struct Listing {
    pub files: Vec<DirFile>,
}

impl Listing {
    /// Every error names the directory (or the file) it is about.
    pub fn read(dir: &Path) -> std::io::Result<Listing> {
        let named = |e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("list {}: {e}", dir.display()))
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(named)? {
            let entry = entry.map_err(named)?;
            // A live log's retention or snapshot rotation removes files under us.
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("stat {}: {e}", entry.path().display()),
                    ))
                }
            };
            if !meta.is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = parse_file_name(&name).map(|(o, k)| (o.0, k));
            files.push(DirFile {
                path: entry.path(),
                name,
                size: meta.len(),
                kind,
            });
        }
        files.sort_by(|a, b| match (a.kind, b.kind) {
            (Some((ao, _)), Some((bo, _))) => ao.cmp(&bo).then_with(|| a.name.cmp(&b.name)),
            _ => a.name.cmp(&b.name),
        });
        Ok(Listing { files })
    }

    /// The `.log` segment files in base-offset order.
    pub fn segments(&self) -> Vec<&DirFile> {
        self.of_kind(FileKind::Log)
    }

    pub fn of_kind(&self, kind: FileKind) -> Vec<&DirFile> {
        let mut v: Vec<&DirFile> = self
            .files
            .iter()
            .filter(|f| f.kind.is_some_and(|(_, k)| k == kind))
            .collect();
        v.sort_by_key(|f| f.kind.map_or(0, |(o, _)| o));
        v
    }

    /// Files that are not segments.
    pub fn others(&self) -> impl Iterator<Item = &DirFile> {
        self.files
            .iter()
            .filter(|f| !matches!(f.kind, Some((_, FileKind::Log))))
    }
}

/// One step of a walk over a segment's bytes.
pub enum Step<'a> {
    /// A batch whose header and checksum are valid, at byte `pos`.
    Batch { pos: usize, view: BatchView<'a> },
    /// The bytes at `pos` are not a valid batch; the walk ends here.
    Invalid { pos: usize, reason: DecodeError },
}

/// Walks the batches of a segment from position 0 until the bytes end or a batch is invalid.
/// Only header and checksum are checked (`BatchView::parse`); offsets are the caller's business.
pub fn walk(bytes: &[u8]) -> impl Iterator<Item = Step<'_>> + '_ {
    let mut pos = 0usize;
    let mut done = false;
    std::iter::from_fn(move || {
        if done || pos >= bytes.len() {
            return None;
        }
        let rest = bytes.get(pos..).unwrap_or(&[]);
        match BatchView::parse(rest) {
            Ok((view, _)) => {
                let at = pos;
                pos += view.len();
                Some(Step::Batch { pos: at, view })
            }
            Err(reason) => {
                done = true;
                Some(Step::Invalid { pos, reason })
            }
        }
    })
}

/// What follows the last valid batch of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Nothing: the batches fill the file exactly.
    None,
    /// `len` zero bytes: preallocated space never written.
    Zeros { len: usize },
    /// `len` bytes of which `nonzero` are not zero, the last one at `last_nonzero`.
    Garbage {
        len: usize,
        nonzero: usize,
        last_nonzero: usize,
    },
}

pub fn classify_tail(bytes: &[u8], from: usize) -> Tail {
    let rest = bytes.get(from..).unwrap_or(&[]);
    if rest.is_empty() {
        return Tail::None;
    }
    let nonzero = rest.iter().filter(|&&b| b != 0).count();
    match rest.iter().rposition(|&b| b != 0) {
        None => Tail::Zeros { len: rest.len() },
        Some(i) => Tail::Garbage {
            len: rest.len(),
            nonzero,
            last_nonzero: from + i,
        },
    }
}

impl fmt::Display for Tail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Tail::None => write!(f, "no bytes follow"),
            Tail::Zeros { len } => {
                write!(
                    f,
                    "the remaining {len} bytes are all zero (preallocated tail)"
                )
            }
            Tail::Garbage {
                len,
                nonzero,
                last_nonzero,
            } => write!(
                f,
                "the remaining {len} bytes are garbage ({nonzero} non-zero, the last at byte \
                 {last_nonzero})"
            ),
        }
    }
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// An escaped preview of at most `max` bytes (`\xNN` for non-printable bytes, `...` if cut).
pub fn preview(bytes: Option<&[u8]>, max: usize) -> String {
    match bytes {
        None => "null".into(),
        Some(b) => {
            let shown = b.get(..max.min(b.len())).unwrap_or(b);
            let mut s = format!("\"{}\"", shown.escape_ascii());
            if b.len() > max {
                s.push_str("...");
            }
            s
        }
    }
}
