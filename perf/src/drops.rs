//! What a stopping porto program (`porto echo`, `porto mcast sub`) says it lost: the
//! engine's drops and pauses by reason, each with what to do about it.

use porto::{DropReason, Stats};

/// The engine counters reported by reason: (counter, what it means and what to do about it).
const ENGINE: [(&str, &str); 4] = [
    (
        "recv_truncated",
        "datagrams larger than a frame, cut (raise --frame-size)",
    ),
    (
        "port_backlog_drops",
        "datagrams dropped: the completion port stayed full (the application side fell behind)",
    ),
    (
        "ops_rejected",
        "operations refused: the op table was full (raise ops_max)",
    ),
    (
        "recv_nobufs",
        "receives paused for want of pool frames (not lost: the kernel kept them; raise --frames)",
    ),
];

/// Drops summed over shards.
#[derive(Clone, Copy, Debug, Default)]
pub struct Drops {
    /// AF_XDP frames dropped, in `DropReason::ALL` order.
    xdp: [u64; DropReason::ALL.len()],
    /// The shards' own losses and pauses, in [`ENGINE`] order.
    engine: [u64; ENGINE.len()],
}

impl Drops {
    /// Adds one shard's counters.
    pub fn add(&mut self, stats: &Stats) {
        for (n, r) in self.xdp.iter_mut().zip(DropReason::ALL) {
            *n += stats.xdp_drop(r);
        }
        let s = stats.counters.snapshot();
        let now = [s.recv_truncated, s.port_backlog_drops, s.ops_rejected, s.recv_nobufs];
        for (v, n) in self.engine.iter_mut().zip(now) {
            *v += n;
        }
    }

    /// The engine's own losses and pauses that happened: (counter, count, what to do).
    pub fn engine(&self) -> impl Iterator<Item = (&'static str, u64, &'static str)> + '_ {
        ENGINE
            .iter()
            .zip(self.engine)
            .filter(|d| d.1 > 0)
            .map(|(&(name, why), n)| (name, n, why))
    }

    /// The AF_XDP drops that happened, by reason.
    pub fn xdp(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .zip(self.xdp)
            .filter(|d| d.1 > 0)
            .map(|(r, n)| (*r, n))
    }

    /// Prints each drop that happened, a line each, with its fix; nothing if none did.
    pub fn print(&self) {
        for (name, n, why) in self.engine() {
            println!("  {name}: {n}: {why}");
        }
        for (reason, n) in self.xdp() {
            match reason.fix() {
                Some(fix) => println!("  AF_XDP dropped {n} frame(s): {reason:?}: {fix}"),
                None => println!("  AF_XDP dropped {n} frame(s): {reason:?}"),
            }
        }
    }
}
