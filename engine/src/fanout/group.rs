//! The shard's side of a fan-out group and what its subscribers share with it: the
//! subscriptions' queues, counters and wake-ups, the datagrams. A leaf (no shard protocol):
//! the command protocol carries these, `fanout/mod.rs` holds the API that sends them.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rtrb::Producer;

use crate::pool::{Buf, SharedBuf};
use crate::rio::buf::Notifier;
use crate::sync::ShardWaker;

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
/// is the payload). Its source, TOS byte and receive stamp live in the frame too, in front of
/// the payload (the `Meta` block), so a queue entry is one 24-byte handle: the fan-out writes
/// N small entries, not N copies of the address.
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

    /// When the kernel (or porto's XDP program) received it, ns since the Unix epoch, if the
    /// receiving socket asked for timestamps (`SocketOptions::timestamps`,
    /// `XdpOptions::timestamps`).
    pub fn rx_timestamp_ns(&self) -> Option<NonZeroU64> {
        Meta::read(self.buf.prefix())?.2
    }
}

/// Where a fanned-out frame keeps its datagram's source, TOS and receive stamp: the first
/// `Meta::LEN` bytes of the frame, written by the shard once the receive's own headers there
/// (the recvmsg header, or Ethernet/IP/UDP) have been parsed. Layout: family (0, 4 or 6), TOS
/// flag, TOS, pad, port (BE), pad, address (16 bytes, IPv4 in the first 4), stamp (u64 LE, 0 =
/// none).
struct Meta;

impl Meta {
    const LEN: usize = 32;

    fn write(frame: &mut [u8], peer: Option<SocketAddr>, tos: Option<u8>, stamp: Option<NonZeroU64>) {
        let m = &mut frame[..Meta::LEN];
        m.fill(0);
        m[24..32].copy_from_slice(&stamp.map_or(0, NonZeroU64::get).to_le_bytes());
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

    fn read(prefix: &[u8]) -> Option<(Option<SocketAddr>, Option<u8>, Option<NonZeroU64>)> {
        let m = prefix.get(..Meta::LEN)?;
        let port = u16::from_be_bytes([m[4], m[5]]);
        let peer = match m[0] {
            4 => Some(SocketAddr::from((<[u8; 4]>::try_from(&m[8..12]).ok()?, port))),
            6 => Some(SocketAddr::from((<[u8; 16]>::try_from(&m[8..24]).ok()?, port))),
            _ => None,
        };
        let stamp = NonZeroU64::new(u64::from_le_bytes(m[24..32].try_into().ok()?));
        Some((peer, (m[1] == 1).then_some(m[2]), stamp))
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
    /// Wakes the group's shard (a consumer made room in a stalled group).
    pub(crate) waker: Arc<ShardWaker>,
    /// Some datagram waits for a reliable subscriber: consumers wake the shard on dequeue.
    pub(crate) stalled: AtomicBool,
    pub(crate) received: AtomicU64,
    pub(crate) stalls: AtomicU64,
    pub(crate) overflow: AtomicU64,
    pub(crate) subscribers: AtomicU64,
}

impl GroupShared {
    pub(crate) fn new(waker: Arc<ShardWaker>) -> GroupShared {
        GroupShared {
            waker,
            stalled: AtomicBool::new(false),
            received: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
            subscribers: AtomicU64::new(0),
        }
    }

    pub(crate) fn counters(&self) -> GroupCounters {
        GroupCounters {
            received: self.received.load(Ordering::Relaxed),
            stalls: self.stalls.load(Ordering::Relaxed),
            overflow: self.overflow.load(Ordering::Relaxed),
            subscribers: self.subscribers.load(Ordering::Relaxed),
        }
    }

    /// The shard's side of this group, holding at most `pending_max` waiting datagrams.
    pub(crate) fn state(self: &Arc<Self>, pending_max: usize) -> Box<GroupState> {
        Box::new(GroupState {
            shared: self.clone(),
            subs: Vec::with_capacity(SUBSCRIBERS_MAX.min(64)),
            pending: VecDeque::with_capacity(pending_max),
            pending_max,
        })
    }
}

pub(crate) struct SubShared {
    pub(crate) policy: Policy,
    pub(crate) notifier: Notifier,
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) closed: AtomicBool,
    pub(crate) group: Arc<GroupShared>,
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

/// The shard's end of one subscription.
#[derive(Debug)]
pub(crate) struct SubSlot {
    pub(crate) shared: Arc<SubShared>,
    pub(crate) tx: Producer<Datagram>,
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

    pub(crate) fn counters(&self) -> GroupCounters {
        self.shared.counters()
    }

    /// Each subscriber's counters, in delivery order; `depth` is what its queue holds now.
    pub(crate) fn subscriber_counters(&self) -> impl Iterator<Item = SubscriberCounters> + '_ {
        self.subs.iter().map(|s| SubscriberCounters {
            delivered: s.shared.delivered.load(Ordering::Relaxed),
            dropped: s.shared.dropped.load(Ordering::Relaxed),
            depth: s.tx.buffer().capacity() - s.tx.slots(),
        })
    }

    fn publish_size(&self) {
        self.shared.subscribers.store(self.subs.len() as u64, Ordering::Relaxed);
    }

    /// Hands a received datagram to every subscriber. Returns true while the group is
    /// stalled (some datagram waits for a reliable subscriber).
    pub(crate) fn publish(
        &mut self,
        mut buf: Buf,
        peer: Option<SocketAddr>,
        tos: Option<u8>,
        stamp: Option<NonZeroU64>,
    ) -> bool {
        bump(&self.shared.received);
        // Every receive path leaves its parsed headers in front of the payload: room for Meta.
        debug_assert!(buf.offset() >= Meta::LEN, "no room for the datagram's metadata");
        if buf.offset() >= Meta::LEN {
            Meta::write(buf.frame_mut(), peer, tos, stamp);
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
