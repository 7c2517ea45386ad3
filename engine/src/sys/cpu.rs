//! CPU affinity of the calling thread: where shard threads run.

use std::io;

/// A kernel CPU list (`0-3,8,10-11`); `None` if malformed.
pub(crate) fn list(s: &str) -> Option<Vec<usize>> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse().ok()?),
        }
    }
    Some(v)
}

/// Whether this thread may set its own CPU affinity (to the mask it has: nothing changes).
pub(crate) fn probe() -> io::Result<bool> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; the calls fill or read it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a live cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; setting the mask it already has.
    if unsafe { libc::sched_setaffinity(0, size, &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Lets the calling thread run on every CPU in `cpus` (an unpinned shard thread: placement
/// follows the configuration, never the mask of the thread that started the engine — a
/// program that pinned its main thread to one core before starting porto must not get its
/// shards squeezed onto that core too).
pub(crate) fn allow(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: `c` is below CPU_SETSIZE, inside the set.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs online now (`/sys/devices/system/cpu/online`).
pub(crate) fn online() -> io::Result<Vec<usize>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    list(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("a CPU list: {text:?}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_lists_parse_and_garbage_is_refused() {
        assert_eq!(super::list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(super::list(""), Some(vec![]));
        for bad in ["3-1", "a", "1-", "0-99999999"] {
            assert_eq!(super::list(bad), None, "{bad}");
        }
    }
}
