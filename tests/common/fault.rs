//! File-level fault injection for the recovery tests: segment paths, batch boundaries of a
//! segment file, bit flips, directory copies and snapshots, and a tiny deterministic RNG.
//! Included with `#[path = "common/fault.rs"] mod fault;` by the tests that need it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use oncelog::BatchView;

/// xorshift64*: deterministic, seedable, good enough to pick offsets and garbage bytes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

pub fn seg_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

pub fn timeindex_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// Base offsets of the `.log` files in `dir`, ascending.
pub fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut out: Vec<u64> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log").and_then(|s| s.parse().ok())
        })
        .collect();
    out.sort_unstable();
    out
}

/// One valid batch inside a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAt {
    pub pos: usize,
    pub len: usize,
    pub base_offset: u64,
    pub next_offset: u64,
}

impl BatchAt {
    pub fn end(&self) -> usize {
        self.pos + self.len
    }
}

/// The valid batches at the start of a segment file's bytes (stops at the first invalid one).
pub fn batches_in(bytes: &[u8]) -> Vec<BatchAt> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok((v, _)) = BatchView::parse(&bytes[pos..]) {
        out.push(BatchAt {
            pos,
            len: v.len(),
            base_offset: v.base_offset(),
            next_offset: v.last_offset() + 1,
        });
        pos += v.len();
    }
    out
}

/// The offset after the longest run of whole batches of `original` that `damaged` still holds
/// byte for byte (a batch whose last bytes were already what the damage wrote survives it).
pub fn intact_end(original: &[u8], damaged: &[u8], base: u64) -> u64 {
    let mut end = base;
    for b in batches_in(original) {
        if damaged.len() >= b.end() && damaged[..b.end()] == original[..b.end()] {
            end = b.next_offset;
        } else {
            break;
        }
    }
    end
}

/// Flips one bit of a file in place.
pub fn flip_bit(path: &Path, pos: usize, bit: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[pos] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

/// Copies every regular file of `from` into `to` (created if needed).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Name -> contents of every regular file in `dir` except the lock file.
pub fn snapshot_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    // Every regular file, the spare segment (`spare-segment.tmp`) and `LOCK` included: an open
    // that fails or opens read-only removes no leftover (R12 runs only once a read-write plan
    // succeeds) and leaves no lock file it did not find.
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}
