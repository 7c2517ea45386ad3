//! A shard: one provider (io_uring or epoll, behind the `Driver` trait), one registered buffer pool,
//! one op table, one socket table; run by one thread and shared with nobody.
//!
//! Application threads reach a shard only through its `ShardShared`: a bounded lock-free
//! command queue plus a wake-up eventfd that is written only when the shard is asleep. Results
//! leave through the sink of each socket: a completion port (IOCP mode), the shard's own
//! local queue that [`Shard::poll`] drains (polling mode), or a RIO completion queue.
//!
//! One turn of the loop:
//! ```text
//!   commands ─► Submit ─► Driver::enter ─► Events ─► completions ─► sinks
//!        ▲                                                  │
//!        └── provided frames refilled from the pool, starved multishot receives re-armed
//! ```
//!
//! The transport-agnostic part is `Core`, generic over the driver: [`Shard`] matches its
//! provider once per call and runs a monomorphic core inside, so there is no dynamic call per
//! operation or event. The core's parts, one file each:
//!
//! | file          | what                                                                  |
//! |---------------|-----------------------------------------------------------------------|
//! | `mod.rs`      | the shard, its turn and sleep, starting ops, delivery, shutdown        |
//! | `commands.rs` | the command queue, shard side                                         |
//! | `ops.rs`      | an op to its driver and its events back, to its one terminal completion |
//! | `qos.rs`      | the QoS send path (shaping, scheduling, the in-flight budget)          |
//! | `xdp.rs`      | AF_XDP ports: rings, watches, sends, closes, the zero-copy quarantine   |

// Lending pool frames to the driver (`Driver::provide`, in `refill`): a frame is the
// driver's until an event hands it back.
#![allow(unsafe_code)]

mod commands;
mod ops;
mod qos;
mod xdp;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::backlog::{Backlogs, Delivered};
use crate::completion::{Completion, OpKind};
use crate::config::{Config, Provider};
use crate::driver::epoll::{EpollDriver, EpollSetup};
use crate::driver::uring::{UringDriver, UringSetup};
use crate::driver::{Degraded, Driver, Enter, Event, Transport};
use crate::error::{Error, SetupError};
use crate::fanout::group::GroupState;
use crate::op::{self, Request, Table};
use crate::pool::Pool;
use crate::port::CompletionPort;
pub(crate) use crate::proto::new_shared;
use crate::proto::{Command, ShardShared};
pub use crate::proto::{Delivery, QosFlow, ShardHandle, ShardInfo, FLOWS_MAX};
use crate::qos::{Scheduler, TrafficType};
use crate::rio::buf::RioKind;
use crate::stats::{new_histogram, Stats};
use crate::sys::net;
use crate::sys::ring::RingConfig;
use crate::telemetry::{self, ClassStats, ShardHead, SocketKind, SocketStats, SubscriberStats};
use crate::xdp::port::{Quarantine, XdpPort};
use crate::xdp::program::Stamping;
use qos::{Deferred, QosState, QOS_QUEUE_MAX};
use xdp::QUARANTINE_PROBE;

/// Bytes reserved for the source address in each multishot recvmsg buffer (sockaddr_in6).
const NAME_LEN: u32 = std::mem::size_of::<libc::sockaddr_in6>() as u32;
/// Bytes reserved for control messages in each multishot recvmsg buffer: one IP_TOS or
/// IPV6_TCLASS message (24 bytes aligned, with `recv_tos`) and one SCM_TIMESTAMPING (16 + 3
/// timespecs = 64, with `timestamps`).
const CONTROL_LEN: usize = 96;
/// Commands taken from the queue per turn, so CQEs are reaped regularly under load.
const COMMANDS_PER_TURN: usize = 256;

/// What a socket index holds on the wire side.
enum Endpoint {
    Closed,
    /// A kernel socket. The fd is shared with the socket's handles, so a handle's blocking
    /// calls and options never reach a file that reused the number: it closes when the last
    /// holder lets go. `fixed`: the driver addresses it by its registered-file slot.
    Kernel {
        fd: Arc<OwnedFd>,
        fixed: bool,
    },
    /// An AF_XDP socket: the shard's side of its rings.
    Xdp(Box<XdpPort>),
}

impl Endpoint {
    fn xdp(&self) -> Option<&XdpPort> {
        match self {
            Endpoint::Xdp(p) => Some(p),
            _ => None,
        }
    }

    fn xdp_mut(&mut self) -> Option<&mut XdpPort> {
        match self {
            Endpoint::Xdp(p) => Some(p),
            _ => None,
        }
    }

    fn is_xdp(&self) -> bool {
        matches!(self, Endpoint::Xdp(_))
    }

    /// Takes the AF_XDP port out (the endpoint is `Closed` until it is put back).
    fn take_xdp(&mut self) -> Option<Box<XdpPort>> {
        match std::mem::replace(self, Endpoint::Closed) {
            Endpoint::Xdp(p) => Some(p),
            other => {
                *self = other;
                None
            }
        }
    }
}

struct SockEntry {
    ep: Endpoint,
    /// The generation of the socket that holds this index now.
    gen: u32,
    delivery: Option<Delivery>,
    live_ops: u32,
    closing: bool,
    /// Ops that reach the kernel one at a time, in the order issued (`op::Lane`: stream
    /// writes, which could interleave their bytes when the socket buffer fills; receives
    /// posted ahead, which would all wake for each datagram). The one in the kernel holds
    /// the lane; the rest wait in its FIFO (threaded through their op slots).
    lanes: [LaneState; 2],
    /// The QoS flow its sends go through.
    flow: Option<u16>,
    /// Its received datagrams fan out to subscribers instead of completing.
    fanout: Option<Box<GroupState>>,
    /// Its traffic class (set_traffic / set_flow): inbound priority.
    class: Option<TrafficType>,
    /// The TOS every datagram it sends carries as a control message (the kernel refused
    /// the socket option).
    tos_cmsg: Option<u8>,
    /// What `porto stats` shows of it.
    desc: SockDesc,
    counters: SockCounters,
}

/// A socket's lane: whether an op holds it (is in the kernel), and who waits.
#[derive(Clone, Copy, Debug)]
struct LaneState {
    busy: bool,
    fifo: op::Fifo,
}

impl LaneState {
    const FREE: LaneState = LaneState {
        busy: false,
        fifo: op::Fifo::EMPTY,
    };
}

impl SockEntry {
    fn open(gen: u32, ep: Endpoint, delivery: Option<Delivery>, desc: SockDesc) -> SockEntry {
        SockEntry {
            ep,
            gen,
            delivery,
            live_ops: 0,
            closing: false,
            lanes: [LaneState::FREE; 2],
            flow: None,
            fanout: None,
            class: None,
            tos_cmsg: None,
            desc,
            counters: SockCounters::default(),
        }
    }
}

/// What a socket is, read once when it opens (a stream's peer once it is connected).
#[derive(Clone, Copy, Debug)]
struct SockDesc {
    kind: SocketKind,
    transport: Transport,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    /// Where its receive stamps come from.
    stamping: Stamping,
}

impl SockDesc {
    const CLOSED: SockDesc = SockDesc {
        kind: SocketKind::Other,
        transport: Transport::IoUring,
        local: None,
        peer: None,
        stamping: Stamping::Off,
    };

    /// A kernel socket, as the kernel describes it (control path: three syscalls).
    fn of_fd(fd: RawFd, transport: Transport) -> SockDesc {
        let kind = match net::get_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
            Ok(libc::SOCK_DGRAM) => SocketKind::Udp,
            Ok(libc::SOCK_STREAM) => match net::get_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) {
                Ok(1) => SocketKind::TcpListener,
                _ => SocketKind::TcpStream,
            },
            _ => SocketKind::Other,
        };
        SockDesc {
            kind,
            transport,
            local: net::local_addr(fd).ok(),
            peer: net::peer_addr(fd).ok(),
            stamping: crate::socket::kernel_stamping(fd),
        }
    }
}

/// A socket's own counts (plain integers: only its shard writes them).
#[derive(Clone, Copy, Debug, Default)]
struct SockCounters {
    receives: u64,
    recv_bytes: u64,
    sends: u64,
    send_bytes: u64,
    errors: u64,
    drops: u64,
}

impl SockCounters {
    /// Counts a completion on its way to the socket's application.
    fn see(&mut self, c: &Completion) {
        let add = |a: &mut u64, n: u64| *a = a.saturating_add(n);
        match (c.op, &c.result) {
            (OpKind::Recv | OpKind::RecvFrom, Ok(n)) => {
                add(&mut self.receives, 1);
                add(&mut self.recv_bytes, *n as u64);
            }
            (OpKind::Send | OpKind::SendTo, Ok(n)) => {
                add(&mut self.sends, 1);
                add(&mut self.send_bytes, *n as u64);
            }
            (_, Err(_)) => add(&mut self.errors, 1),
            _ => {}
        }
    }
}

/// A shard. In polling mode the application owns it and calls [`poll`](Self::poll) on its own
/// thread; in port mode an engine thread runs it.
pub struct Shard {
    core: Provided,
}

/// The core on the provider it got.
enum Provided {
    Uring(Core<UringDriver>),
    Epoll(Core<EpollDriver>),
}

/// Runs `$e` with `$c` bound to the core, whichever provider it runs on (one match).
macro_rules! on_core {
    ($shard:expr, $c:ident => $e:expr) => {
        match $shard {
            Provided::Uring($c) => $e,
            Provided::Epoll($c) => $e,
        }
    };
}

/// The transport-agnostic shard: sockets, ops, sinks, QoS, fan-out and AF_XDP ports, over a
/// driver.
pub(crate) struct Core<D: Driver> {
    // Field order is drop order: the driver goes first, so the kernel lets go of the
    // provided frames and the pool's pages before they are unmapped.
    driver: D,
    shared: Arc<ShardShared>,
    /// This shard's MSG_RING wake-ups of other shards in flight, by record (the target, in
    /// case it must be woken by its eventfd after all), until their own CQE; and the free
    /// records.
    doorbells: Vec<Option<Arc<ShardShared>>>,
    doorbells_free: Vec<u32>,
    pool: Pool,
    ops: Table,
    sockets: Box<[SockEntry]>,
    events: Vec<Event>,
    local: VecDeque<Completion>,
    /// Completions held back for full ports, per port.
    backlogs: Backlogs,
    touched: Vec<CompletionPort>,
    starved: Vec<u32>,
    scratch: Vec<u32>,
    bufring_frames: u32,
    bufring_target: u32,
    rio_slots: Vec<u32>,
    wake_armed: bool,
    hist: Histogram<u64>,
    last_merge: Instant,
    /// `Config::stats_period_ms`: how often samples are merged and the block published.
    stats_period: Duration,
    /// Something happened since the last merge: an idle shard sleeps at most a period, so
    /// what `porto stats` reads is never older than that.
    unpublished: bool,
    /// What this shard publishes besides counters (fixed at start).
    head: ShardHead,
    /// Room for the published counters (allocated at start).
    publish_scratch: Vec<u64>,
    idle_spin: Duration,
    /// `Config::rio_zc_min_bytes`.
    rio_zc_min: u32,
    /// Sockets that are AF_XDP ports (turned every loop).
    xdp_socks: Vec<u32>,
    /// Completions gathered from an AF_XDP port before delivery (reused, never shrinks).
    local_scratch: Vec<Completion>,
    qos: QosState,
    /// Sends taken out of the QoS queues when their socket closes (reused).
    qos_scratch: Vec<Deferred>,
    /// RIO operations in the op table now (within what the request queues reserved).
    rio_live: u32,
    /// Frames of closed zero-copy AF_XDP sockets, with the time to give up on each.
    quarantine: Vec<(Quarantine, Instant)>,
    /// When the quarantined queues are probed next.
    quarantine_probe: Instant,
    /// Sockets whose fan-out group waits for a reliable subscriber.
    fanout_stalled: Vec<u32>,
    /// Some socket has a class other than BestEffort: reap in inbound-priority order.
    prioritized: bool,
    /// Turns taken (wrapping), to spread clock reads.
    turns: u32,
    /// (rank, CQE index) pairs for that order (reused).
    cqe_order: Vec<(u8, u32)>,
    epoch: Instant,
}

/// MSG_RING wake-ups one polling shard may have in flight (more fall back to eventfds).
const DOORBELLS: u32 = 64;

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        on_core!(&self.core, c => f
            .debug_struct("Shard")
            .field("index", &c.shared.index)
            .field("provider", &c.driver.info().transport)
            .field("live_ops", &c.ops.live())
            .finish())
    }
}

impl Shard {
    /// A polling-mode shard on the calling thread (pinned to `core` if given). Sockets made
    /// through its handle with [`Delivery::Poll`] complete into [`poll`](Self::poll).
    pub fn new(cfg: &Config, core: Option<usize>) -> Result<Shard, SetupError> {
        cfg.validate()?;
        let (telemetry, stats_lost) = crate::telemetry::Publisher::for_config(cfg, 1);
        let shared = new_shared(cfg, 0, telemetry)?;
        let mut lost: Vec<Degraded> = stats_lost.into_iter().collect();
        let core = core.and_then(|c| pin(c).map(|()| c).map_err(|d| lost.push(d)).ok());
        Shard::start(cfg, shared, core, lost)
    }

    /// Builds the shard on the calling thread, which becomes its only submitter, on the
    /// provider `cfg.provider` asks for: `Auto` takes io_uring if the kernel gives it and
    /// falls back to epoll otherwise, with the reason in [`ShardInfo`] and the log.
    /// `lost`: what the kernel already refused on the way (pinning, statistics), reported
    /// with what the provider reports.
    pub(crate) fn start(
        cfg: &Config,
        shared: Arc<ShardShared>,
        core: Option<usize>,
        lost: Vec<Degraded>,
    ) -> Result<Shard, SetupError> {
        let wake_fd = shared.waker.fd();
        let pool = shared.pool.clone();
        let epoll = |fallback: Option<String>| {
            EpollDriver::new(&EpollSetup {
                ops_max: cfg.ops_max,
                sockets_max: cfg.sockets_max,
                recv_frames: cfg.recv_frames,
                cq_entries: cfg.cq_entries,
                wake_fd,
                fallback,
            })
            .map_err(|source| SetupError::Syscall {
                what: "epoll_create1",
                source,
            })
        };
        let uring = || {
            UringDriver::new(&UringSetup {
                ring: RingConfig {
                    sq_entries: cfg.sq_entries,
                    cq_entries: cfg.cq_entries,
                    sqpoll_idle_ms: cfg.sqpoll_idle_ms,
                    sqpoll_cpu: cfg.sqpoll_idle_ms.and(core.map(|c| c as u32)),
                },
                region: pool.region(),
                rio_buffers_max: cfg.rio_buffers_max,
                recv_frames: cfg.recv_frames,
                registered_files: cfg.registered_files,
                sockets_max: cfg.sockets_max,
                wake_fd,
                cq_entries: cfg.cq_entries,
                ops_max: cfg.ops_max,
            })
        };
        let provided = match cfg.provider {
            Provider::IoUring => Provided::Uring(Core::start(cfg, shared, core, uring()?, lost)?),
            Provider::Epoll => Provided::Epoll(Core::start(cfg, shared, core, epoll(None)?, lost)?),
            Provider::Auto => match uring() {
                Ok(d) => Provided::Uring(Core::start(cfg, shared, core, d, lost)?),
                Err(e) => {
                    let why = e.to_string();
                    tracing::warn!(why = %why, "io_uring is not available; the shard runs on epoll");
                    Provided::Epoll(Core::start(cfg, shared, core, epoll(Some(why))?, lost)?)
                }
            },
        };
        Ok(Shard { core: provided })
    }

    pub fn handle(&self) -> ShardHandle {
        on_core!(&self.core, c => ShardHandle {
            shared: c.shared.clone(),
        })
    }

    pub fn pool(&self) -> &Pool {
        on_core!(&self.core, c => &c.pool)
    }

    pub fn stats(&self) -> &Stats {
        on_core!(&self.core, c => &c.shared.stats)
    }

    /// What the shard got from the kernel: its provider and why, its pool.
    pub fn info(&self) -> &ShardInfo {
        on_core!(&self.core, c => c.shared.info.get().expect("set at start"))
    }

    /// The file this shard's statistics are published in for `porto stats`, if any.
    pub fn stats_file(&self) -> Option<&std::path::Path> {
        on_core!(&self.core, c => c.shared.telemetry.as_deref().map(crate::telemetry::Publisher::path))
    }

    /// Operations in flight.
    pub fn live_ops(&self) -> usize {
        on_core!(&self.core, c => c.live_ops())
    }

    /// Frames held by the kernel (or the epoll provider) for receives that pick one.
    pub fn bufring_frames(&self) -> u32 {
        on_core!(&self.core, c => c.bufring_frames)
    }

    /// Frames the shard's rings hold: the provided frames, every AF_XDP port's
    /// FILL/RX/TX/COMPLETION rings, and frames of closed zero-copy sockets in quarantine.
    /// Frame conservation: `pool free + this + frames in operations + frames the application
    /// holds == pool total`.
    pub fn frames_in_rings(&self) -> u32 {
        on_core!(&self.core, c => c.frames_in_rings())
    }

    /// PostQueuedCompletionStatus from this polling-mode shard to another one (messages
    /// between the threads of a thread-per-core application): `target`'s
    /// [`poll`](Self::poll)/[`wait`](Self::wait) returns a `Post` completion with `key`,
    /// `token` and `Ok(bytes)`, in the order sent.
    ///
    /// The post goes through the target's command queue (user space: a busy-polling target
    /// takes it on its next turn, with no syscall on either side). A target asleep in the
    /// kernel is woken, where both shards run io_uring, by an io_uring MSG_RING from this
    /// ring into the target's — no syscall of its own: it is submitted with this shard's next
    /// `poll`/`wait`, batched with its other work — and otherwise by the target's eventfd.
    /// `stats().counters`: `posts_sent`, `post_wakes_ring`, `post_wakes_eventfd`.
    /// `NoBuffers` (backpressure: poll, then retry) while the target's command queue is
    /// full; `Shutdown` if the target is stopping.
    pub fn post_to(&mut self, target: &ShardHandle, key: u64, token: u64, bytes: usize) -> Result<(), Error> {
        on_core!(&mut self.core, c => c.post_to(&target.shared, key, token, bytes))
    }

    /// Polling mode: one non-blocking turn, then moves up to `max` completions into `out`.
    pub fn poll(&mut self, out: &mut Vec<Completion>, max: usize) -> usize {
        on_core!(&mut self.core, c => c.turn_and_take(out, max, None))
    }

    /// Polling mode, blocking: like [`poll`](Self::poll), but a shard with nothing to do
    /// sleeps in the kernel (after its `idle_spin`) until a completion, an AF_XDP frame or
    /// a command arrives, or `timeout` passes: GetQueuedCompletionStatus on a shard the
    /// caller drives. The core is free while it sleeps, for the kernel's own receive work
    /// or another thread.
    pub fn wait(&mut self, out: &mut Vec<Completion>, max: usize, timeout: Duration) -> usize {
        on_core!(&mut self.core, c => c.wait(out, max, timeout))
    }

    /// Polling mode: like [`poll`](Self::poll) but keeps turning (busy-polling, never
    /// sleeping) until something arrives or `timeout` passes.
    pub fn poll_until(&mut self, out: &mut Vec<Completion>, max: usize, timeout: Duration) -> usize {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let n = self.poll(out, max);
            if n > 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                return n;
            }
            std::hint::spin_loop();
        }
    }

    /// Port mode: turns until the engine stops (one provider match for the whole loop).
    pub(crate) fn run(&mut self, shard: usize) {
        on_core!(&mut self.core, c => {
            while !c.shared.is_stopping() {
                if let Err(e) = c.turn(Some(Duration::MAX)) {
                    tracing::error!(shard, error = %e, "shard loop failed; stopping the shard");
                    break;
                }
            }
        })
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        on_core!(&mut self.core, c => c.shutdown())
    }
}

impl<D: Driver> Core<D> {
    pub(crate) fn start(
        cfg: &Config,
        shared: Arc<ShardShared>,
        core: Option<usize>,
        driver: D,
        mut degraded: Vec<Degraded>,
    ) -> Result<Core<D>, SetupError> {
        let pool = shared.pool.clone();
        let provider = driver.info();
        if let Some(e) = pool.region().huge_refused() {
            degraded.push(Degraded::new(
                "huge pages",
                format_args!("mmap(MAP_HUGETLB): {e}"),
                "the pool is on 4 KiB pages with transparent huge pages advised (reserve some: sysctl vm.nr_hugepages)",
            ));
        }
        degraded.extend(provider.degraded.iter().cloned());
        let info = ShardInfo {
            index: shared.index,
            core,
            provider,
            pages: pool.page_kind(),
            frames: pool.total_frames(),
            frame_size: pool.frame_size(),
            registered_buffers: driver.fixed_buffers(),
            registered_files: false,
            bufring_entries: cfg.recv_frames as u16,
            degraded,
        };
        let mut shard = Core {
            driver,
            pool,
            ops: Table::new(cfg.ops_max),
            sockets: (0..cfg.sockets_max)
                .map(|_| SockEntry::open(0, Endpoint::Closed, None, SockDesc::CLOSED))
                .collect(),
            events: Vec::with_capacity(cfg.cq_entries as usize),
            local: VecDeque::with_capacity(cfg.cq_entries as usize),
            backlogs: Backlogs::new(cfg.port_backlog as usize),
            touched: Vec::with_capacity(8),
            starved: Vec::with_capacity(cfg.ops_max as usize),
            scratch: Vec::with_capacity(cfg.ops_max as usize),
            bufring_frames: 0,
            bufring_target: cfg.recv_frames,
            rio_slots: (1..=cfg.rio_buffers_max).rev().collect(),
            wake_armed: false,
            hist: new_histogram(),
            last_merge: Instant::now(),
            stats_period: Duration::from_millis(u64::from(cfg.stats_period_ms)),
            unpublished: false,
            head: ShardHead {
                transport: info.provider.transport,
                task_run: info.provider.ring.as_ref().map(|r| r.task_run),
                fell_back: info.provider.fallback.is_some(),
                core,
                degraded: info
                    .degraded
                    .iter()
                    .filter_map(|d| crate::driver::DEGRADABLE.iter().position(|&n| n == d.feature))
                    .fold(0, |m, i| m | 1 << i),
            },
            publish_scratch: vec![0; shared.telemetry.as_ref().map_or(0, |t| t.counters())],
            idle_spin: Duration::from_micros(u64::from(cfg.idle_spin_us)),
            rio_zc_min: cfg.rio_zc_min_bytes,
            xdp_socks: Vec::with_capacity(8),
            local_scratch: Vec::with_capacity(256),
            qos: QosState {
                flows: (0..FLOWS_MAX).map(|_| None).collect(),
                released: vec![false; FLOWS_MAX].into_boxed_slice(),
                sched: Scheduler::new(QOS_QUEUE_MAX, 1500),
                held: VecDeque::with_capacity(QOS_QUEUE_MAX),
                in_flight: 0,
                link: None,
                staged: None,
            },
            qos_scratch: Vec::with_capacity(QOS_QUEUE_MAX),
            rio_live: 0,
            fanout_stalled: Vec::with_capacity(cfg.sockets_max as usize),
            quarantine: Vec::new(),
            quarantine_probe: Instant::now(),
            prioritized: false,
            turns: 0,
            cqe_order: Vec::with_capacity(cfg.cq_entries as usize),
            epoch: Instant::now(),
            doorbells: (0..DOORBELLS).map(|_| None).collect(),
            doorbells_free: (0..DOORBELLS).rev().collect(),
            shared,
        };
        // Other shards' posts come into this ring (io_uring only).
        match shard.driver.ring_fd() {
            Some(Ok(fd)) => {
                let _ = shard.shared.ring.set(fd);
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "duplicating the ring's fd failed; posts to this shard take its command queue")
            }
            None => {}
        }
        let info = ShardInfo {
            registered_files: shard.driver.fixed_files(),
            ..info
        };
        tracing::info!("{info}");
        let _ = shard.shared.info.set(info);
        shard.refill();
        shard.arm_wake().map_err(|source| SetupError::Syscall {
            what: "arming the wake-up read",
            source,
        })?;
        shard.driver.enter(Enter::Now).map_err(|source| SetupError::Syscall {
            what: "the first submission",
            source,
        })?;
        // Published at once, so `porto stats` shows the shard (and its provider) from its start.
        shard.merge_stats();
        Ok(shard)
    }

    pub(crate) fn live_ops(&self) -> usize {
        self.ops.live()
    }

    /// [`Shard::post_to`].
    pub(crate) fn post_to(
        &mut self,
        target: &Arc<ShardShared>,
        key: u64,
        token: u64,
        bytes: usize,
    ) -> Result<(), Error> {
        if target.is_stopping() {
            return Err(Error::Shutdown);
        }
        if Arc::ptr_eq(target, &self.shared) {
            self.local.push_back(Completion::new(key, token, Ok(bytes)));
            return Ok(());
        }
        target
            .push(Command::Post { key, token, bytes })
            .map_err(|_| Error::NoBuffers)?;
        let st = &self.shared.stats;
        st.add(&st.counters.posts_sent, 1);
        if target.waker.take() {
            self.ring_doorbell(target);
        }
        Ok(())
    }

    /// Wakes `target`, asleep, whose wake-up this shard has claimed: a MSG_RING into its
    /// ring, submitted with this shard's next turn, where both run io_uring; its eventfd
    /// otherwise.
    fn ring_doorbell(&mut self, target: &Arc<ShardShared>) {
        if let (Some(ring), Some(rec)) = (target.ring.get(), self.doorbells_free.pop()) {
            let ud = op::user_data(op::TAG_DOORBELL, 0, 0);
            let sent = op::user_data(op::TAG_DOORBELL_SENT, rec, 0);
            match self.driver.msg_ring(ring.as_raw_fd(), ud, 0, sent) {
                Ok(true) => {
                    self.doorbells[rec as usize] = Some(target.clone());
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "queueing a MSG_RING wake-up failed; the eventfd wakes the shard")
                }
            }
            self.doorbells_free.push(rec);
        }
        target.waker.signal();
        let st = &self.shared.stats;
        st.add(&st.counters.post_wakes_eventfd, 1);
    }

    /// The CQE of this shard's MSG_RING wake-up `rec`: counted if it arrived, else the
    /// target's eventfd wakes it.
    pub(super) fn on_doorbell_sent(&mut self, rec: u32, res: i32) {
        let Some(target) = self.doorbells.get_mut(rec as usize).and_then(Option::take) else {
            let st = &self.shared.stats;
            st.add(&st.counters.stray_cqes, 1);
            return;
        };
        self.doorbells_free.push(rec);
        let st = &self.shared.stats;
        if res >= 0 {
            st.add(&st.counters.post_wakes_ring, 1);
        } else {
            tracing::warn!(res, "a MSG_RING wake-up failed; the target's eventfd wakes it");
            target.waker.signal();
            st.add(&st.counters.post_wakes_eventfd, 1);
        }
    }

    /// The driver (tests drive the simulated one through it).
    #[cfg(test)]
    pub(crate) fn driver(&mut self) -> &mut D {
        &mut self.driver
    }

    pub(crate) fn frames_in_rings(&self) -> u32 {
        self.quarantine.iter().map(|q| q.0.frames.len() as u32).sum::<u32>()
            + self.bufring_frames
            + self
                .xdp_socks
                .iter()
                .filter_map(|&s| self.sockets[s as usize].ep.xdp())
                .map(|p| p.frames_held())
                .sum::<u32>()
    }

    fn wait(&mut self, out: &mut Vec<Completion>, max: usize, timeout: Duration) -> usize {
        // A timeout too long to add to now (Duration::MAX) waits until something arrives.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
            let n = self.turn_and_take(out, max, Some(left));
            if n > 0 || left.is_zero() {
                return n;
            }
        }
    }

    /// One turn (sleeping up to `sleep` if idle) unless completions are already waiting,
    /// then moves up to `max` of them into `out`.
    pub(crate) fn turn_and_take(&mut self, out: &mut Vec<Completion>, max: usize, sleep: Option<Duration>) -> usize {
        if self.local.is_empty() {
            if let Err(e) = self.turn(sleep) {
                tracing::error!(error = %e, "shard turn failed");
            }
        }
        let n = max.min(self.local.len());
        out.extend(self.local.drain(..n));
        n
    }

    /// One turn: take commands, submit, reap, deliver. With `sleep`, sleeps in the kernel
    /// for up to that long when there is nothing to do (`Duration::MAX`: until woken, the
    /// port-mode thread); `None` never sleeps (polling).
    pub(crate) fn turn(&mut self, sleep: Option<Duration>) -> io::Result<()> {
        let wait = sleep.is_some_and(|d| !d.is_zero());
        let took = self.take_commands();
        self.unpublished |= took > 0;
        let held_due = self.qos_pump();
        self.refill();
        let xdp_busy = self.xdp_turn();
        self.unpublished |= xdp_busy;
        self.release_quarantine();
        self.fanout_retry();
        let waiting = self.backlogs.is_blocked() || !self.fanout_stalled.is_empty();
        let idle = took == 0 && !waiting && !xdp_busy;
        if wait && idle && self.spin_for_work()? {
            // Work arrived while spinning; it is reaped or taken below.
        } else if wait && idle {
            self.arm_xdp_polls();
            let shared = &self.shared;
            let work = shared.waker.arm(|| !shared.commands.is_empty() || shared.is_stopping());
            if !work {
                // Merging the latency histogram costs tens of µs: never per sleep. Samples
                // not yet published make the sleep a timed one, so they are at most
                // a stats period late.
                // AF_XDP sends complete through a ring that wakes nobody: poll it soon.
                let xdp_tx = self
                    .xdp_socks
                    .iter()
                    .any(|&s| self.sockets[s as usize].ep.xdp().is_some_and(|p| p.tx_in_flight() > 0));
                let timeout = if xdp_tx {
                    Some(Duration::from_micros(100))
                } else if let Some(due) = held_due {
                    // A shaped send is due then.
                    Some(Duration::from_nanos(due.saturating_sub(self.now_ns()).max(1_000)))
                } else {
                    (!self.hist.is_empty() || self.unpublished).then_some(self.stats_period)
                };
                let hold = self
                    .xdp_socks
                    .iter()
                    .filter_map(|&s| self.sockets[s as usize].ep.xdp()?.holding_until())
                    .min()
                    .map(|t| {
                        t.saturating_duration_since(Instant::now())
                            .max(Duration::from_micros(1))
                    });
                // Quarantined frames: probe their queues while asleep too.
                let probe = (!self.quarantine.is_empty()).then_some(QUARANTINE_PROBE);
                let timeout = [timeout, hold, probe, sleep.filter(|&d| d != Duration::MAX)]
                    .into_iter()
                    .flatten()
                    .min();
                self.driver.enter(Enter::Wait(timeout))?;
            }
            self.shared.waker.disarm();
        } else if wait && waiting {
            // A full port or a full reliable subscriber: wait briefly for room (a consumer
            // making room also wakes us), but keep reaping.
            self.driver.enter(Enter::Wait(Some(Duration::from_micros(200))))?;
        } else if wait {
            self.driver.enter(Enter::Now)?;
        } else {
            self.driver.enter(Enter::IfNeeded)?;
        }
        self.reap();
        self.flush();
        // A busy polling shard turns millions of times a second: while it is busy, read the
        // clock for the stats period every 64th turn only; idle turns and port mode (whose
        // turns are rarer) read it every time.
        self.turns = self.turns.wrapping_add(1);
        if (wait || idle || self.turns % 64 == 0) && self.last_merge.elapsed() >= self.stats_period {
            self.merge_stats();
        }
        Ok(())
    }

    /// Before sleeping, yields the core for up to `idle_spin` while watching the command
    /// queue and the CQ: an application thread answering a completion it was just given
    /// (often on this same core) then hands its next operation over without an eventfd
    /// wake-up, and a completion arriving meanwhile is reaped at once.
    fn spin_for_work(&mut self) -> io::Result<bool> {
        if self.idle_spin.is_zero() {
            return Ok(false);
        }
        let end = Instant::now() + self.idle_spin;
        loop {
            if !self.shared.commands.is_empty() || self.shared.is_stopping() {
                return Ok(true);
            }
            self.driver.enter(Enter::Now)?;
            if self.driver.has_events() || self.xdp_rx_ready() {
                return Ok(true);
            }
            if Instant::now() >= end {
                return Ok(false);
            }
            std::thread::yield_now();
        }
    }

    fn merge_stats(&mut self) {
        let st = &self.shared.stats;
        st.merge_latency(&mut self.hist);
        st.set(&st.counters.cq_overflows, self.driver.overflows());
        st.set(&st.counters.bufring_frames, u64::from(self.bufring_frames));
        st.set(&st.counters.pool_free, u64::from(self.pool.free_frames()));
        if let Some(t) = &self.shared.telemetry {
            let mut w = t.begin(self.shared.index, self.head, st, &mut self.publish_scratch);
            for (i, class) in telemetry::class_order().into_iter().enumerate() {
                w.class(&ClassStats {
                    class,
                    queued: self.qos.sched.len(class) as u64,
                    sent: self.qos.sched.dequeued[i],
                    dropped: self.qos.sched.drops[i],
                });
            }
            for (i, e) in self.sockets.iter_mut().enumerate() {
                if e.delivery.is_none() {
                    continue;
                }
                let id = i as u32;
                if let (SocketKind::TcpStream, None, Endpoint::Kernel { fd, .. }) = (e.desc.kind, e.desc.peer, &e.ep) {
                    // Connected since it opened?
                    e.desc.peer = net::peer_addr(fd.as_raw_fd()).ok();
                }
                let c = e.counters;
                w.socket(&SocketStats {
                    id,
                    kind: e.desc.kind,
                    transport: Some(e.desc.transport),
                    local: e.desc.local,
                    peer: e.desc.peer,
                    receives: c.receives,
                    recv_bytes: c.recv_bytes,
                    sends: c.sends,
                    send_bytes: c.send_bytes,
                    errors: c.errors,
                    drops: c.drops,
                    class: e.class,
                    flow: e
                        .flow
                        .and_then(|f| Some((f, self.qos.flows.get(usize::from(f))?.as_ref()?.counters))),
                    fanout: e.fanout.as_ref().map(|g| g.counters()),
                    stamping: e.desc.stamping,
                });
                if let Some(p) = e.ep.xdp() {
                    p.queue_stats(id, |q| w.queue(&q));
                }
                if let Some(g) = &e.fanout {
                    for (index, sub) in g.subscriber_counters().enumerate() {
                        w.subscriber(&SubscriberStats {
                            socket: id,
                            index: index as u32,
                            delivered: sub.delivered,
                            dropped: sub.dropped,
                            depth: sub.depth as u64,
                        });
                    }
                }
            }
        }
        self.last_merge = Instant::now();
        self.unpublished = false;
    }

    fn start_op(&mut self, sock: u32, token: u64, req: Request) {
        let e = &self.sockets[sock as usize];
        if e.ep.is_xdp() && (e.flow.is_none() || !matches!(req, Request::SendTo { .. })) {
            return self.start_xdp_op(sock, token, req);
        }
        if let Request::SendToMany { buf, dests } = req {
            // One send per destination, each its own completion; all read the one frame.
            for (&addr, buf) in dests.iter().zip(buf.shares(dests.len() as u32)) {
                self.start_op(sock, token, Request::SendShared { buf, addr, tos: None });
            }
            return;
        }
        let send_len = match &req {
            Request::SendTo { buf, .. } | Request::Send { buf, .. } => Some(buf.len()),
            Request::SendShared { buf, .. } => Some(buf.len()),
            // Gathered sends are shaped and scheduled like the others (they used to go round
            // the flow).
            Request::SendGather { gather, .. } => Some(gather.total_len()),
            _ => None,
        };
        if let (Some(flow), Some(len)) = (self.sockets[sock as usize].flow, send_len) {
            let len = len as u32;
            self.qos_admit(flow, Deferred { sock, token, req, len });
            return;
        }
        self.start_op_now(sock, token, req, false);
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Starts an operation now (`scheduled`: it counts against the QoS send budget).
    fn start_op_now(&mut self, sock: u32, token: u64, req: Request, scheduled: bool) {
        if self.sockets[sock as usize].ep.is_xdp() {
            // An AF_XDP send goes onto the TX ring at once: it holds no kernel-send budget.
            if scheduled {
                self.qos.in_flight -= 1;
            }
            return self.start_xdp_op(sock, token, req);
        }
        let kind = req.kind();
        let entry = &self.sockets[sock as usize];
        if entry.delivery.is_none() || entry.closing {
            // Only reachable if a handle outlived its socket: the op still completes, once.
            debug_assert!(false, "op on a closed socket");
            return;
        }
        // Slots the request queues reserved and do not use now stay free for them: a RIO
        // request its queue accepted always finds one.
        let rio = matches!(req, Request::Rio(_));
        let held = (self.shared.rio_reserved.load(std::sync::atomic::Ordering::Relaxed)).saturating_sub(self.rio_live)
            as usize;
        let idx = if rio || self.ops.free_count() > held {
            self.ops.alloc()
        } else {
            None
        };
        let Some(idx) = idx else {
            self.shared.stats.add(&self.shared.stats.counters.ops_rejected, 1);
            if scheduled {
                self.qos.in_flight -= 1;
            }
            self.reject(sock, kind, token, req, Error::NoBuffers);
            return;
        };
        self.sockets[sock as usize].live_ops += 1;
        self.rio_live += u32::from(rio);
        // A socket whose TOS option the kernel refused marks each datagram instead.
        let sock_tos = self.sockets[sock as usize].tos_cmsg;
        let st = &self.shared.stats;
        st.add(&st.counters.ops_submitted, 1);
        let s = self.ops.slot(idx);
        s.kind = kind;
        s.sock = sock;
        s.token = token;
        s.started = Instant::now();
        s.scheduled = scheduled;
        match req {
            Request::RecvFrom { multishot, timeout } => {
                s.multishot = multishot;
                s.timeout = if multishot { None } else { timeout };
            }
            Request::RecvScatter { gather, timeout, .. } => {
                s.timeout = timeout;
                s.gather = Some(gather);
            }
            Request::Readable { timeout } => {
                s.readable = true;
                s.timeout = timeout;
            }
            Request::Recv {
                multishot,
                timeout,
                max,
            } => {
                s.multishot = multishot;
                s.timeout = if multishot { None } else { timeout };
                s.recv_max = max;
            }
            Request::SendTo {
                buf,
                addr,
                zerocopy,
                tos,
            } => {
                (s.addr, s.addr_len) = net::to_raw(&addr);
                let tos = tos.or(sock_tos);
                // A per-datagram TOS needs SENDMSG and its control message: not zero-copy.
                s.zerocopy = zerocopy && tos.is_none() && self.pool.same(&buf);
                s.tos = tos;
                s.buf = Some(buf);
            }
            Request::Send { buf, zerocopy } => {
                s.zerocopy = zerocopy && self.pool.same(&buf);
                s.buf = Some(buf);
            }
            Request::SendShared { buf, addr, tos } => {
                (s.addr, s.addr_len) = net::to_raw(&addr);
                s.shared = Some(buf);
                s.tos = tos.or(sock_tos);
            }
            Request::SendToMany { .. } => unreachable!("expanded by start_op"),
            Request::SendGather { gather, addr, tos } => {
                s.tos = tos.or(sock_tos);
                match addr {
                    Some(a) => (s.addr, s.addr_len) = net::to_raw(&a),
                    None => s.addr_len = 0,
                }
                s.gather = Some(gather);
            }
            Request::Accept { multishot } => s.multishot = multishot,
            Request::TxTimestamps { buf } => {
                s.multishot = true;
                s.buf = Some(buf);
            }
            Request::Connect { addr, timeout } => {
                (s.addr, s.addr_len) = net::to_raw(&addr);
                s.timeout = timeout;
            }
            Request::Disconnect => {}
            Request::Rio(mut r) => {
                if let Some(a) = r.addr.take() {
                    (s.addr, s.addr_len) = net::to_raw(&a);
                } else {
                    s.addr_len = 0;
                }
                // Zero-copy for datagrams only: a stream send continued in parts copies.
                // RIOSendEx's control messages and source address need SENDMSG.
                s.zerocopy = r.kind == RioKind::Send
                    && !r.stream
                    && r.control.is_none()
                    && r.ip.is_none()
                    && r.buf.len() >= self.rio_zc_min as usize
                    && r.buf
                        .fixed_slot(&self.shared.rio_slots, &mut self.rio_slots, &mut self.driver)
                        .is_some();
                s.rio = Some(r);
            }
        }
        let s = self.ops.slot(idx);
        let lane = match kind {
            OpKind::Send | OpKind::Disconnect if s.rio.as_ref().is_none_or(|r| r.stream) => Some(op::Lane::Write),
            OpKind::RecvFrom | OpKind::Recv if !s.multishot && s.timeout.is_none() => Some(op::Lane::Read),
            _ => None,
        };
        if let Some(lane) = lane {
            s.lane = Some(lane);
            let l = &mut self.sockets[sock as usize].lanes[lane as usize];
            if l.busy {
                // Behind the one in the kernel: it starts when that one ends.
                let mut fifo = l.fifo;
                self.ops.slot(idx).queued = true;
                self.ops.push_back(&mut fifo, idx);
                self.sockets[sock as usize].lanes[lane as usize].fifo = fifo;
                return;
            }
            l.busy = true;
        }
        if let Err(e) = self.submit_slot(idx) {
            tracing::error!(error = %e, "submitting an operation failed");
            self.fail_slot(idx, &e);
        }
    }

    /// The op holding `sock`'s `lane` ended: the next one waiting takes the lane.
    fn next_in_lane(&mut self, sock: u32, lane: op::Lane) {
        let mut fifo = self.sockets[sock as usize].lanes[lane as usize].fifo;
        let next = self.ops.pop_front(&mut fifo);
        let l = &mut self.sockets[sock as usize].lanes[lane as usize];
        l.fifo = fifo;
        let Some(idx) = next else {
            l.busy = false;
            return;
        };
        self.ops.slot(idx).queued = false;
        if let Err(e) = self.submit_slot(idx) {
            tracing::error!(error = %e, "submitting a queued operation failed");
            self.fail_slot(idx, &e);
        }
    }

    /// Delivers a refused request's completion (with its buffer) without touching the ring.
    fn reject(&mut self, sock: u32, kind: OpKind, token: u64, req: Request, err: Error) {
        if let Request::Rio(r) = req {
            r.complete(token, Err(err), None);
            return;
        }
        let mut c = Completion::of(kind, self.key_of(sock), token, Err(err));
        if let Request::SendShared { addr, .. } = &req {
            c.peer = Some(*addr);
        }
        (c.buffer, c.gather) = req.into_bufs();
        self.deliver_sock(sock, c);
    }

    /// Cancels every live op matching `f`.
    fn cancel_where(&mut self, f: impl Fn(&op::Slot) -> bool) {
        let mut found = std::mem::take(&mut self.scratch);
        self.ops.find(&mut found, |s| f(s) && !s.cancelled);
        for &idx in &found {
            let st = &self.shared.stats;
            st.add(&st.counters.cancels, 1);
            let s = self.ops.slot(idx);
            s.cancelled = true;
            if s.queued {
                // Waiting in its socket's lane, not in the kernel: it ends here (leaving the
                // lane, which it never held).
                let (sock, lane) = (s.sock, s.lane.take().expect("a queued op is in a lane"));
                s.queued = false;
                s.pending = 0;
                s.result = Some(-libc::ECANCELED);
                let mut fifo = self.sockets[sock as usize].lanes[lane as usize].fifo;
                self.ops.unlink(&mut fifo, idx);
                self.sockets[sock as usize].lanes[lane as usize].fifo = fifo;
                self.finish(idx);
                continue;
            }
            if s.starved {
                // Not in the kernel: it ends here.
                s.starved = false;
                s.pending = 0;
                s.result = Some(-libc::ECANCELED);
                self.starved.retain(|&i| i != idx);
                self.finish(idx);
                continue;
            }
            let target = op_ud(s.kind, idx, s.gen);
            if let Err(err) = self.driver.cancel(target) {
                tracing::error!(error = %err, "queueing a cancel failed");
            }
        }
        self.scratch = found;
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        self.driver.arm_wake(op::user_data(op::TAG_WAKE, 0, 0))?;
        self.wake_armed = true;
        Ok(())
    }

    /// Tops the buffer ring up from the pool and re-arms starved multishot receives.
    fn refill(&mut self) {
        let mut pushed = 0;
        while self.bufring_frames < self.bufring_target {
            let Some(frame) = self.pool.take_frame() else { break };
            // SAFETY: the frame was just taken from the free queue, so nobody else holds it;
            // the pool region outlives the driver; bufring_frames < recv_frames (its size).
            unsafe {
                self.driver
                    .provide(frame, self.pool.frame_addr(frame), self.pool.frame_size())
            };
            self.bufring_frames += 1;
            pushed += 1;
        }
        if pushed > 0 {
            self.driver.publish();
        }
        if !self.starved.is_empty() && self.bufring_frames > 0 {
            let mut starved = std::mem::take(&mut self.starved);
            for idx in starved.drain(..) {
                self.ops.slot(idx).starved = false;
                if let Err(e) = self.submit_slot(idx) {
                    tracing::error!(error = %e, "re-arming a receive failed");
                    self.fail_slot(idx, &e);
                }
            }
            self.starved = starved;
        }
    }

    fn maybe_close(&mut self, sock: u32) {
        let e = &mut self.sockets[sock as usize];
        if e.closing && e.live_ops == 0 {
            if let Endpoint::Kernel { fd, fixed } = std::mem::replace(&mut e.ep, Endpoint::Closed) {
                // The driver lets go first (its registered slot), then the fd closes with the
                // last holder.
                self.driver.close(sock, fd.as_raw_fd(), fixed);
            }
            let e = &mut self.sockets[sock as usize];
            e.closing = false;
            let flow = e.flow.take();
            if let Some(Delivery::Port { port, .. }) = e.delivery.take() {
                self.backlogs.detach(&port);
            }
            if let Some(f) = flow {
                self.flow_maybe_free(f);
            }
            self.shared.free_socket_id(sock);
        }
    }

    /// Delivers a receive completion of `sock`, or fans its datagram out to the socket's
    /// subscribers (the completion itself is then consumed: the datagram is theirs).
    fn deliver_recv(&mut self, sock: u32, mut c: Completion) {
        if let (Some(g), true) = (
            self.sockets[sock as usize].fanout.as_mut(),
            c.op == OpKind::RecvFrom && c.more && c.result.is_ok(),
        ) {
            self.sockets[sock as usize].counters.see(&c);
            let buf = c.buffer.take().expect("a successful receive carries its buffer");
            if g.publish(buf, c.peer, c.tos, c.timestamp_ns) && !self.fanout_stalled.contains(&sock) {
                self.fanout_stalled.push(sock);
            }
            return;
        }
        self.deliver_sock(sock, c);
    }

    /// Retries fan-out groups stalled by a full reliable subscriber.
    fn fanout_retry(&mut self) {
        let mut i = 0;
        while i < self.fanout_stalled.len() {
            let sock = self.fanout_stalled[i];
            let stalled = self.sockets[sock as usize].fanout.as_mut().is_some_and(|g| g.retry());
            if stalled {
                i += 1;
            } else {
                self.fanout_stalled.swap_remove(i);
            }
        }
    }

    /// The completion key of open socket `sock`.
    fn key_of(&self, sock: u32) -> u64 {
        self.sockets[sock as usize]
            .delivery
            .as_ref()
            .expect("open socket")
            .key()
    }

    /// Delivers `c` to the sink of open socket `sock` (borrowing its delivery: no reference
    /// count is touched per completion).
    fn deliver_sock(&mut self, sock: u32, c: Completion) {
        let Core {
            sockets,
            local,
            backlogs,
            touched,
            shared,
            ..
        } = self;
        let e = &mut sockets[sock as usize];
        e.counters.see(&c);
        let delivery = e.delivery.as_ref().expect("open socket");
        if !deliver(delivery, c, local, backlogs, touched, &shared.stats) {
            e.counters.drops = e.counters.drops.saturating_add(1);
        }
    }

    /// Delivers `c` to `delivery` (a socket's, taken out of the table or cloned on a control
    /// path).
    fn deliver_to(&mut self, delivery: &Delivery, c: Completion) {
        deliver(
            delivery,
            c,
            &mut self.local,
            &mut self.backlogs,
            &mut self.touched,
            &self.shared.stats,
        );
    }

    /// Retries completions held back by full ports (each port in order), then wakes each
    /// port once.
    fn flush(&mut self) {
        self.backlogs.flush(&mut self.touched);
        for p in self.touched.drain(..) {
            p.wake();
        }
    }

    /// Takes every command accepted before the stop (so each accepted operation starts and
    /// is then cancelled: it ends once, `Aborted`), cancels everything, waits (bounded) for
    /// the kernel to finish, closes every socket, and hands completions that found their
    /// port full to the port's overflow: nothing accepted goes unanswered.
    pub(crate) fn shutdown(&mut self) {
        self.shared.gate.close();
        while self.take_commands() > 0 {}
        self.qos_purge_all();
        self.cancel_where(|_| true);
        if self.wake_armed {
            if let Err(err) = self.driver.cancel(op::user_data(op::TAG_WAKE, 0, 0)) {
                tracing::error!(error = %err, "cancelling the wake-up read failed");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while (self.ops.live() > 0 || self.wake_armed) && Instant::now() < deadline {
            if let Err(e) = self.driver.enter(Enter::Wait(Some(Duration::from_millis(10)))) {
                tracing::error!(error = %e, "entering the kernel failed during shutdown");
                break;
            }
            self.reap();
            self.flush();
            // Starved receives are not in the kernel; end them.
            self.cancel_where(|s| s.starved);
        }
        if self.ops.live() > 0 || self.wake_armed {
            tracing::error!(live = self.ops.live(), "operations still in flight at shutdown");
            // The kernel may still write into op memory: leak it rather than free it under the
            // kernel's feet.
            std::mem::forget(std::mem::replace(&mut self.ops, Table::new(0)));
            self.driver.abandon();
        }
        for sock in std::mem::take(&mut self.xdp_socks) {
            self.close_xdp(sock);
        }
        self.flush();
        self.backlogs.drain_to_overflow();
        for e in self.sockets.iter_mut() {
            e.ep = Endpoint::Closed;
            e.delivery = None;
        }
        self.merge_stats();
    }
}

/// The one place a completion reaches its sink: the poll queue, or a completion port (held
/// back in the port's backlog when full). A port is cloned into `touched` once per turn, to
/// be woken once. False if a completion was lost on the way (a full port's backlog dropped
/// it or an older one).
fn deliver(
    delivery: &Delivery,
    c: Completion,
    local: &mut VecDeque<Completion>,
    backlogs: &mut Backlogs,
    touched: &mut Vec<CompletionPort>,
    st: &Stats,
) -> bool {
    match delivery {
        Delivery::Poll { .. } => local.push_back(c),
        Delivery::Port { port, .. } => match backlogs.deliver(port, c) {
            Delivered::Pushed => {
                if !touched.iter().any(|p| p.ptr_eq(port)) {
                    touched.push(port.clone());
                }
            }
            Delivered::Queued => st.add(&st.counters.port_full, 1),
            Delivered::Dropped | Delivered::Evicted => {
                st.add(&st.counters.port_backlog_drops, 1);
                return false;
            }
            Delivered::Overflowed => {
                st.add(&st.counters.port_overflow, 1);
                touched.push(port.clone());
            }
        },
    }
    true
}

/// The event id of slot `idx`'s operation (accepts carry their own tag: the driver adopts the
/// connections they return).
fn op_ud(kind: OpKind, idx: u32, gen: u32) -> u64 {
    let tag = if kind == OpKind::Accept {
        op::TAG_ACCEPT
    } else {
        op::TAG_OP
    };
    op::user_data(tag, idx, gen)
}

/// An engine's unpinned shard thread runs on every online CPU, whatever mask the thread
/// that started the engine had (a program pinned to one core before `WSAStartup` used to get
/// its shard on that core too). Failure leaves the inherited mask, logged.
pub(crate) fn unpin() {
    if let Err(e) = crate::sys::cpu::online().and_then(|cpus| crate::sys::cpu::allow(&cpus)) {
        tracing::warn!(error = %e, "could not widen an unpinned shard thread's CPU mask; it keeps its creator's");
    }
}

/// Pins the calling thread to `core`; where the kernel refuses (a cpuset without that core,
/// a seccomp profile), the thread runs unpinned and the refusal is returned for the report.
pub(crate) fn pin(core: usize) -> Result<(), Degraded> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    tracing::warn!(core, error = %e, "could not pin the thread to its core; it runs unpinned");
    Err(Degraded::new(
        "cpu pinning",
        format_args!("sched_setaffinity(core {core}): {e}"),
        "the shard thread runs unpinned (the scheduler may move it, and its caches with it)",
    ))
}
