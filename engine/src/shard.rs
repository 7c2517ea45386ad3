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
//! operation or event.

// Handing operations to the driver: the memory each points to lives in its op slot (or in a
// buffer the slot owns) until the op's last event — the one contract of `Driver::push`.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::backlog::{Backlogs, Delivered};
use crate::completion::{Completion, OpKind};
use crate::config::{Config, Provider};
use crate::driver::epoll::{EpollDriver, EpollSetup};
use crate::driver::uring::{UringDriver, UringSetup};
use crate::driver::{Driver, Enter, Event, Prep, Submit, Timeout};
use crate::error::{Error, SetupError};
use crate::fanout::group::GroupState;
use crate::op::{self, Request, Table};
use crate::pool::Pool;
use crate::port::CompletionPort;
pub(crate) use crate::proto::new_shared;
use crate::proto::{Command, ShardShared, SockId};
pub use crate::proto::{Delivery, QosFlow, ShardHandle, ShardInfo, FLOWS_MAX};
use crate::qos::{Admission, Flow, Scheduler, TokenBucket, TrafficType};
use crate::rio::buf::RioKind;
use crate::stats::{new_histogram, Stats};
use crate::sys::net;
use crate::sys::ring::RingConfig;
use crate::xdp::port::{Quarantine, XdpPort};

/// Bytes reserved for the source address in each multishot recvmsg buffer (sockaddr_in6).
const NAME_LEN: u32 = std::mem::size_of::<libc::sockaddr_in6>() as u32;
/// Bytes reserved for control messages in each multishot recvmsg buffer (one IP_TOS or
/// IPV6_TCLASS message, delivered when the socket asked for it with `recv_tos`).
const CONTROL_LEN: usize = 32;
/// How often a busy shard publishes its latency histogram and gauges.
const STATS_PERIOD: Duration = Duration::from_millis(50);
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
    /// Stream writes (sends, disconnect) leave in the order issued, one in the kernel at a
    /// time: two sends in flight on one stream may interleave their bytes when the socket
    /// buffer fills (io_uring retries each on its own). The one in the kernel holds the lane;
    /// the rest wait in this FIFO (threaded through their op slots).
    writing: bool,
    writes: op::Fifo,
    /// The QoS flow its sends go through.
    flow: Option<u16>,
    /// Its received datagrams fan out to subscribers instead of completing.
    fanout: Option<Box<GroupState>>,
    /// Its traffic class (set_traffic / set_flow): inbound priority.
    class: Option<TrafficType>,
}

impl SockEntry {
    fn open(gen: u32, ep: Endpoint, delivery: Option<Delivery>) -> SockEntry {
        SockEntry {
            ep,
            gen,
            delivery,
            live_ops: 0,
            closing: false,
            writing: false,
            writes: op::Fifo::EMPTY,
            flow: None,
            fanout: None,
            class: None,
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
    idle_spin: Duration,
    /// Sockets that are AF_XDP ports (turned every loop).
    xdp_socks: Vec<u32>,
    /// Completions gathered from an AF_XDP port before delivery (reused, never shrinks).
    local_scratch: Vec<Completion>,
    qos: QosState,
    /// Sends taken out of the QoS queues when their socket closes (reused).
    qos_scratch: Vec<Deferred>,
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

/// A send waiting for its turn.
#[derive(Debug)]
struct Deferred {
    sock: u32,
    token: u64,
    req: Request,
    len: u32,
}

/// Flows, the send scheduler, and sends held by shaping.
struct QosState {
    flows: Box<[Option<Flow>]>,
    sched: Scheduler<Deferred>,
    /// (ready at ns, flow, send): held by ShapeOnly/ShapeAndMark until they conform.
    held: VecDeque<(u64, u16, Deferred)>,
    /// Scheduled sends in the kernel now; at most SENDS_IN_FLIGHT_MAX, so the scheduler
    /// (not the kernel's FIFO) decides what goes next.
    in_flight: u32,
    /// The egress link rate, if set: scheduled sends leave no faster (the bottleneck the
    /// scheduler orders traffic for, like a qdisc under a rate limit).
    link: Option<TokenBucket>,
    /// The packet the link is busy with: chosen by the scheduler, waiting for link tokens
    /// (a frame on the wire is not pre-empted).
    staged: Option<Deferred>,
}

/// How often a shard probes the queues of closed zero-copy sockets.
const QUARANTINE_PROBE: Duration = Duration::from_millis(20);
/// How long a shard waits for the kernel to release such a queue before giving up on the
/// frames (they are then never lent out again).
const QUARANTINE_MAX: Duration = Duration::from_secs(10);
/// Scheduled sends a shard keeps in the kernel at once.
const SENDS_IN_FLIGHT_MAX: u32 = 16;
/// Packets per class queue and held packets per shard.
const QOS_QUEUE_MAX: usize = 1024;

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
        let shared = new_shared(cfg, 0)?;
        if let Some(c) = core {
            pin(c);
        }
        Shard::start(cfg, shared, core)
    }

    /// Builds the shard on the calling thread, which becomes its only submitter, on the
    /// provider `cfg.provider` asks for: `Auto` takes io_uring if the kernel gives it and
    /// falls back to epoll otherwise, with the reason in [`ShardInfo`] and the log.
    pub(crate) fn start(cfg: &Config, shared: Arc<ShardShared>, core: Option<usize>) -> Result<Shard, SetupError> {
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
            })
        };
        let provided = match cfg.provider {
            Provider::IoUring => Provided::Uring(Core::start(cfg, shared, core, uring()?)?),
            Provider::Epoll => Provided::Epoll(Core::start(cfg, shared, core, epoll(None)?)?),
            Provider::Auto => match uring() {
                Ok(d) => Provided::Uring(Core::start(cfg, shared, core, d)?),
                Err(e) => {
                    let why = e.to_string();
                    tracing::warn!(why = %why, "io_uring is not available; the shard runs on epoll");
                    Provided::Epoll(Core::start(cfg, shared, core, epoll(Some(why))?)?)
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
    ) -> Result<Core<D>, SetupError> {
        let pool = shared.pool.clone();
        let provider = driver.info();
        let uring = provider.ring.is_some();
        let info = ShardInfo {
            index: shared.index,
            core,
            provider,
            pages: pool.page_kind(),
            frames: pool.total_frames(),
            frame_size: pool.frame_size(),
            registered_buffers: uring,
            registered_files: false,
            bufring_entries: cfg.recv_frames as u16,
        };
        let mut shard = Core {
            driver,
            pool,
            ops: Table::new(cfg.ops_max),
            sockets: (0..cfg.sockets_max)
                .map(|_| SockEntry::open(0, Endpoint::Closed, None))
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
            idle_spin: Duration::from_micros(u64::from(cfg.idle_spin_us)),
            xdp_socks: Vec::with_capacity(8),
            local_scratch: Vec::with_capacity(256),
            qos: QosState {
                flows: (0..FLOWS_MAX).map(|_| None).collect(),
                sched: Scheduler::new(QOS_QUEUE_MAX, 1500),
                held: VecDeque::with_capacity(QOS_QUEUE_MAX),
                in_flight: 0,
                link: None,
                staged: None,
            },
            qos_scratch: Vec::with_capacity(QOS_QUEUE_MAX),
            fanout_stalled: Vec::with_capacity(cfg.sockets_max as usize),
            quarantine: Vec::new(),
            quarantine_probe: Instant::now(),
            prioritized: false,
            turns: 0,
            cqe_order: Vec::with_capacity(cfg.cq_entries as usize),
            epoch: Instant::now(),
            shared,
        };
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
        Ok(shard)
    }

    pub(crate) fn live_ops(&self) -> usize {
        self.ops.live()
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
        let held_due = self.qos_pump();
        self.refill();
        let xdp_busy = self.xdp_turn();
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
                // STATS_PERIOD late.
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
                    (!self.hist.is_empty()).then_some(STATS_PERIOD)
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
        if (wait || idle || self.turns % 64 == 0) && self.last_merge.elapsed() >= STATS_PERIOD {
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
        self.last_merge = Instant::now();
    }

    fn take_commands(&mut self) -> usize {
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
                } => {
                    let fixed = self.driver.open(sock, fd.as_raw_fd());
                    let e = &mut self.sockets[sock as usize];
                    debug_assert!(matches!(e.ep, Endpoint::Closed) && e.live_ops == 0);
                    if let Delivery::Port { port, .. } = &delivery {
                        self.backlogs.attach(port);
                    }
                    *e = SockEntry::open(gen, Endpoint::Kernel { fd, fixed }, Some(delivery));
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
                    *e = SockEntry::open(gen, Endpoint::Xdp(port), Some(delivery));
                    self.xdp_socks.push(sock);
                }
                Command::FlowCreate { id, flow } => self.qos.flows[usize::from(id)] = Some(*flow),
                Command::LinkRate { rate_bps, burst_bytes } => {
                    let now = self.now_ns();
                    self.qos.link = rate_bps.map(|r| TokenBucket::new(r, burst_bytes, now));
                }
                Command::SetSocketFlow {
                    sock: SockId { index: sock, .. },
                    flow,
                } => self.sockets[sock as usize].flow = Some(flow),
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
                } => {
                    let e = &mut self.sockets[sock as usize];
                    e.class = Some(traffic);
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
                Command::Op {
                    sock: SockId { index: sock, .. },
                    token,
                    req,
                } => self.start_op(sock, token, req),
                Command::Cancel {
                    sock: SockId { index: sock, .. },
                    token,
                } => {
                    self.qos_purge(sock, Some(token));
                    if self.sockets[sock as usize].ep.is_xdp() {
                        self.cancel_xdp_recv(sock, Some(token));
                    } else {
                        self.cancel_where(|s| s.sock == sock && s.token == token);
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
    fn is_current(&self, id: SockId, cmd: &Command) -> bool {
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
    fn refuse_stale(&mut self, cmd: Command) {
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

    fn start_op(&mut self, sock: u32, token: u64, req: Request) {
        let e = &self.sockets[sock as usize];
        if e.ep.is_xdp() && (e.flow.is_none() || !matches!(req, Request::SendTo { .. })) {
            return self.start_xdp_op(sock, token, req);
        }
        if let Request::SendToMany { buf, dests } = req {
            // One send per destination, each its own completion; all read the one frame.
            for (&addr, buf) in dests.iter().zip(buf.shares(dests.len() as u32)) {
                self.start_op(sock, token, Request::SendShared { buf, addr });
            }
            return;
        }
        let send_len = match &req {
            Request::SendTo { buf, .. } | Request::Send { buf, .. } => Some(buf.len()),
            Request::SendShared { buf, .. } => Some(buf.len()),
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

    /// A send on a flow: shaping decides now, later, or marked; then its class queue.
    fn qos_admit(&mut self, flow: u16, d: Deferred) {
        let now = self.now_ns();
        let Some(f) = self.qos.flows[usize::from(flow)].as_mut() else {
            // A socket's flow always exists (created before it is set).
            return self.start_op_now(d.sock, d.token, d.req, false);
        };
        let decision = f.admit(d.len, now);
        self.qos_place(flow, decision, d);
    }

    fn qos_place(&mut self, flow: u16, decision: Admission, d: Deferred) {
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

    fn qos_place_inner(&mut self, flow: u16, decision: Admission, mut d: Deferred) {
        let Some(f) = self.qos.flows[usize::from(flow)].as_mut() else {
            return;
        };
        let class = match decision {
            Admission::Send { .. } => f.traffic,
            Admission::SendNonConformant => {
                // QOSUseNonConformantMarkings: the excess goes out as best effort, marked so.
                if let Request::SendTo { tos, .. } = &mut d.req {
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
    fn qos_refuse(&mut self, d: Deferred) {
        if self.sockets[d.sock as usize].delivery.is_some() {
            self.reject(d.sock, d.req.kind(), d.token, d.req, Error::NoBuffers);
        }
    }

    /// Sends of `sock` (all of them, or the one with `token`) still waiting in the QoS
    /// queues — held by shaping, queued in the scheduler, or staged for the link — end
    /// `Aborted`: a closing socket's id may be reused at once, so none may start later, and
    /// a cancel must reach every place an op can wait.
    fn qos_purge(&mut self, sock: u32, token: Option<u64>) {
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
        while i < self.qos.held.len() {
            if hit(&self.qos.held[i].2) {
                gone.push(self.qos.held.remove(i).expect("index in range").2);
            } else {
                i += 1;
            }
        }
        for d in gone.drain(..) {
            self.reject(sock, d.req.kind(), d.token, d.req, Error::Aborted);
        }
        self.qos_scratch = gone;
    }

    /// Every socket's sends still in the QoS queues end `Aborted` (shutdown).
    fn qos_purge_all(&mut self) {
        for sock in 0..self.sockets.len() as u32 {
            if self.sockets[sock as usize].delivery.is_some() {
                self.qos_purge(sock, None);
            }
        }
    }

    /// Releases held sends that now conform and starts scheduled sends up to the budget.
    /// Returns when the next held send is due, if any.
    fn qos_pump(&mut self) -> Option<u64> {
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
        let Some(idx) = self.ops.alloc() else {
            self.shared.stats.add(&self.shared.stats.counters.ops_rejected, 1);
            if scheduled {
                self.qos.in_flight -= 1;
            }
            self.reject(sock, kind, token, req, Error::NoBuffers);
            return;
        };
        self.sockets[sock as usize].live_ops += 1;
        let st = &self.shared.stats;
        st.add(&st.counters.ops_submitted, 1);
        let s = self.ops.slot(idx);
        s.kind = kind;
        s.sock = sock;
        s.token = token;
        s.started = Instant::now();
        s.scheduled = scheduled;
        match req {
            Request::RecvFrom { multishot, timeout } | Request::Recv { multishot, timeout } => {
                s.multishot = multishot;
                s.timeout = if multishot { None } else { timeout };
            }
            Request::SendTo {
                buf,
                addr,
                zerocopy,
                tos,
            } => {
                (s.addr, s.addr_len) = net::to_raw(&addr);
                // A per-datagram TOS needs SENDMSG and its control message: not zero-copy.
                s.zerocopy = zerocopy && tos.is_none() && self.pool.same(&buf);
                s.tos = tos;
                s.buf = Some(buf);
            }
            Request::Send { buf, zerocopy } => {
                s.zerocopy = zerocopy && self.pool.same(&buf);
                s.buf = Some(buf);
            }
            Request::SendShared { buf, addr } => {
                (s.addr, s.addr_len) = net::to_raw(&addr);
                s.shared = Some(buf);
            }
            Request::SendToMany { .. } => unreachable!("expanded by start_op"),
            Request::SendGather { gather, addr } => {
                match addr {
                    Some(a) => (s.addr, s.addr_len) = net::to_raw(&a),
                    None => s.addr_len = 0,
                }
                s.gather = Some(gather);
            }
            Request::Accept { multishot } => s.multishot = multishot,
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
                s.zerocopy = r.kind == RioKind::Send
                    && r.buf
                        .fixed_slot(&self.shared.rio_slots, &mut self.rio_slots, &mut self.driver)
                        .is_some();
                s.rio = Some(r);
            }
        }
        if matches!(kind, OpKind::Send | OpKind::Disconnect) && self.ops.slot(idx).rio.is_none() {
            let e = &mut self.sockets[sock as usize];
            if e.writing {
                // Behind the write in the kernel: it starts when that one ends.
                self.ops.slot(idx).queued = true;
                let mut fifo = e.writes;
                self.ops.push_back(&mut fifo, idx);
                self.sockets[sock as usize].writes = fifo;
                return;
            }
            e.writing = true;
            self.ops.slot(idx).ordered = true;
        }
        if let Err(e) = self.submit_slot(idx) {
            tracing::error!(error = %e, "submitting an operation failed");
            self.fail_slot(idx, &e);
        }
    }

    /// A stream write of `sock` ended: the next one waiting takes the lane.
    fn next_write(&mut self, sock: u32) {
        let mut fifo = self.sockets[sock as usize].writes;
        let next = self.ops.pop_front(&mut fifo);
        self.sockets[sock as usize].writes = fifo;
        let Some(idx) = next else {
            self.sockets[sock as usize].writing = false;
            return;
        };
        let s = self.ops.slot(idx);
        s.queued = false;
        s.ordered = true;
        if let Err(e) = self.submit_slot(idx) {
            tracing::error!(error = %e, "submitting a queued stream write failed");
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

    /// Describes slot `idx`'s operation to the driver and queues it (also used to re-arm and
    /// to continue).
    fn submit_slot(&mut self, idx: u32) -> io::Result<()> {
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
                let (ptr, len) = r.buf.raw(r.kind);
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
            (OpKind::Recv, _) if s.multishot => Prep::RecvMulti,
            (OpKind::Recv, _) => Prep::Recv { len: frame_size },
            (OpKind::SendTo | OpKind::Send, _) if s.gather.is_some() => {
                let n = s.gather.as_ref().map_or(0, |g| g.fill_iovecs(&mut s.iovs));
                s.msg = net::msghdr(&mut s.addr, s.addr_len, &mut s.iovs[0]);
                s.msg.msg_iovlen = n;
                if s.addr_len == 0 {
                    s.msg.msg_name = std::ptr::null_mut();
                }
                let wait_all = if s.kind == OpKind::Send { libc::MSG_WAITALL } else { 0 };
                Prep::SendMsg {
                    msg: &s.msg,
                    flags: libc::MSG_NOSIGNAL | wait_all,
                }
            }
            (OpKind::SendTo, _) if s.tos.is_some() => {
                let buf = s.buf.as_ref().expect("a re-marked send holds its buffer");
                let (ptr, len) = buf.raw();
                s.iov = libc::iovec {
                    iov_base: ptr.cast(),
                    iov_len: len as usize,
                };
                s.msg = net::msghdr(&mut s.addr, s.addr_len, &mut s.iov);
                let v6 = i32::from(s.addr.ss_family) == libc::AF_INET6;
                let n = net::tos_cmsg(&mut s.control, v6, s.tos.unwrap_or(0));
                s.msg.msg_control = s.control.as_mut_ptr().cast();
                s.msg.msg_controllen = n;
                Prep::SendMsg {
                    msg: &s.msg,
                    flags: libc::MSG_NOSIGNAL,
                }
            }
            (OpKind::SendTo | OpKind::Send, _) => {
                let (ptr, len) = match (&s.buf, &s.shared) {
                    (Some(b), _) => {
                        let (p, l) = b.raw();
                        (p.cast_const(), l)
                    }
                    (None, Some(b)) => b.raw(),
                    (None, None) => unreachable!("send slot holds its buffer"),
                };
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
                // Waiting behind another write, not in the kernel: it ends here.
                let sock = s.sock;
                s.queued = false;
                s.pending = 0;
                s.result = Some(-libc::ECANCELED);
                let mut fifo = self.sockets[sock as usize].writes;
                self.ops.unlink(&mut fifo, idx);
                self.sockets[sock as usize].writes = fifo;
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

    fn reap(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        self.driver.reap(&mut events);
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
    fn cqe_rank(&self, ud: u64) -> u8 {
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

    fn on_event(&mut self, ev: Event) {
        let Event {
            ud,
            res,
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
        if s.multishot && (matches!(s.kind, OpKind::RecvFrom | OpKind::Recv | OpKind::Accept)) {
            self.on_multishot(idx, res, more, picked, accepted);
            return;
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
        let s = self.ops.slot(idx);
        if let Some(frame) = picked {
            let len = res.max(0) as u32;
            s.buf = Some(self.pool.adopt(frame, 0, len));
        }
        if accepted.is_some() {
            s.accepted = accepted;
        }
        let stream_send = s.kind == OpKind::Send && s.rio.is_none();
        s.result = Some(if stream_send && res > 0 { s.sent as i32 } else { res });
        s.pending -= 1;
        if s.pending == 0 {
            self.finish(idx);
        }
    }

    fn on_multishot(&mut self, idx: u32, res: i32, more: bool, picked: Option<u32>, accepted: Option<OwnedFd>) {
        let s = self.ops.slot(idx);
        let (kind, token, sock) = (s.kind, s.token, s.sock);
        if res >= 0 {
            let key = self.key_of(sock);
            let mut c = Completion::of(kind, key, token, Ok(res as usize));
            c.more = true;
            match kind {
                OpKind::Accept => {
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
    fn multishot_ended(&mut self, idx: u32) {
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
    fn fail_slot(&mut self, idx: u32, e: &io::Error) {
        let s = self.ops.slot(idx);
        s.pending = 0;
        s.result = Some(-e.raw_os_error().unwrap_or(libc::EIO));
        self.finish(idx);
    }

    /// Ends slot `idx`: builds its terminal completion, delivers it, frees the slot.
    fn finish(&mut self, idx: u32) {
        let s = self.ops.slot(idx);
        debug_assert_eq!(s.pending, 0);
        let res = s.result.take();
        let kind = s.kind;
        let token = s.token;
        let sock = s.sock;
        let timed_out = s.timed_out;
        let zc_copied = s.zc_copied;
        let zerocopy = s.zerocopy;
        let buf = s.buf.take();
        let gather = s.gather.take();
        // A shared send's destination identifies its completion; the frame handle is released.
        let shared_dest = s.shared.take().and_then(|_| net::from_raw(&s.addr, s.addr_len));
        let rio = s.rio.take();
        let multishot = s.multishot;
        let started = s.started;
        if s.scheduled {
            self.qos.in_flight -= 1;
        }
        let receive = rio
            .as_ref()
            .map_or(kind == OpKind::RecvFrom && !multishot, |r| r.kind == RioKind::Receive);
        let peer = if receive {
            net::from_raw(&s.addr, s.msg.msg_namelen)
        } else {
            None
        };
        let accepted_peer = (kind == OpKind::Accept && !multishot)
            .then(|| net::from_raw(&s.addr, s.addr_len))
            .flatten();
        let accepted = s.accepted.take();
        let ordered = std::mem::take(&mut s.ordered);
        self.ops.release(idx);
        let result = match res {
            None => Ok(0),
            Some(r) if r >= 0 => Ok(r as usize),
            Some(r) if timed_out && r == -libc::ECANCELED => Err(Error::TimedOut),
            Some(r) => Err(Error::from_errno(-r)),
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
        let entry = &mut self.sockets[sock as usize];
        entry.live_ops -= 1;
        if let Some(r) = rio {
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
        if ordered {
            self.next_write(sock);
        }
        self.maybe_close(sock);
    }

    /// Turns every AF_XDP port: FILL top-up, RX, COMPLETION, and the wake-up poll. True if
    /// anything was received or completed: the turn must then deliver before it may sleep.
    fn xdp_turn(&mut self) -> bool {
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
            if self.last_merge.elapsed() >= STATS_PERIOD {
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
    fn release_quarantine(&mut self) {
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
    fn arm_xdp_polls(&mut self) {
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
    fn xdp_rx_ready(&mut self) -> bool {
        let socks = &self.xdp_socks;
        let sockets = &mut self.sockets;
        socks
            .iter()
            .any(|&s| sockets[s as usize].ep.xdp_mut().is_some_and(|p| p.rx_ready()))
    }

    fn start_xdp_op(&mut self, sock: u32, token: u64, req: Request) {
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
    fn cancel_xdp_recv(&mut self, sock: u32, token: Option<u64>) {
        let key = self.key_of(sock);
        let Some(port) = self.sockets[sock as usize].ep.xdp_mut() else {
            return;
        };
        if let Some(t) = port.recv_token.filter(|t| token.is_none_or(|want| want == *t)) {
            port.recv_token = None;
            self.deliver_sock(sock, Completion::of(OpKind::RecvFrom, key, t, Err(Error::Aborted)));
        }
    }

    fn close_xdp(&mut self, sock: u32) {
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
        self.shared.free_socket_id(sock);
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
            if let Some(Delivery::Port { port, .. }) = e.delivery.take() {
                self.backlogs.detach(&port);
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
            let buf = c.buffer.take().expect("a successful receive carries its buffer");
            if g.publish(buf, c.peer, c.tos) && !self.fanout_stalled.contains(&sock) {
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
        let delivery = sockets[sock as usize].delivery.as_ref().expect("open socket");
        deliver(delivery, c, local, backlogs, touched, &shared.stats);
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

/// The generation field of an AF_XDP poll's user_data: the socket's generation (low 24
/// bits) above the queue index (8 bits; a port has at most 64 queues).
const XSK_POLL_GEN_MASK: u32 = (1 << 24) - 1;

fn xsk_poll_gen(sock_gen: u32, queue: u32) -> u32 {
    debug_assert!(queue < 256);
    ((sock_gen & XSK_POLL_GEN_MASK) << 8) | (queue & 0xff)
}

fn xsk_poll_split(gen: u32) -> (u32, u32) {
    (gen >> 8, gen & 0xff)
}

/// The one place a completion reaches its sink: the poll queue, or a completion port (held
/// back in the port's backlog when full). A port is cloned into `touched` once per turn, to
/// be woken once.
fn deliver(
    delivery: &Delivery,
    c: Completion,
    local: &mut VecDeque<Completion>,
    backlogs: &mut Backlogs,
    touched: &mut Vec<CompletionPort>,
    st: &Stats,
) {
    match delivery {
        Delivery::Poll { .. } => local.push_back(c),
        Delivery::Port { port, .. } => match backlogs.deliver(port, c) {
            Delivered::Pushed => {
                if !touched.iter().any(|p| p.ptr_eq(port)) {
                    touched.push(port.clone());
                }
            }
            Delivered::Queued => st.add(&st.counters.port_full, 1),
            Delivered::Dropped | Delivered::Evicted => st.add(&st.counters.port_backlog_drops, 1),
            Delivered::Overflowed => {
                st.add(&st.counters.port_overflow, 1);
                touched.push(port.clone());
            }
        },
    }
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

pub(crate) fn pin(core: usize) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        tracing::warn!(core, "could not pin the thread to its core; it runs unpinned");
    }
}
