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
//!
//! A declared length can be far larger than the address space (up to
//! `isize::MAX`; above that `vec!` panics before asking, and the request
//! thread catches it). So a huge allocation maps at most [`WINDOW`] bytes,
//! and `dealloc` unmaps the same clamped length. This is sound here because
//! nothing in this process legitimately allocates more than [`WINDOW`] (the
//! body cap is at most 16 MiB, replies are bounded by their row limits):
//! the only such allocation is tiny_http's drain buffer, and it is only ever
//! written by one socket `read`, which the kernel caps below 2 GiB
//! (`MAX_RW_COUNT`, and a socket returns at most its receive queue).

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are mapped, not malloc'ed. Nothing in
/// the server asks for this much on purpose.
const HUGE: usize = 1 << 30;
/// The most a huge allocation maps (see the module docs).
pub const WINDOW: usize = 4 << 30;

pub struct HugeAllocSafe;

impl HugeAllocSafe {
    fn is_huge(layout: &Layout) -> bool {
        // mmap is page aligned; anything wanting more alignment stays with
        // the system allocator (it will never be this large in practice).
        layout.size() >= HUGE && layout.align() <= 4096
    }

    /// The length actually mapped for a huge allocation of `size`.
    fn mapped_len(size: usize) -> usize {
        size.min(WINDOW)
    }

    unsafe fn map(size: usize) -> *mut u8 {
        let p = libc::mmap(
            std::ptr::null_mut(),
            Self::mapped_len(size),
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
            libc::munmap(ptr as *mut libc::c_void, Self::mapped_len(layout.size()));
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
            // Never read past what was mapped for the old block.
            let old_len = if Self::is_huge(&layout) {
                Self::mapped_len(layout.size())
            } else {
                layout.size()
            };
            std::ptr::copy_nonoverlapping(ptr, new, old_len.min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What tiny_http's drain does with a declared length of 1e15 and of
    /// the largest length `vec!` accepts: allocate zeroed, let one read
    /// write its start, free. Both must succeed (the system allocator
    /// refuses; a full-size mapping fails above the address space).
    #[test]
    fn drain_buffers_up_to_isize_max_are_served() {
        for size in [1_000_000_000_000_000usize, isize::MAX as usize] {
            let layout = Layout::from_size_align(size, 1).expect("valid layout");
            // SAFETY: the test writes only within the mapped window and
            // frees with the same layout.
            unsafe {
                let p = HugeAllocSafe.alloc_zeroed(layout);
                assert!(!p.is_null(), "{size} bytes were refused");
                assert_eq!(*p, 0);
                std::ptr::write_bytes(p, 7, 64 * 1024);
                *p.add(WINDOW - 1) = 1;
                HugeAllocSafe.dealloc(p, layout);
            }
        }
    }
}
