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

/// `CLOCK_REALTIME − CLOCK_MONOTONIC` in ns, to turn a monotonic stamp into a realtime one.
/// The realtime read is bracketed by two monotonic ones and set against their midpoint, and
/// the tightest of up to three tries is kept: a thread preempted between two plain reads
/// would skew the offset by the whole preemption (hundreds of µs on a loaded machine).
pub(crate) fn realtime_minus_monotonic_ns() -> u64 {
    let mut best = (u64::MAX, 0);
    for _ in 0..3 {
        let a = monotonic_ns();
        let r = realtime_ns();
        let b = monotonic_ns();
        let gap = b.saturating_sub(a);
        if gap < best.0 {
            best = (gap, r.saturating_sub(a.saturating_add(gap / 2)));
        }
        if gap < 2_000 {
            break;
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    /// The offset lies in the interval a bracketed reading allows (`realtime − later
    /// monotonic` to `realtime − earlier monotonic`), give or take a millisecond for the clocks'
    /// slewing between the readings and our own bracket: its arithmetic is right.
    #[test]
    fn the_offset_lies_where_a_bracketed_reading_puts_it() {
        let off = super::realtime_minus_monotonic_ns();
        let m1 = super::monotonic_ns();
        let r = super::realtime_ns();
        let m2 = super::monotonic_ns();
        let (lo, hi) = (r.saturating_sub(m2), r.saturating_sub(m1));
        const SLACK: u64 = 1_000_000;
        assert!(off + SLACK >= lo && off <= hi + SLACK, "{off} not in [{lo}, {hi}]");
    }
}
