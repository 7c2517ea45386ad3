//! Per-shard counters and an operation-latency histogram, readable while the shard runs.
//!
//! Counters are `Relaxed` atomics written only by the shard thread: readers see each value
//! eventually and exactly; no ordering between counters is promised.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::wire::DropReason;

macro_rules! counters {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        /// Live counters of one shard.
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$m])* pub $name: AtomicU64,)* }

        /// A copy of [`Counters`] at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Snapshot { $($(#[$m])* pub $name: u64,)* }

        impl Counters {
            /// The counters' names, in declaration order (the order they are published in).
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];

            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }

            /// Writes every counter, in [`Counters::NAMES`] order, into `out` (at least that
            /// long); returns how many.
            pub(crate) fn load_into(&self, out: &mut [u64]) -> usize {
                let mut i = 0;
                $(
                    out[i] = self.$name.load(Ordering::Relaxed);
                    i += 1;
                )*
                i
            }
        }
    };
}

counters! {
    /// Operations accepted into the op table.
    ops_submitted,
    /// Terminal completions delivered.
    ops_completed,
    /// Datagrams or stream chunks received.
    receives,
    recv_bytes,
    /// Send operations completed successfully.
    sends,
    send_bytes,
    /// Zero-copy sends whose notification said the kernel used the pages in place.
    zc_sends,
    /// Zero-copy sends the kernel had to copy (IORING_NOTIF_USAGE_ZC_COPIED).
    zc_copied,
    /// Multishot receives stopped by an empty buffer ring (re-armed when frames return).
    recv_nobufs,
    /// Single-shot receives the kernel ended with EAGAIN (several on one socket raced for a
    /// datagram), re-armed instead of completing.
    recv_rearmed,
    /// Datagrams larger than a frame (delivered truncated with MessageTooLong).
    recv_truncated,
    /// Operations refused because the op table was full (NoBuffers).
    ops_rejected,
    /// Completions that found their port full and waited in the port's backlog.
    port_full,
    /// Datagrams of multishot receives dropped because their port's backlog was full too.
    port_backlog_drops,
    /// Terminal completions put in a port's overflow list (its backlog full, or shutdown).
    port_overflow,
    /// Times the CQ overflow flag was found set (completions parked in the kernel, then flushed).
    cq_overflows,
    /// Cancellations issued.
    cancels,
    /// Posts this polling shard sent to another (`Shard::post_to`).
    posts_sent,
    /// Of those, posts that found their target asleep and woke it by an io_uring MSG_RING
    /// into its ring (no syscall of their own).
    post_wakes_ring,
    /// Posts that woke their target through its eventfd (epoll on either side, or a
    /// MSG_RING that failed or had no record free).
    post_wakes_eventfd,
    /// Frames currently in the provided-buffer ring (a gauge).
    bufring_frames,
    /// Free frames in the pool at the last update (a gauge).
    pool_free,
    /// Completions with an unknown or stale user_data (must stay 0).
    stray_cqes,
    /// Sockets the kernel refused a registered-file slot (IORING_REGISTER_FILES_UPDATE):
    /// their operations name the fd instead.
    sockets_by_fd,
    /// AF_XDP: valid UDP frames delivered.
    xdp_rx,
    /// AF_XDP: frames handed to the TX ring.
    xdp_tx,
    /// AF_XDP: frames dropped as malformed (the per-reason split is `Stats::xdp_drop`).
    xdp_malformed,
    /// AF_XDP: valid frames for a port with no receive armed.
    xdp_no_receiver,
    /// AF_XDP: sends to an address with no known MAC (HostUnreachable).
    xdp_no_neighbor,
    /// AF_XDP: sends refused because the TX ring was full (NoBuffers).
    xdp_tx_full,
    /// Payload copies made by AF_XDP send_to_many (one frame per destination), where the
    /// socket has no multi-buffer support.
    xdp_send_copies,
    /// AF_XDP send_to_many destinations sent as multi-buffer packets: a header frame and the
    /// shared payload frame, no copy.
    xdp_send_multi_buffer,
    /// AF_XDP: descriptors whose address or length lay outside the UMEM, or named a frame
    /// the kernel was not lent (ignored).
    xdp_bad_desc,
    /// AF_XDP: frames of closed zero-copy sockets kept out of the pool until the kernel
    /// released their queues (what is held now is part of `Shard::frames_in_rings`).
    xdp_frames_quarantined,
    /// AF_XDP: quarantined frames returned to the pool once their queues were released.
    xdp_frames_released,
    /// AF_XDP: quarantined frames given up on (the queue stayed busy past the bound): never
    /// lent out again.
    xdp_frames_leaked,
    /// AF_XDP: ring indices the kernel side moved by more than the ring's size, or back
    /// (clamped: nothing read).
    xdp_bad_ring_index,
    /// Commands from handles whose socket had closed (refused; RIO requests end NotSocket).
    stale_commands,
    /// AF_XDP: neighbour entries learned or moved from received frames (bounded table).
    xdp_neighbor_learned,
    /// AF_XDP: frames whose source claimed a statically configured neighbour's IP from
    /// another MAC (the static entry was kept).
    xdp_neighbor_conflict,
}

/// Counters plus a latency histogram (ns, submit to completion of single-shot operations).
#[derive(Debug)]
pub struct Stats {
    pub counters: Counters,
    /// AF_XDP drops by [`DropReason`] (indexed by `DropReason::index`).
    pub xdp_drops: [AtomicU64; DropReason::ALL.len()],
    latency: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            counters: Counters::default(),
            xdp_drops: Default::default(),
            latency: Mutex::new(new_histogram()),
        }
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds are valid")
}

impl Stats {
    pub(crate) fn add(&self, c: &AtomicU64, n: u64) {
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub(crate) fn set(&self, c: &AtomicU64, v: u64) {
        c.store(v, Ordering::Relaxed);
    }

    /// Merges the shard's local histogram if the lock is free (never blocks the shard).
    pub(crate) fn merge_latency(&self, local: &mut Histogram<u64>) {
        if local.is_empty() {
            return;
        }
        if let Ok(mut h) = self.latency.try_lock() {
            h.add(&*local).expect("histograms share bounds");
            local.reset();
        }
    }

    /// AF_XDP drops for one reason.
    pub fn xdp_drop(&self, r: DropReason) -> u64 {
        self.xdp_drops[r.index()].load(Ordering::Relaxed)
    }

    /// Count, p50, p99, p99.9 and max of the latency histogram so far (ns), read in place
    /// (no copy, no allocation); `None` while the shard holds the lock or nothing was recorded.
    pub(crate) fn latency_summary(&self) -> Option<[u64; 5]> {
        let h = self.latency.try_lock().ok()?;
        if h.is_empty() {
            return None;
        }
        Some([
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
        ])
    }

    /// A copy of the operation-latency histogram so far.
    pub fn latency(&self) -> Histogram<u64> {
        self.latency.lock().expect("stats lock poisoned").clone()
    }
}
