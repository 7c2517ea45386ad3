//! Registered I/O as Windows programs use it, under load: what a RIO server does between
//! `RIODequeueCompletion` and its next `RIOReceive` must never meet a queue that is not yet
//! told its request ended.

use std::net::UdpSocket as StdUdp;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use porto_engine::engine::Engine;
use porto_engine::error::Error;
use porto_engine::port::CompletionPort;
use porto_engine::rio::{CompletionQueue, RegisteredBuffer, RequestQueue, RioFlags, RioNotify};
use porto_engine::shard::Delivery;
use porto_engine::socket::{SocketOptions, UdpSocket};

mod common;

/// A request re-posted as soon as its result was dequeued is accepted, every time, under a
/// UDP flood: the request queue counts the request as ended before its result can be seen
/// (it used to push the result first, and a fast server's re-post met `WSAENOBUFS` — 7 to
/// 679 times in 2 s in a public RIO sample, which treats it as fatal).
#[test]
fn a_receive_reposted_right_after_its_result_is_accepted() {
    let engine = Engine::start(&common::small_config()).unwrap();
    let h = engine.shard(0);
    let port = CompletionPort::new(1, 64);
    let sock = UdpSocket::bind(
        h,
        "127.0.0.1:0".parse().unwrap(),
        &SocketOptions {
            recv_buffer: Some(4 << 20),
            ..SocketOptions::default()
        },
        Delivery::Port { port, key: 0 },
    )
    .unwrap();
    const MAX: u32 = 8;
    let cq = CompletionQueue::new(MAX as usize, RioNotify::None);
    let mut rq = RequestQueue::new(sock.core(), &cq, MAX, 0, 1).unwrap();
    let segs = RegisteredBuffer::register(h, vec![0u8; 64 * MAX as usize], 64).unwrap();
    for (i, s) in segs.into_iter().enumerate() {
        rq.receive(s, i as u64, RioFlags::NONE).unwrap();
    }
    let to = sock.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let (mut results, mut refused) = (0u64, 0u64);
    std::thread::scope(|s| {
        s.spawn(|| {
            let c = StdUdp::bind("127.0.0.1:0").unwrap();
            let deadline = Instant::now() + Duration::from_secs(3);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                for _ in 0..64 {
                    let _ = c.send_to(b"flood", to);
                }
                std::thread::yield_now();
            }
        });
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while results < 20_000 && Instant::now() < deadline {
            cq.dequeue(&mut out, MAX as usize);
            for r in out.drain(..) {
                assert_eq!(r.result, Ok(5), "{:?}", r.result);
                results += 1;
                if let Err((e, _)) = rq.receive(r.buf, r.token, RioFlags::NONE) {
                    assert_eq!(e, Error::NoBuffers, "{e:?}");
                    refused += 1;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(results > 1000, "a flood was received: {results}");
    assert_eq!(refused, 0, "re-posts refused out of {results}");
}

/// A request queue holds its maxima in its shard's operation table from creation: one the
/// shard cannot carry fails there (`NoBuffers`, WSAENOBUFS), as Windows fails it — never a
/// request later (a public sample posting 150 000 receives saw 145 904 of them fail in the
/// completion queue). The shard's other operations leave the reserved slots free.
#[test]
fn a_request_queue_the_shard_cannot_carry_fails_at_creation() {
    let cfg = porto_engine::config::Config {
        ops_max: 64,
        ..common::small_config()
    };
    let engine = Engine::start(&cfg).unwrap();
    let h = engine.shard(0);
    let port = CompletionPort::new(1, 1024);
    let udp = |key| {
        UdpSocket::bind(
            h,
            "127.0.0.1:0".parse().unwrap(),
            &SocketOptions {
                recv_buffer: Some(1 << 20),
                ..SocketOptions::default()
            },
            Delivery::Port {
                port: port.clone(),
                key,
            },
        )
        .unwrap()
    };
    let (a, b) = (udp(1), udp(2));
    let cq = CompletionQueue::new(1024, RioNotify::None);
    // Three quarters of 64 slots may be reserved: 48.
    assert_eq!(
        RequestQueue::new(a.core(), &cq, 49, 0, 1).unwrap_err(),
        Error::NoBuffers
    );
    let mut rq = RequestQueue::new(a.core(), &cq, 40, 0, 1).unwrap();
    assert_eq!(
        RequestQueue::new(b.core(), &cq, 9, 0, 2).unwrap_err(),
        Error::NoBuffers,
        "40 + 9 > 48"
    );
    let small = RequestQueue::new(b.core(), &cq, 8, 0, 2).unwrap();
    drop(small);
    // Growing past the room is refused too, and nothing changes.
    assert_eq!(rq.resize(49, 0).unwrap_err(), Error::NoBuffers);

    // Other operations use the rest and no more: 24 slots, whatever they ask.
    for t in 0..30 {
        let _ = b.recv_from(100 + t, None);
    }
    // Every one of the queue's 40 receives is accepted, in the kernel or waiting for it, and
    // each catches a datagram: none fails for want of a slot.
    let segs = RegisteredBuffer::register(h, vec![0u8; 64 * 40], 64).unwrap();
    for (i, s) in segs.into_iter().enumerate() {
        rq.receive(s, i as u64, RioFlags::NONE).unwrap();
    }
    let c = StdUdp::bind("127.0.0.1:0").unwrap();
    let to = a.local_addr().unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 0;
    while out.len() < 40 && Instant::now() < deadline {
        if sent < 40 {
            c.send_to(b"fits", to).unwrap();
            sent += 1;
        }
        cq.dequeue(&mut out, 64);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(out.len(), 40, "every receive completed");
    assert!(
        out.iter().all(|r| r.result == Ok(4)),
        "{:?}",
        out.iter().map(|r| r.result).collect::<Vec<_>>()
    );
    // The other socket's receives beyond the 24 free slots ended NoBuffers (backpressure,
    // on that socket's port), leaving the queue's slots alone.
    let rejected = engine.shard(0).stats().counters.snapshot().ops_rejected;
    assert!(
        rejected >= 6,
        "{rejected} of 30 ordinary receives refused past the free slots"
    );
}
