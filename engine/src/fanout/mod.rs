//! Multicast fan-out: a datagram is received once, into one registered frame, and handed to
//! N subscribers as N read-only handles of that frame ([`SharedBuf`](crate::pool::SharedBuf)); the frame returns to
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
//!   one wait in the shard, in order, until the subscriber makes room — at most
//!   `Config::fanout_pending_max` of them (each holds a frame). Past that the group drops
//!   new datagrams and counts them (`GroupCounters::overflow`): a subscriber that stops
//!   reading can hold at most its queue depth plus that bound, never the whole pool, so
//!   the other sockets of the shard keep receiving.
//!
//! Consumers dequeue from any thread ([`Subscription::try_recv`], `recv_batch`), and may ask
//! for a notification when their queue holds datagrams (RIONotify style: an event or a
//! completion-port post, [`Subscription::notify`]).
//!
//! The shard publishes from its own thread, the only producer of every queue, so each
//! subscriber sees the datagrams in the order the socket received them, each exactly once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rtrb::{Consumer, RingBuffer};

use crate::completion::OpKind;
use crate::error::SetupError;
use crate::proto::{Command, ShardShared, SockId};
use crate::rio::buf::{Notifier, RioNotify};

pub(crate) mod group;

pub use group::{Datagram, GroupCounters, Policy, SubscriberCounters, SUBSCRIBERS_MAX, SUBSCRIPTION_DEPTH_MAX};
pub(crate) use group::{GroupShared, GroupState, SubShared, SubSlot};

/// A socket's fan-out: subscribe consumers here. Made by `UdpSocket::fan_out` or
/// `XdpUdpSocket::fan_out`. Dropping it stops nothing; closing the socket ends the group.
#[derive(Clone, Debug)]
pub struct FanOut {
    shared: Arc<GroupShared>,
    shard: Arc<ShardShared>,
    sock: SockId,
}

impl FanOut {
    pub(crate) fn new(shard: Arc<ShardShared>, sock: SockId) -> FanOut {
        FanOut {
            shared: Arc::new(GroupShared::new(shard.waker.clone())),
            shard,
            sock,
        }
    }

    /// The shard's side of this group, holding at most `pending_max` waiting datagrams.
    pub(crate) fn state(&self, pending_max: usize) -> Box<GroupState> {
        self.shared.state(pending_max)
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
        let (tx, rx) = RingBuffer::new(depth);
        let sub = Arc::new(SubShared {
            policy,
            notifier: Notifier::new(notify, OpKind::FanoutNotify),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            group: self.shared.clone(),
        });
        self.shard
            .send(Command::Subscribe {
                sock: self.sock,
                sub: SubSlot {
                    shared: sub.clone(),
                    tx,
                },
            })
            .map_err(|_| SetupError::Limit("shard command queue"))?;
        Ok(Subscription {
            shared: sub,
            rx,
            shard: self.shard.clone(),
            sock: self.sock,
        })
    }

    pub fn counters(&self) -> GroupCounters {
        self.shared.counters()
    }
}

/// One consumer of a group: its queue is single-producer (the shard), single-consumer (the
/// holder of this handle, on any one thread at a time), so neither side takes a lock or a
/// locked instruction. Dropping it unsubscribes and releases the datagrams still queued.
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<SubShared>,
    rx: Consumer<Datagram>,
    shard: Arc<ShardShared>,
    sock: SockId,
}

impl Subscription {
    /// The next datagram, if one is queued. Never blocks.
    pub fn try_recv(&mut self) -> Option<Datagram> {
        let d = self.rx.pop().ok()?;
        self.made_room();
        Some(d)
    }

    /// Appends up to `max` queued datagrams to `out`; never blocks.
    pub fn recv_batch(&mut self, out: &mut Vec<Datagram>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Ok(d) = self.rx.pop() else { break };
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
            g.waker.wake();
        }
    }

    /// RIONotify: signal once (event or port completion with `OpKind::FanoutNotify`) when the
    /// queue holds a datagram, at once if it already does.
    pub fn notify(&self) {
        self.shared.notifier.arm(|| self.rx.slots());
    }

    pub fn policy(&self) -> Policy {
        self.shared.policy
    }

    pub fn counters(&self) -> SubscriberCounters {
        SubscriberCounters {
            delivered: self.shared.delivered.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            depth: self.rx.slots(),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shard.send_reliably(Command::Unsubscribe {
            sock: self.sock,
            sub: self.shared.clone(),
        });
    }
}
