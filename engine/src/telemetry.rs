//! Statistics another process can read while the engine runs (`porto stats`), as
//! OpenOnload's `onload_stackdump` and VMA's `vma_stats` do: every engine publishes its
//! shards' counters, latency percentiles and provider in one shared-memory segment, a memfd
//! `porto.<pid>.<n>` (mode 0600) found through `/proc/<pid>/fd`, gone with the engine or its
//! process however it ends. Files earlier builds left in [`dir`] are still listed (stale once
//! their process is gone, removed by `porto stats --clean`).
//!
//! Without locks on the data path: each shard rewrites only its own block, at most once per
//! `Config::stats_period_ms`, under a sequence lock (odd while it writes); a reader copies a
//! block and retries if the sequence moved. The file describes itself (counter names are in
//! it), so a reader of another version prints what it finds.
//!
//! ```text
//!  words 0..24    header: magic "PORTOST1", version, pid, shards, counters, block words,
//!                 created (unix ms), period (ms), process name (64 bytes), then the
//!                 sections' shapes: socket slots, socket words, queue slots, queue words,
//!                 subscriber slots, subscriber words, classes, class words
//!  then           counter names, 32 bytes each
//!  then per shard seq, updated (unix ms), provider, fell back, core + 1, latency count,
//!                 p50, p99, p99.9, max (ns), sockets listed, sockets not listed (no slot),
//!                 queues listed, queues not listed, subscribers listed, not listed;
//!                 the counters; a record per QoS class; the socket, AF_XDP queue and
//!                 fan-out subscriber records (see `SocketStats`, `QueueStats`,
//!                 `SubscriberStats`: each encodes and decodes itself here)
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::driver::{Degraded, Transport, DEGRADABLE};
use crate::fanout::group::GroupCounters;
use crate::qos::{FlowCounters, TrafficType};
use crate::stats::{Counters, Stats};
use crate::sys::ring::TaskRunMode;
use crate::sys::shm::Segment;
use crate::sys::xsk::XskStatistics;
use crate::wire::DropReason;
use crate::xdp::program::{ProgramCounters, Stamping};

const MAGIC: u64 = u64::from_le_bytes(*b"PORTOST1");
const VERSION: u64 = 2;
const HEADER_WORDS: usize = 24;
const NAME_WORDS: usize = 4;
const BLOCK_FIXED: usize = 16;
const NAME_BYTES: usize = 64;

/// Every counter a shard block carries: the shard's counters and AF_XDP drops by reason.
pub fn counter_names() -> Vec<String> {
    let mut v: Vec<String> = Counters::NAMES.iter().map(|s| s.to_string()).collect();
    v.extend(
        DropReason::ALL
            .iter()
            .map(|r| format!("xdp_drop_{}", snake(&format!("{r:?}")))),
    );
    v
}

/// The classes by discriminant (the order of a block's class records).
pub fn class_order() -> [TrafficType; CLASSES] {
    let mut out = [TrafficType::BestEffort; CLASSES];
    for t in TrafficType::BY_PRIORITY {
        out[t as usize] = t;
    }
    out
}

/// Sockets a shard lists (more are counted as not listed).
pub const SOCKET_SLOTS: usize = 64;
/// AF_XDP queues a shard lists.
pub const QUEUE_SLOTS: usize = 32;
/// Fan-out subscribers a shard lists.
pub const SUBSCRIBER_SLOTS: usize = 64;
const SOCKET_WORDS: usize = 24;
const QUEUE_WORDS: usize = 16;
const SUBSCRIBER_WORDS: usize = 4;
const CLASS_WORDS: usize = 4;
const CLASSES: usize = 6;

/// What a socket record describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    Udp,
    TcpListener,
    TcpStream,
    /// A UDP socket on AF_XDP.
    XdpUdp,
    /// A kernel socket of another type.
    Other,
}

impl SocketKind {
    const ALL: [SocketKind; 5] = [
        SocketKind::Udp,
        SocketKind::TcpListener,
        SocketKind::TcpStream,
        SocketKind::XdpUdp,
        SocketKind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SocketKind::Udp => "udp",
            SocketKind::TcpListener => "tcp-listener",
            SocketKind::TcpStream => "tcp",
            SocketKind::XdpUdp => "udp-af_xdp",
            SocketKind::Other => "other",
        }
    }
}

const TRANSPORTS: [Transport; 4] = [
    Transport::IoUring,
    Transport::Epoll,
    Transport::AfXdpCopy,
    Transport::AfXdpZeroCopy,
];

/// `Some(x)` as its index in `all` + 1, `None` as 0 (the encoding of every enum here).
fn code_of<T: PartialEq>(all: &[T], x: Option<T>) -> u64 {
    x.and_then(|x| all.iter().position(|a| *a == x))
        .map_or(0, |i| i as u64 + 1)
}

fn of_code<T: Copy>(all: &[T], code: u64) -> Option<T> {
    all.get(usize::try_from(code.checked_sub(1)?).ok()?).copied()
}

/// An address in 3 words: family (4, 6; 0 none) | port << 16, then the 16 address bytes.
fn put_addr(w: &mut [u64], a: Option<SocketAddr>) {
    let (fam, port, bytes) = match a {
        Some(SocketAddr::V4(a)) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.ip().octets());
            (4u64, a.port(), b)
        }
        Some(SocketAddr::V6(a)) => (6, a.port(), a.ip().octets()),
        None => (0, 0, [0; 16]),
    };
    w[0] = fam | u64::from(port) << 16;
    w[1] = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    w[2] = u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes"));
}

fn get_addr(w: &[u64]) -> Option<SocketAddr> {
    let port = (w[0] >> 16) as u16;
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&w[1].to_le_bytes());
    b[8..].copy_from_slice(&w[2].to_le_bytes());
    match w[0] & 0xffff {
        4 => Some(SocketAddr::from((<[u8; 4]>::try_from(&b[..4]).ok()?, port))),
        6 => Some(SocketAddr::from((b, port))),
        _ => None,
    }
}

/// One socket as its shard last published it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketStats {
    /// Its index in the shard's socket table.
    pub id: u32,
    pub kind: SocketKind,
    pub transport: Option<Transport>,
    pub local: Option<SocketAddr>,
    /// The connected peer (streams, connected datagram sockets).
    pub peer: Option<SocketAddr>,
    /// Datagrams or stream chunks received (fanned-out datagrams included).
    pub receives: u64,
    pub recv_bytes: u64,
    pub sends: u64,
    pub send_bytes: u64,
    /// Operations that ended in an error (timeouts and cancels included).
    pub errors: u64,
    /// Completions lost on the way to the application (its completion port stayed full).
    pub drops: u64,
    /// Its QoS traffic class, if set.
    pub class: Option<TrafficType>,
    /// Its QoS flow: (id, counters).
    pub flow: Option<(u16, FlowCounters)>,
    /// Its fan-out group, if it has one.
    pub fanout: Option<GroupCounters>,
    /// Where its receive stamps come from (AF_XDP sockets that asked for them; `Off` else).
    pub stamping: Stamping,
}

impl SocketStats {
    fn encode(&self) -> [u64; SOCKET_WORDS] {
        let mut w = [0u64; SOCKET_WORDS];
        w[0] = u64::from(self.id) + 1;
        w[1] = code_of(&SocketKind::ALL, Some(self.kind))
            | code_of(&TRANSPORTS, self.transport) << 8
            | code_of(&class_order(), self.class) << 16
            | u64::from(self.flow.is_some()) << 24
            | u64::from(self.fanout.is_some()) << 25
            | code_of(&Stamping::ALL, Some(self.stamping)) << 26
            | self.flow.map_or(0, |f| u64::from(f.0)) << 32;
        put_addr(&mut w[2..5], self.local);
        put_addr(&mut w[5..8], self.peer);
        w[8..14].copy_from_slice(&[
            self.receives,
            self.recv_bytes,
            self.sends,
            self.send_bytes,
            self.errors,
            self.drops,
        ]);
        if let Some((_, f)) = self.flow {
            w[14..19].copy_from_slice(&[f.sent, f.sent_bytes, f.delayed, f.non_conformant, f.dropped]);
        }
        if let Some(g) = self.fanout {
            w[19..23].copy_from_slice(&[g.received, g.stalls, g.overflow, g.subscribers]);
        }
        w
    }

    fn decode(w: &[u64]) -> Option<SocketStats> {
        let id = u32::try_from(w[0].checked_sub(1)?).ok()?;
        let flags = w[1];
        Some(SocketStats {
            id,
            kind: of_code(&SocketKind::ALL, flags & 0xff).unwrap_or(SocketKind::Other),
            transport: of_code(&TRANSPORTS, flags >> 8 & 0xff),
            class: of_code(&class_order(), flags >> 16 & 0xff),
            local: get_addr(&w[2..5]),
            peer: get_addr(&w[5..8]),
            receives: w[8],
            recv_bytes: w[9],
            sends: w[10],
            send_bytes: w[11],
            errors: w[12],
            drops: w[13],
            flow: (flags >> 24 & 1 == 1).then(|| {
                (
                    (flags >> 32) as u16,
                    FlowCounters {
                        sent: w[14],
                        sent_bytes: w[15],
                        delayed: w[16],
                        non_conformant: w[17],
                        dropped: w[18],
                    },
                )
            }),
            stamping: of_code(&Stamping::ALL, flags >> 26 & 0x7).unwrap_or(Stamping::Off),
            fanout: (flags >> 25 & 1 == 1).then(|| GroupCounters {
                received: w[19],
                stalls: w[20],
                overflow: w[21],
                subscribers: w[22],
            }),
        })
    }
}

/// One AF_XDP queue of a socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// The socket (`SocketStats::id`).
    pub socket: u32,
    pub queue: u32,
    pub zero_copy: bool,
    /// Entries in each ring now: FILL (frames lent to the kernel), RX (received, not yet
    /// read), TX (handed to the kernel, not yet sent), COMPLETION (sent, not yet reclaimed).
    pub fill: u32,
    pub rx: u32,
    pub tx: u32,
    pub completion: u32,
    /// The kernel's XDP_STATISTICS for this queue.
    pub kernel: XskStatistics,
    /// The interface's XDP program (the same on every queue of it).
    pub program: ProgramCounters,
}

impl QueueStats {
    fn encode(&self) -> [u64; QUEUE_WORDS] {
        let k = &self.kernel;
        let mut w = [0u64; QUEUE_WORDS];
        w[0] = u64::from(self.socket) + 1;
        w[1] = u64::from(self.queue) | u64::from(self.zero_copy) << 32;
        w[2] = u64::from(self.fill) | u64::from(self.rx) << 32;
        w[3] = u64::from(self.tx) | u64::from(self.completion) << 32;
        w[4..13].copy_from_slice(&[
            k.rx_dropped,
            k.rx_invalid_descs,
            k.tx_invalid_descs,
            k.rx_ring_full,
            k.rx_fill_ring_empty_descs,
            k.tx_ring_empty_descs,
            self.program.steered,
            self.program.passed,
            self.program.filtered,
        ]);
        w
    }

    fn decode(w: &[u64]) -> Option<QueueStats> {
        Some(QueueStats {
            socket: u32::try_from(w[0].checked_sub(1)?).ok()?,
            queue: w[1] as u32,
            zero_copy: w[1] >> 32 & 1 == 1,
            fill: w[2] as u32,
            rx: (w[2] >> 32) as u32,
            tx: w[3] as u32,
            completion: (w[3] >> 32) as u32,
            kernel: XskStatistics {
                rx_dropped: w[4],
                rx_invalid_descs: w[5],
                tx_invalid_descs: w[6],
                rx_ring_full: w[7],
                rx_fill_ring_empty_descs: w[8],
                tx_ring_empty_descs: w[9],
            },
            program: ProgramCounters {
                steered: w[10],
                passed: w[11],
                filtered: w[12],
            },
        })
    }
}

/// One subscriber of a fan-out group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// The group's socket (`SocketStats::id`).
    pub socket: u32,
    /// Its place among the group's subscribers.
    pub index: u32,
    pub delivered: u64,
    pub dropped: u64,
    /// Datagrams waiting in its queue.
    pub depth: u64,
}

impl SubscriberStats {
    fn encode(&self) -> [u64; SUBSCRIBER_WORDS] {
        [
            (u64::from(self.socket) + 1) | (u64::from(self.index) << 32),
            self.delivered,
            self.dropped,
            self.depth,
        ]
    }

    fn decode(w: &[u64]) -> Option<SubscriberStats> {
        Some(SubscriberStats {
            socket: u32::try_from((w[0] & 0xffff_ffff).checked_sub(1)?).ok()?,
            index: (w[0] >> 32) as u32,
            delivered: w[1],
            dropped: w[2],
            depth: w[3],
        })
    }
}

/// One QoS class's send queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassStats {
    pub class: TrafficType,
    /// Sends waiting in the class queue now.
    pub queued: u64,
    /// Sends the scheduler took from it.
    pub sent: u64,
    /// Sends refused because it was full.
    pub dropped: u64,
}

fn snake(camel: &str) -> String {
    let mut s = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where earlier builds left their statistics files: `PORTO_STATS_DIR`, else `/dev/shm`.
pub fn dir() -> PathBuf {
    std::env::var_os("PORTO_STATS_DIR").map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from)
}

/// What a shard publishes besides its counters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShardHead {
    pub transport: Transport,
    /// io_uring's set-up mode (None under epoll).
    pub task_run: Option<TaskRunMode>,
    pub fell_back: bool,
    pub core: Option<usize>,
    /// Features the kernel refused (bit i: `DEGRADABLE[i]`).
    pub degraded: u64,
}

const TASK_RUN: [TaskRunMode; 4] = [
    TaskRunMode::Deferred,
    TaskRunMode::Cooperative,
    TaskRunMode::Signal,
    TaskRunMode::SqPoll,
];

/// Where each part of a shard block lies (word offsets from the block's start).
#[derive(Clone, Copy, Debug)]
struct Layout {
    counters: usize,
    classes: usize,
    sockets: usize,
    queues: usize,
    subscribers: usize,
    words: usize,
}

impl Layout {
    fn new(counters: usize) -> Layout {
        let classes = BLOCK_FIXED + counters;
        let sockets = classes + CLASSES * CLASS_WORDS;
        let queues = sockets + SOCKET_SLOTS * SOCKET_WORDS;
        let subscribers = queues + QUEUE_SLOTS * QUEUE_WORDS;
        Layout {
            counters,
            classes,
            sockets,
            queues,
            subscribers,
            words: subscribers + SUBSCRIBER_SLOTS * SUBSCRIBER_WORDS,
        }
    }
}

/// The shapes a header records after the process name (words 16..24).
const SHAPES: [u64; 8] = [
    SOCKET_SLOTS as u64,
    SOCKET_WORDS as u64,
    QUEUE_SLOTS as u64,
    QUEUE_WORDS as u64,
    SUBSCRIBER_SLOTS as u64,
    SUBSCRIBER_WORDS as u64,
    CLASSES as u64,
    CLASS_WORDS as u64,
];

/// One engine's segment, written by its shards.
#[derive(Debug)]
pub(crate) struct Publisher {
    seg: Segment,
    layout: Layout,
}

impl Publisher {
    /// The segment of an engine of `shards` shards, if `cfg.stats_publish`; a failure to
    /// create it is reported and the engine runs without (its statistics stay readable
    /// in-process).
    pub(crate) fn for_config(cfg: &Config, shards: usize) -> (Option<Arc<Publisher>>, Option<Degraded>) {
        if !cfg.stats_publish {
            return (None, None);
        }
        match Publisher::create(shards, cfg.stats_period_ms) {
            Ok(p) => {
                tracing::debug!(path = %p.path().display(), "statistics published for porto stats");
                (Some(Arc::new(p)), None)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot publish statistics for `porto stats` (memfd_create refused)");
                (
                    None,
                    Some(Degraded::new(
                        "stats publishing",
                        format_args!("memfd_create: {e}"),
                        "`porto stats` cannot see this engine; in-process statistics are kept",
                    )),
                )
            }
        }
    }

    /// Creates this engine's segment for `shards` shards.
    fn create(shards: usize, period_ms: u32) -> io::Result<Publisher> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let names = counter_names();
        let layout = Layout::new(names.len());
        let words = HEADER_WORDS + names.len() * NAME_WORDS + shards * layout.words;
        let pid = std::process::id();
        let seg = Segment::create_memfd(&format!("porto.{pid}.{}", NEXT.fetch_add(1, Ordering::Relaxed)), words)?;
        let w = seg.words();
        let process = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
        for (i, v) in [
            0,
            VERSION,
            u64::from(pid),
            shards as u64,
            names.len() as u64,
            layout.words as u64,
            unix_ms(),
            u64::from(period_ms),
        ]
        .into_iter()
        .enumerate()
        {
            w[i].store(v, Ordering::Relaxed);
        }
        store_text(&w[8..8 + NAME_BYTES / 8], process.trim());
        for (i, v) in SHAPES.into_iter().enumerate() {
            w[16 + i].store(v, Ordering::Relaxed);
        }
        for (n, nm) in names.iter().enumerate() {
            let at = HEADER_WORDS + n * NAME_WORDS;
            store_text(&w[at..at + NAME_WORDS], nm);
        }
        // The magic last, released: a reader that sees it sees a complete header.
        w[0].store(MAGIC, Ordering::Release);
        Ok(Publisher { seg, layout })
    }

    pub(crate) fn path(&self) -> &Path {
        self.seg.path()
    }

    /// Counters a shard writes (the length of the scratch it fills).
    pub(crate) fn counters(&self) -> usize {
        self.layout.counters
    }

    /// Starts rewriting shard `shard`'s block: `head`, its latency summary and `stats` (its
    /// counters and AF_XDP drops, through `scratch`, at least
    /// [`counters`](Self::counters) long — no allocation). The caller adds the records; the
    /// block is complete when the writer drops.
    pub(crate) fn begin<'a>(
        &'a self,
        shard: usize,
        head: ShardHead,
        stats: &Stats,
        scratch: &mut [u64],
    ) -> BlockWriter<'a> {
        let mut n = stats.counters.load_into(scratch);
        for d in &stats.xdp_drops {
            scratch[n] = d.load(Ordering::Relaxed);
            n += 1;
        }
        debug_assert_eq!(n, self.layout.counters);
        let lat = stats.latency_summary();
        let w = self.seg.words();
        let base = HEADER_WORDS + self.layout.counters * NAME_WORDS + shard * self.layout.words;
        let block = &w[base..base + self.layout.words];
        // Sequence lock: odd while writing. The Release fence keeps the data stores after the
        // odd store; the final Release store (in `drop`) keeps them before the even one.
        // Pairs with the reader's Acquire load and Acquire fence in `read_block`.
        let seq = block[0].load(Ordering::Relaxed);
        block[0].store(seq.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let fixed = [
            unix_ms(),
            code_of(&TRANSPORTS, Some(head.transport)) | code_of(&TASK_RUN, head.task_run) << 8,
            u64::from(head.fell_back) | head.degraded << 8,
            head.core.map_or(0, |c| c as u64 + 1),
        ];
        for (i, v) in fixed.into_iter().enumerate() {
            block[1 + i].store(v, Ordering::Relaxed);
        }
        if let Some(l) = lat {
            for (i, v) in l.into_iter().enumerate() {
                block[5 + i].store(v, Ordering::Relaxed);
            }
        }
        for (i, v) in scratch[..n].iter().enumerate() {
            block[BLOCK_FIXED + i].store(*v, Ordering::Relaxed);
        }
        BlockWriter {
            block,
            layout: self.layout,
            seq,
            listed: [0; 3],
            unlisted: [0; 3],
        }
    }
}

/// A shard block being rewritten (its sequence odd until this drops).
pub(crate) struct BlockWriter<'a> {
    block: &'a [AtomicU64],
    layout: Layout,
    seq: u64,
    /// Records written and records without a slot: sockets, queues, subscribers.
    listed: [usize; 3],
    unlisted: [u64; 3],
}

impl BlockWriter<'_> {
    fn put(&self, at: usize, words: &[u64]) {
        for (w, v) in self.block[at..at + words.len()].iter().zip(words) {
            w.store(*v, Ordering::Relaxed);
        }
    }

    /// Record `which` (0 sockets, 1 queues, 2 subscribers) of `slots` slots at `at`.
    fn record(&mut self, which: usize, at: usize, slots: usize, words: &[u64]) {
        let i = self.listed[which];
        if i < slots {
            self.put(at + i * words.len(), words);
            self.listed[which] += 1;
        } else {
            self.unlisted[which] += 1;
        }
    }

    /// The class queue of `c.class`.
    pub(crate) fn class(&self, c: &ClassStats) {
        let at = self.layout.classes + c.class as usize * CLASS_WORDS;
        self.put(at, &[c.queued, c.sent, c.dropped, 0]);
    }

    pub(crate) fn socket(&mut self, s: &SocketStats) {
        self.record(0, self.layout.sockets, SOCKET_SLOTS, &s.encode());
    }

    pub(crate) fn queue(&mut self, q: &QueueStats) {
        self.record(1, self.layout.queues, QUEUE_SLOTS, &q.encode());
    }

    pub(crate) fn subscriber(&mut self, s: &SubscriberStats) {
        self.record(2, self.layout.subscribers, SUBSCRIBER_SLOTS, &s.encode());
    }
}

impl Drop for BlockWriter<'_> {
    fn drop(&mut self) {
        let [s, q, u] = self.listed.map(|n| n as u64);
        let [su, qu, uu] = self.unlisted;
        self.put(10, &[s, su, q, qu, u, uu]);
        self.block[0].store((self.seq | 1).wrapping_add(1), Ordering::Release);
    }
}

/// What a shard pays per publication period, repeatable, for the `telemetry` benchmark: one
/// block written (counters, drops, the four latency quantiles of a histogram holding a
/// spread of samples, six class records and eight socket records). Not part of the API.
#[doc(hidden)]
#[derive(Debug)]
pub struct PublishBench {
    p: Publisher,
    stats: Stats,
    scratch: Vec<u64>,
}

#[doc(hidden)]
impl PublishBench {
    pub fn new() -> io::Result<PublishBench> {
        let p = Publisher::create(1, 100)?;
        let stats = Stats::default();
        let mut local = crate::stats::new_histogram();
        for i in 1..100_000u64 {
            let _ = local.record(1_000 + (i * 7919) % 5_000_000);
        }
        stats.merge_latency(&mut local);
        let scratch = vec![0; p.counters()];
        Ok(PublishBench { p, stats, scratch })
    }

    pub fn publish(&mut self) {
        let head = ShardHead {
            transport: Transport::IoUring,
            task_run: Some(TaskRunMode::Deferred),
            fell_back: false,
            core: Some(0),
            degraded: 0,
        };
        let mut w = self.p.begin(0, head, &self.stats, &mut self.scratch);
        for class in class_order() {
            w.class(&ClassStats {
                class,
                queued: 1,
                sent: 2,
                dropped: 3,
            });
        }
        for id in 0..8 {
            w.socket(&SocketStats {
                id,
                kind: SocketKind::Udp,
                transport: Some(Transport::IoUring),
                local: Some(SocketAddr::from(([127, 0, 0, 1], 7000))),
                peer: None,
                receives: 1,
                recv_bytes: 2,
                sends: 3,
                send_bytes: 4,
                errors: 0,
                drops: 0,
                class: None,
                flow: None,
                fanout: None,
                stamping: Stamping::Off,
            });
        }
    }
}

/// Latency percentiles of a shard's single-shot operations (submit to completion), ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// One shard as last published.
#[derive(Clone, Debug)]
pub struct ShardStats {
    pub index: usize,
    /// `None` until the shard's first publication.
    pub provider: Option<Transport>,
    /// io_uring's set-up mode (single-issuer+defer, coop, plain, sqpoll); `None` under epoll.
    pub task_run: Option<TaskRunMode>,
    /// `Auto` stepped down to this provider.
    pub fell_back: bool,
    /// Kernel features the shard asked for and was refused (names from
    /// [`DEGRADABLE`]); `porto info` has the reasons.
    pub degraded: Vec<&'static str>,
    pub core: Option<usize>,
    pub updated_unix_ms: u64,
    pub latency: LatencySummary,
    /// (name, value), in the segment's order.
    pub counters: Vec<(String, u64)>,
    /// The QoS class queues, by discriminant.
    pub classes: Vec<ClassStats>,
    /// Open sockets (at most [`SOCKET_SLOTS`]; `sockets_unlisted` more).
    pub sockets: Vec<SocketStats>,
    pub sockets_unlisted: u64,
    /// AF_XDP queues of its sockets.
    pub queues: Vec<QueueStats>,
    pub queues_unlisted: u64,
    /// Fan-out subscribers of its sockets' groups.
    pub subscribers: Vec<SubscriberStats>,
    pub subscribers_unlisted: u64,
}

impl ShardStats {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counters.iter().find(|c| c.0 == name).map(|c| c.1)
    }
}

/// One engine's segment as read.
#[derive(Clone, Debug)]
pub struct EngineStats {
    pub path: PathBuf,
    pub pid: u32,
    pub process: String,
    pub created_unix_ms: u64,
    pub period_ms: u64,
    /// The process is gone: the file is a crash's leftover.
    pub stale: bool,
    pub shards: Vec<ShardStats>,
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The process a segment from [`list`] belongs to: `/proc/<pid>/fd/<fd>` for a live engine's
/// memfd, the name's `<pid>` for an earlier build's file `porto.<pid>.<n>`.
pub fn pid_of(path: &Path) -> Option<u32> {
    if let Ok(rest) = path.strip_prefix("/proc") {
        return rest.components().next()?.as_os_str().to_str()?.parse().ok();
    }
    path.file_name()?.to_str()?.split('.').nth(1)?.parse().ok()
}

/// The file's writer is gone, judged by the pid in its name (`porto.<pid>.<n>`): for files
/// [`read`] cannot parse (another build's format), which `porto stats --clean` still removes.
pub fn orphaned(path: &Path) -> bool {
    !path.starts_with("/proc") && pid_of(path).is_some_and(|pid| !pid_alive(pid))
}

/// Whether `name` is `porto.<pid>.<n>` (with `pid` if given).
fn segment_name(name: &str, pid: Option<u32>) -> bool {
    let mut parts = name.strip_prefix("porto.").map(|r| r.split('.'));
    let Some(parts) = parts.as_mut() else {
        return false;
    };
    let (Some(p), Some(n), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    p.parse::<u32>().is_ok_and(|p| pid.is_none_or(|want| want == p)) && n.parse::<u64>().is_ok()
}

/// Every engine's statistics segment this process may read: the live engines' memfds, found
/// as `/proc/<pid>/fd/<fd>` links to `/memfd:porto.<pid>.<n>` (a forked child holding its
/// parent's is skipped: the name's pid must be the holder's), then files earlier builds left
/// in [`dir`] (`porto stats --clean` removes those whose process is gone).
pub fn list() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = Vec::new();
    for proc_entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = proc_entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let name = target.strip_prefix("/memfd:").map(|t| t.trim_end_matches(" (deleted)"));
            if name.is_some_and(|n| segment_name(n, Some(pid))) {
                v.push(fd.path());
            }
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| segment_name(n, None))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    v.extend(files);
    v
}

fn bytes_of(words: &[AtomicU64]) -> Vec<u8> {
    words
        .iter()
        .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
        .collect()
}

/// Writes `text` into `words`, NUL-padded (cut at their size): what [`text_of`] reads.
fn store_text(words: &[AtomicU64], text: &str) {
    let mut b = text.bytes();
    for w in words {
        let mut chunk = [0u8; 8];
        for (d, s) in chunk.iter_mut().zip(b.by_ref()) {
            *d = s;
        }
        w.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
    }
}

fn text_of(words: &[AtomicU64]) -> String {
    let b = bytes_of(words);
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// How long a reader waits for a block's writer to leave it: a writer preempted mid-write
/// (its sequence odd) holds it for as long as the scheduler keeps it off its CPU — a count
/// of spins (tens of µs) gave up on a live writer under load.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Copies a block consistently (retrying while its writer is inside: spinning briefly, then
/// yielding the CPU — the writer may need it); `None` if it did not settle within
/// `SETTLE_WAIT` (a writer that died mid-write).
fn read_block(block: &[AtomicU64]) -> Option<Vec<u64>> {
    let deadline = std::time::Instant::now() + SETTLE_WAIT;
    loop {
        for _ in 0..100 {
            let s1 = block[0].load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let copy: Vec<u64> = block.iter().map(|w| w.load(Ordering::Relaxed)).collect();
            fence(Ordering::Acquire);
            if block[0].load(Ordering::Relaxed) == s1 {
                return Some(copy);
            }
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::yield_now();
    }
}

/// Reads one segment.
pub fn read(path: &Path) -> io::Result<EngineStats> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
    let seg = Segment::open(path)?;
    let w = seg.words();
    if w.len() < HEADER_WORDS || w[0].load(Ordering::Acquire) != MAGIC {
        return Err(bad("not a porto statistics file (or still being created)"));
    }
    let h: Vec<u64> = w[..8].iter().map(|x| x.load(Ordering::Relaxed)).collect();
    if h[1] != VERSION {
        return Err(bad(&format!("format version {} (this porto reads {VERSION})", h[1])));
    }
    let (pid, shards, counters, block_words) = (h[2] as u32, h[3] as usize, h[4] as usize, h[5] as usize);
    let shapes: Vec<u64> = w[16..24].iter().map(|x| x.load(Ordering::Relaxed)).collect();
    if shapes != SHAPES {
        return Err(bad(&format!(
            "record shapes {shapes:?} (this porto reads {SHAPES:?}): written by another build"
        )));
    }
    let layout = Layout::new(counters);
    let need = shards
        .checked_mul(block_words)
        .and_then(|b| counters.checked_mul(NAME_WORDS).map(|n| HEADER_WORDS + n + b));
    if block_words != layout.words || need.is_none_or(|n| n > w.len()) {
        return Err(bad("header sizes do not fit the file"));
    }
    let names: Vec<String> = (0..counters)
        .map(|n| text_of(&w[HEADER_WORDS + n * NAME_WORDS..HEADER_WORDS + (n + 1) * NAME_WORDS]))
        .collect();
    let mut out = Vec::with_capacity(shards);
    for i in 0..shards {
        let base = HEADER_WORDS + counters * NAME_WORDS + i * block_words;
        let b = read_block(&w[base..base + block_words]).ok_or_else(|| bad("a shard block never settled"))?;
        // Records listed (bounded by the slots: the counts are the writer's, untrusted).
        let records = |at: usize, listed: u64, slots: usize, words: usize| {
            let n = usize::try_from(listed).unwrap_or(slots).min(slots);
            (0..n).map(move |k| at + k * words)
        };
        let order = class_order();
        out.push(ShardStats {
            index: i,
            provider: of_code(&TRANSPORTS, b[2] & 0xff),
            task_run: of_code(&TASK_RUN, b[2] >> 8 & 0xff),
            fell_back: b[3] & 0xff != 0,
            degraded: DEGRADABLE
                .iter()
                .enumerate()
                .filter(|&(i, _)| b[3] >> 8 >> i & 1 == 1)
                .map(|(_, &name)| name)
                .collect(),
            core: b[4].checked_sub(1).map(|c| c as usize),
            updated_unix_ms: b[1],
            latency: LatencySummary {
                count: b[5],
                p50_ns: b[6],
                p99_ns: b[7],
                p999_ns: b[8],
                max_ns: b[9],
            },
            counters: names
                .iter()
                .cloned()
                .zip(b[BLOCK_FIXED..BLOCK_FIXED + counters].iter().copied())
                .collect(),
            classes: (0..CLASSES)
                .map(|c| {
                    let r = &b[layout.classes + c * CLASS_WORDS..];
                    ClassStats {
                        class: order[c],
                        queued: r[0],
                        sent: r[1],
                        dropped: r[2],
                    }
                })
                .collect(),
            sockets: records(layout.sockets, b[10], SOCKET_SLOTS, SOCKET_WORDS)
                .filter_map(|at| SocketStats::decode(&b[at..at + SOCKET_WORDS]))
                .collect(),
            sockets_unlisted: b[11],
            queues: records(layout.queues, b[12], QUEUE_SLOTS, QUEUE_WORDS)
                .filter_map(|at| QueueStats::decode(&b[at..at + QUEUE_WORDS]))
                .collect(),
            queues_unlisted: b[13],
            subscribers: records(layout.subscribers, b[14], SUBSCRIBER_SLOTS, SUBSCRIBER_WORDS)
                .filter_map(|at| SubscriberStats::decode(&b[at..at + SUBSCRIBER_WORDS]))
                .collect(),
            subscribers_unlisted: b[15],
        });
    }
    Ok(EngineStats {
        path: path.to_path_buf(),
        pid,
        process: text_of(&w[8..16]),
        created_unix_ms: h[6],
        period_ms: h[7],
        stale: !pid_alive(pid),
        shards: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_fit_their_slot() {
        let names = counter_names();
        let set: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(set.len(), names.len());
        assert!(names.iter().all(|n| n.len() < NAME_WORDS * 8), "{names:?}");
        assert!(names.contains(&"xdp_drop_partial_udp_checksum".to_string()));
    }

    /// Every record reads back as written: both address families and none, flows and
    /// groups present and absent, every kind, transport and class.
    #[test]
    fn records_round_trip() {
        let classes = class_order();
        for (i, kind) in SocketKind::ALL.into_iter().enumerate() {
            let s = SocketStats {
                id: i as u32 * 1000,
                kind,
                transport: TRANSPORTS.get(i).copied(),
                local: Some(SocketAddr::from(([10, 1, 2, 3], 7000 + i as u16))),
                peer: (i % 2 == 0).then(|| "[fe80::1:2]:65535".parse().unwrap()),
                receives: 1,
                recv_bytes: u64::MAX,
                sends: 3,
                send_bytes: 4,
                errors: 5,
                drops: 6,
                class: classes.get(i).copied(),
                flow: (i % 2 == 1).then_some((
                    u16::MAX - i as u16,
                    FlowCounters {
                        sent: 7,
                        sent_bytes: 8,
                        delayed: 9,
                        non_conformant: 10,
                        dropped: 11,
                    },
                )),
                fanout: (i % 3 == 0).then_some(GroupCounters {
                    received: 12,
                    stalls: 13,
                    overflow: 14,
                    subscribers: 15,
                }),
                stamping: Stamping::ALL[i % Stamping::ALL.len()],
            };
            assert_eq!(SocketStats::decode(&s.encode()), Some(s));
        }
        let q = QueueStats {
            socket: 3,
            queue: 63,
            zero_copy: true,
            fill: u32::MAX,
            rx: 1,
            tx: 2,
            completion: 3,
            kernel: XskStatistics {
                rx_dropped: 4,
                rx_invalid_descs: 5,
                tx_invalid_descs: 6,
                rx_ring_full: 7,
                rx_fill_ring_empty_descs: 8,
                tx_ring_empty_descs: 9,
            },
            program: ProgramCounters {
                steered: 10,
                passed: 11,
                filtered: 12,
            },
        };
        assert_eq!(QueueStats::decode(&q.encode()), Some(q));
        let u = SubscriberStats {
            socket: u32::MAX - 1,
            index: u32::MAX,
            delivered: 1,
            dropped: 2,
            depth: 3,
        };
        assert_eq!(SubscriberStats::decode(&u.encode()), Some(u));
        assert_eq!(
            SocketStats::decode(&[0; SOCKET_WORDS]),
            None,
            "an empty slot is no record"
        );
    }

    /// A writer rewriting a block as fast as it can, every counter equal to the same
    /// sequence number; readers must never see two different values in one copy.
    #[test]
    fn a_reader_never_sees_a_torn_block() {
        let words = HEADER_WORDS + 64;
        let seg = std::sync::Arc::new(Segment::create_memfd("porto.torn", words).unwrap());
        let path = seg.path().to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (seg, stop) = (seg.clone(), stop.clone());
            std::thread::spawn(move || {
                let block = &seg.words()[HEADER_WORDS..];
                let mut v = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    v += 1;
                    let seq = block[0].load(Ordering::Relaxed);
                    block[0].store(seq.wrapping_add(1) | 1, Ordering::Relaxed);
                    fence(Ordering::Release);
                    for w in &block[1..] {
                        w.store(v, Ordering::Relaxed);
                    }
                    block[0].store((seq | 1).wrapping_add(1), Ordering::Release);
                }
                v
            })
        };
        let reader = Segment::open(&path).unwrap();
        let mut seen = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
        while std::time::Instant::now() < deadline {
            if let Some(b) = read_block(&reader.words()[HEADER_WORDS..]) {
                assert!(b[1..].iter().all(|&x| x == b[1]), "torn read: {:?}", &b[..8]);
                seen += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let wrote = writer.join().unwrap();
        assert!(seen > 0 && wrote > 0, "both sides ran ({seen} reads, {wrote} writes)");
        drop(reader);
        drop(seg);
        assert!(!path.exists(), "the creator removes its file");
    }
}
