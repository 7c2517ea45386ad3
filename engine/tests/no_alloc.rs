//! The data path allocates nothing once a shard runs: a counting global allocator watches a
//! polling-mode UDP echo loop (receive, reply with the same frame, send completion), the
//! fan-out of datagrams to subscribers, and sends through a QoS flow, the class scheduler and
//! the link rate. Every loop runs on the test's own thread, and only that thread's
//! allocations count (the test harness's threads print results meanwhile); the tests take
//! turns all the same (the counter is global).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::UdpSocket as StdUdp;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use porto_engine::completion::OpKind;
use porto_engine::config::Config;
use porto_engine::shard::{Delivery, Shard, ShardHandle};
use porto_engine::socket::{SocketOptions, UdpSocket};

mod common;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's allocations count (const-initialised: reading it never allocates).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    // A thread being torn down has no thread-locals left: it is not counting.
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cfg() -> Config {
    common::small_config()
}

/// A polling-mode UDP socket on 127.0.0.1, any port.
fn loopback_udp(h: &ShardHandle) -> UdpSocket {
    UdpSocket::bind(
        h,
        "127.0.0.1:0".parse().unwrap(),
        &SocketOptions::default(),
        Delivery::Poll { key: 0 },
    )
    .unwrap()
}

/// Runs `round` 50 times to warm up (first-use allocations), then 500 times counting.
fn assert_no_allocations(mut round: impl FnMut()) {
    for _ in 0..50 {
        round();
    }
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.set(true);
    for _ in 0..500 {
        round();
    }
    COUNTING.set(false);
    assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "allocations on the data path");
}

#[test]
fn udp_echo_data_path_allocates_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let sock = loopback_udp(&h);
    let server = sock.local_addr().unwrap();
    sock.recv_from_multishot(1).unwrap();
    let client = StdUdp::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::with_capacity(64);
    let mut back = [0u8; 64];
    assert_no_allocations(|| {
        client.send_to(b"ping", server).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut echoed = false;
        while !echoed && Instant::now() < deadline {
            shard.poll(&mut out, 64);
            for c in out.drain(..) {
                match (c.op, c.buffer, c.peer) {
                    (OpKind::RecvFrom, Some(buf), Some(peer)) => sock.send_to(buf, peer, 2).unwrap(),
                    (OpKind::SendTo, Some(_), _) => echoed = true,
                    other => panic!("unexpected completion {other:?}"),
                }
            }
        }
        assert!(echoed, "send completion arrived");
        assert_eq!(client.recv(&mut back).unwrap(), 4);
    });
}

#[test]
fn fan_out_allocates_nothing_per_datagram() {
    use porto_engine::fanout::Policy;
    use porto_engine::rio::RioNotify;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let sock = loopback_udp(&h);
    let to = sock.local_addr().unwrap();
    let fan = sock.fan_out(1).unwrap();
    let mut subs: Vec<_> = (0..4)
        .map(|_| fan.subscribe(Policy::Lossy, 64, RioNotify::None).unwrap())
        .collect();
    let client = StdUdp::bind("127.0.0.1:0").unwrap();
    let mut out = Vec::with_capacity(64);
    assert_no_allocations(|| {
        client.send_to(b"tick", to).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = 0;
        while got < subs.len() && Instant::now() < deadline {
            shard.poll(&mut out, 64);
            out.clear();
            for s in &mut subs {
                while let Some(d) = s.try_recv() {
                    assert_eq!(&d.buf[..], b"tick");
                    got += 1;
                }
            }
        }
        assert_eq!(got, subs.len(), "every subscriber got it");
    });
}

#[test]
fn qos_scheduled_sends_allocate_nothing() {
    use porto_engine::qos::{Shaping, TrafficType};
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    h.set_link_rate(Some(1_000_000_000), 64_000).unwrap();
    let sock = loopback_udp(&h);
    let flow = h
        .create_flow(TrafficType::Voice, Some((1_000_000_000, 64_000, Shaping::ShapeAndMark)))
        .unwrap();
    sock.set_flow(&flow).unwrap();
    let sink = StdUdp::bind("127.0.0.1:0").unwrap();
    let to = sink.local_addr().unwrap();
    let mut out = Vec::with_capacity(64);
    let mut back = [0u8; 64];
    assert_no_allocations(|| {
        sock.send_to(h.pool().alloc_from(b"order").unwrap(), to, 3).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut done = false;
        while !done && Instant::now() < deadline {
            shard.poll(&mut out, 64);
            done = out.drain(..).any(|c| c.op == OpKind::SendTo && c.result == Ok(5));
        }
        assert!(done, "the scheduled send completed");
        assert_eq!(sink.recv(&mut back).unwrap(), 5);
    });
}
