//! AF_XDP ports on a shard: their rings turned every turn, watched through the driver before
//! a sleep, their sends, cancels and closes, and the quarantine of zero-copy frames.

/// How often a shard probes the queues of closed zero-copy sockets.
use std::time::{Duration, Instant};

use super::{Core, Endpoint};
use crate::completion::{Completion, OpKind};
use crate::driver::Driver;
use crate::error::Error;
use crate::op::{self, Request};
use crate::proto::Delivery;

pub(super) const QUARANTINE_PROBE: Duration = Duration::from_millis(20);

/// How long a shard waits for the kernel to release such a queue before giving up on the
/// frames (they are then never lent out again).
pub(super) const QUARANTINE_MAX: Duration = Duration::from_secs(10);

/// The generation field of an AF_XDP poll's user_data: the socket's generation (low 24
/// bits) above the queue index (8 bits; a port has at most 64 queues).
pub(super) const XSK_POLL_GEN_MASK: u32 = (1 << 24) - 1;

pub(super) fn xsk_poll_gen(sock_gen: u32, queue: u32) -> u32 {
    debug_assert!(queue < 256);
    ((sock_gen & XSK_POLL_GEN_MASK) << 8) | (queue & 0xff)
}

pub(super) fn xsk_poll_split(gen: u32) -> (u32, u32) {
    (gen >> 8, gen & 0xff)
}

impl<D: Driver> Core<D> {
    /// Turns every AF_XDP port: FILL top-up, RX, COMPLETION, and the wake-up poll. True if
    /// anything was received or completed: the turn must then deliver before it may sleep.
    pub(super) fn xdp_turn(&mut self) -> bool {
        let mut busy = false;
        for i in 0..self.xdp_socks.len() {
            let sock = self.xdp_socks[i];
            let Some(mut port) = self.sockets[sock as usize].ep.take_xdp() else {
                continue;
            };
            let key = self.key_of(sock);
            port.refill(&self.pool);
            let mut out = std::mem::take(&mut self.local_scratch);
            let rx = port.receive(&self.pool, &self.shared.stats, key, &mut |c| out.push(c));
            let tx = port.complete_sends(&self.pool, &self.shared.stats, key, &mut |c| out.push(c));
            busy |= rx > 0 || tx > 0;
            #[cfg(debug_assertions)]
            if self.last_merge.elapsed() >= self.stats_period {
                port.check_conservation();
            }
            self.sockets[sock as usize].ep = Endpoint::Xdp(port);
            for c in out.drain(..) {
                self.deliver_recv(sock, c);
            }
            self.local_scratch = out;
        }
        busy
    }

    /// Returns quarantined frames whose queues the kernel has released (probed every
    /// QUARANTINE_PROBE); gives up, leaking them, after QUARANTINE_MAX.
    pub(super) fn release_quarantine(&mut self) {
        if self.quarantine.is_empty() || Instant::now() < self.quarantine_probe {
            return;
        }
        let now = Instant::now();
        self.quarantine_probe = now + QUARANTINE_PROBE;
        let st = &self.shared.stats;
        let mut i = 0;
        while i < self.quarantine.len() {
            let (q, give_up) = &self.quarantine[i];
            if q.released() {
                st.add(&st.counters.xdp_frames_released, q.frames.len() as u64);
                for &f in &q.frames {
                    drop(self.pool.adopt(f, 0, 0));
                }
            } else if now >= *give_up {
                tracing::error!(
                    frames = q.frames.len(),
                    queues = ?q.queues,
                    "an AF_XDP queue stayed busy after its zero-copy socket closed: its frames stay out of the pool"
                );
                st.add(&st.counters.xdp_frames_leaked, q.frames.len() as u64);
            } else {
                i += 1;
                continue;
            }
            self.quarantine.swap_remove(i);
        }
    }

    /// Before sleeping: a one-shot POLLIN on every AF_XDP queue, so a frame arriving while
    /// the shard sleeps wakes it (it fires at once if frames are already waiting). A shard
    /// that never sleeps (polling mode) arms none: its rings are read every turn, and a
    /// poll would only cost an io_uring_enter per batch to run its task work.
    pub(super) fn arm_xdp_polls(&mut self) {
        for i in 0..self.xdp_socks.len() {
            let sock = self.xdp_socks[i];
            let sock_gen = self.sockets[sock as usize].gen;
            let Some(port) = self.sockets[sock as usize].ep.xdp_mut() else {
                continue;
            };
            if port.holding_until().is_some() {
                // Frames wait for a coalesced batch: the sleep is timed to the hold instead.
                continue;
            }
            for q in 0..port.queue_count() {
                let Some(fd) = port.unarmed_fd(q) else { continue };
                // user_data carries the socket and, in the generation field, the socket's
                // generation and the queue index.
                let ud = op::user_data(op::TAG_XSK_POLL, sock, xsk_poll_gen(sock_gen, q));
                match self.driver.watch(fd, ud) {
                    Ok(()) => port.set_poll_armed(q, true),
                    Err(err) => tracing::error!(error = %err, "arming the AF_XDP poll failed"),
                }
            }
        }
    }

    /// Some AF_XDP queue has received frames not yet read.
    pub(super) fn xdp_rx_ready(&mut self) -> bool {
        let socks = &self.xdp_socks;
        let sockets = &mut self.sockets;
        socks
            .iter()
            .any(|&s| sockets[s as usize].ep.xdp_mut().is_some_and(|p| p.rx_ready()))
    }

    pub(super) fn start_xdp_op(&mut self, sock: u32, token: u64, req: Request) {
        let key = self.key_of(sock);
        let kind = req.kind();
        let port = self.sockets[sock as usize].ep.xdp_mut().expect("checked by the caller");
        let refused = match req {
            Request::RecvFrom { multishot: true, .. } if port.recv_token.is_none() => {
                port.recv_token = Some(token);
                return;
            }
            // A frame of another pool is not in this UMEM.
            Request::SendTo { buf, .. } if !self.pool.same(&buf) => (Error::InvalidArgument, Some(buf)),
            Request::SendTo { buf, addr, tos, .. } => match port.send(&self.shared.stats, buf, addr, token, tos) {
                Ok(()) => return,
                Err((e, buf)) => (e, Some(buf)),
            },
            Request::SendToMany { buf, dests } => {
                // Each destination needs its own headers. Multi-buffer socket: a header frame
                // each, and the one payload frame read by every send. Otherwise: one frame
                // and one payload copy each (counted).
                let st = &self.shared.stats;
                let split = port.multi_buffer() && self.pool.same_shared(&buf);
                for &addr in dests.iter() {
                    let outcome = if split {
                        self.pool.alloc().and_then(|hdr| {
                            port.send_split(st, hdr, &buf, addr, token)?;
                            st.add(&st.counters.xdp_send_multi_buffer, 1);
                            Ok(())
                        })
                    } else {
                        self.pool
                            .alloc_with_headroom(crate::wire::udp_headers_len(&addr.ip()))
                            .map(|mut b| {
                                b.set_len(buf.len());
                                b.copy_from_slice(&buf);
                                b
                            })
                            .and_then(|b| {
                                st.add(&st.counters.xdp_send_copies, 1);
                                port.send(st, b, addr, token, None).map_err(|(e, _)| e)
                            })
                    };
                    if let Err(e) = outcome {
                        let mut c = Completion::of(kind, key, token, Err(e));
                        c.peer = Some(addr);
                        self.local_scratch.push(c);
                    }
                }
                let mut out = std::mem::take(&mut self.local_scratch);
                for c in out.drain(..) {
                    self.deliver_sock(sock, c);
                }
                self.local_scratch = out;
                return;
            }
            // One multishot receive per port; single receives and streams are not AF_XDP's.
            other => (Error::InvalidArgument, other.into_bufs().0),
        };
        let mut c = Completion::of(kind, key, token, Err(refused.0));
        c.buffer = refused.1;
        self.deliver_sock(sock, c);
    }

    /// Ends the armed receive (if `token` matches or is `None`) with `Aborted`.
    pub(super) fn cancel_xdp_recv(&mut self, sock: u32, token: Option<u64>) {
        let key = self.key_of(sock);
        let Some(port) = self.sockets[sock as usize].ep.xdp_mut() else {
            return;
        };
        if let Some(t) = port.recv_token.filter(|t| token.is_none_or(|want| want == *t)) {
            port.recv_token = None;
            self.deliver_sock(sock, Completion::of(OpKind::RecvFrom, key, t, Err(Error::Aborted)));
        }
    }

    pub(super) fn close_xdp(&mut self, sock: u32) {
        self.qos_purge(sock, None);
        self.cancel_xdp_recv(sock, None);
        let e = &mut self.sockets[sock as usize];
        e.fanout = None;
        let (Some(port), Some(delivery)) = (e.ep.take_xdp(), e.delivery.take()) else {
            return;
        };
        for q in (0..port.queue_count()).filter(|&q| port.poll_armed(q)) {
            let target = op::user_data(op::TAG_XSK_POLL, sock, xsk_poll_gen(e.gen, q));
            if let Err(err) = self.driver.unwatch(target) {
                tracing::error!(error = %err, "removing the AF_XDP poll failed");
            }
        }
        let mut out = std::mem::take(&mut self.local_scratch);
        let hold = port.hold_on_close;
        if let Some(q) = port.close(&self.pool, delivery.key(), hold, &mut |c| out.push(c)) {
            let st = &self.shared.stats;
            st.add(&st.counters.xdp_frames_quarantined, q.frames.len() as u64);
            let now = Instant::now();
            self.quarantine.push((q, now + QUARANTINE_MAX));
            // The release is deferred work: the first probe comes a period later.
            self.quarantine_probe = now + QUARANTINE_PROBE;
        }
        for c in out.drain(..) {
            self.deliver_to(&delivery, c);
        }
        self.local_scratch = out;
        self.xdp_socks.retain(|&s| s != sock);
        if let Delivery::Port { port, .. } = &delivery {
            self.backlogs.detach(port);
        }
        if let Some(f) = self.sockets[sock as usize].flow.take() {
            self.flow_maybe_free(f);
        }
        self.shared.free_socket_id(sock);
    }
}
