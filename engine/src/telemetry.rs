//! Statistics another process can read while the engine runs (`porto stats`), as
//! OpenOnload's `onload_stackdump` and VMA's `vma_stats` do: every engine publishes its
//! shards' counters, latency percentiles and provider in one shared-memory file,
//! `/dev/shm/porto.<pid>.<n>` (mode 0600; `PORTO_STATS_DIR` moves it), removed when the engine
//! stops. A crashed process leaves its file behind: [`list`] reports it as stale.
//!
//! Without locks on the data path: each shard rewrites only its own block, at most once per
//! `Config::stats_period_ms`, under a sequence lock (odd while it writes); a reader copies a
//! block and retries if the sequence moved. The file describes itself (counter names are in
//! it), so a reader of another version prints what it finds.
//!
//! ```text
//!  words 0..16    header: magic "PORTOST1", version, pid, shards, counters, block words,
//!                 created (unix ms), period (ms), process name (64 bytes)
//!  then           counter names, 32 bytes each
//!  then per shard seq, updated (unix ms), provider, fell back, core + 1, latency count,
//!                 p50, p99, p99.9, max (ns), 6 reserved, then the counters
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::driver::Transport;
use crate::qos::TrafficType;
use crate::stats::{Counters, Stats};
use crate::sys::shm::Segment;
use crate::wire::DropReason;

const MAGIC: u64 = u64::from_le_bytes(*b"PORTOST1");
const VERSION: u64 = 1;
const HEADER_WORDS: usize = 16;
const NAME_WORDS: usize = 4;
const BLOCK_FIXED: usize = 16;
const NAME_BYTES: usize = 64;

/// Every counter a shard block carries: the shard's counters, AF_XDP drops by reason, and
/// QoS queue drops by class.
pub fn counter_names() -> Vec<String> {
    let mut v: Vec<String> = Counters::NAMES.iter().map(|s| s.to_string()).collect();
    v.extend(
        DropReason::ALL
            .iter()
            .map(|r| format!("xdp_drop_{}", snake(&format!("{r:?}")))),
    );
    v.extend(
        class_order()
            .iter()
            .map(|t| format!("qos_class_drop_{}", snake(&format!("{t:?}")))),
    );
    v
}

/// The classes in the order of `ShardShared::class_drops` (their discriminants).
fn class_order() -> [TrafficType; 6] {
    let mut out = [TrafficType::BestEffort; 6];
    for t in TrafficType::BY_PRIORITY {
        out[t as usize] = t;
    }
    out
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

/// The directory segments live in: `PORTO_STATS_DIR`, else `/dev/shm`.
pub fn dir() -> PathBuf {
    std::env::var_os("PORTO_STATS_DIR").map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from)
}

/// What a shard publishes besides its counters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShardHead {
    pub transport: Transport,
    pub fell_back: bool,
    pub core: Option<usize>,
}

/// One engine's segment, written by its shards.
#[derive(Debug)]
pub(crate) struct Publisher {
    seg: Segment,
    counters: usize,
    block_words: usize,
}

impl Publisher {
    /// The segment of an engine of `shards` shards, if `cfg.stats_publish`; a failure to
    /// create it is reported and the engine runs without (its statistics stay readable
    /// in-process).
    pub(crate) fn for_config(cfg: &Config, shards: usize) -> Option<Arc<Publisher>> {
        if !cfg.stats_publish {
            return None;
        }
        match Publisher::create(shards, cfg.stats_period_ms) {
            Ok(p) => {
                tracing::debug!(path = %p.path().display(), "statistics published for porto stats");
                Some(Arc::new(p))
            }
            Err(e) => {
                tracing::warn!(
                    dir = %dir().display(),
                    error = %e,
                    "cannot publish statistics for `porto stats` (set PORTO_STATS_DIR to a writable directory, or Config::stats_publish = false)"
                );
                None
            }
        }
    }

    /// Creates this engine's segment for `shards` shards.
    fn create(shards: usize, period_ms: u32) -> io::Result<Publisher> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let names = counter_names();
        let counters = names.len();
        let block_words = BLOCK_FIXED + counters;
        let words = HEADER_WORDS + counters * NAME_WORDS + shards * block_words;
        let pid = std::process::id();
        let path = dir().join(format!("porto.{pid}.{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        // A file left by a crashed process that had this pid is stale: replace it.
        let _ = std::fs::remove_file(&path);
        let seg = Segment::create(&path, words)?;
        let w = seg.words();
        let process = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
        for (i, v) in [
            0,
            VERSION,
            u64::from(pid),
            shards as u64,
            counters as u64,
            block_words as u64,
            unix_ms(),
            u64::from(period_ms),
        ]
        .into_iter()
        .enumerate()
        {
            w[i].store(v, Ordering::Relaxed);
        }
        store_text(&w[8..8 + NAME_BYTES / 8], process.trim());
        for (n, nm) in names.iter().enumerate() {
            let at = HEADER_WORDS + n * NAME_WORDS;
            store_text(&w[at..at + NAME_WORDS], nm);
        }
        // The magic last, released: a reader that sees it sees a complete header.
        w[0].store(MAGIC, Ordering::Release);
        Ok(Publisher {
            seg,
            counters,
            block_words,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        self.seg.path()
    }

    /// Counters a shard writes (the length of the scratch it fills).
    pub(crate) fn counters(&self) -> usize {
        self.counters
    }

    /// Writes shard `shard`'s block: `head`, its latency summary and `stats` (its counters,
    /// AF_XDP drops, `class_drops`), using `scratch` (at least [`counters`](Self::counters)
    /// long) — no allocation.
    pub(crate) fn publish(
        &self,
        shard: usize,
        head: ShardHead,
        stats: &Stats,
        class_drops: &[AtomicU64; 6],
        scratch: &mut [u64],
    ) {
        let mut n = stats.counters.load_into(scratch);
        for d in &stats.xdp_drops {
            scratch[n] = d.load(Ordering::Relaxed);
            n += 1;
        }
        for d in class_drops {
            scratch[n] = d.load(Ordering::Relaxed);
            n += 1;
        }
        debug_assert_eq!(n, self.counters);
        let lat = stats.latency_summary();
        let w = self.seg.words();
        let base = HEADER_WORDS + self.counters * NAME_WORDS + shard * self.block_words;
        let block = &w[base..base + self.block_words];
        // Sequence lock: odd while writing. The Release fence keeps the data stores after the
        // odd store; the final Release store keeps them before the even one. Pairs with the
        // reader's Acquire load and Acquire fence in `read_block`.
        let seq = block[0].load(Ordering::Relaxed);
        block[0].store(seq.wrapping_add(1) | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        let fixed = [
            unix_ms(),
            match head.transport {
                Transport::IoUring => 1,
                Transport::Epoll => 2,
                _ => 0,
            },
            u64::from(head.fell_back),
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
        block[0].store((seq | 1).wrapping_add(1), Ordering::Release);
    }
}

/// What a shard pays per publication period, repeatable, for the `telemetry` benchmark: one
/// block written (counters, drops, the four latency quantiles of a histogram holding a
/// spread of samples). Not part of the API.
#[doc(hidden)]
#[derive(Debug)]
pub struct PublishBench {
    p: Publisher,
    stats: Stats,
    drops: [AtomicU64; 6],
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
        Ok(PublishBench {
            p,
            stats,
            drops: Default::default(),
            scratch,
        })
    }

    pub fn publish(&mut self) {
        let head = ShardHead {
            transport: Transport::IoUring,
            fell_back: false,
            core: Some(0),
        };
        self.p.publish(0, head, &self.stats, &self.drops, &mut self.scratch);
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
    /// `Auto` stepped down to this provider.
    pub fell_back: bool,
    pub core: Option<usize>,
    pub updated_unix_ms: u64,
    pub latency: LatencySummary,
    /// (name, value), in the segment's order.
    pub counters: Vec<(String, u64)>,
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

/// The statistics files in [`dir`], oldest name first.
pub fn list() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("porto.") && n[6..].split('.').all(|x| x.parse::<u64>().is_ok()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
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

/// Copies a block consistently (retrying while its writer is inside); `None` if it never
/// settled (a writer that died mid-write).
fn read_block(block: &[AtomicU64]) -> Option<Vec<u64>> {
    for _ in 0..1000 {
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
    None
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
    let need = shards
        .checked_mul(block_words)
        .and_then(|b| counters.checked_mul(NAME_WORDS).map(|n| HEADER_WORDS + n + b));
    if block_words < BLOCK_FIXED + counters || need.is_none_or(|n| n > w.len()) {
        return Err(bad("header sizes do not fit the file"));
    }
    let names: Vec<String> = (0..counters)
        .map(|n| text_of(&w[HEADER_WORDS + n * NAME_WORDS..HEADER_WORDS + (n + 1) * NAME_WORDS]))
        .collect();
    let mut out = Vec::with_capacity(shards);
    for i in 0..shards {
        let base = HEADER_WORDS + counters * NAME_WORDS + i * block_words;
        let b = read_block(&w[base..base + block_words]).ok_or_else(|| bad("a shard block never settled"))?;
        out.push(ShardStats {
            index: i,
            provider: match b[2] {
                1 => Some(Transport::IoUring),
                2 => Some(Transport::Epoll),
                _ => None,
            },
            fell_back: b[3] != 0,
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

    fn temp_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("porto-telemetry-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn names_are_unique_and_fit_their_slot() {
        let names = counter_names();
        let set: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(set.len(), names.len());
        assert!(names.iter().all(|n| n.len() < NAME_WORDS * 8), "{names:?}");
        assert!(names.contains(&"xdp_drop_partial_udp_checksum".to_string()));
        assert!(names.contains(&"qos_class_drop_best_effort".to_string()));
    }

    /// A writer rewriting a block as fast as it can, every counter equal to the same
    /// sequence number; readers must never see two different values in one copy.
    #[test]
    fn a_reader_never_sees_a_torn_block() {
        let path = temp_dir().join("porto.torn");
        let _ = std::fs::remove_file(&path);
        let words = HEADER_WORDS + 64;
        let seg = std::sync::Arc::new(Segment::create(&path, words).unwrap());
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
