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

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rtrb::{Consumer, Producer, RingBuffer};

use crate::completion::OpKind;
use crate::error::SetupError;
use crate::pool::{Buf, SharedBuf};
use crate::proto::{Command, ShardShared, SockId};
use crate::rio::{Notifier, RioNotify};

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

/// One delivered datagram: a shared handle of the frame it was received into (`buf`'s window
/// is the payload). Its source and TOS byte live in the frame too, in front of the payload
/// (the `Meta` block), so a queue entry is one 24-byte handle: the fan-out writes N small entries,
/// not N copies of the address.
#[derive(Debug)]
pub struct Datagram {
    pub buf: SharedBuf,
}

const _: () = assert!(std::mem::size_of::<Datagram>() == 24);

impl Datagram {
    /// The sender.
    pub fn peer(&self) -> Option<SocketAddr> {
        Meta::read(self.buf.prefix())?.0
    }

    /// The TOS / traffic-class byte, when the socket reports it (always on AF_XDP).
    pub fn tos(&self) -> Option<u8> {
        Meta::read(self.buf.prefix())?.1
    }
}

/// Where a fanned-out frame keeps its datagram's source and TOS: the first `Meta::LEN` bytes
/// of the frame, written by the shard once the receive's own headers there (the recvmsg
/// header, or Ethernet/IP/UDP) have been parsed. Layout: family (0, 4 or 6), TOS flag, TOS,
/// pad, port (BE), pad, address (16 bytes, IPv4 in the first 4).
struct Meta;

impl Meta {
    const LEN: usize = 24;

    fn write(frame: &mut [u8], peer: Option<SocketAddr>, tos: Option<u8>) {
        let m = &mut frame[..Meta::LEN];
        m.fill(0);
        if let Some(t) = tos {
            m[1] = 1;
            m[2] = t;
        }
        match peer {
            Some(SocketAddr::V4(a)) => {
                m[0] = 4;
                m[4..6].copy_from_slice(&a.port().to_be_bytes());
                m[8..12].copy_from_slice(&a.ip().octets());
            }
            Some(SocketAddr::V6(a)) => {
                m[0] = 6;
                m[4..6].copy_from_slice(&a.port().to_be_bytes());
                m[8..24].copy_from_slice(&a.ip().octets());
            }
            None => {}
        }
    }

    fn read(prefix: &[u8]) -> Option<(Option<SocketAddr>, Option<u8>)> {
        let m = prefix.get(..Meta::LEN)?;
        let port = u16::from_be_bytes([m[4], m[5]]);
        let peer = match m[0] {
            4 => Some(SocketAddr::from((<[u8; 4]>::try_from(&m[8..12]).ok()?, port))),
            6 => Some(SocketAddr::from((<[u8; 16]>::try_from(&m[8..24]).ok()?, port))),
            _ => None,
        };
        Some((peer, (m[1] == 1).then_some(m[2])))
    }
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
    /// Datagrams dropped for the whole group because it already held its bound of waiting
    /// datagrams (`Config::fanout_pending_max`) behind a stalled reliable subscriber.
    pub overflow: u64,
    /// Subscriptions now.
    pub subscribers: u64,
}

#[derive(Debug)]
pub(crate) struct GroupShared {
    shard: Arc<ShardShared>,
    sock: SockId,
    /// Some datagram waits for a reliable subscriber: consumers wake the shard on dequeue.
    stalled: AtomicBool,
    received: AtomicU64,
    stalls: AtomicU64,
    overflow: AtomicU64,
    subscribers: AtomicU64,
}

pub(crate) struct SubShared {
    policy: Policy,
    notifier: Notifier,
    delivered: AtomicU64,
    dropped: AtomicU64,
    closed: AtomicBool,
    group: Arc<GroupShared>,
}

impl fmt::Debug for SubShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubShared").field("policy", &self.policy).finish()
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
    pub(crate) fn new(shard: Arc<ShardShared>, sock: SockId) -> FanOut {
        FanOut {
            shared: Arc::new(GroupShared {
                shard,
                sock,
                stalled: AtomicBool::new(false),
                received: AtomicU64::new(0),
                stalls: AtomicU64::new(0),
                overflow: AtomicU64::new(0),
                subscribers: AtomicU64::new(0),
            }),
        }
    }

    pub(crate) fn state(&self, pending_max: usize) -> Box<GroupState> {
        Box::new(GroupState {
            shared: self.shared.clone(),
            subs: Vec::with_capacity(SUBSCRIBERS_MAX.min(64)),
            pending: VecDeque::with_capacity(pending_max),
            pending_max,
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
        let (tx, rx) = RingBuffer::new(depth);
        let sub = Arc::new(SubShared {
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
                sub: SubSlot {
                    shared: sub.clone(),
                    tx,
                },
            })
            .map_err(|_| SetupError::Limit("shard command queue"))?;
        Ok(Subscription { shared: sub, rx })
    }

    pub fn counters(&self) -> GroupCounters {
        let g = &self.shared;
        GroupCounters {
            received: g.received.load(Ordering::Relaxed),
            stalls: g.stalls.load(Ordering::Relaxed),
            overflow: g.overflow.load(Ordering::Relaxed),
            subscribers: g.subscribers.load(Ordering::Relaxed),
        }
    }
}

/// One consumer of a group: its queue is single-producer (the shard), single-consumer (the
/// holder of this handle, on any one thread at a time), so neither side takes a lock or a
/// locked instruction. Dropping it unsubscribes and releases the datagrams still queued.
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<SubShared>,
    rx: Consumer<Datagram>,
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
            g.shard.wake();
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
        let g = &self.shared.group;
        g.shard.send_reliably(Command::Unsubscribe {
            sock: g.sock,
            sub: self.shared.clone(),
        });
    }
}

/// The shard's end of one subscription.
#[derive(Debug)]
pub(crate) struct SubSlot {
    shared: Arc<SubShared>,
    tx: Producer<Datagram>,
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
    subs: Vec<SubSlot>,
    /// Datagrams waiting for a reliable subscriber, oldest first.
    pending: VecDeque<Pending>,
    /// Most datagrams (frames) `pending` may hold; preallocated.
    pending_max: usize,
}

impl GroupState {
    pub(crate) fn add(&mut self, sub: SubSlot) {
        if !sub.shared.closed.load(Ordering::Acquire) {
            self.subs.push(sub);
            self.publish_size();
        }
    }

    pub(crate) fn remove(&mut self, sub: &Arc<SubShared>) {
        let Some(i) = self.subs.iter().position(|s| Arc::ptr_eq(&s.shared, sub)) else {
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
    pub(crate) fn publish(&mut self, mut buf: Buf, peer: Option<SocketAddr>, tos: Option<u8>) -> bool {
        bump(&self.shared.received);
        // Every receive path leaves its parsed headers in front of the payload: room for Meta.
        debug_assert!(buf.offset() >= Meta::LEN, "no room for the datagram's metadata");
        if buf.offset() >= Meta::LEN {
            Meta::write(buf.frame_mut(), peer, tos);
        }
        let d = Datagram { buf: buf.freeze() };
        if !self.pending.is_empty() {
            // Order: behind what already waits. Bounded: each pending datagram holds a frame,
            // and a group may not take the shard's pool.
            if self.pending.len() >= self.pending_max {
                bump(&self.shared.overflow);
                return true;
            }
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
    fn offer(&mut self, d: &Datagram, from: usize) -> Result<(), usize> {
        let start = from.min(self.subs.len());
        let subs = &mut self.subs[start..];
        let mut shares = d.buf.shares(subs.len() as u32);
        for (i, sub) in subs.iter_mut().enumerate() {
            let share = shares.next().expect("one share per subscriber");
            let sh = &sub.shared;
            match sub.tx.push(Datagram { buf: share }) {
                Ok(()) => {
                    bump(&sh.delivered);
                    let tx = &sub.tx;
                    sh.notifier.pushed(|| tx.buffer().capacity() - tx.slots());
                }
                Err(_) if sh.policy == Policy::Lossy => bump(&sh.dropped),
                // A subscription whose consumer is gone cannot stall the group; the shard
                // removes it when it takes the Unsubscribe.
                Err(_) if sh.closed.load(Ordering::Relaxed) => {}
                Err(_) => return Err(start + i),
            }
        }
        Ok(())
    }
}
