//! Multicast fan-out on loopback (no root needed): every subscriber gets every datagram once
//! and in order from one shared frame; lossy and reliable slow subscribers; leave and
//! source filters through a fanned-out socket; one send to N destinations; frames always
//! return to the pool.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdp};
use std::sync::Arc;
use std::time::{Duration, Instant};

use porto_engine::completion::OpKind;
use porto_engine::config::Config;
use porto_engine::fanout::{Datagram, FanOut, Policy, Subscription};
use porto_engine::port::CompletionPort;
use porto_engine::rio::RioNotify;
use porto_engine::shard::{Delivery, Shard, ShardHandle};
use porto_engine::socket::{Interface, SocketOptions, UdpSocket};

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 9, 9, 9);
const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn cfg() -> Config {
    Config {
        pin: false,
        frames_per_shard: 512,
        recv_frames: 128,
        huge_pages: false,
        ..Config::default()
    }
}

/// A multicast receiver joined to GROUP on loopback, fanned out; and a sender to it.
fn group_pair(h: &ShardHandle) -> (UdpSocket, FanOut, UdpSocket, SocketAddr) {
    let opts = SocketOptions {
        recv_buffer: Some(4 << 20),
        ..SocketOptions::default()
    };
    let rx = UdpSocket::bind(h, "0.0.0.0:0".parse().unwrap(), &opts, Delivery::Poll { key: 1 }).unwrap();
    rx.join(GROUP.into(), Some(Interface::V4(LO))).unwrap();
    let to = SocketAddr::from((GROUP, rx.local_addr().unwrap().port()));
    let fan = rx.fan_out(1).unwrap();
    let tx = sender(h, LO);
    (rx, fan, tx, to)
}

fn sender(h: &ShardHandle, src: Ipv4Addr) -> UdpSocket {
    let s = UdpSocket::bind(
        h,
        SocketAddr::from((src, 0)),
        &SocketOptions::default(),
        Delivery::Poll { key: 2 },
    )
    .unwrap();
    s.set_multicast_if(Interface::V4(LO)).unwrap();
    s.set_multicast_loop(true).unwrap();
    s
}

fn seq(d: &Datagram) -> u32 {
    u32::from_be_bytes(d.buf[..4].try_into().unwrap())
}

/// Sends `n` sequenced datagrams, polling the shard so sends complete and receives publish.
fn publish(shard: &mut Shard, tx: &UdpSocket, to: SocketAddr, from: u32, n: u32) {
    let mut out = Vec::new();
    for i in from..from + n {
        let buf = loop {
            match shard.handle().pool().alloc_from(&i.to_be_bytes()) {
                Ok(b) => break b,
                Err(_) => {
                    shard.poll(&mut out, 64);
                }
            }
        };
        tx.send_to(buf, to, u64::from(i)).unwrap();
        shard.poll(&mut out, 64);
        out.clear();
    }
}

/// Polls until `done` or 5 s.
fn poll_while(shard: &mut Shard, mut done: impl FnMut() -> bool) {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() && Instant::now() < deadline {
        shard.poll(&mut out, 64);
        out.clear();
    }
}

fn drain(sub: &mut Subscription) -> Vec<u32> {
    let mut v = Vec::new();
    while let Some(d) = sub.try_recv() {
        v.push(seq(&d));
    }
    v
}

#[test]
fn every_subscriber_gets_every_datagram_once_in_order_from_one_frame() {
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let (rx, fan, tx, to) = group_pair(&h);
    let mut subs: Vec<Subscription> = (0..8)
        .map(|_| fan.subscribe(Policy::Lossy, 512, RioNotify::None).unwrap())
        .collect();
    let mut out = Vec::new();
    shard.poll(&mut out, 16);
    publish(&mut shard, &tx, to, 0, 300);
    poll_while(&mut shard, || subs.iter().all(|s| s.counters().delivered == 300));
    // The same frame reaches every subscriber: one datagram, N handles.
    let heads: Vec<Datagram> = subs.iter_mut().map(|s| s.try_recv().unwrap()).collect();
    assert!(heads
        .iter()
        .all(|d| d.buf.frame() == heads[0].buf.frame() && seq(d) == 0));
    assert_eq!(heads[0].buf.refs(), 8);
    assert!(heads.iter().all(|d| d.peer().unwrap().ip() == std::net::IpAddr::V4(LO)));
    drop(heads);
    for s in &mut subs {
        assert_eq!(drain(s), (1..300).collect::<Vec<_>>());
        assert_eq!(s.counters().dropped, 0);
    }
    assert_eq!(fan.counters().received, 300);
    assert_eq!(fan.counters().subscribers, 8);
    drop(subs);
    drop(rx);
    common::assert_conserved(&mut shard);
}

#[test]
fn a_lossy_slow_subscriber_drops_alone_and_counts_it() {
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let (_rx, fan, tx, to) = group_pair(&h);
    let mut fast: Vec<Subscription> = (0..3)
        .map(|_| fan.subscribe(Policy::Lossy, 512, RioNotify::None).unwrap())
        .collect();
    let mut slow = fan.subscribe(Policy::Lossy, 4, RioNotify::None).unwrap();
    let mut out = Vec::new();
    shard.poll(&mut out, 16);
    // The fast ones drain while the slow one never does.
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); 3];
    for round in 0..10 {
        publish(&mut shard, &tx, to, round * 20, 20);
        poll_while(&mut shard, || fan.counters().received == u64::from(round + 1) * 20);
        for (g, s) in got.iter_mut().zip(&mut fast) {
            g.extend(drain(s));
        }
    }
    for g in &got {
        assert_eq!(g, &(0..200).collect::<Vec<_>>());
    }
    let c = slow.counters();
    assert_eq!((c.delivered, c.dropped, c.depth), (4, 196, 4));
    assert_eq!(drain(&mut slow), [0, 1, 2, 3]);
    assert_eq!(fan.counters().stalls, 0);
    drop((fast, slow));
    common::assert_conserved(&mut shard);
}

#[test]
fn a_reliable_slow_subscriber_backpressures_the_group_and_loses_nothing() {
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let (_rx, fan, tx, to) = group_pair(&h);
    let mut fast = fan.subscribe(Policy::Reliable, 1024, RioNotify::None).unwrap();
    let mut slow = fan.subscribe(Policy::Reliable, 2, RioNotify::None).unwrap();
    let mut out = Vec::new();
    shard.poll(&mut out, 16);
    publish(&mut shard, &tx, to, 0, 100);
    poll_while(&mut shard, || fan.counters().received == 100);
    assert!(fan.counters().stalls > 0, "the slow queue filled");
    assert!(slow.counters().depth == 2 && fast.counters().delivered < 100);
    // The slow consumer drains a little at a time; the group follows it.
    let (mut got_slow, mut got_fast) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    while got_slow.len() < 100 && Instant::now() < deadline {
        if let Some(d) = slow.try_recv() {
            got_slow.push(seq(&d));
        }
        got_fast.extend(drain(&mut fast));
        shard.poll(&mut out, 64);
    }
    got_fast.extend(drain(&mut fast));
    assert_eq!(got_slow, (0..100).collect::<Vec<_>>());
    assert_eq!(got_fast, (0..100).collect::<Vec<_>>());
    assert_eq!((slow.counters().dropped, fast.counters().dropped), (0, 0));
    drop((fast, slow));
    common::assert_conserved(&mut shard);
}

#[test]
fn subscribers_on_other_threads_are_woken_through_a_port() {
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let (_rx, fan, tx, to) = group_pair(&h);
    let port = CompletionPort::new(0, 64);
    let mut subs: Vec<Subscription> = (0..4u64)
        .map(|k| {
            let notify = RioNotify::Port {
                port: port.clone(),
                key: k,
                token: 100 + k,
            };
            fan.subscribe(Policy::Reliable, 256, notify).unwrap()
        })
        .collect();
    // The subscriptions move to the consumer thread: each has one consumer.
    let consumer = {
        std::thread::spawn(move || {
            let mut got: Vec<Vec<u32>> = vec![Vec::new(); subs.len()];
            let mut done = Vec::new();
            let mut batch = Vec::new();
            for s in &subs {
                s.notify();
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while got.iter().any(|g| g.len() < 50) && Instant::now() < deadline {
                port.dequeue(&mut done, 16, Some(Duration::from_millis(50)));
                for c in done.drain(..) {
                    assert_eq!(c.op, OpKind::FanoutNotify);
                    assert_eq!(c.token, 100 + c.key, "the notification's OVERLAPPED comes back");
                    let k = c.key as usize;
                    subs[k].recv_batch(&mut batch, 64);
                    got[k].extend(batch.drain(..).map(|d| seq(&d)));
                    subs[k].notify();
                }
            }
            (got, subs)
        })
    };
    let mut out = Vec::new();
    shard.poll(&mut out, 16);
    publish(&mut shard, &tx, to, 0, 50);
    poll_while(&mut shard, || consumer.is_finished());
    let (got, subs) = consumer.join().unwrap();
    for g in got {
        assert_eq!(g, (0..50).collect::<Vec<_>>());
    }
    drop(subs);
    common::assert_conserved(&mut shard);
}

#[test]
fn leave_stops_and_source_filters_hold_through_a_fanned_out_socket() {
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let (rx, fan, a, to) = group_pair(&h);
    let b = sender(&h, Ipv4Addr::new(127, 0, 0, 2));
    let mut sub = fan.subscribe(Policy::Lossy, 64, RioNotify::None).unwrap();
    let mut out = Vec::new();
    shard.poll(&mut out, 16);
    let settle = |shard: &mut Shard| {
        let mut out = Vec::new();
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            shard.poll(&mut out, 64);
            out.clear();
        }
    };
    publish(&mut shard, &a, to, 0, 1);
    publish(&mut shard, &b, to, 1, 1);
    settle(&mut shard);
    assert_eq!(drain(&mut sub), [0, 1]);
    rx.leave(GROUP.into(), Some(Interface::V4(LO))).unwrap();
    publish(&mut shard, &a, to, 2, 1);
    settle(&mut shard);
    assert_eq!(drain(&mut sub), Vec::<u32>::new(), "left: nothing arrives");
    rx.join_source(GROUP.into(), LO.into(), Some(Interface::V4(LO)))
        .unwrap();
    publish(&mut shard, &b, to, 3, 1);
    publish(&mut shard, &a, to, 4, 1);
    settle(&mut shard);
    assert_eq!(drain(&mut sub), [4], "only the included source");
    // A subscription dropped mid-stream releases what it held; new ones start fresh.
    drop(sub);
    let mut late = fan.subscribe(Policy::Lossy, 64, RioNotify::None).unwrap();
    shard.poll(&mut out, 16);
    publish(&mut shard, &a, to, 5, 1);
    settle(&mut shard);
    assert_eq!(drain(&mut late), [5]);
    drop(late);
    common::assert_conserved(&mut shard);
}

#[test]
fn one_send_reaches_every_destination_from_one_frame() {
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let tx = UdpSocket::bind(
        &h,
        "127.0.0.1:0".parse().unwrap(),
        &SocketOptions::default(),
        Delivery::Poll { key: 3 },
    )
    .unwrap();
    let sinks: Vec<StdUdp> = (0..5).map(|_| StdUdp::bind("127.0.0.1:0").unwrap()).collect();
    let dests: Arc<[SocketAddr]> = sinks.iter().map(|s| s.local_addr().unwrap()).collect();
    let free = h.pool().free_frames();
    tx.send_to_many(h.pool().alloc_from(b"quote").unwrap(), &dests, 77)
        .unwrap();
    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while done.len() < dests.len() && Instant::now() < deadline {
        shard.poll(&mut done, 64);
    }
    assert_eq!(done.len(), dests.len(), "one completion per destination");
    let mut peers: Vec<SocketAddr> = done
        .iter()
        .map(|c| {
            assert_eq!((c.op, c.token, c.result), (OpKind::SendTo, 77, Ok(5)));
            assert!(c.buffer.is_none());
            c.peer.unwrap()
        })
        .collect();
    peers.sort();
    let mut want = dests.to_vec();
    want.sort();
    assert_eq!(peers, want);
    for s in &sinks {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 16];
        let (n, from) = s.recv_from(&mut b).unwrap();
        assert_eq!((&b[..n], from), (&b"quote"[..], tx.local_addr().unwrap()));
    }
    assert_eq!(h.pool().free_frames(), free, "the one frame went back");
    // An empty destination list is refused with the buffer handed back.
    let r = tx
        .send_to_many(h.pool().alloc_from(b"x").unwrap(), &Arc::from(Vec::new()), 1)
        .unwrap_err();
    assert_eq!(&r.buffer.unwrap()[..], b"x");
}

/// A reliable subscriber that stops reading holds at most its queue depth plus the group's
/// bound of waiting datagrams: past it the group drops and counts, and another socket on the
/// shard still receives (the pool is not taken).
#[test]
fn a_stopped_reliable_subscriber_cannot_take_the_pool() {
    const BOUND: u32 = 32;
    let cfg = Config {
        fanout_pending_max: Some(BOUND),
        ..cfg()
    };
    let mut shard = Shard::new(&cfg, None).unwrap();
    let h = shard.handle();
    let (_rx, fan, tx, to) = group_pair(&h);
    let stuck = fan.subscribe(Policy::Reliable, 4, RioNotify::None).unwrap();
    let mut out = Vec::new();
    shard.poll(&mut out, 16);
    let total = h.pool().total_frames();
    publish(&mut shard, &tx, to, 0, 400);
    poll_while(&mut shard, || fan.counters().received == 400);
    let held = total - h.pool().free_frames() - shard.frames_in_rings();
    assert!(held <= BOUND + 4, "the group holds {held} frames");
    let c = fan.counters();
    // 4 in the queue, BOUND waiting in the shard, the rest dropped for the group.
    assert_eq!(c.overflow, 400 - u64::from(BOUND) - 4, "{c:?}");
    // Another socket on the shard still receives.
    let other = UdpSocket::bind(
        &h,
        SocketAddr::from((LO, 0)),
        &SocketOptions::default(),
        Delivery::Poll { key: 9 },
    )
    .unwrap();
    other.recv_from(77, None).unwrap();
    let client = StdUdp::bind(SocketAddr::from((LO, 0))).unwrap();
    client.send_to(b"still here", other.local_addr().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !out.iter().any(|c| c.token == 77) && Instant::now() < deadline {
        shard.poll(&mut out, 64);
    }
    assert!(out.iter().any(|c| c.token == 77 && c.result == Ok(10)), "starved");
    out.clear();
    drop(stuck);
    common::assert_conserved(&mut shard);
}
