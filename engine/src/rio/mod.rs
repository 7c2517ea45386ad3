//! Registered I/O (RIO): application memory registered once, request queues with fixed
//! depths, and completion queues the application drains itself.
//!
//! | RIO                         | here                                              |
//! |-----------------------------|---------------------------------------------------|
//! | RIORegisterBuffer           | [`RegisteredBuffer::register`] -> owned [`RioBuf`] segments |
//! | RIODeregisterBuffer         | dropping the last segment                          |
//! | RIOCreateCompletionQueue    | [`CompletionQueue::new`] with a [`RioNotify`]      |
//! | RIOCreateRequestQueue       | [`RequestQueue::new`] (max receives, max sends)    |
//! | RIOReceive / RIOReceiveEx   | [`RequestQueue::receive`]                          |
//! | RIOSend / RIOSendEx         | [`RequestQueue::send`], [`RequestQueue::send_to`]  |
//! | RIO_MSG_DEFER / COMMIT_ONLY | [`RioFlags::DEFER`], [`RequestQueue::commit`]      |
//! | RIO_MSG_DONT_NOTIFY        | [`RioFlags::DONT_NOTIFY`] (flags combine with `\|`) |
//! | RIODequeueCompletion        | [`CompletionQueue::dequeue`]                       |
//! | RIONotify                   | [`CompletionQueue::notify`]                        |
//!
//! Safety by ownership rather than by discipline: registering splits the memory into disjoint
//! owned segments; a segment moves into the request and comes back in its [`RioResult`], so
//! the application cannot touch bytes the kernel may be writing. As in RIO, a request queue
//! reserves its depth in the completion queue when created (a queue that would overflow is
//! refused with `NoBuffers`), so completions can never be dropped for lack of room.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::Error;
use crate::op::Request;
use crate::proto::{Command, ShardHandle};
use crate::socket::SocketCore;

pub(crate) mod buf;

use buf::CqShared;
pub use buf::{CompletionQueue, ExternalBuffer, RioBuf, RioEvent, RioEx, RioFlags, RioNotify, RioResult};
pub(crate) use buf::{RioKind, RioOp, RqShared};

/// A registered buffer (RIO_BUFFERID): made by [`RegisteredBuffer::register`], which hands the
/// memory back as owned segments.
#[derive(Debug)]
pub struct RegisteredBuffer;

impl RegisteredBuffer {
    /// Takes ownership of `memory`, registers it with `shard`, and splits it into segments of
    /// `segment_len` bytes (the last may be shorter).
    ///
    /// The kernel registration (a fixed-buffer slot, used for zero-copy sends) happens on the
    /// shard thread at first use; [`RioBuf::is_registered`] tells whether it took.
    pub fn register(shard: &ShardHandle, memory: Vec<u8>, segment_len: usize) -> Result<Vec<RioBuf>, Error> {
        if memory.is_empty() || segment_len == 0 || segment_len > u32::MAX as usize || memory.len() > u32::MAX as usize
        {
            return Err(Error::InvalidArgument);
        }
        Ok(buf::segments(
            memory,
            segment_len,
            Arc::downgrade(&shard.shared.rio_slots),
        ))
    }
}

impl ExternalBuffer {
    /// RIORegisterBuffer over `len` bytes at `ptr` that the caller owns and keeps, for
    /// requests on `shard`'s sockets (zero-copy sends use the kernel registration there;
    /// other shards' sockets copy). Nothing is read or written until a request holds a
    /// [`slice`](ExternalBuffer::slice) of it — whose contract says how long the memory must
    /// stay valid.
    pub fn register(shard: &ShardHandle, ptr: std::ptr::NonNull<u8>, len: usize) -> Result<ExternalBuffer, Error> {
        ExternalBuffer::new(ptr, len, Arc::downgrade(&shard.shared.rio_slots))
    }
}

impl Drop for RequestQueue {
    /// Requests still deferred (never committed) end here, `Aborted`, each once, with their
    /// segment: a dropped queue leaves nothing unanswered.
    fn drop(&mut self) {
        while let Some((token, op)) = self.deferred.pop_front() {
            op.complete(token, Err(Error::Aborted), None);
        }
    }
}

/// Reserves `n` of a shard's operation slots for a request queue (`total`: the shard's count,
/// at most `max`); `NoBuffers` past it.
fn reserve_slots(total: &AtomicU32, max: u32, n: u32) -> Result<(), Error> {
    total
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
            r.checked_add(n).filter(|&t| t <= max)
        })
        .map(drop)
        .map_err(|_| Error::NoBuffers)
}

/// Reserves `n` more entries of the completion queue `cqs` (its capacity bounds the sum of
/// its request queues' maxima, so results can never overflow it).
fn reserve(cqs: &CqShared, n: usize) -> Result<(), Error> {
    let mut reserved = cqs.reserved();
    *reserved = reserved
        .checked_add(n)
        .filter(|&t| t <= cqs.capacity())
        .ok_or(Error::NoBuffers)?;
    Ok(())
}

/// Gives back `n` entries reserved in `cqs`.
fn release(cqs: &CqShared, n: usize) {
    *cqs.reserved() -= n;
}

/// A RIO request queue on one socket, with fixed maximum outstanding receives and sends.
#[derive(Debug)]
pub struct RequestQueue {
    socket: SocketCore,
    /// On a stream socket (sends whole and ordered; WAITALL allowed).
    stream: bool,
    rq: Arc<RqShared>,
    max_recv: u32,
    max_send: u32,
    deferred: VecDeque<(u64, RioOp)>,
    /// IP_PKTINFO / IPV6_RECVPKTINFO turned on for the socket (by a `receive_ex` asking for
    /// local addresses).
    local_on: bool,
}

impl RequestQueue {
    /// RIOCreateRequestQueue with one completion queue for both directions. Reserves
    /// `max_recv + max_send` entries in `cq`; `NoBuffers` if the queue cannot hold them on
    /// top of earlier reservations.
    pub fn new(
        socket: &SocketCore,
        cq: &CompletionQueue,
        max_recv: u32,
        max_send: u32,
        key: u64,
    ) -> Result<RequestQueue, Error> {
        RequestQueue::with_queues(socket, cq, cq, max_recv, max_send, key)
    }

    /// RIOCreateRequestQueue with its receives' results in `recv_cq` and its sends' in
    /// `send_cq` (they may be the same queue). Reserves `max_recv` entries in the first and
    /// `max_send` in the second; `NoBuffers` (and nothing reserved) if either has no room.
    /// On a stream (TCP) socket a send completes whole, in order with the stream's other
    /// writes, and a receive may ask for `RioFlags::WAITALL`.
    pub fn with_queues(
        socket: &SocketCore,
        recv_cq: &CompletionQueue,
        send_cq: &CompletionQueue,
        max_recv: u32,
        max_send: u32,
        key: u64,
    ) -> Result<RequestQueue, Error> {
        let (rcq, scq) = (&recv_cq.shared, &send_cq.shared);
        // Slots in the shard's operation table first: a queue the shard cannot carry fails
        // here, at creation, as Windows fails it — never a request the queue accepted.
        let shard = socket.shard();
        reserve_slots(
            &shard.rio_reserved,
            shard.rio_reserve_max,
            max_recv.saturating_add(max_send),
        )?;
        let give_back = || {
            shard
                .rio_reserved
                .fetch_sub(max_recv.saturating_add(max_send), Ordering::AcqRel);
        };
        if let Err(e) = reserve(rcq, max_recv as usize) {
            give_back();
            return Err(e);
        }
        if let Err(e) = reserve(scq, max_send as usize) {
            release(rcq, max_recv as usize);
            give_back();
            return Err(e);
        }
        // u32 + u32 cannot wrap a 64-bit usize.
        let need = max_recv as usize + max_send as usize;
        Ok(RequestQueue {
            stream: socket.is_stream(),
            socket: socket.clone_handle(),
            rq: Arc::new(RqShared {
                recv_cq: rcq.clone(),
                send_cq: scq.clone(),
                key,
                recv_out: AtomicU32::new(0),
                send_out: AtomicU32::new(0),
                reserved: [AtomicUsize::new(max_recv as usize), AtomicUsize::new(max_send as usize)],
                shard_slots: shard.rio_reserved.clone(),
            }),
            max_recv,
            max_send,
            deferred: VecDeque::with_capacity(need),
            local_on: false,
        })
    }

    /// RIOResizeRequestQueue: new maxima of outstanding receives and sends. Growing reserves
    /// the difference in the completion queue (`NoBuffers` if it has no room: grow the CQ
    /// first); shrinking below what is outstanding now is `TooManyRefs` (WSAETOOMANYREFS), and
    /// nothing changes.
    pub fn resize(&mut self, max_recv: u32, max_send: u32) -> Result<(), Error> {
        if self.rq.recv_out.load(Ordering::Acquire) > max_recv || self.rq.send_out.load(Ordering::Acquire) > max_send {
            return Err(Error::TooManyRefs);
        }
        // The shard's operation slots: the growth reserved first (NoBuffers past the
        // shard's room), a shrink given back at the end.
        let (had, want) = (
            self.max_recv.saturating_add(self.max_send),
            max_recv.saturating_add(max_send),
        );
        let shard = self.socket.shard();
        if want > had {
            reserve_slots(&shard.rio_reserved, shard.rio_reserve_max, want - had)?;
        }
        let undo_slots = || {
            if want > had {
                shard.rio_reserved.fetch_sub(want - had, Ordering::AcqRel);
            }
        };
        // Grow first (each may fail; a failed second undoes the first), then shrink.
        let kinds = [
            (RioKind::Receive, max_recv as usize),
            (RioKind::Send, max_send as usize),
        ];
        let mut grown: Option<(RioKind, usize)> = None;
        for (kind, need) in kinds {
            let had = self.rq.reserved(kind).load(Ordering::Acquire);
            if need > had {
                if let Err(e) = reserve(self.rq.cq(kind), need - had) {
                    if let Some((k, n)) = grown {
                        release(self.rq.cq(k), n);
                    }
                    undo_slots();
                    return Err(e);
                }
                grown = Some((kind, need - had));
            }
        }
        for (kind, need) in kinds {
            let had = self.rq.reserved(kind).swap(need, Ordering::AcqRel);
            if need < had {
                release(self.rq.cq(kind), had - need);
            }
        }
        if want < had {
            shard.rio_reserved.fetch_sub(had - want, Ordering::AcqRel);
        }
        (self.max_recv, self.max_send) = (max_recv, max_send);
        Ok(())
    }

    /// RIOReceive: receive into `buf`. A full queue hands the segment back with NoBuffers.
    /// A datagram longer than `buf` ends `MessageTooLong` (WSAEMSGSIZE), counted as
    /// `recv_truncated`.
    pub fn receive(&mut self, buf: RioBuf, token: u64, flags: RioFlags) -> Result<(), (Error, RioBuf)> {
        self.issue(RioKind::Receive, buf, None, RioEx::default(), token, flags)
            .map_err(|(e, b, _)| (e, b))
    }

    /// RIOReceiveEx on a datagram socket: as [`receive`](Self::receive), with a control
    /// segment and/or the local address asked for in `ex` (`source` is for sends:
    /// `InvalidArgument`, as is any extra on a stream). Refused requests hand both back.
    pub fn receive_ex(
        &mut self,
        buf: RioBuf,
        ex: RioEx,
        token: u64,
        flags: RioFlags,
    ) -> Result<(), (Error, RioBuf, RioEx)> {
        if ex.source.is_some() || self.stream {
            return Err((Error::InvalidArgument, buf, ex));
        }
        if ex.want_local && !self.local_on {
            if let Err(e) = self.socket.recv_local_addresses() {
                return Err((e, buf, ex));
            }
            self.local_on = true;
        }
        self.issue(RioKind::Receive, buf, None, ex, token, flags)
    }

    /// RIOSend: send `buf` on a connected socket.
    pub fn send(&mut self, buf: RioBuf, token: u64, flags: RioFlags) -> Result<(), (Error, RioBuf)> {
        self.issue(RioKind::Send, buf, None, RioEx::default(), token, flags)
            .map_err(|(e, b, _)| (e, b))
    }

    /// RIOSendEx: send `buf` to `addr`.
    pub fn send_to(
        &mut self,
        buf: RioBuf,
        addr: SocketAddr,
        token: u64,
        flags: RioFlags,
    ) -> Result<(), (Error, RioBuf)> {
        self.issue(RioKind::Send, buf, Some(addr), RioEx::default(), token, flags)
            .map_err(|(e, b, _)| (e, b))
    }

    /// RIOSendEx on a datagram socket with its extras: to `addr` (or the connected peer),
    /// from `ex.source` and/or with `ex.control`'s messages (not both: `InvalidArgument`, as
    /// are `want_local` and any extra on a stream). Sent by copy (SENDMSG), not zero-copy.
    pub fn send_ex(
        &mut self,
        buf: RioBuf,
        addr: Option<SocketAddr>,
        ex: RioEx,
        token: u64,
        flags: RioFlags,
    ) -> Result<(), (Error, RioBuf, RioEx)> {
        if ex.want_local || (ex.source.is_some() && ex.control.is_some()) || self.stream {
            return Err((Error::InvalidArgument, buf, ex));
        }
        self.issue(RioKind::Send, buf, addr, ex, token, flags)
    }

    fn issue(
        &mut self,
        kind: RioKind,
        buf: RioBuf,
        addr: Option<SocketAddr>,
        ex: RioEx,
        token: u64,
        flags: RioFlags,
    ) -> Result<(), (Error, RioBuf, RioEx)> {
        let waitall = flags.contains(RioFlags::WAITALL);
        if flags.contains(RioFlags::COMMIT_ONLY) || (waitall && (kind != RioKind::Receive || !self.stream)) {
            // COMMIT_ONLY carries no request (use `commit`); WAITALL is for stream receives.
            return Err((Error::InvalidArgument, buf, ex));
        }
        let (out, max) = match kind {
            RioKind::Receive => (&self.rq.recv_out, self.max_recv),
            RioKind::Send => (&self.rq.send_out, self.max_send),
        };
        if out.load(Ordering::Acquire) >= max {
            return Err((Error::NoBuffers, buf, ex));
        }
        // Room for its result: results not yet dequeued keep theirs, so a CQ the application
        // does not drain refuses new requests (backpressure) instead of overflowing.
        if !self.rq.cq(kind).claim() {
            return Err((Error::NoBuffers, buf, ex));
        }
        out.fetch_add(1, Ordering::AcqRel);
        self.deferred.push_back((
            token,
            RioOp {
                kind,
                buf,
                rq: self.rq.clone(),
                addr,
                quiet: flags.contains(RioFlags::DONT_NOTIFY),
                stream: self.stream,
                waitall,
                zc: None,
                control: ex.control.map(Box::new),
                want_local: ex.want_local,
                ip: ex.source,
                control_truncated: false,
            },
        ));
        if flags.contains(RioFlags::DEFER) {
            return Ok(());
        }
        self.commit().map_err(|e| {
            // The request that could not be handed over is the last one: give it back.
            let (_, mut op) = self.deferred.pop_back().expect("commit keeps what it could not send");
            let out = match op.kind {
                RioKind::Receive => &self.rq.recv_out,
                RioKind::Send => &self.rq.send_out,
            };
            out.fetch_sub(1, Ordering::AcqRel);
            self.rq.cq(op.kind).unclaim(1);
            let ex = op.take_ex();
            (e, op.buf, ex)
        })
    }

    /// Cancels the requests issued with `token` (RIO itself cancels only by closing the
    /// socket; CancelIoEx semantics here): deferred ones not yet committed end `Aborted` at
    /// once, committed ones when the shard cancels them (unless they completed first). Each
    /// ends exactly once, in this queue's completion queue, with its buffer.
    pub fn cancel(&mut self, token: u64) -> Result<(), Error> {
        let mut i = 0;
        while i < self.deferred.len() {
            if self.deferred[i].0 == token {
                let (t, op) = self.deferred.remove(i).expect("index in range");
                op.complete(t, Err(Error::Aborted), None);
            } else {
                i += 1;
            }
        }
        self.socket.cancel(token)
    }

    /// RIO_MSG_COMMIT_ONLY: hands every deferred request to the shard, in order, with one
    /// wake-up. On `NoBuffers` (the shard's command queue is full) the rest stay deferred.
    pub fn commit(&mut self) -> Result<(), Error> {
        let shard = self.socket.shard();
        let mut sent = 0;
        let mut result = Ok(());
        while let Some((token, op)) = self.deferred.pop_front() {
            match shard.push(Command::Op {
                sock: self.socket.id(),
                token,
                req: Request::Rio(op),
            }) {
                Ok(()) => sent += 1,
                Err(Command::Op {
                    token,
                    req: Request::Rio(op),
                    ..
                }) => {
                    self.deferred.push_front((token, op));
                    result = Err(if shard.is_stopping() {
                        Error::Shutdown
                    } else {
                        Error::NoBuffers
                    });
                    break;
                }
                Err(_) => unreachable!("push hands back what it was given"),
            }
        }
        if sent > 0 {
            shard.wake();
        }
        result
    }
}
