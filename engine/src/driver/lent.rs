//! io_uring receives without a provided-buffer ring: where the kernel refuses
//! `IORING_REGISTER_PBUF_RING` (some distribution kernels answer EINVAL), the driver keeps
//! the frames the core provides and lends one to each receive it submits, so a refused
//! registration costs that feature only, not the provider.
//!
//! The core cannot tell the difference: a multishot receive becomes a single-shot one into a
//! lent frame, re-armed by the driver after each datagram (a recvmsg frame is laid out as
//! io_uring's `[recvmsg_out | name | control | payload]`), and ends with `-ENOBUFS` when no
//! frame is left, as the kernel's does; a cancel that meets the gap between two shots ends
//! the receive with `-ECANCELED` after the datagram it raced. What is lost: one SQE and one
//! CQE per datagram instead of one armed request.

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Event, Prep, Submit};

/// Bytes of io_uring's `struct io_uring_recvmsg_out` at the head of each multishot frame.
const RECVMSG_OUT_LEN: usize = 16;

/// What a lent receive stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Multishot recvmsg: re-armed, frames laid out as io_uring's.
    RecvMsgMulti,
    /// Multishot recv (streams): re-armed, payload at the frame's start.
    RecvMulti,
    /// Single-shot recv of at most `len` bytes.
    Recv { len: u32 },
    /// Single-shot recvmsg: the data into the frame, the name into the core's header.
    RecvMsg,
}

/// One receive in the kernel: the memory its SQE points at, stable while it is there.
struct Slot {
    kind: Kind,
    ud: u64,
    fd: RawFd,
    /// The socket's registered-file slot, when `fixed`.
    sock: u32,
    fixed: bool,
    /// The core's header (its name buffer and lengths; written back for `RecvMsg`).
    core_msg: *mut libc::msghdr,
    frame: (u32, u64, u32),
    msg: libc::msghdr,
    iov: libc::iovec,
    /// The core asked to cancel it: no more shots.
    cancelled: bool,
}

/// Frames held in user space and lent one per receive.
pub(crate) struct Lent {
    free: Vec<(u32, u64, u32)>,
    /// Boxed so the header and iovec an SQE points at never move when the Vec grows.
    #[allow(clippy::vec_box)]
    slots: Vec<Box<Slot>>,
    idle: Vec<u32>,
    by_ud: HashMap<u64, u32>,
    /// Events made here (ENOBUFS ends, the ends of cancelled receives), reaped first.
    pending: VecDeque<Event>,
}

// SAFETY: the raw pointers in the slots point into the owning shard's op table and pool;
// the driver (and so this) lives and is used on that shard's thread only.
unsafe impl Send for Lent {}

/// What `push` needs from the driver: a way to queue one SQE.
/// (All of a chain, or none: an IO_LINK head and its timeout.)
pub(crate) type PushFn<'a> = &'a mut dyn FnMut(&[squeue::Entry]) -> std::io::Result<()>;

impl Lent {
    pub(crate) fn new(frames: u32, ops_max: u32) -> Lent {
        Lent {
            free: Vec::with_capacity(frames as usize),
            slots: Vec::with_capacity(ops_max as usize),
            idle: Vec::with_capacity(ops_max as usize),
            by_ud: HashMap::with_capacity(ops_max as usize),
            pending: VecDeque::with_capacity(ops_max as usize),
        }
    }

    /// Does this driver lend frames for `prep`?
    pub(crate) fn takes(prep: &Prep) -> bool {
        matches!(
            prep,
            Prep::RecvMsgMulti { .. } | Prep::RecvMulti | Prep::Recv { .. } | Prep::RecvMsg { provided: true, .. }
        )
    }

    pub(crate) fn provide(&mut self, frame: u32, addr: u64, len: u32) {
        self.free.push((frame, addr, len));
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Events made here since the last call.
    pub(crate) fn drain_pending(&mut self, out: &mut Vec<Event>) {
        out.extend(self.pending.drain(..));
    }

    /// Starts a receive the core asked for (`Lent::takes(&op.prep)`).
    ///
    /// # Safety
    /// `op`'s pointers (its header) stay valid until the op's last event (`Driver::push`).
    pub(crate) unsafe fn push(&mut self, op: &Submit, push: PushFn<'_>) -> std::io::Result<()> {
        let (kind, core_msg) = match op.prep {
            Prep::RecvMsgMulti { msg } => (Kind::RecvMsgMulti, msg.cast_mut()),
            Prep::RecvMulti => (Kind::RecvMulti, std::ptr::null_mut()),
            Prep::Recv { len } => (Kind::Recv { len }, std::ptr::null_mut()),
            Prep::RecvMsg { msg, .. } => (Kind::RecvMsg, msg),
            _ => unreachable!("Lent::takes checked the op"),
        };
        let Some(frame) = self.free.pop() else {
            self.pending.push_back(Event::of(op.ud, -libc::ENOBUFS));
            return Ok(());
        };
        let idx = match self.idle.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Box::new(Slot {
                    kind,
                    ud: 0,
                    fd: -1,
                    sock: 0,
                    fixed: false,
                    core_msg: std::ptr::null_mut(),
                    frame,
                    // SAFETY: an all-zero msghdr/iovec is a valid empty one.
                    msg: unsafe { std::mem::zeroed() },
                    iov: libc::iovec {
                        iov_base: std::ptr::null_mut(),
                        iov_len: 0,
                    },
                    cancelled: false,
                }));
                self.slots.len() as u32 - 1
            }
        };
        let s = &mut self.slots[idx as usize];
        s.kind = kind;
        s.ud = op.ud;
        s.fd = op.fd;
        s.sock = op.sock;
        s.fixed = op.fixed;
        s.core_msg = core_msg;
        s.cancelled = false;
        s.frame = frame;
        self.by_ud.insert(op.ud, idx);
        let entry = self.arm(idx);
        let r = match op.timeout {
            None => push(std::slice::from_ref(&entry)),
            Some(t) => {
                let lt = opcode::LinkTimeout::new(t.ts).build().user_data(t.ud);
                push(&[entry.flags(squeue::Flags::IO_LINK), lt])
            }
        };
        if r.is_err() {
            self.free.push(frame);
            self.release(idx);
        }
        r
    }

    /// The SQE of slot `idx`'s next shot (its frame set), pointing into the slot.
    fn arm(&mut self, idx: u32) -> squeue::Entry {
        let s = &mut *self.slots[idx as usize];
        let (_, addr, len) = s.frame;
        let fd = types::Fd(if s.fixed { s.sock as i32 } else { s.fd });
        let e = match s.kind {
            Kind::RecvMsgMulti => {
                // SAFETY: the core's header lives until the op's last event (push's contract);
                // only its lengths are read.
                let (namelen, controllen) =
                    unsafe { ((*s.core_msg).msg_namelen as usize, (*s.core_msg).msg_controllen) };
                let head = RECVMSG_OUT_LEN + namelen + controllen;
                s.iov = libc::iovec {
                    iov_base: (addr as usize + head) as *mut libc::c_void,
                    iov_len: (len as usize).saturating_sub(head),
                };
                // SAFETY: as above.
                s.msg = unsafe { *s.core_msg };
                s.msg.msg_name = (addr as usize + RECVMSG_OUT_LEN) as *mut libc::c_void;
                s.msg.msg_namelen = namelen as libc::socklen_t;
                s.msg.msg_control = (addr as usize + RECVMSG_OUT_LEN + namelen) as *mut libc::c_void;
                s.msg.msg_controllen = controllen;
                s.msg.msg_iov = &mut s.iov;
                s.msg.msg_iovlen = 1;
                s.msg.msg_flags = 0;
                opcode::RecvMsg::new(fd, &mut s.msg).build()
            }
            Kind::RecvMsg => {
                s.iov = libc::iovec {
                    iov_base: addr as *mut libc::c_void,
                    iov_len: len as usize,
                };
                // SAFETY: the core's header lives until the op's last event.
                s.msg = unsafe { *s.core_msg };
                s.msg.msg_iov = &mut s.iov;
                s.msg.msg_iovlen = 1;
                s.msg.msg_control = std::ptr::null_mut();
                s.msg.msg_controllen = 0;
                opcode::RecvMsg::new(fd, &mut s.msg).build()
            }
            Kind::RecvMulti => opcode::Recv::new(fd, addr as *mut u8, len).build(),
            Kind::Recv { len: want } => opcode::Recv::new(fd, addr as *mut u8, want.min(len)).build(),
        };
        let e = e.user_data(s.ud);
        if s.fixed {
            e.flags(squeue::Flags::FIXED_FILE)
        } else {
            e
        }
    }

    fn release(&mut self, idx: u32) {
        let ud = self.slots[idx as usize].ud;
        self.by_ud.remove(&ud);
        self.idle.push(idx);
    }

    /// The core cancels `target`: a lent receive takes no more shots.
    pub(crate) fn cancel(&mut self, target: u64) {
        if let Some(&idx) = self.by_ud.get(&target) {
            self.slots[idx as usize].cancelled = true;
        }
    }

    /// Turns a CQE of a lent receive into its events (`None`: not a lent receive's); a
    /// multishot that goes on is re-armed through `push`.
    pub(crate) fn complete(&mut self, ud: u64, res: i32, out: &mut Vec<Event>, push: PushFn<'_>) -> Option<()> {
        let idx = *self.by_ud.get(&ud)?;
        let s = &mut *self.slots[idx as usize];
        let (frame, addr, _) = s.frame;
        let multishot = matches!(s.kind, Kind::RecvMsgMulti | Kind::RecvMulti);
        if res < 0 || (res == 0 && s.kind == Kind::RecvMulti) {
            // An error, a cancel, or a stream's EOF: the frame was not used; the op ends.
            self.free.push(s.frame);
            out.push(Event::of(ud, res));
            self.release(idx);
            return Some(());
        }
        let mut ev = Event::of(ud, res);
        ev.frame = Some(frame);
        match s.kind {
            Kind::RecvMsgMulti => {
                let m = &s.msg;
                let head = RECVMSG_OUT_LEN + m.msg_namelen as usize;
                // SAFETY: the core's header is live (push's contract); lengths only.
                let reserved = unsafe { (*s.core_msg).msg_namelen as usize + (*s.core_msg).msg_controllen };
                let hdr = [m.msg_namelen, m.msg_controllen as u32, res as u32, m.msg_flags as u32];
                // SAFETY: the frame is lent to this receive (nobody else touches it) and is
                // longer than the header, where io_uring writes its `io_uring_recvmsg_out`.
                unsafe { std::ptr::copy_nonoverlapping(hdr.as_ptr().cast::<u8>(), addr as *mut u8, RECVMSG_OUT_LEN) };
                debug_assert!(head <= RECVMSG_OUT_LEN + reserved);
                ev.res = (RECVMSG_OUT_LEN + reserved) as i32 + res;
                ev.more = true;
            }
            Kind::RecvMulti => ev.more = true,
            Kind::RecvMsg => {
                // SAFETY: the core's header is live; the kernel wrote the name into its buffer
                // (the copy points at it) and its length and flags into the copy.
                unsafe {
                    (*s.core_msg).msg_namelen = s.msg.msg_namelen;
                    (*s.core_msg).msg_flags = s.msg.msg_flags;
                }
            }
            Kind::Recv { .. } => {}
        }
        out.push(ev);
        if !multishot {
            self.release(idx);
            return Some(());
        }
        if s.cancelled {
            out.push(Event::of(ud, -libc::ECANCELED));
            self.release(idx);
            return Some(());
        }
        let Some(next) = self.free.pop() else {
            out.push(Event::of(ud, -libc::ENOBUFS));
            self.release(idx);
            return Some(());
        };
        self.slots[idx as usize].frame = next;
        let entry = self.arm(idx);
        if let Err(e) = push(std::slice::from_ref(&entry)) {
            // No room in the SQ even after a submit: the receive ends, as a kernel multishot
            // ends when it cannot post; the core re-arms it.
            self.free.push(next);
            out.push(Event::of(ud, -e.raw_os_error().unwrap_or(libc::EBUSY)));
            self.release(idx);
        }
        Some(())
    }
}
