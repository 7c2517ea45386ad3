//! The QoS send path of a shard: flows shape, the scheduler orders, held sends are released
//! when they conform, at most `SENDS_IN_FLIGHT_MAX` scheduled sends are in the kernel.

/// A send waiting for its turn.
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use super::Core;
use crate::driver::Driver;
use crate::error::Error;
use crate::op::Request;
use crate::proto::FLOWS_MAX;
use crate::qos::{Admission, Flow, Scheduler, TokenBucket, TrafficType};

#[derive(Debug)]
pub(super) struct Deferred {
    pub(super) sock: u32,
    pub(super) token: u64,
    pub(super) req: Request,
    pub(super) len: u32,
}

/// Flows, the send scheduler, and sends held by shaping.
pub(super) struct QosState {
    pub(super) flows: Box<[Option<Flow>]>,
    /// Flows whose last handle dropped: freed once no socket and no held send is in them.
    pub(super) released: Box<[bool]>,
    pub(super) sched: Scheduler<Deferred>,
    /// (ready at ns, flow, send): held by ShapeOnly/ShapeAndMark until they conform.
    pub(super) held: VecDeque<(u64, u16, Deferred)>,
    /// Scheduled sends in the kernel now; at most SENDS_IN_FLIGHT_MAX, so the scheduler
    /// (not the kernel's FIFO) decides what goes next.
    pub(super) in_flight: u32,
    /// The egress link rate, if set: scheduled sends leave no faster (the bottleneck the
    /// scheduler orders traffic for, like a qdisc under a rate limit).
    pub(super) link: Option<TokenBucket>,
    /// The packet the link is busy with: chosen by the scheduler, waiting for link tokens
    /// (a frame on the wire is not pre-empted).
    pub(super) staged: Option<Deferred>,
}

/// Scheduled sends a shard keeps in the kernel at once.
pub(super) const SENDS_IN_FLIGHT_MAX: u32 = 16;

/// Packets per class queue and held packets per shard.
pub(super) const QOS_QUEUE_MAX: usize = 1024;

impl<D: Driver> Core<D> {
    /// A send on a flow: shaping decides now, later, or marked; then its class queue.
    pub(super) fn qos_admit(&mut self, flow: u16, d: Deferred) {
        let now = self.now_ns();
        let Some(f) = self.qos.flows[usize::from(flow)].as_mut() else {
            // A socket's flow always exists (created before it is set).
            return self.start_op_now(d.sock, d.token, d.req, false);
        };
        let decision = f.admit(d.len, now);
        self.qos_place(flow, decision, d);
    }

    pub(super) fn qos_place(&mut self, flow: u16, decision: Admission, d: Deferred) {
        self.qos_place_inner(flow, decision, d);
        if let Some(f) = self.qos.flows[usize::from(flow)].as_ref() {
            let c = &f.counters;
            let out = &self.shared.flow_counters[usize::from(flow)];
            for (a, v) in out
                .iter()
                .zip([c.sent, c.sent_bytes, c.delayed, c.non_conformant, c.dropped])
            {
                a.store(v, Ordering::Relaxed);
            }
        }
    }

    /// Frees flow `id` for reuse if its last handle has dropped and nothing is left in it:
    /// no socket on it (a closed one leaves its flow) and no send held by it (the scheduler's
    /// queues know no flow).
    pub(super) fn flow_maybe_free(&mut self, id: u16) {
        let i = usize::from(id);
        let in_use = self.sockets.iter().any(|e| e.flow == Some(id)) || self.qos.held.iter().any(|&(_, f, _)| f == id);
        if !self.qos.released[i] || in_use {
            return;
        }
        self.qos.released[i] = false;
        self.qos.flows[i] = None;
        for c in &self.shared.flow_counters[i] {
            c.store(0, Ordering::Relaxed);
        }
        // Sized to every flow: the id was handed out once, so it fits.
        let _ = self.shared.free_flows.push(id);
    }

    pub(super) fn qos_place_inner(&mut self, flow: u16, decision: Admission, mut d: Deferred) {
        let Some(f) = self.qos.flows[usize::from(flow)].as_mut() else {
            return;
        };
        let class = match decision {
            Admission::Send { .. } => f.traffic,
            Admission::SendNonConformant => {
                // QOSUseNonConformantMarkings: the excess goes out as best effort, marked so.
                // Datagrams only: a stream has no per-segment marking.
                if let Request::SendTo { tos, .. }
                | Request::SendShared { tos, .. }
                | Request::SendGather { addr: Some(_), tos, .. } = &mut d.req
                {
                    *tos = Some(TrafficType::BestEffort.tos());
                }
                TrafficType::BestEffort
            }
            Admission::HoldUntil(t) => {
                if self.qos.held.len() < QOS_QUEUE_MAX {
                    self.qos.held.push_back((t, flow, d));
                } else {
                    f.counters.dropped += 1;
                    self.qos_refuse(d);
                }
                return;
            }
        };
        if let Err(d) = self.qos.sched.enqueue(class, d.len, d) {
            f.counters.dropped += 1;
            let i = class as usize;
            self.shared.class_drops[i].store(self.qos.sched.drops[i], Ordering::Relaxed);
            self.qos_refuse(d);
        }
    }

    /// A send the QoS queues had no room for completes `NoBuffers` with its buffer.
    pub(super) fn qos_refuse(&mut self, d: Deferred) {
        if self.sockets[d.sock as usize].delivery.is_some() {
            self.reject(d.sock, d.req.kind(), d.token, d.req, Error::NoBuffers);
        }
    }

    /// Sends of `sock` (all of them, or the one with `token`) still waiting in the QoS
    /// queues — held by shaping, queued in the scheduler, or staged for the link — end
    /// `Aborted`: a closing socket's id may be reused at once, so none may start later, and
    /// a cancel must reach every place an op can wait.
    pub(super) fn qos_purge(&mut self, sock: u32, token: Option<u64>) {
        if self.sockets[sock as usize].delivery.is_none() {
            return;
        }
        let hit = |d: &Deferred| d.sock == sock && token.is_none_or(|t| t == d.token);
        let mut gone = std::mem::take(&mut self.qos_scratch);
        self.qos.sched.remove_where(hit, |d| gone.push(d));
        if self.qos.staged.as_ref().is_some_and(hit) {
            gone.extend(self.qos.staged.take());
        }
        let mut i = 0;
        // The flows the removed held sends were in (a bit each: FLOWS_MAX is 64).
        let mut held_by = 0u64;
        while i < self.qos.held.len() {
            if hit(&self.qos.held[i].2) {
                let (_, flow, d) = self.qos.held.remove(i).expect("index in range");
                held_by |= 1 << flow;
                gone.push(d);
            } else {
                i += 1;
            }
        }
        for d in gone.drain(..) {
            self.reject(sock, d.req.kind(), d.token, d.req, Error::Aborted);
        }
        self.qos_scratch = gone;
        for f in (0..FLOWS_MAX as u16).filter(|&f| held_by & (1 << f) != 0) {
            if self.qos.released[usize::from(f)] {
                self.flow_maybe_free(f);
            }
        }
    }

    /// Every socket's sends still in the QoS queues end `Aborted` (shutdown).
    pub(super) fn qos_purge_all(&mut self) {
        for sock in 0..self.sockets.len() as u32 {
            if self.sockets[sock as usize].delivery.is_some() {
                self.qos_purge(sock, None);
            }
        }
    }

    /// Releases held sends that now conform and starts scheduled sends up to the budget.
    /// Returns when the next held send is due, if any.
    pub(super) fn qos_pump(&mut self) -> Option<u64> {
        if self.qos.held.is_empty() && self.qos.staged.is_none() && self.qos.sched.is_empty() {
            // Nothing waits: no clock read (this runs every turn).
            return None;
        }
        let now = self.now_ns();
        let mut i = 0;
        while i < self.qos.held.len() {
            if self.qos.held[i].0 > now {
                i += 1;
                continue;
            }
            let (_, flow, d) = self.qos.held.remove(i).expect("index in range");
            let decision = match self.qos.flows[usize::from(flow)].as_mut() {
                Some(f) => f.readmit(d.len, now),
                None => Admission::SendNonConformant,
            };
            if let Admission::HoldUntil(t) = decision {
                self.qos.held.insert(i, (t, flow, d));
                i += 1;
            } else {
                self.qos_place(flow, decision, d);
                if self.qos.released[usize::from(flow)] {
                    self.flow_maybe_free(flow);
                }
            }
        }
        let mut link_due = None;
        while self.qos.in_flight < SENDS_IN_FLIGHT_MAX {
            let d = match self.qos.staged.take() {
                Some(d) => d,
                None => match self.qos.sched.dequeue() {
                    Some((_, d)) => d,
                    None => break,
                },
            };
            if let Some(link) = self.qos.link.as_mut() {
                let at = link.ready_at(d.len, now);
                if at > now {
                    self.qos.staged = Some(d);
                    link_due = Some(at);
                    break;
                }
                let took = link.try_take(d.len, now);
                debug_assert!(took, "ready_at said it conforms");
            }
            self.qos.in_flight += 1;
            self.start_op_now(d.sock, d.token, d.req, true);
        }
        self.qos.held.iter().map(|h| h.0).chain(link_due).min()
    }
}
