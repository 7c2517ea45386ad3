//! An operation's life between the core and its driver: described as a `Prep` and handed
//! over (`submit_slot`), and every event back — multishot deliveries, linked timeouts,
//! zero-copy notifications, starvation and re-arm — until `finish` builds its one terminal
//! completion.

// Handing an op to its driver: the memory it points to lives in its slot (or a buffer the
// slot owns) until its last event — the contract of `Driver::push`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::xdp::{xsk_poll_split, XSK_POLL_GEN_MASK};
use super::{op_ud, Core, Endpoint, CONTROL_LEN, NAME_LEN};
use crate::completion::{Completion, OpKind};
use crate::driver::{Driver, Event, Prep, Submit, Timeout};
use crate::error::Error;
use crate::op;
use crate::qos::TrafficType;
use crate::rio::buf::RioKind;
use crate::sys::{clock, net};
use crate::xdp::program::Stamping;

impl<D: Driver> Core<D> {
    /// Describes slot `idx`'s operation to the driver and queues it (also used to re-arm and
    /// to continue).
    pub(super) fn submit_slot(&mut self, idx: u32) -> io::Result<()> {
        let frame_size = self.pool.frame_size();
        let s = self.ops.slot(idx);
        let sock = &self.sockets[s.sock as usize];
        let (fd, fixed) = match &sock.ep {
            Endpoint::Kernel { fd, fixed } => (fd.as_raw_fd(), *fixed),
            _ => (-1, false),
        };
        let ud = op_ud(s.kind, idx, s.gen);
        let prep = match (s.kind, &s.rio) {
            (_, Some(r)) => {
                // A stream send continued, or a WAITALL receive filling on: from where it is.
                let (ptr, len) = r.buf.raw(r.kind);
                let done = s.sent.min(len);
                // SAFETY: `done <= len`: inside the segment.
                let (ptr, len) = (unsafe { ptr.add(done as usize) }, len - done);
                s.iov = libc::iovec {
                    iov_base: ptr.cast(),
                    iov_len: len as usize,
                };
                let namelen = if r.kind == RioKind::Send {
                    s.addr_len
                } else {
                    net::storage_len()
                };
                s.msg = net::msghdr(&mut s.addr, namelen, &mut s.iov);
                if s.msg.msg_namelen == 0 {
                    s.msg.msg_name = std::ptr::null_mut();
                }
                // RIOReceiveEx / RIOSendEx: control messages in the caller's segment, or (a
                // local address alone) in the slot's own room.
                if let Some(c) = &r.control {
                    let (p, n) = c.raw(r.kind);
                    s.msg.msg_control = p.cast();
                    s.msg.msg_controllen = n as usize;
                } else if r.kind == RioKind::Receive && r.want_local {
                    s.control.fill(0);
                    s.msg.msg_control = s.control.as_mut_ptr().cast();
                    s.msg.msg_controllen = size_of::<net::ControlRoom>();
                } else if let Some(ip) = r.ip.filter(|_| r.kind == RioKind::Send) {
                    s.msg.msg_controllen = net::pktinfo_cmsg(&mut s.control, ip);
                    s.msg.msg_control = s.control.as_mut_ptr().cast();
                }
                match r.kind {
                    RioKind::Receive => Prep::RecvMsg {
                        msg: &mut s.msg,
                        provided: false,
                    },
                    RioKind::Send if s.zerocopy => {
                        let slot = r.buf.registered_slot().expect("zerocopy implies a fixed slot") as u16;
                        let (dest, dest_len) = if s.addr_len > 0 {
                            ((&s.addr as *const libc::sockaddr_storage).cast(), s.addr_len)
                        } else {
                            (std::ptr::null(), 0)
                        };
                        Prep::Send {
                            ptr,
                            len,
                            dest,
                            dest_len,
                            flags: 0,
                            zc: Some(slot),
                        }
                    }
                    RioKind::Send => Prep::SendMsg {
                        msg: &s.msg,
                        flags: libc::MSG_NOSIGNAL,
                    },
                }
            }
            (OpKind::RecvFrom | OpKind::Recv, _) if s.gather.is_some() => {
                // A scatter receive: into the gather's frames, in order (WSARecv(From) with
                // several WSABUFs).
                let (iov, n) = s.gather.as_mut().map_or((std::ptr::null_mut(), 0), |g| g.iovecs(true));
                let namelen = if s.kind == OpKind::RecvFrom {
                    net::storage_len()
                } else {
                    0
                };
                s.msg = net::msghdr(&mut s.addr, namelen, &mut s.iov);
                if namelen == 0 {
                    s.msg.msg_name = std::ptr::null_mut();
                }
                s.msg.msg_iov = iov;
                s.msg.msg_iovlen = n;
                Prep::RecvMsg {
                    msg: &mut s.msg,
                    provided: false,
                }
            }
            (OpKind::RecvFrom, _) if s.multishot => {
                // The kernel lays out [recvmsg_out | name (NAME_LEN) | payload] in each buffer;
                // an iov of length 0 means "the whole selected buffer".
                s.iov = libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                s.msg = net::msghdr(&mut s.addr, NAME_LEN, &mut s.iov);
                // The kernel only reads the length: control data lands in each buffer.
                s.msg.msg_controllen = CONTROL_LEN;
                Prep::RecvMsgMulti { msg: &s.msg }
            }
            (OpKind::RecvFrom, _) => {
                s.iov = libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: frame_size as usize,
                };
                s.msg = net::msghdr(&mut s.addr, net::storage_len(), &mut s.iov);
                Prep::RecvMsg {
                    msg: &mut s.msg,
                    provided: true,
                }
            }
            (OpKind::Recv, _) if s.readable => Prep::PollIn,
            (OpKind::Recv, _) if s.multishot => Prep::RecvMulti,
            (OpKind::Recv, _) => Prep::Recv {
                len: match s.recv_max {
                    0 => frame_size,
                    m => m.min(frame_size),
                },
            },
            (OpKind::SendTo | OpKind::Send, _) if s.gather.is_some() => {
                let (iov, n) = s.gather.as_mut().map_or((std::ptr::null_mut(), 0), |g| g.iovecs(false));
                s.msg = net::msghdr(&mut s.addr, s.addr_len, &mut s.iov);
                s.msg.msg_iov = iov;
                s.msg.msg_iovlen = n;
                if s.addr_len == 0 {
                    s.msg.msg_name = std::ptr::null_mut();
                }
                s.attach_tos();
                let wait_all = if s.kind == OpKind::Send { libc::MSG_WAITALL } else { 0 };
                Prep::SendMsg {
                    msg: &s.msg,
                    flags: libc::MSG_NOSIGNAL | wait_all,
                }
            }
            (OpKind::SendTo, _) if s.tos.is_some() => {
                let (ptr, len) = s.send_bytes();
                s.iov = libc::iovec {
                    // The kernel only reads a send's bytes.
                    iov_base: ptr.cast_mut().cast(),
                    iov_len: len as usize,
                };
                s.msg = net::msghdr(&mut s.addr, s.addr_len, &mut s.iov);
                s.attach_tos();
                Prep::SendMsg {
                    msg: &s.msg,
                    flags: libc::MSG_NOSIGNAL,
                }
            }
            (OpKind::SendTo | OpKind::Send, _) => {
                let (ptr, len) = s.send_bytes();
                // `sent <= len`: the pointer stays inside the buffer.
                let (ptr, len) = (ptr.wrapping_add(s.sent as usize), len - s.sent);
                let (dest, dest_len) = if s.kind == OpKind::SendTo {
                    ((&s.addr as *const libc::sockaddr_storage).cast(), s.addr_len)
                } else {
                    (std::ptr::null(), 0)
                };
                // MSG_WAITALL: a stream send completes whole (the provider retries short sends).
                let wait_all = if s.kind == OpKind::Send { libc::MSG_WAITALL } else { 0 };
                Prep::Send {
                    ptr,
                    len,
                    dest,
                    dest_len,
                    flags: libc::MSG_NOSIGNAL | wait_all,
                    zc: s.zerocopy.then_some(0),
                }
            }
            (OpKind::Accept, _) if s.multishot => Prep::AcceptMulti,
            (OpKind::Accept, _) => {
                s.addr_len = net::storage_len();
                Prep::Accept {
                    addr: (&mut s.addr as *mut libc::sockaddr_storage).cast(),
                    len: &mut s.addr_len,
                }
            }
            (OpKind::Connect, _) => Prep::Connect {
                addr: (&s.addr as *const libc::sockaddr_storage).cast(),
                len: s.addr_len,
            },
            (OpKind::Disconnect, _) => Prep::Shutdown,
            (OpKind::TxTimestamp, _) => {
                // No payload (OPT_TSONLY): the control messages land in the slot's frame.
                let buf = s.buf.as_mut().expect("a TX-timestamp op holds its control frame");
                let (ptr, len) = buf.raw();
                s.iov = libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                s.msg = net::zeroed_msghdr();
                s.msg.msg_iov = &mut s.iov;
                s.msg.msg_iovlen = 1;
                s.msg.msg_control = ptr.cast();
                s.msg.msg_controllen = len as usize;
                Prep::RecvErrQueue { msg: &mut s.msg }
            }
            (OpKind::Post | OpKind::RioNotify | OpKind::FanoutNotify, _) => unreachable!("not a socket operation"),
        };
        let timeout = s.timeout.map(|t| {
            s.ts = io_uring::types::Timespec::from(t);
            s.pending += 1;
            Timeout {
                ts: &s.ts,
                after: t,
                ud: op::user_data(op::TAG_LINK_TIMEOUT, idx, s.gen),
            }
        });
        let submit = Submit {
            ud,
            sock: s.sock,
            fd,
            fixed,
            prep,
            timeout,
        };
        // SAFETY: everything the op points to lives in slot `idx` (stable address, kept until
        // its last event), in the slot's Buf/SharedBuf/Gather/RioBuf (owned by the slot until
        // then), in the pool region or the provided frames (both outlive the driver: field
        // order). An error means nothing of this op reached the kernel.
        let pushed = unsafe { self.driver.push(&submit) };
        if pushed.is_err() && timeout.is_some() {
            self.ops.slot(idx).pending -= 1;
        }
        pushed
    }

    pub(super) fn reap(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        self.driver.reap(&mut events);
        self.unpublished |= !events.is_empty();
        if self.prioritized && events.len() > 1 {
            // Inbound priority: sockets of higher classes first; within a rank, CQE order
            // (so one operation's CQEs never swap). Sorting (rank, index) pairs in place
            // allocates nothing.
            let mut order = std::mem::take(&mut self.cqe_order);
            order.clear();
            order.extend(
                events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (u8::MAX - self.cqe_rank(e.ud), i as u32)),
            );
            order.sort_unstable();
            // Taken out in rank order (each once); the vector keeps its capacity.
            for &(_, i) in &order {
                let ev = std::mem::replace(&mut events[i as usize], Event::of(0, 0));
                self.on_event(ev);
            }
            self.cqe_order = order;
            events.clear();
        } else {
            for ev in events.drain(..) {
                self.on_event(ev);
            }
        }
        self.events = events;
    }

    /// The inbound rank of the socket a CQE belongs to (BestEffort's if none).
    pub(super) fn cqe_rank(&self, ud: u64) -> u8 {
        let (tag, idx, gen) = op::decode(ud);
        let sock = match tag {
            op::TAG_OP | op::TAG_ACCEPT | op::TAG_LINK_TIMEOUT => self.ops.sock_of(idx, gen),
            op::TAG_XSK_POLL => Some(idx),
            _ => None,
        };
        sock.and_then(|s| self.sockets.get(s as usize)?.class)
            .unwrap_or(TrafficType::BestEffort)
            .inbound_rank()
    }

    pub(super) fn on_event(&mut self, ev: Event) {
        let Event {
            ud,
            mut res,
            more,
            notif_copied,
            frame,
            accepted,
        } = ev;
        let (tag, idx, gen) = op::decode(ud);
        match tag {
            op::TAG_WAKE => {
                self.wake_armed = false;
                if res < 0 && res != -libc::ECANCELED {
                    tracing::warn!(res, "wake-up read failed");
                }
                if !self.shared.is_stopping() {
                    if let Err(e) = self.arm_wake() {
                        tracing::error!(error = %e, "re-arming the wake-up read failed");
                    }
                }
                return;
            }
            op::TAG_CANCEL => return,
            // The CQE has woken the shard; the post waits in its command queue.
            op::TAG_DOORBELL => return,
            op::TAG_DOORBELL_SENT => return self.on_doorbell_sent(idx, res),
            op::TAG_XSK_POLL => {
                // The poll only wakes the shard; the rings are read every turn.
                // A poll of a closed socket whose index was reused carries the old generation:
                // it must not clear the new port's flag.
                let (sock_gen, q) = xsk_poll_split(gen);
                if !more {
                    if let Some(e) = self
                        .sockets
                        .get_mut(idx as usize)
                        .filter(|e| e.gen & XSK_POLL_GEN_MASK == sock_gen)
                    {
                        if let Some(p) = e.ep.xdp_mut() {
                            p.set_poll_armed(q, false);
                        }
                    }
                }
                return;
            }
            _ => {}
        }
        // A buffer the kernel picked must go back to us even if the slot were unknown.
        let picked = frame.inspect(|_| self.bufring_frames -= 1);
        let Some(s) = self.ops.get(idx, gen) else {
            let st = &self.shared.stats;
            st.add(&st.counters.stray_cqes, 1);
            debug_assert!(false, "stray CQE {ud:#x} res {res}");
            if let Some(frame) = picked {
                drop(self.pool.adopt(frame, 0, 0));
            }
            return;
        };
        if tag == op::TAG_LINK_TIMEOUT {
            if res == -libc::ETIME {
                s.timed_out = true;
            }
            s.pending -= 1;
            if s.pending == 0 {
                self.finish(idx);
            }
            return;
        }
        if let Some(copied) = notif_copied {
            s.zc_copied = copied;
            s.pending -= 1;
            if s.pending == 0 {
                self.finish(idx);
            }
            return;
        }
        if s.multishot
            && (matches!(
                s.kind,
                OpKind::RecvFrom | OpKind::Recv | OpKind::Accept | OpKind::TxTimestamp
            ))
        {
            self.on_multishot(idx, res, more, picked, accepted);
            return;
        }
        // An overlapped receive waits for data. io_uring ends one with EAGAIN when several
        // single-shot receives on one socket race for a datagram (all woken, one wins; the
        // loser's CQE even carries the provided buffer it had selected): not a result — the
        // frame goes back to the pool and the receive is re-armed, with what is left of its
        // timeout.
        let s = self.ops.slot(idx);
        if res == -libc::EAGAIN
            && matches!(s.kind, OpKind::RecvFrom | OpKind::Recv)
            && !s.multishot
            && !s.cancelled
            && !s.timed_out
        {
            let left = s.timeout.map(|t| t.saturating_sub(s.started.elapsed()));
            if left.is_some_and(|l| l.is_zero()) {
                // Its time ran out before its linked timeout's CQE came (a loaded machine):
                // it ends as what it is, timed out — never "would block".
                s.timed_out = true;
            } else {
                s.timeout = left;
                match self.submit_slot(idx) {
                    Ok(()) => {
                        if let Some(frame) = picked {
                            drop(self.pool.adopt(frame, 0, 0));
                        }
                        let st = &self.shared.stats;
                        st.add(&st.counters.recv_rearmed, 1);
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "re-arming a receive failed");
                        // It ends with the re-arm's error, not the race's EAGAIN.
                        res = -e.raw_os_error().unwrap_or(libc::EIO);
                    }
                }
            }
        }
        // Single-shot (or SEND_ZC's first CQE, whose MORE flag announces the notification).
        let s = self.ops.slot(idx);
        if s.zerocopy && more {
            s.pending += 1;
        }
        if matches!(s.kind, OpKind::Send) && s.rio.is_none() && res > 0 && !s.cancelled {
            let total = s.buf.as_ref().map_or(0, |b| b.len() as u32);
            s.sent += res as u32;
            if s.sent < total && !(s.zerocopy && more) {
                // A short stream send: push the rest, as WSASend completes whole.
                if let Err(e) = self.submit_slot(idx) {
                    tracing::error!(error = %e, "continuing a send failed");
                } else {
                    return;
                }
            }
        }
        // A RIO request on a stream goes on until whole: a short send (the socket buffer was
        // full), or a WAITALL receive not yet full (until EOF, an error, or a cancel).
        let s = self.ops.slot(idx);
        if let Some(r) = s.rio.as_ref() {
            let more_wanted = match r.kind {
                RioKind::Send => r.stream,
                RioKind::Receive => r.waitall,
            };
            if more_wanted && res > 0 && !s.cancelled && !(s.zerocopy && more) {
                let total = r.buf.raw(r.kind).1;
                s.sent = s.sent.saturating_add(res as u32).min(total);
                if s.sent < total {
                    match self.submit_slot(idx) {
                        Ok(()) => return,
                        Err(e) => tracing::error!(error = %e, "continuing a RIO request failed"),
                    }
                }
            }
        }
        let s = self.ops.slot(idx);
        if let Some(frame) = picked {
            // A failed receive's CQE can still carry the frame it had picked: back to the pool.
            let buf = self.pool.adopt(frame, 0, res.max(0) as u32);
            if res >= 0 {
                s.buf = Some(buf);
            }
        }
        if accepted.is_some() {
            s.accepted = accepted;
        }
        // What a request continued in parts did in all (its last part's error, if it
        // failed; EOF under WAITALL reports the bytes that came).
        let parts =
            (s.kind == OpKind::Send && s.rio.is_none()) || s.rio.as_ref().is_some_and(|r| r.stream || r.waitall);
        s.result = Some(if parts && s.sent > 0 && res >= 0 {
            s.sent.max(res.max(0) as u32) as i32
        } else {
            res
        });
        s.pending -= 1;
        if s.pending == 0 {
            self.finish(idx);
        }
    }

    pub(super) fn on_multishot(
        &mut self,
        idx: u32,
        res: i32,
        more: bool,
        picked: Option<u32>,
        accepted: Option<OwnedFd>,
    ) {
        let s = self.ops.slot(idx);
        let (kind, token, sock) = (s.kind, s.token, s.sock);
        if res >= 0 && kind == OpKind::TxTimestamp {
            // One error-queue message per driver op: a stamp becomes a completion (anything
            // else there is skipped), and the read is re-armed.
            let len = s.msg.msg_controllen.min(s.buf.as_ref().map_or(0, |b| b.len()));
            let stamp = s.buf.as_ref().and_then(|b| net::parse_cmsgs(&b[..len]).tx_stamp());
            if let Some((id, ns)) = stamp {
                let mut c = Completion::of(kind, self.key_of(sock), token, Ok(id as usize));
                c.more = true;
                c.timestamp_ns = Some(ns);
                self.deliver_sock(sock, c);
            }
            self.multishot_ended(idx);
            return;
        }
        if res >= 0 {
            let key = self.key_of(sock);
            let mut c = Completion::of(kind, key, token, Ok(res as usize));
            c.more = true;
            match kind {
                OpKind::Accept => {
                    // A multishot accept shares one address buffer among its connections: the
                    // peer is asked of each connection instead (one getpeername).
                    c.peer = accepted.as_ref().and_then(|fd| net::peer_addr(fd.as_raw_fd()).ok());
                    c.accepted = accepted;
                    c.result = Ok(0);
                }
                OpKind::Recv => {
                    // EOF (res 0) selects no buffer: the stream is done and the op ends with
                    // this completion.
                    c.buffer = picked.map(|frame| self.pool.adopt(frame, 0, res as u32));
                    c.more = res > 0;
                }
                _ => {
                    let frame = picked.expect("multishot recvmsg always selects a buffer");
                    let mut buf = self.pool.adopt(frame, 0, res as u32);
                    match net::parse_recvmsg_out(&buf, NAME_LEN, CONTROL_LEN) {
                        Some(out) => {
                            c.peer = out.peer;
                            c.tos = out.tos;
                            c.timestamp_ns = out.rx_ns.or_else(|| {
                                // The kernel refused SO_TIMESTAMPING: the shard's clock now.
                                (self.sockets[sock as usize].desc.stamping == Stamping::Reap)
                                    .then(|| std::num::NonZeroU64::new(clock::realtime_ns()))
                                    .flatten()
                            });
                            if out.truncated {
                                c.result = Err(Error::MessageTooLong);
                                let st = &self.shared.stats;
                                st.add(&st.counters.recv_truncated, 1);
                            } else {
                                c.result = Ok(out.payload.len());
                            }
                            let (off, len) = (out.payload.start as u32, out.payload.len() as u32);
                            buf = self.pool.adopt_window(buf, off, len);
                            c.buffer = Some(buf);
                        }
                        None => {
                            c.result = Err(Error::MessageTooLong);
                            let st = &self.shared.stats;
                            st.add(&st.counters.recv_truncated, 1);
                        }
                    }
                }
            }
            if !c.more {
                // EOF ends the op: its terminal completion is `finish`'s, built once there
                // (the kernel may still post nothing more for this op, or a cancel's CQE).
                let s = self.ops.slot(idx);
                s.pending = 0;
                s.result = Some(0);
                self.finish(idx);
                return;
            }
            let st = &self.shared.stats;
            if kind != OpKind::Accept {
                st.add(&st.counters.receives, 1);
                st.add(&st.counters.recv_bytes, c.result.unwrap_or(0) as u64);
            }
            self.deliver_recv(sock, c);
            if !more {
                self.multishot_ended(idx);
            }
            return;
        }
        debug_assert!(picked.is_none());
        let cancelled = self.ops.slot(idx).cancelled;
        // A cancelled op ends Aborted, whatever stopped it first.
        let res = if cancelled && res == -libc::ENOBUFS {
            -libc::ECANCELED
        } else {
            res
        };
        if res == -libc::ENOBUFS {
            // The buffer ring ran dry: backpressure, not an error. Re-armed by `refill`.
            let st = &self.shared.stats;
            st.add(&st.counters.recv_nobufs, 1);
            self.ops.slot(idx).starved = true;
            self.starved.push(idx);
            return;
        }
        let s = self.ops.slot(idx);
        s.result = Some(res);
        s.pending = 0;
        self.finish(idx);
    }

    /// The kernel ended a multishot op that has not ended for the application (CQ pressure,
    /// or a cancel racing it): a cancelled op ends `Aborted` now (re-arming it would outlive
    /// the cancel, whose own CQE then finds nothing); any other is re-armed.
    pub(super) fn multishot_ended(&mut self, idx: u32) {
        let s = self.ops.slot(idx);
        if s.cancelled || self.sockets[s.sock as usize].closing {
            s.pending = 0;
            s.result = Some(-libc::ECANCELED);
            self.finish(idx);
        } else if let Err(e) = self.submit_slot(idx) {
            tracing::error!(error = %e, "re-arming a multishot op failed");
            self.fail_slot(idx, &e);
        }
    }

    /// Ends slot `idx`, none of whose SQEs is in the kernel, with the error that kept it out.
    pub(super) fn fail_slot(&mut self, idx: u32, e: &io::Error) {
        let s = self.ops.slot(idx);
        s.pending = 0;
        s.result = Some(-e.raw_os_error().unwrap_or(libc::EIO));
        self.finish(idx);
    }

    /// Ends slot `idx`: builds its terminal completion, delivers it, frees the slot.
    pub(super) fn finish(&mut self, idx: u32) {
        let s = self.ops.slot(idx);
        debug_assert_eq!(s.pending, 0);
        let res = s.result.take();
        let kind = s.kind;
        let token = s.token;
        let sock = s.sock;
        let timed_out = s.timed_out;
        let cancelled = s.cancelled;
        let zc_copied = s.zc_copied;
        let zerocopy = s.zerocopy;
        let buf = s.buf.take();
        let mut gather = s.gather.take();
        // A shared send's destination identifies its completion; the frame handle is released.
        let shared_dest = s.shared.take().and_then(|_| net::from_raw(&s.addr, s.addr_len));
        let mut rio = s.rio.take();
        let multishot = s.multishot;
        let readable = s.readable;
        let started = s.started;
        if s.scheduled {
            self.qos.in_flight -= 1;
        }
        let receive = rio
            .as_ref()
            .map_or(kind == OpKind::RecvFrom && !multishot, |r| r.kind == RioKind::Receive);
        // Addresses only on success: a failed op's address fields are stale.
        let ok = res.is_none_or(|r| r >= 0);
        let msg_flags = s.msg.msg_flags;
        let peer = if receive && ok {
            net::from_raw(&s.addr, s.msg.msg_namelen)
        } else {
            None
        };
        // A RIO datagram receive: what RIOReceiveEx reports, and a datagram longer than its
        // segment (MSG_TRUNC) fails as WSAEMSGSIZE instead of passing for whole.
        let mut rio_truncated = false;
        if let Some(r) = rio.as_mut().filter(|r| r.kind == RioKind::Receive && !r.stream) {
            let written = if ok { s.msg.msg_controllen } else { 0 };
            rio_truncated = ok && msg_flags & libc::MSG_TRUNC != 0;
            r.control_truncated = ok && msg_flags & libc::MSG_CTRUNC != 0;
            let found = match r.control.as_deref_mut() {
                Some(c) => {
                    // The rest of the segment zeroed: a walk over all of it stops after the
                    // kernel's messages (C callers see only the RIO_BUF, not the length).
                    let n = written.min(c.capacity());
                    c.set_len(c.capacity());
                    c[n..].fill(0);
                    c.set_len(n);
                    net::parse_cmsgs(c).local
                }
                None if r.want_local => {
                    let mut room = [0u8; size_of::<net::ControlRoom>()];
                    for (d, w) in room.chunks_exact_mut(8).zip(&s.control) {
                        d.copy_from_slice(&w.to_ne_bytes());
                    }
                    net::parse_cmsgs(&room[..written.min(room.len())]).local
                }
                None => None,
            };
            r.ip = found.filter(|_| r.want_local);
        }
        let accepted_peer = (kind == OpKind::Accept && !multishot && ok)
            .then(|| net::from_raw(&s.addr, s.addr_len))
            .flatten();
        let accepted = s.accepted.take();
        let lane = s.lane.take();
        self.ops.release(idx);
        let result = match res {
            None => Ok(0),
            // A zero-byte receive: the socket is readable; nothing was taken.
            Some(r) if r >= 0 && readable => Ok(0),
            Some(r) if r >= 0 => Ok(r as usize),
            Some(r) if timed_out && (r == -libc::ECANCELED || r == -libc::EAGAIN) => Err(Error::TimedOut),
            // A receive that lost a race for a datagram (EAGAIN, see `on_cqe`) while being
            // cancelled ends as what it is: aborted, not "would block".
            Some(r) if cancelled && r == -libc::EAGAIN => Err(Error::Aborted),
            Some(r) => Err(Error::from_errno(-r)),
        };
        // A scatter receive: each frame's length is what landed in it; a datagram longer
        // than all of them together fails as WSAEMSGSIZE.
        let mut scattered_truncated = false;
        if let Some(g) = gather
            .as_mut()
            .filter(|_| matches!(kind, OpKind::RecvFrom | OpKind::Recv))
        {
            g.received(*result.as_ref().unwrap_or(&0));
            scattered_truncated = kind == OpKind::RecvFrom && ok && msg_flags & libc::MSG_TRUNC != 0;
        }
        let result = if rio_truncated || scattered_truncated {
            let st = &self.shared.stats;
            st.add(&st.counters.recv_truncated, 1);
            Err(Error::MessageTooLong)
        } else {
            result
        };
        let st = &self.shared.stats;
        st.add(&st.counters.ops_completed, 1);
        if !multishot {
            let _ = self.hist.record(started.elapsed().as_nanos().max(1) as u64);
        }
        if let Ok(n) = result {
            match kind {
                OpKind::Send | OpKind::SendTo => {
                    st.add(&st.counters.sends, 1);
                    st.add(&st.counters.send_bytes, n as u64);
                    if zerocopy {
                        st.add(
                            if zc_copied {
                                &st.counters.zc_copied
                            } else {
                                &st.counters.zc_sends
                            },
                            1,
                        );
                    }
                }
                OpKind::Recv | OpKind::RecvFrom if !multishot => {
                    st.add(&st.counters.receives, 1);
                    st.add(&st.counters.recv_bytes, n as u64);
                }
                _ => {}
            }
        }
        self.rio_live -= u32::from(rio.is_some());
        let entry = &mut self.sockets[sock as usize];
        entry.live_ops -= 1;
        if let Some(mut r) = rio {
            r.zc = zerocopy.then_some(!zc_copied);
            r.complete(token, result, peer);
        } else {
            let key = entry.delivery.as_ref().expect("open socket").key();
            let mut c = Completion::of(kind, key, token, result);
            c.buffer = buf;
            c.gather = gather;
            c.peer = peer.or(accepted_peer).or(shared_dest);
            c.zc_copied = zc_copied;
            if kind == OpKind::Accept && !multishot && c.result.is_ok() {
                c.accepted = accepted;
                c.result = Ok(0);
            }
            self.deliver_sock(sock, c);
        }
        if let Some(lane) = lane {
            self.next_in_lane(sock, lane);
        }
        self.maybe_close(sock);
    }
}
