//! Moving the calling thread into a network namespace (setns(2)).

use std::io;
use std::os::fd::AsRawFd;

/// Moves the calling thread into the namespace at `path` (e.g. /var/run/netns/NAME).
/// Threads it spawns afterwards start in that namespace too.
pub(crate) fn enter(path: &str) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: setns on an fd we hold open; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
