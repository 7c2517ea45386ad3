//! The io_uring provider: a [`Submit`] becomes one SQE (two with a linked timeout), a CQE
//! becomes an [`Event`]. Receives pick frames from the provided-buffer ring; sockets are
//! registered files where the kernel has sparse file tables; the pool is fixed buffer 0.

// Pushing SQEs whose pointers the caller vouches for, and adopting accepted fds.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types};

use super::{Driver, Enter, Event, Prep, ProviderInfo, Submit, Transport};
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
}

pub(crate) struct UringDriver {
    // Field order is drop order: the ring goes first, so the kernel lets go of the buffer
    // ring before it is unmapped.
    ring: Ring,
    bufring: BufRing,
    files: bool,
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
        register_with_retry(&mut ring, s.region, s.rio_buffers_max)?;
        let bufring = BufRing::new(s.recv_frames as u16).map_err(|source| SetupError::Syscall {
            what: "mmap of the provided-buffer ring",
            source,
        })?;
        ring.register_buf_ring(&bufring, BGID)
            .map_err(|source| SetupError::Syscall {
                what: "IORING_REGISTER_PBUF_RING (Linux 5.19+)",
                source,
            })?;
        // Fixed files are an optimisation: without them (a kernel before 5.19's sparse
        // tables) every operation names its socket's fd, and that is reported.
        let files = s.registered_files
            && ring
                .register_file_table(s.sockets_max)
                .inspect_err(|e| tracing::warn!(error = %e, "no registered-file table; sockets go by fd"))
                .is_ok();
        Ok(UringDriver {
            ring,
            bufring,
            files,
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
                .buf_index(Some(index))
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
        }
    }

    unsafe fn push(&mut self, op: &Submit) -> io::Result<()> {
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
        // SAFETY: the caller gives the frame to the kernel; frames provided never exceed the
        // ring's entries (the core's target is recv_frames, the ring's size).
        unsafe { self.bufring.push(addr, len, frame as u16) };
    }

    fn publish(&mut self) {
        self.bufring.publish();
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
        // SAFETY: forwarded to the caller's contract.
        unsafe { self.ring.register_slot(slot, ptr, len) }
    }

    fn unregister_buffer(&mut self, slot: u32) -> io::Result<()> {
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
        self.ring.has_completions()
    }

    fn reap(&mut self, out: &mut Vec<Event>) {
        out.clear();
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.reserve_exact(out.capacity().saturating_sub(cqes.capacity()));
        self.ring.reap(&mut cqes);
        for c in cqes.drain(..) {
            let (ud, res, flags) = (c.user_data(), c.result(), c.flags());
            let notif = cqueue::notif(flags);
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
                return Err(SetupError::Register {
                    bytes: region.len(),
                    memlock: crate::sys::net::memlock_limit()
                        .map_or("unlimited".into(), |b| format!("{} KiB", b / 1024)),
                    source,
                });
            }
        }
    }
}
