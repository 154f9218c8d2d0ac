//! A global allocator that counts live heap bytes and their peak, for tests that assert how
//! much memory a piece of code allocates (the transport's limits: a peer that claims a large
//! frame must not make the server allocate it). A test binary installs it with
//! `#[global_allocator] static A: CountingAllocator = CountingAllocator::new();`; it delegates
//! every call to the system allocator.
#![allow(
    unsafe_code,
    reason = "GlobalAlloc is an unsafe trait; each method only forwards to System"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// See the module doc.
#[derive(Debug)]
pub struct CountingAllocator {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl CountingAllocator {
    pub const fn new() -> Self {
        CountingAllocator {
            live: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Heap bytes allocated and not freed.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// The most `live` has been since the last [`CountingAllocator::reset_peak`].
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Starts a new peak from the current live bytes.
    pub fn reset_peak(&self) {
        self.peak.store(self.live(), Ordering::SeqCst);
    }

    fn added(&self, n: usize) {
        let live = self.live.fetch_add(n, Ordering::SeqCst).saturating_add(n);
        self.peak.fetch_max(live, Ordering::SeqCst);
    }

    fn removed(&self, n: usize) {
        self.live.fetch_sub(n, Ordering::SeqCst);
    }
}

impl Default for CountingAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counters are atomics and never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    /// # Safety
    /// The `GlobalAlloc` contract, passed on unchanged to `System`.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's `layout` obligations are passed on to `System` as they are.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.added(layout.size());
        }
        p
    }

    /// # Safety
    /// The `GlobalAlloc` contract, passed on unchanged to `System`.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.added(layout.size());
        }
        p
    }

    /// # Safety
    /// The `GlobalAlloc` contract, passed on unchanged to `System`.
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        self.removed(layout.size());
    }

    /// # Safety
    /// The `GlobalAlloc` contract, passed on unchanged to `System`.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` was allocated by `System` with `layout`; the caller guarantees
        // `new_size` is valid for it.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.added(new_size);
            self.removed(layout.size());
        }
        p
    }
}
