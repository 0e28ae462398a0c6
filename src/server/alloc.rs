//! A global allocator that serves huge allocations with lazily backed
//! `mmap(MAP_NORESERVE)` mappings.
//!
//! Why: tiny_http 0.12 drains an unread request body with one `vec![0; n]`
//! of the body's *declared* length (`EqualReader::drop`). A request that
//! declares `Content-Length: 100000000000` makes the system allocator refuse
//! 100 GB under the kernel's overcommit heuristic, and Rust aborts the whole
//! process. A `MAP_NORESERVE` anonymous mapping of that size succeeds, is
//! zeroed by the kernel, and costs memory only for the pages actually
//! written (a socket read writes a few KB). Everything below the threshold
//! goes to the system allocator untouched, so the hot path pays nothing.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are mapped, not malloc'ed. Nothing in
/// the server asks for this much on purpose.
const HUGE: usize = 1 << 30;

pub struct HugeAllocSafe;

impl HugeAllocSafe {
    fn is_huge(layout: &Layout) -> bool {
        // mmap is page aligned; anything wanting more alignment stays with
        // the system allocator (it will never be this large in practice).
        layout.size() >= HUGE && layout.align() <= 4096
    }

    unsafe fn map(size: usize) -> *mut u8 {
        let p = libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p as *mut u8
        }
    }
}

unsafe impl GlobalAlloc for HugeAllocSafe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::is_huge(&layout) {
            Self::map(layout.size())
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::is_huge(&layout) {
            // Fresh anonymous pages are already zero.
            Self::map(layout.size())
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::is_huge(&layout) {
            libc::munmap(ptr as *mut libc::c_void, layout.size());
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        if !Self::is_huge(&layout) && !Self::is_huge(&new_layout) {
            return System.realloc(ptr, layout, new_size);
        }
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}
