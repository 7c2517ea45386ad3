//! The protocol between application threads and a shard: what they send it (`Command`,
//! each naming its socket by a generation-checked `SockId`), the part of a shard they may
//! touch (`ShardShared`: the bounded command queue behind its stop gate, the wake-up, the
//! pool, the stats), and the handle they hold (`ShardHandle`). No loop code: the shard
//! (`shard.rs`) consumes this; sockets, RIO and fan-out produce it.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_queue::ArrayQueue;

use crate::config::Config;
pub use crate::driver::{Degraded, ProviderInfo, Transport};
use crate::error::{Error, SetupError};
use crate::fanout::group::{GroupState, SubShared, SubSlot};
use crate::op::Request;
use crate::pool::Pool;
use crate::port::CompletionPort;
use crate::qos::{Flow, FlowCounters, Shaping, TrafficType};
use crate::rio::buf::RioSlots;
use crate::stats::Stats;
use crate::sync::{ShardWaker, StopGate};
use crate::sys::net;
use crate::sys::region::PageKind;
use crate::telemetry::Publisher;
use crate::xdp::port::XdpPort;

/// Where a socket's completions go.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// To a completion port, tagged with `key` (IOCP association).
    Port { port: CompletionPort, key: u64 },
    /// To the owning shard's [`Shard::poll`](crate::shard::Shard::poll) (polling mode), tagged with `key`.
    Poll { key: u64 },
}

impl Delivery {
    pub(crate) fn key(&self) -> u64 {
        match self {
            Delivery::Port { key, .. } | Delivery::Poll { key } => *key,
        }
    }
}

/// What a shard actually obtained from the kernel.
#[derive(Clone, Debug)]
pub struct ShardInfo {
    pub index: usize,
    /// The core the shard thread is pinned to, if pinned.
    pub core: Option<usize>,
    /// The provider obtained (io_uring and its set-up mode, or epoll) and why, if it is not
    /// the one asked for.
    pub provider: ProviderInfo,
    pub pages: PageKind,
    pub frames: u32,
    pub frame_size: u32,
    /// The pool is registered as io_uring fixed buffer 0.
    pub registered_buffers: bool,
    /// Sockets are registered in the ring's file table (fixed files).
    pub registered_files: bool,
    pub bufring_entries: u16,
    /// Kernel features asked for and refused, each with what the shard does instead (also
    /// in the log at start, and by name in `porto stats`).
    pub degraded: Vec<Degraded>,
}

impl std::fmt::Display for ShardInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shard {} core {}: {}, pool {} x {} B on {} pages, fixed buffers {}, fixed files {}, provided frames {}",
            self.index,
            self.core.map_or("-".into(), |c| c.to_string()),
            self.provider,
            self.frames,
            self.frame_size,
            self.pages,
            if self.registered_buffers {
                "registered"
            } else {
                "not registered"
            },
            if self.registered_files { "registered" } else { "off" },
            self.bufring_entries,
        )?;
        for d in &self.degraded {
            write!(f, "; {d}")?;
        }
        Ok(())
    }
}

/// A socket's id on its shard: its table index and that index's generation, bumped each
/// time the index is freed. A handle that outlives its socket (a RIO request queue, a
/// fan-out) names the old generation, so the shard refuses its commands instead of routing
/// them to the socket that reuses the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SockId {
    pub index: u32,
    pub gen: u32,
}

impl Command {
    /// The socket a command is for, if any.
    pub(crate) fn sock(&self) -> Option<SockId> {
        match self {
            Command::Open { sock, .. }
            | Command::OpenXdp { sock, .. }
            | Command::SetSocketFlow { sock, .. }
            | Command::SetClass { sock, .. }
            | Command::SetDelivery { sock, .. }
            | Command::Neighbor { sock, .. }
            | Command::XdpGroup { sock, .. }
            | Command::XdpBlock { sock, .. }
            | Command::Op { sock, .. }
            | Command::Cancel { sock, .. }
            | Command::Close { sock }
            | Command::FanOut { sock, .. }
            | Command::Subscribe { sock, .. }
            | Command::Unsubscribe { sock, .. } => Some(*sock),
            Command::FlowCreate { .. }
            | Command::FlowRelease { .. }
            | Command::FlowSetRate { .. }
            | Command::LinkRate { .. }
            | Command::Post { .. } => None,
        }
    }
}

/// Messages from application threads to a shard.
#[derive(Debug)]
pub(crate) enum Command {
    Open {
        sock: SockId,
        fd: Arc<OwnedFd>,
        delivery: Delivery,
        /// The kernel refused the socket's receive stamps: the shard stamps its datagrams.
        reap_stamps: bool,
    },
    OpenXdp {
        sock: SockId,
        port: Box<XdpPort>,
        delivery: Delivery,
    },
    /// A QoS flow (QOSCreateHandle + QOSAddSocketToFlow's flow).
    FlowCreate {
        id: u16,
        flow: Box<Flow>,
    },
    /// Sends on this socket go through flow `flow` and the scheduler.
    SetSocketFlow {
        sock: SockId,
        flow: Option<u16>,
    },
    /// QOSSetFlow: a new rate for a shaped flow.
    /// The last handle of flow `id` dropped: its id is free once nothing is left in it.
    FlowRelease {
        id: u16,
    },
    FlowSetRate {
        id: u16,
        rate_bps: u64,
    },
    /// The egress link rate scheduled sends are paced to (None: unpaced).
    LinkRate {
        rate_bps: Option<u64>,
        burst_bytes: u64,
    },
    /// Where a socket's completions go from now on (Winsock's association made after the
    /// socket exists: an accepted socket associated after AcceptEx).
    SetDelivery {
        sock: SockId,
        delivery: Delivery,
    },
    /// A socket's traffic class: its receives' inbound priority, and for AF_XDP the TOS byte
    /// it writes into its frames.
    SetClass {
        sock: SockId,
        traffic: TrafficType,
        tos: u8,
        /// The kernel refused the TOS socket option: mark each datagram sent with a control
        /// message instead.
        tos_cmsg: bool,
    },
    /// A static neighbour entry for an AF_XDP socket.
    Neighbor {
        sock: SockId,
        ip: std::net::IpAddr,
        mac: crate::wire::MacAddr,
    },
    /// An AF_XDP socket's multicast membership (the program and IGMP are handled by the
    /// caller; this is the engine's own check).
    XdpGroup {
        sock: SockId,
        group: std::net::IpAddr,
        source: Option<std::net::IpAddr>,
        join: bool,
    },
    /// A source blocked (or unblocked) from an AF_XDP socket's any-source membership.
    XdpBlock {
        sock: SockId,
        group: std::net::IpAddr,
        source: std::net::IpAddr,
        block: bool,
    },
    Op {
        sock: SockId,
        token: u64,
        req: Request,
    },
    /// PostQueuedCompletionStatus to a polling-mode shard: a `Post` completion in its poll
    /// queue.
    Post {
        key: u64,
        token: u64,
        bytes: usize,
    },
    /// CancelIoEx: the socket's operations issued with `token`, or all of them (`None`:
    /// CancelIo / CancelIoEx with a NULL OVERLAPPED).
    Cancel {
        sock: SockId,
        token: Option<u64>,
    },
    Close {
        sock: SockId,
    },
    /// Received datagrams on this socket go to the group's subscribers.
    FanOut {
        sock: SockId,
        group: Box<GroupState>,
    },
    Subscribe {
        sock: SockId,
        sub: SubSlot,
    },
    Unsubscribe {
        sock: SockId,
        sub: Arc<SubShared>,
    },
}

/// The part of a shard other threads may touch.
#[derive(Debug)]
pub(crate) struct ShardShared {
    pub index: usize,
    pub(crate) commands: ArrayQueue<Command>,
    /// Wakes the shard when it sleeps (armed by the shard, taken by a producer).
    pub(crate) waker: Arc<ShardWaker>,
    /// Closed at stop: no command is accepted after the shard's last drain.
    pub(crate) gate: StopGate,
    free_sockets: ArrayQueue<u32>,
    /// Per socket index: its generation (see [`SockId`]).
    sock_gens: Box<[AtomicU32]>,
    /// `Config::fanout_pending_max`.
    pub(crate) fanout_pending_max: usize,
    /// Operation-table slots the request queues on this shard hold for their requests (the
    /// sum of their maxima): other operations leave them free, so a RIO request the queue
    /// accepted always has a slot (Windows fails an oversized queue at creation, never a
    /// request later).
    pub(crate) rio_reserved: Arc<AtomicU32>,
    /// Most slots RIO may reserve: three quarters of `ops_max`, the rest for the shard's
    /// other operations.
    pub(crate) rio_reserve_max: u32,
    /// RIO fixed-buffer slots whose region was dropped, for the shard to clear and reuse.
    pub(crate) rio_slots: Arc<RioSlots>,
    pub stats: Stats,
    pub pool: Pool,
    pub info: OnceLock<ShardInfo>,
    next_flow: std::sync::atomic::AtomicU16,
    /// Flow ids given back (their last handle dropped, no socket or held send left in them),
    /// handed out again before new ones.
    pub(crate) free_flows: ArrayQueue<u16>,
    /// Per flow: sent, sent bytes, delayed, non-conformant, dropped (QOSQueryFlow).
    pub(crate) flow_counters: Box<[[AtomicU64; 5]]>,
    /// Per class: sends refused by a full scheduler queue.
    pub(crate) class_drops: [AtomicU64; 6],
    /// Where this shard publishes its statistics for other processes (its engine's segment).
    pub(crate) telemetry: Option<Arc<Publisher>>,
    /// A duplicate of the shard's io_uring fd, set when it starts on io_uring: a polling
    /// shard posting to this one wakes it with a MSG_RING into it
    /// ([`Shard::post_to`](crate::shard::Shard::post_to)). Held here, it keeps the ring
    /// open: a message to a stopped shard lands in a ring nobody reads, never in a file that
    /// took its number.
    pub(crate) ring: OnceLock<OwnedFd>,
}

impl ShardShared {
    /// Queues a command and wakes the shard if it sleeps. A full queue hands it back.
    pub(crate) fn send(&self, cmd: Command) -> Result<(), Command> {
        self.push(cmd)?;
        self.wake();
        Ok(())
    }

    /// Queues without waking; follow a batch with one [`wake`](Self::wake).
    pub(crate) fn push(&self, cmd: Command) -> Result<(), Command> {
        self.gate.pass(cmd, |c| self.commands.push(c))
    }

    /// Sends a command that must not be lost (closing a socket): waits for queue room.
    pub(crate) fn send_reliably(&self, mut cmd: Command) {
        loop {
            match self.push(cmd) {
                Ok(()) => return self.wake(),
                Err(back) if !self.is_stopping() => {
                    cmd = back;
                    self.wake();
                    std::thread::yield_now();
                }
                // A stopping shard closes every socket itself.
                Err(_) => return,
            }
        }
    }

    /// After queueing: wakes the shard if it sleeps (or is about to).
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }

    pub(crate) fn alloc_flow(&self) -> Result<u16, SetupError> {
        if let Some(id) = self.free_flows.pop() {
            return Ok(id);
        }
        // Never past FLOWS_MAX: a counter that kept counting would wrap after 65 536 calls
        // and hand out the id of a live flow.
        self.next_flow
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| {
                (usize::from(id) < FLOWS_MAX).then_some(id + 1)
            })
            .map_err(|_| SetupError::Limit("QoS flow"))
    }

    pub(crate) fn alloc_socket(&self) -> Result<SockId, SetupError> {
        if self.is_stopping() {
            return Err(SetupError::Stopped);
        }
        let index = self.free_sockets.pop().ok_or(SetupError::Limit("socket"))?;
        // The free queue's push/pop order the bump in `free_socket_id` before this load.
        let gen = self.sock_gens[index as usize].load(Ordering::Relaxed);
        Ok(SockId { index, gen })
    }

    /// Frees a socket index: its generation moves on first, so handles of the old socket
    /// no longer match it.
    pub(crate) fn free_socket_id(&self, id: u32) {
        self.sock_gens[id as usize].fetch_add(1, Ordering::Relaxed);
        self.free_sockets.push(id).expect("socket id returned twice");
    }

    pub(crate) fn request_stop(&self) {
        self.gate.request();
        self.waker.disarm();
        self.waker.signal();
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.gate.is_closed()
    }
}

/// Flows per shard.
pub const FLOWS_MAX: usize = 64;
// The shard tracks flows in 64-bit sets (`qos_purge`).
const _: () = assert!(FLOWS_MAX <= 64);

/// A QoS flow on one shard (see [`ShardHandle::create_flow`]). Clones share it; when the
/// last handle drops, the shard reuses its id once no socket and no held send is left in it
/// (a socket still in it stays shaped until it leaves or closes).
#[derive(Clone, Debug)]
pub struct QosFlow {
    pub(crate) id: u16,
    pub traffic: TrafficType,
    /// The TOS byte its sockets are marked with: the class's, or 0 for ShapeOnly (QOS2's
    /// QOSShapeOnly sends no DSCP mark).
    pub tos: u8,
    pub(crate) shard: Arc<ShardShared>,
    _lease: Arc<FlowLease>,
}

/// What the last [`QosFlow`] handle gives back when it drops.
#[derive(Debug)]
struct FlowLease {
    id: u16,
    shard: Arc<ShardShared>,
}

impl Drop for FlowLease {
    fn drop(&mut self) {
        self.shard.send_reliably(Command::FlowRelease { id: self.id });
    }
}

impl QosFlow {
    /// QOSSetFlow(QOSSetOutgoingDSCPValue): the same flow, but a socket joining it through
    /// the handle returned is marked with `dscp` (0..=63; ECN bits 0) instead of its class's
    /// DSCP — even under ShapeOnly, since it was asked for. The class (its 802.1p priority
    /// and its place in the scheduler) stays. `InvalidArgument` above 63. Sockets already in
    /// the flow keep their marking until they join again.
    pub fn with_dscp(&self, dscp: u8) -> Result<QosFlow, Error> {
        if dscp > 63 {
            return Err(Error::InvalidArgument);
        }
        Ok(QosFlow {
            tos: dscp << 2,
            ..self.clone()
        })
    }

    /// QOSSetFlow(QOSSetOutgoingRate) while running.
    pub fn set_rate(&self, rate_bps: u64) -> Result<(), Error> {
        self.shard
            .send(Command::FlowSetRate { id: self.id, rate_bps })
            .map_err(|_| Error::NoBuffers)
    }

    /// QOSQueryFlow: the flow's counters as last published by its shard.
    pub fn counters(&self) -> FlowCounters {
        let c = &self.shard.flow_counters[usize::from(self.id)];
        let v = |i: usize| c[i].load(Ordering::Relaxed);
        FlowCounters {
            sent: v(0),
            sent_bytes: v(1),
            delayed: v(2),
            non_conformant: v(3),
            dropped: v(4),
        }
    }
}

/// A handle to a shard for any thread: socket creation, the pool, stats.
#[derive(Clone, Debug)]
pub struct ShardHandle {
    pub(crate) shared: Arc<ShardShared>,
}

impl ShardHandle {
    /// QOSCreateHandle + a flow: sends on sockets set to it (`set_flow`) are marked with
    /// `traffic`'s DSCP, shaped if `shape` is given (rate bps, burst bytes, behaviour), and
    /// scheduled by class (Control and Voice first).
    pub fn create_flow(&self, traffic: TrafficType, shape: Option<(u64, u64, Shaping)>) -> Result<QosFlow, SetupError> {
        if let Some((rate, burst, _)) = shape {
            check_bucket(rate, burst)?;
        }
        let id = self.shared.alloc_flow()?;
        let mut flow = Flow::new(traffic);
        if let Some((rate, burst, how)) = shape {
            // The shard's clock starts near zero; a full bucket at creation is what matters.
            flow = flow.shape(rate, burst, how, 0);
        }
        self.shared
            .send(Command::FlowCreate {
                id,
                flow: Box::new(flow),
            })
            .map_err(|_| SetupError::Limit("shard command queue"))?;
        let tos = match shape {
            Some((_, _, Shaping::ShapeOnly)) => 0,
            _ => traffic.tos(),
        };
        Ok(QosFlow {
            id,
            traffic,
            tos,
            shard: self.shared.clone(),
            _lease: Arc::new(FlowLease {
                id,
                shard: self.shared.clone(),
            }),
        })
    }

    /// The egress link rate: the shard paces the sends of every socket on a flow to
    /// `rate_bps` (bursts of `burst_bytes`), after the class scheduler has ordered them —
    /// the bottleneck at which Control and Voice overtake bulk traffic. `None` removes it.
    pub fn set_link_rate(&self, rate_bps: Option<u64>, burst_bytes: u64) -> Result<(), SetupError> {
        if let Some(rate) = rate_bps {
            check_bucket(rate, burst_bytes)?;
        }
        self.shared
            .send(Command::LinkRate { rate_bps, burst_bytes })
            .map_err(|_| SetupError::Limit("shard command queue"))
    }

    /// Sends dropped per class by full scheduler queues (index: `TrafficType as usize`).
    pub fn class_drops(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.shared.class_drops[i].load(Ordering::Relaxed))
    }

    pub fn index(&self) -> usize {
        self.shared.index
    }

    /// The shard's buffer pool (allocate send buffers here).
    pub fn pool(&self) -> &Pool {
        &self.shared.pool
    }

    /// PostQueuedCompletionStatus to a polling-mode shard ([`Shard::new`](crate::shard::Shard::new)),
    /// from any thread: its `poll`/`wait` returns a `Post` completion with `key`, `token` and
    /// `Ok(bytes)`, waking it if it sleeps. (An engine's shards deliver to completion ports:
    /// post to the port.) `NoBuffers` while the shard's command queue is full, `Shutdown`
    /// once it stops.
    pub fn post(&self, key: u64, token: u64, bytes: usize) -> Result<(), Error> {
        self.shared.send(Command::Post { key, token, bytes }).map_err(|_| {
            if self.shared.is_stopping() {
                Error::Shutdown
            } else {
                Error::NoBuffers
            }
        })
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// What the shard obtained; `None` only before it has started.
    pub fn info(&self) -> Option<&ShardInfo> {
        self.shared.info.get()
    }
}

/// A token bucket's rate and burst: positive, and a burst whose bits fit in a u64.
fn check_bucket(rate_bps: u64, burst_bytes: u64) -> Result<(), SetupError> {
    if rate_bps == 0 || burst_bytes == 0 || burst_bytes > crate::qos::BURST_BYTES_MAX {
        return Err(SetupError::Config(format!(
            "rate {rate_bps} bit/s, burst {burst_bytes} B: both must be positive and the burst at most {} B",
            crate::qos::BURST_BYTES_MAX
        )));
    }
    Ok(())
}

/// The shared state of shard `index`; `telemetry` is its engine's statistics segment.
pub(crate) fn new_shared(
    cfg: &Config,
    index: usize,
    telemetry: Option<Arc<Publisher>>,
) -> Result<Arc<ShardShared>, SetupError> {
    let pool = Pool::new(cfg.frames_per_shard, cfg.frame_size, cfg.huge_pages).map_err(|source| SetupError::Map {
        bytes: cfg.pool_bytes(),
        source,
    })?;
    let wake_fd = net::eventfd().map_err(|source| SetupError::Syscall {
        what: "eventfd",
        source,
    })?;
    let free_sockets = ArrayQueue::new(cfg.sockets_max as usize);
    for i in 0..cfg.sockets_max {
        free_sockets.push(i).expect("sized to sockets_max");
    }
    let waker = Arc::new(ShardWaker::new(wake_fd));
    Ok(Arc::new(ShardShared {
        index,
        commands: ArrayQueue::new(cfg.commands_max as usize),
        rio_slots: Arc::new(RioSlots::new(cfg.rio_buffers_max, waker.clone())),
        waker,
        gate: StopGate::new(),
        free_sockets,
        sock_gens: (0..cfg.sockets_max).map(|_| AtomicU32::new(0)).collect(),
        fanout_pending_max: cfg.fanout_pending_limit() as usize,
        rio_reserved: Arc::new(AtomicU32::new(0)),
        rio_reserve_max: cfg.ops_max / 4 * 3,
        stats: Stats::default(),
        pool,
        info: OnceLock::new(),
        next_flow: std::sync::atomic::AtomicU16::new(0),
        free_flows: ArrayQueue::new(FLOWS_MAX),
        flow_counters: (0..FLOWS_MAX).map(|_| Default::default()).collect(),
        class_drops: Default::default(),
        telemetry,
        ring: OnceLock::new(),
    }))
}
