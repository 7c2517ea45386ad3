//! The registered buffer pool: one mapped region cut into fixed-size frames.
//!
//! Ownership is typed. A frame is in exactly one of these places at any time:
//!
//! | where                      | who may touch the bytes          |
//! |----------------------------|----------------------------------|
//! | the free queue             | nobody                           |
//! | the shard's buffer ring    | the kernel (it may write any time)|
//! | an in-flight operation     | the kernel                       |
//! | a [`Buf`] the application holds | the application, exclusively |
//! | [`SharedBuf`]s (fan-out)   | every holder, read-only; the kernel only reads (sends) |
//!
//! A [`Buf`] is the only way to read or write frame bytes from safe code, and it is moved into
//! an operation when submitted and moved back out in the operation's completion; so the
//! application cannot touch memory the kernel owns. Dropping a `Buf` returns its frame to the
//! free queue, from any thread (the queue is lock-free and bounded by the frame count, so the
//! push cannot fail). Frame conservation: `free + in buffer ring + in flight + held == total`.
//!
//! A `Buf` can be frozen into a [`SharedBuf`]: read-only handles counted per frame (one
//! atomic per frame, no allocation), so one received datagram reaches N subscribers, or one
//! payload N destinations, without a copy. The frame goes back to the free queue when the last
//! handle drops; a handle that is the last one can be thawed back into a `Buf`.

// The typed views (Buf, SharedBuf) over the mapped region: the one place frame bytes are reached.
#![allow(unsafe_code)]

use std::fmt;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::error::Error;
use crate::sync::{fence, AtomicU32};
use crate::sys::region::{PageKind, Region};

/// Largest frame count: provided-buffer ids are 16-bit.
pub const FRAMES_MAX: u32 = 1 << 16;

/// Most [`SharedBuf`] handles one frame may have. Half the counter's range, as `Arc` does:
/// a clone that finds the count above it backs out and panics, so no number of racing
/// clones can wrap the counter to zero (that would free the frame under a live handle).
pub const SHARES_MAX: u32 = u32::MAX / 2;

pub(crate) struct PoolShared {
    region: Region,
    frame_size: u32,
    frames: u32,
    free: ArrayQueue<u32>,
    /// Per frame: how many [`SharedBuf`]s reference it (0 unless shared).
    refs: Box<[AtomicU32]>,
}

/// A handle to a shard's buffer pool. Cloning is cheap; every clone is the same pool.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<PoolShared>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("frames", &self.shared.frames)
            .field("frame_size", &self.shared.frame_size)
            .field("free", &self.shared.free.len())
            .field("pages", &self.shared.region.kind())
            .finish()
    }
}

impl Pool {
    /// Maps `frames` frames of `frame_size` bytes (a power of two, at least 512). A shard
    /// registers its own pool; a stand-alone pool (tests, benchmarks) is registered nowhere.
    pub fn new(frames: u32, frame_size: u32, try_huge: bool) -> std::io::Result<Pool> {
        assert!(frames > 0 && frames <= FRAMES_MAX, "frame count out of range");
        assert!(frame_size.is_power_of_two() && frame_size >= 512, "bad frame size");
        let region = Region::new(frames as usize * frame_size as usize, try_huge)?;
        let free = ArrayQueue::new(frames as usize);
        for i in 0..frames {
            free.push(i).expect("queue sized to the frame count");
        }
        Ok(Pool {
            shared: Arc::new(PoolShared {
                region,
                frame_size,
                frames,
                free,
                refs: (0..frames).map(|_| AtomicU32::new(0)).collect(),
            }),
        })
    }

    /// Takes a free frame for the application to fill and send.
    ///
    /// Pool exhaustion is backpressure: `Err(Error::NoBuffers)` until frames come back.
    pub fn alloc(&self) -> Result<Buf, Error> {
        let frame = self.shared.free.pop().ok_or(Error::NoBuffers)?;
        Ok(Buf {
            pool: self.shared.clone(),
            frame,
            off: 0,
            len: 0,
        })
    }

    /// Takes a free frame whose window starts `headroom` bytes in, leaving room for headers
    /// (AF_XDP sends write Ethernet/IPv4/UDP in front of the payload without moving it).
    pub fn alloc_with_headroom(&self, headroom: usize) -> Result<Buf, Error> {
        if headroom > self.shared.frame_size as usize {
            return Err(Error::InvalidArgument);
        }
        let mut b = self.alloc()?;
        b.off = headroom as u32;
        Ok(b)
    }

    /// Takes a free frame and copies `data` into it.
    pub fn alloc_from(&self, data: &[u8]) -> Result<Buf, Error> {
        if data.len() > self.shared.frame_size as usize {
            return Err(Error::MessageTooLong);
        }
        let mut b = self.alloc()?;
        b.set_len(data.len());
        b.copy_from_slice(data);
        Ok(b)
    }

    pub fn frame_size(&self) -> u32 {
        self.shared.frame_size
    }

    pub fn total_frames(&self) -> u32 {
        self.shared.frames
    }

    pub fn free_frames(&self) -> u32 {
        self.shared.free.len() as u32
    }

    pub fn page_kind(&self) -> PageKind {
        self.shared.region.kind()
    }

    pub(crate) fn region(&self) -> &Region {
        &self.shared.region
    }

    /// Takes a free frame for the kernel (the buffer ring); the caller now owns it.
    pub(crate) fn take_frame(&self) -> Option<u32> {
        self.shared.free.pop()
    }

    /// Kernel address of `frame`.
    pub(crate) fn frame_addr(&self, frame: u32) -> u64 {
        debug_assert!(frame < self.shared.frames);
        self.shared.region.as_ptr() as u64 + u64::from(frame) * u64::from(self.shared.frame_size)
    }

    /// Wraps a frame the kernel has handed back (a provided-buffer completion) as a `Buf`
    /// holding bytes `off..off+len`.
    pub(crate) fn adopt(&self, frame: u32, off: u32, len: u32) -> Buf {
        assert!(
            frame < self.shared.frames && off + len <= self.shared.frame_size,
            "kernel frame out of range"
        );
        Buf {
            pool: self.shared.clone(),
            frame,
            off,
            len,
        }
    }

    /// Narrows a kernel-filled buffer to `off..off+len` of its frame.
    pub(crate) fn adopt_window(&self, mut buf: Buf, off: u32, len: u32) -> Buf {
        assert!(off + len <= self.shared.frame_size, "window out of the frame");
        buf.off = off;
        buf.len = len;
        buf
    }

    pub(crate) fn same(&self, buf: &Buf) -> bool {
        Arc::ptr_eq(&self.shared, &buf.pool)
    }

    pub(crate) fn same_shared(&self, buf: &SharedBuf) -> bool {
        std::ptr::eq(Arc::as_ptr(&self.shared), buf.pool.as_ptr().cast_const())
    }
}

/// Exclusive ownership of one pool frame, with a window `offset..offset+len` of valid bytes.
///
/// Deref gives the window. Dropping the `Buf` returns the frame to its pool.
pub struct Buf {
    pool: Arc<PoolShared>,
    frame: u32,
    off: u32,
    len: u32,
}

impl fmt::Debug for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buf")
            .field("frame", &self.frame)
            .field("off", &self.off)
            .field("len", &self.len)
            .finish()
    }
}

impl Buf {
    /// Bytes the window can grow to without moving its start.
    pub fn capacity(&self) -> usize {
        (self.pool.frame_size - self.off) as usize
    }

    /// Sets the window length. Bytes past the old length hold whatever the frame held
    /// before (always initialised memory).
    ///
    /// # Panics
    /// If `len` exceeds [`capacity`](Self::capacity).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "Buf::set_len beyond the frame");
        self.len = len as u32;
    }

    /// Moves the window start back to the frame start, keeping its end (e.g. to reuse a
    /// received frame, whose payload sits after a header, as a send buffer).
    pub fn reset(&mut self) {
        self.off = 0;
        self.len = 0;
    }

    /// The frame index in its pool (stable for the `Buf`'s life).
    pub fn frame(&self) -> u32 {
        self.frame
    }

    /// Start of the window inside the frame.
    pub fn offset(&self) -> usize {
        self.off as usize
    }

    /// Bytes per frame of its pool.
    pub(crate) fn frame_size(&self) -> u32 {
        self.pool.frame_size
    }

    /// The whole frame, window or not (for writing headers in front of a payload).
    pub(crate) fn frame_mut(&mut self) -> &mut [u8] {
        let fs = self.pool.frame_size as usize;
        let at = self.frame as usize * fs;
        // SAFETY: this Buf owns the whole frame exclusively; the frame lies in the region.
        unsafe { std::slice::from_raw_parts_mut(self.pool.region.as_ptr().add(at), fs) }
    }

    /// Moves the window to `off..off+len` of the frame.
    ///
    /// # Panics
    /// If the window leaves the frame.
    pub fn set_window(&mut self, off: usize, len: usize) {
        // Checked: `off + len` must not wrap to a small value in a release build.
        let end = off.checked_add(len);
        assert!(
            end.is_some_and(|e| e <= self.pool.frame_size as usize),
            "window out of the frame"
        );
        self.off = off as u32;
        self.len = len as u32;
    }

    /// Freezes the buffer into a read-only, shareable handle (no copy, no allocation).
    pub fn freeze(self) -> SharedBuf {
        let this = ManuallyDrop::new(self);
        debug_assert_eq!(this.pool.refs[this.frame as usize].load(Ordering::Relaxed), 0);
        // Relaxed: the frame is this Buf's alone; whoever receives a handle gets it through a
        // queue or thread hand-off, which orders this store before their reads.
        this.pool.refs[this.frame as usize].store(1, Ordering::Relaxed);
        // SAFETY: `this` is never dropped, so its Arc is moved out exactly once; the frame's
        // reference count now owns that strong count (released by the last SharedBuf).
        let pool = unsafe { std::ptr::read(&this.pool) };
        SharedBuf {
            pool: NonNull::new(Arc::into_raw(pool).cast_mut()).expect("an Arc is never null"),
            frame: this.frame,
            off: this.off,
            len: this.len,
        }
    }

    /// Gives up the handle without returning the frame to the pool: the caller keeps the
    /// frame index (a frame a device may still touch, quarantined until it may not) and
    /// must return it later with `Pool::adopt`.
    pub(crate) fn into_frame(self) -> u32 {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so its Arc is read out exactly once and dropped
        // here; the frame is not pushed to the free queue.
        drop(unsafe { std::ptr::read(&this.pool) });
        this.frame
    }

    /// Pointer and length of the window, for building an SQE.
    pub(crate) fn raw(&self) -> (*mut u8, u32) {
        (self.window_ptr(), self.len)
    }

    fn window_ptr(&self) -> *mut u8 {
        let at = self.frame as usize * self.pool.frame_size as usize + self.off as usize;
        debug_assert!(at < self.pool.region.len());
        // SAFETY: frame < frames and off < frame_size, so the offset is inside the region.
        unsafe { self.pool.region.as_ptr().add(at) }
    }
}

/// A read-only handle to a frozen pool frame ([`Buf::freeze`]); clones share the frame.
///
/// Cloning costs one atomic increment on the frame's counter and no allocation; the frame
/// returns to its pool when the last handle drops. The bytes cannot change while any handle
/// exists: nothing can write through a `SharedBuf`, and the frame is in no free queue,
/// buffer ring or receive.
pub struct SharedBuf {
    /// The pool, kept alive by one strong count that the frame's reference count owns.
    pool: NonNull<PoolShared>,
    frame: u32,
    off: u32,
    len: u32,
}

// SAFETY: a SharedBuf is a counted shared reference to an immutable frame of a `Sync` pool
// (its counter is atomic, its free queue lock-free), like an `Arc<[u8]>`.
unsafe impl Send for SharedBuf {}
// SAFETY: as above; `&SharedBuf` only reads.
unsafe impl Sync for SharedBuf {}

impl fmt::Debug for SharedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuf")
            .field("frame", &self.frame)
            .field("off", &self.off)
            .field("len", &self.len)
            .field("refs", &self.refs())
            .finish()
    }
}

impl SharedBuf {
    fn shared(&self) -> &PoolShared {
        // SAFETY: the frame's reference count holds a strong count of the pool while any
        // handle exists (see `freeze` and `drop`).
        unsafe { self.pool.as_ref() }
    }

    fn counter(&self) -> &AtomicU32 {
        &self.shared().refs[self.frame as usize]
    }

    /// Handles sharing this frame now (a snapshot: other threads may change it).
    pub fn refs(&self) -> u32 {
        self.counter().load(Ordering::Relaxed)
    }

    /// The frame index in its pool.
    pub fn frame(&self) -> u32 {
        self.frame
    }

    /// Start of the window inside the frame.
    pub fn offset(&self) -> usize {
        self.off as usize
    }

    /// `n` more handles for one atomic add (the fan-out path: one add per datagram, not one
    /// per subscriber). Handles not taken from the iterator are released when it drops.
    ///
    /// # Panics
    /// If the frame would have more than [`SHARES_MAX`] handles (the count is unchanged).
    pub fn shares(&self, n: u32) -> Shares<'_> {
        if n > 0 {
            self.raise(n);
        }
        Shares { of: self, left: n }
    }

    /// Adds `n` to the frame's count, refusing to pass [`SHARES_MAX`]: a compare-exchange
    /// loop, so the counter never holds a wrapped value, not even for an instant.
    fn raise(&self, n: u32) {
        let c = self.counter();
        // Relaxed, as in Arc::clone: the caller holds a handle, so the frame stays live.
        let mut cur = c.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|&v| v <= SHARES_MAX) else {
                panic!("SharedBuf: more than {SHARES_MAX} handles of one frame");
            };
            match c.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// Turns the last handle back into a writable `Buf`; hands the handle back while others
    /// exist.
    pub fn try_thaw(self) -> Result<Buf, SharedBuf> {
        // Acquire: pairs with the Release decrement of every other handle's drop, so their
        // reads of the bytes happen before our writes.
        if self
            .counter()
            .compare_exchange(1, 0, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(self);
        }
        let this = ManuallyDrop::new(self);
        // SAFETY: the count was 1 and is now 0: this handle owned the strong count taken in
        // `freeze`, which moves into the Buf; `this` is never dropped.
        let pool = unsafe { Arc::from_raw(this.pool.as_ptr().cast_const()) };
        Ok(Buf {
            pool,
            frame: this.frame,
            off: this.off,
            len: this.len,
        })
    }

    /// The frame's bytes in front of the window (headers, metadata), read-only.
    pub fn prefix(&self) -> &[u8] {
        let sh = self.shared();
        let at = self.frame as usize * sh.frame_size as usize;
        // SAFETY: bytes frame_start..window_start lie in the frame, which is frozen (no
        // writer while handles exist) and initialised.
        unsafe { std::slice::from_raw_parts(sh.region.as_ptr().add(at), self.off as usize) }
    }

    /// Pointer and length of the window, for building a send SQE (the kernel only reads).
    pub(crate) fn raw(&self) -> (*const u8, u32) {
        (self.window_ptr(), self.len)
    }

    fn window_ptr(&self) -> *const u8 {
        let sh = self.shared();
        let at = self.frame as usize * sh.frame_size as usize + self.off as usize;
        debug_assert!(at + self.len as usize <= sh.region.len());
        // SAFETY: the window lies inside the frame, which lies inside the region.
        unsafe { sh.region.as_ptr().add(at) }
    }
}

impl Clone for SharedBuf {
    fn clone(&self) -> SharedBuf {
        self.raise(1);
        SharedBuf { ..*self }
    }
}

impl Deref for SharedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the frame is frozen (nobody writes it while handles exist, see the type's
        // doc), the window lies inside it, and region memory is always initialised.
        unsafe { std::slice::from_raw_parts(self.window_ptr(), self.len as usize) }
    }
}

impl Drop for SharedBuf {
    fn drop(&mut self) {
        // Release: our reads of the frame happen before the last holder frees it.
        if self.counter().fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Acquire: pairs with every other holder's Release decrement (as in Arc's drop).
        fence(Ordering::Acquire);
        // SAFETY: the count reached 0, so this was the last handle: it owns the strong count
        // taken in `freeze`, released exactly once here.
        let pool = unsafe { Arc::from_raw(self.pool.as_ptr().cast_const()) };
        pool.free
            .push(self.frame)
            .expect("free queue holds every frame: a frame was returned twice");
    }
}

/// Up to `n` new handles of one frame, from [`SharedBuf::shares`].
#[derive(Debug)]
pub struct Shares<'a> {
    of: &'a SharedBuf,
    left: u32,
}

impl Iterator for Shares<'_> {
    type Item = SharedBuf;
    fn next(&mut self) -> Option<SharedBuf> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The count was raised for this handle in `shares`.
        Some(SharedBuf { ..*self.of })
    }
}

impl Drop for Shares<'_> {
    fn drop(&mut self) {
        if self.left > 0 {
            // The handle `of` is still alive, so this cannot reach zero.
            self.of.counter().fetch_sub(self.left, Ordering::Release);
        }
    }
}

/// Most buffers one [`Gather`] may carry: IOV_MAX, the kernel's limit for one
/// `sendmsg`/`recvmsg` (Winsock has no smaller one).
pub const GATHER_MAX: usize = 1024;

/// Buffers a [`Gather::new`] holds (more with [`Gather::with_capacity`]).
const GATHER_DEFAULT: usize = 4;

/// One `struct iovec`, kept as plain integers so a [`Gather`] stays `Send`; its layout is
/// the kernel's (checked at compile time).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct IoVec {
    base: usize,
    len: usize,
}

const _: () = assert!(
    std::mem::size_of::<IoVec>() == std::mem::size_of::<libc::iovec>()
        && std::mem::align_of::<IoVec>() == std::mem::align_of::<libc::iovec>()
);

/// Pool buffers sent as one message (gather: e.g. a header frame and a payload frame), or
/// received into as one (scatter: a datagram larger than a frame, spread over several).
/// Moved into the operation and handed back in the completion's `gather`.
///
/// Its room — the buffer list and the kernel's iovec array, [`with_capacity`](Self::with_capacity)
/// entries each, up to [`GATHER_MAX`] — is allocated when it is made, on the caller's thread;
/// the engine only moves it and fills the iovecs in place, so reusing a returned `Gather`
/// (after [`clear`](Self::clear)) keeps operations allocation-free.
#[derive(Debug)]
pub struct Gather(Box<GatherRoom>);

/// A gather's room, behind one pointer (completions and requests carry a `Gather` by value).
#[derive(Debug)]
struct GatherRoom {
    bufs: Vec<Buf>,
    iovs: Box<[IoVec]>,
}

impl Default for Gather {
    fn default() -> Gather {
        Gather::with_capacity(GATHER_DEFAULT)
    }
}

impl Gather {
    /// Room for 4 buffers.
    pub fn new() -> Gather {
        Gather::default()
    }

    /// Room for `n` buffers (at least 1, at most [`GATHER_MAX`]).
    pub fn with_capacity(n: usize) -> Gather {
        let n = n.clamp(1, GATHER_MAX);
        Gather(Box::new(GatherRoom {
            bufs: Vec::with_capacity(n),
            iovs: vec![IoVec::default(); n].into_boxed_slice(),
        }))
    }

    /// Buffers it has room for.
    pub fn capacity(&self) -> usize {
        self.0.iovs.len()
    }

    /// Appends a buffer; a full gather hands it back.
    pub fn push(&mut self, b: Buf) -> Result<(), Buf> {
        if self.0.bufs.len() >= self.0.iovs.len() {
            return Err(b);
        }
        self.0.bufs.push(b);
        Ok(())
    }

    /// Drops every buffer (their frames return to the pool), keeping the room for reuse.
    pub fn clear(&mut self) {
        self.0.bufs.clear();
    }

    pub fn len(&self) -> usize {
        self.0.bufs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.bufs.is_empty()
    }

    /// Bytes in all buffers.
    pub fn total_len(&self) -> usize {
        self.bufs().map(|b| b.len()).sum()
    }

    pub fn bufs(&self) -> impl Iterator<Item = &Buf> {
        self.0.bufs.iter()
    }

    /// Takes the buffers out, in order, leaving the room empty for reuse.
    pub fn take_bufs(&mut self) -> impl Iterator<Item = Buf> + '_ {
        self.0.bufs.drain(..)
    }

    /// Describes the buffers for sendmsg (their windows) or, `receive`, for recvmsg (each
    /// whole frame, from its start); the iovec array (in this gather, stable while it sits
    /// in an op slot) and how many it holds.
    pub(crate) fn iovecs(&mut self, receive: bool) -> (*mut libc::iovec, usize) {
        let room = &mut *self.0;
        for (v, b) in room.iovs.iter_mut().zip(room.bufs.iter_mut()) {
            if receive {
                let whole = b.pool.frame_size as usize;
                b.set_window(0, whole);
            }
            let (ptr, len) = b.raw();
            *v = IoVec {
                base: ptr as usize,
                len: len as usize,
            };
        }
        (room.iovs.as_mut_ptr().cast(), room.bufs.len())
    }

    /// After a scatter receive of `n` bytes: each buffer's length is what landed in it, in
    /// order (the last ones may be empty).
    pub(crate) fn received(&mut self, mut n: usize) {
        for b in &mut self.0.bufs {
            let here = n.min(b.capacity());
            b.set_len(here);
            n -= here;
        }
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: this Buf owns the frame exclusively (module contract), the window lies inside
        // it, and region memory is always initialised (zero-filled at map time).
        unsafe { std::slice::from_raw_parts(self.window_ptr(), self.len as usize) }
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.window_ptr(), self.len as usize) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        self.pool
            .free
            .push(self.frame)
            .expect("free queue holds every frame: a frame was returned twice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_backpressure_and_frames_come_back() {
        let pool = Pool::new(4, 2048, false).unwrap();
        let bufs: Vec<Buf> = (0..4).map(|_| pool.alloc().unwrap()).collect();
        assert_eq!(pool.alloc().unwrap_err(), Error::NoBuffers);
        assert_eq!(pool.free_frames(), 0);
        drop(bufs);
        assert_eq!(pool.free_frames(), 4);
        assert!(pool.alloc().is_ok());
    }

    #[test]
    fn frames_are_disjoint() {
        let pool = Pool::new(8, 512, false).unwrap();
        let mut bufs: Vec<Buf> = (0..8u8)
            .map(|i| {
                let mut b = pool.alloc().unwrap();
                b.set_len(512);
                b.fill(i);
                b
            })
            .collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            assert!(b.iter().all(|&x| x == i as u8));
        }
    }

    #[test]
    fn alloc_from_rejects_oversize() {
        let pool = Pool::new(2, 512, false).unwrap();
        assert_eq!(pool.alloc_from(&[0; 513]).unwrap_err(), Error::MessageTooLong);
        let b = pool.alloc_from(b"hello").unwrap();
        assert_eq!(&b[..], b"hello");
    }

    #[test]
    fn gather_holds_at_most_its_capacity_in_order() {
        let pool = Pool::new(8, 512, false).unwrap();
        let mut g = Gather::new();
        assert!(g.is_empty());
        assert_eq!(g.capacity(), 4);
        for i in 0..4u8 {
            g.push(pool.alloc_from(&[i; 3]).unwrap()).unwrap();
        }
        assert!(g.push(pool.alloc().unwrap()).is_err());
        assert_eq!((g.len(), g.total_len()), (4, 12));
        let firsts: Vec<u8> = g.take_bufs().map(|b| b[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 3]);
        assert_eq!(Gather::with_capacity(0).capacity(), 1);
        assert_eq!(Gather::with_capacity(usize::MAX).capacity(), GATHER_MAX);
        assert!(g.is_empty());
        assert_eq!(pool.free_frames(), 8);
        g.push(pool.alloc().unwrap()).unwrap();
        g.clear();
        assert_eq!((g.len(), pool.free_frames()), (0, 8));
    }

    #[test]
    fn shared_frame_returns_when_the_last_handle_drops() {
        let pool = Pool::new(2, 512, false).unwrap();
        let shared = pool.alloc_from(b"tick").unwrap().freeze();
        let handles: Vec<SharedBuf> = shared.shares(5).collect();
        assert_eq!(shared.refs(), 6);
        assert!(handles.iter().all(|h| &h[..] == b"tick" && h.frame() == shared.frame()));
        // Unclaimed shares are released with the iterator.
        let mut partial = shared.shares(3);
        let one = partial.next().unwrap();
        drop(partial);
        assert_eq!(shared.refs(), 7);
        let shared = shared.try_thaw().unwrap_err();
        drop((handles, one));
        assert_eq!(pool.free_frames(), 1);
        let mut buf = shared.try_thaw().expect("last handle thaws");
        buf[0] = b'T';
        assert_eq!(&buf[..], b"Tick");
        drop(buf);
        assert_eq!(pool.free_frames(), 2);
        // The pool handle may go first: frames keep the memory alive.
        let last = pool.alloc_from(b"x").unwrap().freeze();
        drop(pool);
        assert_eq!(&last[..], b"x");
    }

    #[test]
    fn shared_frames_cross_threads_and_come_back_once() {
        let pool = Pool::new(64, 512, false).unwrap();
        let (tx, rx): (Vec<_>, Vec<_>) = (0..4).map(|_| std::sync::mpsc::channel::<SharedBuf>()).unzip();
        let readers: Vec<_> = rx
            .into_iter()
            .map(|rx| std::thread::spawn(move || rx.iter().map(|b| u64::from(b[0])).sum::<u64>()))
            .collect();
        for i in 0..1000u32 {
            let b = loop {
                match pool.alloc_from(&[(i % 251) as u8]) {
                    Ok(b) => break b.freeze(),
                    Err(_) => std::thread::yield_now(),
                }
            };
            for (t, s) in tx.iter().zip(b.shares(4)) {
                t.send(s).unwrap();
            }
        }
        drop(tx);
        let want: u64 = (0..1000u64).map(|i| i % 251).sum();
        for r in readers {
            assert_eq!(r.join().unwrap(), want);
        }
        assert_eq!(pool.free_frames(), 64);
    }

    #[test]
    fn a_window_that_wraps_past_usize_max_is_refused() {
        let pool = Pool::new(2, 512, false).unwrap();
        let mut b = pool.alloc().unwrap();
        // off + len wraps to 0 in release arithmetic: must panic, not address 4 GiB away.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.set_window(usize::MAX - 10, 11)));
        assert!(r.is_err(), "a wrapping window was accepted");
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.set_window(500, 13))).is_err());
        b.set_window(500, 12);
        assert_eq!((b.offset(), b.len()), (500, 12));
    }

    #[test]
    fn share_counts_that_would_wrap_are_refused_and_the_frame_lives_on() {
        let pool = Pool::new(2, 512, false).unwrap();
        let shared = pool.alloc_from(b"live").unwrap().freeze();
        // u32::MAX more handles would wrap the count to 0: a clone and a drop would then
        // free the frame under `shared`.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(shared.shares(u32::MAX))));
        assert!(r.is_err(), "shares(u32::MAX) was accepted");
        assert_eq!(shared.refs(), 1, "a refused share changed the count");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(shared.shares(SHARES_MAX))));
        assert!(r.is_err(), "the limit is SHARES_MAX handles in all");
        let more: Vec<SharedBuf> = shared.shares(3).collect();
        drop(more.clone());
        drop(more);
        assert_eq!((shared.refs(), pool.free_frames(), &shared[..]), (1, 1, &b"live"[..]));
        drop(shared);
        assert_eq!(pool.free_frames(), 2);
    }

    proptest::proptest! {
        #[test]
        fn conservation_under_random_alloc_and_drop(ops in proptest::collection::vec(0u8..3, 1..200)) {
            let pool = Pool::new(16, 512, false).unwrap();
            let mut held = Vec::new();
            for op in ops {
                match op {
                    0 | 1 => if let Ok(b) = pool.alloc() { held.push(b) } else { proptest::prop_assert_eq!(held.len(), 16) },
                    _ => { held.pop(); }
                }
                proptest::prop_assert_eq!(pool.free_frames() as usize + held.len(), 16);
            }
        }
    }
}
