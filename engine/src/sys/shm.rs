//! A shared-memory file seen as 64-bit atomic words: an engine publishes its statistics in
//! one (`/dev/shm/porto.<pid>.<n>`, mode 0600, owner only) and `porto stats` maps it from
//! another process. Atomics on both sides, so a reader racing the writer sees torn *values*
//! (caught by the seqlock above this), never undefined behaviour.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// A mapped segment; the creator unlinks the file when it drops.
#[derive(Debug)]
pub(crate) struct Segment {
    ptr: NonNull<AtomicU64>,
    words: usize,
    path: PathBuf,
    owner: bool,
}

// SAFETY: the mapping is shared memory accessed only through `AtomicU64`s.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl Segment {
    /// Creates `path` (it must not exist) with room for `words` words, mode 0600, zeroed.
    pub(crate) fn create(path: &Path, words: usize) -> io::Result<Segment> {
        let c = cpath(path)?;
        // SAFETY: plain syscalls on a path we own; every result is checked.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = words * 8;
        // SAFETY: as above.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } < 0 {
            let e = io::Error::last_os_error();
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        match Self::map(&fd, words, libc::PROT_READ | libc::PROT_WRITE) {
            Ok(ptr) => Ok(Segment {
                ptr,
                words,
                path: path.to_path_buf(),
                owner: true,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    /// Maps an existing segment read-only (its size is the file's).
    pub(crate) fn open(path: &Path) -> io::Result<Segment> {
        let c = cpath(path)?;
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let words = (std::fs::metadata(path)?.len() / 8) as usize;
        if words == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an empty statistics segment",
            ));
        }
        let ptr = Self::map(&fd, words, libc::PROT_READ)?;
        Ok(Segment {
            ptr,
            words,
            path: path.to_path_buf(),
            owner: false,
        })
    }

    fn map(fd: &OwnedFd, words: usize, prot: i32) -> io::Result<NonNull<AtomicU64>> {
        // SAFETY: a shared mapping of the whole file; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                words * 8,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))
    }

    /// The words. A read-only segment's words may only be loaded.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping holds `words` page-aligned u64s for the segment's life, and is
        // only ever accessed as atomics (by this process and the other side).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.words * 8) };
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
