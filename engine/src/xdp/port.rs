//! The shard side of an AF_XDP UDP socket: keeps the FILL ring stocked from the pool,
//! validates received frames (each drop counted by reason), delivers datagrams as pool
//! buffers without copying, writes headers in front of outgoing payloads, and hands each
//! sent buffer back when the kernel's COMPLETION ring returns its frame.
//!
//! Neighbour resolution: a small fixed table learned from the source MAC of every valid frame
//! received, plus entries the application adds ([`crate::socket::XdpUdpSocket::add_neighbor`]).
//! ARP itself is the kernel's: the XDP program passes ARP frames up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::completion::{Completion, OpKind};
use crate::driver::Transport;
use crate::error::Error;
use crate::pool::{Buf, Pool, SharedBuf};
use crate::stats::Stats;
use crate::sys::clock;
use crate::sys::xsk::{Xsk, XskMode};
use crate::telemetry::QueueStats;
use crate::wire::{self, MacAddr, UdpHeaders};
use crate::xdp::neighbors::{Learned, Neighbors};
use crate::xdp::program::Stamping;
use crate::xdp::shared::SharedProgram;

/// Frames handled per ring per turn.
/// Frames read from one RX ring per turn.
pub(crate) const RX_BATCH_MAX: u32 = 64;
const BATCH: u32 = RX_BATCH_MAX;
/// Multicast memberships (group, source) per port.
pub(crate) const GROUPS_MAX: usize = 64;

/// A fixed table of up to [`GROUPS_MAX`] address pairs (memberships, blocked sources):
/// unordered, no allocation after it is made.
#[derive(Debug)]
struct Pairs {
    at: [(IpAddr, IpAddr); GROUPS_MAX],
    len: usize,
}

impl Pairs {
    fn new() -> Pairs {
        let none = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Pairs {
            at: [(none, none); GROUPS_MAX],
            len: 0,
        }
    }

    fn iter(&self) -> impl Iterator<Item = (IpAddr, IpAddr)> + '_ {
        self.at[..self.len].iter().copied()
    }

    fn contains(&self, e: (IpAddr, IpAddr)) -> bool {
        self.iter().any(|x| x == e)
    }

    /// Adds (`on`) or removes `e`; false only when adding to a full table.
    fn set(&mut self, e: (IpAddr, IpAddr), on: bool) -> bool {
        let at = self.iter().position(|x| x == e);
        match (at, on) {
            (Some(_), true) => true,
            (None, true) if self.len < GROUPS_MAX => {
                self.at[self.len] = e;
                self.len += 1;
                true
            }
            (None, true) => false,
            (Some(i), false) => {
                self.len -= 1;
                self.at[i] = self.at[self.len];
                true
            }
            (None, false) => true,
        }
    }

    /// Keeps only the pairs `keep` accepts.
    fn retain(&mut self, keep: impl Fn(&(IpAddr, IpAddr)) -> bool) {
        let mut i = 0;
        while i < self.len {
            if keep(&self.at[i]) {
                i += 1;
            } else {
                self.len -= 1;
                self.at[i] = self.at[self.len];
            }
        }
    }
}

/// A send whose frame the kernel holds: (token, payload offset, payload length, buffer).
/// A send in the TX/COMPLETION rings, by its (first) frame.
struct PendingSend {
    token: u64,
    /// The window handed back (the payload), or for a multi-buffer send the payload length.
    off: u32,
    len: u32,
    buf: Buf,
    to: SocketAddr,
    /// `buf` holds only the headers of a multi-buffer send: it is not handed back.
    headers_only: bool,
}

/// DSCP 46 (EF) and above: expedited forwarding, network and internetwork control, and
/// QOS2's Voice and Control (56).
const DSCP_EXPEDITED: u8 = 46;

/// An IPv4 or IPv6 frame whose DSCP is expedited (a malformed one is not: it is only
/// counted later).
fn expedited(frame: &[u8]) -> bool {
    let tos = match frame.get(12..16) {
        Some([0x08, 0x00, _, tos]) => *tos,
        // IPv6: the traffic class is the 8 bits after the version nibble.
        Some([0x86, 0xdd, v, tc]) => (v << 4) | (tc >> 4),
        _ => return false,
    };
    tos >> 2 >= DSCP_EXPEDITED
}

/// The metadata porto's XDP program writes in front of a steered frame (`struct porto_meta`
/// in `xdp-programs/porto_xdp.bpf.c`): a magic, then the CLOCK_MONOTONIC ns it ran at.
const META_MAGIC: u64 = u64::from_le_bytes(*b"PORTOTS1");
const META_LEN: usize = 16;

/// The receive stamp in the metadata in front of the frame's bytes at `off`, as
/// CLOCK_REALTIME ns (`mono_to_real` added), the magic cleared so a later use of the frame
/// without metadata (a driver refusing `bpf_xdp_adjust_meta`) is never read as stamped.
/// Untrusted bytes: a missing or zero stamp is `None`.
fn take_stamp(frame: &mut [u8], off: usize, mono_to_real: u64) -> Option<std::num::NonZeroU64> {
    let m = frame.get_mut(off.checked_sub(META_LEN)?..off)?;
    let (magic, ns) = m.split_at_mut(8);
    if u64::from_le_bytes(magic.try_into().ok()?) != META_MAGIC {
        return None;
    }
    magic.fill(0);
    let mono = u64::from_le_bytes(ns.try_into().ok()?);
    std::num::NonZeroU64::new(mono.checked_add(mono_to_real)?)
}

/// Validates an RX descriptor against the FILL ownership table `in_kernel` (per frame: the
/// filling queue + 1, or 0) for queue `owner`: the frame must lie in the UMEM, the bytes in
/// the frame, and the frame must be one this queue gave the kernel. On success the frame is
/// the caller's again: `(frame, offset)`. Untrusted input, so nothing here can panic.
pub(crate) fn claim_desc(
    in_kernel: &mut [u16],
    owner: u16,
    addr: u64,
    len: u32,
    frame_size: u32,
) -> Option<(u32, u32)> {
    let fs = u64::from(frame_size);
    let (frame, off) = (addr / fs, addr % fs);
    let slot = in_kernel.get_mut(usize::try_from(frame).ok()?)?;
    if *slot != owner || owner == 0 || off + u64::from(len) > fs {
        return None;
    }
    *slot = 0;
    Some((frame as u32, off as u32))
}

/// One AF_XDP socket of a port: one interface queue.
struct Queue {
    xsk: Xsk,
    /// Inside a received packet that spans several descriptors (being dropped).
    in_multi: bool,
    /// Frames this queue's FILL/RX rings hold.
    filled: u32,
    poll_armed: bool,
}

/// State of one AF_XDP port (a socket per interface queue over one UMEM), owned by its shard.
/// Receives come from every queue; sends go out through the first.
pub(crate) struct XdpPort {
    queues: Vec<Queue>,
    /// IPv4 or IPv6: the family of every datagram the port takes and sends.
    pub local: SocketAddr,
    mac: MacAddr,
    pub tos: u8,
    /// The token of the armed multishot receive.
    pub recv_token: Option<u64>,
    fill_target: u32,
    /// Per frame: which queue's FILL/RX rings hold it (queue + 1; 0: none). A received
    /// descriptor is claimed only on the queue it was filled on, so a hostile or buggy RX
    /// ring cannot hand back a frame twice or drive another queue's count below zero.
    in_kernel: Box<[u16]>,
    /// Buffers in TX/COMPLETION, by frame.
    tx_pending: Box<[Option<PendingSend>]>,
    tx_pending_count: u32,
    /// Payload frames of multi-buffer sends, by frame: descriptors in flight, and the handle
    /// that keeps the frame until the last completes.
    tx_shared: Box<[(u32, Option<SharedBuf>)]>,
    tx_shared_frames: u32,
    neighbors: Neighbors,
    /// A drop with a set-up cause (`DropReason::fix`) was seen and the fix logged (once).
    warned_set_up_drop: bool,
    /// Bad ring indices already added to the shard's counter.
    bad_indices_counted: u64,
    /// Joined (group, source) pairs of the port's family; source unspecified = any source.
    groups: Pairs,
    /// Sources blocked from an any-source membership (exclude mode): (group, source).
    blocked: Pairs,
    /// Frames were queued on TX since the last kick.
    tx_unkicked: bool,
    /// Receive coalescing: (frames, longest wait); see `XdpOptions::rx_coalesce`.
    pub rx_coalesce: Option<(u32, std::time::Duration)>,
    /// Deliver expedited frames of a batch first (`XdpOptions::dscp_priority`).
    pub dscp_priority: bool,
    /// Quarantine the frames at close even in copy mode (`XdpOptions::hold_frames_on_close`).
    pub hold_on_close: bool,
    /// Each frame's receive stamp (`XdpOptions::timestamps`), and where it comes from.
    pub timestamps: Stamping,
    /// `Stamping::Metadata`: CLOCK_REALTIME − CLOCK_MONOTONIC, sampled once per receive call;
    /// `Stamping::Reap`: CLOCK_REALTIME read once per receive call, every frame's stamp.
    stamp_base_ns: u64,
    /// The interface's program, for its counters in `porto stats`.
    pub program: Option<Arc<SharedProgram>>,
    /// When the RX rings were first seen holding too few frames to read.
    rx_waiting_since: Option<std::time::Instant>,
}

impl std::fmt::Debug for XdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPort")
            .field("queues", &self.queues.iter().map(|q| q.xsk.queue).collect::<Vec<_>>())
            .field("local", &self.local)
            .finish()
    }
}

impl XdpPort {
    /// `xsks` share one UMEM (the first registered it); `fill_target` frames per queue.
    pub(crate) fn new(xsks: Vec<Xsk>, local: SocketAddr, mac: MacAddr, frames: u32, fill_target: u32) -> XdpPort {
        assert!(!xsks.is_empty(), "a port has at least one socket");
        XdpPort {
            queues: xsks
                .into_iter()
                .map(|xsk| Queue {
                    xsk,
                    in_multi: false,
                    filled: 0,
                    poll_armed: false,
                })
                .collect(),
            local,
            mac,
            tos: 0,
            recv_token: None,
            fill_target,
            in_kernel: vec![0; frames as usize].into_boxed_slice(),
            tx_pending: (0..frames).map(|_| None).collect(),
            tx_pending_count: 0,
            tx_shared: (0..frames).map(|_| (0, None)).collect(),
            tx_shared_frames: 0,
            neighbors: Neighbors::new(),
            warned_set_up_drop: false,
            bad_indices_counted: 0,
            groups: Pairs::new(),
            blocked: Pairs::new(),
            tx_unkicked: false,
            rx_coalesce: None,
            rx_waiting_since: None,
            dscp_priority: false,
            hold_on_close: false,
            timestamps: Stamping::Off,
            stamp_base_ns: 0,
            program: None,
        }
    }

    /// AF_XDP zero-copy or copy mode.
    pub(crate) fn transport(&self) -> Transport {
        self.queues[0].xsk.mode.into()
    }

    /// Each queue's rings and kernel counters, for `porto stats` (a getsockopt per queue and
    /// a map read: control-path cost, once per publication).
    pub(crate) fn queue_stats(&self, socket: u32, mut f: impl FnMut(QueueStats)) {
        let program = self
            .program
            .as_ref()
            .and_then(|p| p.counters().ok())
            .unwrap_or_default();
        for q in &self.queues {
            let x = &q.xsk;
            f(QueueStats {
                socket,
                queue: x.queue,
                zero_copy: x.mode == XskMode::ZeroCopy,
                fill: x.fill.occupancy(),
                rx: x.rx.occupancy(),
                tx: x.tx.occupancy(),
                completion: x.comp.occupancy(),
                kernel: crate::sys::xsk::statistics(x.as_raw_fd()).unwrap_or_default(),
                program,
            });
        }
    }

    /// The first socket's fd (the port's identity).
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.queues[0].xsk)
    }

    pub(crate) fn queue_count(&self) -> u32 {
        self.queues.len() as u32
    }

    /// The fd of queue `i` if its wake-up poll is not armed.
    pub(crate) fn unarmed_fd(&self, i: u32) -> Option<std::os::fd::RawFd> {
        self.queues
            .get(i as usize)
            .filter(|q| !q.poll_armed)
            .map(|q| std::os::fd::AsRawFd::as_raw_fd(&q.xsk))
    }

    pub(crate) fn poll_armed(&self, i: u32) -> bool {
        self.queues.get(i as usize).is_some_and(|q| q.poll_armed)
    }

    pub(crate) fn set_poll_armed(&mut self, queue: u32, armed: bool) {
        if let Some(q) = self.queues.get_mut(queue as usize) {
            q.poll_armed = armed;
        }
    }

    /// Frames are waiting to be read (while holding for a coalesced batch: the whole batch).
    pub(crate) fn rx_ready(&mut self) -> bool {
        match (self.rx_coalesce, self.rx_waiting_since) {
            (Some((frames, _)), Some(_)) => {
                self.queues.iter_mut().map(|q| q.xsk.rx.available(BATCH)).sum::<u32>() >= frames
            }
            _ => self.queues.iter_mut().any(|q| q.xsk.rx.available(1) > 0),
        }
    }

    /// While holding received frames for a coalesced batch: when the first will have waited
    /// long enough. A sleeping shard arms no poll for this port then (it would fire at once)
    /// and sleeps no longer than this.
    pub(crate) fn holding_until(&self) -> Option<std::time::Instant> {
        Some(self.rx_waiting_since? + self.rx_coalesce?.1)
    }

    pub(crate) fn tx_in_flight(&self) -> u32 {
        self.tx_pending_count
    }

    /// Frames this port's rings hold: FILL + RX (the kernel's or not yet read) and TX +
    /// COMPLETION (sends not yet reaped). With the pool's free frames, the shard's buffer
    /// ring and what the application holds, they make up the pool: frame conservation.
    pub(crate) fn frames_held(&self) -> u32 {
        self.queues.iter().map(|q| q.filled).sum::<u32>() + self.tx_pending_count + self.tx_shared_frames
    }

    /// The TX socket was bound for multi-buffer packets (XDP_USE_SG).
    pub(crate) fn multi_buffer(&self) -> bool {
        self.queues[0].xsk.multi_buffer
    }

    /// Debug builds: the per-frame ownership tables agree with the counters.
    #[cfg(debug_assertions)]
    pub(crate) fn check_conservation(&self) {
        let in_kernel = self.in_kernel.iter().filter(|&&k| k != 0).count() as u32;
        assert_eq!(
            in_kernel,
            self.queues.iter().map(|q| q.filled).sum::<u32>(),
            "FILL+RX frames disagree with the ownership table"
        );
        let pending = self.tx_pending.iter().filter(|p| p.is_some()).count() as u32;
        assert_eq!(
            pending, self.tx_pending_count,
            "TX+COMPLETION frames disagree with the table"
        );
    }

    /// A static neighbour entry (the application's; traffic never overwrites it). False if
    /// every slot of the table is static already.
    pub(crate) fn add_neighbor(&mut self, ip: IpAddr, mac: MacAddr) -> bool {
        self.neighbors.add_static(ip, mac)
    }

    /// Learns the sender of a valid frame (bounded; a static entry is never overwritten).
    fn learn(&mut self, ip: IpAddr, mac: MacAddr, stats: &Stats) {
        match self.neighbors.learn(ip, mac) {
            Learned::Known => {}
            Learned::Added | Learned::Moved => stats.add(&stats.counters.xdp_neighbor_learned, 1),
            Learned::StaticConflict => stats.add(&stats.counters.xdp_neighbor_conflict, 1),
        }
    }

    /// Adds or removes a membership (`source` None: any source). False if the table is full.
    pub(crate) fn set_group(&mut self, group: IpAddr, source: Option<IpAddr>, join: bool) -> bool {
        if source.is_none() && !join {
            // Leaving an any-source membership ends its blocks, as the kernel's does.
            self.blocked.retain(|&(g, _)| g != group);
        }
        self.groups
            .set((group, source.unwrap_or(wire::unspecified(group))), join)
    }

    /// Blocks (`on`) or unblocks `source` of the any-source membership of `group`. False if
    /// the table is full.
    pub(crate) fn set_block(&mut self, group: IpAddr, source: IpAddr, on: bool) -> bool {
        self.blocked.set((group, source), on)
    }

    /// A datagram to `dst` from `src` is this port's: of its family, to its own address (or
    /// any, if bound to the unspecified address) for unicast; a joined group, from an
    /// included source (or any source not blocked), for multicast.
    fn accepts(&self, dst: IpAddr, src: IpAddr) -> bool {
        if dst.is_ipv4() != self.local.is_ipv4() {
            return false;
        }
        if dst.is_multicast() {
            return self
                .groups
                .iter()
                .any(|(g, s)| g == dst && (s == src || (s.is_unspecified() && !self.blocked.contains((dst, src)))));
        }
        self.local.ip().is_unspecified() || dst == self.local.ip()
    }

    fn neighbor(&self, ip: IpAddr) -> Option<MacAddr> {
        match ip {
            // RFC 1112: 01:00:5e and the group's low 23 bits.
            IpAddr::V4(g) if g.is_multicast() => {
                let o = g.octets();
                Some(MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]))
            }
            // RFC 2464: 33:33 and the group's low 32 bits.
            IpAddr::V6(g) if g.is_multicast() => {
                let o = g.octets();
                Some(MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]]))
            }
            _ => self.neighbors.get(ip),
        }
    }

    /// Tops every queue's FILL ring up from the pool.
    pub(crate) fn refill(&mut self, pool: &Pool) {
        for (qi, q) in self.queues.iter_mut().enumerate() {
            let owner = qi as u16 + 1;
            let want = self.fill_target.saturating_sub(q.filled);
            let free = q.xsk.fill.free(want).min(want);
            let mut n = 0;
            while n < free {
                let Some(frame) = pool.take_frame() else { break };
                q.xsk.fill.write(n, pool.frame_addr(frame) - pool.frame_addr(0));
                self.in_kernel[frame as usize] = owner;
                n += 1;
            }
            if n > 0 {
                q.xsk.fill.submit(n);
                q.filled += n;
                if q.xsk.fill.needs_wakeup() {
                    q.xsk.kick_rx();
                }
            }
        }
    }

    /// Takes received frames from every queue: valid ones become completions, the rest are
    /// counted drops. Returns how many frames were taken.
    pub(crate) fn receive(&mut self, pool: &Pool, stats: &Stats, key: u64, deliver: &mut dyn FnMut(Completion)) -> u32 {
        if self.hold_for_batch() {
            return 0;
        }
        let mut total = 0;
        if self.timestamps == Stamping::Metadata {
            self.stamp_base_ns = clock::realtime_minus_monotonic_ns();
        }
        for qi in 0..self.queues.len() {
            let n = self.queues[qi].xsk.rx.available(BATCH);
            if n > 0 && self.timestamps == Stamping::Reap {
                // After the ring's producer index was read: every frame of the batch was in
                // the ring before this instant.
                self.stamp_base_ns = clock::realtime_ns();
            }
            if self.dscp_priority {
                // Claim the batch, then deliver expedited frames (DSCP >= 46: EF, CS6, CS7,
                // QOS2 Voice/Control) first, each group in arrival order.
                let mut batch: [Option<Buf>; BATCH as usize] = std::array::from_fn(|_| None);
                for (i, slot) in batch.iter_mut().enumerate().take(n as usize) {
                    let d = self.queues[qi].xsk.rx.read(i as u32);
                    let spans = self.spans_frames(qi, d, stats);
                    *slot = self.claim(qi, d, pool, stats).filter(|_| !spans);
                }
                for urgent in [true, false] {
                    for slot in batch.iter_mut().take(n as usize) {
                        if slot.as_ref().is_some_and(|b| expedited(b) == urgent) {
                            let buf = slot.take().expect("checked");
                            self.process(buf, stats, key, deliver);
                        }
                    }
                }
            } else {
                for i in 0..n {
                    let d = self.queues[qi].xsk.rx.read(i);
                    let spans = self.spans_frames(qi, d, stats);
                    if let Some(buf) = self.claim(qi, d, pool, stats).filter(|_| !spans) {
                        self.process(buf, stats, key, deliver);
                    }
                }
            }
            if n > 0 {
                self.queues[qi].xsk.rx.release(n);
            }
            total += n;
        }
        self.count_bad_indices(stats);
        total
    }

    /// Adds ring indices found out of range since the last call to the shard's counter.
    fn count_bad_indices(&mut self, stats: &Stats) {
        let all: u64 = self
            .queues
            .iter()
            .map(|q| q.xsk.fill.bad_indices + q.xsk.comp.bad_indices + q.xsk.rx.bad_indices + q.xsk.tx.bad_indices)
            .sum();
        if all > self.bad_indices_counted {
            stats.add(&stats.counters.xdp_bad_ring_index, all - self.bad_indices_counted);
            self.bad_indices_counted = all;
        }
    }

    /// A descriptor of a received packet that spans several frames (only a multi-buffer
    /// socket receives those: the packet is larger than a frame). Its frames go back to the
    /// pool; the packet is dropped and counted once, as oversize.
    fn spans_frames(&mut self, qi: usize, d: libc::xdp_desc, stats: &Stats) -> bool {
        let more = d.options & libc::XDP_PKT_CONTD != 0;
        let q = &mut self.queues[qi];
        if !more && !q.in_multi {
            return false;
        }
        q.in_multi = more;
        if !more {
            stats.add(&stats.xdp_drops[wire::DropReason::Oversize.index()], 1);
            stats.add(&stats.counters.xdp_malformed, 1);
        }
        true
    }

    /// Takes the frame of received descriptor `d` of queue `qi` back from the kernel, as a
    /// `Buf` over the received bytes; a descriptor pointing outside the UMEM or at a frame the
    /// kernel was not given is counted and ignored (untrusted input).
    fn claim(&mut self, qi: usize, d: libc::xdp_desc, pool: &Pool, stats: &Stats) -> Option<Buf> {
        let Some((frame, off)) = claim_desc(&mut self.in_kernel, qi as u16 + 1, d.addr, d.len, pool.frame_size())
        else {
            stats.add(&stats.counters.xdp_bad_desc, 1);
            return None;
        };
        self.queues[qi].filled -= 1;
        Some(pool.adopt(frame, off, d.len))
    }

    /// Validates a received frame and delivers its datagram, or drops and counts it.
    fn process(&mut self, mut buf: Buf, stats: &Stats, key: u64, deliver: &mut dyn FnMut(Completion)) {
        let off = buf.offset();
        let frame_max = buf.capacity() + off;
        match wire::parse_udp(&buf, frame_max) {
            Ok(u) if u.dst_port == self.local.port() && self.accepts(u.dst_ip, u.src_ip) => {
                self.learn(u.src_ip, u.src_mac, stats);
                let Some(token) = self.recv_token else {
                    stats.add(&stats.counters.xdp_no_receiver, 1);
                    return;
                };
                let stamp = match self.timestamps {
                    Stamping::Off | Stamping::Kernel => None,
                    Stamping::Metadata => take_stamp(buf.frame_mut(), off, self.stamp_base_ns),
                    Stamping::Reap => std::num::NonZeroU64::new(self.stamp_base_ns),
                };
                buf.set_window(off + u.payload_offset, u.payload_len);
                let mut c = Completion::of(OpKind::RecvFrom, key, token, Ok(u.payload_len));
                c.timestamp_ns = stamp;
                c.buffer = Some(buf);
                c.peer = Some(SocketAddr::new(u.src_ip, u.src_port));
                c.more = true;
                c.tos = Some(u.tos);
                stats.add(&stats.counters.xdp_rx, 1);
                stats.add(&stats.counters.receives, 1);
                stats.add(&stats.counters.recv_bytes, u.payload_len as u64);
                deliver(c);
            }
            Ok(_) => stats.add(&stats.counters.xdp_no_receiver, 1),
            Err(reason) => {
                stats.add(&stats.xdp_drops[reason.index()], 1);
                stats.add(&stats.counters.xdp_malformed, 1);
                if let (Some(fix), false) = (reason.fix(), self.warned_set_up_drop) {
                    self.warned_set_up_drop = true;
                    tracing::warn!("AF_XDP socket {}: dropping frames as {reason:?}: {fix}", self.local);
                }
            }
        }
    }

    /// With coalescing: true while fewer than the batch are waiting and the first has not
    /// waited long enough (the clock is read only then).
    fn hold_for_batch(&mut self) -> bool {
        let Some((frames, wait)) = self.rx_coalesce else {
            return false;
        };
        let waiting: u32 = self.queues.iter_mut().map(|q| q.xsk.rx.available(BATCH)).sum();
        if waiting == 0 {
            self.rx_waiting_since = None;
            return false;
        }
        if waiting >= frames {
            self.rx_waiting_since = None;
            return false;
        }
        let now = std::time::Instant::now();
        let since = *self.rx_waiting_since.get_or_insert(now);
        if now - since < wait {
            return true;
        }
        self.rx_waiting_since = None;
        false
    }

    /// Sends `buf`'s window to `to`: headers are written in the frame in front of it, with
    /// `tos` or else the port's TOS byte.
    pub(crate) fn send(
        &mut self,
        stats: &Stats,
        mut buf: Buf,
        to: SocketAddr,
        token: u64,
        tos: Option<u8>,
    ) -> Result<(), (Error, Buf)> {
        let (to, h) = match self.headers_to(stats, to, tos) {
            Ok(x) => x,
            Err(e) => return Err((e, buf)),
        };
        let len = buf.len();
        let mut off = buf.offset();
        let hl = h.headers_len();
        if off < hl {
            // No headroom: move the payload back (a copy inside the frame).
            if hl + len > buf.capacity() + off {
                return Err((Error::MessageTooLong, buf));
            }
            let frame = buf.frame_mut();
            frame.copy_within(off..off + len, hl);
            off = hl;
        }
        if self.queues[0].xsk.tx.free(1) == 0 {
            stats.add(&stats.counters.xdp_tx_full, 1);
            buf.set_window(off, len);
            return Err((Error::NoBuffers, buf));
        }
        let start = off - hl;
        let Some(total) = wire::emit_udp(&mut buf.frame_mut()[start..], &h, len) else {
            buf.set_window(off, len);
            return Err((Error::MessageTooLong, buf));
        };
        let frame = buf.frame();
        let fs = buf.capacity() + buf.offset();
        self.queues[0].xsk.tx.write(
            0,
            libc::xdp_desc {
                addr: frame as u64 * fs as u64 + start as u64,
                len: total as u32,
                options: 0,
            },
        );
        self.queues[0].xsk.tx.submit(1);
        self.track(
            stats,
            PendingSend {
                token,
                off: off as u32,
                len: len as u32,
                buf,
                to,
                headers_only: false,
            },
        );
        Ok(())
    }

    /// The headers of a datagram from this port to `to` (its family, a known neighbour), marked
    /// `tos` or the port's TOS byte.
    fn headers_to(&self, stats: &Stats, to: SocketAddr, tos: Option<u8>) -> Result<(SocketAddr, UdpHeaders), Error> {
        if to.is_ipv4() != self.local.is_ipv4() {
            return Err(Error::InvalidArgument);
        }
        let Some(dst_mac) = self.neighbor(to.ip()) else {
            stats.add(&stats.counters.xdp_no_neighbor, 1);
            return Err(Error::HostUnreachable);
        };
        let h = UdpHeaders {
            src_mac: self.mac,
            dst_mac,
            src_ip: self.local.ip(),
            dst_ip: to.ip(),
            src_port: self.local.port(),
            dst_port: to.port(),
            tos: tos.unwrap_or(self.tos),
            ttl: 64,
        };
        Ok((to, h))
    }

    /// Records a send now on the TX ring, until its frame comes back on COMPLETION.
    fn track(&mut self, stats: &Stats, p: PendingSend) {
        let frame = p.buf.frame() as usize;
        self.tx_pending[frame] = Some(p);
        self.tx_pending_count += 1;
        stats.add(&stats.counters.xdp_tx, 1);
        // One kick per turn for everything queued (see `complete_sends`), not one per frame.
        self.tx_unkicked = true;
    }

    /// A multi-buffer send: `hdr` gets the Ethernet/IPv4/UDP headers for `payload`, which
    /// stays where it is (a shared frame several destinations may be reading); two TX
    /// descriptors, the first marked XDP_PKT_CONTD. The completion hands back no buffer.
    pub(crate) fn send_split(
        &mut self,
        stats: &Stats,
        mut hdr: Buf,
        payload: &SharedBuf,
        to: SocketAddr,
        token: u64,
    ) -> Result<(), Error> {
        let (to, h) = self.headers_to(stats, to, None)?;
        if self.queues[0].xsk.tx.free(2) < 2 {
            stats.add(&stats.counters.xdp_tx_full, 1);
            return Err(Error::NoBuffers);
        }
        let hdr_len = wire::emit_udp_headers(hdr.frame_mut(), &h, payload).ok_or(Error::MessageTooLong)?;
        let fs = u64::from(hdr.frame_size());
        let tx = &mut self.queues[0].xsk.tx;
        tx.write(
            0,
            libc::xdp_desc {
                addr: u64::from(hdr.frame()) * fs,
                len: hdr_len as u32,
                options: libc::XDP_PKT_CONTD,
            },
        );
        tx.write(
            1,
            libc::xdp_desc {
                addr: u64::from(payload.frame()) * fs + payload.offset() as u64,
                len: payload.len() as u32,
                options: 0,
            },
        );
        tx.submit(2);
        let (n, held) = &mut self.tx_shared[payload.frame() as usize];
        if *n == 0 {
            *held = Some(payload.clone());
            self.tx_shared_frames += 1;
        }
        *n += 1;
        self.track(
            stats,
            PendingSend {
                token,
                off: 0,
                len: payload.len() as u32,
                buf: hdr,
                to,
                headers_only: true,
            },
        );
        Ok(())
    }

    /// Hands back buffers whose frames the kernel has finished sending.
    pub(crate) fn complete_sends(
        &mut self,
        pool: &Pool,
        stats: &Stats,
        key: u64,
        deliver: &mut dyn FnMut(Completion),
    ) -> u32 {
        // Copy mode transmits inside the kick (a bounded batch per call), so it kicks while
        // frames wait; zero-copy only when the kernel asks.
        let copy_waiting = self.queues[0].xsk.mode == XskMode::Copy && self.tx_pending_count > 0;
        if copy_waiting || (self.tx_unkicked && self.queues[0].xsk.tx.needs_wakeup()) {
            self.queues[0].xsk.kick_tx();
        }
        self.tx_unkicked = false;
        let n = self.queues[0].xsk.comp.available(BATCH);
        let fs = u64::from(pool.frame_size());
        for i in 0..n {
            let addr = self.queues[0].xsk.comp.read(i);
            let frame = (addr / fs) as usize;
            let Some(p) = self.tx_pending.get_mut(frame).and_then(Option::take) else {
                // The payload frame of a multi-buffer send, or an address we never sent.
                match self.tx_shared.get_mut(frame) {
                    Some((n, held)) if *n > 0 => {
                        *n -= 1;
                        if *n == 0 {
                            *held = None;
                            self.tx_shared_frames -= 1;
                        }
                    }
                    _ => stats.add(&stats.counters.xdp_bad_desc, 1),
                }
                continue;
            };
            self.tx_pending_count -= 1;
            let (token, len) = (p.token, p.len);
            let mut c = Completion::of(OpKind::SendTo, key, token, Ok(len as usize));
            c.peer = Some(p.to);
            if !p.headers_only {
                let mut buf = p.buf;
                buf.set_window(p.off as usize, len as usize);
                c.buffer = Some(buf);
            }
            stats.add(&stats.counters.sends, 1);
            stats.add(&stats.counters.send_bytes, u64::from(len));
            deliver(c);
        }
        if n > 0 {
            self.queues[0].xsk.comp.release(n);
        }
        self.count_bad_indices(stats);
        n
    }

    /// Closes the socket; sends still pending complete `Aborted`.
    ///
    /// Copy mode: after `close(2)` the kernel touches none of the frames (it copies into the
    /// UMEM only on the socket's receive path, which unbinding ended), so every frame goes
    /// back to the pool and pending sends hand their buffers back.
    ///
    /// Zero-copy mode (or `hold`): the driver may keep using the frames it was lent until the
    /// kernel's deferred pool release has run (see `sys::xsk::queue_released`). Those frames
    /// — FILL/RX and in-flight TX — are returned as a [`Quarantine`] the shard keeps until
    /// every queue is released; pending sends complete without their buffers.
    pub(crate) fn close(
        self,
        pool: &Pool,
        key: u64,
        hold: bool,
        deliver: &mut dyn FnMut(Completion),
    ) -> Option<Quarantine> {
        let hold = hold || self.queues[0].xsk.mode == XskMode::ZeroCopy;
        let XdpPort {
            queues,
            in_kernel,
            mut tx_pending,
            ..
        } = self;
        let released_queues: Vec<(u32, u32)> = queues.iter().map(|q| (q.xsk.ifindex, q.xsk.queue)).collect();
        drop(queues);
        let mut held = Vec::new();
        for (frame, owner) in in_kernel.iter().enumerate() {
            if *owner != 0 {
                if hold {
                    held.push(frame as u32);
                } else {
                    drop(pool.adopt(frame as u32, 0, 0));
                }
            }
        }
        for slot in tx_pending.iter_mut() {
            if let Some(p) = slot.take() {
                let mut c = Completion::of(OpKind::SendTo, key, p.token, Err(Error::Aborted));
                c.peer = Some(p.to);
                if hold {
                    held.push(p.buf.into_frame());
                } else if !p.headers_only {
                    let mut buf = p.buf;
                    buf.set_window(p.off as usize, p.len as usize);
                    c.buffer = Some(buf);
                }
                deliver(c);
            }
        }
        (hold && !held.is_empty()).then_some(Quarantine {
            frames: held,
            queues: released_queues,
        })
    }
}

impl XdpPort {
    /// Closes a port that never reached its shard (its bind failed after the FILL rings were
    /// stocked): copy mode returns the frames; frames a zero-copy driver may still touch are
    /// leaked rather than lent out again (logged).
    pub(crate) fn abandon(port: Box<XdpPort>, pool: &Pool) {
        if let Some(q) = port.close(pool, 0, false, &mut |_| {}) {
            tracing::error!(
                frames = q.frames.len(),
                "an AF_XDP socket closed before reaching its shard: its zero-copy frames stay out of the pool"
            );
        }
    }
}

/// Frames of a closed zero-copy socket the driver may still touch: kept out of the pool
/// until each of `queues` (ifindex, queue) is released by the kernel.
#[derive(Debug)]
pub(crate) struct Quarantine {
    pub frames: Vec<u32>,
    pub queues: Vec<(u32, u32)>,
}

impl Quarantine {
    /// Probes the queues; true once every one is released (the frames may then return).
    pub(crate) fn released(&self) -> bool {
        self.queues.iter().all(|&(ifindex, queue)| {
            crate::sys::xsk::queue_released(ifindex, queue).unwrap_or_else(|e| {
                // Gone interface or queue: nothing can be bound there, nothing can DMA.
                tracing::debug!(ifindex, queue, error = %e, "probing an AF_XDP queue failed");
                e.raw_os_error() == Some(libc::ENODEV) || e.raw_os_error() == Some(libc::EINVAL)
            })
        })
    }
}

/// A hostile kernel side (xskxceiver-style): descriptors and ring indices no real kernel
/// writes, fed through the fake rings of `sys::xsk::fake`. Each is counted, nothing panics,
/// and every frame stays accounted for.
#[cfg(test)]
mod adversarial {
    use super::*;
    use crate::sys::xsk::fake;

    const FS: u32 = 2048;
    const FRAMES: u32 = 64;

    fn port(pool: &Pool) -> (XdpPort, fake::Kernel) {
        let (xsk, kernel) = fake::socket(16);
        let mut p = XdpPort::new(
            vec![xsk],
            "198.18.0.2:7000".parse().unwrap(),
            MacAddr([2, 0, 0, 0, 0, 2]),
            FRAMES,
            8,
        );
        p.recv_token = Some(1);
        p.refill(pool);
        (p, kernel)
    }

    fn conserved(pool: &Pool, p: &XdpPort) {
        #[cfg(debug_assertions)]
        p.check_conservation();
        assert_eq!(pool.free_frames() + p.frames_held(), FRAMES, "frame conservation");
    }

    #[test]
    fn hostile_rx_descriptors_are_counted_and_frames_conserved() {
        let pool = Pool::new(FRAMES, FS, false).unwrap();
        let stats = Stats::default();
        let (mut p, k) = port(&pool);
        let lent = k.take_fill();
        assert_eq!(lent.len(), 8, "the FILL ring was stocked");
        let fs = u64::from(FS);
        let mut got = Vec::new();
        k.receive(&[
            (lent[0], 60),                   // valid (zeros: dropped as malformed, counted)
            (lent[0], 60),                   // the same frame again: not lent any more
            (u64::from(FRAMES) * fs + 5, 8), // outside the UMEM
            (lent[1] + 2000, 100),           // bytes past the frame's end
            (u64::MAX, u32::MAX),            // nonsense
            (lent[2], 0),                    // an empty frame: lent, so claimed, then dropped
        ]);
        p.receive(&pool, &stats, 0, &mut |c| got.push(c));
        let s = stats.counters.snapshot();
        assert_eq!((s.xdp_bad_desc, s.xdp_malformed), (4, 2), "{s:?}");
        assert!(got.is_empty(), "nothing valid was delivered");
        conserved(&pool, &p);
        // The producer index jumps past the ring, then moves back: nothing is read.
        k.jump_rx_producer(1000);
        p.receive(&pool, &stats, 0, &mut |c| got.push(c));
        k.jump_rx_producer(1000u32.wrapping_neg().wrapping_sub(3));
        p.receive(&pool, &stats, 0, &mut |c| got.push(c));
        let s = stats.counters.snapshot();
        assert_eq!((s.xdp_bad_ring_index, s.xdp_bad_desc), (2, 4), "{s:?}");
        conserved(&pool, &p);
        // A FILL consumer index from the future: the producer side refuses to overwrite.
        k.jump_fill_consumer(1 << 20);
        p.refill(&pool);
        conserved(&pool, &p);
        assert_eq!(
            stats.counters.snapshot().xdp_bad_ring_index,
            2,
            "counted at the next receive"
        );
        p.receive(&pool, &stats, 0, &mut |c| got.push(c));
        assert_eq!(stats.counters.snapshot().xdp_bad_ring_index, 3);
        let mut closed = Vec::new();
        p.close(&pool, 0, false, &mut |c| closed.push(c));
        assert_eq!(pool.free_frames(), FRAMES, "every frame back after close");
    }

    /// Close with frames in every ring: FILL stocked, RX holding received frames not yet
    /// read, TX sends the kernel has not taken, and sends whose COMPLETION entries are not
    /// yet reaped. Each send ends exactly once (Aborted, with its buffer), nothing completes
    /// after the close, and every frame is back in the pool.
    #[test]
    fn close_with_frames_in_every_ring_ends_each_send_once() {
        let pool = Pool::new(FRAMES, FS, false).unwrap();
        let stats = Stats::default();
        let (mut p, k) = port(&pool);
        let peer: SocketAddr = "198.18.0.1:5000".parse().unwrap();
        assert!(p.add_neighbor(peer.ip(), MacAddr([2, 0, 0, 0, 0, 1])));
        let lent = k.take_fill();
        p.refill(&pool);
        // RX: two received frames waiting, unread.
        k.receive(&[(lent[0], 60), (lent[1], 60)]);
        // TX: four sends; the kernel takes two and completes one of those.
        for token in 10..14u64 {
            let b = pool.alloc_with_headroom(wire::UDP_HEADERS_LEN).unwrap();
            p.send(&stats, b, peer, token, None).unwrap();
        }
        let taken = k.take_tx();
        assert_eq!(taken.len(), 4);
        k.complete(&[taken[0].addr]);
        let mut done = Vec::new();
        p.close(&pool, 0, false, &mut |c| done.push(c));
        let mut tokens: Vec<u64> = done.iter().map(|c| c.token).collect();
        tokens.sort_unstable();
        assert_eq!(tokens, [10, 11, 12, 13], "one completion per send");
        assert!(done
            .iter()
            .all(|c| c.result == Err(Error::Aborted) && c.buffer.is_some()));
        drop(done);
        assert_eq!(pool.free_frames(), FRAMES, "every frame back");
    }

    #[test]
    fn stray_completion_addresses_are_counted_and_nothing_completes() {
        let pool = Pool::new(FRAMES, FS, false).unwrap();
        let stats = Stats::default();
        let (mut p, k) = port(&pool);
        let lent = k.take_fill();
        let mut done = Vec::new();
        // Addresses of frames never sent: lent to FILL, free in the pool, out of range.
        k.complete(&[lent[0], u64::from(FS) * 63, u64::MAX, 12_345]);
        p.complete_sends(&pool, &stats, 0, &mut |c| done.push(c));
        assert!(done.is_empty(), "a completion for a send never made: {done:?}");
        assert_eq!(stats.counters.snapshot().xdp_bad_desc, 4);
        conserved(&pool, &p);
    }
}
