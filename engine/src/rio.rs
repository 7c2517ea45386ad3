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
//! | RIODequeueCompletion        | [`CompletionQueue::dequeue`]                       |
//! | RIONotify                   | [`CompletionQueue::notify`]                        |
//!
//! Safety by ownership rather than by discipline: registering splits the memory into disjoint
//! owned segments; a segment moves into the request and comes back in its [`RioResult`], so
//! the application cannot touch bytes the kernel may be writing. As in RIO, a request queue
//! reserves its depth in the completion queue when created (a queue that would overflow is
//! refused with `NoBuffers`), so completions can never be dropped for lack of room.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::completion::{Completion, OpKind};
use crate::error::Error;
use crate::op::Request;
use crate::port::CompletionPort;
use crate::proto::{Command, ShardHandle, ShardShared};
use crate::socket::SocketCore;
use crate::sync::WakeFlag;
use crate::sys::ring::Ring;

const UNREGISTERED: u32 = u32::MAX;

struct RioRegion {
    ptr: *mut u8,
    len: usize,
    /// Fixed-buffer slot in the owning shard's ring, registered on first zero-copy use.
    slot: AtomicU32,
    shard: Weak<ShardShared>,
}

// SAFETY: the region is plain heap memory; access to its bytes is partitioned into disjoint
// RioBuf segments, each owned by one holder at a time.
unsafe impl Send for RioRegion {}
// SAFETY: as above; shared references only read `ptr`/`len` and the atomic slot.
unsafe impl Sync for RioRegion {}

impl Drop for RioRegion {
    fn drop(&mut self) {
        let slot = self.slot.load(Ordering::Acquire);
        if slot != UNREGISTERED {
            if let Some(sh) = self.shard.upgrade() {
                // Never blocks, on any thread (the shard's own included): the released-slot
                // queue has room for every slot.
                sh.release_rio_slot(slot);
            }
        }
        // SAFETY: ptr/len came from Box::into_raw of a Box<[u8]> in `register`; every RioBuf
        // (and so every in-flight request) is gone, so nobody references the memory.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

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
        let len = memory.len();
        let ptr = Box::into_raw(memory.into_boxed_slice()).cast::<u8>();
        let region = Arc::new(RioRegion {
            ptr,
            len,
            slot: AtomicU32::new(UNREGISTERED),
            shard: Arc::downgrade(&shard.shared),
        });
        Ok((0..len)
            .step_by(segment_len)
            .map(|off| {
                let cap = segment_len.min(len - off) as u32;
                RioBuf {
                    region: region.clone(),
                    off: off as u32,
                    cap,
                    len: 0,
                }
            })
            .collect())
    }
}

/// An owned segment of a registered buffer (RIO_BUF), with a length of valid bytes.
pub struct RioBuf {
    region: Arc<RioRegion>,
    off: u32,
    cap: u32,
    len: u32,
}

impl fmt::Debug for RioBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RioBuf")
            .field("off", &self.off)
            .field("cap", &self.cap)
            .field("len", &self.len)
            .finish()
    }
}

impl RioBuf {
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// # Panics
    /// If `len` exceeds the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "RioBuf::set_len beyond the segment");
        self.len = len as u32;
    }

    /// Offset of this segment in its registered buffer.
    pub fn offset(&self) -> usize {
        self.off as usize
    }

    /// The segment's buffer is registered with the kernel as a fixed buffer.
    pub fn is_registered(&self) -> bool {
        self.region.slot.load(Ordering::Acquire) != UNREGISTERED
    }

    fn ptr(&self) -> *mut u8 {
        // SAFETY: off < len of the region by construction.
        unsafe { self.region.ptr.add(self.off as usize) }
    }

    pub(crate) fn raw(&self, kind: RioKind) -> (*mut u8, u32) {
        match kind {
            RioKind::Receive => (self.ptr(), self.cap),
            RioKind::Send => (self.ptr(), self.len),
        }
    }

    pub(crate) fn registered_slot(&self) -> Option<u32> {
        Some(self.region.slot.load(Ordering::Acquire)).filter(|&s| s != UNREGISTERED)
    }

    /// On the thread of shard `on`: the fixed-buffer slot, registering the region now if
    /// needed. `None` if the region was registered with another shard (its slot, if any, is
    /// in that shard's table, not `on`'s) or no slot is free: the send then copies.
    pub(crate) fn fixed_slot(&self, on: &Arc<ShardShared>, free: &mut Vec<u32>, ring: &mut Ring) -> Option<u32> {
        let r = &*self.region;
        if !std::ptr::eq(r.shard.as_ptr(), Arc::as_ptr(on)) {
            return None;
        }
        if let Some(s) = self.registered_slot() {
            return Some(s);
        }
        let slot = free.pop()?;
        // SAFETY: the region's memory lives until its RioRegion drops; no request can name
        // the slot after that (every RioBuf is gone), and the shard clears it when it takes
        // the slot back (`release_rio_slot`).
        match unsafe { ring.register_slot(slot, r.ptr, r.len) } {
            Ok(()) => {
                r.slot.store(slot, Ordering::Release);
                Some(slot)
            }
            Err(e) => {
                tracing::warn!(error = %e, "registering a RIO buffer failed; sends copy instead");
                free.push(slot);
                None
            }
        }
    }
}

impl Deref for RioBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: this RioBuf owns its segment exclusively (segments are disjoint, and a
        // segment in flight is owned by the request); the bytes came from a Vec<u8>, so they
        // are initialised.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len as usize) }
    }
}

impl DerefMut for RioBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len as usize) }
    }
}

/// RIO request flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RioFlags(u32);

impl RioFlags {
    pub const NONE: RioFlags = RioFlags(0);
    /// RIO_MSG_DEFER: queue the request but do not hand it to the shard yet.
    pub const DEFER: RioFlags = RioFlags(1);
}

/// The result of one RIO request (RIORESULT).
#[derive(Debug)]
pub struct RioResult {
    /// RequestContext.
    pub token: u64,
    /// SocketContext: the key given to the request queue.
    pub key: u64,
    pub result: Result<usize, Error>,
    /// The segment, handed back; for a receive its length is the bytes received.
    pub buf: RioBuf,
    /// Sender of a received datagram.
    pub peer: Option<SocketAddr>,
}

/// A manual-reset event for [`RioNotify::Event`].
#[derive(Clone, Debug, Default)]
pub struct RioEvent(Arc<(Mutex<bool>, Condvar)>);

impl RioEvent {
    pub fn new() -> RioEvent {
        RioEvent::default()
    }

    fn set(&self) {
        *self.0 .0.lock().expect("event lock poisoned") = true;
        self.0 .1.notify_all();
    }

    /// Waits until set (true) or `timeout` passes (false). Does not reset.
    pub fn wait(&self, timeout: Duration) -> bool {
        let g = self.0 .0.lock().expect("event lock poisoned");
        let (g, _) = self
            .0
             .1
            .wait_timeout_while(g, timeout, |set| !*set)
            .expect("event lock poisoned");
        *g
    }

    pub fn reset(&self) {
        *self.0 .0.lock().expect("event lock poisoned") = false;
    }
}

/// How a completion queue signals after [`CompletionQueue::notify`].
#[derive(Clone, Debug)]
pub enum RioNotify {
    /// Polling only.
    None,
    /// RIO_EVENT_COMPLETION.
    Event(RioEvent),
    /// RIO_IOCP_COMPLETION: posts a `RioNotify` completion with `key` to the port.
    Port { port: CompletionPort, key: u64 },
}

/// The RIONotify handshake over a queue: arm once, fire once when the queue holds
/// something. Shared by RIO completion queues and fan-out subscriptions.
#[derive(Debug)]
pub(crate) struct Notifier {
    armed: WakeFlag,
    notify: RioNotify,
    /// The `op` of a posted notification completion.
    op: OpKind,
}

impl Notifier {
    pub(crate) fn new(notify: RioNotify, op: OpKind) -> Notifier {
        Notifier {
            armed: WakeFlag::new(),
            notify,
            op,
        }
    }

    /// Arms; fires at once if the queue already holds `queued` entries.
    pub(crate) fn arm(&self, queued: impl Fn() -> usize) {
        // The store-buffering handshake of `WakeFlag` (loom-checked): either the producer's
        // `pushed` sees the arming, or we see its entry here.
        if self.armed.arm(|| queued() > 0) {
            self.fire(queued());
        }
    }

    /// After a push that left `queued` entries: fires if armed.
    pub(crate) fn pushed(&self, queued: impl Fn() -> usize) {
        if self.armed.take() {
            self.fire(queued());
        }
    }

    fn fire(&self, queued: usize) {
        match &self.notify {
            RioNotify::None => {}
            RioNotify::Event(e) => e.set(),
            RioNotify::Port { port, key } => {
                if port.post(Completion::of(self.op, *key, 0, Ok(queued))).is_err() {
                    tracing::warn!("notification lost: its completion port is full");
                }
            }
        }
    }
}

struct CqShared {
    queue: ArrayQueue<RioResult>,
    reserved: AtomicUsize,
    notifier: Notifier,
}

/// A RIO completion queue. Clones share the queue.
#[derive(Clone)]
pub struct CompletionQueue {
    shared: Arc<CqShared>,
}

impl fmt::Debug for CompletionQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionQueue")
            .field("queued", &self.shared.queue.len())
            .finish()
    }
}

impl CompletionQueue {
    ///
    /// # Panics
    /// If `capacity` is 0 (a programmer error: such a queue could never hold a result).
    pub fn new(capacity: usize, notify: RioNotify) -> CompletionQueue {
        assert!(capacity > 0, "completion queue capacity must be positive");
        CompletionQueue {
            shared: Arc::new(CqShared {
                queue: ArrayQueue::new(capacity),
                reserved: AtomicUsize::new(0),
                notifier: Notifier::new(notify, OpKind::RioNotify),
            }),
        }
    }

    /// RIODequeueCompletion: appends up to `max` results to `out`; never blocks.
    pub fn dequeue(&self, out: &mut Vec<RioResult>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(r) = self.shared.queue.pop() else { break };
            out.push(r);
            n += 1;
        }
        n
    }

    /// RIONotify: signal once when a completion is (or already is) queued.
    pub fn notify(&self) {
        self.shared.notifier.arm(|| self.shared.queue.len());
    }

    pub fn len(&self) -> usize {
        self.shared.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.queue.is_empty()
    }
}

pub(crate) struct RqShared {
    cq: Arc<CqShared>,
    key: u64,
    recv_out: AtomicU32,
    send_out: AtomicU32,
    reserved: usize,
}

impl Drop for RqShared {
    fn drop(&mut self) {
        self.cq.reserved.fetch_sub(self.reserved, Ordering::AcqRel);
    }
}

/// Direction of a RIO request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RioKind {
    Receive,
    Send,
}

/// A RIO request travelling to the shard and back.
pub(crate) struct RioOp {
    pub kind: RioKind,
    pub buf: RioBuf,
    pub rq: Arc<RqShared>,
    pub addr: Option<SocketAddr>,
}

impl fmt::Debug for RioOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RioOp")
            .field("kind", &self.kind)
            .field("buf", &self.buf)
            .finish()
    }
}

impl RioOp {
    pub(crate) fn kind(&self) -> OpKind {
        match self.kind {
            RioKind::Receive => OpKind::Recv,
            RioKind::Send => OpKind::Send,
        }
    }

    /// Posts the result to the request queue's completion queue (room was reserved).
    pub(crate) fn complete(self, token: u64, result: Result<usize, Error>, peer: Option<SocketAddr>) {
        let RioOp { kind, mut buf, rq, .. } = self;
        if kind == RioKind::Receive {
            buf.len = *result.as_ref().unwrap_or(&0) as u32;
        }
        let out = match kind {
            RioKind::Receive => &rq.recv_out,
            RioKind::Send => &rq.send_out,
        };
        let r = RioResult {
            token,
            key: rq.key,
            result,
            buf,
            peer,
        };
        if rq.cq.queue.push(r).is_err() {
            unreachable!("RIO completion queue overflow despite reservation");
        }
        out.fetch_sub(1, Ordering::AcqRel);
        rq.cq.notifier.pushed(|| rq.cq.queue.len());
    }
}

/// A RIO request queue on one socket, with fixed maximum outstanding receives and sends.
#[derive(Debug)]
pub struct RequestQueue {
    socket: SocketCore,
    rq: Arc<RqShared>,
    max_recv: u32,
    max_send: u32,
    deferred: VecDeque<(u64, RioOp)>,
}

impl fmt::Debug for RqShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RqShared").field("key", &self.key).finish()
    }
}

impl RequestQueue {
    /// RIOCreateRequestQueue. Reserves `max_recv + max_send` entries in `cq`; `NoBuffers` if
    /// the queue cannot hold them on top of earlier reservations.
    pub fn new(
        socket: &SocketCore,
        cq: &CompletionQueue,
        max_recv: u32,
        max_send: u32,
        key: u64,
    ) -> Result<RequestQueue, Error> {
        // Checked: u32 + u32 must not wrap under the CQ reservation.
        let need = max_recv as usize + max_send as usize;
        let cqs = &cq.shared;
        let mut cur = cqs.reserved.load(Ordering::Acquire);
        loop {
            if cur + need > cqs.queue.capacity() {
                return Err(Error::NoBuffers);
            }
            match cqs
                .reserved
                .compare_exchange_weak(cur, cur + need, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        Ok(RequestQueue {
            socket: socket.clone_handle(),
            rq: Arc::new(RqShared {
                cq: cqs.clone(),
                key,
                recv_out: AtomicU32::new(0),
                send_out: AtomicU32::new(0),
                reserved: need,
            }),
            max_recv,
            max_send,
            deferred: VecDeque::with_capacity(need),
        })
    }

    /// RIOReceive(Ex): receive into `buf`. A full queue hands the segment back with NoBuffers.
    pub fn receive(&mut self, buf: RioBuf, token: u64, flags: RioFlags) -> Result<(), (Error, RioBuf)> {
        self.issue(RioKind::Receive, buf, None, token, flags)
    }

    /// RIOSend: send `buf` on a connected socket.
    pub fn send(&mut self, buf: RioBuf, token: u64, flags: RioFlags) -> Result<(), (Error, RioBuf)> {
        self.issue(RioKind::Send, buf, None, token, flags)
    }

    /// RIOSendEx: send `buf` to `addr`.
    pub fn send_to(
        &mut self,
        buf: RioBuf,
        addr: SocketAddr,
        token: u64,
        flags: RioFlags,
    ) -> Result<(), (Error, RioBuf)> {
        self.issue(RioKind::Send, buf, Some(addr), token, flags)
    }

    fn issue(
        &mut self,
        kind: RioKind,
        buf: RioBuf,
        addr: Option<SocketAddr>,
        token: u64,
        flags: RioFlags,
    ) -> Result<(), (Error, RioBuf)> {
        let (out, max) = match kind {
            RioKind::Receive => (&self.rq.recv_out, self.max_recv),
            RioKind::Send => (&self.rq.send_out, self.max_send),
        };
        if out.load(Ordering::Acquire) >= max {
            return Err((Error::NoBuffers, buf));
        }
        out.fetch_add(1, Ordering::AcqRel);
        self.deferred.push_back((
            token,
            RioOp {
                kind,
                buf,
                rq: self.rq.clone(),
                addr,
            },
        ));
        if flags == RioFlags::DEFER {
            return Ok(());
        }
        self.commit().map_err(|e| {
            // The request that could not be handed over is the last one: give it back.
            let (_, op) = self.deferred.pop_back().expect("commit keeps what it could not send");
            let out = match op.kind {
                RioKind::Receive => &self.rq.recv_out,
                RioKind::Send => &self.rq.send_out,
            };
            out.fetch_sub(1, Ordering::AcqRel);
            (e, op.buf)
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
