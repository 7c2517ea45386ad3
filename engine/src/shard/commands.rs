//! The application ⇄ shard protocol, shard side: commands taken from the queue each turn
//! (open, ops, cancels, closes, QoS and fan-out settings), stale ones refused by generation.

use std::os::fd::AsRawFd;

use super::{Core, Endpoint, SockDesc, SockEntry, COMMANDS_PER_TURN};
use crate::completion::Completion;
use crate::driver::Driver;
use crate::error::Error;
use crate::op::Request;
use crate::proto::{Command, Delivery, SockId};
use crate::qos::{TokenBucket, TrafficType};
use crate::telemetry::SocketKind;
use crate::xdp::program::Stamping;

impl<D: Driver> Core<D> {
    pub(super) fn take_commands(&mut self) -> usize {
        while let Some(slot) = self.shared.rio_slots.take() {
            if let Err(e) = self.driver.unregister_buffer(slot) {
                tracing::warn!(slot, error = %e, "clearing a RIO fixed-buffer slot failed");
            }
            self.rio_slots.push(slot);
        }
        let mut n = 0;
        while n < COMMANDS_PER_TURN {
            let Some(cmd) = self.shared.commands.pop() else { break };
            n += 1;
            if let Some(id) = cmd.sock() {
                if !self.is_current(id, &cmd) {
                    self.refuse_stale(cmd);
                    continue;
                }
            }
            match cmd {
                Command::Open {
                    sock: SockId { index: sock, gen },
                    fd,
                    delivery,
                    reap_stamps,
                } => {
                    let fixed = self.driver.open(sock, fd.as_raw_fd());
                    if self.driver.fixed_files() && !fixed {
                        let st = &self.shared.stats;
                        st.add(&st.counters.sockets_by_fd, 1);
                    }
                    let e = &mut self.sockets[sock as usize];
                    debug_assert!(matches!(e.ep, Endpoint::Closed) && e.live_ops == 0);
                    if let Delivery::Port { port, .. } = &delivery {
                        self.backlogs.attach(port);
                    }
                    let mut desc = SockDesc::of_fd(fd.as_raw_fd(), self.head.transport);
                    if reap_stamps {
                        desc.stamping = Stamping::Reap;
                    }
                    *e = SockEntry::open(gen, Endpoint::Kernel { fd, fixed }, Some(delivery), desc);
                }
                Command::OpenXdp {
                    sock: SockId { index: sock, gen },
                    port,
                    delivery,
                } => {
                    let e = &mut self.sockets[sock as usize];
                    debug_assert!(matches!(e.ep, Endpoint::Closed));
                    if let Delivery::Port { port, .. } = &delivery {
                        self.backlogs.attach(port);
                    }
                    let desc = SockDesc {
                        kind: SocketKind::XdpUdp,
                        transport: port.transport(),
                        local: Some(port.local),
                        peer: None,
                        stamping: port.timestamps,
                    };
                    *e = SockEntry::open(gen, Endpoint::Xdp(port), Some(delivery), desc);
                    self.xdp_socks.push(sock);
                }
                Command::SetDelivery {
                    sock: SockId { index: sock, .. },
                    delivery,
                } => {
                    if let Delivery::Port { port, .. } = &delivery {
                        self.backlogs.attach(port);
                    }
                    if let Some(Delivery::Port { port, .. }) = self.sockets[sock as usize].delivery.replace(delivery) {
                        self.backlogs.detach(&port);
                    }
                }
                Command::Post { key, token, bytes } => {
                    self.local.push_back(Completion::new(key, token, Ok(bytes)));
                }
                Command::FlowCreate { id, flow } => self.qos.flows[usize::from(id)] = Some(*flow),
                Command::LinkRate { rate_bps, burst_bytes } => {
                    let now = self.now_ns();
                    self.qos.link = rate_bps.map(|r| TokenBucket::new(r, burst_bytes, now));
                }
                Command::SetSocketFlow {
                    sock: SockId { index: sock, .. },
                    flow,
                } => {
                    let old = std::mem::replace(&mut self.sockets[sock as usize].flow, flow);
                    if let Some(old) = old.filter(|&o| Some(o) != flow) {
                        self.flow_maybe_free(old);
                    }
                }
                Command::FlowRelease { id } => {
                    self.qos.released[usize::from(id)] = true;
                    self.flow_maybe_free(id);
                }
                Command::FlowSetRate { id, rate_bps } => {
                    let now = self.now_ns();
                    if let Some(f) = self.qos.flows[usize::from(id)].as_mut() {
                        f.set_rate(rate_bps, now);
                    }
                }
                Command::SetClass {
                    sock: SockId { index: sock, .. },
                    traffic,
                    tos,
                    tos_cmsg,
                } => {
                    let e = &mut self.sockets[sock as usize];
                    e.class = Some(traffic);
                    e.tos_cmsg = tos_cmsg.then_some(tos);
                    if let Some(p) = e.ep.xdp_mut() {
                        p.tos = tos;
                    }
                    self.prioritized |= traffic != TrafficType::BestEffort;
                    // AF_XDP ports are turned in inbound-priority order.
                    let sockets = &self.sockets;
                    self.xdp_socks.sort_by_key(|&s| {
                        std::cmp::Reverse(sockets[s as usize].class.map_or(1, TrafficType::inbound_rank))
                    });
                }
                Command::Neighbor {
                    sock: SockId { index: sock, .. },
                    ip,
                    mac,
                } => {
                    if let Some(p) = self.sockets[sock as usize].ep.xdp_mut() {
                        if !p.add_neighbor(ip, mac) {
                            tracing::warn!(sock, %ip, "neighbour table full of static entries; entry not added");
                        }
                    }
                }
                Command::XdpGroup {
                    sock: SockId { index: sock, .. },
                    group,
                    source,
                    join,
                } => {
                    if let Some(p) = self.sockets[sock as usize].ep.xdp_mut() {
                        let fits = p.set_group(group, source, join);
                        debug_assert!(fits, "XdpUdpSocket::join bounds the table");
                    }
                }
                Command::XdpBlock {
                    sock: SockId { index: sock, .. },
                    group,
                    source,
                    block,
                } => {
                    if let Some(p) = self.sockets[sock as usize].ep.xdp_mut() {
                        let fits = p.set_block(group, source, block);
                        debug_assert!(fits, "XdpUdpSocket::block_source bounds the table");
                    }
                }
                Command::Op {
                    sock: SockId { index: sock, .. },
                    token,
                    req,
                } => self.start_op(sock, token, req),
                Command::Cancel {
                    sock: SockId { index: sock, .. },
                    token,
                } => {
                    self.qos_purge(sock, token);
                    if self.sockets[sock as usize].ep.is_xdp() {
                        self.cancel_xdp_recv(sock, token);
                    } else {
                        self.cancel_where(|s| s.sock == sock && token.is_none_or(|t| s.token == t));
                    }
                }
                Command::Close {
                    sock: SockId { index: sock, .. },
                } if self.sockets[sock as usize].ep.is_xdp() => self.close_xdp(sock),
                Command::Close {
                    sock: SockId { index: sock, .. },
                } => {
                    self.sockets[sock as usize].closing = true;
                    self.sockets[sock as usize].fanout = None;
                    self.qos_purge(sock, None);
                    self.cancel_where(|s| s.sock == sock);
                    self.maybe_close(sock);
                }
                Command::FanOut {
                    sock: SockId { index: sock, .. },
                    group,
                } => self.sockets[sock as usize].fanout = Some(group),
                Command::Subscribe {
                    sock: SockId { index: sock, .. },
                    sub,
                } => {
                    if let Some(g) = self.sockets[sock as usize].fanout.as_mut() {
                        g.add(sub);
                    }
                }
                Command::Unsubscribe {
                    sock: SockId { index: sock, .. },
                    sub,
                } => {
                    if let Some(g) = self.sockets[sock as usize].fanout.as_mut() {
                        g.remove(&sub);
                    }
                }
            }
        }
        n
    }

    /// `id` names the socket that holds its index now (an Open names a free index).
    pub(super) fn is_current(&self, id: SockId, cmd: &Command) -> bool {
        let Some(e) = self.sockets.get(id.index as usize) else {
            return false;
        };
        match cmd {
            Command::Open { .. } | Command::OpenXdp { .. } => e.delivery.is_none(),
            _ => e.gen == id.gen && e.delivery.is_some() && !e.closing,
        }
    }

    /// A command from a handle whose socket is closed: an operation ends `NotSocket` where
    /// it has somewhere to complete (a RIO request's queue); anything else is dropped, its
    /// buffers returning to the pool.
    pub(super) fn refuse_stale(&mut self, cmd: Command) {
        let st = &self.shared.stats;
        st.add(&st.counters.stale_commands, 1);
        if let Command::Op {
            token,
            req: Request::Rio(r),
            ..
        } = cmd
        {
            r.complete(token, Err(Error::NotSocket), None);
        }
    }
}
