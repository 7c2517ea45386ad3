//! A simulated provider for tests: a deterministic, seeded stand-in for the kernel with a
//! fault injector (smoltcp's `FaultInjector`, applied to completions). The shard core runs on
//! it unchanged, so its exactly-once and conservation rules are tested without a kernel, under
//! conditions a real kernel produces rarely: delayed and reordered completions, a completion
//! queue that holds a few events at a time (overflow), short stream sends, a receive ended by
//! `ENOBUFS` while frames remain, turns that return nothing (`EINTR`), dropped datagrams.
//!
//! The network is a queue of datagrams per socket that the test injects; sends complete with
//! their length (or a short count). Time is the number of turns (quinn's
//! clock-free core: the driver reads no clock), so a seed replays exactly.

// Writes received datagrams into provided frames and op buffers, as the kernel does.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::{decode, Driver, Enter, Event, Prep, ProviderInfo, Submit, Transport, TAG_WAKE};

/// Per-mille chances of each fault, and the completion queue's size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Faults {
    /// A datagram is lost before any receive sees it.
    pub drop: u32,
    /// An op's completion, or a cancel's effect, waits 1..=4 more turns (as io_uring's
    /// asynchronous cancel does: the op may complete meanwhile).
    pub delay: u32,
    /// Ready ops are served in a shuffled order (events of one op keep their order).
    pub reorder: bool,
    /// A stream send completes short (the core must continue it).
    pub short: u32,
    /// A multishot receive ends with ENOBUFS although frames remain.
    pub enobufs: u32,
    /// A turn's enter returns with nothing done (an interrupted wait).
    pub eintr: u32,
    /// A multishot receive's datagram comes without `more`: the kernel ended the multishot
    /// (CQ pressure), and the core must re-arm it — unless it was cancelled meanwhile.
    pub end: u32,
    /// A single-shot receive loses the race for a datagram to another receive: it ends with
    /// EAGAIN, carrying the provided frame it had picked (as io_uring does), and the core
    /// must re-arm it — or, cancelled or timed out meanwhile, end it as that.
    pub raced: u32,
    /// Of those raced receives with a deadline, the machine stalls (a real sleep) past the
    /// deadline before the EAGAIN comes, while the linked timeout has not fired yet (time
    /// here is counted in turns): the core must end the receive timed out, not re-arm it for
    /// no time, nor pass the EAGAIN on.
    pub stall: u32,
    /// Events one reap takes (the rest wait: a small CQ, counted as overflows).
    pub cq_max: usize,
}

impl Faults {
    pub(crate) fn none() -> Faults {
        Faults {
            drop: 0,
            delay: 0,
            reorder: false,
            short: 0,
            enobufs: 0,
            eintr: 0,
            end: 0,
            raced: 0,
            stall: 0,
            cq_max: usize::MAX,
        }
    }

    /// Every fault, often.
    pub(crate) fn all() -> Faults {
        Faults {
            drop: 100,
            delay: 300,
            reorder: true,
            short: 300,
            enobufs: 50,
            eintr: 100,
            end: 100,
            raced: 150,
            stall: 100,
            cq_max: 3,
        }
    }
}

struct Pending {
    sub: Submit,
    /// Turn before which it does not complete (a delay fault).
    due: u64,
    /// Turn at which its linked timeout fires.
    deadline: Option<u64>,
}

pub(crate) struct SimDriver {
    rng: u64,
    faults: Faults,
    turn: u64,
    pending: Vec<Pending>,
    events: VecDeque<Event>,
    provided: Vec<(u32, u64, u32)>,
    /// Datagrams waiting per socket index: (payload, source).
    inbound: Vec<VecDeque<(Vec<u8>, SocketAddr)>>,
    wake: Option<u64>,
    watches: Vec<u64>,
    /// Cancels in flight: (target, turn they take effect).
    cancels: Vec<(u64, u64)>,
    /// How often each fault fired.
    pub fired: Fired,
}

/// Counts of faults that fired (a test asserts the injector is not a no-op).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fired {
    pub dropped: u64,
    pub delayed: u64,
    pub short: u64,
    pub enobufs: u64,
    pub eintr: u64,
    pub ended: u64,
    pub raced: u64,
    pub stalled: u64,
    pub overflows: u64,
}

/// Turns per millisecond of a linked timeout (time is counted in turns).
const TURNS_PER_MS: u64 = 1;
/// Datagrams a multishot receive takes per turn.
const MULTISHOT_BURST: usize = 4;

impl SimDriver {
    pub(crate) fn new(seed: u64, faults: Faults, sockets_max: u32) -> SimDriver {
        SimDriver {
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            faults,
            turn: 0,
            pending: Vec::new(),
            events: VecDeque::new(),
            provided: Vec::new(),
            inbound: (0..sockets_max).map(|_| VecDeque::new()).collect(),
            wake: None,
            watches: Vec::new(),
            cancels: Vec::new(),
            fired: Fired::default(),
        }
    }

    /// splitmix64: deterministic for a seed.
    pub(crate) fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.next() % 1000 < u64::from(per_mille)
    }

    /// A datagram arrives for socket `sock` from `from`.
    pub(crate) fn inject(&mut self, sock: u32, payload: &[u8], from: SocketAddr) {
        if self.chance(self.faults.drop) {
            self.fired.dropped += 1;
            return;
        }
        self.inbound[sock as usize].push_back((payload.to_vec(), from));
    }

    /// Writes `bytes` at `addr` (a provided frame or an op's buffer).
    fn write(addr: u64, bytes: &[u8]) {
        // SAFETY: the caller passes memory the driver owns for the op: a provided frame (the
        // driver's until an event hands it on) or the op's receive buffer (push's contract),
        // at least `bytes.len()` long.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
    }

    /// One step of pending op `i`: `Some(true)` if it ended.
    fn step(&mut self, i: usize) -> bool {
        let p = &self.pending[i];
        let (sub, ud) = (p.sub, p.sub.ud);
        if p.deadline.is_some_and(|d| self.turn >= d) {
            self.events.push_back(Event::of(ud, -libc::ECANCELED));
            if let Some(t) = sub.timeout {
                self.events.push_back(Event::of(t.ud, -libc::ETIME));
            }
            return true;
        }
        if p.due > self.turn {
            return false;
        }
        let ended = match sub.prep {
            Prep::RecvMsgMulti { msg } => {
                // SAFETY: the msghdr is the op's (push's contract); only lengths are read.
                let (namelen, controllen) = unsafe { ((*msg).msg_namelen as usize, (*msg).msg_controllen) };
                let mut ended = false;
                for _ in 0..MULTISHOT_BURST {
                    if self.inbound[sub.sock as usize].is_empty() {
                        break;
                    }
                    if self.chance(self.faults.enobufs) {
                        self.fired.enobufs += 1;
                        self.events.push_back(Event::of(ud, -libc::ENOBUFS));
                        ended = true;
                        break;
                    }
                    let Some((frame, addr, len)) = self.provided.pop() else {
                        self.events.push_back(Event::of(ud, -libc::ENOBUFS));
                        ended = true;
                        break;
                    };
                    let (payload, from) = self.inbound[sub.sock as usize].pop_front().expect("checked");
                    let (raw, raw_len) = crate::sys::net::to_raw(&from);
                    let head = 16 + namelen + controllen;
                    let n = payload.len().min(len as usize - head);
                    let mut out = Vec::with_capacity(head + n);
                    for v in [raw_len, 0, payload.len() as u32, 0] {
                        out.extend_from_slice(&v.to_ne_bytes());
                    }
                    // SAFETY: `raw` is a plain sockaddr_storage; its first `namelen` bytes.
                    let name = unsafe {
                        std::slice::from_raw_parts((&raw as *const libc::sockaddr_storage).cast::<u8>(), namelen)
                    };
                    out.extend_from_slice(name);
                    out.resize(16 + namelen + controllen, 0);
                    out.extend_from_slice(&payload[..n]);
                    Self::write(addr, &out);
                    let mut ev = Event::of(ud, out.len() as i32);
                    ev.more = true;
                    ev.frame = Some(frame);
                    if self.chance(self.faults.end) {
                        self.fired.ended += 1;
                        ev.more = false;
                        self.events.push_back(ev);
                        ended = true;
                        break;
                    }
                    self.events.push_back(ev);
                }
                ended
            }
            Prep::RecvMsg { msg, provided } => {
                if self.inbound[sub.sock as usize].is_empty() {
                    return false;
                }
                if self.chance(self.faults.raced) {
                    self.fired.raced += 1;
                    if let Some(t) = sub.timeout.filter(|_| self.chance(self.faults.stall)) {
                        self.fired.stalled += 1;
                        std::thread::sleep(t.after);
                    }
                    let mut ev = Event::of(ud, -libc::EAGAIN);
                    ev.frame = provided.then(|| self.provided.pop()).flatten().map(|f| f.0);
                    self.events.push_back(ev);
                    return self.end(i);
                }
                let frame = if provided {
                    match self.provided.pop() {
                        Some(f) => Some(f),
                        None => {
                            self.events.push_back(Event::of(ud, -libc::ENOBUFS));
                            return self.end(i);
                        }
                    }
                } else {
                    None
                };
                let (payload, from) = self.inbound[sub.sock as usize].pop_front().expect("checked");
                // SAFETY: the msghdr and its iovec are the op's (push's contract).
                let (dst, cap) = unsafe {
                    let iov = *(*msg).msg_iov;
                    match frame {
                        Some((_, addr, len)) => (addr, len as usize),
                        None => (iov.iov_base as u64, iov.iov_len),
                    }
                };
                let n = payload.len().min(cap);
                Self::write(dst, &payload[..n]);
                let (raw, raw_len) = crate::sys::net::to_raw(&from);
                // SAFETY: as above; the name buffer is a sockaddr_storage in the op's slot.
                unsafe {
                    if !(*msg).msg_name.is_null() {
                        std::ptr::write((*msg).msg_name.cast::<libc::sockaddr_storage>(), raw);
                        (*msg).msg_namelen = raw_len;
                    }
                }
                let mut ev = Event::of(ud, n as i32);
                ev.frame = frame.map(|f| f.0);
                self.events.push_back(ev);
                true
            }
            Prep::RecvMulti | Prep::Recv { .. } | Prep::RecvErrQueue { .. } => {
                // No streams and no TX timestamps in the simulated network: these wait (until
                // cancelled).
                false
            }
            Prep::Send { len, flags, zc, .. } => {
                let stream = flags & libc::MSG_WAITALL != 0;
                // Each push is a fresh op: a short send ends it, and the core pushes the rest.
                let n = if stream && len > 1 && self.chance(self.faults.short) {
                    self.fired.short += 1;
                    len / 2
                } else {
                    len
                };
                if n < len {
                    // A short send: the core sees it and continues with the rest.
                    self.events.push_back(Event::of(ud, n as i32));
                    return self.end(i);
                }
                let mut ev = Event::of(ud, n as i32);
                if zc.is_some() {
                    ev.more = true;
                    self.events.push_back(ev);
                    let copied = self.next() % 2 == 0;
                    let mut notif = Event::of(ud, 0);
                    notif.notif_copied = Some(copied);
                    self.events.push_back(notif);
                } else {
                    self.events.push_back(ev);
                }
                true
            }
            Prep::SendMsg { msg, .. } => {
                // SAFETY: the msghdr and its iovecs are the op's (push's contract).
                let total: usize = unsafe {
                    let m = *msg;
                    std::slice::from_raw_parts(m.msg_iov, m.msg_iovlen)
                        .iter()
                        .map(|v| v.iov_len)
                        .sum()
                };
                self.events.push_back(Event::of(ud, total as i32));
                true
            }
            Prep::Connect { .. } | Prep::Shutdown => {
                self.events.push_back(Event::of(ud, 0));
                true
            }
            // The simulated peer always has data: readable at once.
            Prep::PollIn => {
                self.events.push_back(Event::of(ud, libc::POLLIN as i32));
                true
            }
            Prep::AcceptMulti | Prep::Accept { .. } => false,
        };
        if ended {
            return self.end(i);
        }
        false
    }

    /// Cancels whose turn has come end their op (if it has not ended meanwhile).
    fn apply_cancels(&mut self) {
        let turn = self.turn;
        let mut k = 0;
        while k < self.cancels.len() {
            let (target, at) = self.cancels[k];
            if at > turn {
                k += 1;
                continue;
            }
            self.cancels.remove(k);
            if let Some(i) = self.pending.iter().position(|p| p.sub.ud == target) {
                let p = self.pending.remove(i);
                self.events.push_back(Event::of(target, -libc::ECANCELED));
                if let Some(t) = p.sub.timeout {
                    self.events.push_back(Event::of(t.ud, -libc::ECANCELED));
                }
            }
        }
    }

    /// Op `i` produced its last event: its timeout's follows (cancelled: the op won).
    fn end(&mut self, i: usize) -> bool {
        if let Some(t) = self.pending[i].sub.timeout {
            self.events.push_back(Event::of(t.ud, -libc::ECANCELED));
        }
        true
    }
}

impl Driver for SimDriver {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            transport: Transport::Epoll,
            ring: None,
            fallback: Some("simulated provider (tests)".into()),
            degraded: Vec::new(),
        }
    }

    unsafe fn push(&mut self, op: &Submit) -> io::Result<()> {
        let due = if self.chance(self.faults.delay) {
            self.fired.delayed += 1;
            self.turn + 1 + self.next() % 4
        } else {
            0
        };
        let deadline = op
            .timeout
            .map(|t| self.turn + 1 + t.after.as_millis() as u64 * TURNS_PER_MS);
        self.pending.push(Pending {
            sub: *op,
            due,
            deadline,
        });
        Ok(())
    }

    fn cancel(&mut self, target: u64) -> io::Result<()> {
        if decode(target).0 == TAG_WAKE {
            if self.wake.take().is_some() {
                self.events.push_back(Event::of(target, -libc::ECANCELED));
            }
            return Ok(());
        }
        let at = if self.chance(self.faults.delay) {
            self.fired.delayed += 1;
            self.turn + 1 + self.next() % 4
        } else {
            self.turn
        };
        self.cancels.push((target, at));
        self.apply_cancels();
        Ok(())
    }

    fn watch(&mut self, _fd: RawFd, ud: u64) -> io::Result<()> {
        self.watches.push(ud);
        Ok(())
    }

    fn unwatch(&mut self, ud: u64) -> io::Result<()> {
        if let Some(i) = self.watches.iter().position(|&w| w == ud) {
            self.watches.swap_remove(i);
            self.events.push_back(Event::of(ud, -libc::ECANCELED));
        }
        Ok(())
    }

    fn ring_fd(&self) -> Option<io::Result<std::os::fd::OwnedFd>> {
        None
    }

    fn msg_ring(&mut self, _target: RawFd, _ud: u64, _res: i32, _sent_ud: u64) -> io::Result<bool> {
        Ok(false)
    }

    fn arm_wake(&mut self, ud: u64) -> io::Result<()> {
        self.wake = Some(ud);
        Ok(())
    }

    unsafe fn provide(&mut self, frame: u32, addr: u64, len: u32) {
        self.provided.push((frame, addr, len));
    }

    fn publish(&mut self) {}

    fn open(&mut self, sock: u32, _fd: RawFd) -> bool {
        self.inbound[sock as usize].clear();
        false
    }

    fn close(&mut self, sock: u32, _fd: RawFd, _fixed: bool) {
        self.inbound[sock as usize].clear();
    }

    unsafe fn register_buffer(&mut self, _slot: u32, _ptr: *mut u8, _len: usize) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "simulated: no fixed buffers",
        ))
    }

    fn unregister_buffer(&mut self, _slot: u32) -> io::Result<()> {
        Ok(())
    }

    fn enter(&mut self, _how: Enter) -> io::Result<()> {
        self.turn += 1;
        if self.chance(self.faults.eintr) {
            self.fired.eintr += 1;
            return Ok(());
        }
        self.apply_cancels();
        let mut order: Vec<usize> = (0..self.pending.len()).collect();
        if self.faults.reorder {
            for k in (1..order.len()).rev() {
                let j = (self.next() % (k as u64 + 1)) as usize;
                order.swap(k, j);
            }
        }
        let mut ended = vec![false; self.pending.len()];
        for i in order {
            ended[i] = self.step(i);
        }
        let mut i = 0;
        self.pending.retain(|_| {
            let keep = !ended[i];
            i += 1;
            keep
        });
        Ok(())
    }

    fn has_events(&mut self) -> bool {
        !self.events.is_empty()
    }

    fn reap(&mut self, out: &mut Vec<Event>) {
        out.clear();
        let n = self.events.len().min(self.faults.cq_max).min(out.capacity().max(1));
        if n < self.events.len() {
            self.fired.overflows += 1;
        }
        out.extend(self.events.drain(..n));
    }

    fn overflows(&self) -> u64 {
        self.fired.overflows
    }

    fn fixed_files(&self) -> bool {
        false
    }

    fn abandon(&mut self) {}
}

#[cfg(test)]
mod tests;
