//! The data path allocates nothing once a shard runs: a counting global allocator watches a
//! polling-mode UDP echo loop (receive, reply with the same frame, send completion).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::UdpSocket as StdUdp;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use porto_engine::completion::OpKind;
use porto_engine::config::Config;
use porto_engine::shard::{Delivery, Shard};
use porto_engine::socket::{SocketOptions, UdpSocket};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
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
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn udp_echo_data_path_allocates_nothing() {
    let cfg = Config {
        pin: false,
        frames_per_shard: 512,
        recv_frames: 256,
        huge_pages: false,
        ..Config::default()
    };
    let mut shard = Shard::new(&cfg, None).unwrap();
    let h = shard.handle();
    let sock = UdpSocket::bind(
        &h,
        "127.0.0.1:0".parse().unwrap(),
        &SocketOptions::default(),
        Delivery::Poll { key: 0 },
    )
    .unwrap();
    let server = sock.local_addr().unwrap();
    sock.recv_from_multishot(1).unwrap();
    let client = StdUdp::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::with_capacity(64);
    let mut back = [0u8; 64];
    let mut round = |counting: bool| {
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
        assert!(echoed, "send completion arrived (counting: {counting})");
        assert_eq!(client.recv(&mut back).unwrap(), 4);
    };
    // Warm up: first-use allocations (thread-locals, lazy statics) happen here.
    for _ in 0..50 {
        round(false);
    }
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..500 {
        round(true);
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(ALLOCS.load(Ordering::SeqCst), 0, "allocations on the data path");
}
