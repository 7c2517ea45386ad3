//! Shared memory seen as 64-bit atomic words: an engine publishes its statistics in one and
//! `porto stats` maps it from another process. Atomics on both sides, so a reader racing
//! the writer sees torn *values* (caught by the seqlock above this), never undefined
//! behaviour.
//!
//! An engine's segment is a memfd (`memfd_create("porto.<pid>.<n>")`): memory with no name
//! in any filesystem, which lives exactly as long as the process holds it — so nothing is
//! left behind however the process ends (`exit` without stopping the engine, a signal,
//! SIGKILL). Readers find it as `/proc/<pid>/fd/<fd>` (root, or the same user). Files made
//! by earlier builds (`/dev/shm/porto.<pid>.<n>`) are still read, and removed by
//! `porto stats --clean`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// A mapped segment. The creator keeps its memfd open (readers' `/proc` path to it) for as
/// long as the segment lives.
#[derive(Debug)]
pub(crate) struct Segment {
    ptr: NonNull<AtomicU64>,
    words: usize,
    path: PathBuf,
    /// The creator's memfd, held (closed on drop) so readers can open it through `/proc`.
    _memfd: Option<OwnedFd>,
}

// SAFETY: the mapping is shared memory accessed only through `AtomicU64`s.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

impl Segment {
    /// Creates an anonymous segment (a memfd named `name`, close-on-exec) of `words` zeroed
    /// words; its path is `/proc/<pid>/fd/<fd>`.
    pub(crate) fn create_memfd(name: &str, words: usize) -> io::Result<Segment> {
        let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: memfd_create takes a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Owner only (reaching it through /proc already needs the same user or root).
        // SAFETY: restricting our own fd.
        let chmod = unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) };
        // SAFETY: sizing our own fd.
        if chmod < 0 || unsafe { libc::ftruncate(fd.as_raw_fd(), (words * 8) as libc::off_t) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let ptr = Self::map(&fd, words, libc::PROT_READ | libc::PROT_WRITE)?;
        Ok(Segment {
            ptr,
            words,
            path: PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd())),
            _memfd: Some(fd),
        })
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
        // fstat, not stat: a `/proc/<pid>/fd/<n>` path's own metadata is the link's.
        // SAFETY: an all-zero stat is valid; fstat fills it from our fd.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open; `st` is a live stat.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let words = (st.st_size / 8) as usize;
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
            _memfd: None,
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
    }
}
