//! QoS on loopback (no root): the egress link rate the scheduler orders traffic for, Control
//! overtaking bulk at that bottleneck, flows on TCP streams, and inbound priority.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use porto_engine::completion::OpKind;
use porto_engine::config::Config;
use porto_engine::qos::{Shaping, TrafficType};
use porto_engine::shard::{Delivery, Shard};
use porto_engine::socket::{SocketOptions, TcpStream, UdpSocket};

fn cfg() -> Config {
    Config {
        pin: false,
        frames_per_shard: 2048,
        recv_frames: 256,
        huge_pages: false,
        ..Config::default()
    }
}

/// These tests one at a time: a shaper starved of CPU loses the time it was off the CPU
/// beyond its burst, and busy-polling shards on a 2-CPU CI machine starve each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Receives `n` datagrams on `rx` (bounded by 10 s): arrival times and first bytes.
fn catch(rx: StdUdp, n: usize) -> std::thread::JoinHandle<Vec<(Instant, u8)>> {
    rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut b = [0u8; 2048];
        while got.len() < n {
            match rx.recv(&mut b) {
                Ok(_) => got.push((Instant::now(), b[0])),
                Err(_) => break,
            }
        }
        got
    })
}

#[test]
fn the_link_rate_paces_scheduled_sends_and_control_goes_first() {
    const N: usize = 150;
    const LEN: usize = 1000;
    const LINK: u64 = 8_000_000;
    const BURST: usize = 16;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    h.set_link_rate(Some(LINK), (BURST * LEN) as u64).unwrap();
    let rx = StdUdp::bind(lo()).unwrap();
    let to = rx.local_addr().unwrap();
    let catcher = catch(rx, N + 1);
    let bulk = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 1 }).unwrap();
    let urgent = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 2 }).unwrap();
    bulk.set_flow(&h.create_flow(TrafficType::BestEffort, None).unwrap())
        .unwrap();
    urgent
        .set_flow(&h.create_flow(TrafficType::Control, None).unwrap())
        .unwrap();
    let mut out = Vec::new();
    shard.poll(&mut out, 16);
    for _ in 0..N {
        bulk.send_to(h.pool().alloc_from(&[b'b'; LEN]).unwrap(), to, 0).unwrap();
    }
    // Let the link start on the bulk, then a Control datagram arrives behind 100+ of them.
    let t0 = Instant::now();
    let mut before = 0;
    while t0.elapsed() < Duration::from_millis(20) {
        shard.poll(&mut out, 64);
        before += out
            .drain(..)
            .filter(|c| c.op == OpKind::SendTo && c.result.is_ok())
            .count();
    }
    assert!(before < N / 2, "the link holds the bulk back ({before} sent in 20 ms)");
    urgent
        .send_to(h.pool().alloc_from(&[b'c'; 64]).unwrap(), to, 0)
        .unwrap();
    assert_eq!(common::complete_sends(&mut shard, N + 1 - before) + before, N + 1);
    let got = catcher.join().unwrap();
    assert_eq!(got.len(), N + 1);
    let at = got.iter().position(|g| g.1 == b'c').unwrap();
    // Behind what had left, at most the packet on the wire and what the bucket saved up
    // while this thread was off the CPU: not behind the ~100 queued ones.
    assert!(at <= before + BURST + 1, "Control arrived {at}th, {before} had left");
    // The bulk left at the link rate (its burst aside).
    let bulk_times: Vec<Instant> = got.iter().filter(|g| g.1 == b'b').map(|g| g.0).collect();
    let span = bulk_times[N - 1] - bulk_times[BURST];
    let rate = ((N - 1 - BURST) * LEN * 8) as f64 / span.as_secs_f64();
    assert!(
        (rate - LINK as f64).abs() <= 0.05 * LINK as f64,
        "bulk left at {rate:.0} bit/s, link {LINK}"
    );
}

#[test]
fn a_tcp_stream_on_a_shaped_flow_sends_at_its_rate() {
    const CHUNKS: usize = 60;
    const LEN: usize = 1000;
    const RATE: u64 = 2_000_000;
    const BURST: usize = 4;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let listener = StdTcpListener::bind(lo()).unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut marks = Vec::new();
        let mut total = 0;
        let mut b = [0u8; 4096];
        while total < CHUNKS * LEN {
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    total += n;
                    marks.push((Instant::now(), total));
                }
            }
        }
        marks
    });
    let stream =
        TcpStream::connect_blocking(&h, addr, Some(Duration::from_secs(5)), Delivery::Poll { key: 3 }).unwrap();
    stream.set_nodelay(true).unwrap();
    let flow = h
        .create_flow(
            TrafficType::AudioVideo,
            Some((RATE, (BURST * LEN) as u64, Shaping::ShapeOnly)),
        )
        .unwrap();
    stream.set_flow(&flow).unwrap();
    let mut out = Vec::new();
    shard.poll(&mut out, 16);
    for i in 0..CHUNKS {
        stream
            .send(h.pool().alloc_from(&[i as u8; LEN]).unwrap(), i as u64)
            .unwrap();
    }
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while done < CHUNKS && Instant::now() < deadline {
        shard.poll(&mut out, 64);
        done += out
            .drain(..)
            .filter(|c| c.op == OpKind::Send && c.result == Ok(LEN))
            .count();
    }
    assert_eq!(done, CHUNKS);
    let marks = reader.join().unwrap();
    assert_eq!(marks.last().map(|m| m.1), Some(CHUNKS * LEN));
    // From the end of the burst to the last byte.
    let first = marks.iter().find(|m| m.1 >= BURST * LEN).unwrap();
    let last = marks.last().unwrap();
    let rate = ((last.1 - first.1) * 8) as f64 / (last.0 - first.0).as_secs_f64();
    assert!(
        (rate - RATE as f64).abs() <= 0.05 * RATE as f64,
        "stream at {rate:.0} bit/s, flow {RATE}"
    );
    let c = flow.counters();
    assert_eq!((c.sent, c.dropped), (CHUNKS as u64, 0));
    assert!(c.delayed > 0);
}

#[test]
fn a_control_socket_is_served_before_bulk_when_both_are_ready() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let opts = SocketOptions {
        recv_buffer: Some(1 << 20),
        ..SocketOptions::default()
    };
    let bulk = UdpSocket::bind(&h, lo(), &opts, Delivery::Poll { key: 1 }).unwrap();
    let urgent = UdpSocket::bind(&h, lo(), &opts, Delivery::Poll { key: 2 }).unwrap();
    urgent.set_traffic(TrafficType::Control).unwrap();
    bulk.recv_from_multishot(1).unwrap();
    urgent.recv_from_multishot(2).unwrap();
    let mut out = Vec::new();
    shard.poll(&mut out, 16);
    let peer = StdUdp::bind(lo()).unwrap();
    // Everything is queued in the kernel before the shard looks: one reap sees it all.
    for _ in 0..100 {
        peer.send_to(b"bulk", bulk.local_addr().unwrap()).unwrap();
    }
    peer.send_to(b"now", urgent.local_addr().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let order = common::keys_in_order(&mut shard, OpKind::RecvFrom, 101);
    assert_eq!(order.len(), 101);
    let at = order.iter().position(|&k| k == 2).unwrap();
    assert!(at < 5, "the Control datagram was delivered {at}th of 101");
}

/// Flow ids are reused: a flow whose last handle dropped, with no socket left in it, gives
/// its id back (200 create-and-drop rounds on a 64-flow shard); one a socket is still in keeps
/// shaping it and its id until the socket leaves.
#[test]
fn flows_are_reused_once_nothing_is_left_in_them() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let mut out = Vec::new();
    for round in 0..200 {
        let f = h
            .create_flow(TrafficType::Voice, None)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        drop(f);
        shard.poll(&mut out, 16);
    }
    let tx = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 1 }).unwrap();
    let kept = h.create_flow(TrafficType::Voice, None).unwrap();
    tx.set_flow(&kept).unwrap();
    drop(kept);
    let others: Vec<_> = (0..63)
        .map(|_| h.create_flow(TrafficType::Background, None).unwrap())
        .collect();
    shard.poll(&mut out, 16);
    assert!(
        h.create_flow(TrafficType::Voice, None).is_err(),
        "the dropped flow's id stays taken while a socket is in it"
    );
    tx.core().clear_flow().unwrap();
    shard.poll(&mut out, 16);
    let again = h
        .create_flow(TrafficType::Voice, None)
        .expect("freed when the socket left");
    drop((again, others));
}

/// QOSUseNonConformantMarkings re-marks the excess of every kind of datagram send, not only
/// `send_to`: one `send_to_many` payload to five destinations, and five gathered datagrams —
/// the first conforms (Voice's DSCP), the other four go out best effort (TOS 0), read back
/// with IP_RECVTOS.
#[test]
fn non_conformant_shared_and_gathered_sends_are_re_marked() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let opts = SocketOptions {
        recv_tos: true,
        ..SocketOptions::default()
    };
    let rx = UdpSocket::bind(&h, lo(), &opts, Delivery::Poll { key: 9 }).unwrap();
    rx.recv_from_multishot(9).unwrap();
    let to = rx.local_addr().unwrap();
    let voice = TrafficType::Voice.tos();
    for gathered in [false, true] {
        let tx = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 1 }).unwrap();
        let flow = h
            .create_flow(
                TrafficType::Voice,
                Some((1_600, 100, Shaping::UseNonConformantMarkings)),
            )
            .unwrap();
        tx.set_flow(&flow).unwrap();
        let mut out = Vec::new();
        shard.poll(&mut out, 16);
        if gathered {
            for i in 0..5u8 {
                let mut g = porto_engine::pool::Gather::new();
                g.push(h.pool().alloc_from(&[i; 60]).unwrap()).unwrap();
                g.push(h.pool().alloc_from(&[i; 40]).unwrap()).unwrap();
                tx.send_to_gather(g, to, 0).unwrap();
            }
        } else {
            let dests: std::sync::Arc<[std::net::SocketAddr]> = vec![to; 5].into();
            tx.send_to_many(h.pool().alloc_from(&[7u8; 100]).unwrap(), &dests, 0)
                .unwrap();
        }
        let mut tos = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            shard.poll(&mut out, 64);
            tos.extend(
                out.drain(..)
                    .filter(|c| c.key == 9 && c.op == OpKind::RecvFrom)
                    .map(|c| c.tos.expect("recv_tos reports it")),
            );
        }
        assert_eq!(tos, [voice, 0, 0, 0, 0], "gathered={gathered}");
        assert_eq!(flow.counters().non_conformant, 4);
        drop(tx);
        shard.poll(&mut out, 64);
    }
}

/// What each QOS2 shaping behaviour puts on the wire, read back with IP_RECVTOS: ShapeOnly
/// sends no mark; ShapeAndMark marks everything; UseNonConformantMarkings marks what
/// conforms and re-marks the excess best effort (per datagram).
#[test]
fn each_shaping_behaviour_marks_as_qos2_says() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let opts = SocketOptions {
        recv_tos: true,
        ..SocketOptions::default()
    };
    let rx = UdpSocket::bind(&h, lo(), &opts, Delivery::Poll { key: 9 }).unwrap();
    rx.recv_from_multishot(9).unwrap();
    let to = rx.local_addr().unwrap();
    let voice = TrafficType::Voice.tos();
    // 1.6 kbit/s with room for one 100-byte datagram (then one per 500 ms): the first
    // conforms, the next four do not.
    for (how, want) in [
        (Shaping::ShapeOnly, [0u8; 5]),
        (Shaping::ShapeAndMark, [voice; 5]),
        (Shaping::UseNonConformantMarkings, [voice, 0, 0, 0, 0]),
    ] {
        let tx = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 1 }).unwrap();
        let flow = h.create_flow(TrafficType::Voice, Some((1_600, 100, how))).unwrap();
        tx.set_flow(&flow).unwrap();
        let mut out = Vec::new();
        shard.poll(&mut out, 16);
        // What leaves within 300 ms, in order (held excess would take seconds).
        for i in 0..5u8 {
            tx.send_to(h.pool().alloc_from(&[i; 100]).unwrap(), to, 0).unwrap();
        }
        let mut tos = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            shard.poll(&mut out, 64);
            tos.extend(
                out.drain(..)
                    .filter(|c| c.key == 9 && c.op == OpKind::RecvFrom)
                    .map(|c| c.tos.expect("recv_tos reports it")),
            );
        }
        let sent_now = if how == Shaping::UseNonConformantMarkings { 5 } else { 1 };
        assert_eq!(tos, want[..sent_now], "{how:?}");
        if how == Shaping::UseNonConformantMarkings {
            assert_eq!(flow.counters().non_conformant, 4);
        }
        drop(tx);
        shard.poll(&mut out, 64);
    }
}
