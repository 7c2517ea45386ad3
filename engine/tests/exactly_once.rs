//! Exactly one terminal completion per accepted operation, at the edges where it used to
//! break: an engine stopping while threads submit, completions that find their port full at
//! shutdown, and cancels of sends waiting in the QoS queues.

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
