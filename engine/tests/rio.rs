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
