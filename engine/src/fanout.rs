//! Multicast fan-out: a datagram is received once, into one registered frame, and handed to
//! N subscribers as N read-only handles of that frame ([`SharedBuf`]); the frame returns to
//! the pool when the last subscriber drops its handle. No per-subscriber copy, no allocation.
//!
//! ```text
//!  socket (io_uring multishot recv or AF_XDP) ──► shard: GroupState::publish
//!        one frame, refs = N (one atomic add)        │  for each subscription, in order:
//!                                                    ├─► queue 0 (bounded) ─► consumer 0
//!                                                    ├─► queue 1           ─► consumer 1
//!                                                    └─► ...
//! ```
//!
//! Each subscription has a bounded queue and a policy chosen when it subscribes:
//! - [`Policy::Lossy`]: a full queue drops the datagram for that subscriber only (counted);
//!   the others are not slowed.
//! - [`Policy::Reliable`]: a full queue stalls the whole group: the datagram and every later
//!   one wait in the shard (in order, bounded by the pool: each holds a frame) until the
//!   subscriber makes room. Upstream this is backpressure: the pool and buffer ring drain,
//!   the receive pauses (`recv_nobufs`), and then the kernel socket buffer fills.
//!
//! Consumers dequeue from any thread ([`Subscription::try_recv`], `recv_batch`), and may ask
//! for a notification when their queue holds datagrams (RIONotify style: an event or a
//! completion-port post, [`Subscription::notify`]).
//!
//! The shard publishes from its own thread, the only producer of every queue, so each
//! subscriber sees the datagrams in the order the socket received them, each exactly once.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::completion::OpKind;
use crate::error::SetupError;
use crate::pool::{Buf, SharedBuf};
use crate::rio::{Notifier, RioNotify};
use crate::shard::{Command, ShardShared};

/// Subscriptions per group.
pub const SUBSCRIBERS_MAX: usize = 1024;
/// Largest subscription queue.
pub const SUBSCRIPTION_DEPTH_MAX: usize = 1 << 16;

/// What a full subscription queue does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Backpressure the group until this subscriber makes room.
    Reliable,
    /// Drop for this subscriber only, and count it.
    Lossy,
}

/// One delivered datagram: a shared handle of the frame it was received into.
#[derive(Debug)]
pub struct Datagram {
    pub buf: SharedBuf,
    pub peer: Option<SocketAddr>,
    /// The TOS / traffic-class byte, when the socket reports it.
    pub tos: Option<u8>,
}

/// A subscription's counters (delivered and dropped as last written by the shard).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriberCounters {
    /// Datagrams put in this subscriber's queue.
    pub delivered: u64,
    /// Datagrams dropped for this subscriber (lossy, queue full).
    pub dropped: u64,
    /// Datagrams waiting in the queue now.
    pub depth: usize,
}

/// A group's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupCounters {
    /// Datagrams received for the group.
    pub received: u64,
    /// Times a reliable subscriber's full queue stalled the group.
    pub stalls: u64,
    /// Subscriptions now.
    pub subscribers: u64,
}

#[derive(Debug)]
pub(crate) struct GroupShared {
    shard: Arc<ShardShared>,
    sock: u32,
    /// Some datagram waits for a reliable subscriber: consumers wake the shard on dequeue.
    stalled: AtomicBool,
    received: AtomicU64,
    stalls: AtomicU64,
    subscribers: AtomicU64,
}

pub(crate) struct SubShared {
    queue: ArrayQueue<Datagram>,
    policy: Policy,
    notifier: Notifier,
    delivered: AtomicU64,
    dropped: AtomicU64,
    closed: AtomicBool,
    group: Arc<GroupShared>,
}

impl fmt::Debug for SubShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubShared")
            .field("policy", &self.policy)
            .field("depth", &self.queue.len())
            .finish()
    }
}

/// Single-writer counter bump (the shard is the only writer): no locked instruction.
fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// A socket's fan-out: subscribe consumers here. Made by `UdpSocket::fan_out` or
/// `XdpUdpSocket::fan_out`. Dropping it stops nothing; closing the socket ends the group.
#[derive(Clone, Debug)]
pub struct FanOut {
    shared: Arc<GroupShared>,
}

impl FanOut {
    pub(crate) fn new(shard: Arc<ShardShared>, sock: u32) -> FanOut {
        FanOut {
            shared: Arc::new(GroupShared {
                shard,
                sock,
                stalled: AtomicBool::new(false),
                received: AtomicU64::new(0),
                stalls: AtomicU64::new(0),
                subscribers: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn state(&self, pending_max: usize) -> Box<GroupState> {
        Box::new(GroupState {
            shared: self.shared.clone(),
            subs: Vec::with_capacity(SUBSCRIBERS_MAX.min(64)),
            pending: VecDeque::with_capacity(pending_max),
        })
    }

    /// A new subscription with a queue of `depth` datagrams. It receives what the socket
    /// receives from the moment the shard takes the request (a few µs), in order.
    pub fn subscribe(&self, policy: Policy, depth: usize, notify: RioNotify) -> Result<Subscription, SetupError> {
        if depth == 0 || depth > SUBSCRIPTION_DEPTH_MAX {
            return Err(SetupError::Config(format!(
                "subscription depth {depth} outside 1..={SUBSCRIPTION_DEPTH_MAX}"
            )));
        }
        let n = self.shared.subscribers.load(Ordering::Relaxed);
        if n as usize >= SUBSCRIBERS_MAX {
            return Err(SetupError::Limit("subscriptions per group"));
        }
        let sub = Arc::new(SubShared {
            queue: ArrayQueue::new(depth),
            policy,
            notifier: Notifier::new(notify, OpKind::FanoutNotify),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            group: self.shared.clone(),
        });
        self.shared
            .shard
            .send(Command::Subscribe {
                sock: self.shared.sock,
                sub: sub.clone(),
            })
            .map_err(|_| SetupError::Limit("shard command queue"))?;
        Ok(Subscription { shared: sub })
    }

    pub fn counters(&self) -> GroupCounters {
        let g = &self.shared;
        GroupCounters {
            received: g.received.load(Ordering::Relaxed),
            stalls: g.stalls.load(Ordering::Relaxed),
            subscribers: g.subscribers.load(Ordering::Relaxed),
        }
    }
}

/// One consumer of a group. Dequeue from any thread; dropping it unsubscribes and releases
/// the datagrams still queued.
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<SubShared>,
}

impl Subscription {
    /// The next datagram, if one is queued. Never blocks.
    pub fn try_recv(&self) -> Option<Datagram> {
        let d = self.shared.queue.pop()?;
        self.made_room();
        Some(d)
    }

    /// Appends up to `max` queued datagrams to `out`; never blocks.
    pub fn recv_batch(&self, out: &mut Vec<Datagram>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(d) = self.shared.queue.pop() else { break };
            out.push(d);
            n += 1;
        }
        if n > 0 {
            self.made_room();
        }
        n
    }

    /// A stalled group waits for room in some reliable queue: tell its shard now rather than
    /// at its next timed retry.
    fn made_room(&self) {
        let g = &self.shared.group;
        if g.stalled.load(Ordering::Relaxed) {
            g.shard.wake();
        }
    }

    /// RIONotify: signal once (event or port completion with `OpKind::FanoutNotify`) when the
    /// queue holds a datagram, at once if it already does.
    pub fn notify(&self) {
        self.shared.notifier.arm(|| self.shared.queue.len());
    }

    pub fn policy(&self) -> Policy {
        self.shared.policy
    }

    pub fn counters(&self) -> SubscriberCounters {
        SubscriberCounters {
            delivered: self.shared.delivered.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            depth: self.shared.queue.len(),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        let g = &self.shared.group;
        g.shard.send_reliably(Command::Unsubscribe {
            sock: g.sock,
            sub: self.shared.clone(),
        });
    }
}

/// A datagram some reliable subscriber had no room for, and where its delivery resumes.
#[derive(Debug)]
struct Pending {
    d: Datagram,
    next: usize,
}

/// The shard's side of a group (one per fanned-out socket).
#[derive(Debug)]
pub(crate) struct GroupState {
    shared: Arc<GroupShared>,
    subs: Vec<Arc<SubShared>>,
    /// Datagrams waiting for a reliable subscriber, oldest first (capacity: pool frames).
    pending: VecDeque<Pending>,
}

impl GroupState {
    pub(crate) fn add(&mut self, sub: Arc<SubShared>) {
        if !sub.closed.load(Ordering::Acquire) {
            self.subs.push(sub);
            self.publish_size();
        }
    }

    pub(crate) fn remove(&mut self, sub: &Arc<SubShared>) {
        let Some(i) = self.subs.iter().position(|s| Arc::ptr_eq(s, sub)) else {
            return;
        };
        self.subs.remove(i);
        for p in &mut self.pending {
            if p.next > i {
                p.next -= 1;
            }
        }
        self.publish_size();
    }

    fn publish_size(&self) {
        self.shared.subscribers.store(self.subs.len() as u64, Ordering::Relaxed);
    }

    /// Hands a received datagram to every subscriber. Returns true while the group is
    /// stalled (some datagram waits for a reliable subscriber).
    pub(crate) fn publish(&mut self, buf: Buf, peer: Option<SocketAddr>, tos: Option<u8>) -> bool {
        bump(&self.shared.received);
        let d = Datagram {
            buf: buf.freeze(),
            peer,
            tos,
        };
        if !self.pending.is_empty() {
            // Order: behind what already waits. Bounded: each pending datagram holds a frame.
            self.pending.push_back(Pending { d, next: 0 });
            return true;
        }
        if let Err(next) = self.offer(&d, 0) {
            self.stall(Pending { d, next });
        }
        !self.pending.is_empty()
    }

    /// Retries the waiting datagrams in order. Returns true while still stalled.
    pub(crate) fn retry(&mut self) -> bool {
        while let Some(p) = self.pending.pop_front() {
            if let Err(next) = self.offer(&p.d, p.next) {
                self.pending.push_front(Pending { next, ..p });
                return true;
            }
        }
        self.shared.stalled.store(false, Ordering::Relaxed);
        false
    }

    fn stall(&mut self, p: Pending) {
        bump(&self.shared.stalls);
        self.pending.push_back(p);
        self.shared.stalled.store(true, Ordering::Relaxed);
    }

    /// Offers `d` to subscribers `from..`; on a full reliable queue, the index to resume at.
    fn offer(&self, d: &Datagram, from: usize) -> Result<(), usize> {
        let subs = &self.subs[from.min(self.subs.len())..];
        let mut shares = d.buf.shares(subs.len() as u32);
        for (i, sub) in subs.iter().enumerate() {
            let share = shares.next().expect("one share per subscriber");
            if sub.closed.load(Ordering::Relaxed) {
                continue;
            }
            let item = Datagram {
                buf: share,
                peer: d.peer,
                tos: d.tos,
            };
            match sub.queue.push(item) {
                Ok(()) => {
                    bump(&sub.delivered);
                    sub.notifier.pushed(|| sub.queue.len());
                }
                Err(_) if sub.policy == Policy::Lossy => bump(&sub.dropped),
                Err(_) => return Err(from + i),
            }
        }
        Ok(())
    }
}
