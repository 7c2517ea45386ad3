//! Bad arguments from safe code: each is a validated error, or a documented panic on a
//! programmer error — never an overflow panic deep inside, a wrapped counter or a hang.

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use porto_engine::completion::Completion;
use porto_engine::config::Config;
use porto_engine::error::{Error, SetupError};
use porto_engine::port::CompletionPort;
use porto_engine::qos::{Shaping, TrafficType, BURST_BYTES_MAX};
use porto_engine::rio::{CompletionQueue, RequestQueue, RioNotify};
use porto_engine::shard::{Delivery, Shard, FLOWS_MAX};
use porto_engine::socket::{SocketOptions, UdpSocket, XdpOptions};

mod common;

fn cfg() -> Config {
    common::small_config()
}

fn lo() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
#[should_panic(expected = "port capacity must be positive")]
fn a_port_of_capacity_zero_is_a_documented_panic() {
    let _ = CompletionPort::new(1, 0);
}

#[test]
#[should_panic(expected = "completion queue capacity must be in 1..=u32::MAX")]
fn a_rio_queue_of_capacity_zero_is_a_documented_panic() {
    let _ = CompletionQueue::new(0, RioNotify::None);
}

#[test]
fn waits_of_duration_max_wait_instead_of_overflowing_the_clock() {
    let port = CompletionPort::new(1, 4);
    let poster = {
        let port = port.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            port.post(Completion::new(1, 7, Ok(0))).unwrap();
        })
    };
    let mut out = Vec::new();
    assert_eq!(port.dequeue(&mut out, 4, Some(Duration::MAX)), 1);
    poster.join().unwrap();

    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let sock = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 1 }).unwrap();
    let to = sock.local_addr().unwrap();
    sock.recv_from(1, None).unwrap();
    sock.recv_from(2, None).unwrap();
    let client = StdUdp::bind(lo()).unwrap();
    client.send_to(b"a", to).unwrap();
    out.clear();
    assert_eq!(shard.wait(&mut out, 1, Duration::MAX), 1);
    client.send_to(b"b", to).unwrap();
    out.clear();
    assert_eq!(shard.poll_until(&mut out, 1, Duration::MAX), 1);
}

#[test]
fn xdp_options_are_checked_before_anything_is_attached() {
    let mut o = XdpOptions::new("lo");
    o.ring_size = 3;
    let e = o.validate().unwrap_err().to_string();
    assert!(e.contains("ring_size"), "{e}");
    o.ring_size = 2048;
    o.rx_coalesce = Some((64, Duration::MAX));
    let e = o.validate().unwrap_err().to_string();
    assert!(e.contains("rx_coalesce"), "{e}");
    o.rx_coalesce = Some((64, Duration::from_micros(200)));
    o.validate().unwrap();
}

#[test]
fn token_buckets_whose_burst_overflows_are_refused() {
    let shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let e = h
        .create_flow(TrafficType::BestEffort, Some((1_000_000, u64::MAX, Shaping::ShapeOnly)))
        .unwrap_err();
    assert!(matches!(e, SetupError::Config(_)), "{e}");
    assert!(h.set_link_rate(Some(1_000_000), BURST_BYTES_MAX + 1).is_err());
    assert!(h.set_link_rate(Some(0), 1500).is_err());
    h.set_link_rate(Some(1_000_000), BURST_BYTES_MAX).unwrap();
}

/// Flow ids are never handed out twice: after FLOWS_MAX, every further call fails, even
/// after 65 536 of them (a wrapping u16 counter used to start again at 0).
#[test]
fn flow_ids_do_not_wrap_onto_live_flows() {
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let mut out = Vec::new();
    let flows: Vec<_> = (0..FLOWS_MAX)
        .map(|_| h.create_flow(TrafficType::BestEffort, None).unwrap())
        .collect();
    shard.poll(&mut out, 1);
    for _ in 0..70_000 {
        assert!(matches!(
            h.create_flow(TrafficType::Control, None),
            Err(SetupError::Limit(_))
        ));
    }
    assert_eq!(flows.len(), FLOWS_MAX);
}

/// RIO_MSG_WAITALL is for stream receives: on a datagram socket it is refused, the
/// segment handed back.
#[test]
fn rio_waitall_on_a_datagram_socket_is_refused() {
    let shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let sock = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 1 }).unwrap();
    let cq = CompletionQueue::new(8, RioNotify::None);
    let mut rq = RequestQueue::new(sock.core(), &cq, 1, 1, 0).unwrap();
    let seg = porto_engine::rio::RegisteredBuffer::register(&h, vec![0u8; 64], 64)
        .unwrap()
        .pop()
        .unwrap();
    let (e, seg) = rq.receive(seg, 1, porto_engine::rio::RioFlags::WAITALL).unwrap_err();
    assert_eq!((e, seg.capacity()), (Error::InvalidArgument, 64));
}

#[test]
fn rio_queue_sizes_that_overflow_are_refused() {
    let mut shard = Shard::new(&cfg(), None).unwrap();
    let h = shard.handle();
    let sock = UdpSocket::bind(&h, lo(), &SocketOptions::default(), Delivery::Poll { key: 1 }).unwrap();
    let cq = CompletionQueue::new(64, RioNotify::None);
    // u32::MAX + 1 wrapped to 0 and passed the reservation check.
    assert_eq!(
        RequestQueue::new(sock.core(), &cq, u32::MAX, 1, 0).unwrap_err(),
        Error::NoBuffers
    );
    let _rq = RequestQueue::new(sock.core(), &cq, 32, 32, 0).unwrap();
    let deadline = Instant::now() + Duration::from_millis(50);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        shard.poll(&mut out, 8);
    }
}
