//! One anonymous memory mapping: the backing store of a shard's buffer pool.
//!
//! The region is mapped once at shard start and never moves or grows, so addresses handed to
//! the kernel (fixed buffers, provided buffers) stay valid for the region's whole life.

use std::io;
use std::ptr::NonNull;

/// What backs the region's pages; reported, never silently chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    /// Explicit 2 MiB huge pages (MAP_HUGETLB) from the reserved pool.
    HugeTlb,
    /// 4 KiB pages with transparent huge pages requested (MADV_HUGEPAGE).
    Small,
}

impl std::fmt::Display for PageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PageKind::HugeTlb => "2MiB hugetlb",
            PageKind::Small => "4KiB (THP advised)",
        })
    }
}

const HUGE_PAGE_BYTES: usize = 2 << 20;

/// An anonymous, zero-filled, page-aligned mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    kind: PageKind,
    /// Why explicit huge pages were asked for and not obtained (the mmap's errno).
    huge_refused: Option<io::Error>,
}

// SAFETY: the region is plain memory; who may touch which bytes is decided by the pool's
// ownership rules above it, not by the thread that holds the `Region`.
unsafe impl Send for Region {}
// SAFETY: as above; `Region` itself only hands out raw pointers.
unsafe impl Sync for Region {}

impl Region {
    /// Maps `len` bytes, trying huge pages first when `try_huge` is set.
    pub(crate) fn new(len: usize, try_huge: bool) -> io::Result<Region> {
        assert!(len > 0, "region length must be positive");
        let mut huge_refused = None;
        if try_huge {
            let huge_len = len.div_ceil(HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES;
            match map(huge_len, libc::MAP_HUGETLB) {
                Ok(ptr) => {
                    return Ok(Region {
                        ptr,
                        len: huge_len,
                        kind: PageKind::HugeTlb,
                        huge_refused: None,
                    })
                }
                Err(e) => huge_refused = Some(e),
            }
        }
        let ptr = map(len, 0)?;
        // SAFETY: `ptr..ptr+len` is the mapping just created; madvise only changes paging
        // policy. Failure (THP disabled) is harmless and ignored.
        unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
        Ok(Region {
            ptr,
            len,
            kind: PageKind::Small,
            huge_refused,
        })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Why explicit huge pages were asked for and not obtained, if they were not.
    pub(crate) fn huge_refused(&self) -> Option<&io::Error> {
        self.huge_refused.as_ref()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn kind(&self) -> PageKind {
        self.kind
    }
}

fn map(len: usize, extra_flags: libc::c_int) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with a null hint touches no existing memory.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | extra_flags,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(ptr.cast()).expect("mmap returned null without MAP_FIXED"))
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping created in `new`; every user of the
        // region holds an `Arc` to its owner, so nothing references it any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_is_zeroed_and_writable() {
        let r = Region::new(64 * 1024, false).unwrap();
        assert_eq!(r.kind(), PageKind::Small);
        assert!(r.len() >= 64 * 1024);
        // SAFETY: the test owns the whole region.
        let s = unsafe { std::slice::from_raw_parts_mut(r.as_ptr(), r.len()) };
        assert!(s.iter().all(|&b| b == 0));
        s[100] = 7;
        assert_eq!(s[100], 7);
    }
}
