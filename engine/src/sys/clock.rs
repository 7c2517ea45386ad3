//! The kernel's clocks, as nanosecond counts (std's `Instant` hides its clock's value).

/// Reads `clock` (a vDSO call, no syscall on x86-64 and arm64).
fn now_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime writes only it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// `CLOCK_MONOTONIC` ns: the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` ns since the Unix epoch: the clock of SO_TIMESTAMPING's software stamps.
pub(crate) fn realtime_ns() -> u64 {
    now_ns(libc::CLOCK_REALTIME)
}
