//! The memory allocator of the image's static musl binary, which serves both a
//! long-running operator and a batch command (`validate`).
//!
//! musl's malloc suits the operator: it returns memory as it frees it, and the
//! image's operator used 42 to 46 MiB at 10,000 Applications where mimalloc made
//! it 63 to 86 MiB (docs/benchmark.md, "Which build"). It does not suit a batch job that
//! allocates about 840 times per manifest: each call is slow, and one global lock
//! serialises every thread that allocates, so `validate` could use one core only
//! and missed its target (10,000 manifests in a second). So the process starts on
//! musl's allocator, and a batch command switches new allocations to mimalloc
//! before it starts any other thread. Memory is always freed by the allocator it
//! came from: mimalloc answers whether a pointer lies in its heap (a lookup in its
//! own page map, which is exact), and every other pointer is musl's.
//!
//! Other builds keep the platform's allocator, whose threads do not contend
//! (glibc's arenas). The arm64 image keeps musl's alone: mimalloc would be
//! compiled there against glibc's cross headers, and that image is never run
//! here (docs/release.md), so it would ship untested.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether new allocations go to mimalloc (only ever switched from false to true).
static BATCH: AtomicBool = AtomicBool::new(false);

/// Prepares the process for allocation-heavy work on all cores. Call it on the
/// main thread before any other thread starts.
pub fn use_batch_allocator() {
    BATCH.store(true, Ordering::Release);
}

/// Whether threads that allocate at once run in parallel rather than in turn.
pub fn threads_allocate_in_parallel() -> bool {
    if cfg!(all(target_env = "musl", target_arch = "x86_64")) {
        BATCH.load(Ordering::Acquire)
    } else {
        !cfg!(target_env = "musl")
    }
}

#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
mod switching {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::Ordering;

    use mimalloc::MiMalloc;

    use super::BATCH;

    /// musl's allocator until `use_batch_allocator`, mimalloc after; each pointer
    /// goes back to the allocator that made it.
    struct Switching;

    #[global_allocator]
    static ALLOCATOR: Switching = Switching;

    fn batch() -> bool {
        BATCH.load(Ordering::Acquire)
    }

    /// Whether mimalloc made `ptr`. Before the switch none can have been.
    fn from_mimalloc(ptr: *mut u8) -> bool {
        // SAFETY: a read-only lookup that accepts any address.
        batch() && unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
    }

    // SAFETY: every call is forwarded to an allocator that upholds GlobalAlloc's
    // contract, and a pointer is only ever freed or resized by the one that made it.
    unsafe impl GlobalAlloc for Switching {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { if batch() { MiMalloc.alloc(layout) } else { System.alloc(layout) } }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            unsafe { if batch() { MiMalloc.alloc_zeroed(layout) } else { System.alloc_zeroed(layout) } }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { if from_mimalloc(ptr) { MiMalloc.dealloc(ptr, layout) } else { System.dealloc(ptr, layout) } }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            unsafe {
                if from_mimalloc(ptr) {
                    MiMalloc.realloc(ptr, layout, new_size)
                } else {
                    System.realloc(ptr, layout, new_size)
                }
            }
        }
    }
}
