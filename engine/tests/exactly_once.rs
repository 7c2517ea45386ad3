//! Exactly one terminal completion per accepted operation: a property test over random
//! interleavings of every operation kind (with cancels, closes, a tiny CQ, an exhausted pool,
//! a full port and a shard stop), and the edges where it used to break: an engine stopping
//! while threads submit, completions that find their port full at shutdown, and cancels of
//! sends waiting in the QoS queues.
//!
//! CI runs a bounded number of property cases; a long run is
//! `PROPTEST_CASES=20000 cargo test --release -p porto-engine --test exactly_once -- --nocapture prop`
//! (it prints the operations it ran and the completions it counted).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use porto_engine::completion::{Completion, OpKind};
use porto_engine::config::Config;
use porto_engine::engine::Engine;
use porto_engine::error::Error;
use porto_engine::port::CompletionPort;
use porto_engine::qos::{Shaping, TrafficType};
use porto_engine::shard::{Delivery, Shard};
use porto_engine::socket::{SocketOptions, UdpSocket};

fn cfg() -> Config {
    Config {
        pin: false,
        shards: 1,
        frames_per_shard: 1024,
        recv_frames: 256,
        huge_pages: false,
        ..Config::default()
    }
}

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The tests of this file one at a time: the property test counts this process's open fds.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Terminal completions (those without `more`) per token.
fn terminals(cs: &[Completion]) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for c in cs.iter().filter(|c| !c.more) {
        *m.entry(c.token).or_insert(0) += 1;
    }
    m
}

/// Threads submit receives and sends while the engine is dropped. Every call that returned
/// `Ok` ends in exactly one terminal completion — including the ones still in the command
/// queue when the shard stopped, and those that found the (tiny) port full at shutdown.
#[test]
fn ops_accepted_while_the_engine_stops_end_exactly_once() {
    let _one = one_at_a_time();
    for round in 0..20u64 {
        let engine = Engine::start(&cfg()).unwrap();
        let port = CompletionPort::new(0, 8);
        let h = engine.shard(0).clone();
        let sink = StdUdp::bind(lo()).unwrap();
        let to = sink.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let submitters: Vec<_> = (0..2u64)
            .map(|t| {
                let h = h.clone();
                let sock = UdpSocket::bind(
                    &h,
                    lo(),
                    &SocketOptions::default(),
                    Delivery::Port {
                        port: port.clone(),
                        key: t,
                    },
                )
                .unwrap();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut accepted = Vec::new();
                    let mut token = t << 32;
                    while !stop.load(Ordering::Relaxed) && accepted.len() < 400 {
                        token += 1;
                        let ok = if token % 2 == 0 {
                            sock.recv_from(token, None).is_ok()
                        } else {
                            match h.pool().alloc_from(b"x") {
                                Ok(b) => sock.send_to(b, to, token).is_ok(),
                                Err(_) => false,
                            }
                        };
                        if ok {
                            accepted.push(token);
                        }
                    }
                    (sock, accepted)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_micros(200 * (round % 5)));
        drop(engine);
        stop.store(true, Ordering::Relaxed);
        let mut accepted = Vec::new();
        let mut socks = Vec::new();
        for s in submitters {
            let (sock, a) = s.join().unwrap();
            accepted.extend(a);
            socks.push(sock);
        }
        let mut got = Vec::new();
        while port.dequeue(&mut got, 64, Some(Duration::ZERO)) > 0 {}
        let ends = terminals(&got);
        for t in &accepted {
            assert_eq!(
                ends.get(t),
                Some(&1),
                "round {round}: token {t:#x} ended {:?} times",
                ends.get(t)
            );
        }
        assert_eq!(
            ends.len(),
            accepted.len(),
            "round {round}: completions for tokens never accepted"
        );
        drop(socks);
    }
}

/// A cancel reaches sends held by a shaper: the cancelled one ends `Aborted` once, with its
/// buffer; the others still go out, each once.
#[test]
fn cancel_reaches_a_send_held_by_shaping() {
    let _one = one_at_a_time();
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    // 8 kbit/s with a 1000-byte burst: the first datagram conforms, the rest are held.
    let flow = h
        .create_flow(TrafficType::BestEffort, Some((8_000, 1000, Shaping::ShapeOnly)))
        .unwrap();
    let sock = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 1 }).unwrap();
    sock.set_flow(&flow).unwrap();
    let sink = StdUdp::bind(lo()).unwrap();
    let to = sink.local_addr().unwrap();
    for token in 1..=3u64 {
        sock.send_to(h.pool().alloc_from(&[0u8; 900]).unwrap(), to, token)
            .unwrap();
    }
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !out.iter().any(|c: &Completion| c.token == 1) && Instant::now() < deadline {
        shard.poll(&mut out, 16);
    }
    sock.cancel(3).unwrap();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        shard.poll(&mut out, 16);
    }
    let ends = terminals(&out);
    assert_eq!(ends.get(&1), Some(&1), "{out:?}");
    assert_eq!(ends.get(&3), Some(&1), "the held send was not cancelled: {out:?}");
    let c3 = out.iter().find(|c| c.token == 3).unwrap();
    assert_eq!((c3.op, &c3.result), (OpKind::SendTo, &Err(Error::Aborted)));
    assert!(c3.buffer.is_some(), "a cancelled send hands its buffer back");
    // Token 2 is still held (0.9 s at 8 kbit/s): closing the socket ends it Aborted, once.
    assert_eq!(ends.get(&2), None);
    drop(sock);
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        shard.poll(&mut out, 16);
    }
    let ends = terminals(&out);
    assert_eq!(
        (ends.get(&1), ends.get(&2), ends.get(&3)),
        (Some(&1), Some(&1), Some(&1))
    );
}

mod prop {
    use super::*;
    use porto_engine::socket::{TcpListener, TcpStream};
    use proptest::prelude::*;
    use std::sync::atomic::AtomicU64;

    /// What the application does next.
    #[derive(Clone, Debug)]
    enum Act {
        /// A receive on UDP socket `s` (single-shot with a timeout, or multishot).
        Recv {
            s: usize,
            multishot: bool,
        },
        /// A send from UDP socket `s` to the kernel peer or to UDP socket `to`.
        Send {
            s: usize,
            to: Option<usize>,
            len: usize,
        },
        /// One frame to `n` destinations.
        SendMany {
            s: usize,
            n: usize,
        },
        /// The kernel peer sends `n` datagrams to UDP socket `s`.
        PeerSend {
            s: usize,
            n: usize,
        },
        /// Cancel the `back`-th most recent token of socket `s`.
        Cancel {
            s: usize,
            back: usize,
        },
        /// Close UDP socket `s` (drop the handle) and bind a fresh one in its place.
        Reopen {
            s: usize,
        },
        /// Accept on the listener (multishot or not), or connect a new stream to it.
        Accept {
            multishot: bool,
        },
        Connect,
        /// A receive (with a timeout) or a send on stream `s`, or drop it.
        StreamRecv {
            s: usize,
            multishot: bool,
        },
        StreamSend {
            s: usize,
            len: usize,
        },
        StreamDrop {
            s: usize,
        },
        /// Keep (or give back) received buffers: pool exhaustion.
        Hoard {
            keep: bool,
        },
        /// Turn the shard `n` times.
        Turn {
            n: usize,
        },
    }

    fn act() -> impl Strategy<Value = Act> {
        prop_oneof![
            3 => (0..3usize, any::<bool>()).prop_map(|(s, multishot)| Act::Recv { s, multishot }),
            3 => (0..3usize, proptest::option::of(0..3usize), 1..1400usize).prop_map(|(s, to, len)| Act::Send { s, to, len }),
            1 => (0..3usize, 1..6usize).prop_map(|(s, n)| Act::SendMany { s, n }),
            3 => (0..3usize, 1..20usize).prop_map(|(s, n)| Act::PeerSend { s, n }),
            2 => (0..3usize, 0..4usize).prop_map(|(s, back)| Act::Cancel { s, back }),
            1 => (0..3usize).prop_map(|s| Act::Reopen { s }),
            1 => any::<bool>().prop_map(|multishot| Act::Accept { multishot }),
            1 => Just(Act::Connect),
            1 => (0..3usize, any::<bool>()).prop_map(|(s, multishot)| Act::StreamRecv { s, multishot }),
            1 => (0..3usize, 1..3000usize).prop_map(|(s, len)| Act::StreamSend { s, len }),
            1 => (0..3usize).prop_map(|s| Act::StreamDrop { s }),
            1 => any::<bool>().prop_map(|keep| Act::Hoard { keep }),
            3 => (1..4usize).prop_map(|n| Act::Turn { n }),
        ]
    }

    /// Operations and completions counted over every case (for the long run's figure).
    static OPS: AtomicU64 = AtomicU64::new(0);
    static COMPLETIONS: AtomicU64 = AtomicU64::new(0);

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
    }

    struct World {
        h: porto_engine::shard::ShardHandle,
        udp: Vec<UdpSocket>,
        listener: Option<TcpListener>,
        streams: Vec<TcpStream>,
        peer: StdUdp,
        /// Terminal completions expected per token (send_to_many: one per destination).
        expect: HashMap<u64, usize>,
        /// Tokens per UDP slot, newest last (for cancels).
        tokens: Vec<Vec<u64>>,
        next: u64,
        hoard: Vec<porto_engine::pool::Buf>,
        keep: bool,
        got: Vec<Completion>,
    }

    impl World {
        fn token(&mut self, n: usize) -> u64 {
            self.next += 1;
            self.expect.insert(self.next, n);
            self.next
        }

        /// A UDP socket; `None` when the shard's command queue is full (backpressure).
        fn udp(h: &porto_engine::shard::ShardHandle, delivery: &Delivery) -> Option<UdpSocket> {
            let opts = SocketOptions {
                recv_buffer: Some(1 << 16),
                ..SocketOptions::default()
            };
            match UdpSocket::bind(h, lo(), &opts, delivery.clone()) {
                Ok(s) => Some(s),
                Err(porto_engine::error::SetupError::Limit(_)) => None,
                Err(e) => panic!("{e}"),
            }
        }

        /// Records a completion; returns received buffers to the hoard or the pool.
        fn take(&mut self, mut c: Completion) {
            COMPLETIONS.fetch_add(1, Ordering::Relaxed);
            if self.keep && self.hoard.len() < 64 {
                if let Some(b) = c.buffer.take() {
                    self.hoard.push(b);
                }
            }
            c.buffer = None;
            c.accepted = None;
            self.got.push(c);
        }

        fn run(&mut self, a: &Act, delivery: &Delivery) {
            OPS.fetch_add(1, Ordering::Relaxed);
            let pool = self.h.pool().clone();
            match *a {
                Act::Recv { s, multishot } => {
                    let t = self.token(1);
                    let r = if multishot {
                        self.udp[s].recv_from_multishot(t)
                    } else {
                        self.udp[s].recv_from(t, Some(Duration::from_millis(5)))
                    };
                    self.accepted(s, t, r.is_ok());
                }
                Act::Send { s, to, len } => {
                    let dest = match to {
                        Some(i) => self.udp[i].local_addr().unwrap(),
                        None => self.peer.local_addr().unwrap(),
                    };
                    let Ok(mut b) = pool.alloc() else { return };
                    b.set_len(len.min(b.capacity()));
                    let t = self.token(1);
                    let ok = self.udp[s].send_to(b, dest, t).is_ok();
                    self.accepted(s, t, ok);
                }
                Act::SendMany { s, n } => {
                    let Ok(b) = pool.alloc_from(&[7u8; 64]) else { return };
                    let dests: Arc<[SocketAddr]> = (0..n)
                        .map(|i| {
                            if i % 2 == 0 {
                                self.peer.local_addr().unwrap()
                            } else {
                                self.udp[i % 3].local_addr().unwrap()
                            }
                        })
                        .collect();
                    let t = self.token(n);
                    let ok = self.udp[s].send_to_many(b, &dests, t).is_ok();
                    self.accepted(s, t, ok);
                }
                Act::PeerSend { s, n } => {
                    let to = self.udp[s].local_addr().unwrap();
                    for i in 0..n {
                        let _ = self.peer.send_to(&[i as u8; 32], to);
                    }
                }
                Act::Cancel { s, back } => {
                    let list = &self.tokens[s];
                    if let Some(&t) = list.len().checked_sub(1 + back).and_then(|i| list.get(i)) {
                        let _ = self.udp[s].cancel(t);
                    }
                }
                Act::Reopen { s } => {
                    if let Some(new) = Self::udp(&self.h, delivery) {
                        self.udp[s] = new;
                        self.tokens[s].clear();
                    }
                }
                Act::Accept { multishot } => {
                    if self.listener.is_none() {
                        return;
                    }
                    let t = self.token(1);
                    let l = self.listener.as_ref().expect("checked");
                    let r = if multishot { l.accept_multishot(t) } else { l.accept(t) };
                    if r.is_err() {
                        self.expect.remove(&t);
                    }
                }
                Act::Connect => {
                    if self.streams.len() >= 3 {
                        return;
                    }
                    let Some(to) = self.listener.as_ref().map(|l| l.local_addr().unwrap()) else {
                        return;
                    };
                    let t = self.token(1);
                    match TcpStream::connect(
                        &self.h,
                        to,
                        t,
                        Some(Duration::from_secs(1)),
                        &SocketOptions::default(),
                        delivery.clone(),
                    ) {
                        Ok(st) => self.streams.push(st),
                        Err(_) => {
                            self.expect.remove(&t);
                        }
                    }
                }
                Act::StreamRecv { s, multishot } => {
                    if s < self.streams.len() {
                        let t = self.token(1);
                        let st = &self.streams[s];
                        let r = if multishot {
                            st.recv_multishot(t)
                        } else {
                            st.recv(t, Some(Duration::from_millis(5)))
                        };
                        if r.is_err() {
                            self.expect.remove(&t);
                        }
                    }
                }
                Act::StreamSend { s, len } => {
                    if s < self.streams.len() {
                        let Ok(mut b) = pool.alloc() else { return };
                        b.set_len(len.min(b.capacity()));
                        let t = self.token(1);
                        if self.streams[s].send(b, t).is_err() {
                            self.expect.remove(&t);
                        }
                    }
                }
                Act::StreamDrop { s } => {
                    if s < self.streams.len() {
                        self.streams.remove(s);
                    }
                }
                Act::Hoard { keep } => {
                    self.keep = keep;
                    if !keep {
                        self.hoard.clear();
                    }
                }
                Act::Turn { .. } => {}
            }
        }

        fn accepted(&mut self, s: usize, t: u64, ok: bool) {
            if ok {
                self.tokens[s].push(t);
            } else {
                self.expect.remove(&t);
            }
        }

        /// Every token that was accepted ended exactly as often as expected, and no
        /// completion names a token that never was.
        fn check(&self) -> Result<(), TestCaseError> {
            let ends = terminals(&self.got);
            for (t, n) in &self.expect {
                prop_assert_eq!(
                    ends.get(t).copied().unwrap_or(0),
                    *n,
                    "token {} ended {:?} times",
                    t,
                    ends.get(t)
                );
            }
            for t in ends.keys() {
                prop_assert!(
                    self.expect.contains_key(t),
                    "a completion for token {} that was never accepted",
                    t
                );
            }
            Ok(())
        }
    }

    fn tiny() -> Config {
        Config {
            pin: false,
            shards: 1,
            frames_per_shard: 256,
            recv_frames: 64,
            sq_entries: 8,
            cq_entries: 16,
            ops_max: 128,
            commands_max: 64,
            huge_pages: false,
            idle_spin_us: 0,
            ..Config::default()
        }
    }

    fn world(h: &porto_engine::shard::ShardHandle, delivery: &Delivery) -> World {
        let peer = StdUdp::bind(lo()).unwrap();
        peer.set_nonblocking(true).unwrap();
        World {
            h: h.clone(),
            udp: (0..3)
                .map(|_| World::udp(h, delivery).expect("an empty command queue"))
                .collect(),
            listener: Some(TcpListener::bind(h, lo(), 16, &SocketOptions::default(), delivery.clone()).unwrap()),
            streams: Vec::new(),
            peer,
            expect: HashMap::new(),
            tokens: vec![Vec::new(); 3],
            next: 0,
            hoard: Vec::new(),
            keep: false,
            got: Vec::new(),
        }
    }

    /// Polling mode: the application drives the shard; at the end every socket is closed
    /// and the shard is turned until nothing is in flight.
    fn polling_case(acts: &[Act]) -> Result<(), TestCaseError> {
        let fds = open_fds();
        let mut shard = Shard::new(&tiny(), None).unwrap();
        let delivery = Delivery::Poll { key: 1 };
        let mut w = world(&shard.handle(), &delivery);
        let mut out = Vec::new();
        for a in acts {
            w.run(a, &delivery);
            let turns = if let Act::Turn { n } = a { *n } else { 1 };
            for _ in 0..turns {
                shard.poll(&mut out, 64);
                for c in out.drain(..) {
                    w.take(c);
                }
            }
        }
        w.hoard.clear();
        w.keep = false;
        w.udp.clear();
        w.streams.clear();
        w.listener = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while (shard.live_ops() > 0 || terminals(&w.got).values().sum::<usize>() < w.expect.values().sum())
            && Instant::now() < deadline
        {
            shard.poll(&mut out, 64);
            for c in out.drain(..) {
                w.take(c);
            }
        }
        let w_check = w.check();
        let pool = shard.pool().clone();
        let in_rings = shard.frames_in_rings();
        prop_assert_eq!(
            shard.live_ops(),
            0,
            "operations still in flight with every socket closed"
        );
        drop(w);
        w_check?;
        prop_assert_eq!(pool.free_frames() + in_rings, pool.total_frames(), "frame conservation");
        drop(shard);
        prop_assert_eq!(open_fds(), fds, "file descriptors leaked");
        Ok(())
    }

    /// Completion-port mode with a port of 8 entries; the case ends by dropping the engine
    /// (with operations in flight and commands queued), then drains the port.
    fn port_case(acts: &[Act]) -> Result<(), TestCaseError> {
        let engine = Engine::start(&tiny()).unwrap();
        let port = CompletionPort::new(1, 8);
        let delivery = Delivery::Port {
            port: port.clone(),
            key: 1,
        };
        let mut w = world(engine.shard(0), &delivery);
        let mut out = Vec::new();
        for a in acts {
            w.run(a, &delivery);
            port.dequeue(&mut out, 4, Some(Duration::ZERO));
            for c in out.drain(..) {
                w.take(c);
            }
        }
        drop(engine);
        while port.dequeue(&mut out, 64, Some(Duration::ZERO)) > 0 {
            for c in out.drain(..) {
                w.take(c);
            }
        }
        w.check()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn prop_every_accepted_operation_ends_exactly_once_polling(acts in proptest::collection::vec(act(), 1..80)) {
            let _one = one_at_a_time();
            polling_case(&acts)?;
        }

        #[test]
        fn prop_every_accepted_operation_ends_exactly_once_at_engine_stop(acts in proptest::collection::vec(act(), 1..80)) {
            let _one = one_at_a_time();
            port_case(&acts)?;
        }
    }

    /// The totals of this run (shown with --nocapture; the long run's figure).
    #[test]
    fn prop_zz_report() {
        eprintln!(
            "exactly-once property: {} operations, {} completions counted so far in this process",
            OPS.load(Ordering::Relaxed),
            COMPLETIONS.load(Ordering::Relaxed)
        );
    }
}

/// Operations with a timeout are two linked SQEs (the operation and its LinkTimeout). With a
/// submission queue of 2 and single-SQE operations in between, a chain lands across the SQ's
/// end: pushed one entry at a time, the head was submitted alone (running without its
/// timeout, never ending on a silent socket) and the lone LinkTimeout failed. Every timed
/// receive ends once, TimedOut; every plain one once, Aborted, when the socket closes.
#[test]
fn timed_operations_on_a_two_entry_sq_each_time_out_once() {
    let _one = one_at_a_time();
    let tiny_sq = Config {
        sq_entries: 2,
        cq_entries: 64,
        ..cfg()
    };
    let mut shard = Shard::new(&tiny_sq, None).unwrap();
    let h = shard.handle();
    let sock = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 1 }).unwrap();
    for token in 1..=40u64 {
        let timeout = (token % 2 == 0).then_some(Duration::from_millis(20));
        sock.recv_from(token, timeout).unwrap();
    }
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.len() < 20 && Instant::now() < deadline {
        shard.poll(&mut out, 64);
    }
    drop(sock);
    let deadline = Instant::now() + Duration::from_secs(5);
    while (out.len() < 40 || shard.live_ops() > 0) && Instant::now() < deadline {
        shard.poll(&mut out, 64);
    }
    let ends = terminals(&out);
    assert_eq!(ends.len(), 40, "every receive ended: {} of 40", ends.len());
    assert!(ends.values().all(|&n| n == 1));
    for c in &out {
        let want = if c.token % 2 == 0 {
            Error::TimedOut
        } else {
            Error::Aborted
        };
        assert_eq!(c.result, Err(want), "{c:?}");
    }
    assert_eq!(shard.live_ops(), 0);
}

/// A multishot receive the kernel ends (no MORE: its last CQE overflowed a 2-entry CQ) while
/// a cancel is on its way ends once, Aborted — it used to be re-armed past the cancel, whose
/// own CQE then found nothing, and lived on forever.
#[test]
fn a_multishot_ended_by_the_kernel_while_cancelled_ends_once() {
    let _one = one_at_a_time();
    let tiny_cq = Config {
        sq_entries: 2,
        cq_entries: 2,
        ..cfg()
    };
    let mut shard = Shard::new(&tiny_cq, None).unwrap();
    let h = shard.handle();
    let sock = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 1 }).unwrap();
    sock.recv_from_multishot(1).unwrap();
    let mut out = Vec::new();
    shard.poll(&mut out, 64);
    let client = StdUdp::bind(lo()).unwrap();
    for i in 0..5u8 {
        client.send_to(&[i], sock.local_addr().unwrap()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    // This turn reaps what fits in the CQ; the rest (the multishot's end) waits in the
    // kernel's overflow list for the next turn, which takes the cancel first.
    shard.poll(&mut out, 64);
    sock.cancel(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        shard.poll(&mut out, 64);
    }
    let ends: Vec<&Completion> = out.iter().filter(|c| c.token == 1 && !c.more).collect();
    assert_eq!(ends.len(), 1, "terminal completions: {ends:?}");
    assert_eq!(ends[0].result, Err(Error::Aborted));
    assert_eq!(shard.live_ops(), 0, "the receive lives on after its cancel");
}

/// A socket handle that outlives its engine keeps its own file: after the shard stops, its
/// blocking calls and options act on that socket, never on a file that reused the number.
#[test]
fn a_handle_outliving_its_shard_never_reaches_a_reused_fd() {
    let _one = one_at_a_time();
    let engine = Engine::start(&cfg()).unwrap();
    let sock = UdpSocket::bind(
        engine.shard(0),
        lo(),
        &SocketOptions::default(),
        Delivery::Poll { key: 1 },
    )
    .unwrap();
    let mine = sock.local_addr().unwrap();
    drop(engine);
    // New sockets take the lowest free numbers: one of them would be the closed fd's.
    let others: Vec<StdUdp> = (0..8).map(|_| StdUdp::bind(lo()).unwrap()).collect();
    assert_eq!(sock.local_addr().unwrap(), mine, "the handle reached another socket");
    let peer = StdUdp::bind(lo()).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to_blocking(b"still mine", peer.local_addr().unwrap(), None)
        .unwrap();
    let mut b = [0u8; 32];
    let (n, from) = peer.recv_from(&mut b).unwrap();
    assert_eq!((&b[..n], from), (&b"still mine"[..], mine));
    drop(others);
}

/// A RIO request queue that outlives its socket names the old generation: after the index is
/// reused by a new socket, the stale queue's requests end NotSocket in its own completion
/// queue, and the new socket sees none of them.
#[test]
fn a_rio_queue_outliving_its_socket_gets_not_socket_not_the_new_socket() {
    use porto_engine::rio::{RegisteredBuffer, RequestQueue, RioFlags, RioNotify};
    let _one = one_at_a_time();
    let one_socket = Config {
        sockets_max: 1,
        ..cfg()
    };
    let mut shard = Shard::new(&one_socket, None).unwrap();
    let h = shard.handle();
    let old = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 1 }).unwrap();
    let cq = porto_engine::rio::CompletionQueue::new(8, RioNotify::None);
    let mut rq = RequestQueue::new(old.core(), &cq, 2, 2, 7).unwrap();
    let mut segs = RegisteredBuffer::register(&h, vec![0u8; 2048], 1024).unwrap();
    drop(old);
    let mut out = Vec::new();
    shard.poll(&mut out, 8);
    // The only index, reused.
    let new = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 2 }).unwrap();
    rq.receive(segs.pop().unwrap(), 5, RioFlags::NONE).unwrap();
    let mut res = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while res.is_empty() && Instant::now() < deadline {
        shard.poll(&mut out, 8);
        cq.dequeue(&mut res, 8);
    }
    assert_eq!(res.len(), 1);
    assert_eq!((res[0].token, &res[0].result), (5, &Err(Error::NotSocket)));
    // The new socket's receive is its own: a datagram to it completes there.
    new.recv_from(9, None).unwrap();
    let client = StdUdp::bind(lo()).unwrap();
    client.send_to(b"new", new.local_addr().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !out.iter().any(|c: &Completion| c.token == 9) && Instant::now() < deadline {
        shard.poll(&mut out, 8);
    }
    let c = out.iter().find(|c| c.token == 9).expect("the new socket's receive");
    assert_eq!((c.key, &c.result), (2, &Ok(3)));
    assert_eq!(cq.dequeue(&mut res, 8), 0, "nothing else reached the stale queue");
}
