//! QoS in the shard's send path: the Winsock QOS2 traffic types and their markings, token
//! buckets with the QOS2 shaping behaviours, and a scheduler with a bounded queue per class:
//! Control and Voice strict priority, the other four deficit round robin with weights.
//!
//! Everything takes `now` (ns) as an argument, so it is tested deterministically with a fake
//! clock; nothing allocates after construction.
//!
//! Markings (Microsoft, `QOS_TRAFFIC_TYPE` enumeration, qos2.h,
//! <https://learn.microsoft.com/en-us/windows/win32/api/qos2/ne-qos2-qos_traffic_type>):
//!
//! | traffic type    | DSCP | 802.1p | scheduler        |
//! |-----------------|------|--------|------------------|
//! | Control         | 0x38 | 7      | strict, first    |
//! | Voice           | 0x38 | 7      | strict, second   |
//! | AudioVideo      | 0x28 | 5      | DRR, weight 8    |
//! | ExcellentEffort | 0x28 | 5      | DRR, weight 4    |
//! | BestEffort      | none | none   | DRR, weight 2    |
//! | Background      | 0x08 | 2      | DRR, weight 1    |

use std::collections::VecDeque;

/// QOS_TRAFFIC_TYPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrafficType {
    BestEffort = 0,
    Background = 1,
    ExcellentEffort = 2,
    AudioVideo = 3,
    Voice = 4,
    Control = 5,
}

impl TrafficType {
    /// Highest priority first.
    pub const BY_PRIORITY: [TrafficType; 6] = [
        TrafficType::Control,
        TrafficType::Voice,
        TrafficType::AudioVideo,
        TrafficType::ExcellentEffort,
        TrafficType::BestEffort,
        TrafficType::Background,
    ];

    /// The DSCP code point (6 bits); BestEffort adds no mark (0).
    pub fn dscp(self) -> u8 {
        match self {
            TrafficType::BestEffort => 0,
            TrafficType::Background => 0x08,
            TrafficType::ExcellentEffort | TrafficType::AudioVideo => 0x28,
            TrafficType::Voice | TrafficType::Control => 0x38,
        }
    }

    /// The 802.1p priority, when a VLAN tag is in use; BestEffort adds none.
    pub fn ieee_8021p(self) -> Option<u8> {
        match self {
            TrafficType::BestEffort => None,
            TrafficType::Background => Some(2),
            TrafficType::ExcellentEffort | TrafficType::AudioVideo => Some(5),
            TrafficType::Voice | TrafficType::Control => Some(7),
        }
    }

    /// The IPv4 TOS / IPv6 traffic-class byte (DSCP in the upper six bits, ECN 0).
    pub fn tos(self) -> u8 {
        self.dscp() << 2
    }

    /// SO_PRIORITY for kernel sockets (the 802.1p value, 0 for BestEffort).
    pub fn so_priority(self) -> u32 {
        u32::from(self.ieee_8021p().unwrap_or(0))
    }

    /// Inbound priority: higher is served first when several receive sources are ready
    /// (Control 5 ... Background 0; a socket with no class counts as BestEffort, 1).
    pub fn inbound_rank(self) -> u8 {
        (TrafficType::BY_PRIORITY.len()
            - 1
            - TrafficType::BY_PRIORITY
                .iter()
                .position(|&t| t == self)
                .expect("listed")) as u8
    }

    /// Deficit-round-robin weight; `None` for the strict-priority classes.
    pub fn drr_weight(self) -> Option<u32> {
        match self {
            TrafficType::Control | TrafficType::Voice => None,
            TrafficType::AudioVideo => Some(8),
            TrafficType::ExcellentEffort => Some(4),
            TrafficType::BestEffort => Some(2),
            TrafficType::Background => Some(1),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// QOS_SHAPING: what a flow does with traffic above its rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shaping {
    /// QOSShapeOnly: hold excess until it conforms; no DSCP/802.1p marks.
    ShapeOnly,
    /// QOSShapeAndMark: hold excess until it conforms, and mark.
    ShapeAndMark,
    /// QOSUseNonConformantMarkings: never hold; excess goes out marked best effort.
    UseNonConformantMarkings,
}

/// Largest token-bucket burst: its size in bits must fit in a `u64`.
pub const BURST_BYTES_MAX: u64 = u64::MAX / 8;

/// A token bucket in exact integer arithmetic: tokens are bits scaled by 1e9, so refilling
/// `rate_bps` for `dt` ns adds exactly `rate_bps * dt` units.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_bps: u64,
    burst_bits: u64,
    tokens: u128,
    last_ns: u64,
}

const SCALE: u128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket of `burst_bytes` refilling at `rate_bps`.
    ///
    /// # Panics
    /// If `burst_bytes` exceeds [`BURST_BYTES_MAX`] (the shard API validates it first).
    pub fn new(rate_bps: u64, burst_bytes: u64, now_ns: u64) -> TokenBucket {
        assert!(
            burst_bytes <= BURST_BYTES_MAX,
            "burst of {burst_bytes} B beyond BURST_BYTES_MAX"
        );
        let burst_bits = burst_bytes * 8;
        TokenBucket {
            rate_bps,
            burst_bits,
            tokens: u128::from(burst_bits) * SCALE,
            last_ns: now_ns,
        }
    }

    fn refill(&mut self, now_ns: u64) {
        let dt = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let cap = u128::from(self.burst_bits) * SCALE;
        self.tokens = (self.tokens + u128::from(self.rate_bps) * u128::from(dt)).min(cap);
    }

    /// Takes `bytes` if they conform now.
    pub fn try_take(&mut self, bytes: u32, now_ns: u64) -> bool {
        self.refill(now_ns);
        let need = u128::from(bytes) * 8 * SCALE;
        if self.tokens >= need {
            self.tokens -= need;
            true
        } else {
            false
        }
    }

    /// When `bytes` will conform (now if they already do).
    pub fn ready_at(&mut self, bytes: u32, now_ns: u64) -> u64 {
        self.refill(now_ns);
        let need = u128::from(bytes) * 8 * SCALE;
        if self.tokens >= need || self.rate_bps == 0 {
            return now_ns;
        }
        let wait = (need - self.tokens).div_ceil(u128::from(self.rate_bps));
        now_ns.saturating_add(wait.min(u128::from(u64::MAX)) as u64)
    }

    /// Changes the rate while running (QOSSetFlow); tokens so far are kept.
    pub fn set_rate(&mut self, rate_bps: u64, now_ns: u64) {
        self.refill(now_ns);
        self.rate_bps = rate_bps;
    }

    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }
}

/// What a flow decides for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Send now with this TOS byte.
    Send { tos: u8 },
    /// Hold until this time (ShapeOnly / ShapeAndMark).
    HoldUntil(u64),
    /// Send now, marked non-conformant (best effort: TOS 0).
    SendNonConformant,
}

/// Counters of a flow (QOSQueryFlow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounters {
    pub sent: u64,
    pub sent_bytes: u64,
    pub delayed: u64,
    pub non_conformant: u64,
    pub dropped: u64,
}

/// A QOS2 flow: a traffic type, optionally shaped to a rate.
#[derive(Clone, Debug)]
pub struct Flow {
    pub traffic: TrafficType,
    shaping: Option<(TokenBucket, Shaping)>,
    pub counters: FlowCounters,
}

impl Flow {
    pub fn new(traffic: TrafficType) -> Flow {
        Flow {
            traffic,
            shaping: None,
            counters: FlowCounters::default(),
        }
    }

    /// Shapes the flow to `rate_bps` with a burst of `burst_bytes` (QOSSetOutgoingRate).
    pub fn shape(mut self, rate_bps: u64, burst_bytes: u64, how: Shaping, now_ns: u64) -> Flow {
        self.shaping = Some((TokenBucket::new(rate_bps, burst_bytes, now_ns), how));
        self
    }

    /// Changes the rate while running.
    pub fn set_rate(&mut self, rate_bps: u64, now_ns: u64) {
        if let Some((b, _)) = &mut self.shaping {
            b.set_rate(rate_bps, now_ns);
        }
    }

    fn marked_tos(&self, how: Option<Shaping>) -> u8 {
        match how {
            Some(Shaping::ShapeOnly) => 0,
            _ => self.traffic.tos(),
        }
    }

    /// Decides again for a packet this flow held: a second hold is not counted twice.
    pub fn readmit(&mut self, bytes: u32, now_ns: u64) -> Admission {
        let d = self.admit(bytes, now_ns);
        if matches!(d, Admission::HoldUntil(_)) {
            self.counters.delayed -= 1;
        }
        d
    }

    /// Decides for one `bytes`-long packet at `now_ns`, counting it.
    pub fn admit(&mut self, bytes: u32, now_ns: u64) -> Admission {
        let how = self.shaping.as_ref().map(|s| s.1);
        let tos = self.marked_tos(how);
        let decision = match &mut self.shaping {
            None => Admission::Send { tos },
            Some((b, Shaping::UseNonConformantMarkings)) => {
                if b.try_take(bytes, now_ns) {
                    Admission::Send { tos }
                } else {
                    Admission::SendNonConformant
                }
            }
            Some((b, _)) => {
                if b.try_take(bytes, now_ns) {
                    Admission::Send { tos }
                } else {
                    Admission::HoldUntil(b.ready_at(bytes, now_ns))
                }
            }
        };
        match decision {
            Admission::Send { .. } => {
                self.counters.sent += 1;
                self.counters.sent_bytes += u64::from(bytes);
            }
            Admission::HoldUntil(_) => self.counters.delayed += 1,
            Admission::SendNonConformant => {
                self.counters.non_conformant += 1;
                self.counters.sent += 1;
                self.counters.sent_bytes += u64::from(bytes);
            }
        }
        decision
    }
}

/// A packet waiting in the scheduler: its length and the caller's item.
#[derive(Debug)]
struct Queued<T> {
    len: u32,
    item: T,
}

/// Per-class bounded queues; strict priority for Control and Voice, DRR for the rest.
#[derive(Debug)]
pub struct Scheduler<T> {
    queues: [VecDeque<Queued<T>>; 6],
    capacity: usize,
    deficit: [u64; 6],
    quantum_bytes: u32,
    /// Next DRR class to visit (index into DRR_ORDER).
    rr: usize,
    /// The DRR class currently being served has had its quantum added this round.
    topped_up: bool,
    pub drops: [u64; 6],
    pub dequeued: [u64; 6],
}

const DRR_ORDER: [TrafficType; 4] = [
    TrafficType::AudioVideo,
    TrafficType::ExcellentEffort,
    TrafficType::BestEffort,
    TrafficType::Background,
];

impl<T> Scheduler<T> {
    /// Queues of `capacity` packets per class; DRR quantum `quantum_bytes` × weight.
    pub fn new(capacity: usize, quantum_bytes: u32) -> Scheduler<T> {
        Scheduler {
            queues: std::array::from_fn(|_| VecDeque::with_capacity(capacity)),
            capacity,
            deficit: [0; 6],
            quantum_bytes,
            rr: 0,
            topped_up: false,
            drops: [0; 6],
            dequeued: [0; 6],
        }
    }

    /// Queues `item`; a full class queue refuses it (counted) and hands it back.
    pub fn enqueue(&mut self, class: TrafficType, len: u32, item: T) -> Result<(), T> {
        let q = &mut self.queues[class.index()];
        if q.len() >= self.capacity {
            self.drops[class.index()] += 1;
            return Err(item);
        }
        q.push_back(Queued { len, item });
        Ok(())
    }

    /// Takes out every queued item matching `f` (in class order), handing each to `out`.
    pub fn remove_where(&mut self, f: impl Fn(&T) -> bool, mut out: impl FnMut(T)) {
        for q in &mut self.queues {
            let mut i = 0;
            while i < q.len() {
                if f(&q[i].item) {
                    out(q.remove(i).expect("index in range").item);
                } else {
                    i += 1;
                }
            }
        }
    }

    pub fn len(&self, class: TrafficType) -> usize {
        self.queues[class.index()].len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    /// The next packet to send.
    pub fn dequeue(&mut self) -> Option<(TrafficType, T)> {
        for strict in [TrafficType::Control, TrafficType::Voice] {
            if let Some(q) = self.queues[strict.index()].pop_front() {
                self.dequeued[strict.index()] += 1;
                return Some((strict, q.item));
            }
        }
        if DRR_ORDER.iter().all(|c| self.queues[c.index()].is_empty()) {
            return None;
        }
        loop {
            let class = DRR_ORDER[self.rr];
            let i = class.index();
            if self.queues[i].is_empty() {
                // An idle class keeps no credit.
                self.deficit[i] = 0;
                self.next_class();
                continue;
            }
            if !self.topped_up {
                self.deficit[i] += u64::from(self.quantum_bytes) * u64::from(class.drr_weight().expect("DRR class"));
                self.topped_up = true;
            }
            let head = u64::from(self.queues[i].front().expect("non-empty").len);
            if self.deficit[i] >= head {
                self.deficit[i] -= head;
                let q = self.queues[i].pop_front().expect("non-empty");
                self.dequeued[i] += 1;
                return Some((class, q.item));
            }
            self.next_class();
        }
    }

    fn next_class(&mut self) {
        self.rr = (self.rr + 1) % DRR_ORDER.len();
        self.topped_up = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markings_match_the_qos2_table() {
        use TrafficType::*;
        let got: Vec<(u8, Option<u8>)> = [BestEffort, Background, ExcellentEffort, AudioVideo, Voice, Control]
            .iter()
            .map(|t| (t.dscp(), t.ieee_8021p()))
            .collect();
        assert_eq!(
            got,
            [
                (0, None),
                (0x08, Some(2)),
                (0x28, Some(5)),
                (0x28, Some(5)),
                (0x38, Some(7)),
                (0x38, Some(7))
            ]
        );
        assert_eq!(Voice.tos(), 0xe0);
        assert_eq!(Background.tos(), 0x20);
    }

    #[test]
    fn strict_priority_order() {
        let mut s = Scheduler::new(16, 1500);
        for (i, class) in TrafficType::BY_PRIORITY.iter().rev().enumerate() {
            s.enqueue(*class, 100, i).unwrap();
        }
        let first: Vec<TrafficType> = (0..2).map(|_| s.dequeue().unwrap().0).collect();
        assert_eq!(first, [TrafficType::Control, TrafficType::Voice]);
        // A Control packet arriving later still goes before any DRR class.
        s.enqueue(TrafficType::Control, 100, 99).unwrap();
        assert_eq!(s.dequeue().unwrap(), (TrafficType::Control, 99));
    }

    #[test]
    fn drr_shares_follow_weights_within_5_percent() {
        let mut s = Scheduler::new(1000, 1500);
        let mut served = [0u64; 6];
        // Keep every DRR class backlogged with mixed sizes; serve 200k packets.
        let sizes = [64u32, 1500, 512, 1200, 300];
        let mut k = 0usize;
        for _ in 0..200_000 {
            for c in DRR_ORDER {
                while s.len(c) < 10 {
                    s.enqueue(c, sizes[k % sizes.len()], sizes[k % sizes.len()]).unwrap();
                    k += 1;
                }
            }
            let (c, len) = s.dequeue().unwrap();
            served[c.index()] += u64::from(len);
        }
        let total: u64 = DRR_ORDER.iter().map(|c| served[c.index()]).sum();
        let weights: u32 = DRR_ORDER.iter().map(|c| c.drr_weight().unwrap()).sum();
        for c in DRR_ORDER {
            let want = f64::from(c.drr_weight().unwrap()) / f64::from(weights);
            let got = served[c.index()] as f64 / total as f64;
            assert!(
                (got - want).abs() <= 0.05 * want,
                "{c:?}: byte share {got:.4}, weight share {want:.4}"
            );
        }
    }

    #[test]
    fn remove_where_takes_only_matching_items() {
        let mut s = Scheduler::new(8, 1500);
        for i in 0..6u32 {
            s.enqueue(TrafficType::BY_PRIORITY[i as usize], 10, i).unwrap();
            s.enqueue(TrafficType::BestEffort, 10, 100 + i).unwrap();
        }
        let mut gone = Vec::new();
        s.remove_where(|&i| i % 2 == 0, |i| gone.push(i));
        gone.sort_unstable();
        assert_eq!(gone, [0, 2, 4, 100, 102, 104]);
        let mut left = Vec::new();
        while let Some((_, i)) = s.dequeue() {
            left.push(i);
        }
        left.sort_unstable();
        assert_eq!(left, [1, 3, 5, 101, 103, 105]);
    }

    #[test]
    fn full_class_queue_drops_only_that_class() {
        let mut s = Scheduler::new(2, 1500);
        s.enqueue(TrafficType::BestEffort, 10, 1).unwrap();
        s.enqueue(TrafficType::BestEffort, 10, 2).unwrap();
        assert_eq!(s.enqueue(TrafficType::BestEffort, 10, 3), Err(3));
        s.enqueue(TrafficType::Voice, 10, 4).unwrap();
        assert_eq!(s.drops[TrafficType::BestEffort.index()], 1);
        assert_eq!(s.drops[TrafficType::Voice.index()], 0);
    }

    #[test]
    fn token_bucket_rate_within_2_percent_and_burst_honoured() {
        let rate = 10_000_000; // 10 Mbit/s
        let mut b = TokenBucket::new(rate, 15_000, 0);
        // The burst goes out at once: 10 x 1500 B at t = 0.
        assert!((0..10).all(|_| b.try_take(1500, 0)));
        assert!(!b.try_take(1500, 0));
        // Then a greedy sender for 100 simulated seconds, sending whenever allowed.
        let (mut now, mut sent_bytes) = (0u64, 0u64);
        while now < 100_000_000_000 {
            if b.try_take(1500, now) {
                sent_bytes += 1500;
            } else {
                now = b.ready_at(1500, now);
            }
        }
        let measured = (sent_bytes * 8) as f64 / 100.0;
        assert!(
            (measured - rate as f64).abs() <= 0.02 * rate as f64,
            "rate {measured} vs {rate}"
        );
    }

    #[test]
    fn shaping_behaviours() {
        let mut shaped = Flow::new(TrafficType::Voice).shape(8_000, 100, Shaping::ShapeAndMark, 0);
        assert_eq!(shaped.admit(100, 0), Admission::Send { tos: 0xe0 });
        // 100 more bytes need 800 bits at 8 kbit/s: 100 ms.
        assert_eq!(shaped.admit(100, 0), Admission::HoldUntil(100_000_000));
        assert_eq!(shaped.admit(100, 100_000_000), Admission::Send { tos: 0xe0 });
        assert_eq!(
            shaped.counters,
            FlowCounters {
                sent: 2,
                sent_bytes: 200,
                delayed: 1,
                non_conformant: 0,
                dropped: 0
            }
        );

        let mut unmarked = Flow::new(TrafficType::Voice).shape(8_000, 100, Shaping::ShapeOnly, 0);
        assert_eq!(unmarked.admit(100, 0), Admission::Send { tos: 0 });
        assert!(matches!(unmarked.admit(100, 0), Admission::HoldUntil(_)));

        let mut nc = Flow::new(TrafficType::Control).shape(8_000, 100, Shaping::UseNonConformantMarkings, 0);
        assert_eq!(nc.admit(100, 0), Admission::Send { tos: 0xe0 });
        assert_eq!(nc.admit(100, 0), Admission::SendNonConformant);
        assert_eq!(nc.counters.non_conformant, 1);

        // Changing the rate while running takes effect at once.
        let mut f = Flow::new(TrafficType::BestEffort).shape(8_000, 100, Shaping::ShapeAndMark, 0);
        assert_eq!(f.admit(100, 0), Admission::Send { tos: 0 });
        f.set_rate(80_000, 0);
        assert_eq!(f.admit(100, 0), Admission::HoldUntil(10_000_000));
        let plain = Flow::new(TrafficType::AudioVideo).admit(1000, 5);
        assert_eq!(plain, Admission::Send { tos: 0xa0 });
    }
}
