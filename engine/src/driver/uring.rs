//! The io_uring provider: a [`Submit`] becomes one SQE (two with a linked timeout), a CQE
//! becomes an [`Event`]. Receives pick frames from the provided-buffer ring; sockets are
//! registered files where the kernel has sparse file tables; the pool is fixed buffer 0.
//!
//! Each registration is a feature, not a requirement: where the kernel refuses one (a
//! seccomp profile, a distribution kernel's bug, a memlock limit) the driver goes on without
//! it and reports it ([`Degraded`] in [`ProviderInfo`]): no provided-buffer ring — frames are
//! lent to each receive ([`lent`](super::lent)); no fixed buffers — sends name plain memory
//! (SEND_ZC pins the pages per send) and RIO buffers are copied; no sparse file table —
//! every operation names its socket's fd.

// Pushing SQEs whose pointers the caller vouches for, and adopting accepted fds.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types};

use super::lent::Lent;
use super::{Degraded, Driver, Enter, Event, Prep, ProviderInfo, Submit, Transport};
use crate::error::SetupError;
use crate::sys::bufring::BufRing;
use crate::sys::region::Region;
use crate::sys::ring::{Ring, RingConfig, NOTIF_USAGE_ZC_COPIED, SEND_ZC_REPORT_USAGE};

/// Buffer group id of the shard's provided-buffer ring.
const BGID: u16 = 0;

/// What the io_uring driver is built with.
pub(crate) struct UringSetup<'a> {
    pub ring: RingConfig,
    pub region: &'a Region,
    pub rio_buffers_max: u32,
    pub recv_frames: u32,
    pub registered_files: bool,
    pub sockets_max: u32,
    pub wake_fd: RawFd,
    pub cq_entries: u32,
    pub ops_max: u32,
}

/// Where receives find their frames.
enum Frames {
    /// The kernel picks them from the provided-buffer ring.
    Ring(BufRing),
    /// The driver lends one to each receive (the kernel refused the ring).
    Lent(Box<Lent>),
}

pub(crate) struct UringDriver {
    // Field order is drop order: the ring goes first, so the kernel lets go of the buffer
    // ring before it is unmapped.
    ring: Ring,
    frames: Frames,
    files: bool,
    /// The pool (and RIO buffers) are registered fixed buffers.
    fixed_buffers: bool,
    degraded: Vec<Degraded>,
    wake_fd: RawFd,
    wake_buf: Box<u64>,
    cqes: Vec<cqueue::Entry>,
}

impl UringDriver {
    pub(crate) fn new(s: &UringSetup<'_>) -> Result<UringDriver, SetupError> {
        let mut ring = Ring::new(&s.ring).map_err(|source| SetupError::Ring {
            fix: match source.raw_os_error() {
                Some(libc::EPERM) => crate::sys::ring::refused_fix(),
                Some(libc::ENOMEM) => "raise RLIMIT_MEMLOCK or lower sq_entries/cq_entries",
                Some(libc::ENOSYS) => "this kernel has no io_uring: use the epoll provider",
                _ => "check sq_entries/cq_entries",
            },
            source,
        })?;
        let mut degraded = Vec::new();
        let fixed_buffers = match register_with_retry(&mut ring, s.region, s.rio_buffers_max) {
            Ok(()) => true,
            Err(e) => {
                degraded.push(Degraded::new(
                    "fixed buffers",
                    e,
                    "sends name the pool's memory directly (SEND_ZC pins its pages per send); RIO sends copy",
                ));
                false
            }
        };
        let bufring = BufRing::new(s.recv_frames as u16).map_err(|source| SetupError::Syscall {
            what: "mmap of the provided-buffer ring",
            source,
        })?;
        let frames = match ring.register_buf_ring(&bufring, BGID) {
            Ok(()) => Frames::Ring(bufring),
            Err(e) => {
                degraded.push(Degraded::new(
                    "provided-buffer ring",
                    format_args!("IORING_REGISTER_PBUF_RING: {e}"),
                    "each receive is lent a pool frame by the driver; multishot receives are re-armed per datagram",
                ));
                Frames::Lent(Box::new(Lent::new(s.recv_frames, s.ops_max)))
            }
        };
        // Fixed files are an optimisation: without them (a kernel before 5.19's sparse
        // tables) every operation names its socket's fd, and that is reported.
        let files = s.registered_files
            && match ring.register_file_table(s.sockets_max) {
                Ok(()) => true,
                Err(e) => {
                    degraded.push(Degraded::new(
                        "registered files",
                        format_args!("IORING_REGISTER_FILES2 (sparse table): {e}"),
                        "every operation names its socket's fd",
                    ));
                    false
                }
            };
        for d in &degraded {
            tracing::warn!("io_uring {d}");
        }
        Ok(UringDriver {
            ring,
            frames,
            files,
            fixed_buffers,
            degraded,
            wake_fd: s.wake_fd,
            wake_buf: Box::new(0),
            cqes: Vec::with_capacity(s.cq_entries as usize),
        })
    }

    fn entry(&self, op: &Submit) -> squeue::Entry {
        let fd = types::Fd(if op.fixed { op.sock as i32 } else { op.fd });
        let e = match op.prep {
            Prep::RecvMsgMulti { msg } => opcode::RecvMsgMulti::new(fd, msg, BGID).build(),
            Prep::RecvMsg { msg, provided: true } => opcode::RecvMsg::new(fd, msg)
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT),
            Prep::RecvMsg { msg, provided: false } => opcode::RecvMsg::new(fd, msg).build(),
            // With MSG_ERRQUEUE the kernel polls for POLLERR instead of POLLIN (the op waits
            // for the error queue, not for data).
            Prep::RecvErrQueue { msg } => opcode::RecvMsg::new(fd, msg).flags(libc::MSG_ERRQUEUE as u32).build(),
            Prep::RecvMulti => opcode::RecvMulti::new(fd, BGID).build(),
            Prep::Recv { len } => opcode::Recv::new(fd, std::ptr::null_mut(), len)
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT),
            Prep::SendMsg { msg, flags } => opcode::SendMsg::new(fd, msg).flags(flags as u32).build(),
            Prep::Send {
                ptr,
                len,
                dest,
                dest_len,
                flags,
                zc: Some(index),
            } => opcode::SendZc::new(fd, ptr, len)
                .buf_index(self.fixed_buffers.then_some(index))
                .dest_addr(dest)
                .dest_addr_len(dest_len)
                .flags(flags & !libc::MSG_WAITALL)
                .zc_flags(SEND_ZC_REPORT_USAGE)
                .build(),
            Prep::Send {
                ptr,
                len,
                dest,
                dest_len,
                flags,
                zc: None,
            } => opcode::Send::new(fd, ptr, len)
                .dest_addr(dest)
                .dest_addr_len(dest_len)
                .flags(flags)
                .build(),
            Prep::AcceptMulti => opcode::AcceptMulti::new(fd)
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build(),
            Prep::Accept { addr, len } => opcode::Accept::new(fd, addr, len)
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build(),
            Prep::Connect { addr, len } => opcode::Connect::new(fd, addr, len).build(),
            Prep::Shutdown => opcode::Shutdown::new(fd, libc::SHUT_RDWR).build(),
            Prep::PollIn => opcode::PollAdd::new(fd, libc::POLLIN as u32).build(),
        };
        let e = e.user_data(op.ud);
        if op.fixed {
            e.flags(squeue::Flags::FIXED_FILE)
        } else {
            e
        }
    }
}

impl Driver for UringDriver {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            transport: Transport::IoUring,
            ring: Some(self.ring.info().clone()),
            fallback: None,
            degraded: self.degraded.clone(),
        }
    }

    unsafe fn push(&mut self, op: &Submit) -> io::Result<()> {
        if let Frames::Lent(lent) = &mut self.frames {
            if Lent::takes(&op.prep) {
                let ring = &mut self.ring;
                // SAFETY: the entries point into the op's slot and into frames lent to it
                // (the caller's contract, and the frames are the driver's until their event).
                return unsafe { lent.push(op, &mut |e| ring.push_all(e)) };
            }
        }
        let entry = self.entry(op);
        let Some(t) = op.timeout else {
            // SAFETY: forwarded to the caller's contract.
            return unsafe { self.ring.push(&entry) };
        };
        let lt = opcode::LinkTimeout::new(t.ts).build().user_data(t.ud);
        // SAFETY: as above; the timespec is the caller's too. Both go in together or neither
        // does (`push_all`), so on an error no SQE of this op is in the kernel.
        unsafe { self.ring.push_all(&[entry.flags(squeue::Flags::IO_LINK), lt]) }
    }

    fn cancel(&mut self, target: u64) -> io::Result<()> {
        if let Frames::Lent(lent) = &mut self.frames {
            lent.cancel(target);
        }
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(crate::driver::CANCEL_UD);
        // SAFETY: a cancel SQE points at no memory.
        unsafe { self.ring.push(&e) }
    }

    fn watch(&mut self, fd: RawFd, ud: u64) -> io::Result<()> {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(ud);
        // SAFETY: a poll SQE points at no memory.
        unsafe { self.ring.push(&e) }
    }

    fn unwatch(&mut self, ud: u64) -> io::Result<()> {
        let e = opcode::PollRemove::new(ud).build().user_data(crate::driver::CANCEL_UD);
        // SAFETY: a poll-remove SQE points at no memory.
        unsafe { self.ring.push(&e) }
    }

    fn arm_wake(&mut self, ud: u64) -> io::Result<()> {
        let e = opcode::Read::new(types::Fd(self.wake_fd), (&mut *self.wake_buf as *mut u64).cast(), 8)
            .build()
            .user_data(ud);
        // SAFETY: `wake_buf` is boxed in the driver, which the shard keeps until this read's
        // event (shutdown waits for it, and leaks the driver if it never comes).
        unsafe { self.ring.push(&e) }
    }

    fn ring_fd(&self) -> Option<io::Result<OwnedFd>> {
        Some(self.ring.dup_fd())
    }

    fn msg_ring(&mut self, target: RawFd, ud: u64, res: i32, sent_ud: u64) -> io::Result<bool> {
        let e = opcode::MsgRingData::new(types::Fd(target), res, ud, None)
            .build()
            .user_data(sent_ud);
        // SAFETY: a MSG_RING data SQE points at no memory (the target fd is a ring the
        // caller keeps open: a duplicate held by the target's shared state).
        unsafe { self.ring.push(&e) }?;
        Ok(true)
    }

    unsafe fn provide(&mut self, frame: u32, addr: u64, len: u32) {
        match &mut self.frames {
            // SAFETY: the caller gives the frame to the kernel; frames provided never exceed
            // the ring's entries (the core's target is recv_frames, the ring's size).
            Frames::Ring(r) => unsafe { r.push(addr, len, frame as u16) },
            Frames::Lent(l) => l.provide(frame, addr, len),
        }
    }

    fn publish(&mut self) {
        if let Frames::Ring(r) = &mut self.frames {
            r.publish();
        }
    }

    fn open(&mut self, sock: u32, fd: RawFd) -> bool {
        self.files
            && self
                .ring
                .set_file(sock, fd)
                .inspect_err(
                    |e| tracing::warn!(sock, error = %e, "registering the socket's file failed; it goes by fd"),
                )
                .is_ok()
    }

    fn close(&mut self, sock: u32, _fd: RawFd, fixed: bool) {
        // The table's reference goes first, so closing the fd closes the socket.
        if fixed {
            if let Err(err) = self.ring.set_file(sock, -1) {
                tracing::warn!(sock, error = %err, "clearing the socket's file slot failed");
            }
        }
    }

    unsafe fn register_buffer(&mut self, slot: u32, ptr: *mut u8, len: usize) -> io::Result<()> {
        if !self.fixed_buffers {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel refused fixed buffers: Registered I/O sends copy",
            ));
        }
        // SAFETY: forwarded to the caller's contract.
        unsafe { self.ring.register_slot(slot, ptr, len) }
    }

    fn unregister_buffer(&mut self, slot: u32) -> io::Result<()> {
        if !self.fixed_buffers {
            return Ok(());
        }
        self.ring.unregister_slot(slot)
    }

    fn enter(&mut self, how: Enter) -> io::Result<()> {
        match how {
            Enter::IfNeeded => self.ring.submit_if_needed(),
            Enter::Now => self.ring.submit(),
            Enter::Wait(t) => self.ring.submit_and_wait(t),
        }
    }

    fn has_events(&mut self) -> bool {
        matches!(&self.frames, Frames::Lent(l) if l.has_pending()) || self.ring.has_completions()
    }

    fn reap(&mut self, out: &mut Vec<Event>) {
        out.clear();
        if let Frames::Lent(l) = &mut self.frames {
            l.drain_pending(out);
        }
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.reserve_exact(out.capacity().saturating_sub(cqes.capacity()));
        self.ring.reap(&mut cqes);
        for c in cqes.drain(..) {
            let (ud, res, flags) = (c.user_data(), c.result(), c.flags());
            let notif = cqueue::notif(flags);
            if let Frames::Lent(l) = &mut self.frames {
                let ring = &mut self.ring;
                // SAFETY: a re-armed receive points into its lent frame and slot (as push).
                if !notif && l.complete(ud, res, out, &mut |e| unsafe { ring.push_all(e) }).is_some() {
                    continue;
                }
            }
            let accepted = (!notif && res >= 0 && crate::driver::is_accept(ud))
                // SAFETY: a successful accept CQE's result is a new fd nobody owns yet.
                .then(|| unsafe { OwnedFd::from_raw_fd(res) });
            out.push(Event {
                ud,
                res,
                more: cqueue::more(flags),
                notif_copied: notif.then_some((res as u32) & NOTIF_USAGE_ZC_COPIED != 0),
                frame: cqueue::buffer_select(flags).map(u32::from),
                accepted,
            });
        }
        self.cqes = cqes;
    }

    fn overflows(&self) -> u64 {
        self.ring.overflows()
    }

    fn fixed_files(&self) -> bool {
        self.files
    }

    fn fixed_buffers(&self) -> bool {
        self.fixed_buffers
    }

    fn abandon(&mut self) {
        std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
    }
}

/// Registers the pool, retrying ENOMEM for up to a second: a ring dropped just before keeps
/// its pinned pages charged to RLIMIT_MEMLOCK until its asynchronous teardown ends.
fn register_with_retry(ring: &mut Ring, region: &Region, extra: u32) -> Result<(), SetupError> {
    ring.register_buffer_table(1 + extra)
        .map_err(|source| SetupError::Syscall {
            what: "IORING_REGISTER_BUFFERS2 (sparse table)",
            source,
        })?;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match ring.register_region(region) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                const CAP_IPC_LOCK: u32 = 14;
                let locked_ok = crate::sys::net::effective_caps() & (1 << CAP_IPC_LOCK) != 0;
                let hint = match (source.raw_os_error(), crate::sys::net::memlock_limit()) {
                    (Some(libc::ENOMEM), Some(b)) if !locked_ok => format!(
                        "; RLIMIT_MEMLOCK is {} KiB: raise it (`ulimit -l unlimited`, or LimitMEMLOCK= in a systemd unit), run with CAP_IPC_LOCK, or lower frames_per_shard",
                        b / 1024
                    ),
                    (Some(libc::ENOMEM), _) => {
                        "; memory locking is not limited for this process (CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK): the kernel is out of memory it can pin, or a seccomp profile refuses io_uring_register".into()
                    }
                    (Some(libc::EPERM | libc::EACCES | libc::EINVAL), _) => {
                        "; the kernel (or a seccomp profile) refuses io_uring_register's IORING_REGISTER_BUFFERS_UPDATE".into()
                    }
                    _ => String::new(),
                };
                return Err(SetupError::Register {
                    bytes: region.len(),
                    hint,
                    source,
                });
            }
        }
    }
}
