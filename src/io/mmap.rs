//! Memory-mapped segment data, and the discipline that makes it sound.
//!
//! A [`MappedRegion`] owns a raw read-write mapping (real `mmap` or a simulated heap buffer).
//! An [`AppendMap`] layers the one rule everything rests on over it:
//!
//! * Invariant: bytes below `published` are never written again while the map lives; only the
//!   single [`MapWriter`] writes, and only at or above `published`.
//! * Readers get `&[u8]` only for ranges that end at or below `published` (loaded with
//!   Acquire; the writer stores it with Release after copying the bytes).
//!
//! So a `&[u8]` a reader holds never changes under it. `docs/safety.md` has the full argument,
//! including why trimming the file at seal and unlinking deleted segments cannot fault a reader.
#![allow(
    unsafe_code,
    reason = "the mapping itself is raw memory; each block says why it is sound"
)]

use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// What keeps a mapping's memory alive and makes it durable.
pub trait MapBacking: Send + Sync + fmt::Debug {
    /// Synchronously writes `[offset, offset + len)` back to the file (msync MS_SYNC).
    fn flush(&self, offset: usize, len: usize) -> io::Result<()>;
    /// Best-effort prefault of `[offset, offset + len)` for writing (MADV_POPULATE_WRITE).
    fn populate(&self, _offset: usize, _len: usize) {}
}

/// A raw mapping of `len` bytes, read-write or read-only. Only [`AppendMap`] hands out
/// references into it.
pub struct MappedRegion {
    ptr: NonNull<u8>,
    len: usize,
    backing: Option<Box<dyn MapBacking>>,
    /// Invariant: false for a read-only mapping (`PROT_READ`), which is never written: it has
    /// no [`MapWriter`], no prefault for writing and nothing to write back.
    writable: bool,
}

impl fmt::Debug for MappedRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedRegion")
            .field("len", &self.len)
            .field("backing", &self.backing)
            .field("writable", &self.writable)
            .finish()
    }
}

// SAFETY: the region is plain memory owned by `backing` (which is Send + Sync); all access to
// it goes through `AppendMap`, whose published-end protocol prevents data races.
unsafe impl Send for MappedRegion {}
// SAFETY: as above: shared access only reads published bytes; writes need the unique MapWriter.
unsafe impl Sync for MappedRegion {}

impl MappedRegion {
    /// # Safety
    ///
    /// `ptr` must be valid for reads and writes of `len` bytes for as long as `backing` lives,
    /// and nothing else may access that memory except through the returned region.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize, backing: Box<dyn MapBacking>) -> Self {
        let ptr = NonNull::new(ptr).expect("a mapping is never at address 0");
        MappedRegion {
            ptr,
            len,
            backing: Some(backing),
            writable: true,
        }
    }

    /// A read-only region: no [`MapWriter`] is ever handed out for it and its backing is never
    /// asked to flush or prefault, so nothing writes through `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for reads of `len` bytes for as long as `backing` lives, and the
    /// bytes the region publishes must not change while it lives.
    pub(crate) unsafe fn new_read_only(
        ptr: *const u8,
        len: usize,
        backing: Box<dyn MapBacking>,
    ) -> Self {
        let ptr = NonNull::new(ptr.cast_mut()).expect("a mapping is never at address 0");
        MappedRegion {
            ptr,
            len,
            backing: Some(backing),
            writable: false,
        }
    }

    /// A zero-length region (mmap refuses length 0).
    pub fn empty() -> Self {
        MappedRegion {
            ptr: NonNull::dangling(),
            len: 0,
            backing: None,
            writable: true,
        }
    }

    /// Whether the region may be written (false for [`StorageFile::map_read_only`]).
    ///
    /// [`StorageFile::map_read_only`]: super::StorageFile::map_read_only
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping has no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A mapping with a published end and at most one writer. See the module invariants.
#[derive(Debug)]
pub struct AppendMap {
    region: MappedRegion,
    /// Invariant: `published <= region.len`, and bytes below it are immutable.
    published: AtomicUsize,
    /// Invariant: true while a `MapWriter` exists (at most one).
    writer_taken: AtomicBool,
}

impl AppendMap {
    /// Wraps a region whose first `published` bytes are already valid (recovered) data.
    pub fn new(region: MappedRegion, published: usize) -> Arc<AppendMap> {
        assert!(
            published <= region.len,
            "published end {published} past the map"
        );
        Arc::new(AppendMap {
            region,
            published: AtomicUsize::new(published),
            writer_taken: AtomicBool::new(false),
        })
    }

    /// Bytes mapped (the published end is at most this).
    pub fn capacity(&self) -> usize {
        self.region.len
    }

    /// The published end (Acquire: every byte below it is visible to this thread).
    pub fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// All published bytes.
    pub fn published_bytes(&self) -> &[u8] {
        let end = self.published();
        // SAFETY: [0, end) is inside the region (invariant) and immutable while `self` lives
        // (module invariant), so a shared slice of it is never aliased by a write.
        unsafe { std::slice::from_raw_parts(self.region.ptr.as_ptr(), end) }
    }

    /// Published bytes `[start, end)`, or `None` if the range is not entirely published.
    pub fn bytes(&self, start: usize, end: usize) -> Option<&[u8]> {
        self.published_bytes().get(start..end)
    }

    /// Makes `[start, end)` durable. The range must be published, so no writer touches it.
    pub fn flush(&self, start: usize, end: usize) -> io::Result<()> {
        assert!(
            start <= end && end <= self.published(),
            "flush of unpublished bytes"
        );
        match &self.region.backing {
            // A read-only region has no dirty page to write back.
            Some(b) if end > start && self.region.writable => b.flush(start, end - start),
            _ => Ok(()),
        }
    }

    /// Prefaults `[start, end)` (clamped to the region) for writing; best effort.
    pub fn populate(&self, start: usize, end: usize) {
        let end = end.min(self.region.len);
        if let (Some(b), true) = (&self.region.backing, start < end && self.region.writable) {
            b.populate(start, end - start);
        }
    }

    /// Whether the mapping is writable (false for a read-only map: [`AppendMap::writer`]
    /// always answers `None`).
    pub fn is_writable(&self) -> bool {
        self.region.writable
    }

    /// The unique writer, positioned at the published end; `None` if one exists already, or
    /// if the mapping is read-only.
    pub fn writer(self: &Arc<Self>) -> Option<MapWriter> {
        if !self.region.writable || self.writer_taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(MapWriter {
            pos: self.published(),
            map: Arc::clone(self),
        })
    }
}

/// The single writer of an [`AppendMap`]. Writes land at or above the published end and become
/// visible to readers only at [`MapWriter::publish`].
#[derive(Debug)]
pub struct MapWriter {
    map: Arc<AppendMap>,
    /// Invariant: `map.published <= pos <= map.capacity()`.
    pos: usize,
}

impl MapWriter {
    /// The mapping it writes into.
    pub fn map(&self) -> &Arc<AppendMap> {
        &self.map
    }

    /// Where the next write lands.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left between the write position and the end of the mapping.
    pub fn remaining(&self) -> usize {
        self.map.region.len - self.pos
    }

    /// A mutable view of `[pos, pos + len)`, not yet counted as written; `None` if it does not fit.
    pub fn reserve(&mut self, len: usize) -> Option<&mut [u8]> {
        if len > self.remaining() {
            return None;
        }
        // SAFETY: `pos <= len` of the region (invariant), so the pointer stays in bounds.
        let start = unsafe { self.map.region.ptr.as_ptr().add(self.pos) };
        // SAFETY: [pos, pos + len) lies inside the region (checked above) and at or above the
        // published end (invariant), so no reader holds a reference into it; `&mut self` makes
        // this the only live mutable view, and the borrow ends before `publish` can run.
        Some(unsafe { std::slice::from_raw_parts_mut(start, len) })
    }

    /// Counts `len` reserved bytes as written (still unpublished).
    pub fn advance(&mut self, len: usize) {
        assert!(len <= self.remaining(), "advance past the map");
        self.pos += len;
    }

    /// Publishes everything written so far (Release).
    pub fn publish(&mut self) {
        debug_assert!(self.pos >= self.map.published.load(Ordering::Relaxed));
        self.map.published.store(self.pos, Ordering::Release);
    }

    /// Forgets written but unpublished bytes (after an error; they will be overwritten).
    pub fn discard_unpublished(&mut self) {
        self.pos = self.map.published();
    }
}

impl Drop for MapWriter {
    fn drop(&mut self) {
        self.map.writer_taken.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct HeapBacking(*mut [u8]);
    // SAFETY: test-only owner of a heap buffer accessed through the region protocol.
    unsafe impl Send for HeapBacking {}
    // SAFETY: as above.
    unsafe impl Sync for HeapBacking {}
    impl MapBacking for HeapBacking {
        fn flush(&self, _: usize, _: usize) -> io::Result<()> {
            Ok(())
        }
    }
    impl Drop for HeapBacking {
        fn drop(&mut self) {
            // SAFETY: created by Box::into_raw in `heap_map` and dropped exactly once.
            drop(unsafe { Box::from_raw(self.0) });
        }
    }

    fn heap_map(len: usize) -> Arc<AppendMap> {
        let raw = Box::into_raw(vec![0u8; len].into_boxed_slice());
        let ptr = raw.cast::<u8>();
        // SAFETY: the buffer lives as long as the backing and is accessed only via the region.
        let region = unsafe { MappedRegion::new(ptr, len, Box::new(HeapBacking(raw))) };
        AppendMap::new(region, 0)
    }

    #[test]
    fn readers_see_only_published_bytes_and_one_writer_exists() {
        let map = heap_map(64);
        let mut w = map.writer().unwrap();
        assert!(map.writer().is_none(), "second writer");
        w.reserve(4).unwrap().copy_from_slice(b"abcd");
        w.advance(4);
        assert_eq!(map.published_bytes(), b"");
        assert!(map.bytes(0, 4).is_none());
        w.publish();
        let seen = map.bytes(0, 4).unwrap();
        w.reserve(2).unwrap().copy_from_slice(b"ef");
        w.advance(2);
        w.publish();
        assert_eq!(seen, b"abcd", "published bytes never change");
        assert_eq!(map.published_bytes(), b"abcdef");
        assert!(w.reserve(59).is_none());
        drop(w);
        assert!(map.writer().is_some(), "writer released on drop");
    }

    #[test]
    fn concurrent_reader_sees_consistent_prefix() {
        let map = heap_map(1 << 16);
        let reader = {
            let map = Arc::clone(&map);
            std::thread::spawn(move || {
                let mut last = 0;
                while last < (1 << 16) {
                    let b = map.published_bytes();
                    assert!(b.len() >= last);
                    for (i, &x) in b.iter().enumerate() {
                        assert_eq!(x, (i % 251) as u8);
                    }
                    last = b.len();
                }
            })
        };
        let mut w = map.writer().unwrap();
        for chunk in 0..(1 << 16) / 512 {
            let dst = w.reserve(512).unwrap();
            for (j, d) in dst.iter_mut().enumerate() {
                *d = ((chunk * 512 + j) % 251) as u8;
            }
            w.advance(512);
            w.publish();
        }
        reader.join().unwrap();
    }
}
