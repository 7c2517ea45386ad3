//! The parts of Registered I/O that travel with a request and come back: registered memory
//! and its owned segments, the request itself (`RioOp`), and the completion queue it ends
//! in. No shard protocol here (a leaf the op table and the shard use); `rio/mod.rs` holds the
//! API that sends requests.

// The owned views (RioBuf) over registered application memory.
#![allow(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, Weak};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::completion::{Completion, OpKind};
use crate::driver::Driver;
use crate::error::Error;
use crate::port::CompletionPort;
use crate::sync::{ShardWaker, WakeFlag};
use crate::sys::net;

const UNREGISTERED: u32 = u32::MAX;

/// A shard's RIO fixed-buffer slots given back by dropped regions, for the shard to clear
/// and reuse. Sized to hold every slot, so a release never waits (it may run on the shard's
/// own thread).
#[derive(Debug)]
pub(crate) struct RioSlots {
    released: ArrayQueue<u32>,
    waker: Arc<ShardWaker>,
}

impl RioSlots {
    pub(crate) fn new(slots: u32, waker: Arc<ShardWaker>) -> RioSlots {
        RioSlots {
            released: ArrayQueue::new(slots.max(1) as usize),
            waker,
        }
    }

    /// A dropped region's slot goes back (and the shard is woken to clear it). Never blocks.
    fn release(&self, slot: u32) {
        self.released
            .push(slot)
            .expect("a RIO slot released twice: the queue holds every slot");
        self.waker.wake();
    }

    /// The shard takes a released slot.
    pub(crate) fn take(&self) -> Option<u32> {
        self.released.pop()
    }
}

struct RioRegion {
    ptr: *mut u8,
    len: usize,
    /// The memory is ours (a `Vec` given to `register`, freed with the region); else the
    /// caller's (`ExternalBuffer`), which it frees.
    owned: bool,
    /// Fixed-buffer slot in the owning shard's ring, registered on first zero-copy use.
    slot: AtomicU32,
    /// The slots of the shard the region was registered with.
    shard: Weak<RioSlots>,
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
                sh.release(slot);
            }
        }
        if self.owned {
            // SAFETY: ptr/len came from Box::into_raw of a Box<[u8]> in `segments`; every
            // RioBuf (and so every in-flight request) is gone, so nobody references the memory.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
        }
    }
}

/// Takes ownership of `memory` for the shard whose slots are `shard` and splits it into
/// owned segments of `segment_len` bytes (the last may be shorter). The caller checked the
/// sizes (non-empty, each below 4 GiB).
pub(crate) fn segments(memory: Vec<u8>, segment_len: usize, shard: Weak<RioSlots>) -> Vec<RioBuf> {
    let len = memory.len();
    let ptr = Box::into_raw(memory.into_boxed_slice()).cast::<u8>();
    let region = Arc::new(RioRegion {
        ptr,
        len,
        owned: true,
        slot: AtomicU32::new(UNREGISTERED),
        shard,
    });
    (0..len)
        .step_by(segment_len)
        .map(|off| RioBuf {
            region: region.clone(),
            off: off as u32,
            cap: segment_len.min(len - off) as u32,
            len: 0,
        })
        .collect()
}

/// A registered buffer over memory its caller owns and keeps (RIORegisterBuffer as C code
/// calls it: the application's own memory, any `RIO_BUF` within it per request). The safe
/// [`RegisteredBuffer::register`](crate::rio::RegisteredBuffer::register) takes a `Vec` and
/// hands out disjoint owned segments; this one cannot know who else touches the memory, so
/// slicing it — the only way to its bytes — is `unsafe`, with Windows' rules as the
/// contract. Made by [`ExternalBuffer::register`](crate::rio::ExternalBuffer::register).
#[derive(Debug)]
pub struct ExternalBuffer {
    region: Arc<RioRegion>,
}

impl fmt::Debug for RioRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RioRegion").field("len", &self.len).finish()
    }
}

impl ExternalBuffer {
    /// `len` bytes at `ptr` for the shard whose slots are `shard` (nothing is read or
    /// written here: only `slice` reaches the bytes).
    pub(crate) fn new(ptr: std::ptr::NonNull<u8>, len: usize, shard: Weak<RioSlots>) -> Result<ExternalBuffer, Error> {
        if len == 0 || len > u32::MAX as usize {
            return Err(Error::InvalidArgument);
        }
        Ok(ExternalBuffer {
            region: Arc::new(RioRegion {
                ptr: ptr.as_ptr(),
                len,
                owned: false,
                slot: AtomicU32::new(UNREGISTERED),
                shard,
            }),
        })
    }

    /// The buffer's length in bytes.
    pub fn len(&self) -> usize {
        self.region.len
    }

    /// Never true (registration refuses empty memory); for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        self.region.len == 0
    }

    /// A `RIO_BUF` of it: `len` bytes at `off`, as the request's buffer (capacity and
    /// length both `len`: a receive fills up to it, a send sends it all). `InvalidArgument`
    /// if the range leaves the buffer or is empty.
    ///
    /// # Safety
    /// The registered memory is valid for reads and writes of its whole length until this
    /// value and every `RioBuf` sliced from it have been dropped (every request's result
    /// dequeued and dropped), and nothing frees or moves it before. Until the returned
    /// `RioBuf` is dropped, no other live `RioBuf` of this buffer that a receive writes
    /// overlaps the range, nothing writes the range while a send holds it, and the caller
    /// does not touch bytes a receive holds (Windows' rules for RIO_BUFs).
    pub unsafe fn slice(&self, off: usize, len: usize) -> Result<RioBuf, Error> {
        let end = off.checked_add(len).ok_or(Error::InvalidArgument)?;
        if len == 0 || end > self.region.len {
            return Err(Error::InvalidArgument);
        }
        Ok(RioBuf {
            region: self.region.clone(),
            off: off as u32,
            cap: len as u32,
            len: len as u32,
        })
    }

    /// Requests holding slices of it now (results not yet dropped included).
    pub fn in_use(&self) -> usize {
        Arc::strong_count(&self.region) - 1
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
    pub(crate) fn fixed_slot<D: Driver>(&self, on: &Arc<RioSlots>, free: &mut Vec<u32>, driver: &mut D) -> Option<u32> {
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
        match unsafe { driver.register_buffer(slot, r.ptr, r.len) } {
            Ok(()) => {
                r.slot.store(slot, Ordering::Release);
                Some(slot)
            }
            Err(e) => {
                if e.kind() != std::io::ErrorKind::Unsupported {
                    tracing::warn!(error = %e, "registering a RIO buffer failed; sends copy instead");
                }
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

/// RIO request flags: a bit set with mswsockdef.h's values, combined with `|`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RioFlags(u32);

impl RioFlags {
    pub const NONE: RioFlags = RioFlags(0);
    /// RIO_MSG_DONT_NOTIFY: this request's completion does not fire the completion queue's
    /// armed notification (`RIONotify`); a later one does.
    pub const DONT_NOTIFY: RioFlags = RioFlags(0x1);
    /// RIO_MSG_DEFER: queue the request but do not hand it to the shard yet.
    pub const DEFER: RioFlags = RioFlags(0x2);
    /// RIO_MSG_WAITALL: a receive on a stream completes only with its buffer full (or at EOF,
    /// with what came); refused with `InvalidArgument` on a send or a datagram socket.
    pub const WAITALL: RioFlags = RioFlags(0x4);
    /// RIO_MSG_COMMIT_ONLY: commit the deferred requests and issue nothing — Windows wants no
    /// buffer with it, so here it is [`RequestQueue::commit`](crate::rio::RequestQueue::commit);
    /// a request carrying it is refused with `InvalidArgument`.
    pub const COMMIT_ONLY: RioFlags = RioFlags(0x8);
    const KNOWN: u32 = 0xf;

    /// Every flag of `other` is set here.
    pub const fn contains(self, other: RioFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits, as Windows numbers them.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// The flags of `bits`, if every bit is a known one.
    pub const fn from_bits(bits: u32) -> Option<RioFlags> {
        if bits & !Self::KNOWN == 0 {
            Some(RioFlags(bits))
        } else {
            None
        }
    }
}

impl std::ops::BitOr for RioFlags {
    type Output = RioFlags;
    fn bitor(self, o: RioFlags) -> RioFlags {
        RioFlags(self.0 | o.0)
    }
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
    /// A send's zero-copy: `None` — sent by copy (below `Config::rio_zc_min_bytes`, on a
    /// stream, from a buffer registered with another shard, or on the epoll provider);
    /// `Some(true)` — the kernel sent from the registered pages; `Some(false)` — asked
    /// zero-copy, but the kernel copied (loopback, or a device without scatter-gather).
    pub zero_copy: Option<bool>,
    /// RIOReceiveEx's pLocalAddress (asked with [`RioEx::want_local`]): the address the
    /// datagram was sent to — the local address it arrived on, or its multicast group.
    pub local: Option<IpAddr>,
    /// RIOReceiveEx / RIOSendEx's pControlContext segment, handed back; after a receive its
    /// length is the control messages the kernel wrote (Linux's `cmsghdr` layout and numbers).
    pub control: Option<RioBuf>,
    /// The kernel had more control messages than `control` holds (MSG_CTRUNC).
    pub control_truncated: bool,
}

/// RIOReceiveEx / RIOSendEx's extra buffers, for datagram sockets.
#[derive(Debug, Default)]
pub struct RioEx {
    /// pControlContext: a segment for control messages. A receive's are written into it
    /// (handed back in [`RioResult::control`]); a send's are sent with its datagram.
    pub control: Option<RioBuf>,
    /// Receives, pLocalAddress: report in [`RioResult::local`] the address each datagram was
    /// sent to (turns IP_PKTINFO / IPV6_RECVPKTINFO on for the socket).
    pub want_local: bool,
    /// Sends, pLocalAddress: the source address to send from (an IP_PKTINFO /
    /// IPV6_PKTINFO message); not together with `control` (put the message in it instead).
    pub source: Option<IpAddr>,
}

/// A manual-reset event (WSAEVENT) for [`RioNotify::Event`]: an eventfd, readable while
/// set, so besides [`wait`](RioEvent::wait) it can be put in poll/epoll with the
/// application's other descriptors ([`AsRawFd`]). Clones share the event.
#[derive(Clone, Debug)]
pub struct RioEvent(Arc<OwnedFd>);

impl RioEvent {
    /// WSACreateEvent: a new event, not set. Fails only when no descriptor can be had
    /// (EMFILE/ENFILE: raise `ulimit -n`).
    pub fn new() -> Result<RioEvent, Error> {
        Ok(RioEvent(Arc::new(net::eventfd_nonblocking()?)))
    }

    /// WSASetEvent: set until reset; wakes every waiter.
    pub fn set(&self) {
        net::eventfd_signal(self.0.as_raw_fd());
    }

    /// WSAResetEvent.
    pub fn reset(&self) {
        net::eventfd_drain(self.0.as_raw_fd());
    }

    /// Whether it is set now.
    pub fn is_set(&self) -> bool {
        net::poll_one(self.0.as_raw_fd(), libc::POLLIN, 0).unwrap_or(false)
    }

    /// Waits until set (true) or `timeout` passes (false). Does not reset.
    pub fn wait(&self, timeout: Duration) -> bool {
        matches!(RioEvent::wait_many(&[self], false, Some(timeout)), Ok(Some(0)))
    }

    /// WSAWaitForMultipleEvents: waits up to `timeout` (None: for ever) until one of `events`
    /// is set (`all` false: the lowest index set), or all are (`all` true: `Some(0)`, each
    /// seen set and then all set together in one last look); `None` on timeout. Resets
    /// nothing (manual-reset events).
    pub fn wait_many(events: &[&RioEvent], all: bool, timeout: Option<Duration>) -> Result<Option<usize>, Error> {
        if events.is_empty() {
            return Err(Error::InvalidArgument);
        }
        if timeout != Some(Duration::ZERO) {
            // A blocking wait: the thread's completion-port hold ends, as on Windows.
            CompletionPort::release_current_thread();
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut fds: Vec<libc::pollfd> = events
            .iter()
            .map(|e| libc::pollfd {
                fd: e.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        loop {
            let ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    // Rounded up, so a wait never ends early; capped at i32::MAX ms.
                    i32::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
                }
            };
            let ready = net::poll_many(&mut fds, ms)?;
            if !all {
                if ready > 0 {
                    return Ok(fds.iter().position(|p| p.revents & libc::POLLIN != 0));
                }
            } else {
                // Those seen set leave the wait (their fd negated: poll skips it); when none
                // is left, one look at all of them together decides.
                for p in fds.iter_mut().filter(|p| p.revents & libc::POLLIN != 0) {
                    p.fd = !p.fd;
                }
                if fds.iter().all(|p| p.fd < 0) {
                    for (p, e) in fds.iter_mut().zip(events) {
                        p.fd = e.0.as_raw_fd();
                    }
                    if net::poll_many(&mut fds, 0)? == fds.len() {
                        return Ok(Some(0));
                    }
                    for p in fds.iter_mut().filter(|p| p.revents & libc::POLLIN != 0) {
                        p.fd = !p.fd;
                    }
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }
}

impl AsRawFd for RioEvent {
    /// The eventfd: readable while the event is set. Read it only through
    /// [`reset`](RioEvent::reset).
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// How a completion queue signals after [`CompletionQueue::notify`].
#[derive(Clone, Debug)]
pub enum RioNotify {
    /// Polling only.
    None,
    /// RIO_EVENT_COMPLETION.
    Event(RioEvent),
    /// RIO_IOCP_COMPLETION: posts a `RioNotify` completion with `key` and `token` (the
    /// notification's OVERLAPPED) to the port.
    Port { port: CompletionPort, key: u64, token: u64 },
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
            RioNotify::Port { port, key, token } => {
                if port.post(Completion::of(self.op, *key, *token, Ok(queued))).is_err() {
                    tracing::warn!("notification lost: its completion port is full");
                }
            }
        }
    }
}

pub(crate) struct CqShared {
    /// The results. Pushes (shard threads) and pops (the application) take the read side;
    /// only [`CompletionQueue::resize`] takes the write side, to move them into a new ring.
    pub(crate) queue: RwLock<ArrayQueue<RioResult>>,
    /// The capacity (high 32 bits) and the entries in use (low 32 bits: requests issued on
    /// this queue's request queues and not yet dequeued — in flight, deferred, or waiting in
    /// `queue`). One word, so a claim and a resize can never cross: in use never exceeds the
    /// capacity, so a result always has room.
    room: AtomicU64,
    /// The sum of its request queues' maxima (at most the capacity). Changed only under this
    /// lock — creating, resizing or dropping a request queue, resizing this queue — so a
    /// reservation and a shrink can never cross either.
    pub(crate) reserved: Mutex<usize>,
    pub(crate) notifier: Notifier,
}

const USED: u64 = u32::MAX as u64;

impl CqShared {
    fn read(&self) -> RwLockReadGuard<'_, ArrayQueue<RioResult>> {
        self.queue.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn reserved(&self) -> MutexGuard<'_, usize> {
        self.reserved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries it holds.
    pub(crate) fn capacity(&self) -> usize {
        (self.room.load(Ordering::Acquire) >> 32) as usize
    }

    /// Results waiting to be dequeued.
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    /// Claims room for one more request's result; false when every entry is spoken for
    /// (results the application has not dequeued yet hold theirs).
    pub(crate) fn claim(&self) -> bool {
        self.room
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                ((w & USED) < (w >> 32)).then_some(w + 1)
            })
            .is_ok()
    }

    /// Gives back `n` claims (results dequeued, or requests that never went out).
    pub(crate) fn unclaim(&self, n: usize) {
        self.room.fetch_sub(n as u64, Ordering::AcqRel);
    }

    /// Queues a result whose room was claimed.
    pub(crate) fn push(&self, r: RioResult) {
        if self.read().push(r).is_err() {
            unreachable!("RIO completion queue overflow despite the claim made at issue");
        }
    }
}

/// A RIO completion queue. Clones share the queue.
#[derive(Clone)]
pub struct CompletionQueue {
    pub(crate) shared: Arc<CqShared>,
}

impl fmt::Debug for CompletionQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionQueue")
            .field("queued", &self.shared.len())
            .field("capacity", &self.shared.capacity())
            .finish()
    }
}

impl CompletionQueue {
    /// RIOCreateCompletionQueue: `capacity` entries, preallocated.
    ///
    /// # Panics
    /// If `capacity` is 0 or above `u32::MAX` (a programmer error: the first could never
    /// hold a result; RIO's own limit, `RIO_CQ_MAX_SIZE`, is far below the second).
    pub fn new(capacity: usize, notify: RioNotify) -> CompletionQueue {
        assert!(
            capacity > 0 && capacity <= u32::MAX as usize,
            "completion queue capacity must be in 1..=u32::MAX"
        );
        CompletionQueue {
            shared: Arc::new(CqShared {
                queue: RwLock::new(ArrayQueue::new(capacity)),
                room: AtomicU64::new((capacity as u64) << 32),
                reserved: Mutex::new(0),
                notifier: Notifier::new(notify, OpKind::RioNotify),
            }),
        }
    }

    /// RIODequeueCompletion: appends up to `max` results to `out`; never blocks.
    pub fn dequeue(&self, out: &mut Vec<RioResult>, max: usize) -> usize {
        let mut n = 0;
        {
            let q = self.shared.read();
            while n < max {
                let Some(r) = q.pop() else { break };
                out.push(r);
                n += 1;
            }
        }
        if n > 0 {
            self.shared.unclaim(n);
        }
        n
    }

    /// RIOResizeCompletionQueue: `capacity` entries from now on, the results waiting moved
    /// over in order. Smaller than what its request queues may have outstanding (the sum of
    /// their maxima) or than what is in use now: `TooManyRefs` (WSAETOOMANYREFS), and nothing
    /// changes; 0 or above `u32::MAX`: `InvalidArgument`. Shard threads completing into the
    /// queue wait for the move (it is not a fast-path call).
    pub fn resize(&self, capacity: usize) -> Result<(), Error> {
        if capacity == 0 || capacity > u32::MAX as usize {
            return Err(Error::InvalidArgument);
        }
        let sh = &self.shared;
        let reserved = sh.reserved();
        if capacity < *reserved {
            return Err(Error::TooManyRefs);
        }
        let mut q = sh.queue.write().unwrap_or_else(|e| e.into_inner());
        sh.room
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                ((w & USED) as usize <= capacity).then_some(((capacity as u64) << 32) | (w & USED))
            })
            .map_err(|_| Error::TooManyRefs)?;
        if q.capacity() != capacity {
            let fresh = ArrayQueue::new(capacity);
            while let Some(r) = q.pop() {
                // What is queued is in use, and in use fits the new capacity.
                if fresh.push(r).is_err() {
                    unreachable!("resized completion queue smaller than its results");
                }
            }
            *q = fresh;
        }
        Ok(())
    }

    /// Entries it holds (RIOCreateCompletionQueue's size, or the last resize's).
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// RIONotify: signal once when a completion is (or already is) queued.
    pub fn notify(&self) {
        self.shared.notifier.arm(|| self.shared.len());
    }

    pub fn len(&self) -> usize {
        self.shared.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.len() == 0
    }
}

pub(crate) struct RqShared {
    pub(crate) recv_cq: Arc<CqShared>,
    pub(crate) send_cq: Arc<CqShared>,
    pub(crate) key: u64,
    pub(crate) recv_out: AtomicU32,
    pub(crate) send_out: AtomicU32,
    /// Entries this queue holds in its receive and send CQs (max_recv, max_send; changed by
    /// resize) — and as many slots in its shard's operation table.
    pub(crate) reserved: [AtomicUsize; 2],
    /// The shard's count of operation slots request queues reserve (`ShardShared`'s).
    pub(crate) shard_slots: Arc<AtomicU32>,
}

impl RqShared {
    /// The completion queue of `kind`'s results.
    pub(crate) fn cq(&self, kind: RioKind) -> &Arc<CqShared> {
        match kind {
            RioKind::Receive => &self.recv_cq,
            RioKind::Send => &self.send_cq,
        }
    }

    /// This queue's reservation in `cq(kind)`.
    pub(crate) fn reserved(&self, kind: RioKind) -> &AtomicUsize {
        &self.reserved[kind as usize]
    }
}

impl Drop for RqShared {
    /// The last holder (the queue, or its last request in flight) gives back the queue's
    /// CQ entries and its shard's operation slots.
    fn drop(&mut self) {
        for kind in [RioKind::Receive, RioKind::Send] {
            let n = self.reserved(kind).load(Ordering::Acquire);
            *self.cq(kind).reserved() -= n;
            self.shard_slots.fetch_sub(n as u32, Ordering::AcqRel);
        }
    }
}

/// Direction of a RIO request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RioKind {
    Receive = 0,
    Send = 1,
}

/// A RIO request travelling to the shard and back.
pub(crate) struct RioOp {
    pub kind: RioKind,
    pub buf: RioBuf,
    pub rq: Arc<RqShared>,
    pub addr: Option<SocketAddr>,
    /// RIO_MSG_DONT_NOTIFY: completing does not fire the queue's notification.
    pub quiet: bool,
    /// On a stream socket: a send goes on until whole, in the stream's write lane.
    pub stream: bool,
    /// RIO_MSG_WAITALL (stream receives): it goes on until the buffer is full (or EOF).
    pub waitall: bool,
    /// Set as it ends: what `RioResult::zero_copy` reports.
    pub zc: Option<bool>,
    /// RIOReceiveEx / RIOSendEx's pControlContext segment (boxed: the rare extra, so the
    /// common request stays small on its way through the command queue).
    pub control: Option<Box<RioBuf>>,
    /// A receive asked for the local address (`RioEx::want_local`).
    pub want_local: bool,
    /// A send's source address (`RioEx::source`); a receive's local address as it ends.
    pub ip: Option<IpAddr>,
    /// Set as a receive ends (MSG_CTRUNC).
    pub control_truncated: bool,
}

impl RioOp {
    /// A request's extras, as the application gave them (a refused request hands them back).
    pub(crate) fn take_ex(&mut self) -> RioEx {
        RioEx {
            control: self.control.take().map(|b| *b),
            want_local: self.want_local,
            source: if self.kind == RioKind::Send { self.ip } else { None },
        }
    }
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
        let RioOp {
            kind,
            mut buf,
            rq,
            quiet,
            zc,
            control,
            ip,
            control_truncated,
            ..
        } = self;
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
            zero_copy: zc,
            local: ip.filter(|_| kind == RioKind::Receive),
            control: control.map(|b| *b),
            control_truncated,
        };
        let cq = rq.cq(kind);
        // The request ends in its request queue before its result can be seen: an
        // application that re-posts as soon as it dequeues the result (every RIO server) must
        // find the room. The push below releases this, so whoever pops the result sees it.
        // (The CQ entry stays claimed until the result is dequeued, so a request posted in
        // between cannot take this result's room.)
        out.fetch_sub(1, Ordering::AcqRel);
        cq.push(r);
        if !quiet {
            cq.notifier.pushed(|| cq.len());
        }
    }
}

impl fmt::Debug for RqShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RqShared").field("key", &self.key).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::RioEvent;
    use std::time::Duration;

    #[test]
    fn an_event_is_manual_reset_and_waits_for_any_or_all() {
        let (a, b) = (RioEvent::new().unwrap(), RioEvent::new().unwrap());
        assert!(!a.is_set());
        let short = Some(Duration::from_millis(20));
        assert_eq!(
            RioEvent::wait_many(&[&a, &b], false, short).unwrap(),
            None,
            "neither set"
        );
        b.set();
        b.set();
        assert!(b.is_set() && b.is_set(), "a wait does not reset it");
        assert_eq!(RioEvent::wait_many(&[&a, &b], false, short).unwrap(), Some(1));
        assert_eq!(
            RioEvent::wait_many(&[&a, &b], true, short).unwrap(),
            None,
            "a is not set"
        );
        // `all` ends when the last one is set, from another thread.
        let a2 = a.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            a2.set();
        });
        assert_eq!(
            RioEvent::wait_many(&[&a, &b], true, Some(Duration::from_secs(10))).unwrap(),
            Some(0)
        );
        t.join().unwrap();
        b.reset();
        assert!(
            !b.is_set() && a.is_set(),
            "reset clears one event, however often it was set"
        );
        assert!(!b.wait(Duration::from_millis(10)));
        assert!(a.wait(Duration::from_millis(10)));
        assert!(RioEvent::wait_many(&[], false, short).is_err());
    }
}
