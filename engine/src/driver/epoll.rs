//! The epoll provider: the same operations and the same events as io_uring, done by
//! readiness. For containers whose seccomp profile refuses `io_uring_setup` (Docker's
//! default), kernels with `kernel.io_uring_disabled`, and as the baseline io_uring is
//! measured against.
//!
//! Each socket is registered once, edge-triggered, and keeps two FIFO wait lists (reads:
//! receives and accepts; writes: sends and connects) threaded through a per-op array sized at
//! start-up — no allocation per operation. `push` only queues; `enter` runs the lists of
//! sockets that became ready (or got a new head), doing the syscalls until one would block:
//!
//! | operation            | syscall                                   | events                         |
//! |----------------------|-------------------------------------------|--------------------------------|
//! | multishot recvmsg    | `recvmmsg` into provided frames, laid out as io_uring's `recvmsg_out` | one per datagram, `more` |
//! | recvmsg / recv       | `recvmsg` / `recv` into a provided frame  | one                            |
//! | multishot recv       | `recv` until EAGAIN; EOF ends it          | one per read, `more` until EOF |
//! | send / sendmsg       | `sendto` / `sendmsg`; a stream send (`MSG_WAITALL`) is continued until whole | one |
//! | SEND_ZC              | `sendto` (a copy)                         | result, then a notification "copied" |
//! | accept (multishot)   | `accept4` until EAGAIN                    | one per connection             |
//! | connect              | non-blocking `connect`, then `SO_ERROR` on writability | one               |
//! | linked timeout       | a deadline scanned each turn              | op `-ECANCELED` + timeout `-ETIME`, or result + timeout `-ECANCELED` |
//! | cancel               | unlinked from its wait list               | op `-ECANCELED`                |
//!
//! Out of provided frames, a receive ends with `-ENOBUFS` exactly as io_uring's does, and the
//! core re-arms it when frames return.

// Syscalls on raw fds, and the op pointers the core vouches for in `push`.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use super::{decode, user_data, Driver, Enter, Event, Prep, ProviderInfo, Submit, Transport, TAG_WAKE};

/// The epoll data of a socket's registration.
const TAG_SOCK: u64 = 7;
/// No op (end of a wait list).
const NIL: u32 = u32::MAX;
/// Datagrams per `recvmmsg`.
const BATCH: usize = 32;
/// Messages a multishot op takes per run before other sockets get their turn.
const RUN_BUDGET: u32 = 128;
/// epoll events taken per `epoll_wait`.
const EPOLL_EVENTS: usize = 256;
/// Bytes of io_uring's `struct io_uring_recvmsg_out` at the head of each multishot frame.
const RECVMSG_OUT_LEN: usize = 16;
/// Ready flags of a socket.
const READ: u8 = 1;
const WRITE: u8 = 2;
const ERRQ: u8 = 4;

#[derive(Clone, Copy)]
struct Op {
    sub: Submit,
    live: bool,
    /// The next op in its socket's wait list.
    next: u32,
    /// A connect in progress (the first `connect` said EINPROGRESS).
    started: bool,
    /// Bytes of a stream send already sent.
    done: u32,
    deadline: Option<Instant>,
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List { head: NIL, tail: NIL };

#[derive(Clone, Copy)]
struct Sock {
    fd: RawFd,
    reads: List,
    writes: List,
    /// Error-queue reads (TX timestamps): they wait for EPOLLERR, never behind a receive.
    errs: List,
    /// READ/WRITE/ERRQ: in the ready list, to run those lists.
    ready: u8,
}

/// The wait list an op waits in.
fn dir_of(p: &Prep) -> u8 {
    match p {
        Prep::RecvErrQueue { .. } => ERRQ,
        p if p.reads() => READ,
        _ => WRITE,
    }
}

/// What one attempt of an op did.
enum Step {
    /// Would block: it stays at the head of its list.
    Blocked,
    /// It produced its last event: unlink it.
    Done,
    /// It produced events and may produce more now.
    More,
}

pub(crate) struct EpollDriver {
    epfd: OwnedFd,
    wake_fd: RawFd,
    wake_ud: Option<u64>,
    ops: Box<[Op]>,
    socks: Box<[Sock]>,
    ready: Vec<u32>,
    events: VecDeque<Event>,
    events_max: usize,
    epoll_events: Vec<libc::epoll_event>,
    /// Provided frames (frame, address, length), taken last-in first-out (warm in cache).
    provided: Vec<(u32, u64, u32)>,
    /// Ops with a deadline.
    timed: Vec<u32>,
    /// One-shot readability watches (ud, fd).
    watches: Vec<(u64, RawFd)>,
    mmsgs: Box<[libc::mmsghdr; BATCH]>,
    iovs: Box<[libc::iovec; BATCH]>,
    /// Why `Auto` got epoll, if it did.
    fallback: Option<String>,
    /// epoll_pwait2 (Linux 5.11+: nanosecond timeouts) works; else epoll_wait rounds up to ms.
    pwait2: bool,
}

/// What the epoll driver is built with.
pub(crate) struct EpollSetup {
    pub ops_max: u32,
    pub sockets_max: u32,
    pub recv_frames: u32,
    pub cq_entries: u32,
    pub wake_fd: RawFd,
    pub fallback: Option<String>,
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

impl EpollDriver {
    pub(crate) fn new(s: &EpollSetup) -> io::Result<EpollDriver> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd nobody else owns.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let d = EpollDriver {
            epfd,
            wake_fd: s.wake_fd,
            wake_ud: None,
            ops: vec![
                Op {
                    sub: Submit {
                        ud: 0,
                        sock: 0,
                        fd: -1,
                        fixed: false,
                        prep: Prep::Shutdown,
                        timeout: None,
                    },
                    live: false,
                    next: NIL,
                    started: false,
                    done: 0,
                    deadline: None,
                };
                s.ops_max as usize
            ]
            .into_boxed_slice(),
            socks: vec![
                Sock {
                    fd: -1,
                    reads: EMPTY,
                    writes: EMPTY,
                    errs: EMPTY,
                    ready: 0,
                };
                s.sockets_max as usize
            ]
            .into_boxed_slice(),
            ready: Vec::with_capacity(s.sockets_max as usize),
            events: VecDeque::with_capacity(s.cq_entries as usize),
            events_max: s.cq_entries as usize,
            epoll_events: vec![libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS],
            provided: Vec::with_capacity(s.recv_frames as usize),
            timed: Vec::with_capacity(s.ops_max as usize),
            watches: Vec::with_capacity(64),
            mmsgs: Box::new([zeroed_mmsghdr(); BATCH]),
            iovs: Box::new(
                [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; BATCH],
            ),
            fallback: s.fallback.clone(),
            pwait2: true,
        };
        d.ctl(
            libc::EPOLL_CTL_ADD,
            s.wake_fd,
            libc::EPOLLIN as u32,
            user_data(TAG_WAKE, 0, 0),
        )?;
        Ok(d)
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` is a valid epoll_event for the call's duration.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn emit(&mut self, ev: Event) {
        self.events.push_back(ev);
    }

    fn list(&mut self, sock: u32, dir: u8) -> &mut List {
        let s = &mut self.socks[sock as usize];
        match dir {
            READ => &mut s.reads,
            WRITE => &mut s.writes,
            _ => &mut s.errs,
        }
    }

    fn mark_ready(&mut self, sock: u32, what: u8) {
        let s = &mut self.socks[sock as usize];
        if s.ready == 0 {
            self.ready.push(sock);
        }
        s.ready |= what;
    }

    /// Unlinks op `idx` from its wait list (wherever it is in it).
    fn unlink(&mut self, idx: u32) {
        let op = self.ops[idx as usize];
        let (sock, dir) = (op.sub.sock, dir_of(&op.sub.prep));
        let l = *self.list(sock, dir);
        let mut prev = NIL;
        let mut cur = l.head;
        while cur != NIL && cur != idx {
            prev = cur;
            cur = self.ops[cur as usize].next;
        }
        if cur == NIL {
            return;
        }
        let next = op.next;
        if prev == NIL {
            self.list(sock, dir).head = next;
        } else {
            self.ops[prev as usize].next = next;
        }
        if l.tail == idx {
            self.list(sock, dir).tail = prev;
        }
        self.ops[idx as usize].next = NIL;
    }

    /// Ends op `idx` (already unlinked): its timeout's event follows its own.
    fn end(&mut self, idx: u32, timeout_res: i32) {
        let op = &mut self.ops[idx as usize];
        op.live = false;
        if let Some(t) = op.sub.timeout {
            op.deadline = None;
            if let Some(p) = self.timed.iter().position(|&i| i == idx) {
                self.timed.swap_remove(p);
            }
            self.emit(Event::of(t.ud, timeout_res));
        }
    }

    /// Runs wait list `dir` of `sock` until its head blocks.
    fn run(&mut self, sock: u32, dir: u8) {
        let mut budget = RUN_BUDGET;
        loop {
            let idx = self.list(sock, dir).head;
            if idx == NIL {
                return;
            }
            if self.events.len() >= self.events_max || budget == 0 {
                // Backpressure: the core reaps first; this socket runs again next turn.
                self.mark_ready(sock, dir);
                return;
            }
            budget -= 1;
            match self.attempt(idx) {
                Step::Blocked => return,
                Step::More => {}
                Step::Done => {
                    self.unlink(idx);
                    self.end(idx, -libc::ECANCELED);
                }
            }
        }
    }

    fn take_frame(&mut self) -> Option<(u32, u64, u32)> {
        self.provided.pop()
    }

    /// One try of op `idx`; events it produces are queued.
    fn attempt(&mut self, idx: u32) -> Step {
        let op = self.ops[idx as usize];
        let (ud, fd) = (op.sub.ud, op.sub.fd);
        match op.sub.prep {
            Prep::RecvMsgMulti { msg } => self.recv_mmsg(ud, fd, msg),
            Prep::RecvMsg { msg, provided: false } => {
                // SAFETY: `msg` and the buffers it names are the op's (push's contract).
                let n = unsafe { libc::recvmsg(fd, msg, libc::MSG_DONTWAIT) };
                self.finish_one(ud, n, None)
            }
            Prep::RecvErrQueue { msg } => {
                // SAFETY: as above.
                let n = unsafe { libc::recvmsg(fd, msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
                self.finish_one(ud, n, None)
            }
            Prep::RecvMsg { msg, provided: true } => {
                let Some((frame, addr, len)) = self.take_frame() else {
                    self.emit(Event::of(ud, -libc::ENOBUFS));
                    return Step::Done;
                };
                let mut iov = libc::iovec {
                    iov_base: addr as *mut libc::c_void,
                    iov_len: len as usize,
                };
                // SAFETY: `msg` points into the op's slot, valid until its last event (push's
                // contract); the local header copies its name buffer and writes back the length.
                let n = unsafe {
                    let mut local: libc::msghdr = *msg;
                    local.msg_iov = &mut iov;
                    local.msg_iovlen = 1;
                    local.msg_control = std::ptr::null_mut();
                    local.msg_controllen = 0;
                    let n = libc::recvmsg(fd, &mut local, libc::MSG_DONTWAIT);
                    if n >= 0 {
                        (*msg).msg_namelen = local.msg_namelen;
                        (*msg).msg_flags = local.msg_flags;
                    }
                    n
                };
                self.finish_one(ud, n, Some((frame, addr, len)))
            }
            Prep::RecvMulti | Prep::Recv { .. } => {
                let Some((frame, addr, len)) = self.take_frame() else {
                    self.emit(Event::of(ud, -libc::ENOBUFS));
                    return Step::Done;
                };
                let want = match op.sub.prep {
                    Prep::Recv { len: l } => l.min(len),
                    _ => len,
                };
                // SAFETY: the frame was provided to the driver: nobody else touches it.
                let n = unsafe { libc::recv(fd, addr as *mut libc::c_void, want as usize, libc::MSG_DONTWAIT) };
                if !op.sub.prep.multishot() {
                    return self.finish_one(ud, n, Some((frame, addr, len)));
                }
                if n < 0 {
                    self.provided.push((frame, addr, len));
                    return self.failed(ud, errno());
                }
                if n == 0 {
                    // EOF: no frame picked, the op ends.
                    self.provided.push((frame, addr, len));
                    self.emit(Event::of(ud, 0));
                    return Step::Done;
                }
                let mut ev = Event::of(ud, n as i32);
                ev.more = true;
                ev.frame = Some(frame);
                self.emit(ev);
                Step::More
            }
            Prep::SendMsg { msg, flags } => self.send_msg(idx, msg, flags),
            Prep::Send {
                ptr,
                len,
                dest,
                dest_len,
                flags,
                zc,
            } => {
                let stream = flags & libc::MSG_WAITALL != 0;
                let done = op.done;
                // SAFETY: `ptr..ptr+len` is the op's buffer (push's contract); done <= len.
                let n = unsafe {
                    libc::sendto(
                        fd,
                        ptr.add(done as usize).cast(),
                        (len - done) as usize,
                        (flags & !libc::MSG_WAITALL) | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        dest,
                        dest_len,
                    )
                };
                if n < 0 {
                    return self.failed(ud, errno());
                }
                let total = done + n as u32;
                if stream && total < len {
                    self.ops[idx as usize].done = total;
                    return Step::More;
                }
                let mut ev = Event::of(ud, total as i32);
                if zc.is_some() {
                    // SEND_ZC's two events; this provider always copies.
                    ev.more = true;
                    self.emit(ev);
                    let mut notif = Event::of(ud, 0);
                    notif.notif_copied = Some(true);
                    self.emit(notif);
                } else {
                    self.emit(ev);
                }
                Step::Done
            }
            Prep::AcceptMulti | Prep::Accept { .. } => {
                let (addr, len) = match op.sub.prep {
                    Prep::Accept { addr, len } => (addr, len),
                    _ => (std::ptr::null_mut(), std::ptr::null_mut()),
                };
                // SAFETY: addr/len point into the op's slot or are null.
                let n = unsafe { libc::accept4(fd, addr, len, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) };
                if n < 0 {
                    return self.failed(ud, errno());
                }
                let mut ev = Event::of(ud, n);
                // SAFETY: accept4 returned a new fd nobody owns.
                ev.accepted = Some(unsafe { OwnedFd::from_raw_fd(n) });
                ev.more = op.sub.prep.multishot();
                self.emit(ev);
                if op.sub.prep.multishot() {
                    Step::More
                } else {
                    Step::Done
                }
            }
            Prep::PollIn => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd of ours; a zero timeout never blocks.
                let n = unsafe { libc::poll(&mut p, 1, 0) };
                if n < 0 {
                    return self.failed(ud, errno());
                }
                if n == 0 {
                    return Step::Blocked;
                }
                self.emit(Event::of(ud, i32::from(p.revents).max(1)));
                Step::Done
            }
            Prep::Connect { addr, len } => {
                if !op.started {
                    // SAFETY: addr/len describe a sockaddr in the op's slot.
                    if unsafe { libc::connect(fd, addr, len) } == 0 {
                        self.emit(Event::of(ud, 0));
                        return Step::Done;
                    }
                    let e = errno();
                    if e == libc::EINPROGRESS || e == libc::EAGAIN {
                        self.ops[idx as usize].started = true;
                        return Step::Blocked;
                    }
                    self.emit(Event::of(ud, -e));
                    return Step::Done;
                }
                let mut err: libc::c_int = 0;
                let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: `err` and `l` are valid for the call.
                let r = unsafe {
                    libc::getsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        (&mut err as *mut libc::c_int).cast(),
                        &mut l,
                    )
                };
                if r < 0 {
                    err = errno();
                }
                if err != 0 {
                    self.emit(Event::of(ud, -err));
                    return Step::Done;
                }
                // Writable, or a stale readiness from before the connect: connected only if
                // the socket has a peer now.
                // SAFETY: storage and length are valid for the call.
                let connected = unsafe {
                    let mut ss: libc::sockaddr_storage = std::mem::zeroed();
                    let mut sl = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                    libc::getpeername(fd, (&mut ss as *mut libc::sockaddr_storage).cast(), &mut sl) == 0
                };
                if !connected {
                    return Step::Blocked;
                }
                self.emit(Event::of(ud, 0));
                Step::Done
            }
            Prep::Shutdown => unreachable!("done at push"),
        }
    }

    /// A single-shot receive's result: its event (with the frame on success).
    fn finish_one(&mut self, ud: u64, n: isize, frame: Option<(u32, u64, u32)>) -> Step {
        if n < 0 {
            if let Some(f) = frame {
                self.provided.push(f);
            }
            return self.failed(ud, errno());
        }
        let mut ev = Event::of(ud, n as i32);
        ev.frame = frame.map(|f| f.0);
        self.emit(ev);
        Step::Done
    }

    /// A syscall failed with `e`: would-block waits, anything else ends the op.
    fn failed(&mut self, ud: u64, e: i32) -> Step {
        if e == libc::EAGAIN || e == libc::EINTR {
            return Step::Blocked;
        }
        self.emit(Event::of(ud, -e));
        Step::Done
    }

    /// Multishot recvmsg: a batch of datagrams, each in a provided frame laid out like
    /// io_uring's `[recvmsg_out | name | control | payload]`, so the core parses both alike.
    fn recv_mmsg(&mut self, ud: u64, fd: RawFd, msg: *const libc::msghdr) -> Step {
        // SAFETY: `msg` points into the op's slot (push's contract); only lengths are read.
        let (namelen, controllen) = unsafe { ((*msg).msg_namelen as usize, (*msg).msg_controllen) };
        let head = RECVMSG_OUT_LEN + namelen + controllen;
        let room = self.events_max.saturating_sub(self.events.len());
        let k = BATCH.min(self.provided.len()).min(room);
        if self.provided.is_empty() {
            self.emit(Event::of(ud, -libc::ENOBUFS));
            return Step::Done;
        }
        if k == 0 {
            return Step::Blocked;
        }
        let base = self.provided.len() - k;
        for i in 0..k {
            let (_, addr, len) = self.provided[base + i];
            let len = len as usize;
            debug_assert!(len > head);
            self.iovs[i] = libc::iovec {
                iov_base: (addr as usize + head) as *mut libc::c_void,
                iov_len: len.saturating_sub(head),
            };
            let h = &mut self.mmsgs[i].msg_hdr;
            h.msg_name = (addr as usize + RECVMSG_OUT_LEN) as *mut libc::c_void;
            h.msg_namelen = namelen as libc::socklen_t;
            h.msg_control = (addr as usize + RECVMSG_OUT_LEN + namelen) as *mut libc::c_void;
            h.msg_controllen = controllen;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_flags = 0;
            self.mmsgs[i].msg_len = 0;
        }
        // SAFETY: every header points into a provided frame (the driver's until an event hands
        // it on) and into `iovs`, all valid for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.mmsgs.as_mut_ptr(),
                k as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return self.failed(ud, errno());
        }
        let n = n as usize;
        // The frames used are the first `n` of the batch: take them out of the stack.
        for i in 0..n {
            let (frame, addr, _) = self.provided[base + i];
            let h = &self.mmsgs[i].msg_hdr;
            let payload = self.mmsgs[i].msg_len;
            let out = [h.msg_namelen, h.msg_controllen as u32, payload, h.msg_flags as u32];
            // SAFETY: the frame is the driver's and at least `head` bytes long; the header is
            // written where io_uring writes its `io_uring_recvmsg_out` (4 u32s, unaligned ok).
            unsafe {
                std::ptr::copy_nonoverlapping(out.as_ptr().cast::<u8>(), addr as *mut u8, RECVMSG_OUT_LEN);
            }
            let used = head + (payload as usize).min(self.iovs[i].iov_len);
            let mut ev = Event::of(ud, used as i32);
            ev.more = true;
            ev.frame = Some(frame);
            self.events.push_back(ev);
        }
        // Keep the unused frames of the batch.
        self.provided.drain(base..base + n);
        if n < k {
            Step::Blocked
        } else {
            Step::More
        }
    }

    /// sendmsg(2); a stream send (`MSG_WAITALL`) continues after a short write.
    fn send_msg(&mut self, idx: u32, msg: *const libc::msghdr, flags: i32) -> Step {
        let op = self.ops[idx as usize];
        let stream = flags & libc::MSG_WAITALL != 0;
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 8];
        // SAFETY: `msg` and its iovecs point into the op's slot and buffers (push's contract).
        let (mut local, total) = unsafe {
            let m = *msg;
            let src = std::slice::from_raw_parts(m.msg_iov, m.msg_iovlen);
            let total: usize = src.iter().map(|v| v.iov_len).sum();
            (m, total)
        };
        if stream && op.done > 0 {
            // Skip what was sent already.
            // SAFETY: as above.
            let src = unsafe { std::slice::from_raw_parts(local.msg_iov, local.msg_iovlen) };
            let mut skip = op.done as usize;
            let mut n = 0;
            for v in src {
                if skip >= v.iov_len {
                    skip -= v.iov_len;
                    continue;
                }
                if n == iovs.len() {
                    break;
                }
                iovs[n] = libc::iovec {
                    iov_base: (v.iov_base as usize + skip) as *mut libc::c_void,
                    iov_len: v.iov_len - skip,
                };
                skip = 0;
                n += 1;
            }
            local.msg_iov = iovs.as_mut_ptr();
            local.msg_iovlen = n;
        }
        // SAFETY: `local` points at valid memory (the slot's, or `iovs` above).
        let n = unsafe {
            libc::sendmsg(
                op.sub.fd,
                &local,
                (flags & !libc::MSG_WAITALL) | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return self.failed(op.sub.ud, errno());
        }
        let sent = op.done as usize + n as usize;
        if stream && sent < total {
            self.ops[idx as usize].done = sent as u32;
            return Step::More;
        }
        self.emit(Event::of(op.sub.ud, sent as i32));
        Step::Done
    }

    /// Deadlines that have passed: the op ends `-ECANCELED`, its timeout `-ETIME`.
    fn expire(&mut self) {
        if self.timed.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut i = 0;
        while i < self.timed.len() {
            let idx = self.timed[i];
            let op = self.ops[idx as usize];
            if op.live && op.deadline.is_some_and(|d| d <= now) {
                self.unlink(idx);
                self.emit(Event::of(op.sub.ud, -libc::ECANCELED));
                self.end(idx, -libc::ETIME);
                // `end` swap-removed entry i: look at i again.
            } else {
                i += 1;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timed.iter().filter_map(|&i| self.ops[i as usize].deadline).min()
    }

    fn run_ready(&mut self) {
        // Sockets put back by backpressure are appended: run only those present now.
        let n = self.ready.len();
        for i in 0..n {
            let sock = self.ready[i];
            let what = std::mem::take(&mut self.socks[sock as usize].ready);
            for dir in [READ, WRITE, ERRQ] {
                if what & dir != 0 {
                    self.run(sock, dir);
                }
            }
        }
        self.ready.drain(..n);
    }

    /// epoll_pwait2 with a nanosecond timeout (None: until something happens), falling back
    /// to epoll_wait (milliseconds, rounded up so a deadline is never undershot) on a kernel
    /// without it.
    fn epoll_wait(&mut self, timeout: Option<Duration>) -> libc::c_int {
        if self.pwait2 {
            let ts = timeout.map(|t| libc::timespec {
                tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
            });
            let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: the events buffer holds EPOLL_EVENTS entries; `tsp` is null or points at
            // `ts`, alive for the call; no signal mask.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.epfd.as_raw_fd(),
                    self.epoll_events.as_mut_ptr(),
                    EPOLL_EVENTS as libc::c_int,
                    tsp,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            } as libc::c_int;
            if n >= 0 || errno() != libc::ENOSYS {
                return n;
            }
            self.pwait2 = false;
        }
        let ms = timeout.map_or(-1, |t| t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32);
        // SAFETY: the events buffer is valid for EPOLL_EVENTS entries.
        unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.epoll_events.as_mut_ptr(),
                EPOLL_EVENTS as i32,
                ms,
            )
        }
    }

    /// One wait of up to `timeout` (None: until something happens); handles its events.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let n = self.epoll_wait(timeout);
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(());
            }
            return Err(e);
        }
        for i in 0..n as usize {
            let ev = self.epoll_events[i];
            let (data, flags) = (ev.u64, ev.events);
            let (tag, idx, _) = decode(data);
            match tag {
                TAG_SOCK => {
                    let read = flags & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32 != 0;
                    let write = flags & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
                    let err = flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
                    for (dir, now) in [(READ, read), (WRITE, write), (ERRQ, err)] {
                        if now {
                            self.run(idx, dir);
                        }
                    }
                }
                TAG_WAKE => {
                    let mut v = 0u64;
                    // SAFETY: reads 8 bytes into `v`; the eventfd is readable (level-triggered).
                    let r = unsafe { libc::read(self.wake_fd, (&mut v as *mut u64).cast(), 8) };
                    if r < 0 && errno() != libc::EAGAIN {
                        tracing::warn!(error = %io::Error::last_os_error(), "reading the wake-up eventfd failed");
                    }
                    if let Some(ud) = self.wake_ud.take() {
                        self.emit(Event::of(ud, 8));
                    }
                }
                _ => {
                    // A one-shot watch fired.
                    if let Some(p) = self.watches.iter().position(|w| w.0 == data) {
                        self.watches.swap_remove(p);
                        self.emit(Event::of(data, libc::POLLIN as i32));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Driver for EpollDriver {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            transport: Transport::Epoll,
            ring: None,
            fallback: self.fallback.clone(),
            degraded: Vec::new(),
        }
    }

    unsafe fn push(&mut self, op: &Submit) -> io::Result<()> {
        let (_, idx, _) = decode(op.ud);
        if matches!(op.prep, Prep::Shutdown) {
            // SAFETY: plain syscall on the socket's fd.
            let r = unsafe { libc::shutdown(op.fd, libc::SHUT_RDWR) };
            self.emit(Event::of(op.ud, if r < 0 { -errno() } else { 0 }));
            if let Some(t) = op.timeout {
                self.emit(Event::of(t.ud, -libc::ECANCELED));
            }
            return Ok(());
        }
        let Some(slot) = self.ops.get_mut(idx as usize) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "op index beyond ops_max"));
        };
        debug_assert!(!slot.live, "op pushed twice");
        *slot = Op {
            sub: *op,
            live: true,
            next: NIL,
            started: false,
            done: 0,
            deadline: op.timeout.map(|t| Instant::now() + t.after),
        };
        if op.timeout.is_some() {
            self.timed.push(idx);
        }
        let dir = dir_of(&op.prep);
        let l = self.list(op.sock, dir);
        let was_empty = l.head == NIL;
        if was_empty {
            l.head = idx;
        } else {
            let tail = l.tail;
            self.ops[tail as usize].next = idx;
        }
        self.list(op.sock, dir).tail = idx;
        if was_empty {
            self.mark_ready(op.sock, dir);
        }
        Ok(())
    }

    fn cancel(&mut self, target: u64) -> io::Result<()> {
        let (tag, idx, _) = decode(target);
        if tag == TAG_WAKE {
            if self.wake_ud.take().is_some() {
                self.emit(Event::of(target, -libc::ECANCELED));
            }
            return Ok(());
        }
        let Some(op) = self.ops.get(idx as usize).copied() else {
            return Ok(());
        };
        if op.live && op.sub.ud == target {
            self.unlink(idx);
            self.emit(Event::of(target, -libc::ECANCELED));
            self.end(idx, -libc::ECANCELED);
        }
        Ok(())
    }

    fn watch(&mut self, fd: RawFd, ud: u64) -> io::Result<()> {
        let events = (libc::EPOLLIN | libc::EPOLLONESHOT) as u32;
        match self.ctl(libc::EPOLL_CTL_MOD, fd, events, ud) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => self.ctl(libc::EPOLL_CTL_ADD, fd, events, ud)?,
            r => r?,
        }
        self.watches.push((ud, fd));
        Ok(())
    }

    fn unwatch(&mut self, ud: u64) -> io::Result<()> {
        if let Some(p) = self.watches.iter().position(|w| w.0 == ud) {
            let (_, fd) = self.watches.swap_remove(p);
            let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
            self.emit(Event::of(ud, -libc::ECANCELED));
        }
        Ok(())
    }

    fn ring_fd(&self) -> Option<io::Result<OwnedFd>> {
        None
    }

    fn msg_ring(&mut self, _target: RawFd, _ud: u64, _res: i32, _sent_ud: u64) -> io::Result<bool> {
        Ok(false)
    }

    fn arm_wake(&mut self, ud: u64) -> io::Result<()> {
        self.wake_ud = Some(ud);
        Ok(())
    }

    unsafe fn provide(&mut self, frame: u32, addr: u64, len: u32) {
        self.provided.push((frame, addr, len));
    }

    fn publish(&mut self) {}

    fn open(&mut self, sock: u32, fd: RawFd) -> bool {
        // SAFETY: fcntl on an fd the socket holds.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl >= 0 && fl & libc::O_NONBLOCK == 0 {
                libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
        }
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if let Err(e) = self.ctl(libc::EPOLL_CTL_ADD, fd, events, user_data(TAG_SOCK, sock, 0)) {
            tracing::error!(sock, error = %e, "registering the socket with epoll failed; its operations wait for a turn's retry");
        }
        self.socks[sock as usize] = Sock {
            fd,
            reads: EMPTY,
            writes: EMPTY,
            errs: EMPTY,
            ready: 0,
        };
        false
    }

    fn close(&mut self, sock: u32, fd: RawFd, _fixed: bool) {
        let s = &mut self.socks[sock as usize];
        debug_assert!(
            s.reads.head == NIL && s.writes.head == NIL && s.errs.head == NIL,
            "socket closed with ops queued"
        );
        debug_assert_eq!(s.fd, fd);
        s.fd = -1;
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    unsafe fn register_buffer(&mut self, _slot: u32, _ptr: *mut u8, _len: usize) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the epoll provider has no fixed buffers: Registered I/O sends copy",
        ))
    }

    fn unregister_buffer(&mut self, _slot: u32) -> io::Result<()> {
        Ok(())
    }

    fn enter(&mut self, how: Enter) -> io::Result<()> {
        self.run_ready();
        self.expire();
        let busy = !self.events.is_empty() || !self.ready.is_empty();
        let timeout = match how {
            Enter::IfNeeded | Enter::Now => Some(Duration::ZERO),
            Enter::Wait(_) if busy => Some(Duration::ZERO),
            Enter::Wait(t) => {
                let deadline = self
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()));
                match (t, deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        };
        self.wait(timeout)?;
        self.expire();
        Ok(())
    }

    fn has_events(&mut self) -> bool {
        !self.events.is_empty()
    }

    fn reap(&mut self, out: &mut Vec<Event>) {
        out.clear();
        let n = self.events.len().min(out.capacity().max(1));
        out.extend(self.events.drain(..n));
    }

    fn overflows(&self) -> u64 {
        0
    }

    fn fixed_files(&self) -> bool {
        false
    }

    fn abandon(&mut self) {
        // No kernel writes into driver memory outside a syscall.
    }
}
