//! The in-flight operation table and the requests that fill it.
//!
//! Each slot has a stable address (the table is one boxed slice allocated at start-up), so
//! the msghdr, iovec, sockaddr and timespec an SQE points to stay valid until the kernel is
//! done. `user_data` packs the slot index, its generation and a tag, so a stale or foreign
//! completion is recognised instead of being applied to a reused slot.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use io_uring::types::Timespec;

use crate::completion::OpKind;
use crate::pool::{Buf, Gather, SharedBuf};
use crate::rio::buf::RioOp;

/// What an application asks a shard to do on one of its sockets.
#[derive(Debug)]
pub(crate) enum Request {
    /// Datagram receive; multishot keeps delivering until cancelled.
    RecvFrom {
        multishot: bool,
        timeout: Option<Duration>,
    },
    /// Stream receive into pool frames; multishot keeps delivering until EOF or cancel. A
    /// single-shot one reads at most `max` bytes (0: a frame).
    Recv {
        multishot: bool,
        timeout: Option<Duration>,
        max: u32,
    },
    SendTo {
        buf: Buf,
        addr: SocketAddr,
        zerocopy: bool,
        /// This datagram's TOS / traffic class instead of the socket's (a non-conformant
        /// packet re-marked by its flow, or a per-send marking).
        tos: Option<u8>,
    },
    Send {
        buf: Buf,
        zerocopy: bool,
    },
    /// One payload to many destinations: expanded by the shard into one `SendShared` each.
    SendToMany {
        buf: SharedBuf,
        dests: std::sync::Arc<[SocketAddr]>,
    },
    /// A datagram send of a shared (read-only) frame.
    SendShared {
        buf: SharedBuf,
        addr: SocketAddr,
        /// A TOS instead of the socket's (a non-conformant packet re-marked by its flow).
        tos: Option<u8>,
    },
    /// A stream receive of zero bytes (Winsock's zero-byte `WSARecv`): completes `Ok(0)` once
    /// data is waiting (or the peer closed), without taking any — the application then
    /// receives with a buffer of its own. No frame is held meanwhile.
    Readable {
        timeout: Option<Duration>,
    },
    /// One receive scattered over the gather's buffers (each a whole frame, in order): a
    /// datagram with its sender (`from`), or what a stream has.
    RecvScatter {
        gather: Gather,
        from: bool,
        timeout: Option<Duration>,
    },
    /// One message gathered from several buffers, to `addr` (datagram) or the peer (stream).
    SendGather {
        gather: Gather,
        addr: Option<SocketAddr>,
        /// A datagram's TOS instead of the socket's (a non-conformant packet re-marked).
        tos: Option<u8>,
    },
    Accept {
        multishot: bool,
    },
    Connect {
        addr: SocketAddr,
        timeout: Option<Duration>,
    },
    Disconnect,
    Rio(RioOp),
    /// TX timestamps from the socket's error queue, until cancelled; `buf` holds the control
    /// messages each read.
    TxTimestamps {
        buf: Buf,
    },
}

impl Request {
    pub(crate) fn kind(&self) -> OpKind {
        match self {
            Request::RecvFrom { .. } => OpKind::RecvFrom,
            Request::Recv { .. } | Request::Readable { .. } | Request::RecvScatter { from: false, .. } => OpKind::Recv,
            Request::RecvScatter { from: true, .. } => OpKind::RecvFrom,
            Request::SendTo { .. } | Request::SendToMany { .. } | Request::SendShared { .. } => OpKind::SendTo,
            Request::Send { .. } | Request::SendGather { addr: None, .. } => OpKind::Send,
            Request::SendGather { addr: Some(_), .. } => OpKind::SendTo,
            Request::Accept { .. } => OpKind::Accept,
            Request::Connect { .. } => OpKind::Connect,
            Request::Disconnect => OpKind::Disconnect,
            Request::Rio(r) => r.kind(),
            Request::TxTimestamps { .. } => OpKind::TxTimestamp,
        }
    }

    /// The buffers the request owns, handed back if it is refused.
    pub(crate) fn into_bufs(self) -> (Option<Buf>, Option<Gather>) {
        match self {
            Request::SendTo { buf, .. } | Request::Send { buf, .. } | Request::TxTimestamps { buf } => {
                (Some(buf), None)
            }
            Request::SendGather { gather, .. } | Request::RecvScatter { gather, .. } => (None, Some(gather)),
            _ => (None, None),
        }
    }
}

pub(crate) use crate::driver::{
    decode, user_data, TAG_ACCEPT, TAG_CANCEL, TAG_DOORBELL, TAG_DOORBELL_SENT, TAG_LINK_TIMEOUT, TAG_OP, TAG_WAKE,
    TAG_XSK_POLL,
};

/// One in-flight operation.
pub(crate) struct Slot {
    pub gen: u32,
    pub live: bool,
    pub kind: OpKind,
    pub multishot: bool,
    pub sock: u32,
    pub token: u64,
    pub buf: Option<Buf>,
    pub gather: Option<Gather>,
    /// The frame of a `SendShared` (released, not handed back, when it completes).
    pub shared: Option<SharedBuf>,
    pub rio: Option<RioOp>,
    pub addr: libc::sockaddr_storage,
    pub addr_len: libc::socklen_t,
    pub msg: libc::msghdr,
    pub iov: libc::iovec,
    pub ts: Timespec,
    pub timeout: Option<Duration>,
    pub started: Instant,
    /// CQEs still expected (main, linked timeout, zero-copy notification).
    pub pending: u8,
    /// Final result of the main CQE, kept until `pending` drops to 0.
    pub result: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    pub zerocopy: bool,
    pub zc_copied: bool,
    /// Bytes of a stream send already accepted by the kernel.
    pub sent: u32,
    /// A single-shot stream receive reads at most this many bytes (0: a whole frame).
    pub recv_max: u32,
    /// A zero-byte receive (`Request::Readable`): it waits for readability only.
    pub readable: bool,
    /// Multishot stopped for want of buffers; waiting to be re-armed.
    pub starved: bool,
    /// Started by the QoS scheduler (counts against its send budget until it ends).
    pub scheduled: bool,
    /// A per-datagram TOS: the send goes as SENDMSG with an IP_TOS / IPV6_TCLASS message.
    pub tos: Option<u8>,
    /// Room for that control message (cmsghdr-aligned).
    pub control: crate::sys::net::ControlRoom,
    /// The connection a single accept returned, until its completion carries it.
    pub accepted: Option<std::os::fd::OwnedFd>,
    /// Waiting in its socket's lane (not in the kernel).
    pub queued: bool,
    /// The lane it holds or waits in.
    pub lane: Option<Lane>,
    /// The next op in its FIFO.
    pub next: u32,
}

/// A socket's per-direction queue: ops that must reach the kernel one at a time, in the
/// order issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Stream writes (sends, disconnect): two in flight may interleave their bytes.
    Write = 0,
    /// Single-shot receives without a deadline (WSARecvFrom, WSARecv, RIOReceive posted
    /// ahead): several armed at once all wake for each datagram (all but one end EAGAIN and
    /// re-arm: a thundering herd per datagram), and on a stream could take bytes out of
    /// order.
    Read = 1,
}

/// A FIFO of op slots threaded through `Slot::next` (no allocation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fifo {
    head: u32,
    tail: u32,
}

const NIL: u32 = u32::MAX;

impl Fifo {
    pub(crate) const EMPTY: Fifo = Fifo { head: NIL, tail: NIL };
}

impl Slot {
    /// A send's bytes: its own buffer's window, or its shared frame's.
    pub(crate) fn send_bytes(&self) -> (*const u8, u32) {
        match (&self.buf, &self.shared) {
            (Some(b), _) => {
                let (p, l) = b.raw();
                (p.cast_const(), l)
            }
            (None, Some(b)) => b.raw(),
            (None, None) => unreachable!("a send slot holds its buffer"),
        }
    }

    /// A re-marked datagram (`tos` set): its TOS / traffic class as the message's control
    /// data, in the slot's own room.
    pub(crate) fn attach_tos(&mut self) {
        if let Some(tos) = self.tos {
            let v6 = i32::from(self.addr.ss_family) == libc::AF_INET6;
            self.msg.msg_controllen = crate::sys::net::tos_cmsg(&mut self.control, v6, tos);
            self.msg.msg_control = self.control.as_mut_ptr().cast();
        }
    }

    fn empty() -> Slot {
        Slot {
            gen: 0,
            live: false,
            kind: OpKind::Post,
            multishot: false,
            sock: 0,
            token: 0,
            buf: None,
            gather: None,
            shared: None,
            rio: None,
            addr: crate::sys::net::zeroed_storage(),
            addr_len: 0,
            msg: crate::sys::net::zeroed_msghdr(),
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            ts: Timespec::new(),
            timeout: None,
            started: Instant::now(),
            pending: 0,
            result: None,
            timed_out: false,
            cancelled: false,
            zerocopy: false,
            zc_copied: false,
            sent: 0,
            recv_max: 0,
            readable: false,
            starved: false,
            scheduled: false,
            tos: None,
            control: [0; 8],
            accepted: None,
            queued: false,
            lane: None,
            next: NIL,
        }
    }
}

/// The op table: fixed capacity, O(1) allocate and free.
pub(crate) struct Table {
    slots: Box<[Slot]>,
    free: Vec<u32>,
}

impl Table {
    pub(crate) fn new(capacity: u32) -> Table {
        Table {
            slots: (0..capacity).map(|_| Slot::empty()).collect(),
            free: (0..capacity).rev().collect(),
        }
    }

    pub(crate) fn alloc(&mut self) -> Option<u32> {
        let idx = self.free.pop()?;
        let s = &mut self.slots[idx as usize];
        debug_assert!(!s.live);
        s.gen = s.gen.wrapping_add(1);
        s.live = true;
        s.pending = 1;
        s.result = None;
        s.timed_out = false;
        s.cancelled = false;
        s.zerocopy = false;
        s.zc_copied = false;
        s.sent = 0;
        s.recv_max = 0;
        s.readable = false;
        s.starved = false;
        s.scheduled = false;
        s.tos = None;
        s.multishot = false;
        s.timeout = None;
        s.queued = false;
        s.lane = None;
        s.next = NIL;
        Some(idx)
    }

    pub(crate) fn push_back(&mut self, q: &mut Fifo, idx: u32) {
        self.slots[idx as usize].next = NIL;
        if q.tail == NIL {
            q.head = idx;
        } else {
            self.slots[q.tail as usize].next = idx;
        }
        q.tail = idx;
    }

    pub(crate) fn pop_front(&mut self, q: &mut Fifo) -> Option<u32> {
        let idx = q.head;
        if idx == NIL {
            return None;
        }
        q.head = self.slots[idx as usize].next;
        if q.head == NIL {
            q.tail = NIL;
        }
        self.slots[idx as usize].next = NIL;
        Some(idx)
    }

    /// Removes `idx` from `q`, wherever it is.
    pub(crate) fn unlink(&mut self, q: &mut Fifo, idx: u32) {
        let (mut prev, mut cur) = (NIL, q.head);
        while cur != NIL && cur != idx {
            prev = cur;
            cur = self.slots[cur as usize].next;
        }
        if cur == NIL {
            return;
        }
        let next = self.slots[idx as usize].next;
        if prev == NIL {
            q.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if q.tail == idx {
            q.tail = prev;
        }
        self.slots[idx as usize].next = NIL;
    }

    pub(crate) fn release(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        debug_assert!(s.live && s.buf.is_none() && s.gather.is_none() && s.shared.is_none() && s.rio.is_none());
        s.live = false;
        self.free.push(idx);
    }

    /// The live slot `idx` if its generation matches.
    pub(crate) fn get(&mut self, idx: u32, gen: u32) -> Option<&mut Slot> {
        self.slots.get_mut(idx as usize).filter(|s| s.live && s.gen == gen)
    }

    /// The socket of live slot `idx` if its generation matches (read-only).
    pub(crate) fn sock_of(&self, idx: u32, gen: u32) -> Option<u32> {
        self.slots
            .get(idx as usize)
            .filter(|s| s.live && s.gen == gen)
            .map(|s| s.sock)
    }

    pub(crate) fn slot(&mut self, idx: u32) -> &mut Slot {
        &mut self.slots[idx as usize]
    }

    pub(crate) fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Indices of live slots matching `f`, written into `out` (cleared first).
    pub(crate) fn find(&self, out: &mut Vec<u32>, f: impl Fn(&Slot) -> bool) {
        out.clear();
        out.extend(
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.live && f(s))
                .map(|(i, _)| i as u32),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for (tag, idx, gen) in [(0, 0, 0), (3, (1 << 24) - 1, u32::MAX), (1, 77, 5)] {
            assert_eq!(decode(user_data(tag, idx, gen)), (tag, idx, gen));
        }
    }

    #[test]
    fn fifo_keeps_order_and_unlinks_anywhere() {
        let mut t = Table::new(4);
        let ids: Vec<u32> = (0..4).map(|_| t.alloc().unwrap()).collect();
        let mut q = Fifo::EMPTY;
        for &i in &ids {
            t.push_back(&mut q, i);
        }
        t.unlink(&mut q, ids[2]);
        t.unlink(&mut q, ids[3]);
        t.push_back(&mut q, ids[3]);
        let order: Vec<u32> = std::iter::from_fn(|| t.pop_front(&mut q)).collect();
        assert_eq!(order, [ids[0], ids[1], ids[3]]);
        assert!(t.pop_front(&mut q).is_none());
    }

    #[test]
    fn stale_generation_is_not_found() {
        let mut t = Table::new(2);
        let a = t.alloc().unwrap();
        let gen = t.slot(a).gen;
        t.release(a);
        let b = t.alloc().unwrap();
        assert_eq!(a, b);
        assert!(t.get(a, gen).is_none());
        assert!(t.get(b, gen + 1).is_some());
        assert!(t.alloc().is_some());
        assert!(t.alloc().is_none());
        assert_eq!(t.live(), 2);
    }
}
