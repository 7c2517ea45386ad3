//! Helpers shared by integration tests (each test file that needs them includes this
//! module, and uses some of it).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use porto_engine::completion::OpKind;
use porto_engine::config::Config;
use porto_engine::netns::Topology;
use porto_engine::shard::{Delivery, Shard};
use porto_engine::socket::{SocketOptions, TcpListener, TcpStream};

/// Polls `shard` until `n` successful send completions arrived or 10 s passed; returns how
/// many did.
pub fn complete_sends(shard: &mut Shard, n: usize) -> usize {
    let mut out = Vec::new();
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while done < n && Instant::now() < deadline {
        shard.poll(&mut out, 64);
        done += out
            .drain(..)
            .filter(|c| c.op == OpKind::SendTo && c.result.is_ok())
            .count();
    }
    done
}

/// Once the application holds no frame: polls (up to 5 s) until every frame of the shard's
/// pool is free or in one of its rings, then asserts it (frame conservation).
pub fn assert_conserved(shard: &mut Shard) {
    let total = shard.pool().total_frames();
    let held = |shard: &Shard| shard.pool().free_frames() + shard.frames_in_rings();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while held(shard) != total && Instant::now() < deadline {
        shard.poll(&mut out, 64);
        out.clear();
    }
    assert_eq!(held(shard), total, "frame conservation");
}

pub mod packages;
pub use packages::{require_packages, strict};

/// Two namespaces joined by a veth pair with `queues` queues, deleted on drop; `None` (a
/// skip, said on stderr) where this machine cannot make them, unless `strict()`.
pub fn topology(prefix: &str, queues: u32) -> Option<Topology> {
    if !require_packages(&["iproute2", "ethtool"], "veth pairs in network namespaces") {
        return None;
    }
    match Topology::create(prefix, queues) {
        Ok(t) => Some(t),
        Err(e) => {
            assert!(!strict(), "PORTO_REQUIRE_NETNS=1 but: {e}");
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// CPU time the calling thread has used so far (schedstat's first field).
/// Now, in ns since the Unix epoch (CLOCK_REALTIME: the clock of porto's timestamps).
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    Duration::from_nanos(
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .expect("schedstat field"),
    )
}

/// A small unpinned shard for loopback tests: 512 frames, 256 of them in the buffer ring.
pub fn small_config() -> Config {
    Config {
        pin: false,
        frames_per_shard: 512,
        recv_frames: 256,
        huge_pages: false,
        ..Config::default()
    }
}

/// A shard on the calling thread with room for an AF_XDP FILL ring beside its buffer ring.
pub fn xdp_config() -> Config {
    Config {
        pin: false,
        frames_per_shard: 4096,
        recv_frames: 256,
        huge_pages: false,
        ..Config::default()
    }
}

/// The keys of `shard`'s first `n` completions of kind `op`, in delivery order (others are
/// dropped); stops after 5 s with what arrived.
pub fn keys_in_order(shard: &mut Shard, op: OpKind, n: usize) -> Vec<u64> {
    let (mut out, mut keys) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    while keys.len() < n && Instant::now() < deadline {
        shard.poll(&mut out, 256);
        keys.extend(out.drain(..).filter(|c| c.op == op).map(|c| c.key));
    }
    keys
}

/// A loopback TCP connection on `shard`: its listener (key 1, one accept taken), the client's
/// std side, and the accepted side adopted with `Delivery::Poll { key: 2 }`.
pub fn accepted_pair(shard: &mut Shard) -> (TcpListener, std::net::TcpStream, TcpStream) {
    let h = shard.handle();
    let lst = TcpListener::bind(
        &h,
        "127.0.0.1:0".parse().unwrap(),
        8,
        &SocketOptions::default(),
        Delivery::Poll { key: 1 },
    )
    .unwrap();
    let client = std::net::TcpStream::connect(lst.local_addr().unwrap()).unwrap();
    lst.accept(1).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.is_empty() {
        assert!(Instant::now() < deadline, "no accept within 5 s");
        shard.poll_until(&mut out, 1, Duration::from_millis(10));
    }
    let accepted = out.remove(0).accepted.expect("the accept carries the connection");
    let server = TcpStream::adopt(&h, accepted, Delivery::Poll { key: 2 }).unwrap();
    (lst, client, server)
}
