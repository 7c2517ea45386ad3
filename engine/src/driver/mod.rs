//! The service provider interface: what a shard asks of the kernel, behind one trait, and the
//! providers that implement it.
//!
//! The shard core (`shard.rs`) never touches io_uring or epoll. It turns each operation into
//! a [`Submit`] (plain data: the op's fd, its kind and the pointers into its op slot) and hands
//! it to a [`Driver`]; the driver answers with [`Event`]s, one per kernel completion, shaped
//! like io_uring CQEs (`user_data`, result, *more*, a picked receive frame, a zero-copy
//! notification). io_uring produces them natively; epoll produces the same sequence by doing
//! the syscalls itself when the socket is ready. So one core runs on either provider, and
//! every exactly-once rule (a linked timeout's second event, a multishot's last event, a
//! cancel's `ECANCELED`) is the same contract for both.
//!
//! ```text
//!  core ──Submit──► Driver::push ──► io_uring SQE            (uring.rs)
//!                                └─► socket wait list, syscall when ready  (epoll.rs)
//!  core ◄──Event─── Driver::reap ◄── CQE / syscall result
//! ```
//!
//! Providers: [`Provider::IoUring`] (single-issuer+defer → coop → plain task work),
//! [`Provider::Epoll`] (readiness; `recvmmsg`/`sendmsg` into the same registered pool frames),
//! and `Auto`, which walks that ladder and reports why it stepped down.

// The trait declares the unsafe contracts (pointers valid until the last event) its
// implementations rely on; the implementations are the kernel-facing code.
#![allow(unsafe_code)]

pub(crate) mod epoll;
pub(crate) mod lent;
#[cfg(test)]
pub(crate) mod sim;
pub(crate) mod uring;

use std::fmt;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

use crate::sys::ring::RingInfo;

/// Event ids (`user_data`): a tag, the op slot's (or socket's) index and its generation, so
/// a stale or foreign event is recognised instead of being applied to a reused slot.
pub(crate) const TAG_OP: u64 = 0;
pub(crate) const TAG_LINK_TIMEOUT: u64 = 1;
pub(crate) const TAG_CANCEL: u64 = 2;
pub(crate) const TAG_WAKE: u64 = 3;
pub(crate) const TAG_XSK_POLL: u64 = 4;
/// An accept: its successful events carry the new connection, adopted by the driver.
pub(crate) const TAG_ACCEPT: u64 = 5;
/// A wake-up another shard sent into this ring (MSG_RING) after queueing a post for it.
pub(crate) const TAG_DOORBELL: u64 = 6;
/// This shard's MSG_RING wake-up of another: idx is its record (res 0 delivered, < 0 failed).
pub(crate) const TAG_DOORBELL_SENT: u64 = 7;

const IDX_BITS: u32 = 24;
const GEN_BITS: u32 = 32;

pub(crate) fn user_data(tag: u64, idx: u32, gen: u32) -> u64 {
    debug_assert!(idx < 1 << IDX_BITS);
    (tag << (IDX_BITS + GEN_BITS)) | (u64::from(gen) << IDX_BITS) | u64::from(idx)
}

pub(crate) fn decode(ud: u64) -> (u64, u32, u32) {
    let idx = (ud & ((1 << IDX_BITS) - 1)) as u32;
    let gen = ((ud >> IDX_BITS) & ((1 << GEN_BITS) - 1)) as u32;
    (ud >> (IDX_BITS + GEN_BITS), idx, gen)
}

/// The id cancels and poll removals post their own (ignored) events under.
pub(crate) const CANCEL_UD: u64 = TAG_CANCEL << (IDX_BITS + GEN_BITS);

pub(crate) fn is_accept(ud: u64) -> bool {
    decode(ud).0 == TAG_ACCEPT
}

/// Which transport a provider really runs on (Winsock's provider catalogue, reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Kernel TCP/UDP through io_uring.
    IoUring,
    /// Kernel TCP/UDP through epoll readiness and plain syscalls.
    Epoll,
    /// AF_XDP, the kernel copying frames between the driver and the UMEM.
    AfXdpCopy,
    /// AF_XDP, the driver DMAing straight into the UMEM.
    AfXdpZeroCopy,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::IoUring => "io_uring",
            Transport::Epoll => "epoll",
            Transport::AfXdpCopy => "AF_XDP copy mode",
            Transport::AfXdpZeroCopy => "AF_XDP zero-copy",
        })
    }
}

impl From<crate::sys::xsk::XskMode> for Transport {
    fn from(m: crate::sys::xsk::XskMode) -> Transport {
        match m {
            crate::sys::xsk::XskMode::ZeroCopy => Transport::AfXdpZeroCopy,
            crate::sys::xsk::XskMode::Copy => Transport::AfXdpCopy,
        }
    }
}

/// Every feature a [`Degraded`] can name, in the order `porto stats` encodes them.
pub const DEGRADABLE: [&str; 6] = [
    "fixed buffers",
    "provided-buffer ring",
    "registered files",
    "cpu pinning",
    "huge pages",
    "stats publishing",
];

/// A kernel feature a shard asked for and did not get: what the kernel said, and what the
/// shard does without it. A refusal costs that feature only, never silently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Degraded {
    /// The feature, as `porto doctor` names it ("provided-buffer ring", "fixed buffers", …).
    pub feature: &'static str,
    /// The kernel's answer: the call and its error.
    pub why: String,
    /// What the shard does instead.
    pub instead: &'static str,
}

impl Degraded {
    pub(crate) fn new(feature: &'static str, why: impl fmt::Display, instead: &'static str) -> Degraded {
        debug_assert!(DEGRADABLE.contains(&feature), "{feature} is not in DEGRADABLE");
        Degraded {
            feature,
            why: why.to_string(),
            instead,
        }
    }
}

impl fmt::Display for Degraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "without {} ({}): {}", self.feature, self.why, self.instead)
    }
}

/// What a shard's provider really is, and why it is not a better one.
#[derive(Clone, Debug)]
pub struct ProviderInfo {
    /// `Transport::IoUring` or `Transport::Epoll`.
    pub transport: Transport,
    /// The ring's set-up (io_uring only).
    pub ring: Option<RingInfo>,
    /// Why `Auto` stepped down to this provider, if it did.
    pub fallback: Option<String>,
    /// Features of this provider the kernel refused, each with what the shard does instead.
    pub degraded: Vec<Degraded>,
}

impl fmt::Display for ProviderInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ring {
            Some(r) => {
                write!(f, "io_uring {} (sq {}, cq {})", r.task_run, r.sq_entries, r.cq_entries)?;
                if let Some(why) = &r.fallback {
                    write!(f, " (ring fell back: {why})")?;
                }
            }
            None => write!(f, "{}", self.transport)?,
        }
        if let Some(why) = &self.fallback {
            write!(f, " (fell back from io_uring: {why})")?;
        }
        Ok(())
    }
}

/// An operation as the kernel sees it: plain data the core builds from an op slot. Every
/// pointer points into that slot (stable for the table's life), into a buffer the slot owns,
/// or is null.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Prep {
    /// Multishot recvmsg into provided frames, each laid out as
    /// `[io_uring_recvmsg_out | name (msg.msg_namelen) | control (msg.msg_controllen) | payload]`.
    RecvMsgMulti {
        msg: *const libc::msghdr,
    },
    /// One recvmsg into a provided frame (`provided`; the iovec's length is the frame size)
    /// or into the msghdr's own iovecs; the source address lands in `msg.msg_name` and its
    /// length in `msg.msg_namelen`.
    RecvMsg {
        msg: *mut libc::msghdr,
        provided: bool,
    },
    /// One recvmsg(MSG_ERRQUEUE) into the msghdr's own control buffer: waits for the
    /// socket's error queue (TX timestamps) — io_uring polls for POLLERR, epoll waits for
    /// EPOLLERR — never behind the socket's receives.
    RecvErrQueue {
        msg: *mut libc::msghdr,
    },
    /// Multishot stream receive into provided frames; a result of 0 (EOF) picks no frame.
    RecvMulti,
    /// One stream receive of up to `len` bytes into a provided frame.
    Recv {
        len: u32,
    },
    /// sendmsg(2). With `MSG_WAITALL` in `flags` (a stream send) it completes whole.
    SendMsg {
        msg: *const libc::msghdr,
        flags: i32,
    },
    /// send/sendto of `len` bytes at `ptr`; `MSG_WAITALL` as for `SendMsg`. `zc`: the
    /// fixed-buffer index for SEND_ZC (a provider without it sends a copy and reports so).
    Send {
        ptr: *const u8,
        len: u32,
        dest: *const libc::sockaddr,
        dest_len: libc::socklen_t,
        flags: i32,
        zc: Option<u16>,
    },
    /// Multishot accept: one event per connection, the new fd in [`Event::accepted`].
    AcceptMulti,
    /// One accept; the peer's address lands at `addr` (`*len` bytes).
    Accept {
        addr: *mut libc::sockaddr,
        len: *mut libc::socklen_t,
    },
    Connect {
        addr: *const libc::sockaddr,
        len: libc::socklen_t,
    },
    Shutdown,
    /// Completes (result > 0) once the socket is readable: data waiting, or the peer closed.
    PollIn,
}

impl Prep {
    /// Completes on readability (receive, accept) rather than writability.
    pub(crate) fn reads(&self) -> bool {
        matches!(
            self,
            Prep::RecvMsgMulti { .. }
                | Prep::RecvMsg { .. }
                | Prep::RecvMulti
                | Prep::Recv { .. }
                | Prep::AcceptMulti
                | Prep::Accept { .. }
                | Prep::PollIn
        )
    }

    pub(crate) fn multishot(&self) -> bool {
        matches!(self, Prep::RecvMsgMulti { .. } | Prep::RecvMulti | Prep::AcceptMulti)
    }
}

/// A deadline linked to an operation: whichever ends first cancels the other, and both post
/// an event (the timeout's: `-ETIME` if it fired, `-ECANCELED` if the op won).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeout {
    /// The timespec io_uring reads (in the op slot).
    pub ts: *const io_uring::types::Timespec,
    pub after: Duration,
    /// The timeout's own event id.
    pub ud: u64,
}

/// One operation handed to a driver.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Submit {
    /// The event id (`op::user_data`).
    pub ud: u64,
    /// The socket's index (its registered-file slot under io_uring).
    pub sock: u32,
    pub fd: RawFd,
    /// Use the registered file at `sock` instead of `fd`.
    pub fixed: bool,
    pub prep: Prep,
    pub timeout: Option<Timeout>,
}

/// One completion from a driver, shaped like an io_uring CQE.
#[derive(Debug)]
pub(crate) struct Event {
    pub ud: u64,
    pub res: i32,
    /// More events follow for this `ud` (multishot, or SEND_ZC's notification).
    pub more: bool,
    /// This is a SEND_ZC notification; `true` if the kernel copied after all.
    pub notif_copied: Option<bool>,
    /// The provided frame the data landed in.
    pub frame: Option<u32>,
    /// A connection accepted by this event (owned: dropped, it closes).
    pub accepted: Option<OwnedFd>,
}

impl Event {
    pub(crate) fn of(ud: u64, res: i32) -> Event {
        Event {
            ud,
            res,
            more: false,
            notif_copied: None,
            frame: None,
            accepted: None,
        }
    }
}

/// How a turn enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Enter {
    /// Busy polling: only if something needs the kernel (queued work, pending task work).
    IfNeeded,
    /// Submit what is queued and collect what is ready, without waiting.
    Now,
    /// Submit, then wait for at least one event or the timeout.
    Wait(Option<Duration>),
}

/// What a shard core needs from a provider. One implementation per provider; the core is
/// generic over it, so the hot loop is monomorphic (no dynamic call per op or event).
pub(crate) trait Driver {
    /// What was obtained.
    fn info(&self) -> ProviderInfo;

    /// Queues an operation; its events come out of [`reap`](Self::reap).
    ///
    /// # Safety
    /// Every pointer in `op` must stay valid, and every buffer the kernel writes must not be
    /// touched by anyone else, until the operation's last event (and its timeout's) is reaped.
    unsafe fn push(&mut self, op: &Submit) -> io::Result<()>;

    /// Asks the kernel to end operation `target`: it then ends with `-ECANCELED` (or with its
    /// result if it finished first). Idempotent; posts no event of its own the core uses.
    fn cancel(&mut self, target: u64) -> io::Result<()>;

    /// A one-shot readability watch of `fd` (an AF_XDP socket): event `ud` when it is readable.
    fn watch(&mut self, fd: RawFd, ud: u64) -> io::Result<()>;
    /// Removes watch `ud`, which then posts its event with `-ECANCELED`.
    fn unwatch(&mut self, ud: u64) -> io::Result<()>;

    /// Arms the wake-up read of the shard's eventfd: event `ud` when it is written.
    fn arm_wake(&mut self, ud: u64) -> io::Result<()>;

    /// A duplicate of this provider's ring fd, for other shards to post into with
    /// [`msg_ring`](Self::msg_ring); `None` for a provider without a ring.
    fn ring_fd(&self) -> Option<io::Result<OwnedFd>>;

    /// Queues a message into ring `target` (io_uring MSG_RING): event `ud` with result `res`
    /// appears there, and this ring's own event `sent_ud` says whether it did (0, or
    /// `-errno`: then nothing appeared). `Ok(false)`: this provider has no way to (the
    /// caller uses the target's command queue instead).
    fn msg_ring(&mut self, target: RawFd, ud: u64, res: i32, sent_ud: u64) -> io::Result<bool>;

    /// Hands a pool frame to the kernel for receives that pick one.
    ///
    /// # Safety
    /// The frame (`len` bytes at `addr`) belongs to the driver until an event returns it.
    unsafe fn provide(&mut self, frame: u32, addr: u64, len: u32);
    /// Makes provided frames visible to the kernel.
    fn publish(&mut self);

    /// A socket joins the shard; true if the driver addresses it by registered slot.
    fn open(&mut self, sock: u32, fd: RawFd) -> bool;
    /// A socket leaves the shard (no operation of it is in flight).
    fn close(&mut self, sock: u32, fd: RawFd, fixed: bool);

    /// Registers `len` bytes at `ptr` as fixed buffer `slot` (Registered I/O sends); an
    /// error means sends from it copy.
    ///
    /// # Safety
    /// The memory must stay mapped until [`unregister_buffer`](Self::unregister_buffer) or
    /// the driver's end.
    unsafe fn register_buffer(&mut self, slot: u32, ptr: *mut u8, len: usize) -> io::Result<()>;
    fn unregister_buffer(&mut self, slot: u32) -> io::Result<()>;

    fn enter(&mut self, how: Enter) -> io::Result<()>;
    /// Events are waiting to be reaped.
    fn has_events(&mut self) -> bool;
    /// Moves the waiting events into `out` (cleared first), at most its capacity.
    fn reap(&mut self, out: &mut Vec<Event>);
    /// Times the completion queue overflowed into the kernel.
    fn overflows(&self) -> u64;

    /// Sockets are addressed by registered-file slot.
    fn fixed_files(&self) -> bool;

    /// The pool is registered as fixed buffer 0 (io_uring, where the kernel allowed it).
    fn fixed_buffers(&self) -> bool {
        false
    }

    /// Shutdown gave up waiting for the kernel: memory it may still write (the wake-up
    /// read's buffer) is leaked rather than freed under it.
    fn abandon(&mut self);
}
